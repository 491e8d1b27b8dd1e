//! The names inside a session directory, and the two reads every reader of the store
//! shares: a session dir opened without following a link, its record read bounded.

use std::os::fd::{AsRawFd, OwnedFd};

use super::meta::{Metadata, META_FILE, META_LIMIT};
use crate::fsutil::read_small_at;

pub const ACTIVE_DIR: &str = "active";
pub const STATE_DIR: &str = "state";
pub const WORK_DIR: &str = "work";
/// The copy-on-write home's layers: `home/upper` (what the session wrote to its home)
/// and `home/work` (overlayfs's work dir).
pub const HOME_DIR: &str = "home";
pub const HOME_UPPER: &str = "home/upper";
pub const HOME_WORK: &str = "home/work";
/// `~/.claude` dirs that hold one Claude Code session's own state, each bound from the
/// session's layer over whatever the lower layer has (`plan::SESSION_OWN`): another
/// session's pid files, the host's shell snapshots with their environment dumps and env
/// of past sessions, the text pasted into every past conversation, plans that name no
/// project; and Claude Code's own records of past runs, which hold other projects'
/// secrets (red-team 7, A7-6): `backups/` (full copies of `~/.claude.json`, every
/// project's MCP servers and their tokens), `debug/` (logs with other projects'
/// prompts), `ide/` (the IDE extensions' lock files with their MCP auth tokens),
/// `telemetry/`, `statsig/`. The session's own writes there stay in its layer and are
/// not merged back.
pub const SESSION_OWN_DIRS: &[&str] = &[
    "sessions",
    "shell-snapshots",
    "session-env",
    "paste-cache",
    "plans",
    "backups",
    "debug",
    "ide",
    "telemetry",
    "statsig",
];
/// Entries csbox itself puts into a fresh state dir besides [`SESSION_OWN_DIRS`]. A
/// state holding only these is "empty" (the directories among them empty too).
pub const STATE_SKELETON_FILE: &str = ".claude.json";

pub(super) fn open_dir_at(store_fd: &OwnedFd, name: &str) -> nix::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    let fd = nix::fcntl::openat(
        Some(store_fd.as_raw_fd()),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: fresh fd.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

pub(super) fn read_meta(dfd: &OwnedFd) -> std::result::Result<Metadata, String> {
    let bytes = read_small_at(dfd, META_FILE, META_LIMIT).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => "missing".to_string(),
        _ => e.to_string(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| format!("invalid ({e})"))
}
