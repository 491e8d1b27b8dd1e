//! The mask layers as plan data: the home's whiteouts in a read-only layer above the
//! host's home (attack-3 A3-8), and `~/.claude`'s over other projects' conversations
//! with this project's prompt history only (A3-4).

use super::*;

fn layer_of<'a>(p: &'a Plan, dst: &str) -> Option<&'a MaskLayer> {
    p.mounts.iter().find_map(|m| match m {
        MountOp::Overlay { dst: d, masks, .. } if d == Path::new(dst) => masks.as_ref(),
        _ => None,
    })
}

fn whiteouts(l: &MaskLayer) -> Vec<String> {
    l.entries
        .iter()
        .filter_map(|e| match e {
            MaskEntry::Whiteout { path } => Some(path.display().to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_homes_masks_are_a_private_layer_above_the_host_home() {
    let mut c = Case::new("default", "/home/u/proj");
    c.facts
        .host
        .home_nodes
        .insert("/home/u/.config".into(), libc::S_IFDIR | 0o750);
    let p = c.plan();
    let l = layer_of(&p, "/home/u").expect("a mask layer");
    assert_eq!(
        l.place,
        MaskPlace::Private {
            runtime_dir: None,
            built: None
        },
        "not in the session dir: it may lie in the home"
    );
    let w = whiteouts(l);
    assert!(
        w.contains(&".pgpass".into())
            && w.contains(&".gnupg".into())
            && w.contains(&".config/gh".into()),
        "{w:?}"
    );
    assert!(
        !w.contains(&".ssh".into()) && !w.contains(&".netrc".into()),
        "they exist: mounted over"
    );
    let dir = l
        .entries
        .iter()
        .position(|e| {
            e == &MaskEntry::Dir {
                path: ".config".into(),
                mode: 0o750,
            }
        })
        .expect("the host's .config, its mode");
    let gh = l
        .entries
        .iter()
        .position(|e| e.path() == Path::new(".config/gh"))
        .unwrap();
    assert!(dir < gh, "parents first");
    c.facts.host.private_runtime = Some("/run/user/1000".into());
    let p = c.plan();
    assert!(
        matches!(&layer_of(&p, "/home/u").unwrap().place, MaskPlace::Private { runtime_dir: Some(r), .. } if r == Path::new("/run/user/1000"))
    );
    assert!(layer_of(&Case::new("strict", "/home/u/proj").plan(), "/home/u").is_none());
}

fn claude_lower() -> ClaudeLower {
    ClaudeLower {
        dirs: vec![
            ("projects".into(), 0o700),
            ("file-history".into(), 0o700),
            ("todos".into(), 0o755),
        ],
        file_history: vec!["u-mine".into(), "u-theirs".into()],
        todos: vec![
            "u-mine-agent-u-mine.json".into(),
            "u-theirs-agent-u-theirs.json".into(),
            "u-mine2-agent-x.json".into(),
        ],
        own: vec!["u-mine".into()],
        own_keys: vec!["-home-u-proj".into()],
        own_file_history: vec!["u-mine".into()],
        own_todos: vec![("u-mine-agent-u-mine.json".into(), 0o644, "[]".into())],
        history: Some(HistoryCopy {
            mode: 0o600,
            lines: "{\"project\":\"/home/u/proj\"}\n".into(),
            too_big: false,
            dropped: 0,
        }),
        referenced: vec![],
        referenced_links: vec![],
    }
}

#[test]
fn other_projects_conversations_and_prompts_are_masked_in_claudes_view() {
    for prof in ["default", "strict", "ci"] {
        let mut c = Case::new(prof, "/home/u/proj");
        c.facts.host.claude = Some(claude_lower());
        let p = c.plan();
        let l = layer_of(&p, "/home/u/.claude").expect("a mask layer");
        assert_eq!(l.place, MaskPlace::Session(CLAUDE_MASKS.into()));
        // No layer of the host's below (A8-1): nothing to mask, what is not in this
        // layer or mounted on it does not exist in the view.
        assert!(whiteouts(l).is_empty(), "{prof}");
        let shown: Vec<String> = l
            .entries
            .iter()
            .map(|e| e.path().display().to_string())
            .collect();
        let mut want: Vec<String> = [
            "projects",
            "projects/-home-u-proj",
            "file-history",
            "file-history/u-mine",
            "todos",
            "todos/u-mine-agent-u-mine.json",
            "history.jsonl",
        ]
        .map(String::from)
        .to_vec();
        // The mount points of the shared entries, then the login.
        want.extend(SHARED_READ_ONLY.iter().map(|s| s.to_string()));
        want.push(".credentials.json".into());
        assert_eq!(shown, want, "{prof}");
        for (dir, mode) in [
            ("projects", 0o700),
            ("file-history", 0o700),
            ("todos", 0o755),
        ] {
            assert!(
                l.entries.contains(&MaskEntry::Dir {
                    path: dir.into(),
                    mode
                }),
                "{prof}: {dir}"
            );
        }
        assert!(l.entries.contains(&MaskEntry::File {
            path: "settings.json".into(),
            mode: 0o600,
            content: String::new()
        }));
        // This project's entries: an overlay each, the host's entry below the session's.
        let nested: Vec<(String, String, String)> = p
            .mounts
            .iter()
            .filter_map(|m| match m {
                MountOp::Overlay {
                    dst,
                    lower: Source::Host(l),
                    upper: Source::Session(u),
                    masks: None,
                    ..
                } if dst.starts_with("/home/u/.claude/") => Some((
                    dst.display().to_string(),
                    l.display().to_string(),
                    u.display().to_string(),
                )),
                _ => None,
            })
            .collect();
        assert_eq!(
            nested,
            [
                (
                    "/home/u/.claude/projects/-home-u-proj".into(),
                    "/home/u/.claude/projects/-home-u-proj".into(),
                    "state/projects/-home-u-proj".into()
                ),
                (
                    "/home/u/.claude/file-history/u-mine".into(),
                    "/home/u/.claude/file-history/u-mine".into(),
                    "state/file-history/u-mine".into()
                ),
            ],
            "{prof}"
        );
        assert!(l.entries.contains(&MaskEntry::File {
            path: "history.jsonl".into(),
            mode: 0o600,
            content: "{\"project\":\"/home/u/proj\"}\n".into()
        }));
        assert!(p.notes.iter().all(|n| !n.contains("history.jsonl")));
    }
    let mut c = Case::new("default", "/home/u/proj");
    let mut big = claude_lower();
    big.history = Some(HistoryCopy {
        mode: 0o600,
        lines: String::new(),
        too_big: true,
        dropped: 0,
    });
    c.facts.host.claude = Some(big);
    assert!(c
        .plan()
        .notes
        .iter()
        .any(|n| n.contains("history.jsonl is larger than 64 MiB")));
    c.mode = StateMode::Fresh;
    assert!(
        layer_of(&c.plan(), "/home/u/.claude").is_none(),
        "a fresh state dir shows nothing of the host's"
    );
}

/// The overlay on `~/.claude` and what is mounted into it from the host.
fn host_entries_in_claude_view(p: &Plan) -> Vec<(String, bool)> {
    p.mounts
        .iter()
        .filter_map(|m| match m {
            MountOp::Bind {
                src: Source::Host(s),
                dst,
                flags,
                ..
            } if dst.starts_with("/home/u/.claude/") => {
                assert_eq!(s, dst);
                Some((
                    dst.strip_prefix("/home/u/.claude/")
                        .unwrap()
                        .display()
                        .to_string(),
                    flags.read_only,
                ))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn claudes_view_shows_of_the_host_only_the_allow_list() {
    let mut c = Case::new("default", "/home/u/proj");
    let mut lower = claude_lower();
    // What settings.json names: a status line script (shared) and Claude Code's logs
    // (its data of every project: not shared, and said so).
    lower.referenced = vec![
        ("statusline.sh".into(), NodeKind::File),
        ("logs".into(), NodeKind::Dir),
    ];
    c.facts.host.claude = Some(lower);
    // Claude Code run from the old local installer.
    c.exe = "/home/u/.claude/local/claude".into();
    let p = c.plan();
    let ov = p
        .mounts
        .iter()
        .find_map(|m| match m {
            MountOp::Overlay { dst, lower, .. } if dst == Path::new("/home/u/.claude") => {
                Some(lower)
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(ov, &Source::Session(CLAUDE_BASE.into()));
    let mut want: Vec<(String, bool)> = SHARED_READ_ONLY
        .iter()
        .map(|s| (s.to_string(), true))
        .collect();
    want.push((".credentials.json".into(), false));
    want.push(("local".into(), true));
    want.push(("statusline.sh".into(), true));
    assert_eq!(host_entries_in_claude_view(&p), want);
    let l = layer_of(&p, "/home/u/.claude").unwrap();
    for (path, dir) in [("local", true), ("statusline.sh", false), ("hooks", true)] {
        assert!(
            l.entries.iter().any(|e| e.path() == Path::new(path)
                && matches!(e, MaskEntry::Dir { .. }) == dir
                && matches!(e, MaskEntry::File { .. }) != dir),
            "{path}"
        );
    }
    assert!(!l.entries.iter().any(|e| e.path() == Path::new("logs")));
    assert!(
        p.notes.iter().any(|n| n.contains("~/.claude/logs")),
        "{:?}",
        p.notes
    );
    // Every other host source under ~/.claude is this project's conversations.
    for m in &p.mounts {
        if let MountOp::Overlay {
            lower: Source::Host(s),
            ..
        } = m
        {
            assert!(
                !s.starts_with("/home/u/.claude")
                    || s.starts_with("/home/u/.claude/projects/-home-u-proj")
                    || s.starts_with("/home/u/.claude/file-history/u-mine"),
                "{}",
                s.display()
            );
        }
    }
    // A profile that lists an entry the layer holds already: one mount point.
    c.prof.claude.read_only.push("history.jsonl".into());
    c.facts.insert(
        "/home/u/.claude/history.jsonl".into(),
        PathFact {
            real: "/home/u/.claude/history.jsonl".into(),
            kind: Some(NodeKind::File),
        },
    );
    let p = c.plan();
    let l = layer_of(&p, "/home/u/.claude").unwrap();
    assert_eq!(
        l.entries
            .iter()
            .filter(|e| e.path() == Path::new("history.jsonl"))
            .count(),
        1
    );
    // Without the host's ~/.claude facts (none there), still no host layer.
    c.facts.host.claude = None;
    assert!(layer_of(&c.plan(), "/home/u/.claude").is_some());
}
