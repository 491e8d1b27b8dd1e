//! `csbox gc`: remove old, empty and orphaned sessions, never an active one, and a
//! crashed one (started, never ended) only when it is old: it holds the user's work.
//!
//! 1. Scan the store: each session's state, emptiness and last activity.
//! 2. Decide (`select`, pure): which sessions go and why.
//! 3. For each: take its lock ourselves. A session that became active since the scan
//!    holds it, and is kept. Rename it to `.trash-<id>` so `csbox run --session` cannot
//!    re-enter it, then remove the tree through dir fds (`fsutil::remove_tree_at`).
//! 4. Prune stale `active/` links; remove `.new-*`/`.trash-*` leftovers of crashed runs.
//!
//! Session directories were written by sandboxed processes: nothing here follows a
//! symlink, leaves the store, or crosses into another mount.

pub mod select;
pub mod units;

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, SystemTime};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};
use crate::fsutil::{disk_usage, mounts_at_or_below, openat_nofollow, remove_tree_at, TreeStats};
use crate::human::human_size;
use crate::paths::Paths;
use crate::session::lock::{is_locked, try_lock_exclusive, HeldLock, LOCK_FILE};
use crate::session::meta::format_time;
use crate::session::{SessionId, SessionInfo, State, Store};
use select::{parse_size, select, Candidate, Decision, Policy, Reason};

/// `.new-*` and `.trash-*` dirs changed more recently than this are left alone.
const LEFTOVER_AGE: Duration = Duration::from_secs(3600);

#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub dry_run: bool,
    /// The rules applied: `old_after_days` is null when age was no reason.
    pub old_after_days: Option<u64>,
    pub empty: bool,
    pub orphaned: bool,
    pub crashed: bool,
    pub max_size: Option<u64>,
    /// Sessions removed (or, in a dry run, that would be).
    pub removed: Vec<Removed>,
    pub kept_active: Vec<SessionId>,
    pub kept_young: Vec<SessionId>,
    /// Inactive sessions that none of the chosen rules matched.
    pub kept_unselected: Vec<SessionId>,
    /// `.new-*` / `.trash-*` dirs left by crashed runs.
    pub leftovers_removed: Vec<String>,
    pub active_links_pruned: Vec<String>,
    pub bytes_reclaimed: u64,
    pub errors: Vec<GcError>,
}

#[derive(Debug, serde::Serialize)]
pub struct Removed {
    pub id: SessionId,
    pub reasons: Vec<Reason>,
    pub last_activity: String,
    pub bytes: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct GcError {
    /// The session id or store entry that could not be removed.
    pub entry: String,
    pub error: String,
}

/// What `csbox gc` was asked to do, as plain values.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub dry_run: bool,
    pub days: Option<u64>,
    pub empty: bool,
    pub orphaned: bool,
    pub crashed: bool,
    pub json: bool,
    /// `--max-size` as typed (`10G`).
    pub max_size: Option<String>,
    /// A timer to install, remove or print instead of a run.
    pub timer: Option<units::Action>,
    /// OnCalendar= for an installed timer.
    pub calendar: String,
}

pub fn run(req: &Request) -> Result<i32> {
    let paths = Paths::from_env()?;
    if let Some(action) = req.timer {
        let rules = units::TimerRules {
            days: req.days,
            empty: req.empty,
            orphaned: req.orphaned,
            crashed: req.crashed,
            max_size: req.max_size.clone(),
            calendar: req.calendar.clone(),
        };
        return units::command(action, &rules, &paths);
    }
    let max_size = req.max_size.as_deref().map(parse_size).transpose()?;
    let policy = Policy::from_flags(req.days, req.empty, req.orphaned, req.crashed, max_size);
    let report = gc(
        &Store::new(paths.sessions_dir),
        &policy,
        req.dry_run,
        SystemTime::now(),
    )?;
    let mut out = std::io::stdout().lock();
    if req.json {
        serde_json::to_writer_pretty(&mut out, &report).map_err(|e| Error::Other(e.to_string()))?;
        let _ = writeln!(out);
    } else {
        let _ = out.write_all(render_text(&report).as_bytes());
    }
    for e in &report.errors {
        eprintln!("csbox: gc: {}: {}", e.entry, e.error);
    }
    match report.errors.len() {
        0 => Ok(0),
        n => Err(Error::Other(format!(
            "gc: {n} entr{} could not be removed (named above); the rest was done",
            if n == 1 { "y" } else { "ies" }
        ))),
    }
}

