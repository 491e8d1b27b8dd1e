//! The plan: everything a sandbox is, as plain data. It is built by pure code ([`build`])
//! from the profile, the session and the facts `resolve` gathered about the host paths
//! involved, and it is the only truth for its three readers: the native launcher
//! (`sandbox/`) applies it, `csbox spec` (`oci`) translates it into an OCI runtime spec,
//! and `csbox run --dry-run` prints it. Neither reader decides anything the plan does not
//! say: mount flags, what goes in `/dev`, what hiding a path means, the errno of a refused
//! call, whether the home is hidden, are all fields here.
//!
//! `model` holds the types, `input` what a plan is built from, `build` the top of the
//! build, `view` what the sandbox shows of the home and the project, `protect` the
//! project's files that run code on the host later, `hide` what is hidden, `allow` what of
//! the host's `~/.claude` a session sees, `masks` the read-only mask layers above the
//! home's lower dir and below `~/.claude`'s session layer, `mounts` the
//! mount steps, `network` the sandbox's own network and its proxy, and `seccomp` the
//! refused system calls; `facts` what resolve found out about host paths.

mod allow;
mod build;
mod facts;
mod hide;
mod input;
mod masks;
mod model;
mod mounts;
mod network;
mod protect;
mod seccomp;
#[cfg(test)]
mod tests;
mod view;

pub use allow::REFERRING;
pub use build::{build, wanted_paths};
pub use facts::{
    ClaudeLower, Facts, GitLayout, HistoryCopy, HostLayout, PathFact, HISTORY_CAP,
    HISTORY_COPY_CAP, OWN_FILE_HISTORY_CAP, TODO_COPY_CAP, TOP_NAMES_CAP,
};
pub use input::{Error, Overrides, PlanInput, DEV_NODES};
pub use masks::{CLAUDE_BASE, CLAUDE_MASKS};
pub use model::*;
pub use mounts::{CACHES, CACHE_DIR, HOME_UPPER, HOME_WORK, SESSION_OWN};
pub use network::{elide_password, PROXY_ENV, PROXY_PORT};
pub use protect::{matches_any, matches_pattern, PROTECTED};
pub use seccomp::{
    rules as seccomp_rules, terminal_rules, DEFAULT_ENOSYS, DEFAULT_EPERM, STRICT_ENOSYS,
    STRICT_EPERM,
};
