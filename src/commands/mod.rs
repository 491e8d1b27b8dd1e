//! One file per subcommand: each owns its clap arguments (the only code that sees clap)
//! and turns them into plain requests for the library.

pub mod complete;
pub mod completions;
pub mod diff;
pub mod doctor;
pub mod enter;
pub mod gc;
pub mod lifecycle;
pub mod ls;
pub mod man;
pub mod merge;
pub mod netlog;
pub mod profile;
pub mod quarantine;
pub mod rm;
pub mod run;
pub mod sandbox;
pub mod spec;
pub mod stop;
pub mod terminal;
pub mod update;
