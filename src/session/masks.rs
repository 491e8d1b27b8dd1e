//! The home layer's masks (`plan::View::home_masks`): an overlay whiteout in the
//! session's upper dir at each hidden path the host did not have when the plan was made,
//! so that a credential file created on the host during the session (`~/.netrc`,
//! `~/.vault-token`) does not show through the lower layer. A whiteout goes at the
//! first component the host lacks (a later `~/.terraform.d/…` is masked whole), with
//! the directories above it made in the layer as the host has them, the way overlayfs
//! copies a directory up. Nothing shows in the session for it, and neither `csbox diff`
//! nor gc's "empty" counts it (the session's record names its masks). Where the layer already has
//! something there, it is the session's own and stays.
//!
//! A path the plan hides with a mount (it exists on the host now) gets its old whiteout
//! removed: the mount needs the host's entry to show in the merged view.
//!
//! Made by the supervisor before each launch, outside the sandbox; the layer is hostile,
//! so every step opens one component at a time without following a link.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::layout::HOME_UPPER;
pub use super::whiteout::holds_only_masks;
use super::whiteout::{is_dir, is_whiteout, lstat};
use crate::error::{Error, Result};
use crate::fsutil::openat_nofollow;
use crate::plan::{MountOp, Plan};

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NONBLOCK
}

fn open_upper(session_fd: &OwnedFd) -> Option<OwnedFd> {
    let mut cur: Option<OwnedFd> = None;
    for c in HOME_UPPER.split('/') {
        cur = Some(openat_nofollow(cur.as_ref().unwrap_or(session_fd), c, dir_flags(), Mode::empty()).ok()?);
    }
    cur
}

/// Names of `rel`'s components (each a plain name).
fn components(rel: &Path) -> Option<Vec<String>> {
    rel.components()
        .map(|c| match c {
            std::path::Component::Normal(n) => n.to_str().map(String::from),
            _ => None,
        })
        .collect()
}

