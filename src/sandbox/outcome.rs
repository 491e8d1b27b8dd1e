//! How a launch ended: the command's status, or the setup step that failed.

use std::path::PathBuf;

use nix::errno::Errno;

use super::prepare::MountKind;
use crate::session::ExitStatus;

/// What a launch tells its caller once the command runs.
pub struct Started<'a> {
    /// The host pid of the sandbox's pid 1 (the command's, without a sandbox).
    pub pid: u32,
    /// The sandbox's namespaces (user, mnt, pid, ipc, uts, net), as its pid 1 opened them
    /// before it became non-dumpable; empty without a sandbox or if pid 1 could not.
    pub ns: Vec<std::os::fd::OwnedFd>,
    /// The plan that runs.
    pub plan: &'a crate::plan::Plan,
}

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
        /// Where it was to be mounted.
        dst: PathBuf,
        errno: Errno,
        hint: &'static str,
    },
    #[error("{desc} => {errno} (see `csbox doctor`)")]
    Step { desc: String, errno: Errno },
    #[error("write /proc/sys/user/max_user_namespaces => {errno} (csbox could not forbid nested user namespaces; see `csbox doctor`)")]
    UsernsLimit { errno: Errno },
    #[error("write /proc/sys/user/max_inotify_instances or max_inotify_watches => {errno} (csbox could not bound the session's inotify use; see `csbox doctor`)")]
    InotifyLimits { errno: Errno },
    #[error("keyctl(KEYCTL_JOIN_SESSION_KEYRING) => {errno} (the sandbox could not get a keyring of its own; see `csbox doctor`)")]
    Keyring { errno: Errno },
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
    #[error("landlock_add_rule(LANDLOCK_RULE_PATH_BENEATH, {}) => {errno} (a writable path of the plan is not there inside; see `csbox run --dry-run`)", path.display())]
    LandlockPath { path: PathBuf, errno: Errno },
    #[error("landlock_create_ruleset/landlock_restrict_self => {errno} (Landlock refused the sandbox's rules; see `csbox doctor`)")]
    Landlock { errno: Errno },
    #[error("listen on 127.0.0.1:{port} and [::1]:{port} inside the sandbox for its proxy => {errno} (see `csbox doctor`)")]
    Relay { port: u16, errno: Errno },
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
    /// Where an overlay mount was refused (the kernel has no unprivileged overlayfs, or
    /// refuses these layers): the caller may fall back to a plan without that overlay.
    pub fn refused_overlay(&self) -> Option<&std::path::Path> {
        match self {
            SetupError::Mount {
                kind: MountKind::Overlay,
                errno:
                    Errno::EINVAL | Errno::EPERM | Errno::ENODEV | Errno::EOPNOTSUPP | Errno::ELOOP,
                dst,
                ..
            } => Some(dst),
            _ => None,
        }
    }
}

pub enum Launch {
    Exited { status: ExitStatus, timed_out: bool },
    SetupFailed(SetupError),
}
