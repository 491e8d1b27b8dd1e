//! While a session runs, the project's watched paths (`ProjectView::watched`, `watched_dirs`)
//! are watched with inotify, and what the session makes there is moved into the
//! quarantine at once, not only at exit: a `.git/commondir` the session writes would
//! otherwise steer every `git status` the user's prompt or editor runs in the project for
//! as long as the session lasts. Below the top, every directory of the project is watched
//! too (`tree`), and a new entry anywhere gets the exit walk's rules at once: a nested
//! repository the session makes (`pkg/r/.git/config` with a `core.fsmonitor`), `src/.npmrc`
//! (red-team 5, A5-1). The exit sweep still runs (it also sees what the watch could not:
//! directories past its bounds).
//!
//! A file the watch let be (a nested repository's config as `git init` wrote it) can be
//! turned hostile with no event in its directory (red-team 6, A6-1): through a hard link
//! elsewhere in the project, an fd kept open (no close ever comes), or a mapping after its
//! close (no event at all). So a git dir's writes (IN_MODIFY) re-check it a few ms later;
//! a file that arrives anywhere in the tree as a second name of a watched config re-checks
//! that config at once (a config with a second name is moved: git never links one); and
//! every [`TICK`] the watched git dirs' files are looked at again (a bounded share of
//! them), which is what finds a write through a mapping.
//!
//! What is left is the time between the session's write and the move (the thread wakes on
//! the event and moves the file in well under a millisecond on an idle machine; up to a
//! tick for a write through a mapping, or a link made before its directory was watched):
//! a git run on the host at that very moment reads it. README says so.
//!
//! A thread of the supervisor, outside the sandbox, started after the clone (see
//! `commands/run.rs`); every move is the quarantine's own (one component at a time, no
//! link followed). The top's watches are added by path, which the session could swap for
//! a link: that only chooses what wakes the thread, never what is moved; the tree's are
//! added through a directory opened beneath the project.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use super::quarantine::{Quarantined, SessionDir, Sweep};
use crate::plan::ProjectView;

mod root;
mod tree;

use root::{targets, Names};
use tree::{Tree, Work};

/// The running watch; [`Watch::stop`] ends it and returns what it moved.
pub struct Watch {
    wake: OwnedFd,
    /// The read end's twin: the thread may have ended (it stopped a session), and a
    /// write to a pipe nobody reads is a SIGPIPE.
    _wake_reader: OwnedFd,
    shared: Arc<Shared>,
    /// The holder of the inotify instance's last reference says here when it holds
    /// nothing else of ours (see [`spawn_holder`]).
    holder_ready: Option<OwnedFd>,
}

/// What the thread and [`Watch::stop`] share: the moves so far, and whether the watch
/// has stopped, both under one lock, so that a sweep either ends before `stop` takes
/// the moves or does not start.
#[derive(Default)]
struct Shared {
    moves: Mutex<(Vec<Quarantined>, bool)>,
    /// The sandbox's pid 1 (a pidfd), once it runs: a session that keeps planting the
    /// same file is stopped (see [`REPLANTS`]).
    pid1: Mutex<Option<OwnedFd>>,
    /// Set by [`Watch::stop`] before it takes the lock: a walk of the tree in progress
    /// ends at its next directory rather than make the end of the run wait for it.
    stopping: AtomicBool,
    /// The warning that another session runs in the project was given.
    shared_warned: AtomicBool,
}

/// How often one path may be moved (four times as many moves in all) before the session
/// is stopped: each move leaves a
/// moment in which a git on the host can read the file (a rename puts a whole file in
/// place), and a session that puts it back again and again is after that moment
/// (red-team 4, A4-1).
pub const REPLANTS: usize = 3;

struct State {
    project: ProjectView,
    session_fd: OwnedFd,
    session_path: PathBuf,
    id: String,
    ino: Inotify,
    /// The watches of the top's and git dirs' watched paths.
    dirs: HashMap<WatchDescriptor, (PathBuf, Names)>,
    /// The watches of the whole tree.
    tree: Tree,
    shared: Arc<Shared>,
    /// When the run began: what changed after it is the session's (links on the way to a
    /// watched path, nested repositories, protected names below the top).
    since: SystemTime,
}

