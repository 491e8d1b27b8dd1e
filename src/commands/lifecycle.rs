//! What `csbox run` does around a launch for a session's life: `--resume` finds the
//! conversation's session, the control socket serves `enter` and `stop` while the command
//! runs, the merge-back runs when it ends, and one line says how to come back.

use std::path::Path;

use crate::error::{Error, Result};
use crate::human::printable;
use crate::paths::Paths;
use crate::sandbox::Started;
use crate::session::control::{Offer, Server, Target};
use crate::session::meta::MergeRecord;
use crate::session::resume::{find, slug, slug_matches};
use crate::session::{ExitStatus, LiveSession, SessionId, Store};

/// Where `--resume UUID` runs `claude --resume UUID`.
#[derive(Debug, PartialEq, Eq)]
pub enum ResumeIn {
    /// Re-enter this session: its layer holds a newer copy than `~/.claude`.
    Session(SessionId),
    /// A new session: `~/.claude` holds the conversation (merged, or the host's own).
    New,
}

/// A Claude Code session id: a UUID, as Claude prints it.
fn check_uuid(u: &str) -> Result<()> {
    match uuid::Uuid::parse_str(u) {
        Ok(p) if p.hyphenated().to_string() == u => Ok(()),
        _ => Err(Error::Usage(format!(
            "--resume {:?}: not a Claude Code session id; give the UUID Claude printed (\"claude --resume 0d3c…\"), as in ~/.claude/projects/*/UUID.jsonl",
            printable(u)
        ))),
    }
}

/// Decide where the conversation `uuid` resumes from `cwd` (Claude Code finds it only
/// under the project dir of the directory it runs in).
pub fn resume_target(paths: &Paths, uuid: &str, cwd: &Path) -> Result<ResumeIn> {
    check_uuid(uuid)?;
    let store = Store::new(paths.sessions_dir.clone());
    let found = find(&store, &paths.claude_root, uuid)?;
    let here = slug(&crate::paths::canonical_or_self(cwd));
    let elsewhere = |dir_slug: &str, cwd: Option<&Path>| {
        let how = match cwd {
            Some(c) if slug_matches(dir_slug, &slug(c)) => {
                format!(
                    "cd {} && csbox run --resume {uuid}",
                    printable(&c.display().to_string())
                )
            }
            _ => format!(
                "run `csbox run --resume {uuid}` in the directory Claude Code files as {dir_slug}"
            ),
        };
        Error::BadSession {
            msg: format!("conversation {uuid} belongs to another directory (Claude Code finds a conversation only from its own project directory): {how}"),
        }
    };
    // A copy that does not continue the one in ~/.claude is the session's rewrite of the
    // conversation (a hostile session can plant one to capture the resume): never
    // re-entered for it, only said; `csbox run --session ID` enters it on purpose.
    let conflicting: Vec<_> = found.holders.iter().filter(|h| h.conflicts).collect();
    for h in &conflicting {
        crate::warn!(
            "session {} holds a copy of conversation {uuid} that does not continue the one in {}: not resumed there (`csbox run --session {}` enters it; `csbox show {}` shows what its merge kept beside)",
            h.id,
            paths.claude_root.display(),
            h.id,
            h.id
        );
    }
    let mut unmerged: Vec<_> = found
        .holders
        .iter()
        .filter(|h| !h.merged && !h.conflicts)
        .collect();
    unmerged.sort_by_key(|h| std::cmp::Reverse(h.mtime));
    let mut ids: Vec<&SessionId> = unmerged.iter().map(|h| &h.id).collect();
    ids.dedup();
    if ids.len() > 1 {
        // Which copy is the conversation is not for csbox to guess (an mtime is the
        // session's to set): the user picks.
        let list: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        return Err(Error::BadSession {
            msg: format!(
                "conversation {uuid} has unmerged copies in {} sessions ({}): enter the one you mean with `csbox run --session ID -- claude --resume {uuid}`",
                list.len(),
                list.join(", ")
            ),
        });
    }
    if let Some(h) = unmerged.first() {
        if h.active {
            return Err(Error::BadSession {
                msg: format!(
                    "conversation {uuid} is in session {}, which is running: two claude processes on one transcript would interleave it; wait for it to end",
                    h.id
                ),
            });
        }
        if !slug_matches(&h.slug, &here) {
            return Err(elsewhere(&h.slug, h.cwd.as_deref()));
        }
        return Ok(ResumeIn::Session(h.id.clone()));
    }
    let base = found
        .in_base
        .clone()
        .or_else(|| found.holders.first().map(|h| h.slug.clone()));
    match base {
        Some(s) if slug_matches(&s, &here) => Ok(ResumeIn::New),
        Some(s) => Err(elsewhere(
            &s,
            found.holders.first().and_then(|h| h.cwd.as_deref()),
        )),
        None => Err(Error::BadSession {
            msg: format!(
                "no conversation {uuid} in {} nor in any session's layer (see `csbox ls`)",
                paths.claude_root.join("projects").display()
            ),
        }),
    }
}

/// The command runs: serve its control socket (for `enter` and `stop`). A session that
/// cannot serve one still runs; only those two commands are refused.
pub fn serve(session: &LiveSession, st: Started) -> Option<Server> {
    let plan = serde_json::to_vec(st.plan).ok()?;
    let ns = if st.plan.sandboxed() {
        st.ns
    } else {
        Vec::new()
    };
    let offer = Offer {
        ns,
        plan,
        target: Target::of_child(st.pid as libc::pid_t),
    };
    match Server::start(session.dir_fd(), offer) {
        Ok(s) => Some(s),
        Err(e) => {
            crate::debug!(
                "session {}: no control socket ({e}): `csbox enter` and `csbox stop` are refused",
                session.id
            );
            None
        }
    }
}

/// Merge the ended session into `~/.claude`, saying on stderr what did not merge.
/// Returns the record to keep (None: merge-back is off, or it failed and said so).
pub fn merge_at_end(
    paths: &Paths,
    session: &LiveSession,
    profile: &crate::profile::Profile,
) -> Option<MergeRecord> {
    let items = &profile.claude.merge_back;
    if items.is_empty() {
        return None;
    }
    match super::merge::merge_live(paths, session, items, &profile.protect) {
        Ok(rec) => {
            if !rec.conflicts.is_empty() || !rec.refused.is_empty() || rec.incomplete {
                crate::warn!(
                    "session {}: merged into {}: {}",
                    session.id,
                    paths.claude_root.display(),
                    rec.summary()
                );
                for l in super::merge::details(&rec) {
                    eprintln!("csbox:   {l}");
                }
            }
            Some(rec)
        }
        Err(e) => {
            crate::warn!(
                "session {}: its conversations were not merged into {} ({e}); `csbox merge {}` tries again",
                session.id,
                paths.claude_root.display(),
                session.id
            );
            None
        }
    }
}

/// The line an interactive session ends with.
pub fn end_line(session: &LiveSession, status: &ExitStatus, removed: bool) -> String {
    let name = session
        .meta
        .name
        .as_deref()
        .map(|n| format!(" ({})", printable(n)))
        .unwrap_or_default();
    let how = match status {
        ExitStatus::Code(c) => format!("exit {c}"),
        ExitStatus::Signal(_) => status.describe(),
    };
    if removed {
        return format!(
            "csbox: session {}{name} ended ({how}) and was removed (--rm)",
            session.id
        );
    }
    format!(
        "csbox: session {}{name} ended ({how}); resume: csbox run --session {}",
        session.id, session.id
    )
}
