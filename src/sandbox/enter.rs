//! `csbox enter`: a second process in a running sandbox. It joins the sandbox's
//! namespaces (the fds its pid 1 opened, see `session::control`), forks so the child is
//! in its pid namespace, and gives the child what the session's command got from the
//! launched plan: the working directory, no capabilities (bounding set dropped, every set
//! cleared), no_new_privs, the rlimits, a keyring of its own, the Landlock rules and the
//! seccomp filter, and the environment. Its exit does not end the session; the session's
//! end (pid 1 exits) kills it.
//!
//! setns(CLONE_NEWUSER) needs CAP_SYS_ADMIN in the target namespace, which a process
//! outside has only as the namespace's owner (the euid that created it: the user who
//! ran `csbox run`), and only while single-threaded, which `csbox enter` is.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::child::{keep_only, load_filter};
use super::prepare::{bounding_to_drop, cstring};
use super::supervise::{supervise, Blocked};
use super::syscalls::{close_fds_except, errno, reset_signals};
use crate::error::{Error, Result, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND};
use crate::plan::{NsKind, Plan};
use crate::session::ExitStatus;

/// NS_GET_OWNER_UID (linux/nsfs.h): the uid that owns a user namespace.
const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;

/// The kinds, in the order of `steps::NS_FILES` (what pid 1 sends).
const KINDS: [NsKind; 6] = [
    NsKind::User,
    NsKind::Mount,
    NsKind::Pid,
    NsKind::Ipc,
    NsKind::Uts,
    NsKind::Net,
];

/// What the child applies, made before the fork.
struct Ready {
    exe: CString,
    /// The strings `argv_ptrs` and `envp_ptrs` point into, kept alive with them.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    cwd: CString,
    filter: Vec<libc::sock_filter>,
    landlock: Option<super::landlock::Prepared>,
    keep: Vec<caps::Capability>,
    drop_bounding: Vec<caps::Capability>,
    rlimits: Vec<(u32, u64)>,
    no_new_privs: bool,
    keyring: bool,
}

fn ptrs(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

fn owner_uid(userns: &OwnedFd) -> Option<libc::uid_t> {
    let mut uid: libc::uid_t = 0;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t.
    (unsafe { libc::ioctl(userns.as_raw_fd(), NS_GET_OWNER_UID as _, &mut uid) } == 0)
        .then_some(uid)
}

/// Join the namespaces the plan made, the user namespace first (it grants the rights to
/// join the others).
fn join(plan: &Plan, ns: &[OwnedFd]) -> Result<()> {
    if ns.len() != KINDS.len() {
        return Err(Error::Other(format!(
            "the supervisor sent {} namespaces, not {}",
            ns.len(),
            KINDS.len()
        )));
    }
    let wanted = plan.namespaces.kinds();
    let order = [0usize, 1, 3, 4, 5, 2];
    for i in order {
        let kind = KINDS[i];
        if !wanted.contains(&kind) {
            continue;
        }
        // SAFETY: setns on a namespace fd we hold.
        if unsafe { libc::setns(ns[i].as_raw_fd(), kind.clone_flag()) } == 0 {
            continue;
        }
        let e = Errno::last();
        let what = format!("setns({})", kind.clone_flag_name());
        // SAFETY: getuid never fails.
        let me = unsafe { libc::getuid() };
        let hint = match (kind, e, owner_uid(&ns[0])) {
            (NsKind::User, Errno::EPERM, Some(owner)) if owner != me => format!(
                "only the session's owner can enter it: its user namespace belongs to uid {owner} (who ran `csbox run`), and you are uid {me}; run `csbox enter` as that user"
            ),
            (NsKind::User, Errno::EINVAL, _) => "the process is not single-threaded, or shares its file-system context".into(),
            _ => "the sandbox's namespaces refused a second process; see `csbox doctor`".into(),
        };
        return Err(Error::sys(what, e).hint(hint));
    }
    Ok(())
}

/// `argv[0]` as the sandbox finds it: a path, or the first executable on the plan's PATH
/// (looked up inside, after the mount namespace is joined).
fn find_inside(cmd: &str, plan: &Plan) -> Option<PathBuf> {
    if cmd.contains('/') {
        return Some(PathBuf::from(cmd));
    }
    let path = plan
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("/usr/local/bin:/usr/bin:/bin");
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(cmd))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn ready(plan: &Plan, exe: &Path, argv: &[String]) -> Result<Ready> {
    let keep: Vec<caps::Capability> = plan
        .capabilities
        .iter()
        .map(|n| {
            n.parse()
                .map_err(|_| Error::Usage(format!("unknown capability {n:?} in the plan")))
        })
        .collect::<Result<_>>()?;
    let argv: Vec<CString> = argv.iter().map(cstring).collect::<Result<_>>()?;
    let envp: Vec<CString> = plan
        .env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}")))
        .collect::<Result<_>>()?;
    Ok(Ready {
        exe: cstring(exe)?,
        argv_ptrs: ptrs(&argv),
        _argv: argv,
        envp_ptrs: ptrs(&envp),
        _envp: envp,
        cwd: cstring(&plan.cwd)?,
        filter: super::seccomp::build_filter(&plan.seccomp)
            .map_err(|e| Error::Usage(e.to_string()))?,
        landlock: super::landlock::prepare(plan.landlock.as_ref(), super::landlock::abi())?,
        drop_bounding: bounding_to_drop(&keep),
        keep,
        rlimits: plan
            .rlimits
            .iter()
            .filter_map(|(n, v)| {
                crate::profile::RLIMITS
                    .iter()
                    .find(|(x, _)| x == n)
                    .map(|(_, r)| (*r, *v))
            })
            .collect(),
        no_new_privs: plan.no_new_privs,
        keyring: plan.new_session_keyring,
    })
}

