//! `csbox run`: resolve the profile, create or re-enter a session, build its plan, launch
//! and supervise it, and record how it ended.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::cli::RunArgs;
use crate::error::{Error, Result, EXIT_CSBOX, EXIT_NOT_FOUND};
use crate::fsutil::Durability;
use crate::paths::{find_on_path, Paths};
use crate::plan::{self, Plan, PlanInput, StateMode};
use crate::profile::{self, Isolation, Network, Profile};
use crate::sandbox::{self, Launch};
use crate::session::meta::{boot_id, format_time};
use crate::session::{ExitStatus, LiveSession, Metadata, SessionId, Store};

/// The real ~/.claude.json seeded into a new session is read at most this big.
const CLAUDE_JSON_LIMIT: u64 = 64 << 20;
/// Exit code when the wall-clock limit stopped the command, as timeout(1).
pub const EXIT_TIMED_OUT: i32 = 124;

pub fn run(args: RunArgs) -> Result<i32> {
    if std::env::var_os("CSBOX_SESSION_ID").is_some() {
        return Err(Error::Usage(
            "csbox run inside a csbox session is not supported: the session store is hidden in here".into(),
        ));
    }
    let r = Resolved::resolve(&args.profile, |p| apply_flags(p, &args), &args.command)?;
    let (paths, profile, argv, cwd) = (&r.paths, &r.profile, &r.argv, &r.cwd);
    let store = Store::new(paths.sessions_dir.clone());
    let session_id = args
        .session
        .as_deref()
        .map(|r| store.resolve(r))
        .transpose()?;
    let build_plan = |id: &str, dir: &Path, mode| r.plan(id, dir, mode);
    // The id is chosen before anything exists, so the one plan built here is both the
    // check (paths expand, the working dir fits the profile) made before a session is
    // created, and the plan that is launched: a new session is created under this id.
    let id = session_id.clone().unwrap_or_default();
    let mut plan = build_plan(
        id.as_str(),
        &store.dir.join(id.as_str()),
        profile.claude.state,
    )?;
    if args.dry_run {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan).expect("plan serialises")
        );
        return Ok(0);
    }
    let mut status_sink = args
        .json_status
        .as_deref()
        .map(StatusSink::open)
        .transpose()?
        .or_else(|| profile.json_status.then(StatusSink::stderr));
    if profile.isolation == Isolation::None {
        crate::warn!(
            "profile {:?}: NO SANDBOX. Only CLAUDE_CONFIG_DIR is per session, as with the old launcher; this session can \
read and write your real ~/.claude, your home and other sessions. Use it only where user namespaces are impossible (see `csbox doctor`).",
            profile.name
        );
    }

    prepare_claude_root(paths, &store)?;
    // Held shared until this function returns, so `csbox update` never installs under a
    // running session; waits (bounded) while an install runs.
    let update_hold = crate::update::hold_for_session(paths).unwrap_or_else(|e| {
        crate::warn!("{e}; this session does not hold off `csbox update`");
        None
    });
    let is_new = session_id.is_none();
    let mark_started = |m: &mut Metadata| {
        m.started = Some(SystemTime::now());
        m.ended = None;
        m.exit = None;
        m.timed_out = false;
        m.runs += 1;
        m.supervisor_pid = Some(std::process::id());
        m.boot_id = boot_id();
    };
    let session = match &session_id {
        Some(id) => {
            let mut s = store.enter(id)?;
            mark_started(&mut s.meta);
            s.meta.command = argv.clone();
            s.meta.cwd = cwd.clone();
            s.meta.profile = profile.name.clone();
            // Not synced: a crash during the session leaves it "never ended" (an orphan to
            // gc) whatever this record says.
            s.write_meta(Durability::Rename)?;
            s
        }
        None => {
            // A new session's record is written once, already marked started: it is
            // published under its id only after it is locked, so nobody sees it unlocked.
            r.new_session(
                &store,
                id.clone(),
                args.name.clone(),
                mark_started,
                Durability::Rename,
            )?
        }
    };
    session.link_active()?;
    debug_assert_eq!(session.dir, store.dir.join(id.as_str()));
    let id = id.to_string();
    let started = |sink: &mut Option<StatusSink>, pid: u32| {
        if let Some(s) = sink {
            s.line(serde_json::json!({"session": id, "pid": pid, "started": format_time(SystemTime::now())}));
        }
    };
    let result = if plan.isolation == Isolation::None {
        link_shared_config(paths, profile, &session.state_dir());
        let r = sandbox::launch_unsandboxed(&plan, |pid| started(&mut status_sink, pid));
        unlink_shared_config(paths, profile, &session.state_dir());
        r
    } else {
        let mut r = sandbox::launch(&plan, |pid| started(&mut status_sink, pid));
        if let Ok(Launch::SetupFailed(f)) = &r {
            if plan.state_mode == StateMode::Overlay && sandbox::is_overlay_refusal(f) {
                crate::warn!(
                    "overlayfs is refused here ({}): falling back to a fresh ~/.claude for this session, with your shared config read-only (see `csbox doctor`)",
                    f.errno
                );
                plan = build_plan(&id, &session.dir, StateMode::Fresh)?;
                r = sandbox::launch(&plan, |pid| started(&mut status_sink, pid));
            }
        }
        r
    };
    let rm = args.rm || (profile.remove_on_exit && !args.keep);
    let code = finish(session, is_new, rm, &plan, result, status_sink.as_mut());
    // The periodic update check starts once this session has let go of the update lock:
    // started earlier, it would find this very session running and never install.
    drop(update_hold);
    crate::update::maybe_spawn_background_check(paths);
    code
}

