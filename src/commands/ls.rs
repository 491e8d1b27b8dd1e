//! `csbox ls` and `csbox show`.

use std::io::Write;
use std::time::SystemTime;

use clap::Args;

use crate::error::Error;
use crate::exit::Result;
use crate::human::printable;
use crate::human::{human_age, human_size};
use crate::paths::Paths;
use crate::session::id::{unique_prefix_lens, MIN_PREFIX};
use crate::session::meta::format_time;
use crate::session::{SessionId, SessionInfo, Store};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  csbox ls\n  csbox ls --active\n  csbox ls --json | jq '.[].id'\n  csbox ls --size --wide\n\nIDs are shown as the shortest prefix (at least 8 characters) that no other session shares; every command takes it. STATE is running, exited N, killed by SIGNAL, crashed, created, orphaned, unreadable or corrupt; FLAGS says empty (nothing but what csbox made), merged, conflicts (merge-back kept files beside) or unmerged (a bound stopped it: csbox merge ID). Names and commands are printed with control characters escaped."
)]
pub struct LsArgs {
    /// Print all records as one JSON array
    #[arg(long)]
    pub json: bool,
    /// Only active sessions
    #[arg(long)]
    pub active: bool,
    /// Compute each session's size on disk (walks every file)
    #[arg(long)]
    pub size: bool,
    /// Show the whole command (default: cut to the terminal's width)
    #[arg(long)]
    pub wide: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  csbox show 0193a1b2\n  csbox show fix-login --json")]
pub struct ShowArgs {
    /// Session id, unique id prefix, or name
    #[arg(add = clap_complete::engine::ArgValueCandidates::new(super::complete::sessions))]
    pub id: String,
    /// Print the record as JSON
    #[arg(long)]
    pub json: bool,
    /// Summarise the session's network log (net.jsonl): each destination, allowed and refused counts, bytes
    #[arg(long)]
    pub net: bool,
}

/// The width `ls` fits its lines to: the terminal's, else `$COLUMNS`; None (no
/// truncation) when neither says.
fn width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ fills a winsize; an error leaves it zeroed.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    if unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0 {
        return Some(ws.ws_col as usize);
    }
    std::env::var("COLUMNS")
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|w: &usize| *w > 0)
}

