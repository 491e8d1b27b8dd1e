//! The periodic check `csbox run` starts: at most once per interval, detached, never waited
//! for. The hot path (not due) costs one `stat` of `CLAUDE_ROOT/update.checked`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use crate::paths::Paths;
use crate::session::lock::lock_path;

use super::journal;

pub const STAMP_FILE: &str = "update.checked";
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// How much of the log's end [`failure_notice`] reads: a few hundred attempts.
const NOTICE_TAIL: u64 = 64 * 1024;
/// A reason longer than this is cut in the notice (the log keeps it whole).
const NOTICE_REASON_CHARS: usize = 300;

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

/// One line for an interactive `csbox run` when the latest background checks failed,
/// which otherwise only `update.log` would show:
/// `update check failed 3 times since 2026-11-30T10:00:00Z: <last reason>; see ~/.claude/update.log`.
/// None when the log is missing or unreadable or its latest attempt did not fail. Reads
/// at most the last 64 KiB, opened non-blocking (a FIFO there must not hang a start).
pub fn failure_notice(paths: &Paths) -> Option<String> {
    let log = paths.update_log();
    let (tail, cut) = read_tail(&log, NOTICE_TAIL).ok()?;
    let attempts = journal::parse_attempts(&String::from_utf8_lossy(&tail));
    let streak: Vec<_> = attempts
        .iter()
        .rev()
        .take_while(|a| a.outcome == "failed")
        .collect();
    let (last, first) = (streak.first()?, streak.last()?);
    // Every attempt in the tail failed: older ones may have too.
    let count = match (streak.len(), cut && streak.len() == attempts.len()) {
        (1, false) => "once".to_string(),
        (n, false) => format!("{n} times"),
        (n, true) => format!("at least {n} times"),
    };
    let shown = match log.strip_prefix(&paths.home) {
        Ok(rel) => format!("~/{}", rel.display()),
        Err(_) => log.display().to_string(),
    };
    Some(format!(
        "update check failed {count} since {}: {}; see {shown}",
        one_line(&first.ts, 40),
        one_line(
            last.reason.as_deref().unwrap_or("no reason logged"),
            NOTICE_REASON_CHARS
        )
    ))
}

