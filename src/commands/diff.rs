//! `csbox diff ID [-- PATH…]`: what a session changed outside its project, in its home
//! and `~/.claude` layers (`docker diff` for a session).

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use crate::error::Error;
use crate::exit::Result;
use crate::human::human_size;
use crate::paths::{canonical_or_self, Paths};
use crate::session::diff::{diff, Change, Diff};
use crate::session::Store;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  csbox diff 0193a1b2\n  csbox diff fix-login -- ~/.bashrc ~/.config\n  csbox diff 0193a1b2 --json | jq '.entries[].path'\n\nA added, C changed, D deleted, R a directory replaced whole. The project's own files are not listed: they are written to the project itself. Names are printed escaped: a control character as \\u{..}, a byte that is not UTF-8 as \\xHH, a backslash as \\\\."
)]
pub struct DiffArgs {
    /// Session id, unique id prefix, or name
    #[arg(add = clap_complete::engine::ArgValueCandidates::new(super::complete::sessions))]
    pub id: String,
    /// Print the changes as JSON
    #[arg(long)]
    pub json: bool,
    /// Only changes at or below these paths
    #[arg(last = true, value_name = "PATH")]
    pub paths: Vec<String>,
}

/// The changes of one session, as `csbox diff` and `csbox show` count them.
pub fn session_diff(paths: &Paths, store: &Store, id: &crate::session::SessionId) -> Result<Diff> {
    let fd = store.open_session_dir(id)?;
    // csbox's own masks over hidden paths are no change of the session's.
    let masks = store
        .info(id, false)
        .ok()
        .and_then(|i| i.meta)
        .map(|m| m.masks)
        .unwrap_or_default();
    Ok(diff(
        &fd,
        &canonical_or_self(&paths.home),
        &canonical_or_self(&paths.claude_root),
        &masks,
    ))
}

pub fn diff_cmd(a: DiffArgs) -> Result<i32> {
    let paths = Paths::from_env()?;
    let store = Store::new(paths.sessions_dir.clone());
    let id = store.resolve(&a.id)?;
    let mut d = session_diff(&paths, &store, &id)?;
    if !a.paths.is_empty() {
        let cwd = std::env::current_dir().map_err(|e| Error::io("getcwd", ".", e))?;
        let wanted: Vec<PathBuf> = a
            .paths
            .iter()
            .map(|p| {
                crate::profile::expand::lexical(p, &paths.home, &cwd)
                    .map(|l| canonical_or_self(&l))
                    .map_err(|why| Error::Usage(format!("{p:?}: {why}")))
            })
            .collect::<std::result::Result<_, _>>()?;
        d.entries
            .retain(|e| wanted.iter().any(|w| e.path.starts_with(w)));
    }
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &d).map_err(|e| Error::Other(e.to_string()))?;
        let _ = writeln!(out);
        return Ok(0);
    }
    for e in &d.entries {
        let letter = match e.change {
            Change::Added => 'A',
            Change::Changed => 'C',
            Change::Deleted => 'D',
            Change::Replaced => 'R',
        };
        let size = match e.kind {
            crate::session::diff::Kind::File if e.change != Change::Deleted => {
                format!("  ({})", human_size(e.size))
            }
            _ if e.unreadable => {
                "  (unreadable: its mode keeps csbox out, what it holds is not listed)".into()
            }
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{letter} {}{size}",
            crate::human::printable_path(&e.path)
        );
    }
    if d.truncated {
        eprintln!(
            "csbox: diff: only the first {} changes are listed",
            crate::session::diff::MAX_CHANGES
        );
    }
    Ok(0)
}
