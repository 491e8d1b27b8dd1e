//! Never lose a session: a `csbox run` that dies at any step, or whose disk fills, leaves
//! a session that `ls` lists, gc keeps until it is old, and `run --session` re-enters.
//! The crashes are real SIGKILLs: the supervisor kills itself at a named point through
//! the debug-build hook `CSBOX_TEST_CRASH_AT` (src/fault.rs).

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use common::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);
const DAY: Duration = Duration::from_secs(86_400);

fn csbox_within(env: &TestEnv, args: &[&str]) -> Output {
    output_within(
        env.csbox(args).current_dir(project_dir(env)),
        LIMIT,
        &format!("[{}] csbox {args:?}", env.user.label()),
    )
}

fn gc_json(env: &TestEnv, args: &[&str]) -> Value {
    let mut a = vec!["gc", "--json"];
    a.extend(args);
    let out = csbox_within(env, &a);
    assert!(out.status.success(), "gc {args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ids_in(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().or(r["id"].as_str()).unwrap().to_string())
        .collect()
}

/// `csbox run` with `CSBOX_TEST_CRASH_AT=point`: it must die of its own SIGKILL.
fn run_crashing(env: &TestEnv, point: &str, args: &[&str]) -> Output {
    let out = output_within(
        env.csbox(args)
            .current_dir(project_dir(env))
            .env("CSBOX_TEST_CRASH_AT", point),
        LIMIT,
        &format!("[{}] csbox {args:?} crashing at {point}", env.user.label()),
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{point}: csbox was to kill itself there: {}",
        stderr(&out)
    );
    out
}

/// Item 1: a session whose supervisor was killed was an orphan that the next gc removed,
/// whatever its age, transcripts included. It is crashed: listed as such, kept and aged
/// like an exited one (by the newest mtime in its layers), removed when old or with
/// `--crashed`. A directory with no valid record is an orphan, kept for an hour.
#[test]
fn a_crashed_session_is_kept_listed_as_crashed_and_removed_only_when_old() {
    for user in users() {
        let env = TestEnv::new(user);
        let script = "echo '{\"display\":\"work\"}' >> ~/.claude/history.jsonl";
        let _ = run_crashing(&env, "end:exited", &["run", "--", "sh", "-c", script]);
        let id = listed_ids(&env)
            .pop()
            .expect("the crashed session is listed");
        let dir = env.sessions_dir().join(&id);
        assert_eq!(listed_state(&env, &id).as_deref(), Some("crashed"));
        let out = csbox_within(&env, &["ls"]);
        assert!(stdout(&out).contains("crashed"), "{}", stdout(&out));
        for args in [&[][..], &["--orphaned"], &["--empty"], &["--days", "1"]] {
            let v = gc_json(&env, args);
            assert!(ids_in(&v, "removed").is_empty(), "gc {args:?} kept it: {v}");
        }
        assert!(
            dir.join("state/history.jsonl").exists(),
            "its work is there"
        );
        // An orphan (no valid record) younger than an hour is kept too.
        let orphan = run_new_session(&env, &["sh", "-c", script], &project_dir(&env));
        std::fs::remove_file(env.sessions_dir().join(&orphan).join("session.json")).unwrap();
        assert_eq!(listed_state(&env, &orphan).as_deref(), Some("orphaned"));
        assert!(ids_in(&gc_json(&env, &[]), "removed").is_empty());
        // Aged: both go, the crashed one as old.
        backdate(&dir, DAY * 8);
        backdate(&env.sessions_dir().join(&orphan), Duration::from_secs(7200));
        let v = gc_json(&env, &["--dry-run"]);
        let reasons: Vec<String> = v["removed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r["id"].as_str().unwrap(),
                    r["reasons"][0]["reason"]
                )
            })
            .collect();
        assert!(reasons.contains(&format!("{id} \"old\"")), "{reasons:?}");
        assert!(
            reasons.contains(&format!("{orphan} \"orphaned\"")),
            "{reasons:?}"
        );
        // --crashed removes crashed ones whatever their age, and only those.
        let _ = run_crashing(&env, "end:exited", &["run", "--", "sh", "-c", script]);
        let fresh = listed_ids(&env)[0].clone();
        let v = gc_json(&env, &["--crashed"]);
        let mut gone = ids_in(&v, "removed");
        gone.sort();
        let mut want = vec![id.clone(), fresh];
        want.sort();
        assert_eq!(gone, want, "{v}");
        assert_eq!(
            listed_ids(&env),
            [orphan],
            "the orphan is no crashed session"
        );
    }
}

