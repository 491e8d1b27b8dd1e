//! The plan as data: each step's operations, their order and flags, the environment, the
//! seccomp rules, and the checks on the working directory.

use std::path::Path;

use super::*;
use crate::paths::{EnvInput, Paths};
use crate::profile::{Access, Profile};

fn paths() -> Paths {
    Paths::resolve(&EnvInput {
        home: Some("/home/u".into()),
        cwd: "/".into(),
        ..Default::default()
    })
    .unwrap()
}

/// Facts for a home where the user has every shared entry.
fn facts(p: &Paths) -> Facts {
    let mut f = Facts::default();
    let mut add = |path: std::path::PathBuf, kind| {
        f.insert(
            path.clone(),
            PathFact {
                real: path,
                kind: Some(kind),
            },
        )
    };
    add(p.home.clone(), NodeKind::Dir);
    add(p.home.join("proj"), NodeKind::Dir);
    for name in SHARED_READ_ONLY {
        let kind = if name.contains('.') {
            NodeKind::File
        } else {
            NodeKind::Dir
        };
        add(p.claude_root.join(name), kind);
    }
    f
}

fn plan(mode: StateMode, cwd: &str) -> Plan {
    plan_with("default", mode, cwd).unwrap()
}

fn plan_with(profile: &str, mode: StateMode, cwd: &str) -> Result<Plan, Error> {
    let prof = crate::profile::load(profile, Path::new("/nonexistent")).unwrap();
    plan_for(&prof, mode, cwd, &Overrides::default())
}

fn plan_for(prof: &Profile, mode: StateMode, cwd: &str, ov: &Overrides) -> Result<Plan, Error> {
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
        overrides: ov,
        exe: "/usr/bin/claude".into(),
        facts: &facts(&p),
        tty: None,
        remove_on_exit: false,
    })
}

fn pos(plan: &Plan, f: impl Fn(&MountOp) -> bool) -> usize {
    plan.mounts.iter().position(f).expect("op present")
}

#[test]
fn a_read_only_project_is_bound_read_only_also_with_the_home_visible() {
    let mut prof = crate::profile::load("default", Path::new("/nonexistent")).unwrap();
    prof.project = Access::Ro;
    let build_in = |cwd: &str| plan_for(&prof, StateMode::Overlay, cwd, &Overrides::default());
    let plan = build_in("/home/u/proj").unwrap();
    let proj = pos(
        &plan,
        |m| matches!(m, MountOp::Bind { dst, flags, .. } if dst == Path::new("/home/u/proj") && flags.read_only),
    );
    let view = pos(&plan, |m| matches!(m, MountOp::Overlay { .. }));
    assert!(proj > view, "bound after the ~/.claude view");
    assert_eq!(
        plan.view.project,
        Some(ProjectView {
            path: "/home/u/proj".into(),
            read_only: true
        })
    );
    for cwd in [
        "/home/u",
        "/",
        "/home",
        "/home/u/.claude/skills",
        "/home/u/.local",
        "/home/u/.local/share/csbox/sessions/x",
    ] {
        let e = build_in(cwd).unwrap_err();
        assert!(e.to_string().contains("cd into a project"), "{cwd}: {e}");
    }
    // /tmp itself stays the private tmpfs (the host's sockets live there).
    let plan = build_in("/tmp").unwrap();
    assert!(!plan
        .mounts
        .iter()
        .any(|m| matches!(m, MountOp::Bind { dst, .. } if dst == Path::new("/tmp"))));
    // A hidden home does not reveal the session store through the project bind.
    let strict = crate::profile::load("strict", Path::new("/nonexistent")).unwrap();
    let e = plan_for(
        &strict,
        StateMode::Overlay,
        "/home/u/.local",
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("the session store"), "{e}");
}

