//! Real attempts, each in a forked child: a failed or half-done namespace setup dies with
//! the child and never touches csbox itself. `doctor` is single-threaded when it probes,
//! so fork() is safe. The child reports the step that failed and its errno over a pipe,
//! with the same (step, errno) message the sandbox's own child uses.

use std::ffi::CString;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::plan::TIOCSTI;
use crate::sandbox::syscalls::{errno, fail, write_file};
use crate::sandbox::{pipe, read_full};

/// What went wrong in a probe: the call that failed, with its arguments, and its errno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub what: String,
    pub errno: Errno,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} => {}", self.what, self.errno)
    }
}

pub type Probe = Result<(), Refused>;

/// Run `child` in a forked process. It returns `Err((step, errno))` on failure; `steps[step]`
/// names the call for the report.
fn in_child(steps: &[String], child: impl FnOnce(RawFd) -> Result<(), (u32, i32)>) -> Probe {
    let refused = |what: String, errno| Err(Refused { what, errno });
    let (r, w) = match pipe() {
        Ok(p) => p,
        Err(_) => return refused("pipe2()".into(), Errno::last()),
    };
    // SAFETY: csbox is single-threaded while doctor runs; the child only makes syscalls
    // and exits with _exit, never returning into the parent's code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return refused("fork()".into(), Errno::last());
    }
    if pid == 0 {
        let wfd = w.as_raw_fd();
        // SAFETY: we are the child; fail() and _exit() end it.
        unsafe {
            if let Err((step, e)) = child(wfd) {
                fail(wfd, step, e);
            }
            libc::_exit(0);
        }
    }
    drop(w);
    let mut msg = [0u8; 8];
    let n = read_full(&r, &mut msg);
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    if n == 8 {
        let step = u32::from_ne_bytes(msg[..4].try_into().unwrap()) as usize;
        let e = Errno::from_raw(i32::from_ne_bytes(msg[4..].try_into().unwrap()));
        let what = steps
            .get(step)
            .cloned()
            .unwrap_or_else(|| format!("step {step}"));
        return refused(what, e);
    }
    if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 {
        Ok(())
    } else {
        refused(
            format!("the probe process (wait status {st:#x})"),
            Errno::UnknownErrno,
        )
    }
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

fn check(r: libc::c_int, step: u32) -> Result<(), (u32, i32)> {
    if r < 0 {
        Err((step, errno()))
    } else {
        Ok(())
    }
}

/// Step 0 of the namespace probes: unshare with a user namespace and map ourselves, as the
/// sandbox does (user_namespaces(7): deny setgroups before writing gid_map).
fn enter_steps(flags: &str) -> Vec<String> {
    vec![
        format!("unshare({flags})"),
        "write /proc/self/setgroups, uid_map, gid_map".into(),
    ]
}

struct IdMaps {
    uid: Vec<u8>,
    gid: Vec<u8>,
}

fn id_maps() -> IdMaps {
    // SAFETY: getuid/getgid cannot fail.
    let (u, g) = unsafe { (libc::getuid(), libc::getgid()) };
    IdMaps {
        uid: format!("{u} {u} 1\n").into_bytes(),
        gid: format!("{g} {g} 1\n").into_bytes(),
    }
}

/// Enter a new user namespace (and `flags`), mapped to our own ids.
///
/// # Safety
/// Only in a forked probe child: it changes the calling process's namespaces.
unsafe fn enter(flags: libc::c_int, maps: &IdMaps) -> Result<(), (u32, i32)> {
    check(libc::unshare(libc::CLONE_NEWUSER | flags), 0)?;
    write_file(b"/proc/self/setgroups\0", b"deny")
        .and_then(|_| write_file(b"/proc/self/uid_map\0", &maps.uid))
        .and_then(|_| write_file(b"/proc/self/gid_map\0", &maps.gid))
        .map_err(|e| (1, e))
}

/// unshare(CLONE_NEWUSER), exactly what `csbox run` needs first.
pub fn user_namespace() -> Probe {
    // SAFETY: in the forked probe child; unshare only changes that process.
    in_child(&["unshare(CLONE_NEWUSER)".into()], |_| unsafe {
        check(libc::unshare(libc::CLONE_NEWUSER), 0)
    })
}

/// Scratch directories for an overlay probe under `base`; removed on drop, including the
/// `work/work` directory overlayfs leaves with mode 000 (remove_dir_all cannot list it).
pub struct OverlayDirs {
    tmp: tempfile::TempDir,
    /// The lower layer: `lower` inside the scratch dir, or a given directory.
    pub lower: PathBuf,
}

