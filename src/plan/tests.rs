//! The plan as data: each step's operations, their order and flags, the environment, the
//! seccomp rules, and the checks on the working directory.

use std::path::{Path, PathBuf};

use super::*;
use crate::paths::{EnvInput, Paths};
use crate::profile::{Access, Home, Profile};

fn paths_for(home: &str) -> Paths {
    Paths::resolve(&EnvInput {
        home: Some(home.into()),
        cwd: "/".into(),
        ..Default::default()
    })
    .unwrap()
}

/// A host where the user has every shared entry, a project, a few secrets, /var/tmp.
fn facts(p: &Paths) -> Facts {
    let mut f = Facts::default();
    let mut add = |path: PathBuf, kind| {
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
    add(p.home.join("proj/.vscode"), NodeKind::Dir);
    add(p.home.join(".ssh"), NodeKind::Dir);
    add(p.home.join(".netrc"), NodeKind::File);
    add(p.home.join(".cache"), NodeKind::Dir);
    add("/var/tmp".into(), NodeKind::Dir);
    add("/run/user/1000".into(), NodeKind::Dir);
    for name in SHARED_READ_ONLY {
        let kind = if name.contains('.') {
            NodeKind::File
        } else {
            NodeKind::Dir
        };
        add(p.claude_root.join(name), kind);
    }
    f.host.runtime_dir = "/run/user/1000".into();
    f
}

fn profile(name: &str) -> Profile {
    crate::profile::load(name, Path::new("/nonexistent")).unwrap()
}

struct Case {
    paths: Paths,
    prof: Profile,
    facts: Facts,
    cwd: String,
    mode: StateMode,
    ov: Overrides,
    env: Vec<(String, String)>,
    exe: PathBuf,
}

impl Case {
    fn new(prof: &str, cwd: &str) -> Case {
        let paths = paths_for("/home/u");
        let facts = facts(&paths);
        Case {
            paths,
            prof: profile(prof),
            facts,
            cwd: cwd.into(),
            mode: StateMode::Overlay,
            ov: Overrides::default(),
            exe: "/usr/bin/claude".into(),
            env: vec![
                ("PATH".into(), "/usr/bin".into()),
                ("CLAUDE_CONFIG_DIR".into(), "/elsewhere".into()),
                (
                    "DBUS_SESSION_BUS_ADDRESS".into(),
                    "unix:path=/run/user/1000/bus".into(),
                ),
                ("SSH_AUTH_SOCK".into(), "/tmp/ssh-x/agent.1".into()),
                ("GITHUB_TOKEN".into(), "ghp_x".into()),
                ("ANTHROPIC_API_KEY".into(), "sk-x".into()),
            ],
        }
    }

    fn build(&self) -> Result<Plan, Error> {
        let dir = self.paths.sessions_dir.join("0193");
        build(&PlanInput {
            paths: &self.paths,
            session_id: "0193",
            session_dir: &dir,
            argv: vec!["claude".into()],
            cwd: self.cwd.clone().into(),
            host_env: self.env.clone(),
            uid: 1000,
            gid: 1000,
            state_mode: self.mode,
            profile: &self.prof,
            overrides: &self.ov,
            exe: self.exe.clone(),
            facts: &self.facts,
            tty: None,
            remove_on_exit: false,
        })
    }

    fn plan(&self) -> Plan {
        self.build().unwrap()
    }
}

fn pos(plan: &Plan, f: impl Fn(&MountOp) -> bool) -> usize {
    plan.mounts
        .iter()
        .position(f)
        .unwrap_or_else(|| panic!("op missing in {:#?}", plan.mounts))
}

fn has(plan: &Plan, f: impl Fn(&MountOp) -> bool) -> bool {
    plan.mounts.iter().any(f)
}

fn bind_at<'a>(plan: &'a Plan, at: &str) -> Option<&'a MountOp> {
    plan.mounts
        .iter()
        .rev()
        .find(|m| matches!(m, MountOp::Bind { dst, .. } if dst == Path::new(at)))
}

