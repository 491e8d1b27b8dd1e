//! Claude Code's project key keeps only ASCII letters and digits of a path (`~/p7.x` and
//! `~/p7_x` are both `-home-u-p7-x`), so two projects can share `projects/<key>/`: its
//! conversations, and one `memory/` that Claude Code puts into the prompt of every
//! `claude` in either (red-team 7, A7-8). Transcripts say where they ran (their lines'
//! `cwd`, judged in [`super::tracked`]); the memory does not, so it merges only when no
//! other project is known to have the session's key: none in the host's `.claude.json`
//! `projects` map, none in the `cwd` of the host's transcripts under that key.

use std::io::{BufRead, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;

use super::state::open_dir_at;
use crate::human::printable;
use crate::session::slug::{slug, slug_matches};

/// `.claude.json` is read this far (Claude Code's own grows with every project).
const JSON_CAP: u64 = 64 << 20;
/// Of the host's transcripts under the key: this many, each up to this far, for a `cwd`.
const TRANSCRIPTS: usize = 2000;
const HEAD: u64 = 1 << 20;

/// Another project than `cwd` whose key is `key`, if the host's `.claude.json` files
/// (`jsons`; the one in `~/.claude` is read beneath `root`) or transcripts name one.
pub fn other_project(root: &OwnedFd, jsons: &[&Path], key: &str, cwd: &Path) -> Option<String> {
    let other = |p: &str| {
        let p = Path::new(p);
        p.is_absolute() && !p.starts_with(cwd) && slug_matches(&slug(p), key)
    };
    let mut texts: Vec<Vec<u8>> = jsons
        .iter()
        .filter_map(|p| {
            let mut buf = Vec::new();
            std::fs::File::open(p)
                .ok()?
                .take(JSON_CAP)
                .read_to_end(&mut buf)
                .ok()?;
            Some(buf)
        })
        .collect();
    texts.extend(crate::fsutil::read_small_at(root, ".claude.json", JSON_CAP).ok());
    for t in &texts {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(t) else {
            continue;
        };
        let projects = v.get("projects").and_then(|p| p.as_object());
        if let Some(p) = projects
            .into_iter()
            .flat_map(|p| p.keys())
            .find(|p| other(p))
        {
            return Some(printable(p));
        }
    }
    let projects = open_dir_at(root.as_raw_fd(), c"projects").ok()?;
    for dir in crate::fsutil::read_names(projects.as_raw_fd()).unwrap_or_default() {
        if !dir.to_str().is_ok_and(|d| slug_matches(d, key)) {
            continue;
        }
        let Ok(d) = open_dir_at(projects.as_raw_fd(), &dir) else {
            continue;
        };
        let names = crate::fsutil::read_names(d.as_raw_fd()).unwrap_or_default();
        for n in names
            .iter()
            .filter_map(|n| n.to_str().ok())
            .take(TRANSCRIPTS)
        {
            if !n.ends_with(".jsonl") {
                continue;
            }
            if let Some(c) = first_cwd(&d, n).filter(|c| other(c)) {
                return Some(printable(&c));
            }
        }
    }
    None
}

/// The `cwd` of the first line of the transcript `dir/name` that has one.
fn first_cwd(dir: &OwnedFd, name: &str) -> Option<String> {
    let fd = crate::fsutil::open_regular_at(dir, name, OFlag::O_RDONLY).ok()?;
    let r = std::io::BufReader::new(std::fs::File::from(fd).take(HEAD));
    for line in r.split(b'\n') {
        let line = line.ok()?;
        if !line.windows(5).any(|w| w == b"\"cwd\"") {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(c) = v.get("cwd").and_then(|c| c.as_str()) {
            return Some(c.to_string());
        }
    }
    None
}
