//! What a session changed outside its project, like `docker diff`: the files its home
//! layer and its `~/.claude` layer hold (overlayfs upper dirs), each compared with the
//! host's file below it. Whiteouts (a 0/0 character device) are deletions; an opaque
//! directory (xattr `user.overlay.opaque`, or `trusted.overlay.opaque`) replaced the
//! host's whole directory.
//!
//! The layers were written by the sandbox: they are walked through directory fds, no
//! link is followed, nothing but directories is opened (non-blocking: a FIFO cannot
//! hang it), and the walk is bounded in entries and depth. A directory csbox cannot
//! read (the session made it mode 000) is listed as unreadable rather than left out, and
//! names print escaped (a name that is not UTF-8 as `\xHH`), in text and in JSON.
//! What csbox itself put in a layer is not a change: its own mount points
//! (`~/.claude/sessions`, `shell-snapshots`, `session-env`: what the session wrote in
//! them is) and the masks it made over hidden paths.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use serde::Serialize;

use super::store::{HOME_UPPER, STATE_DIR};
use crate::fsutil::{open_dir_at as open_at, read_names};

/// At most this many changes are listed (a build cache can hold millions of files).
pub const MAX_CHANGES: usize = 100_000;
const MAX_DEPTH: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Not on the host.
    Added,
    /// On the host, and the session's copy replaces it.
    Changed,
    /// On the host, and the session deleted it (a whiteout).
    Deleted,
    /// A directory the session replaced whole (what the host has below is hidden).
    Replaced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    File,
    Dir,
    Link,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Where the change shows inside the sandbox (the home or `~/.claude`); in JSON as
    /// [`crate::human::printable_path`] spells it.
    #[serde(serialize_with = "escaped")]
    pub path: PathBuf,
    pub change: Change,
    pub kind: Kind,
    /// Bytes, for files.
    pub size: u64,
    /// A directory csbox could not open (its mode forbids it): what it holds is not listed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unreadable: bool,
}

fn escaped<S: serde::Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::human::printable_path(p))
}

#[derive(Debug, Default, Serialize)]
pub struct Diff {
    pub entries: Vec<Entry>,
    /// The walk stopped at [`MAX_CHANGES`].
    pub truncated: bool,
}

fn lstat_at(dir: &OwnedFd, name: &CStr) -> nix::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid fd and C string; st is written on success.
    Errno::result(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded.
    Ok(unsafe { st.assume_init() })
}

fn is_opaque(dir: &OwnedFd) -> bool {
    let mut buf = [0u8; 4];
    for name in [c"user.overlay.opaque", c"trusted.overlay.opaque"] {
        // SAFETY: reading an xattr of an fd we own into a local buffer.
        let n = unsafe {
            libc::fgetxattr(
                dir.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n >= 1 && buf[0] == b'y' {
            return true;
        }
    }
    false
}

struct Walk<'a> {
    out: &'a mut Diff,
    /// Skip these paths (relative to the layer): csbox's own.
    skip: &'a [&'a str],
    /// Directories csbox makes in the layer (relative to it): what is in them is listed,
    /// they are not a change themselves.
    own: &'a [&'a str],
    /// Where csbox masked hidden paths (relative to the layer): its whiteouts, not
    /// deletions.
    masks: &'a [PathBuf],
}