/// Where the crash left the session: its id, and whether it is still being made.
fn find_session(env: &TestEnv, before: &[String]) -> Option<(String, bool)> {
    let listed: Vec<String> = listed_ids(env)
        .into_iter()
        .filter(|i| !before.contains(i))
        .collect();
    if let Some(id) = listed.first() {
        return Some((id.clone(), false));
    }
    std::fs::read_dir(env.sessions_dir())
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find_map(|n| n.strip_prefix(".new-").map(|id| (id.to_string(), true)))
}

/// The crash points of a new session, in the order `csbox run` reaches them.
const NEW_SESSION_POINTS: &[&str] = &[
    "create:mkdir",
    "create:locked",
    "create:skeleton",
    // The new session's record is written in place (its dir is not published yet): the
    // first atomic write of a new session is its end record.
    "create:recorded",
    "create:published",
    "run:linked",
    "run:prepared",
    "run:started",
    "end:exited",
    "end:unlinked",
    "atomic-write:tmp-written#1",
    "end:recorded",
];

/// The done-when of issue 19: SIGKILL at each step of session creation and teardown,
/// then `ls`, `gc --dry-run` and `run --session` on what is left. No session is lost or
/// unlisted, no `.new-*` outlives gc's grace, nothing hangs (every command has a
/// deadline), and what is left can be entered again.
#[test]
fn a_sigkill_at_each_step_of_creation_and_teardown_loses_no_session() {
    for user in users() {
        let env = TestEnv::new(user);
        let script = "echo '{\"display\":\"work\"}' >> ~/.claude/history.jsonl";
        for point in NEW_SESSION_POINTS {
            let before = listed_ids(&env);
            run_crashing(&env, point, &["run", "--", "sh", "-c", script]);
            let out = csbox_within(&env, &["ls"]);
            assert!(out.status.success());
            let dry = gc_json(&env, &["--dry-run"]);
            assert!(
                ids_in(&dry, "removed").is_empty(),
                "{point}: gc keeps all: {dry}"
            );
            match find_session(&env, &before) {
                None => panic!("{point}: no trace of the session"),
                Some((id, true)) => {
                    // Killed before it was published: the command never ran, nothing
                    // was lost; gc removes the half-made dir once it is an hour old.
                    let new = env.sessions_dir().join(format!(".new-{id}"));
                    assert!(!ids_in(&dry, "leftovers_removed").contains(&format!(".new-{id}")));
                    backdate(&new, Duration::from_secs(7200));
                    let v = gc_json(&env, &[]);
                    assert!(
                        ids_in(&v, "leftovers_removed").contains(&format!(".new-{id}")),
                        "{point}: {v}"
                    );
                    assert!(!new.exists(), "{point}");
                }
                Some((id, false)) => {
                    let (json, word) = match *point {
                        "end:recorded" => ("exited", "exited 0"),
                        _ => ("crashed", "crashed"),
                    };
                    assert_eq!(listed_state(&env, &id).as_deref(), Some(json), "{point}");
                    let shown = csbox_within(&env, &["show", &id]);
                    assert!(stdout(&shown).contains(word), "{point}: {}", stdout(&shown));
                    let out =
                        csbox_within(&env, &["run", "--session", &id, "--", "sh", "-c", script]);
                    assert!(
                        out.status.success(),
                        "{point}: re-entered: {}",
                        stderr(&out)
                    );
                    let shown = csbox_within(&env, &["show", &id]);
                    assert!(stdout(&shown).contains("exited 0"), "{point}");
                    let history = env.sessions_dir().join(&id).join("state/history.jsonl");
                    assert!(
                        history.exists(),
                        "{point}: the re-entered run wrote its history"
                    );
                }
            }
        }
        reentry_and_removal_crashes(&env, script);
    }
}

/// The same for a re-entered session (its start record rewritten) and for `--rm`.
fn reentry_and_removal_crashes(env: &TestEnv, script: &str) {
    let id = run_new_session(env, &["sh", "-c", script], &project_dir(env));
    for point in [
        "atomic-write:tmp-written#1",
        "run:started",
        "end:exited",
        "atomic-write:tmp-written#2",
    ] {
        run_crashing(env, point, &["run", "--session", &id, "--", "true"]);
        // Killed before its start record was renamed into place, the session still
        // holds the record of its last run: exited (or crashed, after an earlier point).
        let want: &[&str] = match point {
            "atomic-write:tmp-written#1" => &["exited", "crashed"],
            _ => &["crashed"],
        };
        let state = listed_state(env, &id).unwrap();
        assert!(want.contains(&state.as_str()), "re-entry {point}: {state}");
        let dry = gc_json(env, &["--dry-run"]);
        assert!(
            ids_in(&dry, "removed").is_empty(),
            "re-entry {point}: {dry}"
        );
        assert!(env
            .sessions_dir()
            .join(&id)
            .join("state/history.jsonl")
            .exists());
    }
    let before = listed_ids(env);
    run_crashing(env, "remove:trashed", &["run", "--rm", "--", "true"]);
    assert_eq!(
        listed_ids(env),
        before,
        "a session being removed on purpose is not listed"
    );
    let trash: Vec<PathBuf> = std::fs::read_dir(env.sessions_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".trash-")
        })
        .collect();
    assert_eq!(trash.len(), 1, "{trash:?}");
    backdate(&trash[0], Duration::from_secs(7200));
    gc_json(env, &[]);
    assert!(!trash[0].exists(), "gc removes the trash after its grace");
}

