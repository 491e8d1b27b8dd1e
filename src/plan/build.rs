//! Building a plan: pure code over the profile, the session and the [`Facts`] that
//! `resolve` gathered. Nothing here touches the file system; what a step needs to know
//! about a host path (where it really points, whether it is a directory) is a fact.

use std::path::{Path, PathBuf};

use super::input::{profile_binds, Error, Overrides, PlanInput};
use super::model::*;
use super::mounts::Mounts;
use crate::paths::Paths;
use crate::profile::expand::{lexical, split_bind};
use crate::profile::{Isolation, Network, Profile};
use crate::session::store::{STATE_DIR, WORK_DIR};

const OVERRIDDEN_ENV: &[&str] = &[
    "CLAUDE_CONFIG_DIR",
    "DISABLE_AUTOUPDATER",
    "CLAUDE_CODE_TMPDIR",
    "CSBOX_SESSION_ID",
];

/// Variables that point at host sockets a sandbox cannot reach (and must not be pointed
/// at): not passed in. `SSH_AUTH_SOCK` comes back when the profile passes the agent.
const HOST_SOCKET_ENV: &[&str] = &[
    "DBUS_SESSION_BUS_ADDRESS",
    "SSH_AUTH_SOCK",
    "SSH_AGENT_PID",
    "GPG_AGENT_INFO",
    "DOCKER_HOST",
];

/// Every host path whose fact [`build`] consults, spelled as it spells them: `resolve`
/// looks each one up before building.
pub fn wanted_paths(
    paths: &Paths,
    profile: &Profile,
    overrides: &Overrides,
    cwd: &Path,
    exe: &Path,
    host: &super::facts::HostLayout,
) -> Vec<PathBuf> {
    let mut out = vec![
        paths.home.clone(),
        paths.claude_root.clone(),
        paths.sessions_dir.clone(),
        paths.claude_json.clone(),
        cwd.to_path_buf(),
        exe.to_path_buf(),
        "/var/tmp".into(),
        host.runtime_dir.clone(),
        paths.config_home.join("csbox"),
        paths.config_home.join("systemd/user"),
    ];
    let claude = &profile.claude;
    out.extend(
        claude
            .read_only
            .iter()
            .chain(&claude.read_write)
            .map(|n| paths.claude_root.join(n)),
    );
    // Without a sandbox nothing is mounted, hidden or protected: the plan is the
    // session's links and environment, and looks at nothing more.
    if profile.isolation != Isolation::Namespaces {
        return out;
    }
    out.extend(super::protect::wanted(
        cwd,
        profile,
        host.git.as_ref(),
        &host.top_names,
    ));
    out.extend(
        super::mounts::PROC_MASKED
            .iter()
            .map(|(p, _)| PathBuf::from(p)),
    );
    out.extend(
        super::mounts::CACHES
            .iter()
            .chain(super::hide::CLAUDE_HOME_DATA)
            .map(|c| paths.home.join(c))
            .chain(
                profile
                    .sockets
                    .iter()
                    .filter(|s| s.starts_with('/'))
                    .map(PathBuf::from),
            ),
    );
    let ex = |s: &str| lexical(s, &paths.home, cwd).ok();
    for spec in profile_binds(profile, overrides).map(|(_, spec, _)| spec) {
        if let Ok((src, dst)) = split_bind(spec) {
            out.extend(ex(&src));
            out.extend(dst.as_deref().and_then(ex));
        }
    }
    for t in profile
        .tmpfs
        .iter()
        .chain(&profile.hide)
        .chain(&overrides.hide)
    {
        out.extend(ex(t));
    }
    out
}

pub fn build(input: &PlanInput) -> Result<Plan, Error> {
    let prof = input.profile;
    let sandboxed = prof.isolation == Isolation::Namespaces;
    let (view, mut notes) = super::view::view(input)?;
    if sandboxed && prof.network.mode == Network::Host {
        notes.push(format!(
            "profile {:?} shares the host's network: the session reaches every host, the host's loopback services (databases, dev servers, 169.254.169.254) and its abstract Unix sockets; `network: \"proxy\"` keeps it to an allow list",
            prof.name
        ));
    }
    let mounts = if sandboxed {
        notes.extend(super::masks::notes(input));
        notes.extend(super::allow::notes(input));
        Mounts::new(input).build(&view)?
    } else {
        Vec::new()
    };
    let state = input.session_dir.join(STATE_DIR);
    let landlock = landlock(prof, sandboxed, &mounts);
    Ok(Plan {
        version: PLAN_VERSION,
        profile: prof.name.clone(),
        isolation: prof.isolation,
        session: PlanSession {
            id: input.session_id.to_string(),
            dir: input.session_dir.to_path_buf(),
            state_dir: state.clone(),
            work_dir: input.session_dir.join(WORK_DIR),
        },
        namespaces: Namespaces {
            user: sandboxed,
            mount: sandboxed,
            pid: sandboxed,
            ipc: sandboxed,
            uts: sandboxed,
            net: sandboxed && prof.network.mode != Network::Host,
        },
        uid: input.uid,
        gid: input.gid,
        state_mode: input.state_mode,
        view,
        mounts,
        exe: input.exe.clone(),
        argv: input.argv.clone(),
        env: env(input, &state),
        cwd: input.cwd.clone(),
        capabilities: Vec::new(),
        no_new_privs: sandboxed,
        seccomp: super::seccomp::rules(prof, sandboxed),
        network: super::network::plan(input),
        landlock,
        die_with_parent: true,
        max_user_namespaces: (sandboxed && !prof.nested_userns).then_some(0),
        inotify_limits: input
            .facts
            .host
            .inotify_max
            .filter(|_| sandboxed)
            // An eighth of the instances and a quarter of the watches: several sessions
            // at once still leave the user's editors and csbox's own watch theirs (a
            // process's file watchers share one instance; 16 of the default 128).
            .map(|(i, w)| InotifyLimits {
                instances: (i / 8).max(4).min(i),
                watches: (w / 4).max(1024).min(w),
            }),
        rlimits: prof.rlimits.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        timeout_secs: prof.timeout_secs,
        compat_links: if sandboxed {
            Vec::new()
        } else {
            compat_links(input, &state)
        },
        remove_on_exit: input.remove_on_exit,
        new_session_keyring: sandboxed,
        notes,
    })
}

