//! `csbox update`: install a newer Claude Code from the npm registry, only while no
//! session runs, outside every sandbox.
//!
//! Session safety is one flock on `CLAUDE_ROOT/update.lock`: every session holds it
//! shared for its whole life ([`hold_for_session`]); the installer takes it exclusive and
//! non-blocking, so "no session runs" and "nothing can start" are one atomic fact for as
//! long as the install lasts. Claude Code's own updater has no such lock across config
//! dirs, and two sessions have deleted a global install between them
//! (anthropics/claude-code#93197, #7373); the old `check-update.sh` used pgrep, which
//! leaves a window between the check and the install.

pub mod background;
pub mod install;
pub mod journal;
pub mod registry;
pub mod version;

use std::io::{BufRead, IsTerminal, Write};
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use semver::Version;

use crate::error::{Error, Result};
use crate::paths::Paths;
use crate::session::lock::lock_path;

pub use background::maybe_spawn_background_check;
use install::Method;
use journal::{Attempt, Outcome};

/// How long a starting session waits for an install to finish before starting anyway.
pub const SESSION_WAIT: Duration = Duration::from_secs(60);

/// `csbox update --check` exits with this when a newer version is available; 0 means up
/// to date and 125 that the check failed. A script can tell the three apart without
/// parsing output, as with cargo-nextest's `self update --check` (which uses 80).
pub const EXIT_UPDATE_AVAILABLE: i32 = 10;

/// Take the shared lock on `update.lock` for a session's whole life (keep the fd; it is
/// O_CLOEXEC, so the sandboxed command does not inherit it). While an install holds the
/// lock, wait up to [`SESSION_WAIT`], then start anyway with a warning (`Ok(None)`).
///
/// Call [`maybe_spawn_background_check`] after this fd is dropped (when the session
/// ends): a check started while the session's own shared lock is held always finds a
/// session running and skips the install.
pub fn hold_for_session(paths: &Paths) -> Result<Option<OwnedFd>> {
    hold_for_session_within(paths, SESSION_WAIT)
}

