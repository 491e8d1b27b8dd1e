//! Contained, and still useful: the tools a coding agent runs work inside the default
//! sandbox, their caches land in the session's home layer, and the host's home and
//! `~/.claude` stay byte for byte as they were. Real tools, no network: local packages
//! only. As root and as the unprivileged user.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// Every entry under `root` but `skip` (no symlink followed): type and content.
fn snapshot(root: &Path, skip: &[PathBuf]) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn walk(dir: &Path, skip: &[PathBuf], out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if skip.iter().any(|s| p.starts_with(s)) {
                continue;
            }
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                out.insert(p.clone(), b"dir".to_vec());
                walk(&p, skip, out);
            } else if md.file_type().is_symlink() {
                out.insert(
                    p.clone(),
                    std::fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                );
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    walk(root, skip, &mut out);
    out
}

/// The home as the host sees it, but csbox's store and the shared login.
fn home_snapshot(env: &TestEnv) -> BTreeMap<PathBuf, Vec<u8>> {
    snapshot(
        &env.home,
        &[
            env.home.join(".local/share/csbox"),
            env.claude_root().join(".credentials.json"),
            env.home.join("proj"),
        ],
    )
}

/// The project dir, after one run that made what csbox keeps on the host (the login
/// file, the update lock, the store and its link): snapshots are taken after this.
fn project(env: &TestEnv) -> PathBuf {
    let p = env.home.join("proj");
    std::fs::create_dir_all(&p).unwrap();
    env.chown_all(env.dir.path());
    let out = env
        .csbox(&["run", "--rm", "--", "true"])
        .current_dir(&p)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    p
}

fn run_in(env: &TestEnv, dir: &Path, script: &str) -> std::process::Output {
    let out = env
        .csbox(&["run", "--", "sh", "-c", script])
        .current_dir(dir)
        .output()
        .unwrap();
    eprintln!(
        "[{}] {script}\n--- stdout\n{}--- stderr\n{}",
        env.user.label(),
        stdout(&out),
        stderr(&out)
    );
    out
}

fn have(tool: &str) -> Option<PathBuf> {
    csbox::paths::find_on_path(tool.as_ref(), std::env::var_os("PATH").as_deref())
}

#[test]
fn git_commit_works_in_the_project_and_reaches_the_host() {
    for user in users() {
        let env = TestEnv::new(user);
        let proj = project(&env);
        let before = home_snapshot(&env);
        let out = run_in(
            &env,
            &proj,
            "git init -q . && git -c user.email=a@b -c user.name=t commit -q --allow-empty -m inside && git log --oneline | wc -l",
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out).trim(), "1");
        assert!(
            proj.join(".git/HEAD").exists(),
            "the repository is on the host"
        );
        // What git init writes steers nothing: it stays (and nothing is reported).
        assert!(proj.join(".git/config").exists() && proj.join(".git/hooks").exists());
        assert!(
            !stderr(&out).contains("while this session ran"),
            "{}",
            stderr(&out)
        );
        assert_eq!(
            home_snapshot(&env),
            before,
            "nothing else of the home changed"
        );
    }
}

#[test]
fn a_linked_worktree_commits_into_its_common_dir() {
    for user in users() {
        let env = TestEnv::new(user);
        let main = env.dir.path().join("repos/main");
        std::fs::create_dir_all(&main).unwrap();
        env.chown_all(env.dir.path());
        let git = |dir: &Path, args: &str| {
            host_git(&env, dir, args);
        };
        git(&main, "init -q .");
        git(&main, "commit -q --allow-empty -m one");
        let wt = env.home.join("wt");
        git(&main, &format!("worktree add -q {} -b side", sh_quote(&wt)));
        let out = run_in(
            &env,
            &wt,
            "git -c user.email=a@b -c user.name=t commit -q --allow-empty -m from-the-sandbox && echo ok; git worktree list --porcelain | grep -q '^worktree .*/wt$' && echo listed; echo x > \"$(git rev-parse --git-common-dir)/hooks/post-commit\" || echo hooks-read-only",
        );
        assert!(stdout(&out).contains("ok"), "{}", stderr(&out));
        // Its `gitdir` is read-only (red-team 8, A8-2): git only reads it.
        assert!(stdout(&out).contains("listed"), "{}", stderr(&out));
        assert!(stdout(&out).contains("hooks-read-only"), "{}", stdout(&out));
        let log = env
            .command("git")
            .args(["log", "--oneline", "side"])
            .current_dir(&main)
            .output()
            .unwrap();
        assert!(
            stdout(&log).contains("from-the-sandbox"),
            "{}",
            stdout(&log)
        );
        assert!(!main.join(".git/hooks/post-commit").exists());
    }
}