/// What `csbox run` decides before any session exists: the profile (with the command
/// line's overrides), the command and where it runs. `csbox spec` builds its plan from
/// the same value, so the exported sandbox is the one `run` would launch.
pub struct Resolved {
    pub paths: Paths,
    pub profile: Profile,
    pub argv: Vec<String>,
    pub exe: PathBuf,
    pub cwd: PathBuf,
    pub host_env: Vec<(String, String)>,
    pub uid: u32,
    pub gid: u32,
}

impl Resolved {
    /// Load the profile, apply `overrides`, check the store's place, resolve the command
    /// (default: claude). Nothing is created.
    pub fn resolve(
        profile_name: &str,
        overrides: impl FnOnce(&mut Profile) -> Result<()>,
        command: &[String],
    ) -> Result<Resolved> {
        let paths = Paths::from_env()?;
        // A bad profile or flag fails here, before anything is created.
        let mut profile = profile::load(profile_name, &paths.user_profiles_dir())?;
        overrides(&mut profile)?;
        if paths.store_inside_claude_root() && profile.isolation == Isolation::Namespaces {
            return Err(Error::Usage(format!(
                "SESSIONS_DIR ({}) lies inside CLAUDE_ROOT ({}): the session overlay uses CLAUDE_ROOT as its lower layer, \
and a layer inside another is refused by overlayfs; unset SESSIONS_DIR (default ~/.local/share/csbox/sessions) or point it elsewhere",
                paths.sessions_dir.display(),
                paths.claude_root.display()
            )));
        }
        let argv = if command.is_empty() {
            vec!["claude".to_string()]
        } else {
            command.to_vec()
        };
        let cwd = std::env::current_dir().map_err(|e| Error::io("getcwd", ".", e))?;
        let exe = resolve_command(&paths, &argv, command.is_empty(), &cwd)?;
        let host_env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Ok(Resolved {
            paths,
            profile,
            argv,
            exe,
            cwd,
            host_env,
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        })
    }

    /// The plan for session `id` (its directory `dir`) in the given state mode.
    pub fn plan(&self, id: &str, dir: &Path, mode: StateMode) -> Result<Plan> {
        plan::build(&PlanInput {
            paths: &self.paths,
            session_id: id,
            session_dir: dir,
            argv: self.argv.clone(),
            cwd: self.cwd.clone(),
            host_env: self.host_env.clone(),
            uid: self.uid,
            gid: self.gid,
            state_mode: mode,
            profile: &self.profile,
            exe: self.exe.clone(),
        })
        .map_err(Error::Usage)
    }

    /// A new session for this command, its `.claude.json` seeded from the user's own.
    /// `prepare_claude_root` must have run.
    pub fn new_session(
        &self,
        store: &Store,
        id: SessionId,
        name: Option<String>,
        edit: impl FnOnce(&mut Metadata),
        durability: Durability,
    ) -> Result<LiveSession> {
        let mut meta = Metadata::new(
            id,
            name,
            &self.profile.name,
            self.argv.clone(),
            self.cwd.clone(),
        );
        edit(&mut meta);
        store.create(meta, Some(&claude_json_seed(&self.paths)?), durability)
    }
}

