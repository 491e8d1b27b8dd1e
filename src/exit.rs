//! The one place that maps a failure to an exit code, and prints it as one line a user
//! can act on. Every module's error rolls up here (`#[from]`); only the commands layer
//! uses this type, so no module below it depends on the modules it names.
//!
//! Exit codes follow `env(1)` and docker: 0 success, 2 usage or bad input, 125 a csbox
//! failure, 126 the command is not executable, 127 it is not found, otherwise the
//! child's own code or 128+signal (`csbox run`), 124 a wall-clock limit.

use nix::errno::Errno;

pub use crate::error::{EXIT_CSBOX, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system, system-call or usage failure of any layer.
    #[error(transparent)]
    Base(#[from] crate::error::Error),
    /// A profile that cannot be read or parsed.
    #[error(transparent)]
    Profile(#[from] crate::profile::Error),
    /// The plan cannot be built from this profile, these flags and this directory.
    #[error(transparent)]
    Plan(#[from] crate::plan::Error),
    /// The sandbox could not be set up (the step, the call and the errno).
    #[error(transparent)]
    Setup(#[from] crate::sandbox::SetupError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn exit_code(&self) -> i32 {
        use crate::sandbox::SetupError;
        match self {
            Error::Base(e) => e.exit_code(),
            Error::Profile(_) | Error::Plan(_) => EXIT_USAGE,
            Error::Setup(SetupError::Exec { errno, .. }) if *errno == Errno::ENOENT => {
                EXIT_NOT_FOUND
            }
            Error::Setup(SetupError::Exec { .. }) => EXIT_NOT_EXECUTABLE,
            Error::Setup(_) => EXIT_CSBOX,
        }
    }
}

impl crate::error::Error {
    pub fn exit_code(&self) -> i32 {
        use crate::error::Error as E;
        match self {
            E::Usage(_) | E::BadSession { .. } => EXIT_USAGE,
            E::Exec { code, .. } => *code,
            E::Io { .. } | E::Sys { .. } | E::Other(_) => EXIT_CSBOX,
        }
    }
}

/// Print an error as one line on stderr and return its exit code.
pub fn report(err: &Error) -> i32 {
    eprintln!("csbox: {err}");
    err.exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error as Base;

    #[test]
    fn exit_codes_follow_env_and_docker() {
        assert_eq!(Base::Usage("x".into()).exit_code(), 2);
        assert_eq!(Base::BadSession { msg: "x".into() }.exit_code(), 2);
        assert_eq!(Base::Other("x".into()).exit_code(), 125);
        let e = Base::io(
            "open",
            "/x",
            std::io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert_eq!(e.exit_code(), 125);
        let setup = crate::sandbox::SetupError::Exec {
            cmd: "x".into(),
            errno: Errno::ENOENT,
        };
        assert_eq!(Error::from(setup).exit_code(), 127);
        let fork = crate::sandbox::SetupError::Fork {
            errno: Errno::EAGAIN,
        };
        assert_eq!(Error::from(fork).exit_code(), 125);
    }
}
