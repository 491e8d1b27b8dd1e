//! Applying a plan: clone into new namespaces, set up in the child, supervise from outside.
//!
//! Process tree: the supervisor (csbox, outside; holds the session lock) → pid 1 of the new
//! pid namespace (our code: mounts, drops privileges, reaps, forwards signals) → the command.

pub mod child;
pub mod prepare;
pub mod seccomp;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;

use nix::errno::Errno;

use crate::error::{Error, Result, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND};
use crate::plan::Plan;
use crate::session::ExitStatus;
use child::*;

/// Signals the supervisor forwards to the sandbox when a process sends them.
const FORWARDED: &[libc::c_int] = &[
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Why a launch failed inside the child.
#[derive(Debug)]
pub struct SetupFailure {
    pub step: u32,
    pub errno: Errno,
    pub error: Error,
}

pub enum Launch {
    Exited { status: ExitStatus, timed_out: bool },
    SetupFailed(SetupFailure),
}

/// After the wall-clock limit: SIGTERM, then this long before SIGKILL.
const KILL_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 with a valid array.
    Errno::result(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })
        .map_err(|e| Error::sys("pipe2(O_CLOEXEC)", e))?;
    // SAFETY: fresh fds.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub(crate) fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into our buffer.
        let r = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        if r < 0 && Errno::last() == Errno::EINTR {
            continue;
        }
        if r <= 0 {
            break;
        }
        got += r as usize;
    }
    got
}

fn sigset(sigs: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        for &sig in sigs {
            libc::sigaddset(&mut s, sig);
        }
        s
    }
}

/// What to tell the user when clone() itself fails: it is the user namespace that is refused.
fn clone_hint(e: Errno) -> String {
    use crate::doctor::{FIX_COMPAT, FIX_MAX_USERNS, FIX_UNPRIVILEGED_USERNS_CLONE};
    match e {
        Errno::ENOSPC => format!(
            "user namespaces are disabled or exhausted: user.max_user_namespaces is 0 or reached \
({FIX_MAX_USERNS}); {FIX_COMPAT}; see `csbox doctor`"
        ),
        Errno::EPERM | Errno::EACCES => format!(
            "unprivileged user namespaces are refused: kernel.unprivileged_userns_clone=0 \
({FIX_UNPRIVILEGED_USERNS_CLONE}), or AppArmor restricts them (Ubuntu ≥ 23.10: install \
profiles/apparmor/csbox), or a seccomp policy of a container; {FIX_COMPAT}; see `csbox doctor`"
        ),
        Errno::EINVAL => "this kernel lacks a namespace csbox needs; see `csbox doctor`".into(),
        _ => "see `csbox doctor`".into(),
    }
}

/// Start the plan's command in its sandbox and supervise it to the end. `started` is
/// called once the command has been exec'd, with the host pid of the sandbox's pid 1.
fn block_signals() -> (libc::sigset_t, libc::sigset_t) {
    let mut wait_sigs = FORWARDED.to_vec();
    wait_sigs.push(libc::SIGCHLD);
    let wait_set = sigset(&wait_sigs);
    // SAFETY: plain signal-mask and disposition calls.
    let mut orig_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        // A parent that ignored SIGCHLD would make children vanish before we reap them.
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        libc::sigprocmask(libc::SIG_BLOCK, &wait_set, &mut orig_mask);
    }
    (wait_set, orig_mask)
}

fn restore(m: &libc::sigset_t) {
    // SAFETY: restoring a mask we saved.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, m, std::ptr::null_mut()) };
}

