//! The terminal a session ran in, put back as csbox found it before csbox speaks again.
//! The command shares the caller's terminal (no setsid, so job control and the TUI
//! work), so it can leave it with `stty -echo` or a changed `intr`, or in SGR 8
//! (concealed text): csbox's own exit warnings ("this session created .envrc") would
//! then be invisible, and the shell broken.

use std::io::{IsTerminal, Write};

/// What a session's output can leave set that hides or garbles csbox's warnings after it
/// (red-team 7, A7-10), undone without clearing the screen or moving the cursor: the
/// scroll region (`ESC[r` homes the cursor, so inside a save/restore of it), the
/// character attributes, the line-drawing charset (`ESC(B`, shift-in), a hidden cursor,
/// the default colours changed by OSC 10/11/12 (OSC 110/111/112; ignored where not
/// known) and mouse reporting. Not a full reset (`ESC c` clears the screen, DECSTR turns
/// autowrap off on some terminals).
const RESET: &[u8] = b"\x1b7\x1b[r\x1b8\x1b[0m\x1b(B\x0f\x1b[?25h\x1b]110\x07\x1b]111\x07\x1b]112\x07\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l";

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
    /// terminal, undo what the session's output can leave set before csbox prints
    /// ([`RESET`]).
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
            let _ = e.write_all(RESET);
            let _ = e.flush();
        }
    }
}
