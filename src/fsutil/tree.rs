//! Walking and removing trees that a sandbox wrote. Everything goes through directory fds
//! (openat/unlinkat with O_NOFOLLOW), never through built-up paths, so a symlink planted
//! anywhere in the tree is removed as a link and never followed, and a file system mounted
//! inside is never entered (st_dev is compared at every level).

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

/// What a walk found or did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TreeStats {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    /// Entries left alone because they lie on another file system.
    pub skipped_mounts: u64,
}

struct Level {
    fd: OwnedFd,
    dir: *mut libc::DIR,
    /// The name of this directory inside its parent (None for the root of the walk).
    name: Option<CString>,
}

impl Drop for Level {
    fn drop(&mut self) {
        // closedir closes the dup'ed fd that fdopendir took over.
        // SAFETY: dir came from fdopendir and is closed once.
        unsafe { libc::closedir(self.dir) };
    }
}

fn fstatat(dirfd: RawFd, name: &CStr) -> nix::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid fd and C string; st is written on success.
    Errno::result(unsafe {
        libc::fstatat(
            dirfd,
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(unsafe { st.assume_init() })
}

fn open_subdir(parent: RawFd, name: &CStr) -> nix::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: valid fd and C string.
    let mut fd = unsafe { libc::openat(parent, name.as_ptr(), flags) };
    if fd < 0 && Errno::last() == Errno::EACCES {
        // Overlay work dirs are left with mode 000 by the kernel; we own them, so make
        // them readable (no-follow: fchmodat on the dir entry itself) and try again.
        // SAFETY: as above.
        unsafe {
            libc::fchmodat(parent, name.as_ptr(), 0o700, 0);
            fd = libc::openat(parent, name.as_ptr(), flags);
        }
    }
    Errno::result(fd)?;
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_level(fd: OwnedFd, name: Option<CString>) -> nix::Result<Level> {
    // fdopendir takes ownership of its fd; give it a dup so `fd` stays usable for *at calls.
    let dup = nix::unistd::dup(fd.as_raw_fd())?;
    // SAFETY: dup is a valid directory fd.
    let dir = unsafe { libc::fdopendir(dup) };
    if dir.is_null() {
        let e = Errno::last();
        let _ = nix::unistd::close(dup);
        return Err(e);
    }
    Ok(Level { fd, dir, name })
}

/// Walk the tree below `root` (an open directory fd), depth first. For every entry the
/// callback gets the parent's fd, the entry's name and its lstat, and for a directory it is
/// called once more after its contents (`post = true`). Directories on another device are
/// reported with `skipped_mounts` and not entered.
fn walk(
    root: OwnedFd,
    stats: &mut TreeStats,
    mut f: impl FnMut(RawFd, &CStr, &libc::stat, bool) -> nix::Result<()>,
) -> nix::Result<()> {
    let root_dev = nix::sys::stat::fstat(root.as_raw_fd())?.st_dev;
    let mut stack = vec![open_level(root, None)?];
    let mut first_err: Option<Errno> = None;
    while let Some(top) = stack.last_mut() {
        // SAFETY: top.dir is a valid DIR*.
        unsafe { *libc::__errno_location() = 0 };
        let ent = unsafe { libc::readdir64(top.dir) };
        if ent.is_null() {
            let level = stack.pop().expect("non-empty");
            let name = level.name.clone();
            drop(level);
            if let (Some(parent), Some(name)) = (stack.last(), name) {
                let pfd = parent.fd.as_raw_fd();
                if let Ok(st) = fstatat(pfd, &name) {
                    if let Err(e) = f(pfd, &name, &st, true) {
                        first_err.get_or_insert(e);
                    }
                }
            }
            continue;
        }
        // SAFETY: d_name is a NUL-terminated array inside the dirent.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        let b = name.to_bytes();
        if b == b"." || b == b".." {
            continue;
        }
        let name = name.to_owned();
        let pfd = top.fd.as_raw_fd();
        let st = match fstatat(pfd, &name) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue,
            Err(e) => {
                first_err.get_or_insert(e);
                continue;
            }
        };
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            if st.st_dev != root_dev {
                stats.skipped_mounts += 1;
                continue;
            }
            stats.dirs += 1;
            stats.bytes += st.st_blocks as u64 * 512;
            match open_subdir(pfd, &name).and_then(|fd| open_level(fd, Some(name.clone()))) {
                Ok(level) => stack.push(level),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        } else {
            stats.files += 1;
            stats.bytes += st.st_blocks as u64 * 512;
            if let Err(e) = f(pfd, &name, &st, false) {
                first_err.get_or_insert(e);
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Disk usage of the tree below `dir` (not counting `dir` itself), like `du -s -x`.
pub fn disk_usage(dir: &OwnedFd) -> nix::Result<TreeStats> {
    let mut stats = TreeStats::default();
    let fd = nix::unistd::dup(dir.as_raw_fd())?;
    // SAFETY: fresh fd from dup.
    walk(
        unsafe { OwnedFd::from_raw_fd(fd) },
        &mut stats,
        |_, _, _, _| Ok(()),
    )?;
    Ok(stats)
}

/// Remove `parent/name` and everything below it without following any symlink or
/// crossing into another file system. Returns what was removed.
pub fn remove_tree_at(parent: &OwnedFd, name: &str) -> nix::Result<TreeStats> {
    let cname = CString::new(name).map_err(|_| Errno::EINVAL)?;
    let st = fstatat(parent.as_raw_fd(), &cname)?;
    let mut stats = TreeStats::default();
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        nix::unistd::unlinkat(
            Some(parent.as_raw_fd()),
            cname.as_c_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )?;
        stats.files = 1;
        return Ok(stats);
    }
    let root = open_subdir(parent.as_raw_fd(), &cname)?;
    walk(root, &mut stats, |pfd, n, st, post| {
        let flag = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            debug_assert!(post);
            nix::unistd::UnlinkatFlags::RemoveDir
        } else {
            nix::unistd::UnlinkatFlags::NoRemoveDir
        };
        match nix::unistd::unlinkat(Some(pfd), n, flag) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e),
        }
    })?;
    stats.dirs += 1;
    stats.bytes += st.st_blocks as u64 * 512;
    nix::unistd::unlinkat(
        Some(parent.as_raw_fd()),
        cname.as_c_str(),
        nix::unistd::UnlinkatFlags::RemoveDir,
    )?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn remove_tree_never_follows_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("keep"), "x").unwrap();
        let t = d.path().join("t");
        std::fs::create_dir_all(t.join("a/b")).unwrap();
        std::fs::write(t.join("a/b/f"), "y").unwrap();
        symlink(&victim, t.join("a/link")).unwrap();
        symlink(&victim, t.join("a/b/link2")).unwrap();
        // a mode-000 directory, like an overlay work dir
        std::fs::create_dir(t.join("work")).unwrap();
        std::fs::create_dir(t.join("work/index")).unwrap();
        std::fs::set_permissions(t.join("work"), std::fs::Permissions::from_mode(0o000)).unwrap();
        let pfd = crate::fsutil::open_dir_nofollow(d.path()).unwrap();
        let st = remove_tree_at(&pfd, "t").unwrap();
        assert!(!t.exists());
        assert!(victim.join("keep").exists());
        assert_eq!(st.files, 3); // f + two links
    }

    #[test]
    fn disk_usage_counts_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("x")).unwrap();
        std::fs::write(d.path().join("x/f"), vec![1u8; 10000]).unwrap();
        let fd = crate::fsutil::open_dir_nofollow(d.path()).unwrap();
        let st = disk_usage(&fd).unwrap();
        assert_eq!((st.files, st.dirs), (1, 1));
        assert!(st.bytes >= 10000);
    }
}
