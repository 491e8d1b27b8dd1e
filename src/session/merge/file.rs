//! One regular file of the session's layer against the real `~/.claude`: copied in when
//! it is new, replaced when it extends the real one byte for byte (a resumed conversation
//! that grew), left alone when the real one already holds it, and otherwise kept beside
//! it under a conflict name. A transcript (`*.jsonl`) merges only complete lines, each a
//! JSON object: a line a killed writer left half-written waits for the next merge. A
//! file skipped for what it holds (no complete line, only NUL bytes, holes) is reported,
//! never passed over in silence.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::state::{base_dir, conflict_name, fstat, kind_word, open_at, Merger};
use super::write::{install, Content, Installed, Place};
use crate::error::Result;

const CHUNK: usize = 64 * 1024;

/// What the real `~/.claude` has at a file's name.
enum Base {
    Missing,
    /// Something that is not a regular file (a directory, a link): never replaced.
    Other(&'static str),
    File(OwnedFd, libc::stat),
}

#[derive(Debug, PartialEq, Eq)]
enum Cmp {
    Same,
    /// The real file holds the session's bytes and more (merged before, then resumed on
    /// the host): nothing to add.
    BaseAhead,
    Extends,
    Differs,
}

fn read_at(fd: &OwnedFd, buf: &mut [u8], pos: u64) -> std::result::Result<usize, Errno> {
    loop {
        match nix::sys::uio::pread(fd, buf, pos as i64) {
            Err(Errno::EINTR) => continue,
            r => return r,
        }
    }
}

/// Compare the first `len` bytes of `a` with all `blen` bytes of `b`.
fn compare(a: &OwnedFd, len: u64, b: &OwnedFd, blen: u64) -> std::result::Result<Cmp, Errno> {
    let common = len.min(blen);
    let (mut x, mut y) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut pos = 0;
    while pos < common {
        let want = CHUNK.min((common - pos) as usize);
        let n = read_at(a, &mut x[..want], pos)?;
        let m = read_at(b, &mut y[..want], pos)?;
        if n == 0 || n != m || x[..n] != y[..n] {
            return Ok(Cmp::Differs);
        }
        pos += n as u64;
    }
    Ok(match len.cmp(&blen) {
        std::cmp::Ordering::Equal => Cmp::Same,
        std::cmp::Ordering::Less => Cmp::BaseAhead,
        std::cmp::Ordering::Greater => Cmp::Extends,
    })
}

/// The length up to and including the last newline of the first `size` bytes.
fn complete_lines_len(fd: &OwnedFd, size: u64) -> std::result::Result<u64, Errno> {
    let mut buf = vec![0u8; CHUNK];
    let mut end = size;
    while end > 0 {
        let start = end.saturating_sub(CHUNK as u64);
        let n = read_at(fd, &mut buf[..(end - start) as usize], start)?;
        if let Some(i) = buf[..n].iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Every line of bytes `from..to` is a JSON object (blank lines pass); else the first
/// bad line's number (counted from `from`).
fn check_jsonl(
    fd: &OwnedFd,
    from: u64,
    to: u64,
) -> std::result::Result<std::result::Result<(), u64>, Errno> {
    let mut buf = vec![0u8; CHUNK];
    let mut line: Vec<u8> = Vec::new();
    let mut no = 0u64;
    let ok = |l: &[u8]| {
        let t = l.trim_ascii();
        t.is_empty() || (t[0] == b'{' && serde_json::from_slice::<serde::de::IgnoredAny>(t).is_ok())
    };
    let mut pos = from;
    while pos < to {
        let want = CHUNK.min((to - pos) as usize);
        let n = read_at(fd, &mut buf[..want], pos)?;
        if n == 0 {
            break;
        }
        for part in buf[..n].split_inclusive(|b| *b == b'\n') {
            line.extend_from_slice(part);
            if line.last() == Some(&b'\n') {
                no += 1;
                if !ok(&line) {
                    return Ok(Err(no));
                }
                line.clear();
            }
        }
        pos += n as u64;
    }
    if !line.is_empty() && !ok(&line) {
        return Ok(Err(no + 1));
    }
    Ok(Ok(()))
}

/// The session file's mtime, but not later than `now`: Claude Code's `--continue` and
/// `/resume` picker take the newest transcript, so one the session dated 2036 would be
/// the host's pick for years (red-team 7, A7-4).
fn no_later_than(st: &libc::stat, now: std::time::SystemTime) -> libc::timespec {
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (sec, nsec) = (now.as_secs() as i64, now.subsec_nanos() as i64);
    let (tv_sec, tv_nsec) = if (st.st_mtime, st.st_mtime_nsec) > (sec, nsec) {
        (sec, nsec)
    } else {
        (st.st_mtime, st.st_mtime_nsec)
    };
    libc::timespec { tv_sec, tv_nsec }
}

/// What [`admit`] took of a file, or why a transcript below a conversation's directory
/// (`projects/<key>/<uuid>/…`, a subagent's) is refused for what it tracks or where it
/// ran. The conversations' own transcripts were judged when the scope was built.
fn tracked(
    m: &mut Merger,
    fd: &OwnedFd,
    rel_dir: &Path,
    admitted: (libc::stat, u64, bool),
) -> std::result::Result<(libc::stat, u64, bool), String> {
    if !admitted.2 || !rel_dir.starts_with("projects") || rel_dir.components().count() < 3 {
        return Ok(admitted);
    }
    // From the start: `admit`'s SEEK_HOLE moved the offset this duplicate shares.
    let mut f = std::fs::File::from(fd.try_clone().map_err(|e| format!("dup => {e}"))?);
    std::io::Seek::rewind(&mut f).map_err(|e| format!("lseek => {e}"))?;
    m.scope.project.scan(f)?;
    Ok(admitted)
}

fn open_base(
    m: &mut Merger,
    slot: &mut Option<OwnedFd>,
    rel_dir: &Path,
    create: bool,
) -> std::result::Result<bool, (PathBuf, Errno)> {
    if slot.is_none() {
        match base_dir(m, rel_dir, create) {
            Ok(fd) => *slot = Some(fd),
            Err((_, Errno::ENOENT)) if !create => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn base_entry(dir: &OwnedFd, name: &CStr) -> std::result::Result<Base, Errno> {
    match open_at(dir.as_raw_fd(), name, libc::O_RDONLY, 0) {
        Err(Errno::ENOENT) => Ok(Base::Missing),
        Err(Errno::ELOOP) => Ok(Base::Other("a symbolic link")),
        Err(e) => Err(e),
        Ok(fd) => {
            let st = fstat(fd.as_raw_fd())?;
            if st.st_mode & libc::S_IFMT == libc::S_IFREG {
                Ok(Base::File(fd, st))
            } else {
                Ok(Base::Other(kind_word(st.st_mode)))
            }
        }
    }
}

/// The offset of the first hole of a file of `size` bytes, if it has one before its end
/// (SEEK_HOLE; a file system that cannot tell reports none). Claude Code writes no
/// sparse file, and a hole costs the session nothing but the merge real disk.
fn first_hole(fd: &OwnedFd, size: u64) -> Option<u64> {
    // SAFETY: lseek on a valid descriptor (pread elsewhere does not use the offset).
    let at = unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_HOLE) };
    (at >= 0 && (at as u64) < size).then_some(at as u64)
}

/// Whether the first `size` bytes (at least one) are all NUL: what a session gets from
/// `truncate` or `head -c N /dev/zero`, nothing Claude Code writes.
fn all_nul(fd: &OwnedFd, size: u64) -> std::result::Result<bool, Errno> {
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0;
    while pos < size {
        let n = read_at(fd, &mut buf[..CHUNK.min((size - pos) as usize)], pos)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(size > 0)
}

/// Why the session file (`size` bytes, of which `len` are complete lines when `jsonl`)
/// is not worth merging, if it is not.
fn skip_reason(
    fd: &OwnedFd,
    size: u64,
    len: u64,
    jsonl: bool,
) -> std::result::Result<Option<String>, Errno> {
    if let Some(at) = first_hole(fd, size) {
        return Ok(Some(format!(
            "a sparse file (a hole at byte {at} of {size}): not a file Claude Code writes"
        )));
    }
    if all_nul(fd, size)? {
        return Ok(Some(format!(
            "{size} NUL bytes and nothing else: not a file Claude Code writes"
        )));
    }
    if jsonl && len == 0 {
        let what = if size == 0 {
            "empty".to_string()
        } else {
            format!("no complete line in its {size} bytes")
        };
        return Ok(Some(format!("{what}: nothing to merge (yet)")));
    }
    Ok(None)
}

/// What a merge takes of the session's opened file `name`: its stat, the length to
/// merge (whole lines of a transcript) and whether it is one; or why it is refused (not a
/// regular file, exec or set-id bits, over `max`, nothing to merge).
fn admit(
    fd: &OwnedFd,
    name: &CStr,
    max: u64,
) -> Result<std::result::Result<(libc::stat, u64, bool), String>> {
    let st = fstat(fd.as_raw_fd())?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Ok(Err(format!(
            "{}, not a regular file",
            kind_word(st.st_mode)
        )));
    }
    if st.st_mode & 0o7111 != 0 {
        return Ok(Err(format!(
            "mode {:04o} has exec or set-id bits: nothing merged may be run",
            st.st_mode & 0o7777
        )));
    }
    let size = st.st_size as u64;
    if size > max {
        let bound = crate::human::human_size(max);
        return Ok(Err(format!(
            "{} bytes, over the per-file bound of {bound}",
            size
        )));
    }
    let jsonl = name.to_bytes().ends_with(b".jsonl");
    let len = if jsonl {
        complete_lines_len(fd, size)?
    } else {
        size
    };
    if let Some(why) = skip_reason(fd, size, len, jsonl)? {
        return Ok(Err(why));
    }
    Ok(Ok((st, len, jsonl)))
}

/// What `~/.claude/rel_dir/name` is (opening `rel_dir` into `base`), or why it cannot be
/// looked at.
fn base_of(
    m: &mut Merger,
    base: &mut Option<OwnedFd>,
    rel_dir: &Path,
    name: &CStr,
) -> Result<std::result::Result<Base, String>> {
    Ok(Ok(match open_base(m, base, rel_dir, false) {
        Err((at, e)) => {
            return Ok(Err(format!(
                "~/.claude/{} cannot be opened as a directory without following a link: {e}",
                at.display()
            )))
        }
        Ok(false) => Base::Missing,
        Ok(true) => base_entry(base.as_ref().expect("opened"), name)?,
    }))
}

/// Merge the session file `src_dir/name` into `~/.claude/rel_dir/name` if it is at most
/// `max` bytes. `base` caches the opened `~/.claude/rel_dir` for the other files of the
/// same directory.
pub fn merge_file(
    m: &mut Merger,
    src_dir: &OwnedFd,
    base: &mut Option<OwnedFd>,
    rel_dir: &Path,
    name: &CStr,
    max: u64,
) -> Result<()> {
    let rel = rel_dir.join(name.to_string_lossy().as_ref());
    let fd = match open_at(src_dir.as_raw_fd(), name, libc::O_RDONLY, 0) {
        Ok(fd) => fd,
        Err(Errno::ELOOP) => return Ok(m.refuse(&rel, "a symbolic link: never followed")),
        Err(e) => return Ok(m.refuse(&rel, format!("openat(O_NOFOLLOW|O_NONBLOCK) => {e}"))),
    };
    let (st, len, jsonl) = match admit(&fd, name, max)?.and_then(|a| tracked(m, &fd, rel_dir, a)) {
        Ok(a) => a,
        Err(why) => return Ok(m.refuse(&rel, why)),
    };
    let mtime = Some(no_later_than(&st, m.rec.at));
    let found = match base_of(m, base, rel_dir, name)? {
        Ok(found) => found,
        Err(why) => return Ok(m.refuse(&rel, why)),
    };
    let bad_line = |m: &mut Merger, from: u64| -> Result<bool> {
        if !jsonl {
            return Ok(false);
        }
        if let Err(no) = check_jsonl(&fd, from, len)? {
            let which = if from == 0 {
                format!("line {no}")
            } else {
                format!("appended line {no}")
            };
            m.refuse(
                &rel,
                format!("{which} is not a JSON object: not a transcript Claude Code could read"),
            );
            return Ok(true);
        }
        Ok(false)
    };
    let why_beside = match found {
        Base::Missing => {
            if bad_line(m, 0)? || !m.budget(&rel, len) {
                return Ok(());
            }
            if let Err((at, e)) = open_base(m, base, rel_dir, true) {
                return Ok(m.refuse(
                    &rel,
                    format!("~/.claude/{} cannot be made a directory: {e}", at.display()),
                ));
            }
            let dir = base.as_ref().expect("opened");
            match install(
                m,
                dir,
                rel_dir,
                name,
                Content::File { fd: &fd, len },
                0o600,
                mtime,
                Place::New,
            )? {
                Installed::Done => {
                    m.rec.copied += 1;
                    return Ok(());
                }
                Installed::Raced => {
                    "a file of that name appeared in ~/.claude while merging".to_string()
                }
            }
        }
        Base::Other(kind) => format!("~/.claude has {kind} there"),
        Base::File(bfd, bst) => {
            let blen = bst.st_size as u64;
            if blen > m.limits.file {
                return Ok(m.refuse(
                    &rel,
                    "the file in ~/.claude is over the per-file bound: not compared",
                ));
            }
            match compare(&fd, len, &bfd, blen)? {
                Cmp::Same | Cmp::BaseAhead => {
                    m.rec.unchanged += 1;
                    return Ok(());
                }
                Cmp::Extends => {
                    if bad_line(m, blen)? || !m.budget(&rel, len) {
                        return Ok(());
                    }
                    let dir = base.as_ref().expect("opened");
                    let mode = (bst.st_mode & 0o666) | 0o600;
                    match install(
                        m,
                        dir,
                        rel_dir,
                        name,
                        Content::File { fd: &fd, len },
                        mode,
                        mtime,
                        Place::Replace(bst),
                    )? {
                        Installed::Done => {
                            m.rec.replaced += 1;
                            return Ok(());
                        }
                        Installed::Raced => {
                            "the file in ~/.claude changed while merging".to_string()
                        }
                    }
                }
                Cmp::Differs => {
                    "the session's version does not extend the one in ~/.claude".to_string()
                }
            }
        }
    };
    keep_beside(m, &fd, len, base, rel_dir, name, mtime, &why_beside)
}

/// Write the session's version next to the real file as `<name>.csbox-conflict-<id>`
/// (once: the same content there already is left alone), and report it.
#[allow(clippy::too_many_arguments)]
fn keep_beside(
    m: &mut Merger,
    fd: &OwnedFd,
    len: u64,
    base: &mut Option<OwnedFd>,
    rel_dir: &Path,
    name: &CStr,
    mtime: Option<libc::timespec>,
    why: &str,
) -> Result<()> {
    let rel = rel_dir.join(name.to_string_lossy().as_ref());
    let cname = conflict_name(name, m.id);
    let shown = cname.to_string_lossy().into_owned();
    if let Err((at, e)) = open_base(m, base, rel_dir, true) {
        return Ok(m.refuse(
            &rel,
            format!("~/.claude/{} cannot be made a directory: {e}", at.display()),
        ));
    }
    let dir = base.as_ref().expect("opened");
    let already = match base_entry(dir, &cname)? {
        Base::File(cfd, cst) => compare(fd, len, &cfd, cst.st_size as u64)? == Cmp::Same,
        Base::Missing => false,
        Base::Other(kind) => {
            return Ok(m.refuse(
                &rel,
                format!("{why}; and ~/.claude has {kind} at its conflict name {shown}"),
            ));
        }
    };
    if !already {
        if !m.budget(&rel, len) {
            return Ok(());
        }
        let dir = base.as_ref().expect("opened");
        install(
            m,
            dir,
            rel_dir,
            name_ref(&cname),
            Content::File { fd, len },
            0o600,
            mtime,
            Place::Own,
        )?;
    }
    m.conflict(&rel, format!("{why}: kept beside it as {shown}"));
    Ok(())
}

fn name_ref(c: &std::ffi::CString) -> &CStr {
    c.as_c_str()
}

/// Whether the real `base` already holds everything of the session's `mine` that a merge
/// would take (the same complete lines, or more after them).
/// Whether the session's copy `mine` continues `base` byte for byte (whole lines), with
/// more after it: a resumed conversation that grew, not one rewritten.
pub fn extends(mine: &OwnedFd, base: &OwnedFd) -> bool {
    let (Ok(a), Ok(b)) = (fstat(mine.as_raw_fd()), fstat(base.as_raw_fd())) else {
        return false;
    };
    let Ok(len) = complete_lines_len(mine, a.st_size as u64) else {
        return false;
    };
    matches!(compare(mine, len, base, b.st_size as u64), Ok(Cmp::Extends))
}

pub fn already_in(mine: &OwnedFd, base: &OwnedFd) -> bool {
    let (Ok(a), Ok(b)) = (fstat(mine.as_raw_fd()), fstat(base.as_raw_fd())) else {
        return false;
    };
    let Ok(len) = complete_lines_len(mine, a.st_size as u64) else {
        return false;
    };
    matches!(
        compare(mine, len, base, b.st_size as u64),
        Ok(Cmp::Same | Cmp::BaseAhead)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(bytes: &[u8]) -> (tempfile::NamedTempFile, OwnedFd) {
        let mut t = tempfile::NamedTempFile::new().unwrap();
        t.write_all(bytes).unwrap();
        let fd = OwnedFd::from(std::fs::File::open(t.path()).unwrap());
        (t, fd)
    }

    #[test]
    fn compare_tells_same_extension_base_ahead_and_difference_apart() {
        let (_a, a) = file(b"one\ntwo\n");
        let (_b, b) = file(b"one\n");
        let (_c, c) = file(b"one\nTWO\n");
        assert_eq!(compare(&a, 8, &a, 8).unwrap(), Cmp::Same);
        assert_eq!(compare(&a, 8, &b, 4).unwrap(), Cmp::Extends);
        assert_eq!(compare(&b, 4, &a, 8).unwrap(), Cmp::BaseAhead);
        assert_eq!(compare(&a, 8, &c, 8).unwrap(), Cmp::Differs);
        assert_eq!(
            compare(&a, 4, &b, 4).unwrap(),
            Cmp::Same,
            "only the first len bytes count"
        );
    }

    #[test]
    fn only_complete_json_object_lines_merge() {
        let (_a, a) = file(b"{\"a\":1}\n{\"b\":2}\n{\"c\":");
        assert_eq!(complete_lines_len(&a, 22).unwrap(), 16);
        assert_eq!(check_jsonl(&a, 0, 16).unwrap(), Ok(()));
        let (_b, b) = file(b"{\"a\":1}\n[1,2]\n");
        assert_eq!(check_jsonl(&b, 0, 14).unwrap(), Err(2));
        assert_eq!(
            check_jsonl(&b, 8, 14).unwrap(),
            Err(1),
            "counted from the appended part"
        );
        let (_c, c) = file(b"no newline at all");
        assert_eq!(complete_lines_len(&c, 17).unwrap(), 0);
        let big: Vec<u8> = (0..3 * CHUNK)
            .map(|i| if i % 1000 == 999 { b'\n' } else { b' ' })
            .collect();
        let (_d, d) = file(&big);
        assert_eq!(
            check_jsonl(&d, 0, big.len() as u64).unwrap(),
            Ok(()),
            "blank lines across chunks pass"
        );
    }
}
