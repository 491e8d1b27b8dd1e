//! Git repositories nested in the project, looked at when a session ends (and, one
//! directory at a time, by the live watch while it runs: `livewatch::tree`). git takes the
//! config and hooks of the innermost repository around the directory it runs in, so a
//! `src/.git/config` with a `core.fsmonitor` runs its command the next time the user's
//! prompt or editor runs `git status` in `src/`: code on the host, and the outer
//! repository does not even list it (`.git/info/exclude`). The plan protects the
//! project's own git dir; the rest of the tree is the session's to write, and walking it
//! at every start would cost what a large tree costs. So at exit csbox walks the project
//! once and, in every nested git dir (a `.git` directory, or one that looks like a bare
//! repository: `HEAD`, `objects/`, `refs/`), moves into the quarantine what the session
//! changed there (its status change time is after the run started, which the session
//! cannot set back) and git does not write by itself: a config with a key that runs a
//! command or includes another file, hooks that are not `*.sample`, a `commondir`, a
//! `config.worktree`. A `.git` file or link it made that points anywhere but into the
//! project's own git dir goes too. `git clone` and `git init` inside keep their
//! repositories as git made them.
//!
//! The project is hostile: directories are opened one component at a time without
//! following a link and without blocking, the walk stays on the project's file system,
//! and it is bounded (entries, depth): what it could not look at is said.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::sys::stat::Mode;

use super::quarantine::{changed_since, lstat_at, open_dir_fixing, samples_only, Sweep};
use crate::fsutil::{openat_nofollow, read_names, read_small_at, read_small_at_stat};
use crate::plan::ProjectView;

/// Entries looked at, at most, and how deep.
pub(super) const ENTRY_CAP: usize = 200_000;
pub(super) const DEPTH_CAP: usize = 128;

use crate::fsutil::dir_flags;

fn kind(st: &libc::stat) -> libc::mode_t {
    st.st_mode & libc::S_IFMT
}

/// What a directory the walk goes into is, for the live watch (`livewatch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DirKind {
    /// A directory of the work tree.
    Tree,
    /// A git dir (a `.git` directory, or a bare-looking one): only its own entries and
    /// its hooks matter.
    Git,
    /// A git dir's `hooks`.
    Hooks,
}

/// Called for each directory the walk goes into, before it reads it (the live watch adds
/// its inotify watch there first, so nothing made meanwhile is missed): its fd, path,
/// depth below the project's top and kind; false ends the walk (a bound).
pub(super) type OnDir<'w> = &'w mut dyn FnMut(&OwnedFd, &Path, usize, DirKind) -> bool;

pub(super) struct Walk<'s, 'a, 'w> {
    sweep: &'s mut Sweep<'a>,
    since: SystemTime,
    dev: u64,
    seen: usize,
    cut: bool,
    /// The first directory the walk did not go into (a bound), and one it could not open.
    cut_at: Option<PathBuf>,
    unread: Option<PathBuf>,
    /// The project's own git dir (not looked at here: the plan protects it).
    top_git: PathBuf,
    /// The protected paths, relative to the project (not git's), looked for in every
    /// directory below the top too: `packages/web/.npmrc` steers `npm test` run there
    /// as `.npmrc` does at the top (red-team 4, A4-3). Keyed by their first name.
    steering: Vec<(std::ffi::OsString, PathBuf)>,
    /// The project's top, opened.
    root: OwnedFd,
    on_dir: Option<OnDir<'w>>,
    /// `on_dir` said stop.
    stopped: bool,
}

/// The protected and watched paths of `project` relative to its top (not in its own git
/// dir), each with its first name: what the walk looks for in every directory below.
pub(super) fn steering(project: &ProjectView) -> Vec<(std::ffi::OsString, PathBuf)> {
    let root = &project.path;
    project
        .protected
        .iter()
        .chain(project.watched.iter().map(|w| &w.path))
        .filter_map(|p| p.strip_prefix(root).ok())
        .filter(|r| !r.starts_with(".git"))
        .filter_map(|r| Some((r.iter().next()?.to_os_string(), r.to_path_buf())))
        .collect()
}

