//! The terminal a session ran in, put back as csbox found it before csbox speaks again.
//! The command shares the caller's terminal (no setsid, so job control and the TUI
//! work), so it can leave it with `stty -echo` or a changed `intr`, or in SGR 8
//! (concealed text): csbox's own exit warnings ("this session created .envrc") would
//! then be invisible, and the shell broken.

use std::io::{IsTerminal, Write};

/// The terminal modes of stdin at the start, when stdin is a terminal.
pub struct Saved(Option<libc::termios>);

impl Saved {
    pub fn save() -> Saved {
        if !std::io::stdin().is_terminal() {
            return Saved(None);
        }
        let mut t = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: tcgetattr writes the struct on success; fd 0 is open.
        let ok = unsafe { libc::tcgetattr(0, t.as_mut_ptr()) } == 0;
        // SAFETY: written when ok.
        Saved(ok.then(|| unsafe { t.assume_init() }))
    }

    /// Put the modes back (only from the terminal's foreground process group: from the
    /// background, tcsetattr would stop csbox with SIGTTOU), then, when stderr is a
    /// terminal, reset its character attributes (`ESC[0m`) before csbox prints.
    pub fn restore(&self) {
        if let Some(t) = &self.0 {
            // SAFETY: plain calls on fd 0 with a termios tcgetattr filled.
            unsafe {
                if libc::tcgetpgrp(0) == libc::getpgrp() {
                    libc::tcsetattr(0, libc::TCSADRAIN, t);
                }
            }
        }
        if std::io::stderr().is_terminal() {
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(b"\x1b[0m");
            let _ = e.flush();
        }
    }
}