/// `--bind`, `--ro-bind`, `--hide`, `--net`, `--env` override the profile for one run.
fn apply_flags(p: &mut Profile, a: &RunArgs) -> Result<()> {
    for b in a.bind.iter().chain(&a.ro_bind) {
        profile::expand::split_bind(b)
            .map_err(|why| Error::Usage(format!("--bind/--ro-bind {b:?}: {why}")))?;
    }
    for h in &a.hide {
        profile::expand::check_path_syntax(h)
            .map_err(|why| Error::Usage(format!("--hide {h:?}: {why}")))?;
    }
    p.bind.extend(a.bind.iter().cloned());
    p.ro_bind.extend(a.ro_bind.iter().cloned());
    p.hide.extend(a.hide.iter().cloned());
    match a.net.as_deref() {
        Some("none") => p.network = Network::None,
        Some("host") => p.network = Network::Host,
        _ => {}
    }
    for kv in &a.env {
        let (k, v) = kv
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| Error::Usage(format!("--env {kv:?}: expected K=V")))?;
        p.env.set.insert(k.to_string(), v.to_string());
    }
    Ok(())
}

/// Record how the session ended, drop its active link, and delete it if asked (or if a
/// brand-new session never got its sandbox).
fn finish(
    mut session: LiveSession,
    is_new: bool,
    rm: bool,
    plan: &Plan,
    result: Result<Launch>,
    sink: Option<&mut StatusSink>,
) -> Result<i32> {
    let (status, timed_out, err) = match result {
        Ok(Launch::Exited { status, timed_out }) => (status, timed_out, None),
        Ok(Launch::SetupFailed(f)) => (ExitStatus::Code(f.error.exit_code()), false, Some(f.error)),
        Err(e) => (
            ExitStatus::Code(e.exit_code().max(EXIT_CSBOX)),
            false,
            Some(e),
        ),
    };
    let ended = SystemTime::now();
    session.meta.ended = Some(ended);
    session.meta.exit = Some(status.clone());
    session.meta.timed_out = timed_out;
    session.unlink_active();
    if let Some(s) = sink {
        let mut v =
            serde_json::json!({"session": session.id.to_string(), "ended": format_time(ended)});
        match status {
            ExitStatus::Code(c) => v["exit_code"] = c.into(),
            ExitStatus::Signal(n) => v["signal"] = n.into(),
        }
        if timed_out {
            v["timed_out"] = true.into();
        }
        if let Some(e) = &err {
            v["error"] = e.to_string().into();
        }
        s.line(v);
    }
    let remove = rm || (is_new && err.is_some());
    if remove {
        session.remove()?;
    } else {
        // The end record is the one gc and `ls` go by: on disk before csbox returns, so a
        // crash afterwards cannot turn a finished session into an orphan that gc removes.
        session.write_meta(Durability::Full)?;
    }
    if let Some(e) = err {
        return Err(e);
    }
    if timed_out {
        eprintln!(
            "csbox: the wall-clock limit of {}s (profile {:?}) was reached: the command was stopped ({})",
            plan.timeout_secs.unwrap_or_default(),
            plan.profile,
            status.describe()
        );
        return Ok(EXIT_TIMED_OUT);
    }
    Ok(status.shell_code())
}

/// Where `--json-status` lines go: a file, an fd the caller opened, or stderr (ci).
struct StatusSink {
    out: File,
}

impl StatusSink {
    fn open(target: &str) -> Result<Self> {
        use std::os::fd::FromRawFd;
        if let Ok(fd) = target.parse::<i32>() {
            // SAFETY: F_GETFD only inspects the fd.
            if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                return Err(Error::Usage(format!(
                    "--json-status {fd}: fd {fd} is not open"
                )));
            }
            // Never inherited by the sandbox.
            // SAFETY: setting FD_CLOEXEC on an open fd, then owning it.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            return Ok(StatusSink {
                out: unsafe { File::from_raw_fd(fd) },
            });
        }
        let out =
            File::create(target).map_err(|e| Error::io("create --json-status file", target, e))?;
        Ok(StatusSink { out })
    }

    fn stderr() -> Self {
        use std::os::fd::FromRawFd;
        // SAFETY: a dup of stderr that we own.
        let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
        StatusSink {
            out: unsafe { File::from_raw_fd(fd) },
        }
    }

    fn line(&mut self, v: serde_json::Value) {
        let _ = writeln!(self.out, "{v}");
        let _ = self.out.flush();
    }
}

/// The compat profile has no overlay: link the shared config into the session's own dir
/// so settings, skills and the login are there (Claude Code replaces a linked
/// .credentials.json by a file when it refreshes, anthropics/claude-code#76561).
fn link_shared_config(paths: &Paths, profile: &Profile, state: &Path) {
    for (_, real, link) in shared_entries(paths, profile, state) {
        if real.exists() && link.symlink_metadata().is_err() {
            let _ = std::os::unix::fs::symlink(&real, &link);
        }
    }
}

