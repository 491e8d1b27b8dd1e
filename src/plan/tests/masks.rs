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
        projects: vec!["-home-u-proj".into(), "-home-u-other".into()],
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
        // Opaque: nothing another project has there, or gets later, shows (A7-11).
        // And whiteouts over what is there now, where no opaque mark can be kept.
        let mut w = whiteouts(l);
        w.sort();
        assert_eq!(
            w,
            [
                "file-history/u-theirs",
                "projects/-home-u-other",
                "todos/u-mine2-agent-x.json",
                "todos/u-theirs-agent-u-theirs.json"
            ],
            "{prof}"
        );
        for (dir, mode) in [
            ("projects", 0o700),
            ("file-history", 0o700),
            ("todos", 0o755),
        ] {
            assert!(
                l.entries.contains(&MaskEntry::OpaqueDir {
                    path: dir.into(),
                    mode
                }),
                "{prof}: {dir}"
            );
        }
        let shown: Vec<String> = l
            .entries
            .iter()
            .filter(|e| !matches!(e, MaskEntry::OpaqueDir { .. } | MaskEntry::Whiteout { .. }))
            .map(|e| e.path().display().to_string())
            .collect();
        assert_eq!(
            shown,
            [
                "projects/-home-u-proj",
                "file-history/u-mine",
                "todos/u-mine-agent-u-mine.json",
                "history.jsonl"
            ],
            "{prof}"
        );
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
