//! Resume across sessions with the real Claude Code CLI, offline: it reaches csbox's proxy,
//! which chains through a loopback upstream that refuses everything (nothing leaves the
//! machine), with a dummy API key. `claude -p` then retries the API for minutes, but
//! writes its transcript within seconds; a resumed conversation is found when claude
//! appends the new prompt to that transcript (a missing one prints "No conversation found
//! with session ID" at once, and exits 1).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::net::{upstream_proxy, Upstream};
use common::transcript::*;
use common::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);
/// How long claude gets to write (or extend) its transcript.
const CLAUDE_LIMIT: Duration = Duration::from_secs(120);

fn claude() -> Option<PathBuf> {
    let c = csbox::paths::find_on_path("claude".as_ref(), std::env::var_os("PATH").as_deref());
    if c.is_none() {
        cannot_run("claude is not installed (.ci/run installs it)");
    }
    c
}

/// Claude Code's project dir name for `p` (its realpath, non-alphanumerics as `-`).
fn slug(p: &Path) -> String {
    p.canonicalize()
        .unwrap()
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

struct Offline {
    env: TestEnv,
    proxy: String,
    claude: String,
}

impl Offline {
    fn new(user: As, claude: &Path) -> Offline {
        let (port, _log) = upstream_proxy(Upstream::Refuse);
        let env = TestEnv::new(user);
        project_dir(&env);
        Offline {
            env,
            proxy: format!("http://127.0.0.1:{port}"),
            claude: claude.to_string_lossy().into_owned(),
        }
    }

    fn csbox(&self, args: &[&str]) -> std::process::Command {
        let mut c = self.env.csbox(args);
        c.current_dir(project_dir(&self.env))
            .env("HTTPS_PROXY", &self.proxy)
            .env("ANTHROPIC_API_KEY", "sk-ant-api03-csbox-test-dummy")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("DISABLE_AUTOUPDATER", "1");
        c
    }

    fn within(&self, args: &[&str]) -> Output {
        output_within(
            &mut self.csbox(args),
            LIMIT,
            &format!("[{}] csbox {args:?}", self.env.user.label()),
        )
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.csbox(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn slug(&self) -> String {
        slug(&project_dir(&self.env))
    }

    /// The transcript `name` (or any `*.jsonl` when None) in the session `id`'s layer once
    /// it holds a complete line containing `needle`; fails when `child` ends first.
    fn wait_transcript(
        &self,
        id: &str,
        name: Option<&str>,
        needle: &str,
        child: &mut Child,
    ) -> PathBuf {
        let dir = self
            .env
            .sessions_dir()
            .join(id)
            .join("state/projects")
            .join(self.slug());
        let t = Instant::now();
        loop {
            let found = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    let ok_name = match name {
                        Some(n) => p.file_name().is_some_and(|f| f == n),
                        None => p.extension().is_some_and(|x| x == "jsonl"),
                    };
                    ok_name
                        && std::fs::read_to_string(p).is_ok_and(|s| {
                            s.lines().any(|l| l.contains(needle)) && s.ends_with('\n')
                        })
                });
            if let Some(p) = found {
                return p;
            }
            if let Ok(Some(st)) = child.try_wait() {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).ok();
                assert!(
                    !err.contains("No conversation found"),
                    "claude did not find the conversation: {err}"
                );
                panic!(
                    "[{}] claude ended ({st}) before its transcript held {needle:?}: {err}",
                    self.env.user.label()
                );
            }
            assert!(
                t.elapsed() < CLAUDE_LIMIT,
                "[{}] no transcript with {needle:?} in {} after {CLAUDE_LIMIT:?}",
                self.env.user.label(),
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The session that appeared since `before` (waits for it).
    fn new_session(&self, before: &[String]) -> String {
        let t = Instant::now();
        loop {
            if let Some(id) = listed_ids(&self.env)
                .into_iter()
                .find(|i| !before.contains(i))
            {
                return id;
            }
            assert!(t.elapsed() < LIMIT, "no new session");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `csbox stop ID` (claude retries the refused API forever), then its status.
    fn stop(&self, id: &str, mut child: Child) -> Output {
        let out = self.within(&["stop", id, "--grace", "10s"]);
        assert!(out.status.success(), "stop: {}", stderr(&out));
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("No conversation found"), "{err}");
        out
    }

    fn merge_record(&self, id: &str) -> Value {
        let out = self.within(&["show", id, "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["meta"]["merge"].clone()
    }

    /// Session A runs `claude -p hi` until its transcript is written, then is stopped.
    fn first_conversation(&self, extra: &[&str]) -> (String, String) {
        let before = listed_ids(&self.env);
        let mut args = vec!["run", "--name", "a"];
        args.extend(extra);
        args.extend(["--", &self.claude, "-p", "hi"]);
        let mut child = self.spawn(&args);
        let a = self.new_session(&before);
        let t = self.wait_transcript(&a, None, "\"hi\"", &mut child);
        let uuid = t.file_stem().unwrap().to_string_lossy().into_owned();
        self.stop(&a, child);
        (a, uuid)
    }
}

/// The done-when of issue 15: session A runs `claude -p "hi"` offline and ends; session B
/// runs `claude --resume <uuid> -p "again"` and the CLI finds the conversation (it
/// appends "again" to it); `csbox run --resume` then starts a new session for it too.
#[test]
fn claude_in_a_new_session_resumes_a_conversation_another_session_wrote() {
    let Some(claude) = claude() else { return };
    for user in users() {
        let o = Offline::new(user, &claude);
        let (a, uuid) = o.first_conversation(&[]);
        let base = o
            .env
            .claude_root()
            .join("projects")
            .join(o.slug())
            .join(format!("{uuid}.jsonl"));
        let a_copy = o
            .env
            .sessions_dir()
            .join(&a)
            .join("state/projects")
            .join(o.slug())
            .join(format!("{uuid}.jsonl"));
        let merged = std::fs::read_to_string(&base)
            .unwrap_or_else(|e| panic!("A's transcript is not in ~/.claude: {e}"));
        assert!(
            std::fs::read_to_string(&a_copy)
                .unwrap()
                .starts_with(&merged)
                && merged.contains("\"hi\"")
        );
        assert!(o.merge_record(&a)["copied"].as_u64() >= Some(1));

        let before = listed_ids(&o.env);
        let mut b = o.spawn(&["run", "--", &o.claude, "--resume", &uuid, "-p", "again"]);
        let b_id = o.new_session(&before);
        o.wait_transcript(&b_id, Some(&format!("{uuid}.jsonl")), "\"again\"", &mut b);
        o.stop(&b_id, b);
        let grown = std::fs::read_to_string(&base).unwrap();
        assert!(
            grown.starts_with(&merged) && grown.contains("\"again\""),
            "B's growth merged back: extended in place"
        );
        assert_eq!(o.merge_record(&b_id)["replaced"].as_u64(), Some(1));

        // Merged: --resume starts a new session with it.
        let before = listed_ids(&o.env);
        let mut c = o.spawn(&["run", "--resume", &uuid, "--", "-p", "third"]);
        let c_id = o.new_session(&before);
        o.wait_transcript(&c_id, Some(&format!("{uuid}.jsonl")), "\"third\"", &mut c);
        o.stop(&c_id, c);
        assert!(std::fs::read_to_string(&base).unwrap().contains("third"));
    }
}

/// With merge-back off, `csbox run --resume` re-enters the session that holds the
/// conversation. Then `csbox merge` is killed with SIGKILL at each of its write points,
/// and from what is left Claude Code in a new session still resumes the conversation.
#[test]
fn run_resume_re_enters_the_session_holding_an_unmerged_conversation_and_a_killed_merge_leaves_it_resumable(
) {
    let Some(claude) = claude() else { return };
    for user in users() {
        let o = Offline::new(user, &claude);
        let dir = o.env.home.join(".config/csbox/profiles");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("nomerge.json"),
            r#"{"extends": "default", "claude": {"mergeBack": []}}"#,
        )
        .unwrap();
        o.env.chown_all(&o.env.home);
        let (a, uuid) = o.first_conversation(&["--profile", "nomerge"]);
        let base = o
            .env
            .claude_root()
            .join("projects")
            .join(o.slug())
            .join(format!("{uuid}.jsonl"));
        assert!(!base.exists(), "merge-back is off");

        let before = listed_ids(&o.env);
        let mut again = o.spawn(&[
            "run",
            "--profile",
            "nomerge",
            "--resume",
            &uuid,
            "--",
            "-p",
            "again",
        ]);
        // Quoted: the prompt itself as a JSON string, not "try again" in an API error
        // that newer CLIs write to the transcript of the first, offline run.
        o.wait_transcript(&a, Some(&format!("{uuid}.jsonl")), "\"again\"", &mut again);
        assert_eq!(
            listed_ids(&o.env),
            before,
            "no new session: A was re-entered"
        );
        o.stop(&a, again);
        let shown: Value =
            serde_json::from_slice(&o.within(&["show", &a, "--json"]).stdout).unwrap();
        assert_eq!(shown["meta"]["runs"], 2);
        assert!(shown["meta"]["command"].to_string().contains("--resume"));

        for point in [
            "merge:locked",
            "merge:tmp-created#1",
            "merge:tmp-written#1",
            "merge:renamed#1",
            "merge:recorded",
        ] {
            let out = output_within(
                o.csbox(&["merge", &a, "--profile", "default"])
                    .env("CSBOX_TEST_CRASH_AT", point),
                LIMIT,
                point,
            );
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(out.status.signal(), Some(9), "{point}: {}", stderr(&out));
            if let Ok(t) = std::fs::read_to_string(&base) {
                assert!(
                    t.ends_with('\n')
                        && t.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()),
                    "{point}: a whole transcript"
                );
            }
        }
        assert!(
            base.exists(),
            "the kill after the rename left the transcript in place"
        );
        let before = listed_ids(&o.env);
        let mut d = o.spawn(&["run", "--", &o.claude, "--resume", &uuid, "-p", "fourth"]);
        let d_id = o.new_session(&before);
        o.wait_transcript(&d_id, Some(&format!("{uuid}.jsonl")), "\"fourth\"", &mut d);
        o.stop(&d_id, d);
    }
}

/// `--resume`'s refusals, each exit 2 with what to do (transcripts planted by hand: no
/// claude needed).
#[test]
fn run_resume_says_what_is_wrong_with_an_id() {
    let env = TestEnv::new(*users().last().unwrap());
    let proj = project_dir(&env);
    let out = output_within(
        env.csbox(&["run", "--resume", "not-a-uuid"])
            .current_dir(&proj),
        LIMIT,
        "bad",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not a Claude Code session id"),
        "{}",
        stderr(&out)
    );
    let u = "0d3c9a5e-1111-4222-8333-944455556666";
    let out = output_within(
        env.csbox(&["run", "--resume", u]).current_dir(&proj),
        LIMIT,
        "unknown",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no conversation") && stderr(&out).contains(u),
        "{}",
        stderr(&out)
    );
    // In a session's layer, under another project: the hint names its directory.
    let other = env.home.join("other");
    std::fs::create_dir_all(&other).unwrap();
    env.chown_all(&env.home);
    let script = format!(
        "mkdir -p ~/.claude/projects/{s} && echo '{{\"n\":1}}' > ~/.claude/projects/{s}/{u}.jsonl",
        s = slug(&other)
    );
    let out = output_within(
        env.csbox(&["run", "--profile", "default", "--", "sh", "-c", &script])
            .current_dir(&other),
        LIMIT,
        "plant",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::remove_dir_all(env.claude_root().join("projects")).unwrap();
    let out = output_within(
        env.csbox(&["run", "--resume", u]).current_dir(&proj),
        LIMIT,
        "elsewhere",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("another directory")
            && err.contains(&format!("cd {}", other.canonicalize().unwrap().display())),
        "{err}"
    );
}

/// Red-team 3, A3-13: a session that rewrote a conversation (its copy does not continue
/// the one in ~/.claude) does not capture `csbox run --resume`: a new session resumes the
/// real one, and csbox names the session holding the rewrite. No claude needed
/// (CLAUDE_BIN is echo).
#[test]
fn a_rewritten_copy_in_a_session_does_not_capture_the_resume() {
    for u in users() {
        let env = TestEnv::new(u);
        let proj = project_dir(&env);
        let uuid = "0d3c9a5e-1111-4222-8333-944455556677";
        let dir = env.claude_root().join("projects").join(slug(&proj));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{uuid}.jsonl")), "{\"n\":1}\n").unwrap();
        env.chown_all(env.dir.path());
        let script = format!(
            "echo '{{\"injected\":1}}' > ~/.claude/projects/{}/{uuid}.jsonl",
            slug(&proj)
        );
        let out = output_within(
            env.csbox(&["run", "--name", "hostile", "--", "sh", "-c", &script])
                .current_dir(&proj),
            LIMIT,
            "plant",
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let hostile = env.ls_json()[0]["id"].as_str().unwrap().to_string();
        let out = output_within(
            env.csbox(&["run", "--resume", uuid])
                .env("CLAUDE_BIN", "/bin/echo")
                .current_dir(&proj),
            LIMIT,
            "resume",
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stdout(&out).contains(&format!("--resume {uuid}")),
            "{}",
            stdout(&out)
        );
        assert!(
            stderr(&out).contains(&hostile) && stderr(&out).contains("does not continue"),
            "{}",
            stderr(&out)
        );
        let ls = env.ls_json();
        let list = ls.as_array().unwrap();
        assert_eq!(list.len(), 2, "a new session resumes it: {ls:#}");
        let h = list.iter().find(|s| s["id"] == hostile.as_str()).unwrap();
        assert_eq!(
            h["meta"]["runs"], 1,
            "the rewriting session was not entered: {h:#}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join(format!("{uuid}.jsonl"))).unwrap(),
            "{\"n\":1}\n"
        );
    }
}

/// Red-team 7, A7-4, end to end with the real CLI: a conversation whose file history
/// tracks the project's `.git/config` makes a host `claude --resume ID --rewind-files MSG`
/// write the backup over it (the control: planted straight into `~/.claude`, no login
/// or network needed). Planted by a session, csbox keeps the conversation out, says why,
/// and the same rewind finds no conversation: `.git/config` stays as it was.
#[test]
fn a_host_rewind_no_longer_writes_the_git_config_a_session_planted() {
    let Some(claude) = claude() else { return };
    let (c0, c1) = (
        "0d3c9a5e-3333-4222-8333-944455556600",
        "0d3c9a5e-3333-4222-8333-944455556601",
    );
    for user in users() {
        let o = Offline::new(user, &claude);
        let env = &o.env;
        let proj = project_dir(env).canonicalize().unwrap();
        let config = "[core]\n\trepositoryformatversion = 0\n";
        std::fs::create_dir_all(proj.join(".git")).unwrap();
        std::fs::write(proj.join(".git/config"), config).unwrap();
        let planted = format!("{config}\tfsmonitor = \"echo PLANTED\"\n");
        let git_config = proj.join(".git/config").display().to_string();
        let files = |conv: &str| {
            let t = format!(
                "{}\n{}\n",
                user_line(conv, &proj, "hi"),
                snapshot_line(&[(&git_config, "1111111111111111@v1")])
            );
            vec![
                (format!("projects/{}/{conv}.jsonl", o.slug()), t),
                (
                    format!("file-history/{conv}/1111111111111111@v1"),
                    planted.clone(),
                ),
            ]
        };
        let rewind = |conv: &str| {
            let mut c = env.command(&o.claude);
            c.args(["-p", "--resume", conv, "--rewind-files", MSG])
                .current_dir(&proj)
                .env("HTTPS_PROXY", &o.proxy)
                .env("ANTHROPIC_API_KEY", "sk-ant-api03-csbox-test-dummy")
                .env("CLAUDE_CODE_ENABLE_SDK_FILE_CHECKPOINTING", "1")
                .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
                .env("DISABLE_AUTOUPDATER", "1");
            let out = output_within(&mut c, CLAUDE_LIMIT, "claude --rewind-files");
            format!("{}{}", stdout(&out), stderr(&out))
        };
        for (p, content) in files(c0) {
            let p = env.claude_root().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        env.chown_all(&env.home);
        let said = rewind(c0);
        assert!(
            said.contains("Files rewound"),
            "the control rewound nothing: {said}"
        );
        let got = std::fs::read_to_string(proj.join(".git/config")).unwrap();
        assert_eq!(got, planted, "the control: the rewind writes .git/config");
        std::fs::write(proj.join(".git/config"), config).unwrap();

        let out = o.within(&["run", "--", "sh", "-c", &plant(env, &files(c1))]);
        let err = stderr(&out);
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains(&format!("tracks {git_config}, inside a git directory")),
            "{err}"
        );
        let said = rewind(c1);
        assert!(said.contains("No conversation found"), "{said}");
        let got = std::fs::read_to_string(proj.join(".git/config")).unwrap();
        assert_eq!(
            got,
            config,
            "[{}] the rewind wrote .git/config",
            env.user.label()
        );
    }
}
