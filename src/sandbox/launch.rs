//! The clone into new namespaces, and the supervisor's side of setup: the child's report
//! of a failed step, turned into the error that names it.

use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::errno::Errno;

use super::child::child_main;
use super::outcome::{Launch, SetupError, Started};
use super::prepare::{self, MountKind, Prepared, SourceSpec, Step};
use super::steps::{FailedAt, Fds, Phase, NS_FILES};
use super::supervise::{pipe, read_full, supervise, Blocked};
use crate::error::{Error, Result};
use crate::hints;
use crate::plan::Plan;

/// Start the plan's command in its sandbox and supervise it to the end. `started` is
/// called once the command has been exec'd, with the host pid of the sandbox's pid 1
/// and the namespace fds pid 1 sent.
pub fn launch(plan: &Plan, started: impl FnOnce(Started)) -> Result<Launch> {
    // The pipes first: prepare() reserves the fd numbers above every open fd for the
    // sources the child opens, and a pipe made afterwards could take one of them (the
    // child's dup3 would then replace it, and the command's status would be lost).
    let (err_r, err_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let (ns_r, ns_w) = crate::net::fd_socketpair().map_err(|e| {
        Error::sys(
            "socketpair(AF_UNIX, SOCK_SEQPACKET)",
            Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        )
    })?;
    let egress = super::egress::Egress::new(plan)?;
    let prepared = prepare::prepare(plan)?;
    crate::trace::mark("prepare (plan to syscalls, seccomp filter)");
    let blocked = Blocked::new();
    let fds = Fds {
        err_w: err_w.as_raw_fd(),
        status_w: status_w.as_raw_fd(),
        relay: egress.as_ref().map_or(-1, |e| e.inside_fd()),
        ns_w: ns_w.as_raw_fd(),
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
    crate::trace::mark("clone (new namespaces)");
    drop(err_w);
    drop(status_w);
    drop(ns_w);
    // Threads only now: the clone above copied a single-threaded process.
    let report = egress.map(|e| e.serve(plan)).transpose();
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            // SAFETY: ending and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            return Err(e);
        }
    };

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
    crate::trace::mark("exec seen (error pipe closed)");
    // pid 1 sent them before it closed its end, so this never blocks: EOF ends it.
    let mut ns = Vec::new();
    while ns.len() < NS_FILES.len() {
        match crate::net::recv_fd(std::os::fd::AsFd::as_fd(&ns_r)) {
            Ok(Some(fd)) => ns.push(fd),
            _ => break,
        }
    }
    if ns.len() < NS_FILES.len() {
        ns.clear();
    }
    drop(ns_r);
    started(Started {
        pid: pid as u32,
        ns,
        plan,
    });
    let (status, timed_out) = supervise(pid, &blocked, plan.timeout_secs, Some(&status_r));
    drop(blocked);
    crate::trace::mark("the command ran");
    if let Some(r) = report {
        r.finish();
    }
    Ok(Launch::Exited { status, timed_out })
}

fn mount_hint(kind: MountKind, errno: Errno) -> &'static str {
    match (kind, errno) {
        (MountKind::Proc, Errno::EPERM) => hints::PROC_MASKED,
        (MountKind::Overlay, _) => hints::OVERLAY_REFUSED,
        _ => hints::SEE_DOCTOR,
    }
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
            Phase::InotifyLimits => SetupError::InotifyLimits { errno },
            Phase::Chdir => SetupError::Chdir {
                cwd: plan.cwd.clone(),
                errno,
            },
            Phase::Capabilities => SetupError::Capabilities { errno },
            Phase::NoNewPrivs => SetupError::NoNewPrivs { errno },
            Phase::Fork => SetupError::Fork { errno },
            Phase::Seccomp => SetupError::Seccomp { errno },
            Phase::Keyring => SetupError::Keyring { errno },
            Phase::Landlock => SetupError::Landlock { errno },
            Phase::Relay => SetupError::Relay {
                port: plan.network.proxy_port.unwrap_or_default(),
                errno,
            },
            Phase::Exec => SetupError::Exec {
                cmd: plan.argv.first().cloned().unwrap_or_default(),
                errno,
            },
        },
        FailedAt::Source(k) => SetupError::Source {
            path: p
                .sources
                .get(k as usize)
                .map(|(spec, _)| match spec {
                    SourceSpec::Host(c) => PathBuf::from(c.to_string_lossy().into_owned()),
                    SourceSpec::Beneath { rel, .. } => {
                        plan.session.dir.join(rel.to_string_lossy().into_owned())
                    }
                })
                .unwrap_or_default(),
            errno,
        },
        FailedAt::LandlockPath(k) => SetupError::LandlockPath {
            path: plan
                .landlock
                .as_ref()
                .and_then(|l| l.writable.as_ref())
                .and_then(|w| w.get(k as usize).cloned())
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
                Some(Step::Mount { kind, dst, .. }) => SetupError::Mount {
                    desc,
                    kind: *kind,
                    dst: PathBuf::from(std::ffi::OsStr::from_bytes(dst.to_bytes())),
                    errno,
                    hint: mount_hint(*kind, errno),
                },
                Some(_) => SetupError::Step { desc, errno },
                None => SetupError::Unknown { code, errno },
            }
        }
    }
}
