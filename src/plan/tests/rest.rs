//! The rest of the plan: refused destinations, mount points, fresh mode, the
//! environment, privileges, the order of /dev and /proc, compat, the JSON round trip.

use super::*;

#[test]
fn a_bind_over_the_private_tmp_or_a_tmpfs_on_a_file_is_refused() {
    let mut c = Case::new("default", "/home/u/proj");
    c.facts.insert(
        "/tmp".into(),
        PathFact {
            real: "/tmp".into(),
            kind: Some(NodeKind::Dir),
        },
    );
    c.ov.ro_bind = vec!["/tmp".into()];
    let e = c.build().unwrap_err();
    assert!(
        matches!(&e, Error::BadDestination { origin, .. } if origin == "--ro-bind"),
        "{e}"
    );
    assert!(
        e.to_string().contains("/run/host-tmp"),
        "says what to do: {e}"
    );
    c.ov.ro_bind = vec![];
    c.prof.tmpfs = vec!["~/.netrc".into()];
    let e = c.build().unwrap_err();
    assert!(e.to_string().contains("is not a directory"), "{e}");
}

#[test]
fn a_missing_mount_point_is_never_made_in_the_users_file_system() {
    let mut c = Case::new("default", "/home/u/proj");
    c.ov.bind = vec!["/home/u/proj:/home/u/proj/nowhere".into()];
    let e = c.build().unwrap_err();
    assert!(
        e.to_string().contains("does not exist: create it first"),
        "{e}"
    );
    c.ov.bind = vec!["/nowhere/src".into()];
    assert!(
        matches!(c.build().unwrap_err(), Error::MissingSource { origin, .. } if origin == "--bind")
    );
    c.ov.bind = vec![];
    c.ov.hide = vec!["~root/x".into()];
    assert!(c
        .build()
        .unwrap_err()
        .to_string()
        .starts_with("--hide \"~root/x\""));
}

#[test]
fn fresh_mode_binds_the_state_dir_and_makes_mount_points_only_in_it() {
    let mut c = Case::new("default", "/home/u/proj");
    c.mode = StateMode::Fresh;
    let p = c.plan();
    assert!(
        matches!(bind_at(&p, "/home/u/.claude"), Some(MountOp::Bind { src, .. }) if *src == session("state"))
    );
    assert!(!has(
        &p,
        |m| matches!(m, MountOp::Overlay { dst, .. } if dst == Path::new("/home/u/.claude"))
    ));
    assert!(matches!(
        bind_at(&p, "/home/u/.claude/skills"),
        Some(MountOp::Bind {
            create_dst: Some(NodeKind::Dir),
            ..
        })
    ));
}

#[test]
fn env_points_claude_at_the_view_and_disables_its_updater() {
    let p = Case::new("default", "/home/u").plan();
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
        "replaced, not duplicated"
    );
    assert_eq!(get("DISABLE_AUTOUPDATER"), vec!["1"]);
    assert_eq!(get("CSBOX_SESSION_ID"), vec!["0193"]);
    assert_eq!(get("PATH"), vec!["/usr/bin"]);
}

#[test]
fn privileges_are_dropped_and_tiocsti_denied() {
    let p = Case::new("default", "/home/u").plan();
    assert!(p.capabilities.is_empty() && p.no_new_privs && p.die_with_parent);
    let ioctls: Vec<u32> = p
        .seccomp
        .rules
        .iter()
        .filter(|r| r.names == ["ioctl"])
        .map(|r| match r.arg.clone().unwrap() {
            ArgMatch::MaskedEq { value, .. } => value,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        ioctls,
        vec![TIOCSTI as u32, TIOCLINUX as u32, 0x5423, 0x540A, 0x540C]
    );
    assert!(p.namespaces.user && p.namespaces.mount && p.namespaces.pid && p.namespaces.net);
    assert_eq!(p.max_user_namespaces, None, "default keeps nested bwrap");
}

#[test]
fn dev_and_proc_come_last_and_proc_is_masked_as_runtimes_do() {
    let mut c = Case::new("default", "/home/u");
    c.facts.insert(
        "/proc/keys".into(),
        PathFact {
            real: "/proc/keys".into(),
            kind: Some(NodeKind::File),
        },
    );
    let p = c.plan();
    let dev = pos(
        &p,
        |m| matches!(m, MountOp::Dev { nodes, .. } if nodes.len() == DEV_NODES.len()),
    );
    let proc = pos(
        &p,
        |m| matches!(m, MountOp::Proc { flags, .. } if flags.noexec && !flags.read_only),
    );
    assert_eq!(proc, dev + 1);
    let rest = &p.mounts[proc + 1..];
    assert!(rest
        .iter()
        .all(|m| matches!(m, MountOp::Hide { dst, .. } if dst.starts_with("/proc"))));
    assert!(rest.contains(&MountOp::Hide {
        dst: "/proc/keys".into(),
        kind: NodeKind::File
    }));
    assert!(
        !rest
            .iter()
            .any(|m| matches!(m, MountOp::Hide { dst, .. } if dst == Path::new("/proc/acpi"))),
        "only what the host has"
    );
}

#[test]
fn compat_has_no_mounts_but_its_links() {
    let mut c = Case::new("compat", "/home/u");
    c.mode = StateMode::Fresh;
    let p = c.plan();
    assert!(p.mounts.is_empty() && !p.sandboxed() && !p.no_new_privs && !p.new_session_keyring);
    let creds = p
        .compat_links
        .iter()
        .find(|l| l.name == ".credentials.json")
        .unwrap();
    assert!(creds.copy_back && creds.link.ends_with("0193/state/.credentials.json"));
    assert!(
        p.env.iter().any(|(k, _)| k == "SSH_AUTH_SOCK"),
        "compat changes nothing"
    );
}

#[test]
fn plan_round_trips_through_json() {
    let p = Case::new("default", "/tmp/x").plan();
    let back: Plan = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(back, p);
}
