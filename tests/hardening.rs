//! Hardening: the kernel surface a sandboxed command reaches. Every call on the seccomp
//! lists is made from inside (tests/probe/syscall_probe.rs), natively and through the
//! i386 entry point, under the profiles that refuse it; a run with every rule's errno
//! changed to a marker shows the filter (not the kernel) answers, so the test fails if a
//! rule is missing; and under `--profile compat` the same calls reach the kernel. Then
//! Landlock as a second layer, and the real tools that must still work.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;

/// An errno no kernel path of these calls returns (EHWPOISON).
const MARKER: &str = "133";

fn user() -> As {
    *users().last().unwrap()
}

fn project(env: &TestEnv) -> PathBuf {
    let p = env.home.join("proj");
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// `csbox run --profile P -- syscall-probe ABI`: key → result.
fn probe(
    env: &TestEnv,
    proj: &Path,
    profile: &str,
    abi: &str,
    patch: Option<&str>,
) -> BTreeMap<String, String> {
    let mut c = env.csbox(&["run", "--profile", profile, "--", "./syscall-probe", abi]);
    c.current_dir(proj).stdin(std::process::Stdio::null());
    if let Some(p) = patch {
        c.env("CSBOX_TEST_PLAN_PATCH", p);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "[{profile} {abi}] {}", stderr(&out));
    stdout(&out)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The plan's seccomp rules with every errno replaced by the marker.
fn marker_patch(env: &TestEnv, proj: &Path, profile: &str) -> String {
    let out = env
        .csbox(&["run", "--profile", profile, "--dry-run", "--", "true"])
        .current_dir(proj)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut sc = plan["seccomp"].clone();
    for r in sc["rules"].as_array_mut().unwrap() {
        r["errno"] = serde_json::json!(133);
    }
    serde_json::json!({ "seccomp": sc }).to_string()
}

/// What a profile must refuse, written out here (not read from csbox's lists, so a call
/// dropped from a list fails this test): key → errno.
fn refused(profile: &str) -> BTreeMap<&'static str, &'static str> {
    const DEFAULT_EPERM: &[&str] = &[
        "add_key",
        "keyctl",
        "request_key",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "init_module",
        "finit_module",
        "delete_module",
        "kexec_load",
        "kexec_file_load",
        "reboot",
        "swapon",
        "swapoff",
        "acct",
        "iopl",
        "ioperm",
        "settimeofday",
        "clock_settime",
        "clock_settime64",
        "stime",
        "vhangup",
        "syslog",
        "quotactl",
        "quotactl_fd",
        "lookup_dcookie",
        "open_by_handle_at",
        "fanotify_init",
        "lsm_get_self_attr",
        "lsm_set_self_attr",
        "lsm_list_modules",
        "mbind",
        "set_mempolicy",
        "get_mempolicy",
        "set_mempolicy_home_node",
        "migrate_pages",
        "move_pages",
        "kcmp",
        "pidfd_getfd",
        "process_madvise",
        "setns",
        "chroot",
        "ioctl.tiocsti",
        "ioctl.tiocsti_high_bits",
        "ioctl.tioclinux",
        "ioctl.tiocsetd",
        "ioctl.tcxonc",
        "ioctl.tiocexcl",
        "personality.read_implies_exec",
        "personality.addr_no_randomize",
    ];
    const DEFAULT_ENOSYS: &[&str] = &[
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "move_mount",
        "open_tree",
        "open_tree_attr",
        "mount_setattr",
        "uselib",
        "ustat",
        "sysfs",
    ];
    const STRICT_EPERM: &[&str] = &[
        "unshare",
        "mount",
        "umount",
        "umount2",
        "pivot_root",
        "sethostname",
        "setdomainname",
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "modify_ldt",
        "clone.newns",
        "clone.newuser",
    ];
    let mut m = BTreeMap::new();
    m.extend(DEFAULT_EPERM.iter().map(|k| (*k, "1")));
    m.extend(DEFAULT_ENOSYS.iter().map(|k| (*k, "38")));
    m.extend(
        [
            "socket.af_alg",
            "socket.af_vsock",
            "socket.af_vsock_high_bits",
        ]
        .map(|k| (k, "97")),
    );
    if profile == "strict" {
        m.extend(STRICT_EPERM.iter().map(|k| (*k, "1")));
        m.extend(["clone3", "listns"].map(|k| (k, "38")));
        m.insert("socket.af_packet", "97");
    }
    m
}

/// Calls the probe makes that no list refuses, which must reach the kernel.
const ALLOWED_EVERYWHERE: &[&str] = &[
    "getpid",
    "ioctl.fionread",
    "socket.af_inet_bad_type",
    "personality.query",
];

fn check_profile(
    env: &TestEnv,
    proj: &Path,
    profile: &str,
    compat: &BTreeMap<String, String>,
    abi: &str,
) {
    let want = refused(profile);
    let got = probe(env, proj, profile, abi, None);
    assert!(got.len() > 80, "[{profile} {abi}] the probe ran: {got:?}");
    let marked = probe(
        env,
        proj,
        profile,
        abi,
        Some(&marker_patch(env, proj, profile)),
    );
    for (key, v) in &got {
        if v == "skip" {
            continue;
        }
        let expected = want.get(key.as_str()).copied();
        match expected {
            Some(errno) => {
                assert_eq!(v, errno, "[{profile} {abi}] {key}: refused with its errno");
                assert_eq!(
                    marked[key], MARKER,
                    "[{profile} {abi}] {key}: the filter answers, not the kernel"
                );
                assert_ne!(compat[key], MARKER, "[compat {abi}] {key}");
            }
            None => {
                assert_ne!(marked[key], MARKER, "[{profile} {abi}] {key}: not refused");
                if ALLOWED_EVERYWHERE.contains(&key.as_str()) || profile == "default" {
                    // Reaches the kernel as under compat (allowed calls answer the same).
                    let same = compat[key] == *v || key == "getpid";
                    assert!(
                        same,
                        "[{profile} {abi}] {key}: {v} here, {} unsandboxed",
                        compat[key]
                    );
                }
            }
        }
    }
}

#[test]
fn every_refused_call_gets_its_errno_natively_and_through_i386_and_reaches_the_kernel_under_compat()
{
    let env = TestEnv::new(user());
    let proj = project(&env);
    let Some(_) = probe_in(&proj) else { return };
    env.chown_all(env.dir.path());
    let abis: &[&str] = if cfg!(target_arch = "x86_64") {
        &["native", "i386"]
    } else {
        &["native"]
    };
    for abi in abis {
        let compat = probe(&env, &proj, "compat", abi, None);
        assert!(
            !compat.values().any(|v| v == MARKER),
            "[compat {abi}] no filter answers"
        );
        // Unfiltered, some of these are the kernel's own EPERM (no capability); the
        // marker run above tells the two apart.
        eprintln!("[compat {abi}] {compat:?}");
        check_profile(&env, &proj, "default", &compat, abi);
        if *abi == "native" {
            check_profile(&env, &proj, "strict", &compat, abi);
        }
    }
    // strict refuses the 32-bit entry points whole, even getpid.
    if cfg!(target_arch = "x86_64") {
        let s = probe(&env, &proj, "strict", "i386", None);
        assert!(s.len() > 80);
        for (k, v) in &s {
            assert!(v == "1" || v == "skip", "[strict i386] {k} = {v}");
        }
    }
}

#[test]
fn landlock_alone_refuses_a_write_a_mount_let_through() {
    if csbox::sandbox::landlock::abi() == 0 {
        return cannot_run("Landlock is not enabled in this kernel (see `csbox doctor`)");
    }
    let env = TestEnv::new(user());
    let proj = project(&env);
    // Outside every place the sandbox may write: not under /tmp or /var/tmp (their
    // private tmpfs is writable, and Landlock allows what lies beneath), as the test dir
    // is when the checkout is there.
    let in_tmp = ["/tmp", "/var/tmp"]
        .iter()
        .any(|t| env.dir.path().canonicalize().unwrap().starts_with(t));
    let elsewhere = match (in_tmp, As::me().uid) {
        (false, _) => None,
        (true, 0) => Some(
            tempfile::Builder::new()
                .prefix("csbox-test-")
                .tempdir_in("/var/lib")
                .unwrap(),
        ),
        (true, _) => {
            return cannot_run(
                "the checkout is under /tmp and only root can make a test dir elsewhere",
            )
        }
    };
    let outside = match &elsewhere {
        Some(d) => d.path().join("outside"),
        None => env.dir.path().join("outside"),
    };
    std::fs::create_dir_all(&outside).unwrap();
    env.chown_all(env.dir.path());
    env.chown_all(outside.parent().unwrap());
    // A plan with one mistake: a host dir outside the project bound writable.
    let dry = env
        .csbox(&["run", "--profile", "strict", "--dry-run", "--", "true"])
        .current_dir(&proj)
        .output()
        .unwrap();
    assert!(dry.status.success(), "{}", stderr(&dry));
    let plan: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    let mut mounts = plan["mounts"].as_array().unwrap().clone();
    let at = mounts.iter().position(|m| m["op"] == "dev").unwrap();
    let real = outside.canonicalize().unwrap();
    mounts.insert(
        at,
        serde_json::json!({"op": "bind", "src": {"host": real}, "dst": real,
            "flags": {"read_only": false, "nosuid": true, "nodev": true, "noexec": false}, "create_dst": "dir"}),
    );
    let write = |patch: serde_json::Value| {
        let out = env
            .csbox(&[
                "run",
                "--profile",
                "strict",
                "--",
                "sh",
                "-c",
                &format!("echo ran; echo x > {}/f", sh_quote(&real)),
            ])
            .current_dir(&proj)
            .env("CSBOX_TEST_PLAN_PATCH", patch.to_string())
            .output()
            .unwrap();
        eprintln!("{}{}", stdout(&out), stderr(&out));
        assert!(
            stdout(&out).contains("ran"),
            "the sandbox ran: {}",
            stderr(&out)
        );
        (out.status.success(), stderr(&out))
    };
    let (ok, err) = write(serde_json::json!({ "mounts": mounts }));
    assert!(
        !ok && err.contains("Permission denied"),
        "Landlock refused the write: {err}"
    );
    assert!(!outside.join("f").exists());
    // The same mistake without Landlock: the write lands on the host.
    let (ok, err) = write(serde_json::json!({ "mounts": mounts, "landlock": null }));
    assert!(ok, "{err}");
    assert!(
        outside.join("f").exists(),
        "without Landlock the bind lets the write through"
    );
}

/// The tools an agent runs, under default and strict: (what, script, profiles).
const WORKLOADS: &[(&str, &str, &[&str])] = &[
    ("claude", "claude --version", &["default", "strict"]),
    ("node", "node -e 'require(\"fs\").writeFileSync(\"n.txt\", String(6*7)); console.log(require(\"fs\").readFileSync(\"n.txt\", \"utf8\"))'", &["default", "strict"]),
    ("python3", "python3 -c 'import subprocess, threading, socket; print(6*7)'", &["default", "strict"]),
    ("git", "git init -q g && cd g && git -c user.email=a@b -c user.name=t commit -q --allow-empty -m x && git log --oneline | wc -l", &["default", "strict"]),
    ("bwrap", "bwrap --ro-bind / / true && echo bwrap-ok", &["default"]),
    ("strace", "strace -f -o /dev/null true && echo strace-ok", &["default"]),
];

#[test]
fn real_workloads_still_run_under_default_and_strict() {
    for user in users() {
        let env = TestEnv::new(user);
        let proj = project(&env);
        env.chown_all(env.dir.path());
        for (what, script, profiles) in WORKLOADS {
            let tool = script.split_whitespace().next().unwrap();
            if csbox::paths::find_on_path(tool.as_ref(), std::env::var_os("PATH").as_deref())
                .is_none()
            {
                cannot_run(&format!("{tool} is not installed (.ci/run installs it)"));
                continue;
            }
            if *what == "bwrap" && user.uid == 0 {
                // bwrap run by uid 0 takes itself for privileged and creates namespaces
                // without a user namespace of its own, which a capability-less root
                // cannot (the same under every csbox version); users run it unprivileged.
                continue;
            }
            for profile in *profiles {
                let out = env
                    .csbox(&["run", "--profile", profile, "--", "sh", "-c", script])
                    .current_dir(&proj)
                    .stdin(std::process::Stdio::null())
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "[{} {profile}] {what}: {}{}",
                    user.label(),
                    stdout(&out),
                    stderr(&out)
                );
            }
        }
    }
}

#[test]
fn a_status_line_the_command_forges_never_reaches_the_status_channel() {
    for profile in ["ci", "default", "compat"] {
        let env = TestEnv::new(user());
        let proj = project(&env);
        let status = env.dir.path().join("status.jsonl");
        env.chown_all(env.dir.path());
        // The command prints a fake end line to stderr and tries every fd above 2.
        let forge = r#"f='{"session":"x","exit_code":0,"ended":"now"}'; echo "$f" >&2; for fd in 3 4 5 6 7 8 9; do (echo "$f" >&$fd) 2>/dev/null; done; echo ran; exit 7"#;
        let sh = format!(
            "exec 3>'{}'; exec '{CSBOX}' run --profile {profile} --json-status fd:3 -- sh -c '{}'",
            status.display(),
            forge.replace('\'', r#"'\''"#)
        );
        let out = env
            .command("sh")
            .args(["-c", &sh])
            .current_dir(&proj)
            .output()
            .unwrap();
        eprintln!("[{profile}] {}{}", stdout(&out), stderr(&out));
        assert!(stdout(&out).contains("ran"), "[{profile}] the command ran");
        assert_eq!(out.status.code(), Some(7), "[{profile}]");
        assert!(
            stderr(&out).contains(r#""exit_code":0"#),
            "[{profile}] the forged line is on the command's stderr"
        );
        let text = std::fs::read_to_string(&status).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "[{profile}] only csbox's two lines: {text}");
        assert_eq!(lines[1]["exit_code"], 7, "[{profile}] {text}");
        assert!(!text.contains(r#""session":"x""#), "[{profile}] {text}");
    }
}

/// The processes whose command line holds `marker`.
fn pids_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

#[test]
fn a_command_starts_with_no_signal_blocked_or_ignored_whatever_csbox_inherited() {
    use std::os::unix::process::CommandExt;
    for profile in ["default", "strict", "compat"] {
        let env = TestEnv::new(user());
        let proj = project(&env);
        env.chown_all(env.dir.path());
        let mut c = env.csbox(&[
            "run",
            "--profile",
            profile,
            "--",
            "grep",
            "-E",
            "^Sig(Blk|Ign)",
            "/proc/self/status",
        ]);
        c.current_dir(&proj);
        // SAFETY: signal and sigprocmask between fork and exec, as a careless parent
        // (nohup, a CI agent) leaves them.
        unsafe {
            c.pre_exec(|| {
                for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
                    libc::signal(s, libc::SIG_IGN);
                }
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGUSR1);
                libc::sigaddset(&mut set, libc::SIGCHLD);
                libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                Ok(())
            });
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "[{profile}] {}", stderr(&out));
        assert_eq!(
            stdout(&out),
            "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n",
            "[{profile}] the command's own mask and ignored set"
        );
    }
}

#[test]
fn a_sigterm_in_csbox_s_first_milliseconds_leaves_no_half_made_session_and_no_process() {
    let env = TestEnv::new(user());
    let proj = project(&env);
    env.chown_all(env.dir.path());
    let marker = format!("3{}{}", std::process::id(), 17);
    let mut died = 0;
    for i in 0..40u64 {
        let mut child = env
            .csbox(&["run", "--", "sleep", &marker])
            .current_dir(&proj)
            .spawn()
            .unwrap();
        // From before csbox has blocked anything to after the sandbox exists.
        std::thread::sleep(std::time::Duration::from_micros(i * 150));
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let st = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        let by_term = st.signal() == Some(libc::SIGTERM) || st.code() == Some(128 + libc::SIGTERM);
        assert!(
            by_term,
            "run {i}: csbox ended by the SIGTERM, or reported it: {st:?}"
        );
        died += 1;
    }
    assert_eq!(died, 40);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        pids_with(&marker),
        Vec::<u32>::new(),
        "no sandboxed process left"
    );
    let leftovers: Vec<String> = std::fs::read_dir(env.sessions_dir())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "no half-made session dir: {leftovers:?}"
    );
    let ls = env.run(&["ls", "--json"]);
    assert!(ls.status.success());
}