/// The last `cap` bytes of a regular file, starting at a line; true when that is not the
/// whole file.
fn read_tail(path: &Path, cap: u64) -> std::io::Result<(Vec<u8>, bool)> {
    let mut f = crate::fsutil::open_regular(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(cap);
    let mut buf = Vec::new();
    if start == 0 {
        f.take(cap).read_to_end(&mut buf)?;
        return Ok((buf, false));
    }
    // One byte early: if it is a newline, the tail starts with a whole line.
    f.seek(SeekFrom::Start(start - 1))?;
    f.take(cap + 1).read_to_end(&mut buf)?;
    let first_line = buf
        .iter()
        .position(|&b| b == b'\n')
        .map_or(buf.len(), |i| i + 1);
    buf.drain(..first_line);
    Ok((buf, true))
}

/// Log contents reach a terminal here, and a reason can quote what a registry sent: no
/// control characters, and a bounded length.
fn one_line(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::journal::{Attempt, Outcome};

    #[test]
    fn a_stamp_is_due_after_the_interval_or_when_from_the_future() {
        let now = SystemTime::now();
        let day = Duration::from_secs(86400);
        assert!(!is_due(now - Duration::from_secs(60), now, day));
        assert!(is_due(now - day, now, day));
        assert!(is_due(now + Duration::from_secs(3600), now, day));
        assert!(is_due(now, now, Duration::ZERO));
    }

    fn home() -> (tempfile::TempDir, Paths) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join(".claude")).unwrap();
        let paths = Paths::resolve(&crate::paths::EnvInput {
            home: Some(d.path().into()),
            cwd: d.path().into(),
            ..Default::default()
        })
        .unwrap();
        (d, paths)
    }

    fn line(ts: &str, outcome: Outcome, reason: Option<&str>) -> String {
        let mut a = Attempt::new("latest", outcome);
        a.ts = ts.into();
        a.reason = reason.map(str::to_string);
        a.line()
    }

    fn write_log(paths: &Paths, text: &str) {
        std::fs::write(paths.update_log(), text).unwrap();
    }

    #[test]
    fn the_latest_failures_are_counted_since_the_first_of_them() {
        let (_d, paths) = home();
        let log = [
            line("2026-11-28T10:00:00Z", Outcome::Failed, Some("old failure")),
            line("2026-11-29T10:00:00Z", Outcome::Installed, None),
            line("2026-11-30T10:00:00Z", Outcome::Failed, Some("no answer")),
            "npm ERR! network\n".into(),
            line("2026-12-01T10:00:00Z", Outcome::Failed, Some("404")),
            line(
                "2026-12-02T10:00:00Z",
                Outcome::Failed,
                Some("UnknownIssuer"),
            ),
        ]
        .concat();
        write_log(&paths, &log);
        assert_eq!(
            failure_notice(&paths).as_deref(),
            Some("update check failed 3 times since 2026-11-30T10:00:00Z: UnknownIssuer; see ~/.claude/update.log")
        );
    }

    #[test]
    fn no_notice_when_the_latest_attempt_succeeded_or_there_is_no_log() {
        let (_d, paths) = home();
        assert_eq!(failure_notice(&paths), None);
        write_log(
            &paths,
            &[
                line("2026-11-30T10:00:00Z", Outcome::Failed, Some("x")),
                line("2026-12-01T10:00:00Z", Outcome::SkippedActive, None),
            ]
            .concat(),
        );
        assert_eq!(failure_notice(&paths), None);
        write_log(&paths, "only installer output\n");
        assert_eq!(failure_notice(&paths), None);
        write_log(&paths, &line("2026-12-01T10:00:00Z", Outcome::Failed, None));
        assert_eq!(
            failure_notice(&paths).as_deref(),
            Some("update check failed once since 2026-12-01T10:00:00Z: no reason logged; see ~/.claude/update.log")
        );
    }

    #[test]
    fn a_long_log_is_read_from_its_tail_only() {
        let (_d, paths) = home();
        let fail = line("2026-12-01T10:00:00Z", Outcome::Failed, Some("offline"));
        let mut log = line("2026-01-01T00:00:00Z", Outcome::Installed, None);
        let n = 2 * NOTICE_TAIL as usize / fail.len();
        log.push_str(&fail.repeat(n));
        write_log(&paths, &log);
        let notice = failure_notice(&paths).unwrap();
        let shown: usize = notice
            .strip_prefix("update check failed at least ")
            .and_then(|r| r.split(' ').next())
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("{notice}"));
        assert!(
            shown < n && shown >= NOTICE_TAIL as usize / fail.len() - 1,
            "{notice}"
        );
    }

    #[test]
    fn a_hostile_reason_cannot_reach_the_terminal_raw() {
        let (_d, paths) = home();
        let evil = format!("tag \u{1b}]0;pwned\u{7}{}", "x".repeat(1000));
        write_log(
            &paths,
            &line("2026-12-01T10:00:00Z", Outcome::Failed, Some(&evil)),
        );
        let notice = failure_notice(&paths).unwrap();
        assert!(!notice.chars().any(|c| c.is_control()), "{notice:?}");
        assert!(notice.chars().count() < 450, "{}", notice.len());
        assert!(notice.ends_with("…; see ~/.claude/update.log"));
    }

    #[test]
    fn a_fifo_in_place_of_the_log_gives_no_notice_at_once() {
        let (_d, paths) = home();
        nix::unistd::mkfifo(
            &paths.update_log(),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let t0 = std::time::Instant::now();
        assert_eq!(failure_notice(&paths), None);
        assert!(t0.elapsed() < Duration::from_secs(1));
    }
}
