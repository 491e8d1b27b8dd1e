//! What one merge carries along: the two trees (the session's `state/` and the real
//! `~/.claude`), the bounds, the record it builds, and the raw no-follow calls every part
//! of it opens files with.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::tracked::Project;
use crate::session::meta::{MergeEntry, MergeRecord, MERGE_LIST_CAP};

/// The bounds of one merge (README "Sessions"): a session is hostile, and a layer can
/// hold a 2 GiB file, a million entries or a tree a thousand deep. Each is far above what
/// a real conversation writes (a long day's transcript is a few MiB) and low enough that
/// what it lets into `~/.claude`, out of gc's reach, is small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A file bigger than this is refused.
    pub file: u64,
    /// The bytes one merge writes into `~/.claude`; past it the merge stops (incomplete)
    /// and the next `csbox merge` goes on where it stopped (merged files are unchanged).
    pub merge: u64,
    /// `history.jsonl`, the session's and the real one, each at most this big.
    pub history: u64,
    /// Directory entries looked at.
    pub entries: u64,
    /// Directory depth below a merged entry.
    pub depth: usize,
    /// A file of the project's auto-memory (`projects/<slug>/memory/*.md`).
    pub memory: u64,
    /// Files of `plans/` looked at.
    pub plans: u64,
}

pub const LIMITS: Limits = Limits {
    file: 64 << 20,
    merge: 256 << 20,
    history: 64 << 20,
    entries: 10_000,
    depth: 32,
    memory: 1 << 20,
    plans: 200,
};

impl Limits {
    /// [`LIMITS`]; in debug builds (tests) `CSBOX_TEST_MERGE_LIMITS=file=N,merge=N,…`
    /// lowers them, so a test can reach a bound without writing a gigabyte. A release
    /// build has no such hook.
    pub fn get() -> Limits {
        let mut l = LIMITS;
        if !cfg!(debug_assertions) {
            return l;
        }
        let Some(v) = std::env::var_os("CSBOX_TEST_MERGE_LIMITS") else {
            return l;
        };
        for kv in v.to_string_lossy().split(',') {
            let Some((k, n)) = kv.split_once('=') else {
                continue;
            };
            let Ok(n) = n.trim().parse::<u64>() else {
                continue;
            };
            match k.trim() {
                "file" => l.file = n,
                "merge" => l.merge = n,
                "history" => l.history = n,
                "entries" => l.entries = n,
                "depth" => l.depth = n as usize,
                "memory" => l.memory = n,
                "plans" => l.plans = n,
                _ => {}
            }
        }
        l
    }
}

/// What of the layer is this session's own (issue 15, attack-3 A3-5/A3-10): anything
/// else a session writes there would reach other projects' conversations, history or
/// auto-memory, which every later `claude` there reads, sandboxed or not.
#[derive(Debug)]
pub struct Scope {
    /// The session's working directory, as Claude Code writes it in a history line's
    /// `project`.
    pub cwd: String,
    /// Claude Code's project key for it: `projects/<slug>/`.
    pub slug: String,
    /// The conversations (uuids) whose transcript is in the layer's `projects/<slug>/`
    /// and passed [`Project::scan`], each with the backup names its file history names:
    /// only those of its `file-history/<uuid>/` merge.
    pub conversations: HashMap<String, HashSet<String>>,
    /// Conversations whose transcript did not pass, with the reason: neither it nor its
    /// backups, todos or `<uuid>/` directory merge (red-team 6 A6-7, red-team 7 A7-4 and
    /// A7-8: a rewind with code restore on the host writes every tracked file back).
    pub refused: HashMap<String, String>,
    /// Another project Claude Code files under the same key (its key is lossy:
    /// `~/p.x` and `~/p_x`), when one is known: the key's memory is not merged.
    pub shared_with: Option<String>,
    /// The layer has a `memory` entry in the project's directory (only then is
    /// `shared_with` looked for).
    pub memory: bool,
    /// The project, as tracked paths are judged against it.
    pub project: Project,
}

