//! `csbox rm ID…`: remove sessions, as gc removes them (never a running one: its lock is
//! taken at the moment of deletion; never one with a file system mounted inside).

use std::io::Write;

use clap::Args;

use crate::error::Error;
use crate::exit::{Result, EXIT_CSBOX, EXIT_USAGE};
use crate::gc::{remove_one, RmOutcome};
use crate::human::human_size;
use crate::paths::Paths;
use crate::session::Store;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  csbox rm 0193a1b2\n  csbox rm fix-login 0193a1c4 --dry-run\n  csbox rm $(csbox ls --json | jq -r '.[] | select(.state == \"exited\") | .id')\n\nA running session is refused (stop it first: csbox stop ID). Its conversations stay in ~/.claude if they were merged (csbox show ID says)."
)]
pub struct RmArgs {
    /// Session ids, unique id prefixes, or names
    #[arg(required = true, add = clap_complete::engine::ArgValueCandidates::new(super::complete::sessions))]
    pub ids: Vec<String>,
    /// Say what would be removed; remove nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize, Default)]
struct Report {
    dry_run: bool,
    removed: Vec<serde_json::Value>,
    kept_active: Vec<String>,
    errors: Vec<serde_json::Value>,
}

pub fn rm_cmd(a: RmArgs) -> Result<i32> {
    let paths = Paths::from_env()?;
    let store = Store::new(paths.sessions_dir.clone());
    // Every reference is resolved before anything is removed: a typo removes nothing.
    let ids = a
        .ids
        .iter()
        .map(|r| store.resolve(r))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut rep = Report {
        dry_run: a.dry_run,
        ..Default::default()
    };
    let mut lines = Vec::new();
    let verb = if a.dry_run { "would remove" } else { "removed" };
    for id in ids {
        match remove_one(&store, &id, a.dry_run) {
            Ok(RmOutcome::Removed(bytes)) => {
                lines.push(format!("{verb} session {id} ({})", human_size(bytes)));
                rep.removed
                    .push(serde_json::json!({"id": id.to_string(), "bytes": bytes}));
            }
            Ok(RmOutcome::Active) => {
                eprintln!(
                    "csbox: session {id} is running: not removed (stop it first: csbox stop {id})"
                );
                rep.kept_active.push(id.to_string());
            }
            Ok(RmOutcome::Gone) => lines.push(format!("session {id} was already gone")),
            Err(e) => {
                eprintln!("csbox: session {id}: {e}");
                rep.errors
                    .push(serde_json::json!({"id": id.to_string(), "error": e.to_string()}));
            }
        }
    }
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &rep).map_err(|e| Error::Other(e.to_string()))?;
        let _ = writeln!(out);
    } else {
        for l in lines {
            let _ = writeln!(out, "{l}");
        }
    }
    Ok(if !rep.errors.is_empty() {
        EXIT_CSBOX
    } else if !rep.kept_active.is_empty() {
        EXIT_USAGE
    } else {
        0
    })
}
