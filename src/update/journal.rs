//! `CLAUDE_ROOT/update.log`: one JSON line per attempt, between whatever the installers
//! printed (their output goes to the same file when no terminal is attached).
//! `grep '^{"ts"' update.log | jq` reads the attempts back.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    UpToDate,
    /// `--check` found a newer version and installed nothing.
    Available,
    /// Sessions hold the update lock: nothing was installed.
    SkippedActive,
    /// On a terminal the user answered no.
    Declined,
    Installed,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub ts: String,
    pub outcome: Outcome,
    pub from: Option<String>,
    pub to: Option<String>,
    pub channel: String,
    pub method: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Attempt {
    pub fn new(channel: &str, outcome: Outcome) -> Self {
        Attempt {
            ts: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            outcome,
            from: None,
            to: None,
            channel: channel.to_string(),
            method: None,
            reason: None,
        }
    }

    pub fn line(&self) -> String {
        // Serialising plain strings cannot fail; reasons are already one line.
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// An attempt line read back from the log: only what a summary needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LoggedAttempt {
    pub ts: String,
    /// An [`Outcome`] in kebab-case; kept as text, so a newer csbox's outcome still reads.
    pub outcome: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// The attempt lines of `text` (a log, or its tail cut at a line start), oldest first;
/// installer output and lines that do not parse are skipped.
pub fn parse_attempts(text: &str) -> Vec<LoggedAttempt> {
    text.lines()
        .filter(|l| l.starts_with("{\"ts\""))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Open the log for appending (the installers' and the background check's output).
pub fn open(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Append one attempt. The log's own flock keeps lines from concurrent `csbox update`s
/// whole; it is separate from `update.lock`, which sessions hold shared for hours.
pub fn append(path: &Path, attempt: &Attempt) -> std::io::Result<()> {
    let mut f = open(path)?;
    // SAFETY: flock on a descriptor we own; released when `f` closes.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    f.write_all(attempt.line().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_is_one_json_object_with_the_outcome_in_kebab_case() {
        let mut a = Attempt::new("latest", Outcome::SkippedActive);
        a.from = Some("2.1.197".into());
        a.to = Some("2.1.330".into());
        a.method = Some("npm-global");
        let line = a.line();
        assert!(line.starts_with("{\"ts\":\"") && line.ends_with("}\n"));
        assert_eq!(line.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["outcome"], "skipped-active");
        assert_eq!(v["from"], "2.1.197");
        assert_eq!(v["to"], "2.1.330");
        assert_eq!(v["method"], "npm-global");
        assert!(v.get("reason").is_none());
        assert!(humantime::parse_rfc3339(v["ts"].as_str().unwrap()).is_ok());
    }

    #[test]
    fn a_failure_reason_with_newlines_stays_on_one_line() {
        let mut a = Attempt::new("latest", Outcome::Failed);
        a.reason = Some("line one\nline two".into());
        let line = a.line();
        assert_eq!(line.matches('\n').count(), 1, "{line}");
    }

    #[test]
    fn attempts_read_back_between_installer_output() {
        let mut failed = Attempt::new("latest", Outcome::Failed);
        failed.reason = Some("no answer".into());
        let text = format!(
            "npm WARN something\n{}added 1 package\n{{\"ts\": broken\n{}",
            failed.line(),
            Attempt::new("latest", Outcome::UpToDate).line()
        );
        let a = parse_attempts(&text);
        assert_eq!(a.len(), 2);
        assert_eq!(
            (a[0].outcome.as_str(), a[0].reason.as_deref()),
            ("failed", Some("no answer"))
        );
        assert_eq!(
            (a[1].outcome.as_str(), a[1].reason.as_deref()),
            ("up-to-date", None)
        );
    }

    #[test]
    fn appends_accumulate_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("update.log");
        append(&p, &Attempt::new("latest", Outcome::UpToDate)).unwrap();
        append(&p, &Attempt::new("latest", Outcome::Installed)).unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert_eq!(s.lines().count(), 2);
    }
}
