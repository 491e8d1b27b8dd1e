//! The containment findings of the first red-team report, as plan data: what git and
//! hook managers read through is protected, parents are pinned, links are watched and
//! never bound, csbox's own files refuse to be a project, stray host sockets are
//! hidden, per-session Claude state is the session's, absent secrets are masked.

use super::*;

fn fact(c: &mut Case, p: &str, real: &str, kind: Option<NodeKind>) {
    c.facts.insert(
        p.into(),
        PathFact {
            real: real.into(),
            kind,
        },
    );
}

fn dir(c: &mut Case, p: &str) {
    fact(c, p, p, Some(NodeKind::Dir));
}

fn file(c: &mut Case, p: &str) {
    fact(c, p, p, Some(NodeKind::File));
}

fn ro_bind(p: &Plan, at: &str) -> bool {
    has(
        p,
        |m| matches!(m, MountOp::Bind { dst, flags, .. } if dst == Path::new(at) && flags.read_only),
    )
}

/// A repository in the project: its .git, hooks, config, one submodule, a .claude dir.
fn repo() -> Case {
    let mut c = Case::new("default", "/home/u/proj");
    for d in [
        ".git",
        ".git/hooks",
        ".git/modules",
        ".git/modules/sub",
        ".git/modules/sub/hooks",
        ".git/modules/libs",
        ".git/modules/libs/x",
        ".git/modules/libs/x/hooks",
        ".claude",
        ".husky",
        "githooks",
    ] {
        dir(&mut c, &format!("/home/u/proj/{d}"));
    }
    for f in [
        ".git/config",
        ".git/modules/sub/config",
        ".git/modules/libs/x/config",
        ".claude/settings.json",
        "sub/.git",
    ] {
        file(&mut c, &format!("/home/u/proj/{f}"));
    }
    let g = "/home/u/proj/.git";
    c.facts.host.git = Some(GitLayout {
        top: "/home/u/proj".into(),
        gitdir: g.into(),
        common: g.into(),
        modules: vec![
            format!("{g}/modules/libs/x").into(),
            format!("{g}/modules/sub").into(),
        ],
        module_gitfiles: vec!["/home/u/proj/sub/.git".into()],
        worktrees: vec![],
        config_paths: vec!["/home/u/proj/githooks".into(), "/etc/gitconfig.d/x".into()],
        cut: None,
    });
    c
}

#[test]
fn parents_of_protected_paths_are_pinned_before_what_is_protected_in_them() {
    let p = repo().plan();
    let v = p.view.project.as_ref().unwrap();
    for d in [
        ".git",
        ".git/modules",
        ".git/modules/sub",
        ".git/modules/libs",
        ".git/modules/libs/x",
        ".claude",
    ] {
        assert!(
            v.pinned.contains(&Path::new("/home/u/proj").join(d)),
            "{d}: {:?}",
            v.pinned
        );
    }
    assert!(
        !v.pinned.contains(&"/home/u/proj".into()),
        "the project is a mount point already"
    );
    assert!(
        !v.pinned.contains(&"/home/u/proj/.husky".into()),
        "read-only itself"
    );
    let pin = pos(
        &p,
        |m| matches!(m, MountOp::Bind { dst, flags, .. } if dst == Path::new("/home/u/proj/.git") && !flags.read_only),
    );
    let config = pos(
        &p,
        |m| matches!(m, MountOp::Bind { dst, flags, .. } if dst == Path::new("/home/u/proj/.git/config") && flags.read_only),
    );
    let project = pos(
        &p,
        |m| matches!(m, MountOp::Bind { dst, .. } if dst == Path::new("/home/u/proj")),
    );
    assert!(project < pin && pin < config);
    // A read-only project pins read-only.
    let mut c = repo();
    c.prof.project = Access::Ro;
    assert!(ro_bind(&c.plan(), "/home/u/proj/.git"));
}

