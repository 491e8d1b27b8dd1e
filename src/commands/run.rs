//! `csbox run`: resolve the profile, create or re-enter a session, build its plan, launch
//! and supervise it, and record how it ended.

use std::fs::File;
use std::io::Write;
use std::time::SystemTime;

use clap::Args;

use super::sandbox::SandboxArgs;
use crate::error::Error as BaseError;
use crate::exit::{Error, Result, EXIT_CSBOX};
use crate::fsutil::Durability;
use crate::plan::{Plan, StateMode};
use crate::profile::Isolation;
use crate::resolve::Resolved;
use crate::sandbox::{self, Launch};
use crate::session::meta::format_time;
use crate::session::setup::{new_session, prepare_claude_root};
use crate::session::{ExitStatus, LiveSession, Metadata, SessionId, Store};

/// Exit code when the wall-clock limit stopped the command, as timeout(1).
pub const EXIT_TIMED_OUT: i32 = 124;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  csbox run\n  csbox run --name review -- claude --resume\n  csbox run --session 0193a1b2      re-enter an inactive session with its state\n  csbox run --rm -- bash -c 'make test'\n  csbox run --dry-run               print the sandbox plan as JSON\n  csbox run --profile strict        home hidden but the project, no network\n  csbox run --profile ci --json-status fd:3 -- claude -p 'fix the build' 3>status.jsonl\n  csbox run --ro-bind ~/datasets --net none -- bash"
)]
pub struct RunArgs {
    /// A human label for the new session
    #[arg(long)]
    pub name: Option<String>,
    /// Re-enter an existing, inactive session (id, id prefix or name)
    #[arg(long, conflicts_with = "name", add = clap_complete::engine::ArgValueCandidates::new(super::complete::sessions))]
    pub session: Option<String>,
    /// Delete the session when it exits (a new one: an existing session is removed with `csbox rm`)
    #[arg(long)]
    pub rm: bool,
    /// Resume a Claude Code conversation: re-enter the session whose layer holds it or, once it is merged into ~/.claude, start a new one; arguments after -- go to claude
    #[arg(long, value_name = "UUID", conflicts_with = "session")]
    pub resume: Option<String>,
    /// Print the sandbox plan as JSON and run nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// Write {session,pid,started} at start and {exit_code|signal,ended} at end as JSON lines to FILE or to the open fd N (never inherited by the sandbox, so the command cannot forge a line)
    #[arg(long, value_name = "FILE|fd:N")]
    pub json_status: Option<String>,
    /// Keep the session at exit even if the profile removes it (ci)
    #[arg(long, conflicts_with = "rm")]
    pub keep: bool,
    /// The command and its arguments (default: claude)
    #[arg(last = true)]
    pub command: Vec<String>,
}

