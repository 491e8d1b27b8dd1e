//! `csbox run`: real namespaces, the real binary, probes run inside. Every test runs as
//! the current user and, when that is root, again as an unprivileged uid.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn sh(env: &TestEnv, script: &str) -> std::process::Output {
    env.run(&["run", "--", "sh", "-c", script])
}

/// Every entry under `root` (no symlink followed) with its type, mode and content.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            // csbox's own lock, made by the first merge-back with something to look at.
            if rel == "merge.lock" {
                continue;
            }
            let desc = if md.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if md.is_dir() {
                walk(root, &p, out);
                format!("dir {:o}", md.permissions().mode())
            } else {
                format!(
                    "file {:o} {:?}",
                    md.permissions().mode(),
                    std::fs::read(&p).unwrap()
                )
            };
            out.insert(rel, desc);
        }
    }
    walk(root, root, &mut out);
    out
}

/// Host pids whose command line contains `marker` (a unique number given to `sleep`).
fn pids_with_marker(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        })
        .collect()
}

fn session_dirs(env: &TestEnv) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(env.sessions_dir())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.join("session.json").exists())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn history_write_lands_in_the_session_layer_not_in_claude_root() {
    for user in users() {
        let env = TestEnv::new(user);
        // The user's history: a line of another project (TestEnv's, naming none) and one
        // of this one (the home is the working directory): the session sees its own only.
        let mine = format!(
            "{{\"display\":\"mine\",\"project\":{}}}",
            serde_json::to_string(&env.home.canonicalize().unwrap()).unwrap()
        );
        let h = env.claude_root().join("history.jsonl");
        std::fs::write(
            &h,
            format!("{}{mine}\n", std::fs::read_to_string(&h).unwrap()),
        )
        .unwrap();
        // The first run creates .credentials.json and the sessions link; after that the
        // real config must not change at all.
        assert!(sh(&env, "true").status.success());
        let before = snapshot(&env.claude_root());
        let out = sh(&env, "echo '{\"display\":\"new\"}' >> ~/.claude/history.jsonl && mkdir -p ~/.claude/projects/p && echo t > ~/.claude/projects/p/s.jsonl && echo '{\"x\":1}' > ~/.claude.json && cat ~/.claude/history.jsonl");
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            stdout(&out),
            format!("{mine}\n{{\"display\":\"new\"}}\n"),
            "the session sees this project's history, then its own write"
        );
        assert_eq!(
            snapshot(&env.claude_root()),
            before,
            "[{}] CLAUDE_ROOT changed",
            user.label()
        );
        assert_eq!(
            std::fs::read_to_string(env.home.join(".claude.json")).unwrap(),
            "{\"hasCompletedOnboarding\":true}\n"
        );
        let dirs = session_dirs(&env);
        let state = dirs.last().unwrap().join("state");
        assert!(std::fs::read_to_string(state.join("history.jsonl"))
            .unwrap()
            .contains("new"));
        assert_eq!(
            std::fs::read_to_string(state.join("projects/p/s.jsonl")).unwrap(),
            "t\n"
        );
        assert_eq!(
            std::fs::read_to_string(state.join(".claude.json")).unwrap(),
            "{\"x\":1}\n",
            "~/.claude.json is the session's copy"
        );
    }
}

#[test]
fn shared_skills_are_read_only_inside() {
    for user in users() {
        let env = TestEnv::new(user);
        let out = sh(&env, "touch ~/.claude/skills/x/new; echo touch=$?; echo evil > ~/.claude/settings.json; echo settings=$?; \
                            echo x >> ~/.claude/CLAUDE.md; echo md=$?; mount -o remount,rw ~/.claude/skills; echo remount=$?; \
                            umount ~/.claude/skills; echo umount=$?; cat ~/.claude/skills/x/SKILL.md");
        let o = stdout(&out);
        let e = stderr(&out);
        assert!(e.contains("Read-only file system"), "{e}");
        for k in ["touch", "settings", "md", "remount", "umount"] {
            assert!(
                o.contains(&format!("{k}=")) && !o.contains(&format!("{k}=0")),
                "[{}] {k} must fail: {o}",
                user.label()
            );
        }
        assert!(o.contains("# skill x"), "the shared skill is visible: {o}");
        assert!(!env.claude_root().join("skills/x/new").exists());
        assert_eq!(
            std::fs::read_to_string(env.claude_root().join("settings.json")).unwrap(),
            "{\"hooks\":{}}\n"
        );
    }
}

