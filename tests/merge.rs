//! Merge-back (issue 15): when a session ends, its conversations go into the real
//! `~/.claude`, append-only and safe against a hostile layer. Every test runs real
//! sessions (real namespaces, the real binary) as root and as the unprivileged user; the
//! layer's content is written by the command inside, as a hostile one would.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn within(env: &TestEnv, args: &[&str]) -> Output {
    output_within(env.csbox(args).current_dir(project_dir(env)), LIMIT, &format!("[{}] csbox {args:?}", env.user.label()))
}

/// `csbox run [extra] -- sh -c SCRIPT`, which must succeed; the new session's id.
fn session(env: &TestEnv, extra: &[&str], script: &str) -> (String, Output) {
    let before = listed_ids(env);
    let mut args = vec!["run"];
    args.extend(extra);
    args.extend(["--", "sh", "-c", script]);
    let out = within(env, &args);
    assert!(out.status.success(), "[{}] {script}: {}", env.user.label(), stderr(&out));
    let new: Vec<String> = listed_ids(env).into_iter().filter(|i| !before.contains(i)).collect();
    assert_eq!(new.len(), 1, "one new session");
    (new[0].clone(), out)
}

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()
}

/// A user profile `nomerge`: the default with merge-back off.
fn nomerge_profile(env: &TestEnv) {
    let dir = env.home.join(".config/csbox/profiles");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("nomerge.json"), r#"{"extends": "default", "claude": {"mergeBack": []}}"#).unwrap();
    env.chown_all(&env.home);
}