/// Wait for our child `pid`, forwarding signals that processes send us (kill(2),
/// si_code <= 0); terminal signals already reached the command's process group. Past the
/// wall-clock limit: SIGTERM, then SIGKILL after a grace period.
///
/// With `status`, pid 1 of the sandbox reports the command's wait status on that pipe just
/// before it exits, and we return as soon as it arrives: the kernel tears the sandbox's
/// namespaces down (its mounts, the overlay, ipc and pid namespaces) before it tells the
/// parent that pid 1 exited, and nobody needs to wait for that. pid 1 is reaped by init
/// once we are gone; the processes left inside are already being killed with it.
///
/// Returns the command's status and whether the limit struck.
fn supervise(
    pid: libc::pid_t,
    wait_set: &libc::sigset_t,
    timeout: Option<u64>,
    status: Option<&OwnedFd>,
) -> (ExitStatus, bool) {
    use std::time::{Duration, Instant};
    let mut deadline = timeout.map(|s| Instant::now() + Duration::from_secs(s));
    let mut timed_out = false;
    // SAFETY: a signalfd for signals that are blocked in this thread.
    let sfd = unsafe { libc::signalfd(-1, wait_set, libc::SFD_CLOEXEC) };
    let sfd = (sfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(sfd) });
    let mut status = status;
    loop {
        let timeout_ms = deadline.map_or(-1, |d| {
            d.saturating_duration_since(Instant::now())
                .as_millis()
                .min(i32::MAX as u128) as i32
        });
        let mut fds = [
            libc::pollfd {
                fd: sfd.as_ref().map_or(-1, |f| f.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: status.map_or(-1, |f| f.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: polling two fds we own (-1 entries are ignored).
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                2,
                if sfd.is_some() { timeout_ms } else { 100 },
            )
        };
        if n < 0 {
            continue;
        }
        if n == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
            let (sig, next) = if timed_out {
                (libc::SIGKILL, None)
            } else {
                (libc::SIGTERM, Some(Instant::now() + KILL_GRACE))
            };
            timed_out = true;
            crate::debug!(
                "wall-clock limit: sending {} to {pid}",
                crate::session::meta::signal_name(sig)
            );
            // SAFETY: signalling our child.
            unsafe { libc::kill(pid, sig) };
            deadline = next;
            continue;
        }
        if let Some(st) = status.filter(|_| fds[1].revents != 0) {
            let mut raw = [0u8; 4];
            if read_full(st, &mut raw) == 4 {
                return (decode(i32::from_ne_bytes(raw)), timed_out);
            }
            // EOF: pid 1 died without reporting (killed from outside); its own wait status
            // says how, below.
            status = None;
        }
        let mut forward = None;
        if let Some(sfd) = sfd.as_ref().filter(|_| fds[0].revents & libc::POLLIN != 0) {
            // SAFETY: reading one signalfd_siginfo into a zeroed struct of that size.
            let mut si: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let sz = std::mem::size_of::<libc::signalfd_siginfo>();
            if unsafe {
                libc::read(
                    sfd.as_raw_fd(),
                    (&mut si as *mut libc::signalfd_siginfo).cast(),
                    sz,
                )
            } == sz as isize
                && si.ssi_signo as i32 != libc::SIGCHLD
                && si.ssi_code <= 0
            {
                forward = Some(si.ssi_signo as i32);
            }
        }
        if let Some(sig) = forward {
            // SAFETY: signalling our child.
            unsafe { libc::kill(pid, sig) };
            continue;
        }
        let mut st = 0;
        // SAFETY: non-blocking reap of our only child (also covers a missing signalfd).
        if unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) } == pid {
            let mut raw = [0u8; 4];
            if let Some(s) = status {
                if read_full(s, &mut raw) == 4 {
                    return (decode(i32::from_ne_bytes(raw)), timed_out);
                }
            }
            return (decode(st), timed_out);
        }
    }
}

/// The compat profile: no namespaces at all, only the environment. Supervised the same way.
pub fn launch_unsandboxed(plan: &Plan, started: impl FnOnce(u32)) -> Result<Launch> {
    let (wait_set, orig_mask) = block_signals();
    // std resets the signal mask of the child before exec.
    let child = std::process::Command::new(&plan.exe)
        .arg0(plan.argv.first().map(String::as_str).unwrap_or_default())
        .args(plan.argv.iter().skip(1))
        .env_clear()
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&plan.cwd)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            restore(&orig_mask);
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                EXIT_NOT_FOUND
            } else {
                EXIT_NOT_EXECUTABLE
            };
            return Err(Error::Exec {
                msg: format!("cannot run {}: {e}", plan.exe.display()),
                code,
            });
        }
    };
    let pid = child.id() as libc::pid_t;
    started(pid as u32);
    let (status, timed_out) = supervise(pid, &wait_set, plan.timeout_secs, None);
    restore(&orig_mask);
    Ok(Launch::Exited { status, timed_out })
}

