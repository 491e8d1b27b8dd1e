//! Generated input for the two parsers that read what users and sandboxes write: profiles
//! and session records (proptest, shrinking to a minimal failing document). Zero panics
//! in-process, and the documents csbox accepts are *run* by the real binary, as root and
//! as the unprivileged user by turns: `csbox run --profile DOC -- true` for profiles,
//! `ls`, `show`, `gc --dry-run` and `run --session` for records. Bounded: a fixed number
//! of cases and of real runs, well under a minute on two cores.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use proptest::prelude::*;
use proptest::strategy::Union;
use serde_json::{json, Map, Value};

/// Real runs of accepted profiles, and of generated records, at most.
const REAL_PROFILE_RUNS: usize = 120;
const REAL_RECORD_RUNS: usize = 50;
const BUDGET: Duration = Duration::from_secs(60);

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e20f64..1e20).prop_map(Value::from),
        "[a-z~/$.:\\-\u{0}-\u{1f}\u{e9}]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z$]{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn pick(list: &'static [&'static str]) -> BoxedStrategy<Value> {
    prop::sample::select(list).prop_map(Value::from).boxed()
}

fn picks(list: &'static [&'static str]) -> BoxedStrategy<Value> {
    prop::collection::vec(prop::sample::select(list), 0..4)
        .prop_map(|v| Value::from(v.into_iter().map(Value::from).collect::<Vec<_>>()))
        .boxed()
}

const PATHS: &[&str] = &[
    "~/data",
    "~/missing",
    "/etc",
    "/etc/hosts",
    "/tmp",
    "$PWD/sub",
    "$HOME/data",
    "/nonexistent",
    "~/data:/opt/x",
    "/usr/share:/mnt",
    "~/data:~/elsewhere",
    "",
    "/",
    "~root/x",
    "$USER/x",
    "a:b:c",
    "relative/dir",
    "../up",
    "~/.ssh",
    "/usr",
    "/proc",
    "/dev/null",
];
const LIMIT_NAMES: &[&str] = &[
    "as", "core", "cpu", "data", "fsize", "memlock", "nofile", "nproc", "stack", "fds",
];

fn limit_value() -> BoxedStrategy<Value> {
    prop_oneof![
        prop::sample::select(
            &[
                0u64,
                1,
                64,
                1024,
                4096,
                1 << 20,
                1 << 40,
                u64::MAX - 1,
                u64::MAX
            ][..]
        )
        .prop_map(Value::from),
        Just(Value::from("unlimited")),
        any_json(),
    ]
    .boxed()
}

/// A value for each profile field, mostly of the right shape, sometimes anything.
fn field() -> BoxedStrategy<(String, Value)> {
    let good: Vec<(&str, BoxedStrategy<Value>)> = vec![
        ("description", "[ -~\u{e9}\u{7}]{0,20}".prop_map(Value::from).boxed()),
        ("extends", pick(&["default", "strict", "ci", "compat", "nosuch", "", "../x", "/nonexistent.json"])),
        ("isolation", pick(&["namespaces", "none", "vm"])),
        (
            "network",
            prop_oneof![
                pick(&["proxy", "host", "none", "bridge"]),
                (
                    pick(&["proxy", "host", "none", "x"]),
                    picks(&["@claude", "@registries", "example.com", "*.example.com", "*", "localhost", "1.2.3.4:99999", ""]),
                    picks(&["evil.example", "*", "[::1]"]),
                )
                    .prop_map(|(m, a, d)| json!({"mode": m, "allow": a, "deny": d})),
            ]
            .boxed(),
        ),
        ("home", pick(&["overlay", "readOnly", "hidden", "visible", "gone"])),
        ("project", pick(&["rw", "ro", "x"])),
        ("bind", picks(PATHS)),
        ("roBind", picks(PATHS)),
        ("tmpfs", picks(PATHS)),
        ("hide", picks(PATHS)),
        ("unhide", picks(PATHS)),
        ("sockets", picks(&["ssh-agent", "gpg-agent", "/nonexistent.sock", "relative"])),
        ("protect", picks(&[".git/hooks", ".vscode", "/abs", "../x", ""])),
        ("allowGitConfig", any::<bool>().prop_map(Value::from).boxed()),
        (
            "claude",
            (
                pick(&["overlay", "fresh", "other"]),
                picks(&["skills", "agents", "x/y", "sessions", "..", "keybindings.json"]),
                picks(&["skills", "agents", "settings.json", ""]),
                picks(&["CLAUDE.md", "skills"]),
            )
                .prop_map(|(s, ro, rw, p)| json!({"state": s, "readOnly": ro, "readWrite": rw, "private": p}))
                .boxed(),
        ),
        (
            "env",
            (
                pick(&["pass", "allowlist", "none"]),
                picks(&["PATH", "HOME", "A=B", "", "TERM"]),
                prop::collection::btree_map("[A-Z=_]{0,5}", "[ -~]{0,6}", 0..3),
            )
                .prop_map(|(p, a, s)| json!({"policy": p, "allow": a, "set": s}))
                .boxed(),
        ),
        (
            "rlimits",
            prop::collection::btree_map(prop::sample::select(LIMIT_NAMES), limit_value(), 0..3)
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
                .boxed(),
        ),
        (
            "timeoutSecs",
            prop_oneof![
                prop::sample::select(&[0i64, 1, 60, 3600, 31_536_000, 31_536_001, i64::MAX, -1][..])
                    .prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                Just(json!(1.5)),
            ]
            .boxed(),
        ),
        ("seccomp", pick(&["default", "strict", "off"])),
        ("nestedUserns", any::<bool>().prop_map(Value::from).boxed()),
        ("jsonStatus", any::<bool>().prop_map(Value::from).boxed()),
        ("removeOnExit", any::<bool>().prop_map(Value::from).boxed()),
    ];
    let arms: Vec<BoxedStrategy<(String, Value)>> = good
        .into_iter()
        .map(|(name, s)| s.prop_map(move |v| (name.to_string(), v)).boxed())
        .collect();
    prop_oneof![
        12 => Union::new(arms),
        1 => ("[a-zA-Z$]{1,10}", any_json()),
        1 => (prop::sample::select(&["network", "claude", "rlimits", "timeoutSecs", "bind"][..])
                .prop_map(str::to_string), any_json()),
    ]
    .boxed()
}