#[test]
fn what_git_reads_config_and_hooks_through_is_protected_or_watched() {
    let p = repo().plan();
    let v = p.view.project.as_ref().unwrap();
    // A submodule's `.git` file too: rewritten, a `git status` at the top would follow it
    // (red-team 5, A5-2).
    for ro in [
        ".git/hooks",
        ".git/config",
        ".git/modules/sub/config",
        ".git/modules/sub/hooks",
        // A submodule named `libs/x` has its git dir two levels down (red-team 7, A7-1).
        ".git/modules/libs/x/config",
        ".git/modules/libs/x/hooks",
        ".husky",
        "githooks",
        ".claude/settings.json",
        "sub/.git",
    ] {
        assert!(ro_bind(&p, &format!("/home/u/proj/{ro}")), "{ro}");
    }
    let watched = |rel: &str| {
        v.watched
            .iter()
            .any(|w| w.path == Path::new("/home/u/proj").join(rel))
    };
    for w in [
        ".git/commondir",
        ".git/config.worktree",
        // A submodule's git dir takes config and hooks through these too (red-team 6,
        // A6-2): absent here, so watched.
        ".git/modules/sub/commondir",
        ".git/modules/sub/config.worktree",
        ".git/modules/libs/x/commondir",
        ".git/modules/libs/x/config.worktree",
        ".claude/hooks",
        ".devcontainer",
        ".pre-commit-config.yaml",
        "mise.toml",
        ".mise.toml",
    ] {
        assert!(watched(w), "{w}");
    }
    assert!(
        !has(
            &p,
            |m| matches!(m, MountOp::Bind { dst, .. } if dst.starts_with("/etc/gitconfig.d"))
        ),
        "outside the project: the host's, read-only"
    );
    let dirs: Vec<(&str, &[String], &[String])> = v
        .watched_dirs
        .iter()
        .map(|d| {
            (
                d.dir.to_str().unwrap(),
                d.known.as_slice(),
                d.names.as_slice(),
            )
        })
        .collect();
    assert_eq!(
        dirs[0],
        (
            "/home/u/proj/.git/worktrees",
            &[][..],
            &["commondir".to_string(), "config.worktree".into()][..]
        )
    );
    assert_eq!(
        dirs[1],
        (
            "/home/u/proj/.git/modules",
            &["libs".to_string(), "sub".into()][..],
            &[
                "config".to_string(),
                "hooks".into(),
                "commondir".into(),
                "config.worktree".into()
            ][..]
        )
    );
}

#[test]
fn a_linked_worktree_protects_its_commondir_and_pins_the_main_repos_dirs() {
    let mut c = Case::new("default", "/home/u/wt");
    let main = PathBuf::from("/srv/repo/.git");
    for d in [
        "/home/u/wt",
        "/srv/repo/.git",
        "/srv/repo/.git/hooks",
        "/srv/repo/.git/worktrees",
        "/srv/repo/.git/worktrees/wt",
    ] {
        dir(&mut c, d);
    }
    for f in [
        "/srv/repo/.git/config",
        "/srv/repo/.git/worktrees/wt/commondir",
    ] {
        file(&mut c, f);
    }
    c.facts.host.git = Some(linked_worktree(&main));
    let p = c.plan();
    let v = p.view.project.as_ref().unwrap();
    assert!(ro_bind(&p, "/srv/repo/.git/worktrees/wt/commondir"));
    assert_eq!(
        v.pinned,
        vec![main.join("worktrees"), main.join("worktrees/wt")]
    );
    assert!(
        v.watched.iter().any(|w| w.path == main.join("commondir")),
        "the main repo's own"
    );
    assert!(v
        .watched
        .iter()
        .any(|w| w.path == main.join("worktrees/wt/config.worktree")));
    assert_eq!(v.watched_dirs[0].known, vec!["wt".to_string()]);
}