impl<'s, 'a, 'w> Walk<'s, 'a, 'w> {
    /// A walk of `sweep`'s project for what changed since `since`; None when its top
    /// cannot be opened.
    pub(super) fn new(
        sweep: &'s mut Sweep<'a>,
        since: SystemTime,
        on_dir: Option<OnDir<'w>>,
    ) -> Option<(Self, OwnedFd)> {
        let root_path = sweep.project().path.clone();
        let root = crate::fsutil::open_dir_nofollow(&root_path).ok()?;
        let dev = nix::sys::stat::fstat(root.as_raw_fd()).ok()?.st_dev;
        let steering = steering(sweep.project());
        let walk = Walk {
            sweep,
            since,
            dev,
            seen: 0,
            cut: false,
            cut_at: None,
            unread: None,
            top_git: root_path.join(".git"),
            steering,
            root: root.try_clone().ok()?,
            on_dir,
            stopped: false,
        };
        Some((walk, root))
    }

    fn enter(&mut self, dir: &OwnedFd, path: &Path, depth: usize, kind: DirKind) -> bool {
        if self.stopped {
            return false;
        }
        if let Some(f) = self.on_dir.as_mut() {
            if !f(dir, path, depth, kind) {
                self.stopped = true;
            }
        }
        !self.stopped
    }

    /// The rules of the walk for the entries of `dir` alone (not below it): the live
    /// watch's look at a directory where something was made. True when `dir` is a git
    /// dir (the walk does not go into it).
    pub(super) fn look(&mut self, dir: &OwnedFd, path: &Path, depth: usize) -> bool {
        let Ok(names) = read_names(dir.as_raw_fd()) else {
            return false;
        };
        if self.rules(dir, path, depth, &names) {
            return true;
        }
        let git = CString::new(".git").expect("no NUL");
        if names.contains(&git) && path.join(".git") != self.top_git {
            if let Some(st) = lstat_at(dir, &git) {
                self.dot_git(dir, &git, &path.join(".git"), &st, depth + 1);
            }
        }
        false
    }

    /// What applies to `dir` itself, given its entries; true for a git dir.
    fn rules(&mut self, dir: &OwnedFd, path: &Path, depth: usize, names: &[CString]) -> bool {
        let has = |n: &[u8]| names.iter().any(|c| c.to_bytes() == n);
        // A bare-looking repository: git uses it as one when run inside. Without a
        // HEAD it is still what a `commondir` may name for its config (A6-2).
        if depth > 0 && (has(b"HEAD") || has(b"config")) && has(b"objects") && has(b"refs") {
            self.nested_hooks(path);
            self.watch_git(dir, path, depth);
            self.git_dir(dir, path);
            return true;
        }
        if depth > 0 {
            self.steering_files(dir, path, names);
        }
        false
    }

    /// The walk's own hook for a git dir and its hooks (only the live watch has one).
    fn watch_git(&mut self, g: &OwnedFd, path: &Path, depth: usize) {
        if self.on_dir.is_none() || !self.enter(g, path, depth, DirKind::Git) {
            return;
        }
        if let Ok(h) = openat_nofollow(g, "hooks", dir_flags(), Mode::empty()) {
            self.enter(&h, &path.join("hooks"), depth + 1, DirKind::Hooks);
        }
    }

