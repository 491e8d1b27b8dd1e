//! Which entries of the layer are the session's own to merge. The session's `~/.claude`
//! shows every project's conversations (its lower layer is the real one), so a hostile
//! command can append to another project's transcript, or write another project's
//! auto-memory, which Claude Code loads into the system prompt of every later `claude`
//! there (attack-3 A3-5, A3-10). What merges is therefore tied to the session's working
//! directory: `projects/<its key>/` only, and the todos and file-history of the
//! conversations filed there.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use super::state::{lstat_at, open_dir_at, Merger, Scope};
use crate::session::slug::{slug, slug_matches};

/// What a directory of the layer may hold, by where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// `projects/`: only the session's own project key is entered.
    Projects,
    /// `projects/<slug>/`: transcripts `*.jsonl`, the `<uuid>/` directories of its
    /// conversations, `memory/`.
    Project,
    /// `projects/<slug>/memory/`: `*.md` files, each at most `Limits::memory`.
    Memory,
    /// `todos/`: `<conversation>-agent-<uuid>.json` of the session's conversations.
    Todos,
    /// `file-history/`: `<conversation>/` of the session's conversations.
    FileHistory,
    /// `plans/` (and below): files, at most `Limits::plans` of them.
    Plans,
    /// Below an entry admitted above: regular files and directories.
    Any,
}

/// What to do with one entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A directory: walk it under this rule.
    Enter(Rule),
    /// A regular file: merge it if it is at most this big.
    File { max: u64 },
    /// Not merged, for this reason.
    Refuse(String),
}

impl Rule {
    /// The rule of a top-level `claude.mergeBack` entry.
    pub fn of_item(item: &str) -> Rule {
        match item {
            "projects" => Rule::Projects,
            "todos" => Rule::Todos,
            "file-history" => Rule::FileHistory,
            "plans" => Rule::Plans,
            _ => Rule::Any,
        }
    }
}

/// A UUID in the canonical form Claude Code names conversations with.
fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok_and(|u| u.hyphenated().to_string() == s)
}

/// The conversation a todo list belongs to: Claude Code names them
/// `<session uuid>-agent-<agent uuid>.json` (the main agent's uuid is the session's).
fn todo_conversation(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(".json")?;
    let (conv, agent) = (stem.get(..36)?, stem.get(36..)?.strip_prefix("-agent-")?);
    (is_uuid(conv) && is_uuid(agent)).then_some(conv)
}

/// Decide the entry `name` (a directory when `dir`, else a regular file) found where
/// `rule` holds.
pub fn judge(m: &mut Merger, rule: Rule, name: &CStr, dir: bool) -> Verdict {
    let Ok(name) = name.to_str() else {
        return Verdict::Refuse("not a name Claude Code writes (not UTF-8)".into());
    };
    let file = Verdict::File { max: m.limits.file };
    let ours = |m: &Merger, conv: &str| m.scope.conversations.contains(conv);
    match (rule, dir) {
        (Rule::Projects, true) if slug_matches(name, &m.scope.slug) => {
            Verdict::Enter(Rule::Project)
        }
        (Rule::Projects, true) => Verdict::Refuse(format!(
            "another project's conversations are not merged (this session's project is {})",
            m.scope.slug
        )),
        (Rule::Projects, false) => Verdict::Refuse("not a project directory".into()),
        (Rule::Project, false) if name.ends_with(".jsonl") => {
            match name
                .strip_suffix(".jsonl")
                .and_then(|c| m.scope.outside.get(c))
            {
                Some(p) => Verdict::Refuse(outside_reason(p, &m.scope.cwd)),
                None => file,
            }
        }
        (Rule::Project, false) => Verdict::Refuse("not a transcript (*.jsonl)".into()),
        (Rule::Project, true) if name == "memory" => Verdict::Enter(Rule::Memory),
        (Rule::Project, true) if ours(m, name) => Verdict::Enter(Rule::Any),
        (Rule::Project, true) => Verdict::Refuse(
            "not the directory of a conversation whose transcript is in this session's layer"
                .into(),
        ),
        (Rule::Memory, false) if name.ends_with(".md") => Verdict::File {
            max: m.limits.memory,
        },
        (Rule::Memory, _) => {
            Verdict::Refuse("only *.md files of the auto-memory are merged".into())
        }
        (Rule::Todos, false) if todo_conversation(name).is_some_and(|c| ours(m, c)) => file,
        (Rule::Todos, _) => {
            Verdict::Refuse("not the todo list of a conversation of this session's project".into())
        }
        (Rule::FileHistory, true) if ours(m, name) => Verdict::Enter(Rule::Any),
        (Rule::FileHistory, true) if m.scope.outside.contains_key(name) => {
            Verdict::Refuse(outside_reason(&m.scope.outside[name], &m.scope.cwd))
        }
        (Rule::FileHistory, _) => Verdict::Refuse(
            "not the file history of a conversation of this session's project".into(),
        ),
        (Rule::Plans, true) => Verdict::Enter(Rule::Plans),
        (Rule::Plans, false) => {
            m.plans += 1;
            if m.plans > m.limits.plans {
                return Verdict::Refuse(format!(
                    "more than {} plans in one session: the rest is not merged",
                    m.limits.plans
                ));
            }
            file
        }
        (Rule::Any, true) => Verdict::Enter(Rule::Any),
        (Rule::Any, false) => file,
    }
}

/// Transcripts are read this far for file-history snapshots (the merge's per-file bound).
const SCAN_CAP: u64 = 64 << 20;