fn mask() -> AddWatchFlags {
    tree::mask() | AddWatchFlags::IN_DONT_FOLLOW
}

impl State {
    /// Add a watch for every target not yet watched; true when one was added.
    fn refresh(&mut self) -> bool {
        let mut added = false;
        for (dir, names) in targets(&self.project) {
            if let Ok(wd) = self.ino.add_watch(&dir, mask()) {
                added |= self.dirs.insert(wd, (dir, names)).is_none();
            }
        }
        added
    }

    /// Under the lock: the watched paths at the top when `top`, then `deep` (the tree's
    /// work, or None for a walk of the whole tree); false once the watch has stopped or
    /// stopped the session.
    fn sweep(&mut self, top: bool, deep: Option<Vec<Work>>) -> bool {
        let shared = self.shared.clone();
        let mut g = shared.moves.lock().unwrap_or_else(|e| e.into_inner());
        if g.1 {
            return false;
        }
        let dir = SessionDir {
            fd: &self.session_fd,
            path: &self.session_path,
            id: &self.id,
        };
        let mut s = Sweep::new(&self.project, dir, Some(self.since));
        if top {
            s.watched();
        }
        let stopping = &shared.stopping;
        match deep {
            None => self.tree.walk_all(&mut s, &self.ino, self.since, stopping),
            Some(w) => self.tree.apply(w, &mut s, &self.ino, self.since, stopping),
        }
        g.0.extend(s.into_moves());
        !kill_if_replanted(&g.0, &shared, || self.shared_project())
    }

    /// Another running session whose working directory lies in this project or holds it
    /// (its id), if there is one: its watch sees what this one's command made and the
    /// other way round, and nothing tells which of the two made a file.
    fn shared_project(&self) -> Option<String> {
        let store = crate::session::store::Store::new(self.session_path.parent()?.to_path_buf());
        let top = &self.project.path;
        store.list(false).ok()?.into_iter().find_map(|i| {
            let m = i.meta.as_ref()?;
            let overlaps = crate::pathkey::under(&m.cwd, top) || crate::pathkey::under(top, &m.cwd);
            (i.is_active() && m.id.as_str() != self.id && overlaps).then(|| m.id.to_string())
        })
    }

    fn run(mut self, wake: OwnedFd) {
        // Whatever mask it was started with: a SIGCHLD left unblocked here would be taken
        // (and dropped) by this thread, and the supervisor would never learn that the
        // sandbox died of a SIGKILL.
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            Some(&nix::sys::signal::SigSet::all()),
            None,
        );
        let _ = self.refresh();
        // What the command made before the watches were in place; the tree's watches,
        // added here, off the launch's path (a large project takes a while).
        if !self.sweep(true, None) {
            return;
        }
        // A watched directory the command made before the first watches (a `.git/hooks`
        // its first command made): watched now, and looked at once more (red-team 8, A8-3).
        if self.refresh() && !self.sweep(true, Some(Vec::new())) {
            return;
        }
        let mut ticks = Ticks::new();
        loop {
            let mut fds = [
                PollFd::new(self.ino.as_fd(), PollFlags::POLLIN),
                PollFd::new(wake.as_fd(), PollFlags::POLLIN),
            ];
            let timeout = ticks.timeout(Instant::now());
            if poll(&mut fds, timeout).is_err() {
                continue;
            }
            if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                return;
            }
            if fds[0].revents().is_some_and(|r| !r.is_empty()) && !self.events(&mut ticks) {
                return;
            }
            // Due whatever the events: a session flooding the queue does not put it off.
            let share = |n| self.tree.recheck_work(n);
            if let Some(work) = ticks.due(Instant::now(), share) {
                if !self.sweep(false, Some(work)) {
                    return;
                }
            }
        }
    }

    /// What the queued events ask for; false once the watch has stopped (or stopped the
    /// session).
    fn events(&mut self, ticks: &mut Ticks) -> bool {
        let Ok(events) = self.ino.read_events() else {
            return true;
        };
        let project = &self.project;
        // A name that matches a protect pattern (`*.code-workspace`) too, in any dir.
        let pattern =
            |n: &std::ffi::OsStr| crate::plan::matches_any(&project.patterns, n.as_encoded_bytes());
        let relevant = events.iter().any(|e| match self.dirs.get(&e.wd) {
            Some((_, None)) => true,
            Some((_, Some(names))) => e
                .name
                .as_ref()
                .is_some_and(|n| names.contains(n) || pattern(n)),
            None => false,
        });
        // Events were dropped (the session can fill the queue on purpose): all of
        // the tree is looked at again.
        let overflow = events
            .iter()
            .any(|e| e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW));
        let mut work = Vec::new();
        for e in &events {
            if e.mask.contains(AddWatchFlags::IN_IGNORED) {
                self.tree.forget(e.wd);
            } else if e.mask.contains(AddWatchFlags::IN_MODIFY) {
                // A write that may never be followed by a close: the git dir's files
                // are re-checked soon, not at every write.
                if let Some(g) = self.tree.git_dir(e.wd) {
                    ticks.modified(g, Instant::now());
                }
            } else {
                self.tree.note(e, &mut work);
            }
        }
        let deep = (!overflow).then_some(work);
        if (relevant || overflow || deep.as_ref().is_some_and(|w| !w.is_empty()))
            && !self.sweep(relevant || overflow, deep)
        {
            return false;
        }
        // A directory watched from now on: what arrived in it before its watch did is
        // looked at once more.
        if relevant && self.refresh() && !self.sweep(true, Some(Vec::new())) {
            return false;
        }
        true
    }
}

