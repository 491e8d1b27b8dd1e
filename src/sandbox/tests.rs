//! The launch path as data: the child's recipe, and the steps `prepare` makes of a plan
//! (the order, the flags, and the plan fields the child applies).

use std::path::Path;

use super::child::{Stage, RECIPE};
use super::prepare::{prepare_with_first_fd, MountKind, Step, MOUNT_ATTR_RDONLY};
use crate::paths::{EnvInput, Paths};
use crate::plan::{
    Facts, MaskPlace, MountOp, NodeKind, Overrides, PathFact, Plan, PlanInput, StateMode,
};

fn plan(profile: &str) -> Plan {
    let paths = Paths::resolve(&EnvInput {
        home: Some("/home/u".into()),
        cwd: "/home/u/proj".into(),
        ..Default::default()
    })
    .unwrap();
    let prof = crate::profile::load(profile, Path::new("/nonexistent")).unwrap();
    let mut facts = Facts::default();
    for (p, kind) in [
        ("/home/u/.claude/skills", NodeKind::Dir),
        ("/home/u/.claude/settings.json", NodeKind::File),
        ("/home/u/proj", NodeKind::Dir),
        ("/home/u/data", NodeKind::Dir),
    ] {
        facts.insert(
            p.into(),
            PathFact {
                real: p.into(),
                kind: Some(kind),
            },
        );
    }
    let dir = paths.sessions_dir.join("0193");
    let mut plan = crate::plan::build(&PlanInput {
        paths: &paths,
        session_id: "0193",
        session_dir: &dir,
        argv: vec!["true".into()],
        cwd: "/home/u/proj".into(),
        host_env: vec![],
        uid: 1000,
        gid: 1000,
        state_mode: StateMode::Overlay,
        profile: &prof,
        overrides: &Overrides {
            ro_bind: vec!["/home/u/data".into()],
            ..Default::default()
        },
        exe: "/bin/true".into(),
        facts: &facts,
        tty: Some("/dev/pts/3".into()),
        remove_on_exit: false,
    })
    .unwrap();
    // What `session::masks::build_private` does before a launch.
    for m in &mut plan.mounts {
        if let MountOp::Overlay { masks: Some(l), .. } = m {
            if let MaskPlace::Private { built, .. } = &mut l.place {
                *built = Some("/tmp/csbox-1000-xyz".into());
            }
        }
    }
    plan
}

#[test]
fn the_homes_mask_layer_is_the_top_lower_layer_and_a_plan_not_made_ready_is_refused() {
    let p = plan("default");
    let prepared = prepare_with_first_fd(&p, 100).unwrap();
    let desc = prepared
        .descs
        .iter()
        .find(|d| d.starts_with("mount(\"overlay\", /home/u,"))
        .unwrap();
    assert!(
        desc.contains("lowerdir=/tmp/csbox-1000-xyz:/home/u,"),
        "{desc}"
    );
    let data = prepared.steps.iter().find_map(|s| match s {
        Step::Mount {
            kind: MountKind::Overlay,
            dst,
            data: Some(d),
            ..
        } if dst.to_str() == Ok("/home/u") => Some(d.to_str().unwrap().to_string()),
        _ => None,
    });
    let data = data.unwrap();
    assert!(
        data.starts_with("lowerdir=/proc/self/fd/")
            && data.split(',').next().unwrap().contains(":/proc/self/fd/"),
        "{data}"
    );
    let mut unbuilt = p.clone();
    for m in &mut unbuilt.mounts {
        if let MountOp::Overlay { masks: Some(l), .. } = m {
            if let MaskPlace::Private { built, .. } = &mut l.place {
                *built = None;
            }
        }
    }
    assert!(prepare_with_first_fd(&unbuilt, 100).is_err());
}

fn at(stage: Stage) -> usize {
    RECIPE.iter().position(|s| *s == stage).unwrap()
}

#[test]
fn the_recipe_maps_ids_before_opening_sources_and_installs_seccomp_last() {
    assert!(at(Stage::IdMaps) < at(Stage::Sources));
    assert!(
        at(Stage::Sources) < at(Stage::Mounts),
        "sources before any mount"
    );
    for later in [Stage::Capabilities, Stage::NoNewPrivs, Stage::Seccomp] {
        assert!(at(Stage::Mounts) < at(later), "{later:?} after the mounts");
    }
    assert!(
        at(Stage::NoNewPrivs) < at(Stage::Seccomp),
        "seccomp needs no_new_privs"
    );
    assert!(
        at(Stage::Fork) < at(Stage::Seccomp),
        "pid 1 itself stays unfiltered"
    );
    assert_eq!(RECIPE.last(), Some(&Stage::Exec));
    assert_eq!(RECIPE[at(Stage::Exec) - 1], Stage::Seccomp);
}

