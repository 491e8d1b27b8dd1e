//! The session store and its records. Code here runs outside the sandbox and treats the
//! contents of session directories as hostile.

pub mod control;
pub mod diff;
mod gitstate;
pub mod id;
pub mod info;
pub mod layers;
mod layout;
pub mod livewatch;
pub mod lock;
pub mod masks;
pub mod merge;
pub mod meta;
mod nested;
pub mod quarantine;
pub mod resume;
pub mod setup;
pub mod slug;
pub mod store;
mod whiteout;

pub use id::SessionId;
pub use info::{SessionInfo, State};
pub use meta::{ExitStatus, Metadata};
pub use store::{LiveSession, Store};