/// How often the watched git dirs' files are re-checked (a bounded share of them each
/// time: `tree::RECHECK_PER_TICK`). A write through a mapping raises no inotify event at
/// all (`mmap`, `close`, then a store into the pages: the close was checked while the
/// file was still benign), so only a look finds it (red-team 6, A6-1).
const TICK: Duration = Duration::from_millis(200);

/// A git dir written through an fd kept open (IN_MODIFY) is re-checked this long after
/// the first write, once for all the writes meanwhile: a session that writes without
/// pause does not keep the thread busy.
const COALESCE: Duration = Duration::from_millis(5);

/// The watch's timers: the periodic re-check and the re-checks a write asked for.
struct Ticks {
    next: Instant,
    /// Where the next tick's share of the git dirs begins.
    cursor: usize,
    modified: Vec<PathBuf>,
    modified_due: Option<Instant>,
}

impl Ticks {
    fn new() -> Ticks {
        Ticks {
            next: Instant::now() + TICK,
            cursor: 0,
            modified: Vec::new(),
            modified_due: None,
        }
    }

    fn modified(&mut self, git: &Path, now: Instant) {
        if !self.modified.iter().any(|p| p == git) {
            self.modified.push(git.to_path_buf());
        }
        self.modified_due.get_or_insert(now + COALESCE);
    }

    fn soonest(&self) -> Instant {
        self.modified_due.map_or(self.next, |m| m.min(self.next))
    }

    fn timeout(&self, now: Instant) -> PollTimeout {
        let ms = self.soonest().saturating_duration_since(now).as_millis();
        // Rounded up: a poll that wakes a moment early would only go round again.
        PollTimeout::try_from(ms.saturating_add(1).min(60_000) as i32).unwrap_or(PollTimeout::NONE)
    }

    /// The re-checks due at `now`, if any; `share(n)` is a tick's share of the git dirs
    /// from the `n`th on, and how many there are (`Tree::recheck_work`).
    fn due(
        &mut self,
        now: Instant,
        share: impl FnOnce(usize) -> (Vec<Work>, usize),
    ) -> Option<Vec<Work>> {
        let mut work = Vec::new();
        if self.modified_due.is_some_and(|m| m <= now) {
            self.modified_due = None;
            work.extend(self.modified.drain(..).map(Work::Recheck));
        }
        if self.next <= now {
            self.next = now + TICK;
            let (share, all) = share(self.cursor);
            self.cursor = if all == 0 {
                0
            } else {
                (self.cursor + share.len()) % all
            };
            for w in share {
                if !work.contains(&w) {
                    work.push(w);
                }
            }
        }
        (!work.is_empty()).then_some(work)
    }
}