    /// Go through `dir` and below (see the module doc).
    pub(super) fn visit(&mut self, dir: &OwnedFd, path: &Path, depth: usize) {
        if !self.enter(dir, path, depth, DirKind::Tree) {
            return;
        }
        let Ok(entries) = crate::fsutil::read_entries(dir.as_raw_fd()) else {
            return;
        };
        let names: Vec<CString> = entries.iter().map(|(n, _)| n.clone()).collect();
        if self.rules(dir, path, depth, &names) {
            return;
        }
        for (c, ft) in &entries {
            if self.stopped {
                return;
            }
            self.seen += 1;
            if self.seen > ENTRY_CAP {
                self.cut = true;
                self.cut_at.get_or_insert_with(|| path.to_path_buf());
                return;
            }
            // What the directory says is no directory is not looked at (a tree's files
            // are most of its entries): only `.git` (a file or a dir) and directories.
            let dir_or_unknown = matches!(
                ft,
                rustix::fs::FileType::Directory | rustix::fs::FileType::Unknown
            );
            if !dir_or_unknown && c.to_bytes() != b".git" {
                continue;
            }
            let name = std::ffi::OsStr::from_bytes(c.to_bytes());
            let child = path.join(name);
            let Some(st) = lstat_at(dir, c) else { continue };
            if c.to_bytes() == b".git" {
                if child != self.top_git {
                    self.dot_git(dir, c, &child, &st, depth + 1);
                }
                continue;
            }
            if kind(&st) != libc::S_IFDIR || st.st_dev != self.dev {
                continue;
            }
            if depth + 1 >= DEPTH_CAP {
                // Deeper than the walk goes: a directory there the session made or
                // changed is moved whole, unread (a repository nested 34 levels down
                // stayed live after exit: red-team 4, A4-8); an old one is reported.
                if changed_since(&st, self.since) {
                    self.sweep.quarantine(dir, c, &child, None);
                } else {
                    self.cut = true;
                    self.cut_at.get_or_insert(child);
                }
                continue;
            }
            let Some(n) = name.to_str() else { continue };
            // A directory the session made unreadable (`chmod 111 lib`) is looked into
            // all the same (red-team 4, A4-12).
            match open_dir_fixing(dir, n) {
                Some(sub) => self.visit(&sub, &child, depth + 1),
                None => {
                    self.unread.get_or_insert(child);
                }
            }
        }
    }

    /// A `.git` entry below the project's top: a repository's dir, or a pointer to one.
    fn dot_git(
        &mut self,
        dir: &OwnedFd,
        name: &std::ffi::CStr,
        path: &Path,
        st: &libc::stat,
        depth: usize,
    ) {
        if let Some(top) = path.parent() {
            self.nested_hooks(top);
        }
        match kind(st) {
            libc::S_IFDIR => {
                if let Ok(g) = openat_nofollow(dir, ".git", dir_flags(), Mode::empty()) {
                    self.watch_git(&g, path, depth);
                    self.git_dir(&g, path);
                }
            }
            // Empty: made, not written yet (git writes a `.git` file in place, not by a
            // rename), and git runs nothing from it. The write wakes the live watch
            // again, and the exit walk looks once more; moving it now broke a
            // `git submodule add` and left the git dir it was to name unchecked.
            libc::S_IFREG if st.st_size == 0 => {}
            libc::S_IFREG if changed_since(st, self.since) => {
                // `gitdir: ../.git/modules/x` from `git submodule`: into the project's
                // own git dir, which the plan watches. Anything else is the session's.
                let target = read_small_at(dir, ".git", 4096).ok().and_then(|t| {
                    let t = String::from_utf8_lossy(&t);
                    let target = t
                        .trim()
                        .strip_prefix("gitdir:")
                        .map(str::trim)
                        .unwrap_or("");
                    let base = path.parent().unwrap_or(path);
                    let abs = normalize(&base.join(target));
                    self.inside_top_git(&abs).map(|fd| (fd, abs))
                });
                match target {
                    // Wherever there it points (`modules/sm/x`, which no listing of
                    // git dirs goes into), what the session made in that git dir is
                    // looked at (red-team 7, A7-2).
                    Some((g, abs)) => self.git_dir(&g, &abs),
                    None => self.sweep.quarantine(dir, name, path, None),
                }
            }
            _ if changed_since(st, self.since) => self.sweep.quarantine(dir, name, path, None),
            _ => {}
        }
    }