/// Each shared `~/.claude` entry of the profile: (name, the real one, its place in `state`).
fn shared_entries<'a>(
    paths: &'a Paths,
    profile: &'a Profile,
    state: &'a Path,
) -> impl Iterator<Item = (&'a str, PathBuf, PathBuf)> + 'a {
    let c = &profile.claude;
    c.read_only.iter().chain(&c.read_write).map(move |name| {
        (
            name.as_str(),
            paths.claude_root.join(name),
            state.join(name),
        )
    })
}

/// After a compat session: take the links out again (absolute links in the layer would
/// point at themselves if the session were re-entered under a sandboxed profile), and
/// bring a login or token refresh back to the real `.credentials.json`. Claude Code
/// replaces the linked file by its own (tmp + rename) when it logs in or refreshes, so
/// without this the next session would start with the stale token. The session's files
/// are read without following links.
fn unlink_shared_config(paths: &Paths, profile: &Profile, state: &Path) {
    let Ok(dir) = crate::fsutil::open_dir_nofollow(state) else {
        return;
    };
    for (name, real, link) in shared_entries(paths, profile, state) {
        let Ok(md) = link.symlink_metadata() else {
            continue;
        };
        if md.file_type().is_symlink() {
            if std::fs::read_link(&link).is_ok_and(|t| t == real) {
                let _ = std::fs::remove_file(&link);
            }
        } else if name == ".credentials.json" && md.is_file() {
            match crate::fsutil::read_small_at(&dir, name, 1 << 20) {
                Ok(login) if !login.is_empty() => {
                    match crate::fsutil::atomic_write(
                        &paths.claude_root,
                        name,
                        &login,
                        0o600,
                        Durability::Full,
                    ) {
                        Ok(()) => {
                            let _ = std::fs::remove_file(&link);
                        }
                        Err(e) => {
                            crate::warn!("the session's login stays in {}: {e}", link.display());
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// The command must exist before a session is made for it.
fn resolve_command(paths: &Paths, argv: &[String], default: bool, cwd: &Path) -> Result<PathBuf> {
    if default {
        return paths.find_claude().ok_or_else(|| Error::Exec {
            msg: "claude is not installed (not on PATH, CLAUDE_BIN unset): install it with \
`npm install -g @anthropic-ai/claude-code`, set CLAUDE_BIN, or run another command: csbox run -- bash"
                .into(),
            code: EXIT_NOT_FOUND,
        });
    }
    let cmd = &argv[0];
    if cmd.contains('/') {
        let p = cwd.join(cmd);
        return if p.exists() {
            Ok(p)
        } else {
            Err(Error::Exec {
                msg: format!("{cmd}: no such file"),
                code: EXIT_NOT_FOUND,
            })
        };
    }
    find_on_path(cmd.as_ref(), paths.path_var.as_deref()).ok_or_else(|| Error::Exec {
        msg: format!("{cmd}: command not found on PATH"),
        code: EXIT_NOT_FOUND,
    })
}

/// Make sure the mount points the plan needs exist in the real config: CLAUDE_ROOT itself,
/// `.credentials.json` (the shared login: a login inside any session must reach the
/// others, so the file has to exist to be bound), `~/.claude.json` (bound over by the
/// session's copy), and the `~/.claude/sessions` link to the store.
pub(crate) fn prepare_claude_root(paths: &Paths, store: &Store) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !paths.claude_root.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&paths.claude_root)
            .map_err(|e| Error::io("create", &paths.claude_root, e))?;
    }
    // The store itself is made by `Store::create` (a re-entered session's store exists).
    ensure_file(&paths.claude_root.join(".credentials.json"), b"{}\n")?;
    ensure_file(&paths.claude_json, b"{}\n")?;
    let link = paths.legacy_sessions_link();
    if link.symlink_metadata().is_err() {
        if let Err(e) = std::os::unix::fs::symlink(&store.dir, &link) {
            crate::debug!("could not create {}: {e}", link.display());
        }
    }
    Ok(())
}

fn ensure_file(p: &Path, content: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
    {
        Ok(mut f) => f.write_all(content).map_err(|e| Error::io("write", p, e)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io("create", p, e)),
    }
}

/// What a new session's `.claude.json` starts as: the user's own, so onboarding and trust
/// answers carry over.
fn claude_json_seed(paths: &Paths) -> Result<Vec<u8>> {
    use std::io::Read;
    let p = &paths.claude_json;
    match File::open(p) {
        Ok(f) => {
            let mut buf = Vec::new();
            f.take(CLAUDE_JSON_LIMIT)
                .read_to_end(&mut buf)
                .map_err(|e| Error::io("read", p, e))?;
            Ok(buf)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(b"{}\n".to_vec()),
        Err(e) => Err(Error::io("read", p, e)),
    }
}