/// Stop the session when it made the same path more than [`REPLANTS`] times, or more
/// than four times as many in all (`moves`: all the watch moved so far); true if so. Not
/// while another session runs in the same project (`other`, asked only then): which of
/// the two made the files is not known, and stopping this one stopped a benign session
/// for a hostile one's files (red-team 9, A7-7); the watch goes on moving them.
fn kill_if_replanted(
    moves: &[Quarantined],
    shared: &Shared,
    other: impl FnOnce() -> Option<String>,
) -> bool {
    let most = moves
        .iter()
        .map(|q| moves.iter().filter(|o| o.path == q.path).count())
        .max()
        .unwrap_or(0);
    // Per path, and in all: alternating names must not buy many more moments
    // (red-team 5); a project's scaffolding makes a few such files once each.
    if most <= REPLANTS && moves.len() <= 4 * REPLANTS {
        return false;
    }
    if let Some(id) = other() {
        if !shared
            .shared_warned
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            crate::warn!(
                "{} code-steering files were made in the project while this session ran, and csbox moved them; session {} runs in the same project, and csbox cannot tell which of the two made them, so it stops neither (the files go on being moved)",
                moves.len(),
                &id[..id.len().min(8)]
            );
        }
        return false;
    }
    if most <= REPLANTS {
        crate::warn!(
            "this session made {} code-steering files in the project while it ran: csbox stopped it (each one put in place is a moment in which a git or an editor on your host reads it)",
            moves.len()
        );
    }
    if let Some(fd) = shared
        .pid1
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
    {
        // SAFETY: pidfd_send_signal on a pidfd we own; no siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
    true
}

impl Watch {
    /// Start watching `project` for the session in `session_fd` (at `session_path`),
    /// which began at `since` (None: now). None for a read-only project, or when inotify
    /// is not available (said; the exit sweep still runs).
    pub fn start(
        project: &ProjectView,
        session_fd: &OwnedFd,
        session_path: &Path,
        id: &str,
        since: Option<SystemTime>,
    ) -> Option<Watch> {
        if project.read_only {
            return None;
        }
        let ino = match Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK) {
            Ok(i) => i,
            Err(e) => {
                crate::warn!(
                    "csbox cannot watch the project while this session runs: inotify_init1: {} (fs.inotify.max_user_instances: this session or other programs of yours hold them all). What the session makes there that steers code (.git/commondir, .envrc, a nested repository) is moved only when it ends: run no git or editor in {} while it runs",
                    e.desc(),
                    crate::human::printable_path(&project.path)
                );
                return None;
            }
        };
        let holder_ready = spawn_holder(ino.as_fd());
        let (wake_r, wake_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
        let shared = Arc::new(Shared::default());
        let state = State {
            project: project.clone(),
            session_fd: session_fd.try_clone().ok()?,
            session_path: session_path.to_path_buf(),
            id: id.to_string(),
            ino,
            dirs: HashMap::new(),
            tree: Tree::new(project),
            shared: shared.clone(),
            since: since.unwrap_or_else(SystemTime::now),
        };
        let twin = wake_r.try_clone().ok()?;
        std::thread::Builder::new()
            .name("csbox-watch".into())
            .spawn(move || state.run(wake_r))
            .ok()?;
        Some(Watch {
            wake: wake_w,
            _wake_reader: twin,
            shared,
            holder_ready,
        })
    }

    /// Stop the watch; what it moved, in order.
    /// The sandbox runs as `pid` (our child): a session that keeps planting a watched
    /// file is killed through it.
    pub fn arm(&self, pid: libc::pid_t) {
        // SAFETY: pidfd_open of our own child.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd >= 0 {
            // SAFETY: a fresh descriptor we own.
            let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
            *self.shared.pid1.lock().unwrap_or_else(|e| e.into_inner()) = Some(fd);
        }
    }

    /// Not joined (waiting for the thread to be scheduled cost milliseconds at the end
    /// of every run on a busy machine): a sweep in progress is waited for by the lock,
    /// and none starts after this.
    pub fn stop(self) -> Vec<Quarantined> {
        self.shared.stopping.store(true, Ordering::Relaxed);
        let mut g = self.shared.moves.lock().unwrap_or_else(|e| e.into_inner());
        g.1 = true;
        let moved = std::mem::take(&mut g.0);
        drop(g);
        let _ = nix::unistd::write(&self.wake, b"x");
        if let Some(r) = self.holder_ready {
            // Its byte (long since sent, but for a command that ended at once), or the end
            // of the pipe if it died: either way it holds nothing of ours any more.
            let mut b = [0u8; 1];
            while nix::unistd::read(r.as_raw_fd(), &mut b) == Err(nix::errno::Errno::EINTR) {}
        }
        moved
    }
}

