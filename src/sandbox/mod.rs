//! Applying a plan: clone into new namespaces, set up in the child, supervise from outside.
//!
//! Process tree: the supervisor (csbox, outside; holds the session lock) → pid 1 of the new
//! pid namespace (our code: mounts, drops privileges, reaps, forwards signals) → the command.
//! The path of a launch: [`prepare::prepare`] (plan → steps), [`launch`] (clone),
//! [`child::child_main`] (the steps, then exec), [`supervise::supervise`] (the wait).

pub mod child;
pub mod compat;
pub mod prepare;
pub mod seccomp;
pub mod supervise;

use std::os::fd::AsRawFd;
use std::path::PathBuf;

use nix::errno::Errno;

use crate::error::{Error, Result, EXIT_CSBOX, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND};
use crate::hints;
use crate::plan::Plan;
use crate::session::ExitStatus;
use child::{child_main, FailedAt, Fds, Phase};
use prepare::{MountKind, Prepared, Step};
pub(crate) use supervise::{pipe, read_full};
use supervise::{supervise, Blocked};

pub use compat::launch_unsandboxed;

/// Why a launch failed inside the child: the step, what it did, and the errno.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("write /proc/self/uid_map \"{uid} {uid} 1\" => {errno} (the kernel refused the user namespace's id mapping; see `csbox doctor`)")]
    IdMaps { uid: u32, errno: Errno },
    #[error("open({}, O_PATH) in the new mount namespace => {errno} (a path the plan mounts from is not there; see `csbox run --dry-run`)", path.display())]
    Source { path: PathBuf, errno: Errno },
    #[error("{desc} => {errno} ({hint})")]
    Mount {
        desc: String,
        kind: MountKind,
        errno: Errno,
        hint: &'static str,
    },
    #[error("{desc} => {errno} (see `csbox doctor`)")]
    Step { desc: String, errno: Errno },
    #[error("write /proc/sys/user/max_user_namespaces => {errno} (csbox could not forbid nested user namespaces; see `csbox doctor`)")]
    UsernsLimit { errno: Errno },
    #[error("chdir({}) => {errno} (the working directory is not visible inside the sandbox; cd elsewhere)", cwd.display())]
    Chdir { cwd: PathBuf, errno: Errno },
    #[error("dropping capabilities (prctl(PR_CAPBSET_DROP)/capset) => {errno}")]
    Capabilities { errno: Errno },
    #[error("prctl(PR_SET_NO_NEW_PRIVS) => {errno}")]
    NoNewPrivs { errno: Errno },
    #[error("fork() in the sandbox => {errno} (the process limit is reached?)")]
    Fork { errno: Errno },
    #[error("setrlimit(RLIMIT_{}, {value}) => {errno} (the profile's rlimits.{name} is above what this user may set: lower it to the hard limit, `ulimit -H`)", name.to_uppercase())]
    Rlimit {
        name: String,
        value: u64,
        errno: Errno,
    },
    #[error("prctl(PR_SET_SECCOMP) => {errno} (seccomp is unavailable; see `csbox doctor`)")]
    Seccomp { errno: Errno },
    #[error("cannot run {cmd:?} inside the sandbox: execve => {errno}")]
    Exec { cmd: String, errno: Errno },
    #[error("the supervisor went away during setup")]
    ParentGone,
    #[error("sandbox setup failed at an unknown step (code {code:#x}) => {errno}")]
    Unknown { code: u32, errno: Errno },
}

impl SetupError {
    pub fn exit_code(&self) -> i32 {
        match self {
            SetupError::Exec { errno, .. } if *errno == Errno::ENOENT => EXIT_NOT_FOUND,
            SetupError::Exec { .. } => EXIT_NOT_EXECUTABLE,
            _ => EXIT_CSBOX,
        }
    }

