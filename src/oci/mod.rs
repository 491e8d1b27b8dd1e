//! `csbox spec`: the plan as an OCI runtime-spec `config.json`, for runc, crun or
//! containerd, built with the `oci-spec` crate.
//!
//! The plan was written for a launcher that starts from the host's own root; an OCI
//! runtime starts from a bundle's `rootfs/` (pivot_root refuses `/`). So the plan's
//! HostRoot becomes binds of the host's top-level directories, and every other
//! operation follows in the plan's order ([`mounts::plan_mounts`]). Everything here translates
//! plan fields; whatever the runtime spec has no words for is returned as a note, and
//! `csbox spec` prints every note: nothing is dropped silently.

mod build;
mod mounts;
mod seccomp;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBuilder, LinuxCapabilities, LinuxIdMapping, LinuxIdMappingBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, PosixRlimit, PosixRlimitBuilder, PosixRlimitType, Process, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::error::{Error, Result};
use crate::plan::{NsKind, Plan};
use build::oci;

/// The runtime-spec version written: the one runc 1.1 (Debian 12) implements.
pub const OCI_VERSION: &str = "1.0.2";

/// Where the spec will run: facts about the runtime, not about the sandbox.
#[derive(Debug, Clone)]
pub struct Target {
    /// A spec for a runtime run by this unprivileged user (uid, gid): a user namespace
    /// maps the plan's ids onto theirs. `None`: a runtime run by root.
    pub rootless: Option<(u32, u32)>,
    /// csbox's own binary for the runtime to run on the host around the container (its
    /// hooks, see [`BundleHooks`]). None: no hooks (a preview, with no session).
    pub hooks: Option<BundleHooks>,
    /// Where the bundle holds its copy of the home's mask layer (`MaskPlace::Private`:
    /// `csbox run` makes it in a private dir per launch, a bundle keeps its own). None:
    /// no bundle is written, and the spec goes without that layer (and says so).
    pub private_masks: Option<PathBuf>,
}

