//! `csbox spec`: the exported bundle under a real OCI runtime (Debian's runc) gives the
//! same answers as the native sandbox to the same probes.
//!
//! runc as root needs root: when the tests run as root, csbox (native run and spec) runs
//! as the unprivileged test user and `runc run` as root; the same bundle exported with
//! --rootless is also run by runc as that user. When the tests do not run as root, only
//! the rootless run is possible, and that is what runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::*;

/// The probes: one line `name=answer` each. `$1` is a marker unique to the run, `$2` the
/// sessions dir, `$3` another session's id, `$4` a file the host made in its own /tmp.
const PROBES: &str = r#"
touch "$HOME/.claude/skills/x/new" 2>/dev/null && echo skills=writable || echo skills=read-only
echo "{\"display\":\"$1\"}" >> "$HOME/.claude/history.jsonl" && echo history=written || echo history=refused
test -e "$2/$3" && echo other_session=visible || echo other_session=invisible
echo sessions_listed=$(ls -A "$2" 2>/dev/null | wc -l)
echo capeff=$(awk '/^CapEff/ {print $2}' /proc/self/status)
echo nonewprivs=$(awk '/^NoNewPrivs/ {print $2}' /proc/self/status)
test -e "$4" && echo tmp=host || echo tmp=private
n=$(ls /proc | grep -c '^[0-9]')
[ $$ -le 2 ] && [ "$n" -lt 10 ] && echo pidns=own || echo pidns=host:$$:$n
echo tiocsti=$(perl -e '$c = "x"; ioctl(STDIN, 0x5412, $c) or print $!+0')
echo tiocsti_high_bits=$(perl -e '$c = "x"; ioctl(STDIN, 0x5412 | (1 << 32), $c) or print $!+0')
"#;

fn answers(out: &Output) -> Vec<(String, String)> {
    stdout(out)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Whether the session layers under the store hold `marker` in history.jsonl, and the
/// real ~/.claude/history.jsonl does not.
fn history_in_session_layer(env: &TestEnv, marker: &str) -> &'static str {
    let real = std::fs::read_to_string(env.claude_root().join("history.jsonl")).unwrap();
    if real.contains(marker) {
        return "leaked into ~/.claude";
    }
    let in_layer = std::fs::read_dir(env.sessions_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            std::fs::read_to_string(e.path().join("state/history.jsonl"))
                .map(|s| s.contains(marker))
                .unwrap_or(false)
        });
    if in_layer {
        "in the session layer"
    } else {
        "nowhere"
    }
}

struct Probe<'a> {
    env: &'a TestEnv,
    other: String,
    host_tmp_file: PathBuf,
}

