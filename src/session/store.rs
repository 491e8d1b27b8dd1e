//! The session store: `SESSIONS_DIR/<id>/{session.json,lock,state/,work/}` plus the
//! `active/<id> -> ../<id>` view kept for the old scripts' `ls ~/.claude/sessions/active/`.
//!
//! A new session is built under a dot-name (`.new-<id>`), locked, and only then renamed to
//! `<id>`, so gc never sees an unlocked half-made session.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::id::{validate_reference, SessionId};
use super::info::{info_at, SessionInfo};
use super::layout::{open_dir_at, read_meta};
use super::lock::{is_locked, try_lock_exclusive, HeldLock, LOCK_FILE};
use super::meta::{Metadata, META_FILE};
use crate::error::{Error, Result};
use crate::fsutil::{self, open_dir_nofollow, TreeStats};

pub use super::layout::{
    ACTIVE_DIR, HOME_DIR, HOME_UPPER, HOME_WORK, SESSION_OWN_DIRS, STATE_DIR, STATE_SKELETON_FILE,
    WORK_DIR,
};

#[derive(Debug, Clone)]
pub struct Store {
    pub dir: PathBuf,
}

/// A session that this process holds the lock of: the supervisor's handle.
#[derive(Debug)]
pub struct LiveSession {
    pub id: SessionId,
    pub dir: PathBuf,
    pub meta: Metadata,
    dir_fd: OwnedFd,
    store_dir: PathBuf,
    lock: HeldLock,
}

impl Store {
    pub fn new(dir: PathBuf) -> Self {
        Store { dir }
    }

