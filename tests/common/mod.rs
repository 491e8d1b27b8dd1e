//! Shared test scaffolding: a throw-away HOME with a realistic `~/.claude`, the real csbox
//! binary, and a way to run it as root and as an unprivileged uid.
#![allow(dead_code)]

pub mod net;
pub mod runc;
pub mod tmux;
pub mod transcript;
#[allow(unused_imports)]
pub use runc::{runc, runc_run};
#[allow(unused_imports)]
pub use tmux::Tmux;

/// The newest session's dir (ids are time-ordered).
pub fn latest_session(env: &TestEnv) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(env.sessions_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("session.json").exists())
        .collect();
    dirs.sort();
    dirs.pop().unwrap()
}

/// The syscall probe (tests/probe/syscall_probe.rs, built as an example), copied into
/// `dir` (a test's project: visible under every profile and in an exported bundle, where
/// the target dir may not be, e.g. under a private /var/tmp).
pub fn probe_in(dir: &Path) -> Option<PathBuf> {
    let built = Path::new(CSBOX).parent()?.join("examples/syscall-probe");
    if !built.exists() {
        cannot_run("the syscall probe is not built: run the whole `cargo test` (it builds examples), or `cargo build --example syscall-probe`");
        return None;
    }
    let p = dir.join("syscall-probe");
    std::fs::copy(&built, &p).unwrap();
    Some(p)
}

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const CSBOX: &str = env!("CARGO_BIN_EXE_csbox");

pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// A test cannot run here: say why; under CI=true that is a failure, not a skip.
pub fn cannot_run(why: &str) {
    if in_ci() {
        panic!("CI=true and this test cannot run: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// Who runs csbox in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct As {
    pub uid: u32,
    pub gid: u32,
}

impl As {
    pub fn me() -> Self {
        As {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        }
    }
    pub fn label(&self) -> String {
        format!("uid {}", self.uid)
    }
}

/// The users a sandbox test runs as: ourselves, and when we are root also an unprivileged
/// uid (`CSBOX_TEST_USER`, default `csbox-test`, which .ci/run creates; else `nobody`).
pub fn users() -> Vec<As> {
    let me = As::me();
    if me.uid != 0 {
        return vec![me];
    }
    let name = std::env::var("CSBOX_TEST_USER").unwrap_or_else(|_| "csbox-test".into());
    let user = nix::unistd::User::from_name(&name)
        .ok()
        .flatten()
        .or_else(|| {
            eprintln!("note: test user {name:?} does not exist (.ci/run creates it); using nobody");
            nix::unistd::User::from_name("nobody").ok().flatten()
        });
    match user {
        Some(u) => vec![
            me,
            As {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            },
        ],
        None => {
            cannot_run("no unprivileged user to run sandbox tests as");
            vec![me]
        }
    }
}

/// A fake home for one test and one user: `$HOME/.claude` with settings, CLAUDE.md, a
/// shared skill, and `$HOME/.claude.json`. Lives under target/ (not /tmp, which is private
/// inside the sandbox) and is owned by the test's user.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub user: As,
}

pub fn test_base() -> PathBuf {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("csbox-tests");
    std::fs::create_dir_all(&base).unwrap();
    let _ = std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755));
    base
}

impl TestEnv {
    pub fn new(user: As) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("t")
            .tempdir_in(test_base())
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let home = dir.path().join("home");
        let claude = home.join(".claude");
        std::fs::create_dir_all(claude.join("skills/x")).unwrap();
        std::fs::create_dir_all(claude.join("agents")).unwrap();
        std::fs::create_dir_all(claude.join("commands")).unwrap();
        std::fs::write(claude.join("skills/x/SKILL.md"), "# skill x\n").unwrap();
        std::fs::write(claude.join("settings.json"), "{\"hooks\":{}}\n").unwrap();
        std::fs::write(claude.join("CLAUDE.md"), "be nice\n").unwrap();
        std::fs::write(claude.join("history.jsonl"), "{\"display\":\"old\"}\n").unwrap();
        std::fs::write(
            home.join(".claude.json"),
            "{\"hasCompletedOnboarding\":true}\n",
        )
        .unwrap();
        let env = TestEnv { dir, home, user };
        env.chown_all(env.dir.path());
        env
    }

    pub fn claude_root(&self) -> PathBuf {
        self.home.join(".claude")
    }

    pub fn sessions_dir(&self) -> PathBuf {
        self.home.join(".local/share/csbox/sessions")
    }

    pub fn chown_all(&self, p: &Path) {
        if As::me().uid != 0 {
            return;
        }
        let (u, g) = (Some(self.user.uid), Some(self.user.gid));
        let _ = std::os::unix::fs::lchown(p, u, g);
        if p.is_dir() && !p.is_symlink() {
            for e in std::fs::read_dir(p).unwrap() {
                self.chown_all(&e.unwrap().path());
            }
        }
    }

    /// `csbox ARGS` as this env's user, with HOME pointing at the fake home and a minimal,
    /// predictable environment.
    pub fn csbox(&self, args: &[&str]) -> Command {
        let mut c = self.command(CSBOX);
        c.args(args);
        c
    }

    /// `program` as this env's user, in the same environment as [`TestEnv::csbox`].
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .env("HOME", &self.home)
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("CSBOX_NO_UPDATE", "1")
            .env("LANG", "C.UTF-8")
            .current_dir(&self.home);
        if let Some(ci) = std::env::var_os("CI") {
            c.env("CI", ci);
        }
        if As::me() != self.user {
            c.uid(self.user.uid).gid(self.user.gid);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.csbox(args).output().expect("spawn csbox");
        eprintln!(
            "[{}] csbox {:?} -> {:?}\n--- stdout\n{}--- stderr\n{}",
            self.user.label(),
            args,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn ls_json(&self) -> serde_json::Value {
        let out = self.run(&["ls", "--json"]);
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).expect("ls --json is JSON")
    }
}