pub fn run(mut args: RunArgs) -> Result<i32> {
    if std::env::var_os("CSBOX_SESSION_ID").is_some() {
        return Err(BaseError::Usage(
            "csbox run inside a csbox session is not supported: the session store is hidden in here".into(),
        )
        .into());
    }
    if let Some(n) = &args.name {
        crate::session::id::validate_name(n)?;
    }
    if let (true, Some(s)) = (args.rm, &args.session) {
        return Err(BaseError::Usage(format!(
            "--rm with --session would delete session {s} and all its state when it exits: run it without --rm, and remove it with `csbox rm {s}` when you are done"
        ))
        .into());
    }
    if let Some(uuid) = args.resume.clone() {
        resume(&mut args, &uuid)?;
    }
    let deferred = crate::sandbox::supervise::Deferred::block();
    // An existing session is never removed at exit (a profile's removeOnExit included).
    let remove = match (args.rm, args.keep || args.session.is_some()) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    let r = Resolved::resolve(&args.sandbox.request(&args.command, remove)?)?;
    crate::trace::mark("resolve (profile, flags, host facts)");
    let store = Store::new(r.paths.sessions_dir.clone());
    let existing = args
        .session
        .as_deref()
        .map(|s| store.resolve(s))
        .transpose()?;
    // The id is chosen before anything exists, so the one plan built here is both the
    // check (paths expand, the working dir fits the profile) made before a session is
    // created, and the plan that is launched: a new session is created under this id.
    let id = existing.clone().unwrap_or_default();
    // A dry run of a new session names none: its id would never exist.
    let plan_id = match (&existing, args.dry_run) {
        (None, true) => crate::session::id::PREVIEW_ID,
        _ => id.as_str(),
    };
    let mut plan = r.plan(plan_id, &store.dir.join(plan_id), r.profile.claude.state)?;
    if args.dry_run {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan).expect("plan serialises")
        );
        return Ok(0);
    }
    // Status goes only where the caller says: stderr is the command's too, and a line it
    // printed there would read as csbox's.
    let mut sink = args
        .json_status
        .as_deref()
        .map(StatusSink::open)
        .transpose()?;
    if r.profile.json_status && sink.is_none() {
        crate::warn!(
            "profile {:?} asks for JSON status, which no longer goes to stderr (the command shares it and could forge a line): add --json-status FILE or --json-status fd:N",
            r.profile.name
        );
    }
    if !plan.sandboxed() {
        crate::warn!(
            "profile {:?}: NO SANDBOX. Only CLAUDE_CONFIG_DIR is per session, as with the old launcher; this session can \
read and write your real ~/.claude, your home and other sessions. Use it only where user namespaces are impossible (see `csbox doctor`).",
            plan.profile
        );
    }
    deferred.die_if_pending();
    prepare_claude_root(&r.paths, &store)?;
    // A background update check that keeps failing says so once per interactive start
    // (detached, it has no terminal of its own).
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        if let Some(notice) = crate::update::background::failure_notice(&r.paths) {
            crate::warn!("{notice}");
        }
    }
    // Held shared until this function returns, so `csbox update` never installs under a
    // running session; waits (bounded) while an install runs.
    let update_hold = crate::update::hold_for_session(&r.paths).unwrap_or_else(|e| {
        crate::warn!("{e}; this session does not hold off `csbox update`");
        None
    });
    let is_new = existing.is_none();
    let session = open_session(&r, &store, existing, id, args.name.clone())?;
    session.link_active()?;
    crate::trace::mark("session (create or enter, lock, active link)");
    crate::fault::point("run:linked");
    let terminal = super::terminal::Saved::save();
    let mut running = Running::default();
    let result = launch(&r, &mut plan, &session, &mut sink, &mut running);
    let live = running.stop();
    crate::trace::mark("stop (the project's watch, the control socket)");
    terminal.restore();
    let code = finish(&r, session, is_new, &plan, result, sink.as_mut(), live);
    crate::trace::mark("end record, teardown");
    let stages: Vec<&'static str> = crate::sandbox::child::RECIPE
        .iter()
        .map(|s| s.name())
        .collect();
    crate::trace::report(&stages);
    // The periodic update check starts once this session has let go of the update lock:
    // started earlier, it would find this very session running and never install.
    drop(update_hold);
    crate::update::maybe_spawn_background_check(&r.paths);
    code
}

/// `--resume UUID`: the session to re-enter (or none: a new one) and claude's arguments.
fn resume(args: &mut RunArgs, uuid: &str) -> Result<()> {
    use super::lifecycle::{resume_target, ResumeIn};
    let paths = crate::paths::Paths::from_env()?;
    let cwd = std::env::current_dir().map_err(|e| BaseError::io("getcwd", ".", e))?;
    if let ResumeIn::Session(id) = resume_target(&paths, uuid, &cwd)? {
        if args.name.is_some() {
            return Err(BaseError::Usage(format!(
                "--name: conversation {uuid} resumes in session {id}, which keeps its name"
            ))
            .into());
        }
        args.session = Some(id.to_string());
    }
    let claude = paths
        .find_claude()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| "claude".into());
    let mut cmd = vec![claude, "--resume".to_string(), uuid.to_string()];
    cmd.append(&mut args.command);
    args.command = cmd;
    Ok(())
}

