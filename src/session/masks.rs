//! The mask layers of a launch (`plan::MaskLayer`): read-only lower layers above the
//! home's and `~/.claude`'s lower dirs, made by the supervisor before each launch, outside
//! the sandbox. The session cannot take a whiteout out of a lower layer (attack-3 A3-8:
//! one in its own upper dir went with `touch ~/.pgpass; rm ~/.pgpass`).
//!
//! `~/.claude`'s layer lives in the session dir, beside the layers the session writes,
//! not in one of them; it is rebuilt at each launch. The home's lives outside the home
//! (overlayfs refuses a lower layer inside another, and the default store is inside the
//! home), in a private dir made for one launch and removed after it.
//!
//! Also: whiteouts older csbox versions made in the session's home layer (the record's
//! `masks`) are removed where the mask layer now covers them, and where the plan hides the
//! host's entry with a mount (the mount needs the host's entry to show in the merged view).
//!
//! Session dirs are hostile: every step opens one component at a time without following a
//! link, and the private dir is checked to be ours, a directory, 0700.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::layout::HOME_UPPER;
pub use super::whiteout::holds_only_masks;
use super::whiteout::{is_whiteout, lstat};
use crate::error::{Error, Result};
use crate::fsutil::openat_nofollow;
use crate::plan::{MaskEntry, MaskLayer, MaskPlace, MountOp, Plan};

use crate::fsutil::dir_flags;

