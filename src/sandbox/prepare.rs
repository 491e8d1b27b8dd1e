//! Turn a plan into what the child needs: every path as a C string, argv/envp as pointer
//! arrays, the seccomp program, so the child runs without allocating.
//!
//! Every bind source and overlay layer is opened (O_PATH) by the child *before* any mount
//! is made, at an fd number reserved here, and mounts name it as `/proc/self/fd/N`: later
//! mounts cannot redirect it, the overlay can hide the real `~/.claude` while its entries
//! are still bound from it, and paths need no escaping in overlay options. The child must
//! open them itself: a mount or a layer taken from an fd opened before CLONE_NEWNS belongs
//! to the old mount namespace, and the kernel refuses it (EINVAL, "failed to clone upperpath").

use std::ffi::{CString, OsStr};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libc::c_ulong;

use crate::error::{Error, Result};
use crate::plan::{MountOp, Plan};

/// One system-level step of the child's setup.
#[derive(Debug)]
pub enum Step {
    Mount {
        src: Option<CString>,
        dst: CString,
        fstype: Option<CString>,
        flags: c_ulong,
        data: Option<CString>,
    },
    /// Make the mount at `dst` (and its submounts) read-only, keeping its locked flags.
    RemountRo {
        dst: CString,
    },
    /// mkdir, EEXIST is fine.
    Mkdir {
        path: CString,
        mode: u32,
    },
    /// Create an empty file as a mount point, EEXIST is fine (O_EXCL: never opens, and so
    /// never copies up, an existing overlay file).
    Touch {
        path: CString,
    },
    Symlink {
        target: CString,
        path: CString,
    },
    Chmod {
        path: CString,
        mode: u32,
    },
    /// ioctl(SIOCSIFFLAGS) IFF_UP on "lo" in the new network namespace.
    LoopbackUp,
}

pub struct Prepared {
    pub steps: Vec<Step>,
    /// A human description of each step, for the one-line error.
    pub descs: Vec<String>,
    /// (path, fd number): opened by the child first, O_PATH, at exactly that number.
    pub sources: Vec<(CString, RawFd)>,
    pub uid_map: Vec<u8>,
    pub gid_map: Vec<u8>,
    pub exe: CString,
    pub argv: Vec<CString>,
    pub argv_ptrs: Vec<*const libc::c_char>,
    pub envp: Vec<CString>,
    pub envp_ptrs: Vec<*const libc::c_char>,
    pub cwd: CString,
    pub filter: Vec<libc::sock_filter>,
    pub clone_flags: libc::c_int,
    /// (resource, value) set soft and hard on the command before exec.
    pub rlimits: Vec<(u32, u64)>,
    /// Write 0 to /proc/sys/user/max_user_namespaces (per user namespace) once /proc is ours.
    pub forbid_nested_userns: bool,
}

pub fn cstring(p: impl AsRef<OsStr>) -> Result<CString> {
    CString::new(p.as_ref().as_bytes())
        .map_err(|_| Error::Usage(format!("{:?} contains a NUL byte", p.as_ref())))
}

/// The first fd number above every fd this process has open, so the child can place its
/// sources without clobbering anything it still needs.
fn first_free_fd() -> RawFd {
    std::fs::read_dir("/proc/self/fd")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
                .max()
                .unwrap_or(2)
        })
        .unwrap_or(64)
        .max(9)
        + 1
}

fn fd_path(fd: RawFd) -> String {
    format!("/proc/self/fd/{fd}")
}

struct Builder {
    steps: Vec<Step>,
    descs: Vec<String>,
    sources: Vec<(CString, RawFd)>,
    next_fd: RawFd,
}

impl Builder {
    fn push(&mut self, step: Step, desc: String) {
        self.steps.push(step);
        self.descs.push(desc);
    }

    /// Reserve a source; returns its /proc/self/fd path and whether it is a directory
    /// (checked now, so an optional source that is missing can be skipped).
    fn source(&mut self, p: &Path) -> std::io::Result<(String, bool)> {
        let md = std::fs::metadata(p)?;
        let c = CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let fd = self.next_fd;
        self.next_fd += 1;
        self.sources.push((c, fd));
        Ok((fd_path(fd), md.is_dir()))
    }

