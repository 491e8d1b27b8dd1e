//! `csbox ls` and `csbox show`.

use std::io::Write;
use std::time::{Duration, SystemTime};

use crate::cli::{LsArgs, ShowArgs};
use crate::error::{Error, Result};
use crate::paths::Paths;
use crate::session::meta::format_time;
use crate::session::{SessionInfo, Store};

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
    let store = Store::new(paths.sessions_dir);
    let id = store.resolve(&args.id)?;
    let info = store.info(&id, true)?;
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
    if let crate::session::State::Orphaned { reason } = &info.state {
        kv.push(("orphaned", reason.clone()));
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
    }
    for (k, v) in kv {
        let _ = writeln!(out, "{:<15} {v}", format!("{k}:"));
    }
    Ok(0)
}

pub fn human_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

pub fn human_size(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_sizes_read_like_du_and_ps() {
        assert_eq!(human_age(Duration::from_secs(5)), "5s");
        assert_eq!(human_age(Duration::from_secs(7200)), "2h");
        assert_eq!(human_age(Duration::from_secs(86400 * 9)), "9d");
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1536), "1.5K");
        assert_eq!(human_size(3 << 30), "3.0G");
    }
}