/// Where the child failed, sent over the pipe as (step, errno).
const STEPS: [&str; 8] = [
    "chdir",
    "prctl(PR_SET_NO_NEW_PRIVS)",
    "capset (drop every capability)",
    "setrlimit",
    "landlock_restrict_self",
    "prctl(PR_SET_SECCOMP)",
    "execve",
    "keyctl(KEYCTL_JOIN_SESSION_KEYRING)",
];

/// # Safety
/// In the forked child only; never returns.
unsafe fn child(r: &Ready, err_w: libc::c_int) -> ! {
    let fail = |step: u32, e: i32| -> ! {
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&step.to_ne_bytes());
        msg[4..].copy_from_slice(&e.to_ne_bytes());
        libc::write(err_w, msg.as_ptr().cast(), 8);
        libc::_exit(if step == 6 && e == libc::ENOENT {
            EXIT_NOT_FOUND
        } else {
            EXIT_NOT_EXECUTABLE
        });
    };
    // The entered process does not outlive `csbox enter`. Our parent is outside the pid
    // namespace, so getppid() is 0 while it lives; once it died we were re-parented to a
    // process inside.
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    if libc::getppid() != 0 {
        libc::_exit(EXIT_NOT_EXECUTABLE);
    }
    close_fds_except(&[err_w]);
    if r.keyring
        && libc::syscall(libc::SYS_keyctl, 1 as libc::c_long, 0 as libc::c_long) < 0
        && errno() != libc::ENOSYS
    {
        fail(7, errno());
    }
    if libc::chdir(r.cwd.as_ptr()) != 0 {
        fail(0, errno());
    }
    if r.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
        fail(1, errno());
    }
    if let Err(e) = keep_only(&r.keep, &r.drop_bounding) {
        fail(2, e);
    }
    for &(res, v) in &r.rlimits {
        let lim = libc::rlimit {
            rlim_cur: v,
            rlim_max: v,
        };
        if libc::setrlimit(res as _, &lim) != 0 {
            fail(3, errno());
        }
    }
    if let Some(ll) = &r.landlock {
        if let Err((e, _)) = super::landlock::restrict_self(ll) {
            fail(4, e);
        }
    }
    if let Err(e) = load_filter(&r.filter) {
        fail(5, e);
    }
    reset_signals();
    libc::execve(r.exe.as_ptr(), r.argv_ptrs.as_ptr(), r.envp_ptrs.as_ptr());
    fail(6, errno())
}

/// Run `argv` in the sandbox whose namespaces are `ns` and plan `plan`; its status.
pub fn enter(plan: &Plan, ns: &[OwnedFd], argv: &[String]) -> Result<ExitStatus> {
    let first = argv
        .first()
        .ok_or_else(|| Error::Usage("no command to run".into()))?;
    join(plan, ns)?;
    let exe = find_inside(first, plan).ok_or_else(|| Error::Exec {
        msg: format!("{first:?} is not found on the session's PATH inside the sandbox"),
        code: EXIT_NOT_FOUND,
    })?;
    let r = ready(plan, &exe, argv)?;
    let (err_r, err_w) = super::pipe()?;
    let blocked = Blocked::new();
    // SAFETY: fork of this single-threaded process; the child runs only `child`, which
    // never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::sys(
            "fork (in the sandbox's pid namespace)",
            Errno::last(),
        ));
    }
    if pid == 0 {
        // SAFETY: we are the fresh child of a single-threaded process.
        unsafe { child(&r, err_w.as_raw_fd()) }
    }
    drop(err_w);
    let mut msg = [0u8; 8];
    if super::read_full(&err_r, &mut msg) == 8 {
        let step = u32::from_ne_bytes(msg[..4].try_into().expect("4 bytes")) as usize;
        let e = Errno::from_raw(i32::from_ne_bytes(msg[4..].try_into().expect("4 bytes")));
        let _ = supervise(pid, &blocked, None, None);
        let what = STEPS.get(step).copied().unwrap_or("setup");
        if what == "execve" {
            return Err(Error::Exec {
                msg: format!("execve({}) in the session => {e}", exe.display()),
                code: if e == Errno::ENOENT {
                    EXIT_NOT_FOUND
                } else {
                    EXIT_NOT_EXECUTABLE
                },
            });
        }
        return Err(
            Error::sys(format!("{what} in the entered process"), e).hint("see `csbox doctor`")
        );
    }
    let (status, _) = supervise(pid, &blocked, None, None);
    Ok(status)
}