fn mounts(steps: &[Step]) -> Vec<(MountKind, String)> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Mount { kind, dst, .. } => Some((*kind, dst.to_string_lossy().into_owned())),
            _ => None,
        })
        .collect()
}

#[test]
fn steps_start_with_propagation_and_end_with_dev_and_proc() {
    let p = prepare_with_first_fd(&plan("default"), 100).unwrap();
    let m = mounts(&p.steps);
    assert_eq!(m[0], (MountKind::Propagation, "/".into()));
    assert_eq!(m.last().unwrap(), &(MountKind::Proc, "/proc".into()));
    let dev = m.iter().position(|(_, d)| d == "/dev").unwrap();
    assert!(
        m[dev..]
            .iter()
            .all(|(_, d)| d.starts_with("/dev") || d == "/proc"),
        "nothing but /dev and /proc after /dev: {m:?}"
    );
    // The console is the terminal resolve found, bound inside the sandbox's /dev.
    assert!(m
        .iter()
        .any(|(k, d)| *k == MountKind::Bind && d == "/dev/console"));
    // Every source is reserved at or above the given first fd, in order.
    let fds: Vec<i32> = p.sources.iter().map(|(_, fd)| *fd).collect();
    assert_eq!(fds, (100..100 + fds.len() as i32).collect::<Vec<_>>());
}

#[test]
fn a_read_only_bind_is_made_read_only_recursively_right_after_it() {
    let p = prepare_with_first_fd(&plan("default"), 100).unwrap();
    let i = p
        .steps
        .iter()
        .position(|s| matches!(s, Step::Mount { kind: MountKind::Bind, dst, .. } if dst.to_bytes() == b"/home/u/data"))
        .expect("the --ro-bind");
    match &p.steps[i + 1] {
        Step::SetAttr {
            dst,
            attr,
            recursive,
        } => {
            assert_eq!(dst.to_bytes(), b"/home/u/data");
            assert_ne!(attr & MOUNT_ATTR_RDONLY, 0);
            assert!(*recursive);
        }
        s => panic!("expected SetAttr after the bind, got {s:?}"),
    }
}

#[test]
fn the_plans_privilege_fields_are_what_the_child_applies() {
    let mut pl = plan("default");
    let p = prepare_with_first_fd(&pl, 100).unwrap();
    assert!(p.no_new_privs && p.die_with_parent && p.keep_caps.is_empty());
    assert!(!p.drop_bounding.is_empty());
    assert!(p.max_user_namespaces.is_none());
    assert!(p.filter.len() > 1, "the TIOCSTI rules");
    pl.no_new_privs = false;
    pl.die_with_parent = false;
    pl.capabilities = vec!["CAP_NET_BIND_SERVICE".into()];
    pl.max_user_namespaces = Some(0);
    let p = prepare_with_first_fd(&pl, 100).unwrap();
    assert!(!p.no_new_privs && !p.die_with_parent);
    assert_eq!(p.keep_caps, vec![caps::Capability::CAP_NET_BIND_SERVICE]);
    assert!(!p
        .drop_bounding
        .contains(&caps::Capability::CAP_NET_BIND_SERVICE));
    assert_eq!(p.max_user_namespaces.as_deref(), Some(&b"0\n"[..]));
    pl.capabilities = vec!["CAP_NOPE".into()];
    assert!(prepare_with_first_fd(&pl, 100).is_err());
}

#[test]
fn strict_limits_nested_user_namespaces_and_has_more_rules() {
    let d = prepare_with_first_fd(&plan("default"), 100).unwrap();
    let s = prepare_with_first_fd(&plan("strict"), 100).unwrap();
    assert_eq!(s.max_user_namespaces.as_deref(), Some(&b"0\n"[..]));
    assert!(plan("strict").seccomp.rules.len() > plan("default").seccomp.rules.len());
    assert_ne!(s.filter, d.filter);
}
