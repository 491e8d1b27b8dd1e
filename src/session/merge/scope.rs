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

use nix::fcntl::OFlag;

use super::state::{lstat_at, open_dir_at, Merger, Scope};
use super::tracked::Project;
use crate::human::printable;
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
    /// `file-history/<conversation>/`: the backups its transcript's accepted entries
    /// name (Claude Code keeps them flat: `<hash>@v<n>`).
    Backups,
    /// `plans/`: `<name>.md` files, flat, at most `Limits::plans` of them.
    Plans,
    /// `projects/<slug>/<uuid>/`: what Claude Code keeps beside a transcript,
    /// `subagents/` and `tool-results/`, nothing else (red-team 10, A10-B1: a whole git
    /// dir with a `core.fsmonitor` there, named by a `worktree-state` line, ran its
    /// command at the host's `claude --resume`).
    Conversation,
    /// `subagents/` and `tool-results/` of a conversation: files, flat, not hidden.
    Flat,
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

/// Decide the entry `name` (a directory when `dir`, else a regular file) found in the
/// directory `rel` where `rule` holds.
pub fn judge(m: &mut Merger, rule: Rule, rel: &Path, name: &CStr, dir: bool) -> Verdict {
    let Ok(name) = name.to_str() else {
        return Verdict::Refuse("not a name Claude Code writes (not UTF-8)".into());
    };
    // Control characters (ESC, BEL) in a name reach every later `ls` or script that
    // prints it raw (red-team 10, A10-B7 and the plan-name note).
    if name.chars().any(char::is_control) {
        return Verdict::Refuse("not a name Claude Code writes (control characters)".into());
    }
    let file = Verdict::File { max: m.limits.file };
    let ours = |m: &Merger, conv: &str| m.scope.conversations.contains_key(conv);
    let refused = |m: &Merger, conv: &str| m.scope.refused.get(conv).cloned();
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
            match name.strip_suffix(".jsonl").and_then(|c| refused(m, c)) {
                Some(why) => Verdict::Refuse(why),
                None => file,
            }
        }
        (Rule::Project, false) => Verdict::Refuse("not a transcript (*.jsonl)".into()),
        (Rule::Project, true) if name == "memory" => match &m.scope.shared_with {
            Some(other) => Verdict::Refuse(format!(
                "{other} has the same project key {} as this session's project {} (Claude Code's key keeps only ASCII letters and digits): its auto-memory is read by every claude in both, so it is not merged",
                m.scope.slug,
                printable(&m.scope.cwd)
            )),
            None => Verdict::Enter(Rule::Memory),
        },
        (Rule::Project, true) if ours(m, name) => Verdict::Enter(Rule::Conversation),
        (Rule::Conversation, true) if name == "subagents" || name == "tool-results" => {
            Verdict::Enter(Rule::Flat)
        }
        (Rule::Conversation, _) => Verdict::Refuse(
            "not what Claude Code keeps beside a transcript (subagents/, tool-results/)".into(),
        ),
        (Rule::Flat, false) if !name.starts_with('.') => file,
        (Rule::Flat, _) => Verdict::Refuse(
            "Claude Code keeps a conversation's subagents and tool results flat, with no hidden names".into(),
        ),
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
        (Rule::FileHistory, true) if ours(m, name) => Verdict::Enter(Rule::Backups),
        (Rule::FileHistory, true) if refused(m, name).is_some() => {
            Verdict::Refuse(refused(m, name).expect("refused"))
        }
        (Rule::FileHistory, _) => Verdict::Refuse(
            "not the file history of a conversation of this session's project".into(),
        ),
        (Rule::Backups, false) => {
            let conv = rel.file_name().and_then(|c| c.to_str()).unwrap_or("");
            if m.scope.conversations.get(conv).is_some_and(|n| n.contains(name)) {
                file
            } else {
                Verdict::Refuse(
                    "no file-history entry of this conversation's transcript names this backup"
                        .into(),
                )
            }
        }
        (Rule::Backups, true) => {
            Verdict::Refuse("a directory: Claude Code keeps a conversation's backups flat".into())
        }
        // Claude Code keeps its plans flat, one `<name>.md` each: a tree (a full git dir
        // with a config that runs a command, red-team 8, A8-5) or another kind of file is
        // the session's own, not a plan.
        (Rule::Plans, true) => Verdict::Refuse(
            "a directory: Claude Code keeps plans flat, as <name>.md files".into(),
        ),
        (Rule::Plans, false) if !is_plan_name(name) => {
            Verdict::Refuse("not a plan file (<name>.md, no leading dot)".into())
        }
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

/// A plan file's name as Claude Code makes it: `<name>.md`, not hidden.
fn is_plan_name(name: &str) -> bool {
    name.len() > 3 && name.ends_with(".md") && !name.starts_with('.')
}

/// The scope of a session that ran in `project`, with the conversations whose transcript
/// (`<uuid>.jsonl`, a regular file) is in its layer's `projects/<slug>/`, each judged for
/// what it tracks and where it ran ([`Project::scan`]).
pub fn build(state: &OwnedFd, project: Project) -> Scope {
    let cwd = project.cwd.clone();
    let mut scope = Scope {
        cwd: cwd.to_string_lossy().into_owned(),
        slug: slug(&cwd),
        conversations: Default::default(),
        refused: Default::default(),
        shared_with: None,
        memory: false,
        project,
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
        scope.memory |= lstat_at(d.as_raw_fd(), c"memory").is_ok();
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
            let file = format!("{conv}.jsonl");
            let judged = crate::fsutil::open_regular_at(&d, &file, OFlag::O_RDONLY)
                .map_err(|e| format!("it cannot be opened to check what it tracks: {e}"))
                .and_then(|fd| scope.project.scan(std::fs::File::from(fd)));
            match judged {
                Ok(names) => {
                    scope.conversations.insert(conv.to_string(), names);
                }
                Err(why) => {
                    scope.refused.insert(conv.to_string(), why);
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
