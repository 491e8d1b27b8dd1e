//! `csbox gc --install-timer | --uninstall-timer | --print-units`: a systemd user timer
//! that runs gc, sandboxed as a cleaner should be: it may write the session store and
//! nothing else, has no network and runs at idle priority.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};
use crate::fsutil::{atomic_write, Durability};
use crate::paths::{find_on_path, Paths};

pub const SERVICE: &str = "csbox-gc.service";
pub const TIMER: &str = "csbox-gc.timer";

/// The gc rules a timer's runs get, as `csbox gc --install-timer` was given them.
#[derive(Debug, Clone, Default)]
pub struct TimerRules {
    pub days: Option<u64>,
    pub empty: bool,
    pub orphaned: bool,
    pub crashed: bool,
    pub max_size: Option<String>,
    /// OnCalendar= (systemd.time(7)).
    pub calendar: String,
}

/// What to do with the timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Install,
    Uninstall,
    Print,
}

/// What the two units are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSpec {
    /// Absolute path of the csbox binary.
    pub exe: PathBuf,
    pub sessions_dir: PathBuf,
    /// The arguments after `csbox`, e.g. `gc --days 30`.
    pub args: Vec<String>,
    /// OnCalendar= (systemd.time(7)).
    pub calendar: String,
}

impl UnitSpec {
    /// The units for this command line: the gc rules given are passed on to the timer's
    /// runs, the binary is the one running now.
    pub fn from_rules(args: &TimerRules, paths: &Paths) -> Result<Self> {
        if let Some(s) = &args.max_size {
            super::select::parse_size(s)?;
        }
        let exe = std::env::current_exe()
            .map_err(|e| Error::io("find the running binary", "/proc/self/exe", e))?;
        let mut gc_args = vec!["gc".to_string()];
        if let Some(d) = args.days {
            gc_args.extend(["--days".into(), d.to_string()]);
        }
        if args.empty {
            gc_args.push("--empty".into());
        }
        if args.orphaned {
            gc_args.push("--orphaned".into());
        }
        if args.crashed {
            gc_args.push("--crashed".into());
        }
        if let Some(s) = &args.max_size {
            gc_args.extend(["--max-size".into(), s.clone()]);
        }
        let calendar = args.calendar.trim().to_string();
        if calendar.is_empty() || calendar.chars().any(char::is_control) {
            return Err(Error::Usage(format!(
                "invalid --calendar {:?}: give an OnCalendar= expression such as weekly or 'Sun 03:00'",
                args.calendar
            )));
        }
        Ok(UnitSpec {
            exe,
            sessions_dir: paths.sessions_dir.clone(),
            args: gc_args,
            calendar,
        })
    }

    pub fn service(&self) -> Result<String> {
        let mut exec = vec![quote(&path_str(&self.exe)?, true)];
        exec.extend(self.args.iter().map(|a| quote(a, true)));
        let store = path_str(&self.sessions_dir)?;
        Ok(format!(
            "# Written by `csbox gc --install-timer`; `csbox gc --uninstall-timer` removes it.
[Unit]
Description=Remove old, empty and orphaned csbox sessions (never an active one)

[Service]
Type=oneshot
ExecStart={exec}
Environment={env}
# A cleaner writes the session store and nothing else, and needs no network.
# `-`: the store may not exist yet; gc then has nothing to do.
ProtectSystem=strict
ReadWritePaths=-{store}
NoNewPrivileges=yes
PrivateNetwork=yes
Nice=19
IOSchedulingClass=idle
",
            exec = exec.join(" "),
            env = quote(&format!("SESSIONS_DIR={store}"), false),
            store = quote(&store, false),
        ))
    }

    pub fn timer(&self) -> String {
        format!(
            "# Written by `csbox gc --install-timer`; `csbox gc --uninstall-timer` removes it.
[Unit]
Description=Run csbox gc ({calendar})

[Timer]
OnCalendar={calendar}
# Catch up on a run missed while the machine was off; spread runs of many users.
Persistent=true
RandomizedDelaySec=1h

[Install]
WantedBy=timers.target
",
            calendar = self.calendar.replace('%', "%%"),
        )
    }
}

fn path_str(p: &Path) -> Result<String> {
    let s = p
        .to_str()
        .filter(|s| !s.chars().any(char::is_control))
        .ok_or_else(|| {
            Error::Usage(format!(
                "{} cannot be written into a systemd unit (not UTF-8, or control characters): use --print-units and edit by hand",
                p.display()
            ))
        })?;
    Ok(s.to_string())
}