    /// Create the store (mode 0700: transcripts are private) and its `active/` view.
    pub fn ensure(&self) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        fsutil::refuse_non_dir(&self.dir, "SESSIONS_DIR (the session store)")?;
        if !self.dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(|e| {
                    Error::io("create session store", &self.dir, e)
                        .hint("set SESSIONS_DIR to a writable directory")
                })?;
        }
        let active = self.dir.join(ACTIVE_DIR);
        match std::fs::create_dir(&active) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create", &active, e)),
        }
        Ok(())
    }

    /// The store directory, opened without following a symlink.
    pub fn open(&self) -> Result<OwnedFd> {
        open_dir_nofollow(&self.dir)
            .map_err(|e| Error::io("open session store", &self.dir, e).hint("run `csbox doctor`"))
    }

    /// Make a new session: skeleton, metadata, lock, then publish it under its id.
    /// `durability` is the record's (`csbox run` syncs none: see [`fsutil::atomic_write`]).
    pub fn create(
        &self,
        meta: Metadata,
        seed_claude_json: Option<&[u8]>,
        durability: fsutil::Durability,
    ) -> Result<LiveSession> {
        self.ensure()?;
        let store_fd = self.open()?;
        let id = meta.id.clone();
        let staging = format!(".new-{id}");
        let sdir = self.dir.join(&staging);
        nix::sys::stat::mkdirat(
            Some(store_fd.as_raw_fd()),
            staging.as_str(),
            nix::sys::stat::Mode::from_bits_truncate(0o700),
        )
        .map_err(|e| Error::io("create", &sdir, e.into()))?;
        crate::fault::point("create:mkdir");
        let result = (|| {
            let dfd = open_dir_nofollow(&sdir).map_err(|e| Error::io("open", &sdir, e))?;
            let lock = try_lock_exclusive(&dfd, true)
                .map_err(|e| Error::io("lock", sdir.join(LOCK_FILE), e))?
                .ok_or_else(|| {
                    Error::Other(format!("{} is locked by another process", sdir.display()))
                })?;
            crate::fault::point("create:locked");
            // Claude Code keeps `sessions/<pid>.json` in its config dir: inside the sandbox
            // `~/.claude/sessions` must be this session's own, so it exists from the start.
            // Made beneath the new dir's fd (nobody else can reach it yet): no path walk.
            // The rest (the overlays' upper and work dirs) is made by `layers::prepare`
            // for the plan that uses it: a compat or hidden-home session has no home layer.
            let state_sessions = format!("{STATE_DIR}/sessions");
            for d in [STATE_DIR, &state_sessions] {
                nix::sys::stat::mkdirat(
                    Some(dfd.as_raw_fd()),
                    d,
                    nix::sys::stat::Mode::from_bits_truncate(0o777),
                )
                .map_err(|e| Error::io("create", sdir.join(d), e.into()))?;
            }
            crate::fault::point("create:skeleton");
            if let Some(seed) = seed_claude_json {
                // Nobody can see the staging dir yet: a plain write is enough.
                let name = format!("{STATE_DIR}/.claude.json");
                write_new_at(&dfd, &sdir, &name, seed)?;
            }
            if durability == fsutil::Durability::Full {
                fsutil::atomic_write_at(
                    &dfd,
                    &sdir,
                    META_FILE,
                    &meta.to_json(),
                    0o600,
                    durability,
                )?;
            } else {
                // Unpublished: no reader can see a half-written record, so no temp file and
                // rename (the publishing rename below makes it visible whole).
                write_new_at(&dfd, &sdir, META_FILE, &meta.to_json())?;
            }
            crate::fault::point("create:recorded");
            Ok((dfd, lock))
        })();
        let (dfd, lock) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = fsutil::remove_tree_at(&store_fd, &staging);
                return Err(e);
            }
        };
        let dir = self.dir.join(id.as_str());
        nix::fcntl::renameat(
            Some(store_fd.as_raw_fd()),
            staging.as_str(),
            Some(store_fd.as_raw_fd()),
            id.as_str(),
        )
        .map_err(|e| Error::io("rename", &dir, e.into()))?;
        crate::fault::point("create:published");
        if durability == fsutil::Durability::Full {
            // The publishing rename too, or a crash could leave only `.new-<id>`.
            nix::unistd::fsync(store_fd.as_raw_fd())
                .map_err(|e| Error::io("fsync", &self.dir, e.into()))?;
        }
        Ok(LiveSession {
            id,
            dir,
            meta,
            dir_fd: dfd,
            store_dir: self.dir.clone(),
            lock,
        })
    }

    /// A session's directory, opened without following a link.
    pub fn open_session_dir(&self, id: &SessionId) -> Result<OwnedFd> {
        let dir = self.dir.join(id.as_str());
        open_dir_nofollow(&dir).map_err(|e| Error::io("open", &dir, e))
    }

    /// Lock an existing, inactive session to run it again (`csbox run --session`).
    pub fn enter(&self, id: &SessionId) -> Result<LiveSession> {
        let dir = self.dir.join(id.as_str());
        let dfd = open_dir_nofollow(&dir).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => Error::BadSession {
                msg: format!("no session {id} in {}", self.dir.display()),
            },
            _ => Error::io("open", &dir, e),
        })?;
        let removed = || Error::BadSession {
            msg: format!("session {id} was removed while csbox opened it"),
        };
        // ENOENT: gc removed the directory (and its lock file) after our open.
        let lock = try_lock_exclusive(&dfd, true)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT) => removed(),
                Some(libc::ELOOP | libc::EISDIR) | None => Error::BadSession {
                    msg: format!(
                        "session {id} cannot be run: its lock {}: {e}; look at {}, then remove it by hand",
                        dir.join(LOCK_FILE).display(),
                        dir.display()
                    ),
                },
                _ => Error::io("lock", dir.join(LOCK_FILE), e),
            })?
            .ok_or_else(|| Error::BadSession {
                msg: format!("session {id} is active (or being removed by `csbox gc`): attach to it in its own terminal, or start a new one"),
            })?;
        // gc may have renamed the directory away between our open and our lock: make sure
        // the lock we hold is the one at `<id>/lock` now.
        let now = nix::sys::stat::stat(&dir.join(LOCK_FILE)).map_err(|e| match e {
            Errno::ENOENT => removed(),
            e => Error::io("stat", dir.join(LOCK_FILE), e.into()),
        })?;
        let held = nix::sys::stat::fstat(lock.fd().as_raw_fd())
            .map_err(|e| Error::sys("fstat(lock)", e))?;
        if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino) {
            return Err(removed());
        }
        let meta = read_meta(&dfd).map_err(|why| Error::BadSession {
            msg: format!(
                "session {id} has no usable session.json ({why}); it cannot be re-entered"
            ),
        })?;
        if meta.id != *id {
            return Err(Error::BadSession {
                msg: format!("session {id}: session.json names another id ({})", meta.id),
            });
        }
        Ok(LiveSession {
            id: id.clone(),
            dir,
            meta,
            dir_fd: dfd,
            store_dir: self.dir.clone(),
            lock,
        })
    }

    /// Turn what the user typed into one session id: the full id, a unique prefix of at
    /// least 4 characters, or a unique `--name`.
    pub fn resolve(&self, reference: &str) -> Result<SessionId> {
        validate_reference(reference)?;
        if let Some(id) = SessionId::parse(reference) {
            if self.dir.join(id.as_str()).is_dir() {
                return Ok(id);
            }
            return Err(Error::BadSession {
                msg: format!("no session {id} in {} (see `csbox ls`)", self.dir.display()),
            });
        }
        let ids = self.ids()?;
        let mut matches: Vec<SessionId> = if reference.len() >= 4 {
            ids.iter()
                .filter(|id| id.as_str().starts_with(reference))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        if matches.is_empty() {
            let store_fd = self.open()?;
            for id in &ids {
                if let Some(meta) = open_dir_at(&store_fd, id.as_str())
                    .ok()
                    .and_then(|fd| read_meta(&fd).ok())
                {
                    if meta.name.as_deref() == Some(reference) {
                        matches.push(id.clone());
                    }
                }
            }
        }
        match matches.len() {
            1 => Ok(matches.pop().unwrap()),
            0 => Err(Error::BadSession {
                msg: format!("no session matches {reference:?} (see `csbox ls`)"),
            }),
            n => {
                let mut list: Vec<String> =
                    matches.iter().take(10).map(|m| m.to_string()).collect();
                if n > 10 {
                    list.push(format!("and {} more", n - 10));
                }
                Err(Error::BadSession {
                    msg: format!(
                        "{:?} matches {n} sessions: {}; give more of the id",
                        crate::human::printable(reference),
                        list.join(", ")
                    ),
                })
            }
        }
    }

    /// Every directory entry that is a well-formed session id, newest first. Symlinks and
    /// other names (`active`, `.new-*`, planted junk) are not sessions.
    pub fn ids(&self) -> Result<Vec<SessionId>> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read", &self.dir, e)),
        };
        let mut ids: Vec<SessionId> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| SessionId::parse(e.file_name().to_str()?))
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        Ok(ids)
    }

    /// Everything `csbox ls` shows. `with_size` walks each state tree (slow on big stores).
    pub fn list(&self, with_size: bool) -> Result<Vec<SessionInfo>> {
        let ids = self.ids()?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let store_fd = self.open()?;
        let links = self.active_links();
        Ok(ids
            .into_iter()
            .filter_map(|id| info_at(&self.dir, &store_fd, id, with_size, &links))
            .collect())
    }

    pub fn info(&self, id: &SessionId, with_size: bool) -> Result<SessionInfo> {
        let store_fd = self.open()?;
        info_at(
            &self.dir,
            &store_fd,
            id.clone(),
            with_size,
            &self.active_links(),
        )
        .ok_or_else(|| Error::BadSession {
            msg: format!("no session {id}"),
        })
    }

    fn active_links(&self) -> std::collections::HashSet<String> {
        std::fs::read_dir(self.dir.join(ACTIVE_DIR))
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Names in `active/` whose session is not active (a stale view).
    pub fn stale_active_links(&self) -> Result<Vec<String>> {
        let links = self.active_links();
        if links.is_empty() {
            return Ok(Vec::new());
        }
        let store_fd = self.open()?;
        Ok(links
            .into_iter()
            .filter(|name| {
                !SessionId::parse(name)
                    .and_then(|id| open_dir_at(&store_fd, id.as_str()).ok())
                    .map(|fd| is_locked(&fd))
                    .unwrap_or(false)
            })
            .collect())
    }

    /// Remove `active/` links whose session is not active (a view must not lie). Returns
    /// how many were pruned.
    pub fn prune_active_links(&self) -> Result<usize> {
        let active_dir = self.dir.join(ACTIVE_DIR);
        let Ok(afd) = open_dir_nofollow(&active_dir) else {
            return Ok(0);
        };
        let mut pruned = 0;
        for name in self.stale_active_links()? {
            if nix::unistd::unlinkat(
                Some(afd.as_raw_fd()),
                name.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            )
            .is_ok()
            {
                pruned += 1;
            }
        }
        Ok(pruned)
    }

    /// Delete a session whose lock the caller holds (`run --rm`, gc): rename it out of the
    /// id namespace first (`.trash-<id>`) so `run --session` cannot re-enter it, then
    /// remove the tree, and only then let go of the lock.
    pub fn remove_locked(
        &self,
        store_fd: &OwnedFd,
        id: &SessionId,
        lock: HeldLock,
    ) -> Result<TreeStats> {
        let _ = std::fs::remove_file(self.dir.join(ACTIVE_DIR).join(id.as_str()));
        let mut trash = format!(".trash-{id}");
        // A crashed earlier removal may have left `.trash-<id>`: never rename onto it.
        let mut renamed = rename_noreplace(store_fd, id.as_str(), &trash);
        if renamed == Err(Errno::EEXIST) || renamed == Err(Errno::ENOTEMPTY) {
            trash = format!(".trash-{id}-{}", std::process::id());
            renamed = rename_noreplace(store_fd, id.as_str(), &trash);
        }
        renamed.map_err(|e| Error::io("rename", self.dir.join(id.as_str()), e.into()))?;
        crate::fault::point("remove:trashed");
        let stats = fsutil::remove_tree_at(store_fd, &trash)
            .map_err(|e| Error::io("remove", self.dir.join(&trash), e.into()))?;
        drop(lock);
        Ok(stats)
    }
}

