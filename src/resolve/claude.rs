//! What the host's `~/.claude` holds of other projects, read once at start-up for the
//! `~/.claude` mask layer (attack-3 A3-4): the names in `projects/`, `file-history/` and
//! `todos/`, this project's conversation uuids, and this project's lines of
//! `history.jsonl`. Directory listings only, and one scan of the history file: nothing
//! per start grows with the size of the transcripts.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::plan::{ClaudeLower, HistoryCopy, HISTORY_CAP, HISTORY_COPY_CAP};
use crate::session::slug::{slug, slug_matches};

/// At most this many names per directory are read (a bigger one is masked whole).
const LIST_CAP: usize = 100_000;

/// The lower `~/.claude` at `root` (symlinks resolved) for a session in `cwd`.
pub fn lower(root: &Path, cwd: &Path) -> Option<ClaudeLower> {
    let dir = crate::fsutil::open_dir_nofollow(root).ok()?;
    let mut out = ClaudeLower::default();
    let own_slug = slug(cwd);
    let mut subs = Vec::new();
    for name in ["projects", "file-history", "todos"] {
        let Ok(sub) =
            crate::fsutil::openat_nofollow(&dir, name, dir_flags(), nix::sys::stat::Mode::empty())
        else {
            continue;
        };
        let Ok(st) = nix::sys::stat::fstat(sub.as_raw_fd()) else {
            continue;
        };
        out.dirs.push((name.to_string(), st.st_mode & 0o7777));
        let names = list(&sub);
        match name {
            "projects" => {
                for p in names.iter().filter(|p| slug_matches(p, &own_slug)) {
                    if let Some(c) = conversations(&sub, p) {
                        out.own.extend(c);
                        out.own_keys.push(p.clone());
                    }
                }
            }
            "file-history" => out.file_history = names,
            _ => out.todos = names,
        }
        subs.push((name, sub));
    }
    for (name, sub) in &subs {
        match *name {
            "file-history" => out.own_file_history = own_file_history(sub, &out),
            "todos" => out.own_todos = own_todos(sub, &out),
            _ => {}
        }
    }
    out.history = history(&root.join("history.jsonl"), cwd);
    Some(out)
}

