//! `csbox merge ID`: merge a session's conversations into the real `~/.claude` now, for
//! one that crashed (its supervisor never got to it) or after a bound stopped a merge.
//! `csbox run` merges every session itself when it ends.

use std::io::Write;

use clap::Args;

use crate::error::Error;
use crate::exit::Result;
use crate::fsutil::Durability;
use crate::paths::Paths;
use crate::session::merge::{self, Request};
use crate::session::meta::MergeRecord;
use crate::session::{LiveSession, Store};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  csbox merge 0193a1b2            a crashed session's conversations into ~/.claude\n  csbox merge fix-login --json\n  csbox merge 0193a1b2 --profile default   what the default profile merges, whatever the session's was\n\nOnly new files are copied and files the session extended byte for byte replaced; anything else is kept beside as NAME.csbox-conflict-ID and reported. Merging again changes nothing."
)]
pub struct MergeArgs {
    /// Session id, unique id prefix, or name
    #[arg(add = clap_complete::engine::ArgValueCandidates::new(super::complete::sessions))]
    pub id: String,
    /// The profile whose claude.mergeBack says what merges [default: the session's own]
    #[arg(long, add = clap_complete::engine::ArgValueCandidates::new(super::complete::profiles))]
    pub profile: Option<String>,
    /// Print what was merged as JSON
    #[arg(long)]
    pub json: bool,
}

/// Merge `session` (whose lock the caller holds) into `claude_root`: the `items` of a
/// profile's `claude.mergeBack`, judging its file history by `protect`, the `protect`
/// list of the profile it ran with.
pub fn merge_live(
    paths: &Paths,
    session: &LiveSession,
    items: &[String],
    protect: &[String],
) -> crate::error::Result<MergeRecord> {
    crate::session::layers::prune_made_uppers(session.dir_fd());
    merge::merge(&Request {
        session_dir: session.dir_fd(),
        id: &session.id,
        created: session.meta.created,
        cwd: &session.meta.cwd,
        claude_root: &paths.claude_root,
        claude_json: &paths.claude_json,
        items,
        protect,
    })
}

/// The lines a person reads about a merge: one per conflict and per refusal.
pub fn details(rec: &MergeRecord) -> Vec<String> {
    let mut out: Vec<String> = rec
        .conflicts
        .iter()
        .map(|e| format!("conflict: ~/.claude/{}: {}", e.path, e.detail))
        .collect();
    out.extend(
        rec.refused
            .iter()
            .map(|e| format!("not merged: {}: {}", e.path, e.detail)),
    );
    if rec.unlisted > 0 {
        out.push(format!("and {} more (csbox show ID --json)", rec.unlisted));
    }
    out
}

pub fn merge_cmd(a: MergeArgs) -> Result<i32> {
    let paths = Paths::from_env()?;
    let store = Store::new(paths.sessions_dir.clone());
    let id = store.resolve(&a.id)?;
    if store.info(&id, false)?.is_active() {
        return Err(Error::BadSession {
            msg: format!(
                "session {id} is running: it merges its conversations itself when it ends"
            ),
        }
        .into());
    }
    let mut s = store.enter(&id)?;
    let reference = a.profile.clone().unwrap_or_else(|| s.meta.profile.clone());
    let profile = crate::profile::load(&reference, &paths.user_profiles_dir())?;
    let items = profile.claude.merge_back.clone();
    let mut out = std::io::stdout().lock();
    if items.is_empty() {
        let _ = writeln!(
            out,
            "profile {:?} merges nothing back (claude.mergeBack is []): nothing was done; `--profile default` merges what the default profile does",
            profile.name
        );
        return Ok(0);
    }
    // What the session's project protected is its own profile's list, whatever
    // `--profile` says merges; one whose profile is gone is judged by the one given.
    let protect = match &a.profile {
        Some(p) if *p != s.meta.profile => {
            crate::profile::load(&s.meta.profile, &paths.user_profiles_dir())
                .map(|own| own.protect)
                .unwrap_or_else(|_| profile.protect.clone())
        }
        _ => profile.protect.clone(),
    };
    let rec = merge_live(&paths, &s, &items, &protect)?;
    s.meta.merge = Some(rec.clone());
    s.write_meta(Durability::Rename)?;
    crate::fault::point("merge:recorded");
    if a.json {
        serde_json::to_writer_pretty(&mut out, &rec).map_err(|e| Error::Other(e.to_string()))?;
        let _ = writeln!(out);
        return Ok(0);
    }
    let _ = writeln!(
        out,
        "merged session {} into {}: {}",
        s.id,
        paths.claude_root.display(),
        rec.summary()
    );
    for l in details(&rec) {
        let _ = writeln!(out, "  {l}");
    }
    Ok(0)
}
