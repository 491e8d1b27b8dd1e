//! File-system helpers shared by the store, gc and update: one atomic write, one no-follow
//! open. Session directories are written by sandboxed processes, so everything here works
//! relative to directory fds and refuses to follow symlinks.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};

mod tree;
pub use tree::{
    disk_usage, first_listed, name_set, read_entries, read_names, remove_tree_at, TreeStats,
};

fn cstr(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// A directory csbox would create, refused (exit 2, naming it) when something that is not
/// a directory is already there: `mkdir -p` would only say "File exists".
pub fn refuse_non_dir(path: &Path, what: &str) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(md) if !md.is_dir() => Err(Error::Usage(format!(
            "{what} {} is not a directory but {}: point the variable at a directory, or move that file away",
            path.display(),
            if md.is_file() { "a regular file" } else { "a special file" }
        ))),
        _ => Ok(()),
    }
}

/// How csbox opens a directory below a hostile tree to read or go through it: never
/// blocking (with `openat_nofollow`, never through a link either).
pub fn dir_flags() -> nix::fcntl::OFlag {
    nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_NONBLOCK
}

/// Open a directory without following a symlink in its last component.
pub fn open_dir_nofollow(path: &Path) -> std::io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: plain open(2) on a valid C string.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// openat(dir, name) that never follows a symlink at `name` (`name` must be one component).
pub fn openat_nofollow(
    dir: impl AsFd,
    name: &str,
    flags: OFlag,
    mode: Mode,
) -> std::io::Result<OwnedFd> {
    debug_assert!(!name.contains('/'));
    let fd = openat(
        Some(dir.as_fd().as_raw_fd()),
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        mode,
    )?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `dir/name`, a directory (any name, one component), opened read-only without
/// following a link at `name` or blocking: how a walk of a hostile tree goes down.
pub fn open_dir_at(dir: &OwnedFd, name: &std::ffi::CStr) -> nix::Result<OwnedFd> {
    // SAFETY: a valid dir fd and C string.
    let fd = nix::errno::Errno::result(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY
                | libc::O_DIRECTORY
                | libc::O_NOFOLLOW
                | libc::O_CLOEXEC
                | libc::O_NONBLOCK,
        )
    })?;
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// How far [`atomic_write`] goes to survive a power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The rename alone: a reader or a killed writer sees the old or the new content whole,
    /// but after a power cut the new content may be lost or (outside ext4's rename
    /// heuristic) empty.
    Rename,
    /// fdatasync before the rename and fsync of the directory after it: the new content
    /// is on disk when the call returns.
    Full,
}

/// Replace `dir/name` with `bytes` so that a reader only ever sees the old or the new
/// content, even if the writer is killed half-way: write a temp file, rename it over.
/// `csbox run` syncs none of a session's records: a crash during a session, or a power
/// cut that loses the end record, leaves it "crashed", which gc keeps and ages like an
/// exited session, so a sync would protect nothing and cost every launch. Records that
/// nothing else vouches for (`spec --new`, a login copied back) are [`Durability::Full`].
pub fn atomic_write(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
    durable: Durability,
) -> Result<()> {
    let dfd = open_dir_nofollow(dir).map_err(|e| Error::io("open directory", dir, e))?;
    atomic_write_at(&dfd, dir, name, bytes, mode, durable)
}

