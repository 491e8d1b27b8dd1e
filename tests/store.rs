//! The session store, through the real binary and real files.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use csbox::session::{Metadata, SessionId, Store};

fn store_for(env: &TestEnv) -> Store {
    Store::new(env.sessions_dir())
}

/// Child half of `sigkilled_supervisor_is_not_active_despite_its_active_link`: create a
/// session, link it active, hold its lock, print the id, then sleep until killed.
#[test]
fn lock_holder_child() {
    if !is_child() {
        return;
    }
    let store = Store::new(PathBuf::from(std::env::var("CSBOX_TEST_STORE").unwrap()));
    let meta = Metadata::new(
        SessionId::new(),
        Some("held".into()),
        "default",
        vec!["sleep".into()],
        "/".into(),
    );
    let mut s = store
        .create(meta, None, csbox::fsutil::Durability::Rename)
        .unwrap();
    s.meta.started = Some(std::time::SystemTime::now());
    s.meta.supervisor_pid = Some(std::process::id());
    s.write_meta(csbox::fsutil::Durability::Rename).unwrap();
    s.link_active().unwrap();
    println!("ID {}", s.id);
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn sigkilled_supervisor_is_not_active_despite_its_active_link() {
    if is_child() {
        return;
    }
    let env = TestEnv::new(As::me());
    let mut child = self_exec(
        "lock_holder_child",
        &[("CSBOX_TEST_STORE", env.sessions_dir().to_str().unwrap())],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let id = wait_for_marker(&mut child, "ID ");

    let v = env.ls_json();
    let rec = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap();
    assert_eq!(rec["state"], "active", "{rec}");
    let out = env.run(&["ls", "--active"]);
    assert!(stdout(&out).contains(&id[..8]));

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let link = env.sessions_dir().join("active").join(&id);
    assert!(
        link.symlink_metadata().is_ok(),
        "the stale active/ link is still there"
    );
    let v = env.ls_json();
    let rec = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap();
    assert_eq!(rec["state"], "crashed", "{rec}");
    assert_eq!(rec["active_link"], true);
    let out = env.run(&["ls", "--active"]);
    assert!(
        !stdout(&out).contains(&id[..8]),
        "a killed session must not be listed as active"
    );
}

#[test]
fn ls_json_parses_and_lists_newest_first() {
    let env = TestEnv::new(As::me());
    assert_eq!(
        env.ls_json(),
        serde_json::json!([]),
        "no store yet is an empty list"
    );
    let store = store_for(&env);
    let mut ids = Vec::new();
    for i in 0..3 {
        let meta = Metadata::new(
            SessionId::new(),
            Some(format!("s{i}")),
            "default",
            vec!["true".into()],
            "/".into(),
        );
        let s = store
            .create(meta, None, csbox::fsutil::Durability::Rename)
            .unwrap();
        ids.push(s.id.to_string());
        std::thread::sleep(Duration::from_millis(2));
    }
    let v = env.ls_json();
    let got: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    ids.reverse();
    assert_eq!(got, ids);
    assert_eq!(v[0]["meta"]["name"], "s2");
    assert_eq!(v[0]["state"], "created");
    assert_eq!(v[0]["empty"], true);

    let out = env.run(&["show", "s1", "--json"]);
    assert!(out.status.success());
    let one: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(one["id"], ids[1].as_str());
    let out = env.run(&["show", &ids[0][..13]]);
    assert!(stdout(&out).contains(&ids[0]), "a unique prefix resolves");
}

#[test]
fn crafted_session_ids_are_refused() {
    let env = TestEnv::new(As::me());
    std::fs::create_dir_all(env.sessions_dir()).unwrap();
    for bad in ["../x", "..", "a/b", "/etc", "../../home"] {
        for args in [
            vec!["show", bad],
            vec!["run", "--session", bad, "--", "true"],
        ] {
            let out = env.run(&args);
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            let err = stderr(&out);
            assert!(err.contains("invalid session id"), "{args:?}: {err}");
        }
    }
    let out = env.run(&["show", "0193ffff-0000-7000-8000-000000000000"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no session"));
}

/// Child half of `session_json_is_never_half_written`: rewrite session.json forever,
/// alternating two large versions.
#[test]
fn meta_writer_child() {
    if !is_child() {
        return;
    }
    let store = Store::new(PathBuf::from(std::env::var("CSBOX_TEST_STORE").unwrap()));
    let id = SessionId::parse(&std::env::var("CSBOX_TEST_ID").unwrap()).unwrap();
    let mut s = store.enter(&id).unwrap();
    println!("READY");
    let big = |c: char| Some(std::iter::repeat_n(c, 256 * 1024).collect::<String>());
    loop {
        s.meta.name = big('a');
        s.write_meta(csbox::fsutil::Durability::Rename).unwrap();
        s.meta.name = big('b');
        s.write_meta(csbox::fsutil::Durability::Rename).unwrap();
    }
}

#[test]
fn session_json_is_never_half_written() {
    if is_child() {
        return;
    }
    let env = TestEnv::new(As::me());
    let store = store_for(&env);
    let meta = Metadata::new(
        SessionId::new(),
        Some("start".into()),
        "default",
        vec![],
        "/".into(),
    );
    let s = store
        .create(meta, None, csbox::fsutil::Durability::Rename)
        .unwrap();
    let id = s.id.clone();
    drop(s);
    let file = env.sessions_dir().join(id.as_str()).join("session.json");
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for round in 0..40 {
        let mut child = self_exec(
            "meta_writer_child",
            &[
                ("CSBOX_TEST_STORE", env.sessions_dir().to_str().unwrap()),
                ("CSBOX_TEST_ID", id.as_str()),
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
        wait_for_marker(&mut child, "READY");
        // Mostly short and varied, to kill the writer at every point of a write; every
        // tenth round long, so a loaded machine still lets it write at all.
        let long = if round % 10 == 9 { 300_000 } else { 0 };
        std::thread::sleep(Duration::from_micros(
            500 + (round * 997 % 20000) as u64 + long,
        ));
        child.kill().unwrap();
        child.wait().unwrap();
        let bytes = std::fs::read(&file).unwrap();
        let m: Metadata = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "round {round}: session.json is torn ({e}), {} bytes",
                bytes.len()
            )
        });
        let name = m.name.unwrap();
        let first = name.chars().next().unwrap();
        assert!(
            name == "start" || name.chars().all(|c| c == first),
            "mixed content"
        );
        seen.insert(if name == "start" {
            "start".to_string()
        } else {
            format!("{first}x{}", name.len())
        });
        if Instant::now() > deadline {
            break;
        }
    }
    eprintln!("versions seen: {seen:?}");
    assert!(seen.len() >= 2, "the writer never got to write: {seen:?}");
    // Killed writers leave their temp file behind at most; never a second session.json.
    let names: Vec<String> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("session.json"))
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n == "session.json" || n.starts_with(".session.json.tmp-")),
        "{names:?}"
    );
}

