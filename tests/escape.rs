//! Escape attempts, in the style of bubblewrap's tests: each probe is a named test that
//! tries to reach something outside its session from inside (persist a file on the
//! host, reach a host socket, read a secret, loosen csbox itself, re-enter through a
//! planted link) as the unprivileged user, under `default` and `strict`, and must be
//! contained. Every run first proves the sandbox ran (the command prints a nonce), and
//! every probe is shown to report the escape when the protection is off (`--profile
//! compat`, or for what compat does not exercise, a test-only plan patch), so no probe
//! can pass because nothing ran.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

/// What a probe's setup and checks see.
struct Ctx {
    env: TestEnv,
    nonce: String,
    /// The project: a git repository in the home, the working directory.
    proj: PathBuf,
    /// A directory of the user's outside the home, /tmp and /var/tmp.
    out: PathBuf,
    /// Host paths the run gets as environment variables.
    vars: Vec<(String, String)>,
    /// Listening sockets kept alive for the run.
    listeners: Vec<UnixListener>,
    /// Host paths to remove after the run (outside the test's own dir).
    cleanup: Vec<PathBuf>,
    /// The csbox binary to run, when not the one cargo built (a copy in the home).
    csbox: Option<PathBuf>,
}

impl Drop for Ctx {
    fn drop(&mut self) {
        for p in &self.cleanup {
            let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
        }
    }
}

impl Ctx {
    fn home(&self, rel: &str) -> PathBuf {
        self.env.home.join(rel)
    }

    fn write(&self, p: &Path, text: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self.env.chown_all(self.env.dir.path());
    }

    /// Whether the host file at `p` holds the nonce (the escape reached the host).
    fn has_nonce(&self, p: &Path) -> bool {
        std::fs::read_to_string(p).is_ok_and(|s| s.contains(&self.nonce))
    }

    /// A listening socket at `p`, connectable by the test user.
    fn listen(&mut self, p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(p);
        let l = UnixListener::bind(p).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o666)).unwrap();
        self.listeners.push(l);
    }
}

#[derive(Clone, Copy)]
enum FailsWith {
    /// `--profile compat` (no sandbox) reports the escape.
    Compat,
    /// `default` with this plan patch (the protection taken out) reports it; the
    /// function gets the run's arguments (to read its `--dry-run` plan).
    Patch(fn(&Ctx, &[&str]) -> String),
}

#[derive(Clone, Copy)]
struct Probe {
    setup: fn(&mut Ctx),
    /// Run inside with `sh -c`; prints ESCAPED when it got through. `$NONCE`, `$PROJ`,
    /// `$OUT` and the probe's variables are set.
    inside: &'static str,
    /// Host side, after the run: whether the attempt left its mark on the host.
    escaped: fn(&Ctx) -> bool,
    /// The profiles it runs under natively; the first also under runc.
    profiles: &'static [&'static str],
    fails_with: FailsWith,
    /// Runs a second time on the same session (`--session`), after `setup_again`.
    reenter: Option<fn(&Ctx, &str)>,
    /// csbox refuses to start this sandbox at all (exit 2, with this in its message):
    /// contained too, and proof enough that nothing ran.
    refused: Option<&'static str>,
    /// Contained natively only: an OCI runtime cannot do it, and `csbox spec` says so on
    /// stderr (the sysctls of the sandbox's own user namespace).
    native_only: bool,
}

const P: Probe = Probe {
    setup: |_| {},
    inside: "",
    escaped: |_| false,
    profiles: &["default", "strict"],
    fails_with: FailsWith::Compat,
    reenter: None,
    refused: None,
    native_only: false,
};

/// The user the probes run as: the unprivileged one when the tests run as root.
fn user() -> As {
    *users().last().unwrap()
}

fn ctx() -> Ctx {
    let env = TestEnv::new(user());
    let nonce = format!("csbox-probe-{}-{}", std::process::id(), rand_u32());
    let proj = env.home.join("proj");
    for d in [
        ".git/hooks",
        ".claude/commands",
        ".claude/agents",
        ".claude/hooks",
        ".vscode",
        ".idea",
        ".devcontainer",
        ".husky",
    ] {
        std::fs::create_dir_all(proj.join(d)).unwrap();
    }
    for f in [
        ".git/config",
        ".gitmodules",
        ".claude/settings.json",
        ".claude/settings.local.json",
        ".mcp.json",
        ".envrc",
        ".pre-commit-config.yaml",
        "mise.toml",
        ".mise.toml",
    ] {
        std::fs::write(proj.join(f), "orig\n").unwrap();
    }
    std::fs::write(proj.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    let out = env.dir.path().join("outside");
    std::fs::create_dir_all(&out).unwrap();
    let run_user = env.dir.path().join("run-user");
    std::fs::create_dir_all(&run_user).unwrap();
    std::fs::set_permissions(&run_user, std::fs::Permissions::from_mode(0o700)).unwrap();
    env.chown_all(env.dir.path());
    let vars = vec![(
        "XDG_RUNTIME_DIR".to_string(),
        run_user.display().to_string(),
    )];
    Ctx {
        env,
        nonce,
        proj,
        out,
        vars,
        listeners: Vec::new(),
        cleanup: Vec::new(),
        csbox: None,
    }
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    u32::from_ne_bytes(b)
}

/// Where a probe runs: csbox's own launcher, or the bundle `csbox spec` exports for it
/// under runc (as root, or rootless as the test user).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Runner {
    Native,
    Runc { rootless: bool },
}