    /// What the session made or changed among the protected names in `dir` (below the
    /// top), each reached one directory at a time without following a link.
    fn steering_files(&mut self, dir: &OwnedFd, path: &Path, names: &[CString]) {
        let steering = std::mem::take(&mut self.steering);
        for (first, rel) in &steering {
            if names.iter().any(|n| n.to_bytes() == first.as_bytes()) {
                self.steer(dir, path, rel);
            }
        }
        self.steering = steering;
        // The protect patterns (`mise.*.toml`) as at the top: mise reads `sub/mise.dev.toml`
        // when a shell enters `sub/` (red-team 9, A9-6).
        let patterns = &self.sweep.project().patterns;
        let hits: Vec<PathBuf> = (names.iter())
            .filter(|n| crate::plan::matches_any(patterns, n.to_bytes()))
            .map(|n| PathBuf::from(std::ffi::OsStr::from_bytes(n.to_bytes())))
            .collect();
        for rel in hits {
            self.steer(dir, path, &rel);
        }
    }

    /// The hooks dirs that the relative hooks paths of the git configs name for the
    /// repository whose top (or, bare, whose git dir) is `base`: `../hooks` of a
    /// repository the session nests at `pkg/nest` is `pkg/hooks`, inside the project
    /// (red-team 9b, A9-2). What the session made or changed there is moved.
    fn nested_hooks(&mut self, base: &Path) {
        let root_path = self.sweep.project().path.clone();
        let targets: Vec<PathBuf> = (self.sweep.project().nested_hooks.iter())
            .map(|r| normalize(&base.join(r)))
            .filter(|t| !t.starts_with(&self.top_git))
            .filter_map(|t| Some(t.strip_prefix(&root_path).ok()?.to_path_buf()))
            .filter(|rel| !rel.as_os_str().is_empty())
            .collect();
        // A clone (`steer` takes the walk mutably), only when there is something to look at.
        let Some(root) = (!targets.is_empty())
            .then(|| self.root.try_clone().ok())
            .flatten()
        else {
            return;
        };
        for rel in targets {
            self.steer(&root, &root_path, &rel);
        }
    }

    /// `rel` below `dir` (at `path`), reached one directory at a time without following
    /// a link: moved when the session made or changed it (or made a link on the way).
    fn steer(&mut self, dir: &OwnedFd, path: &Path, rel: &Path) {
        let Ok(mut cur) = dir.try_clone() else {
            return;
        };
        let comps: Vec<&std::ffi::OsStr> = rel.iter().collect();
        for (i, c) in comps.iter().enumerate() {
            let Ok(cname) = CString::new(c.as_bytes()) else {
                return;
            };
            let Some(st) = lstat_at(&cur, &cname) else {
                return;
            };
            let last = i + 1 == comps.len();
            let here = path.join(comps[..=i].iter().collect::<PathBuf>());
            if last || kind(&st) == libc::S_IFLNK {
                if changed_since(&st, self.since) {
                    self.sweep.quarantine(&cur, &cname, &here, None);
                }
                return;
            }
            if kind(&st) != libc::S_IFDIR {
                return;
            }
            match c.to_str().and_then(|n| open_dir_fixing(&cur, n)) {
                Some(fd) => cur = fd,
                None => return,
            }
        }
    }

    /// `abs`, opened, when it lies below the `modules/` or `worktrees/` of one of the
    /// project's git dirs (its own `.git`, a linked worktree's common dir) through
    /// directories only (a link the session made there, `.git/modules -> elsewhere`,
    /// would lead out).
    fn inside_top_git(&self, abs: &Path) -> Option<OwnedFd> {
        let root = self.git_roots().into_iter().find(|r| abs.starts_with(r))?;
        let rel = abs.strip_prefix(&root).ok()?;
        // Only where git puts a submodule's or a worktree's git dir (which the plan
        // watches), not `.git/x2` from `git init --separate-git-dir` (red-team 4, A4-2).
        if !rel
            .components()
            .next()
            .is_some_and(|c| c.as_os_str() == "modules" || c.as_os_str() == "worktrees")
        {
            return None;
        }
        let mut cur = crate::fsutil::open_dir_nofollow(&root).ok()?;
        for c in rel.components() {
            let std::path::Component::Normal(n) = c else {
                return None;
            };
            cur = openat_nofollow(&cur, n.to_str()?, dir_flags(), Mode::empty()).ok()?;
        }
        Some(cur)
    }

