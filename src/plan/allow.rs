//! What of the host's `~/.claude` a session sees: an allow list (red-team 8, A8-1).
//!
//! Claude Code keeps dozens of kinds of data in its config dir, many of them every
//! project's (`api-dumps/`, `image-cache/`, `uploads/`, `jobs/`, `tasks/`, `logs/`, …,
//! and whatever a later version adds), so a view that showed the host's `~/.claude` and
//! masked what csbox knew of was always behind. The session's `~/.claude` has no layer of
//! the host's at all (`masks::claude_layer`); of the host's entries it shows only these,
//! each bound over a placeholder in the mask layer:
//! - the profile's `claude.readOnly` and `claude.readWrite` (settings, `CLAUDE.md`,
//!   skills, agents, commands, plugins, output styles, hooks, rules, key bindings, the
//!   login);
//! - the entry the command itself lies in, when it is run from `~/.claude` (the old local
//!   installer's `~/.claude/local/claude`): read-only, or the launch would not find it;
//! - what the shared `settings.json` and `CLAUDE.md` name in `~/.claude` (a status line
//!   or hook script, an `apiKeyHelper`, an `@~/.claude/…` import): read-only, those the
//!   host has, but never Claude Code's data ([`is_data`]);
//! - this project's conversations and prompt history (`masks::claude_layer`).

use std::path::{Path, PathBuf};

use super::facts::NodeKind;
use super::input::PlanInput;

/// The dirs of `~/.claude` that hold every project's conversations: in the session's
/// view only this project's entries are in them (A3-4, A7-11: `masks::claude_layer`).
pub const CONVERSATION_DIRS: &[&str] = &["projects", "file-history", "todos"];

/// Claude Code's data dirs and files in `~/.claude` besides the conversation dirs and the
/// per-session dirs (`SESSION_OWN`): Claude Code
/// 2.1.332's own list of its config-dir entries (attack-8, A8-1), with its prompt
/// history and state, and csbox's own files there.
const DATA: &[&str] = &[
    "history.jsonl",
    ".claude.json",
    ".credentials.json",
    "api-dumps",
    "dump-prompts",
    "image-cache",
    "uploads",
    "file-transfers",
    "jobs",
    "tasks",
    "traces",
    "logs",
    "agent-memory",
    "remote",
    "teams",
    "mcp-needs-auth-cache.json",
    "active-time.json",
    "cache",
    "chrome",
    "daemon",
    "downloads",
    "feedback-bundles",
    "local-settings",
    "mcp-discovery-cache",
    "project-settings",
    "remote-control",
    "scratch",
    "server-sessions.json",
    "shares",
    "startup-perf",
    "state",
    "stats-cache.json",
    "storage-v2",
    "usage-data",
    "update.lock",
    "update.log",
    "update.checked",
    "merge.lock",
];

/// Whether `name` in `~/.claude` holds Claude Code's (or csbox's) data rather than the
/// user's configuration: a reference from `settings.json` or `CLAUDE.md` never shares one
/// (a hook that logs to `~/.claude/logs/` must not show every project's logs).
pub(super) fn is_data(name: &str) -> bool {
    CONVERSATION_DIRS.contains(&name)
        || crate::session::store::SESSION_OWN_DIRS.contains(&name)
        || DATA.contains(&name)
}

/// The shared files whose references into `~/.claude` are followed (resolve reads them).
pub const REFERRING: &[&str] = &["settings.json", "CLAUDE.md"];

/// One host entry of `~/.claude` the session sees, at `~/.claude/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Shared {
    pub name: String,
    pub kind: NodeKind,
    pub read_only: bool,
}

/// Paths csbox itself makes sure exist before the launch (`prepare_claude_root` and the
/// session store), whatever the facts gathered earlier said.
pub(super) fn ensured(input: &PlanInput, d: &Path) -> Option<NodeKind> {
    let p = input.paths;
    if d == p.claude_root || d == p.sessions_dir {
        Some(NodeKind::Dir)
    } else if d == p.claude_json || d == p.claude_root.join(".credentials.json") {
        Some(NodeKind::File)
    } else {
        input.facts.kind(d)
    }
}

/// The host's entries of `~/.claude` the session sees (see the module doc), each once,
/// those the host has.
pub(super) fn shared(input: &PlanInput) -> Vec<Shared> {
    let lexical = &input.paths.claude_root;
    let c = &input.profile.claude;
    let listed = c.read_only.iter().map(|n| (n, true));
    let mut out: Vec<Shared> = Vec::new();
    for (name, read_only) in listed.chain(c.read_write.iter().map(|n| (n, false))) {
        // An entry the user does not have is simply not there.
        if let Some(kind) = ensured(input, &lexical.join(name)) {
            out.push(Shared {
                name: name.clone(),
                kind,
                read_only,
            });
        }
    }
    let mut add = |name: &str, kind: NodeKind| {
        if !out.iter().any(|s| s.name == name) {
            out.push(Shared {
                name: name.to_string(),
                kind,
                read_only: true,
            });
        }
    };
    if let Some((name, kind)) = exe_entry(input) {
        add(&name, kind);
    }
    if let Some(l) = &input.facts.host.claude {
        // A link is never shared (resolve lists it apart, in `referenced_links`).
        let is_link = |n: &str| l.referenced_links.iter().any(|(k, _)| k == n);
        for (name, kind) in l.referenced.iter() {
            if !is_data(name) && !is_link(name) {
                add(name, *kind);
            }
        }
    }
    out
}

/// The top entry of `~/.claude` the command lies in, if it does (lexically or once its
/// links are resolved).
fn exe_entry(input: &PlanInput) -> Option<(String, NodeKind)> {
    let roots = [
        input.paths.claude_root.clone(),
        input.facts.real(&input.paths.claude_root),
    ];
    let exes: [PathBuf; 2] = [input.exe.clone(), input.facts.real(&input.exe)];
    exes.iter().find_map(|e| {
        let rel = roots.iter().find_map(|r| e.strip_prefix(r).ok())?;
        let mut comps = rel.components();
        let first = comps.next()?.as_os_str().to_str()?.to_string();
        let kind = match comps.next() {
            Some(_) => NodeKind::Dir,
            None => NodeKind::File,
        };
        Some((first, kind))
    })
}

/// What the user should know about the allow list: references it does not follow.
pub(super) fn notes(input: &PlanInput) -> Vec<String> {
    let Some(l) = input.facts.host.claude.as_ref() else {
        return Vec::new();
    };
    let listed = |n: &String| {
        let c = &input.profile.claude;
        c.read_only.contains(n) || c.read_write.contains(n)
    };
    let data = l
        .referenced
        .iter()
        .filter(|(n, _)| is_data(n) && !listed(n))
        .map(|(n, _)| {
            format!(
                "your ~/.claude/settings.json or CLAUDE.md names ~/.claude/{n}, which holds Claude Code's data of every project: the session sees its own, empty one (list it in the profile's claude.readOnly to share yours)"
            )
        });
    let links = l
        .referenced_links
        .iter()
        .filter(|(n, _)| !listed(n))
        .map(|(n, t)| {
            let to = t.as_deref().map_or_else(
                || "a directory or nothing".to_string(),
                crate::human::printable_path,
            );
            format!(
                "your ~/.claude/settings.json or CLAUDE.md names ~/.claude/{n}, a symbolic link to {to}: not shared (a link could show the session your config or a hidden path, and the mount follows it again after any check); copy the script into ~/.claude, or list {n} in the profile's claude.readOnly to share it anyway"
            )
        });
    data.chain(links).collect()
}