/// One word of a unit file line: `%` is a specifier there, `$` (in ExecStart) a variable,
/// and whitespace splits words, so escape and quote as systemd.syntax(7) says.
fn quote(s: &str, exec: bool) -> String {
    let mut v = s.replace('%', "%%");
    if exec {
        v = v.replace('$', "$$");
    }
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:=,@%$".contains(c));
    if plain {
        return v;
    }
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

pub fn command(action: Action, args: &TimerRules, paths: &Paths) -> Result<i32> {
    let unit_dir = paths.config_home.join("systemd/user");
    if action == Action::Uninstall {
        return uninstall(&unit_dir, paths);
    }
    let spec = UnitSpec::from_rules(args, paths)?;
    let (service, timer) = (spec.service()?, spec.timer());
    if action == Action::Print {
        print!("### {SERVICE}\n{service}\n### {TIMER}\n{timer}");
        return Ok(0);
    }
    std::fs::create_dir_all(&unit_dir).map_err(|e| Error::io("create", &unit_dir, e))?;
    atomic_write(
        &unit_dir,
        SERVICE,
        service.as_bytes(),
        0o644,
        Durability::Full,
    )?;
    atomic_write(&unit_dir, TIMER, timer.as_bytes(), 0o644, Durability::Full)?;
    println!("wrote {}", unit_dir.join(SERVICE).display());
    println!("wrote {}", unit_dir.join(TIMER).display());
    systemctl_or_print(
        paths,
        &[&["daemon-reload"], &["enable", "--now", TIMER]],
        "to start the timer",
    )?;
    Ok(0)
}

fn uninstall(unit_dir: &Path, paths: &Paths) -> Result<i32> {
    let files = [unit_dir.join(TIMER), unit_dir.join(SERVICE)];
    if !files.iter().any(|f| f.symlink_metadata().is_ok()) {
        println!("no csbox gc timer is installed in {}", unit_dir.display());
        return Ok(0);
    }
    // Disable first, while the unit file still exists for systemctl to read.
    if let Err(e) = systemctl_or_print(paths, &[&["disable", "--now", TIMER]], "") {
        crate::warn!("{e}; removing the unit files anyway");
    }
    for f in &files {
        match std::fs::remove_file(f) {
            Ok(()) => println!("removed {}", f.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", f, e)),
        }
    }
    systemctl_or_print(paths, &[&["daemon-reload"]], "to forget the removed units")?;
    Ok(0)
}

/// Run `systemctl --user ARGS…` for each step when systemd runs this machine
/// (sd_booted(3): /run/systemd/system exists) and systemctl is on PATH; otherwise print
/// the commands for the user to run where systemd is.
fn systemctl_or_print(paths: &Paths, steps: &[&[&str]], why: &str) -> Result<()> {
    let systemctl = find_on_path("systemctl".as_ref(), paths.path_var.as_deref())
        .filter(|_| Path::new("/run/systemd/system").is_dir());
    let Some(systemctl) = systemctl else {
        if !why.is_empty() {
            println!("systemd is not running here; {why}, run:");
            for s in steps {
                println!("  systemctl --user {}", s.join(" "));
            }
        }
        return Ok(());
    };
    for s in steps {
        let out = Command::new(&systemctl)
            .arg("--user")
            .args(*s)
            .output()
            .map_err(|e| Error::io("run", &systemctl, e))?;
        if !out.status.success() {
            return Err(Error::Other(format!(
                "`systemctl --user {}` failed ({}): {} (is a systemd user session running? `loginctl enable-linger` keeps one)",
                s.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        println!("ran systemctl --user {}", s.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> UnitSpec {
        UnitSpec {
            exe: "/usr/bin/csbox".into(),
            sessions_dir: "/home/u/.local/share/csbox/sessions".into(),
            args: vec!["gc".into(), "--days".into(), "30".into()],
            calendar: "weekly".into(),
        }
    }

    #[test]
    fn service_is_a_sandboxed_oneshot_writing_only_the_store() {
        let s = spec().service().unwrap();
        for line in [
            "Type=oneshot",
            "ExecStart=/usr/bin/csbox gc --days 30",
            "Environment=SESSIONS_DIR=/home/u/.local/share/csbox/sessions",
            "ProtectSystem=strict",
            "ReadWritePaths=-/home/u/.local/share/csbox/sessions",
            "NoNewPrivileges=yes",
            "PrivateNetwork=yes",
            "Nice=19",
            "IOSchedulingClass=idle",
        ] {
            assert!(s.lines().any(|l| l == line), "missing {line:?} in\n{s}");
        }
    }

    #[test]
    fn timer_is_persistent_and_randomized() {
        let t = spec().timer();
        for line in [
            "OnCalendar=weekly",
            "Persistent=true",
            "RandomizedDelaySec=1h",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
        assert!(t.contains("WantedBy=timers.target"));
    }

    #[test]
    fn odd_paths_are_quoted_and_specifiers_escaped() {
        let mut sp = spec();
        sp.exe = "/opt/my tools/csbox".into();
        sp.sessions_dir = "/home/u/100%/\"s\"".into();
        let s = sp.service().unwrap();
        assert!(s.contains("ExecStart=\"/opt/my tools/csbox\" gc"), "{s}");
        assert!(
            s.contains("ReadWritePaths=-\"/home/u/100%%/\\\"s\\\"\""),
            "{s}"
        );
        assert!(
            s.contains("Environment=\"SESSIONS_DIR=/home/u/100%%/\\\"s\\\"\""),
            "{s}"
        );
        assert_eq!(quote("a$b", true), "a$$b");
        sp.sessions_dir = "/x\ny".into();
        assert_eq!(sp.service().unwrap_err().exit_code(), 2);
    }
}