    /// What in git dir `g` (at `path`) the session changed and git does not write itself.
    fn git_dir(&mut self, g: &OwnedFd, path: &Path) {
        self.git_files(
            g,
            path,
            &["config", "config.worktree", "commondir", "hooks"],
        );
        // A stopped rebase's todo, at exit only (see `gitstate`).
        if self.on_dir.is_none() {
            super::gitstate::sweep(self.sweep, g, path, self.since);
        }
    }

    /// The live watch's re-check of a git dir it watches (a tick, or a write through a
    /// held fd): its files, not its hooks. A config accepted as `git init`'s can be turned
    /// hostile with no event in its directory: through a hard link elsewhere, or through
    /// a mapping after its close (red-team 6, A6-1).
    pub(super) fn recheck_git(&mut self, g: &OwnedFd, path: &Path) {
        // A stale path (the git dir was renamed, something else made there) is left to
        // the events of its new place.
        let head = CString::new("HEAD").expect("no NUL");
        if path.file_name().is_none_or(|n| n != ".git") && lstat_at(g, &head).is_none() {
            return;
        }
        self.git_files(g, path, &["config", "config.worktree", "commondir"]);
    }

    fn git_files(&mut self, g: &OwnedFd, path: &Path, which: &[&str]) {
        for &n in which {
            let c = CString::new(n).expect("no NUL");
            let Some(st) = lstat_at(g, &c) else { continue };
            if !changed_since(&st, self.since) && !(n == "hooks" && self.hooks_changed(g)) {
                continue;
            }
            let is = |k| kind(&st) == k;
            // An empty file is one git has made and not written yet (it writes these in
            // place): git dies on an empty `commondir` and reads no key from an empty
            // config, and the write wakes the live watch again. Moving it in between
            // broke a session's `git worktree add`.
            let harmless = (is(libc::S_IFREG) && st.st_size == 0)
                || match n {
                    "config" => config_is_gits(g),
                    "hooks" => is(libc::S_IFDIR) && samples_only(g, n),
                    "commondir" => is(libc::S_IFREG) && self.commondir_is_own(g, path),
                    _ => false,
                };
            if !harmless {
                self.sweep.quarantine(g, &c, &path.join(n), None);
            }
        }
    }

    /// Whether `g/commondir` is what `git worktree add` writes in a linked worktree's git
    /// dir: `<root>/worktrees/<name>/commondir` naming `<root>` itself (`../..`), where
    /// `<root>` is the project's own git dir or one its commits write to. Moving it broke
    /// a worktree the session made and left it dirty (red-team 6, A6-6); anything else
    /// (a commondir naming a config of the session's own, A6-2) still goes.
    fn commondir_is_own(&self, g: &OwnedFd, path: &Path) -> bool {
        let Some(root) = path.parent().and_then(Path::parent) else {
            return false;
        };
        if path.parent().and_then(Path::file_name) != Some("worktrees".as_ref())
            || !self.git_roots().iter().any(|r| r == root)
        {
            return false;
        }
        let Ok(text) = read_small_at(g, "commondir", 4096) else {
            return false;
        };
        let Ok(text) = std::str::from_utf8(&text) else {
            return false;
        };
        let text = text.strip_suffix('\n').unwrap_or(text);
        // Empty: git is writing it (one write of `../..`, the live watch may look in
        // between; its close brings another look); it names nothing to take a config from.
        if text.is_empty() {
            return true;
        }
        normalize(&path.join(text)) == root
    }

