//! The code between clone() and execve(). It runs in the new namespaces, single-threaded,
//! and touches only what `Prepared` already holds: raw syscalls, no Rust I/O, and no
//! allocation except in the capability calls (the `caps` crate builds small sets; the
//! process is a fresh single-threaded copy, so no allocator lock can be held). A failure
//! is reported to the supervisor over a pipe as (where, errno), and the supervisor turns
//! that into one line naming the step, the path and the errno.
//!
//! This process becomes pid 1 of the new pid namespace: after setup it forks the command,
//! then reaps zombies and forwards signals until the command exits.

use super::relay::{on_signal, pid1_relay_loop, Relay};
use super::steps::{FailedAt, Fds, Phase, Prepared};
use super::syscalls::{
    apply, close_fds_except, errno, fail_at, open_source, reachable, write_file,
};

/// Keep only `p.keep_caps`, in every set: drop the rest from the bounding set (so no
/// exec can regain them), then set effective, inheritable and permitted to the kept
/// ones and raise them as ambient (so they survive the command's exec).
fn set_capabilities(p: &Prepared) -> Result<(), i32> {
    keep_only(&p.keep_caps, &p.drop_bounding)
}

/// [`set_capabilities`] with the lists given (`csbox enter` applies the same).
pub(crate) fn keep_only(
    keep_caps: &[caps::Capability],
    drop_bounding: &[caps::Capability],
) -> Result<(), i32> {
    use caps::CapSet;
    let os_err = |_| match errno() {
        0 => libc::EPERM,
        e => e,
    };
    for c in drop_bounding {
        caps::drop(None, CapSet::Bounding, *c).map_err(os_err)?;
    }
    caps::clear(None, CapSet::Ambient).map_err(os_err)?;
    let keep: caps::CapsHashSet = keep_caps.iter().copied().collect();
    // Effective first: capset(2) refuses an effective set that is not in the permitted one.
    for set in [CapSet::Effective, CapSet::Inheritable, CapSet::Permitted] {
        caps::set(None, set, &keep).map_err(os_err)?;
    }
    for c in keep_caps {
        caps::raise(None, CapSet::Ambient, *c).map_err(os_err)?;
    }
    Ok(())
}

impl Stage {
    /// Its name in CSBOX_TRACE's report.
    pub fn name(self) -> &'static str {
        match self {
            Stage::DieWithParent => "child: die-with-parent",
            Stage::IdMaps => "child: uid/gid maps",
            Stage::NsFds => "child: namespace fds out",
            Stage::Sources => "child: open sources",
            Stage::Keyring => "child: keyring",
            Stage::Mounts => "child: mounts",
            Stage::Relay => "child: relay listen",
            Stage::UsernsLimit => "child: userns limit",
            Stage::Chdir => "child: chdir",
            Stage::CloseFds => "child: close fds",
            Stage::NoNewPrivs => "child: no_new_privs",
            Stage::Capabilities => "child: capabilities",
            Stage::Fork => "child: fork the command",
            Stage::Rlimits => "command: rlimits",
            Stage::Landlock => "command: landlock",
            Stage::Seccomp => "command: seccomp",
            Stage::Exec => "command: signals reset, execve starts",
        }
    }
}

/// The stages of a sandbox's setup, in the order [`RECIPE`] gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// PR_SET_PDEATHSIG (if the plan says so), and leave if the supervisor is gone.
    DieWithParent,
    /// setgroups deny, uid_map, gid_map: our own ids, nothing else.
    IdMaps,
    /// Open `/proc/self/ns/*` and send them to the supervisor (for `csbox enter`): pid 1
    /// may open its own, and will not be dumpable later (see `session::control`).
    NsFds,
    /// Every source, opened O_PATH at its reserved number before any mount.
    Sources,
    /// A new, empty session keyring (the invoking shell's keys stay out of reach).
    Keyring,
    /// The plan's mounts, in order.
    Mounts,
    /// Pid 1 listens for the proxy (a proxied network only), once lo is up.
    Relay,
    /// /proc/sys/user/max_user_namespaces inside.
    UsernsLimit,
    Chdir,
    /// Close every inherited fd but the two pipes; pid 1 becomes non-dumpable.
    CloseFds,
    NoNewPrivs,
    Capabilities,
    /// pid 1 forks the command and stays behind to reap and forward signals.
    Fork,
    Rlimits,
    /// Landlock: writes only beneath the plan's writable paths, no IPC out of the sandbox.
    Landlock,
    /// The seccomp filter: after the last mount and every privileged call.
    Seccomp,
    Exec,
}

