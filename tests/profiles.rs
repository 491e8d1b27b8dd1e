//! Profiles: each built-in shows what it promises, by probes inside real sandboxes; bad
//! profiles fail before anything is created.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

fn project(env: &TestEnv) -> PathBuf {
    let p = env.home.join("proj");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::create_dir_all(env.home.join(".ssh")).unwrap();
    std::fs::write(env.home.join(".ssh/id_rsa"), "PRIVATE KEY").unwrap();
    std::fs::create_dir_all(env.home.join(".aws")).unwrap();
    std::fs::write(env.home.join(".aws/credentials"), "aws").unwrap();
    env.chown_all(&env.home);
    p
}

fn user_profile(env: &TestEnv, name: &str, json: &str) -> PathBuf {
    let dir = env.home.join(".config/csbox/profiles");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{name}.json"));
    std::fs::write(&p, json).unwrap();
    env.chown_all(&env.home);
    p
}

#[test]
fn strict_hides_secrets_keeps_the_project_writable_and_has_only_lo() {
    for user in users() {
        let env = TestEnv::new(user);
        let proj = project(&env);
        let out = env
            .csbox(&["run", "--profile", "strict", "--", "sh", "-c",
                "cat ~/.ssh/id_rsa; echo ssh=$?; cat ~/.aws/credentials; echo aws=$?; echo built > out.txt; echo proj=$?; \
                 ls /sys/class/net | tr '\\n' ' '; echo; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ' '; echo; \
                 cat ~/.claude/skills/x/SKILL.md; unshare -U true; echo nested=$?"])
            .current_dir(&proj)
            .output()
            .unwrap();
        let o = stdout(&out);
        eprintln!("[{}] {o}\n{}", user.label(), stderr(&out));
        assert!(!o.contains("PRIVATE KEY") && o.contains("ssh=1"), "{o}");
        assert!(!o.contains("aws\n") && o.contains("aws=1"), "{o}");
        assert!(o.contains("proj=0"), "{o}");
        assert_eq!(
            std::fs::read_to_string(proj.join("out.txt")).unwrap(),
            "built\n",
            "the project is writable"
        );
        let lines: Vec<&str> = o.lines().collect();
        assert!(lines.contains(&"lo "), "only lo in /sys/class/net: {o}");
        assert_eq!(
            lines.iter().filter(|l| **l == "lo ").count(),
            2,
            "and in /proc/net/dev: {o}"
        );
        assert!(o.contains("# skill x"), "the ~/.claude view is there: {o}");
        assert!(
            o.contains("nested=1"),
            "nested user namespaces refused: {o}"
        );

        // From $HOME itself the profile cannot keep its promise: refused, nothing created.
        let out = env.run(&["run", "--profile", "strict", "--", "true"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains("cd into a project"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn ci_clears_the_environment_to_its_allowlist_and_reports_json() {
    for user in users() {
        let env = TestEnv::new(user);
        let status = env.dir.path().join("status.jsonl");
        env.chown_all(env.dir.path());
        let out = env
            .csbox(&[
                "run",
                "--profile",
                "ci",
                "--json-status",
                status.to_str().unwrap(),
                "--",
                "sh",
                "-c",
                "env | cut -d= -f1 | sort | tr '\\n' ' '",
            ])
            .env("SECRET_TOKEN", "x")
            .env("ANTHROPIC_API_KEY", "k")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let names: Vec<&str> = std::str::from_utf8(&out.stdout)
            .unwrap()
            .split_whitespace()
            .collect();
        let allowed = [
            "PATH",
            "HOME",
            "LANG",
            "CI",
            "ANTHROPIC_API_KEY",
            "PWD",
            "SHLVL",
            "CLAUDE_CONFIG_DIR",
            "DISABLE_AUTOUPDATER",
            "CLAUDE_CODE_TMPDIR",
            "CSBOX_SESSION_ID",
            "_",
        ];
        // csbox's own proxy, not the host's (its variables are always set under proxy).
        let allowed: Vec<&str> = allowed
            .into_iter()
            .chain(csbox::plan::PROXY_ENV.iter().copied())
            .collect();
        for n in &names {
            assert!(
                allowed.contains(n),
                "[{}] {n} is not in the ci allowlist: {names:?}",
                user.label()
            );
        }
        assert!(names.contains(&"ANTHROPIC_API_KEY") && !names.contains(&"SECRET_TOKEN"));
        // Status as JSON lines in the caller's file; the session is gone (removeOnExit).
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&status)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert_eq!(lines.len(), 2, "{}", stderr(&out));
        assert!(lines[0]["pid"].as_u64().is_some() && lines[0]["started"].is_string());
        assert_eq!(lines[1]["exit_code"], 0);
        assert_eq!(env.ls_json(), serde_json::json!([]), "removed at exit");
        // --keep keeps it.
        assert!(env
            .run(&["run", "--profile", "ci", "--keep", "--", "true"])
            .status
            .success());
        assert_eq!(env.ls_json().as_array().unwrap().len(), 1);
    }
}

#[test]
fn ci_wall_clock_limit_kills_and_reports() {
    for user in users() {
        let env = TestEnv::new(user);
        user_profile(&env, "quick", r#"{"extends": "ci", "timeoutSecs": 1}"#);
        let status = env.dir.path().join("status.jsonl");
        env.chown_all(env.dir.path());
        let t = Instant::now();
        let out = env.run(&[
            "run",
            "--profile",
            "quick",
            "--json-status",
            status.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "sleep 60 & sleep 60",
        ]);
        let took = t.elapsed();
        assert_eq!(
            out.status.code(),
            Some(124),
            "[{}] timeout(1)'s code",
            user.label()
        );
        assert!(
            took < Duration::from_secs(10),
            "stopped after ~1 s, took {took:?}"
        );
        let err = stderr(&out);
        assert!(err.contains("wall-clock limit of 1s"), "{err}");
        let end: serde_json::Value = std::fs::read_to_string(&status)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .next_back()
            .unwrap();
        assert_eq!(end["timed_out"], true, "{end}");
        assert_eq!(end["signal"], 15, "{end}");
    }
}

#[test]
fn compat_creates_no_namespace_and_sets_claude_config_dir() {
    for user in users() {
        let env = TestEnv::new(user);
        let out = env.run(&["run", "--profile", "compat", "--keep", "--", "sh", "-c", "readlink /proc/self/ns/user /proc/self/ns/mnt /proc/self/ns/pid; echo $CLAUDE_CONFIG_DIR; echo h > \"$CLAUDE_CONFIG_DIR/history.jsonl\"; cd \"$CLAUDE_CONFIG_DIR\" && cat settings.json CLAUDE.md skills/x/SKILL.md && echo '{\"login\":1}' > .c.tmp && mv .c.tmp .credentials.json"]);
        assert!(out.status.success());
        assert!(stderr(&out).contains("NO SANDBOX"), "it says so loudly");
        let o = stdout(&out);
        let lines: Vec<&str> = o.lines().collect();
        for (i, ns) in ["user", "mnt", "pid"].iter().enumerate() {
            let outside = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
            assert_eq!(
                lines[i],
                outside.to_str().unwrap(),
                "[{}] same {ns} namespace as outside",
                user.label()
            );
        }
        let v = env.ls_json();
        let dir = PathBuf::from(v[0]["dir"].as_str().unwrap());
        assert_eq!(
            PathBuf::from(lines[3]),
            dir.join("state"),
            "CLAUDE_CONFIG_DIR is the session's own dir"
        );
        assert!(dir.join("state/history.jsonl").exists());
        assert_eq!(
            std::fs::read_to_string(env.claude_root().join("history.jsonl")).unwrap(),
            "{\"display\":\"old\"}\n",
            "the real history is untouched"
        );
        // Like a sandboxed session, it has the user's settings, memory, skills and login.
        assert_eq!(
            lines[4..],
            ["{\"hooks\":{}}", "be nice", "# skill x"],
            "[{}] the shared config is there",
            user.label()
        );
        assert_eq!(
            std::fs::read_to_string(env.claude_root().join(".credentials.json")).unwrap(),
            "{\"login\":1}\n",
            "[{}] a login inside (tmp + rename, as Claude Code writes it) reaches the real ~/.claude",
            user.label()
        );
        let left: Vec<_> = std::fs::read_dir(dir.join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "history.jsonl" && n != ".claude.json" && n != "sessions")
            .collect();
        assert!(
            left.is_empty(),
            "[{}] links and login taken out: {left:?}",
            user.label()
        );
    }
}

/// (what, file content, words the message must contain)
const BAD_PROFILES: &[(&str, &str, &[&str])] = &[
    (
        "syntax error",
        "{\n  \"network\": \"none\",\n  oops\n}",
        &[":3:3", "key must be a string"],
    ),
    (
        "unknown field",
        "{\n  \"netwrok\": \"none\"\n}",
        &[
            ":2:",
            "field \"netwrok\"",
            "unknown field",
            "did you mean \"network\"",
        ],
    ),
    (
        "wrong type",
        "{\n  \"hide\": \"~/.ssh\"\n}",
        &[":2:", "field \"hide\"", "list of strings"],
    ),
    (
        "bad enum value",
        "{\n  \"network\": \"maybe\"\n}",
        &[
            ":2:",
            "field \"network\"",
            "\"maybe\"",
            "\"proxy\", \"none\", \"host\"",
        ],
    ),
    (
        "unknown extends",
        "{\n  \"extends\": \"nosuch\"\n}",
        &[":2:", "field \"extends\"", "unknown profile \"nosuch\""],
    ),
    (
        "extends cycle",
        "{\n  \"extends\": \"bad\"\n}",
        &[":2:", "field \"extends\"", "extends itself"],
    ),
    (
        "bind with two colons",
        "{\n  \"bind\": [\"/a:/b:/c\"]\n}",
        &[":2:", "field \"bind\"", "SRC:DST"],
    ),
    (
        "hide the root",
        "{\n\n  \"hide\": [\"/\"]\n}",
        &[":3:", "field \"hide\"", "whole file system"],
    ),
    (
        "unknown rlimit",
        "{\n  \"rlimits\": {\"fds\": 10}\n}",
        &[":2:", "field \"rlimits\"", "nofile"],
    ),
    (
        "zero timeout",
        "{\n  \"timeoutSecs\": 0\n}",
        &[":2:", "field \"timeoutSecs\"", "from 1 to"],
    ),
    (
        "claude entry with a slash",
        "{\n  \"claude\": {\"readOnly\": [\"../.ssh\"]}\n}",
        &[":2:", "field \"claude.readOnly\"", "entry name"],
    ),
    (
        "entry in two lists",
        "{\n  \"claude\": {\"readOnly\": [\"x\"],\n   \"readWrite\": [\"x\"]}\n}",
        &[":3:", "field \"claude.readWrite\"", "one list"],
    ),
    (
        "~user path",
        "{\n  \"roBind\": [\"~root/x\"]\n}",
        &[":2:", "field \"roBind\"", "~user"],
    ),
    (
        "negative number",
        "{\n  \"timeoutSecs\": -5\n}",
        &[":2:", "field \"timeoutSecs\"", "out of range"],
    ),
    ("empty file", "", &[":1:1", "empty"]),
    (
        "a number for an enum",
        "{\n  \"network\": 5\n}",
        &[
            ":2:3",
            "field \"network\"",
            "5 (a number)",
            "\"proxy\", \"none\", \"host\"",
        ],
    ),
    (
        "a list for an object",
        "{\n  \"claude\": []\n}",
        &[":2:3", "field \"claude\"", "not an object", "readOnly"],
    ),
    (
        "a timeout that overflows a clock",
        "{\n  \"timeoutSecs\": 9223372036854775807\n}",
        &[":2:", "field \"timeoutSecs\"", "out of range", "31536000"],
    ),
    (
        "an rlimit above the hard limit",
        "{\n  \"rlimits\": {\"nofile\": 18446744073709551614}\n}",
        &[":2:", "field \"rlimits.nofile\"", "hard limit"],
    ),
];

#[test]
fn malformed_profiles_fail_with_file_line_field_and_create_nothing() {
    let env = TestEnv::new(As::me());
    for (what, text, words) in BAD_PROFILES {
        let path = user_profile(&env, "bad", text);
        let out = env.run(&["run", "--profile", "bad", "--", "true"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert_eq!(err.lines().count(), 1, "{what}: one line: {err}");
        assert!(
            err.contains(&path.display().to_string()),
            "{what}: names the file: {err}"
        );
        for w in *words {
            assert!(err.contains(w), "{what}: {w:?} missing in: {err}");
        }
        assert!(
            !env.sessions_dir().exists(),
            "{what}: no session directory left behind"
        );
        // A path works as well as a name.
        let out = env.run(&["run", "--profile", path.to_str().unwrap(), "--", "true"]);
        assert_eq!(out.status.code(), Some(2), "{what} by path");
    }
    let out = env.run(&["run", "--profile", "nosuch", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("built-ins are default, strict, ci, compat"));
}

#[test]
fn dry_run_output_round_trips_to_the_same_plan() {
    let env = TestEnv::new(As::me());
    assert!(env
        .run(&["run", "--name", "s", "--", "true"])
        .status
        .success());
    for profile in ["default", "strict", "ci", "compat"] {
        let args = [
            "run",
            "--dry-run",
            "--session",
            "s",
            "--profile",
            profile,
            "--",
            "bash",
        ];
        let proj = project(&env);
        let a = env.csbox(&args).current_dir(&proj).output().unwrap();
        assert!(a.status.success(), "{profile}: {}", stderr(&a));
        let plan: csbox::plan::Plan = serde_json::from_slice(&a.stdout).unwrap();
        assert_eq!(plan.profile, profile);
        let again = serde_json::to_value(&plan).unwrap();
        let orig: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
        assert_eq!(again, orig, "{profile}: parse + serialise is the identity");
        let b = env.csbox(&args).current_dir(&proj).output().unwrap();
        // The host's listening sockets are an input too: other tests make and remove
        // theirs meanwhile, so their hides are left out of the comparison.
        let theirs = |out: &[u8]| {
            let mut v: serde_json::Value = serde_json::from_slice(out).unwrap();
            v["mounts"].as_array_mut().unwrap().retain(|m| {
                let dst = m["dst"].as_str().unwrap_or("");
                !(m["op"] == "hide"
                    && dst.starts_with(test_base().to_str().unwrap())
                    && !dst.starts_with(env.dir.path().to_str().unwrap()))
            });
            v
        };
        assert_eq!(
            theirs(&a.stdout),
            theirs(&b.stdout),
            "{profile}: the same inputs build the same plan"
        );
    }
}

#[test]
fn flags_override_the_profile_for_one_run() {
    for user in users() {
        let env = TestEnv::new(user);
        let data = env.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("d.txt"), "data").unwrap();
        std::fs::write(env.home.join("secret.txt"), "s3cret").unwrap();
        std::fs::create_dir_all(env.home.join("proj-data")).unwrap();
        env.chown_all(env.dir.path());
        let out = env.run(&[
            "run", "--ro-bind", &format!("{}:{}", data.display(), env.home.join("proj-data").display()),
            "--hide", "~/secret.txt", "--env", "GREETING=hi", "--net", "none", "--",
            "sh", "-c", "cat ~/proj-data/d.txt; echo x > ~/proj-data/n; echo w=$?; cat ~/secret.txt; echo; echo $GREETING; ls /sys/class/net",
        ]);
        let o = stdout(&out);
        assert!(
            o.starts_with("data"),
            "[{}] ro-bind visible: {o}",
            user.label()
        );
        assert!(
            o.contains("w=1") || o.contains("w=2"),
            "ro-bind read-only: {o}"
        );
        assert!(!o.contains("s3cret"), "hidden file: {o}");
        assert!(o.contains("hi\nlo\n"), "env set, only lo: {o}");
        // A mount point that does not exist is not created in the real file system.
        let out = env.run(&[
            "run",
            "--bind",
            &format!("{}:{}", data.display(), env.home.join("nowhere").display()),
            "--",
            "true",
        ]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains("does not exist: create it first"),
            "{}",
            stderr(&out)
        );
        assert!(!env.home.join("nowhere").exists());
        let bad = env.run(&["run", "--bind", "/a:/b:/c", "--", "true"]);
        assert_eq!(bad.status.code(), Some(2));
        assert!(stderr(&bad).contains("SRC:DST"));
    }
}

#[test]
fn json_status_goes_to_a_file_or_an_fd() {
    let env = TestEnv::new(As::me());
    let file = env.dir.path().join("status.json");
    let out = env.run(&[
        "run",
        "--json-status",
        file.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[1]["exit_code"], 3);
    assert_eq!(lines[0]["session"], lines[1]["session"]);
    // An fd the caller opened (3>file).
    let out = env
        .csbox(&[])
        .arg("run")
        .args([
            "--json-status",
            "3",
            "--",
            "sh",
            "-c",
            "ls /proc/self/fd | tr '\\n' ' '",
        ])
        .env("CSBOX_FD_TEST", "1")
        .output()
        .unwrap();
    // (Without an fd 3 open, it is a clear usage error.)
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("fd 3 is not open"));
    // stderr is the command's: refused as a status channel.
    let err = env.run(&["run", "--json-status", "fd:2", "--", "true"]);
    assert_eq!(err.status.code(), Some(2));
    assert!(
        stderr(&err).contains("could write a forged line"),
        "{}",
        stderr(&err)
    );
    let sh = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("exec 3>{}; HOME={} CSBOX_NO_UPDATE=1 {} run --json-status 3 -- sh -c 'ls /proc/self/fd | tr \"\\n\" \" \"'", sh_quote(&file), sh_quote(&env.home), sh_quote(CSBOX)))
        .output()
        .unwrap();
    assert!(
        sh.status.success(),
        "{}",
        String::from_utf8_lossy(&sh.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&sh.stdout).trim(),
        "0 1 2 3",
        "fd 3 is not inherited inside (3 is ls's own dir fd)"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 2);
}

#[test]
fn profile_list_and_show_include_user_profiles() {
    let env = TestEnv::new(As::me());
    user_profile(
        &env,
        "mine",
        r#"{"extends": "strict", "description": "my strict", "hide": ["~/notes"]}"#,
    );
    let out = env.run(&["profile", "list"]);
    let o = stdout(&out);
    for n in ["default", "strict", "ci", "compat", "mine"] {
        assert!(o.lines().any(|l| l.starts_with(n)), "{n} listed: {o}");
    }
    assert!(o.contains("my strict"));
    let out = env.run(&["profile", "show", "mine"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["network"]["mode"], "proxy", "inherited from strict");
    assert_eq!(
        v["network"]["allow"][0], "api.anthropic.com",
        "strict's own list: {}",
        v["network"]
    );
    assert!(
        !v["network"]["allow"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == "pypi.org"),
        "not default's"
    );
    let hide: Vec<&str> = v["hide"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert!(
        hide.contains(&"~/.ssh") && hide.contains(&"~/notes"),
        "lists append: {hide:?}"
    );
}

/// The fallback for kernels without unprivileged overlayfs (forced here by the profile):
/// a fresh ~/.claude per session, shared config still read-only, isolation intact.
#[test]
fn fresh_state_mode_keeps_isolation_and_shared_config_read_only() {
    for user in users() {
        let env = TestEnv::new(user);
        user_profile(
            &env,
            "fresh",
            r#"{"extends": "default", "claude": {"state": "fresh"}}"#,
        );
        let out = env.run(&["run", "--profile", "fresh", "--", "sh", "-c",
            "cat ~/.claude/settings.json ~/.claude/skills/x/SKILL.md; touch ~/.claude/skills/x/n; echo ro=$?; \
             echo h >> ~/.claude/history.jsonl; cat ~/.claude/history.jsonl; ls -A ~/.claude/sessions | wc -l"]);
        let o = stdout(&out);
        assert!(
            o.contains("{\"hooks\":{}}") && o.contains("# skill x"),
            "[{}] shared config visible: {o}",
            user.label()
        );
        assert!(o.contains("ro=1"), "{o}");
        assert!(
            o.contains("h\n0\n") && !o.contains("old"),
            "a fresh history, not the user's: {o}"
        );
        assert_eq!(
            std::fs::read_to_string(env.claude_root().join("history.jsonl")).unwrap(),
            "{\"display\":\"old\"}\n"
        );
        assert!(!env.claude_root().join("skills/x/n").exists());
    }
}

/// The profile fields no built-in shows off, in a user profile chosen by `CSBOX_PROFILE`:
/// a read-only project, a tmpfs over a host dir, an rlimit, a shared entry made private
/// again (the session's own, empty at first: red-team 8, A8-1), and (from `default`)
/// nested user namespaces allowed.
#[test]
fn profile_fields_take_effect_inside_a_session_chosen_by_csbox_profile() {
    for user in users() {
        let env = TestEnv::new(user);
        let proj = project(&env);
        std::fs::create_dir_all(env.home.join("scratch")).unwrap();
        std::fs::write(env.home.join("scratch/keep"), "host").unwrap();
        user_profile(
            &env,
            "fields",
            r#"{ "extends": "default", "project": "ro", "tmpfs": ["~/scratch"],
                 "rlimits": { "nofile": 123 }, "claude": { "private": ["skills"] } }"#,
        );
        let out = env
            .csbox(&[
                "run",
                "--",
                "sh",
                "-c",
                "ulimit -n; unshare -U true; echo nested=$?; touch inproj; echo proj=$?; \
                 ls -A ~/scratch | tr '\\n' ' '; echo; touch ~/scratch/new; echo scratch=$?; \
                 mkdir -p ~/.claude/skills/x && touch ~/.claude/skills/x/new; echo skills=$?; \
                 cat ~/.claude/skills/x/SKILL.md 2>/dev/null | wc -c",
            ])
            .env("CSBOX_PROFILE", "fields")
            .current_dir(&proj)
            .output()
            .unwrap();
        let (o, e) = (stdout(&out), stderr(&out));
        let who = user.label();
        eprintln!("[{who}] {o}\n{e}");
        assert!(out.status.success(), "[{who}] {e}");
        let lines: Vec<&str> = o.lines().collect();
        assert_eq!(
            lines,
            ["123", "nested=0", "proj=1", "", "scratch=0", "skills=0", "0"],
            "[{who}] rlimit, nested userns, ro project, empty tmpfs, private skills (the session's own, none of the host's)"
        );
        assert!(e.contains("Read-only file system"), "[{who}] {e}");
        assert!(!proj.join("inproj").exists());
        let scratch: Vec<_> = std::fs::read_dir(env.home.join("scratch"))
            .unwrap()
            .map(|d| d.unwrap().file_name())
            .collect();
        assert_eq!(scratch, ["keep"], "[{who}] the tmpfs hid the host dir");
        assert!(!env.claude_root().join("skills/x/new").exists(), "[{who}]");
        let v = env.ls_json();
        assert_eq!(
            v[0]["meta"]["profile"], "fields",
            "[{who}] CSBOX_PROFILE chose it: {v}"
        );
        let dir = PathBuf::from(v[0]["dir"].as_str().unwrap());
        assert!(
            dir.join("state/skills/x/new").exists(),
            "[{who}] the private skills write landed in the session layer"
        );
    }
}

#[test]
fn a_profile_path_that_is_no_regular_utf8_file_is_exit_2_without_hanging() {
    let env = TestEnv::new(As::me());
    let dir = env.dir.path().join("p");
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let latin1 = dir.join("latin1.json");
    std::fs::write(&latin1, b"{\"description\": \"caf\xe9\"}").unwrap();
    let bom = dir.join("bom.json");
    std::fs::write(&bom, "\u{feff}{\"extends\": \"default\"}").unwrap();
    for (path, words) in [
        (fifo.clone(), "not a regular file"),
        (dir.clone(), "is a directory"),
        (dir.join("missing.json"), "no such file"),
        (latin1.clone(), "not UTF-8"),
        ("/dev/zero".into(), "not a regular file"),
    ] {
        let t = Instant::now();
        let out = env.run(&["run", "--profile", path.to_str().unwrap(), "--", "true"]);
        let err = stderr(&out);
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{}: took {:?}",
            path.display(),
            t.elapsed()
        );
        assert_eq!(out.status.code(), Some(2), "{}: {err}", path.display());
        assert!(
            err.contains(&path.display().to_string()) && err.contains(words),
            "{}: {err}",
            path.display()
        );
        // The same through CSBOX_PROFILE.
        let out = env
            .csbox(&["run", "--", "true"])
            .env("CSBOX_PROFILE", &path)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "CSBOX_PROFILE={}",
            path.display()
        );
    }
    // A byte-order mark is not an error.
    let out = env.run(&["profile", "show", bom.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}
