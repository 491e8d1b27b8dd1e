//! Turn a plan into what the child needs: a list of system-level steps with every path as
//! a C string, argv/envp as pointer arrays, the seccomp program, so the child runs without
//! allocating. This is a translation: every decision is the plan's.
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

pub use super::steps::*;
use crate::error::{Error, Result};
use crate::plan::{MaskPlace, MountFlags, MountOp, NodeKind, Plan, Source};

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

fn ms_flags(f: MountFlags) -> c_ulong {
    let mut m = 0;
    for (on, bit) in [
        (f.read_only, libc::MS_RDONLY),
        (f.nosuid, libc::MS_NOSUID),
        (f.nodev, libc::MS_NODEV),
        (f.noexec, libc::MS_NOEXEC),
    ] {
        if on {
            m |= bit;
        }
    }
    m
}

fn attr_bits(f: MountFlags) -> u64 {
    let mut a = 0;
    for (on, bit) in [
        (f.read_only, MOUNT_ATTR_RDONLY),
        (f.nosuid, MOUNT_ATTR_NOSUID),
        (f.nodev, MOUNT_ATTR_NODEV),
        (f.noexec, MOUNT_ATTR_NOEXEC),
    ] {
        if on {
            a |= bit;
        }
    }
    a
}

fn flag_names(f: MountFlags) -> String {
    let names: Vec<&str> = [
        (f.read_only, "MS_RDONLY"),
        (f.nosuid, "MS_NOSUID"),
        (f.nodev, "MS_NODEV"),
        (f.noexec, "MS_NOEXEC"),
    ]
    .iter()
    .filter_map(|(on, n)| on.then_some(*n))
    .collect();
    if names.is_empty() {
        "0".into()
    } else {
        names.join("|")
    }
}

struct Builder {
    steps: Vec<Step>,
    descs: Vec<String>,
    /// Steps after which a missing path (ENOENT) is nothing to do: hiding what is gone.
    missing_ok: Vec<bool>,
    hiding: bool,
    /// The source of /dev/null that hidden files are covered with, once reserved.
    null: Option<String>,
    sources: Vec<(SourceSpec, RawFd)>,
    next_fd: RawFd,
    /// The session directory's source, opened on the first session source.
    session_base: Option<usize>,
    session_dir: PathBuf,
    /// A HostRoot was applied: the host's tree must be detached after the last step.
    pivoted: bool,
}

impl Builder {
    fn push(&mut self, step: Step, desc: String) {
        self.steps.push(step);
        self.descs.push(desc);
        self.missing_ok.push(self.hiding);
    }

    fn reserve(&mut self, spec: SourceSpec) -> usize {
        let fd = self.next_fd;
        self.next_fd += 1;
        self.sources.push((spec, fd));
        self.sources.len() - 1
    }

    /// Reserve a host source; returns its /proc/self/fd path.
    fn host_source(&mut self, p: &Path) -> Result<String> {
        let k = self.reserve(SourceSpec::Host(cstring(p)?));
        Ok(fd_path(self.sources[k].1))
    }

