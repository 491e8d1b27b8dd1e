//! What a launch needs to exist before a sandbox is built: the mount points in the real
//! `~/.claude`, and new sessions with their seeded `.claude.json`.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::{LiveSession, Metadata, Store};
use crate::error::{Error, Result};
use crate::fsutil::Durability;
use crate::paths::Paths;

/// The real ~/.claude.json seeded into a new session is read at most this big.
const CLAUDE_JSON_LIMIT: u64 = 64 << 20;

/// Make sure the mount points a plan needs exist in the real config: CLAUDE_ROOT itself,
/// `.credentials.json` (the shared login: a login inside any session must reach the
/// others, so the file has to exist to be bound), `~/.claude.json` (bound over by the
/// session's copy), and the `~/.claude/sessions` link to the store.
pub fn prepare_claude_root(paths: &Paths, store: &Store) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    crate::fsutil::refuse_non_dir(&paths.claude_root, "CLAUDE_ROOT (your Claude config dir)")?;
    if !paths.claude_root.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&paths.claude_root)
            .map_err(|e| Error::io("create", &paths.claude_root, e))?;
    }
    // The store itself is made by `Store::create` (a re-entered session's store exists).
    ensure_file(&paths.claude_root.join(".credentials.json"), b"{}\n")?;
    ensure_file(&paths.claude_json, b"{}\n")?;
    let link = paths.legacy_sessions_link();
    if link.symlink_metadata().is_err() {
        if let Err(e) = std::os::unix::fs::symlink(&store.dir, &link) {
            crate::debug!("could not create {}: {e}", link.display());
        }
    }
    Ok(())
}

fn ensure_file(p: &Path, content: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
    {
        Ok(mut f) => f.write_all(content).map_err(|e| Error::io("write", p, e)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io("create", p, e)),
    }
}

/// What a new session's `.claude.json` starts as: the user's own, so onboarding and trust
/// answers carry over.
pub fn claude_json_seed(paths: &Paths) -> Result<Vec<u8>> {
    use std::io::Read;
    let p = &paths.claude_json;
    match File::open(p) {
        Ok(f) => {
            let mut buf = Vec::new();
            f.take(CLAUDE_JSON_LIMIT)
                .read_to_end(&mut buf)
                .map_err(|e| Error::io("read", p, e))?;
            Ok(buf)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(b"{}\n".to_vec()),
        Err(e) => Err(Error::io("read", p, e)),
    }
}

/// A new session described by `meta`, its `.claude.json` seeded from the user's own.
/// [`prepare_claude_root`] must have run.
pub fn new_session(
    paths: &Paths,
    store: &Store,
    meta: Metadata,
    durability: Durability,
) -> Result<LiveSession> {
    store.create(meta, Some(&claude_json_seed(paths)?), durability)
}