    /// The overlay mount of `~/.claude` was refused: the caller may fall back to the
    /// fresh-state mode.
    pub fn is_overlay_refusal(&self) -> bool {
        matches!(
            self,
            SetupError::Mount { kind: MountKind::Overlay, errno, .. }
                if matches!(errno, Errno::EINVAL | Errno::EPERM | Errno::ENODEV | Errno::EOPNOTSUPP | Errno::ELOOP)
        )
    }
}

pub enum Launch {
    Exited { status: ExitStatus, timed_out: bool },
    SetupFailed(SetupError),
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
    let blocked = Blocked::new();
    let fds = Fds {
        err_w: err_w.as_raw_fd(),
        status_w: status_w.as_raw_fd(),
        orig_mask: *blocked.orig_mask.as_ref(),
        wait_set: *blocked.wait_set.as_ref(),
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
        let flags: Vec<&str> = plan
            .namespaces
            .kinds()
            .iter()
            .map(|k| k.clone_flag_name())
            .collect();
        return Err(Error::sys(format!("clone({})", flags.join("|")), e).hint(hints::clone(e)));
    }
    let pid = pid as libc::pid_t;
    drop(err_w);
    drop(status_w);

    // EOF on the error pipe means the command was exec'd (its copy closed on exec).
    let mut msg = [0u8; 8];
    if read_full(&err_r, &mut msg) == 8 {
        let code = u32::from_ne_bytes(msg[..4].try_into().expect("4 bytes"));
        let errno = Errno::from_raw(i32::from_ne_bytes(msg[4..].try_into().expect("4 bytes")));
        let mut st = 0;
        // SAFETY: reaping our child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        return Ok(Launch::SetupFailed(describe(code, errno, &prepared, plan)));
    }
    started(pid as u32);
    let (status, timed_out) = supervise(pid, &blocked, plan.timeout_secs, Some(&status_r));
    drop(blocked);
    Ok(Launch::Exited { status, timed_out })
}

/// Turn the child's (code, errno) into the error that names the step.
fn describe(code: u32, errno: Errno, p: &Prepared, plan: &Plan) -> SetupError {
    let Some(at) = FailedAt::decode(code) else {
        return SetupError::Unknown { code, errno };
    };
    match at {
        FailedAt::Phase(phase) => match phase {
            Phase::ParentGone => SetupError::ParentGone,
            Phase::IdMaps => SetupError::IdMaps {
                uid: plan.uid,
                errno,
            },
            Phase::UsernsLimit => SetupError::UsernsLimit { errno },
            Phase::Chdir => SetupError::Chdir {
                cwd: plan.cwd.clone(),
                errno,
            },
            Phase::Capabilities => SetupError::Capabilities { errno },
            Phase::NoNewPrivs => SetupError::NoNewPrivs { errno },
            Phase::Fork => SetupError::Fork { errno },
            Phase::Seccomp => SetupError::Seccomp { errno },
            Phase::Exec => SetupError::Exec {
                cmd: plan.argv.first().cloned().unwrap_or_default(),
                errno,
            },
        },
        FailedAt::Source(k) => SetupError::Source {
            path: p
                .sources
                .get(k as usize)
                .map(|(c, _)| PathBuf::from(c.to_string_lossy().into_owned()))
                .unwrap_or_default(),
            errno,
        },
        FailedAt::Rlimit(k) => {
            let (name, value) = plan.rlimits.get(k as usize).cloned().unwrap_or_default();
            SetupError::Rlimit { name, value, errno }
        }
        FailedAt::Step(i) => {
            let i = i as usize;
            let desc = p.descs.get(i).cloned().unwrap_or_default();
            match p.steps.get(i) {
                Some(Step::Mount { kind, .. }) => SetupError::Mount {
                    desc,
                    kind: *kind,
                    errno,
                    hint: hints::mount(*kind, errno),
                },
                Some(_) => SetupError::Step { desc, errno },
                None => SetupError::Unknown { code, errno },
            }
        }
    }
}
