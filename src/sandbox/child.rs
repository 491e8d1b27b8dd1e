//! The code between clone() and execve(). It runs in the new namespaces, single-threaded,
//! and touches only what `Prepared` already holds: raw syscalls, no Rust I/O, and no
//! allocation except in the capability calls (the `caps` crate builds small sets; the
//! process is a fresh single-threaded copy, so no allocator lock can be held). A failure
//! is reported to the supervisor over a pipe as (where, errno), and the supervisor turns
//! that into one line naming the step, the path and the errno.
//!
//! This process becomes pid 1 of the new pid namespace: after setup it forks the command,
//! then reaps zombies and forwards signals until the command exits.

use std::os::fd::RawFd;

use super::prepare::{Prepared, Step};

/// Where the child failed. Sent over the error pipe as one u32 ([`FailedAt::code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedAt {
    /// `Prepared::steps[i]`.
    Step(u32),
    /// Opening `Prepared::sources[k]`.
    Source(u32),
    /// Setting `Prepared::rlimits[k]`.
    Rlimit(u32),
    Phase(Phase),
}

/// The setup phases that are not a numbered step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Phase {
    /// The supervisor died before the child could start.
    ParentGone = 0,
    IdMaps = 1,
    UsernsLimit = 2,
    Chdir = 3,
    Capabilities = 4,
    NoNewPrivs = 5,
    Fork = 6,
    Seccomp = 7,
    Exec = 8,
}

const PHASES: [Phase; 9] = [
    Phase::ParentGone,
    Phase::IdMaps,
    Phase::UsernsLimit,
    Phase::Chdir,
    Phase::Capabilities,
    Phase::NoNewPrivs,
    Phase::Fork,
    Phase::Seccomp,
    Phase::Exec,
];

const TAG_SHIFT: u32 = 24;
const TAG_STEP: u32 = 0;
const TAG_SOURCE: u32 = 1;
const TAG_RLIMIT: u32 = 2;
const TAG_PHASE: u32 = 3;

impl FailedAt {
    pub fn code(self) -> u32 {
        let (tag, n) = match self {
            FailedAt::Step(i) => (TAG_STEP, i),
            FailedAt::Source(k) => (TAG_SOURCE, k),
            FailedAt::Rlimit(k) => (TAG_RLIMIT, k),
            FailedAt::Phase(p) => (TAG_PHASE, p as u32),
        };
        tag << TAG_SHIFT | (n & ((1 << TAG_SHIFT) - 1))
    }

    pub fn decode(code: u32) -> Option<FailedAt> {
        let n = code & ((1 << TAG_SHIFT) - 1);
        match code >> TAG_SHIFT {
            TAG_STEP => Some(FailedAt::Step(n)),
            TAG_SOURCE => Some(FailedAt::Source(n)),
            TAG_RLIMIT => Some(FailedAt::Rlimit(n)),
            TAG_PHASE => PHASES.get(n as usize).map(|p| FailedAt::Phase(*p)),
            _ => None,
        }
    }
}

/// The supervisor's view of the signals it forwards; the child waits on the same set.
pub struct Fds {
    pub err_w: RawFd,
    pub status_w: RawFd,
    /// The signal mask to restore before exec (the supervisor's mask at start).
    pub orig_mask: libc::sigset_t,
    /// Signals blocked and waited for by pid 1.
    pub wait_set: libc::sigset_t,
}

pub(crate) fn errno() -> i32 {
    // SAFETY: reading the thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Report `(code, err)` on `err_w` and exit.
///
/// # Safety
/// Only for a forked or cloned child: it `_exit`s without running destructors.
pub(crate) unsafe fn fail(err_w: RawFd, code: u32, err: i32) -> ! {
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&code.to_ne_bytes());
    msg[4..].copy_from_slice(&err.to_ne_bytes());
    libc::write(err_w, msg.as_ptr().cast(), 8);
    libc::_exit(crate::error::EXIT_CSBOX);
}

