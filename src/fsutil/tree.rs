//! Walking and removing trees that a sandbox wrote. Everything goes through directory fds
//! (openat/unlinkat with O_NOFOLLOW), never through built-up paths, so a symlink planted
//! anywhere in the tree is removed as a link and never followed, and a file system mounted
//! inside is never entered: every entry's device and mount id (statx `STATX_MNT_ID`, which
//! also catches bind mounts of the same file system) are compared with the walk's root.
//!
//! Depth costs no stack and a bounded number of fds: a directory's names are read whole
//! when it is entered, and only the innermost `MAX_OPEN` directories keep their fd. An
//! ancestor whose fd was closed is reopened through `..` of its finished child and checked
//! to be the same inode, so a 100 000-deep tree is removed with ~32 fds.

use std::ffi::{CStr, CString};
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;

/// How many directory fds a walk keeps open at most.
const MAX_OPEN: usize = 32;

/// What a walk found or did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TreeStats {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    /// Entries left alone because they lie on another file system or mount.
    pub skipped_mounts: u64,
    /// Entries a read-only walk could not read (e.g. mode-000 dirs); not counted above.
    pub unreadable: u64,
    /// The newest mtime of anything in the tree, the root included.
    pub newest_mtime: Option<SystemTime>,
}

/// The first failure of a walk, named by the call and the path below the walk's root
/// (the path is for the message only: nothing is ever opened by path).
#[derive(Debug, Clone)]
pub struct TreeError {
    pub op: &'static str,
    pub path: PathBuf,
    pub errno: Errno,
    /// How many entries failed in all (the walk goes on after a failure).
    pub failures: u64,
}

impl fmt::Display for TreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({}) => {}", self.op, self.path.display(), self.errno)?;
        if self.errno == Errno::EXDEV {
            write!(f, " (a file system is mounted there: unmount it first)")?;
        }
        if self.failures > 1 {
            write!(f, ", and {} more failures", self.failures - 1)?;
        }
        Ok(())
    }
}

impl std::error::Error for TreeError {}

impl From<TreeError> for std::io::Error {
    fn from(e: TreeError) -> Self {
        let kind = std::io::Error::from_raw_os_error(e.errno as i32).kind();
        std::io::Error::new(kind, e)
    }
}

/// The lstat fields a walk needs.
#[derive(Debug, Clone, Copy)]
struct Meta {
    mode: u32,
    dev: u64,
    /// None on kernels before 5.8.
    mnt_id: Option<u64>,
    ino: u64,
    blocks: u64,
    mtime: SystemTime,
}

impl Meta {
    fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    fn same_mount(&self, root: &Meta) -> bool {
        self.dev == root.dev
            && match (self.mnt_id, root.mnt_id) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

fn timestamp(sec: i64, nsec: u32) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs())
    }
}

fn errno(e: rustix::io::Errno) -> Errno {
    Errno::from_raw(e.raw_os_error())
}

