//! What `ls`, `show` and gc know about one session directory, read as hostile input: a
//! session that cannot be opened or whose lock is no regular file is listed as such,
//! never left out (a session nobody sees is a session nobody can rescue).

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::id::SessionId;
use super::layout::{
    open_dir_at, read_meta, HOME_DIR, SESSION_OWN_DIRS, STATE_DIR, STATE_SKELETON_FILE,
};
use super::lock::{lock_state, LockState};
use super::meta::{ExitStatus, Metadata};
use crate::fsutil;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum State {
    /// Its lock is held: a supervisor is running it.
    Active,
    /// It ran and ended.
    Exited { exit: ExitStatus },
    /// It started and never ended, and nothing holds its lock: its supervisor was
    /// killed, the machine went down, or the end record could not be written (a full
    /// disk). Kept and aged like an exited session: its layers are the user's work.
    Crashed { reason: String },
    /// No valid record at all (missing, unreadable or malformed `session.json`).
    Orphaned { reason: String },
    /// Never started.
    Created,
    /// An OCI runtime started it from a bundle (the bundle's `createRuntime` hook
    /// recorded the start) and its `poststop` hook has not recorded an end: no csbox
    /// process runs it, so only the runtime knows whether its container still runs.
    RuntimeStarted,
    /// Its container, run by an OCI runtime from a bundle, stopped (the bundle's
    /// `poststop` hook recorded the end); its exit status is the runtime's.
    RuntimeEnded,
    /// The directory cannot be opened (mode 000, another owner).
    Unreadable { reason: String },
    /// Its lock is no regular file: nobody can tell whether it runs.
    Corrupt { reason: String },
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionInfo {
    pub id: SessionId,
    #[serde(flatten)]
    pub state: State,
    /// The state layer holds nothing but the skeleton csbox made.
    pub empty: bool,
    pub dir: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<Metadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// `active/<id>` exists (a view only; `state` says what is true).
    pub active_link: bool,
    #[serde(skip)]
    pub created: SystemTime,
}

impl SessionInfo {
    pub fn is_active(&self) -> bool {
        self.state == State::Active
    }

    /// What `csbox ls` shows: `running`, `exited 42`, `killed by SIGHUP`, `crashed`,
    /// `created`, `started` and `ended` (under an OCI runtime), `orphaned`, `unreadable`, `corrupt`. Whether it is empty is a flag
    /// ([`SessionInfo::flags`]), not a state.
    pub fn state_word(&self) -> String {
        match &self.state {
            State::Active => "running".into(),
            State::Crashed { .. } => "crashed".into(),
            State::Orphaned { .. } => "orphaned".into(),
            State::Unreadable { .. } => "unreadable".into(),
            State::Corrupt { .. } => "corrupt".into(),
            State::Exited { exit } => exit.describe(),
            State::Created => "created".into(),
            State::RuntimeStarted => "started".into(),
            State::RuntimeEnded => "ended".into(),
        }
    }

    /// The words `csbox ls` shows beside the state: `empty` (nothing but what csbox
    /// made) and how its last merge-back went (`merged`, `conflicts`,
    /// `unmerged` when a bound stopped it).
    pub fn flags(&self) -> Vec<&'static str> {
        let mut f = Vec::new();
        if self.empty {
            f.push("empty");
        }
        if let Some(rec) = self.meta.as_ref().and_then(|m| m.merge.as_ref()) {
            if rec.incomplete {
                f.push("unmerged");
            } else if !rec.conflicts.is_empty() {
                f.push("conflicts");
            } else if rec.merged_anything() || rec.unchanged > 0 {
                f.push("merged");
            }
        }
        f
    }

    /// Why the session is crashed, orphaned, unreadable or corrupt, or what its
    /// runtime's state means.
    pub fn reason(&self) -> Option<&str> {
        match &self.state {
            State::Crashed { reason }
            | State::Orphaned { reason }
            | State::Unreadable { reason }
            | State::Corrupt { reason } => Some(reason),
            State::RuntimeStarted => Some("an OCI runtime started it from a bundle (`csbox spec`): whether its container still runs is the runtime's to say (`runc list`)"),
            State::RuntimeEnded => Some("its container, run by an OCI runtime from a bundle (`csbox spec`), stopped: its exit status is the runtime's"),
            _ => None,
        }
    }
}