/// [`fail`] with a typed place.
///
/// # Safety
/// As [`fail`].
unsafe fn fail_at(err_w: RawFd, at: FailedAt, err: i32) -> ! {
    fail(err_w, at.code(), err)
}

/// Write `data` to the NUL-terminated `path` in one write(2).
///
/// # Safety
/// `path` must end with a NUL byte.
pub(crate) unsafe fn write_file(path: &[u8], data: &[u8]) -> Result<(), i32> {
    debug_assert_eq!(path.last(), Some(&0));
    let fd = libc::open(path.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return Err(errno());
    }
    let r = libc::write(fd, data.as_ptr().cast(), data.len());
    let e = errno();
    libc::close(fd);
    if r != data.len() as isize {
        return Err(e);
    }
    Ok(())
}

fn ptr(c: &Option<std::ffi::CString>) -> *const libc::c_char {
    c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr())
}

/// struct mount_attr of mount_setattr(2); libc has no binding for the call.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// Set mount attributes (mount_setattr, Linux 5.12+, hand-written: neither libc, nix nor
/// rustix 1 wraps it), else a remount of `dst` alone that keeps the flags the kernel
/// locked on it (nosuid/nodev/noexec/atime): dropping a locked flag in a user namespace
/// is EPERM.
///
/// # Safety
/// `dst` must be a valid NUL-terminated path; only in the sandbox's child, where the
/// mounts are its own.
unsafe fn set_attr(dst: *const libc::c_char, attr: u64, recursive: bool) -> Result<(), i32> {
    let ma = MountAttr {
        attr_set: attr,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let r = libc::syscall(
        libc::SYS_mount_setattr,
        libc::AT_FDCWD,
        dst,
        if recursive { AT_RECURSIVE } else { 0 },
        &ma as *const MountAttr,
        std::mem::size_of::<MountAttr>(),
    );
    if r == 0 {
        return Ok(());
    }
    if errno() != libc::ENOSYS {
        return Err(errno());
    }
    let mut st: libc::statvfs = std::mem::zeroed();
    if libc::statvfs(dst, &mut st) != 0 {
        return Err(errno());
    }
    let keep = st.f_flag
        & (libc::ST_RDONLY
            | libc::ST_NOSUID
            | libc::ST_NODEV
            | libc::ST_NOEXEC
            | libc::ST_NOATIME
            | libc::ST_NODIRATIME
            | libc::ST_RELATIME);
    let mut flags = libc::MS_BIND | libc::MS_REMOUNT | keep as libc::c_ulong;
    for (bit, ms) in [
        (super::prepare::MOUNT_ATTR_RDONLY, libc::MS_RDONLY),
        (super::prepare::MOUNT_ATTR_NOSUID, libc::MS_NOSUID),
        (super::prepare::MOUNT_ATTR_NODEV, libc::MS_NODEV),
        (super::prepare::MOUNT_ATTR_NOEXEC, libc::MS_NOEXEC),
    ] {
        if attr & bit != 0 {
            flags |= ms;
        }
    }
    let null = std::ptr::null();
    if libc::mount(null, dst, null, flags, null.cast()) != 0 {
        return Err(errno());
    }
    Ok(())
}

/// One step of the setup.
///
/// # Safety
/// Only in the sandbox's child, after the sources are open; the step's C strings
/// live in `Prepared`, which outlives the call.
unsafe fn apply(step: &Step) -> Result<(), i32> {
    let r = match step {
        Step::Mount {
            src,
            dst,
            fstype,
            flags,
            data,
            ..
        } => libc::mount(
            ptr(src),
            dst.as_ptr(),
            ptr(fstype),
            *flags,
            ptr(data).cast(),
        ),
        Step::SetAttr {
            dst,
            attr,
            recursive,
        } => return set_attr(dst.as_ptr(), *attr, *recursive),
        Step::Mkdir { path, mode } => {
            if libc::mkdir(path.as_ptr(), *mode) != 0 && errno() != libc::EEXIST {
                return Err(errno());
            }
            0
        }
        Step::Touch { path } => {
            let fd = libc::open(
                path.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                0o644,
            );
            if fd < 0 {
                return if errno() == libc::EEXIST {
                    Ok(())
                } else {
                    Err(errno())
                };
            }
            libc::close(fd);
            0
        }
        Step::Symlink { target, path } => libc::symlink(target.as_ptr(), path.as_ptr()),
        Step::Chmod { path, mode } => libc::chmod(path.as_ptr(), *mode),
        Step::LoopbackUp => return loopback_up(),
    };
    if r != 0 {
        return Err(errno());
    }
    Ok(())
}

/// A new network namespace has only `lo`, and it is down.
///
/// # Safety
/// Only in the sandbox's child, in its own network namespace.
unsafe fn loopback_up() -> Result<(), i32> {
    let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
    if fd < 0 {
        return Err(errno());
    }
    let mut ifr: libc::ifreq = std::mem::zeroed();
    for (i, b) in b"lo".iter().enumerate() {
        ifr.ifr_name[i] = *b as libc::c_char;
    }
    let mut r = libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut ifr);
    if r == 0 {
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        r = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &ifr);
    }
    let e = errno();
    libc::close(fd);
    if r != 0 {
        return Err(e);
    }
    Ok(())
}

