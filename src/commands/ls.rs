//! `csbox ls` and `csbox show`.

use std::io::Write;
use std::time::SystemTime;

use clap::Args;

use crate::error::Error;
use crate::exit::Result;
use crate::human::{human_age, human_size};
use crate::paths::Paths;
use crate::session::meta::format_time;
use crate::session::{SessionInfo, Store};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  csbox ls\n  csbox ls --active\n  csbox ls --json | jq '.[].id'\n  csbox ls --size"
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
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  csbox show 0193a1b2\n  csbox show fix-login --json")]
pub struct ShowArgs {
    /// Session id, unique id prefix, or name
    pub id: String,
    /// Print the record as JSON
    #[arg(long)]
    pub json: bool,
    /// Summarise the session's network log (net.jsonl): each destination, allowed and refused counts, bytes
    #[arg(long)]
    pub net: bool,
}

pub fn ls(args: LsArgs) -> Result<i32> {
    let paths = Paths::from_env()?;
    let store = Store::new(paths.sessions_dir);
    let mut sessions = store.list(args.size)?;
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
    let rows: Vec<[String; 6]> = sessions
        .iter()
        .map(|s| {
            let m = s.meta.as_ref();
            [
                s.id.short().to_string(),
                m.and_then(|m| m.name.clone()).unwrap_or_else(|| "-".into()),
                s.state_word(),
                human_age(now.duration_since(s.created).unwrap_or_default()),
                s.size_bytes.map(human_size).unwrap_or_else(|| "-".into()),
                m.map(|m| m.command.join(" ")).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = ["ID", "NAME", "STATE", "AGE", "SIZE", "COMMAND"];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: [&str; 6]| {
        let mut s = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i == 5 {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s
    };
    let _ = writeln!(out, "{}", line(header));
    for r in &rows {
        let _ = writeln!(out, "{}", line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]));
    }
    Ok(0)
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
        ("dir", info.dir.display().to_string()),
        ("size", info.size_bytes.map(human_size).unwrap_or_default()),
        (
            "active link",
            if info.active_link { "yes" } else { "no" }.into(),
        ),
    ];
    if let Some(reason) = info.reason() {
        kv.push(("why", reason.to_string()));
    }
    if let Some(m) = &info.meta {
        kv.push(("name", m.name.clone().unwrap_or_else(|| "-".into())));
        kv.push(("profile", m.profile.clone()));
        kv.push(("command", m.command.join(" ")));
        kv.push(("cwd", m.cwd.display().to_string()));
        kv.push(("created", format_time(m.created)));
        kv.push((
            "started",
            m.started.map(format_time).unwrap_or_else(|| "-".into()),
        ));
        kv.push((
            "ended",
            m.ended.map(format_time).unwrap_or_else(|| "-".into()),
        ));
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
        kv.push(("boot id", m.boot_id.clone().unwrap_or_else(|| "-".into())));
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
        let _ = writeln!(out, "{:<15} {v}", format!("{k}:"));
    }
    Ok(0)
}
