//! Overlay whiteouts in a session's home layer, as csbox's masks make them: told apart
//! from the session's own work without reading anything but directories.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::stat::{FileStat, Mode, SFlag};

use crate::fsutil::openat_nofollow;

pub(super) fn lstat(dir: &OwnedFd, name: &str) -> Option<FileStat> {
    nix::sys::stat::fstatat(
        Some(dir.as_raw_fd()),
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .ok()
}

/// A 0/0 character device: what overlayfs takes for a whiteout.
pub(super) fn is_whiteout(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT) == SFlag::S_IFCHR && st.st_rdev == 0
}

pub(super) fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT) == SFlag::S_IFDIR
}

use crate::fsutil::dir_flags;

/// Whether a home layer (`upper`, opened) holds nothing but csbox's masks: whiteouts at
/// `masks` (relative to the home) or at a component of one, and the directories above
/// them. Bounded: a layer with
/// more than a few thousand entries holds the session's own work anyway.
pub fn holds_only_masks(upper: &OwnedFd, masks: &[PathBuf]) -> bool {
    fn walk(dir: &OwnedFd, rel: &Path, masks: &[PathBuf], budget: &mut usize) -> bool {
        // A fresh open: an fd read before (or a dup of one) is at its end.
        let Ok(dir) = openat_nofollow(dir, ".", dir_flags(), Mode::empty()) else {
            return false;
        };
        let dir = &dir;
        let Ok(names) = crate::fsutil::read_names(dir.as_raw_fd()) else {
            return false;
        };
        names.into_iter().all(|n| {
            *budget = budget.saturating_sub(1);
            let Some(name) = n.to_str().ok() else {
                return false;
            };
            let r = rel.join(name);
            let Some(st) = lstat(dir, name) else {
                return false;
            };
            if *budget == 0 {
                false
            } else if is_whiteout(&st) {
                // At the mask's path, or at its first component the host lacked.
                masks.iter().any(|m| m.starts_with(&r))
            } else if is_dir(&st) && masks.iter().any(|m| m.starts_with(&r) && m != &r) {
                openat_nofollow(dir, name, dir_flags(), Mode::empty())
                    .is_ok_and(|d| walk(&d, &r, masks, budget))
            } else {
                false
            }
        })
    }
    walk(upper, Path::new(""), masks, &mut 4096)
}
