//! The watch of the whole project tree (red-team 5, A5-1): every directory of the project
//! has an inotify watch, and a new entry anywhere gets the rules the exit walk applies at
//! that depth (`nested`: a nested repository's config, hooks, `commondir`, a `.git` file
//! pointing elsewhere, a bare-looking repository; the protected names in every directory:
//! `src/.npmrc`, `pkg/c/.cargo/config.toml`), at once rather than at exit.
//!
//! A watch is added to a directory *before* it is read, so what is made in it meanwhile is
//! seen either by the read or by an event; a directory made (or moved in) with contents
//! is walked when it arrives. Watches are added through `/proc/self/fd/N` of a directory
//! opened beneath the project one component at a time without following a link: a
//! session that swaps a directory for a link cannot make csbox watch (or read, or move)
//! what the link points at. A stale path (the directory was renamed) is only ever opened
//! the same way, and the rename's arrival walks the directory again under its new name.
//!
//! A git dir's watch also reports writes (IN_MODIFY: a config written through an fd kept
//! open), and each git dir's config inode is kept: a file that arrives anywhere as a
//! second name of one (a hard link) re-checks it at once; the periodic re-check of the
//! git dirs (`Work::Recheck`) is the parent module's tick (red-team 6, A6-1).
//!
//! Bounded: at most [`MAX_DIRS`] directories, and never more than half of the user's
//! `fs.inotify.max_user_watches` (the user's editor needs its own); when a watch cannot be
//! added (the bound, or the budget used up by the session or another program) csbox says
//! so once, naming the directory, and the exit walk still moves what it missed.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use nix::sys::inotify::{AddWatchFlags, InotifyEvent, WatchDescriptor};

use super::super::nested::{self, DirKind, Walk, DEPTH_CAP, ENTRY_CAP};
use super::super::quarantine::{lstat_at, open_beneath, open_dir_fixing, Sweep};
use crate::plan::ProjectView;

/// Directories watched at most (each watch pins an inode in the kernel: about 1 KiB).
pub const MAX_DIRS: usize = 50_000;

/// Entries of a git dir that the exit walk's rules look at (or that make a directory a
/// bare-looking repository).
const GIT_NAMES: [&str; 7] = [
    "config",
    "config.worktree",
    "commondir",
    "hooks",
    "HEAD",
    "objects",
    "refs",
];

struct Dir {
    path: PathBuf,
    depth: usize,
    kind: DirKind,
    /// (st_dev, st_ino): one watch per directory, whatever its path now.
    key: (u64, u64),
}

/// What an event asks for: a look at one directory's entries, or a walk of a directory
/// that arrived (`parent`, `name`).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Work {
    Look(PathBuf, usize),
    NewDir(PathBuf, OsString, usize),
    /// A re-check of a watched git dir's files (`Walk::recheck_git`).
    Recheck(PathBuf),
    /// A file that arrived in `dir` under `name`: if it is a second name of a watched
    /// git dir's config, that git dir is re-checked at once (its config's link count).
    Arrived(PathBuf, OsString),
}

/// `Work::Arrived` per batch of events at most (a build makes many files: the rest is
/// left to the next tick's re-check).
const ARRIVED_PER_BATCH: usize = 256;

/// Git dirs re-checked at most per tick (a few `fstatat` and at most a small read each).
const RECHECK_PER_TICK: usize = 64;

pub(super) struct Tree {
    dirs: HashMap<WatchDescriptor, Dir>,
    by_key: HashMap<(u64, u64), WatchDescriptor>,
    bound: usize,
    max_user_watches: Option<usize>,
    root: PathBuf,
    steering: Vec<(OsString, PathBuf)>,
    /// The protect patterns (`mise.*.toml`): a name that matches one is looked at in any
    /// directory, as a steering name is.
    patterns: Vec<String>,
    /// (st_dev, st_ino) of each watched git dir's `config`, as last seen, and the git dir.
    configs: HashMap<(u64, u64), PathBuf>,
    /// Said on stderr already: a bound or the budget reached, the walk cut short.
    said_full: bool,
    said_cut: bool,
}

