//! The plan: everything a sandbox is, as plain data, built by pure code from the session,
//! the paths and the command. The native launcher applies it (`sandbox/`), `csbox run
//! --dry-run` prints it, and `csbox spec` will export it: one source of truth.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::paths::Paths;

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
    pub session: PlanSession,
    pub namespaces: Namespaces,
    /// Map the user to their own uid/gid inside (not root: Claude Code refuses
    /// --dangerously-skip-permissions as uid 0).
    pub uid: u32,
    pub gid: u32,
    pub state_mode: StateMode,
    pub mounts: Vec<MountOp>,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Capabilities kept inside: none.
    pub capabilities: Vec<String>,
    pub no_new_privs: bool,
    pub seccomp: Seccomp,
    /// Kill everything inside when the supervisor dies.
    pub die_with_parent: bool,
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
    /// Cover a directory with an empty read-only tmpfs (skipped when it does not exist).
    Hide { dst: PathBuf },
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
}

pub fn build(input: &PlanInput) -> Plan {
    let p = input.paths;
    let root = &p.claude_root;
    let state = input.session_dir.join(crate::session::store::STATE_DIR);
    let work = input.session_dir.join(crate::session::store::WORK_DIR);
    let mut mounts = vec![MountOp::MakeSlave { path: "/".into() }];

    // 1. ~/.claude: the session's layer over the real config (or, without overlayfs, the
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
    // 2. Shared configuration, read-only. Sources are the real entries, resolved before
    //    the overlay hides them.
    for name in SHARED_READ_ONLY {
        mounts.push(bind(
            &root.join(name),
            &root.join(name),
            true,
            true,
            input.state_mode == StateMode::Fresh,
        ));
    }
    // 3. The one shared writable file: log in once, token refreshes persist. Claude Code
    //    writes it by tmp+rename and falls back to writing in place on EBUSY.
    let creds = root.join(".credentials.json");
    mounts.push(bind(&creds, &creds, false, false, true));
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
        false,
    ));
    // 6. A private /tmp; keep the working directory if it lives there.
    mounts.push(MountOp::Tmpfs {
        dst: "/tmp".into(),
        mode: 0o1777,
        read_only: false,
    });
    if input.cwd.starts_with("/tmp") && input.cwd != Path::new("/tmp") {
        mounts.push(bind(&input.cwd, &input.cwd, false, false, true));
    }
    // 7. Other sessions are invisible.
    mounts.push(MountOp::Hide {
        dst: p.sessions_dir.clone(),
    });
    // 8. /dev and /proc last: /proc/self/fd is how earlier binds reach their sources.
    mounts.push(MountOp::Dev { dst: "/dev".into() });
    mounts.push(MountOp::Proc {
        dst: "/proc".into(),
    });

    let mut env: Vec<(String, String)> = input
        .host_env
        .iter()
        .filter(|(k, _)| !OVERRIDDEN_ENV.contains(&k.as_str()))
        .cloned()
        .collect();
    env.extend([
        ("CLAUDE_CONFIG_DIR".to_string(), root.display().to_string()),
        // Only `csbox update`, outside every sandbox, updates Claude Code.
        ("DISABLE_AUTOUPDATER".to_string(), "1".to_string()),
        ("CLAUDE_CODE_TMPDIR".to_string(), "/tmp".to_string()),
        ("CSBOX_SESSION_ID".to_string(), input.session_id.to_string()),
    ]);

    Plan {
        version: PLAN_VERSION,
        session: PlanSession {
            id: input.session_id.to_string(),
            dir: input.session_dir.to_path_buf(),
            state_dir: state,
            work_dir: input.session_dir.join(crate::session::store::WORK_DIR),
        },
        namespaces: Namespaces {
            user: true,
            mount: true,
            pid: true,
            ipc: true,
            uts: true,
            net: false,
        },
        uid: input.uid,
        gid: input.gid,
        state_mode: input.state_mode,
        mounts,
        argv: input.argv.clone(),
        env,
        cwd: input.cwd.clone(),
        capabilities: Vec::new(),
        no_new_privs: true,
        seccomp: Seccomp {
            deny_ioctls: vec![TIOCSTI, TIOCLINUX],
        },
        die_with_parent: true,
    }
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
        })
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