/// `s` cut to `max` characters, the last one an ellipsis when something was cut.
fn fit(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

pub fn ls(args: LsArgs) -> Result<i32> {
    let paths = Paths::from_env()?;
    let store = Store::new(paths.sessions_dir);
    let mut sessions = store.list(args.size)?;
    // Unique in the whole store, so an id copied from `ls --active` works anywhere.
    let ids: Vec<SessionId> = sessions.iter().map(|s| s.id.clone()).collect();
    let lens = unique_prefix_lens(&ids);
    let mut prefix: std::collections::HashMap<SessionId, usize> =
        ids.into_iter().zip(lens).collect();
    if args.active {
        sessions.retain(SessionInfo::is_active);
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &sessions)
            .map_err(|e| Error::Other(e.to_string()))?;
        writeln!(out).ok();
        return Ok(0);
    }
    let now = SystemTime::now();
    let rows: Vec<[String; 7]> = sessions
        .iter()
        .map(|s| {
            let m = s.meta.as_ref();
            let flags = s.flags();
            [
                s.id.prefix(prefix.remove(&s.id).unwrap_or(MIN_PREFIX))
                    .to_string(),
                m.and_then(|m| m.name.as_deref())
                    .map(printable)
                    .unwrap_or_else(|| "-".into()),
                s.state_word(),
                human_age(now.duration_since(s.created).unwrap_or_default()),
                s.size_bytes.map(human_size).unwrap_or_else(|| "-".into()),
                if flags.is_empty() {
                    "-".into()
                } else {
                    flags.join(",")
                },
                m.map(|m| printable(&m.command.join(" ")))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = ["ID", "NAME", "STATE", "AGE", "SIZE", "FLAGS", "COMMAND"];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let before_command: usize = widths[..6].iter().map(|w| w + 2).sum();
    let command_room = match (args.wide, width()) {
        (false, Some(w)) => Some(w.saturating_sub(before_command).max(12)),
        _ => None,
    };
    let line = |cols: &[String; 7]| {
        let mut s = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i == 6 {
                s.push_str(&command_room.map(|r| fit(c, r)).unwrap_or_else(|| c.clone()));
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s
    };
    let _ = writeln!(out, "{}", line(&header.map(String::from)).trim_end());
    for r in &rows {
        let _ = writeln!(out, "{}", line(r));
    }
    Ok(0)
}

/// `show`'s lines on the session's last merge-back.
fn merge_lines(
    kv: &mut Vec<(&'static str, String)>,
    merge: Option<&crate::session::meta::MergeRecord>,
    root: &std::path::Path,
) {
    match merge {
        Some(rec) => {
            kv.push((
                "merged",
                format!(
                    "{}: {} into {}",
                    format_time(rec.at),
                    rec.summary(),
                    root.display()
                ),
            ));
            for l in super::merge::details(rec) {
                kv.push(("", l));
            }
        }
        None => kv.push((
            "merged",
            "never (it merges when it ends; `csbox merge ID` for a crashed one)".into(),
        )),
    }
}

pub fn show(args: ShowArgs) -> Result<i32> {
    let paths = Paths::from_env()?;
    let store = Store::new(paths.sessions_dir.clone());
    let id = store.resolve(&args.id)?;
    let info = store.info(&id, true)?;
    if args.net {
        return Ok(super::netlog::show(&info.dir, args.json)?);
    }
    let changes = super::diff::session_diff(&paths, &store, &id).ok();
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &info).map_err(|e| Error::Other(e.to_string()))?;
        writeln!(out).ok();
        return Ok(0);
    }
    let mut kv = vec![
        ("id", info.id.to_string()),
        ("state", info.state_word()),
        ("flags", info.flags().join(",")),
        ("dir", printable(&info.dir.display().to_string())),
        ("size", info.size_bytes.map(human_size).unwrap_or_default()),
        (
            "active link",
            if info.active_link { "yes" } else { "no" }.into(),
        ),
    ];
    if let Some(reason) = info.reason() {
        kv.push(("why", printable(reason)));
    }
    if let Some(m) = &info.meta {
        let time = |t: Option<SystemTime>| t.map(format_time).unwrap_or_else(|| "-".into());
        kv.push((
            "name",
            m.name
                .as_deref()
                .map(printable)
                .unwrap_or_else(|| "-".into()),
        ));
        kv.push(("profile", printable(&m.profile)));
        kv.push(("command", printable(&m.command.join(" "))));
        kv.push(("cwd", printable(&m.cwd.display().to_string())));
        kv.push(("created", format_time(m.created)));
        kv.push(("started", time(m.started)));
        kv.push(("ended", time(m.ended)));
        kv.push((
            "exit",
            m.exit
                .as_ref()
                .map(|e| e.describe())
                .unwrap_or_else(|| "-".into()),
        ));
        kv.push((
            "supervisor pid",
            m.supervisor_pid
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
        ));
        kv.push((
            "boot id",
            m.boot_id
                .as_deref()
                .map(printable)
                .unwrap_or_else(|| "-".into()),
        ));
        kv.push(("runs", m.runs.to_string()));
        for p in &m.created_protected {
            let moved = m.quarantined.iter().find(|q| &q.path == p);
            let at = match moved.and_then(|q| q.moved_to.as_ref()) {
                Some(to) => format!("moved to {}", crate::human::printable_path(to)),
                None => "left in place".into(),
            };
            kv.push((
                "made in project",
                format!(
                    "{} ({at}; runs code on the host later: review it)",
                    crate::human::printable_path(p)
                ),
            ));
        }
        merge_lines(&mut kv, m.merge.as_ref(), &paths.claude_root);
    }
    if let Some(d) = changes {
        let more = if d.truncated { "+" } else { "" };
        kv.push((
            "changes",
            format!(
                "{}{more} outside the project (csbox diff {})",
                d.entries.len(),
                info.id.short()
            ),
        ));
    }
    for (k, v) in kv {
        let key = if k.is_empty() {
            String::new()
        } else {
            format!("{k}:")
        };
        let _ = writeln!(out, "{key:<15} {v}");
    }
    Ok(0)
}
