//! Session ids: UUIDv7 in canonical lowercase form, so ids sort by creation time and a
//! directory name can be checked without touching the file system.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(String);

impl SessionId {
    pub fn new() -> Self {
        SessionId(uuid::Uuid::now_v7().hyphenated().to_string())
    }

    /// Accept exactly the canonical form (36 chars, lowercase hex, hyphens), nothing else:
    /// an id becomes a directory name, so `..`, `/` and alternative spellings are refused.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 36
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-')
        {
            return None;
        }
        let u = uuid::Uuid::parse_str(s).ok()?;
        (u.hyphenated().to_string() == s).then(|| SessionId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 8 characters.
    pub fn short(&self) -> &str {
        &self.0[..8]
    }

    /// The first `len` characters (at most the whole id).
    pub fn prefix(&self, len: usize) -> &str {
        &self.0[..len.min(self.0.len())]
    }

    /// Creation time encoded in a v7 id (None for other versions).
    pub fn created(&self) -> Option<SystemTime> {
        let u = uuid::Uuid::parse_str(&self.0).ok()?;
        let (secs, nanos) = u.get_timestamp()?.to_unix();
        Some(UNIX_EPOCH + Duration::new(secs, nanos))
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SessionId {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        SessionId::parse(&s).ok_or_else(|| format!("not a session id: {s:?}"))
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> String {
        id.0
    }
}

/// The id a plan names when no session will exist (`run --dry-run` of a new session,
/// `spec` without `--session`/`--new`): never a well-formed id, so it cannot be taken for one.
pub const PREVIEW_ID: &str = "PREVIEW";

/// The shortest prefix length of each id (in order) that no other id of `ids` shares,
/// git-style, and at least [`MIN_PREFIX`]. UUIDv7 ids begin with their creation time in
/// milliseconds, so sessions started within a minute share their first 8 characters.
pub fn unique_prefix_lens(ids: &[SessionId]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by(|&a, &b| ids[a].cmp(&ids[b]));
    let common = |a: &SessionId, b: &SessionId| {
        a.0.bytes()
            .zip(b.0.bytes())
            .take_while(|(x, y)| x == y)
            .count()
    };
    let mut lens = vec![MIN_PREFIX; ids.len()];
    for (k, &i) in order.iter().enumerate() {
        let mut need = 0;
        if k > 0 {
            need = need.max(common(&ids[order[k - 1]], &ids[i]) + 1);
        }
        if let Some(&next) = order.get(k + 1) {
            need = need.max(common(&ids[next], &ids[i]) + 1);
        }
        lens[i] = need.clamp(MIN_PREFIX, 36);
    }
    lens
}

/// `csbox ls` never shows fewer characters of an id than this.
pub const MIN_PREFIX: usize = 8;

/// Check a name given with `--name`: it is printed by `ls` and `show` and typed back as a
/// reference, so it must be one ([`validate_reference`]), not empty, without control
/// characters, and no longer than a file name.
pub fn validate_name(s: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::Usage(format!(
            "--name {s:?}: {why}; give a short label like \"fix-login\""
        )))
    };
    if s.trim().is_empty() {
        return bad("a name cannot be empty");
    }
    if s.chars().any(|c| c.is_control()) {
        return bad("a name cannot hold control characters (a newline, a tab, a terminal escape)");
    }
    if s.contains('/') || s.contains("..") {
        return bad("a name cannot hold '/' or '..'");
    }
    if s.len() > 255 {
        return bad("a name is at most 255 bytes");
    }
    if SessionId::parse(s).is_some() {
        return bad("a name cannot be a session id");
    }
    Ok(())
}

/// Check what a user typed as a session reference (`--session X`, `show X`) before it is
/// used anywhere near a path: an id, a unique id prefix, or a session name.
pub fn validate_reference(s: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::BadSession {
            msg: format!("invalid session id {s:?}: {why} (see `csbox ls` for ids)"),
        })
    };
    if s.is_empty() {
        return bad("it is empty");
    }
    if s.contains('/') {
        return bad("it contains '/'");
    }
    if s == "." || s == ".." || s.contains("..") {
        return bad("it contains '..'");
    }
    if s.contains('\0') || s.chars().any(char::is_control) {
        return bad("it contains control characters");
    }
    if s.len() > 255 {
        return bad("it is too long");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_canonical_and_sort_by_time() {
        let a = SessionId::new();
        std::thread::sleep(Duration::from_millis(2));
        let b = SessionId::new();
        assert!(a < b);
        assert_eq!(SessionId::parse(a.as_str()), Some(a.clone()));
        let age = SystemTime::now()
            .duration_since(a.created().unwrap())
            .unwrap();
        assert!(age < Duration::from_secs(5));
    }

    #[test]
    fn parse_refuses_anything_but_the_canonical_form() {
        let id = SessionId::new().to_string();
        for bad in [
            "..",
            "../x",
            "a/b",
            "",
            &id.to_uppercase(),
            &id.replace('-', ""),
            &format!("{{{id}}}"),
            &format!("{id}/"),
            &format!("../{}", &id[3..]),
        ] {
            assert!(SessionId::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn unique_prefixes_are_at_least_8_and_as_long_as_a_neighbour_needs() {
        let ids: Vec<SessionId> = [
            "0193a1b2-0000-7000-8000-000000000001",
            "0193a1b2-0000-7000-8000-000000000002",
            "0193a1b3-0000-7000-8000-000000000000",
            "0294ffff-0000-7000-8000-000000000000",
        ]
        .iter()
        .map(|s| SessionId::parse(s).unwrap())
        .collect();
        assert_eq!(unique_prefix_lens(&ids), vec![36, 36, 8, 8]);
        let two = [ids[2].clone(), ids[0].clone()];
        assert_eq!(unique_prefix_lens(&two), vec![8, 8]);
        let near: Vec<SessionId> = [
            "0193a1b2-0aaa-7000-8000-000000000000",
            "0193a1b2-0abb-7000-8000-000000000000",
        ]
        .iter()
        .map(|s| SessionId::parse(s).unwrap())
        .collect();
        assert_eq!(
            unique_prefix_lens(&near),
            vec![12, 12],
            "11 characters are shared"
        );
        assert!(unique_prefix_lens(&[]).is_empty());
    }

    #[test]
    fn names_must_be_printable_and_referable() {
        for bad in [
            "",
            "  ",
            "a\nb",
            "x\u{1b}[2J",
            "a/b",
            "..",
            &"n".repeat(256),
        ] {
            let e = validate_name(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
        assert!(validate_name(SessionId::new().as_str()).is_err());
        validate_name("fix-login").unwrap();
        validate_name("review #2 (ünï)").unwrap();
    }

    #[test]
    fn references_with_slash_or_dotdot_are_refused() {
        for bad in ["../x", "a/b", "..", ".", "x..y", "", "a\nb"] {
            let e = validate_reference(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
        validate_reference("0193a1b2").unwrap();
        validate_reference("my-feature").unwrap();
    }
}
