//! At exit, the code-steering files a session made in its project (a `.git/commondir`
//! pointing git at a config of its own, a `.vscode/tasks.json`, a `.claude/settings.local.json`
//! that allows every command) are moved out of the way, into the session's directory,
//! before anything on the host reads them: the user reviews them there and moves back
//! what they want (`csbox show` lists them).
//!
//! The project is hostile here: every path is reached from its root one component at a
//! time without following a link, nothing is opened but directories (non-blocking), and a
//! link the user had there at the start is told from a replacement by its target.

use std::ffi::{CStr, CString, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use super::meta::Quarantined;
use crate::fsutil::{openat_nofollow, read_names, read_small_at};
#[cfg(test)]
use crate::plan::Watched;
use crate::plan::{ProjectView, WatchedDir};
use nix::sys::stat::Mode;

/// Where moved files go, in the session directory.
pub const QUARANTINE_DIR: &str = "quarantine";
/// Entries of a watched directory looked at, at most.
const DIR_CAP: usize = 1024;

/// Where the session directory is: its fd (opened without following a link) and path.
pub struct SessionDir<'a> {
    pub fd: &'a OwnedFd,
    pub path: &'a Path,
    pub id: &'a str,
}

use crate::fsutil::dir_flags;

fn name_of(c: &std::ffi::OsStr) -> Option<&str> {
    c.to_str().filter(|s| !s.is_empty() && !s.contains('/'))
}

/// `parent/name`, a directory, opened without following a link; where the session took
/// the owner's permission on it away (`chmod 0 .git`), given back first (see
/// [`make_movable`]).
pub(super) fn open_dir_fixing(parent: &OwnedFd, name: &str) -> Option<OwnedFd> {
    match openat_nofollow(parent, name, dir_flags(), Mode::empty()) {
        Ok(fd) => Some(fd),
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            let c = CString::new(name).ok()?;
            chmod_owner_rwx(parent, &c);
            openat_nofollow(parent, name, dir_flags(), Mode::empty()).ok()
        }
        Err(_) => None,
    }
}

/// `rel` (below `root`) opened one directory at a time, never through a link.
pub(super) fn open_beneath(root: &OwnedFd, rel: &Path) -> Option<OwnedFd> {
    let mut cur: Option<OwnedFd> = None;
    for c in rel.components() {
        let std::path::Component::Normal(n) = c else {
            return None;
        };
        let parent = cur.as_ref().unwrap_or(root);
        cur = Some(open_dir_fixing(parent, name_of(n)?)?);
    }
    match cur {
        Some(fd) => Some(fd),
        None => openat_nofollow(root, ".", dir_flags(), Mode::empty()).ok(),
    }
}

pub(super) fn lstat_at(dir: &OwnedFd, name: &CStr) -> Option<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: a valid dir fd and C string; st is written on success.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    // SAFETY: fstatat succeeded.
    (r == 0).then(|| unsafe { st.assume_init() })
}

fn read_link_at(dir: &OwnedFd, name: &CStr) -> Option<PathBuf> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: a valid dir fd, C string and buffer of the given length.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(PathBuf::from(std::ffi::OsString::from(
        std::ffi::OsStr::from_bytes(&buf),
    )))
}

fn errno_string() -> String {
    std::io::Error::last_os_error().to_string()
}

pub(super) struct Sweep<'a> {
    project: &'a ProjectView,
    session: SessionDir<'a>,
    /// The quarantine dir, made on the first move.
    qdir: Option<OwnedFd>,
    out: Vec<Quarantined>,
    since: Option<std::time::SystemTime>,
}

