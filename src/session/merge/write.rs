//! How a merge puts a file into `~/.claude`: a new temp file in the same directory,
//! written, synced and given the session file's mtime, then renamed into place. A reader
//! (Claude Code, another csbox) sees the old file or the new one whole; a merge killed at
//! any point leaves at most a temp file, which the next merge removes.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;

use super::state::{errno_of, lstat_at, open_at, unlink_at, Merger};
use crate::error::{Error, Result};

/// What goes into the new file.
pub enum Content<'a> {
    /// The first `len` bytes of a session file (read with pread: its offset is untouched).
    File {
        fd: &'a OwnedFd,
        len: u64,
    },
    Bytes(&'a [u8]),
}

/// What may be at the name when the temp file is renamed there.
pub enum Place {
    /// Nothing: a file that appeared meanwhile is never replaced.
    New,
    /// The file compared before, unchanged since (same inode, size and mtime); a file
    /// that changed meanwhile (Claude Code appended to it) is never replaced.
    Replace(libc::stat),
    /// csbox's own file (a conflict copy of this session): replaced whatever it holds.
    Own,
}

/// How it went.
#[derive(Debug, PartialEq, Eq)]
pub enum Installed {
    Done,
    /// The name changed under us (see [`Place`]); nothing was written there.
    Raced,
}

fn same_file(a: &libc::stat, b: &libc::stat) -> bool {
    (a.st_dev, a.st_ino, a.st_size, a.st_mtime, a.st_mtime_nsec)
        == (b.st_dev, b.st_ino, b.st_size, b.st_mtime, b.st_mtime_nsec)
}

fn write_all(fd: &OwnedFd, content: &Content) -> std::result::Result<u64, Errno> {
    let mut written = 0u64;
    let mut put = |buf: &[u8]| -> std::result::Result<(), Errno> {
        let mut off = 0;
        while off < buf.len() {
            match nix::unistd::write(fd, &buf[off..]) {
                Ok(n) => off += n,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        written += buf.len() as u64;
        Ok(())
    };
    match content {
        Content::Bytes(b) => put(b)?,
        Content::File { fd: src, len } => {
            let mut buf = vec![0u8; 1 << 20];
            let mut pos = 0u64;
            while pos < *len {
                let want = buf.len().min((*len - pos) as usize);
                let n = match nix::sys::uio::pread(src, &mut buf[..want], pos as i64) {
                    Ok(0) => break, // the file shrank: what is there is what is copied
                    Ok(n) => n,
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(e),
                };
                put(&buf[..n])?;
                pos += n as u64;
            }
        }
    }
    Ok(written)
}

/// renameat2(RENAME_NOREPLACE), or link + unlink where the file system lacks it.
fn rename_noreplace(dir: &OwnedFd, from: &CStr, to: &CStr) -> std::result::Result<(), Errno> {
    let d = dir.as_raw_fd();
    // SAFETY: valid fds and C strings.
    let r = unsafe { libc::renameat2(d, from.as_ptr(), d, to.as_ptr(), libc::RENAME_NOREPLACE) };
    match errno_of(r) {
        Err(Errno::EINVAL | Errno::ENOSYS) => {
            // SAFETY: as above.
            errno_of(unsafe { libc::linkat(d, from.as_ptr(), d, to.as_ptr(), 0) })?;
            let _ = unlink_at(d, from, 0);
            Ok(())
        }
        r => r.map(drop),
    }
}

/// Put `content` at `dir/name` (mode `mode`, mtime `mtime`) by temp file and rename.
/// `rel_dir` names `dir` below `~/.claude`, for messages.
#[allow(clippy::too_many_arguments)]
pub fn install(
    m: &mut Merger,
    dir: &OwnedFd,
    rel_dir: &Path,
    name: &CStr,
    content: Content,
    mode: libc::mode_t,
    mtime: Option<libc::timespec>,
    place: Place,
) -> Result<Installed> {
    let tmp = m.tmp_name();
    let tmp_path = m
        .root_path
        .join(rel_dir)
        .join(tmp.to_string_lossy().as_ref());
    let d = dir.as_raw_fd();
    let _ = unlink_at(d, &tmp, 0);
    let fd = open_at(d, &tmp, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, mode)
        .map_err(|e| Error::sys(format!("openat({}, O_CREAT|O_EXCL)", tmp_path.display()), e))?;
    crate::fault::point("merge:tmp-created");
    let result = (|| {
        let n = write_all(&fd, &content).map_err(|e| ("write", e))?;
        nix::unistd::fdatasync(fd.as_raw_fd()).map_err(|e| ("fdatasync", e))?;
        if let Some(t) = mtime {
            let times = [t, t];
            // SAFETY: valid fd and a two-element array.
            errno_of(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) })
                .map_err(|e| ("futimens", e))?;
        }
        Ok::<u64, (&str, Errno)>(n)
    })();
    drop(fd);
    let written = match result {
        Ok(n) => n,
        Err((call, e)) => {
            let _ = unlink_at(d, &tmp, 0);
            let hint = if matches!(e, Errno::ENOSPC | Errno::EDQUOT) {
                "the disk is full: free space (`csbox gc`), then `csbox merge` again"
            } else {
                "nothing in ~/.claude was changed; `csbox merge` again"
            };
            return Err(Error::sys(format!("{call}({})", tmp_path.display()), e).hint(hint));
        }
    };
    crate::fault::point("merge:tmp-written");
    let target = m
        .root_path
        .join(rel_dir)
        .join(name.to_string_lossy().as_ref());
    let renamed = match place {
        Place::New => match rename_noreplace(dir, &tmp, name) {
            Err(Errno::EEXIST) => Ok(false),
            r => r.map(|_| true),
        },
        Place::Replace(before) => {
            if lstat_at(d, name).is_ok_and(|now| same_file(&now, &before)) {
                nix::fcntl::renameat(Some(d), tmp.as_c_str(), Some(d), name).map(|_| true)
            } else {
                Ok(false)
            }
        }
        Place::Own => nix::fcntl::renameat(Some(d), tmp.as_c_str(), Some(d), name).map(|_| true),
    };
    match renamed {
        Ok(true) => {}
        Ok(false) => {
            let _ = unlink_at(d, &tmp, 0);
            return Ok(Installed::Raced);
        }
        Err(e) => {
            let _ = unlink_at(d, &tmp, 0);
            return Err(Error::sys(
                format!("renameat({}, {})", tmp_path.display(), target.display()),
                e,
            ));
        }
    }
    crate::fault::point("merge:renamed");
    m.rec.bytes += written;
    m.touch(dir);
    Ok(Installed::Done)
}