/// One merge in progress.
pub struct Merger<'a> {
    /// The real `~/.claude`.
    pub root: OwnedFd,
    pub root_path: &'a Path,
    /// The session's `state/` (its `~/.claude` layer).
    pub state: OwnedFd,
    pub state_dev: u64,
    pub limits: Limits,
    /// The session's id, for conflict names.
    pub id: &'a str,
    /// The session's creation, in ms since the epoch: a history line older than this was
    /// the base's (copied up with the file), not the session's.
    pub since_ms: u64,
    /// What of the layer is this session's own (its project, its conversations).
    pub scope: Scope,
    pub rec: MergeRecord,
    pub entries: u64,
    /// Files of `plans/` looked at so far.
    pub plans: u64,
    /// Temp files made so far (their names are numbered).
    pub tmp_count: u64,
    /// Directories of `~/.claude` written to, synced once at the end.
    pub touched: Vec<OwnedFd>,
}

impl Merger<'_> {
    fn push(list: &mut Vec<MergeEntry>, unlisted: &mut u64, path: &Path, detail: String) {
        if list.len() < MERGE_LIST_CAP {
            list.push(MergeEntry {
                path: crate::human::printable(&path.to_string_lossy()),
                detail,
            });
        } else {
            *unlisted += 1;
        }
    }

    /// `path` (relative to `~/.claude`) was not merged.
    pub fn refuse(&mut self, path: &Path, detail: impl Into<String>) {
        Self::push(
            &mut self.rec.refused,
            &mut self.rec.unlisted,
            path,
            detail.into(),
        );
    }

    /// `path`'s session version was kept beside the real one.
    pub fn conflict(&mut self, path: &Path, detail: impl Into<String>) {
        Self::push(
            &mut self.rec.conflicts,
            &mut self.rec.unlisted,
            path,
            detail.into(),
        );
    }

    /// Room for `n` more bytes in this merge; past the bound the merge is incomplete.
    pub fn budget(&mut self, path: &Path, n: u64) -> bool {
        if self.rec.bytes.saturating_add(n) <= self.limits.merge {
            return true;
        }
        if !self.rec.incomplete {
            self.rec.incomplete = true;
            let bound = crate::human::human_size(self.limits.merge);
            self.refuse(path, format!("the merge reached its bound of {bound} written; `csbox merge` again merges the rest"));
        }
        false
    }

    /// Remember a directory of `~/.claude` that got a new name, to fsync it at the end.
    pub fn touch(&mut self, dir: &OwnedFd) {
        let Ok(st) = nix::sys::stat::fstat(dir.as_raw_fd()) else {
            return;
        };
        let known = self.touched.iter().any(|d| {
            nix::sys::stat::fstat(d.as_raw_fd())
                .is_ok_and(|t| (t.st_dev, t.st_ino) == (st.st_dev, st.st_ino))
        });
        if !known {
            if let Ok(d) = nix::unistd::dup(dir.as_raw_fd()) {
                // SAFETY: a fresh duplicate we own.
                self.touched.push(unsafe { OwnedFd::from_raw_fd(d) });
            }
        }
    }

    /// The next temp name in a directory of `~/.claude`. We hold `merge.lock`, so no
    /// other merge uses these names: any found when a directory is opened is a leftover
    /// of a merge that was killed, and is removed ([`sweep_temps`]).
    pub fn tmp_name(&mut self) -> CString {
        self.tmp_count += 1;
        CString::new(format!("{TMP_PREFIX}{}{TMP_SUFFIX}", self.tmp_count)).expect("no NUL")
    }
}

pub const TMP_PREFIX: &str = ".csbox-merge-";
pub const TMP_SUFFIX: &str = ".tmp";
/// `<name>.csbox-conflict-<session id>`: the session's version of a file that does not
/// extend the real one. No Claude Code reader takes it for a transcript (not `.jsonl`).
pub const CONFLICT_MARK: &str = ".csbox-conflict-";

/// Names csbox writes into `~/.claude` itself: a session's file with such a name is
/// refused, so it can never be mistaken for (or removed as) a temp file or a conflict copy.
pub fn is_reserved(name: &[u8]) -> bool {
    name.starts_with(TMP_PREFIX.as_bytes())
        || name
            .windows(CONFLICT_MARK.len())
            .any(|w| w == CONFLICT_MARK.as_bytes())
}