impl OverlayDirs {
    pub fn new(base: &Path, lower: Option<&Path>) -> std::io::Result<Self> {
        let tmp = tempfile::Builder::new()
            .prefix(".csbox-doctor-")
            .tempdir_in(base)?;
        for d in ["lower", "upper", "work", "merged"] {
            std::fs::create_dir(tmp.path().join(d))?;
        }
        std::fs::write(tmp.path().join("lower/file"), b"lower\n")?;
        let lower = lower.map_or_else(|| tmp.path().join("lower"), Path::to_path_buf);
        Ok(OverlayDirs { tmp, lower })
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

impl Drop for OverlayDirs {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(
            self.dir("work/work"),
            std::fs::Permissions::from_mode(0o700),
        );
    }
}

/// Mount an overlay the way the session's `~/.claude` is mounted (userxattr, which an
/// unprivileged mount needs: Linux ≥ 5.11), then create a file through it so the upper
/// layer is written too.
pub fn overlay(dirs: &OverlayDirs) -> Probe {
    let (lower, upper, work, merged) = (
        dirs.lower.clone(),
        dirs.dir("upper"),
        dirs.dir("work"),
        dirs.dir("merged"),
    );
    let data = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        lower.display(),
        upper.display(),
        work.display()
    );
    let mut steps = enter_steps("CLONE_NEWUSER|CLONE_NEWNS");
    steps.push(format!(
        "mount(\"overlay\", {}, \"overlay\", MS_NOSUID|MS_NODEV, \"{data}\")",
        merged.display()
    ));
    steps.push(format!(
        "create a file in {} (the upper layer {})",
        merged.display(),
        upper.display()
    ));
    let maps = id_maps();
    let (cm, cdata) = (c(&merged), CString::new(data).unwrap_or_default());
    let cfile = c(&merged.join(".csbox-doctor-probe"));
    // SAFETY: in the forked probe child, with C strings that outlive the calls.
    in_child(&steps, |_| unsafe {
        enter(libc::CLONE_NEWNS, &maps)?;
        check(
            libc::mount(
                c"overlay".as_ptr(),
                cm.as_ptr(),
                c"overlay".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                cdata.as_ptr().cast(),
            ),
            2,
        )?;
        let fd = libc::open(
            cfile.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            0o600,
        );
        check(fd, 3)?;
        libc::close(fd);
        Ok(())
    })
}

/// A fresh /proc for a new pid namespace, as pid 1 of it mounts one. Inside a container
/// that masks parts of /proc (Docker's /proc/kcore, /proc/keys…), the kernel refuses a new
/// proc mount with EPERM (fs/namespace.c, mount_too_revealing).
pub fn proc_mount(target: &Path) -> Probe {
    let mut steps = enter_steps("CLONE_NEWUSER|CLONE_NEWNS|CLONE_NEWPID");
    steps.push("fork() into the new pid namespace".into());
    steps.push(format!(
        "mount(\"proc\", {}, \"proc\", MS_NOSUID|MS_NODEV|MS_NOEXEC)",
        target.display()
    ));
    let maps = id_maps();
    let ct = c(target);
    // SAFETY: in the forked probe child; its own fork is reaped before it exits.
    in_child(&steps, |wfd| unsafe {
        enter(libc::CLONE_NEWNS | libc::CLONE_NEWPID, &maps)?;
        // Only a process inside the new pid namespace may mount a proc for it.
        let pid = libc::fork();
        check(pid, 2)?;
        if pid == 0 {
            let r = libc::mount(
                c"proc".as_ptr(),
                ct.as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            );
            if r < 0 {
                fail(wfd, 3, errno());
            }
            libc::_exit(0);
        }
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
        if libc::WIFEXITED(st) {
            libc::_exit(libc::WEXITSTATUS(st));
        }
        libc::_exit(125);
    })
}

/// Install csbox's own seccomp filter (the TIOCSTI/TIOCLINUX ioctl deny list) and check it
/// answers: `ioctl(-1, TIOCSTI)` must fail with the filter's EPERM, not the kernel's EBADF.
pub fn seccomp_filter() -> Probe {
    let rules = crate::plan::Seccomp {
        rules: crate::plan::terminal_rules(),
        deny_compat_abis: false,
    };
    let filter = match crate::sandbox::seccomp::build_filter(&rules) {
        Ok(f) => f,
        Err(_) => {
            return Err(Refused {
                what: "building the seccomp filter (ioctl unknown on this architecture)".into(),
                errno: Errno::ENOSYS,
            })
        }
    };
    let steps = vec![
        "prctl(PR_SET_NO_NEW_PRIVS, 1)".to_string(),
        "prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)".to_string(),
        "ioctl(-1, TIOCSTI) under the filter (EPERM expected)".to_string(),
    ];
    // SAFETY: in the forked probe child; the filter outlives the prctl that loads it.
    in_child(&steps, |_| unsafe {
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0)?;
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr() as *mut _,
        };
        check(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
                0,
                0,
            ),
            1,
        )?;
        let r = libc::ioctl(-1, TIOCSTI as _, std::ptr::null::<u8>());
        match (r, errno()) {
            (-1, libc::EPERM) => Ok(()),
            (-1, e) => Err((2, e)),
            _ => Err((2, 0)),
        }
    })
}
