//! tmux as a real terminal for a test: a detached pane running a command as a test
//! user, read back with `capture-pane`.

use std::process::Command;
use std::time::{Duration, Instant};

use super::{As, TestEnv};

/// Run `cmd` in a tmux pane of the given size as `user`; returns the tmux socket name.
pub struct Tmux {
    socket: String,
    user: As,
}

impl Tmux {
    pub fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]).env("TMUX_TMPDIR", "/var/tmp");
        if As::me() != self.user {
            use std::os::unix::process::CommandExt;
            c.uid(self.user.uid).gid(self.user.gid);
        }
        c
    }
    pub fn start(env: &TestEnv, name: &str, cmd: &str) -> Tmux {
        let t = Tmux {
            socket: format!("csbox-{name}-{}-{}", std::process::id(), env.user.uid),
            user: env.user,
        };
        let st = t
            .cmd()
            .args(["new-session", "-d", "-x", "100", "-y", "30", "-s", "t"])
            .arg(format!(
                "cd {} && env HOME={} CSBOX_NO_UPDATE=1 {cmd}; sleep 30",
                super::sh_quote(&env.home),
                super::sh_quote(&env.home)
            ))
            .status()
            .unwrap();
        assert!(st.success());
        t
    }
    pub fn screen(&self) -> String {
        self.capture(&[])
    }
    /// The screen with its character attributes as escape sequences (`capture-pane -e`).
    pub fn screen_with_attributes(&self) -> String {
        self.capture(&["-e"])
    }
    fn capture(&self, extra: &[&str]) -> String {
        String::from_utf8_lossy(
            &self
                .cmd()
                .args(["capture-pane", "-p", "-t", "t"])
                .args(extra)
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned()
    }
    pub fn wait_for(&self, needle: &str) -> String {
        let t = Instant::now();
        loop {
            let s = self.screen();
            if s.contains(needle) {
                return s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "waited for {needle:?}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().args(["kill-server"]).status();
    }
}