/// The probe's environment on `cmd`: its variables, the working directory (the project)
/// and, for the keyring probe, a key in the session keyring the command inherits.
fn probe_env(c: &Ctx, cmd: &mut std::process::Command) {
    if let Some((_, key)) = c.vars.iter().find(|(k, _)| k == "CSBOX_PROBE_KEY") {
        // A session keyring of csbox's invoking "shell" holding a secret, as a login
        // shell's would: keyctl(JOIN_SESSION_KEYRING), add_key("user", …, @s).
        let desc = std::ffi::CString::new(key.clone()).unwrap();
        use std::os::unix::process::CommandExt;
        // SAFETY: two raw system calls between fork and exec, no allocation.
        unsafe {
            cmd.pre_exec(move || {
                libc::syscall(libc::SYS_keyctl, 1 as libc::c_long, c"probe-shell".as_ptr());
                let r = libc::syscall(
                    libc::SYS_add_key,
                    c"user".as_ptr(),
                    desc.as_ptr(),
                    b"secret".as_ptr(),
                    6usize,
                    -3 as libc::c_long,
                );
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd.current_dir(&c.proj)
        .env("NONCE", &c.nonce)
        .env("PROJ", &c.proj)
        .env("OUT", &c.out)
        .env("STORE", c.env.sessions_dir());
    for (k, v) in &c.vars {
        cmd.env(k, v);
    }
}

fn show(what: &str, out: &Output) {
    eprintln!(
        "{what} -> {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// `csbox ARGS -- sh -c SCRIPT` (after a line that proves it ran).
fn run_in(c: &Ctx, args: &[&str], script: &str, patch: Option<&str>) -> Output {
    let full = format!("echo RAN=$NONCE\n{script}");
    let mut all: Vec<&str> = args.to_vec();
    // ci passes no variable of the caller's but those it names.
    let pass = [
        format!("NONCE={}", c.nonce),
        format!("OUT={}", c.out.display()),
    ];
    if args.windows(2).any(|w| w == ["--profile", "ci"]) {
        for p in &pass {
            all.extend(["--env", p.as_str()]);
        }
    }
    all.extend(["--", "sh", "-c", &full]);
    let mut cmd = match &c.csbox {
        Some(bin) => c.env.command(bin),
        None => c.env.command(CSBOX),
    };
    cmd.args(&all);
    probe_env(c, &mut cmd);
    if let Some(p) = patch {
        cmd.env("CSBOX_TEST_PLAN_PATCH", p);
    }
    let out = cmd.output().unwrap();
    show(&format!("csbox {args:?}"), &out);
    out
}

/// The same under runc: `csbox spec ARGS --bundle B` with the probe's environment, then
/// `runc run B`. The session's id (from spec) comes back too; `Err` is spec's own refusal.
fn runc_in(
    c: &Ctx,
    args: &[&str],
    script: &str,
    rootless: bool,
) -> Result<(String, Output), Output> {
    let n = rand_u32();
    let bundle = c.env.dir.path().join(format!("bundle-{n}"));
    let b = bundle.display().to_string();
    let mut spec: Vec<&str> = args.to_vec();
    spec.extend(["--bundle", &b]);
    if rootless {
        spec.push("--rootless");
    }
    let out = run_in(c, &spec, script, None);
    if !out.status.success() {
        return Err(out);
    }
    let err = stderr(&out);
    let id = match args.iter().position(|a| *a == "--session") {
        Some(i) => args[i + 1].to_string(),
        None => err
            .split("created session ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .expect("spec names the session it created")
            .to_string(),
    };
    let mut cmd = runc_run(&c.env, &bundle, &format!("csbox-probe-{n}"), rootless);
    cmd.stdin(Stdio::null());
    probe_env(c, &mut cmd);
    let out = cmd.output().unwrap();
    show(&format!("runc (rootless {rootless}) {args:?}"), &out);
    Ok((id, out))
}

/// Run the probe's first attempt: its output, and the session to re-enter; `Err` with
/// csbox's own output when it refused to make the sandbox.
fn first_run(
    c: &Ctx,
    p: &Probe,
    profile: &str,
    runner: Runner,
    patch: Option<String>,
) -> Result<(Output, String), Output> {
    match runner {
        Runner::Native => {
            let mut args = vec!["run", "--profile", profile];
            if p.reenter.is_some() {
                args.extend(["--name", "victim"]);
            }
            Ok((
                run_in(c, &args, p.inside, patch.as_deref()),
                "victim".to_string(),
            ))
        }
        Runner::Runc { rootless } => {
            let args = ["spec", "--profile", profile, "--new"];
            match runc_in(c, &args, p.inside, rootless) {
                Ok((id, out)) => Ok((out, id)),
                Err(out) if p.refused.is_some() => Err(out),
                Err(out) => panic!("csbox spec failed: {}", stderr(&out)),
            }
        }
    }
}

/// Enter the session again (after the probe planted something in its layer): the output
/// of the run, or `None` when csbox refused it cleanly (contained too).
fn reentry(c: &Ctx, p: &Probe, profile: &str, runner: Runner, session: &str) -> Option<Output> {
    let out = match runner {
        Runner::Native => run_in(
            c,
            &["run", "--profile", profile, "--session", session],
            p.inside,
            None,
        ),
        Runner::Runc { rootless } => {
            let args = ["spec", "--profile", profile, "--session", session];
            match runc_in(c, &args, p.inside, rootless) {
                Ok((_, out)) => out,
                Err(out) => {
                    assert!(
                        matches!(out.status.code(), Some(2 | 125)),
                        "spec failed unclearly: {}",
                        stderr(&out)
                    );
                    return None;
                }
            }
        }
    };
    let ran = stdout(&out).contains(&format!("RAN={}", c.nonce));
    if !ran {
        // A planted link may make re-entry fail cleanly: that is contained too.
        assert!(
            runner != Runner::Native || matches!(out.status.code(), Some(2 | 125)),
            "re-entry neither ran nor failed cleanly: {}",
            stderr(&out)
        );
        return None;
    }
    Some(out)
}

/// One attempt: true when it escaped. Panics when the command did not run.
fn attempt(
    p: &Probe,
    profile: &str,
    runner: Runner,
    patch: Option<fn(&Ctx, &[&str]) -> String>,
) -> bool {
    let mut c = ctx();
    (p.setup)(&mut c);
    let patch = patch.map(|f| {
        let mut a = vec!["run", "--profile", profile];
        if p.reenter.is_some() {
            a.extend(["--name", "victim"]);
        }
        f(&c, &a)
    });
    let (out, session) = match first_run(&c, p, profile, runner, patch) {
        Ok(r) => r,
        Err(out) => return !refused_cleanly(p, &out) || (p.escaped)(&c),
    };
    if !stdout(&out).contains(&format!("RAN={}", c.nonce)) && refused_cleanly(p, &out) {
        return (p.escaped)(&c);
    }
    assert!(
        stdout(&out).contains(&format!("RAN={}", c.nonce)),
        "the sandbox did not run the probe: {}",
        stderr(&out)
    );
    let mut escaped = stdout(&out).contains("ESCAPED") || (p.escaped)(&c);
    if let Some(again) = p.reenter {
        again(&c, &session);
        // The planted link makes a plain dry run of the re-entry fail too: the patch
        // (when there is one) showed the escape on the first run already.
        if let Some(out) = reentry(&c, p, profile, runner, &session) {
            escaped |= stdout(&out).contains("ESCAPED");
        }
        escaped |= (p.escaped)(&c);
    }
    escaped
}

/// csbox refused to make this probe's sandbox, with exit 2 and the message it expects.
fn refused_cleanly(p: &Probe, out: &Output) -> bool {
    let Some(msg) = p.refused else { return false };
    let ok = out.status.code() == Some(2) && stderr(out).contains(msg);
    assert!(
        ok,
        "expected a refusal naming {msg:?} with exit 2, got {:?}: {}",
        out.status,
        stderr(out)
    );
    ok
}

/// The runc runs of a probe: rootless always, as root too when the tests are root.
fn runc_runners() -> Vec<Runner> {
    if runc().is_none() {
        cannot_run("runc is not installed (apt-get install runc): the probes do not run under it");
        return Vec::new();
    }
    let mut r = vec![Runner::Runc { rootless: true }];
    if As::me().uid == 0 {
        r.push(Runner::Runc { rootless: false });
    }
    r
}

fn run(p: Probe) {
    for prof in p.profiles {
        assert!(
            !attempt(&p, prof, Runner::Native, None),
            "ESCAPE under {prof}"
        );
    }
    // The same containment from the exported bundle (csbox spec) under an OCI runtime.
    let first = p.profiles[0];
    let runners = if p.native_only {
        Vec::new()
    } else {
        runc_runners()
    };
    for runner in runners {
        assert!(
            !attempt(&p, first, runner, None),
            "ESCAPE under {first}, {runner:?}"
        );
    }
    let shown = match p.fails_with {
        FailsWith::Compat => attempt(&p, "compat", Runner::Native, None),
        FailsWith::Patch(f) => attempt(&p, "default", Runner::Native, Some(f)),
    };
    assert!(
        shown,
        "the probe cannot report an escape: it would pass vacuously"
    );
}

/// A probe script that connects to the Unix socket at `$SOCK`.
const CONNECT: &str = r#"python3 -c '
import socket, os, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(os.environ["SOCK"]); print("ESCAPED")
except OSError as e:
    print("contained:", e)
'"#;

/// Reads `$SECRET` and prints ESCAPED if it holds the nonce.
const READ: &str = r#"grep -q "$NONCE" "$SECRET" 2>/dev/null && echo ESCAPED; cat "$SECRET" 2>&1 | head -c 200; true"#;

macro_rules! probe {
    ($name:ident { $($field:ident: $val:expr),* $(,)? }) => {
        #[test]
        fn $name() {
            run(Probe { $($field: $val,)* ..P });
        }
    };
}

/// A probe that appends the nonce to a host file under the home (relative path).
macro_rules! persist {
    ($name:ident, $rel:expr) => {
        probe!($name {
            setup: |c| {
                let p = c.home($rel);
                c.write(&p, "orig\n");
            },
            inside: concat!(
                "f=\"$HOME/",
                $rel,
                "\"; mkdir -p \"$(dirname \"$f\")\" 2>/dev/null; echo \"$NONCE\" >> \"$f\""
            ),
            escaped: |c| c.has_nonce(&c.home($rel)),
        });
    };
}

// --- Persistence in the home: writes land in the session's layer, never on the host.
persist!(bashrc_is_not_persisted, ".bashrc");
persist!(profile_is_not_persisted, ".profile");
persist!(bash_profile_is_not_persisted, ".bash_profile");
persist!(zshrc_is_not_persisted, ".zshrc");
persist!(gitconfig_is_not_persisted, ".gitconfig");
persist!(
    autostart_entry_is_not_persisted,
    ".config/autostart/evil.desktop"
);
persist!(
    systemd_user_unit_is_not_persisted,
    ".config/systemd/user/evil.service"
);
persist!(local_bin_git_is_not_persisted, ".local/bin/git");
persist!(
    ssh_authorized_keys_are_not_persisted,
    ".ssh/authorized_keys"
);
persist!(ssh_config_is_not_persisted, ".ssh/config");
persist!(pip_config_is_not_persisted, ".config/pip/pip.conf");
persist!(cargo_config_is_not_persisted, ".cargo/config.toml");
persist!(
    git_hooks_of_another_repository_are_not_persisted,
    "other/.git/hooks/pre-commit"
);
persist!(vim_plugin_is_not_persisted, ".vim/plugin/evil.vim");
persist!(emacs_init_is_not_persisted, ".emacs.d/init.el");

// --- A hidden path the host lacks at the start stays hidden when the host makes it later,
// even after the session made and removed it (attack-3 A3-8: a whiteout in the session's
// own layer went with `touch f; rm f`).

/// Once the session says it is ready (a file `ready-$NONCE` in its home, found in its
/// layer or, without a sandbox, in the real home), the host writes `.pgpass` and
/// `.fly/config.yml` holding the nonce, then `$OUT/go`.
fn host_writes_later(c: &mut Ctx) {
    let (home, store, out, nonce, user) = (
        c.env.home.clone(),
        c.env.sessions_dir(),
        c.out.clone(),
        c.nonce.clone(),
        c.env.user,
    );
    std::thread::spawn(move || {
        let ready = format!("ready-{nonce}");
        let in_layer = || {
            std::fs::read_dir(&store)
                .map(|rd| {
                    rd.flatten()
                        .any(|e| e.path().join("home/upper").join(&ready).exists())
                })
                .unwrap_or(false)
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !(home.join(&ready).exists() || in_layer()) {
            if std::time::Instant::now() > deadline {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        std::fs::create_dir_all(home.join(".fly")).unwrap();
        std::fs::write(
            home.join(".fly/config.yml"),
            format!("access_token: {nonce}\n"),
        )
        .unwrap();
        std::fs::write(home.join(".pgpass"), format!("*:*:*:*:{nonce}\n")).unwrap();
        for p in [".fly", ".fly/config.yml", ".pgpass"] {
            let _ = std::os::unix::fs::lchown(home.join(p), Some(user.uid), Some(user.gid));
        }
        std::fs::write(out.join("go"), "").unwrap();
    });
}

probe!(
    a_mask_the_session_removes_still_hides_what_the_host_creates_later {
        setup: host_writes_later,
        inside: r#"touch ~/.pgpass && rm ~/.pgpass; mkdir ~/.fly && rmdir ~/.fly; : > ~/ready-$NONCE
i=0; while [ ! -e "$OUT/go" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
cat ~/.pgpass ~/.fly/config.yml 2>&1 | head -c 300
grep -qs "$NONCE" ~/.pgpass ~/.fly/config.yml && echo ESCAPED; true"#,
        // No `go`: the host never wrote, and nothing was shown; that must not pass.
        escaped: |c| !c.out.join("go").exists(),
        profiles: &["default", "ci"],
    }
);

// --- ~/.claude shows this project's conversations and prompts, no other's (attack-3 A3-4).

/// Conversations and prompts of this project and of another one in the real ~/.claude.
fn plant_conversations(c: &Ctx) {
    let proj = c.proj.canonicalize().unwrap();
    let own = csbox::session::slug::slug(&proj);
    let n = &c.nonce;
    let cl = c.home(".claude");
    let t = |rel: &str, text: String| c.write(&cl.join(rel), &text);
    t(
        &format!("projects/{own}/aaaaaaaa-0000-4000-8000-000000000001.jsonl"),
        format!("{{\"m\":\"OWN-T-{n}\"}}\n"),
    );
    t(
        "projects/-home-other/bbbbbbbb-0000-4000-8000-000000000002.jsonl",
        format!("{{\"m\":\"OTHER-T-{n}\"}}\n"),
    );
    t(
        "file-history/aaaaaaaa-0000-4000-8000-000000000001/f@v1",
        format!("OWN-FH-{n}\n"),
    );
    t(
        "file-history/bbbbbbbb-0000-4000-8000-000000000002/f@v1",
        format!("OTHER-FH-{n}\n"),
    );
    t(
        "todos/aaaaaaaa-0000-4000-8000-000000000001-agent-x.json",
        format!("[\"OWN-TD-{n}\"]\n"),
    );
    t(
        "todos/bbbbbbbb-0000-4000-8000-000000000002-agent-x.json",
        format!("[\"OTHER-TD-{n}\"]\n"),
    );
    let p = serde_json::to_string(&proj.display().to_string()).unwrap();
    t(
        "history.jsonl",
        format!(
            "{{\"display\":\"OWN-H-{n}\",\"timestamp\":1,\"project\":{p}}}\n{{\"display\":\"OTHER-H-{n} password=hunter2\",\"timestamp\":2,\"project\":\"/home/other\"}}\n"
        ),
    );
}

const SHOW_CLAUDE: &str = "cat ~/.claude/projects/*/*.jsonl ~/.claude/history.jsonl ~/.claude/file-history/*/* ~/.claude/todos/* 2>/dev/null; ls -R ~/.claude/projects";

#[test]
fn other_projects_conversations_and_prompts_stay_out_of_claudes_view() {
    for prof in ["default", "strict"] {
        let c = ctx();
        plant_conversations(&c);
        let out = run_in(&c, &["run", "--rm", "--profile", prof], SHOW_CLAUDE, None);
        let o = stdout(&out);
        assert!(
            o.contains(&format!("RAN={}", c.nonce)),
            "the sandbox did not run: {}",
            stderr(&out)
        );
        for own in ["OWN-T", "OWN-H", "OWN-FH", "OWN-TD"] {
            assert!(
                o.contains(&format!("{own}-{}", c.nonce)),
                "{prof}: this project's {own} is missing: {o}"
            );
        }
        assert!(
            !o.contains("OTHER-") && !o.contains("-home-other"),
            "{prof}: another project's shows: {o}"
        );
        // The real file is as it was: the filtered copy is the session's view only.
        assert!(std::fs::read_to_string(c.home(".claude/history.jsonl"))
            .unwrap()
            .contains("OTHER-H-"));
    }
    // Without a sandbox they all show: the check can see them.
    let c = ctx();
    plant_conversations(&c);
    let o = stdout(&run_in(
        &c,
        &["run", "--rm", "--profile", "compat"],
        SHOW_CLAUDE,
        None,
    ));
    assert!(
        o.contains(&format!("OTHER-T-{}", c.nonce)) && o.contains(&format!("OTHER-H-{}", c.nonce)),
        "{o}"
    );
}

// --- Claude Code's own records of past runs hold every project's secrets (red-team 7,
// A7-6): its full backups of ~/.claude.json (every project's MCP servers and tokens), its
// debug logs, the IDE extensions' lock files with their auth tokens.

/// A secret at `$HOME/<rel>` on the host that the session must not read.
macro_rules! claude_secret {
    ($name:ident, $rel:expr) => {
        probe!($name {
            setup: |c| {
                let n = c.nonce.clone();
                c.write(
                    &c.home($rel),
                    &format!("{{\"env\":{{\"PGPASSWORD\":\"{n}\"}}}}\n"),
                );
            },
            inside: concat!(
                "f=\"$HOME/",
                $rel,
                "\"; grep -q \"$NONCE\" \"$f\" 2>/dev/null && echo ESCAPED; ",
                "ls -A \"$(dirname \"$f\")\" 2>&1 | head -5; true"
            ),
            profiles: &["default", "strict", "ci"],
        });
    };
}
claude_secret!(
    claude_codes_backups_of_claude_json_are_unreadable,
    ".claude/backups/.claude.json.backup.1796175599999"
);
claude_secret!(claude_codes_debug_logs_are_unreadable, ".claude/debug/x");
claude_secret!(
    the_ide_lock_files_auth_token_is_unreadable,
    ".claude/ide/1.lock"
);
claude_secret!(
    claude_codes_telemetry_is_unreadable,
    ".claude/telemetry/1.json"
);
claude_secret!(
    the_old_claude_json_backup_in_the_home_is_unreadable,
    ".claude.json.backup"
);

/// Once the session says it is ready (`ready-$NONCE` in its ~/.claude, found in its layer
/// or, without a sandbox, in the real one), the host writes `files` (relative to its
/// ~/.claude, each with its text), as another session's merge-back or the host's
/// `claude` does while this one runs; then `$OUT/go`.
fn host_writes_in_claude_once_ready(c: &Ctx, files: Vec<(String, String)>) {
    let (cl, store, out, nonce, user) = (
        c.home(".claude"),
        c.env.sessions_dir(),
        c.out.clone(),
        c.nonce.clone(),
        c.env.user,
    );
    std::thread::spawn(move || {
        let ready = format!("ready-{nonce}");
        let in_layer = || {
            std::fs::read_dir(&store).is_ok_and(|rd| {
                rd.flatten()
                    .any(|e| e.path().join("state").join(&ready).exists())
            })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !(cl.join(&ready).exists() || in_layer()) {
            if std::time::Instant::now() > deadline {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
        for (rel, text) in files {
            let p = cl.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            for q in [p.parent().unwrap(), &p] {
                let _ = std::os::unix::fs::lchown(q, Some(user.uid), Some(user.gid));
            }
        }
        std::fs::write(out.join("go"), "").unwrap();
    });
}

/// Another project's conversation, its file-history backup and its todos, written by the
/// host while the session runs (this project's own key is there, as it is after a first
/// conversation).
fn host_adds_a_conversation_later(c: &mut Ctx) {
    let proj = c.proj.canonicalize().unwrap();
    let own = csbox::session::slug::slug(&proj);
    c.write(
        &c.home(&format!(
            ".claude/projects/{own}/aaaaaaaa-0000-4000-8000-000000000001.jsonl"
        )),
        "{}\n",
    );
    let (conv, nonce) = ("bbbbbbbb-2222-4000-8000-000000000001", &c.nonce);
    let files = vec![
        (
            format!("projects/-home-p7other/{conv}.jsonl"),
            format!("{{\"m\":\"B-SECRET {nonce}\"}}\n"),
        ),
        (
            format!("file-history/{conv}/f@v1"),
            format!("B-SECRET {nonce}\n"),
        ),
        (
            format!("todos/{conv}-agent-{conv}.json"),
            format!("[\"B-SECRET {nonce}\"]\n"),
        ),
    ];
    host_writes_in_claude_once_ready(c, files);
}

probe!(
    another_projects_conversation_written_while_the_session_runs_stays_unreadable {
        setup: host_adds_a_conversation_later,
        inside: r#": > ~/.claude/ready-$NONCE
i=0; while [ ! -e "$OUT/go" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; sleep 1
ls ~/.claude/projects ~/.claude/file-history ~/.claude/todos 2>&1 | head -20
cat ~/.claude/projects/*/*.jsonl ~/.claude/file-history/*/* ~/.claude/todos/* 2>/dev/null | grep -q "$NONCE" && echo ESCAPED; true"#,
        // No `go`: the host never wrote, and nothing was shown; that must not pass.
        escaped: |c| !c.out.join("go").exists(),
        profiles: &["default", "strict", "ci"],
    }
);

// --- ~/.claude shows of the host only what csbox lists (red-team 8, A8-1): none of Claude
// Code's data dirs (which hold every project's), nor a name no version has yet.

/// Claude Code's data paths (names from 2.1.332's own list of its config-dir entries) and
/// a name unknown to csbox, relative to ~/.claude, space-separated.
macro_rules! claude_data {
    () => {
        "api-dumps/r.json dump-prompts/p image-cache/s/1.png uploads/u file-transfers/t jobs/j.json tasks/s/1.json traces/t logs/l.log agent-memory/a/MEMORY.md remote/r teams/t/config.json mcp-needs-auth-cache.json stats-cache.json storage-v2/k zz-new-data/x"
    };
}

/// Reads each of `$names` (paths relative to ~/.claude) and then the whole view for the
/// nonce.
macro_rules! read_claude_data {
    ($names:expr) => {
        concat!(
            "for r in ",
            $names,
            "; do grep -qs \"$NONCE\" \"$HOME/.claude/$r\" && echo \"ESCAPED $r\"; done\n",
            "grep -rqs \"$NONCE\" \"$HOME/.claude/\" && echo ESCAPED-in-view\n",
            "ls -A \"$HOME/.claude\" | tr '\\n' ' '; true"
        )
    };
}

probe!(claude_codes_data_dirs_and_unknown_names_are_unreadable {
    setup: |c| {
        for rel in claude_data!().split(' ') {
            c.write(
                &c.home(&format!(".claude/{rel}")),
                &format!("{}\n", c.nonce),
            );
        }
    },
    inside: read_claude_data!(claude_data!()),
    profiles: &["default", "strict", "ci"],
});

// Red-team 9, A9-1: what settings.json names in ~/.claude is shared, but a link there to
// a directory (`keys -> ../.ssh`, `cfg -> .`) or to a hidden file is not: it would show
// the hidden ~/.ssh, or the whole real ~/.claude with every project's data.
probe!(
    a_link_in_claudes_dir_that_settings_names_shows_nothing_hidden {
        setup: |c| {
            let n = c.nonce.clone();
            c.write(&c.home(".ssh/id_ed25519"), &format!("{n}\n"));
            c.write(&c.home(".claude/api-dumps/r.json"), &format!("{n}\n"));
            c.write(
            &c.home(".claude/settings.json"),
            r#"{"statusLine":{"type":"command","command":"~/.claude/cfg/s.sh"},"hooks":{"Stop":[{"hooks":[{"type":"command","command":"~/.claude/keys/h.sh; ~/.claude/key.sh"}]}]}}"#,
        );
            let claude = c.home(".claude");
            std::os::unix::fs::symlink(".", claude.join("cfg")).unwrap();
            std::os::unix::fs::symlink("../.ssh", claude.join("keys")).unwrap();
            std::os::unix::fs::symlink("../.ssh/id_ed25519", claude.join("key.sh")).unwrap();
            c.env.chown_all(&claude);
        },
        inside: r#"for r in cfg/api-dumps/r.json keys/id_ed25519 key.sh; do grep -qs "$NONCE" "$HOME/.claude/$r" && echo "ESCAPED $r"; done; ls -A "$HOME/.claude" | tr '\n' ' '; true"#,
        profiles: &["default", "strict", "ci"],
    }
);

/// Names the host makes in its ~/.claude while the session runs.
macro_rules! claude_data_later {
    () => {
        "zz-later/x image-cache/later/1.png api-dumps/later.json later.json"
    };
}

probe!(
    claude_data_the_host_writes_while_the_session_runs_stays_unreadable {
        setup: |c| {
            let files = claude_data_later!()
                .split(' ')
                .map(|r| (r.to_string(), format!("{}\n", c.nonce)))
                .collect();
            host_writes_in_claude_once_ready(c, files);
        },
        inside: concat!(
            ": > ~/.claude/ready-$NONCE\n",
            "i=0; while [ ! -e \"$OUT/go\" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; sleep 1\n",
            read_claude_data!(claude_data_later!())
        ),
        // No `go`: the host never wrote, and nothing was shown; that must not pass.
        escaped: |c| !c.out.join("go").exists(),
        profiles: &["default", "strict", "ci"],
    }
);

// --- csbox itself: its profiles, units, store and binary stay as they are.
/// A profile that turns the sandbox off, planted where csbox looks for user profiles.
macro_rules! plant_profile {
    ($name:ident, $file:expr) => {
        probe!($name {
            inside: concat!(
                "d=\"$HOME/.config/csbox/profiles\"; mkdir -p \"$d\" && echo \"{\\\"description\\\": \\\"$NONCE\\\", \\\"isolation\\\": \\\"none\\\"}\" > \"$d/",
                $file,
                "\""
            ),
            escaped: |c| c.has_nonce(&c.home(concat!(".config/csbox/profiles/", $file))),
        });
    };
}
plant_profile!(a_user_profile_cannot_be_planted, "default.json");
plant_profile!(the_strict_profile_cannot_be_shadowed, "strict.json");
persist!(
    the_gc_unit_cannot_be_rewritten,
    ".config/systemd/user/csbox-gc.service"
);
persist!(
    the_csbox_binary_under_home_cannot_be_replaced,
    ".local/bin/csbox"
);

probe!(another_session_cannot_be_written {
    setup: |c| {
        let out = c.env.run(&["run", "--name", "other", "--", "true"]);
        assert!(out.status.success());
    },
    inside: r#"for d in "$STORE"/*/; do echo "$NONCE" > "$d/state/x" 2>&1; done; ls -A "$STORE" 2>&1 | head"#,
    escaped: |c| std::fs::read_dir(c.env.sessions_dir())
        .unwrap()
        .flatten()
        .any(|e| c.has_nonce(&e.path().join("state/x"))),
});

probe!(a_session_cannot_be_planted_in_the_store {
    inside: r#"mkdir -p "$STORE/0193e4a0-0000-7000-8000-000000000000/state" 2>&1"#,
    escaped: |c| c
        .env
        .sessions_dir()
        .join("0193e4a0-0000-7000-8000-000000000000")
        .exists(),
});

// Red-team 4, A4-10: a session that takes every inotify instance of the user blinds
// csbox's live watch of the project (and the user's editors); it gets a part of them.
probe!(a_session_cannot_take_all_the_users_inotify_instances {
    // A few more than the sandbox's part, not all: the suite's other sessions run as
    // the same user and need theirs.
    setup: |c| {
        let host = std::fs::read_to_string("/proc/sys/user/max_inotify_instances").unwrap();
        c.vars.push(("INOTIFY_MAX".into(), host.trim().to_string()));
    },
    inside: r#"python3 -c 'import ctypes, os
l = ctypes.CDLL(None, use_errno=True)
want = max(int(os.environ["INOTIFY_MAX"]) // 8, 4) + 8
n = 0
while n < want and l.inotify_init1(0) >= 0:
    n += 1
open("inotify-count", "w").write(str(n))'"#,
    escaped: |c| {
        let host: u64 = std::fs::read_to_string("/proc/sys/user/max_inotify_instances")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let n: u64 = std::fs::read_to_string(c.proj.join("inotify-count"))
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or(0);
        // Inside: an eighth of the host's (at least 4); without a sandbox, more.
        n > (host / 8).max(4)
    },
    native_only: true,
});

// --- The host outside the home: read-only.
probe!(a_user_writable_dir_outside_home_is_read_only {
    inside: r#"echo "$NONCE" > "$OUT/x""#,
    escaped: |c| c.has_nonce(&c.out.join("x")),
});

probe!(a_file_in_var_tmp_is_not_shared_with_the_host {
    inside: r#"echo "$NONCE" > "/var/tmp/$NONCE""#,
    escaped: |c| Path::new("/var/tmp").join(&c.nonce).exists(),
    setup: |c| c.cleanup.push(Path::new("/var/tmp").join(&c.nonce)),
});

probe!(a_file_in_tmp_is_not_shared_with_the_host {
    inside: r#"echo "$NONCE" > "/tmp/$NONCE""#,
    escaped: |c| Path::new("/tmp").join(&c.nonce).exists(),
    setup: |c| c.cleanup.push(Path::new("/tmp").join(&c.nonce)),
});

probe!(a_file_in_dev_shm_is_not_shared_with_the_host {
    inside: r#"echo "$NONCE" > "/dev/shm/$NONCE""#,
    escaped: |c| Path::new("/dev/shm").join(&c.nonce).exists(),
    setup: |c| c.cleanup.push(Path::new("/dev/shm").join(&c.nonce)),
});

probe!(a_file_in_run_lock_is_not_shared_with_the_host {
    inside: r#"echo "$NONCE" > "/run/lock/$NONCE" && test -e "/run/lock/$NONCE""#,
    escaped: |c| Path::new("/run/lock").join(&c.nonce).exists(),
    setup: |c| {
        let writable = nix::unistd::access("/run/lock", nix::unistd::AccessFlags::W_OK).is_ok();
        if !writable {
            cannot_run(
                "/run/lock is not writable on this host (the probe needs it world-writable)",
            );
        }
        c.cleanup.push(Path::new("/run/lock").join(&c.nonce));
    },
});

probe!(the_runtime_dir_is_not_shared_with_the_host {
    inside: r#"echo "$NONCE" > "$XDG_RUNTIME_DIR/$NONCE""#,
    escaped: |c| c.has_nonce(&c.env.dir.path().join("run-user").join(&c.nonce)),
});

// --- The project: writable, but not its files that run code on the host later.
macro_rules! project_file {
    ($name:ident, $rel:expr) => {
        project_file!($name, $rel, |_| {});
    };
    // There before the session: read-only inside.
    ($name:ident, $rel:expr, existing) => {
        project_file!($name, $rel, |c| c.write(&c.proj.join($rel), "orig\n"));
    };
    ($name:ident, $rel:expr, $setup:expr) => {
        probe!($name {
            setup: $setup,
            inside: concat!("f=\"$PROJ/", $rel, "\"; echo \"$NONCE\" >> \"$f\""),
            escaped: |c| c.has_nonce(&c.proj.join($rel)),
        });
    };
}
project_file!(
    a_project_git_hook_cannot_be_written,
    ".git/hooks/pre-commit"
);
project_file!(the_project_git_config_cannot_be_written, ".git/config");
project_file!(gitmodules_cannot_be_written, ".gitmodules");
project_file!(
    project_claude_settings_cannot_be_written,
    ".claude/settings.json"
);
project_file!(
    project_claude_local_settings_cannot_be_written,
    ".claude/settings.local.json"
);
project_file!(
    a_project_claude_command_cannot_be_added,
    ".claude/commands/evil.md"
);
project_file!(
    a_project_claude_agent_cannot_be_added,
    ".claude/agents/evil.md"
);
project_file!(the_mcp_config_cannot_be_written, ".mcp.json");
project_file!(vscode_tasks_cannot_be_added, ".vscode/tasks.json");
project_file!(idea_config_cannot_be_added, ".idea/workspace.xml");
project_file!(envrc_cannot_be_written, ".envrc");

// --- ~/.claude: shared configuration read-only, the rest in the session's layer.
macro_rules! claude_file {
    ($name:ident, $rel:expr) => {
        probe!($name {
            setup: |c| {
                let p = c.home(concat!(".claude/", $rel));
                c.write(&p, "orig\n");
            },
            inside: concat!("echo \"$NONCE\" >> \"$HOME/.claude/", $rel, "\""),
            escaped: |c| c.has_nonce(&c.home(concat!(".claude/", $rel))),
        });
    };
}
claude_file!(
    shared_settings_and_their_hooks_cannot_be_written,
    "settings.json"
);
claude_file!(a_shared_skill_cannot_be_written, "skills/x/SKILL.md");
claude_file!(the_shared_claude_md_cannot_be_written, "CLAUDE.md");
claude_file!(a_shared_agent_cannot_be_added, "agents/evil.md");
claude_file!(a_shared_command_cannot_be_added, "commands/evil.md");
claude_file!(history_lands_in_the_session_layer, "history.jsonl");

probe!(the_real_claude_json_is_not_written {
    inside: r#"echo "{\"n\":\"$NONCE\"}" > "$HOME/.claude.json""#,
    escaped: |c| c.has_nonce(&c.home(".claude.json")),
});

// --- Host sockets: none is reachable.
macro_rules! socket {
    ($name:ident, $path:expr) => {
        probe!($name {
            setup: |c| {
                let p = PathBuf::from($path(c));
                c.listen(&p);
                if !p.starts_with(c.env.dir.path()) {
                    c.cleanup.push(p.parent().unwrap().to_path_buf());
                }
                c.vars.push(("SOCK".into(), p.display().to_string()));
            },
            inside: CONNECT,
        });
    };
}
socket!(the_session_bus_is_unreachable, |c: &Ctx| c
    .env
    .dir
    .path()
    .join("run-user/bus"));
socket!(systemd_user_manager_is_unreachable, |c: &Ctx| c
    .env
    .dir
    .path()
    .join("run-user/systemd/private"));
socket!(the_gpg_agent_is_unreachable, |c: &Ctx| c
    .env
    .dir
    .path()
    .join("run-user/gnupg/S.gpg-agent"));
socket!(
    a_docker_socket_in_the_runtime_dir_is_unreachable,
    |c: &Ctx| c.env.dir.path().join("run-user/docker.sock")
);
socket!(an_x11_socket_in_tmp_is_unreachable, |c: &Ctx| format!(
    "/tmp/.X11-unix-{}/X0",
    c.nonce
));
socket!(an_ssh_agent_in_tmp_is_unreachable, |c: &Ctx| format!(
    "/tmp/ssh-{}/agent.1",
    c.nonce
));
socket!(a_socket_in_var_tmp_is_unreachable, |c: &Ctx| format!(
    "/var/tmp/{}/s.sock",
    c.nonce
));
socket!(a_socket_in_the_lower_home_is_unreachable, |c: &Ctx| c
    .env
    .home
    .join(".colima/default/docker.sock"));

/// A root-owned socket under /run that only the user's group may use (as docker.sock
/// is for the docker group): needs root to make.
fn run_socket(c: &mut Ctx) {
    if !nix::unistd::getuid().is_root() {
        cannot_run("making a socket under /run needs root");
        return;
    }
    let dir = PathBuf::from(format!("/run/csbox-probe-{}", c.nonce));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("docker.sock");
    c.listen(&p);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o660)).unwrap();
    std::os::unix::fs::chown(&p, Some(0), Some(c.env.user.gid)).unwrap();
    c.cleanup.push(dir);
    c.vars.push(("SOCK".into(), p.display().to_string()));
}

probe!(a_group_only_socket_under_run_is_unreachable {
    setup: run_socket,
    inside: CONNECT,
});

// --- Secrets: the usual credential stores are not readable.
macro_rules! secret {
    ($name:ident, $rel:expr) => {
        probe!($name {
            setup: |c| {
                let p = c.home($rel);
                let n = c.nonce.clone();
                c.write(&p, &format!("secret {n}\n"));
                c.vars.push(("SECRET".into(), p.display().to_string()));
            },
            inside: READ,
        });
    };
}
secret!(an_ssh_private_key_is_unreadable, ".ssh/id_ed25519");
secret!(aws_credentials_are_unreadable, ".aws/credentials");
secret!(
    a_gpg_private_key_is_unreadable,
    ".gnupg/private-keys-v1.d/key.key"
);
secret!(the_github_cli_token_is_unreadable, ".config/gh/hosts.yml");
secret!(the_kube_config_is_unreadable, ".kube/config");
secret!(the_docker_config_is_unreadable, ".docker/config.json");
secret!(netrc_is_unreadable, ".netrc");
secret!(git_credentials_are_unreadable, ".git-credentials");
secret!(the_npm_token_is_unreadable, ".npmrc");
secret!(the_pypi_token_is_unreadable, ".pypirc");
secret!(
    gcloud_credentials_are_unreadable,
    ".config/gcloud/credentials.db"
);
secret!(the_password_store_is_unreadable, ".password-store/bank.gpg");
secret!(a_shell_history_is_unreadable, ".bash_history");
secret!(
    a_browser_profile_is_unreadable,
    ".mozilla/firefox/x.default/logins.json"
);

probe!(
    a_symlinked_secret_dir_is_unreadable_through_its_target_too {
        setup: |c| {
            let target = c.env.dir.path().join("srv-secrets/aws");
            let n = c.nonce.clone();
            c.write(&target.join("credentials"), &format!("secret {n}\n"));
            std::os::unix::fs::symlink(&target, c.home(".aws")).unwrap();
            c.env.chown_all(c.env.dir.path());
            c.vars.push((
                "SECRET".into(),
                target.join("credentials").display().to_string(),
            ));
        },
        inside: r#"grep -q "$NONCE" "$HOME/.aws/credentials" 2>/dev/null && echo ESCAPED; grep -q "$NONCE" "$SECRET" 2>/dev/null && echo ESCAPED; true"#,
    }
);

probe!(the_invoking_shells_keyring_is_unreachable {
    setup: |c| {
        // The key goes into the session keyring csbox inherits (added just before exec
        // in the csbox process itself: see the pre_exec below).
        c.vars.push(("CSBOX_PROBE_KEY".into(), c.nonce.clone()));
    },
    inside: r#"grep -q "$NONCE" /proc/keys 2>/dev/null && echo ESCAPED; grep -c . /proc/keys 2>&1"#,
});

// --- Processes of the host: not visible, not signalled.
probe!(a_host_process_environment_is_unreadable {
    setup: |c| {
        let child = c
            .env
            .command("sleep")
            .arg("30")
            .env("CSBOX_PROBE", &c.nonce)
            .spawn()
            .unwrap();
        c.vars.push(("HOSTPID".into(), child.id().to_string()));
        std::mem::forget(child);
    },
    inside: r#"tr '\0' '\n' < /proc/$HOSTPID/environ 2>/dev/null | grep -q "$NONCE" && echo ESCAPED; ls /proc | grep -c '^[0-9]'"#,
});

// --- Planted links on re-entry: a link a session left in its own layer is never
//     followed to a host path when the session is entered again.
fn plant(c: &Ctx, session: &str, rel: &str, target: &Path) {
    let out = c.env.run(&["show", session, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dir = PathBuf::from(v["dir"].as_str().unwrap());
    let p = dir.join(rel);
    let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
    std::os::unix::fs::symlink(target, &p).unwrap();
    let _ = std::os::unix::fs::lchown(&p, Some(c.env.user.uid), Some(c.env.user.gid));
}

probe!(a_claude_json_link_planted_in_the_layer_binds_no_host_file {
    setup: |c| {
        let p = c.home(".bashrc");
        c.write(&p, "orig\n");
    },
    inside: r#"echo "$NONCE" >> "$HOME/.claude.json" 2>/dev/null; echo "$NONCE" >> "$CLAUDE_CONFIG_DIR/.claude.json" 2>/dev/null; true"#,
    escaped: |c| c.has_nonce(&c.home(".bashrc")),
    reenter: Some(|c, s| plant(c, s, "state/.claude.json", &c.home(".bashrc"))),
    fails_with: FailsWith::Patch(|c, a| follow_link(
        c,
        a,
        "state/.claude.json",
        &c.home(".bashrc")
    )),
});

probe!(a_sessions_dir_link_planted_in_the_layer_binds_no_host_dir {
    setup: |c| {
        std::fs::create_dir_all(c.home(".config/victim")).unwrap();
        c.env.chown_all(c.env.dir.path());
    },
    inside: r#"echo "$NONCE" > "$CLAUDE_CONFIG_DIR/sessions/x" 2>/dev/null; true"#,
    escaped: |c| c.has_nonce(&c.home(".config/victim/x")),
    reenter: Some(|c, s| plant(c, s, "state/sessions", &c.home(".config/victim"))),
    fails_with: FailsWith::Patch(|c, a| follow_link(
        c,
        a,
        "state/sessions",
        &c.home(".config/victim")
    )),
});

/// This run's plan (`--dry-run`), changed by `edit`, as a patch of its mounts.
fn mounts_patch(c: &Ctx, args: &[&str], edit: impl FnOnce(&mut Vec<serde_json::Value>)) -> String {
    let mut dry: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| *a != "--name" && *a != "victim")
        .collect();
    dry.push("--dry-run");
    dry.extend(["--", "true"]);
    let out = c.env.csbox(&dry).current_dir(&c.proj).output().unwrap();
    assert!(out.status.success(), "dry run: {}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut mounts = plan["mounts"].as_array().unwrap().clone();
    edit(&mut mounts);
    serde_json::json!({ "mounts": mounts }).to_string()
}

/// What following a link planted at the session source `rel` would give: the source
/// opened as the host path it points to.
fn follow_link(c: &Ctx, args: &[&str], rel: &str, target: &Path) -> String {
    mounts_patch(c, args, |mounts| {
        for m in mounts.iter_mut() {
            if m["src"]["session"] == rel {
                m["src"] = serde_json::json!({ "host": target });
            }
        }
    })
}

/// The victim directory bound writable where the home's files are: what following a link
/// planted at the home layer's upper dir would give (over ~/.cache, which the probe
/// writes too, so the working directory stays).
fn bind_victim(c: &Ctx, args: &[&str]) -> String {
    let home = c.env.home.canonicalize().unwrap().join(".cache");
    let victim = c.home(".config/victim");
    mounts_patch(c, args, |mounts| {
        let at = mounts.iter().position(|m| m["op"] == "dev").unwrap();
        mounts.insert(
            at,
            serde_json::json!({"op": "bind", "src": {"host": victim}, "dst": home,
                "flags": {"read_only": false, "nosuid": true, "nodev": true, "noexec": false}, "create_dst": null}),
        );
    })
}

probe!(a_home_layer_link_planted_in_the_session_binds_no_host_dir {
    setup: |c| {
        std::fs::create_dir_all(c.home(".config/victim")).unwrap();
        std::fs::create_dir_all(c.home(".cache")).unwrap();
        c.env.chown_all(c.env.dir.path());
    },
    inside: r#"echo "$NONCE" > "$HOME/x" 2>/dev/null; echo "$NONCE" > "$HOME/.cache/x" 2>/dev/null; true"#,
    escaped: |c| c.has_nonce(&c.home(".config/victim/x")),
    reenter: Some(|c, s| plant(c, s, "home/upper", &c.home(".config/victim"))),
    profiles: &["default"],
    fails_with: FailsWith::Patch(bind_victim),
});

/// What following a link planted at an overlay's `field` ("upper" or "work") whose
/// session source is `rel` would give: that layer dir on the host path it points to.
fn follow_layer_link(c: &Ctx, args: &[&str], field: &str, rel: &str, target: &Path) -> String {
    mounts_patch(c, args, |mounts| {
        for m in mounts.iter_mut() {
            if m["op"] == "overlay" && m[field]["session"] == rel {
                m[field] = serde_json::json!({ "host": target });
            }
        }
    })
}

/// Whether the victim dir holds anything now but the mount points made for the patched
/// run (an overlay used it as a layer).
fn victim_touched(c: &Ctx) -> bool {
    std::fs::read_dir(c.home(".config/victim")).is_ok_and(|d| {
        d.flatten().any(|e| {
            e.file_name() != ".claude.json"
                && !csbox::plan::SESSION_OWN.iter().any(|n| e.file_name() == *n)
        })
    })
}

/// The victim dir, with what a `~/.claude` layer has for csbox's binds of the session's
/// own state (so a patched run that takes it as the layer gets as far as the command).
fn victim_dir(c: &mut Ctx) {
    for n in csbox::plan::SESSION_OWN {
        std::fs::create_dir_all(c.home(".config/victim").join(n)).unwrap();
    }
    // The mount point of the layer's own .claude.json (bound at ~/.claude/.claude.json).
    std::fs::write(c.home(".config/victim/.claude.json"), "{}\n").unwrap();
    c.env.chown_all(c.env.dir.path());
}

probe!(
    a_claude_layer_link_planted_in_the_session_binds_no_host_dir {
        setup: victim_dir,
        inside: r#"echo "$NONCE" > "$HOME/.claude/x" 2>/dev/null; true"#,
        escaped: victim_touched,
        reenter: Some(|c, s| plant(c, s, "state", &c.home(".config/victim"))),
        fails_with: FailsWith::Patch(|c, a| follow_layer_link(
            c,
            a,
            "upper",
            "state",
            &c.home(".config/victim")
        )),
    }
);

probe!(
    a_claude_work_dir_link_planted_in_the_session_binds_no_host_dir {
        setup: victim_dir,
        inside: r#"echo "$NONCE" > "$HOME/.claude/x" 2>/dev/null; true"#,
        escaped: victim_touched,
        reenter: Some(|c, s| plant(c, s, "work", &c.home(".config/victim"))),
        fails_with: FailsWith::Patch(|c, a| follow_layer_link(
            c,
            a,
            "work",
            "work",
            &c.home(".config/victim")
        )),
    }
);

probe!(
    a_home_work_dir_link_planted_in_the_session_binds_no_host_dir {
        setup: victim_dir,
        inside: r#"echo "$NONCE" > "$HOME/x" 2>/dev/null; true"#,
        escaped: victim_touched,
        reenter: Some(|c, s| plant(c, s, "home/work", &c.home(".config/victim"))),
        profiles: &["default"],
        fails_with: FailsWith::Patch(|c, a| follow_layer_link(
            c,
            a,
            "work",
            "home/work",
            &c.home(".config/victim")
        )),
    }
);

// --- The first red-team report (notes/attack-1.md): each finding's way out, closed.

// F1: git takes config and hooks from `$GIT_DIR/commondir`, `config.worktree` and a
// submodule's git dir: what the session makes there is moved out of the project at exit.
macro_rules! git_steering {
    ($name:ident, $rel:expr, $inside:expr) => {
        probe!($name {
            inside: concat!($inside, "; true"),
            escaped: |c| std::fs::symlink_metadata(c.proj.join($rel)).is_ok(),
        });
    };
}
git_steering!(
    a_commondir_the_session_plants_in_the_git_dir_does_not_stay,
    ".git/commondir",
    r#"mkdir -p .git/x && printf '[core]\n\tfsmonitor = "echo $NONCE > $OUT/pwned; false"\n' > .git/x/config && for d in objects refs; do ln -s ../$d .git/x/$d; done; echo x > .git/commondir"#
);
git_steering!(
    a_config_worktree_the_session_plants_does_not_stay,
    ".git/config.worktree",
    r#"printf '[core]\n\thooksPath = /tmp/evil\n' > .git/config.worktree"#
);
git_steering!(
    a_submodule_git_dir_the_session_plants_does_not_stay,
    ".git/modules/evil/config",
    r#"mkdir -p .git/modules/evil/hooks && printf '[core]\n\tfsmonitor = "id"\n' > .git/modules/evil/config"#
);

// Red-team 6, A6-2: a new submodule git dir whose `commondir` names a config of the
// session's (a HEAD-less dir with objects/ and refs/); a `.git` file pointing into
// `.git/modules/` is git's own, so a plain `git status` would follow it there.
git_steering!(
    a_submodules_commondir_the_session_plants_does_not_stay,
    ".git/modules/m/commondir",
    r#"mkdir -p .git/modules/m t/cm/objects t/cm/refs && cp .git/HEAD .git/modules/m/ && printf '[core]\n\tfsmonitor = "echo $NONCE > $OUT/pwned; false"\n' > t/cm/config && echo "$PWD/t/cm" > .git/modules/m/commondir"#
);

/// `git ARGS` on the host in `dir`, as the probe's user; it must succeed.
fn git_ok(c: &Ctx, dir: &Path, args: &[&str]) {
    let out = c
        .env
        .command("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args([
            "-c",
            "protocol.file.allow=always",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
}

/// The project as a real git repository with one commit (`ctx`'s `.git` is a stand-in).
fn real_repo(c: &mut Ctx) {
    std::fs::remove_dir_all(c.proj.join(".git")).unwrap();
    std::fs::remove_file(c.proj.join(".gitmodules")).unwrap();
    git_ok(c, &c.proj, &["init", "-q"]);
    git_ok(c, &c.proj, &["add", "-A"]);
    git_ok(c, &c.proj, &["commit", "-qm", "a"]);
}

/// [`real_repo`] with the submodules of red-team 7: `sm` and `libs/x` (a name with a
/// slash: its git dir is `.git/modules/libs/x`), each with a nested submodule `inner`
/// (`.git/modules/sm/modules/inner`).
fn repo_with_submodules(c: &mut Ctx) {
    real_repo(c);
    let (inner, sub) = (c.home("inner"), c.home("sub"));
    for r in [&inner, &sub] {
        std::fs::create_dir_all(r).unwrap();
    }
    c.env.chown_all(c.env.dir.path());
    git_ok(c, &inner, &["init", "-q"]);
    git_ok(c, &inner, &["commit", "-q", "--allow-empty", "-m", "i"]);
    git_ok(c, &sub, &["init", "-q"]);
    git_ok(
        c,
        &sub,
        &["submodule", "add", "-q", inner.to_str().unwrap(), "inner"],
    );
    git_ok(c, &sub, &["commit", "-qm", "s"]);
    for name in ["sm", "libs/x"] {
        git_ok(
            c,
            &c.proj,
            &["submodule", "add", "-q", sub.to_str().unwrap(), name],
        );
    }
    git_ok(
        c,
        &c.proj,
        &["submodule", "update", "-q", "--init", "--recursive"],
    );
    git_ok(c, &c.proj, &["commit", "-qm", "subs"]);
}

/// After the run, a host `git status` at the top (what a prompt runs; it recurses into
/// every submodule): whether a session's `core.fsmonitor` ran on the host.
fn host_status_runs_the_session(c: &Ctx) -> bool {
    let _ = c
        .env
        .command("git")
        .args(["status", "--short"])
        .current_dir(&c.proj)
        .output();
    c.has_nonce(&c.out.join("pwned"))
}

// Red-team 7, A7-1 and A7-3: a submodule's git dir is wherever its name puts it below
// `.git/modules/` (two levels down for `libs/x`, nested in another's `modules/`); its
// config, hooks and what points git elsewhere for them are read-only inside, or moved.
macro_rules! submodule_git_dir {
    ($name:ident, $dir:expr) => {
        probe!($name {
            setup: repo_with_submodules,
            inside: concat!(
                "d=",
                $dir,
                r#"; git config -f $d/config core.fsmonitor "echo $NONCE > $OUT/pwned; false" 2>/dev/null
printf '#!/bin/sh\necho %s > %s/pwned\n' "$NONCE" "$OUT" > $d/hooks/post-checkout 2>/dev/null
echo "$OUT" > $d/commondir 2>/dev/null; echo "$OUT" > $d/config.worktree 2>/dev/null; true"#
            ),
            escaped: |c| {
                let d = c.proj.join($dir);
                c.has_nonce(&d.join("config"))
                    || ["hooks/post-checkout", "commondir", "config.worktree"]
                        .iter()
                        .any(|f| d.join(f).exists())
                    || host_status_runs_the_session(c)
            },
        });
    };
}
submodule_git_dir!(
    a_slash_named_submodules_git_dir_is_read_only,
    ".git/modules/libs/x"
);
submodule_git_dir!(
    a_nested_submodules_git_dir_is_read_only,
    ".git/modules/sm/modules/inner"
);
submodule_git_dir!(
    a_nested_submodule_of_a_slash_named_one_is_read_only,
    ".git/modules/libs/x/modules/inner"
);

// Red-team 7, A7-2: in any repository, a git dir the session makes at any depth below
// `.git/modules/` or `.git/worktrees/` (its own config with a `core.fsmonitor`), a work
// tree whose `.git` file points there and a gitlink in the index: a host `git status`
// at the top would follow it. `$PREP` runs first (`s` a git dir of its own, so that `x`
// lies in a git dir but not in its `modules/`: found through the `.git` file alone).
// The exit walk moves it (in a bundle, its poststop hook's).
macro_rules! planted_git_dir {
    ($name:ident, $prep:expr, $m:expr) => {
        probe!($name {
            setup: real_repo,
            inside: concat!(
                $prep,
                "\nM=",
                $m,
                r#"; mkdir -p $M vendor/m && cp .git/HEAD $M/ && cp -a .git/objects .git/refs $M/ &&
printf '[core]\n\trepositoryformatversion = 0\n\tfsmonitor = "echo %s > %s/pwned; false"\n' "$NONCE" "$OUT" > $M/config &&
echo "gitdir: ../../$M" > vendor/m/.git && git update-index --add --cacheinfo 160000,$(git rev-parse HEAD),vendor/m; true"#
            ),
            // The planted config itself (what git would run, whatever its version
            // makes of a gitlink without a `.gitmodules` entry), and the host's git.
            escaped: |c| c.has_nonce(&c.proj.join($m).join("config"))
                || host_status_runs_the_session(c),
        });
    };
}
planted_git_dir!(
    a_git_dir_the_session_makes_two_levels_below_modules_does_not_stay,
    "",
    ".git/modules/v/m"
);
planted_git_dir!(
    a_git_dir_the_session_makes_two_levels_below_worktrees_does_not_stay,
    "",
    ".git/worktrees/a/b"
);
planted_git_dir!(
    a_git_dir_the_session_makes_inside_another_below_modules_does_not_stay,
    "mkdir -p .git/modules/s && cp .git/HEAD .git/modules/s/",
    ".git/modules/s/x"
);

// Red-team 4, A4-8: a repository nested deeper than the exit walk went (32 levels then)
// stayed live after the session; and one past the walk's bound now (128) is moved whole.
fn deep_path(levels: usize) -> String {
    (0..levels).map(|i| format!("d{i}/")).collect()
}
probe!(a_repository_nested_34_levels_down_does_not_stay {
    inside: r#"p=deep; for i in $(seq 0 33); do p=$p/d$i; done; mkdir -p $p/r && git init -q $p/r && printf '[core]\n\tfsmonitor = "echo $NONCE > $OUT/pwned; false"\n' >> $p/r/.git/config; true"#,
    escaped: |c| c
        .proj
        .join("deep")
        .join(deep_path(34))
        .join("r/.git/config")
        .exists(),
});
probe!(
    a_tree_the_session_makes_past_the_exit_walks_depth_is_moved_whole {
        inside: r#"p=deep; for i in $(seq 0 139); do p=$p/d$i; done; mkdir -p $p && echo x > $p/.npmrc; true"#,
        escaped: |c| c
            .proj
            .join("deep")
            .join(deep_path(140))
            .join(".npmrc")
            .exists(),
    }
);

// Red-team 3, A3-11: build tools that take a command from the project's config.
git_steering!(
    an_npmrc_script_shell_the_session_writes_does_not_stay,
    ".npmrc",
    r#"echo "script-shell=$PROJ/evil.sh" > .npmrc"#
);
git_steering!(
    a_cargo_config_rustc_wrapper_the_session_writes_does_not_stay,
    ".cargo/config.toml",
    r#"mkdir -p .cargo && printf '[build]\nrustc-wrapper = "/tmp/evil"\n' > .cargo/config.toml"#
);
git_steering!(
    a_yarnrc_yarn_path_the_session_writes_does_not_stay,
    ".yarnrc.yml",
    r#"echo "yarnPath: evil.cjs" > .yarnrc.yml"#
);

/// The project as a linked worktree of a repository beside it (`$MAIN`), as `git worktree
/// add` makes one: its `.git` file points at `main/.git/worktrees/proj`.
fn linked_worktree(c: &mut Ctx) {
    let main = c.home("main");
    let wt = main.join(".git/worktrees/proj");
    std::fs::create_dir_all(wt.clone()).unwrap();
    std::fs::create_dir_all(main.join(".git/hooks")).unwrap();
    for (p, text) in [
        (
            main.join(".git/config"),
            "[core]\n\tbare = false\n".to_string(),
        ),
        (main.join(".git/HEAD"), "ref: refs/heads/main\n".into()),
        (wt.join("commondir"), "../..\n".into()),
        (wt.join("HEAD"), "ref: refs/heads/proj\n".into()),
        (
            wt.join("gitdir"),
            format!("{}\n", c.proj.join(".git").display()),
        ),
    ] {
        std::fs::write(p, text).unwrap();
    }
    std::fs::remove_dir_all(c.proj.join(".git")).unwrap();
    std::fs::write(c.proj.join(".git"), format!("gitdir: {}\n", wt.display())).unwrap();
    c.env.chown_all(c.env.dir.path());
    c.vars.push(("MAIN".into(), main.display().to_string()));
}

probe!(a_linked_worktrees_commondir_cannot_be_pointed_elsewhere {
    setup: linked_worktree,
    inside: r#"echo "$OUT" > "$MAIN/.git/worktrees/proj/commondir"; true"#,
    escaped: |c| std::fs::read_to_string(c.home("main/.git/worktrees/proj/commondir"))
        .is_ok_and(|s| s != "../..\n"),
});

// Red-team 7, A7-2: the worktree's own `.git` file, pointed at a git dir of the
// session's, would make every host git in the worktree run its config.
probe!(a_linked_worktrees_own_git_file_is_read_only {
    setup: linked_worktree,
    inside: r#"mkdir -p t && echo "gitdir: $OUT" > t/g && { mv -f t/g .git 2>/dev/null || echo "gitdir: $OUT" > .git; } 2>/dev/null; true"#,
    escaped: |c| std::fs::read_to_string(c.proj.join(".git"))
        .is_ok_and(|s| s.contains(&*c.out.to_string_lossy())),
});

probe!(
    a_commondir_planted_in_the_main_repo_from_a_linked_worktree_does_not_stay {
        setup: linked_worktree,
        inside: r#"echo "$OUT" > "$MAIN/.git/commondir"; echo "$OUT" > "$MAIN/.git/worktrees/proj/config.worktree"; true"#,
        escaped: |c| c.home("main/.git/commondir").exists()
            || c.home("main/.git/worktrees/proj/config.worktree").exists(),
    }
);

// Red-team 7, A7-9: a rebase the session leaves stopped, with `exec` lines in its todo:
// the user's `git rebase --continue` on the host runs them. The check reads the todo
// itself (whatever this git does with it) and then continues the rebase on the host.
const STOPPED_REBASE: &str = r#"G="git -c user.name=a -c user.email=a@b"; echo b > b && $G add b && $G commit -qm b && GIT_SEQUENCE_EDITOR="printf 'break\nexec echo $NONCE >> $OUT/rebase-exec\n' >" $G rebase -q -i HEAD~1; $G status | head -2; true"#;

/// A todo of a stopped rebase in `git_dir` that holds the nonce, then the host's `git
/// rebase --continue` in `dir`: whether either says a command of the session's runs.
fn host_continue_runs_the_session(c: &Ctx, git_dir: &Path, dir: &Path) -> bool {
    let todo =
        std::fs::read_to_string(git_dir.join("rebase-merge/git-rebase-todo")).unwrap_or_default();
    let planted = todo
        .lines()
        .any(|l| l.trim_start().starts_with("exec") && l.contains(&c.nonce));
    let _ = c
        .env
        .command("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(["rebase", "--continue"])
        .current_dir(dir)
        .output();
    planted || c.has_nonce(&c.out.join("rebase-exec"))
}

probe!(
    a_stopped_rebases_exec_line_does_not_run_on_the_hosts_continue {
        setup: real_repo,
        inside: STOPPED_REBASE,
        escaped: |c| host_continue_runs_the_session(c, &c.proj.join(".git"), &c.proj),
    }
);

// The same from a linked worktree: its rebase state is in the main repository's
// `.git/worktrees/<name>/`.
probe!(
    a_stopped_rebase_in_a_linked_worktree_does_not_run_on_the_hosts_continue {
        setup: |c| {
            real_repo(c);
            let wt = c.home("wt");
            git_ok(c, &c.proj, &["worktree", "add", "-q", wt.to_str().unwrap()]);
            c.proj = wt;
        },
        inside: STOPPED_REBASE,
        escaped: |c| host_continue_runs_the_session(c, &c.home("proj/.git/worktrees/wt"), &c.proj),
    }
);

// A strategy name that is not git's own: `git rebase --continue` runs `git-merge-<name>`.
git_steering!(
    a_stopped_rebases_foreign_strategy_does_not_stay,
    ".git/rebase-merge/strategy",
    r#"mkdir -p .git/rebase-merge && echo evil > .git/rebase-merge/strategy"#
);

/// A rebase the session leaves stopped at an `edit` (no `exec`): the user continues it on
/// the host, and it finishes.
#[test]
fn a_plain_rebase_the_session_leaves_stopped_goes_on_on_the_host() {
    for profile in ["default", "strict"] {
        let mut c = ctx();
        real_repo(&mut c);
        let inside = r#"G="git -c user.name=a -c user.email=a@b"; echo b > b && $G add b && $G commit -qm b && echo c > c && $G add c && $G commit -qm c && GIT_SEQUENCE_EDITOR="sed -i 1s/^pick/edit/" $G rebase -q -i HEAD~2; $G status | head -1"#;
        let out = run_in(&c, &["run", "--profile", profile], inside, None);
        assert!(
            stdout(&out).contains(&format!("RAN={}", c.nonce)),
            "{profile}: did not run"
        );
        assert!(
            stdout(&out).contains("rebase in progress"),
            "{profile}: the session's rebase did not stop: {}",
            stdout(&out)
        );
        assert!(
            !stderr(&out).contains("rebase-merge"),
            "{profile}: csbox moved a plain rebase's state: {}",
            stderr(&out)
        );
        git_ok(&c, &c.proj, &["rebase", "--continue"]);
        let log = c
            .env
            .command("git")
            .args(["log", "--format=%s"])
            .current_dir(&c.proj)
            .output()
            .unwrap();
        assert_eq!(
            stdout(&log),
            "c\nb\na\n",
            "{profile}: the rebase did not finish"
        );
    }
}

// Red-team 8, A8-2: from a linked worktree, the main repository's attributes and the
// worktree's `gitdir` (which git's commits never write) are read-only.
probe!(
    a_linked_worktrees_gitdir_and_the_main_repos_attributes_are_read_only {
        setup: |c| {
            linked_worktree(c);
            c.write(&c.home("main/.git/info/attributes"), "orig\n");
        },
        inside: r#"for f in "$MAIN/.git/info/attributes" "$MAIN/.git/worktrees/proj/gitdir"; do echo "$NONCE" >> "$f"; done; true"#,
        escaped: |c| c.has_nonce(&c.home("main/.git/info/attributes"))
            || c.has_nonce(&c.home("main/.git/worktrees/proj/gitdir")),
    }
);

// F2: a directory holding protected paths cannot be renamed aside and replaced.
macro_rules! rename_aside {
    ($name:ident, $dir:expr, $file:expr) => {
        probe!($name {
            setup: |c| {
                // A submodule's git dir, for the nested case.
                std::fs::create_dir_all(c.proj.join(".git/modules/sub/hooks")).unwrap();
                std::fs::write(c.proj.join(".git/modules/sub/config"), "orig\n").unwrap();
                c.env.chown_all(c.env.dir.path());
            },
            inside: concat!(
                "mv ",
                $dir,
                " ",
                $dir,
                "-old && mkdir -p \"$(dirname ",
                $file,
                ")\" && echo \"$NONCE\" > ",
                $file,
                "; mv ",
                $dir,
                "-old ",
                $dir,
                "/old 2>/dev/null; true"
            ),
            escaped: |c| c.has_nonce(&c.proj.join($file)),
        });
    };
}
rename_aside!(the_git_dir_cannot_be_renamed_aside, ".git", ".git/config");
rename_aside!(
    the_claude_dir_cannot_be_renamed_aside,
    ".claude",
    ".claude/settings.json"
);
rename_aside!(
    a_submodules_git_dir_cannot_be_renamed_aside,
    ".git/modules",
    ".git/modules/sub/config"
);

// F3: a protected path that is a link out of the project binds nothing, natively and
// from the bundle `csbox spec --session` exports: the link would be resolved on the host
// (the source) and, for the destination, in the tree the session controls (its home
// layer turns `~/.m2/..` into a directory of the project).
probe!(a_protected_link_out_of_the_project_binds_nothing {
    setup: |c| {
        let n = c.nonce.clone();
        c.write(&c.home(".ssh/id_ed25519"), &format!("secret {n}\n"));
        std::fs::create_dir_all(c.home(".m2")).unwrap();
        std::fs::remove_file(c.proj.join(".git/config")).unwrap();
        std::os::unix::fs::symlink(c.home(".m2/../.ssh/id_ed25519"), c.proj.join(".git/config"))
            .unwrap();
        c.env.chown_all(c.env.dir.path());
    },
    inside: r#"grep -q "$NONCE" "$PROJ/x/.ssh/id_ed25519" 2>/dev/null && echo ESCAPED
grep -q "$NONCE" "$PROJ/.git/config" 2>/dev/null && echo ESCAPED
mkdir -p "$PROJ/x/y" "$PROJ/x/.ssh"; touch "$PROJ/x/.ssh/id_ed25519" 2>/dev/null
rm -rf "$HOME/.m2" 2>/dev/null; ln -sfn "$PROJ/x/y" "$HOME/.m2" 2>/dev/null; true"#,
    escaped: |c| c.has_nonce(&c.proj.join("x/.ssh/id_ed25519")),
    reenter: Some(|_, _| {}),
    profiles: &["default"],
});

// F4: csbox's own files are no project: a session there could loosen every later
// sandbox. csbox refuses to start one.
macro_rules! own_config {
    ($name:ident, $cwd:expr, $write:expr, $msg:expr) => {
        probe!($name {
            setup: |c| {
                c.proj = c.home($cwd);
                std::fs::create_dir_all(c.home(".config/csbox/profiles")).unwrap();
                std::fs::create_dir_all(c.home(".config/systemd/user")).unwrap();
                c.env.chown_all(c.env.dir.path());
            },
            inside: concat!("echo \"{\\\"description\\\": \\\"$NONCE\\\", \\\"isolation\\\": \\\"none\\\"}\" > \"$PWD/", $write, "\""),
            escaped: |c| c.has_nonce(&c.home(concat!($cwd, "/", $write))),
            refused: Some($msg),
        });
    };
}
own_config!(
    the_config_dir_holding_csbox_profiles_is_refused_as_a_project,
    ".config",
    "csbox/profiles/default.json",
    "csbox's configuration"
);
own_config!(
    csbox_own_config_dir_is_refused_as_a_project,
    ".config/csbox",
    "profiles/strict.json",
    "csbox's configuration"
);
own_config!(
    the_systemd_user_unit_dir_is_refused_as_a_project,
    ".config/systemd/user",
    "csbox-gc.service",
    "systemd user units"
);

probe!(
    the_dir_of_a_csbox_binary_under_home_is_refused_as_a_project {
        setup: |c| {
            let bin = c.home(".local/bin/csbox");
            std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
            c.env.chown_all(c.env.dir.path());
            // A link, not a copy: a file just written may still be open for writing in a
            // child another test thread forks, and exec of it fails with ETXTBSY.
            std::fs::hard_link(CSBOX, &bin)
                .or_else(|_| std::fs::copy(CSBOX, &bin).map(|_| ()))
                .unwrap();
            c.proj = bin.parent().unwrap().to_path_buf();
            c.csbox = Some(bin);
        },
        // A running binary cannot be written (ETXTBSY), but it can be replaced.
        inside: r#"echo "$NONCE" > "$PWD/.new" && mv "$PWD/.new" "$PWD/csbox""#,
        escaped: |c| {
            let bin = c.home(".local/bin/csbox");
            std::fs::metadata(&bin).is_ok_and(|m| m.len() < 4096) && c.has_nonce(&bin)
        },
        refused: Some("the csbox binary"),
    }
);

// F5: a listening host socket anywhere on the read-only host is hidden, not only those
// under /run, /tmp and /var/tmp.
socket!(
    a_socket_outside_the_private_dirs_is_unreachable,
    |c: &Ctx| c.out.join("daemon.sock")
);
socket!(a_socket_in_the_project_is_unreachable, |c: &Ctx| c
    .proj
    .join("dev.sock"));

// F7: what the protected config delegates to is protected too.
project_file!(
    a_claude_hook_script_cannot_be_written,
    ".claude/hooks/format.sh"
);
project_file!(
    a_dev_container_command_cannot_be_added,
    ".devcontainer/devcontainer.json"
);
project_file!(
    the_pre_commit_config_cannot_be_written,
    ".pre-commit-config.yaml"
);
project_file!(a_husky_hook_cannot_be_written, ".husky/pre-commit");
project_file!(the_mise_config_cannot_be_written, "mise.toml");
project_file!(the_hidden_mise_config_cannot_be_written, ".mise.toml");
// A7-9: more names host tools run commands from.
project_file!(a_local_lefthook_config_does_not_stay, "lefthook-local.yml");
project_file!(a_vimrc_for_vim_s_exrc_does_not_stay, ".vimrc");
project_file!(a_bazelisk_version_does_not_stay, ".bazelversion");
// A7-9, A8-4: the names left then; a pattern's (`*.code-workspace`, `mise.*.toml`) too.
project_file!(
    a_vs_code_workspace_file_does_not_stay,
    "proj.code-workspace"
);
project_file!(a_mise_environment_config_does_not_stay, "mise.dev.toml");
project_file!(an_sbt_options_file_does_not_stay, ".sbtopts");
project_file!(a_lint_staged_config_does_not_stay, "lint-staged.config.js");
project_file!(a_commitlint_config_does_not_stay, ".commitlintrc.json");
project_file!(
    an_existing_lint_staged_config_is_read_only,
    "lint-staged.config.js",
    existing
);
project_file!(
    an_existing_vs_code_workspace_file_is_read_only,
    "proj.code-workspace",
    existing
);
project_file!(
    an_existing_mise_environment_config_is_read_only,
    ".mise.dev.toml",
    existing
);
// Red-team 10, A10-B2: a scheduled task's prompt is sent by the host's next `claude` in the
// project as the user's turn; other agents' project config starts MCP servers (A10-B6).
project_file!(
    a_claude_code_scheduled_task_does_not_stay,
    ".claude/scheduled_tasks.json"
);
project_file!(
    an_existing_claude_code_scheduled_task_is_read_only,
    ".claude/scheduled_tasks.json",
    existing
);
project_file!(an_opencode_config_does_not_stay, "opencode.json");
probe!(a_gemini_cli_settings_file_does_not_stay {
    inside: r#"mkdir -p "$PROJ/.gemini" && echo "$NONCE" >> "$PROJ/.gemini/settings.json""#,
    escaped: |c| c.has_nonce(&c.proj.join(".gemini/settings.json")),
});

macro_rules! git_config_names {
    ($name:ident, $config:expr, $target:expr) => {
        probe!($name {
            setup: |c| {
                c.write(&c.proj.join(".git/config"), $config);
                c.write(&c.proj.join($target), "orig\n");
            },
            inside: concat!("echo \"$NONCE\" >> \"$PROJ/", $target, "\""),
            escaped: |c| c.has_nonce(&c.proj.join($target)),
        });
    };
}
git_config_names!(
    the_hooks_path_the_git_config_names_cannot_be_written,
    "[core]\n\thooksPath = githooks\n",
    "githooks/pre-commit"
);
git_config_names!(
    a_config_the_git_config_includes_cannot_be_written,
    "[include]\n\tpath = ../shared.gitconfig\n",
    "shared.gitconfig"
);

// Red-team 9, A9-2: a relative `core.hooksPath` in the user's own ~/.gitconfig makes the
// project's `.githooks/` its hooks: one the session adds runs at the host's next commit.
probe!(the_hooks_path_the_users_git_config_names_does_not_stay {
    setup: |c| {
        real_repo(c);
        c.write(&c.home(".gitconfig"), "[core]\n\thooksPath = .githooks\n");
    },
    inside: r#"mkdir -p .githooks && printf '#!/bin/sh\necho %s > %s/pwned\n' "$NONCE" "$OUT" > .githooks/pre-commit && chmod +x .githooks/pre-commit; true"#,
    escaped: |c| {
        git_ok(c, &c.proj, &["commit", "-q", "--allow-empty", "-m", "host"]);
        c.has_nonce(&c.out.join("pwned")) || c.proj.join(".githooks/pre-commit").exists()
    },
});

// Red-team 9b, A9-2: git resolves a relative hooksPath against the top of the worktree it
// runs in, so `../hooks` of the user's config names, for a repository the session nests at
// `pkg/nest`, the dir `pkg/hooks` inside the project; `../rhooks` of the project's own
// config names `t/rhooks` for a linked worktree the session adds at `t/wt`.
macro_rules! NESTED_HOOK {
    () => {
        r#"printf '#!/bin/sh\necho %s > %s/pwned\n' "$NONCE" "$OUT" > "$H/pre-commit" && chmod +x "$H/pre-commit"; true"#
    };
}

/// `git commit` on the host in `dir` (it may fail: the repository may be gone); then
/// whether the session's hook ran or is still there.
fn nested_hook_stayed(c: &Ctx, dir: &str, hooks: &str) -> bool {
    let _ = c
        .env
        .command("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(["commit", "-q", "--allow-empty", "-m", "host"])
        .current_dir(c.proj.join(dir))
        .output();
    c.has_nonce(&c.out.join("pwned")) || c.proj.join(hooks).join("pre-commit").exists()
}

/// The session nests a repository at `pkg/nest` (with `../hooks` in the user's git config)
/// and plants `pkg/hooks/pre-commit`; `$setup` makes the project around it.
macro_rules! nested_repo_hook {
    ($name:ident, $setup:expr) => {
        probe!($name {
            setup: |c| {
                $setup(c);
                c.write(&c.home(".gitconfig"), "[core]\n\thooksPath = ../hooks\n");
            },
            inside: concat!(
                "git init -q pkg/nest && git -C pkg/nest -c user.name=t -c user.email=t@t commit -q --allow-empty -m n --no-verify; H=pkg/hooks; mkdir -p $H; ",
                NESTED_HOOK!()
            ),
            escaped: |c| nested_hook_stayed(c, "pkg/nest", "pkg/hooks"),
        });
    };
}
nested_repo_hook!(
    a_hooks_dir_above_a_repository_the_session_nests_does_not_stay,
    real_repo
);
nested_repo_hook!(
    a_hooks_dir_above_a_repository_nested_in_a_plain_project_does_not_stay,
    |c: &mut Ctx| std::fs::remove_dir_all(c.proj.join(".git")).unwrap()
);
probe!(a_hooks_dir_above_a_linked_worktree_does_not_stay {
    setup: |c| {
        real_repo(c);
        git_ok(c, &c.proj, &["config", "core.hooksPath", "../rhooks"]);
        // Added on the host: this probe is about the hooks path; a `git worktree add`
        // inside is tests/useful.rs's (it once raced the live watch's look at the new
        // `commondir`, since fixed).
        git_ok(c, &c.proj, &["worktree", "add", "-q", "t/wt"]);
        c.env.chown_all(&c.proj);
    },
    inside: concat!("H=t/rhooks; mkdir -p $H; ", NESTED_HOOK!()),
    escaped: |c| nested_hook_stayed(c, "t/wt", "t/rhooks"),
});

probe!(a_dev_container_the_session_makes_does_not_stay {
    setup: |c| std::fs::remove_dir_all(c.proj.join(".devcontainer")).unwrap(),
    inside: r#"mkdir -p .devcontainer && echo "{\"initializeCommand\": \"echo $NONCE\"}" > .devcontainer/devcontainer.json"#,
    escaped: |c| c.proj.join(".devcontainer").exists(),
});

// Red-team 9, A9-5: Claude Code's error and MCP-server logs of every project, in the home
// outside ~/.claude; a session starts without them and what it writes there stays its own.
secret!(
    another_projects_claude_code_mcp_log_is_unreadable,
    ".cache/claude-cli-nodejs/-home-u-other/mcp-logs-db/2026-12-01.txt"
);
probe!(
    a_claude_code_log_the_session_writes_does_not_reach_the_host {
        inside: r#"d="$HOME/.cache/claude-cli-nodejs/-p/errors"; mkdir -p "$d" && echo "$NONCE" > "$d/e.txt"; true"#,
        escaped: |c| c.has_nonce(&c.home(".cache/claude-cli-nodejs/-p/errors/e.txt")),
    }
);

// F8: the host's per-session Claude state is not the session's to read.
secret!(
    another_sessions_shell_snapshot_is_unreadable,
    ".claude/shell-snapshots/snapshot-bash-1.sh"
);
secret!(
    another_sessions_env_is_unreadable,
    ".claude/session-env/0193a1b2-0000-7000-8000-000000000000/env"
);
// A3-4 (part): what was pasted into any past conversation, and plans that name no project.
secret!(
    text_pasted_into_another_conversation_is_unreadable,
    ".claude/paste-cache/0a1b2c3d.txt"
);
secret!(
    a_plan_of_another_conversation_is_unreadable,
    ".claude/plans/brave-otter.md"
);
// A3-9: more credential stores.
secret!(emacs_authinfo_is_unreadable, ".authinfo");
secret!(the_glab_config_is_unreadable, ".config/glab/config.yml");
secret!(a_dot_env_in_the_home_is_unreadable, ".env");

// F9: a hidden path the host creates during the session stays hidden.
probe!(
    a_credential_the_host_creates_during_the_session_is_unreadable {
        setup: |c| {
            // Once the session's sandbox exists (its record is there), the host writes the
            // secret, then a flag the probe waits for.
            let (store, secret, flag, n) = (
                c.env.sessions_dir(),
                c.home(".netrc"),
                c.out.join("created"),
                c.nonce.clone(),
            );
            std::thread::spawn(move || {
                let t = std::time::Instant::now();
                let made = |d: std::fs::ReadDir| d.flatten().any(|e| e.file_name() != "active");
                while !std::fs::read_dir(&store).is_ok_and(made) && t.elapsed().as_secs() < 20 {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                std::thread::sleep(std::time::Duration::from_millis(300));
                std::fs::write(&secret, format!("machine h password {n}\n")).unwrap();
                std::fs::write(&flag, "").unwrap();
            });
            c.vars
                .push(("SECRET".into(), c.home(".netrc").display().to_string()));
        },
        inside: r#"i=0; while [ ! -e "$OUT/created" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
[ -e "$OUT/created" ] || echo "the host never wrote the secret"
grep -q "$NONCE" "$SECRET" 2>/dev/null && echo ESCAPED; true"#,
    }
);

// F10: credential stores the default list lacked; credentials in URLs under strict.
secret!(
    podman_registry_auth_is_unreadable,
    ".config/containers/auth.json"
);
secret!(
    the_rclone_config_is_unreadable,
    ".config/rclone/rclone.conf"
);
secret!(
    a_minikube_client_key_is_unreadable,
    ".minikube/profiles/mk/client.key"
);
secret!(maven_server_passwords_are_unreadable, ".m2/settings.xml");
secret!(
    gradle_properties_are_unreadable,
    ".gradle/gradle.properties"
);
secret!(the_s3cmd_config_is_unreadable, ".s3cfg");
secret!(the_boto_config_is_unreadable, ".boto");
secret!(the_terraform_cli_config_is_unreadable, ".terraformrc");

probe!(credentials_in_urls_are_not_passed_under_strict {
    setup: |c| {
        let n = c.nonce.clone();
        for (k, v) in [
            ("DATABASE_URL", format!("postgres://app:{n}@db/app")),
            ("SENTRY_DSN", format!("https://{n}@o1.ingest.sentry.io/1")),
            (
                "UPSTREAM_MIRROR",
                format!("https://ci:{n}@mirror.example/simple"),
            ),
        ] {
            c.vars.push((k.into(), v));
        }
    },
    inside: r#"env | grep -v '^NONCE=' | grep -q "$NONCE" && echo ESCAPED; true"#,
    profiles: &["strict"],
});

// F13: a hostile layer cannot hide what it changed from `csbox diff`.
/// `csbox diff` of the newest session, as JSON (None: no JSON came out whole).
fn diff_json(c: &Ctx) -> Option<serde_json::Value> {
    let id = c.env.ls_json()[0]["id"].as_str()?.to_string();
    let out = c.env.run(&["diff", &id, "--json"]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn diff_lists(c: &Ctx, path: &str) -> bool {
    let want = format!("{}/{path}", c.env.home.canonicalize().unwrap().display());
    diff_json(c).is_some_and(|v| {
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == want.as_str())
    })
}

probe!(a_mode_000_dir_does_not_hide_its_changes_from_diff {
    inside: r#"mkdir -p "$HOME/box" && echo "$NONCE" > "$HOME/box/blob" && chmod 000 "$HOME/box"; true"#,
    escaped: |c| !diff_lists(c, "box"),
    profiles: &["default"],
});

probe!(a_name_that_is_not_utf8_keeps_diff_json_whole {
    inside: r#"touch "$HOME/$(printf 'csbox-\377')"; true"#,
    escaped: |c| !diff_lists(c, "csbox-\\xff"),
    profiles: &["default"],
});

/// A probe's context for a terminal probe (a real pty through tmux), its `.envrc` gone so
/// the session's is new; None (said why) without tmux.
fn terminal_ctx() -> Option<Ctx> {
    if !Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        cannot_run(
            "tmux is not installed (apt-get install tmux): the terminal probe needs a real pty",
        );
        return None;
    }
    let c = ctx();
    std::fs::remove_file(c.proj.join(".envrc")).unwrap();
    Some(c)
}

/// A shell line that runs `inner` in `sh -c` inside a default session.
fn csbox_sh(inner: &str) -> String {
    format!(
        "{} run -- sh -c \"{}\"",
        sh_quote(CSBOX),
        inner.replace('"', "\\\"")
    )
}

// F11: the session shares the caller's terminal; csbox puts its modes back and resets
// its character attributes before it speaks, so the session can neither hide csbox's
// warnings (SGR 8, concealed) nor leave the shell without echo.
#[test]
fn a_session_cannot_hide_csbox_warnings_or_leave_the_terminal_changed() {
    let Some(c) = terminal_ctx() else {
        return;
    };
    let spoil = r#"echo x > .envrc; stty -echo; printf '\033[8m'"#;
    let after = r#"echo "STTY=$(stty -a | tr ' ;' '\n\n' | grep -x -- '-*echo')"; echo DONE"#;
    let script = |pre: &str| format!("cd proj\n{pre}\n{after}\n");
    // The control, without csbox: the same command leaves the terminal concealed and
    // without echo, and the capture shows it (so the check below can fail).
    let control = c.home("control.sh");
    std::fs::write(
        &control,
        script(&format!("sh -c \"{}\"", spoil.replace('"', "\\\""))),
    )
    .unwrap();
    let probe = c.home("probe.sh");
    std::fs::write(&probe, script(&csbox_sh(spoil))).unwrap();
    c.env.chown_all(c.env.dir.path());
    let t = Tmux::start(&c.env, "ctl", "sh control.sh");
    let screen = t.wait_for("DONE");
    let attrs = t.screen_with_attributes();
    drop(t);
    assert!(
        screen.contains("STTY=-echo") && attrs.contains("\x1b[8mSTTY"),
        "the control shows nothing:\n{screen}\n{attrs:?}"
    );
    std::fs::remove_file(c.proj.join(".envrc")).unwrap();
    let t = Tmux::start(&c.env, "sgr", "sh probe.sh");
    let screen = t.wait_for("DONE");
    let attrs = t.screen_with_attributes();
    let warning = attrs
        .lines()
        .find(|l| l.contains("this session "))
        .unwrap_or_else(|| panic!("no warning:\n{screen}"));
    assert!(
        !warning.contains("\x1b[8m"),
        "the warning is concealed: {warning:?}"
    );
    assert!(
        screen.contains("STTY=echo"),
        "echo is still off after the session:\n{screen}"
    );
    assert!(!c.proj.join(".envrc").exists(), "moved out of the project");
}

// A7-10: a scroll region of two lines and the line-drawing charset left by the session
// would scroll csbox's warnings off the screen and turn their letters into glyphs.
#[test]
fn a_session_cannot_scroll_away_or_garble_csbox_warnings() {
    let Some(c) = terminal_ctx() else {
        return;
    };
    let spoil = r"printf '\033(0\033[1;2r'";
    // Upper case and digits are the same in the line-drawing set: the end is seen either way.
    let tail = "i=0; while [ $i -lt 5 ]; do echo FILLER$i; i=$((i+1)); done; echo DONE";
    // The control: without csbox, text printed after the same bytes is not readable.
    let control = c.home("control2.sh");
    std::fs::write(
        &control,
        format!("cd proj\n{spoil}\necho this session marker\n{tail}\n"),
    )
    .unwrap();
    let probe = c.home("probe2.sh");
    let run = csbox_sh(&format!("echo x > .envrc; {spoil}"));
    std::fs::write(&probe, format!("cd proj\n{run}\n{tail}\n")).unwrap();
    c.env.chown_all(c.env.dir.path());
    let t = Tmux::start(&c.env, "ctl2", "sh control2.sh");
    let screen = t.wait_for("DONE");
    drop(t);
    assert!(
        !screen.contains("this session marker"),
        "the control shows the text as it was:\n{screen}"
    );
    let t = Tmux::start(&c.env, "sgr2", "sh probe2.sh");
    let screen = t.wait_for("DONE");
    drop(t);
    assert!(
        screen.contains("while this session ran"),
        "the warning is off the screen or garbled:\n{screen}"
    );
    assert!(!c.proj.join(".envrc").exists(), "moved out of the project");
}

/// What a session made is said at exit and in `csbox show`, and the session that holds
/// it is kept even when it was to be removed (`--rm`), so the user can review it.
#[test]
fn what_a_session_made_is_reported_moved_and_kept_for_review() {
    let c = ctx();
    std::fs::remove_file(c.proj.join(".envrc")).unwrap();
    let out = run_in(&c, &["run", "--rm"], r#"echo "eval $NONCE" > .envrc"#, None);
    assert!(stdout(&out).contains(&format!("RAN={}", c.nonce)));
    let err = stderr(&out);
    assert!(
        err.contains("while this session ran")
            && err.contains(".envrc")
            && err.contains("moved it to"),
        "{err}"
    );
    assert!(err.contains("kept session"), "{err}");
    assert!(!c.proj.join(".envrc").exists());
    let v = c.env.ls_json();
    let id = v[0]["id"].as_str().unwrap().to_string();
    let show = stdout(&c.env.run(&["show", &id]));
    assert!(show.contains(".envrc (moved to "), "{show}");
    let moved = c.env.sessions_dir().join(&id).join("quarantine/0-.envrc");
    assert!(
        c.has_nonce(&moved),
        "kept for review at {}",
        moved.display()
    );
}

// A3-3: inside a bundle, `~/.claude/.claude.json` is the layer's `state/.claude.json`,
// which the next `runc run` of the same bundle binds from the host: the container must
// not be able to make it a link there (it is a mount point: EBUSY), and the bundle's
// poststop hook repairs one that is not a regular file anyway.
const REPLANT: &str = r#"if [ -L "$CLAUDE_CONFIG_DIR/.claude.json" ]; then echo "$NONCE" >> "$HOME/.claude.json"; echo wrote
else rm -f "$CLAUDE_CONFIG_DIR/.claude.json" 2>&1; ln -s "$VICTIM" "$CLAUDE_CONFIG_DIR/.claude.json" 2>&1; fi; true"#;

/// Export a bundle that replants its `.claude.json`, run it twice (with the mount point
/// at `~/.claude/.claude.json` and the poststop hook, or without them): whether the
/// victim file outside got the nonce, and the first run's output.
fn replant_escapes(rootless: bool, keep_bind: bool, keep_hook: bool) -> (bool, String) {
    let mut c = ctx();
    let victim = c.home(".bashrc");
    c.write(&victim, "orig\n");
    c.vars.push(("VICTIM".into(), victim.display().to_string()));
    let n = rand_u32();
    let bundle = c.env.dir.path().join(format!("bundle-{n}"));
    let b = bundle.display().to_string();
    let mut spec = vec!["spec", "--profile", "default", "--new", "--bundle", &b];
    if rootless {
        spec.push("--rootless");
    }
    let out = run_in(&c, &spec, REPLANT, None);
    assert!(out.status.success(), "csbox spec: {}", stderr(&out));
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    let at_own = |m: &serde_json::Value| {
        m["destination"]
            .as_str()
            .is_some_and(|d| d.ends_with("/.claude/.claude.json"))
    };
    assert!(
        cfg["mounts"].as_array().unwrap().iter().any(at_own),
        "the bundle binds ~/.claude/.claude.json"
    );
    if !keep_bind {
        cfg["mounts"].as_array_mut().unwrap().retain(|m| !at_own(m));
    }
    if !keep_hook {
        cfg.as_object_mut().unwrap().remove("hooks");
    }
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let mut first = String::new();
    for i in 0..2 {
        let mut cmd = runc_run(&c.env, &bundle, &format!("csbox-replant-{n}-{i}"), rootless);
        cmd.stdin(Stdio::null());
        probe_env(&c, &mut cmd);
        let out = cmd.output().unwrap();
        show(
            &format!("runc run {i} (rootless {rootless}, bind {keep_bind}, hook {keep_hook})"),
            &out,
        );
        assert!(
            stdout(&out).contains(&format!("RAN={}", c.nonce)),
            "the bundle did not run"
        );
        if i == 0 {
            first = stdout(&out);
        }
    }
    (c.has_nonce(&victim), first)
}

#[test]
fn a_bundle_cannot_replant_its_claude_json_for_the_next_run() {
    if runc().is_none() {
        cannot_run("runc is not installed (apt-get install runc)");
        return;
    }
    let mut modes = vec![true];
    if As::me().uid == 0 {
        modes.push(false);
    }
    for rootless in modes {
        let (escaped, first) = replant_escapes(rootless, true, true);
        assert!(!escaped, "ESCAPE (rootless {rootless})");
        assert!(
            first.contains("busy"),
            "unlinking the mount point gets EBUSY: {first}"
        );
        // The hook alone: the planted link is replaced before the next run.
        let (escaped, _) = replant_escapes(rootless, false, true);
        assert!(
            !escaped,
            "ESCAPE without the mount point (rootless {rootless})"
        );
    }
    assert!(
        replant_escapes(true, false, false).0,
        "the probe cannot report an escape: it would pass vacuously"
    );
}
