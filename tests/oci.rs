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

/// Red-team 7, A7-5: what the session plants below the project's top (a nested repository
/// whose config runs a command at `git status`, an `.envrc` in a subdirectory), made in
/// the container.
const NESTED: &str = r#"echo "RAN=$1"
mkdir -p pkg/e && echo "echo pwned >> '$2'" > pkg/e/.envrc
git init -q pkg/r && git -C pkg/r config core.fsmonitor "echo pwned >> '$2'; false"
echo planted"#;

/// Export a bundle whose command runs [`NESTED`] in a fresh project and run it under runc,
/// with the hooks `csbox spec` wrote but those named in `drop` (`createRuntime`,
/// `poststop`); then run the host's `git status` in the nested repository as the user.
/// The project, runc's output, the session's id and whether the payload ran on the host.
fn nested_run(env: &TestEnv, rootless: bool, drop: &[&str]) -> (PathBuf, Output, String, bool) {
    let n = format!("{}-{rootless}-{}", std::process::id(), drop.len());
    let proj = env.home.join(format!("proj-{n}"));
    std::fs::create_dir_all(&proj).unwrap();
    let marker = env.dir.path().join(format!("payload-{n}"));
    env.chown_all(env.dir.path());
    let bundle = env.dir.path().join(format!("bundle-nested-{n}"));
    let b = bundle.display().to_string();
    let m = marker.display().to_string();
    let mut args = vec!["spec", "--new", "--bundle", &b];
    if rootless {
        args.push("--rootless");
    }
    args.extend(["--", "sh", "-c", NESTED, "probe", &n, &m]);
    let out = env.csbox(&args).current_dir(&proj).output().unwrap();
    assert!(out.status.success(), "csbox spec: {}", stderr(&out));
    let id = stderr(&out)
        .split("created session ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .expect("spec names the session it created")
        .to_string();
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    let hooks = cfg["hooks"].as_object_mut().expect("the bundle has hooks");
    for kind in drop {
        assert!(
            hooks.remove(*kind).is_some(),
            "the bundle has a {kind} hook"
        );
    }
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let run = runc_run(env, &bundle, &format!("csbox-nested-{n}"), rootless)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    eprintln!(
        "runc (rootless {rootless}, without {drop:?}): {:?}\n{}{}",
        run.status,
        stdout(&run),
        stderr(&run)
    );
    assert!(
        stdout(&run).contains(&format!("RAN={n}")) && stdout(&run).contains("planted"),
        "the bundle did not run the probe"
    );
    let git = env
        .command("git")
        .args(["-C", "pkg/r", "status", "--short"])
        .current_dir(&proj)
        .output()
        .unwrap();
    eprintln!("host git status: {:?} {}", git.status, stderr(&git));
    (proj, run, id, marker.exists())
}

#[test]
fn a_bundles_exit_walk_moves_a_nested_repos_config_and_a_deep_envrc() {
    if runc().is_none() {
        return cannot_run("runc is not installed (apt-get install runc)");
    }
    if !Path::new("/usr/bin/git").exists() {
        return cannot_run("git is not installed: the probe nests a repository");
    }
    let env = TestEnv::new(*users().last().unwrap());
    let mut modes = vec![true];
    if As::me().uid == 0 {
        modes.push(false);
    }
    // As `csbox spec` wrote it, and as a runtime that runs no createRuntime hook has it
    // (the bundle's writing is the walk's baseline then).
    let runs = modes
        .iter()
        .flat_map(|r| [(*r, &[][..]), (*r, &["createRuntime"][..])]);
    for (rootless, drop) in runs {
        let (proj, run, id, ran) = nested_run(&env, rootless, drop);
        assert!(
            !ran,
            "ESCAPE (rootless {rootless}, without {drop:?}): the host's git status ran the payload"
        );
        for rel in ["pkg/e/.envrc", "pkg/r/.git/config"] {
            assert!(
                std::fs::symlink_metadata(proj.join(rel)).is_err(),
                "[rootless {rootless}] {rel} is still in the project"
            );
        }
        // The messages `csbox run` gives at exit, as the runtime logs a failed hook's.
        let err = stderr(&run);
        assert!(
            err.contains("while this session ran") && err.contains("pkg/e/.envrc"),
            "{err}"
        );
        let q = env.sessions_dir().join(&id).join("quarantine");
        let held: Vec<String> = std::fs::read_dir(&q)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(held.iter().any(|n| n.ends_with("-.envrc")), "{held:?}");
        let config = held
            .iter()
            .find(|n| n.ends_with("-config"))
            .expect("config");
        let text = std::fs::read_to_string(q.join(config)).unwrap();
        assert!(text.contains("fsmonitor"), "{text}");
        let show = stdout(&env.run(&["show", &id]));
        assert!(show.contains("pkg/r/.git/config (moved to "), "{show}");
        if drop.is_empty() {
            // The hooks recorded the run: its start (the walk's baseline) and its end.
            assert_eq!(listed_state(&env, &id).as_deref(), Some("runtime_ended"));
            for key in ["started:", "ended:"] {
                let line = show.lines().find(|l| l.starts_with(key)).unwrap_or("");
                assert!(!line.is_empty() && !line.ends_with(" -"), "{show}");
            }
        }
    }
    // Without the hooks the same files stay, and the host's git runs the payload.
    let (proj, _, _, ran) = nested_run(&env, true, &["createRuntime", "poststop"]);
    assert!(proj.join("pkg/e/.envrc").exists() && proj.join("pkg/r/.git/config").exists());
    assert!(
        ran,
        "the probe cannot report an escape: it would pass vacuously"
    );
}
