//! While a session runs, the project's watched paths (`ProjectView::watched`, `watched_dirs`)
//! are watched with inotify, and what the session makes there is moved into the
//! quarantine at once, not only at exit: a `.git/commondir` the session writes would
//! otherwise steer every `git status` the user's prompt or editor runs in the project for
//! as long as the session lasts. The exit sweep still runs (it also sees what the watch
//! could not: a directory made and filled before its watch was added, nested repositories).
//!
//! What is left is the time between the session's write and the move (the thread wakes on
//! the event and moves the file in well under a millisecond on an idle machine): a git run
//! on the host at that very moment reads it. README says so.
//!
//! A thread of the supervisor, outside the sandbox; every move is the quarantine's own
//! (one component at a time, no link followed). Watches are added by path, which the
//! session could swap for a link: that only chooses what wakes the thread, never what is
//! moved.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use super::quarantine::{sweep, Quarantined, SessionDir};
use crate::plan::ProjectView;

/// What wakes the watch in one directory: any new entry, or only these names.
type Names = Option<Vec<OsString>>;

/// The running watch; [`Watch::stop`] ends it and returns what it moved.
pub struct Watch {
    wake: OwnedFd,
    /// The read end's twin: the thread may have ended (it stopped a session), and a
    /// write to a pipe nobody reads is a SIGPIPE.
    _wake_reader: OwnedFd,
    shared: Arc<Shared>,
    /// A second reference to the inotify instance (see [`hand_over_teardown`]).
    ino: OwnedFd,
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
    dirs: HashMap<WatchDescriptor, (PathBuf, Names)>,
    shared: Arc<Shared>,
    /// When the watch began: links made on the way to a watched path after it are moved.
    since: std::time::SystemTime,
}

fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_ONLYDIR
        | AddWatchFlags::IN_DONT_FOLLOW
}

/// The directories to watch and the names that matter in each: for a watched path, its
/// nearest existing ancestor within the project (or a git dir of it) and the name below
/// that leads to it; for a watched directory, the directory (any new entry) and each
/// entry the session made there (the names it looks for).
fn targets(p: &ProjectView) -> Vec<(PathBuf, Names)> {
    let roots: Vec<&PathBuf> = std::iter::once(&p.path).chain(&p.git_dirs).collect();
    let mut out: Vec<(PathBuf, Names)> = Vec::new();
    let mut add =
        |dir: PathBuf, name: Option<OsString>| match out.iter_mut().find(|(d, _)| *d == dir) {
            Some((_, names)) => {
                if let (Some(v), Some(n)) = (names.as_mut(), name.clone()) {
                    if !v.contains(&n) {
                        v.push(n);
                    }
                } else {
                    *names = None;
                }
            }
            None => out.push((dir, name.map(|n| vec![n]))),
        };
    let is_dir = |d: &Path| std::fs::symlink_metadata(d).is_ok_and(|m| m.is_dir());
    for w in &p.watched {
        let Some(root) = roots
            .iter()
            .filter(|r| w.path.starts_with(r))
            .max_by_key(|r| r.components().count())
        else {
            continue;
        };
        let mut below = w.path.as_path();
        while let Some(parent) = below.parent() {
            if !parent.starts_with(root) {
                break;
            }
            if is_dir(parent) {
                add(parent.to_path_buf(), below.file_name().map(OsString::from));
                break;
            }
            below = parent;
        }
    }
    for wd in &p.watched_dirs {
        let mut d = wd.dir.as_path();
        while !is_dir(d) {
            match d.parent() {
                Some(up) if roots.iter().any(|r| up.starts_with(r)) => d = up,
                _ => break,
            }
        }
        if d == wd.dir {
            add(d.to_path_buf(), None);
            for e in std::fs::read_dir(d)
                .into_iter()
                .flatten()
                .flatten()
                .take(1024)
            {
                let name = e.file_name();
                if wd.known.iter().any(|k| OsString::from(k) == name) || !is_dir(&e.path()) {
                    continue;
                }
                for n in &wd.names {
                    add(e.path(), Some(n.into()));
                }
            }
        } else if is_dir(d) {
            let next = wd
                .dir
                .strip_prefix(d)
                .ok()
                .and_then(|r| r.components().next());
            add(d.to_path_buf(), next.map(|c| c.as_os_str().to_os_string()));
        }
    }
    out
}

impl State {
    /// Add a watch for every target not yet watched.
    fn refresh(&mut self) {
        for (dir, names) in targets(&self.project) {
            if let Ok(wd) = self.ino.add_watch(&dir, mask()) {
                self.dirs.insert(wd, (dir, names));
            }
        }
    }

