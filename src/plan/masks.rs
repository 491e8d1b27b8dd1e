//! The mask layers: read-only lower layers csbox puts above an overlay's lower dir, so
//! that what the session must not see of the host stays hidden whatever the session does
//! in its own (upper) layer.
//!
//! - The home's: a whiteout at the first missing component of each hidden path the host
//!   lacks now (`View::home_masks`), with the directories above it as the host has them,
//!   so a `~/.pgpass` the host writes during the session does not show through (A3-8).
//!   Built outside the home, in a private dir (see `MaskPlace::Private`).
//! - `~/.claude`'s: `projects/`, `file-history/` and `todos/` opaque, with only this
//!   project's entries in them (A3-4; opaque since red-team 7, A7-11: whiteouts masked
//!   only what existed at launch); `history.jsonl` replaced by a copy holding only this
//!   project's lines. `claude --resume` and the up-arrow history of this project keep
//!   working.

use std::path::{Path, PathBuf};

use super::input::PlanInput;
use super::model::*;
use crate::session::slug::{is_own_conversation, slug, slug_matches};

/// Where `~/.claude`'s mask layer is made, relative to the session dir.
pub const CLAUDE_MASKS: &str = "claude-masks";

/// The home's mask layer, or None when nothing is to be masked.
pub(super) fn home_layer(input: &PlanInput, view: &View) -> Option<MaskLayer> {
    let nodes = &input.facts.host.home_nodes;
    let mut entries: Vec<MaskEntry> = Vec::new();
    // The paths of `entries`, for a look-up that does not grow with them.
    let mut added: foldhash::HashSet<PathBuf> = Default::default();
    for m in &view.home_masks {
        let Ok(rel) = m.strip_prefix(&view.home) else {
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
            if host.is_none() && added.insert(cur.clone()) {
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

/// The dirs of `~/.claude` that hold every project's conversations: opaque in the
/// session's view, with only this project's entries shown (A3-4, A7-11).
pub const CONVERSATION_DIRS: &[&str] = &["projects", "file-history", "todos"];

/// `~/.claude`'s mask layer (only over the host's real config: a fresh state dir shows
/// nothing of it). `projects/`, `file-history/` and `todos/` are opaque: what another
/// project has there, or gets while the session runs (another session's merge-back, the
/// host's `claude`), never shows. This project's `projects/<key>` and its conversations'
/// `file-history/<uuid>` are mount points here, each an overlay of the host's entry
/// (`Mounts::claude_view`); its todo files are copied.
pub(super) fn claude_layer(input: &PlanInput) -> Option<MaskLayer> {
    if input.state_mode != StateMode::Overlay {
        return None;
    }
    let lower = input.facts.host.claude.as_ref()?;
    let mut entries = Vec::new();
    for dir in CONVERSATION_DIRS {
        let mode = lower
            .dirs
            .iter()
            .find(|(d, _)| d == dir)
            .map_or(0o700, |(_, m)| *m);
        entries.push(MaskEntry::OpaqueDir {
            path: dir.into(),
            mode,
        });
        // And whiteouts over what other projects have there now: what still hides it
        // where the store's file system keeps no opaque mark (tmpfs before Linux 6.6).
        let own_slug = slug(&input.cwd);
        let names: &[String] = match *dir {
            "projects" => &lower.projects,
            "file-history" => &lower.file_history,
            _ => &lower.todos,
        };
        entries.extend(
            names
                .iter()
                .filter(|n| match *dir {
                    "projects" => !slug_matches(n, &own_slug),
                    _ => !is_own_conversation(&lower.own, n),
                })
                .map(|n| MaskEntry::Whiteout {
                    path: Path::new(dir).join(n),
                }),
        );
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
    if let Some(h) = &lower.history {
        entries.push(MaskEntry::File {
            path: "history.jsonl".into(),
            mode: h.mode,
            content: h.lines.clone(),
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