fn show_json(env: &TestEnv, id: &str) -> Value {
    let out = within(env, &["show", id, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every file below `dir` (no link followed): content and mtime.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
    let mut out = BTreeMap::new();
    fn walk(base: &Path, d: &Path, out: &mut BTreeMap<PathBuf, (Vec<u8>, SystemTime)>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            let md = p.symlink_metadata().unwrap();
            if md.is_dir() {
                walk(base, &p, out);
            } else if md.is_file() {
                out.insert(p.strip_prefix(base).unwrap().to_path_buf(), (std::fs::read(&p).unwrap(), md.modified().unwrap()));
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// Every `*.jsonl` below `~/.claude` is lines of JSON objects: what Claude Code reads.
fn assert_base_readable(env: &TestEnv, what: &str) {
    for (p, (bytes, _)) in snapshot(&env.claude_root()) {
        if p.extension().is_some_and(|e| e == "jsonl") {
            for (i, l) in String::from_utf8(bytes).unwrap().lines().enumerate() {
                let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{what}: {}:{}: {e}: {l:?}", p.display(), i + 1));
                assert!(v.is_object(), "{what}: {}:{}", p.display(), i + 1);
            }
        }
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.contains(".csbox-merge-") || what.contains("crash"), "{what}: a temp file left: {}", p.display());
    }
}

#[test]
fn new_transcripts_memory_and_history_merge_into_the_real_claude_root() {
    for user in users() {
        let env = TestEnv::new(user);
        let t = now_ms() + 1000;
        let script = format!(
            "mkdir -p ~/.claude/projects/-p/memory ~/.claude/todos && \
             printf '{{\"type\":\"user\",\"n\":1}}\\n{{\"type\":\"assistant\",\"n\":2}}\\n' > ~/.claude/projects/-p/u1.jsonl && \
             touch -d @1700000000 ~/.claude/projects/-p/u1.jsonl && \
             echo 'remember this' > ~/.claude/projects/-p/memory/MEMORY.md && \
             echo '[]' > ~/.claude/todos/u1.json && \
             printf '{{\"display\":\"a prompt\",\"timestamp\":{t},\"project\":\"/p\",\"sessionId\":\"u1\"}}\\n' >> ~/.claude/history.jsonl"
        );
        let (id, out) = session(&env, &[], &script);
        assert!(!stderr(&out).contains("warning"), "nothing to warn about: {}", stderr(&out));
        let base = env.claude_root();
        let t1 = base.join("projects/-p/u1.jsonl");
        assert_eq!(std::fs::read_to_string(&t1).unwrap(), "{\"type\":\"user\",\"n\":1}\n{\"type\":\"assistant\",\"n\":2}\n");
        let mtime = t1.metadata().unwrap().modified().unwrap();
        assert_eq!(mtime, UNIX_EPOCH + Duration::from_secs(1_700_000_000), "the picker and --continue order by mtime: kept");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(t1.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(base.join("projects/-p/memory/MEMORY.md")).unwrap(), "remember this\n");
        assert_eq!(std::fs::read_to_string(base.join("todos/u1.json")).unwrap(), "[]\n");
        let history = std::fs::read_to_string(base.join("history.jsonl")).unwrap();
        assert_eq!(history, format!("{{\"display\":\"old\"}}\n{{\"display\":\"a prompt\",\"timestamp\":{t},\"project\":\"/p\",\"sessionId\":\"u1\"}}\n"));
        let m = &show_json(&env, &id)["meta"]["merge"];
        assert_eq!((m["copied"].as_u64(), m["history_lines"].as_u64()), (Some(3), Some(1)), "{m}");
        let shown = stdout(&within(&env, &["show", &id]));
        assert!(shown.contains("merged:") && shown.contains("3 copied") && shown.contains("1 history line"), "{shown}");
        assert!(stdout(&within(&env, &["ls"])).contains("merged"), "ls flags it");
        assert_base_readable(&env, "after a merge");
    }
}

#[test]
fn a_resumed_conversation_that_grew_replaces_the_real_one() {
    for user in users() {
        let env = TestEnv::new(user);
        let p = env.claude_root().join("projects/-p");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("u2.jsonl"), "{\"n\":1}\n").unwrap();
        env.chown_all(&env.home);
        let (id, _) = session(&env, &[], "printf '{\"n\":2}\\n' >> ~/.claude/projects/-p/u2.jsonl");
        assert_eq!(std::fs::read_to_string(p.join("u2.jsonl")).unwrap(), "{\"n\":1}\n{\"n\":2}\n");
        let m = &show_json(&env, &id)["meta"]["merge"];
        assert_eq!((m["replaced"].as_u64(), m["copied"].as_u64()), (Some(1), Some(0)), "{m}");
        // The host resumed it meanwhile, and the session's copy is older: nothing to add.
        std::fs::write(p.join("u2.jsonl"), "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n").unwrap();
        let out = within(&env, &["merge", &id]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("1 unchanged"), "{}", stdout(&out));
        assert_eq!(std::fs::read_to_string(p.join("u2.jsonl")).unwrap(), "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n");
    }
}

#[test]
fn a_transcript_rewritten_in_the_session_is_kept_beside_and_reported() {
    for user in users() {
        let env = TestEnv::new(user);
        let p = env.claude_root().join("projects/-p");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("u3.jsonl"), "{\"n\":1}\n{\"n\":2}\n").unwrap();
        env.chown_all(&env.home);
        let (id, out) = session(&env, &[], "printf '{\"n\":\"rewritten\"}\\n' > ~/.claude/projects/-p/u3.jsonl");
        assert_eq!(std::fs::read_to_string(p.join("u3.jsonl")).unwrap(), "{\"n\":1}\n{\"n\":2}\n", "never overwritten");
        let kept = p.join(format!("u3.jsonl.csbox-conflict-{id}"));
        assert_eq!(std::fs::read_to_string(&kept).unwrap(), "{\"n\":\"rewritten\"}\n", "kept beside");
        let err = stderr(&out);
        assert!(err.contains("conflict: ~/.claude/projects/-p/u3.jsonl") && err.contains("does not extend"), "{err}");
        let m = &show_json(&env, &id)["meta"]["merge"];
        assert_eq!(m["conflicts"][0]["path"], "projects/-p/u3.jsonl", "{m}");
        assert!(stdout(&within(&env, &["ls"])).contains("conflicts"));
        // Again: the same conflict, nothing rewritten.
        let before = snapshot(&env.claude_root());
        assert!(within(&env, &["merge", &id]).status.success());
        assert_eq!(snapshot(&env.claude_root()), before);
    }
}

#[test]
fn links_fifos_huge_files_exec_bits_and_bad_lines_are_refused_and_reported() {
    for user in users() {
        let env = TestEnv::new(user);
        let secret = env.dir.path().join("secret");
        std::fs::write(&secret, "{\"secret\":1}\n").unwrap();
        env.chown_all(env.dir.path());
        let script = format!(
            "cd ~/.claude && mkdir -p projects/-p plans && \
             ln -s {} projects/-p/link.jsonl && ln -s /etc plans/etc && \
             mkfifo projects/-p/fifo.jsonl && \
             truncate -s 2G projects/-p/huge.jsonl && \
             printf '{{}}\\n' > projects/-p/run.jsonl && chmod 755 projects/-p/run.jsonl && \
             printf 'not json\\n' > projects/-p/bad.jsonl && \
             printf 'x\\n' > 'projects/-p/a.jsonl.csbox-conflict-x' && \
             printf '{{\"ok\":1}}\\n' > projects/-p/good.jsonl && \
             rm -rf todos && ln -s /etc todos",
            secret.display()
        );
        let (id, out) = session(&env, &[], &script);
        let err = stderr(&out);
        let p = env.claude_root().join("projects/-p");
        assert_eq!(std::fs::read_to_string(p.join("good.jsonl")).unwrap(), "{\"ok\":1}\n", "the rest merged");
        for name in ["link.jsonl", "fifo.jsonl", "huge.jsonl", "run.jsonl", "bad.jsonl", "a.jsonl.csbox-conflict-x"] {
            assert!(p.join(name).symlink_metadata().is_err(), "{name} was not merged");
        }
        assert!(!env.claude_root().join("todos").exists() && !env.claude_root().join("plans/etc").exists());
        let m = &show_json(&env, &id)["meta"]["merge"];
        let refused: BTreeMap<String, String> = m["refused"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["path"].as_str().unwrap().to_string(), e["detail"].as_str().unwrap().to_string()))
            .collect();
        let expect = [
            ("projects/-p/link.jsonl", "symbolic link"),
            ("plans/etc", "symbolic link"),
            ("todos", "symbolic link"),
            ("projects/-p/fifo.jsonl", "FIFO"),
            ("projects/-p/huge.jsonl", "over the per-file bound of 256.0M"),
            ("projects/-p/run.jsonl", "exec"),
            ("projects/-p/bad.jsonl", "line 1 is not a JSON object"),
            ("projects/-p/a.jsonl.csbox-conflict-x", "reserves"),
        ];
        for (path, why) in expect {
            let got = refused.get(path).unwrap_or_else(|| panic!("{path} not reported: {refused:?}"));
            assert!(got.contains(why), "{path}: {got}");
            assert!(err.contains(path), "said at the end of the session: {path}: {err}");
        }
        assert!(!stdout(&within(&env, &["show", &id])).contains("\"secret\""));
    }
}

#[test]
fn merging_again_changes_nothing() {
    for user in users() {
        let env = TestEnv::new(user);
        let t = now_ms() + 1000;
        let script = format!(
            "mkdir -p ~/.claude/projects/-p && printf '{{\"n\":1}}\\n' > ~/.claude/projects/-p/u.jsonl && \
             printf '{{\"display\":\"x\",\"timestamp\":{t}}}\\n' >> ~/.claude/history.jsonl"
        );
        let (id, _) = session(&env, &[], &script);
        let before = snapshot(&env.claude_root());
        for _ in 0..2 {
            let out = within(&env, &["merge", &id, "--json"]);
            assert!(out.status.success(), "{}", stderr(&out));
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!((v["copied"].as_u64(), v["history_lines"].as_u64(), v["unchanged"].as_u64()), (Some(0), Some(0), Some(1)), "{v}");
            assert_eq!(snapshot(&env.claude_root()), before, "byte for byte and mtime for mtime");
        }
    }
}

#[test]
fn an_empty_merge_back_list_keeps_the_old_full_isolation() {
    for user in users() {
        let env = TestEnv::new(user);
        nomerge_profile(&env);
        assert!(within(&env, &["run", "--", "true"]).status.success());
        let before = snapshot(&env.claude_root());
        let (id, _) = session(&env, &["--profile", "nomerge"], "mkdir -p ~/.claude/projects/-p && echo '{}' > ~/.claude/projects/-p/u.jsonl");
        assert_eq!(snapshot(&env.claude_root()), before, "nothing merged");
        assert!(stdout(&within(&env, &["show", &id])).contains("never (it merges"));
        let out = within(&env, &["merge", &id]);
        assert!(out.status.success() && stdout(&out).contains("merges nothing back"), "{}", stdout(&out));
        assert_eq!(snapshot(&env.claude_root()), before);
        let out = within(&env, &["merge", &id, "--profile", "default"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(env.claude_root().join("projects/-p/u.jsonl").exists(), "merged on demand");
        let shown = stdout(&within(&env, &["profile", "show", "nomerge"]));
        assert!(shown.contains("\"mergeBack\": []"), "{shown}");
    }
}

#[test]
fn merge_back_is_validated_in_profiles() {
    let env = TestEnv::new(As::me());
    let dir = env.home.join(".config/csbox/profiles");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bad.json"), "{\"claude\": {\"mergeBack\": [\"settings.json\"]}}").unwrap();
    std::fs::write(dir.join("twice.json"), "{\"claude\": {\"mergeBack\": [\"plans\", \"plans\"]}}").unwrap();
    let out = within(&env, &["profile", "show", "bad"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("claude.mergeBack") && stderr(&out).contains("\"projects\""), "{}", stderr(&out));
    let out = within(&env, &["profile", "show", "twice"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("twice"));
    let shown = stdout(&within(&env, &["profile", "show", "default"]));
    assert!(shown.contains("\"projects\",") && shown.contains("\"history.jsonl\""), "{shown}");
}

/// Two sessions end at the same moment: both merge (merge.lock makes them take turns),
/// and their history lines interleave in time order; none is lost.
#[test]
fn two_sessions_ending_at_once_both_merge_and_history_interleaves_in_time_order() {
    for user in users() {
        let env = TestEnv::new(user);
        let t0 = now_ms() + 2000;
        let script = |who: &str, offs: [u128; 3]| {
            let mut s = format!("mkdir -p ~/.claude/projects/-p && printf '{{\"who\":\"{who}\"}}\\n' > ~/.claude/projects/-p/{who}.jsonl");
            for o in offs {
                s.push_str(&format!(" && printf '{{\"display\":\"{who}{o}\",\"timestamp\":{}}}\\n' >> ~/.claude/history.jsonl", t0 + o));
            }
            s + " && sleep 1"
        };
        let start = |s: String| {
            env.csbox(&["run", "--", "sh", "-c", &s])
                .current_dir(project_dir(&env))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let a = start(script("a", [10, 30, 50]));
        let b = start(script("b", [20, 40, 60]));
        for c in [a, b] {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        let history = std::fs::read_to_string(env.claude_root().join("history.jsonl")).unwrap();
        let shown: Vec<String> = history.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["display"].as_str().unwrap().to_string()).collect();
        assert_eq!(shown, ["old", "a10", "b20", "a30", "b40", "a50", "b60"], "[{}]", user.label());
        for who in ["a", "b"] {
            assert!(env.claude_root().join(format!("projects/-p/{who}.jsonl")).exists());
        }
        assert!(!env.claude_root().join("history.jsonl.lock").exists(), "Claude Code's lock is let go");
    }
}

/// The merge's write points, each where a SIGKILL is injected (src/fault.rs).
const MERGE_POINTS: &[&str] = &[
    "merge:locked",
    "merge:tmp-created#1",
    "merge:tmp-written#1",
    "merge:renamed#1",
    "merge:tmp-created#2",
    "merge:tmp-written#2",
    "merge:renamed#2",
    "merge:history-locked",
    "merge:tmp-written#3",
    "merge:history-written",
    "merge:recorded",
];

/// `csbox merge` killed at each write point leaves a `~/.claude` whose every transcript
/// and history line is whole, and the next merge finishes the work and leaves no temp file.
/// (tests/merge.rs's real-Claude test resumes from such a base.)
#[test]
fn a_merge_killed_at_each_write_point_leaves_a_base_claude_code_reads() {
    for user in users() {
        let env = TestEnv::new(user);
        nomerge_profile(&env);
        let p = env.claude_root().join("projects/-p");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("grown.jsonl"), "{\"n\":1}\n").unwrap();
        env.chown_all(&env.home);
        let t = now_ms() + 1000;
        let script = format!(
            "cd ~/.claude && printf '{{\"n\":2}}\\n' >> projects/-p/grown.jsonl && printf '{{\"new\":1}}\\n' > projects/-p/new.jsonl && \
             printf '{{\"display\":\"k\",\"timestamp\":{t}}}\\n' >> history.jsonl"
        );
        let (id, _) = session(&env, &["--profile", "nomerge"], &script);
        let original = snapshot(&env.claude_root());
        for point in MERGE_POINTS {
            let out = output_within(
                env.csbox(&["merge", &id, "--profile", "default"]).current_dir(project_dir(&env)).env("CSBOX_TEST_CRASH_AT", point),
                LIMIT,
                point,
            );
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(out.status.signal(), Some(9), "{point}: {}", stderr(&out));
            assert_base_readable(&env, &format!("crash at {point}"));
            let grown = std::fs::read_to_string(p.join("grown.jsonl")).unwrap();
            assert!(grown == "{\"n\":1}\n" || grown == "{\"n\":1}\n{\"n\":2}\n", "{point}: whole, old or new: {grown:?}");
            // Put the base back, so the next point is reached from the same start.
            for (rel, (bytes, _)) in &original {
                std::fs::write(env.claude_root().join(rel), bytes).unwrap();
            }
            let _ = std::fs::remove_file(p.join("new.jsonl"));
            let _ = std::fs::remove_dir(env.claude_root().join("history.jsonl.lock"));
            env.chown_all(&env.home);
        }
        let out = within(&env, &["merge", &id, "--profile", "default"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_base_readable(&env, "the merge after the crashes");
        assert_eq!(std::fs::read_to_string(p.join("grown.jsonl")).unwrap(), "{\"n\":1}\n{\"n\":2}\n");
        assert_eq!(std::fs::read_to_string(p.join("new.jsonl")).unwrap(), "{\"new\":1}\n");
        assert!(std::fs::read_to_string(env.claude_root().join("history.jsonl")).unwrap().contains("\"k\""));
    }
}

#[test]
fn the_per_merge_bound_stops_a_merge_and_the_next_one_goes_on() {
    for user in users() {
        let env = TestEnv::new(user);
        nomerge_profile(&env);
        let script = "mkdir -p ~/.claude/plans && for i in 1 2 3 4 5; do head -c 1000 /dev/zero | tr '\\0' x > ~/.claude/plans/p$i.md; done";
        let (id, _) = session(&env, &["--profile", "nomerge"], script);
        let merge = || {
            output_within(
                env.csbox(&["merge", &id, "--profile", "default", "--json"]).current_dir(project_dir(&env)).env("CSBOX_TEST_MERGE_LIMITS", "merge=2500"),
                LIMIT,
                "merge",
            )
        };
        let v: Value = serde_json::from_slice(&merge().stdout).unwrap();
        assert_eq!((v["copied"].as_u64(), v["incomplete"].as_bool()), (Some(2), Some(true)), "{v}");
        assert!(v["refused"][0]["detail"].as_str().unwrap().contains("bound of 2.4K"), "{v}");
        let v: Value = serde_json::from_slice(&merge().stdout).unwrap();
        assert_eq!((v["copied"].as_u64(), v["unchanged"].as_u64()), (Some(2), Some(2)), "{v}");
        let v: Value = serde_json::from_slice(&merge().stdout).unwrap();
        assert_eq!((v["copied"].as_u64(), v["unchanged"].as_u64(), v.get("incomplete")), (Some(1), Some(4), None), "{v}");
        assert_eq!(std::fs::read_dir(env.claude_root().join("plans")).unwrap().count(), 5);
    }
}

#[test]
fn a_running_session_is_not_merged_on_demand() {
    let env = TestEnv::new(*users().last().unwrap());
    let mut child = env
        .csbox(&["run", "--name", "busy", "--", "sleep", "5"])
        .current_dir(project_dir(&env))
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while listed_ids(&env).is_empty() && t.elapsed() < LIMIT {
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = within(&env, &["merge", "busy"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("running"));
    child.kill().unwrap();
    child.wait().unwrap();
}