    /// Whether an entry of `g/hooks` changed since the start (a hook added to an old dir
    /// changes the dir's times too, but a rewritten one does not).
    fn hooks_changed(&self, g: &OwnedFd) -> bool {
        let Ok(h) = openat_nofollow(g, "hooks", dir_flags(), Mode::empty()) else {
            return false;
        };
        let Ok(names) = read_names(h.as_raw_fd()) else {
            return false;
        };
        names
            .iter()
            .take(1024)
            .any(|n| lstat_at(&h, n).is_some_and(|st| changed_since(&st, self.since)))
    }
}

/// Whether git dir `g`'s config is one git wrote: plain (`gitconfig::is_plain`), in a
/// file with no second name. A hard link elsewhere (`ln .git/config t/l`) is a way to
/// write it with no event here, and git never links its config: it renames a lock file
/// over it (red-team 6, A6-1).
///
/// Judged on one open file, its own fstat and bytes. A lookup that races that rename
/// (`git init` makes four in a row, `git config` one) can return the inode being
/// replaced, with a link count of 0 by the time it is read: a config judged by an lstat
/// and a separate read took that 0 for a second name and moved what `git init` was
/// writing ("invalid config file" in the session, under load). A count of 0 is a config
/// renamed over since the open: its text is what was there, and what replaced it came by
/// a rename into this watched dir, whose event has it judged in turn. None there
/// (ENOENT) is nothing to move.
fn config_is_gits(g: &OwnedFd) -> bool {
    match read_small_at_stat(g, "config", 1 << 20) {
        Ok((text, st)) => {
            st.st_nlink <= 1 && crate::gitconfig::is_plain(&String::from_utf8_lossy(&text))
        }
        Err(e) => e.raw_os_error() == Some(libc::ENOENT),
    }
}

/// `p` with `.` and `..` taken away lexically.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// Walk the project of `sweep` (see the module doc); a note when the walk was cut short.
pub(super) fn sweep(sweep: &mut Sweep<'_>, since: SystemTime) -> Option<String> {
    if sweep.project().read_only {
        return None;
    }
    let top_git = sweep.project().path.join(".git");
    let (mut w, root) = Walk::new(sweep, since, None)?;
    // `.git/modules` or `.git/worktrees` made a link: the watch of their entries does not
    // follow it, and a submodule's `.git` file pointing there would lead out.
    if let Ok(g) = crate::fsutil::open_dir_nofollow(&top_git) {
        for n in ["modules", "worktrees"] {
            let c = CString::new(n).expect("no NUL");
            if lstat_at(&g, &c)
                .is_some_and(|st| kind(&st) == libc::S_IFLNK && changed_since(&st, since))
            {
                w.sweep.quarantine(&g, &c, &top_git.join(n), None);
            }
        }
    }
    let git_cut = w.top_git_dirs().map(|at| {
        format!(
            "the submodules' and worktrees' git dirs of this project are too many or too deep to look through (more than {} entries or {} levels; the look stopped at {}): before you run git in the project, check the config and hooks there",
            crate::gitdirs::ENTRY_CAP,
            crate::gitdirs::DEPTH_CAP,
            crate::human::printable_path(&at)
        )
    });
    let root_path = w.sweep.project().path.clone();
    w.visit(&root, &root_path, 0);
    let unread = w.unread.take().map(|u| {
        format!(
            "csbox could not look into {} for git repositories this session may have nested there: before you run git below it, check any .git/config and hooks there",
            crate::human::printable_path(&u)
        )
    });
    let cut = w.cut_note().map(|at| {
        format!(
            "{} is too large to look through for git repositories this session may have nested in it (more than {ENTRY_CAP} entries or {DEPTH_CAP} levels; the look stopped at {at}): before you run git in a subdirectory it made, check its .git/config and hooks",
            crate::human::printable_path(&root_path),
        )
    });
    let notes: Vec<String> = [git_cut, cut, unread].into_iter().flatten().collect();
    (!notes.is_empty()).then(|| notes.join("; "))
}