impl<'a> Sweep<'a> {
    /// The root (the project or a git dir) `p` lies strictly below.
    fn root_path(&self, p: &Path) -> Option<&'a Path> {
        let project: &'a ProjectView = self.project;
        let roots = std::iter::once(&project.path).chain(&project.git_dirs);
        roots
            .filter(|r| p.starts_with(r) && p != r.as_path())
            .max_by_key(|r| r.components().count())
            .map(PathBuf::as_path)
    }

    /// The root (the project or a git dir) `p` lies in, opened, and `p` relative to it.
    fn root_of(&self, p: &Path) -> Option<(OwnedFd, PathBuf)> {
        let root = self.root_path(p)?;
        let fd = crate::fsutil::open_dir_nofollow(root).ok()?;
        Some((fd, p.strip_prefix(root).ok()?.to_path_buf()))
    }

    /// `path` if the session made it (or replaced the link `link` there), moved away.
    fn check(&mut self, path: &Path, link: Option<&Path>) {
        let Some((root, rel)) = self.root_of(path) else {
            return;
        };
        let (Some(parent_rel), Some(name)) = (rel.parent(), rel.file_name()) else {
            return;
        };
        let Some(parent) = open_beneath(&root, parent_rel) else {
            self.link_on_the_way(&root, path, &rel);
            return;
        };
        let Ok(cname) = CString::new(name.as_bytes()) else {
            return;
        };
        let Some(st) = lstat_at(&parent, &cname) else {
            return;
        };
        let is_link = st.st_mode & libc::S_IFMT == libc::S_IFLNK;
        if let Some(t) = link {
            if is_link && read_link_at(&parent, &cname).as_deref() == Some(t) {
                return;
            }
        }
        if !is_link && name.to_str().is_some_and(|n| harmless(&parent, n, path)) {
            return;
        }
        self.quarantine(&parent, &cname, path, link);
    }

    /// A watched path that cannot be reached through directories: a link the session
    /// made on the way (`.cargo -> t/c`, so `.cargo/config.toml` is its file) is moved
    /// (red-team 4, A4-11); one older than the run is the user's and stays.
    fn link_on_the_way(&mut self, root: &OwnedFd, path: &Path, rel: &Path) {
        let Some(since) = self.since else { return };
        let n = rel.components().count();
        let Some(root_path) = path.ancestors().nth(n) else {
            return;
        };
        let Ok(mut cur) = root.try_clone() else {
            return;
        };
        let mut at = root_path.to_path_buf();
        for c in rel.parent().into_iter().flat_map(|p| p.components()) {
            let std::path::Component::Normal(name) = c else {
                return;
            };
            let Some(name) = name_of(name) else { return };
            at.push(name);
            let cname = CString::new(name).expect("no NUL");
            let Some(st) = lstat_at(&cur, &cname) else {
                return;
            };
            match st.st_mode & libc::S_IFMT {
                libc::S_IFLNK => {
                    if changed_since(&st, since) {
                        self.quarantine(&cur, &cname, &at, None);
                    }
                    return;
                }
                libc::S_IFDIR => match open_dir_fixing(&cur, name) {
                    Some(fd) => cur = fd,
                    None => return,
                },
                _ => return,
            }
        }
    }

    /// The entries of a watched directory that were not there at the start, looked at
    /// for the files it names.
    fn check_dir(&mut self, wd: &WatchedDir) {
        let Some((root, rel)) = self.root_of(&wd.dir) else {
            return;
        };
        let Some(dir) = open_beneath(&root, &rel) else {
            return;
        };
        let Ok(names) = read_names(dir.as_raw_fd()) else {
            return;
        };
        for entry in names.into_iter().take(DIR_CAP) {
            let e = std::ffi::OsStr::from_bytes(entry.to_bytes());
            if wd.known.iter().any(|k| k.as_bytes() == e.as_bytes()) {
                continue;
            }
            let Some(sub) =
                name_of(e).and_then(|n| openat_nofollow(&dir, n, dir_flags(), Mode::empty()).ok())
            else {
                continue;
            };
            for n in &wd.names {
                let cname = CString::new(n.as_str()).expect("no NUL");
                let path = wd.dir.join(e).join(n);
                let st = lstat_at(&sub, &cname);
                let is_link = st.is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK);
                if st.is_none() || (!is_link && harmless(&sub, n, &path)) {
                    continue;
                }
                self.quarantine(&sub, &cname, &path, None);
            }
        }
    }

    fn qdir(&mut self) -> Option<&OwnedFd> {
        if self.qdir.is_none() {
            let fd = self.session.fd;
            let _ = nix::sys::stat::mkdirat(
                Some(fd.as_raw_fd()),
                QUARANTINE_DIR,
                Mode::from_bits_truncate(0o700),
            );
            self.qdir = openat_nofollow(fd, QUARANTINE_DIR, dir_flags(), Mode::empty()).ok();
        }
        self.qdir.as_ref()
    }

    /// Move `parent/name` into the quarantine dir (as `<n>-<name>`), or, across file
    /// systems, aside beside itself; then put the user's link back.
    pub(super) fn quarantine(
        &mut self,
        parent: &OwnedFd,
        name: &CStr,
        path: &Path,
        link: Option<&Path>,
    ) {
        let base = String::from_utf8_lossy(name.to_bytes()).replace('/', "_");
        let n = self.out.len();
        let mut rec = Quarantined {
            path: path.to_path_buf(),
            moved_to: None,
            link_restored: None,
            error: None,
        };
        make_movable(parent, name);
        // A name no earlier move (of this sweep, an earlier run of the session, or the
        // watch while it ran) took.
        let mut moved = Err(libc::EXDEV);
        let mut taken = String::new();
        if let Some(q) = self.qdir() {
            for k in n..n + 10_000 {
                taken = format!("{k}-{base}");
                let target = CString::new(taken.as_str()).expect("no NUL");
                moved = rename_noreplace(parent, name, q, &target);
                if moved != Err(libc::EEXIST) {
                    break;
                }
            }
        }
        match moved {
            // Gone before the move: the command removed it, or the watch of another
            // session in the same project moved it first. Nothing is left to report.
            Err(libc::ENOENT) => return,
            Ok(()) => {
                let to = self.session.path.join(QUARANTINE_DIR).join(&taken);
                rec.moved_to = Some(to);
            }
            Err(libc::EXDEV) => {
                // Aside, under a name the session cannot guess and so cannot take first
                // (red-team 3, A3-15): it would make the rename fail and the file stay.
                let mut last = libc::EEXIST;
                for _ in 0..16 {
                    let aside = format!("{base}.csbox-quarantined-{:016x}", random_u64());
                    let c = CString::new(aside.clone()).expect("no NUL");
                    match rename_noreplace(parent, name, parent, &c) {
                        Ok(()) => {
                            rec.moved_to = Some(path.with_file_name(aside));
                            break;
                        }
                        Err(e) => last = e,
                    }
                    if last != libc::EEXIST {
                        break;
                    }
                }
                if rec.moved_to.is_none() {
                    rec.error = Some(format!(
                        "renameat2({}): {}",
                        path.display(),
                        std::io::Error::from_raw_os_error(last)
                    ));
                }
            }
            Err(e) => {
                rec.error = Some(format!(
                    "renameat2({}): {}",
                    path.display(),
                    std::io::Error::from_raw_os_error(e)
                ))
            }
        }
        if let (Some(t), Some(_)) = (link, &rec.moved_to) {
            let tc = CString::new(t.as_os_str().as_bytes()).expect("no NUL in a link");
            // SAFETY: valid C strings and dir fd.
            if unsafe { libc::symlinkat(tc.as_ptr(), parent.as_raw_fd(), name.as_ptr()) } == 0 {
                rec.link_restored = Some(t.to_path_buf());
            } else {
                rec.error = Some(format!("symlinkat({}): {}", path.display(), errno_string()));
            }
        }
        self.out.push(rec);
    }
}

