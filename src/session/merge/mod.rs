//! Merge-back: when a session ends (and on demand, `csbox merge ID`), its conversation
//! state goes from its `~/.claude` layer into the real `~/.claude`, so any later session
//! and plain `claude` on the host find it (`--resume`, `--continue`, the `/resume`
//! picker, up-arrow history).
//!
//! The layer was written by a hostile process, so the merge is append-only and bounded:
//! - only the profile's `claude.mergeBack` entries (`profile::MERGE_BACK`), only regular
//!   files and directories, each opened beneath its directory's fd without following a
//!   link and without blocking (a FIFO), never across a mount, never a file with an exec
//!   or set-id bit, never a name csbox reserves;
//! - only what is the session's own ([`scope`]): `projects/<the key of its working
//!   directory>/` (transcripts, their `<uuid>/` directories, `*.md` auto-memory, the
//!   latter only when no other known project shares the key: [`keys`]), the
//!   `history.jsonl` lines of that directory, the `todos/` and `file-history/` of the
//!   conversations filed there, `plans/`; another project's entries are refused, each
//!   reported;
//! - only conversations whose transcript names no other working directory and tracks
//!   no file a host rewind must not write ([`tracked`]), and of their `file-history/`
//!   only the backups their entries name;
//! - a new file is copied in (its mtime no later than the merge: `claude --continue` and
//!   the `/resume` picker take the newest); a file that exists is replaced only when the session's
//!   version extends it byte for byte; anything else is kept beside it as
//!   `<name>.csbox-conflict-<id>` and reported; nothing in `~/.claude` is ever deleted;
//! - `history.jsonl` gets the session's new lines, each a JSON object, in time order;
//! - every file is written by temp file, fsync and rename, under `~/.claude/merge.lock`
//!   (flock, exclusive), so concurrent merges take turns and a merge killed at any point
//!   leaves `~/.claude` as it was or with some files merged, each whole;
//! - merging the same session again changes nothing (its files are then unchanged);
//! - bounded: per file, per merge (bytes written), entries, depth, memory files and plans
//!   ([`LIMITS`]); a file skipped for any reason is reported, never passed over.

mod file;
mod history;
mod keys;
mod scope;
mod state;
mod tracked;
mod walk;
mod write;

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;

pub use file::{already_in, extends};
use state::{kind_word, lstat_at, open_at, open_dir_at, Merger};
pub use state::{Limits, LIMITS};

use super::id::SessionId;
use super::meta::MergeRecord;
use crate::error::{Error, Result};

/// The lock concurrent merges take turns on, in the real `~/.claude`.
pub const LOCK_FILE: &str = "merge.lock";
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// One merge: a session (its directory, opened without following a link) into a root.
pub struct Request<'a> {
    pub session_dir: &'a OwnedFd,
    pub id: &'a SessionId,
    /// The session's creation time (history lines older than it are not the session's).
    pub created: SystemTime,
    /// The session's working directory (its record's `cwd`): Claude Code files its
    /// conversations under this directory's project key, and only those merge.
    pub cwd: &'a Path,
    /// The real `~/.claude`.
    pub claude_root: &'a Path,
    /// The host's `~/.claude.json` (its `projects` map names the projects Claude Code
    /// knows, some of which may share the session's project key).
    pub claude_json: &'a Path,
    /// What to merge: entries of `profile::MERGE_BACK`.
    pub items: &'a [String],
    /// The `protect` list of the profile the session ran with (empty: the built-in
    /// [`crate::plan::PROTECTED`], as the plan reads it): a conversation whose file
    /// history tracks one of them does not merge.
    pub protect: &'a [String],
}

fn take_lock(root: &OwnedFd, root_path: &Path) -> Result<OwnedFd> {
    let name = CString::new(LOCK_FILE).expect("no NUL");
    let path = root_path.join(LOCK_FILE);
    let fd = open_at(root.as_raw_fd(), &name, libc::O_RDWR | libc::O_CREAT, 0o600)
        .map_err(|e| Error::sys(format!("openat({}, O_CREAT|O_NOFOLLOW)", path.display()), e))?;
    let st = state::fstat(fd.as_raw_fd())?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Error::Other(format!(
            "{} is {}, not a lock file: remove it",
            path.display(),
            kind_word(st.st_mode)
        )));
    }
    let start = Instant::now();
    loop {
        // SAFETY: flock on a valid descriptor.
        match Errno::result(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }) {
            Ok(_) => return Ok(fd),
            Err(Errno::EWOULDBLOCK) if start.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(Errno::EWOULDBLOCK) => {
                return Err(Error::Other(format!(
                    "another merge has held {} for {}s: wait for it, or find it with `fuser {}`",
                    path.display(),
                    LOCK_WAIT.as_secs(),
                    path.display()
                )))
            }
            Err(e) => return Err(Error::sys(format!("flock({}, LOCK_EX)", path.display()), e)),
        }
    }
}

