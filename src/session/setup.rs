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

/// What a new session's `.claude.json` starts as: the user's own, so the login,
/// onboarding and settings carry over, with its `projects` map cut to the entries of the
/// session's working directory and the directories above it (its trust answer, allowed
/// tools, MCP servers): another project's MCP servers and their tokens are not the
/// session's to read (red-team 3, A3-17). A file that is not a JSON object is not copied
/// (Claude Code could not read it either).
pub fn claude_json_seed(paths: &Paths, cwd: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let p = &paths.claude_json;
    let mut buf = Vec::new();
    match File::open(p) {
        Ok(f) => {
            f.take(CLAUDE_JSON_LIMIT)
                .read_to_end(&mut buf)
                .map_err(|e| Error::io("read", p, e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(b"{}\n".to_vec()),
        Err(e) => return Err(Error::io("read", p, e)),
    }
    let Ok(serde_json::Value::Object(mut top)) = serde_json::from_slice::<serde_json::Value>(&buf)
    else {
        return Ok(b"{}\n".to_vec());
    };
    if let Some(serde_json::Value::Object(projects)) = top.get_mut("projects") {
        projects.retain(|k, _| cwd.starts_with(Path::new(k)) && Path::new(k).is_absolute());
    }
    let mut out = serde_json::to_vec_pretty(&serde_json::Value::Object(top))
        .unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    Ok(out)
}

/// A new session described by `meta`, its `.claude.json` seeded from the user's own.
/// [`prepare_claude_root`] must have run.
pub fn new_session(
    paths: &Paths,
    store: &Store,
    meta: Metadata,
    durability: Durability,
) -> Result<LiveSession> {
    let seed = claude_json_seed(paths, &meta.cwd)?;
    store.create(meta, Some(&seed), durability)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_keeps_this_projects_entries_and_drops_the_others() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("h");
        std::fs::create_dir_all(&home).unwrap();
        let env = crate::paths::EnvInput {
            home: Some(home.clone().into()),
            cwd: home.clone(),
            ..Default::default()
        };
        let paths = Paths::resolve(&env).unwrap();
        std::fs::write(
            &paths.claude_json,
            r#"{"oauthAccount":{"emailAddress":"u@x"},"mcpServers":{"g":{"command":"m"}},
               "projects":{"/w/p":{"hasTrustDialogAccepted":true},"/w":{"allowedTools":[]},
                           "/w/other":{"mcpServers":{"db":{"env":{"TOKEN":"s3cret"}}}},"/w/p2":{},"rel":{}}}"#,
        )
        .unwrap();
        let seed = claude_json_seed(&paths, Path::new("/w/p/sub")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&seed).unwrap();
        let keys: Vec<&str> = v["projects"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["/w", "/w/p"]);
        assert_eq!(v["oauthAccount"]["emailAddress"], "u@x");
        assert_eq!(
            v["mcpServers"]["g"]["command"], "m",
            "the user's own MCP servers stay"
        );
        assert!(!String::from_utf8_lossy(&seed).contains("s3cret"));
        std::fs::write(&paths.claude_json, "not json").unwrap();
        assert_eq!(
            claude_json_seed(&paths, Path::new("/w/p")).unwrap(),
            b"{}\n"
        );
    }
}
