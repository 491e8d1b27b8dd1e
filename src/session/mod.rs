//! The session store and its records. Code here runs outside the sandbox and treats the
//! contents of session directories as hostile.

pub mod control;
pub mod diff;
pub mod id;
pub mod info;
pub mod layers;
mod layout;
pub mod lock;
pub mod masks;
pub mod merge;
pub mod meta;
pub mod livewatch;
mod nested;
pub mod quarantine;
pub mod resume;
pub mod setup;
pub mod slug;
pub mod store;
mod whiteout;

pub use id::SessionId;
pub use meta::{ExitStatus, Metadata};
pub use info::{SessionInfo, State};
pub use store::{LiveSession, Store};