/// statx(dirfd, name, AT_SYMLINK_NOFOLLOW) through rustix; an empty name stats `dirfd`
/// itself. Kernels before 4.11 (or a seccomp policy that refuses statx) get fstatat,
/// without the mount id.
fn stat_at(dirfd: RawFd, name: &CStr) -> nix::Result<Meta> {
    use rustix::fs::{AtFlags, StatxFlags};
    // SAFETY: the caller's fd stays open for this call.
    let dir = unsafe { std::os::fd::BorrowedFd::borrow_raw(dirfd) };
    let mut flags = AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT;
    if name.is_empty() {
        flags |= AtFlags::EMPTY_PATH;
    }
    let mask = StatxFlags::TYPE
        | StatxFlags::MODE
        | StatxFlags::INO
        | StatxFlags::BLOCKS
        | StatxFlags::MTIME
        | StatxFlags::MNT_ID;
    match rustix::fs::statx(dir, name, flags, mask) {
        Ok(s) => {
            return Ok(Meta {
                mode: s.stx_mode as u32,
                dev: libc::makedev(s.stx_dev_major, s.stx_dev_minor),
                mnt_id: (s.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(s.stx_mnt_id),
                ino: s.stx_ino,
                blocks: s.stx_blocks,
                mtime: timestamp(s.stx_mtime.tv_sec, s.stx_mtime.tv_nsec),
            })
        }
        Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {}
        Err(e) => return Err(errno(e)),
    }
    let st = rustix::fs::statat(dir, name, flags).map_err(errno)?;
    Ok(Meta {
        mode: st.st_mode,
        dev: st.st_dev,
        mnt_id: None,
        ino: st.st_ino,
        blocks: st.st_blocks as u64,
        mtime: timestamp(st.st_mtime, st.st_mtime_nsec as u32),
    })
}

fn open_raw(parent: RawFd, name: &CStr, flags: libc::c_int) -> nix::Result<OwnedFd> {
    // SAFETY: valid fd and C string.
    let fd = Errno::result(unsafe { libc::openat(parent, name.as_ptr(), flags) })?;
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

const DIR_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

/// chmod a directory entry without following a symlink there. fchmodat() has no working
/// AT_SYMLINK_NOFOLLOW before Linux 6.6 (fchmodat2), so pin the inode with an O_PATH fd
/// (which needs no permission on it) and chmod it through /proc/self/fd; without /proc,
/// fall back to fchmodat, which the O_NOFOLLOW|O_DIRECTORY open just proved is a dir.
fn chmod_dir_nofollow(parent: RawFd, name: &CStr, mode: libc::mode_t) -> nix::Result<()> {
    let pinned = open_raw(parent, name, libc::O_PATH | DIR_FLAGS)?;
    let proc_path = CString::new(format!("/proc/self/fd/{}", pinned.as_raw_fd())).unwrap();
    // SAFETY: valid C strings and fds.
    let r = unsafe { libc::chmod(proc_path.as_ptr(), mode) };
    if r == 0 {
        return Ok(());
    }
    match Errno::last() {
        Errno::ENOENT => {
            // SAFETY: valid fd and C string.
            Errno::result(unsafe { libc::fchmodat(parent, name.as_ptr(), mode, 0) }).map(drop)
        }
        e => Err(e),
    }
}

/// Open `parent/name` as a directory, no-follow. With `fix_perms`, a directory we may not
/// read (overlay work dirs are left mode 000 by the kernel; a sandbox may chmod its own
/// dirs) is made 0700 first: we own it, or the chmod fails and so does the open.
fn open_subdir(parent: RawFd, name: &CStr, fix_perms: bool) -> nix::Result<OwnedFd> {
    match open_raw(parent, name, DIR_FLAGS) {
        Err(Errno::EACCES) if fix_perms => {
            chmod_dir_nofollow(parent, name, 0o700)?;
            open_raw(parent, name, DIR_FLAGS)
        }
        r => r,
    }
}

/// All names in the directory `fd` except `.` and `..`, read with getdents64(2)
/// (rustix's `RawDir`) so no second fd (fdopendir) is needed.
pub fn read_names(fd: RawFd) -> nix::Result<Vec<CString>> {
    Ok(read_entries(fd)?.into_iter().map(|(n, _)| n).collect())
}

/// [`read_names`] as a set: what a look-up of many names in one directory asks.
pub fn name_set(fd: RawFd) -> nix::Result<foldhash::HashSet<std::ffi::OsString>> {
    use std::os::unix::ffi::OsStringExt;
    Ok(read_entries(fd)?
        .into_iter()
        .map(|(n, _)| std::ffi::OsString::from_vec(n.into_bytes()))
        .collect())
}

/// Whether the first component of `rel` is in `names` (a directory's [`name_set`]): when
/// it is not, nothing at `rel` exists there. True when `rel` starts with no plain name.
pub fn first_listed(names: &foldhash::HashSet<std::ffi::OsString>, rel: &std::path::Path) -> bool {
    match rel.components().next() {
        Some(std::path::Component::Normal(n)) => names.contains(n),
        _ => true,
    }
}

/// [`read_names`] with each entry's type as the directory tells it (`d_type`; `Unknown`
/// where the file system does not say): a walk need not lstat what is plainly no
/// directory.
pub fn read_entries(fd: RawFd) -> nix::Result<Vec<(CString, rustix::fs::FileType)>> {
    // SAFETY: the caller's fd stays open for this call.
    let dir = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 32 * 1024];
    let mut raw = rustix::fs::RawDir::new(dir, &mut buf);
    let mut out = Vec::new();
    while let Some(entry) = raw.next() {
        let entry = entry.map_err(errno)?;
        let name = entry.file_name();
        let b = name.to_bytes();
        if b != b"." && b != b".." {
            out.push((name.to_owned(), entry.file_type()));
        }
    }
    Ok(out)
}

struct Level {
    /// None while closed to bound the fds held; reopened through `..` when needed.
    fd: Option<OwnedFd>,
    /// Names not yet visited, taken from the end.
    names: Vec<CString>,
    meta: Meta,
    /// This directory's name in its parent (None for the root of the walk).
    name: Option<CString>,
}

fn path_of(stack: &[Level], name: Option<&CStr>) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let mut p = PathBuf::from(".");
    for n in stack.iter().filter_map(|l| l.name.as_deref()).chain(name) {
        p.push(std::ffi::OsStr::from_bytes(n.to_bytes()));
    }
    p
}

