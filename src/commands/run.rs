//! `csbox run`: create or re-enter a session, build its plan, launch and supervise it, and
//! record how it ended.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::cli::RunArgs;
use crate::error::{Error, Result, EXIT_CSBOX, EXIT_NOT_FOUND};
use crate::paths::{find_on_path, Paths};
use crate::plan::{self, Plan, PlanInput, StateMode};
use crate::sandbox::{self, Launch};
use crate::session::meta::boot_id;
use crate::session::{ExitStatus, LiveSession, Metadata, SessionId, Store};

/// The real ~/.claude.json seeded into a new session is read at most this big.
const CLAUDE_JSON_LIMIT: u64 = 64 << 20;

pub fn run(args: RunArgs) -> Result<i32> {
    if std::env::var_os("CSBOX_SESSION_ID").is_some() {
        return Err(Error::Usage(
            "csbox run inside a csbox session is not supported: the session store is hidden in here".into(),
        ));
    }
    let paths = Paths::from_env()?;
    if args.profile != "default" {
        return Err(Error::Usage(format!(
            "unknown profile {:?}: only \"default\" exists so far",
            args.profile
        )));
    }
    if paths.store_inside_claude_root() {
        return Err(Error::Usage(format!(
            "SESSIONS_DIR ({}) lies inside CLAUDE_ROOT ({}): the session overlay uses CLAUDE_ROOT as its lower layer, \
and a layer inside another is refused by overlayfs; unset SESSIONS_DIR (default ~/.local/share/csbox/sessions) or point it elsewhere",
            paths.sessions_dir.display(),
            paths.claude_root.display()
        )));
    }
    let store = Store::new(paths.sessions_dir.clone());
    let session_id = args
        .session
        .as_deref()
        .map(|r| store.resolve(r))
        .transpose()?;

    let argv = if args.command.is_empty() {
        vec!["claude".to_string()]
    } else {
        args.command.clone()
    };
    let cwd = std::env::current_dir().map_err(|e| Error::io("getcwd", ".", e))?;
    let exe = resolve_command(&paths, &argv, args.command.is_empty(), &cwd)?;
    let host_env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let build_plan = |id: &str, dir: &Path, mode| {
        plan::build(&PlanInput {
            paths: &paths,
            session_id: id,
            session_dir: dir,
            argv: argv.clone(),
            cwd: cwd.clone(),
            host_env: host_env.clone(),
            uid,
            gid,
            state_mode: mode,
        })
    };

    if args.dry_run {
        let id = session_id.clone().unwrap_or_default();
        let plan = build_plan(
            id.as_str(),
            &store.dir.join(id.as_str()),
            StateMode::Overlay,
        );
        println!(
            "{}",
            serde_json::to_string_pretty(&plan).expect("plan serialises")
        );
        return Ok(0);
    }

    prepare_claude_root(&paths, &store)?;
    // Held shared until this function returns, so `csbox update` never installs under a
    // running session; waits (bounded) while an install runs.
    let update_hold = crate::update::hold_for_session(&paths).unwrap_or_else(|e| {
        crate::warn!("{e}; this session does not hold off `csbox update`");
        None
    });
    let is_new = session_id.is_none();
    let mut session = match &session_id {
        Some(id) => store.enter(id)?,
        None => {
            let meta = Metadata::new(
                SessionId::new(),
                args.name.clone(),
                &args.profile,
                argv.clone(),
                cwd.clone(),
            );
            store.create(meta, Some(&claude_json_seed(&paths)?))?
        }
    };
    session.meta.started = Some(SystemTime::now());
    session.meta.ended = None;
    session.meta.exit = None;
    session.meta.runs += 1;
    session.meta.supervisor_pid = Some(std::process::id());
    session.meta.boot_id = boot_id();
    if !is_new {
        session.meta.command = argv.clone();
        session.meta.cwd = cwd.clone();
    }
    session.write_meta()?;
    session.link_active()?;

    let id = session.id.to_string();
    let mut plan = build_plan(&id, &session.dir, StateMode::Overlay);
    let mut result = sandbox::launch(&plan, &exe, |_| {});
    if let Ok(Launch::SetupFailed(f)) = &result {
        if sandbox::is_overlay_refusal(f, &plan) {
            crate::warn!(
                "overlayfs is refused here ({}): falling back to a fresh ~/.claude for this session, with your shared config read-only (see `csbox doctor`)",
                f.errno
            );
            plan = build_plan(&id, &session.dir, StateMode::Fresh);
            result = sandbox::launch(&plan, &exe, |_| {});
        }
    }
    let code = finish(session, is_new, args.rm, &plan, result);
    // The periodic update check starts once this session has let go of the update lock:
    // started earlier, it would find this very session running and never install.
    drop(update_hold);
    crate::update::maybe_spawn_background_check(&paths);
    code
}

/// Record how the session ended, drop its active link, and delete it if asked (or if a
/// brand-new session never got its sandbox).
fn finish(
    mut session: LiveSession,
    is_new: bool,
    rm: bool,
    plan: &Plan,
    result: Result<Launch>,
) -> Result<i32> {
    let _ = plan;
    let (status, err) = match result {
        Ok(Launch::Exited(st)) => (st, None),
        Ok(Launch::SetupFailed(f)) => {
            let code = f.error.exit_code();
            (ExitStatus::Code(code), Some(f.error))
        }
        Err(e) => (ExitStatus::Code(EXIT_CSBOX), Some(e)),
    };
    session.meta.ended = Some(SystemTime::now());
    session.meta.exit = Some(status.clone());
    session.unlink_active();
    let remove = rm || (is_new && err.is_some());
    if remove {
        session.remove()?;
    } else {
        session.write_meta()?;
    }
    match err {
        Some(e) => Err(e),
        None => Ok(status.shell_code()),
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
fn prepare_claude_root(paths: &Paths, store: &Store) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !paths.claude_root.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&paths.claude_root)
            .map_err(|e| Error::io("create", &paths.claude_root, e))?;
    }
    store.ensure()?;
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
    use std::io::Write;
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
    match std::fs::File::open(p) {
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
