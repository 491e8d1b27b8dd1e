//! Claude Code transcript lines and file-history fixtures, as the CLI writes them, for
//! tests that plant conversations in a session's layer (or in `~/.claude` directly).

use std::path::Path;

use serde_json::{json, Value};

use super::TestEnv;

/// The message a conversation's file history is restored to (`--rewind-files MSG`).
pub const MSG: &str = "11111111-0000-4000-8000-000000000001";

/// A `file-history-snapshot` line, as Claude Code writes one: `trackedFileBackups` maps
/// each tracked path to its entry.
pub fn tracked_line(tracked: Vec<(&str, Value)>) -> String {
    let tracked: serde_json::Map<String, Value> = tracked
        .into_iter()
        .map(|(p, e)| (p.to_string(), e))
        .collect();
    json!({"type": "file-history-snapshot", "messageId": MSG, "isSnapshotUpdate": false,
        "snapshot": {"messageId": MSG, "trackedFileBackups": tracked,
            "timestamp": "2026-12-02T01:00:00.000Z"}})
    .to_string()
}

pub fn entry(backup: &str) -> Value {
    json!({"backupFileName": backup, "version": 1, "backupTime": "2026-12-02T01:00:00.000Z"})
}

/// A snapshot line tracking `files` (path, backup name).
pub fn snapshot_line(files: &[(&str, &str)]) -> String {
    tracked_line(files.iter().map(|(p, b)| (*p, entry(b))).collect())
}

/// A `file-history-delta` line (Claude Code 2.1.3xx): one tracked path and its backup.
pub fn delta_line(path: &str, backup: &str) -> String {
    json!({"type": "file-history-delta", "messageId": MSG, "snapshotMessageId": MSG,
        "trackingPath": path, "backup": entry(backup), "timestamp": "2026-12-02T01:00:00.000Z"})
    .to_string()
}

/// A user line of conversation `conv`, run in `cwd`.
pub fn user_line(conv: &str, cwd: &Path, text: &str) -> String {
    json!({"parentUuid": null, "type": "user", "sessionId": conv, "cwd": cwd,
        "message": {"role": "user", "content": text}, "uuid": MSG,
        "timestamp": "2026-12-02T01:00:00.000Z"})
    .to_string()
}

/// Write `files` (path below `~/.claude`, content) into `~/fx/` of the env's home; the
/// script a session runs to put them into its layer, as a hostile command would.
pub fn plant(env: &TestEnv, files: &[(String, String)]) -> String {
    let fx = env.home.join("fx");
    let _ = std::fs::remove_dir_all(&fx);
    for (p, content) in files {
        let p = fx.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    env.chown_all(&env.home);
    "cp -R ~/fx/. ~/.claude/".into()
}
