//! A session's layers, made ready for a launch by the supervisor, outside the sandbox.
//!
//! The sandbox wrote these directories, so they are hostile: every entry is opened
//! beneath the session directory without following a link and must be what csbox
//! expects. A directory csbox needs is made when an older session lacks it; a link, a
//! FIFO or a file where a directory must be fails the launch with a clear error; a
//! `.claude.json` that is not a regular file is replaced by a fresh copy of the user's.
//! The launcher checks the same again when it opens the sources (openat2 beneath), so
//! nothing changed in between can make it bind a host path.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag};

use super::store::{LiveSession, STATE_DIR};
use crate::error::{Error, Result};
use crate::fsutil::openat_nofollow;

/// The one file a launch mounts from a session: its own `~/.claude.json`.
pub const CLAUDE_JSON: &str = "state/.claude.json";

/// Directories every session has; the layers a plan mounts from (`work`, `home/upper`,
/// `home/work`, …) are its sources, made here when missing (a session first run under
/// compat, then re-entered under default).
const SKELETON: &[&str] = &[STATE_DIR, "state/sessions"];

/// Open `rel` (a/b/c) beneath `base`, each component a directory reached without
/// following a link; create what is missing when `create`. `opened` keeps what was
/// opened by its path below `base`, so a launch's dozen layers share their parents.
fn open_dir_beneath<'a>(
    base: &OwnedFd,
    rel: &str,
    create: bool,
    opened: &'a mut HashMap<String, OwnedFd>,
) -> std::io::Result<&'a OwnedFd> {
    let mut at = 0;
    while at < rel.len() {
        let end = rel[at..].find('/').map_or(rel.len(), |i| at + i);
        let (prefix, c) = (&rel[..end], &rel[at..end]);
        if !opened.contains_key(prefix) {
            let parent = match at {
                0 => base,
                _ => &opened[&rel[..at - 1]],
            };
            let next = open_one(parent, c, create)?;
            opened.insert(prefix.to_string(), next);
        }
        at = end + 1;
    }
    opened
        .get(rel)
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// [`open_dir_beneath`] for one directory, owned.
fn open_dir(base: &OwnedFd, rel: &str, create: bool) -> std::io::Result<OwnedFd> {
    let mut opened = HashMap::new();
    open_dir_beneath(base, rel, create, &mut opened)?;
    opened
        .remove(rel)
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// The directory `c` in `parent`, not through a link; made first when missing and
/// `create`.
fn open_one(parent: &OwnedFd, c: &str, create: bool) -> std::io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
    match openat_nofollow(parent, c, flags, Mode::empty()) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
            nix::sys::stat::mkdirat(Some(parent.as_raw_fd()), c, Mode::from_bits_truncate(0o700))
                .or_else(|e| {
                if e == nix::errno::Errno::EEXIST {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
            openat_nofollow(parent, c, flags, Mode::empty())
        }
        r => r,
    }
}

/// What is at `name` in `dir`, not following a link.
fn kind_at(dir: &OwnedFd, name: &str) -> Option<SFlag> {
    nix::sys::stat::fstatat(
        Some(dir.as_raw_fd()),
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .ok()
    .map(|st| SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT))
}

/// A session directory as the host side opened it (not following a link), for [`prepare`].
pub struct SessionDir<'a> {
    pub fd: &'a OwnedFd,
    pub path: &'a Path,
    pub id: &'a str,
}

impl<'a> From<&'a LiveSession> for SessionDir<'a> {
    fn from(s: &'a LiveSession) -> Self {
        SessionDir {
            fd: s.dir_fd(),
            path: &s.dir,
            id: s.id.as_str(),
        }
    }
}