/// A document's text, sometimes damaged: a BOM, truncated, a byte replaced, wrapped.
fn damage(text: String, mode: u8, at: usize, byte: u8) -> Vec<u8> {
    let mut b = text.into_bytes();
    let at = if b.is_empty() { 0 } else { at % b.len() };
    match mode % 16 {
        0 => b.splice(0..0, "\u{feff}".bytes()).for_each(drop),
        1 => b.truncate(at),
        2 if !b.is_empty() => b[at] = byte,
        3 => {
            b.insert(0, b'[');
            b.push(b']');
        }
        _ => {}
    }
    b
}

fn profile_doc() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(field(), 0..7),
        any::<u8>(),
        any::<usize>(),
        any::<u8>(),
    )
        .prop_map(|(fields, mode, at, byte)| {
            let m: Map<String, Value> = fields.into_iter().collect();
            damage(
                serde_json::to_string_pretty(&Value::Object(m)).unwrap(),
                mode,
                at,
                byte,
            )
        })
}

/// What a real run may end with: the command's status, 124 (a limit), 125 (csbox failed,
/// named), 126/127 (the command hidden or refused by the profile), 2 (the plan refused the
/// profile), or a signal the *command* got (128+N). Never an abort or a panic.
fn assert_no_crash(out: &std::process::Output, what: &str) {
    let err = stderr(out);
    assert!(
        out.status.signal().is_none(),
        "{what}: csbox died of a signal: {err}"
    );
    let code = out.status.code().unwrap();
    assert!(code != 101 && code != 134, "{what}: exit {code}: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("overflow"),
        "{what}: {err}"
    );
}

#[test]
fn generated_profiles_never_panic_and_accepted_ones_run() {
    let start = Instant::now();
    let envs: Vec<TestEnv> = users().into_iter().map(TestEnv::new).collect();
    for env in &envs {
        std::fs::create_dir_all(env.home.join("data")).unwrap();
        std::fs::create_dir_all(env.home.join("proj/sub")).unwrap();
        env.chown_all(&env.home);
    }
    let docs = tempfile::tempdir_in(test_base()).unwrap();
    std::fs::set_permissions(
        docs.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let n = AtomicUsize::new(0);
    let accepted = AtomicUsize::new(0);
    let ran = AtomicUsize::new(0);
    proptest!(config(600), |(doc in profile_doc())| {
        let i = n.fetch_add(1, Ordering::Relaxed);
        let path = docs.path().join(format!("p{i}.json"));
        std::fs::write(&path, &doc).unwrap();
        let loaded = csbox::profile::load(path.to_str().unwrap(), Path::new("/nonexistent"));
        if loaded.is_err() || ran.load(Ordering::Relaxed) >= REAL_PROFILE_RUNS {
            return Ok(());
        }
        accepted.fetch_add(1, Ordering::Relaxed);
        let env = &envs[i % envs.len()];
        let out = output_within(
            env.csbox(&["run", "--profile", path.to_str().unwrap(), "--", "true"])
                .current_dir(env.home.join("proj")),
            Duration::from_secs(30),
            &format!("[{}] run --profile {}", env.user.label(), String::from_utf8_lossy(&doc)),
        );
        ran.fetch_add(1, Ordering::Relaxed);
        assert_no_crash(&out, &String::from_utf8_lossy(&doc));
        let ls = output_within(&mut env.csbox(&["ls", "--json"]), Duration::from_secs(10), "ls");
        prop_assert!(ls.status.success(), "ls after {}", String::from_utf8_lossy(&doc));
    });
    let (accepted, ran) = (accepted.into_inner(), ran.into_inner());
    eprintln!(
        "profiles: {} generated, {accepted} accepted, {ran} run for real, {:?}",
        n.into_inner(),
        start.elapsed()
    );
    assert!(
        ran >= 50,
        "too few accepted documents ran for real ({ran}): the generator drifted"
    );
    assert!(start.elapsed() < BUDGET, "took {:?}", start.elapsed());
}

fn time_value() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => Just(Value::from(csbox::session::meta::format_time(SystemTime::now()))),
        1 => pick(&[
            "1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2016-12-31T23:59:60Z",
            "0000-01-01T00:00:00Z", "garbage", "", "2026-13-40T25:61:61Z",
        ]),
        1 => any_json(),
    ]
    .boxed()
}