/// `/home/u/wt` as a linked worktree of the repository whose git dir is `main`.
fn linked_worktree(main: &Path) -> GitLayout {
    GitLayout {
        top: "/home/u/wt".into(),
        gitdir: main.join("worktrees/wt"),
        common: main.to_path_buf(),
        modules: vec![],
        module_gitfiles: vec![],
        worktrees: vec![main.join("worktrees/wt")],
        config_paths: vec![],
        cut: None,
    }
}

fn session(rel: &str) -> Source {
    Source::Session(rel.into())
}

#[test]
fn the_host_is_the_read_only_root_with_private_tmp_var_tmp_run_and_runtime_dir() {
    let p = Case::new("default", "/home/u/proj").plan();
    assert_eq!(p.mounts[0], MountOp::MakeSlave { path: "/".into() });
    assert_eq!(
        p.mounts[1],
        MountOp::HostRoot {
            flags: MountFlags::RO_NOSUID_NODEV,
            tmp_mode: 0o1777
        }
    );
    for (dst, mode) in [
        ("/var/tmp", 0o1777),
        ("/run", 0o755),
        ("/run/user/1000", 0o700),
    ] {
        assert!(
            has(
                &p,
                |m| matches!(m, MountOp::Tmpfs { dst: d, mode: md, .. } if d == Path::new(dst) && *md == mode)
            ),
            "{dst}"
        );
    }
    assert!(p.view.host_read_only);
    assert!(p.new_session_keyring);
}

#[test]
fn the_home_is_copy_on_write_and_the_claude_view_is_over_it() {
    let p = Case::new("default", "/home/u/proj").plan();
    let home = pos(
        &p,
        |m| matches!(m, MountOp::Overlay { dst, .. } if dst == Path::new("/home/u")),
    );
    let MountOp::Overlay {
        lower, upper, work, ..
    } = &p.mounts[home]
    else {
        unreachable!()
    };
    assert_eq!(lower, &Source::Host("/home/u".into()));
    assert_eq!((upper, work), (&session(HOME_UPPER), &session(HOME_WORK)));
    let claude = pos(
        &p,
        |m| matches!(m, MountOp::Overlay { dst, .. } if dst == Path::new("/home/u/.claude")),
    );
    assert!(claude > home);
    let MountOp::Overlay { lower, upper, .. } = &p.mounts[claude] else {
        unreachable!()
    };
    assert_eq!(
        lower,
        &session(CLAUDE_BASE),
        "no layer of the host's (A8-1)"
    );
    assert_eq!(upper, &session("state"));
    for name in SHARED_READ_ONLY {
        let i = pos(
            &p,
            |m| matches!(m, MountOp::Bind { dst, flags, .. } if dst.ends_with(name) && flags.read_only && flags.nosuid && flags.nodev),
        );
        assert!(i > claude, "{name} is bound over the view");
    }
    assert!(
        matches!(bind_at(&p, "/home/u/.claude/sessions"), Some(MountOp::Bind { src, .. }) if *src == session("state/sessions"))
    );
    assert!(
        matches!(bind_at(&p, "/home/u/.claude.json"), Some(MountOp::Bind { src, .. }) if *src == session("state/.claude.json"))
    );
    // The layer's own copy is a mount point too: it cannot be replaced by a link.
    assert!(
        matches!(bind_at(&p, "/home/u/.claude/.claude.json"), Some(MountOp::Bind { src, .. }) if *src == session("state/.claude.json"))
    );
    assert_eq!(p.view.home_mode, Home::Overlay);
}

#[test]
fn every_bind_is_nosuid_and_nodev() {
    for prof in ["default", "strict", "ci"] {
        let p = Case::new(prof, "/home/u/proj").plan();
        for m in &p.mounts {
            if let MountOp::Bind { flags, dst, .. } = m {
                assert!(flags.nosuid && flags.nodev, "{prof}: {}", dst.display());
            }
        }
    }
}

#[test]
fn the_store_is_hidden_even_where_the_home_overlay_shows_it() {
    let p = Case::new("default", "/home/u/proj").plan();
    let overlay = pos(
        &p,
        |m| matches!(m, MountOp::Overlay { dst, .. } if dst == Path::new("/home/u")),
    );
    let hide = pos(
        &p,
        |m| matches!(m, MountOp::Hide { dst, .. } if dst == Path::new("/home/u/.local/share/csbox/sessions")),
    );
    assert!(hide > overlay);
}

