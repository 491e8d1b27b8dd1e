//! `net.jsonl`: one JSON object per proxied connection, appended as the connection ends.
//!
//! The log is evidence, not a dependency: it never blocks or fails the proxy. A full disk,
//! a vanished directory or a hostile client opening millions of connections costs at most
//! `cap` bytes, a final `{"truncated":true,…}` line and one warning.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag};

use crate::fsutil::openat_nofollow;

/// Default size cap: about 40 000 connections of a few hundred bytes each.
pub const DEFAULT_CAP: u64 = 8 * 1024 * 1024;

/// What became of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Policy allowed it and the destination (or the upstream proxy) was reached.
    Allowed,
    /// Policy refused it.
    Refused,
    /// Allowed but not reachable, or the request was malformed or timed out.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

/// How the client asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Connect,
    Http,
    Socks5,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Connect => "connect",
            Protocol::Http => "http",
            Protocol::Socks5 => "socks5",
        }
    }
}

/// One connection, as logged.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    /// When the client connected.
    pub start: SystemTime,
    pub host: &'a str,
    pub port: u16,
    pub outcome: Outcome,
    pub rule: &'a str,
    pub protocol: Protocol,
    /// Bytes sent towards the destination (for plain HTTP, including the rewritten head).
    pub bytes_up: u64,
    /// Bytes sent back to the client, not counting csbox's own replies.
    pub bytes_down: u64,
    pub duration: Duration,
    pub error: Option<&'a str>,
}

type WarnFn = Box<dyn Fn(&io::Error) + Send + Sync>;

/// Where lines go: the file, or the directory and name to open it in at the first line.
enum Sink {
    File(File),
    Pending {
        dir: OwnedFd,
        name: String,
    },
    /// Opening it failed (warned once); nothing more is written.
    Gone,
}

struct State {
    sink: Sink,
    written: u64,
    truncated: bool,
    warned: bool,
}

/// An append-only, size-capped JSON-lines file shared by every proxy thread.
pub struct AuditLog {
    state: Mutex<State>,
    cap: u64,
    warn: WarnFn,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("cap", &self.cap).finish()
    }
}

impl AuditLog {
    /// Open (creating, mode 0600) `name` in the directory `dir` for appending. The name
    /// is opened beneath `dir` without following a link, non-blocking (a planted FIFO
    /// cannot stall csbox) and must be a regular file. An existing file's size counts
    /// towards the cap, so a reopened log stays bounded.
    pub fn open_in(dir: impl AsFd, name: &str) -> io::Result<AuditLog> {
        let (file, size) = open_file(dir, name)?;
        Ok(Self::with_sink(Sink::File(file), size))
    }

    /// As [`open_in`](Self::open_in), but the file is opened (and created) with the first
    /// line, so a session that makes no connection pays nothing for its log (a file
    /// created on disk: 100–200 µs of the supervisor's startup, measured). What opening
    /// would have reported is then the one warning of [`on_write_error`](Self::on_write_error).
    pub fn open_lazily_in(dir: OwnedFd, name: &str) -> AuditLog {
        let name = name.to_string();
        Self::with_sink(Sink::Pending { dir, name }, 0)
    }

    fn with_sink(sink: Sink, size: u64) -> AuditLog {
        AuditLog {
            state: Mutex::new(State {
                sink,
                written: size,
                truncated: size >= DEFAULT_CAP,
                warned: false,
            }),
            cap: DEFAULT_CAP,
            warn: Box::new(|e| {
                crate::warn!("cannot write the network log: {e}");
            }),
        }
    }

    /// [`open_in`](Self::open_in) the parent of `path`.
    pub fn open(path: &Path) -> io::Result<AuditLog> {
        let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path:?} names no file"),
            )
        })?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = File::open(parent)
            .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", parent.display())))?;
        Self::open_in(&dir, name)
    }

    /// Stop writing connection lines once the file holds `bytes`.
    pub fn with_cap(mut self, bytes: u64) -> Self {
        self.cap = bytes;
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        st.truncated = st.written >= bytes;
        self
    }

    /// Called once, on the first failed write (default: a csbox warning on stderr).
    pub fn on_write_error(mut self, f: impl Fn(&io::Error) + Send + Sync + 'static) -> Self {
        self.warn = Box::new(f);
        self
    }

    /// Append one line. Never fails, never panics.
    pub fn record(&self, r: &Record) {
        let mut line = serde_json::json!({
            "time": humantime::format_rfc3339_millis(r.start).to_string(),
            "host": r.host,
            "port": r.port,
            "decision": r.outcome.as_str(),
            "rule": r.rule,
            "protocol": r.protocol.as_str(),
            "bytes_up": r.bytes_up,
            "bytes_down": r.bytes_down,
            "duration_ms": r.duration.as_millis() as u64,
        });
        if let Some(e) = r.error {
            line["error"] = e.into();
        }
        let mut text = line.to_string();
        text.push('\n');
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Sink::Pending { dir, name } = &st.sink {
            st.sink = match open_file(dir, name) {
                Ok((file, size)) => {
                    st.written = size;
                    st.truncated = size >= self.cap;
                    Sink::File(file)
                }
                Err(e) => {
                    st.warned = true;
                    (self.warn)(&e);
                    Sink::Gone
                }
            };
        }
        if st.truncated {
            return;
        }
        if st.written + text.len() as u64 > self.cap {
            st.truncated = true;
            text = serde_json::json!({
                "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                "truncated": true,
                "cap_bytes": self.cap,
                "note": "csbox logs no further connections of this session",
            })
            .to_string();
            text.push('\n');
        }
        let Sink::File(file) = &mut st.sink else {
            return;
        };
        // One write(2) per line: with O_APPEND the kernel places it whole at the end.
        match file.write_all(text.as_bytes()) {
            Ok(()) => st.written += text.len() as u64,
            Err(e) if !st.warned => {
                st.warned = true;
                (self.warn)(&e);
            }
            Err(_) => {}
        }
    }
}