/// One mask at `rel` below the home (see the module doc).
fn mask(lower_home: &OwnedFd, upper: &OwnedFd, rel: &Path) -> std::io::Result<()> {
    let Some(names) = components(rel) else { return Ok(()) };
    let (mut lower, mut up) = (lower_home.try_clone()?, upper.try_clone()?);
    for (i, n) in names.iter().enumerate() {
        let in_layer = lstat(&up, n);
        let host_dir = lstat(&lower, n).filter(is_dir);
        if let (Some(hd), false) = (host_dir, i + 1 == names.len()) {
            // The host has the directory: go on below it, in the layer too.
            match in_layer {
                Some(st) if is_dir(&st) => {}
                // The session's own file, link or whiteout: the host's dir does not show.
                Some(_) => return Ok(()),
                None => {
                    let mode = Mode::from_bits_truncate((hd.st_mode & 0o7777) as libc::mode_t);
                    nix::sys::stat::mkdirat(Some(up.as_raw_fd()), n.as_str(), mode)?;
                }
            }
            lower = openat_nofollow(&lower, n, dir_flags(), Mode::empty())?;
            up = openat_nofollow(&up, n, dir_flags(), Mode::empty())?;
            continue;
        }
        // The first component the host lacks, or the path itself: masked, unless the
        // layer has something of the session's own there.
        if in_layer.is_none() {
            // Unprivileged since Linux 5.8: a 0/0 character device is a whiteout.
            let c = CString::new(n.as_bytes()).expect("no NUL");
            // SAFETY: a valid dir fd and C string.
            if unsafe { libc::mknodat(up.as_raw_fd(), c.as_ptr(), libc::S_IFCHR | 0o600, 0) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        return Ok(());
    }
    Ok(())
}

/// Remove a whiteout at `rel` in the layer (the plan mounts over the host's entry there).
fn unmask(upper: &OwnedFd, rel: &Path) -> std::io::Result<()> {
    let Some(names) = components(rel) else { return Ok(()) };
    let Some((last, dirs)) = names.split_last() else { return Ok(()) };
    let mut up = upper.try_clone()?;
    for n in dirs {
        match openat_nofollow(&up, n, dir_flags(), Mode::empty()) {
            Ok(fd) => up = fd,
            Err(_) => return Ok(()),
        }
    }
    if lstat(&up, last).is_some_and(|st| is_whiteout(&st)) {
        nix::unistd::unlinkat(Some(up.as_raw_fd()), last.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir)?;
    }
    Ok(())
}

/// Make `plan`'s home masks in the session's layer, and clear old ones where the plan
/// now hides the host's entry with a mount. `csbox run` calls it before each launch,
/// `csbox spec --session|--new` before it writes a bundle.
pub fn prepare(session_fd: &OwnedFd, session_path: &Path, plan: &Plan) -> Result<()> {
    let home = &plan.view.home;
    let hidden: Vec<PathBuf> = plan
        .mounts
        .iter()
        .filter_map(|m| match m {
            MountOp::Hide { dst, .. } if plan.view.home_mode == crate::profile::Home::Overlay => {
                dst.strip_prefix(home).ok().map(Path::to_path_buf)
            }
            _ => None,
        })
        .collect();
    if plan.view.home_masks.is_empty() && hidden.is_empty() {
        return Ok(());
    }
    let layer = session_path.join(HOME_UPPER);
    let upper = open_upper(session_fd).ok_or_else(|| {
        Error::io("open", &layer, std::io::Error::from_raw_os_error(libc::ENOTDIR))
            .hint("the session's home layer is not a directory (planted by the session?)")
    })?;
    for rel in &hidden {
        unmask(&upper, rel).map_err(|e| Error::io("remove the old mask", layer.join(rel), e))?;
    }
    let lower = crate::fsutil::open_dir_nofollow(home).map_err(|e| Error::io("open", home, e))?;
    for m in &plan.view.home_masks {
        let Ok(rel) = m.strip_prefix(home) else { continue };
        mask(&lower, &upper, rel).map_err(|e| {
            Error::io("mknodat (an overlay whiteout)", layer.join(rel), e)
                .hint("csbox masks hidden paths the host may create later; the file system of the session store must allow a 0/0 character device (Linux >= 5.8)")
        })?;
    }
    Ok(())
}

/// Add `plan`'s masks to the session's record (relative to the home, each once).
pub fn record(meta: &mut super::meta::Metadata, plan: &Plan) {
    for m in &plan.view.home_masks {
        if let Ok(rel) = m.strip_prefix(&plan.view.home) {
            if !meta.masks.iter().any(|x| x == rel) {
                meta.masks.push(rel.to_path_buf());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mask_goes_at_the_first_missing_component_and_spares_the_sessions_own() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("home");
        let up = d.path().join("up");
        std::fs::create_dir_all(home.join(".config")).unwrap();
        std::fs::create_dir_all(&up).unwrap();
        std::fs::write(up.join(".pgpass"), "mine").unwrap();
        let (h, u) = (crate::fsutil::open_dir_nofollow(&home).unwrap(), crate::fsutil::open_dir_nofollow(&up).unwrap());
        for rel in [".netrc", ".config/gh", ".terraform.d/credentials.tfrc.json", ".pgpass"] {
            mask(&h, &u, Path::new(rel)).unwrap();
        }
        let md = |p: &str| std::fs::symlink_metadata(up.join(p)).unwrap();
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        for p in [".netrc", ".config/gh", ".terraform.d"] {
            assert!(md(p).file_type().is_char_device() && md(p).rdev() == 0, "{p}");
        }
        assert!(md(".config").is_dir());
        assert_eq!(std::fs::read_to_string(up.join(".pgpass")).unwrap(), "mine");
        unmask(&u, Path::new(".config/gh")).unwrap();
        assert!(std::fs::symlink_metadata(up.join(".config/gh")).is_err());
        unmask(&u, Path::new(".pgpass")).unwrap();
        assert!(up.join(".pgpass").exists(), "only a whiteout is removed");
        // The layer holds the session's .pgpass: more than csbox's masks.
        let masks: Vec<PathBuf> = [".netrc", ".terraform.d", ".config/gh"].iter().map(PathBuf::from).collect();
        assert!(!holds_only_masks(&u, &masks));
        std::fs::remove_file(up.join(".pgpass")).unwrap();
        mask(&h, &u, Path::new(".config/gh")).unwrap();
        assert!(holds_only_masks(&u, &masks));
        assert!(!holds_only_masks(&u, &masks[..2]), "a whiteout the record does not name is a deletion");
        let deeper: Vec<PathBuf> = [".netrc", ".terraform.d/credentials.tfrc.json", ".config/gh"].iter().map(PathBuf::from).collect();
        assert!(holds_only_masks(&u, &deeper), "masked at the first missing component");
    }
}