    fn mount(
        &mut self,
        src: Option<&str>,
        dst: &Path,
        fstype: Option<&str>,
        flags: c_ulong,
        data: Option<&str>,
        desc: String,
    ) -> Result<()> {
        let step = Step::Mount {
            src: src.map(cstring).transpose()?,
            dst: cstring(dst)?,
            fstype: fstype.map(cstring).transpose()?,
            flags,
            data: data.map(cstring).transpose()?,
        };
        self.push(step, desc);
        Ok(())
    }

    fn remount_ro(&mut self, dst: &Path) -> Result<()> {
        self.push(
            Step::RemountRo { dst: cstring(dst)? },
            format!(
                "mount_setattr({}, MOUNT_ATTR_RDONLY, AT_RECURSIVE)",
                dst.display()
            ),
        );
        Ok(())
    }

    fn mkdir_p(&mut self, dst: &Path, mode: u32) -> Result<()> {
        let mut cur = PathBuf::new();
        for c in dst.components() {
            cur.push(c);
            if cur.as_os_str().len() > 1 {
                self.push(
                    Step::Mkdir {
                        path: cstring(&cur)?,
                        mode,
                    },
                    format!("mkdir({})", cur.display()),
                );
            }
        }
        Ok(())
    }

    fn touch(&mut self, dst: &Path) -> Result<()> {
        self.push(
            Step::Touch {
                path: cstring(dst)?,
            },
            format!("create mount point {}", dst.display()),
        );
        Ok(())
    }

    fn symlink(&mut self, target: &str, path: &str) -> Result<()> {
        self.push(
            Step::Symlink {
                target: cstring(target)?,
                path: cstring(path)?,
            },
            format!("symlink({target}, {path})"),
        );
        Ok(())
    }
}

const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// The terminal on stdin, stdout or stderr, if one is a terminal with a name under /dev/.
fn controlling_tty() -> Option<PathBuf> {
    (0..3)
        .find_map(|fd| {
            // SAFETY: 0, 1 and 2 stay open for the whole process; only borrowed here.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            nix::unistd::ttyname(fd).ok()
        })
        .filter(|p| p.starts_with("/dev/") && p.components().count() >= 3)
}