/// What git itself writes there, which steers nothing: `git worktree add`'s `commondir`
/// of `../..` (the common dir itself), `git init`'s or `git clone`'s config (core
/// settings, remotes, branches: see `gitconfig::is_plain`) and hooks dir of `*.sample`
/// files only. A session that runs `git init` keeps its repository as git made it.
fn harmless(dir: &OwnedFd, name: &str, path: &Path) -> bool {
    let parent = path.parent().and_then(Path::file_name);
    let grandparent = path
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name);
    let git_dir = parent == Some(".git".as_ref()) || grandparent == Some("modules".as_ref());
    match name {
        "commondir" if grandparent == Some("worktrees".as_ref()) => read_small_at(dir, name, 4096)
            .is_ok_and(|t| {
                let t = String::from_utf8_lossy(&t);
                let common = path.parent().and_then(Path::parent).and_then(Path::parent);
                // Empty: made by `git worktree add`, not written yet (git writes it in
                // place, and the write wakes the watch again); moving it then broke the
                // session's own worktree under load (the full suite, red-team 10 round).
                t.trim().is_empty()
                    || t.trim() == "../.."
                    || common.is_some_and(|c| Path::new(t.trim()) == c)
            }),
        "config" if git_dir => read_small_at(dir, name, 1 << 20)
            .is_ok_and(|t| crate::gitconfig::is_plain(&String::from_utf8_lossy(&t))),
        "hooks" if git_dir => samples_only(dir, name),
        _ => false,
    }
}

