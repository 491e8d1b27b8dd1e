//! The plan: everything a sandbox is, as plain data, built by pure code from the session,
//! the paths and the command. The native launcher applies it (`sandbox/`), `csbox run
//! --dry-run` prints it, and `csbox spec` will export it: one source of truth.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::paths::Paths;
use crate::profile::expand::{expand, split_bind};
use crate::profile::{Access, EnvPolicyKind, Home, Isolation, Network, Profile, SeccompLevel};

pub const PLAN_VERSION: u32 = 1;

/// `~/.claude` entries that hold configuration every session runs (hooks live in
/// settings.json): shared, but read-only inside.
pub const SHARED_READ_ONLY: &[&str] = &[
    "skills",
    "agents",
    "commands",
    "plugins",
    "output-styles",
    "settings.json",
    "CLAUDE.md",
];

/// ioctls that push input into a terminal (CVE-2017-5226) or drive the console.
pub const TIOCSTI: u64 = 0x5412;
pub const TIOCLINUX: u64 = 0x541C;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub version: u32,
    /// The profile this plan was built from.
    pub profile: String,
    /// `none`: no sandbox at all (the compat profile).
    pub isolation: Isolation,
    pub session: PlanSession,
    pub namespaces: Namespaces,
    /// Map the user to their own uid/gid inside (not root: Claude Code refuses
    /// --dangerously-skip-permissions as uid 0).
    pub uid: u32,
    pub gid: u32,
    pub state_mode: StateMode,
    pub mounts: Vec<MountOp>,
    /// The resolved executable (argv[0] looked up on PATH outside).
    pub exe: PathBuf,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Capabilities kept inside: none.
    pub capabilities: Vec<String>,
    pub no_new_privs: bool,
    pub seccomp: Seccomp,
    /// Kill everything inside when the supervisor dies.
    pub die_with_parent: bool,
    /// Whether processes inside may create user namespaces of their own (Claude Code's
    /// /sandbox runs bubblewrap, which needs them).
    pub nested_userns: bool,
    /// Resource limits set on the command (name, value), soft and hard.
    pub rlimits: Vec<(String, u64)>,
    /// Wall-clock limit: SIGTERM, then SIGKILL 10 s later.
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSession {
    pub id: String,
    pub dir: PathBuf,
    pub state_dir: PathBuf,
    pub work_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespaces {
    pub user: bool,
    pub mount: bool,
    pub pid: bool,
    pub ipc: bool,
    pub uts: bool,
    pub net: bool,
}

/// One kind of namespace; `Namespaces::kinds` lists those a plan unshares, for the
/// launcher (clone flags), its error messages and the OCI export alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsKind {
    User,
    Mount,
    Pid,
    Ipc,
    Uts,
    Net,
}

impl NsKind {
    pub fn clone_flag(self) -> libc::c_int {
        match self {
            NsKind::User => libc::CLONE_NEWUSER,
            NsKind::Mount => libc::CLONE_NEWNS,
            NsKind::Pid => libc::CLONE_NEWPID,
            NsKind::Ipc => libc::CLONE_NEWIPC,
            NsKind::Uts => libc::CLONE_NEWUTS,
            NsKind::Net => libc::CLONE_NEWNET,
        }
    }

    pub fn clone_flag_name(self) -> &'static str {
        match self {
            NsKind::User => "CLONE_NEWUSER",
            NsKind::Mount => "CLONE_NEWNS",
            NsKind::Pid => "CLONE_NEWPID",
            NsKind::Ipc => "CLONE_NEWIPC",
            NsKind::Uts => "CLONE_NEWUTS",
            NsKind::Net => "CLONE_NEWNET",
        }
    }
}

