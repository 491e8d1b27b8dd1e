//! One file per subcommand: each turns parsed arguments into calls on the library.

pub mod ls;
pub mod profile;
pub mod run;