/// The setup, in order. Everything before [`Stage::Fork`] runs in pid 1, the rest in the
/// command's process. The order is the security argument: the ids are mapped before the
/// sources are opened (the opens happen as the mapped user), the sources before any
/// mount (nothing can redirect them), the capabilities dropped after the last mount, and
/// the seccomp filter installed last, just before exec.
pub const RECIPE: &[Stage] = &[
    Stage::DieWithParent,
    Stage::IdMaps,
    Stage::NsFds,
    Stage::Sources,
    Stage::Keyring,
    Stage::Mounts,
    Stage::Relay,
    Stage::UsernsLimit,
    Stage::Chdir,
    Stage::CloseFds,
    Stage::NoNewPrivs,
    Stage::Capabilities,
    Stage::Fork,
    Stage::Rlimits,
    Stage::Landlock,
    Stage::Seccomp,
    Stage::Exec,
];

/// # Safety
/// Only in the fresh child of the clone.
unsafe fn die_with_parent(p: &Prepared, f: &Fds) {
    // If the supervisor is already gone, its end of our pipe is closed and poll reports
    // POLLERR on ours.
    if p.die_with_parent {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    }
    let mut pfd = libc::pollfd {
        fd: f.err_w,
        events: 0,
        revents: 0,
    };
    if libc::poll(&mut pfd, 1, 0) > 0 && pfd.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
        fail_at(f.err_w, FailedAt::Phase(Phase::ParentGone), libc::ESRCH);
    }
}

/// Send our namespaces to the supervisor, one fd per message, in
/// [`super::steps::NS_FILES`] order. Nothing fails the launch here: without them the
/// session runs, and only `csbox enter` is refused.
///
/// # Safety
/// Only in the fresh child of the clone; raw calls, no allocation.
unsafe fn send_ns_fds(f: &Fds) {
    if f.ns_w < 0 {
        return;
    }
    for path in super::steps::NS_FILES {
        let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            break;
        }
        let sent = crate::net::send_fd(
            std::os::fd::BorrowedFd::borrow_raw(f.ns_w),
            std::os::fd::BorrowedFd::borrow_raw(fd),
        );
        libc::close(fd);
        if sent.is_err() {
            break;
        }
    }
    libc::close(f.ns_w);
}

/// # Safety
/// Only in the fresh child of the clone, before any mount.
unsafe fn open_sources(p: &Prepared, f: &Fds) {
    for (k, (spec, fd)) in p.sources.iter().enumerate() {
        let at = FailedAt::Source(k as u32);
        // The reserved numbers lie above every fd open when they were chosen, the pipes
        // included; never let a source replace one of them.
        if *fd == f.err_w || *fd == f.status_w {
            fail_at(f.err_w, at, libc::EBADF);
        }
        let t = match open_source(spec, p) {
            Ok(t) => t,
            Err(e) => fail_at(f.err_w, at, e),
        };
        if t != *fd {
            if libc::dup3(t, *fd, libc::O_CLOEXEC) < 0 {
                fail_at(f.err_w, at, errno());
            }
            libc::close(t);
        }
    }
}

