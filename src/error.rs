//! The error every layer below the commands returns: what failed (the operation and
//! path, or the system call and its arguments), its errno, and what to do. It names no
//! other module of csbox, so any module may use it; typed errors of single modules
//! (`plan::Error`, `sandbox::SetupError`, `profile::Error`) and this one roll up in
//! `exit`, which maps each to an exit code.
//!
//! Exit codes follow `env(1)` and docker: 0 success, 2 usage or bad input, 125 a csbox
//! failure, 126 the command is not executable, 127 it is not found, otherwise the
//! child's own code or 128+signal.

use std::io;
use std::path::PathBuf;

pub const EXIT_OK: i32 = 0;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_CSBOX: i32 = 125;
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
pub const EXIT_NOT_FOUND: i32 = 127;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user asked for something malformed (bad id, bad flag value, bad profile).
    #[error("{0}")]
    Usage(String),

    /// A session id that is not a valid or existing session.
    #[error("{msg}")]
    BadSession { msg: String },

    /// A file-system operation on a named path failed.
    #[error("{op} {path}: {source}{}", hint_suffix(.hint))]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
        hint: Option<String>,
    },

    /// A system call failed; `what` names the call and its arguments.
    #[error("{what} => {errno}{}", hint_suffix(.hint))]
    Sys {
        what: String,
        errno: nix::errno::Errno,
        hint: Option<String>,
    },

    /// The command to run inside could not be started.
    #[error("{msg}")]
    Exec { msg: String, code: i32 },

    /// Anything else csbox itself failed at, already phrased for the user.
    #[error("{0}")]
    Other(String),
}

fn hint_suffix(hint: &Option<String>) -> String {
    match hint {
        Some(h) => format!(" ({h})"),
        None => String::new(),
    }
}

impl Error {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
            hint: None,
        }
    }

    pub fn sys(what: impl Into<String>, errno: nix::errno::Errno) -> Self {
        Error::Sys {
            what: what.into(),
            errno,
            hint: None,
        }
    }

    /// Attach (or replace) the "what to do" part of the message.
    pub fn hint(mut self, h: impl Into<String>) -> Self {
        match &mut self {
            Error::Io { hint, .. } | Error::Sys { hint, .. } => *hint = Some(h.into()),
            _ => {}
        }
        self
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<nix::errno::Errno> for Error {
    fn from(e: nix::errno::Errno) -> Self {
        Error::sys("system call", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_error_names_op_path_and_hint() {
        let e = Error::io("open", "/a/b", io::Error::from_raw_os_error(libc::EACCES))
            .hint("check the permissions of /a");
        let s = e.to_string();
        assert!(s.starts_with("open /a/b: Permission denied"), "{s}");
        assert!(s.ends_with("(check the permissions of /a)"), "{s}");
    }

    #[test]
    fn sys_error_names_call_and_errno() {
        let e = Error::sys(
            "mount(\"/home\", \"/home\", MS_BIND)",
            nix::errno::Errno::EPERM,
        );
        assert_eq!(
            e.to_string(),
            "mount(\"/home\", \"/home\", MS_BIND) => EPERM: Operation not permitted"
        );
    }
}
