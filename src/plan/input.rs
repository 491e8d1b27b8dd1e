//! What a plan is built from, and why it cannot be.

use std::path::{Path, PathBuf};

use super::facts::Facts;
use super::model::StateMode;
use crate::paths::Paths;
use crate::profile::expand::PathError;
use crate::profile::Profile;

/// Why a plan cannot be built: each names the profile or flag, the path, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A hidden home needs a project directory below it.
    #[error("profile {profile:?} hides your home directory except the project dir, and the working directory is {} itself: cd into a project first", home.display())]
    WorkingDirIsHome { profile: String, home: PathBuf },
    /// The bound working directory would cover or reveal something it must not.
    #[error("profile {profile:?} binds the working directory {} into the sandbox{}, and it {} {what} ({}){why}: cd into a project first{}",
        cwd.display(), if *read_only { " read-only" } else { "" },
        if *holds { "holds" } else { "lies inside" }, dir.display(),
        if why.is_empty() { "" } else { " (edit csbox's own files outside any sandbox)" })]
    WorkingDirOverlaps {
        profile: String,
        cwd: PathBuf,
        read_only: bool,
        holds: bool,
        what: &'static str,
        dir: PathBuf,
        /// What a session could do with it, for what csbox keeps of its own.
        why: &'static str,
    },
    /// A path in a profile field or flag does not parse.
    #[error("{origin} {spec:?}: {why}")]
    BadPath {
        origin: String,
        spec: String,
        why: PathError,
    },
    /// A bind source does not exist.
    #[error("{origin} {spec:?}: the source {} does not exist; create it or fix the path", path.display())]
    MissingSource {
        origin: String,
        spec: String,
        path: PathBuf,
    },
    /// A destination csbox needs for itself, or of the wrong kind.
    #[error("{origin} {spec:?}: {} {why}", path.display())]
    BadDestination {
        origin: String,
        spec: String,
        path: PathBuf,
        why: &'static str,
    },
    /// A mount point outside the sandbox's own tmpfs does not exist.
    #[error("{origin} {spec:?}: the destination {} does not exist: create it first (csbox makes mount points only inside its own tmpfs, never in your real file system)", path.display())]
    MissingDestination {
        origin: String,
        spec: String,
        path: PathBuf,
    },
}

/// Paths the command line adds for one run, kept apart from the profile's so an error
/// can name the flag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub bind: Vec<String>,
    pub ro_bind: Vec<String>,
    pub hide: Vec<String>,
    pub unhide: Vec<String>,
}

/// What the plan is built from. Everything here is data; nothing is read from the system.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    pub paths: &'a Paths,
    pub session_id: &'a str,
    pub session_dir: &'a Path,
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    pub host_env: Vec<(String, String)>,
    pub uid: u32,
    pub gid: u32,
    pub state_mode: StateMode,
    pub profile: &'a Profile,
    pub overrides: &'a Overrides,
    pub exe: PathBuf,
    pub facts: &'a Facts,
    /// The terminal csbox runs in, if any (bound at /dev/console).
    pub tty: Option<PathBuf>,
    pub remove_on_exit: bool,
}

/// Host device nodes a sandbox's /dev holds.
pub const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

pub(super) fn profile_binds<'a>(
    profile: &'a Profile,
    overrides: &'a Overrides,
) -> impl Iterator<Item = (String, &'a str, bool)> + 'a {
    // A profile's entries name the profile's file, so a missing source says where to fix it.
    let field = |list: &'a [String], origin: String, ro: bool| {
        list.iter().map(move |s| (origin.clone(), s.as_str(), ro))
    };
    let in_profile = |f: &str| format!("profile {} field \"{f}\"", profile.source);
    field(&profile.bind, in_profile("bind"), false)
        .chain(field(&profile.ro_bind, in_profile("roBind"), true))
        .chain(field(&overrides.bind, "--bind".into(), false))
        .chain(field(&overrides.ro_bind, "--ro-bind".into(), true))
}