#[test]
fn a_protected_link_out_of_the_project_is_watched_and_never_bound() {
    let mut c = repo();
    fact(
        &mut c,
        "/home/u/proj/.git/config",
        "/home/u/.ssh/id_ed25519",
        Some(NodeKind::File),
    );
    c.facts.insert_link(
        "/home/u/proj/.git/config".into(),
        "/home/u/.m2/../.ssh/id_ed25519".into(),
    );
    // A link inside the project: its target is protected, the link watched.
    fact(
        &mut c,
        "/home/u/proj/.vscode",
        "/home/u/proj/editor/vscode",
        Some(NodeKind::Dir),
    );
    c.facts
        .insert_link("/home/u/proj/.vscode".into(), "editor/vscode".into());
    let p = c.plan();
    let v = p.view.project.as_ref().unwrap();
    for m in &p.mounts {
        if let MountOp::Bind {
            src: Source::Host(s),
            dst,
            ..
        } = m
        {
            assert!(
                !s.starts_with("/home/u/.ssh") && !dst.starts_with("/home/u/.ssh"),
                "{m:?}"
            );
            assert_ne!(dst, Path::new("/home/u/proj/.git/config"));
        }
    }
    let w = v
        .watched
        .iter()
        .find(|w| w.path == Path::new("/home/u/proj/.git/config"))
        .unwrap();
    assert_eq!(
        w.link.as_deref(),
        Some(Path::new("/home/u/.m2/../.ssh/id_ed25519"))
    );
    assert!(ro_bind(&p, "/home/u/proj/editor/vscode"));
    assert!(v.pinned.contains(&"/home/u/proj/editor".into()));
    assert!(v
        .watched
        .iter()
        .any(|w| w.path == Path::new("/home/u/proj/.vscode") && w.link.is_some()));
}

#[test]
fn csbox_own_files_cannot_be_the_project() {
    for cwd in [
        "/home/u/.config",
        "/home/u/.config/csbox",
        "/home/u/.config/csbox/profiles",
        "/home/u/.config/systemd",
        "/home/u/.config/systemd/user",
        "/home/u/.local/bin",
    ] {
        let mut c = Case::new("default", cwd);
        c.facts.host.csbox_exe = Some("/home/u/.local/bin/csbox".into());
        let e = c.build().expect_err(cwd).to_string();
        assert!(
            e.contains("edit csbox's own files outside any sandbox"),
            "{cwd}: {e}"
        );
    }
    let mut c = Case::new("default", "/home/u/.config/nvim");
    c.facts.host.csbox_exe = Some("/home/u/.local/bin/csbox".into());
    assert!(
        c.build().is_ok(),
        "another program's config is a project like any"
    );
    let mut c = Case::new("default", "/opt");
    c.facts.host.csbox_exe = Some("/opt/csbox/bin/csbox".into());
    assert!(
        c.build().is_ok(),
        "a binary outside the home is the system's"
    );
}

