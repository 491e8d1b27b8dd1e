//! `session.json`: what csbox records about a session. Written only by the supervisor
//! (outside the sandbox) and always atomically.

use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::id::SessionId;

pub const META_FILE: &str = "session.json";
pub const META_VERSION: u32 = 1;
/// session.json is read from an untrusted directory: never more than this.
pub const META_LIMIT: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The shell convention: the code, or 128+N for a signal.
    pub fn shell_code(&self) -> i32 {
        match *self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }

    pub fn describe(&self) -> String {
        match *self {
            ExitStatus::Code(c) => format!("exited {c}"),
            ExitStatus::Signal(s) => format!("killed by {}", signal_name(s)),
        }
    }
}

pub fn signal_name(s: i32) -> String {
    nix::sys::signal::Signal::try_from(s)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {s}"))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub version: u32,
    pub id: SessionId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub profile: String,
    pub command: Vec<String>,
    pub cwd: PathBuf,
    #[serde(with = "rfc3339")]
    pub created: SystemTime,
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub started: Option<SystemTime>,
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub ended: Option<SystemTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
    /// Host pid of the supervisor of the last run (informational: liveness is the lock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor_pid: Option<u32>,
    /// /proc/sys/kernel/random/boot_id of the last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// How many times the session was started (re-entered with --session).
    #[serde(default)]
    pub runs: u32,
    /// The profile's wall-clock limit stopped the last run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// Project files that run code on the host later (hooks, editor tasks) that did not
    /// exist when a run started and did when it ended: the session made them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub created_protected: Vec<PathBuf>,
    /// Where each of those went at exit (moved out of the project into the session dir).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<Quarantined>,
    /// Hidden paths csbox masked in the session's home layer, relative to the home
    /// (overlay whiteouts it made, not deletions of the session's): neither `csbox diff`
    /// nor gc's "empty" counts them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masks: Vec<PathBuf>,
    /// The last merge of this session's conversations into the real `~/.claude`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<MergeRecord>,
}

/// What a merge-back did (`csbox show` prints it). The lists are capped at
/// [`MERGE_LIST_CAP`] entries each; `unlisted` counts the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeRecord {
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
    /// Files that were not in `~/.claude` and were copied in.
    pub copied: u64,
    /// Files the session extended byte for byte (a resumed conversation), replaced.
    pub replaced: u64,
    /// Files already there with the same content (or more of it).
    pub unchanged: u64,
    /// Lines appended to `history.jsonl`.
    pub history_lines: u64,
    /// Bytes written into `~/.claude` (conflict copies included).
    pub bytes: u64,
    /// Files whose session version does not extend the one in `~/.claude`: kept beside it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<MergeEntry>,
    /// What was not merged and why (a link, a FIFO, an exec bit, a size bound, bad JSON).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<MergeEntry>,
    /// Conflicts and refusals past the lists' cap.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unlisted: u64,
    /// A bound stopped the merge before the end: `csbox merge ID` again does the rest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incomplete: bool,
}

/// One path of a merge (relative to `~/.claude`) and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeEntry {
    pub path: String,
    pub detail: String,
}

/// How many conflicts and refusals a record lists by name.
pub const MERGE_LIST_CAP: usize = 32;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl MergeRecord {
    /// A merge at `at` that has done nothing yet.
    pub fn new(at: SystemTime) -> Self {
        MergeRecord {
            at,
            copied: 0,
            replaced: 0,
            unchanged: 0,
            history_lines: 0,
            bytes: 0,
            conflicts: Vec::new(),
            refused: Vec::new(),
            unlisted: 0,
            incomplete: false,
        }
    }

    /// Files or lines that reached `~/.claude`.
    pub fn merged_anything(&self) -> bool {
        self.copied + self.replaced + self.history_lines > 0
    }

    /// One line: what was merged, what was kept beside, what was refused.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} copied, {} extended, {} history line{}, {} unchanged",
            self.copied,
            self.replaced,
            self.history_lines,
            if self.history_lines == 1 { "" } else { "s" },
            self.unchanged
        );
        if !self.conflicts.is_empty() {
            s.push_str(&format!(
                ", {} conflict{} kept beside",
                self.conflicts.len(),
                if self.conflicts.len() == 1 { "" } else { "s" }
            ));
        }
        if !self.refused.is_empty() {
            s.push_str(&format!(", {} refused", self.refused.len()));
        }
        if self.unlisted > 0 {
            s.push_str(&format!(" (+{} more)", self.unlisted));
        }
        if self.incomplete {
            s.push_str("; incomplete: a bound was reached, run `csbox merge` again");
        }
        s
    }
}

impl Metadata {
    pub fn new(
        id: SessionId,
        name: Option<String>,
        profile: &str,
        command: Vec<String>,
        cwd: PathBuf,
    ) -> Self {
        Metadata {
            version: META_VERSION,
            id,
            name,
            profile: profile.to_string(),
            command,
            cwd,
            created: SystemTime::now(),
            started: None,
            ended: None,
            exit: None,
            supervisor_pid: None,
            boot_id: None,
            runs: 0,
            timed_out: false,
            created_protected: Vec::new(),
            quarantined: Vec::new(),
            masks: Vec::new(),
            merge: None,
        }
    }

    /// A run begins at `at`: its end from an earlier run cleared, one run more.
    /// `supervisor`: the host pid that runs it (None: an OCI runtime does, from a bundle).
    pub fn mark_started(&mut self, at: SystemTime, supervisor: Option<u32>) {
        self.started = Some(at);
        self.ended = None;
        self.exit = None;
        self.timed_out = false;
        // A record is untrusted input: a planted `runs: 4294967295` must not overflow.
        self.runs = self.runs.saturating_add(1);
        self.supervisor_pid = supervisor;
        self.boot_id = boot_id();
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("metadata serialises");
        v.push(b'\n');
        v
    }
}

pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::session::meta::format_time(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

mod rfc3339_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => crate::session::meta::rfc3339::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// One file a session made in its project where code on the host reads it (a git
/// config, a hook, editor tasks), and where csbox moved it at exit (`session::quarantine`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quarantined {
    pub path: PathBuf,
    /// In the session's quarantine dir, or beside the original when the session dir is
    /// on another file system. None: it could not be moved (`error` says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_to: Option<PathBuf>,
    /// The link that was there at the start, put back in its place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_restored: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_through_json() {
        let mut m = Metadata::new(
            SessionId::new(),
            Some("feat".into()),
            "default",
            vec!["claude".into()],
            "/p".into(),
        );
        m.started = Some(SystemTime::now());
        m.exit = Some(ExitStatus::Signal(15));
        let back: Metadata = serde_json::from_slice(&m.to_json()).unwrap();
        // rfc3339 keeps milliseconds
        assert_eq!(format_time(back.created), format_time(m.created));
        assert_eq!(back.exit, Some(ExitStatus::Signal(15)));
        assert_eq!(back.exit.unwrap().shell_code(), 143);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let m = Metadata::new(SessionId::new(), None, "default", vec![], "/".into());
        let mut v: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
        v["surprise"] = 1.into();
        assert!(serde_json::from_value::<Metadata>(v).is_err());
    }
}
