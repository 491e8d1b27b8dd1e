//! `csbox gc` on real stores made by real `csbox run` sessions, through the real binary.

mod common;

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use serde_json::Value;

const DAY: Duration = Duration::from_secs(86_400);

/// `csbox run -- CMD…` as the env's user; returns the new session's id.
fn run_session(env: &TestEnv, cmd: &[&str]) -> String {
    run_new_session(env, cmd, &env.home)
}

/// A session whose state holds a transcript (not empty), ended now.
fn busy_session(env: &TestEnv) -> String {
    run_session(
        env,
        &[
            "sh",
            "-c",
            "echo '{\"display\":\"hi\"}' >> ~/.claude/history.jsonl",
        ],
    )
}

fn session_dir(env: &TestEnv, id: &str) -> PathBuf {
    env.sessions_dir().join(id)
}

/// Make a session look `days` idle: its recorded end time and every mtime in it.
fn age_session(env: &TestEnv, id: &str, days: u32) {
    let dir = session_dir(env, id);
    let meta = dir.join("session.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    let ended = SystemTime::now() - DAY * days;
    v["ended"] = csbox::session::meta::format_time(ended).into();
    std::fs::write(&meta, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    backdate(&dir, DAY * days);
}

fn gc(env: &TestEnv, args: &[&str]) -> (Output, Value) {
    let mut a = vec!["gc", "--json"];
    a.extend(args);
    let out = env.run(&a);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("gc --json is not JSON ({e}): {}", stdout(&out)));
    (out, v)
}

fn removed_ids(v: &Value) -> Vec<String> {
    v["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

fn reasons_of(v: &Value, id: &str) -> Vec<String> {
    v["removed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .map(|r| {
            r["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["reason"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn list_has(v: &Value, key: &str, id: &str) -> bool {
    v[key].as_array().unwrap().iter().any(|x| x == id)
}

/// `csbox run -- CMD…` in the background; returns once `csbox ls` says it is active.
#[allow(clippy::zombie_processes)] // the caller gets the child and waits for it
fn start_active(env: &TestEnv, cmd: &[&str]) -> (Child, String) {
    let before = listed_ids(env);
    let mut args = vec!["run", "--"];
    args.extend(cmd);
    let mut child = env
        .csbox(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let active: Vec<String> = env
            .ls_json()
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["state"] == "active")
            .map(|r| r["id"].as_str().unwrap().to_string())
            .filter(|i| !before.contains(i))
            .collect();
        if let Some(id) = active.into_iter().next() {
            return (child, id);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("csbox run -- {cmd:?} never became active");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A session whose supervisor was SIGKILLed: started, never ended, lock free, stale link.
/// Its state is not empty. It is crashed, not orphaned: it has a valid record.
fn crashed_session(env: &TestEnv) -> String {
    let (mut child, id) = start_active(
        env,
        &["sh", "-c", "echo x >> ~/.claude/history.jsonl; sleep 30"],
    );
    let history = session_dir(env, &id).join("state/history.jsonl");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !history.exists() {
        assert!(
            Instant::now() < deadline,
            "the session never wrote its history"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(listed_state(env, &id).as_deref(), Some("crashed"));
    id
}

/// A session whose record is not JSON (an orphan), unchanged for two hours.
fn orphaned_session(env: &TestEnv) -> String {
    let id = busy_session(env);
    std::fs::write(session_dir(env, &id).join("session.json"), "{not json").unwrap();
    backdate(&session_dir(env, &id), Duration::from_secs(7200));
    assert_eq!(listed_state(env, &id).as_deref(), Some("orphaned"));
    id
}

#[test]
fn old_young_empty_orphaned_and_crashed_sessions_are_each_handled_right() {
    let env = TestEnv::new(As::me());
    let old = busy_session(&env);
    age_session(&env, &old, 10);
    let young = busy_session(&env);
    age_session(&env, &young, 3);
    let empty = run_session(&env, &["true"]);
    let crashed = crashed_session(&env);
    let broken = orphaned_session(&env);
    let fresh_broken = busy_session(&env);
    std::fs::write(
        session_dir(&env, &fresh_broken).join("session.json"),
        "{not json",
    )
    .unwrap();
    let link = env.sessions_dir().join("active").join(&crashed);
    assert!(
        link.symlink_metadata().is_ok(),
        "a killed run leaves its active/ link"
    );

    let (out, v) = gc(&env, &[]);
    assert!(out.status.success());
    assert_eq!(reasons_of(&v, &old), ["old"]);
    assert_eq!(reasons_of(&v, &empty), ["empty"]);
    assert_eq!(reasons_of(&v, &broken), ["orphaned"]);
    assert!(list_has(&v, "kept_young", &young), "{v}");
    assert!(
        list_has(&v, "kept_young", &crashed),
        "a crashed session is kept: {v}"
    );
    assert!(
        list_has(&v, "kept_young", &fresh_broken),
        "an orphan younger than an hour: {v}"
    );
    assert_eq!(v["removed"].as_array().unwrap().len(), 3);
    assert!(v["bytes_reclaimed"].as_u64().unwrap() > 0);
    for id in [&old, &empty, &broken] {
        assert!(!session_dir(&env, id).exists(), "{id} removed");
    }
    assert!(session_dir(&env, &young)
        .join("state/history.jsonl")
        .exists());
    assert!(session_dir(&env, &crashed)
        .join("state/history.jsonl")
        .exists());
    assert!(
        link.symlink_metadata().is_err(),
        "stale active/ link pruned"
    );
    assert_eq!(listed_ids(&env).len(), 3);

    // --days 2 makes the 3-day-old one old; the crashed one ages the same way.
    backdate(&session_dir(&env, &crashed), DAY * 3);
    let (_, v) = gc(&env, &["--days", "2"]);
    let mut gone = removed_ids(&v);
    gone.sort();
    let mut want = vec![young, crashed];
    want.sort();
    assert_eq!(gone, want);
}

/// `csbox spec --new` makes a session for a bundle that runc runs without csbox: nothing
/// holds its lock and its layer starts empty, yet a gc timer firing before the job writes
/// must not pull its layer away. It goes by age only.
#[test]
fn a_session_made_for_an_oci_bundle_is_not_removed_as_empty() {
    let env = TestEnv::new(As::me());
    let out = env.run(&["spec", "--new", "--", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let exported = listed_ids(&env).pop().expect("spec --new made a session");
    assert_eq!(listed_state(&env, &exported).as_deref(), Some("created"));
    let empty = run_session(&env, &["true"]);

    let (out, v) = gc(&env, &[]);
    assert!(out.status.success());
    assert_eq!(removed_ids(&v), std::slice::from_ref(&empty), "{v}");
    assert!(list_has(&v, "kept_young", &exported), "{v}");
    assert!(session_dir(&env, &exported).join("state").is_dir());
    let (_, v) = gc(&env, &["--empty"]);
    assert!(removed_ids(&v).is_empty(), "{v}");

    backdate(&session_dir(&env, &exported), DAY * 8);
    let (_, v) = gc(&env, &[]);
    assert_eq!(reasons_of(&v, &exported), ["old"], "{v}");
}

/// What the exit walk moved out of the project lives only in the session's quarantine:
/// such a session is not empty, whatever its layers hold (red-team 7, A7-10: `gc` and its
/// timer removed it as empty, and with it the only copy of what was moved).
#[test]
fn a_session_holding_a_quarantine_is_never_removed_as_empty() {
    for user in users() {
        let env = TestEnv::new(user);
        let proj = env.home.join("proj");
        std::fs::create_dir_all(&proj).unwrap();
        env.chown_all(&env.home);
        // Made aside and renamed in whole: the live watch moves a new `.vscode` at once,
        // and a `mkdir .vscode` then a write into it loses that race now and then.
        let id = run_new_session(
            &env,
            &[
                "sh",
                "-c",
                "mkdir v && echo '{}' > v/tasks.json && mv v .vscode",
            ],
            &proj,
        );
        assert!(
            !proj.join(".vscode").exists(),
            "[{}] the exit walk moved what the session made",
            env.user.label()
        );
        let q = session_dir(&env, &id).join("quarantine");
        assert!(
            q.is_dir(),
            "[{}] the session holds a quarantine",
            env.user.label()
        );
        let plain = run_session(&env, &["true"]);
        let (out, v) = gc(&env, &["--empty"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(removed_ids(&v), std::slice::from_ref(&plain), "{v}");
        assert!(
            q.is_dir(),
            "[{}] the quarantine is still there",
            env.user.label()
        );
        let out = env.run(&["ls", "--json"]);
        let ls: Value = serde_json::from_slice(&out.stdout).unwrap();
        let me = ls
            .as_array()
            .and_then(|a| a.iter().find(|s| s["id"] == id.as_str()))
            .unwrap_or_else(|| panic!("{ls}"));
        assert_eq!(me["empty"], false, "{me}");
    }
}

#[test]
fn empty_and_orphaned_flags_restrict_the_run_to_those_kinds() {
    let env = TestEnv::new(As::me());
    let old = busy_session(&env);
    age_session(&env, &old, 30);
    let empty = run_session(&env, &["true"]);
    let orphan = orphaned_session(&env);
    let crashed = crashed_session(&env);

    let (_, v) = gc(&env, &["--empty"]);
    assert_eq!(removed_ids(&v), [empty]);
    assert!(list_has(&v, "kept_unselected", &old), "{v}");
    assert!(list_has(&v, "kept_unselected", &orphan), "{v}");
    assert!(list_has(&v, "kept_unselected", &crashed), "{v}");

    let (_, v) = gc(&env, &["--orphaned"]);
    assert_eq!(removed_ids(&v), [orphan]);

    let (_, v) = gc(&env, &["--crashed"]);
    assert_eq!(removed_ids(&v), [crashed]);

    let (_, v) = gc(&env, &["--empty", "--days", "7"]);
    assert_eq!(removed_ids(&v), [old]);
}

#[test]
fn gc_never_removes_an_active_session_even_with_days_0() {
    for user in users() {
        let env = TestEnv::new(user);
        let (mut child, id) = start_active(&env, &["sleep", "30"]);
        // Its files are old, it is empty: only the lock protects it.
        backdate(&session_dir(&env, &id), DAY * 100);
        for args in [
            &["--days", "0"][..],
            &["--days", "0", "--empty", "--orphaned"],
            &["--max-size", "0"],
        ] {
            let (out, v) = gc(&env, args);
            assert!(out.status.success(), "{}", stderr(&out));
            assert!(list_has(&v, "kept_active", &id), "{v}");
            assert!(removed_ids(&v).is_empty(), "{v}");
            assert_eq!(listed_state(&env, &id).as_deref(), Some("active"));
        }
        let out = env.run(&["gc", "--days", "0"]);
        assert!(stdout(&out).contains("kept 1 active"), "{}", stdout(&out));
        child.kill().unwrap();
        child.wait().unwrap();
        let (_, v) = gc(&env, &["--days", "0"]);
        assert_eq!(removed_ids(&v), [id], "removed once it is no longer active");
    }
}

/// Launches race gc: new sessions (`csbox run`), and re-entries of existing inactive
/// ones (`csbox run --session`), the case where gc and a launcher want the same lock.
/// A session removed while its supervisor runs makes that run fail when it records its
/// end, so every launch that got its session must exit 0.
#[test]
fn a_race_of_gc_against_200_concurrent_launches_removes_nothing_active() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let env = Arc::new(TestEnv::new(As::me()));
    let reentry: Vec<String> = (0..10).map(|_| busy_session(&env)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let gc_loop = {
        let (env, stop) = (env.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut runs, mut removed) = (0, 0);
            while !stop.load(Ordering::Relaxed) || runs == 0 {
                let out = env
                    .csbox(&["gc", "--days", "0", "--json"])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "gc failed in the race: {}",
                    stderr(&out)
                );
                let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                removed += v["removed"].as_array().unwrap().len();
                runs += 1;
            }
            (runs, removed)
        })
    };
    let launches: Vec<(bool, Child)> = (0..200)
        .map(|i| {
            let cmd = ["sh", "-c", "echo x >> ~/.claude/history.jsonl; sleep 0.2"];
            let mut args = vec!["run"];
            let reenter = i % 4 == 0;
            if reenter {
                args.extend(["--session", reentry[i % reentry.len()].as_str()]);
            }
            args.push("--");
            args.extend(cmd);
            let child = env
                .csbox(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (reenter, child)
        })
        .collect();
    let mut started = 0;
    for (reenter, child) in launches {
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        if out.status.success() {
            started += 1;
            continue;
        }
        // Re-entering a session that gc holds or already removed is refused up front.
        let refused = [
            "is active (or being removed",
            "removed while csbox opened it",
            "no session",
        ];
        assert!(
            reenter && out.status.code() == Some(2) && refused.iter().any(|r| err.contains(r)),
            "a launch failed in the race (reenter={reenter}, {:?}): {err}",
            out.status
        );
    }
    stop.store(true, Ordering::Relaxed);
    let (runs, removed) = gc_loop.join().unwrap();
    eprintln!("{started} launches ran, {runs} gc runs removed {removed} sessions");
    assert!(started >= 150, "new sessions always start: {started}");
    assert!(removed > 0 && runs > 1, "gc really raced the launches");
}

/// Everything under `p` with its metadata, no-follow (atime excluded: reads move it).
fn listing(p: &Path) -> BTreeMap<PathBuf, String> {
    fn go(root: &Path, p: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let m = p.symlink_metadata().unwrap();
        let target = std::fs::read_link(p)
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        out.insert(
            p.strip_prefix(root).unwrap().to_path_buf(),
            format!(
                "{:o} {}:{} {} ino={} nlink={} mtime={}.{} ctime={}.{} -> {target}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.size(),
                m.ino(),
                m.nlink(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec()
            ),
        );
        if m.is_dir() {
            for e in std::fs::read_dir(p).unwrap() {
                go(root, &e.unwrap().path(), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    go(p, p, &mut out);
    out
}

#[test]
fn dry_run_changes_nothing() {
    let env = TestEnv::new(As::me());
    let old = busy_session(&env);
    age_session(&env, &old, 10);
    let empty = run_session(&env, &["true"]);
    let orphan = orphaned_session(&env);
    let crashed = crashed_session(&env);
    let leftover = env
        .sessions_dir()
        .join(".trash-0193ffff-0000-7000-8000-000000000000");
    std::fs::create_dir_all(leftover.join("state/x")).unwrap();
    std::fs::create_dir(session_dir(&env, &old).join("state/locked")).unwrap();
    std::fs::set_permissions(
        session_dir(&env, &old).join("state/locked"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    backdate(&leftover, DAY);
    let before = listing(env.dir.path());

    let out = env.run(&["gc", "--dry-run", "--days", "0"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for (id, why) in [
        (&old, "old (idle 10 days)"),
        (&empty, "empty"),
        (&orphan, "orphaned"),
        (&crashed, "old (idle 0 days)"),
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("would remove {id}")) && l.contains(why)),
            "{id} {why}: {text}"
        );
    }
    assert!(text.contains("would remove .trash-0193ffff"), "{text}");
    assert!(
        text.contains(&format!("would prune active/{crashed}")),
        "{text}"
    );
    let (out, v) = gc(&env, &["--dry-run", "--days", "0"]);
    assert!(out.status.success());
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["removed"].as_array().unwrap().len(), 4);

    let after = listing(env.dir.path());
    assert_eq!(before.len(), after.len());
    for (k, b) in &before {
        assert_eq!(Some(b), after.get(k), "{} changed", k.display());
    }
}

#[test]
fn planted_symlinks_to_a_victim_outside_are_never_followed() {
    let env = TestEnv::new(As::me());
    let victim = env.dir.path().join("victim");
    std::fs::create_dir_all(victim.join("deep/er")).unwrap();
    std::fs::write(victim.join("precious"), "keep me").unwrap();
    std::fs::write(victim.join("deep/er/also"), "keep me too").unwrap();
    let store = env.sessions_dir();
    let s = busy_session(&env);
    age_session(&env, &s, 30);
    let state = session_dir(&env, &s).join("state");
    std::fs::create_dir_all(state.join("a/b/c")).unwrap();
    for (link, to) in [
        (state.join("link"), victim.clone()),
        (state.join("a/b/c/link"), victim.clone()),
        (state.join("a/file-link"), victim.join("precious")),
        (
            store.join("0193ffff-0000-7000-8000-0000000000aa"),
            victim.clone(),
        ),
        (store.join("evil"), victim.clone()),
        (store.join(".trash-evil"), victim.clone()),
        (store.join(".new-evil"), victim.clone()),
        (
            store.join("active/0193ffff-0000-7000-8000-0000000000bb"),
            victim.clone(),
        ),
    ] {
        std::os::unix::fs::symlink(&to, &link).unwrap();
    }
    backdate(&store, DAY * 30);
    let before = listing(&victim);

    let (out, v) = gc(&env, &["--days", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(removed_ids(&v), std::slice::from_ref(&s));
    assert!(!session_dir(&env, &s).exists());
    assert_eq!(listing(&victim), before, "the victim is untouched");
    for planted in [
        "0193ffff-0000-7000-8000-0000000000aa",
        "evil",
        ".trash-evil",
        ".new-evil",
    ] {
        assert!(
            store.join(planted).symlink_metadata().is_ok(),
            "{planted} is not gc's to remove"
        );
    }
    assert!(
        store
            .join("active/0193ffff-0000-7000-8000-0000000000bb")
            .symlink_metadata()
            .is_err(),
        "a stale active/ link is pruned as a link"
    );
}

#[test]
fn mode_000_dirs_are_removed_as_root_and_as_an_unprivileged_user() {
    for user in users() {
        let env = TestEnv::new(user);
        let s = busy_session(&env);
        let dir = session_dir(&env, &s);
        // The kernel leaves overlayfs' work/work mode 000 after a real run.
        let work = dir.join("work/work");
        assert!(work.is_dir(), "a real run leaves {}", work.display());
        assert_eq!(work.symlink_metadata().unwrap().mode() & 0o777, 0);
        let state = dir.join("state");
        std::fs::create_dir_all(state.join("closed/inner")).unwrap();
        std::fs::write(state.join("closed/inner/f"), "x").unwrap();
        std::fs::create_dir_all(state.join("readonly")).unwrap();
        std::fs::write(state.join("readonly/f"), "x").unwrap();
        env.chown_all(&state);
        for (d, mode) in [("closed/inner", 0), ("closed", 0), ("readonly", 0o500)] {
            std::fs::set_permissions(state.join(d), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let (out, v) = gc(&env, &["--days", "0"]);
        assert!(out.status.success(), "[{}] {}", user.label(), stderr(&out));
        assert_eq!(removed_ids(&v), std::slice::from_ref(&s));
        assert!(!dir.exists(), "[{}] removed", user.label());
        assert!(
            std::fs::read_dir(env.sessions_dir()).unwrap().all(|e| {
                !e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".trash-")
            }),
            "nothing left in the trash"
        );
    }
}

#[test]
fn a_very_deep_state_tree_is_removed_under_a_low_fd_limit() {
    let env = TestEnv::new(As::me());
    let s = busy_session(&env);
    let state = session_dir(&env, &s).join("state");
    // 5000 levels: deeper than PATH_MAX allows by path, and than 64 fds allow one each.
    let mut fd: OwnedFd = std::fs::File::open(&state).unwrap().into();
    for _ in 0..5000 {
        nix::sys::stat::mkdirat(Some(fd.as_raw_fd()), "d", nix::sys::stat::Mode::S_IRWXU).unwrap();
        let raw = nix::fcntl::openat(
            Some(fd.as_raw_fd()),
            "d",
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        // SAFETY: openat just returned this fd; it is owned from here on.
        fd = unsafe { OwnedFd::from_raw_fd(raw) };
    }
    drop(fd);
    let mut cmd = env.csbox(&["gc", "--days", "0", "--json"]);
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(removed_ids(&v), std::slice::from_ref(&s));
    assert!(!session_dir(&env, &s).exists());
}

#[test]
fn leftover_new_and_trash_dirs_go_only_when_old_and_unlocked() {
    let env = TestEnv::new(As::me());
    let store = env.sessions_dir();
    let _keep = busy_session(&env); // makes the store
    let mk = |name: &str, age: Duration| {
        let d = store.join(name);
        std::fs::create_dir_all(d.join("state/sub")).unwrap();
        std::fs::write(d.join("state/sub/f"), "x").unwrap();
        std::fs::write(d.join("lock"), "").unwrap();
        backdate(&d, age);
        d
    };
    let old_trash = mk(".trash-0193ffff-0000-7000-8000-000000000001", DAY);
    let old_new = mk(".new-0193ffff-0000-7000-8000-000000000002", DAY);
    let fresh = mk(
        ".trash-0193ffff-0000-7000-8000-000000000003",
        Duration::from_secs(60),
    );
    let held = mk(".new-0193ffff-0000-7000-8000-000000000004", DAY);
    let lock = std::fs::File::open(held.join("lock")).unwrap();
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .unwrap();

    let (out, v) = gc(&env, &[]);
    assert!(out.status.success());
    let gone: Vec<&str> = v["leftovers_removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert_eq!(
        gone,
        [
            ".new-0193ffff-0000-7000-8000-000000000002",
            ".trash-0193ffff-0000-7000-8000-000000000001"
        ]
    );
    assert!(!old_trash.exists() && !old_new.exists());
    assert!(
        fresh.exists(),
        "younger than an hour: maybe a run in progress"
    );
    assert!(held.exists(), "locked: a run in progress");
}

#[test]
fn max_size_removes_the_oldest_inactive_sessions_until_under() {
    let env = TestEnv::new(As::me());
    let mut by_age = Vec::new();
    for days in [4, 3, 2, 1] {
        let s = busy_session(&env);
        std::fs::write(session_dir(&env, &s).join("state/blob"), vec![7u8; 1 << 20]).unwrap();
        age_session(&env, &s, days);
        by_age.push(s);
    }
    // ~1 MiB each; keep at most 2.5 MiB: the two oldest go.
    let (out, v) = gc(&env, &["--days", "30", "--max-size", "2.5M"]);
    assert!(out.status.success());
    let mut removed = removed_ids(&v);
    removed.sort();
    let mut expect = by_age[..2].to_vec();
    expect.sort();
    assert_eq!(removed, expect);
    assert_eq!(reasons_of(&v, &by_age[0]), ["over_size"]);
    let out = env.run(&["gc", "--max-size", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("invalid size"));
}

/// The README says a session with a mount inside is "left in place": before anything is
/// renamed or removed (1423042 renamed it to `.trash-<id>` and deleted all around the
/// mount). A bind mount of the same file system: only the mount id tells it apart.
#[test]
fn a_session_with_a_mount_inside_is_left_whole_and_named() {
    if As::me().uid != 0 {
        return cannot_run("mounting needs root");
    }
    let env = TestEnv::new(As::me());
    let victim = env.dir.path().join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("precious"), "keep").unwrap();
    let s = busy_session(&env);
    let mnt = session_dir(&env, &s).join("state/mnt");
    std::fs::create_dir(&mnt).unwrap();
    let st = std::process::Command::new("mount")
        .args(["--bind"])
        .arg(&victim)
        .arg(&mnt)
        .status();
    if !st.is_ok_and(|s| s.success()) {
        return cannot_run("mount --bind failed");
    }
    let (dry, dv) = gc(&env, &["--dry-run", "--days", "0"]);
    let (out, v) = gc(&env, &["--days", "0"]);
    let whole = session_dir(&env, &s).join("state/history.jsonl").exists();
    for m in [
        mnt.clone(),
        env.sessions_dir().join(format!(".trash-{s}/state/mnt")),
    ] {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&m)
            .status();
    }
    assert_eq!(out.status.code(), Some(125), "a mount inside is an error");
    assert_eq!(
        dry.status.code(),
        Some(125),
        "the dry run says so too: {dv}"
    );
    let err = v["errors"][0]["error"].as_str().unwrap();
    assert!(
        err.contains(&format!("{s}/state/mnt"))
            && err.contains("left whole")
            && err.contains("umount"),
        "{err}"
    );
    assert!(stderr(&out).contains(&s), "the error names the session");
    assert!(removed_ids(&v).is_empty(), "{v}");
    assert!(whole, "the session is left whole, its history included");
    assert!(
        !env.sessions_dir().join(format!(".trash-{s}")).exists(),
        "not renamed to .trash"
    );
    assert_eq!(
        std::fs::read_to_string(victim.join("precious")).unwrap(),
        "keep"
    );
    // Unmounted, the next gc removes it.
    let (out, v) = gc(&env, &["--days", "0"]);
    assert!(out.status.success(), "{v}");
    assert_eq!(removed_ids(&v), [s]);
}

#[test]
fn json_report_parses_for_dry_run_and_real_run() {
    let env = TestEnv::new(As::me());
    let (out, v) = gc(&env, &["--dry-run"]);
    assert!(out.status.success(), "no store yet is fine");
    assert_eq!(v["removed"], serde_json::json!([]));
    let empty = run_session(&env, &["true"]);
    for dry in [true, false] {
        let args: &[&str] = if dry { &["--dry-run"] } else { &[] };
        let (out, v) = gc(&env, args);
        assert!(out.status.success());
        assert_eq!(v["dry_run"], dry);
        assert_eq!(v["old_after_days"], 7);
        assert_eq!(v["removed"][0]["id"], empty.as_str());
        assert_eq!(v["removed"][0]["reasons"][0]["reason"], "empty");
        assert!(v["removed"][0]["bytes"].as_u64().unwrap() > 0);
        assert!(v["removed"][0]["last_activity"]
            .as_str()
            .unwrap()
            .ends_with('Z'));
        for k in [
            "kept_active",
            "kept_young",
            "kept_unselected",
            "leftovers_removed",
            "errors",
        ] {
            assert!(v[k].is_array(), "{k}");
        }
    }
}

#[test]
fn timer_units_install_verify_and_uninstall() {
    let env = TestEnv::new(As::me());
    let unit_dir = env.home.join(".config/systemd/user");
    // No systemctl on PATH: the commands are printed, never run against a real manager.
    let out = env
        .csbox(&[
            "gc",
            "--install-timer",
            "--calendar",
            "daily",
            "--days",
            "30",
        ])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("systemctl --user enable --now csbox-gc.timer"));
    let service = std::fs::read_to_string(unit_dir.join("csbox-gc.service")).unwrap();
    let exe = std::fs::canonicalize(CSBOX).unwrap();
    // One word of a unit file: quoted when it has a space (a checkout path may).
    let word = |p: &Path| {
        let s = p.display().to_string();
        if s.contains(' ') {
            format!("\"{s}\"")
        } else {
            s
        }
    };
    assert!(
        service.contains(&format!("ExecStart={} gc --days 30", word(&exe))),
        "{service}"
    );
    assert!(
        service.contains(&format!("ReadWritePaths=-{}", word(&env.sessions_dir()))),
        "{service}"
    );
    let timer = std::fs::read_to_string(unit_dir.join("csbox-gc.timer")).unwrap();
    assert!(timer.contains("OnCalendar=daily"));

    match std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit_dir.join("csbox-gc.service"))
        .arg(unit_dir.join("csbox-gc.timer"))
        .output()
    {
        Ok(v) => {
            let msgs = stderr(&v) + &stdout(&v);
            assert!(
                v.status.success() && msgs.trim().is_empty(),
                "systemd-analyze verify: {msgs}"
            );
        }
        Err(e) => cannot_run(&format!(
            "systemd-analyze is missing ({e}): apt-get install systemd"
        )),
    }

    let out = env.run(&["gc", "--print-units"]);
    assert!(
        stdout(&out).contains("### csbox-gc.service")
            && stdout(&out).contains("### csbox-gc.timer")
    );

    let out = env
        .csbox(&["gc", "--uninstall-timer"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!unit_dir.join("csbox-gc.service").exists());
    assert!(!unit_dir.join("csbox-gc.timer").exists());
}