/// One gc run over `store`.
pub fn gc(store: &Store, policy: &Policy, dry_run: bool, now: SystemTime) -> Result<Report> {
    let mut report = Report {
        dry_run,
        old_after_days: policy.older_than_days,
        empty: policy.empty,
        orphaned: policy.orphaned,
        crashed: policy.crashed,
        max_size: policy.max_size,
        ..Default::default()
    };
    if std::fs::symlink_metadata(&store.dir)
        .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
    {
        return Ok(report); // no store yet: nothing to do
    }
    let store_fd = store.open()?;
    let mut infos = store.list(false)?;
    // A session gc cannot open, or whose lock is no regular file, is never removed (nobody
    // can tell whether it runs, or what it holds): it is named, every run, until fixed.
    infos.retain(|info| match &info.state {
        State::Unreadable { reason } | State::Corrupt { reason } => {
            report.errors.push(GcError {
                entry: info.id.to_string(),
                error: format!(
                    "{} ({}): kept; {reason}",
                    info.state_word(),
                    info.dir.display()
                ),
            });
            false
        }
        _ => true,
    });
    let cands: Vec<Candidate> = infos
        .iter()
        .map(|info| candidate(&store_fd, info, policy))
        .collect();
    let decisions = select(&cands, policy, now);
    // Listed before removals so a dry run and a real run report the same links.
    report.active_links_pruned = store.stale_active_links()?;
    for (c, d) in cands.into_iter().zip(decisions) {
        let reasons = match d {
            Decision::KeepActive => {
                report.kept_active.push(c.id);
                continue;
            }
            Decision::KeepYoung => {
                report.kept_young.push(c.id);
                continue;
            }
            Decision::KeepUnselected => {
                report.kept_unselected.push(c.id);
                continue;
            }
            Decision::Remove(r) => r,
        };
        let outcome = if dry_run {
            let bytes = c
                .size
                .unwrap_or_else(|| entry_usage(&store_fd, c.id.as_str()).bytes);
            refuse_mounts(store, &store_fd, &c.id).map(|()| Outcome::Removed(bytes))
        } else {
            remove_session(store, &store_fd, &c.id)
        };
        match outcome {
            Ok(Outcome::Removed(bytes)) => {
                report.bytes_reclaimed += bytes;
                report.removed.push(Removed {
                    id: c.id,
                    reasons,
                    last_activity: format_time(c.last_activity),
                    bytes,
                });
            }
            Ok(Outcome::BecameActive) => report.kept_active.push(c.id),
            Ok(Outcome::Gone) => {}
            Err(e) => report.errors.push(GcError {
                entry: c.id.to_string(),
                error: e.to_string(),
            }),
        }
    }
    if !dry_run && !report.active_links_pruned.is_empty() {
        store.prune_active_links()?;
    }
    for name in leftovers(store, &store_fd, now)? {
        let outcome = if dry_run {
            Ok(Some(entry_usage(&store_fd, &name).bytes))
        } else {
            remove_leftover(store, &store_fd, &name)
        };
        match outcome {
            Ok(Some(bytes)) => {
                report.bytes_reclaimed += bytes;
                report.leftovers_removed.push(name);
            }
            Ok(None) => {}
            Err(e) => report.errors.push(GcError {
                entry: name,
                error: e.to_string(),
            }),
        }
    }
    Ok(report)
}

/// What `csbox rm` did with one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RmOutcome {
    /// Removed (or, in a dry run, would be), this many bytes.
    Removed(u64),
    /// Its lock is held: it is running, and is kept.
    Active,
    /// Someone else removed it meanwhile.
    Gone,
}

/// Remove the session `id` as gc removes one: only while holding its lock (taken at the
/// moment of deletion), never with a file system mounted inside, renamed out of the id
/// namespace first. A dry run checks the same and removes nothing.
pub fn remove_one(store: &Store, id: &SessionId, dry_run: bool) -> Result<RmOutcome> {
    let store_fd = store.open()?;
    if dry_run {
        let dir = store.dir.join(id.as_str());
        let Some(dfd) =
            open_entry(&store_fd, id.as_str()).map_err(|e| Error::io("open", &dir, e))?
        else {
            return Ok(RmOutcome::Gone);
        };
        if is_locked(&dfd) {
            return Ok(RmOutcome::Active);
        }
        refuse_mounts(store, &store_fd, id)?;
        return Ok(RmOutcome::Removed(
            entry_usage(&store_fd, id.as_str()).bytes,
        ));
    }
    Ok(match remove_session(store, &store_fd, id)? {
        Outcome::Removed(b) => RmOutcome::Removed(b),
        Outcome::BecameActive => RmOutcome::Active,
        Outcome::Gone => RmOutcome::Gone,
    })
}

