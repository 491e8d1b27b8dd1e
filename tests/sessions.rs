//! The commands people use on sessions (issue 15): `enter`, `stop`, `rm`, the `ls` list
//! (unique prefixes, states, flags, names, escaping, width), `--dry-run` naming no
//! session, gc and named sessions, the end-of-session line, shell completion. Real
//! sessions, the real binary, as root and as the unprivileged user.

mod common;

use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn within(env: &TestEnv, args: &[&str]) -> Output {
    output_within(
        env.csbox(args).current_dir(project_dir(env)),
        LIMIT,
        &format!("[{}] csbox {args:?}", env.user.label()),
    )
}

/// `csbox run --name NAME -- sh -c SCRIPT` in the background, once it runs.
fn running(env: &TestEnv, name: &str, script: &str) -> (String, Child) {
    let before = listed_ids(env);
    let child = env
        .csbox(&["run", "--name", name, "--", "sh", "-c", script])
        .current_dir(project_dir(env))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    loop {
        if let Some(id) = listed_ids(env).into_iter().find(|i| !before.contains(i)) {
            // Running once its supervisor serves the control socket (and, for a script
            // that says so, once it got past its traps: `touch ready`).
            let ready = !script.contains("touch ready") || project_dir(env).join("ready").exists();
            if env.sessions_dir().join(&id).join("control.sock").exists() && ready {
                if script.contains("touch ready") {
                    let _ = std::fs::remove_file(project_dir(env).join("ready"));
                }
                return (id, child);
            }
        }
        assert!(t.elapsed() < LIMIT, "session {name} never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn state_of(env: &TestEnv, id: &str) -> Option<String> {
    listed_state(env, id)
}

/// `csbox enter` joins the session: the same /tmp, pid namespace (pid 1 is csbox's), the
/// same ~/.claude layer and working directory, with no capability, no_new_privs and the
/// seccomp filter; its exit does not end the session; a stopped session is refused.
#[test]
fn enter_joins_a_running_session_with_what_its_command_has() {
    for user in users() {
        let env = TestEnv::new(user);
        let script =
            "echo m > /tmp/m; readlink /proc/self/ns/pid > /tmp/ns; echo L > ~/.claude/from-cmd; \
                      touch /tmp/ready; while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 5";
        let (id, child) = running(&env, "live", script);
        let t = Instant::now();
        while !within(&env, &["enter", "live", "--", "test", "-e", "/tmp/ready"])
            .status
            .success()
        {
            assert!(t.elapsed() < LIMIT, "the session never wrote /tmp/ready");
        }
        let inside = "cat /tmp/m /tmp/ns; readlink /proc/self/ns/pid; cat ~/.claude/from-cmd; echo E > ~/.claude/from-enter; \
                      grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; tr '\\0' ' ' < /proc/1/cmdline; echo; pwd; \
                      echo \"id=$CSBOX_SESSION_ID\"; exit 3";
        let out = within(&env, &["enter", &id[..13], "--", "sh", "-c", inside]);
        assert_eq!(
            out.status.code(),
            Some(3),
            "the command's own status: {}",
            stderr(&out)
        );
        let o = stdout(&out);
        let lines: Vec<&str> = o.lines().collect();
        assert_eq!(lines[0], "m", "the session's private /tmp");
        assert!(
            lines[1].starts_with("pid:[") && lines[1] == lines[2],
            "the same pid namespace: {o}"
        );
        assert_eq!(lines[3], "L", "the same ~/.claude layer");
        for want in [
            "CapEff:\t0000000000000000",
            "CapPrm:\t0000000000000000",
            "CapBnd:\t0000000000000000",
            "NoNewPrivs:\t1",
            "Seccomp:\t2",
        ] {
            assert!(lines.contains(&want), "[{}] {want}: {o}", user.label());
        }
        assert!(
            o.contains(&format!("{} run --name live", env!("CARGO_BIN_EXE_csbox"))),
            "its pid 1 is the session's: {o}"
        );
        assert!(
            lines.contains(&project_dir(&env).canonicalize().unwrap().to_str().unwrap()),
            "its working directory: {o}"
        );
        assert!(
            lines.contains(&format!("id={id}").as_str()),
            "its environment: {o}"
        );
        assert_eq!(
            std::fs::read_to_string(env.sessions_dir().join(&id).join("state/from-enter")).unwrap(),
            "E\n"
        );
        assert_eq!(
            state_of(&env, &id).as_deref(),
            Some("active"),
            "an entered process's exit does not end the session"
        );
        // No command: the session's $SHELL (none here: /bin/sh), reading our stdin.
        let mut sh = env.csbox(&["enter", "live"]);
        sh.current_dir(project_dir(&env))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut c = sh.spawn().unwrap();
        use std::io::Write;
        c.stdin
            .take()
            .unwrap()
            .write_all(b"echo via-shell; touch /tmp/go; exit 4\n")
            .unwrap();
        let out = c.wait_with_output().unwrap();
        assert_eq!(
            (out.status.code(), stdout(&out).trim()),
            (Some(4), "via-shell")
        );
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(5),
            "the session ended by itself: {}",
            stderr(&out)
        );
        let out = within(&env, &["enter", "live", "--", "true"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains("is not running (exited 5)"),
            "{}",
            stderr(&out)
        );
    }
}

/// Only the session's owner can enter it: its user namespace is theirs.
#[test]
fn enter_and_stop_of_another_users_session_are_refused_naming_its_owner() {
    let Some(user) = users().into_iter().find(|u| u.uid != 0) else {
        return cannot_run("not root: no other user's session to try");
    };
    let env = TestEnv::new(user);
    let (id, mut child) = running(&env, "theirs", "sleep 30");
    for verb in ["enter", "stop"] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_csbox"));
        cmd.args([verb, &id])
            .env_clear()
            .env("HOME", &env.home)
            .env("PATH", "/usr/bin:/bin")
            .current_dir(&env.home);
        let out = output_within(&mut cmd, LIMIT, "root");
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("is uid {}'s", user.uid))
                && stderr(&out).contains("owns its namespaces"),
            "{}",
            stderr(&out)
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The control socket is trusted only from the supervisor session.json names (the pid
/// reuse case: a session whose lock some other process holds, with a socket it serves),
/// and only a socket: a FIFO there hangs nothing.
#[test]
fn enter_trusts_only_the_recorded_supervisor_and_never_hangs_on_a_fifo() {
    let env = TestEnv::new(*users().last().unwrap());
    let id = run_new_session(&env, &["true"], &project_dir(&env));
    let dir = env.sessions_dir().join(&id);
    let helper = format!(
        "import socket, fcntl, os, sys, time\n\
         os.chdir({dir:?})\n\
         lock = open('lock', 'r+'); fcntl.flock(lock, fcntl.LOCK_EX)\n\
         s = socket.socket(socket.AF_UNIX); s.bind('control.sock'); s.listen(1)\n\
         print('ready', flush=True); time.sleep(30)\n",
        dir = dir.display().to_string()
    );
    let python = Path::new("/usr/bin/python3");
    if !python.exists() {
        return cannot_run("no /usr/bin/python3 to serve an impostor socket");
    }
    let mut imp = env
        .command(python)
        .args(["-c", &helper])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(imp.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    let out = within(&env, &["enter", &id, "--", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("(pid {})", imp.id()))
            && stderr(&out).contains("is not session"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(dir.join("control.sock")).unwrap();
    nix::unistd::mkfifo(
        &dir.join("control.sock"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    env.chown_all(&dir);
    let out = within(&env, &["stop", &id]);
    assert!(
        stderr(&out).contains("is a FIFO, not csbox's socket"),
        "{}",
        stderr(&out)
    );
    imp.kill().unwrap();
    imp.wait().unwrap();
}

#[test]
fn stop_sends_sigterm_then_sigkill_after_the_grace() {
    for user in users() {
        let env = TestEnv::new(user);
        let (id, child) = running(
            &env,
            "polite",
            "trap 'echo got-term; exit 7' TERM; touch ready; while :; do sleep 0.05; done",
        );
        let out = within(&env, &["stop", "polite"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            stdout(&out).trim(),
            format!("stopped session {id}: exited 7")
        );
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            (out.status.code(), stdout(&out).trim()),
            (Some(7), "got-term")
        );

        let (id, child) = running(
            &env,
            "stubborn",
            "trap '' TERM; touch ready; while :; do sleep 0.05; done",
        );
        let t = Instant::now();
        let out = within(&env, &["stop", &id, "--grace", "1s"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(t.elapsed() >= Duration::from_secs(1) && t.elapsed() < Duration::from_secs(10));
        assert_eq!(
            stdout(&out).trim(),
            format!("stopped session {id}: killed by SIGKILL (SIGKILL after 1s)")
        );
        assert_eq!(child.wait_with_output().unwrap().status.code(), Some(137));
        assert_eq!(state_of(&env, &id).as_deref(), Some("exited"));

        let out = within(&env, &["stop", "polite"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains("is not running"));
        assert_eq!(
            within(&env, &["stop", "polite", "--grace", "soon"])
                .status
                .code(),
            Some(2)
        );
    }
}

#[test]
fn rm_removes_sessions_refuses_running_ones_and_run_rm_refuses_an_existing_session() {
    for user in users() {
        let env = TestEnv::new(user);
        let proj = project_dir(&env);
        let a = run_new_session(&env, &["true"], &proj);
        let b = run_new_session(&env, &["true"], &proj);
        let out = within(&env, &["rm", &a, "--dry-run"]);
        assert!(
            out.status.success() && stdout(&out).starts_with(&format!("would remove session {a}")),
            "{}",
            stdout(&out)
        );
        assert!(listed_ids(&env).contains(&a));
        let v: Value =
            serde_json::from_slice(&within(&env, &["rm", &a, "--dry-run", "--json"]).stdout)
                .unwrap();
        assert_eq!(
            (v["dry_run"].as_bool(), v["removed"][0]["id"].as_str()),
            (Some(true), Some(a.as_str())),
            "{v}"
        );
        let out = within(&env, &["run", "--session", &a, "--rm", "--", "true"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains(&format!("csbox rm {a}")),
            "{}",
            stderr(&out)
        );
        assert!(listed_ids(&env).contains(&a), "nothing was deleted");
        let (r, mut child) = running(&env, "busy", "sleep 30");
        let out = within(&env, &["rm", &r]);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains("is running: not removed"));
        let v: Value =
            serde_json::from_slice(&within(&env, &["rm", &a, &b, "--json"]).stdout).unwrap();
        assert_eq!(v["removed"].as_array().unwrap().len(), 2, "{v}");
        assert_eq!(
            listed_ids(&env),
            vec![r.clone()],
            "only the running one is left"
        );
        assert_eq!(
            within(&env, &["rm", "no-such-session"]).status.code(),
            Some(2)
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// Copy a finished session to a crafted id (session.json rewritten to match).
fn plant(env: &TestEnv, from: &str, id: &str, edit: impl Fn(&mut Value)) {
    let src = env.sessions_dir().join(from);
    let dst = env.sessions_dir().join(id);
    assert!(std::process::Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&dst)
        .status()
        .unwrap()
        .success());
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(dst.join("session.json")).unwrap()).unwrap();
    v["id"] = id.into();
    edit(&mut v);
    std::fs::write(
        dst.join("session.json"),
        serde_json::to_vec_pretty(&v).unwrap(),
    )
    .unwrap();
    env.chown_all(&dst);
}

#[test]
fn ls_shows_unique_prefixes_every_command_takes_and_an_ambiguous_one_lists_its_candidates() {
    let env = TestEnv::new(*users().last().unwrap());
    let real = run_new_session(&env, &["true"], &project_dir(&env));
    let (x, y) = (
        "0193a1b2-0aaa-7000-8000-000000000001",
        "0193a1b2-0abb-7000-8000-000000000002",
    );
    plant(&env, &real, x, |_| {});
    plant(&env, &real, y, |_| {});
    let ls = stdout(&within(&env, &["ls"]));
    let firsts: Vec<&str> = ls
        .lines()
        .skip(1)
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert!(
        firsts.contains(&"0193a1b2-0aa") && firsts.contains(&"0193a1b2-0ab"),
        "12 characters tell them apart: {ls}"
    );
    assert!(
        firsts.iter().any(|f| real.starts_with(f) && f.len() >= 8),
        "{ls}"
    );
    for p in ["0193a1b2-0aa", "0193a1b2-0ab"] {
        let out = within(&env, &["show", p, "--json"]);
        assert!(out.status.success(), "{p}: {}", stderr(&out));
    }
    let out = within(&env, &["show", "0193a1b2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("matches 2 sessions")
            && stderr(&out).contains(x)
            && stderr(&out).contains(y),
        "{}",
        stderr(&out)
    );
}

#[test]
fn ls_states_are_running_exited_killed_crashed_created_and_empty_is_a_flag() {
    for user in users() {
        let env = TestEnv::new(user);
        let proj = project_dir(&env);
        let empty = run_new_session(&env, &["true"], &proj);
        let exited = {
            let before = listed_ids(&env);
            assert_eq!(
                within(
                    &env,
                    &["run", "--", "sh", "-c", "echo x > ~/.claude/x; exit 42"]
                )
                .status
                .code(),
                Some(42)
            );
            listed_ids(&env)
                .into_iter()
                .find(|i| !before.contains(i))
                .unwrap()
        };
        let hup = {
            let before = listed_ids(&env);
            assert_eq!(
                within(&env, &["run", "--", "sh", "-c", "kill -HUP $$"])
                    .status
                    .code(),
                Some(129)
            );
            listed_ids(&env)
                .into_iter()
                .find(|i| !before.contains(i))
                .unwrap()
        };
        let (crashed, mut c) = running(&env, "doomed", "sleep 30");
        c.kill().unwrap(); // SIGKILL of the supervisor
        c.wait().unwrap();
        let (live, mut l) = running(&env, "live", "sleep 30");
        let out = within(&env, &["spec", "--new"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let created = listed_ids(&env)
            .into_iter()
            .find(|i| ![&empty, &exited, &hup, &crashed, &live].contains(&i))
            .unwrap();
        let ls = stdout(&within(&env, &["ls"]));
        assert!(
            ls.lines()
                .next()
                .unwrap()
                .split_whitespace()
                .eq(["ID", "NAME", "STATE", "AGE", "SIZE", "FLAGS", "COMMAND"]),
            "{ls}"
        );
        let row = |id: &str| {
            let line = ls
                .lines()
                .skip(1)
                .find(|l| id.starts_with(l.split(' ').next().unwrap()));
            line.unwrap_or_else(|| panic!("{id} in {ls}")).to_string()
        };
        for (id, state) in [
            (&empty, "exited 0"),
            (&exited, "exited 42"),
            (&hup, "killed by SIGHUP"),
            (&crashed, "crashed"),
            (&live, "running"),
            (&created, "created"),
        ] {
            assert!(
                row(id).contains(&format!("  {state}  ")),
                "[{}] {state}: {}",
                user.label(),
                row(id)
            );
        }
        assert!(
            row(&empty).contains(" empty,merged ") || row(&empty).contains(" empty "),
            "{}",
            row(&empty)
        );
        assert!(!row(&exited).contains("empty"), "{}", row(&exited));
        l.kill().unwrap();
        l.wait().unwrap();
    }
}

#[test]
fn names_are_checked_and_records_are_printed_escaped() {
    let env = TestEnv::new(*users().last().unwrap());
    for bad in ["", " ", "a\nb", "red\u{1b}[31m", "a/b"] {
        let out = within(&env, &["run", "--name", bad, "--", "true"]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(stderr(&out).contains("--name"), "{}", stderr(&out));
    }
    assert!(listed_ids(&env).is_empty(), "no session was made");
    let real = run_new_session(&env, &["true"], &project_dir(&env));
    let evil = "0193a1b2-0ccc-7000-8000-000000000003";
    plant(&env, &real, evil, |v| {
        v["name"] = "\u{1b}[2Jgotcha\nfake line\u{202e}".into();
        v["command"] = serde_json::json!(["sh", "\u{1b}]0;title\u{7}"]);
        v["cwd"] = "/p\u{1b}[1A".into();
    });
    for args in [&["ls"][..], &["ls", "--wide"], &["show", evil]] {
        let out = within(&env, args);
        assert!(out.status.success(), "{}", stderr(&out));
        let o = stdout(&out);
        assert!(
            !o.contains('\u{1b}') && !o.contains('\u{7}') && !o.contains('\u{202e}'),
            "{args:?}: {o:?}"
        );
        assert!(
            !o.contains("\nfake line"),
            "{args:?}: no line of the record's own"
        );
        assert!(
            o.contains("\\u{1b}[2Jgotcha\\u{a}fake line\\u{202e}"),
            "{args:?}: {o}"
        );
    }
}

#[test]
fn ls_cuts_the_command_to_the_width_and_wide_shows_it_all() {
    let env = TestEnv::new(*users().last().unwrap());
    let long = format!("echo {}", "y".repeat(150));
    run_new_session(&env, &["sh", "-c", &long], &project_dir(&env));
    let ls = |args: &[&str]| {
        stdout(&output_within(
            env.csbox(args).env("COLUMNS", "80"),
            LIMIT,
            "ls",
        ))
    };
    let cut = ls(&["ls"]);
    for l in cut.lines() {
        assert!(
            l.chars().count() <= 80,
            "{l:?} is {} wide",
            l.chars().count()
        );
    }
    assert!(cut.lines().nth(1).unwrap().ends_with('…'), "{cut}");
    assert!(ls(&["ls", "--wide"]).contains(&long));
}

#[test]
fn dry_run_names_no_session_that_will_never_exist() {
    let env = TestEnv::new(*users().last().unwrap());
    let out = within(&env, &["run", "--dry-run", "--", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["session"]["id"], "PREVIEW");
    let text = stdout(&out);
    let uuid_like = text.as_bytes().windows(36).any(|w| {
        w.iter().enumerate().all(|(i, b)| {
            if [8, 13, 18, 23].contains(&i) {
                *b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        })
    });
    assert!(!uuid_like, "no session id in {text}");
    assert!(listed_ids(&env).is_empty());
}

#[test]
fn gc_never_removes_a_named_session_as_empty() {
    let env = TestEnv::new(*users().last().unwrap());
    let out = within(&env, &["run", "--name", "keep-me", "--", "true"]);
    assert!(out.status.success());
    let anon = run_new_session(&env, &["true"], &project_dir(&env));
    for args in [&["gc", "--json"][..], &["gc", "--empty", "--json"]] {
        let v: Value = serde_json::from_slice(&within(&env, args).stdout).unwrap();
        let removed: Vec<&str> = v["removed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert!(!removed.iter().any(|r| *r != anon), "{args:?}: {v}");
    }
    let ids = listed_ids(&env);
    assert_eq!(
        ids.len(),
        1,
        "the named one is kept, the anonymous empty one is gone"
    );
    assert_eq!(env.ls_json()[0]["meta"]["name"], "keep-me");
}

/// One line at the end of an interactive session (a real pty, by script(1)); none when
/// stderr is not a terminal.
#[test]
fn an_interactive_session_ends_with_one_line_saying_how_to_resume_it() {
    for user in users() {
        let env = TestEnv::new(user);
        let cmd = format!(
            "{} run --name endl -- sh -c 'exit 3'",
            sh_quote(env!("CARGO_BIN_EXE_csbox"))
        );
        let out = output_within(
            env.command("script")
                .args(["-qec", &cmd, "/dev/null"])
                .current_dir(project_dir(&env)),
            LIMIT,
            "script",
        );
        let id = listed_ids(&env).pop().unwrap();
        let want =
            format!("csbox: session {id} (endl) ended (exit 3); resume: csbox run --session {id}");
        assert!(
            stdout(&out).contains(&want),
            "[{}] {want:?} in {:?}",
            user.label(),
            stdout(&out)
        );
        let out = within(&env, &["run", "--", "true"]);
        assert!(
            !stderr(&out).contains("ended ("),
            "not on a pipe: {}",
            stderr(&out)
        );
    }
}

#[test]
fn completion_offers_session_ids_names_and_profiles() {
    let env = TestEnv::new(*users().last().unwrap());
    let out = within(&env, &["run", "--name", "tabbed", "--", "true"]);
    assert!(out.status.success());
    let id = listed_ids(&env).pop().unwrap();
    let complete = |index: &str, words: &[&str]| {
        let mut c = env.csbox(&["--"]);
        c.args(words)
            .env("CSBOX_COMPLETE", "bash")
            .env("_CLAP_COMPLETE_INDEX", index);
        stdout(&output_within(&mut c, LIMIT, "complete"))
    };
    let got = complete("2", &["csbox", "show", ""]);
    assert!(
        got.lines().any(|l| l == &id[..8]) && got.lines().any(|l| l == "tabbed"),
        "{got}"
    );
    let got = complete("2", &["csbox", "enter", "tab"]);
    assert_eq!(got.trim(), "tabbed");
    let got = complete("3", &["csbox", "run", "--profile", ""]);
    for p in ["default", "strict", "ci", "compat"] {
        assert!(got.lines().any(|l| l == p), "{got}");
    }
    // The script bash sources asks csbox the same way.
    let script = stdout(&within(&env, &["completions", "bash"]));
    let bash = format!("{script}\nCOMP_WORDS=(csbox rm tab); COMP_CWORD=2; _clap_complete_csbox csbox tab csbox; echo \"${{COMPREPLY[@]}}\"");
    let path = std::env::var("PATH").unwrap();
    let dir = Path::new(env!("CARGO_BIN_EXE_csbox"))
        .parent()
        .unwrap()
        .display()
        .to_string();
    let out = output_within(
        env.command("bash")
            .args(["-c", &bash])
            .env("PATH", format!("{dir}:{path}")),
        LIMIT,
        "bash",
    );
    assert_eq!(stdout(&out).trim(), "tabbed", "{}", stderr(&out));
}
