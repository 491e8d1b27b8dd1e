//! Pid 1's relay for a proxied network: it listens on 127.0.0.1 and ::1 at the plan's
//! port in the sandbox's own network namespace and passes every accepted connection to
//! the supervisor's proxy over a Unix socket (src/net/fdpass.rs). Pid 1 of a pid
//! namespace ignores every signal its descendants send it, and is not dumpable, so the
//! command can neither kill nor trace the relay; and since it reaps and forwards signals
//! in the same poll loop, nothing else runs beside the command.
//!
//! Everything here runs in the child between clone and exec, or in pid 1 afterwards:
//! raw system calls, no allocation.

use std::os::fd::{BorrowedFd, IntoRawFd, RawFd};

use super::steps::{FailedAt, Fds, Phase};
use super::syscalls::{errno, fail_at};

/// The relay's descriptors in pid 1; -1 where there is none.
#[derive(Clone, Copy)]
pub struct Relay {
    pub sock: RawFd,
    pub v4: RawFd,
    pub v6: RawFd,
}

impl Relay {
    pub const NONE: Relay = Relay {
        sock: -1,
        v4: -1,
        v6: -1,
    };

    /// Listen at `port` (lo is up: a mount step brought it up).
    ///
    /// # Safety
    /// Only in the sandbox's child, in its own network namespace.
    pub unsafe fn listen(sock: RawFd, port: u16, f: &Fds) -> Relay {
        let l = match crate::net::bind_loopback_listeners(port) {
            Ok(l) => l,
            Err(e) => fail_at(
                f.err_w,
                FailedAt::Phase(Phase::Relay),
                e.raw_os_error().unwrap_or(libc::EIO),
            ),
        };
        // A full socket buffer (the proxy is behind) must not stall pid 1: a connection
        // that cannot be passed at once is closed.
        let fl = libc::fcntl(sock, libc::F_GETFL);
        libc::fcntl(sock, libc::F_SETFL, fl | libc::O_NONBLOCK);
        Relay {
            sock,
            v4: l.v4.into_raw_fd(),
            v6: l.v6.map(IntoRawFd::into_raw_fd).unwrap_or(-1),
        }
    }
}

/// Pid 1 with a relay: wait for signals (a signalfd of the set the supervisor blocked),
/// the command's exit and connections, in one poll. Never returns.
///
/// # Safety
/// Only in pid 1 of the sandbox, after the command was forked.
pub unsafe fn pid1_relay_loop(cmd: libc::pid_t, f: &Fds, r: Relay) -> ! {
    let sfd = libc::signalfd(-1, &f.wait_set, libc::SFD_CLOEXEC);
    if sfd < 0 {
        libc::kill(cmd, libc::SIGKILL);
        libc::_exit(crate::error::EXIT_CSBOX);
    }
    let poll = |fd: RawFd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut fds = [
        poll(sfd),
        poll(r.v4),
        poll(r.v6),
        libc::pollfd {
            fd: r.sock,
            events: 0,
            revents: 0,
        },
    ];
    loop {
        if libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) < 0 {
            continue;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            let mut info: libc::signalfd_siginfo = std::mem::zeroed();
            let n = libc::read(
                sfd,
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                std::mem::size_of::<libc::signalfd_siginfo>(),
            );
            if n as usize == std::mem::size_of::<libc::signalfd_siginfo>() {
                on_signal(cmd, f, info.ssi_signo as i32, info.ssi_code);
            }
        }
        // The supervisor is gone: nothing to pass connections to (PDEATHSIG follows).
        if fds[3].revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            fds[1].fd = -1;
            fds[2].fd = -1;
            fds[3].fd = -1;
        }
        for i in [1, 2] {
            if fds[i].fd >= 0 && fds[i].revents & libc::POLLIN != 0 {
                pass_one(fds[i].fd, r.sock);
            }
        }
    }
}

/// Accept one connection and pass it out; whatever fails, the client is closed here.
///
/// # Safety
/// In pid 1, on its own listener and socket.
unsafe fn pass_one(listener: RawFd, sock: RawFd) {
    let c = libc::accept4(
        listener,
        std::ptr::null_mut(),
        std::ptr::null_mut(),
        libc::SOCK_CLOEXEC,
    );
    if c < 0 {
        if errno() == libc::EMFILE || errno() == libc::ENFILE {
            // Out of descriptors: a short pause instead of spinning on the listener.
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 50_000_000,
            };
            libc::nanosleep(&ts, std::ptr::null_mut());
        }
        return;
    }
    let _ = crate::net::send_fd(BorrowedFd::borrow_raw(sock), BorrowedFd::borrow_raw(c));
    libc::close(c);
}

/// Pid 1's answer to a signal: SIGCHLD reaps (and ends the sandbox with the command),
/// a signal a process sent (si_code <= 0: the supervisor forwarding one) goes to the
/// command.
///
/// # Safety
/// Only in pid 1 of the sandbox.
pub(super) unsafe fn on_signal(cmd: libc::pid_t, f: &Fds, sig: i32, code: i32) {
    if sig == libc::SIGCHLD {
        loop {
            let mut status = 0;
            let r = libc::waitpid(-1, &mut status, libc::WNOHANG);
            if r <= 0 {
                break;
            }
            if r == cmd {
                libc::write(f.status_w, (&status as *const i32).cast(), 4);
                libc::_exit(0);
            }
        }
    } else if code <= 0 {
        libc::kill(cmd, sig);
    }
}