/// What `select` needs to know about one listed session. Walks the session's tree only
/// when its size is needed (`--max-size`) or session.json has no end time (a crashed
/// session's last activity is the newest mtime in its layers). A stale `active/` link
/// says only that a supervisor died: the session is crashed, not orphaned.
fn candidate(store_fd: &OwnedFd, info: &SessionInfo, policy: &Policy) -> Candidate {
    let active = info.is_active();
    let orphaned = match &info.state {
        State::Orphaned { reason } => Some(reason.clone()),
        _ => None,
    };
    let ended = info.meta.as_ref().and_then(|m| m.ended);
    let walk = policy.max_size.is_some() || (!active && ended.is_none());
    let tree = walk.then(|| entry_usage(store_fd, info.id.as_str()));
    Candidate {
        id: info.id.clone(),
        active,
        empty: info.empty,
        for_runtime: matches!(
            info.state,
            State::Created | State::RuntimeStarted | State::RuntimeEnded
        ),
        orphaned,
        crashed: matches!(info.state, State::Crashed { .. }),
        named: info.meta.as_ref().is_some_and(|m| m.name.is_some()),
        last_activity: ended
            .or(tree.and_then(|t| t.newest_mtime))
            .unwrap_or(info.created),
        size: tree.map(|t| t.bytes),
    }
}

/// Size and newest mtime of the store entry `name`, the directory itself included.
/// Read-only; what cannot be read counts as nothing.
fn entry_usage(store_fd: &OwnedFd, name: &str) -> TreeStats {
    let Ok(dfd) = openat_nofollow(
        store_fd,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
    ) else {
        return TreeStats::default();
    };
    let mut stats = disk_usage(&dfd).unwrap_or_default();
    if let Ok(st) = nix::sys::stat::fstat(dfd.as_raw_fd()) {
        stats.bytes += st.st_blocks as u64 * 512;
    }
    stats
}

enum Outcome {
    /// Removed, this many bytes.
    Removed(u64),
    /// Its lock was taken since the scan: it is running now.
    BecameActive,
    /// Someone else removed it meanwhile.
    Gone,
}

/// Remove one session, but only while holding its lock.
fn remove_session(store: &Store, store_fd: &OwnedFd, id: &SessionId) -> Result<Outcome> {
    let dir = store.dir.join(id.as_str());
    let Some(dfd) = open_entry(store_fd, id.as_str()).map_err(|e| Error::io("open", &dir, e))?
    else {
        return Ok(Outcome::Gone);
    };
    let Some(lock) =
        lock_for_removal(&dfd).map_err(|e| Error::io("lock", dir.join(LOCK_FILE), e))?
    else {
        return Ok(Outcome::BecameActive);
    };
    // While we waited for the lock another gc may have renamed the directory away: make
    // sure `<id>` still names the directory we locked.
    let here = nix::sys::stat::fstatat(
        Some(store_fd.as_raw_fd()),
        id.as_str(),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    );
    let ours =
        nix::sys::stat::fstat(dfd.as_raw_fd()).map_err(|e| Error::sys("fstat(session dir)", e))?;
    if !here.is_ok_and(|h| (h.st_dev, h.st_ino) == (ours.st_dev, ours.st_ino)) {
        return Ok(Outcome::Gone);
    }
    refuse_mounts(store, store_fd, id)?;
    let stats = store.remove_locked(store_fd, id, lock)?;
    Ok(Outcome::Removed(stats.bytes))
}

/// A session with a file system mounted inside is left whole, before anything of it is
/// renamed or removed (the walk would stop at the mount, but only after deleting all
/// around it): the error names the mounts.
fn refuse_mounts(store: &Store, store_fd: &OwnedFd, id: &SessionId) -> Result<()> {
    let Some(dfd) = open_entry(store_fd, id.as_str()).ok().flatten() else {
        return Ok(());
    };
    let mounts = mounts_at_or_below(&dfd);
    if mounts.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = mounts.iter().map(|m| m.display().to_string()).collect();
    Err(Error::Other(format!(
        "{} is left whole: a file system is mounted at {}; unmount it (`umount {}`), then run gc again",
        store.dir.join(id.as_str()).display(),
        list.join(", "),
        list[0]
    )))
}

/// Open a store entry as a directory, no-follow. None when it is gone or is not a
/// directory (a planted symlink is not a session).
fn open_entry(store_fd: &OwnedFd, name: &str) -> std::io::Result<Option<OwnedFd>> {
    match openat_nofollow(
        store_fd,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::ELOOP | libc::ENOTDIR)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The session's lock, or None while someone else holds it. The lock file is opened
/// without O_CREAT; only a session that has none gets one, because `csbox run
/// --session` creates it to enter and both sides must meet on the same file.
fn lock_for_removal(dfd: &OwnedFd) -> std::io::Result<Option<HeldLock>> {
    match try_lock_exclusive(dfd, false) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => try_lock_exclusive(dfd, true),
        r => r,
    }
}