/// The last close of an inotify instance waits for the kernel to tear its marks down (an
/// RCU grace period: 10-15 ms measured here), and a process's exit waits for its last
/// close: csbox's own exit took that long after every command. So a forked child holds
/// a reference from the start, and lets go when csbox has exited (the pipe's other end
/// closes with us): the teardown happens off the user's path. The child runs nothing but
/// close, write, read and _exit (all async-signal-safe, as a fork of a threaded process
/// must). Forked when the watch starts, not when it stops: csbox then need not wait at
/// the end for a child to be scheduled (0.3 ms on a busy machine).
///
/// What the child says on the returned pipe: that it has closed everything else. A fork
/// holds the session's lock and the update lock too (flock belongs to the open file),
/// and a child that had not closed them yet when csbox exited made `csbox ls` see the
/// ended session as active (it did, under load, in tests/crash.rs): [`Watch::stop`]
/// waits for that byte.
fn spawn_holder(ino: std::os::fd::BorrowedFd<'_>) -> Option<OwnedFd> {
    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let (r, w) = nix::unistd::pipe2(cloexec).ok()?;
    let (ready_r, ready_w) = nix::unistd::pipe2(cloexec).ok()?;
    let mut keep = [ino.as_raw_fd(), r.as_raw_fd(), ready_w.as_raw_fd()];
    keep.sort_unstable();
    // SAFETY: the child only makes async-signal-safe calls before _exit.
    match unsafe { libc::fork() } {
        0 => {
            // SAFETY: close_range, write and read on fds of our own; _exit never returns.
            unsafe {
                let mut from: libc::c_uint = 0;
                for k in keep {
                    let k = k as libc::c_uint;
                    if k > from {
                        libc::syscall(libc::SYS_close_range, from, k - 1, 0);
                    }
                    from = k + 1;
                }
                libc::syscall(libc::SYS_close_range, from, libc::c_uint::MAX, 0);
                let b = 1u8;
                libc::write(ready_w.as_raw_fd(), (&b as *const u8).cast(), 1);
                libc::close(ready_w.as_raw_fd());
                // Blocked signals are the supervisor's: only the pipe's end wakes this.
                let mut b = 0u8;
                libc::read(r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
                libc::_exit(0);
            }
        }
        pid if pid > 0 => {
            // Ours closes with our exit; the child's read then ends.
            std::mem::forget(w);
            Some(ready_r)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(p: &str) -> Work {
        Work::Recheck(PathBuf::from(p))
    }

    #[test]
    fn writes_through_a_held_fd_are_rechecked_once_a_few_ms_later() {
        let t0 = Instant::now();
        let mut t = Ticks::new();
        let none = |_| (Vec::new(), 0);
        t.modified(Path::new("/p/a/.git"), t0);
        t.modified(Path::new("/p/a/.git"), t0 + Duration::from_millis(1));
        t.modified(Path::new("/p/b/.git"), t0 + Duration::from_millis(2));
        assert!(t.due(t0 + Duration::from_millis(4), none).is_none());
        assert_eq!(
            t.due(t0 + COALESCE, none),
            Some(vec![git("/p/a/.git"), git("/p/b/.git")])
        );
        assert!(t.due(t0 + COALESCE * 2, none).is_none());
    }

    #[test]
    fn the_tick_goes_round_all_git_dirs_a_share_at_a_time() {
        let mut t = Ticks::new();
        let mut at = Instant::now();
        let mut seen = Vec::new();
        for _ in 0..3 {
            at += TICK;
            let share = |n: usize| (vec![git(&format!("/p/{n}/.git"))], 3);
            seen.extend(t.due(at, share).unwrap());
        }
        assert_eq!(
            seen,
            vec![git("/p/0/.git"), git("/p/1/.git"), git("/p/2/.git")]
        );
        // Nothing is due between ticks, and a poll waits for the next one.
        assert!(t.due(at + TICK / 2, |_| (vec![git("/x")], 1)).is_none());
        assert!(t.timeout(at) != PollTimeout::NONE);
    }
}