#[test]
fn a_home_under_tmp_keeps_its_view_and_its_store_hidden() {
    let mut c = Case::new("default", "/tmp/ci/home/proj");
    c.paths = paths_for("/tmp/ci/home");
    c.facts = facts(&c.paths);
    let p = c.plan();
    let mk = pos(
        &p,
        |m| matches!(m, MountOp::Mkdir { path, .. } if path == Path::new("/tmp/ci/home")),
    );
    let ov = pos(
        &p,
        |m| matches!(m, MountOp::Overlay { dst, .. } if dst == Path::new("/tmp/ci/home")),
    );
    assert!(mk < ov);
    assert!(has(
        &p,
        |m| matches!(m, MountOp::Hide { dst, .. } if dst == Path::new("/tmp/ci/home/.local/share/csbox/sessions"))
    ));
    // No mount point is created inside the home overlay (host content).
    let made: Vec<_> = p.mounts.iter().filter(|m| matches!(m, MountOp::Mkdir { path, .. } if path.starts_with("/tmp/ci/home") && path != Path::new("/tmp/ci/home"))).collect();
    assert!(made.is_empty(), "{made:?}");
}

#[test]
fn the_project_is_writable_and_its_hook_files_read_only_or_watched() {
    let p = Case::new("default", "/home/u/proj").plan();
    let proj = pos(
        &p,
        |m| matches!(m, MountOp::Bind { dst, flags, .. } if dst == Path::new("/home/u/proj") && !flags.read_only),
    );
    let vscode = pos(
        &p,
        |m| matches!(m, MountOp::Bind { dst, flags, .. } if dst == Path::new("/home/u/proj/.vscode") && flags.read_only),
    );
    assert!(vscode > proj);
    let v = p.view.project.as_ref().unwrap();
    assert_eq!(v.protected, vec![PathBuf::from("/home/u/proj/.vscode")]);
    let watched = |p: &str| {
        v.watched
            .iter()
            .any(|w| w.path == Path::new(p) && w.link.is_none())
    };
    assert!(watched("/home/u/proj/.git/hooks"));
    assert!(watched("/home/u/proj/.envrc"));
}

#[test]
fn a_linked_worktree_makes_its_common_dir_writable_but_hooks_and_config_read_only() {
    let mut c = Case::new("default", "/home/u/wt/src");
    let main = PathBuf::from("/srv/repo/.git");
    for (p, k) in [
        ("/home/u/wt", NodeKind::Dir),
        ("/home/u/wt/src", NodeKind::Dir),
        ("/home/u/wt/.git", NodeKind::File),
        ("/srv/repo/.git", NodeKind::Dir),
        ("/srv/repo/.git/hooks", NodeKind::Dir),
        ("/srv/repo/.git/config", NodeKind::File),
        (
            "/srv/repo/.git/worktrees/wt/config.worktree",
            NodeKind::File,
        ),
    ] {
        c.facts.insert(
            p.into(),
            PathFact {
                real: p.into(),
                kind: Some(k),
            },
        );
    }
    c.facts.host.git = Some(linked_worktree(&main));
    let p = c.plan();
    let v = p.view.project.as_ref().unwrap();
    assert_eq!(
        v.path,
        PathBuf::from("/home/u/wt"),
        "the worktree's top, not the cwd"
    );
    assert_eq!(v.git_dirs, vec![main.clone()]);
    let common = pos(
        &p,
        |m| matches!(m, MountOp::Bind { dst, flags, .. } if *dst == main && !flags.read_only),
    );
    for ro in ["hooks", "config", "worktrees/wt/config.worktree"] {
        let i = pos(
            &p,
            |m| matches!(m, MountOp::Bind { dst, flags, .. } if *dst == main.join(ro) && flags.read_only),
        );
        assert!(i > common, "{ro}");
    }
    // The worktree's own `.git` file: rewritten, it would point every host git in the
    // worktree at a git dir of the session's (red-team 7, A7-2).
    assert!(has(
        &p,
        |m| matches!(m, MountOp::Bind { dst, flags, .. } if dst == Path::new("/home/u/wt/.git") && flags.read_only)
    ));
    c.prof.allow_git_config = true;
    let p = c.plan();
    assert!(!has(
        &p,
        |m| matches!(m, MountOp::Bind { dst, .. } if *dst == main.join("config"))
    ));
}