/// Keep only `p.keep_caps`, in every set: drop the rest from the bounding set (so no
/// exec can regain them), then set effective, inheritable and permitted to the kept
/// ones and raise them as ambient (so they survive the command's exec).
fn set_capabilities(p: &Prepared) -> Result<(), i32> {
    use caps::CapSet;
    let os_err = |_| match errno() {
        0 => libc::EPERM,
        e => e,
    };
    for c in &p.drop_bounding {
        caps::drop(None, CapSet::Bounding, *c).map_err(os_err)?;
    }
    caps::clear(None, CapSet::Ambient).map_err(os_err)?;
    let keep: caps::CapsHashSet = p.keep_caps.iter().copied().collect();
    // Effective first: capset(2) refuses an effective set that is not in the permitted one.
    for set in [CapSet::Effective, CapSet::Inheritable, CapSet::Permitted] {
        caps::set(None, set, &keep).map_err(os_err)?;
    }
    for c in &p.keep_caps {
        caps::raise(None, CapSet::Ambient, *c).map_err(os_err)?;
    }
    Ok(())
}

/// Close every fd from 3 up except `keep` (sources, inherited fds of the user's shell, the
/// supervisor's lock: nothing from outside leaks into the sandbox).
///
/// # Safety
/// Closes descriptors other code may hold: only in the sandbox's child, where nothing
/// but `keep` is still needed.
unsafe fn close_fds_except(keep: &[RawFd]) {
    let mut lo: u32 = 3;
    let mut sorted = [0 as RawFd; 4];
    let n = keep.len().min(4);
    sorted[..n].copy_from_slice(&keep[..n]);
    sorted[..n].sort_unstable();
    for &k in &sorted[..n] {
        if k as u32 > lo {
            close_range(lo, k as u32 - 1);
        }
        lo = lo.max(k as u32 + 1);
    }
    close_range(lo, u32::MAX);
}

