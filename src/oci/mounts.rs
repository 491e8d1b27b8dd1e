//! The mounts of an exported spec: the host's view that a bundle's root lacks, then the
//! plan's own operations, each translated as it stands.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Mount, MountBuilder};

use super::build::oci;
use crate::error::{Error, Result};
use crate::plan::{MaskPlace, MountFlags, MountOp, Plan, DEV_NODES};

/// Top-level host directories the runtime provides itself, or that are no part of a
/// root: not bound from the host.
const NOT_BOUND: &[&str] = &["proc", "sys", "dev", "tmp", "lost+found"];

/// The paths every runtime masks or makes read-only in /proc and /sys (runc's and
/// containerd's defaults): the native sandbox does not, the bundle may as well.
const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];
pub const READ_ONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub struct HostView {
    pub mounts: Vec<Mount>,
    pub rootfs_links: Vec<(String, PathBuf)>,
}

pub struct PlanMounts {
    pub mounts: Vec<Mount>,
    /// Symbolic links the bundle's `rootfs/` holds, as the host's `/` has them.
    pub rootfs_links: Vec<(String, PathBuf)>,
    /// `linux.maskedPaths`: the runtime's defaults and the plan's hidden paths.
    pub masked: Vec<String>,
}

fn flag_options(f: MountFlags) -> Vec<&'static str> {
    [
        (f.read_only, "ro"),
        (f.nosuid, "nosuid"),
        (f.nodev, "nodev"),
        (f.noexec, "noexec"),
    ]
    .iter()
    .filter_map(|(on, o)| on.then_some(*o))
    .collect()
}

/// The host's tree as the bundle's root (plan::MountOp::HostRoot): every top-level
/// directory of `/` bound with the plan's flags (read-only all the way down: "rro"), its
/// top-level symbolic links (merged /usr: `/bin -> usr/bin`) recreated in `rootfs/`, and
/// the private /tmp; /sys the host's, read-only, unless the plan mounts a fresh one.
fn host_root(
    plan: &Plan,
    flags: MountFlags,
    tmp_mode: u32,
    notes: &mut Vec<String>,
) -> Result<HostView> {
    let mut mounts = Vec::new();
    let mut rootfs_links = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir("/")
        .map_err(|e| Error::io("read", "/", e))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut opts = vec!["rbind"];
    opts.extend(flag_options(flags));
    if flags.read_only {
        opts.push("rro");
    }
    for name in &names {
        let host = Path::new("/").join(name);
        match std::fs::symlink_metadata(&host) {
            Ok(md) if md.file_type().is_symlink() => {
                let to = std::fs::read_link(&host).map_err(|e| Error::io("readlink", &host, e))?;
                rootfs_links.push((name.to_string(), to));
            }
            Ok(md) if md.is_dir() && !NOT_BOUND.contains(&name.as_str()) => {
                mounts.push(bind(&host, &host, &opts)?)
            }
            _ => {}
        }
    }
    if !plan
        .mounts
        .iter()
        .any(|m| matches!(m, MountOp::Sysfs { .. }))
    {
        mounts.push(bind(
            Path::new("/sys"),
            Path::new("/sys"),
            &["rbind", "ro", "nosuid", "nodev", "noexec"],
        )?);
    }
    mounts.push(fs_mount(
        "tmpfs",
        Path::new("/tmp"),
        &["nosuid", "nodev"],
        Some(format!("mode={tmp_mode:o}")),
    )?);
    notes.push(format!(
        "file system: the bundle's root binds each of the host's top-level directories ({}) {}, as the native sandbox's root is the host's",
        names
            .iter()
            .filter(|n| !NOT_BOUND.contains(&n.as_str()))
            .map(|n| format!("/{n}"))
            .collect::<Vec<_>>()
            .join(" "),
        if flags.read_only { "read-only" } else { "read-write" }
    ));
    Ok(HostView {
        mounts,
        rootfs_links,
    })
}