/// Open (creating, mode 0600) `name` beneath `dir` for appending; the file and its size.
/// Not following a link, non-blocking (a planted FIFO cannot stall csbox), and it must be
/// a regular file.
fn open_file(dir: impl AsFd, name: &str) -> io::Result<(File, u64)> {
    let fd = openat_nofollow(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT | OFlag::O_NONBLOCK,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| io::Error::new(e.kind(), format!("open {name} for the network log: {e}")))?;
    let st = nix::sys::stat::fstat(fd.as_raw_fd())?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name} is not a regular file; remove it so csbox can log connections"),
        ));
    }
    Ok((File::from(fd), st.st_size as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    fn rec<'a>(host: &'a str, outcome: Outcome, error: Option<&'a str>) -> Record<'a> {
        Record {
            start: SystemTime::now(),
            host,
            port: 443,
            outcome,
            rule: "*.example.test",
            protocol: Protocol::Connect,
            bytes_up: 12,
            bytes_down: 34,
            duration: Duration::from_millis(56),
            error,
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn each_connection_is_one_json_line_with_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.record(&rec("a.example.test", Outcome::Allowed, None));
        log.record(&rec(
            "b.example.test",
            Outcome::Failed,
            Some("connection refused"),
        ));
        let v = lines(&path);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0]["host"], "a.example.test");
        assert_eq!(v[0]["port"], 443);
        assert_eq!(v[0]["decision"], "allowed");
        assert_eq!(v[0]["rule"], "*.example.test");
        assert_eq!(v[0]["protocol"], "connect");
        assert_eq!(v[0]["bytes_up"], 12);
        assert_eq!(v[0]["bytes_down"], 34);
        assert_eq!(v[0]["duration_ms"], 56);
        assert!(v[0].get("error").is_none());
        let t = v[0]["time"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(t).is_ok(), "{t}");
        assert_eq!(
            t.len(),
            "2024-01-01T00:00:00.000Z".len(),
            "millisecond precision: {t}"
        );
        assert_eq!(v[1]["decision"], "failed");
        assert_eq!(v[1]["error"], "connection refused");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn after_the_cap_one_truncated_line_and_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net.jsonl");
        let log = AuditLog::open(&path).unwrap().with_cap(1000);
        for _ in 0..50 {
            log.record(&rec("a.example.test", Outcome::Refused, None));
        }
        let v = lines(&path);
        let last = v.last().unwrap();
        assert_eq!(last["truncated"], true);
        assert_eq!(v.iter().filter(|l| l.get("truncated").is_some()).count(), 1);
        let size = std::fs::metadata(&path).unwrap().len();
        let body: u64 = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .filter(|l| !l.contains("truncated"))
            .map(|l| l.len() as u64 + 1)
            .sum();
        assert!(body <= 1000, "connection lines stay under the cap: {body}");
        assert!(size < 1300, "{size}");

        // Reopened, the full file stays full.
        let again = AuditLog::open(&path).unwrap().with_cap(1000);
        again.record(&rec("a.example.test", Outcome::Refused, None));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    }

    #[test]
    fn a_symlink_or_fifo_in_place_of_the_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, dir.path().join("net.jsonl")).unwrap();
        assert!(AuditLog::open(&dir.path().join("net.jsonl")).is_err());
        assert!(!target.exists());
        nix::unistd::mkfifo(&dir.path().join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let e = AuditLog::open(&dir.path().join("fifo")).unwrap_err();
        // With no reader, a non-blocking open for writing fails at once (ENXIO); with a
        // reader it opens and the type check refuses it. Either way, no hang.
        assert!(
            e.to_string().contains("No such device or address")
                || e.to_string().contains("regular file"),
            "{e}"
        );
    }

    #[test]
    fn a_lazy_log_is_created_by_its_first_line_and_still_refuses_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let open = || crate::fsutil::open_dir_nofollow(dir.path()).unwrap();
        let log = AuditLog::open_lazily_in(open(), "net.jsonl");
        assert!(
            !dir.path().join("net.jsonl").exists(),
            "nothing on disk before a line"
        );
        log.record(&rec("a.example.test", Outcome::Allowed, None));
        log.record(&rec("b.example.test", Outcome::Refused, None));
        let got = lines(&dir.path().join("net.jsonl"));
        assert_eq!(
            (got.len(), got[1]["host"].as_str()),
            (2, Some("b.example.test"))
        );

        let target = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, dir.path().join("planted")).unwrap();
        let warned = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let w = warned.clone();
        let log = AuditLog::open_lazily_in(open(), "planted").on_write_error(move |_| {
            w.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        for _ in 0..3 {
            log.record(&rec("a.example.test", Outcome::Allowed, None));
        }
        assert_eq!(warned.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(!target.exists(), "the link was not followed");
    }

    #[test]
    fn a_failing_write_warns_once_and_never_panics() {
        let warned = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let w = warned.clone();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net.jsonl");
        let log = AuditLog::open(&path).unwrap().on_write_error(move |_| {
            w.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        // Swap the file for /dev/full: every write fails with ENOSPC.
        log.state.lock().unwrap().sink = Sink::File(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        );
        for _ in 0..3 {
            log.record(&rec("a.example.test", Outcome::Allowed, None));
        }
        assert_eq!(warned.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn concurrent_writers_never_interleave_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net.jsonl");
        let log = Arc::new(AuditLog::open(&path).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        log.record(&rec("a.example.test", Outcome::Allowed, None));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(lines(&path).len(), 400);
    }
}