    /// Reserve a source; returns its /proc/self/fd path.
    fn source(&mut self, src: &Source) -> Result<String> {
        let rel = match src {
            Source::Host(p) => return self.host_source(p),
            Source::Session(rel) => rel,
        };
        let base = match self.session_base {
            Some(b) => b,
            None => {
                let dir = self.session_dir.clone();
                let b = self.reserve(SourceSpec::Host(cstring(&dir)?));
                self.session_base = Some(b);
                b
            }
        };
        let components = rel
            .components()
            .map(|c| match c {
                std::path::Component::Normal(n) => cstring(n),
                _ => Err(Error::Usage(format!(
                    "session source {} is not a plain relative path",
                    rel.display()
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        let k = self.reserve(SourceSpec::Beneath {
            base,
            rel: cstring(rel)?,
            components,
        });
        Ok(fd_path(self.sources[k].1))
    }

    #[allow(clippy::too_many_arguments)]
    fn mount(
        &mut self,
        kind: MountKind,
        src: Option<&str>,
        dst: &Path,
        fstype: Option<&str>,
        flags: c_ulong,
        data: Option<&str>,
        desc: String,
    ) -> Result<()> {
        let step = Step::Mount {
            kind,
            src: src.map(cstring).transpose()?,
            dst: cstring(dst)?,
            fstype: fstype.map(cstring).transpose()?,
            flags,
            data: data.map(cstring).transpose()?,
        };
        self.push(step, desc);
        Ok(())
    }

    fn set_attr(&mut self, dst: &Path, flags: MountFlags, recursive: bool) -> Result<()> {
        if flags.is_none() {
            return Ok(());
        }
        self.push(
            Step::SetAttr {
                dst: cstring(dst)?,
                attr: attr_bits(flags),
                recursive,
            },
            format!(
                "mount_setattr({}, {}{})",
                dst.display(),
                flag_names(flags).replace("MS_", "MOUNT_ATTR_"),
                if recursive { ", AT_RECURSIVE" } else { "" }
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

    fn symlink(&mut self, target: &str, path: &Path) -> Result<()> {
        self.push(
            Step::Symlink {
                target: cstring(target)?,
                path: cstring(path)?,
            },
            format!("symlink({target}, {})", path.display()),
        );
        Ok(())
    }

    fn create_mount_point(&mut self, dst: &Path, kind: NodeKind) -> Result<()> {
        match kind {
            NodeKind::Dir => self.mkdir_p(dst, 0o755),
            NodeKind::File => {
                if let Some(parent) = dst.parent() {
                    self.mkdir_p(parent, 0o755)?;
                }
                self.touch(dst)
            }
        }
    }

    fn op(&mut self, op: &MountOp) -> Result<()> {
        match op {
            MountOp::MakeSlave { path } => self.mount(
                MountKind::Propagation,
                None,
                path,
                None,
                libc::MS_REC | libc::MS_SLAVE,
                None,
                format!("mount(NULL, {}, MS_REC|MS_SLAVE)", path.display()),
            ),
            MountOp::Overlay {
                dst,
                lower,
                upper,
                work,
                flags,
                masks,
            } => {
                let masks = masks
                    .as_ref()
                    .map(|m| mask_source(dst, &m.place))
                    .transpose()?;
                self.overlay(dst, [masks.as_ref(), Some(lower)], upper, work, *flags)
            }
            MountOp::Bind {
                src,
                dst,
                flags,
                create_dst,
            } => {
                let s = self.source(src)?;
                if let Some(kind) = create_dst {
                    self.create_mount_point(dst, *kind)?;
                }
                let desc = format!(
                    "mount({}, {}, MS_BIND|MS_REC)",
                    src.path(&self.session_dir).display(),
                    dst.display()
                );
                let bind = libc::MS_BIND | libc::MS_REC;
                self.mount(MountKind::Bind, Some(&s), dst, None, bind, None, desc)?;
                self.set_attr(dst, *flags, true)
            }
            MountOp::Tmpfs {
                dst,
                mode,
                size,
                flags,
            } => {
                let mut data = format!("mode={mode:o}");
                if let Some(s) = size {
                    data.push_str(&format!(",size={s}"));
                }
                self.tmpfs(dst, *flags, &data)
            }
            MountOp::Hide { dst, kind } => {
                self.hiding = true;
                let r = self.hide(dst, *kind);
                self.hiding = false;
                r
            }
            MountOp::Mkdir { path, mode } => {
                self.mkdir_p(path, 0o755)?;
                if *mode != 0o755 {
                    // mkdir(2) applies the umask; the mode the plan asks for is exact.
                    self.push(
                        Step::Chmod {
                            path: cstring(path)?,
                            mode: *mode,
                        },
                        format!("chmod({}, {mode:o})", path.display()),
                    );
                }
                Ok(())
            }
            MountOp::HostRoot { flags, tmp_mode } => self.host_root(*flags, *tmp_mode),
            MountOp::Sysfs { dst, flags } => self.pseudo(MountKind::Sysfs, "sysfs", dst, *flags),
            MountOp::Proc { dst, flags } => self.pseudo(MountKind::Proc, "proc", dst, *flags),
            MountOp::LoopbackUp => {
                self.push(
                    Step::LoopbackUp,
                    "ioctl(SIOCSIFFLAGS, \"lo\", IFF_UP)".into(),
                );
                Ok(())
            }
            MountOp::Dev {
                dst,
                nodes,
                console,
            } => self.dev(dst, nodes, console.as_deref()),
        }
    }

    /// The host's tree, read-only, as the sandbox's root (plan::MountOp::HostRoot): a
    /// staging tmpfs on the host's /tmp holds a recursive bind of `/`, made read-only
    /// (and nosuid, nodev) all the way down, with the sandbox's private /tmp in it; then
    /// pivot_root into it, with the host's tree kept at /tmp/.csbox-host until the end.
    fn host_root(&mut self, flags: MountFlags, tmp_mode: u32) -> Result<()> {
        let (staging, root) = (Path::new(STAGING), Path::new(NEW_ROOT));
        self.tmpfs(staging, MountFlags::NOSUID_NODEV, "mode=0700")?;
        self.mkdir_p(root, 0o700)?;
        let rec = libc::MS_BIND | libc::MS_REC;
        let desc = format!("mount(/, {NEW_ROOT}, MS_BIND|MS_REC)");
        self.mount(MountKind::Bind, Some("/"), root, None, rec, None, desc)?;
        self.set_attr(root, flags, true)?;
        let tmp = root.join("tmp");
        self.tmpfs(
            &tmp,
            MountFlags::NOSUID_NODEV,
            &format!("mode={tmp_mode:o}"),
        )?;
        let put_old = tmp.join(".csbox-host");
        self.mkdir_p(&put_old, 0o700)?;
        self.push(
            Step::PivotRoot {
                new_root: cstring(root)?,
                put_old: cstring(&put_old)?,
            },
            format!("pivot_root({NEW_ROOT}, {})", put_old.display()),
        );
        self.pivoted = true;
        Ok(())
    }

    /// `lowers`: the overlay's lower layers, topmost first (a mask layer, then the lower).
    fn overlay(
        &mut self,
        dst: &Path,
        lowers: [Option<&Source>; 2],
        upper: &Source,
        work: &Source,
        flags: MountFlags,
    ) -> Result<()> {
        let lowers: Vec<&Source> = lowers.into_iter().flatten().collect();
        let mut l = Vec::new();
        for s in &lowers {
            l.push(self.source(s)?);
        }
        let (u, w) = (self.source(upper)?, self.source(work)?);
        let sd = self.session_dir.clone();
        let shown: Vec<String> = lowers
            .iter()
            .map(|s| s.path(&sd).display().to_string())
            .collect();
        let (upper, work) = (upper.path(&sd), work.path(&sd));
        // Layers are named through /proc/self/fd: no escaping of ',' or ':' in paths, and
        // no lookup that a mount made earlier could redirect. userxattr: in a user
        // namespace overlayfs keeps its xattrs in user.*.
        let data = format!(
            "lowerdir={},upperdir={u},workdir={w},userxattr",
            l.join(":")
        );
        let desc = format!(
            "mount(\"overlay\", {}, \"overlay\", {}, \"lowerdir={},upperdir={},workdir={},userxattr\")",
            dst.display(),
            flag_names(flags),
            shown.join(":"),
            upper.display(),
            work.display()
        );
        let f = ms_flags(flags);
        self.mount(
            MountKind::Overlay,
            Some("overlay"),
            dst,
            Some("overlay"),
            f,
            Some(&data),
            desc,
        )
    }

    fn tmpfs(&mut self, dst: &Path, flags: MountFlags, data: &str) -> Result<()> {
        let desc = format!(
            "mount(\"tmpfs\", {}, \"tmpfs\", {}, \"{data}\")",
            dst.display(),
            flag_names(flags)
        );
        let f = ms_flags(flags);
        self.mount(
            MountKind::Tmpfs,
            Some("tmpfs"),
            dst,
            Some("tmpfs"),
            f,
            Some(data),
            desc,
        )
    }

    fn pseudo(&mut self, kind: MountKind, fs: &str, dst: &Path, flags: MountFlags) -> Result<()> {
        let desc = format!(
            "mount(\"{fs}\", {}, \"{fs}\", {})",
            dst.display(),
            flag_names(flags)
        );
        self.mount(kind, Some(fs), dst, Some(fs), ms_flags(flags), None, desc)
    }

    /// What hiding means (plan::MountOp::Hide): an empty read-only tmpfs over a
    /// directory, a read-only bind of /dev/null over a file.
    fn hide(&mut self, dst: &Path, kind: NodeKind) -> Result<()> {
        match kind {
            NodeKind::Dir => self.tmpfs(dst, MountFlags::SEALED, "mode=0755,size=4k"),
            NodeKind::File => {
                // One source for every hidden file: a host may have thousands of sockets
                // to hide, and each source is an fd of the child's.
                let null = match &self.null {
                    Some(n) => n.clone(),
                    None => self.host_source(Path::new("/dev/null"))?,
                };
                self.null = Some(null.clone());
                let desc = format!("mount(/dev/null, {}, MS_BIND) to hide it", dst.display());
                self.mount(
                    MountKind::Bind,
                    Some(&null),
                    dst,
                    None,
                    libc::MS_BIND,
                    None,
                    desc,
                )?;
                self.set_attr(dst, MountFlags::NONE.read_only(true), true)
            }
        }
    }

    /// The minimal /dev the plan describes (plan::MountOp::Dev).
    fn dev(&mut self, dst: &Path, nodes: &[String], console: Option<&Path>) -> Result<()> {
        let mut srcs = Vec::new();
        for n in nodes {
            srcs.push((n, self.host_source(&Path::new("/dev").join(n))?));
        }
        let dev_flags = MountFlags {
            nosuid: true,
            noexec: true,
            ..MountFlags::NONE
        };
        self.tmpfs(dst, dev_flags, "mode=755")?;
        let console = match console {
            Some(tty) => Some((tty, self.host_source(tty)?)),
            None => None,
        };
        let binds = srcs
            .iter()
            .map(|(n, s)| (Path::new("/dev").join(n), dst.join(n), s.clone()));
        let console = console.map(|(tty, s)| (tty.to_path_buf(), dst.join("console"), s));
        for (from, node, src) in binds.chain(console) {
            self.touch(&node)?;
            let desc = format!("mount({}, {}, MS_BIND)", from.display(), node.display());
            self.mount(
                MountKind::Bind,
                Some(&src),
                &node,
                None,
                libc::MS_BIND,
                None,
                desc,
            )?;
        }
        // A private devpts instance: the sandbox can open new ptys, and sees none of the
        // host's.
        let pts = dst.join("pts");
        self.mkdir_p(&pts, 0o755)?;
        let opts = "newinstance,ptmxmode=0666,mode=620";
        self.mount(
            MountKind::Devpts,
            Some("devpts"),
            &pts,
            Some("devpts"),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some(opts),
            format!(
                "mount(\"devpts\", {}, \"devpts\", \"{opts}\")",
                pts.display()
            ),
        )?;
        self.symlink("pts/ptmx", &dst.join("ptmx"))?;
        self.symlink("/proc/self/fd", &dst.join("fd"))?;
        for (i, n) in ["stdin", "stdout", "stderr"].iter().enumerate() {
            self.symlink(&format!("/proc/self/fd/{i}"), &dst.join(n))?;
        }
        let shm = dst.join("shm");
        self.mkdir_p(&shm, 0o755)?;
        self.push(
            Step::Chmod {
                path: cstring(&shm)?,
                mode: 0o1777,
            },
            format!("chmod({}, 01777)", shm.display()),
        );
        Ok(())
    }
}

fn pointers(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Every capability this kernel knows but `keep`, in index order: what leaves the
/// bounding set. /proc/sys/kernel/cap_last_cap says what this kernel has (the caps crate
/// knows more than old kernels do, and dropping an unknown one is EINVAL).
pub fn bounding_to_drop(keep: &[caps::Capability]) -> Vec<caps::Capability> {
    let supported = caps::runtime::procfs_all_supported(None)
        .unwrap_or_else(|_| caps::runtime::thread_all_supported());
    let mut out: Vec<caps::Capability> = supported
        .into_iter()
        .filter(|c| !keep.contains(c))
        .collect();
    out.sort_by_key(|c| c.index());
    out
}

/// Where a mask layer was made for this launch (`session::masks::build`).
fn mask_source(dst: &Path, place: &MaskPlace) -> Result<Source> {
    match place {
        MaskPlace::Session(rel) => Ok(Source::Session(rel.clone())),
        MaskPlace::Private {
            built: Some(dir), ..
        } => Ok(Source::Host(dir.clone())),
        MaskPlace::Private { built: None, .. } => Err(Error::Usage(format!(
            "the mask layer of the overlay on {} was not made before the launch (a bug of csbox)",
            dst.display()
        ))),
    }
}

pub fn prepare(plan: &Plan) -> Result<Prepared> {
    prepare_with_first_fd(plan, first_free_fd())
}

/// As [`prepare`], with the first fd number for sources given (tests).
pub fn prepare_with_first_fd(plan: &Plan, first_fd: RawFd) -> Result<Prepared> {
    let mut b = Builder {
        steps: Vec::new(),
        descs: Vec::new(),
        missing_ok: Vec::new(),
        hiding: false,
        null: None,
        sources: Vec::new(),
        next_fd: first_fd,
        session_base: None,
        session_dir: plan.session.dir.clone(),
        pivoted: false,
    };
    for op in &plan.mounts {
        b.op(op)?;
    }
    if b.pivoted {
        b.push(
            Step::DetachHost {
                path: cstring(HOST_AT)?,
            },
            format!("umount2({HOST_AT}, MNT_DETACH)"),
        );
    }
    let argv: Vec<CString> = plan.argv.iter().map(cstring).collect::<Result<_>>()?;
    let envp: Vec<CString> = plan
        .env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}")))
        .collect::<Result<_>>()?;
    let clone_flags = plan
        .namespaces
        .kinds()
        .iter()
        .fold(0, |f, k| f | k.clone_flag());
    let keep_caps: Vec<caps::Capability> = plan
        .capabilities
        .iter()
        .map(|name| {
            name.parse::<caps::Capability>()
                .map_err(|_| Error::Usage(format!("unknown capability {name:?} in the plan")))
        })
        .collect::<Result<_>>()?;
    let drop_bounding = bounding_to_drop(&keep_caps);
    Ok(Prepared {
        steps: b.steps,
        descs: b.descs,
        missing_ok: b.missing_ok,
        sources: b.sources,
        uid_map: format!("{} {} 1\n", plan.uid, plan.uid).into_bytes(),
        gid_map: format!("{} {} 1\n", plan.gid, plan.gid).into_bytes(),
        exe: cstring(&plan.exe)?,
        argv_ptrs: pointers(&argv),
        argv,
        envp_ptrs: pointers(&envp),
        envp,
        cwd: cstring(&plan.cwd)?,
        filter: super::seccomp::build_filter(&plan.seccomp)
            .map_err(|e| Error::Usage(e.to_string()))?,
        trace_page: crate::trace::child_page(),
        relay_port: plan.network.proxy_port.filter(|_| plan.namespaces.net),
        landlock: super::landlock::prepare(plan.landlock.as_ref(), super::landlock::abi())?,
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
        max_user_namespaces: plan
            .max_user_namespaces
            .map(|n| format!("{n}\n").into_bytes()),
        inotify_limits: plan.inotify_limits.map(|l| {
            (
                format!("{}\n", l.instances).into_bytes(),
                format!("{}\n", l.watches).into_bytes(),
            )
        }),
        no_new_privs: plan.no_new_privs,
        die_with_parent: plan.die_with_parent,
        keep_caps,
        drop_bounding,
        new_session_keyring: plan.new_session_keyring,
    })
}
