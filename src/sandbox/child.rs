//! The code between clone() and execve(). It runs in the new namespaces, single-threaded,
//! and touches only what `Prepared` already holds: raw syscalls, no allocation, no Rust
//! I/O. A failure is reported to the supervisor over a pipe as (step, errno), and the
//! supervisor turns that into one line naming the step, the path and the errno.
//!
//! This process becomes pid 1 of the new pid namespace: after setup it forks the command,
//! then reaps zombies and forwards signals until the command exits.

use std::os::fd::RawFd;

use super::prepare::{Prepared, Step};

pub const STEP_PARENT_GONE: u32 = 0xFFFF_0000;
pub const STEP_ID_MAPS: u32 = 0xFFFF_0001;
pub const STEP_CHDIR: u32 = 0xFFFF_0002;
pub const STEP_PRIVS: u32 = 0xFFFF_0003;
pub const STEP_FORK: u32 = 0xFFFF_0004;
pub const STEP_SECCOMP: u32 = 0xFFFF_0005;
pub const STEP_EXEC: u32 = 0xFFFF_0006;
pub const STEP_USERNS_LIMIT: u32 = 0xFFFF_0007;
pub const STEP_RLIMIT: u32 = 0xFFFF_0008;
/// Opening source k fails with step STEP_SOURCE + k.
pub const STEP_SOURCE: u32 = 0xFFFE_0000;

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

pub(crate) unsafe fn fail(err_w: RawFd, step: u32, err: i32) -> ! {
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&step.to_ne_bytes());
    msg[4..].copy_from_slice(&err.to_ne_bytes());
    libc::write(err_w, msg.as_ptr().cast(), 8);
    libc::_exit(crate::error::EXIT_CSBOX);
}

