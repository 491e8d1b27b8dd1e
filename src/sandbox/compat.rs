//! The compat profile: no namespaces at all, only the environment and the plan's links to
//! the shared `~/.claude` entries. Supervised the same way as a sandbox.

use std::path::Path;

use super::outcome::{Launch, Started};
use super::supervise::{supervise, Blocked};
use crate::error::{Error, Result, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND};
use crate::fsutil::Durability;
use crate::plan::{CompatLink, Plan};

pub fn launch_unsandboxed(plan: &Plan, started: impl FnOnce(Started)) -> Result<Launch> {
    link(&plan.compat_links);
    let r = run(plan, started);
    unlink(&plan.compat_links, &plan.session.state_dir);
    r
}

fn run(plan: &Plan, started: impl FnOnce(Started)) -> Result<Launch> {
    let blocked = Blocked::new();
    let mut argv = plan.argv.clone();
    if argv.is_empty() {
        argv.push(plan.exe.display().to_string());
    }
    let pid = match crate::sandbox::syscalls::spawn_clean(&plan.exe, &argv, &plan.env, &plan.cwd) {
        Ok(pid) => pid,
        Err(e) => {
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
    started(Started {
        pid: pid as u32,
        ns: Vec::new(),
        plan,
    });
    let (status, timed_out) = supervise(pid, &blocked, plan.timeout_secs, None);
    Ok(Launch::Exited { status, timed_out })
}

/// Link the shared config into the session's own dir so settings, skills and the login
/// are there (Claude Code replaces a linked .credentials.json by a file when it
/// refreshes, anthropics/claude-code#76561).
fn link(links: &[CompatLink]) {
    for l in links {
        if l.target.exists() && l.link.symlink_metadata().is_err() {
            let _ = std::os::unix::fs::symlink(&l.target, &l.link);
        }
    }
}

/// After a compat session: take the links out again (absolute links in the layer would
/// point at themselves if the session were re-entered under a sandboxed profile), and
/// bring a login or token refresh back to the real `.credentials.json`. Claude Code
/// replaces the linked file by its own (tmp + rename) when it logs in or refreshes, so
/// without this the next session would start with the stale token. The session's files
/// are read without following links.
fn unlink(links: &[CompatLink], state: &Path) {
    let Ok(dir) = crate::fsutil::open_dir_nofollow(state) else {
        return;
    };
    for l in links {
        let Ok(md) = l.link.symlink_metadata() else {
            continue;
        };
        if md.file_type().is_symlink() {
            if std::fs::read_link(&l.link).is_ok_and(|t| t == l.target) {
                let _ = std::fs::remove_file(&l.link);
            }
            continue;
        }
        if !(l.copy_back && md.is_file()) {
            continue;
        }
        let Some(real_dir) = l.target.parent() else {
            continue;
        };
        match crate::fsutil::read_small_at(&dir, &l.name, 1 << 20) {
            Ok(login) if !login.is_empty() => {
                match crate::fsutil::atomic_write(
                    real_dir,
                    &l.name,
                    &login,
                    0o600,
                    Durability::Full,
                ) {
                    Ok(()) => {
                        let _ = std::fs::remove_file(&l.link);
                    }
                    Err(e) => {
                        crate::warn!("the session's login stays in {}: {e}", l.link.display());
                    }
                }
            }
            _ => {}
        }
    }
}