fn open_root(p: &Path) -> Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::Usage(format!("{}: a NUL byte in the path", p.display())))?;
    // The user's own config dir: a link there (~/.claude -> /data/claude) is theirs.
    // SAFETY: open(2) of a valid C string.
    let fd = Errno::result(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })
    .map_err(|e| {
        Error::sys(format!("open({}, O_DIRECTORY)", p.display()), e)
            .hint("set CLAUDE_ROOT to your Claude config dir")
    })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Merge the session `req` names. The caller holds the session's lock (it is not running).
pub fn merge(req: &Request) -> Result<MergeRecord> {
    let mut rec = MergeRecord::new(SystemTime::now());
    if req.items.is_empty() {
        return Ok(rec);
    }
    let state = match open_dir_at(req.session_dir.as_raw_fd(), c"state") {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(rec),
        Err(e) => {
            rec.refused.push(crate::session::meta::MergeEntry {
                path: ".".into(),
                detail: format!("the session's state/ cannot be opened as a directory without following a link: {e}"),
            });
            return Ok(rec);
        }
    };
    // Nothing to merge (the common case of a short command): no lock, no walk.
    if req.items.iter().all(|i| nothing_at(&state, i)) {
        return Ok(rec);
    }
    let root = open_root(req.claude_root)?;
    let _lock = take_lock(&root, req.claude_root)?;
    crate::fault::point("merge:locked");
    state::sweep_temps(&root);
    let state_dev = state::fstat(state.as_raw_fd())?.st_dev;
    let id = req.id.to_string();
    let protect: Vec<&str> = if req.protect.is_empty() {
        crate::plan::PROTECTED.to_vec()
    } else {
        req.protect.iter().map(String::as_str).collect()
    };
    let mut scope = scope::build(&state, tracked::Project::new(req.cwd, &protect));
    if scope.memory {
        scope.shared_with = keys::other_project(&root, &[req.claude_json], &scope.slug, req.cwd);
    }
    let mut m = Merger {
        root,
        root_path: req.claude_root,
        state,
        state_dev,
        limits: Limits::get(),
        id: &id,
        since_ms: req
            .created
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        scope,
        rec,
        entries: 0,
        plans: 0,
        tmp_count: 0,
        touched: Vec::new(),
    };
    for item in req.items {
        if m.rec.incomplete {
            break;
        }
        if item == "history.jsonl" {
            history::merge_history(&mut m)?;
            continue;
        }
        merge_dir(&mut m, item)?;
    }
    for d in &m.touched {
        nix::unistd::fsync(d.as_raw_fd()).map_err(|e| {
            Error::sys(
                format!("fsync(a directory of {})", req.claude_root.display()),
                e,
            )
        })?;
    }
    Ok(m.rec)
}

/// Whether the layer has nothing at `item`: no entry, or an empty directory (csbox makes
/// some of them for every session).
fn nothing_at(state: &OwnedFd, item: &str) -> bool {
    let Ok(name) = CString::new(item) else {
        return false;
    };
    match lstat_at(state.as_raw_fd(), &name) {
        Err(Errno::ENOENT) => true,
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
            open_dir_at(state.as_raw_fd(), &name)
                .ok()
                .and_then(|d| crate::fsutil::read_names(d.as_raw_fd()).ok())
                .is_some_and(|n| n.is_empty())
        }
        _ => false,
    }
}

fn merge_dir(m: &mut Merger, item: &str) -> Result<()> {
    let rel = Path::new(item);
    let name = CString::new(item).map_err(|_| Error::Usage(format!("{item:?}: a NUL byte")))?;
    let st = match lstat_at(m.state.as_raw_fd(), &name) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => {
            m.refuse(rel, format!("fstatat(AT_SYMLINK_NOFOLLOW) => {e}"));
            return Ok(());
        }
    };
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR if st.st_dev == m.state_dev => {
            match open_dir_at(m.state.as_raw_fd(), &name) {
                Ok(fd) => walk::walk_dir(m, &fd, rel, 0, scope::Rule::of_item(item)),
                Err(e) => {
                    m.refuse(rel, format!("openat(O_DIRECTORY|O_NOFOLLOW) => {e}"));
                    Ok(())
                }
            }
        }
        libc::S_IFDIR => {
            m.refuse(rel, "another file system is mounted here: not entered");
            Ok(())
        }
        libc::S_IFCHR if st.st_rdev == 0 => Ok(()), // the session deleted it: not merged
        _ => {
            m.refuse(rel, format!("{}, not a directory", kind_word(st.st_mode)));
            Ok(())
        }
    }
}