/// A directory of regular `*.sample` files and nothing else (git runs none of them).
pub(super) fn samples_only(dir: &OwnedFd, name: &str) -> bool {
    let Ok(hooks) = openat_nofollow(dir, name, dir_flags(), Mode::empty()) else {
        return false;
    };
    let Ok(names) = read_names(hooks.as_raw_fd()) else {
        return false;
    };
    names.len() <= DIR_CAP
        && names.iter().all(|n| {
            n.to_bytes().ends_with(b".sample")
                && lstat_at(&hooks, n).is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
        })
}

/// Give the owner (csbox runs as the session's user) write and search permission on
/// `parent` and, for a directory, on `parent/name`, where the session took them away: a
/// `chmod 0555 .git` (or of the directory to move, whose `..` a rename to another parent
/// rewrites) must not keep the file in place (red-team 4, A4-9). The modes stay so: a
/// `.git` without them is broken for you anyway.
fn make_movable(parent: &OwnedFd, name: &CStr) {
    let owner_rwx = 0o700;
    if let Ok(st) = nix::sys::stat::fstat(parent.as_raw_fd()) {
        if st.st_mode & owner_rwx != owner_rwx {
            let _ = nix::sys::stat::fchmod(
                parent.as_raw_fd(),
                Mode::from_bits_truncate((st.st_mode | owner_rwx) & 0o7777),
            );
        }
    }
    chmod_owner_rwx(parent, name);
}

/// Add u+rwx to the directory `parent/name` where it lacks one (nothing for another kind).
fn chmod_owner_rwx(parent: &OwnedFd, name: &CStr) {
    let owner_rwx = 0o700;
    let Some(st) = lstat_at(parent, name) else {
        return;
    };
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR && st.st_mode & owner_rwx != owner_rwx {
        // O_PATH opens it whatever its mode, and never through a link; chmod through
        // /proc/self/fd reaches that very directory.
        // SAFETY: openat on a valid dir fd and C string.
        let fd = unsafe {
            libc::openat(
                parent.as_raw_fd(),
                name.as_ptr(),
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: a fresh descriptor we own.
            let d = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            let p = CString::new(format!("/proc/self/fd/{}", d.as_raw_fd())).expect("no NUL");
            // SAFETY: a valid C string.
            unsafe { libc::chmod(p.as_ptr(), (st.st_mode | owner_rwx) & 0o7777) };
        }
    }
}

/// Whether `st` changed at or after `since` (its ctime: no call sets it back).
pub(super) fn changed_since(st: &libc::stat, since: std::time::SystemTime) -> bool {
    let Ok(d) = since.duration_since(std::time::UNIX_EPOCH) else {
        return true;
    };
    let (s, ns) = (d.as_secs() as i64, d.subsec_nanos() as i64);
    (st.st_ctime, st.st_ctime_nsec) >= (s, ns)
}

/// Now, as a baseline for [`changed_since`] no later change can fall before: the kernel
/// stamps a change time from the coarse clock (the last tick, up to a few ms behind the
/// fine one), so a file written right after a fine-grained `now` may carry an earlier
/// ctime. Taken from that coarse clock itself, which only moves forward between ticks.
pub fn ctime_floor() -> std::time::SystemTime {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut t) } != 0 {
        // Not to be had (a kernel without it): a tick's worth before the fine clock.
        return std::time::SystemTime::now() - std::time::Duration::from_millis(20);
    }
    std::time::UNIX_EPOCH + std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most the buffer's length.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    u64::from_ne_bytes(b)
}

