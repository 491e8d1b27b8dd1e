//! The walk of one merged directory of the session's layer (`projects`, `todos`, …):
//! every entry looked at with lstat beneath its directory's fd, directories entered
//! without following a link and never across a mount, regular files merged, whiteouts
//! (the overlay's record of a deletion) skipped: a deletion is never merged, Claude Code's
//! own start-up cleanup deletes old transcripts inside a session too. Anything else (a
//! link, a FIFO, a socket, a device) is refused and reported, and so is what the
//! directory's [`Rule`] does not admit (another project, another project's conversation).

use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;

use super::file::merge_file;
use super::scope::{judge, Rule, Verdict};
use super::state::{is_reserved, kind_word, lstat_at, open_dir_at, Merger};
use crate::error::Result;

/// Walk `src` (the session's `state/<rel>`) at `depth` below the merged entry, admitting
/// what `rule` does.
pub fn walk_dir(m: &mut Merger, src: &OwnedFd, rel: &Path, depth: usize, rule: Rule) -> Result<()> {
    let names = match crate::fsutil::read_names(src.as_raw_fd()) {
        Ok(n) => n,
        Err(e) => {
            m.refuse(rel, format!("getdents64 => {e}"));
            return Ok(());
        }
    };
    let mut base: Option<OwnedFd> = None;
    for name in names {
        if m.rec.incomplete {
            return Ok(());
        }
        m.entries += 1;
        if m.entries > m.limits.entries {
            m.rec.incomplete = true;
            let n = m.limits.entries;
            m.refuse(
                rel,
                format!("the layer holds more than {n} entries: the rest is not merged"),
            );
            return Ok(());
        }
        entry(m, src, &mut base, rel, &name, depth, rule)?;
    }
    Ok(())
}

fn entry(
    m: &mut Merger,
    src: &OwnedFd,
    base: &mut Option<OwnedFd>,
    rel: &Path,
    name: &CStr,
    depth: usize,
    rule: Rule,
) -> Result<()> {
    let child = rel.join(name.to_string_lossy().as_ref());
    if is_reserved(name.to_bytes()) {
        m.refuse(
            &child,
            "a name csbox reserves for its own temp and conflict files",
        );
        return Ok(());
    }
    let st = match lstat_at(src.as_raw_fd(), name) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => {
            m.refuse(&child, format!("fstatat(AT_SYMLINK_NOFOLLOW) => {e}"));
            return Ok(());
        }
    };
    let kind = st.st_mode & libc::S_IFMT;
    let verdict = match kind {
        libc::S_IFREG | libc::S_IFDIR => Some(judge(m, rule, rel, name, kind == libc::S_IFDIR)),
        _ => None,
    };
    if let Some(Verdict::Refuse(why)) = verdict {
        m.refuse(&child, why);
        return Ok(());
    }
    match (kind, verdict) {
        (libc::S_IFREG, Some(Verdict::File { max })) => merge_file(m, src, base, rel, name, max),
        (libc::S_IFDIR, Some(Verdict::Enter(inner))) => {
            if st.st_dev != m.state_dev {
                m.refuse(&child, "another file system is mounted here: not entered");
                return Ok(());
            }
            if depth + 1 > m.limits.depth {
                let d = m.limits.depth;
                m.refuse(&child, format!("deeper than {d} directories: not entered"));
                return Ok(());
            }
            match open_dir_at(src.as_raw_fd(), name) {
                Ok(fd) => walk_dir(m, &fd, &child, depth + 1, inner),
                Err(e) => {
                    m.refuse(&child, format!("openat(O_DIRECTORY|O_NOFOLLOW) => {e}"));
                    Ok(())
                }
            }
        }
        // overlayfs records a deletion as a 0/0 character device.
        (libc::S_IFCHR, _) if st.st_rdev == 0 => Ok(()),
        _ => {
            m.refuse(
                &child,
                format!(
                    "{}: only regular files and directories are merged",
                    kind_word(st.st_mode)
                ),
            );
            Ok(())
        }
    }
}