fn rename_noreplace(dir: &OwnedFd, from: &str, to: &str) -> nix::Result<()> {
    nix::fcntl::renameat2(
        Some(dir.as_raw_fd()),
        from,
        Some(dir.as_raw_fd()),
        to,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    )
}

impl LiveSession {
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join(STATE_DIR)
    }

    pub fn work_dir(&self) -> PathBuf {
        self.dir.join(WORK_DIR)
    }

    pub fn lock_fd(&self) -> &OwnedFd {
        self.lock.fd()
    }

    /// The session directory, opened without following a link.
    pub fn dir_fd(&self) -> &OwnedFd {
        &self.dir_fd
    }

    /// Replace session.json (tmp + rename: readers see the old or the new record).
    pub fn write_meta(&self, durable: fsutil::Durability) -> Result<()> {
        fsutil::atomic_write_at(
            &self.dir_fd,
            &self.dir,
            META_FILE,
            &self.meta.to_json(),
            0o600,
            durable,
        )
    }

    /// `active/<id> -> ../<id>`, for `ls -la ~/.claude/sessions/active/`.
    pub fn link_active(&self) -> Result<()> {
        let link = self.store_dir.join(ACTIVE_DIR).join(self.id.as_str());
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(Path::new("..").join(self.id.as_str()), &link)
            .map_err(|e| Error::io("symlink", &link, e))
    }

    pub fn unlink_active(&self) {
        let _ = std::fs::remove_file(self.store_dir.join(ACTIVE_DIR).join(self.id.as_str()));
    }

    /// Delete the session (`--rm`) while still holding its lock.
    pub fn remove(self) -> Result<TreeStats> {
        let store = Store::new(self.store_dir);
        let store_fd = store.open()?;
        store.remove_locked(&store_fd, &self.id, self.lock)
    }
}

/// `name` (beneath `dir`, whose path is `dir_path`) created with `bytes`, mode 0600; fails
/// if anything is there.
fn write_new_at(dir: &OwnedFd, dir_path: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let p = dir_path.join(name);
    let fd = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        name,
        nix::fcntl::OFlag::O_WRONLY
            | nix::fcntl::OFlag::O_CREAT
            | nix::fcntl::OFlag::O_EXCL
            | nix::fcntl::OFlag::O_NOFOLLOW
            | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| Error::io("create", &p, e.into()))?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    std::io::Write::write_all(&mut f, bytes).map_err(|e| Error::io("write", &p, e))
}