fn open_upper(session_fd: &OwnedFd) -> Option<OwnedFd> {
    let mut cur: Option<OwnedFd> = None;
    for c in HOME_UPPER.split('/') {
        cur = Some(
            openat_nofollow(
                cur.as_ref().unwrap_or(session_fd),
                c,
                dir_flags(),
                Mode::empty(),
            )
            .ok()?,
        );
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

/// Remove a whiteout at `rel` in the layer (the plan mounts over the host's entry there).
fn unmask(upper: &OwnedFd, rel: &Path) -> std::io::Result<()> {
    let Some(names) = components(rel) else {
        return Ok(());
    };
    let Some((last, dirs)) = names.split_last() else {
        return Ok(());
    };
    let mut up = upper.try_clone()?;
    for n in dirs {
        match openat_nofollow(&up, n, dir_flags(), Mode::empty()) {
            Ok(fd) => up = fd,
            Err(_) => return Ok(()),
        }
    }
    if lstat(&up, last).is_some_and(|st| is_whiteout(&st)) {
        nix::unistd::unlinkat(
            Some(up.as_raw_fd()),
            last.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )?;
    }
    Ok(())
}

/// Prepare the session's side of `plan`'s mask layers: clear old whiteouts in the home
/// layer (see the module doc) and make the layers that live in the session dir. `csbox
/// run` calls it before each launch, `csbox spec --session|--new` before it writes a
/// bundle.
pub fn prepare(session_fd: &OwnedFd, session_path: &Path, plan: &Plan) -> Result<()> {
    let home = &plan.view.home;
    let home_overlay = plan.view.home_mode == crate::profile::Home::Overlay;
    let mut stale: Vec<PathBuf> = Vec::new();
    for m in &plan.mounts {
        match m {
            MountOp::Hide { dst, .. } if home_overlay => {
                stale.extend(dst.strip_prefix(home).ok().map(Path::to_path_buf))
            }
            MountOp::Overlay {
                dst,
                masks: Some(layer),
                ..
            } => {
                if dst == home {
                    stale.extend(
                        layer
                            .entries
                            .iter()
                            .filter(|e| matches!(e, MaskEntry::Whiteout { .. }))
                            .map(|e| e.path().to_path_buf()),
                    );
                }
                if let MaskPlace::Session(rel) = &layer.place {
                    session_layer(session_fd, session_path, rel, layer)?;
                }
            }
            _ => {}
        }
    }
    if stale.is_empty() || !home_overlay {
        return Ok(());
    }
    let layer = session_path.join(HOME_UPPER);
    let upper = open_upper(session_fd).ok_or_else(|| {
        Error::io(
            "open",
            &layer,
            std::io::Error::from_raw_os_error(libc::ENOTDIR),
        )
        .hint("the session's home layer is not a directory (planted by the session?)")
    })?;
    // One listing of the layer's top instead of a look-up per hidden path: a new
    // session's layer is empty, and an old one holds a few names.
    let top = crate::fsutil::name_set(upper.as_raw_fd())
        .map_err(|e| Error::io("list", &layer, std::io::Error::from(e)))?;
    if top.is_empty() {
        return Ok(());
    }
    for rel in &stale {
        if !crate::fsutil::first_listed(&top, rel) {
            continue;
        }
        unmask(&upper, rel).map_err(|e| Error::io("remove the old mask", layer.join(rel), e))?;
    }
    Ok(())
}

/// A mask layer in the session dir at `rel` (one component), made afresh.
fn session_layer(
    session_fd: &OwnedFd,
    session_path: &Path,
    rel: &Path,
    layer: &MaskLayer,
) -> Result<()> {
    let path = session_path.join(rel);
    let name = rel
        .to_str()
        .filter(|n| !n.contains('/') && !n.is_empty() && *n != "..")
        .ok_or_else(|| {
            Error::Usage(format!(
                "mask layer {} is not one plain name",
                rel.display()
            ))
        })?;
    match crate::fsutil::remove_tree_at(session_fd, name) {
        Err(e) if e.errno != nix::errno::Errno::ENOENT => {
            return Err(Error::io("remove the old mask layer", &path, e.into()))
        }
        _ => {}
    }
    nix::sys::stat::mkdirat(
        Some(session_fd.as_raw_fd()),
        name,
        Mode::from_bits_truncate(0o700),
    )
    .map_err(|e| Error::io("mkdir", &path, e.into()))?;
    let fd = openat_nofollow(session_fd, name, dir_flags(), Mode::empty())
        .map_err(|e| Error::io("open", &path, e))?;
    write_layer(&fd, &layer.entries).map_err(|e| mask_error(&path, e))
}

fn mask_error(layer: &Path, e: std::io::Error) -> Error {
    Error::io("make the mask layer", layer, e).hint(
        "csbox masks hidden paths with overlay whiteouts; the file system must allow a 0/0 character device (Linux >= 5.8)",
    )
}

/// Write `entries` into the empty directory `dir`. Directories get their modes last, so
/// a read-only one (mode 0555) still takes its entries.
pub fn write_layer(dir: &OwnedFd, entries: &[MaskEntry]) -> std::io::Result<()> {
    let mut modes: Vec<(&Path, u32)> = Vec::new();
    for e in entries {
        let Some(names) = components(e.path()) else {
            continue;
        };
        let Some((last, parents)) = names.split_last() else {
            continue;
        };
        let mut at = dir.try_clone()?;
        for n in parents {
            at = openat_nofollow(&at, n, dir_flags(), Mode::empty())?;
        }
        match e {
            MaskEntry::Dir { mode, path } => {
                nix::sys::stat::mkdirat(
                    Some(at.as_raw_fd()),
                    last.as_str(),
                    Mode::from_bits_truncate(0o700),
                )?;
                modes.push((path, *mode));
            }
            MaskEntry::Whiteout { .. } => {
                let c = CString::new(last.as_bytes())
                    .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
                // Unprivileged since Linux 5.8: a 0/0 character device is a whiteout.
                // SAFETY: a valid dir fd and C string.
                if unsafe { libc::mknodat(at.as_raw_fd(), c.as_ptr(), libc::S_IFCHR | 0o600, 0) }
                    != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            MaskEntry::File { mode, content, .. } => {
                let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
                let fd = openat_nofollow(&at, last, flags, Mode::from_bits_truncate(0o600))?;
                let mut f = std::fs::File::from(fd);
                std::io::Write::write_all(&mut f, content.as_bytes())?;
                nix::sys::stat::fchmod(
                    f.as_raw_fd(),
                    Mode::from_bits_truncate(*mode as libc::mode_t),
                )?;
            }
        }
    }
    for (path, mode) in modes.into_iter().rev() {
        let Some(names) = components(path) else {
            continue;
        };
        let Some((last, parents)) = names.split_last() else {
            continue;
        };
        let mut at = dir.try_clone()?;
        for n in parents {
            at = openat_nofollow(&at, n, dir_flags(), Mode::empty())?;
        }
        let d = openat_nofollow(&at, last, dir_flags(), Mode::empty())?;
        nix::sys::stat::fchmod(
            d.as_raw_fd(),
            Mode::from_bits_truncate(mode as libc::mode_t),
        )?;
    }
    Ok(())
}

/// The private mask layers of one launch; removed when dropped, once the sandbox is gone.
#[derive(Default)]
pub struct PrivateLayers {
    /// (the dir holding what to remove, its name there, the layer's path).
    made: Vec<(OwnedFd, String, PathBuf)>,
}

impl Drop for PrivateLayers {
    fn drop(&mut self) {
        for (parent, name, path) in &self.made {
            if let Err(e) = crate::fsutil::remove_tree_at(parent, name) {
                crate::warn!("could not remove the mask layer {}: {e}", path.display());
            }
        }
    }
}

/// Make `plan`'s private mask layers (`MaskPlace::Private`) for this launch and note in
/// the plan where each was made.
pub fn build_private(plan: &mut Plan, id: &str) -> Result<PrivateLayers> {
    let mut out = PrivateLayers::default();
    for m in &mut plan.mounts {
        let MountOp::Overlay {
            masks: Some(layer), ..
        } = m
        else {
            continue;
        };
        let MaskPlace::Private { runtime_dir, built } = &mut layer.place else {
            continue;
        };
        // The same entries make the same layer, which no sandbox can change (a lower
        // layer): made once and shared by every later launch, as long as it is there
        // (it costs 1 ms on a tmpfs, 5-20 ms on a disk, at every launch otherwise).
        // A runtime dir whose file system takes no whiteout (one on overlayfs: EPERM)
        // is passed over for /dev/shm, a tmpfs, as when there is no runtime dir.
        let places = [runtime_dir.as_deref(), None];
        let places = &places[usize::from(runtime_dir.is_none())..];
        if let Some(path) = places
            .iter()
            .find_map(|&rt| cached_layer(rt, &layer.entries))
        {
            *built = Some(path);
            continue;
        }
        let mut failed = None;
        for &rt in places {
            let (parent, name, path, fd) = private_dir(rt, id)?;
            out.made.push((parent, name, path.clone()));
            match write_layer(&fd, &layer.entries) {
                Ok(()) => {
                    *built = Some(path);
                    failed = None;
                    break;
                }
                Err(e) => failed = Some(mask_error(&path, e)),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok(out)
}

/// Where shared layers are kept: `$XDG_RUNTIME_DIR/csbox/masks` when that is the user's
/// own 0700 dir, else `/dev/shm/csbox-<uid>/masks` (a tmpfs on every Linux) made 0700;
/// each dir checked to be ours and not a link. None: nowhere safe (then per launch).
fn shared_dir(runtime: Option<&Path>) -> Option<(OwnedFd, PathBuf)> {
    if let Some(rt) = runtime {
        let base = crate::fsutil::open_dir_nofollow(rt).ok()?;
        check_own(&base).ok()?;
        let fd = own_dir(&own_dir(&base, "csbox", true).ok()?, "masks", true).ok()?;
        return Some((fd, rt.join("csbox/masks")));
    }
    let shm = Path::new("/dev/shm");
    let base = crate::fsutil::open_dir_nofollow(shm).ok()?;
    let name = format!("csbox-{}", nix::unistd::getuid().as_raw());
    let fd = own_dir(&own_dir(&base, &name, true).ok()?, "masks", true).ok()?;
    Some((fd, shm.join(name).join("masks")))
}

/// The shared layer for `entries`, made now if it is not there yet: `<dir>/<hash>/`, with
/// the entries it was made from beside it (`<hash>.json`, compared in full: a hash is
/// only a name). Made under a temporary name and renamed into place, so a launch never
/// sees half a layer; two launches making it at once both end up with one.
fn cached_layer(runtime: Option<&Path>, entries: &[MaskEntry]) -> Option<PathBuf> {
    use std::hash::{Hash, Hasher};
    let (dir, dir_path) = shared_dir(runtime)?;
    let spec = serde_json::to_vec(entries).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    spec.hash(&mut h);
    let key = format!("{:016x}", h.finish());
    let sidecar = format!("{key}.json");
    let ready = |dir: &OwnedFd| {
        crate::fsutil::read_small_at(dir, &sidecar, spec.len() as u64 + 1).is_ok_and(|t| t == spec)
            && own_dir(dir, &key, false).is_ok()
    };
    if ready(&dir) {
        return Some(dir_path.join(&key));
    }
    let tmp = format!("tmp-{}", uuid::Uuid::now_v7().simple());
    nix::sys::stat::mkdirat(
        Some(dir.as_raw_fd()),
        tmp.as_str(),
        Mode::from_bits_truncate(0o700),
    )
    .ok()?;
    let built = own_dir(&dir, &tmp, false)
        .ok()
        .and_then(|fd| write_layer(&fd, entries).ok());
    let keyc = std::ffi::CString::new(key.as_str()).ok()?;
    let tmpc = std::ffi::CString::new(tmp.as_str()).ok()?;
    // SAFETY: renameat2 on valid dir fds and C strings.
    let place = || unsafe { libc::renameat2(dir.as_raw_fd(), tmpc.as_ptr(), dir.as_raw_fd(), keyc.as_ptr(), libc::RENAME_NOREPLACE) } == 0;
    let mut placed = built.is_some() && place();
    if built.is_some() && !placed && !ready(&dir) {
        // A layer without its entries beside it (a launch died between the two renames):
        // set aside, not removed (a running sandbox may have it as its lower layer).
        let aside =
            std::ffi::CString::new(format!("stale-{}", uuid::Uuid::now_v7().simple())).ok()?;
        // SAFETY: as above.
        let moved = unsafe {
            libc::renameat2(
                dir.as_raw_fd(),
                keyc.as_ptr(),
                dir.as_raw_fd(),
                aside.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        } == 0;
        placed = moved && place();
    }
    if !placed {
        let _ = crate::fsutil::remove_tree_at(&dir, &tmp);
        // Another launch placed it first: its sidecar follows (or a stale one is there).
    } else {
        let _ = crate::fsutil::atomic_write(
            &dir_path,
            &sidecar,
            &spec,
            0o600,
            crate::fsutil::Durability::Rename,
        );
    }
    ready(&dir).then(|| dir_path.join(&key))
}

/// `name` in `parent`: a directory of ours that nobody else may enter, made (0700) when
/// `create` and missing.
fn own_dir(parent: &OwnedFd, name: &str, create: bool) -> std::io::Result<OwnedFd> {
    if create {
        match nix::sys::stat::mkdirat(
            Some(parent.as_raw_fd()),
            name,
            Mode::from_bits_truncate(0o700),
        ) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let fd = openat_nofollow(parent, name, dir_flags(), Mode::empty())?;
    check_own(&fd)?;
    Ok(fd)
}

fn check_own(fd: &OwnedFd) -> std::io::Result<()> {
    let st = nix::sys::stat::fstat(fd.as_raw_fd())?;
    if st.st_uid != nix::unistd::getuid().as_raw() || st.st_mode & 0o077 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "not a directory of yours with mode 0700",
        ));
    }
    Ok(())
}

/// A fresh private dir for a mask layer: `<runtime>/csbox/masks/<id>/home`, or
/// `/tmp/csbox-<uid>-XXXXXXXXXXXX` made with mkdir's O_EXCL semantics. Returns what to
/// remove afterwards (parent, name), the layer's path and an fd of it.
fn private_dir(runtime: Option<&Path>, id: &str) -> Result<(OwnedFd, String, PathBuf, OwnedFd)> {
    if let Some(rt) = runtime {
        let made = (|| -> std::io::Result<_> {
            let base = crate::fsutil::open_dir_nofollow(rt)?;
            check_own(&base)?;
            let masks = own_dir(&own_dir(&base, "csbox", true)?, "masks", true)?;
            // A crashed launch's leftovers go first.
            match crate::fsutil::remove_tree_at(&masks, id) {
                Err(e) if e.errno != nix::errno::Errno::ENOENT => return Err(e.into()),
                _ => {}
            }
            nix::sys::stat::mkdirat(Some(masks.as_raw_fd()), id, Mode::from_bits_truncate(0o700))?;
            let home = own_dir(&own_dir(&masks, id, false)?, "home", true)?;
            Ok((masks, home))
        })();
        let path = rt.join("csbox/masks").join(id).join("home");
        return match made {
            Ok((masks, home)) => Ok((masks, id.to_string(), path, home)),
            Err(e) => Err(Error::io("make the private dir", path, e)
                .hint("$XDG_RUNTIME_DIR must be your own directory, mode 0700")),
        };
    }
    let tmp = Path::new("/tmp");
    let parent = crate::fsutil::open_dir_nofollow(tmp).map_err(|e| Error::io("open", tmp, e))?;
    let uid = nix::unistd::getuid().as_raw();
    for _ in 0..16 {
        let rand = uuid::Uuid::now_v7().simple().to_string();
        let name = format!("csbox-{uid}-{}", &rand[rand.len() - 12..]);
        match nix::sys::stat::mkdirat(
            Some(parent.as_raw_fd()),
            name.as_str(),
            Mode::from_bits_truncate(0o700),
        ) {
            Err(nix::errno::Errno::EEXIST) => continue,
            Err(e) => return Err(Error::io("mkdir", tmp.join(&name), e.into())),
            Ok(()) => {}
        }
        let path = tmp.join(&name);
        let fd = own_dir(&parent, &name, false).map_err(|e| Error::io("open", &path, e))?;
        return Ok((parent, name, path, fd));
    }
    Err(Error::io(
        "mkdir",
        tmp.join(format!("csbox-{uid}-*")),
        std::io::Error::from_raw_os_error(libc::EEXIST),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wo(p: &str) -> MaskEntry {
        MaskEntry::Whiteout { path: p.into() }
    }

    #[test]
    fn the_same_entries_share_one_layer_made_once() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let a = vec![wo(".netrc"), wo(".pgpass")];
        let p1 = cached_layer(Some(d.path()), &a).unwrap();
        let p2 = cached_layer(Some(d.path()), &a).unwrap();
        assert_eq!(p1, p2);
        assert!(
            !std::fs::symlink_metadata(p1.join(".netrc"))
                .unwrap()
                .file_type()
                .is_file(),
            "a whiteout"
        );
        let other = cached_layer(Some(d.path()), &[wo(".netrc")]).unwrap();
        assert_ne!(other, p1);
        // A layer whose entries are not beside it (a launch died between the renames).
        std::fs::remove_file(p1.with_extension("json")).unwrap();
        let p3 = cached_layer(Some(d.path()), &a).unwrap();
        assert_eq!(p3, p1, "made again in place");
        assert!(
            p3.join(".pgpass").exists() || std::fs::symlink_metadata(p3.join(".pgpass")).is_ok()
        );
        let stale = std::fs::read_dir(d.path().join("csbox/masks"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("stale-")
            })
            .count();
        assert_eq!(stale, 1, "the old one set aside, not removed");
        // Not ours or not 0700: not used.
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(cached_layer(Some(d.path()), &a).is_none());
    }

    #[test]
    fn a_layer_is_written_as_planned_with_the_modes_last() {
        let d = tempfile::tempdir().unwrap();
        let l = crate::fsutil::open_dir_nofollow(d.path()).unwrap();
        let entries = vec![
            MaskEntry::Dir {
                path: ".config".into(),
                mode: 0o555,
            },
            wo(".config/gh"),
            wo(".netrc"),
            MaskEntry::File {
                path: "history.jsonl".into(),
                mode: 0o600,
                content: "{}\n".into(),
            },
        ];
        write_layer(&l, &entries).unwrap();
        use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
        let md = |p: &str| std::fs::symlink_metadata(d.path().join(p)).unwrap();
        for p in [".netrc", ".config/gh"] {
            assert!(
                md(p).file_type().is_char_device() && md(p).rdev() == 0,
                "{p}"
            );
        }
        assert_eq!(md(".config").permissions().mode() & 0o7777, 0o555);
        assert_eq!(md("history.jsonl").permissions().mode() & 0o7777, 0o600);
        assert_eq!(
            std::fs::read_to_string(d.path().join("history.jsonl")).unwrap(),
            "{}\n"
        );
        std::fs::set_permissions(
            d.path().join(".config"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }

    #[test]
    fn old_whiteouts_in_the_home_layer_are_removed_and_the_sessions_own_files_stay() {
        let d = tempfile::tempdir().unwrap();
        let up = d.path();
        std::fs::create_dir_all(up.join(".config")).unwrap();
        std::fs::write(up.join(".pgpass"), "mine").unwrap();
        let u = crate::fsutil::open_dir_nofollow(up).unwrap();
        write_layer(&u, &[wo(".netrc"), wo(".config/gh"), wo(".terraform.d")]).unwrap();
        let masks: Vec<PathBuf> = [".netrc", ".terraform.d/credentials.tfrc.json", ".config/gh"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert!(
            !holds_only_masks(&u, &masks),
            "the session's .pgpass is its own"
        );
        unmask(&u, Path::new(".pgpass")).unwrap();
        assert!(up.join(".pgpass").exists(), "only a whiteout is removed");
        std::fs::remove_file(up.join(".pgpass")).unwrap();
        assert!(
            holds_only_masks(&u, &masks),
            "masked at the first missing component"
        );
        assert!(
            !holds_only_masks(&u, &masks[..2]),
            "a whiteout the record does not name is a deletion"
        );
        for m in [".netrc", ".config/gh", ".terraform.d"] {
            unmask(&u, Path::new(m)).unwrap();
        }
        assert!(std::fs::symlink_metadata(up.join(".config/gh")).is_err());
        assert!(
            holds_only_masks(&u, &masks),
            "the dirs above old masks are csbox's"
        );
    }

    #[test]
    fn a_private_layer_dir_is_ours_0700_and_gone_when_dropped() {
        use std::os::unix::fs::PermissionsExt;
        let (parent, name, path, _fd) = private_dir(None, "0193").unwrap();
        let uid = nix::unistd::getuid().as_raw();
        assert!(
            path.starts_with("/tmp") && name.starts_with(&format!("csbox-{uid}-")),
            "{}",
            path.display()
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o700
        );
        drop(PrivateLayers {
            made: vec![(parent, name, path.clone())],
        });
        assert!(!path.exists());
        let rt = tempfile::tempdir().unwrap();
        std::fs::set_permissions(rt.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(
            private_dir(Some(rt.path()), "0193").is_err(),
            "a runtime dir others may enter"
        );
        std::fs::set_permissions(rt.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let (parent, name, path, _fd) = private_dir(Some(rt.path()), "0193").unwrap();
        assert_eq!(path, rt.path().join("csbox/masks/0193/home"));
        assert!(
            private_dir(Some(rt.path()), "0193").is_ok(),
            "a crashed launch's leftovers are replaced"
        );
        drop(PrivateLayers {
            made: vec![(parent, name, path)],
        });
        assert!(!rt.path().join("csbox/masks/0193").exists());
    }
}