/// One stage (all but Fork and Exec, which never return the same way).
///
/// # Safety
/// Only in the sandbox's child, in [`RECIPE`] order.
unsafe fn run_stage(stage: Stage, p: &Prepared, f: &Fds) {
    let phase = |ph: Phase, e: i32| fail_at(f.err_w, FailedAt::Phase(ph), e);
    match stage {
        Stage::DieWithParent => die_with_parent(p, f),
        // Unprivileged, a process may map only its own ids, and must deny setgroups
        // before writing gid_map (user_namespaces(7)).
        Stage::IdMaps => {
            if let Err(e) = write_file(b"/proc/self/setgroups\0", b"deny")
                .and_then(|_| write_file(b"/proc/self/uid_map\0", &p.uid_map))
                .and_then(|_| write_file(b"/proc/self/gid_map\0", &p.gid_map))
            {
                phase(Phase::IdMaps, e);
            }
        }
        Stage::NsFds => send_ns_fds(f),
        Stage::Sources => open_sources(p, f),
        // keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL): an anonymous keyring of our own, as
        // runc gives every container. A kernel without keys (ENOSYS) has none to leak.
        Stage::Keyring => {
            if p.new_session_keyring
                && libc::syscall(libc::SYS_keyctl, 1 as libc::c_long, 0 as libc::c_long) < 0
                && errno() != libc::ENOSYS
            {
                phase(Phase::Keyring, errno());
            }
        }
        Stage::Mounts => {
            for (i, step) in p.steps.iter().enumerate() {
                match apply(step) {
                    // Hiding what is gone, or what the sandbox cannot even look up (a
                    // socket in another user's 0700 dir): nothing to hide.
                    Err(libc::ENOENT) if p.missing_ok.get(i) == Some(&true) => {}
                    Err(libc::EACCES) if p.missing_ok.get(i) == Some(&true) && !reachable(step) => {
                    }
                    Err(e) => fail_at(f.err_w, FailedAt::Step(i as u32), e),
                    Ok(()) => {}
                }
            }
        }
        // user.max_user_namespaces is per user namespace: 0 here means nothing inside
        // can create one (nested unshare -U fails with ENOSPC), whatever the architecture.
        Stage::UsernsLimit => {
            if let Some(limit) = &p.max_user_namespaces {
                if let Err(e) = write_file(b"/proc/sys/user/max_user_namespaces\0", limit) {
                    phase(Phase::UsernsLimit, e);
                }
            }
            if let Some((instances, watches)) = &p.inotify_limits {
                for (f, v) in [
                    (&b"/proc/sys/user/max_inotify_instances\0"[..], instances),
                    (&b"/proc/sys/user/max_inotify_watches\0"[..], watches),
                ] {
                    match write_file(f, v) {
                        Ok(()) | Err(libc::ENOENT) => {}
                        Err(e) => phase(Phase::InotifyLimits, e),
                    }
                }
            }
        }
        Stage::Chdir => {
            if libc::chdir(p.cwd.as_ptr()) != 0 {
                phase(Phase::Chdir, errno());
            }
        }
        Stage::NoNewPrivs => {
            if p.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                phase(Phase::NoNewPrivs, errno());
            }
        }
        Stage::Capabilities => {
            if let Err(e) = set_capabilities(p) {
                phase(Phase::Capabilities, e);
            }
        }
        Stage::Rlimits => {
            for (k, &(res, v)) in p.rlimits.iter().enumerate() {
                let lim = libc::rlimit {
                    rlim_cur: v,
                    rlim_max: v,
                };
                if libc::setrlimit(res as _, &lim) != 0 {
                    fail_at(f.err_w, FailedAt::Rlimit(k as u32), errno());
                }
            }
        }
        Stage::Landlock => {
            if let Some(ll) = &p.landlock {
                if let Err((e, path)) = super::landlock::restrict_self(ll) {
                    match path {
                        Some(k) => fail_at(f.err_w, FailedAt::LandlockPath(k as u32), e),
                        None => phase(Phase::Landlock, e),
                    }
                }
            }
        }
        Stage::Seccomp => install_filter(p, f),
        Stage::Fork | Stage::Exec | Stage::Relay | Stage::CloseFds => {}
    }
}