/// The command's environment: the host's (or the profile's allowlist of it), the
/// profile's own variables, then what csbox sets.
fn env(input: &PlanInput, state: &Path) -> Vec<(String, String)> {
    let prof = input.profile;
    let sandboxed = prof.isolation == Isolation::Namespaces;
    let own_net = sandboxed && prof.network.mode != Network::Host;
    let mut env: Vec<(String, String)> = input
        .host_env
        .iter()
        .filter(|(k, _)| !OVERRIDDEN_ENV.contains(&k.as_str()))
        .filter(|(k, _)| {
            !(sandboxed && HOST_SOCKET_ENV.contains(&k.as_str()))
                || (k == "SSH_AUTH_SOCK" && prof.sockets.iter().any(|s| s == "ssh-agent"))
        })
        .filter(|(k, _)| !(own_net && super::network::PROXY_ENV.contains(&k.as_str())))
        .filter(|(k, v)| prof.env.passes_var(k, v) || prof.env.set.contains_key(k))
        .filter(|(k, _)| !prof.env.set.contains_key(k))
        .cloned()
        .collect();
    env.extend(prof.env.set.iter().map(|(k, v)| (k.clone(), v.clone())));
    let config_dir = if sandboxed {
        input.paths.claude_root.clone()
    } else {
        state.to_path_buf()
    };
    let var = |k: &str, v: String| (k.to_string(), v);
    env.push(var("CLAUDE_CONFIG_DIR", config_dir.display().to_string()));
    // Only `csbox update`, outside every sandbox, updates Claude Code.
    env.push(var("DISABLE_AUTOUPDATER", "1".into()));
    env.push(var("CSBOX_SESSION_ID", input.session_id.to_string()));
    if sandboxed {
        env.push(var("CLAUDE_CODE_TMPDIR", "/tmp".into()));
    }
    if sandboxed && prof.network.mode == Network::Proxy {
        let proxy = super::network::proxy_env(super::network::PROXY_PORT);
        env.retain(|(k, _)| !proxy.iter().any(|(p, _)| p == k));
        env.extend(proxy);
    }
    env
}

/// Landlock for a sandbox: the IPC scopes always; file-system rules mirroring the
/// writable mounts where the profile allows no nested namespaces (Landlock forbids
/// mounting to a restricted process, and bubblewrap inside needs to).
fn landlock(prof: &Profile, sandboxed: bool, mounts: &[MountOp]) -> Option<Landlock> {
    if !sandboxed {
        return None;
    }
    let writable = (!prof.nested_userns).then(|| {
        let mut out: Vec<PathBuf> = Vec::new();
        for m in mounts {
            let dst: &Path = match m {
                MountOp::Bind { dst, flags, .. }
                | MountOp::Overlay { dst, flags, .. }
                | MountOp::Tmpfs { dst, flags, .. }
                    if !flags.read_only =>
                {
                    dst
                }
                MountOp::Dev { dst, .. } | MountOp::Proc { dst, .. } => dst,
                // The root comes with its private /tmp.
                MountOp::HostRoot { .. } => Path::new("/tmp"),
                _ => continue,
            };
            if !out.iter().any(|p| dst.starts_with(p)) {
                out.retain(|p| !p.starts_with(dst));
                out.push(dst.to_path_buf());
            }
        }
        out
    });
    Some(Landlock {
        writable,
        scope_ipc: true,
    })
}

/// Without a sandbox: the profile's shared entries, linked into the session's own
/// config dir while it runs.
fn compat_links(input: &PlanInput, state: &Path) -> Vec<CompatLink> {
    let c = &input.profile.claude;
    c.read_only
        .iter()
        .chain(&c.read_write)
        .map(|name| CompatLink {
            name: name.clone(),
            link: state.join(name),
            target: input.paths.claude_root.join(name),
            copy_back: name == ".credentials.json",
        })
        .collect()
}