fn mark_started(m: &mut Metadata) {
    m.mark_started(SystemTime::now(), Some(std::process::id()));
}

/// Re-enter `existing`, or create the session `id`, marked started.
fn open_session(
    r: &Resolved,
    store: &Store,
    existing: Option<SessionId>,
    id: SessionId,
    name: Option<String>,
) -> crate::error::Result<LiveSession> {
    match existing {
        Some(id) => {
            let mut s = store.enter(&id)?;
            mark_started(&mut s.meta);
            s.meta.command = r.argv.clone();
            s.meta.cwd = r.cwd.clone();
            s.meta.profile = r.profile.name.clone();
            // Not synced: a crash during the session leaves it "never ended" (an orphan to
            // gc) whatever this record says.
            s.write_meta(Durability::Rename)?;
            Ok(s)
        }
        None => {
            // A new session's record is written once, already marked started: it is
            // published under its id only after it is locked, so nobody sees it unlocked.
            let mut meta = Metadata::new(id, name, &r.profile.name, r.argv.clone(), r.cwd.clone());
            mark_started(&mut meta);
            new_session(&r.paths, store, meta, Durability::Rename)
        }
    }
}

/// What serves a running session: its control socket (enter, stop) and the watch of its
/// project's code-steering paths.
#[derive(Default)]
struct Running {
    server: Option<crate::session::control::Server>,
    watch: Option<crate::session::livewatch::Watch>,
}

impl Running {
    /// The command has ended: stop both; what the watch moved while it ran.
    fn stop(self) -> Vec<crate::session::quarantine::Quarantined> {
        if let Some(s) = self.server {
            s.stop();
        }
        crate::trace::mark("stop the control socket");
        self.watch.map(|w| w.stop()).unwrap_or_default()
    }
}

/// Launch the plan; if the kernel refuses the `~/.claude` overlay, fall back once to the
/// fresh-state mode (the plan is rebuilt for it, so `plan` stays what ran).
fn launch(
    r: &Resolved,
    plan: &mut Plan,
    session: &LiveSession,
    sink: &mut Option<StatusSink>,
    running: &mut Running,
) -> Result<Launch> {
    let id = session.id.to_string();
    test_patch(plan)?;
    // Notes help a person at a terminal; a script reads exit codes and --json-status.
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        for note in &plan.notes {
            eprintln!("csbox: note: {note}");
        }
    }
    let seed = || crate::session::setup::claude_json_seed(&r.paths, &r.cwd);
    crate::session::layers::prepare(session.into(), &plan.session_sources(), seed)?;
    crate::session::masks::prepare(session.dir_fd(), &session.dir, plan)?;
    // Removed when this returns: the sandbox is gone by then.
    let mut private = vec![crate::session::masks::build_private(plan, &id)?];
    crate::trace::mark("layers (checked beneath the session dir)");
    crate::fault::point("run:prepared");
    let mut started = |st: sandbox::Started| {
        if let Some(s) = sink.as_mut() {
            s.line(serde_json::json!({"session": id, "pid": st.pid, "started": format_time(SystemTime::now())}));
        }
        // Started after the clone, never before: the sandbox's pid 1 is a raw clone of
        // this process, and a thread holding the allocator's lock at that moment would
        // leave pid 1 waiting on it forever (it did: tests/escape.rs hung).
        if st.plan.sandboxed() {
            running.watch = st.plan.view.project.as_ref().and_then(|p| {
                crate::session::livewatch::Watch::start(
                    p,
                    session.dir_fd(),
                    &session.dir,
                    session.id.as_str(),
                    session.meta.started,
                )
            });
        }
        if let Some(w) = &running.watch {
            w.arm(st.pid as libc::pid_t);
        }
        running.server = super::lifecycle::serve(session, st);
        crate::fault::point("run:started");
    };
    if plan.isolation == Isolation::None {
        return Ok(sandbox::launch_unsandboxed(plan, &mut started)?);
    }
    // Without unprivileged overlayfs (Linux < 5.11), or where it refuses a home whose
    // layers overlap (an upper dir inside its own lower dir), fall back one overlay at a
    // time: the home to read-only with private caches, ~/.claude to a fresh dir.
    let mut fallback = Fallback {
        state: plan.state_mode,
        home_read_only: false,
    };
    loop {
        let result = sandbox::launch(plan, &mut started)?;
        let Launch::SetupFailed(f) = &result else {
            return Ok(result);
        };
        let Some(dst) = f.refused_overlay() else {
            return Ok(result);
        };
        if dst == plan.view.home && !fallback.home_read_only {
            crate::warn!(
                "overlayfs is refused on your home here ({f}): this session's home is read-only instead, with private cache dirs (see `csbox doctor`)"
            );
            fallback.home_read_only = true;
        } else if fallback.state == StateMode::Overlay {
            crate::warn!(
                "overlayfs is refused here ({f}): falling back to a fresh ~/.claude for this session, with your shared config read-only (see `csbox doctor`)"
            );
            fallback.state = StateMode::Fresh;
        } else {
            return Ok(result);
        }
        *plan = r.plan_with(&id, &session.dir, fallback.state, fallback.home_read_only)?;
        crate::session::layers::prepare(session.into(), &plan.session_sources(), seed)?;
        crate::session::masks::prepare(session.dir_fd(), &session.dir, plan)?;
        test_patch(plan)?;
        private.clear();
        private.push(crate::session::masks::build_private(plan, &id)?);
    }
}