#[test]
fn overlay_puts_the_session_layer_over_the_real_config() {
    let p = plan(StateMode::Overlay, "/home/u/proj");
    let MountOp::Overlay {
        dst,
        lower,
        upper,
        work,
        flags,
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
    assert_eq!(*flags, MountFlags::NOSUID_NODEV);
    assert_eq!(p.mounts[0], MountOp::MakeSlave { path: "/".into() });
}

#[test]
fn shared_config_is_bound_read_only_after_the_overlay() {
    let p = plan(StateMode::Overlay, "/home/u");
    let overlay = pos(&p, |m| matches!(m, MountOp::Overlay { .. }));
    for name in SHARED_READ_ONLY {
        let i = pos(
            &p,
            |m| matches!(m, MountOp::Bind { dst, flags, .. } if dst.ends_with(name) && flags.read_only),
        );
        assert!(i > overlay, "{name} must be bound over the overlay");
    }
    let creds = pos(
        &p,
        |m| matches!(m, MountOp::Bind { dst, flags, .. } if dst.ends_with(".credentials.json") && !flags.read_only),
    );
    assert!(creds > overlay);
}

#[test]
fn a_shared_entry_the_user_does_not_have_is_left_out() {
    let p = paths();
    let prof = crate::profile::load("default", Path::new("/nonexistent")).unwrap();
    let dir = p.sessions_dir.join("0193");
    let plan = build(&PlanInput {
        paths: &p,
        session_id: "0193",
        session_dir: &dir,
        argv: vec!["true".into()],
        cwd: "/home/u".into(),
        host_env: vec![],
        uid: 1,
        gid: 1,
        state_mode: StateMode::Overlay,
        profile: &prof,
        overrides: &Overrides::default(),
        exe: "/bin/true".into(),
        facts: &Facts::default(),
        tty: None,
        remove_on_exit: false,
    })
    .unwrap();
    assert!(!plan
        .mounts
        .iter()
        .any(|m| matches!(m, MountOp::Bind { dst, .. } if dst.ends_with("skills"))));
    // The login file is csbox's own to create: always bound.
    assert!(plan
        .mounts
        .iter()
        .any(|m| matches!(m, MountOp::Bind { dst, .. } if dst.ends_with(".credentials.json"))));
}

#[test]
fn store_is_hidden_and_sessions_dir_is_private() {
    let p = plan(StateMode::Overlay, "/home/u");
    assert!(p.mounts.contains(&MountOp::Hide {
        dst: "/home/u/.local/share/csbox/sessions".into(),
        kind: NodeKind::Dir,
    }));
    assert!(p
        .mounts
        .iter()
        .any(|m| matches!(m, MountOp::Bind { src, dst, .. }
        if src.ends_with("0193/state/sessions") && dst == Path::new("/home/u/.claude/sessions"))));
}

#[test]
fn dev_and_proc_come_last_and_tmp_is_private() {
    let p = plan(StateMode::Overlay, "/home/u");
    let n = p.mounts.len();
    assert!(
        matches!(&p.mounts[n - 2], MountOp::Dev { nodes, .. } if nodes.len() == DEV_NODES.len())
    );
    assert!(
        matches!(&p.mounts[n - 1], MountOp::Proc { dst, flags } if dst == Path::new("/proc") && flags.noexec && !flags.read_only)
    );
    assert!(p.mounts.contains(&MountOp::Tmpfs {
        dst: "/tmp".into(),
        mode: 0o1777,
        size: None,
        flags: MountFlags::NOSUID_NODEV,
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
        |m| matches!(m, MountOp::Bind { dst, create_dst: Some(NodeKind::Dir), .. } if dst == Path::new("/tmp/proj")),
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
    let ioctls: Vec<u32> = p
        .seccomp
        .rules
        .iter()
        .filter(|r| r.names == ["ioctl"])
        .map(|r| r.arg.unwrap().value)
        .collect();
    assert_eq!(ioctls, vec![TIOCSTI as u32, TIOCLINUX as u32]);
    assert!(p.namespaces.user && p.namespaces.mount && p.namespaces.pid && !p.namespaces.net);
    assert_eq!((p.uid, p.gid), (1000, 1000));
    assert_eq!(p.max_user_namespaces, None, "default keeps nested bwrap");
}

#[test]
fn strict_refuses_nested_user_namespaces_by_limit_and_by_seccomp() {
    let p = plan_with("strict", StateMode::Overlay, "/home/u/proj").unwrap();
    assert_eq!(p.max_user_namespaces, Some(0));
    let rule = |name: &str| p.seccomp.rules.iter().find(|r| r.names == [name]).cloned();
    let unshare = rule("unshare").expect("an unshare rule");
    assert_eq!(unshare.arg.unwrap().mask, libc::CLONE_NEWUSER as u32);
    assert_eq!(rule("clone3").unwrap().errno, libc::ENOSYS);
    assert!(p.seccomp.deny_compat_abis);
    assert!(p.view.home_hidden);
}

#[test]
fn fresh_mode_binds_the_state_dir_and_creates_mount_points() {
    let p = plan(StateMode::Fresh, "/home/u");
    assert!(matches!(&p.mounts[1], MountOp::Bind { src, dst, flags, .. }
        if src.ends_with("0193/state") && dst == Path::new("/home/u/.claude") && !flags.read_only));
    assert!(p
        .mounts
        .iter()
        .all(|m| !matches!(m, MountOp::Overlay { .. })));
    assert!(p.mounts.iter().any(|m| matches!(m, MountOp::Bind { dst, create_dst: Some(NodeKind::Dir), .. } if dst.ends_with(".claude/skills"))));
}

#[test]
fn flag_binds_name_the_flag_when_a_path_is_missing() {
    let prof = crate::profile::load("default", Path::new("/nonexistent")).unwrap();
    let ov = Overrides {
        bind: vec!["/nowhere/src".into()],
        ..Default::default()
    };
    let e = plan_for(&prof, StateMode::Overlay, "/home/u", &ov).unwrap_err();
    assert!(
        matches!(&e, Error::MissingSource { origin, .. } if origin == "--bind"),
        "{e}"
    );
    let ov = Overrides {
        ro_bind: vec!["/home/u/proj:/home/u/nowhere".into()],
        ..Default::default()
    };
    let e = plan_for(&prof, StateMode::Overlay, "/home/u", &ov).unwrap_err();
    assert!(
        e.to_string().contains("does not exist: create it first"),
        "{e}"
    );
    let ov = Overrides {
        hide: vec!["~root/x".into()],
        ..Default::default()
    };
    let e = plan_for(&prof, StateMode::Overlay, "/home/u", &ov).unwrap_err();
    assert!(e.to_string().starts_with("--hide \"~root/x\""), "{e}");
}

#[test]
fn compat_has_no_mounts_but_its_links() {
    let p = plan_with("compat", StateMode::Fresh, "/home/u").unwrap();
    assert!(p.mounts.is_empty() && !p.sandboxed() && !p.no_new_privs);
    let creds = p
        .compat_links
        .iter()
        .find(|l| l.name == ".credentials.json")
        .unwrap();
    assert!(creds.copy_back && creds.link.ends_with("0193/state/.credentials.json"));
    assert!(p
        .compat_links
        .iter()
        .any(|l| l.name == "skills" && !l.copy_back));
}

#[test]
fn plan_round_trips_through_json() {
    let p = plan(StateMode::Overlay, "/tmp/x");
    let back: Plan = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(back, p);
}
