//! `csbox spec`: the plan as an OCI runtime-spec `config.json`, for runc, crun or
//! containerd, built with the `oci-spec` crate.
//!
//! The plan was written for a launcher that starts from the host's own root; an OCI
//! runtime starts from a bundle's `rootfs/` (pivot_root refuses `/`). So the spec first
//! rebuilds the host's view: its system directories bound read-only, the home (unless the
//! profile hides it) and the working directory read-write; then it lists the plan's mount
//! operations in the plan's order. Whatever the runtime spec has no words for is returned
//! as a note, and `csbox spec` prints every note: nothing is dropped silently.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Arch, LinuxBuilder, LinuxCapabilities, LinuxIdMapping, LinuxIdMappingBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder, Mount,
    MountBuilder, PosixRlimit, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder,
    Spec, SpecBuilder, UserBuilder,
};

use crate::error::{Error, Result};
use crate::plan::{MountOp, NsKind, Plan};
use crate::profile::Isolation;

/// The runtime-spec version written: the one runc 1.1 (Debian 12) implements.
pub const OCI_VERSION: &str = "1.0.2";

/// Host directories bound read-only into the bundle's root: what programs need to run.
/// Symbolic links among them (merged /usr: `/bin -> usr/bin`) are recreated in `rootfs/`.
pub const SYSTEM_DIRS: &[&str] = &[
    "usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "opt", "var",
];

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
const READ_ONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const EPERM: u32 = libc::EPERM as u32;
const ENOSYS: u32 = libc::ENOSYS as u32;

/// Where the spec will run: facts about the host and the runtime, not about the sandbox.
#[derive(Debug, Clone)]
pub struct Target {
    /// The user's home on the host (bound into the bundle unless the plan hides it).
    pub home: PathBuf,
    /// A spec for a runtime run by this unprivileged user (uid, gid): a user namespace
    /// maps the plan's ids onto theirs. `None`: a runtime run by root.
    pub rootless: Option<(u32, u32)>,
}

/// A bundle's `rootfs/` and config: what to create besides config.json.
#[derive(Debug)]
pub struct Export {
    pub spec: Spec,
    /// Symbolic links to create in `rootfs/` (name, target), as the host has them.
    pub rootfs_links: Vec<(String, PathBuf)>,
    /// What the runtime spec cannot say of the native sandbox, one sentence each.
    pub notes: Vec<String>,
}

fn oci<T>(r: std::result::Result<T, oci_spec::OciSpecError>) -> Result<T> {
    r.map_err(|e| Error::Other(format!("building the OCI spec: {e}")))
}

