//! Liveness: a session is active exactly while some process holds an exclusive `flock` on
//! its `lock` file. The kernel drops the lock when the holder dies, even by SIGKILL, and a
//! reused pid cannot hold it, so pid files and `pgrep` are never consulted.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::fsutil::openat_nofollow;

pub const LOCK_FILE: &str = "lock";

/// An exclusive lock held for the life of the value.
#[derive(Debug)]
pub struct HeldLock {
    fd: OwnedFd,
}

impl HeldLock {
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }
}

fn flock(fd: &impl AsRawFd, op: libc::c_int) -> nix::Result<()> {
    // SAFETY: flock on a valid descriptor.
    Errno::result(unsafe { libc::flock(fd.as_raw_fd(), op) }).map(drop)
}

/// Take the exclusive lock on `dir/lock`, creating the file if needed. Probes by `ls`/`gc`
/// hold a shared lock for microseconds, so a conflict is retried briefly before it counts.
pub fn try_lock_exclusive(dir: impl AsFd, create: bool) -> std::io::Result<Option<HeldLock>> {
    let mut flags = OFlag::O_RDWR;
    if create {
        flags |= OFlag::O_CREAT;
    }
    let fd = openat_nofollow(dir, LOCK_FILE, flags, Mode::from_bits_truncate(0o600))?;
    for attempt in 0..20 {
        match flock(&fd, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => return Ok(Some(HeldLock { fd })),
            Err(Errno::EWOULDBLOCK) if attempt < 19 => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            Err(Errno::EWOULDBLOCK) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// Is the session whose directory is `dir` active? Takes a shared lock for an instant: if
/// that fails, someone holds the exclusive one. A missing lock file means not active.
pub fn is_locked(dir: impl AsFd) -> bool {
    let fd = match openat_nofollow(dir, LOCK_FILE, OFlag::O_RDONLY, Mode::empty()) {
        Ok(fd) => fd,
        Err(_) => return false,
    };
    matches!(
        flock(&fd, libc::LOCK_SH | libc::LOCK_NB),
        Err(Errno::EWOULDBLOCK)
    )
}

/// A shared lock on a file path (used for `CLAUDE_ROOT/update.lock`: every running session
/// holds it shared, the installer exclusive).
pub fn lock_path(
    path: &std::path::Path,
    exclusive: bool,
    nonblocking: bool,
) -> std::io::Result<Option<OwnedFd>> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let fd = OwnedFd::from(f);
    let mut op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    if nonblocking {
        op |= libc::LOCK_NB;
    }
    match flock(&fd, op) {
        Ok(()) => Ok(Some(fd)),
        Err(Errno::EWOULDBLOCK) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