pub fn hold_for_session_within(paths: &Paths, max_wait: Duration) -> Result<Option<OwnedFd>> {
    let path = paths.update_lock();
    let start = Instant::now();
    let mut told = false;
    loop {
        match lock_path(&path, false, true) {
            Ok(Some(fd)) => return Ok(Some(fd)),
            Ok(None) => {}
            // A read-only CLAUDE_ROOT must not stop sessions; it only stops coordination.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EROFS | libc::EACCES | libc::EPERM)
                ) =>
            {
                crate::warn!(
                    "open {}: {e}; this session does not hold off `csbox update`",
                    path.display()
                );
                return Ok(None);
            }
            Err(e) => {
                return Err(Error::io("open", &path, e)
                    .hint("CLAUDE_ROOT must be an existing directory (your Claude config dir)"))
            }
        }
        if start.elapsed() >= max_wait {
            crate::warn!(
                "a Claude Code update still runs after {} s; starting anyway (see {})",
                max_wait.as_secs(),
                paths.update_log().display()
            );
            return Ok(None);
        }
        if !told {
            eprintln!(
                "csbox: a Claude Code update is being installed; waiting up to {} s for it to finish",
                max_wait.as_secs()
            );
            told = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the environment says about the registry, proxies and trusted CAs.
#[derive(Debug, Default, Clone)]
pub struct UpdateEnv {
    pub csbox_registry: Option<String>,
    pub npm_registry: Option<String>,
    pub net: registry::NetEnv,
    pub in_session: bool,
}

impl UpdateEnv {
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        // npm and curl accept both spellings; the upper-case one wins, as in curl.
        let either = |a: &str, b: &str| var(a).or_else(|| var(b));
        UpdateEnv {
            csbox_registry: var("CSBOX_REGISTRY"),
            npm_registry: either("npm_config_registry", "NPM_CONFIG_REGISTRY"),
            net: registry::NetEnv::from_process(),
            in_session: var("CSBOX_SESSION_ID").is_some(),
        }
    }
}

/// What `csbox update` was asked to do.
#[derive(Debug, Clone)]
pub struct Request {
    /// Only check, install nothing.
    pub check: bool,
    /// The dist-tag to follow.
    pub channel: String,
    pub json: bool,
    /// Install without asking.
    pub yes: bool,
}

/// `csbox update`. Without a terminal and without `--yes` it installs: the background
/// check runs detached, and a script that wants only a check says `--check`. With
/// `--json`, a failure is also a JSON object on stdout (the message stays on stderr).
pub fn command(args: Request) -> Result<i32> {
    let mut installed = None;
    let result = update(&args, &mut installed);
    if let (Err(e), true) = (&result, args.json) {
        let v = serde_json::json!({ "error": e.to_string(), "installed": installed });
        let _ = writeln!(std::io::stdout().lock(), "{v}");
    }
    result
}

fn update(args: &Request, installed: &mut Option<String>) -> Result<i32> {
    let env = UpdateEnv::from_process();
    if env.in_session {
        return Err(Error::Usage(
            "csbox update must run outside sessions (CSBOX_SESSION_ID is set here): run it from a shell outside the sandbox".into(),
        ));
    }
    version::validate_channel(&args.channel).map_err(Error::Usage)?;
    let paths = Paths::from_env()?;

    let mut attempt = Attempt::new(&args.channel, Outcome::Failed);
    let mut lock = None;
    let result = check_and_install(args, &paths, &env, &mut attempt, &mut lock);
    installed.clone_from(&attempt.from);
    match &result {
        Ok(outcome) => attempt.outcome = *outcome,
        Err(reason) => attempt.reason = Some(reason.clone()),
    }
    // Appended before the install lock is released, so the log records the install it
    // guarded before any session can start or another update can begin.
    if let Err(e) = journal::append(&paths.update_log(), &attempt) {
        crate::warn!("append {}: {e}", paths.update_log().display());
    }
    drop(lock);
    let outcome = result.map_err(Error::Other)?;
    print_result(args, &attempt, outcome);
    Ok(match outcome {
        Outcome::Available => EXIT_UPDATE_AVAILABLE,
        _ => 0,
    })
}

fn check_and_install(
    args: &Request,
    paths: &Paths,
    env: &UpdateEnv,
    attempt: &mut Attempt,
    lock: &mut Option<OwnedFd>,
) -> std::result::Result<Outcome, String> {
    let claude = paths
        .find_claude()
        .ok_or("claude not found: put it on PATH or set CLAUDE_BIN to its path")?;
    let installed = install::installed_version(&claude)?;
    attempt.from = Some(installed.to_string());
    let method = install::detect_method(&claude);
    attempt.method = Some(method.name());

    let base = registry::registry_base(env.csbox_registry.as_deref(), env.npm_registry.as_deref())?;
    let tags = registry::fetch_dist_tags(&base, &env.net)?;
    let target = version::choose_target(&tags, &args.channel)?;
    attempt.to = Some(target.to_string());
    if !version::is_update(&installed, &target) {
        return Ok(Outcome::UpToDate);
    }
    if args.check {
        return Ok(Outcome::Available);
    }

    let registry = env
        .csbox_registry
        .as_deref()
        .or(env.npm_registry.as_deref());
    let argv = installer_for(&method, &claude, paths, &target, registry)?;
    if argv[0] == "sudo" && registry.is_some_and(install::has_userinfo) {
        crate::warn!(
            "the registry URL carries credentials, which are not put on sudo's command line: npm as root installs from its own configured registry"
        );
    }
    if !args.yes
        && std::io::stdin().is_terminal()
        && std::io::stderr().is_terminal()
        && !confirm(&installed, &target, &method)
    {
        return Ok(Outcome::Declined);
    }
    // Exclusive and non-blocking: if any session holds its shared lock, do nothing now.
    *lock = match lock_path(&paths.update_lock(), true, true) {
        Ok(Some(fd)) => Some(fd),
        Ok(None) => return Ok(Outcome::SkippedActive),
        Err(e) => return Err(format!("open {}: {e}", paths.update_lock().display())),
    };
    // Another `csbox update` may have installed it while this one fetched.
    let now = install::installed_version(&claude)?;
    attempt.from = Some(now.to_string());
    if !version::is_update(&now, &target) {
        return Ok(Outcome::UpToDate);
    }

    let shown = argv
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("csbox: installing Claude Code {target}: {shown}");
    let (out, err) = installer_stdio(paths)?;
    // npm installs from its own configured registry unless told otherwise.
    let npm_env: Vec<(&str, &str)> = match (&method, &env.csbox_registry) {
        (Method::NpmGlobal { .. }, Some(r)) => vec![("npm_config_registry", r.as_str())],
        _ => vec![],
    };
    install::run_installer(&argv, out, err, &npm_env)?;
    let after = install::installed_version(&claude)?;
    if after != target {
        return Err(format!(
            "the installer succeeded but `{} --version` now reports {after}, not {target}",
            claude.display()
        ));
    }
    Ok(Outcome::Installed)
}

fn installer_for(
    method: &Method,
    claude: &std::path::Path,
    paths: &Paths,
    target: &Version,
    registry: Option<&str>,
) -> std::result::Result<Vec<std::ffi::OsString>, String> {
    let (npm, writable) = match method {
        Method::NpmGlobal { prefix } => {
            let npm = install::find_npm(prefix, paths.path_var.as_deref()).ok_or(
                "npm not found on PATH; install Node.js/npm or update Claude Code yourself",
            )?;
            (npm, install::npm_prefix_writable(prefix))
        }
        _ => (Default::default(), true),
    };
    install::installer_argv(method, claude, &npm, target, writable, registry).ok_or_else(|| {
        format!(
            "cannot tell how {} was installed (it is neither under an npm global prefix nor in ~/.local/share/claude/versions); update it yourself",
            claude.display()
        )
    })
}

fn confirm(installed: &Version, target: &Version, method: &Method) -> bool {
    eprint!(
        "Install Claude Code {target} (installed: {installed}, {})? [y/N] ",
        method.name()
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    matches!(answer.trim(), "y" | "Y" | "yes" | "Yes")
}

/// The installer's output goes to the terminal, or to the log when there is none.
fn installer_stdio(paths: &Paths) -> std::result::Result<(Stdio, Stdio), String> {
    if std::io::stderr().is_terminal() {
        return Ok((Stdio::inherit(), Stdio::inherit()));
    }
    let log = paths.update_log();
    let open = || journal::open(&log).map_err(|e| format!("open {}: {e}", log.display()));
    Ok((open()?.into(), open()?.into()))
}

fn print_result(args: &Request, a: &Attempt, outcome: Outcome) {
    // Every outcome but up-to-date was reached because a newer version exists.
    let available = outcome != Outcome::UpToDate;
    let from = a.from.as_deref().unwrap_or("?");
    let to = a.to.as_deref().unwrap_or("?");
    let method = a.method.unwrap_or("unknown");
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut v = serde_json::json!({
            "installed": a.from,
            "latest": a.to,
            "update_available": available,
            "method": method,
        });
        if !args.check {
            v["outcome"] = serde_json::to_value(outcome).unwrap_or_default();
        }
        let _ = writeln!(out, "{v}");
        return;
    }
    let _ = match outcome {
        Outcome::UpToDate => writeln!(
            out,
            "Claude Code {from} is up to date ({}: {to})",
            args.channel
        ),
        Outcome::Available => writeln!(
            out,
            "Claude Code {to} is available (installed: {from}, {method}); `csbox update` installs it"
        ),
        Outcome::SkippedActive => writeln!(
            out,
            "Claude Code {to} is available, but sessions are running: not installing now (the next check retries)"
        ),
        Outcome::Declined => writeln!(out, "Not installing Claude Code {to}."),
        Outcome::Installed => writeln!(out, "Installed Claude Code {to} (was {from})."),
        Outcome::Failed => Ok(()),
    };
}