/// What a launch has fallen back to so far.
struct Fallback {
    state: StateMode,
    home_read_only: bool,
}

/// Test builds only: `CSBOX_TEST_PLAN_PATCH` is a JSON merge patch (RFC 7386) applied to
/// the plan just before launch, so a test can show the launcher follows a field the
/// built-in profiles never vary (no_new_privs, die_with_parent, a deliberately writable
/// bind). Release builds have no such hook.
fn test_patch(plan: &mut Plan) -> crate::error::Result<()> {
    if !cfg!(debug_assertions) {
        return Ok(());
    }
    let Some(patch) = std::env::var_os("CSBOX_TEST_PLAN_PATCH") else {
        return Ok(());
    };
    fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
        match patch {
            serde_json::Value::Object(p) => {
                if !target.is_object() {
                    *target = serde_json::json!({});
                }
                let t = target.as_object_mut().expect("an object");
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                    }
                }
            }
            other => *target = other.clone(),
        }
    }
    let bad = |e: serde_json::Error| BaseError::Usage(format!("CSBOX_TEST_PLAN_PATCH: {e}"));
    let patch: serde_json::Value = serde_json::from_str(&patch.to_string_lossy()).map_err(bad)?;
    let mut v = serde_json::to_value(&*plan).map_err(bad)?;
    merge(&mut v, &patch);
    *plan = serde_json::from_value(v).map_err(bad)?;
    Ok(())
}