/// `p` as one word of a shell script, whatever it holds (a checkout path may have spaces).
pub fn sh_quote(p: impl AsRef<std::ffi::OsStr>) -> String {
    let s = p.as_ref().to_string_lossy();
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Re-run this very test binary as a helper process: the named test function is called
/// with `CSBOX_TEST_CHILD` set and acts as the child. Tests may not fork (they are threads).
pub fn self_exec(test_name: &str, env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env("CSBOX_TEST_CHILD", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

pub fn is_child() -> bool {
    std::env::var_os("CSBOX_TEST_CHILD").is_some()
}

/// Read the child's stdout until a line contains `marker`; return what follows it. The
/// test harness prints its own words before ours on the same line.
pub fn wait_for_marker(child: &mut std::process::Child, marker: &str) -> String {
    let out = child.stdout.take().unwrap();
    let mut reader = BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("child exited before printing {marker:?}");
        }
        if let Some(pos) = line.find(marker) {
            let rest = line[pos + marker.len()..].trim().to_string();
            // keep draining in the background so the child never blocks on a full pipe
            std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
            return rest;
        }
    }
}

/// Run `cmd` to its end, but never wait longer than `limit`: a hang is killed and fails
/// the test, naming what hung.
pub fn output_within(cmd: &mut Command, limit: std::time::Duration, what: &str) -> Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            let out = child.wait_with_output().expect("output");
            eprintln!(
                "{what} -> {:?}\n--- stdout\n{}--- stderr\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return out;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} hung: still running after {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A project dir for `csbox run` to start in (a session refuses to bind a dir holding
/// the home), owned by the env's user.
pub fn project_dir(env: &TestEnv) -> PathBuf {
    let p = env.home.join("proj");
    std::fs::create_dir_all(&p).unwrap();
    env.chown_all(&env.home);
    p
}

/// The ids `csbox ls --json` lists.
pub fn listed_ids(env: &TestEnv) -> Vec<String> {
    env.ls_json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// The `state` `csbox ls --json` gives the session `id`, if it is listed.
pub fn listed_state(env: &TestEnv, id: &str) -> Option<String> {
    env.ls_json()
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .map(|r| r["state"].as_str().unwrap().to_string())
}

/// `csbox run -- CMD…` as the env's user in `cwd`, which must succeed; the new session's id.
pub fn run_new_session(env: &TestEnv, cmd: &[&str], cwd: &Path) -> String {
    let before = listed_ids(env);
    let mut args = vec!["run", "--"];
    args.extend(cmd);
    let out = output_within(
        env.csbox(&args).current_dir(cwd),
        std::time::Duration::from_secs(60),
        &format!("[{}] csbox {args:?}", env.user.label()),
    );
    assert!(out.status.success(), "csbox run failed: {}", stderr(&out));
    let mut new: Vec<String> = listed_ids(env)
        .into_iter()
        .filter(|i| !before.contains(i))
        .collect();
    assert_eq!(new.len(), 1, "one new session");
    new.pop().unwrap()
}

/// Set every mtime (no-follow) under `p` to `ago` in the past.
pub fn backdate(p: &Path, ago: std::time::Duration) {
    let t = std::time::SystemTime::now() - ago;
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap();
    let ts = nix::sys::time::TimeSpec::new(d.as_secs() as i64, 0);
    let md = p.symlink_metadata().unwrap();
    if md.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            backdate(&e.unwrap().path(), ago);
        }
    }
    nix::sys::stat::utimensat(
        None,
        p,
        &ts,
        &ts,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}