#[test]
fn concurrent_sessions_cannot_see_each_other() {
    for user in users() {
        let env = TestEnv::new(user);
        // Session A writes a marker and stays alive; session B looks for it.
        let mut a = env
            .csbox(&["run", "--name", "a", "--", "sh", "-c", "echo secret-a > ~/.claude/marker-a; mkdir -p ~/.claude/todos; echo a > ~/.claude/todos/a.json; echo ready; sleep 30"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(a.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready");
        let store = env.sessions_dir();
        let out = sh(
            &env,
            &format!(
                "cat ~/.claude/marker-a; echo marker=$?; ls ~/.claude/todos; ls -A ~/.claude/sessions | wc -l; ls -A {} | wc -l; ls -A ~/.local/share/csbox/sessions | wc -l",
                store.display()
            ),
        );
        let _ = a.kill();
        let _ = a.wait();
        let o = stdout(&out);
        let lines: Vec<&str> = o.lines().collect();
        assert!(
            !o.contains("secret-a"),
            "[{}] B saw A's file: {o}",
            user.label()
        );
        assert!(o.contains("marker=1"), "{o}");
        assert_eq!(
            &lines[lines.len() - 3..],
            ["0", "0", "0"],
            "[{}] sessions dir and store must look empty inside: {o}",
            user.label()
        );
        assert!(!env.claude_root().join("marker-a").exists());
    }
}

#[test]
fn capabilities_are_dropped_and_no_new_privs_is_set() {
    for user in users() {
        let env = TestEnv::new(user);
        let out = sh(
            &env,
            "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status; id -u",
        );
        let o = stdout(&out);
        for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert!(
                o.contains(&format!("{cap}:\t0000000000000000")),
                "[{}] {cap}: {o}",
                user.label()
            );
        }
        assert!(o.contains("NoNewPrivs:\t1"), "{o}");
        assert_eq!(
            o.lines().last().unwrap(),
            user.uid.to_string(),
            "mapped to the user's own uid, not root"
        );
    }
}

#[test]
fn host_pids_are_invisible() {
    for user in users() {
        let env = TestEnv::new(user);
        let me = std::process::id();
        let out = sh(&env, &format!("echo self=$$; ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '; echo; kill -0 {me}; echo kill=$?"));
        let o = stdout(&out);
        assert!(
            o.contains("self=2"),
            "[{}] the command is pid 2 under our pid 1: {o}",
            user.label()
        );
        let pids: Vec<u32> = o
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        assert!(
            pids.len() <= 6 && pids.iter().all(|&p| p < 20),
            "only sandbox pids: {pids:?}"
        );
        assert!(!pids.contains(&me));
        assert!(o.contains("kill=1"), "{o}");
    }
}

#[test]
fn exit_code_is_the_childs_and_sigterm_gives_143() {
    for user in users() {
        let env = TestEnv::new(user);
        assert_eq!(sh(&env, "exit 42").status.code(), Some(42));
        assert_eq!(sh(&env, "kill -TERM $$; sleep 5").status.code(), Some(143));
        // SIGTERM sent to the supervisor is forwarded to the command.
        let mut c = env.csbox(&["run", "--", "sleep", "30"]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let st = c.wait().unwrap();
        assert_eq!(st.code(), Some(143), "[{}]", user.label());
        let v = env.ls_json();
        let exits: Vec<_> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["exit"].clone())
            .collect();
        assert_eq!(exits[0], serde_json::json!({"signal": 15}), "{v}");
        assert_eq!(exits[2], serde_json::json!({"code": 42}));
        // Not found / not executable, like env(1).
        assert_eq!(
            env.run(&["run", "--", "no-such-command-xyz"]).status.code(),
            Some(127)
        );
        assert_eq!(
            env.run(&["run", "--", "/etc/passwd"]).status.code(),
            Some(126)
        );
    }
}

/// A CI runner or a shell may start csbox with fds 3, 4, … open (seen in CI: the status
/// pipe landed on a number reserved for a mount source, and `exit 3` came back as 0).
/// Whatever csbox inherits, the exit status and a timeout's signal come back intact, and
/// none of the inherited fds is open inside.
#[test]
fn inherited_open_fds_neither_corrupt_the_status_nor_leak_inside() {
    use std::os::unix::process::CommandExt;
    for user in users() {
        let env = TestEnv::new(user);
        // Every count up to 16 shifts where csbox's own fds and the reserved numbers fall.
        for inherited in (0..=16).chain([40]) {
            let run = |args: &[&str]| {
                let mut c = env.csbox(args);
                // SAFETY: only async-signal-safe calls between fork and exec.
                unsafe {
                    c.pre_exec(move || {
                        // Exactly 3 .. 3+inherited, nothing above: whatever the test
                        // itself inherited (a high fd hid this bug on one machine) is
                        // closed.
                        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
                        for fd in 3..3 + inherited {
                            if fd != null {
                                libc::dup2(null, fd);
                            }
                        }
                        libc::syscall(libc::SYS_close_range, 3 + inherited, u32::MAX, 0);
                        Ok(())
                    });
                }
                let out = c.output().unwrap();
                eprintln!(
                    "[{}] {inherited} fds inherited: {args:?} -> {:?}\n{}{}",
                    user.label(),
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                out
            };
            let out = run(&["run", "--", "sh", "-c", "ls /proc/self/fd; exit 3"]);
            assert_eq!(out.status.code(), Some(3), "[{}] {inherited}", user.label());
            // sh's own fds 0, 1, 2 and the one `ls` reads /proc/self/fd through.
            let fds: Vec<u32> = stdout(&out)
                .split_whitespace()
                .map(|f| f.parse().unwrap())
                .collect();
            assert_eq!(fds, [0, 1, 2, 3], "[{}] {inherited}", user.label());
            let out = run(&["run", "--", "sh", "-c", "kill -TERM $$"]);
            assert_eq!(
                out.status.code(),
                Some(143),
                "[{}] {inherited}",
                user.label()
            );
        }
    }
}

#[test]
fn sigkill_to_the_supervisor_leaves_no_sandboxed_process_alive() {
    for user in users() {
        let env = TestEnv::new(user);
        let marker = format!("1{}.{}", std::process::id(), user.uid);
        let mut c = env
            .csbox(&[
                "run",
                "--",
                "sh",
                "-c",
                &format!("sleep {marker} & sleep {marker} & (sleep {marker} &) ; wait"),
            ])
            .spawn()
            .unwrap();
        let find = || pids_with_marker(&marker);
        let t = Instant::now();
        while find().len() < 3 {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "sandbox never started its sleeps"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c.kill().unwrap();
        c.wait().unwrap();
        let t = Instant::now();
        while !find().is_empty() {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "[{}] still alive: {:?}",
                user.label(),
                find()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn terminal_size_and_sigwinch_reach_the_child_in_a_real_pty() {
    if !have("tmux") {
        return cannot_run("tmux is not installed (apt-get install tmux)");
    }
    for user in users() {
        let env = TestEnv::new(user);
        let script = env.home.join("winch.sh");
        std::fs::write(&script, "trap 'echo WINCH $(stty size)' WINCH\necho tty $(tty)\necho size $(stty size)\nwhile :; do sleep 0.05; done\n").unwrap();
        env.chown_all(&script);
        let t = Tmux::start(
            &env,
            "winch",
            &format!("{} run -- sh winch.sh", sh_quote(CSBOX)),
        );
        let screen = t.wait_for("size 30 100");
        // The terminal has a name inside (bound at /dev/console; the private devpts has
        // none of the host's ptys), so `tty` and GPG_TTY=$(tty) work.
        assert!(
            screen.contains("tty /dev/console"),
            "[{}] {screen}",
            user.label()
        );
        // tmux applies its own first resize of a new pane asynchronously (a SIGWINCH at
        // 30x100 may still arrive); let that settle, then resize and wait for ours.
        std::thread::sleep(Duration::from_millis(500));
        let st = t
            .cmd()
            .args(["resize-window", "-t", "t", "-x", "120", "-y", "40"])
            .status()
            .unwrap();
        assert!(st.success());
        t.wait_for("WINCH 40 120");
        // Ctrl-C reaches the command through the terminal, once, and the session ends.
        let _ = t.cmd().args(["send-keys", "-t", "t", "C-c"]).status();
        // The end record is written (and synced) as the session ends: wait for it.
        let t0 = Instant::now();
        let mut v = env.ls_json();
        while v[0]["exit"].is_null() && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
            v = env.ls_json();
        }
        assert_eq!(
            v[0]["exit"],
            serde_json::json!({"signal": 2}),
            "[{}] {v}",
            user.label()
        );
    }
}

#[test]
fn tiocsti_from_inside_fails_and_injects_nothing() {
    if !have("tmux") || !have("python3") {
        return cannot_run("tmux and python3 are needed for the TIOCSTI test");
    }
    // Push "id\n" into the terminal: on success it would be read by whoever reads the
    // terminal next (here: the `read` below, outside the sandbox).
    let probe = "import fcntl,termios,sys\ntry:\n  [fcntl.ioctl(0, termios.TIOCSTI, c) for c in (b'i',b'd',b'\\n')]\n  print('ioctl=ok')\nexcept OSError as e:\n  print('ioctl=' + str(e.errno))\n";
    for user in users() {
        let env = TestEnv::new(user);
        std::fs::write(env.home.join("probe.py"), probe).unwrap();
        env.chown_all(&env.home.join("probe.py"));
        let read_back = "; read -t 1 got; echo \"got=[$got]\"";
        // Control: outside the sandbox the same probe injects (the kernel here allows it).
        let t = Tmux::start(&env, "sti-out", &format!("python3 probe.py{read_back}"));
        let outside = t.wait_for("got=");
        drop(t);
        let t = Tmux::start(
            &env,
            "sti-in",
            &format!("{} run -- python3 probe.py{read_back}", sh_quote(CSBOX)),
        );
        let inside = t.wait_for("got=");
        eprintln!("outside:\n{outside}\ninside:\n{inside}");
        assert!(
            inside.contains("ioctl=1"),
            "[{}] TIOCSTI must fail with EPERM: {inside}",
            user.label()
        );
        assert!(inside.contains("got=[]"), "nothing injected: {inside}");
        if outside.contains("ioctl=ok") {
            assert!(
                outside.contains("got=[id]"),
                "control: injection works outside: {outside}"
            );
        } else {
            eprintln!("note: the kernel itself blocks TIOCSTI here (dev.tty.legacy_tiocsti=0)");
        }
    }
}

#[test]
fn real_claude_code_runs_inside_and_writes_only_its_own_layer() {
    let Some(claude) =
        csbox::paths::find_on_path("claude".as_ref(), std::env::var_os("PATH").as_deref())
    else {
        return cannot_run(
            "claude is not installed (npm install -g @anthropic-ai/claude-code; .ci/run does this)",
        );
    };
    for user in users() {
        let env = TestEnv::new(user);
        let out = env.run(&["run", "--", "claude", "--version"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("(Claude Code)"), "{}", stdout(&out));
        // Default command: claude itself (CLAUDE_BIN).
        let out = env
            .csbox(&["run", "--", "claude", "--version"])
            .env("CLAUDE_BIN", &claude)
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("(Claude Code)"));

        let before = snapshot(&env.claude_root());
        let real_json = std::fs::read(env.home.join(".claude.json")).unwrap();
        // A config write by Claude Code itself: a user-scope MCP server goes into its .claude.json.
        let out = env.run(&[
            "run",
            "--name",
            "second",
            "--",
            "claude",
            "mcp",
            "add",
            "-s",
            "user",
            "csbox-probe",
            "--",
            "true",
        ]);
        assert!(out.status.success(), "claude mcp add: {}", stderr(&out));
        let dirs = session_dirs(&env);
        let mine = dirs.last().unwrap().join("state/.claude.json");
        assert!(
            std::fs::read_to_string(&mine)
                .unwrap()
                .contains("csbox-probe"),
            "the write landed in the session's layer"
        );
        assert_eq!(
            snapshot(&env.claude_root()),
            before,
            "CLAUDE_ROOT unchanged"
        );
        assert_eq!(
            std::fs::read(env.home.join(".claude.json")).unwrap(),
            real_json,
            "~/.claude.json unchanged"
        );
        for d in &dirs[..dirs.len() - 1] {
            let other = std::fs::read_to_string(d.join("state/.claude.json")).unwrap_or_default();
            assert!(
                !other.contains("csbox-probe"),
                "another session's layer was touched"
            );
        }
    }
}

#[test]
fn session_reentry_keeps_state_and_rm_deletes_it() {
    for user in users() {
        let env = TestEnv::new(user);
        assert!(env
            .run(&[
                "run",
                "--name",
                "keep",
                "--",
                "sh",
                "-c",
                "echo first > ~/.claude/todo.txt"
            ])
            .status
            .success());
        let out = env.run(&[
            "run",
            "--session",
            "keep",
            "--",
            "cat",
            &env.claude_root().join("todo.txt").display().to_string(),
        ]);
        assert_eq!(
            stdout(&out),
            "first\n",
            "[{}] re-entry sees the session's own state",
            user.label()
        );
        let v = env.ls_json();
        assert_eq!(v.as_array().unwrap().len(), 1);
        assert_eq!(v[0]["meta"]["runs"], 2);
        // A fresh session does not see it.
        let out = env.run(&[
            "run",
            "--rm",
            "--",
            "sh",
            "-c",
            "cat ~/.claude/todo.txt 2>/dev/null; echo rc=$?",
        ]);
        assert_eq!(stdout(&out), "rc=1\n");
        assert_eq!(
            env.ls_json().as_array().unwrap().len(),
            1,
            "--rm removed its session"
        );
        assert!(
            std::fs::read_dir(env.sessions_dir()).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')),
            "no staging or trash left behind"
        );
    }
}

#[test]
fn a_login_inside_one_session_reaches_later_sessions() {
    for user in users() {
        let env = TestEnv::new(user);
        // Claude Code writes credentials by tmp + rename; on a bind-mounted file the rename
        // fails with EBUSY and it writes into the file instead. Do both, as it does.
        let login = "cd ~/.claude && echo '{\"claudeAiOauth\":{\"accessToken\":\"t1\"}}' > .cred.tmp && \
                     if mv .cred.tmp .credentials.json 2>/dev/null; then echo renamed; else cat .cred.tmp > .credentials.json && rm .cred.tmp && echo in-place; fi";
        let out = sh(&env, login);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            stdout(&out),
            "in-place\n",
            "the rename onto the shared file is refused (EBUSY)"
        );
        assert!(
            std::fs::read_to_string(env.claude_root().join(".credentials.json"))
                .unwrap()
                .contains("t1")
        );
        let out = sh(&env, "cat ~/.claude/.credentials.json");
        assert!(
            stdout(&out).contains("t1"),
            "[{}] a later session sees the login",
            user.label()
        );
    }
}

#[test]
fn dry_run_prints_the_plan_and_creates_nothing() {
    let env = TestEnv::new(As::me());
    let out = env.run(&["run", "--dry-run", "--", "bash"]);
    assert!(out.status.success());
    let plan: csbox::plan::Plan = serde_json::from_slice(&out.stdout).expect("the plan is JSON");
    assert_eq!(plan.argv, vec!["bash"]);
    assert!(plan
        .mounts
        .iter()
        .any(|m| matches!(m, csbox::plan::MountOp::Overlay { .. })));
    assert!(!env.sessions_dir().exists(), "dry-run creates no session");
}

#[test]
fn a_setup_failure_is_one_line_with_exit_125_and_leaves_nothing_behind() {
    for user in users() {
        let env = TestEnv::new(user);
        assert!(sh(&env, "true").status.success());
        // A working directory the sandbox does not have (a test-only plan edit).
        let out = env
            .csbox(&["run", "--", "true"])
            .env(
                "CSBOX_TEST_PLAN_PATCH",
                r#"{"cwd": "/nonexistent-csbox-test"}"#,
            )
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(125), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.contains("chdir(") && err.contains("ENOENT"),
            "names the call and errno: {err}"
        );
        assert_eq!(
            env.ls_json().as_array().unwrap().len(),
            1,
            "the failed new session was removed"
        );
    }
}

#[test]
fn a_working_directory_under_tmp_stays_visible_while_tmp_is_private() {
    for user in users() {
        let env = TestEnv::new(user);
        let dir = tempfile::Builder::new()
            .prefix("csbox-cwd")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::write(dir.path().join("project.txt"), "p").unwrap();
        std::fs::write("/tmp/csbox-outside-marker", "x").unwrap();
        env.chown_all(dir.path());
        let out = env
            .csbox(&[
                "run",
                "--",
                "sh",
                "-c",
                "cat project.txt; ls /tmp/csbox-outside-marker 2>&1 >/dev/null | wc -l",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "p1\n",
            "[{}] {}",
            user.label(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn background_processes_die_when_the_command_exits() {
    for user in users() {
        let env = TestEnv::new(user);
        let marker = format!("2{}.{}", std::process::id(), user.uid);
        // The command leaves a daemon behind and exits at once.
        let out = env.run(&[
            "run",
            "--",
            "sh",
            "-c",
            &format!("(setsid sleep {marker} &); sleep {marker} & exit 5"),
        ]);
        assert_eq!(out.status.code(), Some(5));
        let alive = || pids_with_marker(&marker).len();
        let t = Instant::now();
        while alive() > 0 {
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "[{}] sandboxed processes outlived the session",
                user.label()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// `csbox run` with no command runs Claude Code: `CLAUDE_BIN`, else `claude` on PATH. When
/// there is none, it says how to install it, exits 127, and makes no session.
#[test]
fn without_a_command_it_runs_claude_bin_or_says_how_to_install_claude() {
    use std::os::unix::fs::PermissionsExt;
    for user in users() {
        let env = TestEnv::new(user);
        let bin = env.home.join("bin/my-claude");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::write(
            &bin,
            "#!/bin/sh\necho \"claude pid=$$ args=$# dir=$CLAUDE_CONFIG_DIR auto=$DISABLE_AUTOUPDATER\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        env.chown_all(&env.home);
        let out = env
            .csbox(&["run", "--rm"])
            .env("CLAUDE_BIN", &bin)
            .output()
            .unwrap();
        assert!(out.status.success(), "[{}] {}", user.label(), stderr(&out));
        assert_eq!(
            stdout(&out).trim(),
            format!(
                "claude pid=2 args=0 dir={} auto=1",
                env.claude_root().display()
            ),
            "[{}] CLAUDE_BIN ran inside, as the command after pid 1",
            user.label()
        );

        let empty = env.home.join("empty-path");
        std::fs::create_dir_all(&empty).unwrap();
        let out = env.csbox(&["run"]).env("PATH", &empty).output().unwrap();
        assert_eq!(out.status.code(), Some(127), "[{}]", user.label());
        let err = stderr(&out);
        assert!(
            err.contains("claude is not installed")
                && err.contains("npm install -g @anthropic-ai/claude-code")
                && err.contains("csbox run -- "),
            "[{}] {err}",
            user.label()
        );
        assert_eq!(
            env.ls_json().as_array().unwrap().len(),
            0,
            "no session made"
        );
    }
}

/// vm-tests runs these shell probes on other kernels; here they run on this one, against
/// the binary just built, so they cannot drift from what csbox does (or from the Rust
/// tests above, which check the same promises).
#[test]
fn the_vm_test_isolation_probes_pass_here_too() {
    let probes = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm-tests/guest/probes.sh");
    for user in users() {
        let env = TestEnv::new(user);
        let out = env
            .command("sh")
            .arg(&probes)
            .args(["history", "skills", "invisible", "caps", "pids", "exits"])
            .env("CSBOX", CSBOX)
            .env(
                "PROFILES",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles"),
            )
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let o = stdout(&out);
        eprintln!("[{}] {o}{}", user.label(), stderr(&out));
        let verdicts: Vec<&str> = o.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            verdicts,
            [
                "ok history",
                "ok skills",
                "ok invisible",
                "ok caps",
                "ok pids",
                "ok exits"
            ],
            "[{}]",
            user.label()
        );
        assert!(out.status.success(), "[{}]", user.label());
    }
}

#[test]
fn the_launcher_follows_the_plans_no_new_privs_and_die_with_parent() {
    for user in users() {
        let env = TestEnv::new(user);
        let nnp = |patch: Option<&str>| {
            let mut c = env.csbox(&["run", "--", "grep", "NoNewPrivs", "/proc/self/status"]);
            if let Some(p) = patch {
                c.env("CSBOX_TEST_PLAN_PATCH", p);
            }
            let out = c.output().unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
            stdout(&out)
        };
        assert!(nnp(None).contains("NoNewPrivs:\t1"), "{}", nnp(None));
        // Without no_new_privs and with no capability left, a seccomp filter cannot be
        // loaded: the patched plan has no rules either.
        let off = nnp(Some(
            r#"{"no_new_privs": false, "seccomp": {"rules": []}, "landlock": null}"#,
        ));
        assert!(off.contains("NoNewPrivs:\t0"), "[{}] {off}", user.label());

        // die_with_parent false: a SIGKILL to the supervisor leaves the sandbox running.
        let marker = format!("2{}.{}", std::process::id(), user.uid);
        let mut c = env
            .csbox(&["run", "--", "sleep", &marker])
            .env("CSBOX_TEST_PLAN_PATCH", r#"{"die_with_parent": false}"#)
            .spawn()
            .unwrap();
        // The supervisor's and pid 1's command lines hold the marker too: wait for the
        // sleep itself.
        let sleeps = || {
            pids_with_marker(&marker)
                .into_iter()
                .filter(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/comm"))
                        .is_ok_and(|c| c.trim() == "sleep")
                })
                .collect::<Vec<_>>()
        };
        let t = Instant::now();
        while sleeps().is_empty() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the sleep never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        c.kill().unwrap();
        c.wait().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let alive = sleeps();
        for pid in pids_with_marker(&marker) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        assert!(
            !alive.is_empty(),
            "[{}] without die_with_parent the sandbox outlives its supervisor",
            user.label()
        );
    }
}

/// A runtime dir on a file system that takes no whiteout (overlayfs refuses an
/// unprivileged user's 0/0 character device: EPERM, as in a container whose / is an
/// overlay): the home's mask layer is made in /dev/shm instead, and the session runs.
#[test]
fn a_runtime_dir_that_takes_no_whiteout_falls_back_to_dev_shm() {
    if As::me().uid != 0 {
        cannot_run("mounting an overlayfs as the runtime dir needs root");
        return;
    }
    let user = users().pop().unwrap();
    assert_ne!(user.uid, 0, "an unprivileged user is needed");
    let env = TestEnv::new(user);
    let ovl = env.dir.path().join("ovl");
    for d in ["l", "u", "w", "m"] {
        std::fs::create_dir_all(ovl.join(d)).unwrap();
    }
    let m = ovl.join("m");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        ovl.join("l").display(),
        ovl.join("u").display(),
        ovl.join("w").display()
    );
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&m)
        .status()
        .unwrap();
    assert!(st.success(), "mount overlay on {}", m.display());
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _u = Unmount(&m);
    std::os::unix::fs::chown(&m, Some(env.user.uid), Some(env.user.gid)).unwrap();
    std::fs::set_permissions(&m, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    // The file system really refuses it (else the test shows nothing).
    let refused = env
        .command("sh")
        .arg("-c")
        .arg(format!(
            "python3 -c 'import os; os.mknod(\"{}/w\", 0o20600, 0)'",
            m.display()
        ))
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "the overlay took a whiteout: the test would show nothing"
    );
    let out = env
        .csbox(&[
            "run",
            "--hide",
            "~/.not-there-r10",
            "--",
            "sh",
            "-c",
            "test ! -e ~/.not-there-r10 && echo inside-ok",
        ])
        .env("XDG_RUNTIME_DIR", &m)
        .output()
        .unwrap();
    assert!(
        out.status.success() && stdout(&out).contains("inside-ok"),
        "{:?}: {}",
        out.status,
        stderr(&out)
    );
    let shm = format!("/dev/shm/csbox-{}/masks", env.user.uid);
    assert!(
        std::fs::read_dir(&shm)
            .map(|d| d.count() > 0)
            .unwrap_or(false),
        "no mask layer in {shm}"
    );
}