/// The child's entry point after clone(): the [`RECIPE`]. Never returns.
///
/// # Safety
/// Must be called only in the fresh child of a clone(); `p` must stay valid (it is the
/// child's copy of the parent's memory).
pub unsafe fn child_main(p: &Prepared, f: &Fds) -> ! {
    let mut relay = Relay::NONE;
    for (i, &stage) in RECIPE.iter().enumerate() {
        if stage == Stage::Exec {
            crate::trace::child_mark(p.trace_page, i);
        }
        match stage {
            Stage::Relay => {
                if let Some(port) = p.relay_port {
                    relay = Relay::listen(f.relay, port, f);
                }
            }
            // Nothing from outside stays open; pid 1 is not dumpable, so nothing inside
            // can read its memory or open its fds through /proc/1.
            Stage::CloseFds => {
                close_fds_except(&[f.err_w, f.status_w, relay.sock, relay.v4, relay.v6]);
                libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
            }
            Stage::Fork => {
                let pid = libc::fork();
                if pid < 0 {
                    fail_at(f.err_w, FailedAt::Phase(Phase::Fork), errno());
                }
                if pid > 0 {
                    libc::close(f.err_w);
                    if relay.sock >= 0 {
                        pid1_relay_loop(pid, f, relay)
                    }
                    pid1_loop(pid, f)
                }
                libc::close(f.status_w);
            }
            Stage::Exec => exec(p, f),
            s => run_stage(s, p, f),
        }
        crate::trace::child_mark(p.trace_page, i);
    }
    libc::_exit(crate::error::EXIT_CSBOX)
}

/// A plan without rules gets no filter at all (loading one also needs no_new_privs or
/// CAP_SYS_ADMIN, which such a plan may not have).
///
/// # Safety
/// Only in the command's process.
unsafe fn install_filter(p: &Prepared, f: &Fds) {
    if let Err(e) = load_filter(&p.filter) {
        fail_at(f.err_w, FailedAt::Phase(Phase::Seccomp), e);
    }
}

/// Load a seccomp filter on the calling thread (and what it executes); a filter of one
/// instruction (no rules) is not loaded. Needs no_new_privs.
///
/// # Safety
/// Raw prctl, no allocation.
pub(crate) unsafe fn load_filter(filter: &[libc::sock_filter]) -> Result<(), i32> {
    if filter.len() <= 1 {
        return Ok(());
    }
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut _,
    };
    if libc::prctl(
        libc::PR_SET_SECCOMP,
        libc::SECCOMP_MODE_FILTER,
        &prog as *const libc::sock_fprog,
        0,
        0,
    ) != 0
    {
        return Err(errno());
    }
    Ok(())
}

/// Default signal dispositions and an empty mask, then the command.
///
/// # Safety
/// Only in the command's process, after the rest of the [`RECIPE`]; never returns.
unsafe fn exec(p: &Prepared, f: &Fds) -> ! {
    super::syscalls::reset_signals();
    libc::execve(p.exe.as_ptr(), p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr());
    let e = errno();
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&FailedAt::Phase(Phase::Exec).code().to_ne_bytes());
    msg[4..].copy_from_slice(&e.to_ne_bytes());
    libc::write(f.err_w, msg.as_ptr().cast(), 8);
    libc::_exit(if e == libc::ENOENT {
        crate::error::EXIT_NOT_FOUND
    } else {
        crate::error::EXIT_NOT_EXECUTABLE
    });
}

/// pid 1: reap every child, forward signals that a process sent us (kill(2), si_code <= 0)
/// to the command, and leave when the command exits, reporting its raw wait status. The
/// kernel then kills whatever is left in the namespace. Signals the terminal sends
/// (Ctrl-C, SIGWINCH: si_code SI_KERNEL) already reached the command's process group and
/// are not sent twice (a second Ctrl-C makes Claude Code exit).
///
/// # Safety
/// Only in pid 1 of the sandbox, with the wait set blocked; never returns.
unsafe fn pid1_loop(cmd: libc::pid_t, f: &Fds) -> ! {
    loop {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let sig = libc::sigwaitinfo(&f.wait_set, &mut info);
        if sig >= 0 {
            on_signal(cmd, f, sig, info.si_code);
        }
    }
}