pub(crate) unsafe fn write_file(path: &[u8], data: &[u8]) -> Result<(), i32> {
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

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const AT_RECURSIVE: libc::c_int = 0x8000;

/// Read-only, recursively (mount_setattr, Linux 5.12+), else a plain remount that keeps the
/// flags the kernel locked on this mount (nosuid/nodev/noexec/atime): dropping a locked
/// flag in a user namespace is EPERM.
unsafe fn remount_ro(dst: *const libc::c_char) -> Result<(), i32> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let r = libc::syscall(
        libc::SYS_mount_setattr,
        libc::AT_FDCWD,
        dst,
        AT_RECURSIVE as libc::c_uint,
        &attr as *const MountAttr,
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
        & (libc::ST_NOSUID
            | libc::ST_NODEV
            | libc::ST_NOEXEC
            | libc::ST_NOATIME
            | libc::ST_NODIRATIME
            | libc::ST_RELATIME);
    let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | keep as libc::c_ulong;
    if libc::mount(
        std::ptr::null(),
        dst,
        std::ptr::null(),
        flags,
        std::ptr::null(),
    ) != 0
    {
        return Err(errno());
    }
    Ok(())
}

unsafe fn apply(step: &Step) -> Result<(), i32> {
    let r = match step {
        Step::Mount {
            src,
            dst,
            fstype,
            flags,
            data,
        } => libc::mount(
            ptr(src),
            dst.as_ptr(),
            ptr(fstype),
            *flags,
            ptr(data).cast(),
        ),
        Step::RemountRo { dst } => return remount_ro(dst.as_ptr()),
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

/// Drop every capability, including the bounding set, and forbid regaining any.
unsafe fn drop_privileges() -> Result<(), i32> {
    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
        return Err(errno());
    }
    for cap in 0..64 {
        if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno() != libc::EINVAL {
            return Err(errno());
        }
    }
    libc::prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL,
        0,
        0,
        0,
    );
    // capset(2), version 3: two 32-bit words of effective/permitted/inheritable, all zero.
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    let hdr = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [0u32; 6];
    if libc::syscall(libc::SYS_capset, &hdr as *const Header, data.as_ptr()) != 0 {
        return Err(errno());
    }
    Ok(())
}

/// Close every fd from 3 up except `keep` (sources, inherited fds of the user's shell, the
/// supervisor's lock: nothing from outside leaks into the sandbox).
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

unsafe fn close_range(lo: u32, hi: u32) {
    if libc::syscall(libc::SYS_close_range, lo, hi, 0) != 0 {
        let end = hi.min(4096);
        for fd in lo..=end {
            libc::close(fd as RawFd);
        }
    }
}

/// The child's entry point after clone(). Never returns.
///
/// # Safety
/// Must be called only in the fresh child of a clone(); `p` must stay valid (it is the
/// child's copy of the parent's memory).
pub unsafe fn child_main(p: &Prepared, f: &Fds) -> ! {
    // 1. Die with the supervisor. If it is already gone, its end of our pipe is closed
    //    and poll reports POLLERR on ours.
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    let mut pfd = libc::pollfd {
        fd: f.err_w,
        events: 0,
        revents: 0,
    };
    if libc::poll(&mut pfd, 1, 0) > 0 && pfd.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
        libc::_exit(crate::error::EXIT_CSBOX);
    }
    // 2. Map ourselves to our own uid/gid. Unprivileged, a process may map only its own
    //    ids, and must deny setgroups before writing gid_map (user_namespaces(7)).
    if let Err(e) = write_file(b"/proc/self/setgroups\0", b"deny")
        .and_then(|_| write_file(b"/proc/self/uid_map\0", &p.uid_map))
        .and_then(|_| write_file(b"/proc/self/gid_map\0", &p.gid_map))
    {
        fail(f.err_w, STEP_ID_MAPS, e);
    }
    // 3. Every source, opened before any mount can hide or redirect it.
    for (k, (path, fd)) in p.sources.iter().enumerate() {
        // The reserved numbers lie above every fd open when they were chosen, the pipes
        // included; never let a source replace one of them.
        if *fd == f.err_w || *fd == f.status_w {
            fail(f.err_w, STEP_SOURCE + k as u32, libc::EBADF);
        }
        let t = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
        if t < 0 {
            fail(f.err_w, STEP_SOURCE + k as u32, errno());
        }
        if t != *fd {
            if libc::dup3(t, *fd, libc::O_CLOEXEC) < 0 {
                fail(f.err_w, STEP_SOURCE + k as u32, errno());
            }
            libc::close(t);
        }
    }
    // 4. The mounts, in plan order.
    for (i, step) in p.steps.iter().enumerate() {
        if let Err(e) = apply(step) {
            fail(f.err_w, i as u32, e);
        }
    }
    // user.max_user_namespaces is per user namespace: 0 here means nothing inside can
    // create one (nested unshare -U fails with ENOSPC), whatever the architecture.
    if p.forbid_nested_userns {
        if let Err(e) = write_file(b"/proc/sys/user/max_user_namespaces\0", b"0\n") {
            fail(f.err_w, STEP_USERNS_LIMIT, e);
        }
    }
    if libc::chdir(p.cwd.as_ptr()) != 0 {
        fail(f.err_w, STEP_CHDIR, errno());
    }
    // 5. Nothing from outside stays open; pid 1 is not dumpable, so nothing inside can
    //    read its memory or open its fds through /proc/1.
    close_fds_except(&[f.err_w, f.status_w]);
    libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    if let Err(e) = drop_privileges() {
        fail(f.err_w, STEP_PRIVS, e);
    }
    // 6. The command.
    let pid = libc::fork();
    if pid < 0 {
        fail(f.err_w, STEP_FORK, errno());
    }
    if pid == 0 {
        libc::close(f.status_w);
        for &(res, v) in &p.rlimits {
            let lim = libc::rlimit {
                rlim_cur: v,
                rlim_max: v,
            };
            if libc::setrlimit(res as _, &lim) != 0 {
                fail(f.err_w, STEP_RLIMIT, errno());
            }
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
            fail(f.err_w, STEP_SECCOMP, errno());
        }
        libc::sigprocmask(libc::SIG_SETMASK, &f.orig_mask, std::ptr::null_mut());
        libc::execve(p.exe.as_ptr(), p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr());
        let e = errno();
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&STEP_EXEC.to_ne_bytes());
        msg[4..].copy_from_slice(&e.to_ne_bytes());
        libc::write(f.err_w, msg.as_ptr().cast(), 8);
        libc::_exit(if e == libc::ENOENT {
            crate::error::EXIT_NOT_FOUND
        } else {
            crate::error::EXIT_NOT_EXECUTABLE
        });
    }
    libc::close(f.err_w);
    pid1_loop(pid, f)
}

/// pid 1: reap every child, forward signals that a process sent us (kill(2), si_code <= 0)
/// to the command, and leave when the command exits, reporting its raw wait status. The
/// kernel then kills whatever is left in the namespace. Signals the terminal sends
/// (Ctrl-C, SIGWINCH: si_code SI_KERNEL) already reached the command's process group and
/// are not sent twice (a second Ctrl-C makes Claude Code exit).
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
