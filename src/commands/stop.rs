//! `csbox stop ID…`: SIGTERM to a running session's command (forwarded by its
//! supervisor, as any signal sent to it), then SIGKILL of the whole sandbox after the
//! grace. Through the session's control socket, so a reused pid is never signalled.

use std::time::{Duration, Instant};

use clap::Args;

use crate::error::Error;
use crate::exit::Result;
use crate::paths::Paths;
use crate::session::lock::is_locked;
use crate::session::Store;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  csbox stop 0193a1b2\n  csbox stop fix-login --grace 30s\n  csbox stop 0193a1b2 --grace 0      SIGKILL at once"
)]
pub struct StopArgs {
    /// Session ids, unique id prefixes, or names (each must be running)
    #[arg(required = true, add = clap_complete::engine::ArgValueCandidates::new(super::complete::sessions))]
    pub ids: Vec<String>,
    /// How long the command has to exit after SIGTERM before everything in the sandbox is killed (10s, 500ms, 2m)
    #[arg(long, default_value = "10s", value_parser = parse_grace)]
    pub grace: Duration,
}

fn parse_grace(s: &str) -> std::result::Result<Duration, String> {
    if let Ok(n) = s.trim().parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("expected a duration like 10s, 500ms or 2m, not {s:?}"))
}

/// Wait until nobody holds the session's lock (its supervisor has recorded the end).
fn ended(store: &Store, id: &crate::session::SessionId, within: Duration) -> bool {
    let start = Instant::now();
    loop {
        match store.open_session_dir(id) {
            Ok(fd) if is_locked(&fd) => {}
            _ => return true,
        }
        if start.elapsed() >= within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn stop_cmd(a: StopArgs) -> Result<i32> {
    let paths = Paths::from_env()?;
    let store = Store::new(paths.sessions_dir.clone());
    let mut code = 0;
    for reference in &a.ids {
        let (id, client) = super::enter::connect(&store, reference, "stop")?;
        let killed = if a.grace.is_zero() {
            false
        } else {
            client.signal(false).map_err(|e| {
                Error::io(
                    "send SIGTERM through",
                    store.dir.join(id.as_str()).join("control.sock"),
                    e,
                )
            })?;
            !ended(&store, &id, a.grace)
        };
        if a.grace.is_zero() || killed {
            let client = super::enter::connect(&store, reference, "stop").map(|(_, c)| c);
            if let Ok(c) = client {
                c.signal(true).map_err(|e| {
                    Error::io(
                        "send SIGKILL through",
                        store.dir.join(id.as_str()).join("control.sock"),
                        e,
                    )
                })?;
            }
            if !ended(&store, &id, Duration::from_secs(10)) {
                eprintln!("csbox: session {id} is still running 10s after SIGKILL: its supervisor does not let go (see `csbox show {id}`)");
                code = 125;
                continue;
            }
        }
        let how = store
            .info(&id, false)
            .ok()
            .and_then(|i| i.meta)
            .and_then(|m| m.exit)
            .map(|e| e.describe())
            .unwrap_or_else(|| "ended".into());
        let after = if killed {
            format!(" (SIGKILL after {})", humantime::format_duration(a.grace))
        } else {
            String::new()
        };
        println!("stopped session {id}: {how}{after}");
    }
    Ok(code)
}