pub fn atomic_write_at(
    dfd: &OwnedFd,
    dir: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
    durable: Durability,
) -> Result<()> {
    let tmp = format!(".{name}.tmp-{}", std::process::id());
    let path = dir.join(name);
    // Whatever is at the temp name (a killed writer's leftover, or a FIFO or a hard link
    // planted where a pid is guessable) is unlinked, never opened: O_EXCL makes a new file.
    let _ = nix::unistd::unlinkat(
        Some(dfd.as_raw_fd()),
        tmp.as_str(),
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    );
    let tmp_fd = openat_nofollow(
        dfd,
        &tmp,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NONBLOCK,
        Mode::from_bits_truncate(mode),
    )
    .map_err(|e| Error::io("create", dir.join(&tmp), e))?;
    let mut f = File::from(tmp_fd);
    let res = f
        .write_all(bytes)
        .and_then(|_| {
            if durable == Durability::Full {
                f.sync_data()
            } else {
                Ok(())
            }
        })
        .map_err(|e| {
            let hint = disk_hint(&e);
            Error::io("write", dir.join(&tmp), e).hint(hint)
        });
    drop(f);
    crate::fault::point("atomic-write:tmp-written");
    if let Err(e) = res {
        let _ = nix::unistd::unlinkat(
            Some(dfd.as_raw_fd()),
            tmp.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        return Err(e);
    }
    nix::fcntl::renameat(
        Some(dfd.as_raw_fd()),
        tmp.as_str(),
        Some(dfd.as_raw_fd()),
        name,
    )
    .map_err(|e| Error::io("rename", &path, e.into()))?;
    if durable == Durability::Full {
        nix::unistd::fsync(dfd.as_raw_fd()).map_err(|e| Error::io("fsync", dir, e.into()))?;
    }
    Ok(())
}

fn disk_hint(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
            "the disk is full: free space, e.g. with `csbox gc`".into()
        }
        _ => "nothing was changed".into(),
    }
}

/// Open the regular file `dir/name` for a session-dir reader: never following a link,
/// never blocking (a FIFO planted as `lock` or `session.json` would hang `ls`, `gc` and
/// the timer's gc on a plain open), and checked with fstat before anything reads it. A
/// link is ELOOP, a directory EISDIR, any other type [`NOT_REGULAR`]'s kind.
pub fn open_regular_at(dir: impl AsFd, name: &str, flags: OFlag) -> std::io::Result<OwnedFd> {
    open_regular_at_stat(dir, name, flags).map(|(fd, _)| fd)
}

/// [`open_regular_at`], and the file's fstat.
fn open_regular_at_stat(
    dir: impl AsFd,
    name: &str,
    flags: OFlag,
) -> std::io::Result<(OwnedFd, nix::sys::stat::FileStat)> {
    let fd = openat_nofollow(dir, name, flags | OFlag::O_NONBLOCK, Mode::empty())?;
    let st = nix::sys::stat::fstat(fd.as_raw_fd())?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => Ok((fd, st)),
        libc::S_IFDIR => Err(std::io::Error::from_raw_os_error(libc::EISDIR)),
        _ => Err(not_regular()),
    }
}

/// What a FIFO, socket or device where a file should be is reported as.
pub const NOT_REGULAR: &str = "not a regular file (a FIFO, a socket or a device)";

fn not_regular() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, NOT_REGULAR)
}

/// Read a small regular file relative to `dir` without following symlinks, at most `limit`
/// bytes (session files are hostile input: a sandbox may plant a FIFO or a huge file).
pub fn read_small_at(dir: impl AsFd, name: &str, limit: u64) -> std::io::Result<Vec<u8>> {
    read_small_at_stat(dir, name, limit).map(|(bytes, _)| bytes)
}

/// [`read_small_at`], and the fstat of the very file read (a second lookup of `name`
/// may find another file: one renamed over it meanwhile).
pub fn read_small_at_stat(
    dir: impl AsFd,
    name: &str,
    limit: u64,
) -> std::io::Result<(Vec<u8>, nix::sys::stat::FileStat)> {
    use std::io::Read;
    let (fd, st) = open_regular_at_stat(dir, name, OFlag::O_RDONLY)?;
    let len = st.st_size as u64;
    let f = File::from(fd);
    if len > limit {
        return Err(std::io::Error::from_raw_os_error(libc::EFBIG));
    }
    // One read of what fstat said and a byte more: a file read whole needs no second
    // read to see its end (read_to_end would stat it again for a size hint). Only a file
    // that changed under us is read on.
    let mut f = f.take(limit);
    let mut buf = vec![0u8; len as usize + 1];
    let n = f.read(&mut buf)?;
    buf.truncate(n);
    if n as u64 != len {
        f.read_to_end(&mut buf)?;
    }
    Ok((buf, st))
}

/// Open a file for reading that must be a regular file: opened non-blocking (a FIFO
/// planted where a config file should be must not hang the caller), then checked with
/// fstat. For files csbox reads but does not own (a profile, an npmrc, a CA bundle, the
/// update log): symlinks are followed, these are the user's own files; files in session
/// dirs go through [`read_small_at`] instead. A directory is `IsADirectory`; a FIFO, socket or device `InvalidInput`.
pub fn open_regular(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let md = f.metadata()?;
    if md.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "is a directory",
        ));
    }
    if !md.is_file() {
        return Err(not_regular());
    }
    Ok(f)
}