fn outside_reason(path: &str, cwd: &str) -> String {
    format!(
        "a file-history snapshot in this conversation tracks {}, outside the project {}: restoring code at that message (claude --resume, rewind) would write it on your host",
        crate::human::printable(path),
        crate::human::printable(cwd)
    )
}

/// The first file a `file-history-snapshot` line of the transcript `name` (in `dir`)
/// tracks outside `cwd`, if one does. Claude Code restores every tracked path of a
/// snapshot, an absolute one as it is: a session could plant one for `~/.bashrc`.
fn tracked_outside(dir: &OwnedFd, name: &CStr, cwd: &Path) -> Option<String> {
    use std::io::BufRead;
    let fd = crate::fsutil::open_regular_at(dir, name.to_str().ok()?, nix::fcntl::OFlag::O_RDONLY)
        .ok()?;
    let f = std::io::Read::take(std::fs::File::from(fd), SCAN_CAP);
    for line in std::io::BufReader::new(f).split(b'\n') {
        let Ok(line) = line else { break };
        if !line
            .windows(b"file-history-snapshot".len())
            .any(|w| w == b"file-history-snapshot")
        {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) else {
            continue;
        };
        let tracked = v["snapshot"]["trackedFileBackups"].as_object();
        for p in tracked.into_iter().flat_map(|t| t.keys()) {
            if !inside(Path::new(p), cwd) {
                return Some(p.clone());
            }
        }
    }
    None
}

/// `p` (absolute, or relative to `cwd`) lies in `cwd`, with no `..` on the way.
fn inside(p: &Path, cwd: &Path) -> bool {
    use std::path::Component;
    let up = p.components().any(|c| matches!(c, Component::ParentDir));
    !up && (p.is_relative() || p.starts_with(cwd))
}

/// The scope of a session that ran in `cwd`, with the conversations whose transcript
/// (`<uuid>.jsonl`, a regular file) is in its layer's `projects/<slug>/`.
pub fn build(state: &OwnedFd, cwd: &Path) -> Scope {
    let mut scope = Scope {
        cwd: cwd.to_string_lossy().into_owned(),
        slug: slug(cwd),
        conversations: Default::default(),
        outside: Default::default(),
    };
    let Ok(projects) = open_dir_at(state.as_raw_fd(), c"projects") else {
        return scope;
    };
    for dir in crate::fsutil::read_names(projects.as_raw_fd()).unwrap_or_default() {
        if !dir.to_str().is_ok_and(|d| slug_matches(d, &scope.slug)) {
            continue;
        }
        let Ok(d) = open_dir_at(projects.as_raw_fd(), &dir) else {
            continue;
        };
        for n in crate::fsutil::read_names(d.as_raw_fd()).unwrap_or_default() {
            let Some(conv) = n
                .to_str()
                .ok()
                .and_then(|s| s.strip_suffix(".jsonl"))
                .filter(|c| is_uuid(c))
            else {
                continue;
            };
            if !lstat_at(d.as_raw_fd(), &n)
                .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
            {
                continue;
            }
            match tracked_outside(&d, &n, cwd) {
                Some(p) => {
                    scope.outside.insert(conv.to_string(), p);
                }
                None => {
                    scope.conversations.insert(conv.to_string());
                }
            }
        }
    }
    scope
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_tracking_a_file_outside_the_project_is_found() {
        let d = tempfile::tempdir().unwrap();
        let cwd = Path::new("/home/u/proj");
        let line = |p: &str| {
            format!(
                "{{\"type\":\"file-history-snapshot\",\"snapshot\":{{\"trackedFileBackups\":{{\"{p}\":{{\"version\":1}}}}}}}}\n"
            )
        };
        let user = "{\"type\":\"user\",\"message\":\"edit /home/u/.bashrc\"}\n";
        for (body, want) in [
            (format!("{user}{}", line("/home/u/proj/src/a.rs")), None),
            (format!("{user}{}", line("src/a.rs")), None),
            (line("/home/u/.bashrc"), Some("/home/u/.bashrc")),
            (line("../x"), Some("../x")),
            (
                line("/home/u/proj/../.bashrc"),
                Some("/home/u/proj/../.bashrc"),
            ),
            (line("/home/u/projX/a"), Some("/home/u/projX/a")),
        ] {
            std::fs::write(d.path().join("t.jsonl"), &body).unwrap();
            let dir = crate::fsutil::open_dir_nofollow(d.path()).unwrap();
            assert_eq!(
                tracked_outside(&dir, c"t.jsonl", cwd).as_deref(),
                want,
                "{body}"
            );
        }
    }

    #[test]
    fn todo_lists_name_their_conversation() {
        let c = "0d3c9a5e-1111-4222-8333-944455556666";
        let a = "1d3c9a5e-1111-4222-8333-944455556666";
        assert_eq!(todo_conversation(&format!("{c}-agent-{a}.json")), Some(c));
        assert_eq!(todo_conversation(&format!("{c}-agent-{c}.json")), Some(c));
        assert_eq!(todo_conversation(&format!("{c}.json")), None);
        assert_eq!(todo_conversation(&format!("{c}-agent-{a}.jsonx")), None);
        assert_eq!(
            todo_conversation(&format!("{}-agent-{a}.json", c.to_uppercase())),
            None,
            "canonical form only"
        );
        assert_eq!(
            todo_conversation("ü.json"),
            None,
            "no panic on a multi-byte name"
        );
        assert!(is_uuid(c) && !is_uuid("u1") && !is_uuid(&c.replace('-', "")));
    }
}