/// # Safety
/// As [`close_fds_except`].
unsafe fn close_range(lo: u32, hi: u32) {
    if libc::syscall(libc::SYS_close_range, lo, hi, 0) != 0 {
        let end = hi.min(4096);
        for fd in lo..=end {
            libc::close(fd as RawFd);
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
    /// Every source, opened O_PATH at its reserved number before any mount.
    Sources,
    /// The plan's mounts, in order.
    Mounts,
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
    Stage::Sources,
    Stage::Mounts,
    Stage::UsernsLimit,
    Stage::Chdir,
    Stage::CloseFds,
    Stage::NoNewPrivs,
    Stage::Capabilities,
    Stage::Fork,
    Stage::Rlimits,
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

/// # Safety
/// Only in the fresh child of the clone, before any mount.
unsafe fn open_sources(p: &Prepared, f: &Fds) {
    for (k, (path, fd)) in p.sources.iter().enumerate() {
        let at = FailedAt::Source(k as u32);
        // The reserved numbers lie above every fd open when they were chosen, the pipes
        // included; never let a source replace one of them.
        if *fd == f.err_w || *fd == f.status_w {
            fail_at(f.err_w, at, libc::EBADF);
        }
        let t = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
        if t < 0 {
            fail_at(f.err_w, at, errno());
        }
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
        Stage::Sources => open_sources(p, f),
        Stage::Mounts => {
            for (i, step) in p.steps.iter().enumerate() {
                if let Err(e) = apply(step) {
                    fail_at(f.err_w, FailedAt::Step(i as u32), e);
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
        }
        Stage::Chdir => {
            if libc::chdir(p.cwd.as_ptr()) != 0 {
                phase(Phase::Chdir, errno());
            }
        }
        // Nothing from outside stays open; pid 1 is not dumpable, so nothing inside can
        // read its memory or open its fds through /proc/1.
        Stage::CloseFds => {
            close_fds_except(&[f.err_w, f.status_w]);
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
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
        Stage::Seccomp => install_filter(p, f),
        Stage::Fork | Stage::Exec => {}
    }
}

/// The child's entry point after clone(): the [`RECIPE`]. Never returns.
///
/// # Safety
/// Must be called only in the fresh child of a clone(); `p` must stay valid (it is the
/// child's copy of the parent's memory).
pub unsafe fn child_main(p: &Prepared, f: &Fds) -> ! {
    for &stage in RECIPE {
        match stage {
            Stage::Fork => {
                let pid = libc::fork();
                if pid < 0 {
                    fail_at(f.err_w, FailedAt::Phase(Phase::Fork), errno());
                }
                if pid > 0 {
                    libc::close(f.err_w);
                    pid1_loop(pid, f)
                }
                libc::close(f.status_w);
            }
            Stage::Exec => exec(p, f),
            s => run_stage(s, p, f),
        }
    }
    libc::_exit(crate::error::EXIT_CSBOX)
}

/// A plan without rules gets no filter at all (loading one also needs no_new_privs or
/// CAP_SYS_ADMIN, which such a plan may not have).
///
/// # Safety
/// Only in the command's process.
unsafe fn install_filter(p: &Prepared, f: &Fds) {
    if p.filter.len() <= 1 {
        return;
    }
    let prog = libc::sock_fprog {
        len: p.filter.len() as u16,
        filter: p.filter.as_ptr() as *mut _,
    };
    if libc::prctl(
        libc::PR_SET_SECCOMP,
        libc::SECCOMP_MODE_FILTER,
        &prog as *const libc::sock_fprog,
        0,
        0,
    ) != 0
    {
        fail_at(f.err_w, FailedAt::Phase(Phase::Seccomp), errno());
    }
}

/// The original signal mask, then the command.
///
/// # Safety
/// Only in the command's process, after the rest of the [`RECIPE`]; never returns.
unsafe fn exec(p: &Prepared, f: &Fds) -> ! {
    libc::sigprocmask(libc::SIG_SETMASK, &f.orig_mask, std::ptr::null_mut());
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
        if sig < 0 {
            continue;
        }
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
        } else if info.si_code <= 0 {
            libc::kill(cmd, sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_place_round_trips_through_its_code() {
        let mut all: Vec<FailedAt> = PHASES.iter().map(|p| FailedAt::Phase(*p)).collect();
        all.extend([
            FailedAt::Step(0),
            FailedAt::Step(77),
            FailedAt::Source(3),
            FailedAt::Rlimit(1),
        ]);
        for at in all {
            assert_eq!(FailedAt::decode(at.code()), Some(at), "{at:?}");
        }
        assert_eq!(FailedAt::decode(0xFFFF_0008), None, "an old-style code");
    }
}