/// Convert a plan. Pure but for `stat`s of the host paths the plan names (optional binds
/// whose source is missing are left out, as the native launcher skips them).
pub fn export(plan: &Plan, target: &Target) -> Result<Export> {
    if plan.isolation == Isolation::None || !plan.namespaces.mount {
        return Err(Error::Usage(format!(
            "profile {:?} has no sandbox (isolation: none): there is nothing to export as an OCI spec; \
use a profile with namespaces: default, strict or ci",
            plan.profile
        )));
    }
    let mut notes = Vec::new();
    let mut rootfs_links = Vec::new();
    let mut mounts = Vec::new();
    let mut masked: Vec<String> = MASKED.iter().map(|s| s.to_string()).collect();

    // 1. The host's system directories, read-only.
    for name in SYSTEM_DIRS {
        let host = Path::new("/").join(name);
        match std::fs::symlink_metadata(&host) {
            Ok(md) if md.file_type().is_symlink() => {
                let to = std::fs::read_link(&host).map_err(|e| Error::io("readlink", &host, e))?;
                rootfs_links.push((name.to_string(), to));
            }
            Ok(md) if md.is_dir() => mounts.push(bind(&host, &host, &["rbind", "ro", "nosuid"])?),
            _ => {}
        }
    }
    // 2. /sys: a fresh sysfs needs a network namespace of the container's own (the plan
    //    asks for one then); otherwise the host's, read-only, as the native sandbox sees it.
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
    // 3. The home and the working directory, read-write as natively; a hidden home is the
    //    plan's own tmpfs.
    let home_hidden = plan
        .mounts
        .iter()
        .any(|m| matches!(m, MountOp::Tmpfs { dst, .. } if dst == &target.home));
    if !home_hidden {
        mounts.push(bind(&target.home, &target.home, &["rbind"])?);
    }
    let cwd = &plan.cwd;
    // Under the home: bound with it, or by the plan itself when the home is hidden.
    let cwd_covered = cwd.starts_with(&target.home)
        || cwd.starts_with("/tmp")
        || SYSTEM_DIRS
            .iter()
            .any(|d| cwd.starts_with(Path::new("/").join(d)))
        || cwd == Path::new("/");
    if !cwd_covered {
        mounts.push(bind(cwd, cwd, &["rbind"])?);
    }
    notes.push(format!(
        "file system: the bundle's root holds the host's {} read-only, {} and the working directory; \
the rest of the host file system, visible natively, is not there",
        SYSTEM_DIRS
            .iter()
            .map(|d| format!("/{d}"))
            .filter(|d| Path::new(d).exists())
            .collect::<Vec<_>>()
            .join(" "),
        if home_hidden { "no home (the profile hides it)".to_string() } else { format!("{} read-write", target.home.display()) }
    ));

    // 4. The plan's own operations, in its order.
    for op in &plan.mounts {
        match op {
            // Nothing to say: the schema allows only the non-recursive "slave" for
            // rootfsPropagation, and runc's default when it is unset is MS_SLAVE|MS_REC on
            // /, the native operation itself.
            MountOp::MakeSlave { .. } => {}
            MountOp::Overlay {
                dst,
                lower,
                upper,
                work,
            } => {
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
                // userxattr: the same layer format the native launcher writes in its user
                // namespace (user.overlay.* xattrs), whoever mounts it.
                let options = vec![
                    format!("lowerdir={}", layer("lower dir", lower)?),
                    format!("upperdir={}", layer("upper dir", upper)?),
                    format!("workdir={}", layer("work dir", work)?),
                    "userxattr".into(),
                    "nosuid".into(),
                    "nodev".into(),
                ];
                mounts.push(oci(MountBuilder::default()
                    .destination(dst)
                    .typ("overlay")
                    .source("overlay")
                    .options(options)
                    .build())?);
            }
            MountOp::Bind {
                src,
                dst,
                read_only,
                optional,
                create_dst: _,
            } => {
                if *optional && std::fs::symlink_metadata(src).is_err() {
                    continue;
                }
                // "rro": read-only all the way down, as the native mount_setattr(AT_RECURSIVE).
                let opts: &[&str] = if *read_only {
                    &["rbind", "ro", "rro"]
                } else {
                    &["rbind"]
                };
                mounts.push(bind(src, dst, opts)?);
            }
            MountOp::Tmpfs {
                dst,
                mode,
                read_only,
            } => {
                let mut opts = vec!["nosuid", "nodev"];
                if *read_only {
                    opts.push("ro");
                }
                mounts.push(fs_mount("tmpfs", dst, &opts, Some(format!("mode={mode:o}")))?);
            }
            // The runtime masks a directory with an empty read-only tmpfs and a file with
            // /dev/null, and skips what does not exist: the native Hide exactly.
            MountOp::Hide { dst } => masked.push(dst.display().to_string()),
            // The runtime creates every mount point itself.
            MountOp::Mkdir { .. } => {}
            MountOp::LoopbackUp => notes.push(
                "loopback: the spec has no field to bring lo up in the new network namespace; runc and crun do it themselves"
                    .into(),
            ),
            MountOp::Sysfs { dst } => {
                mounts.push(fs_mount("sysfs", dst, &["ro", "nosuid", "nodev", "noexec"], None)?)
            }
            // A tmpfs /dev: the runtime fills it with null zero full random urandom tty and
            // the fd/stdin/stdout/stderr/ptmx links, as the native minimal /dev.
            MountOp::Dev { dst } => {
                mounts.push(fs_mount(
                    "tmpfs",
                    dst,
                    &["nosuid", "strictatime"],
                    Some("mode=755".into()),
                )?);
                mounts.push(fs_mount(
                    "devpts",
                    &dst.join("pts"),
                    &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
                    None,
                )?);
                mounts.push(fs_mount(
                    "tmpfs",
                    &dst.join("shm"),
                    &["nosuid", "nodev", "noexec"],
                    Some("mode=1777".into()),
                )?);
            }
            MountOp::Proc { dst } => {
                mounts.push(fs_mount("proc", dst, &["nosuid", "nodev", "noexec"], None)?)
            }
        }
    }

    // 5. Namespaces. A root-run runtime needs no user namespace to run the command with the
    //    user's ids and no capability; a rootless one needs it to exist at all.
    let ns = &plan.namespaces;
    let mut namespaces = Vec::new();
    // A root-run runtime gets no user namespace; a rootless one always does.
    let mut kinds: Vec<NsKind> = ns
        .kinds()
        .into_iter()
        .filter(|k| *k != NsKind::User)
        .collect();
    if target.rootless.is_some() {
        kinds.insert(0, NsKind::User);
    }
    for k in kinds {
        let typ = match k {
            NsKind::User => LinuxNamespaceType::User,
            NsKind::Mount => LinuxNamespaceType::Mount,
            NsKind::Pid => LinuxNamespaceType::Pid,
            NsKind::Ipc => LinuxNamespaceType::Ipc,
            NsKind::Uts => LinuxNamespaceType::Uts,
            NsKind::Net => LinuxNamespaceType::Network,
        };
        namespaces.push(oci(LinuxNamespaceBuilder::default().typ(typ).build())?);
    }
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .masked_paths(masked)
        .readonly_paths(READ_ONLY.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .seccomp(seccomp(plan, &mut notes)?);
    // runc needs the container's root mapped (it becomes uid 0 in the new namespace to set
    // it up), and an unprivileged user without newuidmap can map one id only, their own:
    // so under a rootless runtime the command runs as root of its user namespace, with no
    // capability, owning what the user owns.
    let (uid, gid) = match target.rootless {
        Some((uid, gid)) => {
            linux = linux
                .uid_mappings(vec![id_map(0, uid)?])
                .gid_mappings(vec![id_map(0, gid)?]);
            notes.push(format!(
                "user: natively the command runs as uid {} inside; a rootless runtime must map the container's root, \
and can map only your own uid, so here the command is uid 0 of its user namespace (uid {uid} outside, no capability); \
Claude Code refuses --dangerously-skip-permissions as root unless IS_SANDBOX=1 is set",
                plan.uid
            ));
            (0, 0)
        }
        None => (plan.uid, plan.gid),
    };
    let mut linux = oci(linux.build())?;
    // The builder starts from Linux::default(), which asks for an (empty) cgroup
    // resources section; the plan sets none.
    linux.set_resources(None);

    // 6. The process.
    let exe = plan.exe.display().to_string();
    let mut args = plan.argv.clone();
    if args.first() != Some(&exe) {
        notes.push(format!(
            "argv[0]: the runtime executes args[0], so it is the resolved {exe} (natively the command sees argv[0] {:?})",
            args.first().map(String::as_str).unwrap_or_default()
        ));
        match args.first_mut() {
            Some(a) => *a = exe,
            None => args.push(exe),
        }
    }
    let rlimits = plan
        .rlimits
        .iter()
        .map(|(name, v)| rlimit(name, *v))
        .collect::<Result<Vec<PosixRlimit>>>()?;
    let none = oci_spec::runtime::Capabilities::new;
    let no_caps = oci(oci_spec::runtime::LinuxCapabilitiesBuilder::default()
        .bounding(none())
        .effective(none())
        .inheritable(none())
        .permitted(none())
        .ambient(none())
        .build())?;
    let process = oci(ProcessBuilder::default()
        .terminal(false)
        .user(oci(UserBuilder::default()
            .uid(uid)
            .gid(gid)
            .additional_gids(Vec::<u32>::new())
            .build())?)
        .args(args)
        .env(
            plan.env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        )
        .cwd(&plan.cwd)
        .capabilities::<LinuxCapabilities>(no_caps)
        .no_new_privileges(plan.no_new_privs)
        .rlimits(rlimits)
        .build())?;
    notes.push(
        "terminal: natively the command shares your terminal; here process.terminal is false, as CI wants (set it true for an interactive `runc run`)"
            .into(),
    );
    notes.push(
        "setgroups: natively setgroups is denied and your supplementary groups stay (unmapped, shown as nobody); here additionalGids is empty: the command has no supplementary group"
            .into(),
    );
    if plan.die_with_parent {
        notes.push(
            "die-with-parent: natively the sandbox dies with csbox; a runtime keeps the container until its init exits (runc run: until the runc process is killed)"
                .into(),
        );
    }
    if let Some(t) = plan.timeout_secs {
        notes.push(format!(
            "wall-clock limit: the profile stops the command after {t}s; the spec has no such field: run it under `timeout -k 10 {t} runc run …`, or set activeDeadlineSeconds: {t} on a Kubernetes Job"
        ));
    }

    let mut spec = oci(SpecBuilder::default()
        .version(OCI_VERSION)
        .root(oci(RootBuilder::default()
            .path("rootfs")
            .readonly(true)
            .build())?)
        .mounts(mounts)
        .process(process)
        .linux(linux)
        .annotations(HashMap::from([
            ("org.csbox.profile".to_string(), plan.profile.clone()),
            ("org.csbox.session".to_string(), plan.session.id.clone()),
        ]))
        .build())?;
    // Spec::default() names a hostname ("youki"); a new UTS namespace keeps the host's, as
    // natively.
    spec.set_hostname(None);
    Ok(Export {
        spec,
        rootfs_links,
        notes,
    })
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

fn id_map(inside: u32, outside: u32) -> Result<LinuxIdMapping> {
    oci(LinuxIdMappingBuilder::default()
        .container_id(inside)
        .host_id(outside)
        .size(1u32)
        .build())
}

fn rlimit(name: &str, value: u64) -> Result<PosixRlimit> {
    // The runtime spec names them as the C constants do: nofile -> RLIMIT_NOFILE.
    let typ: PosixRlimitType = serde_json::from_value(serde_json::Value::String(format!(
        "RLIMIT_{}",
        name.to_ascii_uppercase()
    )))
    .map_err(|_| Error::Usage(format!("rlimit {name:?} has no OCI name")))?;
    oci(PosixRlimitBuilder::default()
        .typ(typ)
        .soft(value)
        .hard(value)
        .build())
}

/// The plan's seccomp rules for libseccomp (the runtime compiles them): default allow,
/// the listed ioctls and calls refused with EPERM.
fn seccomp(plan: &Plan, notes: &mut Vec<String>) -> Result<oci_spec::runtime::LinuxSeccomp> {
    let sc = &plan.seccomp;
    let mut rules: Vec<LinuxSyscall> = Vec::new();
    for req in &sc.deny_ioctls {
        // libseccomp's SCMP_CMP_MASKED_EQ takes (mask, datum): runc passes `value` as the
        // mask and `valueTwo` as the datum. Masking with 0xFFFFFFFF compares the low 32
        // bits only, as the tty layer reads `cmd` (CVE-2019-10063: TIOCSTI | 1<<32).
        let arg = oci(LinuxSeccompArgBuilder::default()
            .index(1usize)
            .value(0xFFFF_FFFFu64)
            .value_two(*req & 0xFFFF_FFFF)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .build())?;
        rules.push(oci(LinuxSyscallBuilder::default()
            .names(vec!["ioctl".to_string()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(EPERM)
            .args(vec![arg])
            .build())?);
    }
    if !sc.deny_syscalls.is_empty() {
        rules.push(oci(LinuxSyscallBuilder::default()
            .names(sc.deny_syscalls.clone())
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(EPERM)
            .build())?);
    }
    if !plan.nested_userns {
        // Natively /proc/sys/user/max_user_namespaces is set to 0 inside; a runtime may not
        // set that sysctl (it is not namespaced the way runc checks), so refuse the calls
        // that create a user namespace instead, as Docker's default profile does.
        let newuser = libc::CLONE_NEWUSER as u64;
        for (name, index) in [("unshare", 0usize), ("clone", 0usize)] {
            let arg = oci(LinuxSeccompArgBuilder::default()
                .index(index)
                .value(newuser)
                .value_two(newuser)
                .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                .build())?;
            rules.push(oci(LinuxSyscallBuilder::default()
                .names(vec![name.to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(EPERM)
                .args(vec![arg])
                .build())?);
        }
        // clone3 passes its flags in memory seccomp cannot read: ENOSYS makes libc fall
        // back to clone.
        rules.push(oci(LinuxSyscallBuilder::default()
            .names(vec!["clone3".to_string()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(ENOSYS)
            .build())?);
        notes.push(
            "nested user namespaces: natively max_user_namespaces is 0 inside; here unshare/clone with CLONE_NEWUSER fail with EPERM and clone3 with ENOSYS (seccomp)"
                .into(),
        );
    }
    let (native, compat): (Arch, &[Arch]) = if cfg!(target_arch = "aarch64") {
        (Arch::ScmpArchAarch64, &[Arch::ScmpArchArm])
    } else {
        (
            Arch::ScmpArchX86_64,
            &[Arch::ScmpArchX86, Arch::ScmpArchX32],
        )
    };
    let mut arches = vec![native];
    if sc.deny_compat_abis {
        notes.push(
            "32-bit entry points: natively refused with EPERM; here they are left out of `architectures`, so libseccomp kills a process that uses one"
                .into(),
        );
    } else {
        arches.extend_from_slice(compat);
    }
    oci(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(arches)
        .syscalls(rules)
        .build())
}

/// Write a bundle: `DIR/config.json` and `DIR/rootfs/` with the host's system links.
pub fn write_bundle(dir: &Path, export: &Export) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let rootfs = dir.join("rootfs");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&rootfs)
        .map_err(|e| Error::io("create", &rootfs, e))?;
    for (name, to) in &export.rootfs_links {
        let link = rootfs.join(name);
        match std::fs::read_link(&link) {
            Ok(t) if &t == to => continue,
            _ => {}
        }
        std::os::unix::fs::symlink(to, &link).map_err(|e| Error::io("symlink", &link, e))?;
    }
    let json = to_json(&export.spec)?;
    crate::fsutil::atomic_write(
        dir,
        "config.json",
        json.as_bytes(),
        0o644,
        crate::fsutil::Durability::Full,
    )
}

pub fn to_json(spec: &Spec) -> Result<String> {
    serde_json::to_string_pretty(spec)
        .map(|mut s| {
            s.push('\n');
            s
        })
        .map_err(|e| Error::Other(format!("serialising the OCI spec: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::{EnvInput, Paths};
    use crate::plan::{PlanInput, StateMode};

    fn plan_for(profile: &str) -> std::result::Result<Plan, String> {
        let paths = Paths::resolve(&EnvInput {
            home: Some("/home/u".into()),
            cwd: "/home/u/project".into(),
            ..Default::default()
        })
        .unwrap();
        let prof = crate::profile::load(profile, Path::new("/nonexistent")).unwrap();
        let dir = paths.sessions_dir.join("0193a1b2");
        crate::plan::build(&PlanInput {
            paths: &paths,
            session_id: "0193a1b2",
            session_dir: &dir,
            argv: vec!["claude".into()],
            cwd: "/home/u/project".into(),
            host_env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            uid: 1000,
            gid: 1000,
            state_mode: StateMode::Overlay,
            profile: &prof,
            exe: "/usr/bin/claude".into(),
        })
    }

    fn target(rootless: bool) -> Target {
        Target {
            home: "/home/u".into(),
            rootless: rootless.then_some((1000, 1000)),
        }
    }

    fn json(profile: &str, rootless: bool) -> serde_json::Value {
        let e = export(&plan_for(profile).unwrap(), &target(rootless)).unwrap();
        serde_json::from_str(&to_json(&e.spec).unwrap()).unwrap()
    }

    fn namespaces(doc: &serde_json::Value) -> Vec<String> {
        let list = doc["linux"]["namespaces"].as_array().unwrap();
        list.iter()
            .map(|n| n["type"].as_str().unwrap().to_string())
            .collect()
    }

    /// The runtime-spec schema, vendored under tests/oci-schema; `$ref`s name sibling
    /// files ("defs.json#/…"), served here from disk.
    fn validator() -> jsonschema::Validator {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oci-schema");
        let read = |name: &str| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
        };
        let base = format!("file://{}/", dir.display());
        let mut opts = jsonschema::options().with_draft(jsonschema::Draft::Draft4);
        for e in std::fs::read_dir(&dir).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".json") && name != "config-schema.json" {
                opts = opts.with_resource(
                    format!("{base}{name}"),
                    jsonschema::Resource::from_contents(read(&name)),
                );
            }
        }
        let mut root = read("config-schema.json");
        root["id"] = format!("{base}config-schema.json").into();
        opts.build(&root).expect("the vendored schema compiles")
    }

    #[test]
    fn every_sandboxed_builtin_profile_converts_to_a_schema_valid_config() {
        let v = validator();
        for (name, _) in crate::profile::BUILTINS {
            if *name == "compat" {
                continue;
            }
            for rootless in [false, true] {
                let doc = json(name, rootless);
                let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
                assert!(
                    errors.is_empty(),
                    "profile {name} (rootless {rootless}): {errors:#?}\n{doc:#}"
                );
            }
        }
    }

    #[test]
    fn the_schema_check_catches_a_broken_config() {
        let mut doc = json("default", false);
        doc["process"]["rlimits"] = serde_json::json!([{"type": "RLIMIT_NOFILE"}]);
        assert!(!validator().is_valid(&doc));
        // A rule in a file the root schema reaches by $ref (defs-linux.json).
        let mut doc = json("default", false);
        doc["linux"]["seccomp"]["defaultAction"] = "SCMP_ACT_MAYBE".into();
        assert!(!validator().is_valid(&doc));
    }

    #[test]
    fn compat_has_no_sandbox_to_export() {
        let err = export(&plan_for("compat").unwrap(), &target(false)).unwrap_err();
        assert!(err.to_string().contains("no sandbox"), "{err}");
    }

    #[test]
    fn tiocsti_is_refused_on_the_low_32_bits_of_the_ioctl_request() {
        let doc = json("default", false);
        let rules = doc["linux"]["seccomp"]["syscalls"].as_array().unwrap();
        let tiocsti = rules
            .iter()
            .find(|r| r["names"][0] == "ioctl" && r["args"][0]["valueTwo"] == 0x5412)
            .expect("a TIOCSTI rule");
        assert_eq!(tiocsti["args"][0]["index"], 1);
        assert_eq!(tiocsti["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(tiocsti["args"][0]["value"], 0xFFFF_FFFFu64);
        assert_eq!(tiocsti["errnoRet"], 1);
        assert_eq!(doc["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
    }

    #[test]
    fn strict_adds_its_denied_calls_and_drops_the_32_bit_abis() {
        let doc = json("strict", false);
        let sc = &doc["linux"]["seccomp"];
        assert!(sc["syscalls"].as_array().unwrap().iter().any(|r| r["names"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "bpf")));
        assert_eq!(sc["architectures"].as_array().unwrap().len(), 1);
        assert_eq!(
            json("default", false)["linux"]["seccomp"]["architectures"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn the_claude_dir_is_an_overlay_on_the_session_layer() {
        let doc = json("default", false);
        let ov = doc["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["type"] == "overlay")
            .unwrap();
        assert_eq!(ov["destination"], "/home/u/.claude");
        let opts: Vec<&str> = ov["options"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_str().unwrap())
            .collect();
        assert!(opts.contains(&"lowerdir=/home/u/.claude"), "{opts:?}");
        assert!(
            opts.iter()
                .any(|o| o.starts_with("upperdir=") && o.ends_with("0193a1b2/state")),
            "{opts:?}"
        );
    }

    #[test]
    fn hidden_paths_are_masked_and_no_capability_is_kept() {
        let doc = json("default", false);
        let masked = doc["linux"]["maskedPaths"].as_array().unwrap();
        assert!(
            masked
                .iter()
                .any(|p| p == "/home/u/.local/share/csbox/sessions"),
            "{masked:?}"
        );
        let caps = &doc["process"]["capabilities"];
        for set in [
            "bounding",
            "effective",
            "inheritable",
            "permitted",
            "ambient",
        ] {
            assert_eq!(caps[set], serde_json::json!([]), "{set}");
        }
        assert_eq!(doc["process"]["noNewPrivileges"], true);
    }

    #[test]
    fn rootless_maps_the_users_ids_in_a_user_namespace_and_root_run_has_none() {
        let doc = json("default", true);
        let ns = namespaces(&doc);
        assert!(ns.contains(&"user".to_string()));
        assert_eq!(
            doc["linux"]["uidMappings"],
            serde_json::json!([{"hostID": 1000, "containerID": 0, "size": 1}])
        );
        let doc = json("default", false);
        assert!(!namespaces(&doc).contains(&"user".to_string()));
        assert!(doc["linux"].get("uidMappings").is_none());
        assert_eq!(doc["process"]["user"]["uid"], 1000);
    }

    #[test]
    fn strict_hides_the_home_and_brings_no_host_home_bind() {
        let doc = json("strict", false);
        let mounts = doc["mounts"].as_array().unwrap();
        assert!(mounts
            .iter()
            .any(|m| m["destination"] == "/home/u" && m["type"] == "tmpfs"));
        assert!(!mounts
            .iter()
            .any(|m| m["destination"] == "/home/u" && m["type"] == "bind"));
        let ns = namespaces(&doc);
        assert!(ns.contains(&"network".to_string()), "{ns:?}");
    }

    #[test]
    fn what_the_runtime_cannot_express_is_listed() {
        let e = export(&plan_for("ci").unwrap(), &target(false)).unwrap();
        let notes = e.notes.join("\n");
        for word in ["wall-clock", "terminal", "setgroups", "die-with-parent"] {
            assert!(notes.contains(word), "{word} missing from:\n{notes}");
        }
        let e = export(&plan_for("strict").unwrap(), &target(false)).unwrap();
        let notes = e.notes.join("\n");
        for word in ["loopback", "nested user namespaces", "32-bit"] {
            assert!(notes.contains(word), "{word} missing from:\n{notes}");
        }
    }
}