impl Namespaces {
    pub fn kinds(&self) -> Vec<NsKind> {
        [
            (self.user, NsKind::User),
            (self.mount, NsKind::Mount),
            (self.pid, NsKind::Pid),
            (self.ipc, NsKind::Ipc),
            (self.uts, NsKind::Uts),
            (self.net, NsKind::Net),
        ]
        .into_iter()
        .filter_map(|(on, k)| on.then_some(k))
        .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateMode {
    /// `~/.claude` is an overlay: the real one below, the session's layer on top.
    Overlay,
    /// The old launcher's behaviour: the session's own dir, settings copied in.
    Fresh,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum MountOp {
    /// Make every mount a slave of the host's, so nothing we mount propagates out.
    MakeSlave { path: PathBuf },
    Overlay {
        dst: PathBuf,
        lower: PathBuf,
        upper: PathBuf,
        work: PathBuf,
    },
    /// Bind `src` (resolved before any mount is made) onto `dst`.
    Bind {
        src: PathBuf,
        dst: PathBuf,
        read_only: bool,
        /// Skip quietly when `src` does not exist.
        optional: bool,
        /// Create the mount point (a dir or an empty file, like `src`) when missing.
        create_dst: bool,
    },
    Tmpfs {
        dst: PathBuf,
        mode: u32,
        read_only: bool,
    },
    /// Cover a directory with an empty read-only tmpfs, or a file with /dev/null (skipped
    /// when it does not exist or already lies under a tmpfs of this plan).
    Hide { dst: PathBuf },
    /// A mount point inside a tmpfs of this plan.
    Mkdir { path: PathBuf },
    /// Bring the loopback interface of a new network namespace up.
    LoopbackUp,
    /// A fresh read-only sysfs, so /sys/class/net shows the new network namespace.
    Sysfs { dst: PathBuf },
    /// A minimal /dev: null zero full random urandom tty, a private devpts, shm.
    Dev { dst: PathBuf },
    /// A fresh /proc for the new pid namespace.
    Proc { dst: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seccomp {
    /// ioctl requests refused with EPERM; compared on the low 32 bits only, as the tty
    /// layer does (CVE-2019-10063).
    pub deny_ioctls: Vec<u64>,
    /// System calls refused with EPERM, by name.
    pub deny_syscalls: Vec<String>,
    /// Refuse every call through a 32-bit entry point (i386, x32, arm32).
    pub deny_compat_abis: bool,
}

/// What the plan is built from. Everything here is data; nothing is read from the system.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    pub paths: &'a Paths,
    pub session_id: &'a str,
    pub session_dir: &'a Path,
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    pub host_env: Vec<(String, String)>,
    pub uid: u32,
    pub gid: u32,
    pub state_mode: StateMode,
    pub profile: &'a Profile,
    pub exe: PathBuf,
}

/// Calls strict seccomp refuses: kernel keyrings, bpf, perf, userfaultfd, modules, kexec,
/// swap, reboot, accounting, handle-based opens.
pub const STRICT_DENY: &[&str] = &[
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "acct",
    "swapon",
    "swapoff",
    "reboot",
    "open_by_handle_at",
];

pub fn build(input: &PlanInput) -> Result<Plan, String> {
    let p = input.paths;
    let prof = input.profile;
    let root = &p.claude_root;
    let state = input.session_dir.join(crate::session::store::STATE_DIR);
    let work = input.session_dir.join(crate::session::store::WORK_DIR);
    let cwd = &input.cwd;
    let hidden_home = prof.home == Home::Hidden;
    if hidden_home && (cwd == &p.home || !cwd.starts_with("/")) {
        return Err(format!(
            "profile {:?} hides your home directory except the project dir, and the working directory is {} itself: cd into a project first",
            prof.name,
            p.home.display()
        ));
    }
    // Step 7 binds the working directory back over what steps 1-6 built: under /tmp (the
    // host's, over the private tmpfs), under a hidden home, or anywhere for a read-only
    // project. /tmp itself is never bound: the host's sockets there (tmux, ssh-agent, X11)
    // would be reachable even read-only.
    let project_ro = prof.project == Access::Ro;
    let bind_cwd = cwd != Path::new("/tmp")
        && (cwd.starts_with("/tmp") || (hidden_home && cwd.starts_with(&p.home)) || project_ro);
    if bind_cwd {
        // Such a bind must not cover the ~/.claude view or the home's tmpfs (nor reveal
        // the session store): refuse a working directory that holds one of them or lies
        // inside ~/.claude or the store. Compared as the kernel resolves them (getcwd is
        // canonical; HOME may go through a symlink).
        let canon = crate::paths::canonical_or_self;
        // (what, its dir, whether a working directory inside it is refused too)
        for (what, dir, not_inside) in [
            ("your home", canon(&p.home), false),
            ("~/.claude", canon(root), true),
            ("the session store", canon(&p.sessions_dir), true),
        ] {
            let holds = dir.starts_with(cwd);
            if holds || (not_inside && cwd.starts_with(&dir)) {
                return Err(format!(
                    "profile {:?} binds the working directory {} into the sandbox{}, and it {} {what} ({}): cd into a project first",
                    prof.name,
                    cwd.display(),
                    if project_ro { " read-only" } else { "" },
                    if holds { "holds" } else { "lies inside" },
                    dir.display()
                ));
            }
        }
    }
    let mut tmpfs_roots: Vec<PathBuf> = Vec::new();
    let in_tmpfs = |roots: &Vec<PathBuf>, d: &Path| roots.iter().any(|r| d.starts_with(r));
    let mut mounts = vec![MountOp::MakeSlave { path: "/".into() }];

    // 1. Under the strict profiles, an empty home: only what is bound back below is there.
    if hidden_home {
        mounts.push(MountOp::Tmpfs {
            dst: p.home.clone(),
            mode: 0o700,
            read_only: false,
        });
        tmpfs_roots.push(p.home.clone());
        if root.starts_with(&p.home) {
            mounts.push(MountOp::Mkdir { path: root.clone() });
        }
    }
    let make = |roots: &Vec<PathBuf>, d: &Path| {
        in_tmpfs(roots, d) || input.state_mode == StateMode::Fresh && d.starts_with(root)
    };
    // 2. ~/.claude: the session's layer over the real config (or, without overlayfs, the
    //    session's own dir in its place).
    mounts.push(match input.state_mode {
        StateMode::Overlay => MountOp::Overlay {
            dst: root.clone(),
            lower: root.clone(),
            upper: state.clone(),
            work,
        },
        StateMode::Fresh => bind(&state, root, false, false, false),
    });
    // 3. Shared configuration, read-only; shared writable entries (the login). Sources are
    //    the real entries, opened before the overlay hides them. Claude Code writes
    //    .credentials.json by tmp+rename and falls back to writing in place on EBUSY.
    for name in &prof.claude.read_only {
        let e = root.join(name);
        mounts.push(bind(&e, &e, true, true, make(&tmpfs_roots, &e)));
    }
    for name in &prof.claude.read_write {
        let e = root.join(name);
        let required = name == ".credentials.json";
        mounts.push(bind(
            &e,
            &e,
            false,
            !required,
            make(&tmpfs_roots, &e) || required,
        ));
    }
    // 4. Claude Code keeps sessions/<pid>.json in its config dir: that must be this
    //    session's own, whatever the lower layer has there (the old store, or a link to ours).
    mounts.push(bind(
        &state.join("sessions"),
        &root.join("sessions"),
        false,
        false,
        false,
    ));
    // 5. Tools that hard-code ~/.claude.json see the session's copy.
    mounts.push(bind(
        &state.join(".claude.json"),
        &p.claude_json,
        false,
        true,
        make(&tmpfs_roots, &p.claude_json),
    ));
    // 6. A private /tmp; keep the working directory if it lives there.
    mounts.push(MountOp::Tmpfs {
        dst: "/tmp".into(),
        mode: 0o1777,
        read_only: false,
    });
    tmpfs_roots.push("/tmp".into());
    // 7. The project (and, under a hidden home, the command itself) stay visible; a
    //    read-only project is bound read-only wherever it is.
    if bind_cwd {
        mounts.push(bind(cwd, cwd, project_ro, false, true));
    }
    let exe_real = crate::paths::canonical_or_self(&input.exe);
    if hidden_home && exe_real.starts_with(&p.home) {
        mounts.push(bind(&exe_real, &exe_real, true, false, true));
    }
    // 8. The profile's and the command line's own binds, tmpfs and hidden paths.
    let ex = |s: &str| expand(s, &p.home, cwd);
    for (specs, ro) in [(&prof.bind, false), (&prof.ro_bind, true)] {
        for spec in specs {
            let (src, dst) = split_bind(spec)?;
            let src = ex(&src)?;
            let dst = match dst {
                Some(d) => ex(&d)?,
                None => src.clone(),
            };
            let create = in_tmpfs(&tmpfs_roots, &dst);
            mounts.push(bind(&src, &dst, ro, false, create));
        }
    }
    for t in &prof.tmpfs {
        let dst = ex(t)?;
        if in_tmpfs(&tmpfs_roots, &dst) {
            mounts.push(MountOp::Mkdir { path: dst.clone() });
        }
        mounts.push(MountOp::Tmpfs {
            dst: dst.clone(),
            mode: 0o755,
            read_only: false,
        });
        tmpfs_roots.push(dst);
    }
    // 9. Other sessions are invisible; so is whatever the profile hides.
    mounts.push(MountOp::Hide {
        dst: p.sessions_dir.clone(),
    });
    for h in &prof.hide {
        mounts.push(MountOp::Hide { dst: ex(h)? });
    }
    if prof.network == Network::None {
        mounts.push(MountOp::LoopbackUp);
        mounts.push(MountOp::Sysfs { dst: "/sys".into() });
    }
    // 10. /dev and /proc last: /proc/self/fd is how earlier binds reach their sources.
    mounts.push(MountOp::Dev { dst: "/dev".into() });
    mounts.push(MountOp::Proc {
        dst: "/proc".into(),
    });

    let mut env: Vec<(String, String)> = input
        .host_env
        .iter()
        .filter(|(k, _)| !OVERRIDDEN_ENV.contains(&k.as_str()))
        .filter(|(k, _)| {
            prof.env.policy == EnvPolicyKind::Pass
                || prof.env.allow.contains(k)
                || prof.env.set.contains_key(k)
        })
        .filter(|(k, _)| !prof.env.set.contains_key(k))
        .cloned()
        .collect();
    env.extend(prof.env.set.iter().map(|(k, v)| (k.clone(), v.clone())));
    let config_dir = if prof.isolation == Isolation::None {
        state.clone()
    } else {
        root.clone()
    };
    env.extend([
        (
            "CLAUDE_CONFIG_DIR".to_string(),
            config_dir.display().to_string(),
        ),
        // Only `csbox update`, outside every sandbox, updates Claude Code.
        ("DISABLE_AUTOUPDATER".to_string(), "1".to_string()),
        ("CSBOX_SESSION_ID".to_string(), input.session_id.to_string()),
    ]);
    if prof.isolation == Isolation::Namespaces {
        env.push(("CLAUDE_CODE_TMPDIR".to_string(), "/tmp".to_string()));
    }

    let sandboxed = prof.isolation == Isolation::Namespaces;
    Ok(Plan {
        version: PLAN_VERSION,
        profile: prof.name.clone(),
        isolation: prof.isolation,
        session: PlanSession {
            id: input.session_id.to_string(),
            dir: input.session_dir.to_path_buf(),
            state_dir: state,
            work_dir: input.session_dir.join(crate::session::store::WORK_DIR),
        },
        namespaces: Namespaces {
            user: sandboxed,
            mount: sandboxed,
            pid: sandboxed,
            ipc: sandboxed,
            uts: sandboxed,
            net: sandboxed && prof.network == Network::None,
        },
        uid: input.uid,
        gid: input.gid,
        state_mode: input.state_mode,
        mounts: if sandboxed { mounts } else { Vec::new() },
        exe: input.exe.clone(),
        argv: input.argv.clone(),
        env,
        cwd: input.cwd.clone(),
        capabilities: Vec::new(),
        no_new_privs: sandboxed,
        seccomp: Seccomp {
            deny_ioctls: if sandboxed {
                vec![TIOCSTI, TIOCLINUX]
            } else {
                vec![]
            },
            deny_syscalls: if sandboxed && prof.seccomp == SeccompLevel::Strict {
                STRICT_DENY.iter().map(|s| s.to_string()).collect()
            } else {
                vec![]
            },
            deny_compat_abis: sandboxed && prof.seccomp == SeccompLevel::Strict,
        },
        die_with_parent: true,
        nested_userns: prof.nested_userns,
        rlimits: prof.rlimits.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        timeout_secs: prof.timeout_secs,
    })
}

const OVERRIDDEN_ENV: &[&str] = &[
    "CLAUDE_CONFIG_DIR",
    "DISABLE_AUTOUPDATER",
    "CLAUDE_CODE_TMPDIR",
    "CSBOX_SESSION_ID",
];

fn bind(src: &Path, dst: &Path, read_only: bool, optional: bool, create_dst: bool) -> MountOp {
    MountOp::Bind {
        src: src.to_path_buf(),
        dst: dst.to_path_buf(),
        read_only,
        optional,
        create_dst,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::EnvInput;

    fn paths() -> Paths {
        Paths::resolve(&EnvInput {
            home: Some("/home/u".into()),
            cwd: "/".into(),
            ..Default::default()
        })
        .unwrap()
    }

    fn plan(mode: StateMode, cwd: &str) -> Plan {
        plan_with("default", mode, cwd).unwrap()
    }

    fn plan_with(profile: &str, mode: StateMode, cwd: &str) -> Result<Plan, String> {
        let prof = crate::profile::load(profile, Path::new("/nonexistent")).unwrap();
        plan_for(&prof, mode, cwd)
    }

    fn plan_for(prof: &Profile, mode: StateMode, cwd: &str) -> Result<Plan, String> {
        let p = paths();
        let dir = p.sessions_dir.join("0193");
        build(&PlanInput {
            paths: &p,
            session_id: "0193",
            session_dir: &dir,
            argv: vec!["claude".into()],
            cwd: cwd.into(),
            host_env: vec![
                ("PATH".into(), "/usr/bin".into()),
                ("CLAUDE_CONFIG_DIR".into(), "/elsewhere".into()),
            ],
            uid: 1000,
            gid: 1000,
            state_mode: mode,
            profile: prof,
            exe: "/usr/bin/claude".into(),
        })
    }

    #[test]
    fn a_read_only_project_is_bound_read_only_also_with_the_home_visible() {
        let mut prof = crate::profile::load("default", Path::new("/nonexistent")).unwrap();
        prof.project = Access::Ro;
        let build_in = |cwd: &str| plan_for(&prof, StateMode::Overlay, cwd);
        let plan = build_in("/home/u/proj").unwrap();
        let proj = pos(
            &plan,
            |m| matches!(m, MountOp::Bind { dst, read_only: true, .. } if dst == Path::new("/home/u/proj")),
        );
        let view = pos(&plan, |m| matches!(m, MountOp::Overlay { .. }));
        assert!(proj > view, "bound after the ~/.claude view");
        for cwd in [
            "/home/u",
            "/",
            "/home",
            "/home/u/.claude/skills",
            "/home/u/.local",
            "/home/u/.local/share/csbox/sessions/x",
        ] {
            let e = build_in(cwd).unwrap_err();
            assert!(e.contains("cd into a project"), "{cwd}: {e}");
        }
        // /tmp itself stays the private tmpfs (the host's sockets live there).
        let plan = build_in("/tmp").unwrap();
        assert!(!plan
            .mounts
            .iter()
            .any(|m| matches!(m, MountOp::Bind { dst, .. } if dst == Path::new("/tmp"))));
        // A hidden home does not reveal the session store through the project bind.
        let strict = crate::profile::load("strict", Path::new("/nonexistent")).unwrap();
        let e = plan_for(&strict, StateMode::Overlay, "/home/u/.local").unwrap_err();
        assert!(e.contains("the session store"), "{e}");
    }

    fn pos(plan: &Plan, f: impl Fn(&MountOp) -> bool) -> usize {
        plan.mounts.iter().position(f).expect("op present")
    }

    #[test]
    fn overlay_puts_the_session_layer_over_the_real_config() {
        let p = plan(StateMode::Overlay, "/home/u/proj");
        let MountOp::Overlay {
            dst,
            lower,
            upper,
            work,
        } = &p.mounts[1]
        else {
            panic!("{:?}", p.mounts[1])
        };
        assert_eq!(dst, Path::new("/home/u/.claude"));
        assert_eq!(lower, dst);
        assert_eq!(
            upper,
            Path::new("/home/u/.local/share/csbox/sessions/0193/state")
        );
        assert_eq!(
            work,
            Path::new("/home/u/.local/share/csbox/sessions/0193/work")
        );
        assert_eq!(p.mounts[0], MountOp::MakeSlave { path: "/".into() });
    }

    #[test]
    fn shared_config_is_bound_read_only_after_the_overlay() {
        let p = plan(StateMode::Overlay, "/home/u");
        let overlay = pos(&p, |m| matches!(m, MountOp::Overlay { .. }));
        for name in SHARED_READ_ONLY {
            let i = pos(
                &p,
                |m| matches!(m, MountOp::Bind { dst, read_only: true, .. } if dst.ends_with(name)),
            );
            assert!(i > overlay, "{name} must be bound over the overlay");
        }
        let creds = pos(
            &p,
            |m| matches!(m, MountOp::Bind { dst, read_only: false, .. } if dst.ends_with(".credentials.json")),
        );
        assert!(creds > overlay);
    }

    #[test]
    fn store_is_hidden_and_sessions_dir_is_private() {
        let p = plan(StateMode::Overlay, "/home/u");
        assert!(p.mounts.contains(&MountOp::Hide {
            dst: "/home/u/.local/share/csbox/sessions".into()
        }));
        assert!(p.mounts.iter().any(|m| matches!(m, MountOp::Bind { src, dst, .. }
            if src.ends_with("0193/state/sessions") && dst == Path::new("/home/u/.claude/sessions"))));
    }

    #[test]
    fn proc_comes_last_and_tmp_is_private() {
        let p = plan(StateMode::Overlay, "/home/u");
        assert_eq!(
            p.mounts.last(),
            Some(&MountOp::Proc {
                dst: "/proc".into()
            })
        );
        assert!(p.mounts.contains(&MountOp::Tmpfs {
            dst: "/tmp".into(),
            mode: 0o1777,
            read_only: false
        }));
    }

    #[test]
    fn a_working_dir_under_tmp_stays_visible() {
        let p = plan(StateMode::Overlay, "/tmp/proj");
        let tmp = pos(
            &p,
            |m| matches!(m, MountOp::Tmpfs { dst, .. } if dst == Path::new("/tmp")),
        );
        let keep = pos(
            &p,
            |m| matches!(m, MountOp::Bind { dst, create_dst: true, .. } if dst == Path::new("/tmp/proj")),
        );
        assert!(keep > tmp);
    }

    #[test]
    fn env_points_claude_at_the_view_and_disables_its_updater() {
        let p = plan(StateMode::Overlay, "/home/u");
        let get = |k: &str| {
            p.env
                .iter()
                .filter(|(a, _)| a == k)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            get("CLAUDE_CONFIG_DIR"),
            vec!["/home/u/.claude"],
            "host value replaced, not duplicated"
        );
        assert_eq!(get("DISABLE_AUTOUPDATER"), vec!["1"]);
        assert_eq!(get("CSBOX_SESSION_ID"), vec!["0193"]);
        assert_eq!(get("PATH"), vec!["/usr/bin"]);
    }

    #[test]
    fn privileges_are_dropped_and_tiocsti_denied() {
        let p = plan(StateMode::Overlay, "/home/u");
        assert!(p.capabilities.is_empty() && p.no_new_privs && p.die_with_parent);
        assert_eq!(p.seccomp.deny_ioctls, vec![TIOCSTI, TIOCLINUX]);
        assert!(p.namespaces.user && p.namespaces.mount && p.namespaces.pid && !p.namespaces.net);
        assert_eq!((p.uid, p.gid), (1000, 1000));
    }

    #[test]
    fn fresh_mode_binds_the_state_dir_and_creates_mount_points() {
        let p = plan(StateMode::Fresh, "/home/u");
        assert!(
            matches!(&p.mounts[1], MountOp::Bind { src, dst, read_only: false, .. }
            if src.ends_with("0193/state") && dst == Path::new("/home/u/.claude"))
        );
        assert!(p
            .mounts
            .iter()
            .all(|m| !matches!(m, MountOp::Overlay { .. })));
    }

    #[test]
    fn plan_round_trips_through_json() {
        let p = plan(StateMode::Overlay, "/tmp/x");
        let back: Plan = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}