/// What the bundle's hooks need: `csbox quarantine` records the container's start
/// (a `createRuntime` hook, before the command runs) and, once the container has
/// stopped (a `poststop` hook), runs the exit walk `csbox run` runs, with that start as
/// its baseline (what changed after it is the session's).
#[derive(Debug, Clone)]
pub struct BundleHooks {
    /// csbox's own binary.
    pub exe: PathBuf,
    /// When the bundle was written: the baseline where no start was recorded (a
    /// runtime that runs no `createRuntime` hook). Never after the container's start.
    pub written: std::time::SystemTime,
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

/// Convert a plan. Pure but for `stat`s of the host's top-level system directories (which
/// of them exist, which are `/usr`-merge links) for the bundle's root.
pub fn export(plan: &Plan, target: &Target) -> Result<Export> {
    if !plan.sandboxed() || !plan.namespaces.mount {
        return Err(Error::Usage(format!(
            "profile {:?} has no sandbox (isolation: none): there is nothing to export as an OCI spec; \
use a profile with namespaces: default, strict or ci",
            plan.profile
        )));
    }
    let mut notes = Vec::new();
    let ops = mounts::plan_mounts(plan, target.private_masks.as_deref(), &mut notes)?;
    if !plan
        .mounts
        .iter()
        .any(|m| matches!(m, crate::plan::MountOp::HostRoot { .. }))
    {
        return Err(Error::Other(
            "the plan has no root (HostRoot): a bundle needs one; this is a csbox bug".into(),
        ));
    }
    let (linux, uid, gid) = linux(plan, target, ops.masked.clone(), &mut notes)?;
    let process = process(plan, uid, gid, &mut notes)?;
    let mut spec = oci(SpecBuilder::default()
        .version(OCI_VERSION)
        .root(oci(RootBuilder::default()
            .path("rootfs")
            .readonly(true)
            .build())?)
        .mounts(ops.mounts)
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
    if let (Some(h), Some(project)) = (&target.hooks, &plan.view.project) {
        spec.set_hooks(Some(hooks(h, plan, project, &mut notes)?));
    }
    Ok(Export {
        spec,
        rootfs_links: ops.rootfs_links,
        notes,
    })
}

/// What `csbox run` does around the command, as hooks the runtime runs on the host, as
/// the user running the runtime (root drops to the session's owner): the start recorded
/// (`createRuntime`: after the container is created, before its command runs), and the
/// exit walk (`poststop`).
fn hooks(
    h: &BundleHooks,
    plan: &Plan,
    project: &crate::plan::ProjectView,
    notes: &mut Vec<String>,
) -> Result<oci_spec::runtime::Hooks> {
    use oci_spec::runtime::{HookBuilder, HooksBuilder};
    let view = serde_json::to_string(project).map_err(|e| Error::Other(e.to_string()))?;
    let dir = plan.session.dir.display().to_string();
    let hook = |args: Vec<String>, timeout: i64| {
        let args = ["csbox", "quarantine", "--dir", &dir]
            .into_iter()
            .map(String::from)
            .chain(args)
            .collect::<Vec<_>>();
        oci(HookBuilder::default()
            .path(&h.exe)
            .args(args)
            .env(vec!["PATH=/usr/bin:/bin".to_string()])
            .timeout(timeout)
            .build())
    };
    let start = hook(vec!["--mark-start".into()], 10)?;
    let written = humantime::format_rfc3339_nanos(h.written).to_string();
    let stop = hook(
        vec!["--project".into(), view, "--bundle-written".into(), written],
        60,
    )?;
    notes.push(format!(
        "exit: no live watch (the project's code-steering files the session makes are moved only when the container stops, not at once); csbox records the container's start (a createRuntime hook) and, once it has stopped, moves what the session made among the project's hook and config files out of it, nested repositories included, as `csbox run` does at exit (a poststop hook running {}); a runtime shows a hook's messages only when it fails, so it exits 3 when it moved something (runc then logs an \"error running hook\" with what; the container's exit status stays), and `csbox show {}` lists it",
        h.exe.display(),
        &plan.session.id[..plan.session.id.len().min(8)]
    ));
    oci(HooksBuilder::default()
        .create_runtime(vec![start])
        .poststop(vec![stop])
        .build())
}

/// Namespaces, id mappings, masked paths and seccomp. Returns the section and the ids the
/// process runs as.
fn linux(
    plan: &Plan,
    target: &Target,
    masked: Vec<String>,
    notes: &mut Vec<String>,
) -> Result<(oci_spec::runtime::Linux, u32, u32)> {
    // A root-run runtime needs no user namespace to run the command with the user's ids
    // and no capability; a rootless one needs it to exist at all.
    let mut kinds: Vec<NsKind> = plan
        .namespaces
        .kinds()
        .into_iter()
        .filter(|k| *k != NsKind::User)
        .collect();
    if target.rootless.is_some() {
        kinds.insert(0, NsKind::User);
    }
    let mut namespaces = Vec::new();
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
        .readonly_paths(
            mounts::READ_ONLY
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .seccomp(seccomp::translate(&plan.seccomp, notes)?);
    if plan.network.proxy_port.is_some() {
        notes.push(format!(
            "network: natively the sandbox reaches {} allowed host(s) through csbox's proxy (a relay in pid 1, the proxy in csbox); the bundle has its own network namespace with only lo, so nothing inside reaches the network (its HTTPS_PROXY points at nothing)",
            plan.network.allow.len()
        ));
    }
    if let Some(ll) = &plan.landlock {
        notes.push(format!(
            "landlock: the OCI runtime spec has no Landlock; natively the command also gets {}{}",
            if ll.writable.is_some() {
                "Landlock rules allowing writes only beneath the writable mounts"
            } else {
                ""
            },
            match (ll.writable.is_some(), ll.scope_ipc) {
                (true, true) => ", and the abstract-socket and signal scopes",
                (false, true) => "the Landlock abstract-socket and signal scopes",
                _ => "",
            }
        ));
    }
    if let Some(l) = plan.inotify_limits {
        notes.push(format!(
            "inotify: natively a session may hold {} instances and {} watches (a part of the user's); a runtime may not set those sysctls, so a bundle's process can take all of the user's",
            l.instances, l.watches
        ));
    }
    if let Some(n) = plan.max_user_namespaces {
        notes.push(format!(
            "nested user namespaces: natively user.max_user_namespaces is {n} inside; a runtime may not set that sysctl, so only the plan's seccomp rules refuse them here"
        ));
    }
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
    Ok((linux, uid, gid))
}

/// The process: argv, env, cwd, ids, the plan's capabilities, no_new_privs, rlimits.
fn process(plan: &Plan, uid: u32, gid: u32, notes: &mut Vec<String>) -> Result<Process> {
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
    let kept: oci_spec::runtime::Capabilities = plan
        .capabilities
        .iter()
        .map(|c| {
            c.parse()
                .map_err(|_| Error::Usage(format!("capability {c:?} has no OCI name")))
        })
        .collect::<Result<_>>()?;
    let caps = oci(oci_spec::runtime::LinuxCapabilitiesBuilder::default()
        .bounding(kept.clone())
        .effective(kept.clone())
        .inheritable(kept.clone())
        .permitted(kept.clone())
        .ambient(kept)
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
        .capabilities::<LinuxCapabilities>(caps)
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
    Ok(process)
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