#[test]
fn the_home_as_working_directory_binds_nothing_and_says_so() {
    let p = Case::new("default", "/home/u").plan();
    assert!(p.view.project.is_none());
    assert!(
        p.notes.iter().any(|n| n.contains("your home")),
        "{:?}",
        p.notes
    );
    let p = Case::new("default", "/").plan();
    assert!(p.view.project.is_none());
    assert!(!has(
        &p,
        |m| matches!(m, MountOp::Bind { dst, .. } if dst == Path::new("/"))
    ));
}

#[test]
fn a_read_only_project_is_bound_read_only_and_overlaps_are_refused() {
    let mut c = Case::new("default", "/home/u/proj");
    c.prof.project = Access::Ro;
    assert!(
        matches!(bind_at(&c.plan(), "/home/u/proj"), Some(MountOp::Bind { flags, .. }) if flags.read_only)
    );
    for cwd in [
        "/home/u",
        "/",
        "/home",
        "/home/u/.claude/skills",
        "/home/u/.local/share/csbox/sessions/x",
    ] {
        c.cwd = cwd.into();
        let e = c.build().unwrap_err();
        assert!(e.to_string().contains("cd into a project"), "{cwd}: {e}");
    }
    // Even writable, a project inside ~/.claude or the store is refused.
    c.prof.project = Access::Rw;
    c.cwd = "/home/u/.claude/skills".into();
    assert!(c.build().is_err());
    c.cwd = "/tmp".into();
    assert!(
        c.plan().view.project.is_none(),
        "/tmp itself stays the private tmpfs"
    );
}

#[test]
fn secrets_are_hidden_unhide_shows_one_and_hiding_follows_links() {
    let mut c = Case::new("default", "/home/u/proj");
    // ~/.aws is a link to /srv/secrets/aws on this host.
    c.facts.insert(
        "/home/u/.aws".into(),
        PathFact {
            real: "/srv/secrets/aws".into(),
            kind: Some(NodeKind::Dir),
        },
    );
    let p = c.plan();
    let hidden = |p: &Plan, at: &str| {
        has(
            p,
            |m| matches!(m, MountOp::Hide { dst, .. } if dst == Path::new(at)),
        )
    };
    assert!(hidden(&p, "/home/u/.ssh"));
    assert!(has(
        &p,
        |m| matches!(m, MountOp::Hide { dst, kind: NodeKind::File } if dst == Path::new("/home/u/.netrc"))
    ));
    assert!(hidden(&p, "/srv/secrets/aws"), "the link's target");
    assert!(
        !hidden(&p, "/home/u/.gnupg"),
        "a path the host does not have needs nothing"
    );
    c.ov.unhide = vec!["~/.ssh".into()];
    assert!(!hidden(&c.plan(), "/home/u/.ssh"));
}

#[test]
fn host_sockets_and_their_variables_stay_out_unless_the_profile_passes_one() {
    let mut c = Case::new("default", "/home/u/proj");
    c.facts.host.ssh_agent = Some("/tmp/ssh-x/agent.1".into());
    let p = c.plan();
    let var = |p: &Plan, k: &str| p.env.iter().any(|(a, _)| a == k);
    assert!(!var(&p, "DBUS_SESSION_BUS_ADDRESS") && !var(&p, "SSH_AUTH_SOCK"));
    assert!(bind_at(&p, "/tmp/ssh-x/agent.1").is_none());
    c.prof.sockets = vec!["ssh-agent".into()];
    let p = c.plan();
    assert!(var(&p, "SSH_AUTH_SOCK"));
    assert!(matches!(
        bind_at(&p, "/tmp/ssh-x/agent.1"),
        Some(MountOp::Bind {
            create_dst: Some(NodeKind::File),
            ..
        })
    ));
}