#[derive(Default)]
struct Failures {
    first: Option<(&'static str, PathBuf, Errno)>,
    count: u64,
}

impl Failures {
    fn add(&mut self, op: &'static str, path: impl FnOnce() -> PathBuf, e: Errno) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some((op, path(), e));
        }
    }

    fn into_result(self) -> Result<(), TreeError> {
        match self.first {
            None => Ok(()),
            Some((op, path, errno)) => Err(TreeError {
                op,
                path,
                errno,
                failures: self.count,
            }),
        }
    }
}

/// What a walk does to each entry: `f(parent_fd, name, is_dir)` is called for every
/// non-directory, and for every directory after its contents were visited.
type Visit<'a> = dyn FnMut(RawFd, &CStr, bool) -> Result<(), (&'static str, Errno)> + 'a;

/// Walk the tree below `root`, depth first. Entries on another mount are counted in
/// `skipped_mounts` and not visited. When `removing`, unreadable directories are chmodded
/// and a skipped mount is a failure; otherwise unreadable dirs count as `unreadable`.
/// Failures do not stop the walk; the first is returned.
fn walk(
    root: OwnedFd,
    root_meta: Meta,
    removing: bool,
    stats: &mut TreeStats,
    f: &mut Visit,
) -> Result<(), TreeError> {
    let mut fails = Failures::default();
    let names = read_names(root.as_raw_fd()).map_err(|errno| TreeError {
        op: "getdents64",
        path: ".".into(),
        errno,
        failures: 1,
    })?;
    let mut stack = vec![Level {
        fd: Some(root),
        names,
        meta: root_meta,
        name: None,
    }];
    while let Some(top) = stack.last_mut() {
        let Some(name) = top.names.pop() else {
            let done = stack.pop().expect("non-empty");
            let Some(parent) = stack.last_mut() else {
                break;
            };
            if parent.fd.is_none() {
                let child = done.fd.as_ref().expect("the innermost level is open");
                match reopen_parent(child, &parent.meta) {
                    Ok(fd) => parent.fd = Some(fd),
                    Err(errno) => {
                        fails.add("openat(\"..\")", || path_of(&stack, None), errno);
                        return fails.into_result();
                    }
                }
            }
            drop(done.fd);
            let pfd = parent.fd.as_ref().expect("reopened").as_raw_fd();
            let name = done.name.expect("only the root has no name");
            if let Err((op, e)) = f(pfd, &name, true) {
                fails.add(op, || path_of(&stack, Some(&name)), e);
            }
            continue;
        };
        let pfd = top
            .fd
            .as_ref()
            .expect("the innermost level is open")
            .as_raw_fd();
        let meta = match stat_at(pfd, &name) {
            Ok(m) => m,
            Err(Errno::ENOENT) => continue, // removed under us: nothing to do
            Err(e) => {
                fails.add("statx", || path_of(&stack, Some(&name)), e);
                continue;
            }
        };
        if !meta.same_mount(&root_meta) {
            stats.skipped_mounts += 1;
            if removing {
                // Its parent cannot be removed then: name the mount, not the parent.
                fails.add(
                    "cross into mount",
                    || path_of(&stack, Some(&name)),
                    Errno::EXDEV,
                );
            }
            continue;
        }
        if !meta.is_dir() {
            stats.files += 1;
            stats.bytes += meta.blocks * 512;
            stats.newest_mtime = stats.newest_mtime.max(Some(meta.mtime));
            if let Err((op, e)) = f(pfd, &name, false) {
                fails.add(op, || path_of(&stack, Some(&name)), e);
            }
            continue;
        }
        let opened = open_subdir(pfd, &name, removing).and_then(|fd| {
            // The entry may have been swapped between statx and open: trust what we opened.
            let got = stat_at(fd.as_raw_fd(), c"")?;
            if (got.dev, got.ino) != (meta.dev, meta.ino) || !got.same_mount(&root_meta) {
                return Err(Errno::EAGAIN);
            }
            Ok((read_names(fd.as_raw_fd())?, fd))
        });
        match opened {
            Ok((names, fd)) => {
                stats.dirs += 1;
                stats.bytes += meta.blocks * 512;
                stats.newest_mtime = stats.newest_mtime.max(Some(meta.mtime));
                if let Some(i) = stack.len().checked_sub(MAX_OPEN) {
                    stack[i].fd = None;
                }
                stack.push(Level {
                    fd: Some(fd),
                    names,
                    meta,
                    name: Some(name),
                });
            }
            Err(Errno::ENOENT) => {}
            Err(Errno::EACCES) if !removing => stats.unreadable += 1,
            Err(e) => fails.add("open", || path_of(&stack, Some(&name)), e),
        }
    }
    fails.into_result()
}