/// `.new-*` / `.trash-*` directories not changed for `LEFTOVER_AGE` and not locked.
fn leftovers(store: &Store, store_fd: &OwnedFd, now: SystemTime) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(&store.dir).map_err(|e| Error::io("read", &store.dir, e))?;
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(".new-") || n.starts_with(".trash-"))
        .filter(|n| {
            let Ok(st) = nix::sys::stat::fstatat(
                Some(store_fd.as_raw_fd()),
                n.as_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ) else {
                return false;
            };
            // A run in progress holds the lock of its `.new-`/`.trash-` dir; the age only
            // covers the instant between mkdir and taking the lock.
            let changed = SystemTime::UNIX_EPOCH + Duration::from_secs(st.st_mtime.max(0) as u64);
            st.st_mode & libc::S_IFMT == libc::S_IFDIR
                && now.duration_since(changed).unwrap_or_default() > LEFTOVER_AGE
        })
        .filter(|n| {
            open_entry(store_fd, n)
                .ok()
                .flatten()
                .is_some_and(|fd| !is_locked(&fd))
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Remove one leftover while holding its lock, if it has one. None: it is in use.
fn remove_leftover(store: &Store, store_fd: &OwnedFd, name: &str) -> Result<Option<u64>> {
    let path = store.dir.join(name);
    let Some(dfd) = open_entry(store_fd, name).map_err(|e| Error::io("open", &path, e))? else {
        return Ok(None);
    };
    let lock = match try_lock_exclusive(&dfd, false) {
        Ok(None) => return Ok(None),
        Ok(Some(l)) => Some(l),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
        Err(e) => return Err(Error::io("lock", path.join(LOCK_FILE), e)),
    };
    let stats = remove_tree_at(store_fd, name).map_err(|e| Error::io("remove", &path, e.into()))?;
    drop(lock);
    Ok(Some(stats.bytes))
}

fn render_text(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let verb = if r.dry_run { "would remove" } else { "removed" };
    if r.dry_run {
        for x in &r.removed {
            let why: Vec<String> = x.reasons.iter().map(Reason::to_string).collect();
            let _ = writeln!(
                s,
                "{verb} {} ({}): {}",
                x.id,
                human_size(x.bytes),
                why.join(", ")
            );
        }
        for n in &r.leftovers_removed {
            let _ = writeln!(s, "{verb} {n}: left over by a crashed run");
        }
        for n in &r.active_links_pruned {
            let _ = writeln!(s, "would prune active/{n}: its session is not active");
        }
    }
    let plural = |n: usize, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
    let mut kept = vec![format!("{} active", r.kept_active.len())];
    kept.push(format!("{} young", r.kept_young.len()));
    if !r.kept_unselected.is_empty() {
        kept.push(format!(
            "{} not matching the rules",
            r.kept_unselected.len()
        ));
    }
    let _ = write!(
        s,
        "{}{verb} {}",
        if r.dry_run { "dry run: " } else { "" },
        plural(r.removed.len(), "session")
    );
    if !r.leftovers_removed.is_empty() {
        let _ = write!(s, " and {}", plural(r.leftovers_removed.len(), "leftover"));
    }
    let _ = write!(
        s,
        ", {} {}; kept {}",
        if r.dry_run { "reclaiming" } else { "reclaimed" },
        human_size(r.bytes_reclaimed),
        kept.join(", ")
    );
    if !r.active_links_pruned.is_empty() {
        let _ = write!(
            s,
            "; {} {}",
            if r.dry_run { "would prune" } else { "pruned" },
            plural(r.active_links_pruned.len(), "stale active/ link")
        );
    }
    if !r.errors.is_empty() {
        let _ = write!(s, "; {}", plural(r.errors.len(), "error"));
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_removed_kept_and_reclaimed() {
        let r = Report {
            removed: vec![Removed {
                id: SessionId::new(),
                reasons: vec![Reason::Empty],
                last_activity: String::new(),
                bytes: 2048,
            }],
            kept_active: vec![SessionId::new()],
            kept_young: vec![SessionId::new(), SessionId::new()],
            active_links_pruned: vec!["x".into()],
            bytes_reclaimed: 2048,
            ..Default::default()
        };
        assert_eq!(
            render_text(&r),
            "removed 1 session, reclaimed 2.0K; kept 1 active, 2 young; pruned 1 stale active/ link\n"
        );
        let dry = Report { dry_run: true, ..r };
        let text = render_text(&dry);
        assert!(text.contains("would remove 0"), "{text}");
        assert!(text.contains(": empty\n"), "{text}");
        assert!(text.ends_with(
            "dry run: would remove 1 session, reclaiming 2.0K; kept 1 active, 2 young; would prune 1 stale active/ link\n"
        ), "{text}");
    }
}