pub fn prepare(plan: &Plan) -> Result<Prepared> {
    let exe = &plan.exe;
    let mut b = Builder {
        steps: Vec::new(),
        descs: Vec::new(),
        sources: Vec::new(),
        next_fd: first_free_fd(),
    };
    let mut tmpfs_roots: Vec<PathBuf> = Vec::new();
    for op in &plan.mounts {
        match op {
            MountOp::MakeSlave { path } => b.mount(
                None,
                path,
                None,
                libc::MS_REC | libc::MS_SLAVE,
                None,
                format!("mount(NULL, {}, MS_REC|MS_SLAVE)", path.display()),
            )?,
            MountOp::Overlay {
                dst,
                lower,
                upper,
                work,
            } => {
                let l = b
                    .source(lower)
                    .map_err(|e| Error::io("open overlay lower dir", lower, e))?
                    .0;
                let u = b
                    .source(upper)
                    .map_err(|e| Error::io("open overlay upper dir", upper, e))?
                    .0;
                let w = b
                    .source(work)
                    .map_err(|e| Error::io("open overlay work dir", work, e))?
                    .0;
                // Layers are named through /proc/self/fd: no escaping of ',' or ':' in
                // paths, and no lookup that a mount made earlier could redirect.
                // userxattr: in a user namespace overlayfs keeps its xattrs in user.*.
                let data = format!("lowerdir={l},upperdir={u},workdir={w},userxattr");
                let desc = format!(
                    "mount(\"overlay\", {}, \"overlay\", MS_NOSUID|MS_NODEV, \"lowerdir={},upperdir={},workdir={},userxattr\")",
                    dst.display(),
                    lower.display(),
                    upper.display(),
                    work.display()
                );
                b.mount(
                    Some("overlay"),
                    dst,
                    Some("overlay"),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    Some(&data),
                    desc,
                )?;
            }
            MountOp::Bind {
                src,
                dst,
                read_only,
                optional,
                create_dst,
            } => {
                let (s, is_dir) = match b.source(src) {
                    Ok(v) => v,
                    Err(e) if *optional && e.kind() == std::io::ErrorKind::NotFound => {
                        crate::debug!("bind {}: source missing, skipped", src.display());
                        continue;
                    }
                    Err(e) => return Err(Error::io("open bind source", src, e)),
                };
                if !*create_dst && std::fs::symlink_metadata(dst).is_err() {
                    return Err(Error::Usage(format!(
                        "bind destination {} does not exist: create it first (csbox makes mount points only inside its own tmpfs, never in your real file system)",
                        dst.display()
                    )));
                }
                if *create_dst {
                    if is_dir {
                        b.mkdir_p(dst, 0o755)?;
                    } else {
                        if let Some(parent) = dst.parent() {
                            b.mkdir_p(parent, 0o755)?;
                        }
                        b.touch(dst)?;
                    }
                }
                let desc = format!(
                    "mount({}, {}, MS_BIND|MS_REC)",
                    src.display(),
                    dst.display()
                );
                b.mount(
                    Some(&s),
                    dst,
                    None,
                    libc::MS_BIND | libc::MS_REC,
                    None,
                    desc,
                )?;
                if *read_only {
                    b.remount_ro(dst)?;
                }
            }
            MountOp::Tmpfs {
                dst,
                mode,
                read_only,
            } => {
                let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
                if *read_only {
                    flags |= libc::MS_RDONLY;
                }
                let data = format!("mode={mode:o}");
                let desc = format!(
                    "mount(\"tmpfs\", {}, \"tmpfs\", MS_NOSUID|MS_NODEV, \"{data}\")",
                    dst.display()
                );
                b.mount(Some("tmpfs"), dst, Some("tmpfs"), flags, Some(&data), desc)?;
                tmpfs_roots.push(dst.clone());
            }
            MountOp::Hide { dst } => {
                // Already hidden when it lies under a tmpfs mounted earlier; nothing to do
                // when it does not exist.
                if tmpfs_roots.iter().any(|r| dst.starts_with(r)) {
                    continue;
                }
                let Ok(md) = std::fs::metadata(dst) else {
                    continue;
                };
                if md.is_dir() {
                    let flags =
                        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                    let desc = format!(
                        "mount(\"tmpfs\", {}, \"tmpfs\", MS_RDONLY) to hide it",
                        dst.display()
                    );
                    b.mount(
                        Some("tmpfs"),
                        dst,
                        Some("tmpfs"),
                        flags,
                        Some("mode=0755,size=4k"),
                        desc,
                    )?;
                } else {
                    let (null, _) = b
                        .source(Path::new("/dev/null"))
                        .map_err(|e| Error::io("open", "/dev/null", e))?;
                    let desc = format!("mount(/dev/null, {}, MS_BIND) to hide it", dst.display());
                    b.mount(Some(&null), dst, None, libc::MS_BIND, None, desc)?;
                    b.remount_ro(dst)?;
                }
            }
            MountOp::Mkdir { path } => b.mkdir_p(path, 0o755)?,
            MountOp::Sysfs { dst } => b.mount(
                Some("sysfs"),
                dst,
                Some("sysfs"),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                None,
                format!("mount(\"sysfs\", {}, \"sysfs\", MS_RDONLY)", dst.display()),
            )?,
            MountOp::LoopbackUp => b.push(
                Step::LoopbackUp,
                "ioctl(SIOCSIFFLAGS, \"lo\", IFF_UP)".into(),
            ),
            MountOp::Dev { dst } => {
                let mut nodes = Vec::new();
                for n in DEV_NODES {
                    let host = Path::new("/dev").join(n);
                    nodes.push((
                        n,
                        b.source(&host).map_err(|e| Error::io("open", &host, e))?.0,
                    ));
                }
                let desc = format!(
                    "mount(\"tmpfs\", {}, \"tmpfs\", MS_NOSUID|MS_NOEXEC, \"mode=755\")",
                    dst.display()
                );
                b.mount(
                    Some("tmpfs"),
                    dst,
                    Some("tmpfs"),
                    libc::MS_NOSUID | libc::MS_NOEXEC,
                    Some("mode=755"),
                    desc,
                )?;
                for (n, src) in nodes {
                    let node = dst.join(n);
                    b.touch(&node)?;
                    b.mount(
                        Some(&src),
                        &node,
                        None,
                        libc::MS_BIND,
                        None,
                        format!("mount(/dev/{n}, {}, MS_BIND)", node.display()),
                    )?;
                }
                // The terminal csbox runs in, as /dev/console (as bubblewrap does): the
                // private devpts below has none of the host's ptys, so without it `tty` and
                // ttyname(3) find no name for the command's stdin (GPG_TTY=$(tty) breaks).
                // The command holds that terminal open already; TIOCSTI stays denied.
                // A terminal csbox cannot stat is left out, not an error.
                if let Some((tty, (src, _))) =
                    controlling_tty().and_then(|t| b.source(&t).ok().map(|s| (t, s)))
                {
                    let console = dst.join("console");
                    b.touch(&console)?;
                    b.mount(
                        Some(&src),
                        &console,
                        None,
                        libc::MS_BIND,
                        None,
                        format!("mount({}, {}, MS_BIND)", tty.display(), console.display()),
                    )?;
                }
                let pts = dst.join("pts");
                b.mkdir_p(&pts, 0o755)?;
                // A private devpts instance: the sandbox can open new ptys, and sees none of
                // the host's.
                b.mount(
                    Some("devpts"),
                    &pts,
                    Some("devpts"),
                    libc::MS_NOSUID | libc::MS_NOEXEC,
                    Some("newinstance,ptmxmode=0666,mode=620"),
                    format!(
                        "mount(\"devpts\", {}, \"devpts\", \"newinstance,ptmxmode=0666,mode=620\")",
                        pts.display()
                    ),
                )?;
                let d = dst.display().to_string();
                b.symlink("pts/ptmx", &format!("{d}/ptmx"))?;
                b.symlink("/proc/self/fd", &format!("{d}/fd"))?;
                for (i, n) in ["stdin", "stdout", "stderr"].iter().enumerate() {
                    b.symlink(&format!("/proc/self/fd/{i}"), &format!("{d}/{n}"))?;
                }
                let shm = dst.join("shm");
                b.mkdir_p(&shm, 0o755)?;
                b.push(
                    Step::Chmod {
                        path: cstring(&shm)?,
                        mode: 0o1777,
                    },
                    format!("chmod({}, 01777)", shm.display()),
                );
            }
            MountOp::Proc { dst } => b.mount(
                Some("proc"),
                dst,
                Some("proc"),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                None,
                format!("mount(\"proc\", {}, \"proc\")", dst.display()),
            )?,
        }
    }

    let argv: Vec<CString> = plan.argv.iter().map(cstring).collect::<Result<_>>()?;
    let envp: Vec<CString> = plan
        .env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}")))
        .collect::<Result<_>>()?;
    let argv_ptrs = argv
        .iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp_ptrs = envp
        .iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();

    let clone_flags = plan
        .namespaces
        .kinds()
        .iter()
        .fold(0, |f, k| f | k.clone_flag());

    Ok(Prepared {
        steps: b.steps,
        descs: b.descs,
        sources: b.sources,
        uid_map: format!("{} {} 1\n", plan.uid, plan.uid).into_bytes(),
        gid_map: format!("{} {} 1\n", plan.gid, plan.gid).into_bytes(),
        exe: cstring(exe)?,
        argv,
        argv_ptrs,
        envp,
        envp_ptrs,
        cwd: cstring(&plan.cwd)?,
        filter: super::seccomp::build_filter(
            &plan.seccomp.deny_ioctls,
            &plan.seccomp.deny_syscalls,
            plan.seccomp.deny_compat_abis,
            libc::EPERM,
        )
        .map_err(Error::Usage)?,
        clone_flags,
        rlimits: plan
            .rlimits
            .iter()
            .map(|(name, v)| {
                crate::profile::RLIMITS
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, r)| (*r, *v))
                    .ok_or_else(|| Error::Usage(format!("unknown rlimit {name:?}")))
            })
            .collect::<Result<_>>()?,
        forbid_nested_userns: !plan.nested_userns,
    })
}