/// Record how the session ended, drop its active link, and delete it if the plan says
/// so (or if a brand-new session never got its sandbox).
fn finish(
    r: &Resolved,
    mut session: LiveSession,
    is_new: bool,
    plan: &Plan,
    result: Result<Launch>,
    sink: Option<&mut StatusSink>,
    live: Vec<crate::session::quarantine::Quarantined>,
) -> Result<i32> {
    crate::fault::point("end:exited");
    let ran = matches!(result, Ok(Launch::Exited { .. }));
    let (status, timed_out, err) = match result {
        Ok(Launch::Exited { status, timed_out }) => (status, timed_out, None),
        Ok(Launch::SetupFailed(f)) => {
            let e = Error::from(f);
            (ExitStatus::Code(e.exit_code()), false, Some(e))
        }
        Err(e) => (
            ExitStatus::Code(e.exit_code().max(EXIT_CSBOX)),
            false,
            Some(e),
        ),
    };
    let ended = SystemTime::now();
    let quarantined = quarantine(&mut session, plan, live);
    crate::trace::mark("quarantine (watched paths, nested repositories)");
    session.meta.ended = Some(ended);
    session.meta.exit = Some(status.clone());
    session.meta.timed_out = timed_out;
    session.unlink_active();
    crate::fault::point("end:unlinked");
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
    // Merged before the end record is written, so the one write records both.
    crate::trace::mark("end of the run recorded (meta, active link, status line)");
    if ran {
        let rec = super::lifecycle::merge_at_end(&r.paths, &session, &r.profile);
        session.meta.merge = rec.or(session.meta.merge.take());
        crate::trace::mark("merge-back");
    }
    // What was moved out of the project lives in the session dir: kept for review; and
    // a merge a bound stopped has the rest to do (red-team 4, A4-6).
    let unmerged = session.meta.merge.as_ref().is_some_and(|m| m.incomplete);
    let removed =
        (plan.remove_on_exit && quarantined == 0 && !unmerged) || (is_new && err.is_some());
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stdin())
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let end_line =
        (ran && interactive).then(|| super::lifecycle::end_line(&session, &status, removed));
    if removed {
        session.remove()?;
    } else {
        if plan.remove_on_exit {
            let why = if quarantined > 0 {
                "it holds what was moved out of the project"
            } else {
                "its merge-back stopped at a bound, and `csbox merge` does the rest"
            };
            eprintln!(
                "csbox: kept session {} although it was to be removed: {why} (`csbox show {}`)",
                session.id,
                session.id.short()
            );
        }
        if let Err(e) = session.write_meta(Durability::Rename) {
            // Not synced: lost on power loss, "exited" becomes "crashed", which gc keeps and
            // ages the same way. Not written at all (ENOSPC, EIO): the same, and the
            // command's own status still comes back, with this one warning.
            crate::warn!(
                "session {}: its end record could not be written ({e}); it is kept and listed as crashed, its work is in {}",
                session.id,
                session.dir.display()
            );
        }
    }
    crate::fault::point("end:recorded");
    if let Some(l) = end_line {
        eprintln!("{l}");
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

/// Move what the session made among the project's code-steering files into the
/// session dir, say so, and record it; the number moved.
/// What the session made among its project's code-steering paths: what the watch moved
/// while it ran, and the exit sweep's; the number moved.
fn quarantine(
    session: &mut LiveSession,
    plan: &Plan,
    live: Vec<crate::session::quarantine::Quarantined>,
) -> usize {
    let live_moved = crate::session::quarantine::record(session, live);
    match &plan.view.project {
        Some(proj) => {
            let since = session.meta.started;
            live_moved + crate::session::quarantine::sweep_session(session, proj, since)
        }
        None => live_moved,
    }
}

/// Where `--json-status` lines go: a file, an fd the caller opened, or stderr (ci).
struct StatusSink {
    out: File,
}

impl StatusSink {
    /// `fd:N` (or a bare N): an fd the caller opened; anything else: a file, created.
    fn open(target: &str) -> crate::error::Result<Self> {
        use std::os::fd::FromRawFd;
        let fd = target.strip_prefix("fd:").unwrap_or(target);
        if let Ok(fd) = fd.parse::<i32>() {
            // SAFETY: F_GETFD only inspects the fd.
            if fd <= 2 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                let why = if (0..=2).contains(&fd) {
                    "is the command's stdin, stdout or stderr, which it could write a forged line to"
                } else {
                    "is not open"
                };
                return Err(BaseError::Usage(format!(
                    "--json-status {target}: fd {fd} {why}; open one for csbox, e.g. `--json-status fd:3 3>status.jsonl`"
                )));
            }
            // Never inherited by the sandbox.
            // SAFETY: setting FD_CLOEXEC on an open fd, then owning it (the caller gave
            // it to us for this purpose only).
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            return Ok(StatusSink {
                // SAFETY: as above.
                out: unsafe { File::from_raw_fd(fd) },
            });
        }
        let out = File::create(target)
            .map_err(|e| BaseError::io("create --json-status file", target, e))?;
        Ok(StatusSink { out })
    }

    fn line(&mut self, v: serde_json::Value) {
        let _ = writeln!(self.out, "{v}");
        let _ = self.out.flush();
    }
}
