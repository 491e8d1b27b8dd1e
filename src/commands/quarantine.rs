//! `csbox quarantine` (hidden): what `csbox run` does when a session ends, for a
//! session an OCI runtime ran from a bundle `csbox spec` wrote. The bundle names it as a
//! poststop hook; the runtime runs it on the host once the container has stopped.

use std::path::PathBuf;

use clap::Args;

use crate::error::Error;
use crate::exit::Result;
use crate::plan::ProjectView;
use crate::session::{SessionId, Store};

#[derive(Debug, Args)]
pub struct QuarantineArgs {
    /// The session's directory
    #[arg(long)]
    pub dir: PathBuf,
    /// The project as the plan describes it (JSON: protected, watched paths)
    #[arg(long)]
    pub project: String,
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
    let project: ProjectView = serde_json::from_str(&a.project).map_err(|e| {
        Error::Usage(format!(
            "--project: not a project view as `csbox spec` writes it: {e}"
        ))
    })?;
    become_owner(&a.dir)?;
    let bad = || {
        Error::Usage(format!(
            "--dir {}: not a session directory of a store",
            a.dir.display()
        ))
    };
    let id = a
        .dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(SessionId::parse)
        .ok_or_else(bad)?;
    let store = Store::new(a.dir.parent().ok_or_else(bad)?.to_path_buf());
    let mut s = store.enter(&id)?;
    // When the container started is not known here: the project's nested repositories
    // are not looked at (README: exported bundles).
    let moved = crate::session::quarantine::sweep_session(&mut s, &project, None);
    s.write_meta(crate::fsutil::Durability::Full)?;
    // The next `runc run` of the bundle binds `state/.claude.json` and the per-session
    // dirs from the host: what the container left there must not be a link. The user's
    // ~/.claude.json is not at hand here (the hook may run as root): a planted one is
    // replaced by an empty config.
    let seed = || Ok(b"{}\n".to_vec());
    let repaired = crate::session::layers::repair((&s).into(), crate::plan::SESSION_OWN, seed)?;
    Ok(if moved > 0 || repaired > 0 { 3 } else { 0 })
}
