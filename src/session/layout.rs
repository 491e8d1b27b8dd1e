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
/// Entries csbox itself puts into a fresh state dir. A state holding only these is
/// "empty" (the directories among them empty too): the session's `.claude.json`, and the
/// dirs bound over the lower layer's per-session state (`plan::SESSION_OWN`).
pub const STATE_SKELETON: &[&str] = &[
    "sessions",
    "shell-snapshots",
    "session-env",
    "paste-cache",
    "plans",
    ".claude.json",
];

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