/// The disk-full case of issue 19: the store is a 4 MiB tmpfs; the command fills it and
/// exits 7. csbox cannot write the end record (ENOSPC), says so in one warning, exits 7,
/// and the session is crashed, not lost: `ls` lists it, gc keeps it. The tmpfs lives in
/// a private mount namespace (`unshare -m` as root; a non-root test runner uses `unshare
/// -Urm`, root of its own user namespace), and every csbox call runs inside it as the
/// test's user (setpriv for the unprivileged one), because it vanishes with it.
#[test]
fn a_full_disk_gives_back_the_commands_status_and_the_session_is_kept_as_crashed() {
    for user in users() {
        let env = TestEnv::new(user);
        let proj = project_dir(&env);
        let store = env.dir.path().join("small-store");
        std::fs::create_dir(&store).unwrap();
        let out_dir = env.dir.path().join("out");
        std::fs::create_dir(&out_dir).unwrap();
        env.chown_all(env.dir.path());
        let as_user = if As::me() == env.user {
            String::new()
        } else {
            format!(
                "setpriv --reuid={} --regid={} --clear-groups --",
                user.uid, user.gid
            )
        };
        let o = out_dir.display();
        let script = format!(
            r#"set -u
mount -t tmpfs -o size=4m,mode=0755 csbox-full "{store}" || exit 90
chown {uid}:{gid} "{store}"
cd "{proj}"
{as_user} "{csbox}" run -- sh -c 'head -c 16M /dev/zero > ~/.claude/big; exit 7' 2> "{o}/run.err"
echo $? > "{o}/run.rc"
{as_user} "{csbox}" ls --json > "{o}/ls.json" 2>&1
{as_user} "{csbox}" gc --json > "{o}/gc.json" 2>&1; echo $? > "{o}/gc.rc"
{as_user} "{csbox}" ls --json > "{o}/ls2.json" 2>&1
"#,
            store = store.display(),
            uid = user.uid,
            gid = user.gid,
            proj = proj.display(),
            csbox = CSBOX,
        );
        let unshare: &[&str] = if As::me().uid == 0 {
            &["-m"]
        } else {
            &["-Urm"]
        };
        let mut cmd = std::process::Command::new("unshare");
        cmd.args(unshare)
            .args(["--propagation", "private", "sh", "-c", &script])
            .env_clear()
            .env("HOME", &env.home)
            .env("SESSIONS_DIR", &store)
            .env("CSBOX_NO_UPDATE", "1")
            .env("PATH", std::env::var_os("PATH").unwrap());
        let out = output_within(&mut cmd, Duration::from_secs(60), "the disk-full run");
        if out.status.code() == Some(90) {
            return cannot_run(&format!("cannot mount a tmpfs here: {}", stderr(&out)));
        }
        let read = |n: &str| std::fs::read_to_string(out_dir.join(n)).unwrap();
        let err = read("run.err");
        eprintln!("[{}] run.err: {err}", user.label());
        assert_eq!(
            read("run.rc").trim(),
            "7",
            "the command's own status: {err}"
        );
        let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("csbox:")).collect();
        assert_eq!(warnings.len(), 1, "one warning: {err}");
        assert!(
            warnings[0].contains("end record") && warnings[0].contains("crashed"),
            "{err}"
        );
        let ls: Value = serde_json::from_str(&read("ls.json")).unwrap();
        assert_eq!(ls.as_array().unwrap().len(), 1, "{ls}");
        assert_eq!(ls[0]["state"], "crashed", "{ls}");
        assert_eq!(read("gc.rc").trim(), "0", "{}", read("gc.json"));
        let gc: Value = serde_json::from_str(&read("gc.json")).unwrap();
        assert!(ids_in(&gc, "removed").is_empty(), "gc keeps it: {gc}");
        let ls2: Value = serde_json::from_str(&read("ls2.json")).unwrap();
        assert_eq!(ls2[0]["state"], "crashed", "still there after gc: {ls2}");
    }
}