#[test]
fn strict_hides_the_home_and_filters_credential_variables() {
    let p = Case::new("strict", "/home/u/proj").plan();
    assert!(has(
        &p,
        |m| matches!(m, MountOp::Tmpfs { dst, mode: 0o700, .. } if dst == Path::new("/home/u"))
    ));
    assert!(has(
        &p,
        |m| matches!(m, MountOp::Mkdir { path, .. } if path == Path::new("/home/u/.claude"))
    ));
    assert!(matches!(
        bind_at(&p, "/home/u/proj"),
        Some(MountOp::Bind {
            create_dst: Some(NodeKind::Dir),
            ..
        })
    ));
    let var = |k: &str| p.env.iter().any(|(a, _)| a == k);
    assert!(!var("GITHUB_TOKEN"), "a credential-like variable");
    assert!(var("ANTHROPIC_API_KEY") && var("PATH"));
    assert_eq!(p.view.home_mode, Home::Hidden);
    assert!(p.namespaces.net);
}

#[test]
fn strict_refuses_nested_user_namespaces_by_limit_and_by_seccomp() {
    let p = Case::new("strict", "/home/u/proj").plan();
    assert_eq!(p.max_user_namespaces, Some(0));
    let refused = |name: &str| {
        p.seccomp
            .rules
            .iter()
            .filter(|r| r.names.iter().any(|n| n == name))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        refused("unshare").iter().any(|r| r.arg.is_none()),
        "unshare refused whole"
    );
    assert!(refused("setns").iter().any(|r| r.arg.is_none()));
    assert_eq!(
        refused("clone").last().unwrap().arg,
        Some(ArgMatch::AnyBit {
            index: 0,
            mask: 0x7E02_0000
        }),
        "clone with any CLONE_NEW* flag"
    );
    assert_eq!(refused("clone3")[0].errno, libc::ENOSYS);
    assert!(p.seccomp.deny_compat_abis);
    // Landlock: the writable mounts, and nothing else, as a second layer.
    let ll = p.landlock.clone().unwrap();
    let w = ll.writable.unwrap();
    let covered = |p: &str| w.iter().any(|d| Path::new(p).starts_with(d));
    assert!(
        covered("/home/u/proj") && covered("/tmp/x") && covered("/var/tmp") && covered("/dev/null"),
        "{w:?}"
    );
    assert!(
        !covered("/usr/bin") && !covered("/etc") && !covered("/"),
        "{w:?}"
    );
    assert!(ll.scope_ipc);
}

#[test]
fn default_refuses_dockers_list_but_keeps_what_nested_bwrap_and_debuggers_need() {
    let p = Case::new("default", "/home/u/proj").plan();
    let refused = |name: &str| {
        p.seccomp
            .rules
            .iter()
            .any(|r| r.names.iter().any(|n| n == name) && r.arg.is_none())
    };
    for name in [
        "keyctl",
        "add_key",
        "request_key",
        "io_uring_setup",
        "userfaultfd",
        "perf_event_open",
        "kcmp",
        "pidfd_getfd",
        "mbind",
        "setns",
        "fsopen",
    ] {
        assert!(refused(name), "{name}");
    }
    for name in [
        "mount",
        "umount2",
        "pivot_root",
        "unshare",
        "clone",
        "ptrace",
        "process_vm_readv",
    ] {
        assert!(!refused(name), "{name} stays for bwrap and debuggers");
    }
    assert!(!p.seccomp.deny_compat_abis);
    let ll = p.landlock.unwrap();
    assert_eq!(
        ll.writable, None,
        "no Landlock file rules where bwrap must mount"
    );
    assert!(ll.scope_ipc);
}

#[test]
fn a_read_only_home_gets_private_caches_only_where_the_host_has_them() {
    let mut c = Case::new("default", "/home/u/proj");
    c.prof.home = Home::ReadOnly;
    let p = c.plan();
    assert!(
        matches!(bind_at(&p, "/home/u/.cache"), Some(MountOp::Bind { src, flags, .. }) if *src == session("home/caches/.cache") && !flags.read_only)
    );
    assert!(
        bind_at(&p, "/home/u/.npm").is_none(),
        "the host has no ~/.npm"
    );
    assert!(!has(
        &p,
        |m| matches!(m, MountOp::Overlay { dst, .. } if dst == Path::new("/home/u"))
    ));
    assert!(p.session_sources().contains(&"home/caches/.cache".into()));
}

mod masks;
mod protect;
mod rest;