impl Walk<'_, '_, '_> {
    /// The submodules' and linked worktrees' git dirs in the project's git dirs (its own
    /// `.git`, a linked worktree's common dir), at any depth (see `gitdirs`), which the
    /// walk of the tree does not go into: a `.git` file pointing there is git's own, so
    /// what the session made or changed there (a `commondir` naming a config of its own,
    /// a config, hooks) is the session's (red-team 6, A6-2; red-team 7, A7-1, A7-2).
    /// The git dirs themselves get the look at a stopped rebase's state (`gitstate`).
    /// Where the listing stopped at a bound, if it did.
    fn top_git_dirs(&mut self) -> Option<PathBuf> {
        let mut cut = None;
        for root in self.git_roots() {
            let Ok(g) = crate::fsutil::open_dir_nofollow(&root) else {
                continue;
            };
            super::gitstate::sweep(self.sweep, &g, &root, self.since);
            let c = crate::gitdirs::walk(&g, &root, &mut |f| {
                if f.git {
                    self.git_dir(f.fd, f.path);
                }
            });
            cut = cut.or(c);
        }
        cut
    }

    /// The project's own `.git` and the git dirs outside it its commits write to.
    fn git_roots(&self) -> Vec<PathBuf> {
        let mut roots = vec![self.top_git.clone()];
        roots.extend(self.sweep.project().git_dirs.iter().cloned());
        roots
    }

    /// Where the walk stopped at a bound of its own (entries, depth), if it did.
    pub(super) fn cut_note(&self) -> Option<String> {
        self.cut.then(|| {
            self.cut_at
                .as_deref()
                .map(crate::human::printable_path)
                .unwrap_or_default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// git renames a lock file over its config, `git init` four times in a row: a look in
    /// the middle of that (the live watch wakes on the first rename) always finds the
    /// config git's. A second name or a key that runs a command still is not.
    #[test]
    fn a_config_git_renames_into_place_is_gits_at_every_moment() {
        let d = tempfile::tempdir().unwrap();
        let states = [
            "[core]\n\trepositoryformatversion = 0\n",
            "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n",
            "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n",
        ];
        std::fs::write(d.path().join("config"), states[0]).unwrap();
        let g = crate::fsutil::open_dir_nofollow(d.path()).unwrap();
        let stop = AtomicBool::new(false);
        let renames = AtomicUsize::new(0);
        let (mut looks, mut old_rule_wrong) = (0, 0);
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let lock = d.path().join("config.lock");
                    std::fs::write(&lock, states[i % states.len()]).unwrap();
                    std::fs::rename(&lock, d.path().join("config")).unwrap();
                    renames.fetch_add(1, Ordering::Relaxed);
                }
            });
            let t = std::time::Instant::now();
            while t.elapsed() < std::time::Duration::from_millis(500) {
                looks += 1;
                let c = CString::new("config").unwrap();
                if lstat_at(&g, &c).is_some_and(|st| st.st_nlink != 1) {
                    old_rule_wrong += 1;
                }
                if !config_is_gits(&g) {
                    stop.store(true, Ordering::Relaxed);
                    panic!("git's config judged not git's after {looks} looks");
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
        eprintln!(
            "{looks} looks, {} renames; an lstat's link count was not 1 in {old_rule_wrong}",
            renames.load(Ordering::Relaxed)
        );
        assert!(renames.load(Ordering::Relaxed) > 0 && looks > 0);
        std::fs::hard_link(d.path().join("config"), d.path().join("l")).unwrap();
        assert!(!config_is_gits(&g), "a config with a second name");
        std::fs::remove_file(d.path().join("l")).unwrap();
        assert!(config_is_gits(&g));
        std::fs::write(d.path().join("config"), "[core]\n\tfsmonitor = x\n").unwrap();
        assert!(
            !config_is_gits(&g),
            "a config with a key that runs a command"
        );
    }
}