fn exit_value() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => (-300i32..300).prop_map(|c| json!({"code": c})),
        1 => prop::sample::select(&[i32::MIN, -1, 0, 9, 64, 255, i32::MAX][..]).prop_map(|s| json!({"signal": s})),
        1 => prop::sample::select(&[i32::MIN, i32::MAX][..]).prop_map(|c| json!({"code": c})),
        1 => any_json(),
    ]
    .boxed()
}

/// A session record: valid, with some fields replaced, removed or added.
fn record(id: String) -> impl Strategy<Value = Vec<u8>> {
    let fields: Vec<(&str, BoxedStrategy<Value>)> = vec![
        ("version", prop_oneof![Just(json!(1)), any_json()].boxed()),
        ("id", prop_oneof![4 => Just(Value::from(id.clone())), 1 => Just(json!("01a23289-0000-7000-8000-000000000000")), 1 => any_json()].boxed()),
        ("name", prop_oneof![Just(json!("n")), "[ -~\u{0}-\u{1f}]{0,10}".prop_map(Value::from), any_json()].boxed()),
        ("profile", prop_oneof![pick(&["default", "strict", "ci", "compat", "nosuch"]), any_json()].boxed()),
        ("command", prop_oneof![Just(json!(["true"])), Just(json!([])), any_json()].boxed()),
        ("cwd", prop_oneof![Just(json!("/")), Just(json!("relative")), any_json()].boxed()),
        ("created", time_value()),
        ("started", time_value()),
        ("ended", time_value()),
        ("exit", exit_value()),
        ("supervisor_pid", prop_oneof![Just(json!(1)), Just(json!(u32::MAX)), any_json()].boxed()),
        ("boot_id", any_json().boxed()),
        ("runs", prop_oneof![Just(json!(u32::MAX)), Just(json!(0)), any_json()].boxed()),
        ("timed_out", any::<bool>().prop_map(Value::from).boxed()),
        ("created_protected", prop_oneof![Just(json!(["/p/.vscode"])), any_json()].boxed()),
        ("surprise", any_json().boxed()),
    ];
    let base = json!({"version": 1, "id": id, "profile": "default", "command": ["true"], "cwd": "/",
        "created": csbox::session::meta::format_time(SystemTime::now()), "runs": 1});
    let edit = Union::new(
        fields
            .into_iter()
            .map(|(k, s)| {
                (s, any::<u8>())
                    .prop_map(move |(v, how)| (k, v, how % 5 == 0))
                    .boxed()
            })
            .collect::<Vec<_>>(),
    );
    (
        prop::collection::vec(edit, 0..5),
        any::<u8>(),
        any::<usize>(),
        any::<u8>(),
    )
        .prop_map(move |(edits, mode, at, byte)| {
            let mut v = base.clone();
            for (k, val, remove) in edits {
                if remove {
                    v.as_object_mut().unwrap().remove(k);
                } else {
                    v[k] = val;
                }
            }
            damage(serde_json::to_string_pretty(&v).unwrap(), mode, at, byte)
        })
}