/// Make the layers of `s` ready (see the module doc) for a plan whose session sources are
/// `sources` (all directories but [`CLAUDE_JSON`]); `seed` gives a fresh `.claude.json`.
/// `csbox run` calls it before each launch, `csbox spec --session|--new` before it writes
/// a bundle whose mounts name these paths.
pub fn prepare(
    s: SessionDir<'_>,
    sources: &[std::path::PathBuf],
    seed: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<()> {
    let base = s.fd;
    let mut dirs: Vec<String> = SKELETON.iter().map(|d| d.to_string()).collect();
    for rel in sources {
        let rel = rel.to_string_lossy().into_owned();
        if rel != CLAUDE_JSON && !dirs.contains(&rel) {
            dirs.push(rel);
        }
    }
    let mut opened = HashMap::new();
    for rel in dirs {
        open_dir_beneath(base, &rel, true, &mut opened).map_err(|e| {
            let err = Error::io("open", s.path.join(&rel), e);
            match &err {
                // A planted link or file: bad input (exit 2), nothing was followed.
                Error::Io { source, .. }
                    if matches!(source.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) =>
                {
                    Error::BadSession {
                        msg: format!(
                            "{err} (it is not a directory: a link or a file planted there?); the session cannot be run again safely: look at it, then `rm -r {}`",
                            s.path.display()
                        ),
                    }
                }
                _ => err.hint(format!(
                    "it cannot be opened; the session cannot be run again safely: look at it, then `rm -r {}`",
                    s.path.display()
                )),
            }
        })?;
    }
    let state = open_dir_beneath(base, STATE_DIR, false, &mut opened)
        .map_err(|e| Error::io("open", s.path.join(STATE_DIR), e))?;
    ensure_claude_json(state, &s, seed)
}

/// The dirs of `state/` whose entries csbox makes as upper dirs of the overlays on this
/// project's entries of `~/.claude` (`plan::Mounts::own_conversations`).
const MADE_UPPERS: &[&str] = &["projects", "file-history"];

/// Remove the empty directories in `state/projects/` and `state/file-history/` (the
/// upper dirs csbox made for a launch, which the session did not write to), so that a
/// merge-back has nothing to walk or to refuse for them (an empty `file-history/<uuid>`
/// of a conversation the session did not resume is "not this session's"). `rmdir`
/// removes only an empty directory and follows no link; a session dir is hostile.
pub fn prune_made_uppers(session_fd: &OwnedFd) {
    let Ok(state) = open_dir(session_fd, STATE_DIR, false) else {
        return;
    };
    for d in MADE_UPPERS {
        let Ok(dir) = open_dir(&state, d, false) else {
            continue;
        };
        let Ok(names) = crate::fsutil::read_names(dir.as_raw_fd()) else {
            continue;
        };
        for n in names {
            let _ = nix::unistd::unlinkat(
                Some(dir.as_raw_fd()),
                n.as_c_str(),
                nix::unistd::UnlinkatFlags::RemoveDir,
            );
        }
        let _ = nix::unistd::unlinkat(
            Some(state.as_raw_fd()),
            *d,
            nix::unistd::UnlinkatFlags::RemoveDir,
        );
    }
}

fn kind_name(k: SFlag) -> &'static str {
    match k {
        SFlag::S_IFLNK => "a symbolic link",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFREG => "a file",
        SFlag::S_IFSOCK => "a socket",
        _ => "a device",
    }
}

