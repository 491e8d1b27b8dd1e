//! `csbox doctor`: the real binary, real probes. Refused user namespaces are made without
//! touching the host: `user.max_user_namespaces` is per user namespace, so inside
//! `unshare -Ur` it can be set to 0 and every nested unshare(CLONE_NEWUSER) gets ENOSPC.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

const CHECKS: &[&str] = &[
    "user_namespaces",
    "apparmor_userns",
    "overlayfs",
    "seccomp",
    "tiocsti",
    "claude",
    "claude_root",
    "sessions_dir",
    "old_sessions_store",
    "container",
    "home_overlay",
    "openat2",
    "mount_setattr",
    "landlock",
    "network",
    "groups",
    "proc",
];

/// Run a `doctor --json` command; its stdout must be the report, and its exit code must
/// agree with `ok`.
fn report(mut cmd: Command) -> Value {
    let out = cmd.output().expect("spawn");
    eprintln!(
        "doctor -> {:?}\n{}{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("doctor --json prints JSON");
    let ok = v["ok"].as_bool().expect("ok is a bool");
    assert_eq!(
        out.status.code(),
        Some(if ok { 0 } else { 1 }),
        "exit code follows ok"
    );
    v
}

fn doctor(env: &TestEnv) -> Value {
    report(env.csbox(&["doctor", "--json"]))
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"))
}

fn status(report: &Value, name: &str) -> String {
    check(report, name)["status"].as_str().unwrap().to_string()
}

fn text(report: &Value, name: &str) -> String {
    let c = check(report, name);
    format!("{} | fix: {}", c["detail"], c["fix"])
}

/// `sh -c SCRIPT csbox` inside `unshare -Ur` with user namespaces then refused (ENOSPC);
/// the script reaches csbox as "$0". None when this machine cannot make that setup.
fn with_userns_refused(env: &TestEnv, then: &str) -> Option<Output> {
    let script =
        format!("echo 0 > /proc/sys/user/max_user_namespaces || exit 90; unshare -U true 2>/dev/null && exit 91; {then}");
    let out = env
        .command("unshare")
        .args(["-Ur", "sh", "-c", &script, CSBOX])
        .output()
        .expect("spawn unshare");
    eprintln!(
        "[{}] unshare -Ur sh -c {script:?} -> {:?}\n--- stdout\n{}--- stderr\n{}",
        env.user.label(),
        out.status,
        stdout(&out),
        stderr(&out)
    );
    match out.status.code() {
        Some(90) => {
            cannot_run("cannot write user.max_user_namespaces inside unshare -Ur");
            None
        }
        Some(91) => {
            cannot_run("user.max_user_namespaces=0 did not refuse a nested user namespace");
            None
        }
        _ if stderr(&out).starts_with("unshare:") => {
            cannot_run(&format!("unshare -Ur fails here: {}", stderr(&out)));
            None
        }
        _ => Some(out),
    }
}

#[test]
fn doctor_json_parses_and_has_every_check() {
    let env = TestEnv::new(As::me());
    let v = doctor(&env);
    let names: Vec<&str> = v["checks"]
        .as_array()
        .expect("checks is an array")
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, CHECKS);
    for c in v["checks"].as_array().unwrap() {
        let s = c["status"].as_str().unwrap();
        assert!(["ok", "warn", "fail"].contains(&s), "{c}");
        assert!(!c["detail"].as_str().unwrap().is_empty(), "{c}");
        assert!(
            c["fix"].is_null() || c["fix"].is_string(),
            "fix is a string or null: {c}"
        );
        if s != "ok" {
            assert!(
                c["fix"].is_string(),
                "a warning or failure says the fix: {c}"
            );
        }
    }
    let any_fail = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["status"] == "fail");
    assert_eq!(v["ok"], !any_fail);
}

#[test]
fn doctor_prints_one_line_per_check_and_a_summary() {
    let env = TestEnv::new(As::me());
    let out = env.run(&["doctor"]);
    let s = stdout(&out);
    for name in CHECKS {
        assert!(
            s.lines().any(|l| l.split_whitespace().nth(1) == Some(name)),
            "a line for {name}: {s}"
        );
    }
    assert!(s.contains("failed,") && s.contains("warnings"), "{s}");
}

#[test]
fn refused_user_namespaces_fail_doctor_and_name_max_user_namespaces() {
    for user in users() {
        let env = TestEnv::new(user);
        let Some(out) = with_userns_refused(&env, "exec \"$0\" doctor --json") else {
            continue;
        };
        assert_eq!(out.status.code(), Some(1), "a failing check exits 1");
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(v["ok"], false);
        assert_eq!(status(&v, "user_namespaces"), "fail");
        let t = text(&v, "user_namespaces");
        assert!(t.contains("ENOSPC"), "names the errno: {t}");
        assert!(
            t.contains("user.max_user_namespaces"),
            "names the sysctl: {t}"
        );
        assert!(
            t.contains("sysctl -w user.max_user_namespaces=15000"),
            "gives the command: {t}"
        );
        // What needs a user namespace is reported as not tried, not as working or broken.
        for name in ["overlayfs", "proc"] {
            assert_eq!(status(&v, name), "warn", "{name}: {}", text(&v, name));
            assert!(text(&v, name).contains("not tried"));
        }
    }
}