impl Walk<'_> {
    fn push(&mut self, e: Entry) -> bool {
        if self.out.entries.len() >= MAX_CHANGES {
            self.out.truncated = true;
            return false;
        }
        self.out.entries.push(e);
        true
    }

    /// `dir` is the layer dir at `rel`; `shown` where it is seen inside; `host` the
    /// host path below it.
    fn dir(&mut self, dir: &OwnedFd, rel: &Path, shown: &Path, host: &Path, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let Ok(names) = read_names(dir.as_raw_fd()) else {
            return;
        };
        let mut names: Vec<CString> = names;
        names.sort();
        for name in names {
            let os = std::ffi::OsStr::from_bytes(name.to_bytes());
            let (r, s, h) = (rel.join(os), shown.join(os), host.join(os));
            if self.skip.iter().any(|k| r == Path::new(k)) {
                continue;
            }
            let Ok(st) = lstat_at(dir, &name) else {
                continue;
            };
            let on_host = std::fs::symlink_metadata(&h).is_ok();
            let fmt = st.st_mode & libc::S_IFMT;
            let whiteout = fmt == libc::S_IFCHR && st.st_rdev == 0;
            // A whiteout over nothing deletes nothing; one of csbox's masks is its own.
            if whiteout && (!on_host || self.masks.contains(&r)) {
                continue;
            }
            let kind = match fmt {
                _ if whiteout => Kind::Other,
                libc::S_IFDIR => Kind::Dir,
                libc::S_IFREG => Kind::File,
                libc::S_IFLNK => Kind::Link,
                _ => Kind::Other,
            };
            let change = match (whiteout, on_host) {
                (true, _) => Change::Deleted,
                (false, true) => Change::Changed,
                (false, false) => Change::Added,
            };
            let entry = |change, kind, size, unreadable| Entry {
                path: s.clone(),
                change,
                kind,
                size,
                unreadable,
            };
            if kind == Kind::Dir {
                let sub = open_at(dir, &name);
                let opaque = sub.as_ref().is_ok_and(is_opaque);
                let own = self.own.iter().any(|k| r == Path::new(k));
                // A directory that is on the host and not replaced is only a path to
                // its changed children, as is one csbox made; a new or replaced one is a
                // change itself, and so is one whose children cannot be listed.
                if (!on_host || opaque || sub.is_err()) && !(own && sub.is_ok()) {
                    let change = if opaque && on_host {
                        Change::Replaced
                    } else {
                        change
                    };
                    if !self.push(entry(change, kind, 0, sub.is_err())) {
                        return;
                    }
                }
                if let Ok(sub) = sub {
                    self.dir(&sub, &r, &s, &h, depth + 1);
                }
            } else {
                let size = if kind == Kind::File {
                    st.st_size as u64
                } else {
                    0
                };
                let kind = if whiteout {
                    match std::fs::symlink_metadata(&h) {
                        Ok(m) if m.is_dir() => Kind::Dir,
                        Ok(m) if m.file_type().is_symlink() => Kind::Link,
                        _ => Kind::File,
                    }
                } else {
                    kind
                };
                if !self.push(entry(change, kind, size, false)) {
                    return;
                }
            }
            if self.out.truncated {
                return;
            }
        }
    }
}