#[test]
fn listening_host_sockets_still_in_sight_are_hidden_but_those_passed_in() {
    let mut c = Case::new("default", "/home/u/proj");
    c.facts.host.sockets = [
        "/var/lib/app/d.sock",
        "/run/docker.sock",
        "/tmp/.X11-unix/X0",
        "/home/u/.colima/d.sock",
        "/home/u/proj/dev.sock",
        "/srv/pass.sock",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    file(&mut c, "/srv/pass.sock");
    c.prof.sockets = vec!["/srv/pass.sock".into()];
    let hidden = |p: &Plan, at: &str| {
        has(
            p,
            |m| matches!(m, MountOp::Hide { dst, kind: NodeKind::File } if dst == Path::new(at)),
        )
    };
    let p = c.plan();
    assert!(hidden(&p, "/var/lib/app/d.sock") && hidden(&p, "/home/u/proj/dev.sock"));
    for private in [
        "/run/docker.sock",
        "/tmp/.X11-unix/X0",
        "/home/u/.colima/d.sock",
        "/srv/pass.sock",
    ] {
        assert!(!hidden(&p, private), "{private}");
    }
    // A read-only home is the host's: a socket there is reachable, so it is hidden.
    c.prof.home = Home::ReadOnly;
    assert!(hidden(&c.plan(), "/home/u/.colima/d.sock"));
}

#[test]
fn per_session_claude_state_is_bound_from_the_sessions_layer() {
    let p = Case::new("default", "/home/u/proj").plan();
    for name in SESSION_OWN {
        assert_eq!(
            bind_at(&p, &format!("/home/u/.claude/{name}")),
            Some(&MountOp::Bind {
                src: session(&format!("state/{name}")),
                dst: format!("/home/u/.claude/{name}").into(),
                flags: MountFlags::NOSUID_NODEV,
                create_dst: None,
            })
        );
    }
}

#[test]
fn absent_secrets_under_the_copy_on_write_home_are_masked() {
    let mut c = Case::new("default", "/home/u/proj");
    let p = c.plan();
    let masks = &p.view.home_masks;
    assert!(masks.contains(&"/home/u/.gnupg".into()) && masks.contains(&"/home/u/.pgpass".into()));
    assert!(
        !masks.contains(&"/home/u/.ssh".into()) && !masks.contains(&"/home/u/.netrc".into()),
        "they exist: mounted over"
    );
    assert!(
        !masks.iter().any(|m| !m.starts_with("/home/u")),
        "only the home has a layer"
    );
    c.ov.unhide = vec!["~/.gnupg".into()];
    assert!(!c.plan().view.home_masks.contains(&"/home/u/.gnupg".into()));
    for home in ["strict"] {
        assert!(
            Case::new(home, "/home/u/proj")
                .plan()
                .view
                .home_masks
                .is_empty(),
            "a hidden home shows nothing of the host's"
        );
    }
}

#[test]
fn strict_drops_credentials_in_urls() {
    let mut c = Case::new("strict", "/home/u/proj");
    c.env.extend(
        [
            ("DATABASE_URL", "postgres://localhost/db"),
            ("SENTRY_DSN", "https://key@o1.ingest.sentry.io/1"),
            ("UPSTREAM", "https://u:pw@mirror.example/x"),
            ("HOMEPAGE", "https://example.com/a@b:c"),
            ("PLAIN", "x"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let p = c.plan();
    let var = |k: &str| p.env.iter().any(|(a, _)| a == k);
    assert!(!var("DATABASE_URL") && !var("SENTRY_DSN") && !var("UPSTREAM"));
    assert!(var("HOMEPAGE") && var("PLAIN"));
    assert!(crate::profile::has_url_password(
        "amqp://guest:guest@rabbit:5672"
    ));
    assert!(!crate::profile::has_url_password("https://user@host/x:y"));
}

/// The built-in list and the default profile's say the same (the profile's is what
/// `csbox profile show default` prints, the built-in one what a profile without a list
/// and the merge use).
#[test]
fn the_default_profiles_protect_list_is_the_built_in_one() {
    let c = Case::new("default", "/home/u/proj");
    let listed: Vec<&str> = c.prof.protect.iter().map(String::as_str).collect();
    assert_eq!(listed, crate::plan::PROTECTED);
}

/// A protect pattern (`*.code-workspace`, `mise.*.toml`) makes the matching entries of
/// the project's top read-only, not those below it nor the pattern's own spelling, and
/// goes into the view for the sweeps (red-team 7, A7-9).
#[test]
fn names_at_the_top_matching_a_protect_pattern_are_read_only() {
    let mut c = repo();
    for f in [
        "proj.code-workspace",
        "mise.dev.toml",
        "sub/x.code-workspace",
    ] {
        file(&mut c, &format!("/home/u/proj/{f}"));
    }
    c.facts.host.top_names = [
        "proj.code-workspace",
        "mise.dev.toml",
        "mise.toml.bak",
        "sub",
    ]
    .iter()
    .map(|n| Path::new("/home/u/proj").join(n))
    .collect();
    let p = c.plan();
    let v = p.view.project.as_ref().unwrap();
    for ro in ["proj.code-workspace", "mise.dev.toml"] {
        assert!(ro_bind(&p, &format!("/home/u/proj/{ro}")), "{ro}");
    }
    assert!(!ro_bind(&p, "/home/u/proj/sub/x.code-workspace"));
    assert!(!v
        .watched
        .iter()
        .any(|w| w.path.to_string_lossy().contains('*')));
    assert!(v.patterns.iter().any(|p| p == "*.code-workspace"));
    for (pat, name, hit) in [
        ("*.code-workspace", "a.code-workspace", true),
        ("*.code-workspace", ".code-workspace", false),
        ("mise.*.toml", "mise.dev.toml", true),
        ("mise.*.toml", "mise.toml", false),
        (".mise.*.toml", "mise.dev.toml", false),
        ("a/*.x", "b.x", false),
    ] {
        assert_eq!(
            crate::plan::matches_pattern(pat, name.as_bytes()),
            hit,
            "{pat} {name}"
        );
    }
}