/// `state/.claude.json` a regular file: a missing one is seeded, anything else (a link
/// planted by the session) is removed, never followed, and replaced by a fresh seed.
fn ensure_claude_json(
    state: &OwnedFd,
    s: &SessionDir<'_>,
    seed: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<()> {
    match kind_at(state, ".claude.json") {
        Some(SFlag::S_IFREG) => Ok(()),
        None => write_seed(state, s, seed),
        Some(other) => {
            crate::warn!(
                "session {}: state/.claude.json was {}, not a regular file (planted by the session?); it is replaced by a fresh copy of your ~/.claude.json",
                s.id,
                kind_name(other)
            );
            nix::unistd::unlinkat(
                Some(state.as_raw_fd()),
                ".claude.json",
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            )
            .map_err(|e| Error::io("remove", s.path.join(CLAUDE_JSON), e.into()))?;
            write_seed(state, s, seed)
        }
    }
}

/// After an OCI runtime ran a bundle (its poststop hook): whatever the container left
/// where the bundle's mounts name session paths is checked before the next `runc run`
/// binds it, which would follow a link on the host. A `.claude.json` or one of the
/// per-session dirs (`plan::SESSION_OWN`) that is not what it must be is removed (not
/// followed) and made afresh; returns how many were repaired.
pub fn repair(
    s: SessionDir<'_>,
    own_dirs: &[&str],
    seed: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<usize> {
    let state = open_dir(s.fd, STATE_DIR, false)
        .map_err(|e| Error::io("open", s.path.join(STATE_DIR), e))?;
    let mut repaired = 0;
    for d in own_dirs {
        match kind_at(&state, d) {
            Some(SFlag::S_IFDIR) | None => {}
            Some(other) => {
                crate::warn!(
                    "session {}: state/{d} was {}, not a directory (planted by the container?); it is removed and made afresh",
                    s.id,
                    kind_name(other)
                );
                nix::unistd::unlinkat(
                    Some(state.as_raw_fd()),
                    *d,
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                )
                .map_err(|e| Error::io("remove", s.path.join(STATE_DIR).join(d), e.into()))?;
                repaired += 1;
            }
        }
        open_dir(&state, d, true)
            .map_err(|e| Error::io("mkdir", s.path.join(STATE_DIR).join(d), e))?;
    }
    if kind_at(&state, ".claude.json").is_some_and(|k| k != SFlag::S_IFREG) {
        repaired += 1;
    }
    ensure_claude_json(&state, &s, seed)?;
    Ok(repaired)
}

fn write_seed(
    state: &OwnedFd,
    s: &SessionDir<'_>,
    seed: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<()> {
    let bytes = seed()?;
    crate::fsutil::atomic_write_at(
        state,
        &s.path.join(STATE_DIR),
        ".claude.json",
        &bytes,
        0o600,
        crate::fsutil::Durability::Rename,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_link_is_never_followed_and_missing_dirs_are_made() {
        let d = tempfile::tempdir().unwrap();
        let base = crate::fsutil::open_dir_nofollow(d.path()).unwrap();
        std::fs::create_dir(d.path().join("home")).unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("home/upper")).unwrap();
        let e = open_dir(&base, "home/upper", true).unwrap_err();
        // O_DIRECTORY|O_NOFOLLOW on a link: ENOTDIR (or ELOOP), never the target.
        assert!(
            matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)),
            "{e}"
        );
        open_dir(&base, "home/work", true).unwrap();
        assert!(d.path().join("home/work").is_dir());
        open_dir(&base, "state/sessions", true).unwrap();
        assert!(d.path().join("state/sessions").is_dir());
    }

    #[test]
    fn only_the_empty_upper_dirs_csbox_made_are_pruned_before_a_merge() {
        let d = tempfile::tempdir().unwrap();
        let st = d.path().join("state");
        std::fs::create_dir_all(st.join("projects/-p-mine")).unwrap();
        std::fs::create_dir_all(st.join("file-history/u-old")).unwrap();
        std::fs::create_dir_all(st.join("file-history/u-new")).unwrap();
        std::fs::write(st.join("file-history/u-new/f@v2"), "x").unwrap();
        std::fs::create_dir_all(d.path().join("elsewhere/empty")).unwrap();
        std::os::unix::fs::symlink(d.path().join("elsewhere/empty"), st.join("file-history/l"))
            .unwrap();
        prune_made_uppers(&crate::fsutil::open_dir_nofollow(d.path()).unwrap());
        assert!(!st.join("projects").exists());
        assert!(!st.join("file-history/u-old").exists());
        assert!(st.join("file-history/u-new/f@v2").exists());
        // A link is neither followed nor removed as a directory.
        assert!(d.path().join("elsewhere/empty").is_dir());
    }
}