fn rename_noreplace(from: &OwnedFd, name: &CStr, to: &OwnedFd, new: &CStr) -> Result<(), i32> {
    // SAFETY: valid dir fds and C strings.
    let r = unsafe {
        libc::renameat2(
            from.as_raw_fd(),
            name.as_ptr(),
            to.as_raw_fd(),
            new.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    }
}

/// Move away what the session made among the project's watched paths (see the module
/// doc): called after the sandbox is gone, so nothing inside races it.
/// `since`: when the run began (a link the session put on the way to a watched path
/// after it is moved too), or None.
pub fn sweep(
    project: &ProjectView,
    session: SessionDir<'_>,
    since: Option<std::time::SystemTime>,
) -> Vec<Quarantined> {
    let mut s = Sweep::new(project, session, since);
    s.watched();
    s.out
}

/// [`sweep`], then the git repositories nested in the project that the session made or
/// changed since `since` (see `nested`): at exit, when nothing inside races it.
pub fn sweep_all(
    project: &ProjectView,
    session: SessionDir<'_>,
    since: Option<std::time::SystemTime>,
) -> (Vec<Quarantined>, Option<String>) {
    let mut s = Sweep::new(project, session, since);
    s.watched();
    let note = since.and_then(|t| super::nested::sweep(&mut s, t));
    (s.out, note)
}

impl<'a> Sweep<'a> {
    pub(super) fn new(
        project: &'a ProjectView,
        session: SessionDir<'a>,
        since: Option<std::time::SystemTime>,
    ) -> Self {
        Sweep {
            project,
            session,
            qdir: None,
            out: Vec::new(),
            since,
        }
    }
}

impl Sweep<'_> {
    /// The project's watched paths and dirs (not the nested repositories).
    pub(super) fn watched(&mut self) {
        // Each root's top is listed once: a watched path whose first component is not
        // there does not exist (a link on the way would be listed), and most of the
        // fifty-odd watched names are absent from a project (5 system calls each).
        let mut tops: foldhash::HashMap<&Path, Option<foldhash::HashSet<OsString>>> =
            Default::default();
        let project = self.project;
        for w in &project.watched {
            if let Some(root) = self.root_path(&w.path) {
                let top = tops.entry(root).or_insert_with(|| {
                    let fd = crate::fsutil::open_dir_nofollow(root).ok()?;
                    crate::fsutil::name_set(fd.as_raw_fd()).ok()
                });
                let rel = w.path.strip_prefix(root).unwrap_or(&w.path);
                if top
                    .as_ref()
                    .is_some_and(|t| !crate::fsutil::first_listed(t, rel))
                {
                    continue;
                }
            }
            self.check(&w.path, w.link.as_deref());
        }
        for wd in &self.project.watched_dirs {
            self.check_dir(wd);
        }
        self.patterns();
    }

    /// The entries of the project's top that match a protect pattern (`*.code-workspace`)
    /// and were not there at the start (neither protected nor watched), made or changed
    /// since the run began when that is known.
    fn patterns(&mut self) {
        let project = self.project;
        if project.patterns.is_empty() {
            return;
        }
        let Ok(root) = crate::fsutil::open_dir_nofollow(&project.path) else {
            return;
        };
        let Ok(names) = read_names(root.as_raw_fd()) else {
            return;
        };
        let known = |p: &Path| {
            project.protected.iter().any(|q| q == p) || project.watched.iter().any(|w| w.path == p)
        };
        for n in names.iter().take(crate::plan::TOP_NAMES_CAP) {
            let b = n.to_bytes();
            let path = project.path.join(std::ffi::OsStr::from_bytes(b));
            if !crate::plan::matches_any(&project.patterns, b) || known(&path) {
                continue;
            }
            let new = match (self.since, lstat_at(&root, n)) {
                (_, None) => false,
                (Some(t), Some(st)) => changed_since(&st, t),
                (None, Some(_)) => true,
            };
            if new {
                self.quarantine(&root, n, &path, None);
            }
        }
    }

    pub(super) fn project(&self) -> &ProjectView {
        self.project
    }

    /// What this sweep moved, in order.
    pub(super) fn into_moves(self) -> Vec<Quarantined> {
        self.out
    }
}

