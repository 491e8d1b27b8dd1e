//! The periodic check `csbox run` starts: at most once per interval, detached, never waited
//! for. The hot path (not due) costs one `stat` of `CLAUDE_ROOT/update.checked`.

use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use crate::paths::Paths;
use crate::session::lock::lock_path;

use super::journal;

pub const STAMP_FILE: &str = "update.checked";
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone)]
pub struct BackgroundConfig {
    /// `CSBOX_NO_UPDATE=1`.
    pub disabled: bool,
    /// `CSBOX_SESSION_ID` is set: this is inside a sandbox, where updates never run.
    pub in_session: bool,
    /// `CSBOX_UPDATE_INTERVAL` seconds, default 24 h.
    pub interval: Duration,
}

impl BackgroundConfig {
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        BackgroundConfig {
            disabled: var("CSBOX_NO_UPDATE").is_some_and(|v| v != "0"),
            in_session: var("CSBOX_SESSION_ID").is_some(),
            // A malformed value must not fail `csbox run`: fall back to the default.
            interval: var("CSBOX_UPDATE_INTERVAL")
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map_or(DEFAULT_INTERVAL, Duration::from_secs),
        }
    }
}

/// A stamp older than the interval is due; so is one from the future (the clock was wrong
/// when it was written, and trusting it could stop checks for years).
pub fn is_due(stamp_mtime: SystemTime, now: SystemTime, interval: Duration) -> bool {
    match now.duration_since(stamp_mtime) {
        Ok(age) => age >= interval,
        Err(_) => true,
    }
}

/// Start `csbox update --yes` in the background if the last start is older than the
/// interval. Never fails and never waits for the check: errors only show with CSBOX_LOG=debug.
pub fn maybe_spawn_background_check(paths: &Paths) {
    maybe_spawn_with(paths, &BackgroundConfig::from_env(), None);
}

/// As above with explicit configuration and executable (tests run the real csbox binary
/// from a test process). Returns whether a check was started.
pub fn maybe_spawn_with(paths: &Paths, cfg: &BackgroundConfig, exe: Option<&Path>) -> bool {
    if cfg.disabled || cfg.in_session {
        return false;
    }
    let stamp = paths.claude_root.join(STAMP_FILE);
    // The hot path: one stat.
    if let Ok(md) = std::fs::metadata(&stamp) {
        if md.len() > 0
            && !is_due(
                md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                SystemTime::now(),
                cfg.interval,
            )
        {
            return false;
        }
    }
    match claim_and_spawn(paths, &stamp, cfg.interval, exe) {
        Ok(started) => started,
        Err(e) => {
            crate::debug!("background update check not started: {e}");
            false
        }
    }
}

/// Claim this interval under the stamp's flock, so two `csbox run`s starting together
/// spawn one check: the loser either fails the lock or finds a fresh, non-empty stamp.
fn claim_and_spawn(
    paths: &Paths,
    stamp: &Path,
    interval: Duration,
    exe: Option<&Path>,
) -> std::io::Result<bool> {
    let mut f = match lock_path(stamp, true, true)? {
        Some(fd) => File::from(fd),
        None => return Ok(false),
    };
    let md = f.metadata()?;
    if md.len() > 0 && !is_due(md.modified()?, SystemTime::now(), interval) {
        return Ok(false);
    }
    // Other sessions still running would only make the check log `skipped-active`: leave
    // the interval unclaimed, so the next session to end tries again (one flock, no
    // network), instead of waiting a whole interval while parallel sessions overlap.
    match lock_path(&paths.update_lock(), true, true)? {
        Some(probe) => drop(probe),
        None => return Ok(false),
    }
    let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    f.set_len(0)?;
    f.write_all(format!("{now}\n").as_bytes())?;
    let exe: PathBuf = match exe {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?,
    };
    spawn_detached(&exe, journal::open(&paths.update_log())?)?;
    Ok(true)
}

/// `exe update --yes` in its own session, stdio to the log, reparented to init.
fn spawn_detached(exe: &Path, log: File) -> std::io::Result<()> {
    let out = log.try_clone()?;
    let mut cmd = Command::new(exe);
    cmd.args(["update", "--yes"])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(log);
    // SAFETY: setsid, fork and _exit are async-signal-safe; nothing else runs here.
    unsafe {
        cmd.pre_exec(|| {
            // A new session: no controlling terminal, so the terminal's SIGHUP/SIGINT for
            // the session's process group never reach the check.
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Whatever the caller inherited beyond stdio (a CI runner's pipe, a shell's
            // fds) closes at exec: the check may outlive the caller by minutes, and a
            // reader waiting for EOF on such a pipe would wait for it too. CLOEXEC rather
            // than close keeps std's exec-error pipe working. Before Linux 5.11 this
            // fails (EINVAL) and nothing changes.
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            // Double fork: the intermediate exits at once and is reaped below, so the check
            // is adopted by init and never becomes a child that `csbox run` (which waits
            // for its own children) would see or have to reap.
            match libc::fork() {
                -1 => Err(std::io::Error::last_os_error()),
                0 => Ok(()),
                _ => libc::_exit(0),
            }
        });
    }
    // spawn() returns once the grandchild has exec'd (std's CLOEXEC error pipe closes).
    cmd.spawn()?.wait()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_is_due_after_the_interval_or_when_from_the_future() {
        let now = SystemTime::now();
        let day = Duration::from_secs(86400);
        assert!(!is_due(now - Duration::from_secs(60), now, day));
        assert!(is_due(now - day, now, day));
        assert!(is_due(now + Duration::from_secs(3600), now, day));
        assert!(is_due(now, now, Duration::ZERO));
    }
}