/// A worktree the session adds (`git worktree add`) is git's own: nothing of it is moved
/// at exit, so it stays usable and clean on the host (red-team 6, A6-6: its `commondir`
/// was moved and the worktree left broken and dirty).
#[test]
fn a_worktree_the_session_adds_stays_usable_on_the_host() {
    for user in users() {
        let env = TestEnv::new(user);
        let proj = project(&env);
        host_git(&env, &proj, "init -q .");
        std::fs::write(proj.join("f"), "x\n").unwrap();
        env.chown_all(env.dir.path());
        host_git(&env, &proj, "add f");
        host_git(&env, &proj, "commit -q -m one");
        let out = run_in(&env, &proj, "git worktree add -q wt -b side && echo added");
        assert!(stdout(&out).contains("added"), "{}", stderr(&out));
        assert!(
            !stderr(&out).contains("while this session ran"),
            "nothing of the worktree is moved: {}",
            stderr(&out)
        );
        assert!(proj.join(".git/worktrees/wt/commondir").is_file());
        assert_eq!(host_git(&env, &proj.join("wt"), "status --porcelain"), "");
        assert_eq!(
            host_git(&env, &proj, "worktree list --porcelain")
                .matches("worktree ")
                .count(),
            2
        );
    }
}

/// `git ARGS` as the env's user, on the host, in `dir`.
fn host_git(env: &TestEnv, dir: &Path, args: &str) -> String {
    let out = env
        .command("sh")
        .args([
            "-c",
            &format!("git -c user.email=a@b -c user.name=t {args}"),
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args}: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn git_works_in_a_repository_whose_git_dir_is_pinned() {
    for user in users() {
        let env = TestEnv::new(user);
        let proj = project(&env);
        host_git(&env, &proj, "init -q . && echo a > a && git add a && git -c user.email=a@b -c user.name=t commit -q -m one");
        std::fs::create_dir_all(proj.join(".claude")).unwrap();
        std::fs::write(proj.join(".claude/settings.json"), "{}").unwrap();
        env.chown_all(env.dir.path());
        // .git and .claude are mount points inside: what git does in them still works.
        let out = run_in(
            &env,
            &proj,
            "set -e; g='git -c user.email=a@b -c user.name=t'; echo b > b; $g add b; $g commit -q -m two; $g checkout -q -b side; \
             echo c > c; $g add c; $g stash -q; $g stash pop -q; $g commit -q -am three; $g gc -q; $g tag v1; \
             mv .git .git-old 2>/dev/null && echo RENAMED; echo ok",
        );
        assert!(
            stdout(&out).contains("ok") && !stdout(&out).contains("RENAMED"),
            "{}",
            stderr(&out)
        );
        assert!(
            !stderr(&out).contains("while this session ran"),
            "nothing moved: {}",
            stderr(&out)
        );
        let log = host_git(&env, &proj, "log --oneline side");
        assert_eq!(log.lines().count(), 3, "{log}");
        assert!(host_git(&env, &proj, "tag").contains("v1"));
    }
}

#[test]
fn a_session_writes_its_own_shell_snapshots_and_env() {
    for user in users() {
        let env = TestEnv::new(user);
        let proj = project(&env);
        std::fs::create_dir_all(env.claude_root().join("shell-snapshots")).unwrap();
        std::fs::write(
            env.claude_root().join("shell-snapshots/host.sh"),
            "export K=host\n",
        )
        .unwrap();
        env.chown_all(env.dir.path());
        let out = run_in(
            &env,
            &proj,
            "echo mine > ~/.claude/shell-snapshots/s.sh && mkdir -p ~/.claude/session-env/u1 && echo e > ~/.claude/session-env/u1/env && ls ~/.claude/shell-snapshots",
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out).trim(), "s.sh", "its own only");
        let layer = latest_session(&env).join("state");
        assert_eq!(
            std::fs::read_to_string(layer.join("shell-snapshots/s.sh")).unwrap(),
            "mine\n"
        );
        assert!(layer.join("session-env/u1/env").exists());
        assert!(
            !env.claude_root().join("shell-snapshots/s.sh").exists(),
            "not the host's"
        );
    }
}

#[test]
fn npm_installs_a_local_package_and_its_cache_lands_in_the_home_layer() {
    let Some(_) = have("npm") else {
        return cannot_run("npm is not installed (.ci/run installs nodejs/npm)");
    };
    for user in users() {
        let env = TestEnv::new(user);
        let proj = project(&env);
        // In the home, not beside it: the sandbox shows the host read-only, but a test dir
        // under /tmp (a checkout there) is behind the private /tmp.
        let pkg = env.home.join("pkg");
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::write(
            pkg.join("package.json"),
            r#"{"name":"csbox-local","version":"1.0.0","main":"index.js"}"#,
        )
        .unwrap();
        std::fs::write(pkg.join("index.js"), "module.exports = 41 + 1;\n").unwrap();
        std::fs::write(
            proj.join("package.json"),
            r#"{"name":"proj","version":"1.0.0"}"#,
        )
        .unwrap();
        env.chown_all(env.dir.path());
        let before = home_snapshot(&env);
        let out = run_in(
            &env,
            &proj,
            &format!(
                "npm install --offline --no-audit --no-fund {} >/dev/null && node -e 'console.log(require(\"csbox-local\"))'",
                sh_quote(&pkg)
            ),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out).trim(), "42");
        assert!(
            proj.join("node_modules/csbox-local").exists(),
            "installed in the project"
        );
        assert_eq!(
            home_snapshot(&env),
            before,
            "npm's ~/.npm writes stayed in the layer"
        );
        assert!(
            latest_session(&env).join("home/upper/.npm").exists(),
            "in the home layer"
        );
    }
}