    /// Sweep under the lock; false once the watch has stopped.
    fn sweep(&mut self) -> bool {
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
        g.0.extend(sweep(&self.project, dir, Some(self.since)));
        let most =
            g.0.iter()
                .map(|q| g.0.iter().filter(|o| o.path == q.path).count())
                .max()
                .unwrap_or(0);
        // Per path, and in all: alternating names must not buy many more moments
        // (red-team 5); a project's scaffolding makes a few such files once each.
        if most > REPLANTS || g.0.len() > 4 * REPLANTS {
            if most <= REPLANTS {
                crate::warn!(
                    "this session made {} code-steering files in the project while it ran: csbox stopped it (each one put in place is a moment in which a git or an editor on your host reads it)",
                    g.0.len()
                );
            }
            if let Some(fd) = self
                .shared
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
            return false;
        }
        true
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
        self.refresh();
        // What the command made before the watches were in place.
        if !self.sweep() {
            return;
        }
        loop {
            let mut fds = [
                PollFd::new(self.ino.as_fd(), PollFlags::POLLIN),
                PollFd::new(wake.as_fd(), PollFlags::POLLIN),
            ];
            if poll(&mut fds, PollTimeout::NONE).is_err() {
                continue;
            }
            if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                return;
            }
            let Ok(events) = self.ino.read_events() else {
                continue;
            };
            let relevant = events.iter().any(|e| match self.dirs.get(&e.wd) {
                Some((_, None)) => true,
                Some((_, Some(names))) => e.name.as_ref().is_some_and(|n| names.contains(n)),
                None => false,
            });
            if relevant {
                if !self.sweep() {
                    return;
                }
                self.refresh();
            }
        }
    }
}

impl Watch {
    /// Start watching `project` for the session in `session_fd` (at `session_path`).
    /// None when there is nothing to watch or inotify is not available (the exit sweep
    /// still runs).
    pub fn start(
        project: &ProjectView,
        session_fd: &OwnedFd,
        session_path: &Path,
        id: &str,
    ) -> Option<Watch> {
        if project.read_only || (project.watched.is_empty() && project.watched_dirs.is_empty()) {
            return None;
        }
        let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok()?;
        let ino_ref = ino.as_fd().try_clone_to_owned().ok()?;
        let (wake_r, wake_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
        let shared = Arc::new(Shared::default());
        let state = State {
            project: project.clone(),
            session_fd: session_fd.try_clone().ok()?,
            session_path: session_path.to_path_buf(),
            id: id.to_string(),
            ino,
            dirs: HashMap::new(),
            shared: shared.clone(),
            since: std::time::SystemTime::now(),
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
            ino: ino_ref,
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
        let mut g = self.shared.moves.lock().unwrap_or_else(|e| e.into_inner());
        g.1 = true;
        let moved = std::mem::take(&mut g.0);
        drop(g);
        let _ = nix::unistd::write(&self.wake, b"x");
        hand_over_teardown(self.ino);
        moved
    }
}

/// The last close of an inotify instance waits for the kernel to tear its marks down (an
/// RCU grace period: 10-15 ms measured here), and a process's exit waits for its last
/// close: csbox's own exit took that long after every command. So the last reference
/// goes to a forked child that holds only it and a pipe, and lets go when csbox has
/// exited (the pipe's other end closes with us): the teardown happens off the user's
/// path. The child runs nothing but close, read and _exit (all async-signal-safe, as a
/// fork of a threaded process must).
fn hand_over_teardown(ino: OwnedFd) {
    let Ok((r, w)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else {
        return;
    };
    let (keep_a, keep_b) = {
        let (a, b) = (ino.as_raw_fd(), r.as_raw_fd());
        (a.min(b) as libc::c_uint, a.max(b) as libc::c_uint)
    };
    // SAFETY: the child only makes async-signal-safe calls before _exit.
    match unsafe { libc::fork() } {
        0 => {
            // SAFETY: close_range and read on fds of our own; _exit never returns.
            unsafe {
                if keep_a > 0 {
                    libc::syscall(libc::SYS_close_range, 0, keep_a - 1, 0);
                }
                if keep_b > keep_a + 1 {
                    libc::syscall(libc::SYS_close_range, keep_a + 1, keep_b - 1, 0);
                }
                libc::syscall(libc::SYS_close_range, keep_b + 1, libc::c_uint::MAX, 0);
                // Blocked signals are the supervisor's: only the pipe's end wakes this.
                let mut b = 0u8;
                libc::read(r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
                libc::_exit(0);
            }
        }
        pid if pid > 0 => {
            // Ours closes with our exit; the child's read then ends.
            std::mem::forget(w);
        }
        _ => {}
    }
    drop(r);
    drop(ino);
}