/// What is known about the store entry `id` (a directory, not a link: `ids` made sure).
/// None only when it is gone, or became a link or a file since it was listed.
pub(super) fn info_at(
    store_dir: &Path,
    store_fd: &OwnedFd,
    id: SessionId,
    with_size: bool,
    links: &HashSet<String>,
) -> Option<SessionInfo> {
    let dir = store_dir.join(id.as_str());
    let dfd = match open_dir_at(store_fd, id.as_str()) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR) => {
            return None
        }
        Err(e) => {
            let reason = format!(
                "open({}, O_DIRECTORY|O_NOFOLLOW) => {e}; make it yours and readable (`chmod 700 {}`) or remove it",
                dir.display(),
                dir.display()
            );
            return Some(SessionInfo {
                active_link: links.contains(id.as_str()),
                created: id.created().unwrap_or(SystemTime::UNIX_EPOCH),
                id,
                state: State::Unreadable { reason },
                empty: false,
                dir,
                meta: None,
                size_bytes: None,
            });
        }
    };
    let meta = read_meta(&dfd);
    let state = match (lock_state(&dfd), &meta) {
        (LockState::Held, _) => State::Active,
        (LockState::Corrupt(why), _) => State::Corrupt {
            reason: format!("{why}; look at {} and remove it by hand", dir.display()),
        },
        (LockState::Free, Err(why)) => State::Orphaned {
            reason: format!("session.json: {why}"),
        },
        (LockState::Free, Ok(m)) => match (&m.started, &m.exit) {
            (_, Some(exit)) => State::Exited { exit: exit.clone() },
            (None, None) => State::Created,
            // Only `csbox run` names a supervisor: a bundle's hooks record none.
            (Some(_), None) if m.supervisor_pid.is_none() => match m.ended {
                Some(_) => State::RuntimeEnded,
                None => State::RuntimeStarted,
            },
            (Some(_), None) => State::Crashed {
                reason: "it started and never ended: its supervisor was killed, the machine went down or its end record could not be written".into(),
            },
        },
    };
    let masks = meta
        .as_ref()
        .map(|m| m.masks.as_slice())
        .unwrap_or_default();
    let empty = state_is_empty(&dfd, masks);
    let created = meta
        .as_ref()
        .map(|m| m.created)
        .ok()
        .or_else(|| id.created())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let size_bytes = with_size.then(|| fsutil::disk_usage(&dfd).map(|s| s.bytes).unwrap_or(0));
    Some(SessionInfo {
        active_link: links.contains(id.as_str()),
        dir,
        id,
        state,
        empty,
        meta: meta.ok(),
        size_bytes,
        created,
    })
}

/// Names in directory `parent/name` (no-follow), or None if it can't be read.
fn dir_names(parent: &OwnedFd, name: &str) -> Option<Vec<Vec<u8>>> {
    use std::os::fd::AsRawFd;
    // getdents on an fd of our own (opendir(3) adds fstat, two fcntl and a seek): `ls`
    // looks into a few directories of every session.
    let names = match name {
        "." => crate::fsutil::read_names(parent.as_raw_fd()).ok()?,
        _ => {
            let d = open_dir_at(parent, name).ok()?;
            crate::fsutil::read_names(d.as_raw_fd()).ok()?
        }
    };
    Some(names.into_iter().map(|n| n.into_bytes()).collect())
}

/// True when the session's state holds nothing but what csbox put there (its skeleton,
/// and in the home layer the masks over hidden paths its record names).
fn state_is_empty(dfd: &OwnedFd, masks: &[std::path::PathBuf]) -> bool {
    // What csbox moved out of the project is the only copy of it (a file the user may
    // want back) and its record: a session holding any is never empty. Looked at last,
    // for a session that looks empty otherwise (one open more per such session in `ls`).
    layers_empty(dfd, masks) && !quarantined(dfd)
}

/// Whether the session's quarantine holds anything (or cannot be read: kept too).
fn quarantined(dfd: &OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    match open_dir_at(dfd, super::quarantine::QUARANTINE_DIR) {
        Err(nix::errno::Errno::ENOENT) => false,
        Err(_) => true,
        Ok(q) => crate::fsutil::read_names(q.as_raw_fd()).map_or(true, |n| !n.is_empty()),
    }
}

/// Whether the session's layers hold nothing but what csbox put there.
fn layers_empty(dfd: &OwnedFd, masks: &[std::path::PathBuf]) -> bool {
    // Anything the session wrote to its home counts as much as its ~/.claude.
    let home_written = open_dir_at(dfd, HOME_DIR)
        .ok()
        .and_then(|h| open_dir_at(&h, "upper").ok())
        .is_some_and(|u| !super::whiteout::holds_only_masks(&u, masks));
    if home_written {
        return false;
    }
    let Ok(sfd) = open_dir_at(dfd, STATE_DIR) else {
        return true;
    };
    let Some(names) = dir_names(&sfd, ".") else {
        return false;
    };
    // `projects/<key>` and `file-history/<uuid>`: the upper dirs csbox makes for the
    // overlays on this project's entries (`plan::Mounts::own_conversations`).
    let made_upper = |d: &str| {
        open_dir_at(&sfd, d).is_ok_and(|dfd| {
            dir_names(&dfd, ".").is_some_and(|v| {
                v.iter().all(|n| {
                    std::str::from_utf8(n)
                        .ok()
                        .and_then(|n| dir_names(&dfd, n))
                        .is_some_and(|e| e.is_empty())
                })
            })
        })
    };
    names.iter().all(|n| {
        n.as_slice() == STATE_SKELETON_FILE.as_bytes()
            || SESSION_OWN_DIRS
                .iter()
                .any(|s| s.as_bytes() == n.as_slice())
            || (n.as_slice() == b"projects" && made_upper("projects"))
            || (n.as_slice() == b"file-history" && made_upper("file-history"))
    }) && SESSION_OWN_DIRS
        .iter()
        .all(|d| dir_names(&sfd, d).is_none_or(|v| v.is_empty()))
}