fn read_max_user_watches() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl Tree {
    pub(super) fn new(project: &ProjectView) -> Tree {
        let max_user_watches = read_max_user_watches();
        Tree {
            dirs: HashMap::new(),
            by_key: HashMap::new(),
            configs: HashMap::new(),
            bound: max_user_watches.map_or(MAX_DIRS, |m| MAX_DIRS.min(m / 2)),
            max_user_watches,
            root: project.path.clone(),
            steering: nested::steering(project),
            patterns: project.patterns.clone(),
            said_full: false,
            said_cut: false,
        }
    }

    /// Watch `fd` (at `path`); false ends the walk that found it (only when stopping).
    fn add(
        &mut self,
        ino: &nix::sys::inotify::Inotify,
        fd: &OwnedFd,
        path: &Path,
        depth: usize,
        kind: DirKind,
    ) -> bool {
        let Ok(st) = nix::sys::stat::fstat(fd.as_raw_fd()) else {
            return true;
        };
        let key = (st.st_dev, st.st_ino);
        if kind == DirKind::Git {
            if let Some(c) = config_key(fd) {
                self.configs.insert(c, path.to_path_buf());
            }
        }
        if let Some(d) = self.by_key.get(&key).and_then(|wd| self.dirs.get_mut(wd)) {
            // Known: it may have moved (its new name is the one to open from now on).
            d.path = path.to_path_buf();
            d.depth = depth;
            d.kind = kind;
            return true;
        }
        if self.dirs.len() >= self.bound {
            self.full(path, None);
            return true;
        }
        // The very directory opened beneath the project (the magic link is followed to
        // it, and to nothing a name in the project could point at).
        let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
        // A git dir's files are also re-checked on a write through an fd kept open
        // (IN_MODIFY: no IN_CLOSE_WRITE ever comes); the tree's directories are not
        // (every write of a build would wake the thread).
        let mask = match kind {
            DirKind::Git => mask() | AddWatchFlags::IN_MODIFY,
            _ => mask(),
        };
        match ino.add_watch(proc.as_str(), mask) {
            Ok(wd) => {
                self.by_key.insert(key, wd);
                let path = path.to_path_buf();
                self.dirs.insert(
                    wd,
                    Dir {
                        path,
                        depth,
                        kind,
                        key,
                    },
                );
            }
            Err(e @ (nix::errno::Errno::ENOSPC | nix::errno::Errno::ENOMEM)) => {
                self.full(path, Some(e))
            }
            Err(_) => {}
        }
        true
    }

    /// Say once that `path` is not watched, why, and what it means.
    fn full(&mut self, path: &Path, e: Option<nix::errno::Errno>) {
        if std::mem::replace(&mut self.said_full, true) {
            return;
        }
        let budget = self
            .max_user_watches
            .map(|m| format!("fs.inotify.max_user_watches is {m}"))
            .unwrap_or_else(|| "fs.inotify.max_user_watches is unknown".into());
        let why = match e {
            None => format!(
                "csbox watches at most {} directories of a project ({MAX_DIRS}, and at most half of your inotify budget: {budget})",
                self.bound
            ),
            Some(e) => format!(
                "inotify_add_watch: {} ({budget}: this session or other programs of yours hold the rest)",
                e.desc()
            ),
        };
        crate::warn!(
            "the live watch of this session's project stopped at {}: {why}. What the session makes in directories csbox does not watch is moved only when it ends, not at once: run no git, npm or editor below them while it runs, or raise the budget (sysctl fs.inotify.max_user_watches=N)",
            crate::human::printable_path(path)
        );
    }

    fn cut(&mut self, at: Option<String>) {
        if let Some(at) = at {
            if !std::mem::replace(&mut self.said_cut, true) {
                crate::warn!(
                    "the live watch of this session's project stopped at {at}: it goes no deeper than {DEPTH_CAP} levels and through at most {ENTRY_CAP} entries at once. What the session makes below is moved only when it ends: run no git, npm or editor there while it runs"
                );
            }
        }
    }

    /// The path of the git dir watched as `wd`, if it is one.
    pub(super) fn git_dir(&self, wd: WatchDescriptor) -> Option<&Path> {
        let d = self.dirs.get(&wd)?;
        (d.kind == DirKind::Git).then_some(d.path.as_path())
    }

    /// A tick's share of the watched git dirs' re-checks: at most [`RECHECK_PER_TICK`],
    /// from the `n`th on (the caller moves on by as many each tick), and how many in all.
    pub(super) fn recheck_work(&self, n: usize) -> (Vec<Work>, usize) {
        let mut gits: Vec<&Path> = self
            .dirs
            .values()
            .filter(|d| d.kind == DirKind::Git)
            .map(|d| d.path.as_path())
            .collect();
        gits.sort_unstable();
        let all = gits.len();
        let take = all.min(RECHECK_PER_TICK);
        let work = (0..take)
            .map(|i| Work::Recheck(gits[(n + i) % all].to_path_buf()))
            .collect();
        (work, all)
    }

    pub(super) fn forget(&mut self, wd: WatchDescriptor) {
        if let Some(d) = self.dirs.remove(&wd) {
            self.by_key.remove(&d.key);
            self.configs.retain(|_, g| *g != d.path);
        }
    }

    /// What `ev` asks for, added to `work`.
    pub(super) fn note(&self, ev: &InotifyEvent, work: &mut Vec<Work>) {
        let (Some(d), Some(name)) = (self.dirs.get(&ev.wd), ev.name.as_ref()) else {
            return;
        };
        let room = work.len() < ARRIVED_PER_BATCH;
        let mut push = |w: Work| {
            if !work.contains(&w) {
                work.push(w);
            }
        };
        let up = |n: usize| {
            let p = d.path.ancestors().nth(n).filter(|_| d.depth >= n)?;
            Some(Work::Look(p.to_path_buf(), d.depth - n))
        };
        let push_up = |n: usize, push: &mut dyn FnMut(Work)| {
            if let Some(w) = up(n) {
                push(w)
            }
        };
        let git_name = GIT_NAMES.iter().any(|g| name.as_bytes() == g.as_bytes());
        match d.kind {
            DirKind::Tree => {
                let arrived = ev
                    .mask
                    .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO);
                if ev.mask.contains(AddWatchFlags::IN_ISDIR) && arrived && name != ".git" {
                    push(Work::NewDir(d.path.clone(), name.clone(), d.depth + 1));
                }
                // A link made to a watched config (`ln pkg/r/.git/config t/l`) arrives
                // here, where its name says nothing.
                let file = arrived && !ev.mask.contains(AddWatchFlags::IN_ISDIR);
                if file && room && !self.configs.is_empty() {
                    push(Work::Arrived(d.path.clone(), name.clone()));
                }
                if name == ".git"
                    || git_name
                    || self.steering.iter().any(|(f, _)| f == name)
                    || crate::plan::matches_any(&self.patterns, name.as_encoded_bytes())
                {
                    push(Work::Look(d.path.clone(), d.depth));
                }
                if git_name {
                    push_up(1, &mut push);
                }
                // `pkg/x/.claude/settings.local.json`: the rule is `pkg/x`'s.
                for (_, rel) in &self.steering {
                    let comps: Vec<&OsStr> = rel.iter().collect();
                    for i in 1..comps.len() {
                        let within = comps[..i].iter().collect::<PathBuf>();
                        if comps[i] == name.as_os_str() && d.path.ends_with(&within) {
                            push_up(i, &mut push);
                        }
                    }
                }
            }
            DirKind::Git if git_name => {
                push(Work::Look(d.path.clone(), d.depth));
                push_up(1, &mut push);
            }
            DirKind::Git => {}
            DirKind::Hooks => {
                push_up(1, &mut push);
                push_up(2, &mut push);
            }
        }
    }

    /// Walk the whole project: watch every directory, and move what the session made
    /// since `since` (the exit walk's rules).
    pub(super) fn walk_all(
        &mut self,
        sweep: &mut Sweep<'_>,
        ino: &nix::sys::inotify::Inotify,
        since: SystemTime,
        stopping: &AtomicBool,
    ) {
        let root = self.root.clone();
        let mut f = |fd: &OwnedFd, p: &Path, depth, kind| {
            !stopping.load(Ordering::Relaxed) && self.add(ino, fd, p, depth, kind)
        };
        let Some((mut walk, root_fd)) = Walk::new(sweep, since, Some(&mut f)) else {
            return;
        };
        walk.visit(&root_fd, &root, 0);
        let at = walk.cut_note();
        drop(walk);
        self.cut(at);
    }

    /// Do `work`: look at the directories named, walk (and watch) those that arrived.
    pub(super) fn apply(
        &mut self,
        work: Vec<Work>,
        sweep: &mut Sweep<'_>,
        ino: &nix::sys::inotify::Inotify,
        since: SystemTime,
        stopping: &AtomicBool,
    ) {
        if work.is_empty() {
            return;
        }
        let root = self.root.clone();
        let mut deep = None;
        // Not borrowed through `f`: read and updated here, put back at the end.
        let mut configs = std::mem::take(&mut self.configs);
        let mut f = |fd: &OwnedFd, p: &Path, depth, kind| {
            !stopping.load(Ordering::Relaxed) && self.add(ino, fd, p, depth, kind)
        };
        let Some((mut walk, root_fd)) = Walk::new(sweep, since, Some(&mut f)) else {
            return;
        };
        let dev = nix::sys::stat::fstat(root_fd.as_raw_fd()).map_or(0, |s| s.st_dev);
        // Beneath the top, one directory at a time, no link followed: a path the session
        // turned into a link (`pkg/d -> /elsewhere`) opens nothing.
        let open = |p: &Path| open_beneath(&root_fd, p.strip_prefix(&root).ok()?);
        for w in work {
            match w {
                Work::Look(p, depth) => {
                    if let Some(fd) = open(&p) {
                        walk.look(&fd, &p, depth);
                        // git rewrites its config by renaming a lock file over it: the
                        // inode a link would share is the new one.
                        if p.file_name().is_some_and(|n| n == ".git")
                            || configs.values().any(|g| *g == p)
                        {
                            note_config(&mut configs, &fd, p);
                        }
                    }
                }
                Work::Recheck(p) => {
                    if let Some(fd) = open(&p) {
                        walk.recheck_git(&fd, &p);
                        note_config(&mut configs, &fd, p);
                    }
                }
                Work::Arrived(dir, name) => {
                    let (Some(fd), Ok(c)) = (open(&dir), CString::new(name.as_bytes())) else {
                        continue;
                    };
                    let linked = lstat_at(&fd, &c)
                        .filter(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_nlink > 1);
                    let git = linked.and_then(|st| configs.get(&(st.st_dev, st.st_ino)));
                    if let Some(g) = git.cloned() {
                        if let Some(gfd) = open(&g) {
                            walk.recheck_git(&gfd, &g);
                        }
                    }
                }
                Work::NewDir(parent, name, depth) => {
                    if depth >= DEPTH_CAP {
                        deep.get_or_insert(parent.join(&name));
                        continue;
                    }
                    let (Some(pfd), Ok(c)) = (open(&parent), CString::new(name.as_bytes())) else {
                        continue;
                    };
                    let is_dir = lstat_at(&pfd, &c).is_some_and(|st| {
                        st.st_mode & libc::S_IFMT == libc::S_IFDIR && st.st_dev == dev
                    });
                    let sub = name
                        .to_str()
                        .filter(|_| is_dir)
                        .and_then(|n| open_dir_fixing(&pfd, n));
                    if let Some(sub) = sub {
                        walk.visit(&sub, &parent.join(&name), depth);
                    }
                }
            }
        }
        let at = walk
            .cut_note()
            .or_else(|| deep.map(|d| crate::human::printable_path(&d)));
        drop(walk);
        self.configs.extend(configs);
        self.cut(at);
    }
}

/// (st_dev, st_ino) of the regular file `config` in git dir `g`.
fn config_key(g: &OwnedFd) -> Option<(u64, u64)> {
    let c = CString::new("config").expect("no NUL");
    lstat_at(g, &c)
        .filter(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
        .map(|st| (st.st_dev, st.st_ino))
}

/// Git dir `g` (at `path`) has the `config` it has now.
fn note_config(configs: &mut HashMap<(u64, u64), PathBuf>, g: &OwnedFd, path: PathBuf) {
    configs.retain(|_, p| *p != path);
    if let Some(c) = config_key(g) {
        configs.insert(c, path);
    }
}

/// What a watch reports: new entries, and writes, renames and mode changes of them.
pub(super) fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_ONLYDIR
}