/// Reopen a closed ancestor through `..` of its child, and make sure it is the directory
/// we left (the tree may have been moved meanwhile).
fn reopen_parent(child: &OwnedFd, expect: &Meta) -> nix::Result<OwnedFd> {
    let fd = open_raw(child.as_raw_fd(), c"..", DIR_FLAGS)?;
    let got = stat_at(fd.as_raw_fd(), c"")?;
    if (got.dev, got.ino) != (expect.dev, expect.ino) {
        return Err(Errno::ESTALE);
    }
    Ok(fd)
}

fn tree_err(op: &'static str, errno: Errno) -> TreeError {
    TreeError {
        op,
        path: ".".into(),
        errno,
        failures: 1,
    }
}

/// Disk usage of the tree below `dir` (not counting `dir` itself), like `du -s -x`.
/// Read-only: unreadable directories are counted in `unreadable`, never chmodded.
pub fn disk_usage(dir: &OwnedFd) -> Result<TreeStats, TreeError> {
    let mut stats = TreeStats::default();
    let fd = open_raw(dir.as_raw_fd(), c".", DIR_FLAGS).map_err(|e| tree_err("open", e))?;
    let meta = stat_at(fd.as_raw_fd(), c"").map_err(|e| tree_err("statx", e))?;
    stats.newest_mtime = Some(meta.mtime);
    // Failures below the root only make the numbers smaller; they are counted, not fatal.
    if let Err(e) = walk(fd, meta, false, &mut stats, &mut |_, _, _| Ok(())) {
        stats.unreadable += e.failures;
    }
    Ok(stats)
}

/// unlinkat, and when the directory we unlink from refuses (a sandbox made it read-only,
/// or it is an overlay work dir), make it 0700 once and try again.
fn unlink_fixing_perms(pfd: RawFd, name: &CStr, is_dir: bool) -> Result<(), (&'static str, Errno)> {
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid fd and C string.
    let unlink = || Errno::result(unsafe { libc::unlinkat(pfd, name.as_ptr(), flags) });
    let op = if is_dir {
        "unlinkat(AT_REMOVEDIR)"
    } else {
        "unlinkat"
    };
    match unlink() {
        Ok(_) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EACCES) | Err(Errno::EPERM) => {
            // SAFETY: fchmod on a directory fd we hold.
            Errno::result(unsafe { libc::fchmod(pfd, 0o700) }).map_err(|e| ("fchmod", e))?;
            match unlink() {
                Ok(_) | Err(Errno::ENOENT) => Ok(()),
                Err(e) => Err((op, e)),
            }
        }
        Err(e) => Err((op, e)),
    }
}

/// Remove `parent/name` and everything below it without following any symlink or
/// crossing into another mount. Refuses (EXDEV) when `parent/name` itself is a mount
/// point. Returns what was removed; on failure the rest was still removed where possible.
pub fn remove_tree_at(parent: &OwnedFd, name: &str) -> Result<TreeStats, TreeError> {
    remove_tree_with(parent, name, &mut unlink_fixing_perms)
}