/// A session dir as `csbox run` leaves one, with `record` as its session.json.
fn plant_session(env: &TestEnv, id: &str, record: &[u8]) -> std::path::PathBuf {
    let dir = env.sessions_dir().join(id);
    for d in ["state/sessions", "work", "home/upper", "home/work"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::create_dir_all(env.sessions_dir().join("active")).unwrap();
    std::fs::write(dir.join("state/history.jsonl"), "{}\n").unwrap();
    std::fs::write(dir.join("lock"), "").unwrap();
    std::fs::write(dir.join("session.json"), record).unwrap();
    env.chown_all(&env.home);
    dir
}

#[test]
fn generated_session_records_never_panic_ls_show_gc_or_run_session() {
    let start = Instant::now();
    let envs: Vec<TestEnv> = users().into_iter().map(TestEnv::new).collect();
    for env in &envs {
        std::fs::create_dir_all(env.home.join("proj")).unwrap();
        env.chown_all(&env.home);
    }
    let n = AtomicUsize::new(0);
    let ran = AtomicUsize::new(0);
    let id = csbox::session::SessionId::new().to_string();
    proptest!(config(400), |(rec in record(id.clone()))| {
        let i = n.fetch_add(1, Ordering::Relaxed);
        let env = &envs[i % envs.len()];
        let dir = plant_session(env, &id, &rec);
        let store = csbox::session::Store::new(env.sessions_dir());
        let listed = store.list(true).unwrap();
        prop_assert_eq!(listed.len(), 1, "a session with any record is listed");
        let _ = listed[0].state_word();
        let sid = csbox::session::SessionId::parse(&id).unwrap();
        store.info(&sid, true).unwrap();
        let _ = store.resolve("n");
        let policy = csbox::gc::select::Policy::from_flags(Some(0), false, false, false, None);
        csbox::gc::gc(&store, &policy, true, SystemTime::now()).unwrap();
        if i % 8 == 0 && ran.load(Ordering::Relaxed) < REAL_RECORD_RUNS {
            ran.fetch_add(1, Ordering::Relaxed);
            let what = String::from_utf8_lossy(&rec).into_owned();
            for args in [
                &["ls", "--json"][..],
                &["ls"],
                &["show", &id],
                &["show", &id, "--json"],
                &["gc", "--dry-run", "--json", "--days", "0"],
                &["run", "--session", &id, "--", "true"],
            ] {
                let out = output_within(
                    env.csbox(args).current_dir(env.home.join("proj")),
                    Duration::from_secs(30),
                    &format!("[{}] csbox {args:?} on {what}", env.user.label()),
                );
                assert_no_crash(&out, &what);
                let code = out.status.code().unwrap();
                prop_assert!([0, 2, 125].contains(&code), "{:?}: exit {} on {}", args, code, what);
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    });
    let ran = ran.into_inner();
    eprintln!(
        "records: {} generated, {ran} run for real, {:?}",
        n.into_inner(),
        start.elapsed()
    );
    assert!(ran >= 40, "{ran} records run for real");
    assert!(start.elapsed() < BUDGET, "took {:?}", start.elapsed());
}

/// The records the generator finds only now and then, every time: counters at their
/// maximum (`runs` overflowed `+= 1` in 1423042's debug builds when re-entered), exit codes
/// and signals at the ends of i32, times at the ends of what RFC 3339 writes.
#[test]
fn records_at_the_limits_are_listed_shown_collected_and_run_again() {
    let max = csbox::session::meta::format_time(
        SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799),
    );
    for user in users() {
        let env = TestEnv::new(user);
        std::fs::create_dir_all(env.home.join("proj")).unwrap();
        for (exit, when) in [
            (
                json!({"signal": i32::MAX}),
                "1970-01-01T00:00:00Z".to_string(),
            ),
            (json!({"code": i32::MIN}), max.clone()),
            (json!({"signal": -1}), max.clone()),
        ] {
            let id = csbox::session::SessionId::new().to_string();
            let rec = json!({"version": 1, "id": id, "profile": "default", "command": ["true"],
                "cwd": "/", "created": when, "started": when, "ended": when, "exit": exit,
                "supervisor_pid": u32::MAX, "runs": u32::MAX});
            plant_session(&env, &id, rec.to_string().as_bytes());
            for args in [
                &["ls"][..],
                &["show", &id],
                &["gc", "--dry-run", "--days", "0"],
                &["run", "--session", &id, "--", "true"],
                &["show", &id, "--json"],
            ] {
                let out = output_within(
                    env.csbox(args).current_dir(env.home.join("proj")),
                    Duration::from_secs(30),
                    &format!("[{}] csbox {args:?} on {rec}", env.user.label()),
                );
                assert_no_crash(&out, &rec.to_string());
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "{args:?} on {rec}: {}",
                    stderr(&out)
                );
            }
            let v: Value = serde_json::from_slice(
                &env.csbox(&["show", &id, "--json"]).output().unwrap().stdout,
            )
            .unwrap();
            assert_eq!(v["meta"]["runs"], u32::MAX, "the counter saturates: {v}");
            assert_eq!(v["state"], "exited", "{v}");
        }
    }
}