#[test]
fn refused_user_namespaces_make_run_exit_125_with_one_line_naming_cause_and_way_out() {
    for user in users() {
        let env = TestEnv::new(user);
        let Some(out) = with_userns_refused(&env, "exec \"$0\" run -- true") else {
            continue;
        };
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(125), "{err}");
        assert_eq!(err.lines().count(), 1, "exactly one line: {err}");
        for part in [
            "ENOSPC",
            "user.max_user_namespaces",
            "--profile compat",
            "csbox doctor",
        ] {
            assert!(err.contains(part), "names {part:?}: {err}");
        }
        assert_eq!(
            env.ls_json().as_array().unwrap().len(),
            0,
            "no session is left behind, and nothing ran with weaker isolation"
        );
    }
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let rel = nix::sys::utsname::uname().unwrap();
    let rel = rel.release().to_string_lossy().into_owned();
    let mut it = rel.split(|c: char| !c.is_ascii_digit());
    let maj: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let min: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (maj, min) >= (major, minor)
}

#[test]
fn overlay_seccomp_proc_and_the_store_report_ok_on_this_machine() {
    if !kernel_at_least(5, 11) {
        cannot_run("Linux < 5.11 has no unprivileged overlayfs");
        return;
    }
    for user in users() {
        let env = TestEnv::new(user);
        let v = doctor(&env);
        for name in [
            "user_namespaces",
            "overlayfs",
            "seccomp",
            "tiocsti",
            "claude_root",
            "sessions_dir",
            "proc",
        ] {
            assert_eq!(status(&v, name), "ok", "{name}: {}", text(&v, name));
        }
        assert!(text(&v, "sessions_dir").contains("mounts and takes writes"));
        let leftovers: Vec<PathBuf> = [std::env::temp_dir(), env.home.clone()]
            .iter()
            .flat_map(|d| std::fs::read_dir(d).unwrap())
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".csbox-doctor-"))
            .collect();
        // /tmp is shared: another doctor running right now (a parallel test, a second
        // suite) has its probe dir there for a moment. A leak is one that stays.
        if !leftovers.is_empty() {
            std::thread::sleep(std::time::Duration::from_secs(2));
        }
        let leftovers: Vec<&PathBuf> = leftovers.iter().filter(|p| p.exists()).collect();
        assert!(leftovers.is_empty(), "probe dirs removed: {leftovers:?}");
    }
}

#[test]
fn claude_check_finds_the_installed_claude_and_its_version() {
    let Some(claude) =
        csbox::paths::find_on_path("claude".as_ref(), std::env::var_os("PATH").as_deref())
    else {
        cannot_run("claude is not installed (npm install -g @anthropic-ai/claude-code)");
        return;
    };
    let out = Command::new(&claude).arg("--version").output().unwrap();
    let version = stdout(&out).split_whitespace().next().unwrap().to_string();
    let env = TestEnv::new(As::me());
    let v = doctor(&env);
    assert_eq!(status(&v, "claude"), "ok", "{}", text(&v, "claude"));
    let t = text(&v, "claude");
    assert!(t.contains(&claude.display().to_string()), "{t}");
    assert!(t.contains(&version), "reports version {version}: {t}");
    let real = claude.canonicalize().unwrap();
    if real
        .to_string_lossy()
        .contains("/lib/node_modules/@anthropic-ai/")
    {
        assert!(t.contains("npm-global"), "{t}");
    }
}

#[test]
fn missing_claude_is_a_warning_with_the_install_command() {
    let env = TestEnv::new(As::me());
    let empty = env.dir.path().join("empty-bin");
    std::fs::create_dir(&empty).unwrap();
    let mut cmd = env.csbox(&["doctor", "--json"]);
    cmd.env("PATH", &empty);
    let v = report(cmd);
    assert_eq!(status(&v, "claude"), "warn");
    assert!(
        text(&v, "claude").contains("npm install -g @anthropic-ai/claude-code"),
        "{}",
        text(&v, "claude")
    );
}

#[test]
fn a_real_old_sessions_directory_is_a_warning_that_says_how_to_move_it() {
    let env = TestEnv::new(As::me());
    let old = env.claude_root().join("sessions");
    std::fs::create_dir_all(old.join("active")).unwrap();
    std::fs::write(old.join("20240101-old.json"), "{}").unwrap();
    let v = doctor(&env);
    assert_eq!(status(&v, "old_sessions_store"), "warn");
    let t = text(&v, "old_sessions_store");
    assert!(t.contains(&format!("mv {}", old.display())), "{t}");
    assert!(t.contains("real directory"), "{t}");
}

#[test]
fn the_sessions_link_that_run_makes_is_ok() {
    let env = TestEnv::new(As::me());
    assert!(env.run(&["run", "--", "true"]).status.success());
    let v = doctor(&env);
    assert_eq!(status(&v, "old_sessions_store"), "ok");
    assert!(text(&v, "old_sessions_store").contains("links to"));
}

