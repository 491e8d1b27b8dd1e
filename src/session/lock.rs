//! Liveness: a session is active exactly while some process holds an exclusive `flock` on
//! its `lock` file. The kernel drops the lock when the holder dies, even by SIGKILL, and a
//! reused pid cannot hold it, so pid files and `pgrep` are never consulted.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::fsutil::{open_regular_at, openat_nofollow};

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
/// A lock that is not a regular file (a FIFO, a link) is an error: nobody can be known
/// to hold it, so neither a run nor gc may take the session.
pub fn try_lock_exclusive(dir: impl AsFd, create: bool) -> std::io::Result<Option<HeldLock>> {
    let dir = dir.as_fd();
    // O_CREAT|O_EXCL never opens what is there: a file it makes is ours and regular; what
    // was there already is opened and checked.
    let made = match create {
        true => match openat_nofollow(
            dir,
            LOCK_FILE,
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL,
            Mode::from_bits_truncate(0o600),
        ) {
            Ok(fd) => Some(fd),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => None,
            Err(e) => return Err(e),
        },
        false => None,
    };
    let fd = match made {
        Some(fd) => fd,
        None => open_regular_at(dir, LOCK_FILE, OFlag::O_RDWR)?,
    };
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

/// What a session's lock says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    /// Someone holds it exclusively: the session is active.
    Held,
    /// Free, or there is no lock file (nothing holds it).
    Free,
    /// `lock` is no regular file (a FIFO, a socket, a link, a directory) or cannot be
    /// opened: nobody can tell whether the session runs. Corrupt: never removed by gc.
    Corrupt(String),
}

/// The state of the lock of the session whose directory is `dir`, without blocking (the
/// open is O_NONBLOCK|O_NOFOLLOW and type-checked). Takes a shared lock for an instant:
/// if that fails, someone holds the exclusive one.
pub fn lock_state(dir: impl AsFd) -> LockState {
    let fd = match open_regular_at(dir, LOCK_FILE, OFlag::O_RDONLY) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return LockState::Free,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return LockState::Corrupt("its lock is a symbolic link, not a regular file".into())
        }
        Err(e) => return LockState::Corrupt(format!("its lock cannot be used: {e}")),
    };
    match flock(&fd, libc::LOCK_SH | libc::LOCK_NB) {
        Err(Errno::EWOULDBLOCK) => LockState::Held,
        _ => LockState::Free,
    }
}

/// Is the session whose directory is `dir` active? Never blocks; a missing or corrupt
/// lock means no.
pub fn is_locked(dir: impl AsFd) -> bool {
    lock_state(dir) == LockState::Held
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
