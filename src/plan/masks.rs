//! The mask layers: read-only lower layers csbox puts above an overlay's lower dir, so
//! that what the session must not see of the host stays hidden whatever the session does
//! in its own (upper) layer.
//!
//! - The home's: a whiteout at the first missing component of each hidden path the host
//!   lacks now (`View::home_masks`), with the directories above it as the host has them,
//!   so a `~/.pgpass` the host writes during the session does not show through (A3-8).
//!   Built outside the home, in a private dir (see `MaskPlace::Private`).
//! - `~/.claude`'s: the bottom of the session's view, with no layer of the host's below
//!   it (red-team 8, A8-1: `plan::allow`): mount points for the host entries the session
//!   sees, `projects/`, `file-history/` and `todos/` with only this project's entries in
//!   them (A3-4, A7-11), and a `history.jsonl` holding only this project's lines.
//!   `claude --resume` and the up-arrow history of this project keep working.

use std::path::{Path, PathBuf};

use super::allow::CONVERSATION_DIRS;
use super::input::PlanInput;
use super::model::*;

/// Where `~/.claude`'s mask layer is made, relative to the session dir.
pub const CLAUDE_MASKS: &str = "claude-masks";

/// The home's mask layer, or None when nothing is to be masked.
pub(super) fn home_layer(input: &PlanInput, view: &View) -> Option<MaskLayer> {
    let nodes = &input.facts.host.home_nodes;
    let mut entries: Vec<MaskEntry> = Vec::new();
    // The paths of `entries`, for a look-up that does not grow with them.
    let mut added: foldhash::HashSet<PathBuf> = Default::default();
    for m in &view.home_masks {
        let Some(rel) = crate::pathkey::rel(m, &view.home) else {
            continue;
        };
        let mut cur = PathBuf::new();
        let n = rel.components().count();
        for (i, c) in rel.components().enumerate() {
            cur.push(c);
            let host = nodes.get(&view.home.join(&cur));
            let is_dir = host.is_some_and(|m| m & libc::S_IFMT == libc::S_IFDIR);
            if i + 1 < n && is_dir {
                if added.insert(cur.clone()) {
                    let mode = host.map_or(0o755, |m| m & 0o7777);
                    entries.push(MaskEntry::Dir {
                        path: cur.clone(),
                        mode,
                    });
                }
                continue;
            }
            // Something that is no directory is in the way: the host cannot make the
            // hidden path without removing it first, and it is not the plan's to hide.
            // The path itself is masked even when the host has it (`CLAUDE_HOME_DATA`).
            if (host.is_none() || i + 1 == n) && added.insert(cur.clone()) {
                entries.push(MaskEntry::Whiteout { path: cur.clone() });
            }
            break;
        }
    }
    (!entries.is_empty()).then(|| MaskLayer {
        place: MaskPlace::Private {
            runtime_dir: input.facts.host.private_runtime.clone(),
            built: None,
        },
        entries,
    })
}

/// The bottom layer of the session's `~/.claude`, relative to the session dir: an empty
/// directory (made by `session::layers::prepare`, written by nothing). Not the host's
/// `~/.claude`: overlayfs ignores an opaque mark on a layer's root (the root merges every
/// layer; checked on Linux 6.18), so with the host's config as a layer every entry csbox
/// did not know of showed through (red-team 8, A8-1), also those the host made while the
/// session ran.
pub const CLAUDE_BASE: &str = "claude-base";

/// `~/.claude`'s mask layer (only in the overlay mode: a fresh state dir is bound whole).
/// Nothing of the host's `~/.claude` is a layer of the session's (see [`CLAUDE_BASE`]):
/// this layer holds a mount point for each host entry the session sees (`allow::shared`,
/// bound over it by `Mounts::shared_entries`), so that no bind creates anything in the
/// session's layer or on the host; `projects/`, `file-history/` and `todos/` with only
/// this project's entries (its `projects/<key>` and its conversations' `file-history/<uuid>`
/// mount points, each an overlay of the host's entry: `Mounts::own_conversations`; its todo
/// files copied); and a `history.jsonl` holding only this project's lines. What another
/// project has there, or any entry the host makes while the session runs (another
/// session's merge-back, the host's `claude`), never shows.
pub(super) fn claude_layer(input: &PlanInput) -> Option<MaskLayer> {
    if input.state_mode != StateMode::Overlay {
        return None;
    }
    let lower = input.facts.host.claude.as_ref();
    let mut entries = Vec::new();
    for dir in CONVERSATION_DIRS {
        let mode = lower
            .and_then(|l| l.dirs.iter().find(|(d, _)| d == dir))
            .map_or(0o700, |(_, m)| *m);
        entries.push(MaskEntry::Dir {
            path: dir.into(),
            mode,
        });
        let Some(lower) = lower else { continue };
        match *dir {
            "projects" => entries.extend(lower.own_keys.iter().map(|k| MaskEntry::Dir {
                path: Path::new(dir).join(k),
                mode: 0o700,
            })),
            "file-history" => {
                entries.extend(lower.own_file_history.iter().map(|u| MaskEntry::Dir {
                    path: Path::new(dir).join(u),
                    mode: 0o700,
                }))
            }
            _ => entries.extend(
                lower
                    .own_todos
                    .iter()
                    .map(|(n, mode, content)| MaskEntry::File {
                        path: Path::new(dir).join(n),
                        mode: *mode,
                        content: content.clone(),
                    }),
            ),
        }
    }
    if let Some(h) = lower.and_then(|l| l.history.as_ref()) {
        entries.push(MaskEntry::File {
            path: "history.jsonl".into(),
            mode: h.mode,
            content: h.lines.clone(),
        });
    }
    // The mount points of the shared entries (a profile may list one of the above too:
    // its host entry is then bound over this layer's).
    for s in super::allow::shared(input) {
        let path = PathBuf::from(&s.name);
        if entries.iter().any(|e| e.path() == path) {
            continue;
        }
        entries.push(match s.kind {
            NodeKind::Dir => MaskEntry::Dir { path, mode: 0o755 },
            NodeKind::File => MaskEntry::File {
                path,
                mode: 0o600,
                content: String::new(),
            },
        });
    }
    Some(MaskLayer {
        place: MaskPlace::Session(CLAUDE_MASKS.into()),
        entries,
    })
}

/// What the user should know about the mask layers.
pub(super) fn notes(input: &PlanInput) -> Vec<String> {
    let history = input
        .facts
        .host
        .claude
        .as_ref()
        .and_then(|c| c.history.as_ref());
    match history.filter(|_| input.state_mode == StateMode::Overlay) {
        Some(h) if h.too_big => vec![format!(
            "~/.claude/history.jsonl is larger than {} MiB: it is not filtered for this project at start-up, and the session's up-arrow history starts empty",
            super::facts::HISTORY_CAP >> 20
        )],
        Some(h) if h.dropped > 0 => vec![format!(
            "the session's up-arrow history holds this project's latest {} MiB of prompts; {} older ones are left out",
            super::facts::HISTORY_COPY_CAP >> 20,
            h.dropped
        )],
        _ => Vec::new(),
    }
}