/// Where a conflict copy of `name` goes; a hash of the name when the result would be
/// longer than a file name may be.
pub fn conflict_name(name: &CStr, id: &str) -> CString {
    let b = name.to_bytes();
    let mut out = b.to_vec();
    out.extend_from_slice(CONFLICT_MARK.as_bytes());
    out.extend_from_slice(id.as_bytes());
    if out.len() > 255 {
        // FNV-1a: stable, no dependency; only needs to tell long names apart.
        let h = b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, c| {
            (h ^ *c as u64).wrapping_mul(0x100_0000_01b3)
        });
        out = format!("{CONFLICT_MARK}{id}-{h:016x}").into_bytes();
    }
    CString::new(out).expect("names hold no NUL")
}

pub fn errno_of(r: libc::c_int) -> Result<libc::c_int, Errno> {
    Errno::result(r)
}

/// openat with O_NOFOLLOW|O_CLOEXEC (and O_NONBLOCK: a FIFO never blocks the open).
pub fn open_at(
    dir: RawFd,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> Result<OwnedFd, Errno> {
    // SAFETY: openat on a valid fd and C string.
    let fd = errno_of(unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn open_dir_at(dir: RawFd, name: &CStr) -> Result<OwnedFd, Errno> {
    open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

/// lstat of `dir/name`.
pub fn lstat_at(dir: RawFd, name: &CStr) -> Result<libc::stat, Errno> {
    // SAFETY: all-zero is a valid stat buffer; fstatat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd, C string and buffer.
    errno_of(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

pub fn fstat(fd: RawFd) -> Result<libc::stat, Errno> {
    // SAFETY: as above.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and buffer.
    errno_of(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

pub fn unlink_at(dir: RawFd, name: &CStr, flags: libc::c_int) -> Result<(), Errno> {
    // SAFETY: valid fd and C string.
    errno_of(unsafe { libc::unlinkat(dir, name.as_ptr(), flags) }).map(drop)
}

/// What a directory entry is, in words, for a refusal.
pub fn kind_word(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFLNK => "a symbolic link",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFDIR => "a directory",
        libc::S_IFREG => "a regular file",
        _ => "an unknown kind of file",
    }
}

/// Open the directory `rel` of `~/.claude` (its components one at a time, no link
/// followed), creating what is missing (mode 0700) when `create`. A new or first-opened
/// directory has its leftover temp files removed.
pub fn base_dir(m: &mut Merger, rel: &Path, create: bool) -> Result<OwnedFd, (PathBuf, Errno)> {
    use std::os::unix::ffi::OsStrExt;
    let fd = nix::unistd::dup(m.root.as_raw_fd()).map_err(|e| (PathBuf::new(), e))?;
    // SAFETY: a fresh duplicate we own.
    let mut cur = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut at = PathBuf::new();
    for c in rel.components() {
        let name =
            CString::new(c.as_os_str().as_bytes()).map_err(|_| (at.clone(), Errno::EINVAL))?;
        at.push(c);
        let next = match open_dir_at(cur.as_raw_fd(), &name) {
            Err(Errno::ENOENT) if create => {
                // SAFETY: valid fd and C string.
                match errno_of(unsafe { libc::mkdirat(cur.as_raw_fd(), name.as_ptr(), 0o700) }) {
                    Ok(_) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err((at, e)),
                }
                m.touch(&cur);
                open_dir_at(cur.as_raw_fd(), &name)
            }
            r => r,
        }
        .map_err(|e| (at.clone(), e))?;
        cur = next;
    }
    sweep_temps(&cur);
    Ok(cur)
}

/// Remove temp files a killed merge left in `dir` (regular files with our temp names).
pub fn sweep_temps(dir: &OwnedFd) {
    let Ok(names) = crate::fsutil::read_names(dir.as_raw_fd()) else {
        return;
    };
    for n in names {
        let b = n.to_bytes();
        if b.starts_with(TMP_PREFIX.as_bytes()) && b.ends_with(TMP_SUFFIX.as_bytes()) {
            if lstat_at(dir.as_raw_fd(), &n)
                .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
            {
                let _ = unlink_at(dir.as_raw_fd(), &n, 0);
            }
        }
    }
}