/// The changes of the session whose directory fd is `session`, shown at `home` and
/// `claude_root` (the host's real paths, for the comparison too); `masks` are the
/// session's record of csbox's own whiteouts in its home layer (relative to the home).
pub fn diff(session: &OwnedFd, home: &Path, claude_root: &Path, masks: &[PathBuf]) -> Diff {
    let mut out = Diff::default();
    let none: &[PathBuf] = &[];
    let layers: [(&str, &Path, &[&str], &[&str], &[PathBuf]); 2] = [
        (HOME_UPPER, home, &[], &[], masks),
        // csbox's own: Claude Code's pid files and the session's copy of ~/.claude.json;
        // the dirs bound over the lower layer's per-session state.
        (
            STATE_DIR,
            claude_root,
            &["sessions", ".claude.json"],
            super::store::SESSION_OWN_DIRS,
            none,
        ),
    ];
    for (rel, shown, skip, own, masks) in layers {
        let mut cur: Option<OwnedFd> = None;
        let mut ok = true;
        for c in rel.split('/') {
            let parent = cur.as_ref().unwrap_or(session);
            match open_at(parent, &CString::new(c).expect("no NUL")) {
                Ok(fd) => cur = Some(fd),
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        let (true, Some(fd)) = (ok, cur) else {
            continue;
        };
        let mut w = Walk {
            out: &mut out,
            skip,
            own,
            masks,
        };
        w.dir(&fd, Path::new(""), shown, shown, 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_changed_deleted_and_links_are_told_apart_and_links_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let host = d.path().join("host");
        let sess = d.path().join("s");
        std::fs::create_dir_all(host.join(".config")).unwrap();
        std::fs::write(host.join(".bashrc"), "old").unwrap();
        std::fs::write(host.join("gone"), "x").unwrap();
        let up = sess.join("home/upper");
        std::fs::create_dir_all(up.join(".config/autostart")).unwrap();
        std::fs::create_dir_all(sess.join("state/sessions")).unwrap();
        std::fs::write(sess.join("state/.claude.json"), "{}").unwrap();
        std::fs::write(sess.join("state/history.jsonl"), "{}\n").unwrap();
        std::fs::write(up.join(".bashrc"), "old\nevil").unwrap();
        std::fs::write(up.join(".config/autostart/a.desktop"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", up.join("link")).unwrap();
        // A whiteout: a 0/0 character device (root or userns can make one; skip if not).
        let wh = std::ffi::CString::new(up.join("gone").as_os_str().as_bytes()).unwrap();
        // SAFETY: mknod on a path we own.
        let made = unsafe { libc::mknod(wh.as_ptr(), libc::S_IFCHR | 0o600, 0) } == 0;
        let fd = crate::fsutil::open_dir_nofollow(&sess).unwrap();
        let claude = d.path().join("claude");
        let got = diff(&fd, &host, &claude, &[]);
        let find = |p: &Path| got.entries.iter().find(|e| e.path == p).cloned();
        assert_eq!(find(&host.join(".bashrc")).unwrap().change, Change::Changed);
        assert_eq!(find(&host.join(".bashrc")).unwrap().size, 8);
        assert_eq!(
            find(&host.join(".config/autostart")).unwrap().change,
            Change::Added
        );
        assert_eq!(
            find(&host.join(".config/autostart/a.desktop"))
                .unwrap()
                .change,
            Change::Added
        );
        assert!(
            find(&host.join(".config")).is_none(),
            "a host dir is only a path"
        );
        assert_eq!(find(&host.join("link")).unwrap().kind, Kind::Link);
        assert!(
            !got.entries.iter().any(|e| e.path.starts_with("/etc")),
            "not followed"
        );
        assert_eq!(
            find(&claude.join("history.jsonl")).unwrap().change,
            Change::Added
        );
        assert!(
            find(&claude.join(".claude.json")).is_none()
                && find(&claude.join("sessions")).is_none()
        );
        if made {
            assert_eq!(find(&host.join("gone")).unwrap().change, Change::Deleted);
        }
    }

    #[test]
    fn odd_names_unreadable_dirs_and_csbox_own_entries() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let (host, claude, sess) = (
            d.path().join("host"),
            d.path().join("claude"),
            d.path().join("s"),
        );
        std::fs::create_dir_all(&host).unwrap();
        let up = sess.join("home/upper");
        std::fs::create_dir_all(up.join("box")).unwrap();
        std::fs::write(up.join("box/blob"), "x").unwrap();
        std::fs::set_permissions(up.join("box"), std::fs::Permissions::from_mode(0)).unwrap();
        std::fs::write(up.join(std::ffi::OsStr::from_bytes(b"x\xff")), "").unwrap();
        std::fs::create_dir_all(sess.join("state/shell-snapshots")).unwrap();
        std::fs::create_dir_all(sess.join("state/session-env")).unwrap();
        std::fs::write(sess.join("state/shell-snapshots/mine.sh"), "").unwrap();
        // csbox's masks: one recorded, one over nothing on the host.
        std::fs::write(host.join(".netrc"), "late").unwrap();
        let wh = |p: &Path| {
            let c = CString::new(p.as_os_str().as_bytes()).unwrap();
            // SAFETY: mknod on a path we own.
            unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, 0) == 0 }
        };
        let made = wh(&up.join(".netrc")) && wh(&up.join(".pgpass"));
        let fd = crate::fsutil::open_dir_nofollow(&sess).unwrap();
        let got = diff(&fd, &host, &claude, &[PathBuf::from(".netrc")]);
        std::fs::set_permissions(up.join("box"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let json = serde_json::to_string(&got).unwrap();
        assert!(
            json.contains(
                r#""path":"HOST/x\\xff""#.replace("HOST", &host.display().to_string()).as_str()
            ),
            "{json}"
        );
        let paths: Vec<&Path> = got.entries.iter().map(|e| e.path.as_path()).collect();
        let bx = got
            .entries
            .iter()
            .find(|e| e.path == host.join("box"))
            .expect("the box is listed");
        // Root opens a mode-000 dir anyway and lists what is in it.
        assert!(
            bx.unreadable != paths.contains(&host.join("box/blob").as_path()),
            "{got:?}"
        );
        assert!(paths.contains(&claude.join("shell-snapshots/mine.sh").as_path()));
        assert!(
            !paths.contains(&claude.join("shell-snapshots").as_path())
                && !paths.contains(&claude.join("session-env").as_path())
        );
        if made {
            assert!(
                !paths
                    .iter()
                    .any(|p| p.ends_with(".netrc") || p.ends_with(".pgpass")),
                "{paths:?}"
            );
        }
    }
}