/// The whole of such a file, refused (`InvalidData`) when larger than `cap` bytes.
pub fn read_regular(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = open_regular(path)?;
    // /proc's files say size 0: start with room for a typical one (read_to_end began at
    // 32 bytes and doubled: 8 reads of /proc/self/mountinfo, once per session in gc).
    let mut buf = Vec::with_capacity(cap.min(16 << 10) as usize);
    f.take(cap + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {cap} bytes"),
        ));
    }
    Ok(buf)
}

/// /proc/self/mountinfo is read at most this big.
const MOUNTINFO_CAP: u64 = 8 << 20;

/// Every mount point in this mount namespace, as /proc/self/mountinfo names them
/// (unescaped; empty when it cannot be read).
pub fn mount_points() -> Vec<std::path::PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let Ok(text) = read_regular(Path::new("/proc/self/mountinfo"), MOUNTINFO_CAP) else {
        return Vec::new();
    };
    text.split(|b| *b == b'\n')
        .filter_map(|l| l.split(|b| *b == b' ').nth(4))
        .map(|p| std::ffi::OsString::from_vec(unescape_mountinfo(p)).into())
        .collect()
}

/// Mount points at the directory `dir` or below it, found by its real path (through
/// /proc/self/fd, so the caller's way there does not matter) in /proc/self/mountinfo,
/// which also lists mounts inside directories nobody may read.
pub fn mounts_at_or_below(dir: &OwnedFd) -> Vec<std::path::PathBuf> {
    let Ok(real) = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())) else {
        return Vec::new();
    };
    mount_points()
        .into_iter()
        .filter(|p| p.starts_with(&real))
        .collect()
}

/// A path as /proc/self/mountinfo writes it (space, tab, newline and backslash as
/// `\ooo`), unescaped.
pub fn unescape_mountinfo(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    let oct = |b: u8| (b'0'..=b'7').contains(&b);
    while i < s.len() {
        if s[i] == b'\\' && s.len() - i >= 4 && s[i + 1..i + 4].iter().all(|b| oct(*b)) {
            out.push((s[i + 1] - b'0') * 64 + (s[i + 2] - b'0') * 8 + (s[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mountinfo(b"/home/u/a\\040b"), b"/home/u/a b");
        assert_eq!(unescape_mountinfo(b"/x\\134y"), b"/x\\y");
        assert_eq!(unescape_mountinfo(b"/end\\04"), b"/end\\04");
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        atomic_write(d.path(), "f.json", b"one", 0o600, Durability::Rename).unwrap();
        atomic_write(d.path(), "f.json", b"two", 0o600, Durability::Full).unwrap();
        assert_eq!(std::fs::read(d.path().join("f.json")).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f.json")]);
    }

    #[test]
    fn atomic_write_never_opens_what_is_planted_at_its_temp_name() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let tmp = d.path().join(format!(".f.json.tmp-{}", std::process::id()));
        std::fs::hard_link(&victim, &tmp).unwrap();
        atomic_write(d.path(), "f.json", b"new", 0o600, Durability::Rename).unwrap();
        assert_eq!(
            std::fs::read(&victim).unwrap(),
            b"keep",
            "the link was not written through"
        );
        nix::unistd::mkfifo(&tmp, Mode::from_bits_truncate(0o600)).unwrap();
        atomic_write(d.path(), "f.json", b"newer", 0o600, Durability::Rename).unwrap();
        assert_eq!(std::fs::read(d.path().join("f.json")).unwrap(), b"newer");
    }

    #[test]
    fn read_small_refuses_symlinks_and_big_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("big"), vec![b'x'; 100]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("link")).unwrap();
        let dfd = open_dir_nofollow(d.path()).unwrap();
        assert!(read_small_at(&dfd, "link", 1000).is_err());
        assert_eq!(
            read_small_at(&dfd, "big", 10).unwrap_err().raw_os_error(),
            Some(libc::EFBIG)
        );
        assert_eq!(read_small_at(&dfd, "big", 100).unwrap().len(), 100);
    }
}