#[test]
fn a_store_inside_claude_root_fails_and_says_how_to_move_it() {
    let env = TestEnv::new(As::me());
    let mut cmd = env.csbox(&["doctor", "--json"]);
    cmd.env("SESSIONS_DIR", env.claude_root().join("store"));
    let v = report(cmd);
    assert_eq!(v["ok"], false);
    assert_eq!(status(&v, "sessions_dir"), "fail");
    assert!(text(&v, "sessions_dir").contains("unset SESSIONS_DIR"));
}

#[test]
fn a_read_only_claude_root_fails_for_an_unprivileged_user() {
    use std::os::unix::fs::PermissionsExt;
    let Some(user) = users().into_iter().find(|u| u.uid != 0) else {
        cannot_run("no unprivileged user (root writes anywhere)");
        return;
    };
    let env = TestEnv::new(user);
    std::fs::set_permissions(env.claude_root(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let v = doctor(&env);
    std::fs::set_permissions(env.claude_root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(status(&v, "claude_root"), "fail");
    let t = text(&v, "claude_root");
    assert!(t.contains("W_OK") && t.contains("CLAUDE_ROOT"), "{t}");
}

#[test]
fn a_container_is_reported_with_its_evidence() {
    let env = TestEnv::new(As::me());
    let v = doctor(&env);
    let markers = ["/.dockerenv", "/run/.containerenv"];
    if !markers.iter().any(|f| Path::new(f).exists()) {
        eprintln!("note: no container marker here; only checking that none is claimed");
        for f in markers {
            assert!(
                !text(&v, "container").contains(f),
                "{}",
                text(&v, "container")
            );
        }
    }
    for f in markers {
        if Path::new(f).exists() {
            assert_eq!(status(&v, "container"), "warn");
            assert!(
                text(&v, "container").contains(f),
                "{}",
                text(&v, "container")
            );
        }
    }
}

fn apparmor_parser() -> Option<PathBuf> {
    let path = format!(
        "{}:/usr/sbin:/sbin",
        std::env::var("PATH").unwrap_or_default()
    );
    csbox::paths::find_on_path("apparmor_parser".as_ref(), Some(path.as_ref()))
}

/// Compile the profile without loading it (-Q: skip the kernel, -K: no cache, -T: no
/// cache read). Parsers before AppArmor 4.0 know neither `abi <abi/4.0>` nor `userns,`:
/// there the rest of the profile (tunables, the attachment, flags) is compiled with the
/// 4.0 ABI aliased to 3.0 and the userns rule removed, and the attachment is checked to
/// compile without a doubled slash (which would match no binary).
#[test]
fn the_apparmor_profile_compiles() {
    let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/apparmor/csbox");
    let Some(parser) = apparmor_parser() else {
        cannot_run("apparmor_parser is not installed (Debian package: apparmor)");
        return;
    };
    let ver = Command::new(&parser).arg("--version").output().unwrap();
    let ver = stdout(&ver);
    let major: u32 = ver
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .and_then(|w| w.split('.').next()?.parse().ok())
        .unwrap_or(0);
    let text = std::fs::read_to_string(&profile).unwrap();
    assert!(text.contains("\n  userns,\n"), "the profile grants userns");
    assert!(text.contains("flags=(unconfined)"));
    let (file, base) = if major >= 4 {
        (profile.clone(), None)
    } else {
        eprintln!("NOTE: apparmor_parser {major}.x predates AppArmor 4.0: `userns,` is not verified here, only the rest of the profile (vm-tests case 2 compiles the whole profile with Debian 13's AppArmor 4.x)");
        let base = tempfile::tempdir().unwrap();
        for d in ["tunables", "abi"] {
            let st = Command::new("cp")
                .arg("-r")
                .arg(Path::new("/etc/apparmor.d").join(d))
                .arg(base.path())
                .status()
                .unwrap();
            assert!(st.success());
        }
        let abi = base.path().join("abi");
        std::fs::copy(abi.join("3.0"), abi.join("4.0")).unwrap();
        let f = base.path().join("csbox");
        std::fs::write(&f, text.replace("\n  userns,\n", "\n")).unwrap();
        (f, Some(base))
    };
    let mut cmd = Command::new(&parser);
    cmd.args(["-Q", "-K", "-T", "-D", "expr-tree"]);
    if let Some(b) = &base {
        cmd.arg("--base").arg(b.path()).arg("-I").arg(b.path());
    }
    let out = cmd.arg(&file).output().unwrap();
    let (o, e) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "apparmor_parser: {e}");
    let tree = o
        .lines()
        .chain(e.lines())
        .find(|l| l.contains("bin/csbox"))
        .unwrap_or_else(|| panic!("attachment expression in {o}{e}"));
    assert!(
        !tree.contains("//") && !tree.contains("/(/"),
        "the attachment has a doubled slash: {tree}"
    );
    for part in ["usr", "local", "cargo", "home"] {
        assert!(tree.contains(part), "attaches to {part}: {tree}");
    }
}