/// This project's `file-history/<uuid>` dirs, newest first, at most the cap.
fn own_file_history(dir: &std::os::fd::OwnedFd, l: &ClaudeLower) -> Vec<String> {
    let mut found: Vec<(i64, String)> = l
        .file_history
        .iter()
        .filter(|n| l.own.contains(n))
        .filter_map(|n| {
            let st = nix::sys::stat::fstatat(
                Some(dir.as_raw_fd()),
                n.as_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .ok()?;
            (st.st_mode & libc::S_IFMT == libc::S_IFDIR).then(|| (st.st_mtime, n.clone()))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found.truncate(crate::plan::OWN_FILE_HISTORY_CAP);
    found.into_iter().map(|(_, n)| n).collect()
}

/// This project's todo files, read (bounded) for the mask layer.
fn own_todos(dir: &std::os::fd::OwnedFd, l: &ClaudeLower) -> Vec<(String, u32, String)> {
    let cap = crate::plan::TODO_COPY_CAP;
    let mut out = Vec::new();
    let mut total = 0;
    for n in l
        .todos
        .iter()
        .filter(|n| crate::session::slug::is_own_conversation(&l.own, n))
    {
        let Ok(st) = nix::sys::stat::fstatat(
            Some(dir.as_raw_fd()),
            n.as_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) else {
            continue;
        };
        let Ok(bytes) = crate::fsutil::read_small_at(dir, n, (cap / 4) as u64) else {
            continue;
        };
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        if total + text.len() > cap {
            break;
        }
        total += text.len();
        out.push((n.clone(), st.st_mode & 0o7777, text));
    }
    out
}

use crate::fsutil::dir_flags;

fn list(dir: &std::os::fd::OwnedFd) -> Vec<String> {
    let names = crate::fsutil::read_names(dir.as_raw_fd()).unwrap_or_default();
    names
        .into_iter()
        .take(LIST_CAP)
        .filter_map(|n| n.into_string().ok())
        .collect()
}

/// The uuids of `projects/<key>/*.jsonl`; None when `key` is no directory.
fn conversations(projects: &std::os::fd::OwnedFd, key: &str) -> Option<Vec<String>> {
    let d =
        crate::fsutil::openat_nofollow(projects, key, dir_flags(), nix::sys::stat::Mode::empty())
            .ok()?;
    Some(
        list(&d)
            .into_iter()
            .filter_map(|n| n.strip_suffix(".jsonl").map(String::from))
            .collect(),
    )
}

/// The lines of `path` whose top-level `project` is `cwd`. A line is looked at only when
/// it holds `"project":"<cwd>"` (one substring search over the file), then parsed to be
/// sure the field is the object's own.
fn history(path: &Path, cwd: &Path) -> Option<HistoryCopy> {
    let f = crate::fsutil::open_regular(path).ok()?;
    let md = f.metadata().ok()?;
    let mode = md.mode() & 0o7777;
    if md.len() > HISTORY_CAP {
        return Some(HistoryCopy {
            mode,
            lines: String::new(),
            too_big: true,
            dropped: 0,
        });
    }
    let mut buf = Vec::with_capacity(md.len() as usize);
    f.take(HISTORY_CAP).read_to_end(&mut buf).ok()?;
    let cwd = cwd.to_str()?;
    let needle = format!("\"project\":{}", serde_json::to_string(cwd).ok()?);
    // One search over the whole file (not one a line), then the line around each hit.
    let text = String::from_utf8_lossy(&buf);
    let mut mine: Vec<&str> = Vec::new();
    let mut taken = 0;
    for (at, _) in text.match_indices(needle.as_str()) {
        if at < taken {
            continue;
        }
        let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
        taken = end;
        let line = &text[start..end];
        if project_of(line).as_deref() == Some(cwd) {
            mine.push(line);
        }
    }
    // The latest lines are those the up-arrow offers first.
    let (mut size, mut keep) = (0, 0);
    for l in mine.iter().rev() {
        if size + l.len() + 1 > HISTORY_COPY_CAP {
            break;
        }
        size += l.len() + 1;
        keep += 1;
    }
    let dropped = (mine.len() - keep) as u64;
    let mut lines = String::with_capacity(size);
    for l in &mine[mine.len() - keep..] {
        lines.push_str(l);
        lines.push('\n');
    }
    Some(HistoryCopy {
        mode,
        lines,
        too_big: false,
        dropped,
    })
}

/// At most this many bytes of each referring file are read, and this many names kept.
const REFERRING_CAP: u64 = 1 << 20;
const REFERENCED_CAP: usize = 64;

/// The entries of `~/.claude` at `root` (symlinks resolved; `lexical` as the user spells
/// it) that its `settings.json` and `CLAUDE.md` name, of those `shared` lists, with what
/// each is (links followed): a hook, status line or `apiKeyHelper` command names its
/// script as `~/.claude/…`, `$HOME/.claude/…` or a full path, an import as
/// `@~/.claude/…`. The text is searched, not parsed: a command is one string of shell.
/// Also the names that are links, with where a link to a regular file leads (see
/// `ClaudeLower::referenced_links`).
pub fn referenced(
    root: &Path,
    lexical: &Path,
    home: &Path,
    shared: &[String],
) -> (
    Vec<(String, crate::plan::NodeKind)>,
    Vec<(String, Option<PathBuf>)>,
) {
    let Ok(dir) = crate::fsutil::open_dir_nofollow(root) else {
        return (Vec::new(), Vec::new());
    };
    let mut links: Vec<(String, Option<PathBuf>)> = Vec::new();
    let mut prefixes = vec![
        format!("{}/", lexical.display()),
        format!("{}/", root.display()),
        "$CLAUDE_CONFIG_DIR/".to_string(),
        "${CLAUDE_CONFIG_DIR}/".to_string(),
    ];
    if lexical == home.join(".claude") {
        prefixes.extend(["~/.claude/", "$HOME/.claude/", "${HOME}/.claude/"].map(String::from));
    }
    let mut out: Vec<(String, crate::plan::NodeKind)> = Vec::new();
    let files = crate::plan::REFERRING
        .iter()
        .filter(|f| shared.iter().any(|s| s == *f));
    for f in files {
        let Ok(bytes) = crate::fsutil::read_regular(&root.join(f), REFERRING_CAP) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        for p in &prefixes {
            for (at, _) in text.match_indices(p.as_str()) {
                let rest = &text[at + p.len()..];
                let end = rest
                    .find(|c: char| c.is_whitespace() || "/\\\"'`;&|()<>$,:*?[]{}=".contains(c))
                    .unwrap_or(rest.len());
                let name = &rest[..end];
                if name.is_empty()
                    || name == "."
                    || name == ".."
                    || out.iter().any(|(n, _)| n == name)
                    || links.iter().any(|(n, _)| n == name)
                {
                    continue;
                }
                if out.len() >= REFERENCED_CAP {
                    return (out, links);
                }
                let is_link = nix::sys::stat::fstatat(
                    Some(dir.as_raw_fd()),
                    name,
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK);
                // A link is never shared (red-team 9, A9-1): `cfg -> .` and
                // `keys -> ../.ssh` showed the whole config and a hidden dir, and even a
                // link to a harmless file is followed again by the mount, after any check,
                // so a session that can write where it leads (its project) can point it
                // at a hidden file in between. Where it leads is kept for the note.
                if is_link {
                    let target = std::fs::canonicalize(root.join(name))
                        .ok()
                        .filter(|t| std::fs::metadata(t).is_ok_and(|m| m.is_file()));
                    links.push((name.to_string(), target));
                    continue;
                }
                let Ok(st) = nix::sys::stat::fstatat(
                    Some(dir.as_raw_fd()),
                    name,
                    nix::fcntl::AtFlags::empty(),
                ) else {
                    continue;
                };
                let kind = match st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    true => crate::plan::NodeKind::Dir,
                    false => crate::plan::NodeKind::File,
                };
                out.push((name.to_string(), kind));
            }
        }
    }
    (out, links)
}

fn project_of(line: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Line {
        project: Option<String>,
    }
    serde_json::from_str::<Line>(line).ok()?.project
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_projects_history_lines_and_conversations_are_kept() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("projects/-p-mine")).unwrap();
        std::fs::create_dir_all(root.join("projects/-p-other")).unwrap();
        std::fs::write(root.join("projects/-p-mine/u1.jsonl"), "{}\n").unwrap();
        std::fs::create_dir_all(root.join("todos")).unwrap();
        let h = concat!(
            "{\"display\":\"a\",\"project\":\"/p/mine\"}\n",
            "{\"display\":\"b\",\"project\":\"/p/other\"}\n",
            "{\"display\":\"c \\\"project\\\":\\\"/p/mine\\\"\",\"project\":\"/p/minex\"}\n",
            "{\"display\":\"d\",\"pasted\":{\"project\":\"/p/mine\"},\"project\":\"/p/other\"}\n",
            "{\"display\":\"e\",\"project\":\"/p/mine\",\"timestamp\":1}\n",
        );
        std::fs::write(root.join("history.jsonl"), h).unwrap();
        let l = lower(root, Path::new("/p/mine")).unwrap();
        assert_eq!(l.own, vec!["u1".to_string()]);
        assert_eq!(l.own_keys, vec!["-p-mine".to_string()]);
        let hist = l.history.unwrap();
        assert_eq!(
            hist.lines,
            "{\"display\":\"a\",\"project\":\"/p/mine\"}\n{\"display\":\"e\",\"project\":\"/p/mine\",\"timestamp\":1}\n"
        );
        assert!(
            l.dirs.iter().any(|(n, _)| n == "todos")
                && !l.dirs.iter().any(|(n, _)| n == "file-history")
        );
    }

    #[test]
    fn what_the_shared_config_names_in_claudes_dir_is_found() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path();
        let root = home.join(".claude");
        std::fs::create_dir_all(root.join("hooks")).unwrap();
        std::fs::create_dir_all(root.join("logs")).unwrap();
        for f in ["statusline.sh", "key.sh", "style.md", "unshared.sh"] {
            std::fs::write(root.join(f), "").unwrap();
        }
        let settings = serde_json::json!({
            "statusLine": {"type": "command", "command": "bash ~/.claude/statusline.sh"},
            "apiKeyHelper": format!("{}/.claude/key.sh --x", home.display()),
            "hooks": {"PreToolUse": [{"hooks": [
                {"type": "command", "command": "\"$HOME/.claude/hooks/check.py\" 2>> ~/.claude/logs/h.log"},
                {"type": "command", "command": "~/.claude/absent.sh; ${CLAUDE_CONFIG_DIR}/../x"}
            ]}]}
        });
        std::fs::write(root.join("settings.json"), settings.to_string()).unwrap();
        std::fs::write(
            root.join("CLAUDE.md"),
            "See @~/.claude/style.md for the style. Run ~/.claude/ln.sh and ~/.claude/dl now.\n",
        )
        .unwrap();
        // Links are never shared: one to a file is kept with its target for the note.
        std::os::unix::fs::symlink("statusline.sh", root.join("ln.sh")).unwrap();
        std::os::unix::fs::symlink("..", root.join("dl")).unwrap();
        std::fs::write(root.join("other.json"), "~/.claude/unshared.sh").unwrap();
        let shared = ["settings.json", "CLAUDE.md", "other.json"].map(String::from);
        let (mut got, mut links) = referenced(&root, &root, home, &shared);
        links.sort();
        assert_eq!(
            links,
            [
                ("dl".to_string(), None),
                ("ln.sh".to_string(), Some(root.join("statusline.sh")))
            ]
        );
        got.sort_by_key(|(n, _)| n.clone());
        use crate::plan::NodeKind::*;
        assert_eq!(
            got,
            [
                ("hooks".to_string(), Dir),
                ("key.sh".to_string(), File),
                ("logs".to_string(), Dir),
                ("statusline.sh".to_string(), File),
                ("style.md".to_string(), File)
            ]
        );
        // settings.json not shared: nothing it names is either.
        let (only_md, md_links) = referenced(&root, &root, home, &["CLAUDE.md".to_string()]);
        assert_eq!(md_links.len(), 2);
        assert_eq!(only_md, [("style.md".to_string(), File)]);
    }
}
