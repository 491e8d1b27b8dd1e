//! Where a Claude Code conversation is, for `csbox run --resume UUID`: in which sessions'
//! layers (`state/projects/<slug>/<uuid>.jsonl`), whether each copy is already merged,
//! and whether the real `~/.claude` has it. Session dirs are read as hostile input: every
//! open is beneath the store's fd, no link followed, a transcript must be a regular file.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::id::SessionId;
use super::layout::{open_dir_at, read_meta};
use super::lock::is_locked;
use super::store::Store;
use crate::error::Result;

pub use super::slug::{slug, slug_matches};

/// A session whose layer holds the conversation.
#[derive(Debug, Clone)]
pub struct Holder {
    pub id: SessionId,
    /// The project dir it is filed under.
    pub slug: String,
    /// The real `~/.claude` already holds all of it.
    pub merged: bool,
    /// The real `~/.claude` holds a copy this one does not continue byte for byte: the
    /// session rewrote the conversation (merge-back keeps such a copy beside, as a conflict).
    pub conflicts: bool,
    pub active: bool,
    /// The session's working directory, from its record.
    pub cwd: Option<PathBuf>,
    pub mtime: SystemTime,
}

#[derive(Debug, Default)]
pub struct Found {
    pub holders: Vec<Holder>,
    /// The project dir of `~/.claude/projects` that has it.
    pub in_base: Option<String>,
}

fn transcript(dir: &OwnedFd, name: &std::ffi::CStr) -> Option<(OwnedFd, libc::stat)> {
    // SAFETY: openat on a valid fd and C string; O_NONBLOCK: a FIFO never blocks.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: fresh descriptor.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).ok()?;
    (st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_size > 0).then_some((fd, st))
}

/// `projects/<slug>/<file>` under the directory `root`, for each slug: (slug, fd, stat).
fn find_in(root: &OwnedFd, file: &std::ffi::CStr) -> Vec<(String, OwnedFd, libc::stat)> {
    let Ok(projects) = open_dir_at(root, "projects") else {
        return Vec::new();
    };
    let Ok(names) = crate::fsutil::read_names(projects.as_raw_fd()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for n in names {
        let Ok(s) = n.to_str() else { continue };
        let Ok(d) = open_dir_at(&projects, s) else {
            continue;
        };
        if let Some((fd, st)) = transcript(&d, file) {
            out.push((s.to_string(), fd, st));
        }
    }
    out
}

/// Every copy of the conversation `uuid` (canonical form, checked by the caller).
pub fn find(store: &Store, claude_root: &Path, uuid: &str) -> Result<Found> {
    let file = CString::new(format!("{uuid}.jsonl")).expect("a uuid has no NUL");
    let mut found = Found::default();
    let root = crate::fsutil::open_dir_nofollow(claude_root).ok();
    let base: Vec<(String, OwnedFd, libc::stat)> =
        root.as_ref().map(|r| find_in(r, &file)).unwrap_or_default();
    found.in_base = base.first().map(|(s, _, _)| s.clone());
    let ids = store.ids()?;
    if ids.is_empty() {
        return Ok(found);
    }
    let store_fd = store.open()?;
    for id in ids {
        let Ok(dfd) = open_dir_at(&store_fd, id.as_str()) else {
            continue;
        };
        let Ok(state) = open_dir_at(&dfd, "state") else {
            continue;
        };
        for (slug, fd, st) in find_in(&state, &file) {
            let same_base = base.iter().find(|(s, _, _)| *s == slug);
            let merged =
                same_base.is_some_and(|(_, bfd, _)| crate::session::merge::already_in(&fd, bfd));
            let conflicts = !merged
                && same_base.is_some_and(|(_, bfd, _)| !crate::session::merge::extends(&fd, bfd));
            found.holders.push(Holder {
                id: id.clone(),
                slug,
                merged,
                conflicts,
                active: is_locked(&dfd),
                cwd: read_meta(&dfd).ok().map(|m| m.cwd),
                mtime: UNIX_EPOCH + Duration::from_secs(st.st_mtime.max(0) as u64),
            });
        }
    }
    Ok(found)
}
