//! The supervisor's side of a running sandbox: signals blocked and read from a signalfd,
//! forwarded to the sandbox when a process sent them, a wall-clock limit, and the
//! command's status from pid 1.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::error::{Error, Result};
use crate::session::ExitStatus;

/// Signals the supervisor forwards to the sandbox when a process sends them.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// After the wall-clock limit: SIGTERM, then this long before SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(10);

pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2(O_CLOEXEC)", e))
}

/// Read until `buf` is full or EOF; returns how much was read.
pub(crate) fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    got
}

/// The signals a supervisor waits for, blocked; and the mask that was in force before.
pub struct Blocked {
    pub wait_set: SigSet,
    pub orig_mask: SigSet,
}

impl Blocked {
    #[allow(clippy::new_without_default)] // blocking signals is an action, not a default
    pub fn new() -> Blocked {
        let mut wait_set = SigSet::empty();
        for s in FORWARDED {
            wait_set.add(*s);
        }
        wait_set.add(Signal::SIGCHLD);
        // A parent that ignored SIGCHLD would make children vanish before we reap them.
        // SAFETY: restoring the default disposition installs no handler.
        let _ = unsafe {
            nix::sys::signal::signal(Signal::SIGCHLD, nix::sys::signal::SigHandler::SigDfl)
        };
        let mut orig_mask = SigSet::empty();
        let _ = nix::sys::signal::sigprocmask(
            SigmaskHow::SIG_BLOCK,
            Some(&wait_set),
            Some(&mut orig_mask),
        );
        Blocked {
            wait_set,
            orig_mask,
        }
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.orig_mask), None);
    }
}

/// The forwarded signals, blocked from the start of `csbox run`: one that arrives while
/// a session is being created waits until the supervisor forwards it (no half-made
/// session dir, no process left behind), and one that arrived before anything exists
/// ends csbox as it would have ([`Deferred::die_if_pending`]).
pub struct Deferred {
    orig: SigSet,
}

impl Deferred {
    pub fn block() -> Deferred {
        let mut set = SigSet::empty();
        for s in FORWARDED {
            set.add(*s);
        }
        let mut orig = SigSet::empty();
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut orig));
        Deferred { orig }
    }

    /// A forwarded signal is pending and nothing was made yet: die of it now, with its
    /// default action, as if it had not been blocked.
    pub fn die_if_pending(&self) {
        // SAFETY: an all-zero sigset_t is a valid (empty) set.
        let mut pending: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: sigpending writes the set we pass.
        if unsafe { libc::sigpending(&mut pending) } != 0 {
            return;
        }
        for s in FORWARDED {
            // SAFETY: reads the set sigpending filled.
            let is_pending = unsafe { libc::sigismember(&pending, *s as libc::c_int) } == 1;
            if is_pending && !self.orig.contains(*s) {
                // SAFETY: restoring the default disposition installs no handler.
                let _ =
                    unsafe { nix::sys::signal::signal(*s, nix::sys::signal::SigHandler::SigDfl) };
                let _ =
                    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.orig), None);
            }
        }
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.orig), None);
    }
}

pub(crate) fn decode(st: i32) -> ExitStatus {
    if libc::WIFSIGNALED(st) {
        ExitStatus::Signal(libc::WTERMSIG(st))
    } else {
        ExitStatus::Code(libc::WEXITSTATUS(st))
    }
}

fn read_status(fd: &OwnedFd) -> Option<ExitStatus> {
    let mut raw = [0u8; 4];
    (read_full(fd, &mut raw) == 4).then(|| decode(i32::from_ne_bytes(raw)))
}

/// Wait for our child `pid`, forwarding signals that processes send us (kill(2),
/// si_code <= 0); terminal signals already reached the command's process group. Past the
/// wall-clock limit: SIGTERM, then SIGKILL after a grace period.
///
/// With `status`, pid 1 of the sandbox reports the command's wait status on that pipe just
/// before it exits, and we return as soon as it arrives: the kernel tears the sandbox's
/// namespaces down (its mounts, the overlay, ipc and pid namespaces) before it tells the
/// parent that pid 1 exited, and nobody needs to wait for that. pid 1 is reaped by init
/// once we are gone; the processes left inside are already being killed with it.
///
/// Returns the command's status and whether the limit struck.
pub fn supervise(
    pid: libc::pid_t,
    blocked: &Blocked,
    timeout: Option<u64>,
    status: Option<&OwnedFd>,
) -> (ExitStatus, bool) {
    let mut deadline = timeout.and_then(|s| Instant::now().checked_add(Duration::from_secs(s)));
    let mut timed_out = false;
    let sfd = SignalFd::with_flags(&blocked.wait_set, SfdFlags::SFD_CLOEXEC).ok();
    let mut status = status;
    let target = nix::unistd::Pid::from_raw(pid);
    loop {
        let wait = match (&sfd, deadline) {
            (None, _) => PollTimeout::from(100u16),
            (Some(_), None) => PollTimeout::NONE,
            (Some(_), Some(d)) => {
                let ms = d.saturating_duration_since(Instant::now()).as_millis();
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let (sig_ready, status_ready, n) = {
            let mut fds = Vec::with_capacity(2);
            if let Some(s) = &sfd {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            }
            if let Some(s) = status {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            }
            let n = poll(&mut fds, wait).unwrap_or(-1);
            let ready = |i: usize| {
                fds.get(i)
                    .and_then(|f| f.revents())
                    .is_some_and(|r| !r.is_empty())
            };
            let (si, st) = match (sfd.is_some(), status.is_some()) {
                (true, true) => (ready(0), ready(1)),
                (true, false) => (ready(0), false),
                (false, true) => (false, ready(0)),
                (false, false) => (false, false),
            };
            (si, st, n)
        };
        if n < 0 {
            continue;
        }
        if n == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
            let (sig, next) = if timed_out {
                (Signal::SIGKILL, None)
            } else {
                (Signal::SIGTERM, Instant::now().checked_add(KILL_GRACE))
            };
            timed_out = true;
            crate::debug!("wall-clock limit: sending {} to {pid}", sig.as_str());
            let _ = nix::sys::signal::kill(target, sig);
            deadline = next;
            continue;
        }
        if let Some(st) = status.filter(|_| status_ready) {
            if let Some(s) = read_status(st) {
                return (s, timed_out);
            }
            // EOF: pid 1 died without reporting (killed from outside); its own wait status
            // says how, below.
            status = None;
        }
        if let Some(sfd) = sfd.as_ref().filter(|_| sig_ready) {
            if let Ok(Some(si)) = sfd.read_signal() {
                if si.ssi_signo as i32 != libc::SIGCHLD && si.ssi_code <= 0 {
                    if let Ok(sig) = Signal::try_from(si.ssi_signo as i32) {
                        let _ = nix::sys::signal::kill(target, sig);
                    }
                    continue;
                }
            }
        }
        let mut st = 0;
        // SAFETY: non-blocking reap of our only child (also covers a missing signalfd).
        if unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) } == pid {
            if let Some(s) = status.and_then(read_status) {
                return (s, timed_out);
            }
            return (decode(st), timed_out);
        }
    }
}