fn remove_tree_with(
    parent: &OwnedFd,
    name: &str,
    unlink: &mut Visit,
) -> Result<TreeStats, TreeError> {
    let cname = CString::new(name).map_err(|_| tree_err("remove", Errno::EINVAL))?;
    let pfd = parent.as_raw_fd();
    let meta = stat_at(pfd, &cname).map_err(|e| tree_err("statx", e))?;
    let parent_meta = stat_at(pfd, c"").map_err(|e| tree_err("statx", e))?;
    let mut stats = TreeStats::default();
    if !meta.same_mount(&parent_meta) {
        return Err(tree_err("remove", Errno::EXDEV));
    }
    stats.newest_mtime = Some(meta.mtime);
    if !meta.is_dir() {
        unlink(pfd, &cname, false).map_err(|(op, e)| tree_err(op, e))?;
        stats.files = 1;
        stats.bytes = meta.blocks * 512;
        return Ok(stats);
    }
    // A walk reads each directory's names once. Something that adds an entry meanwhile
    // (`csbox run --session` creating the lock file of a session gc is removing) makes the
    // last rmdir fail with ENOTEMPTY: walk again, a few times, then give up and say so.
    for attempt in 1.. {
        let root = open_subdir(pfd, &cname, true).map_err(|e| tree_err("open", e))?;
        walk(root, meta, true, &mut stats, unlink)?;
        match unlink(pfd, &cname, true) {
            Err((_, Errno::ENOTEMPTY)) if attempt < 3 => continue,
            r => r.map_err(|(op, e)| tree_err(op, e))?,
        }
        break;
    }
    stats.dirs += 1;
    stats.bytes += meta.blocks * 512;
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
        assert!(st.newest_mtime.is_some());
    }

    /// Build `depth` nested dirs below `dir` through fds (a path would exceed PATH_MAX).
    fn nest(dir: &std::path::Path, depth: usize) {
        let mut fd = crate::fsutil::open_dir_nofollow(dir).unwrap();
        for _ in 0..depth {
            nix::sys::stat::mkdirat(Some(fd.as_raw_fd()), "d", nix::sys::stat::Mode::S_IRWXU)
                .unwrap();
            let f = std::fs::File::create(format!("/proc/self/fd/{}/f", fd.as_raw_fd()));
            drop(f.unwrap());
            fd = open_raw(fd.as_raw_fd(), c"d", DIR_FLAGS).unwrap();
        }
    }

    #[test]
    fn very_deep_trees_are_measured_and_removed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("t")).unwrap();
        nest(&d.path().join("t"), 1000);
        let pfd = crate::fsutil::open_dir_nofollow(d.path()).unwrap();
        let tfd = crate::fsutil::open_dir_nofollow(&d.path().join("t")).unwrap();
        let du = disk_usage(&tfd).unwrap();
        assert_eq!((du.dirs, du.files), (1000, 1000));
        let st = remove_tree_at(&pfd, "t").unwrap();
        assert_eq!((st.dirs, st.files), (1001, 1000));
        assert!(!d.path().join("t").exists());
    }

    #[test]
    fn read_only_dirs_are_made_writable_to_empty_them() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("t");
        std::fs::create_dir_all(t.join("ro")).unwrap();
        std::fs::write(t.join("ro/f"), "x").unwrap();
        std::fs::set_permissions(t.join("ro"), std::fs::Permissions::from_mode(0o500)).unwrap();
        let pfd = crate::fsutil::open_dir_nofollow(d.path()).unwrap();
        remove_tree_at(&pfd, "t").unwrap();
        assert!(!t.exists());
    }

    #[test]
    fn entries_added_during_removal_are_removed_too() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("t");
        std::fs::create_dir_all(t.join("a")).unwrap();
        std::fs::write(t.join("a/f"), "x").unwrap();
        let pfd = crate::fsutil::open_dir_nofollow(d.path()).unwrap();
        // A file appears in the root after the walk has read the root's names.
        let mut added = false;
        remove_tree_with(&pfd, "t", &mut |p, n, dir| {
            if !added {
                std::fs::write(t.join("late"), "y").unwrap();
                added = true;
            }
            unlink_fixing_perms(p, n, dir)
        })
        .unwrap();
        assert!(added && !t.exists());
    }

    #[test]
    fn tree_errors_name_the_call_and_the_path() {
        let e = TreeError {
            op: "unlinkat",
            path: "./state/x".into(),
            errno: Errno::EACCES,
            failures: 3,
        };
        assert_eq!(
            e.to_string(),
            "unlinkat(./state/x) => EACCES: Permission denied, and 2 more failures"
        );
    }
}
