//! The system calls the child makes for each step and source: raw, allocation-free,
//! errors as errno values (the child reports them, it never prints).

use std::os::fd::RawFd;

use super::steps::{
    Prepared, SourceSpec, Step, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID,
    MOUNT_ATTR_RDONLY,
};

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
pub(super) unsafe fn fail_at(err_w: RawFd, at: super::steps::FailedAt, err: i32) -> ! {
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
    remount(dst, attr)?;
    if recursive {
        // Linux < 5.12: every mount below, one by one, as bubblewrap does (a mount
        // left writable below a read-only root would be a way out).
        for sub in submounts_below(dst) {
            // A mount that vanished meanwhile is nothing to protect.
            match remount(sub.as_ptr(), attr) {
                Ok(()) => {}
                Err(e) if e == libc::ENOENT || e == libc::EINVAL => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// A bind remount of `dst` alone with `attr` added to the flags it has (and so to those
/// the kernel locked on it).
///
/// # Safety
/// `dst` is a valid NUL-terminated path.
unsafe fn remount(dst: *const libc::c_char, attr: u64) -> Result<(), i32> {
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
        (MOUNT_ATTR_RDONLY, libc::MS_RDONLY),
        (MOUNT_ATTR_NOSUID, libc::MS_NOSUID),
        (MOUNT_ATTR_NODEV, libc::MS_NODEV),
        (MOUNT_ATTR_NOEXEC, libc::MS_NOEXEC),
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

/// Mount points strictly below `dst`, from /proc/self/mountinfo, outermost first. Only
/// on kernels without mount_setattr; this allocates (the child is a fresh
/// single-threaded copy, so no allocator lock can be held).
///
/// # Safety
/// `dst` is a valid NUL-terminated path.
unsafe fn submounts_below(dst: *const libc::c_char) -> Vec<std::ffi::CString> {
    let dst = std::ffi::CStr::from_ptr(dst).to_bytes();
    let Ok(info) = std::fs::read("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out: Vec<Vec<u8>> = info
        .split(|b| *b == b'\n')
        .filter_map(|l| l.split(|b| *b == b' ').nth(4))
        .map(crate::fsutil::unescape_mountinfo)
        .filter(|p| p.len() > dst.len() && p.starts_with(dst) && p[dst.len()] == b'/')
        .collect();
    out.sort_by_key(|p| p.iter().filter(|b| **b == b'/').count());
    out.into_iter()
        .filter_map(|p| std::ffi::CString::new(p).ok())
        .collect()
}

/// Whether the path a mount step mounts on can be looked up at all (O_PATH): a step that
/// failed with EACCES on a path the sandbox cannot even reach hid nothing it could see.
///
/// # Safety
/// Only in the sandbox's child.
pub(super) unsafe fn reachable(step: &Step) -> bool {
    let dst = match step {
        Step::Mount { dst, .. } | Step::SetAttr { dst, .. } => dst,
        _ => return true,
    };
    let fd = libc::open(dst.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
    if fd >= 0 {
        libc::close(fd);
        return true;
    }
    errno() != libc::EACCES
}

/// One step of the setup.
///
/// # Safety
/// Only in the sandbox's child, after the sources are open; the step's C strings
/// live in `Prepared`, which outlives the call.
pub(super) unsafe fn apply(step: &Step) -> Result<(), i32> {
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
        Step::PivotRoot { new_root, put_old } => {
            if libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) != 0 {
                return Err(errno());
            }
            libc::chdir(c"/".as_ptr())
        }
        Step::DetachHost { path } => {
            if libc::umount2(path.as_ptr(), libc::MNT_DETACH) != 0 {
                return Err(errno());
            }
            // The empty mount point goes too (it lies in the sandbox's own /tmp).
            libc::rmdir(path.as_ptr());
            0
        }
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

/// Start `exe` as [`reset_signals`] leaves a command (every signal at its default, none
/// blocked) in `cwd`, by posix_spawn: a vfork, no copy of the supervisor's page tables
/// and none of the copy-on-write faults a fork costs both sides (0.1-0.2 ms of a compat
/// launch). Hand-written because std's `Command` resets only SIGPIPE (glibc's
/// posix_spawn then leaves its two internal signals, 32 and 33, ignored in the command),
/// and takes the fork path for any pre-exec hook. Returns the child's pid; an exec that
/// fails is this call's error (glibc reports it).
pub(crate) fn spawn_clean(
    exe: &std::path::Path,
    argv: &[String],
    env: &[(String, String)],
    cwd: &std::path::Path,
) -> std::io::Result<libc::pid_t> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let nul = |e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    let c = |b: &[u8]| CString::new(b).map_err(nul);
    let exe = c(exe.as_os_str().as_bytes())?;
    let cwd = c(cwd.as_os_str().as_bytes())?;
    let argv: Vec<CString> = argv
        .iter()
        .map(|a| c(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let envp: Vec<CString> = env
        .iter()
        .map(|(k, v)| c(format!("{k}={v}").as_bytes()))
        .collect::<Result<_, _>>()?;
    let mut argv_p: Vec<*mut libc::c_char> = argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_p.push(std::ptr::null_mut());
    let mut envp_p: Vec<*mut libc::c_char> = envp.iter().map(|a| a.as_ptr().cast_mut()).collect();
    envp_p.push(std::ptr::null_mut());
    // SAFETY: the attribute and file-action objects are initialised before use and
    // destroyed after; every pointer passed (paths, argv, envp, both NULL-terminated)
    // outlives the call; `all` is zeroed and at least 64 bits (glibc: 1024).
    unsafe {
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        let mut fa: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let r = libc::posix_spawnattr_init(&mut attr);
        if r != 0 {
            return Err(std::io::Error::from_raw_os_error(r));
        }
        let r = libc::posix_spawn_file_actions_init(&mut fa);
        if r != 0 {
            libc::posix_spawnattr_destroy(&mut attr);
            return Err(std::io::Error::from_raw_os_error(r));
        }
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        // Signals 1-64 are the first 64 bits; set as bits because glibc's sigfillset and
        // sigaddset leave out its internal 32 and 33, which its posix_spawn then ignores.
        *(&mut all as *mut libc::sigset_t).cast::<u64>() = u64::MAX;
        let mut pid: libc::pid_t = 0;
        let mut r = libc::posix_spawnattr_setsigdefault(&mut attr, &all);
        if r == 0 {
            r = libc::posix_spawnattr_setsigmask(&mut attr, &none);
        }
        if r == 0 {
            let flags = libc::POSIX_SPAWN_SETSIGDEF | libc::POSIX_SPAWN_SETSIGMASK;
            r = libc::posix_spawnattr_setflags(&mut attr, flags as libc::c_short);
        }
        if r == 0 {
            r = libc::posix_spawn_file_actions_addchdir_np(&mut fa, cwd.as_ptr());
        }
        if r == 0 {
            r = libc::posix_spawn(
                &mut pid,
                exe.as_ptr(),
                &fa,
                &attr,
                argv_p.as_ptr(),
                envp_p.as_ptr(),
            );
        }
        libc::posix_spawn_file_actions_destroy(&mut fa);
        libc::posix_spawnattr_destroy(&mut attr);
        if r != 0 {
            return Err(std::io::Error::from_raw_os_error(r));
        }
        Ok(pid)
    }
}

/// A command starts as from a fresh login: every signal at its default disposition
/// (exec resets handlers, but a signal csbox's parent ignored would stay ignored), none
/// blocked (the supervisor and pid 1 block the ones they forward).
///
/// # Safety
/// Raw system calls only; for a child between fork and exec.
pub(crate) unsafe fn reset_signals() {
    // The raw call: glibc's signal() refuses the two signals it reserves (32, 33).
    let dfl: [usize; 4] = [libc::SIG_DFL, 0, 0, 0]; // handler, flags, restorer, mask
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                dfl.as_ptr(),
                std::ptr::null::<u8>(),
                8usize,
            );
        }
    }
    // An all-zero sigset_t is the empty set.
    let empty: libc::sigset_t = std::mem::zeroed();
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
}

/// Close every fd from 3 up except `keep` (sources, inherited fds of the user's shell, the
/// supervisor's lock: nothing from outside leaks into the sandbox).
///
/// # Safety
/// Closes descriptors other code may hold: only in the sandbox's child, where nothing
/// but `keep` is still needed.
pub(super) unsafe fn close_fds_except(keep: &[RawFd]) {
    let mut lo: u32 = 3;
    let mut sorted = [0 as RawFd; 8];
    let mut n = 0;
    for &k in keep.iter().filter(|k| **k >= 0).take(8) {
        sorted[n] = k;
        n += 1;
    }
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

/// Open one source O_PATH: a host path as the kernel resolves it; a session path
/// beneath the session directory's fd with no symlink followed (openat2; where it is
/// missing, one O_NOFOLLOW component at a time), and only a directory or a regular file.
///
/// # Safety
/// Only in the sandbox's child; an earlier source's fd is open at its reserved number.
pub(super) unsafe fn open_source(spec: &SourceSpec, p: &Prepared) -> Result<i32, i32> {
    let (base, rel, components) = match spec {
        SourceSpec::Host(path) => {
            let t = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
            return if t < 0 { Err(errno()) } else { Ok(t) };
        }
        SourceSpec::Beneath {
            base,
            rel,
            components,
        } => (p.sources[*base].1, rel, components),
    };
    use rustix::fs::{OFlags, ResolveFlags};
    // SAFETY: the base source was opened at its reserved number before this one.
    let dir = std::os::fd::BorrowedFd::borrow_raw(base);
    let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let flags = OFlags::PATH | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let fd = match rustix::fs::openat2(dir, rel.as_c_str(), flags, rustix::fs::Mode::empty(), how) {
        Ok(fd) => std::os::fd::IntoRawFd::into_raw_fd(fd),
        Err(rustix::io::Errno::NOSYS) => open_components(base, components)?,
        Err(e) => return Err(e.raw_os_error()),
    };
    let mut st: libc::stat = std::mem::zeroed();
    if libc::fstat(fd, &mut st) != 0 {
        let e = errno();
        libc::close(fd);
        return Err(e);
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR | libc::S_IFREG => Ok(fd),
        _ => {
            libc::close(fd);
            Err(libc::ELOOP)
        }
    }
}

/// openat2's RESOLVE_NO_SYMLINKS by hand (Linux < 5.6): every component O_NOFOLLOW,
/// each but the last a directory (O_DIRECTORY fails on a symlink with ENOTDIR), the
/// last checked by the caller (O_PATH|O_NOFOLLOW on a symlink opens the link itself).
///
/// # Safety
/// `base` is an open directory fd.
unsafe fn open_components(base: i32, components: &[std::ffi::CString]) -> Result<i32, i32> {
    let mut cur = base;
    for (i, c) in components.iter().enumerate() {
        let last = i + 1 == components.len();
        let mut fl = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        if !last {
            fl |= libc::O_DIRECTORY;
        }
        let next = libc::openat(cur, c.as_ptr(), fl);
        let e = errno();
        if cur != base {
            libc::close(cur);
        }
        if next < 0 {
            return Err(e);
        }
        cur = next;
    }
    Ok(cur)
}