/// The plan's operations, in its order.
pub fn plan_mounts(
    plan: &Plan,
    private_masks: Option<&Path>,
    notes: &mut Vec<String>,
) -> Result<PlanMounts> {
    let mut mounts = Vec::new();
    let mut rootfs_links = Vec::new();
    let mut masked: Vec<String> = MASKED.iter().map(|s| s.to_string()).collect();
    let sd = &plan.session.dir;
    for op in &plan.mounts {
        match op {
            MountOp::HostRoot { flags, tmp_mode } => {
                let host = host_root(plan, *flags, *tmp_mode, notes)?;
                mounts.extend(host.mounts);
                rootfs_links.extend(host.rootfs_links);
            }
            // Nothing to say: the schema allows only the non-recursive "slave" for
            // rootfsPropagation, and runc's default when it is unset is MS_SLAVE|MS_REC on
            // /, the native operation itself.
            MountOp::MakeSlave { .. } => {}
            MountOp::Overlay {
                dst,
                lower,
                upper,
                work,
                flags,
                masks,
            } => {
                let mut lowers = Vec::new();
                match masks.as_ref().map(|m| &m.place) {
                    Some(MaskPlace::Session(rel)) => lowers.push(sd.join(rel)),
                    Some(MaskPlace::Private { .. }) => match private_masks {
                        Some(p) => lowers.push(p.to_path_buf()),
                        None => notes.push(format!(
                            "the mask layer over {} (whiteouts over hidden paths the host lacks now) is written only into a bundle: use --bundle DIR",
                            dst.display()
                        )),
                    },
                    None => {}
                }
                lowers.push(lower.path(sd));
                mounts.push(overlay(dst, &lowers, &upper.path(sd), &work.path(sd), *flags)?)
            }
            MountOp::Bind {
                src, dst, flags, ..
            } => {
                let mut opts = vec!["rbind"];
                opts.extend(flag_options(*flags));
                if flags.read_only {
                    // "rro": read-only all the way down, as the native
                    // mount_setattr(AT_RECURSIVE).
                    opts.push("rro");
                }
                mounts.push(bind(&src.path(sd), dst, &opts)?);
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
                mounts.push(fs_mount("tmpfs", dst, &flag_options(*flags), Some(data))?);
            }
            // The runtime masks a directory with an empty read-only tmpfs and a file with
            // /dev/null: what the plan's Hide means.
            MountOp::Hide { dst, .. } => {
                let d = dst.display().to_string();
                if !masked.contains(&d) {
                    masked.push(d);
                }
            }
            // The runtime creates every mount point itself.
            MountOp::Mkdir { .. } => {}
            MountOp::LoopbackUp => notes.push(
                "loopback: the spec has no field to bring lo up in the new network namespace; runc and crun do it themselves"
                    .into(),
            ),
            MountOp::Sysfs { dst, flags } => {
                mounts.push(fs_mount("sysfs", dst, &flag_options(*flags), None)?)
            }
            MountOp::Dev {
                dst,
                nodes,
                console,
            } => mounts.extend(dev(dst, nodes, console.as_deref(), notes)?),
            MountOp::Proc { dst, flags } => {
                mounts.push(fs_mount("proc", dst, &flag_options(*flags), None)?)
            }
        }
    }
    Ok(PlanMounts {
        mounts,
        masked,
        rootfs_links,
    })
}

/// `lowers`: topmost first.
fn overlay(
    dst: &Path,
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    flags: MountFlags,
) -> Result<Mount> {
    let layer = |what: &str, p: &Path| -> Result<String> {
        let s = p.display().to_string();
        // overlayfs splits its options at ',' and lowerdir at ':'.
        if s.contains([',', ':']) {
            return Err(Error::Usage(format!(
                "overlay {what} {s}: an OCI overlay mount names its layers in the mount options, \
where ',' and ':' cannot appear; move the session store (SESSIONS_DIR) or CLAUDE_ROOT to a path without them"
            )));
        }
        Ok(s)
    };
    // userxattr: the same layer format the native launcher writes in its user namespace
    // (user.overlay.* xattrs), whoever mounts it.
    let mut options = vec![
        format!(
            "lowerdir={}",
            lowers
                .iter()
                .map(|l| layer("lower dir", l))
                .collect::<Result<Vec<_>>>()?
                .join(":")
        ),
        format!("upperdir={}", layer("upper dir", upper)?),
        format!("workdir={}", layer("work dir", work)?),
        "userxattr".into(),
    ];
    options.extend(flag_options(flags).iter().map(|s| s.to_string()));
    oci(MountBuilder::default()
        .destination(dst)
        .typ("overlay")
        .source("overlay")
        .options(options)
        .build())
}

/// A tmpfs /dev: the runtime fills it with its default devices (null zero full random
/// urandom tty) and the fd/stdin/stdout/stderr/ptmx links, which are the plan's nodes.
fn dev(
    dst: &Path,
    nodes: &[String],
    console: Option<&Path>,
    notes: &mut Vec<String>,
) -> Result<Vec<Mount>> {
    if nodes
        .iter()
        .map(String::as_str)
        .ne(DEV_NODES.iter().copied())
    {
        notes.push(format!(
            "/dev: the runtime creates its default devices ({}), not the plan's ({})",
            DEV_NODES.join(" "),
            nodes.join(" ")
        ));
    }
    if console.is_some() {
        notes.push(
            "/dev/console: natively the terminal csbox runs in is bound there; a runtime gives the container a console only with process.terminal"
                .into(),
        );
    }
    Ok(vec![
        fs_mount(
            "tmpfs",
            dst,
            &["nosuid", "strictatime"],
            Some("mode=755".into()),
        )?,
        fs_mount(
            "devpts",
            &dst.join("pts"),
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
            None,
        )?,
        fs_mount(
            "tmpfs",
            &dst.join("shm"),
            &["nosuid", "nodev", "noexec"],
            Some("mode=1777".into()),
        )?,
    ])
}

fn bind(src: &Path, dst: &Path, opts: &[&str]) -> Result<Mount> {
    oci(MountBuilder::default()
        .destination(dst)
        .typ("bind")
        .source(src)
        .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build())
}

fn fs_mount(fstype: &str, dst: &Path, opts: &[&str], data: Option<String>) -> Result<Mount> {
    let mut options: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
    options.extend(data);
    oci(MountBuilder::default()
        .destination(dst)
        .typ(fstype)
        .source(fstype)
        .options(options)
        .build())
}