/// A wheel by hand (a zip with the three metadata files): pip installs it with no
/// network and no build backend.
fn wheel(dir: &Path) -> PathBuf {
    let path = dir.join("csbox_probe-1.0-py3-none-any.whl");
    let script = format!(
        r#"
import zipfile
z = zipfile.ZipFile({path:?}, "w")
z.writestr("csbox_probe.py", "VALUE = 42\n")
z.writestr("csbox_probe-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: csbox-probe\nVersion: 1.0\n")
z.writestr("csbox_probe-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: csbox\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
z.writestr("csbox_probe-1.0.dist-info/RECORD", "")
z.close()
"#,
        path = path.display().to_string()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    path
}

#[test]
fn pip_install_user_works_and_lands_in_the_home_layer() {
    for user in users() {
        let env = TestEnv::new(user);
        let check = env
            .command("python3")
            .args(["-m", "pip", "--version"])
            .output();
        if !check.is_ok_and(|o| o.status.success()) {
            return cannot_run(
                "python3 -m pip is not available to the test user (.ci/run installs python3-pip)",
            );
        }
        let proj = project(&env);
        let whl = wheel(&env.home);
        env.chown_all(env.dir.path());
        let before = home_snapshot(&env);
        let out = run_in(
            &env,
            &proj,
            &format!(
                "python3 -m pip install --user --no-index --no-deps --break-system-packages -q {} 2>&1 | tail -2; python3 -c 'import csbox_probe; print(csbox_probe.VALUE)'",
                sh_quote(&whl)
            ),
        );
        assert!(stdout(&out).trim().ends_with("42"), "{}", stdout(&out));
        assert_eq!(home_snapshot(&env), before, "~/.local stayed in the layer");
        assert!(latest_session(&env).join("home/upper/.local/lib").exists());
    }
}

/// A cargo the user can run with the test's fake HOME: Debian's (rustup's proxy looks
/// for its toolchains under HOME, and lives under /root).
fn user_cargo(_user: As) -> Option<PathBuf> {
    Some(PathBuf::from("/usr/bin/cargo")).filter(|p| p.exists())
}

#[test]
fn cargo_builds_a_crate_with_a_path_dependency_offline() {
    for user in users() {
        let Some(cargo) = user_cargo(user) else {
            return cannot_run("no cargo for the test user (.ci/run installs Debian's cargo)");
        };
        let env = TestEnv::new(user);
        let proj = project(&env);
        let dep = env.home.join("dep");
        std::fs::create_dir_all(dep.join("src")).unwrap();
        std::fs::create_dir_all(proj.join("src")).unwrap();
        std::fs::write(
            dep.join("Cargo.toml"),
            "[package]\nname = \"dep\"\nversion = \"0.1.0\"\nedition = \"2018\"\n",
        )
        .unwrap();
        std::fs::write(dep.join("src/lib.rs"), "pub fn answer() -> u32 { 42 }\n").unwrap();
        std::fs::write(
            proj.join("Cargo.toml"),
            format!("[package]\nname = \"proj\"\nversion = \"0.1.0\"\nedition = \"2018\"\n\n[dependencies]\ndep = {{ path = {:?} }}\n", dep.display().to_string()),
        )
        .unwrap();
        std::fs::write(
            proj.join("src/main.rs"),
            "fn main() { println!(\"{}\", dep::answer()); }\n",
        )
        .unwrap();
        env.chown_all(env.dir.path());
        let before = home_snapshot(&env);
        let out = env
            .csbox(&[
                "run",
                "--",
                cargo.to_str().unwrap(),
                "run",
                "--offline",
                "-q",
            ])
            .env("RUSTC", cargo.with_file_name("rustc"))
            .current_dir(&proj)
            .output()
            .unwrap();
        assert!(out.status.success(), "[{}] {}", user.label(), stderr(&out));
        assert_eq!(stdout(&out).trim(), "42");
        assert!(proj.join("target").exists(), "built in the project");
        assert_eq!(
            home_snapshot(&env),
            before,
            "cargo's ~/.cargo stayed in the layer"
        );
    }
}

#[test]
fn a_home_under_tmp_keeps_its_claude_view_and_its_writes() {
    for user in users() {
        let env = TestEnv::new(user);
        // The same home, at a path under /tmp (as CI containers have it).
        let home = PathBuf::from(format!(
            "/tmp/csbox-home-{}-{}",
            std::process::id(),
            user.uid
        ));
        let _ = std::fs::remove_dir_all(&home);
        let copy = std::process::Command::new("cp")
            .args(["-a"])
            .arg(&env.home)
            .arg(&home)
            .status()
            .unwrap();
        assert!(copy.success());
        std::fs::create_dir_all(home.join("proj")).unwrap();
        env.chown_all(&home);
        let out = env
            .csbox(&["run", "--", "sh", "-c", "cat ~/.claude/skills/x/SKILL.md && echo '{\"display\":\"t\"}' >> ~/.claude/history.jsonl && echo wrote"])
            .env("HOME", &home)
            .current_dir(home.join("proj"))
            .output()
            .unwrap();
        let o = stdout(&out);
        let cleanup = || std::fs::remove_dir_all(&home);
        assert!(
            o.contains("# skill x") && o.contains("wrote"),
            "[{}] {o} {}",
            user.label(),
            stderr(&out)
        );
        let real = std::fs::read_to_string(home.join(".claude/history.jsonl")).unwrap();
        assert!(!real.contains("\"t\""), "the real history is unchanged");
        let store = home.join(".local/share/csbox/sessions");
        let layered = std::fs::read_dir(&store).unwrap().flatten().any(|e| {
            std::fs::read_to_string(e.path().join("state/history.jsonl"))
                .is_ok_and(|s| s.contains("\"t\""))
        });
        let _ = cleanup();
        assert!(
            layered,
            "the write landed in the session's layer, not lost in a tmpfs"
        );
    }
}

#[test]
fn claude_code_reaches_its_first_screen_under_a_pty_and_changes_nothing_of_the_home() {
    let Some(claude) = have("claude") else {
        return cannot_run("claude is not installed (.ci/run installs it)");
    };
    if have("tmux").is_none() {
        return cannot_run("tmux is not installed (.ci/run installs it)");
    }
    for user in users() {
        let env = TestEnv::new(user);
        let proj = project(&env);
        let real = proj.canonicalize().unwrap();
        // Onboarding done, the project trusted, the (dummy) API key approved: its last 20
        // characters, as Claude Code records the answer.
        let key = "sk-ant-api03-csbox-test-key-0123456789abcdef";
        std::fs::write(
            env.home.join(".claude.json"),
            format!(
                r#"{{"hasCompletedOnboarding":true,"customApiKeyResponses":{{"approved":["{}"],"rejected":[]}},"projects":{{"{}":{{"hasTrustDialogAccepted":true}}}}}}"#,
                &key[key.len() - 20..],
                real.display()
            ),
        )
        .unwrap();
        env.chown_all(env.dir.path());
        let before = home_snapshot(&env);
        let sock = env.dir.path().join("tmux.sock");
        let tmux = |args: &[&str]| {
            env.command("tmux")
                .arg("-S")
                .arg(&sock)
                .args(args)
                .output()
                .unwrap()
        };
        // Whatever it asks for goes to a loopback upstream that refuses it: nothing leaves
        // the machine.
        let (up, _log) = common::net::upstream_proxy(common::net::Upstream::Refuse);
        let cmd = format!(
            "cd {} && HTTPS_PROXY=http://127.0.0.1:{up} ANTHROPIC_API_KEY={key} DISABLE_TELEMETRY=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 {} run -- {}",
            sh_quote(&proj),
            sh_quote(CSBOX),
            sh_quote(&claude)
        );
        let out = tmux(&["new-session", "-d", "-x", "120", "-y", "40", &cmd]);
        assert!(out.status.success(), "{}", stderr(&out));
        let t = Instant::now();
        let mut screen = String::new();
        while t.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(500));
            screen = stdout(&tmux(&["capture-pane", "-p"]));
            if screen.contains("for shortcuts")
                || screen.contains("Try \"")
                || screen.contains("? for")
            {
                break;
            }
        }
        let _ = tmux(&["send-keys", "C-c"]);
        std::thread::sleep(Duration::from_millis(300));
        let _ = tmux(&["send-keys", "C-c"]);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(15) && tmux(&["has-session"]).status.success() {
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = tmux(&["kill-server"]);
        assert!(
            screen.contains("for shortcuts") || screen.contains("? for"),
            "[{}] the first screen never came: {screen}",
            user.label()
        );
        assert_eq!(
            home_snapshot(&env),
            before,
            "[{}] the host's home and ~/.claude are unchanged",
            user.label()
        );
    }
}
