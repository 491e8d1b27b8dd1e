//! A store and profiles as a hostile or broken world leaves them: FIFOs where files
//! should be, mode-000 dirs, planted links, a deleted working dir, values that overflow.
//! Nothing hangs, nothing is lost, nothing is followed, and bad input is exit 2 with a
//! message naming the file, the field or the flag. Each test is a regression test of
//! issue 19 and failed on 1423042.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(15);

/// `csbox run -- sh -c SCRIPT` in a project dir; the new session's id.
fn new_session(env: &TestEnv, script: &str) -> String {
    run_new_session(env, &["sh", "-c", script], &project_dir(env))
}

fn csbox_within(env: &TestEnv, args: &[&str]) -> std::process::Output {
    output_within(
        env.csbox(args).current_dir(project_dir(env)),
        LIMIT,
        &format!("[{}] csbox {args:?}", env.user.label()),
    )
}

/// Item 4: a FIFO as a session's `lock` hung `ls`, `show`, `gc` and the timer's gc
/// forever (an O_RDONLY open without O_NONBLOCK). Now every one returns at once, the
/// session is listed as corrupt, gc keeps and names it, `run --session` refuses it.
#[test]
fn a_fifo_as_a_lock_hangs_nothing_and_the_session_is_kept_as_corrupt() {
    for user in users() {
        let env = TestEnv::new(user);
        let id = new_session(&env, "echo hi >> ~/.claude/history.jsonl");
        let dir = env.sessions_dir().join(&id);
        std::fs::remove_file(dir.join("lock")).unwrap();
        nix::unistd::mkfifo(
            &dir.join("lock"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        env.chown_all(&dir);
        let out = csbox_within(&env, &["ls", "--json"]);
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v[0]["state"], "corrupt", "{v}");
        let out = csbox_within(&env, &["show", &id]);
        assert!(out.status.success());
        assert!(stdout(&out).contains("corrupt") && stdout(&out).contains("FIFO"));
        for args in [
            &["gc", "--dry-run", "--days", "0"][..],
            &["gc", "--days", "0"],
        ] {
            let out = csbox_within(&env, args);
            assert_eq!(out.status.code(), Some(125), "{args:?}: kept and named");
            assert!(stderr(&out).contains(&id), "{args:?}: {}", stderr(&out));
        }
        assert!(dir.join("state/history.jsonl").exists(), "nothing removed");
        let out = csbox_within(&env, &["run", "--session", &id, "--", "true"]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("not a regular file"));
        // A FIFO as session.json hangs nothing either.
        std::fs::remove_file(dir.join("lock")).unwrap();
        std::fs::remove_file(dir.join("session.json")).unwrap();
        nix::unistd::mkfifo(
            &dir.join("session.json"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        env.chown_all(&dir);
        assert_eq!(listed_state(&env, &id).as_deref(), Some("orphaned"));
        let out = csbox_within(&env, &["gc", "--dry-run"]);
        assert!(
            out.status.success(),
            "an orphan younger than an hour is kept"
        );
    }
}

/// Item 3: a mode-000 session dir was missing from `ls`, `show` said "no session", and gc
/// neither removed nor named it. Root reads any dir, so this is the unprivileged user's.
#[test]
fn a_mode_000_session_dir_is_listed_as_unreadable_and_named_by_gc() {
    let Some(user) = users().into_iter().find(|u| u.uid != 0) else {
        return cannot_run("no unprivileged user to run as (root reads a mode-000 dir)");
    };
    let env = TestEnv::new(user);
    let id = new_session(&env, "echo hi >> ~/.claude/history.jsonl");
    let dir = env.sessions_dir().join(&id);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o000)).unwrap();
    let v = env.ls_json();
    let rec = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str());
    let rec = rec.unwrap_or_else(|| panic!("{id} is missing from ls: {v}"));
    assert_eq!(rec["state"], "unreadable", "{rec}");
    assert!(rec["reason"].as_str().unwrap().contains("EACCES"), "{rec}");
    let out = csbox_within(&env, &["ls"]);
    assert!(stdout(&out).contains("unreadable"), "{}", stdout(&out));
    let out = csbox_within(&env, &["show", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("unreadable") && stdout(&out).contains("chmod 700"));
    let out = csbox_within(&env, &["gc", "--days", "0"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains(&id) && stderr(&out).contains("unreadable"));
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(dir.join("state/history.jsonl").exists(), "kept whole");
}

/// Item 12: `run --session` followed a `state` symlink into another directory and used it
/// as the session's layer. Now the link is refused (exit 2) and nothing lands there.
#[test]
fn run_session_never_follows_a_planted_state_link() {
    for user in users() {
        let env = TestEnv::new(user);
        let id = new_session(&env, "true");
        let dir = env.sessions_dir().join(&id);
        let victim = env.dir.path().join("victim");
        std::fs::create_dir_all(victim.join("sessions")).unwrap();
        std::fs::write(victim.join(".claude.json"), "{}").unwrap();
        std::fs::rename(dir.join("state"), dir.join("state.real")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("state")).unwrap();
        env.chown_all(env.dir.path());
        let out = csbox_within(
            &env,
            &[
                "run",
                "--session",
                &id,
                "--",
                "sh",
                "-c",
                "echo x > ~/.claude/planted",
            ],
        );
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("state"), "{}", stderr(&out));
        assert!(!victim.join("planted").exists(), "the link was followed");
    }
}

/// Item 5: a profile named by `extends` that is a FIFO blocked forever, `/dev/zero` read
/// until memory ran out. Regular files only, at most 1 MiB, else exit 2 naming it.
#[test]
fn extends_of_a_fifo_or_a_device_is_refused_without_hanging() {
    let env = TestEnv::new(As::me());
    let dir = env.dir.path().join("p");
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let big = dir.join("big.json");
    std::fs::write(&big, vec![b' '; (1 << 20) + 1]).unwrap();
    for target in [fifo.clone(), PathBuf::from("/dev/zero"), big] {
        let child = dir.join("child.json");
        std::fs::write(
            &child,
            format!("{{\"extends\": {:?}}}", target.display().to_string()),
        )
        .unwrap();
        for args in [
            &["profile", "show", child.to_str().unwrap()][..],
            &[
                "run",
                "--dry-run",
                "--profile",
                child.to_str().unwrap(),
                "--",
                "true",
            ],
        ] {
            let out = csbox_within(&env, args);
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            let err = stderr(&out);
            assert!(err.contains("field \"extends\""), "{err}");
            assert!(err.contains(&target.display().to_string()), "{err}");
        }
    }
}

/// Item 7: `"timeoutSecs": 9223372036854775807` aborted the supervisor mid-session
/// ("overflow when adding duration to instant", exit 134) while `--dry-run` and `profile
/// show` accepted it. Now every command refuses it at load, naming file, line and field.
#[test]
fn a_timeout_that_overflows_a_clock_is_refused_by_every_command_that_loads_it() {
    let env = TestEnv::new(As::me());
    let p = env.dir.path().join("huge.json");
    std::fs::write(&p, "{\n  \"timeoutSecs\": 9223372036854775807\n}\n").unwrap();
    let p = p.to_str().unwrap();
    for args in [
        &["profile", "show", p][..],
        &["run", "--dry-run", "--profile", p, "--", "true"],
        &["run", "--profile", p, "--", "true"],
        &["spec", "--profile", p, "--", "true"],
    ] {
        let out = csbox_within(&env, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("{p}:2:3: field \"timeoutSecs\"")),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(!env.sessions_dir().exists(), "no session was made");
}

/// Item 9: bad input exits 2 and names the flag or the profile: a missing `--bind` source
/// and a missing profile `roBind` source were exit 125 with "open bind source …", `--days
/// -1` was clap's "unexpected argument '-1'".
#[test]
fn bad_flags_and_missing_bind_sources_are_exit_2_naming_the_flag_or_profile() {
    let env = TestEnv::new(As::me());
    for (args, words) in [
        (
            &["gc", "--days", "-1"][..],
            &["--days", "whole number of days", "\"-1\""][..],
        ),
        (
            &["gc", "--days", "1.5"],
            &["--days", "whole number of days", "\"1.5\""],
        ),
        (
            &["run", "--bind", "/nonexistent/src", "--", "true"],
            &["--bind", "/nonexistent/src", "does not exist"],
        ),
        (
            &["run", "--ro-bind", "/nonexistent/src", "--", "true"],
            &["--ro-bind", "/nonexistent/src", "does not exist"],
        ),
    ] {
        let out = csbox_within(&env, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        for w in words {
            assert!(
                stderr(&out).contains(w),
                "{args:?}: {w:?} in {}",
                stderr(&out)
            );
        }
        assert!(
            !stderr(&out).contains("unexpected argument"),
            "{}",
            stderr(&out)
        );
    }
    let prof = env.dir.path().join("ro.json");
    std::fs::write(&prof, "{\"roBind\": [\"/nonexistent/data\"]}").unwrap();
    let out = csbox_within(
        &env,
        &["run", "--profile", prof.to_str().unwrap(), "--", "true"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&prof.display().to_string()) && err.contains("\"roBind\""),
        "{err}"
    );
    assert!(!env.sessions_dir().exists(), "no session was made");
}

/// Item 10: a failed setup step named itself only by number ("setup step 4294901768 =>
/// EPERM"). A limit the kernel refuses (put in the plan by the test hook, as a profile
/// cannot pass load with it) is named with its call, value and what to do.
#[test]
fn a_refused_rlimit_names_the_call_not_a_step_number() {
    for user in users() {
        let env = TestEnv::new(user);
        let out = output_within(
            env.csbox(&["run", "--", "true"])
                .current_dir(project_dir(&env))
                .env(
                    "CSBOX_TEST_PLAN_PATCH",
                    r#"{"rlimits": [["nofile", 99999999]]}"#,
                ),
            LIMIT,
            "csbox run with an impossible rlimit",
        );
        assert_eq!(out.status.code(), Some(125));
        let err = stderr(&out);
        assert!(
            err.contains("setrlimit(RLIMIT_NOFILE, 99999999) => EPERM"),
            "{err}"
        );
        assert!(
            err.contains("ulimit -H") && !err.contains("setup step"),
            "{err}"
        );
    }
}

/// Item 11: `ls`, `gc` and `show` refused to run from a deleted working directory (they
/// do not need it), and a `CLAUDE_ROOT` that is a regular file said "File exists".
#[test]
fn ls_gc_and_show_work_from_a_deleted_working_dir_and_a_file_as_claude_root_is_named() {
    for user in users() {
        let env = TestEnv::new(user);
        let id = new_session(&env, "true");
        let gone = env.dir.path().join("gone");
        std::fs::create_dir(&gone).unwrap();
        env.chown_all(&gone);
        // A shell in the dir, which then removes it: csbox starts in a deleted dir.
        for args in [&["ls"][..], &["gc", "--dry-run"], &["show", &id]] {
            let script = format!(
                "cd {} && rmdir {} && exec \"$0\" \"$@\"",
                sh_quote(&gone),
                sh_quote(&gone)
            );
            let mut cmd = env.command("sh");
            cmd.arg("-c").arg(&script).arg(CSBOX).args(args);
            let out = output_within(&mut cmd, LIMIT, &format!("csbox {args:?} in a deleted dir"));
            assert!(out.status.success(), "{args:?}: {}", stderr(&out));
            assert!(
                stdout(&out).contains(&id[..8]) || args[0] == "gc",
                "{args:?}"
            );
            std::fs::create_dir(&gone).unwrap();
            env.chown_all(&gone);
        }
        let file = env.dir.path().join("claude-root-file");
        std::fs::write(&file, "x").unwrap();
        let out = output_within(
            env.csbox(&["run", "--", "true"])
                .current_dir(project_dir(&env))
                .env("CLAUDE_ROOT", &file),
            LIMIT,
            "csbox run with CLAUDE_ROOT a file",
        );
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("CLAUDE_ROOT") && err.contains("regular file"),
            "{err}"
        );
        assert!(!err.contains("File exists"), "{err}");
    }
}