/// Start the plan's command in its sandbox and supervise it to the end. `started` is
/// called once the command has been exec'd, with the host pid of the sandbox's pid 1.
pub fn launch(plan: &Plan, started: impl FnOnce(u32)) -> Result<Launch> {
    // The pipes first: prepare() reserves the fd numbers above every open fd for the
    // sources the child opens, and a pipe made afterwards could take one of them (the
    // child's dup3 would then replace it, and the command's status would be lost).
    let (err_r, err_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let prepared = prepare::prepare(plan)?;
    let (wait_set, orig_mask) = block_signals();
    let fds = Fds {
        err_w: err_w.as_raw_fd(),
        status_w: status_w.as_raw_fd(),
        orig_mask,
        wait_set,
    };

    // clone(2) with fork semantics (no new stack): the child gets a copy of this
    // single-threaded process, already inside the new namespaces, as pid 1 of its own
    // pid namespace. A fork would need a second fork for CLONE_NEWPID; a re-exec would
    // cost an execve.
    // SAFETY: raw clone without CLONE_VM; the child only runs child_main, which never returns.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (prepared.clone_flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        // SAFETY: we are the fresh child.
        unsafe { child_main(&prepared, &fds) }
    }
    if pid < 0 {
        let e = Errno::last();
        restore(&orig_mask);
        return Err(Error::sys(
            format!(
                "clone({})",
                plan.namespaces
                    .kinds()
                    .iter()
                    .map(|k| k.clone_flag_name())
                    .collect::<Vec<_>>()
                    .join("|")
            ),
            e,
        )
        .hint(clone_hint(e)));
    }
    let pid = pid as libc::pid_t;
    drop(err_w);
    drop(status_w);

    // EOF on the error pipe means the command was exec'd (its copy closed on exec).
    let mut msg = [0u8; 8];
    let n = read_full(&err_r, &mut msg);
    if n == 8 {
        let step = u32::from_ne_bytes(msg[..4].try_into().unwrap());
        let errno = Errno::from_raw(i32::from_ne_bytes(msg[4..].try_into().unwrap()));
        let mut st = 0;
        // SAFETY: reaping our child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        restore(&orig_mask);
        return Ok(Launch::SetupFailed(SetupFailure {
            step,
            errno,
            error: describe_failure(step, errno, &prepared.descs, &prepared.sources, plan),
        }));
    }
    started(pid as u32);
    let (status, timed_out) = supervise(pid, &wait_set, plan.timeout_secs, Some(&status_r));
    restore(&orig_mask);
    Ok(Launch::Exited { status, timed_out })
}

fn decode(st: i32) -> ExitStatus {
    if libc::WIFSIGNALED(st) {
        ExitStatus::Signal(libc::WTERMSIG(st))
    } else {
        ExitStatus::Code(libc::WEXITSTATUS(st))
    }
}

fn describe_failure(
    step: u32,
    errno: Errno,
    descs: &[String],
    plan_sources: &[(std::ffi::CString, std::os::fd::RawFd)],
    plan: &Plan,
) -> Error {
    let cmd = plan.argv.first().cloned().unwrap_or_default();
    match step {
        STEP_EXEC => {
            let code = if errno == Errno::ENOENT {
                EXIT_NOT_FOUND
            } else {
                EXIT_NOT_EXECUTABLE
            };
            Error::Exec {
                msg: format!("cannot run {cmd:?} inside the sandbox: execve => {errno}"),
                code,
            }
        }
        STEP_ID_MAPS => Error::sys(
            format!("write /proc/self/uid_map \"{} {} 1\"", plan.uid, plan.uid),
            errno,
        )
        .hint("the kernel refused the user namespace's id mapping; see `csbox doctor`"),
        STEP_CHDIR => Error::sys(format!("chdir({})", plan.cwd.display()), errno)
            .hint("the working directory is not visible inside the sandbox; cd elsewhere"),
        STEP_PRIVS => Error::sys("dropping capabilities (prctl/capset)", errno),
        STEP_SECCOMP => Error::sys("prctl(PR_SET_SECCOMP)", errno)
            .hint("seccomp is unavailable; see `csbox doctor`"),
        STEP_FORK => Error::sys("fork() in the sandbox", errno),
        STEP_PARENT_GONE => Error::Other("the supervisor went away during setup".into()),
        s if s & 0xFFFF_0000 == STEP_SOURCE => {
            let path = plan_sources
                .get((s - STEP_SOURCE) as usize)
                .map(|(p, _)| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            Error::sys(
                format!("open({path}, O_PATH) in the new mount namespace"),
                errno,
            )
        }
        i => {
            let desc = descs
                .get(i as usize)
                .cloned()
                .unwrap_or_else(|| format!("setup step {i}"));
            let hint = if desc.contains("\"proc\"") && errno == Errno::EPERM {
                "a fresh /proc cannot be mounted here: csbox is probably inside a container that masks /proc; see `csbox doctor`"
            } else if desc.contains("\"overlay\"") {
                "this kernel refuses overlayfs in a user namespace (Linux ≥ 5.11 needed); see `csbox doctor`"
            } else {
                "see `csbox doctor`"
            };
            Error::sys(desc, errno).hint(hint)
        }
    }
}

/// True when a setup failure is the overlay mount being refused, so the caller may fall
/// back to the fresh-state mode.
pub fn is_overlay_refusal(f: &SetupFailure) -> bool {
    matches!(&f.error, Error::Sys { what, .. } if what.starts_with("mount(\"overlay\""))
        && matches!(
            f.errno,
            Errno::EINVAL | Errno::EPERM | Errno::ENODEV | Errno::EOPNOTSUPP | Errno::ELOOP
        )
}