#[test]
fn unimplemented_subcommands_say_so_with_exit_2_and_help_describes_them() {
    let env = TestEnv::new(As::me());
    let out = env.run(&["--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    for sub in [
        "run",
        "ls",
        "show",
        "gc",
        "update",
        "spec",
        "doctor",
        "profile",
        "completions",
        "merge",
        "enter",
        "stop",
        "rm",
    ] {
        assert!(help.contains(&format!("  {sub}")), "--help lists {sub}");
        let out = env.run(&[sub, "--help"]);
        assert!(out.status.success(), "{sub} --help");
        assert!(
            stdout(&out).contains("Examples:"),
            "{sub} --help has examples"
        );
    }
    let out = env.run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let out = env.run(&["ls", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
}

/// session.json is always replaced by tmp + rename, and `csbox run` syncs nothing, not even
/// the end record: losing it on power loss turns "exited" into "crashed", which gc keeps
/// and ages the same way, so a sync would protect nothing and cost every run (the
/// regression: 1423042 fdatasync'ed and fsync'ed the end record).
#[test]
fn csbox_run_syncs_nothing_not_even_the_end_record() {
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        cannot_run("strace is not installed (.ci/run installs it)");
        return;
    }
    let env = TestEnv::new(As::me());
    for (args, want) in [
        (&["run", "--", "true"][..], 0),
        (&["run", "--rm", "--", "true"][..], 0),
    ] {
        let trace = env.dir.path().join("trace");
        let out = env
            .command("strace")
            .args([
                "-f",
                "-qq",
                "-e",
                "trace=fsync,fdatasync,sync_file_range",
                "-e",
                "signal=none",
                "-o",
            ])
            .arg(&trace)
            .arg(env!("CARGO_BIN_EXE_csbox"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let t = std::fs::read_to_string(&trace).unwrap();
        let count = |call: &str| t.lines().filter(|l| l.contains(call)).count();
        assert_eq!(count(" fdatasync("), want, "{args:?}: {t}");
        assert_eq!(count(" fsync("), want, "{args:?}: {t}");
        assert_eq!(count("sync"), 2 * want, "{args:?}: {t}");
        assert!(t.lines().all(|l| l.ends_with("= 0")), "{t}");
    }
}
