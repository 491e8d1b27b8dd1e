//! Landlock, the second layer under the mounts (see `plan::Landlock`).
//!
//! Written against the kernel ABI directly rather than with the `landlock` crate: the
//! rules name paths as the sandbox sees them (its private /tmp, its overlay home), so
//! they are added in the child between clone and exec, where nothing may allocate or go
//! through std's I/O; the crate's API does both. What the crate would add, choosing the
//! access rights the running kernel's ABI knows, is the few lines of [`write_access`].
//! The supervisor asks the kernel for its ABI once; the child creates the ruleset, adds
//! one rule per writable path and restricts itself, just before the seccomp filter.

use std::ffi::CString;

use crate::error::{Error, Result};
use crate::plan::Landlock;

const CREATE_RULESET_VERSION: u32 = 1;
const RULE_PATH_BENEATH: libc::c_int = 1;

const ACCESS_FS_EXECUTE: u64 = 1 << 0;
const ACCESS_FS_WRITE_FILE: u64 = 1 << 1;
const ACCESS_FS_READ_FILE: u64 = 1 << 2;
const ACCESS_FS_REMOVE_DIR: u64 = 1 << 4;
const ACCESS_FS_REMOVE_FILE: u64 = 1 << 5;
const ACCESS_FS_MAKE_CHAR: u64 = 1 << 6;
const ACCESS_FS_MAKE_DIR: u64 = 1 << 7;
const ACCESS_FS_MAKE_REG: u64 = 1 << 8;
const ACCESS_FS_MAKE_SOCK: u64 = 1 << 9;
const ACCESS_FS_MAKE_FIFO: u64 = 1 << 10;
const ACCESS_FS_MAKE_BLOCK: u64 = 1 << 11;
const ACCESS_FS_MAKE_SYM: u64 = 1 << 12;
const ACCESS_FS_REFER: u64 = 1 << 13;
const ACCESS_FS_TRUNCATE: u64 = 1 << 14;
/// Rights a rule on a file (not a directory) may carry.
const FILE_ACCESS: u64 =
    ACCESS_FS_EXECUTE | ACCESS_FS_WRITE_FILE | ACCESS_FS_READ_FILE | ACCESS_FS_TRUNCATE;

const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// The Landlock ABI of the running kernel; 0 where it has none (too old, or disabled:
/// `lsm=` without landlock).
pub fn abi() -> u32 {
    // SAFETY: landlock_create_ruleset(NULL, 0, VERSION) only returns a number.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(v).unwrap_or(0)
}

/// Every write-like right this ABI knows (read, execute and device ioctls stay
/// unrestricted: the mounts already make the host read-only, and the layer is there to
/// catch a write a mount let through).
pub fn write_access(abi: u32) -> u64 {
    let mut a = ACCESS_FS_WRITE_FILE
        | ACCESS_FS_REMOVE_DIR
        | ACCESS_FS_REMOVE_FILE
        | ACCESS_FS_MAKE_CHAR
        | ACCESS_FS_MAKE_DIR
        | ACCESS_FS_MAKE_REG
        | ACCESS_FS_MAKE_SOCK
        | ACCESS_FS_MAKE_FIFO
        | ACCESS_FS_MAKE_BLOCK
        | ACCESS_FS_MAKE_SYM;
    if abi >= 2 {
        a |= ACCESS_FS_REFER;
    }
    if abi >= 3 {
        a |= ACCESS_FS_TRUNCATE;
    }
    a
}

/// What the child applies: decided in the supervisor from the plan and the kernel's ABI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub handled_fs: u64,
    pub scoped: u64,
    /// The paths beneath which writes stay allowed.
    pub writable: Vec<CString>,
}

/// `None` when there is nothing the kernel can enforce (no Landlock, or nothing asked).
pub fn prepare(plan: Option<&Landlock>, abi: u32) -> Result<Option<Prepared>> {
    let Some(ll) = plan else {
        return Ok(None);
    };
    if abi == 0 {
        crate::debug!("Landlock is not available in this kernel: only the mounts restrict writes");
        return Ok(None);
    }
    let handled_fs = if ll.writable.is_some() {
        write_access(abi)
    } else {
        0
    };
    let scoped = if ll.scope_ipc && abi >= 6 {
        SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
    } else {
        0
    };
    if handled_fs == 0 && scoped == 0 {
        return Ok(None);
    }
    let writable = ll
        .writable
        .iter()
        .flatten()
        .map(|p| {
            CString::new(p.as_os_str().as_encoded_bytes())
                .map_err(|_| Error::Usage(format!("a NUL byte in the path {}", p.display())))
        })
        .collect::<Result<_>>()?;
    Ok(Some(Prepared {
        handled_fs,
        scoped,
        writable,
    }))
}

/// Restrict the calling thread (and what it executes). Needs no_new_privs. On failure:
/// the errno and, for a path, its index in `writable`.
///
/// # Safety
/// Raw system calls only, no allocation: fit for the child between clone and exec.
pub unsafe fn restrict_self(p: &Prepared) -> std::result::Result<(), (i32, Option<usize>)> {
    let errno = || *libc::__errno_location();
    let attr = RulesetAttr {
        handled_access_fs: p.handled_fs,
        handled_access_net: 0,
        scoped: p.scoped,
    };
    let ruleset = libc::syscall(
        libc::SYS_landlock_create_ruleset,
        &attr as *const RulesetAttr,
        std::mem::size_of::<RulesetAttr>(),
        0u32,
    ) as libc::c_int;
    if ruleset < 0 {
        return Err((errno(), None));
    }
    for (i, path) in p.writable.iter().enumerate() {
        let fd = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
        if fd < 0 {
            let e = errno();
            libc::close(ruleset);
            return Err((e, Some(i)));
        }
        let mut st: libc::stat = std::mem::zeroed();
        let is_dir = libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let allowed = if is_dir {
            p.handled_fs
        } else {
            p.handled_fs & FILE_ACCESS
        };
        let rule = PathBeneathAttr {
            allowed_access: allowed,
            parent_fd: fd,
        };
        let r = libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset,
            RULE_PATH_BENEATH,
            &rule as *const PathBeneathAttr,
            0u32,
        );
        let e = errno();
        libc::close(fd);
        if r < 0 {
            libc::close(ruleset);
            return Err((e, Some(i)));
        }
    }
    let r = libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32);
    let e = errno();
    libc::close(ruleset);
    if r < 0 {
        return Err((e, None));
    }
    Ok(())
}
