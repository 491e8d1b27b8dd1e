//! `csbox quarantine` (hidden): what `csbox run` does around the command, for a session
//! an OCI runtime runs from a bundle `csbox spec` wrote. The bundle names it twice as a
//! hook the runtime runs on the host: `--mark-start` once the container is created and
//! before its command runs (`createRuntime`), recording the start in the session record;
//! and, once the container has stopped (`poststop`), the exit walk `csbox run` runs at
//! the end, with that start as its baseline.

use std::path::PathBuf;
use std::time::SystemTime;

use clap::Args;

use crate::error::Error;
use crate::exit::Result;
use crate::fsutil::Durability;
use crate::plan::ProjectView;
use crate::session::quarantine::{ctime_floor, sweep_session};
use crate::session::{LiveSession, Metadata, SessionId, Store};

#[derive(Debug, Args)]
pub struct QuarantineArgs {
    /// The session's directory
    #[arg(long)]
    pub dir: PathBuf,
    /// The project as the plan describes it (JSON: protected, watched paths)
    #[arg(long, required_unless_present = "mark_start")]
    pub project: Option<String>,
    /// Record the container's start in the session record (a createRuntime hook) and
    /// do nothing else: the exit walk's baseline
    #[arg(long, conflicts_with_all = ["project", "bundle_written"])]
    pub mark_start: bool,
    /// When `csbox spec` wrote the bundle (RFC 3339): the exit walk's baseline where no
    /// start of this container was recorded
    #[arg(long, value_parser = humantime::parse_rfc3339)]
    pub bundle_written: Option<SystemTime>,
}

/// A runtime run by root runs its hooks as root: become the session directory's owner
/// before touching anything, so that what is moved and made stays the user's.
fn become_owner(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let md = std::fs::symlink_metadata(dir).map_err(|e| Error::io("stat", dir, e))?;
    let (uid, gid) = (
        nix::unistd::Uid::from_raw(md.uid()),
        nix::unistd::Gid::from_raw(md.gid()),
    );
    if uid.is_root() {
        return Ok(());
    }
    nix::unistd::setgroups(&[]).map_err(|e| Error::sys("setgroups([])", e))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| Error::sys("setresgid", e))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| Error::sys("setresuid", e))?;
    Ok(())
}

pub fn quarantine(a: QuarantineArgs) -> Result<i32> {
    let project: Option<ProjectView> = match &a.project {
        Some(p) => Some(serde_json::from_str(p).map_err(|e| {
            Error::Usage(format!(
                "--project: not a project view as `csbox spec` writes it: {e}"
            ))
        })?),
        None => None,
    };
    become_owner(&a.dir)?;
    let mut s = enter(&a.dir)?;
    let Some(project) = project else {
        // The container exists and its command has not run: whatever changes in the
        // project from now on is the session's (or happens while it runs).
        s.meta.mark_started(ctime_floor(), None);
        s.write_meta(Durability::Full)?;
        return Ok(0);
    };
    let since = baseline(&s.meta, a.bundle_written);
    let moved = sweep_session(&mut s, &project, Some(since));
    s.meta.ended = Some(SystemTime::now());
    s.write_meta(Durability::Full)?;
    // The next `runc run` of the bundle binds `state/.claude.json` and the per-session
    // dirs from the host: what the container left there must not be a link. The user's
    // ~/.claude.json is not at hand here (the hook may run as root): a planted one is
    // replaced by an empty config.
    let seed = || Ok(b"{}\n".to_vec());
    let repaired = crate::session::layers::repair((&s).into(), crate::plan::SESSION_OWN, seed)?;
    Ok(if moved > 0 || repaired > 0 { 3 } else { 0 })
}

/// The session whose directory is `dir`, locked.
fn enter(dir: &std::path::Path) -> Result<LiveSession> {
    let bad = || {
        Error::Usage(format!(
            "--dir {}: not a session directory of a store",
            dir.display()
        ))
    };
    let id = dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(SessionId::parse)
        .ok_or_else(bad)?;
    let store = Store::new(dir.parent().ok_or_else(bad)?.to_path_buf());
    Ok(store.enter(&id)?)
}

/// What changed in the project after this is the session's: the later of the start the
/// `createRuntime` hook recorded and the bundle's writing (a runtime that runs no such
/// hook leaves an earlier run's start, or none), else the session's creation. None of
/// them lies after this container's start, so nothing the session made is older.
fn baseline(m: &Metadata, written: Option<SystemTime>) -> SystemTime {
    let started = m.started.unwrap_or(m.created);
    written.map_or(started, |w| w.max(started))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn meta() -> Metadata {
        let mut m = Metadata::new(SessionId::new(), None, "default", vec![], "/p".into());
        m.created = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        m
    }

    #[test]
    fn the_exit_walks_baseline_is_the_recorded_start() {
        let mut m = meta();
        m.started = Some(m.created + Duration::from_secs(50));
        let written = m.created + Duration::from_secs(10);
        assert_eq!(baseline(&m, Some(written)), m.started.unwrap());
    }

    #[test]
    fn without_a_start_of_this_container_the_bundles_writing_is_the_baseline() {
        // Never started (a runtime that runs no createRuntime hook), or started by
        // csbox run before this bundle was written.
        let mut m = meta();
        let written = m.created + Duration::from_secs(10);
        assert_eq!(baseline(&m, Some(written)), written);
        m.started = Some(m.created + Duration::from_secs(5));
        assert_eq!(baseline(&m, Some(written)), written);
        // A bundle of an older csbox names no time: the session's creation.
        m.started = None;
        assert_eq!(baseline(&m, None), m.created);
    }
}