/// One line for the user about `q`: "while this session ran", not "this session made", since
/// another session in the same project may have made it (red-team 9b, A7-7).
pub fn describe(q: &Quarantined) -> String {
    let what = match (&q.moved_to, &q.error) {
        (Some(to), _) => format!("moved it to {}", crate::human::printable_path(to)),
        (None, e) => format!(
            "it could NOT be moved ({}): delete it",
            e.as_deref().unwrap_or("?")
        ),
    };
    let link = q
        .link_restored
        .as_ref()
        .map(|t| {
            format!(
                "; your link to {} is back in its place",
                crate::human::printable_path(t)
            )
        })
        .unwrap_or_default();
    let path = crate::human::printable_path(&q.path);
    match super::gitstate::after_move(&q.path).filter(|_| q.moved_to.is_some()) {
        Some(git) => format!(
            "while this session ran, {path} was made in the project: {git}; csbox {what}{link}. Review it before you move it back"
        ),
        None => format!(
            "while this session ran, {path} was made in the project: such files run code on your host later (git config and hooks, editor tasks, agent settings); csbox {what}{link}. Review it before you move it back"
        ),
    }
}

/// [`sweep_all`] for a session csbox holds, each move said on stderr and recorded in its
/// metadata (the caller writes it); the number moved. `since`: when the run began (the
/// nested repositories are looked at for what changed after it), or None to leave them.
pub fn sweep_session(
    session: &mut super::LiveSession,
    project: &ProjectView,
    since: Option<std::time::SystemTime>,
) -> usize {
    let dir = SessionDir {
        fd: session.dir_fd(),
        path: &session.dir,
        id: session.id.as_str(),
    };
    let (made, note) = sweep_all(project, dir, since);
    if let Some(n) = note {
        crate::warn!("{n}");
    }
    record(session, made)
}

/// Say each of `made` on stderr and record it in the session's metadata (the caller
/// writes it); the number moved.
pub fn record(session: &mut super::LiveSession, made: Vec<Quarantined>) -> usize {
    // One line a path (a session that plants a file again and again makes many moves).
    let mut said: Vec<&Path> = Vec::new();

    for q in &made {
        if said.contains(&q.path.as_path()) {
            continue;
        }
        said.push(&q.path);
        let times = made.iter().filter(|o| o.path == q.path).count();
        if times > super::livewatch::REPLANTS {
            crate::warn!(
                "this session made {} {times} times while it ran: csbox stopped it (a file put back again and again is after the moment before each move, in which a git or an editor on your host reads it)",
                crate::human::printable_path(&q.path)
            );
        }
        crate::warn!("{}", describe(q));
    }
    session
        .meta
        .created_protected
        .extend(made.iter().map(|q| q.path.clone()));
    let n = made.iter().filter(|q| q.moved_to.is_some()).count();
    session.meta.quarantined.extend(made);
    n
}

#[cfg(test)]
mod tests;