impl Probe<'_> {
    fn args(&self, marker: &str) -> Vec<String> {
        [
            "sh",
            "-c",
            PROBES,
            "probe",
            marker,
            &self.env.sessions_dir().display().to_string(),
            &self.other,
            &self.host_tmp_file.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn native(&self, profile: &str) -> Vec<(String, String)> {
        let marker = format!("native-{profile}-{}", std::process::id());
        let mut args = vec!["run", "--profile", profile, "--keep", "--"];
        let probe = self.args(&marker);
        args.extend(probe.iter().map(String::as_str));
        let out = self.env.csbox(&args).stdin(Stdio::null()).output().unwrap();
        eprintln!("native {profile}: {}{}", stdout(&out), stderr(&out));
        assert!(out.status.success(), "native run failed");
        let mut a = answers(&out);
        a.push((
            "history_lands".into(),
            history_in_session_layer(self.env, &marker).into(),
        ));
        a
    }

    /// Export a bundle with `csbox spec --new`, as the env's user.
    fn export(&self, profile: &str, rootless: bool, marker: &str) -> PathBuf {
        let bundle = self.env.dir.path().join(format!(
            "bundle-{profile}-{}",
            if rootless { "rootless" } else { "root" }
        ));
        let mut args = vec!["spec", "--profile", profile, "--new", "--bundle"];
        let b = bundle.display().to_string();
        args.push(&b);
        if rootless {
            args.push("--rootless");
        }
        args.push("--");
        let probe = self.args(marker);
        args.extend(probe.iter().map(String::as_str));
        let out = self.env.run(&args);
        assert!(out.status.success(), "csbox spec failed");
        assert!(
            stderr(&out).contains("not expressed:"),
            "spec lists what it cannot express"
        );
        bundle
    }

    fn in_runc(&self, profile: &str, rootless: bool) -> Vec<(String, String)> {
        let marker = format!("runc-{profile}-{rootless}-{}", std::process::id());
        let bundle = self.export(profile, rootless, &marker);
        let id = format!("csbox-test-{}-{profile}-{rootless}", std::process::id());
        let out = runc_run(self.env, &bundle, &id, rootless)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        eprintln!(
            "runc {profile} (rootless {rootless}): {:?}\n{}{}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        assert!(out.status.success(), "runc run failed");
        let mut a = answers(&out);
        a.push((
            "history_lands".into(),
            history_in_session_layer(self.env, &marker).into(),
        ));
        a
    }
}

fn expected() -> Vec<(&'static str, &'static str)> {
    vec![
        ("skills", "read-only"),
        ("history", "written"),
        ("other_session", "invisible"),
        ("sessions_listed", "0"),
        ("capeff", "0000000000000000"),
        ("nonewprivs", "1"),
        ("tmp", "private"),
        ("pidns", "own"),
        // EPERM from seccomp, before the tty layer could say ENOTTY about stdin (/dev/null).
        ("tiocsti", "1"),
        ("tiocsti_high_bits", "1"),
        ("history_lands", "in the session layer"),
    ]
}

fn parity(profile: &str) {
    let Some(_) = runc() else {
        cannot_run("runc is not installed (apt-get install runc)");
        return;
    };
    if !Path::new("/usr/bin/perl").exists() {
        cannot_run("perl is not installed: the TIOCSTI probe uses it");
        return;
    }
    let me = As::me();
    let user = *users().last().unwrap();
    if me.uid == 0 && user.uid == 0 {
        cannot_run("no unprivileged user to run csbox as");
        return;
    }
    let env = TestEnv::new(user);
    // Another session, with something in its layer, that no probe may see.
    let out = env.run(&["run", "--profile", profile, "--keep", "--", "true"]);
    assert!(out.status.success());
    let other = std::fs::read_dir(env.sessions_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().into_string().unwrap())
        .find(|n| n.len() > 20)
        .expect("the other session");
    let host_tmp_file = std::env::temp_dir().join(format!("csbox-oci-host-{}", std::process::id()));
    std::fs::write(&host_tmp_file, "host\n").unwrap();
    let p = Probe {
        env: &env,
        other,
        host_tmp_file: host_tmp_file.clone(),
    };
    let want: Vec<(String, String)> = expected()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();

    let native = p.native(profile);
    assert_eq!(native, want, "native answers ({profile})");
    if me.uid == 0 {
        assert_eq!(
            p.in_runc(profile, false),
            native,
            "runc as root ({profile})"
        );
    } else {
        eprintln!("not root: runc cannot run a root-run spec; running the --rootless bundle only");
    }
    assert_eq!(
        p.in_runc(profile, true),
        native,
        "rootless runc ({profile})"
    );
    let _ = std::fs::remove_file(host_tmp_file);
}

#[test]
fn default_profile_gives_the_same_answers_natively_and_under_runc() {
    parity("default");
}

#[test]
fn ci_profile_gives_the_same_answers_natively_and_under_runc() {
    parity("ci");
}

#[test]
fn spec_prints_a_config_and_lists_what_it_cannot_express() {
    let env = TestEnv::new(As::me());
    let out = env.run(&["spec", "--profile", "ci", "--", "sh", "-c", "true"]);
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("config.json");
    assert_eq!(doc["ociVersion"], "1.0.2");
    assert_eq!(doc["process"]["args"][0], "/usr/bin/sh");
    let err = stderr(&out);
    assert!(err.contains("wall-clock limit"), "{err}");
    assert!(err.contains("no session"), "{err}");
    assert!(
        !env.sessions_dir().exists()
            || std::fs::read_dir(env.sessions_dir())
                .unwrap()
                .filter_map(|e| e.ok())
                .all(|e| e.file_name().len() < 20),
        "printing a spec creates no session"
    );
}

#[test]
fn spec_refuses_compat_and_a_bundle_without_a_session() {
    let env = TestEnv::new(As::me());
    let out = env.run(&["spec", "--profile", "compat"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no sandbox"), "{}", stderr(&out));
    let b = env.dir.path().join("b").display().to_string();
    let out = env.run(&["spec", "--bundle", &b, "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--new"), "{}", stderr(&out));
    assert!(!Path::new(&b).exists());
}

#[test]
fn spec_takes_the_same_sandbox_flags_as_run() {
    let env = TestEnv::new(As::me());
    let data = env.home.join("data");
    let notes = env.home.join("notes");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&notes).unwrap();
    let out = env.run(&[
        "spec",
        "--bind",
        &format!("{}:{}", data.display(), env.home.join("notes").display()),
        "--ro-bind",
        &data.display().to_string(),
        "--hide",
        "~/notes",
        "--env",
        "GREETING=hi",
        "--net",
        "none",
        "--",
        "true",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mounts = doc["mounts"].as_array().unwrap();
    let bind = |dst: &Path, ro: bool| {
        mounts.iter().any(|m| {
            m["type"] == "bind"
                && m["destination"] == dst.display().to_string()
                && m["source"] == data.display().to_string()
                && m["options"].as_array().unwrap().iter().any(|o| o == "ro") == ro
        })
    };
    assert!(bind(&notes, false), "--bind in the mounts: {mounts:#?}");
    assert!(bind(&data, true), "--ro-bind in the mounts: {mounts:#?}");
    let masked = doc["linux"]["maskedPaths"].as_array().unwrap();
    assert!(
        masked
            .iter()
            .any(|p| p == &serde_json::Value::from(notes.display().to_string())),
        "--hide in maskedPaths: {masked:?}"
    );
    let env_list = doc["process"]["env"].as_array().unwrap();
    assert!(env_list.iter().any(|e| e == "GREETING=hi"), "{env_list:?}");
    let ns: Vec<&str> = doc["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert!(ns.contains(&"network"), "--net none: {ns:?}");
    // A bad flag is refused by spec as by run.
    let bad = env.run(&["spec", "--bind", "/a:/b:/c", "--", "true"]);
    assert_eq!(bad.status.code(), Some(2));
}

fn probe_map(out: &Output) -> std::collections::BTreeMap<String, String> {
    stdout(out)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_exported_seccomp_rules_refuse_the_same_calls_under_runc() {
    if runc().is_none() {
        return cannot_run("runc is not installed (apt-get install runc)");
    }
    let user = *users().last().unwrap();
    let env = TestEnv::new(user);
    let proj = env.home.join("proj");
    std::fs::create_dir_all(&proj).unwrap();
    let Some(_) = probe_in(&proj) else { return };
    env.chown_all(env.dir.path());
    let abis: &[&str] = if cfg!(target_arch = "x86_64") {
        &["native", "i386"]
    } else {
        &["native"]
    };
    for profile in ["default", "strict"] {
        for abi in abis {
            let native = env
                .csbox(&["run", "--profile", profile, "--", "./syscall-probe", abi])
                .current_dir(&proj)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(native.status.success(), "{}", stderr(&native));
            let native = probe_map(&native);
            let bundle = env.dir.path().join(format!("bundle-{profile}-{abi}"));
            let b = bundle.display().to_string();
            let out = env
                .csbox(&[
                    "spec",
                    "--profile",
                    profile,
                    "--new",
                    "--rootless",
                    "--bundle",
                    &b,
                    "--",
                    "./syscall-probe",
                    abi,
                ])
                .current_dir(&proj)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
            // Calls newer than libseccomp 2.5's table (Debian 12's runc links it): runc
            // skips their names silently, and spec says so.
            let newer = |name: &str| {
                csbox::sandbox::seccomp::number(name, csbox::sandbox::seccomp::Abi::X86_64)
                    .ok()
                    .flatten()
                    .is_some_and(|n| n > 450)
            };
            assert!(
                stderr(&out).contains("newer than libseccomp 2.5's table"),
                "{}",
                stderr(&out)
            );
            let run = runc_run(
                &env,
                &bundle,
                &format!("csbox-sc-{}-{profile}-{abi}", std::process::id()),
                true,
            )
            .stdin(Stdio::null())
            .output()
            .unwrap();
            if profile == "strict" && *abi == "i386" {
                // Natively refused with EPERM; a runtime's libseccomp kills a process
                // that uses an architecture left out of the profile (spec says so).
                assert!(
                    !run.status.success(),
                    "the i386 entry point is not allowed under runc either"
                );
                continue;
            }
            assert!(run.status.success(), "runc: {}", stderr(&run));
            let under_runc = probe_map(&run);
            let mut compared = 0;
            for (k, v) in &native {
                // Refused natively (an errno only the filter gives here): the same
                // under runc. The persona query is the one value libseccomp cannot
                // allow among refused bits (spec lists it).
                let by_filter = ["1", "38", "97"].contains(&v.as_str());
                let name = k.split('.').next().unwrap();
                if newer(name) {
                    continue;
                }
                if by_filter && k != "personality.query" {
                    assert_eq!(under_runc.get(k), Some(v), "[{profile} {abi}] {k}");
                    compared += 1;
                }
            }
            assert!(compared > 40, "[{profile} {abi}] compared {compared} calls");
        }
    }
}
