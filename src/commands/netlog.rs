//! `csbox show ID --net`: what a session's network did, from its `net.jsonl` (one line
//! per connection the proxy saw). The file is the session's: read beneath its dir, no
//! link followed, a regular file of bounded size, every field printed escaped.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::error::{Error, Result};
use crate::human::printable;

/// More than the proxy writes (it stops at 8 MiB).
const CAP: u64 = 16 * 1024 * 1024;

#[derive(Default, serde::Serialize)]
struct Dest {
    allowed: u64,
    refused: u64,
    failed: u64,
    bytes_up: u64,
    bytes_down: u64,
    rule: String,
}

fn read_log(dir: &Path) -> Result<Option<String>> {
    let d = crate::fsutil::open_dir_nofollow(dir).map_err(|e| Error::io("open", dir, e))?;
    let f = match crate::fsutil::openat_nofollow(
        &d,
        "net.jsonl",
        OFlag::O_RDONLY | OFlag::O_NONBLOCK,
        Mode::empty(),
    ) {
        Ok(f) => std::fs::File::from(f),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(Error::io("open", dir.join("net.jsonl"), e)),
    };
    let md = f
        .metadata()
        .map_err(|e| Error::io("fstat", dir.join("net.jsonl"), e))?;
    if !md.is_file() {
        return Err(Error::Other(format!(
            "{}: not a regular file (planted by the session?)",
            dir.join("net.jsonl").display()
        )));
    }
    let mut buf = Vec::new();
    f.take(CAP)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("read", dir.join("net.jsonl"), e))?;
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

pub fn show(dir: &Path, json: bool) -> Result<i32> {
    let Some(text) = read_log(dir)? else {
        println!("no network log: the session had no proxied network, or made no connection");
        return Ok(0);
    };
    let mut by: BTreeMap<String, Dest> = BTreeMap::new();
    let mut bad = 0;
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            bad += 1;
            continue;
        };
        let host = printable(v["host"].as_str().unwrap_or("?"));
        let key = format!("{host}:{}", v["port"].as_u64().unwrap_or(0));
        let d = by.entry(key).or_default();
        match v["decision"].as_str() {
            Some("allowed") => d.allowed += 1,
            Some("refused") => d.refused += 1,
            _ => d.failed += 1,
        }
        d.bytes_up += v["bytes_up"].as_u64().unwrap_or(0);
        d.bytes_down += v["bytes_down"].as_u64().unwrap_or(0);
        d.rule = printable(v["rule"].as_str().unwrap_or_default());
    }
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &by).map_err(|e| Error::Other(e.to_string()))?;
        writeln!(out).ok();
        return Ok(0);
    }
    writeln!(
        out,
        "{:<40} {:>7} {:>7} {:>6} {:>10} {:>10}  RULE",
        "DESTINATION", "ALLOWED", "REFUSED", "FAILED", "UP", "DOWN"
    )
    .ok();
    for (k, d) in &by {
        writeln!(
            out,
            "{:<40} {:>7} {:>7} {:>6} {:>10} {:>10}  {}",
            k,
            d.allowed,
            d.refused,
            d.failed,
            crate::human::human_size(d.bytes_up),
            crate::human::human_size(d.bytes_down),
            d.rule
        )
        .ok();
    }
    if bad > 0 {
        writeln!(out, "({bad} line(s) of net.jsonl were not JSON)").ok();
    }
    Ok(0)
}
