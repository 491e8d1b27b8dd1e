use super::*;

fn project(root: &Path, watched: Vec<Watched>, dirs: Vec<WatchedDir>) -> ProjectView {
    ProjectView {
        path: root.to_path_buf(),
        read_only: false,
        git_dirs: vec![],
        protected: vec![],
        pinned: vec![],
        watched,
        watched_dirs: dirs,
        patterns: vec![],
        nested_hooks: vec![],
    }
}

/// Across file systems the file goes aside in its own directory, under a name the
/// session cannot take first (red-team 3, A3-15: the old name was predictable).
#[test]
fn across_file_systems_a_name_taken_first_does_not_keep_the_file_in_place() {
    let shm = Path::new("/dev/shm");
    let d = tempfile::tempdir().unwrap();
    let Ok(p) = tempfile::tempdir_in(shm) else {
        panic!("no /dev/shm to put a project on another file system than the session");
    };
    let proj = p.path().to_path_buf();
    std::fs::create_dir_all(proj.join(".git")).unwrap();
    std::fs::write(proj.join(".git/commondir"), "x\n").unwrap();
    // What the session would pre-create under the old, predictable names.
    for n in [
        "commondir.csbox-quarantined-0193abcd",
        "commondir.csbox-quarantined-0193abcdef",
    ] {
        std::fs::write(proj.join(".git").join(n), "decoy").unwrap();
    }
    let view = project(
        &proj,
        vec![Watched {
            path: proj.join(".git/commondir"),
            link: None,
        }],
        vec![],
    );
    let sess = d.path().join("s");
    std::fs::create_dir_all(&sess).unwrap();
    let fd = crate::fsutil::open_dir_nofollow(&sess).unwrap();
    let got = sweep(
        &view,
        SessionDir {
            fd: &fd,
            path: &sess,
            id: "0193abcdef",
        },
        None,
    );
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].error.is_none(), "{got:#?}");
    assert!(!proj.join(".git/commondir").exists());
    let to = got[0].moved_to.clone().unwrap();
    assert_eq!(std::fs::read_to_string(&to).unwrap(), "x\n", "{to:?}");
}

#[test]
fn what_the_session_made_is_moved_and_what_it_left_alone_stays() {
    let d = tempfile::tempdir().unwrap();
    let proj = d.path().join("p");
    let sess = d.path().join("s");
    std::fs::create_dir_all(proj.join(".git/worktrees/ok")).unwrap();
    std::fs::create_dir_all(proj.join(".git/worktrees/evil")).unwrap();
    std::fs::create_dir_all(proj.join(".git/worktrees/old")).unwrap();
    std::fs::create_dir_all(&sess).unwrap();
    std::fs::write(proj.join(".git/commondir"), "x\n").unwrap();
    std::fs::write(proj.join(".git/worktrees/ok/commondir"), "../..\n").unwrap();
    std::fs::write(proj.join(".git/worktrees/evil/commondir"), "../../x\n").unwrap();
    std::fs::write(proj.join(".git/worktrees/old/commondir"), "../../y\n").unwrap();
    // The user's own link, left alone; one the session replaced by a file.
    std::os::unix::fs::symlink("../shared/envrc", proj.join(".envrc")).unwrap();
    std::fs::write(proj.join(".mcp.json"), "{}").unwrap();
    // What `git init` makes, kept; a config that steers git, moved.
    std::fs::create_dir_all(proj.join(".git/hooks")).unwrap();
    std::fs::write(proj.join(".git/hooks/pre-commit.sample"), "").unwrap();
    std::fs::write(proj.join(".git/config"), "[core]\n\tbare = false\n").unwrap();
    std::fs::create_dir_all(proj.join(".git/modules/m/hooks")).unwrap();
    std::fs::write(proj.join(".git/modules/m/hooks/pre-commit"), "").unwrap();
    std::fs::write(
        proj.join(".git/modules/m/config"),
        "[core]\n\tfsmonitor = id\n",
    )
    .unwrap();
    // Behind a link: not reachable without following it, not touched.
    std::fs::create_dir_all(d.path().join("elsewhere")).unwrap();
    std::fs::write(d.path().join("elsewhere/settings.json"), "{}").unwrap();
    std::os::unix::fs::symlink(d.path().join("elsewhere"), proj.join(".claude")).unwrap();
    let w = |p: &str, link: Option<&str>| Watched {
        path: proj.join(p),
        link: link.map(PathBuf::from),
    };
    let view = project(
        &proj,
        vec![
            w(".git/commondir", None),
            w(".envrc", Some("../shared/envrc")),
            w(".mcp.json", Some("/home/u/.aws/credentials")),
            w(".claude/settings.json", None),
            w(".vscode", None),
            w(".git/config", None),
            w(".git/hooks", None),
        ],
        vec![
            WatchedDir {
                dir: proj.join(".git/worktrees"),
                known: vec!["old".into()],
                names: vec!["commondir".into(), "config.worktree".into()],
            },
            WatchedDir {
                dir: proj.join(".git/modules"),
                known: vec![],
                names: vec!["config".into(), "hooks".into()],
            },
        ],
    );
    let fd = crate::fsutil::open_dir_nofollow(&sess).unwrap();
    let got = sweep(
        &view,
        SessionDir {
            fd: &fd,
            path: &sess,
            id: "0193abcd",
        },
        None,
    );
    let paths: Vec<&Path> = got.iter().map(|q| q.path.as_path()).collect();
    assert_eq!(
        paths,
        vec![
            proj.join(".git/commondir"),
            proj.join(".mcp.json"),
            proj.join(".git/worktrees/evil/commondir"),
            proj.join(".git/modules/m/config"),
            proj.join(".git/modules/m/hooks"),
        ],
        "{got:#?}"
    );
    assert!(got
        .iter()
        .all(|q| q.error.is_none() && q.moved_to.as_ref().unwrap().starts_with(&sess)));
    assert_eq!(
        std::fs::read_to_string(sess.join("quarantine/0-commondir")).unwrap(),
        "x\n"
    );
    assert!(!proj.join(".git/commondir").exists());
    assert_eq!(
        std::fs::read_link(proj.join(".mcp.json")).unwrap(),
        Path::new("/home/u/.aws/credentials")
    );
    assert_eq!(
        got[1].link_restored.as_deref(),
        Some(Path::new("/home/u/.aws/credentials"))
    );
    assert!(std::fs::symlink_metadata(proj.join(".envrc"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(proj.join(".git/worktrees/ok/commondir").exists());
    assert!(proj.join(".git/worktrees/old/commondir").exists());
    assert!(d.path().join("elsewhere/settings.json").exists());
    assert!(
        proj.join(".git/config").exists() && proj.join(".git/hooks/pre-commit.sample").exists()
    );
}
