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

    /// The first 8 characters, shown by `csbox ls`.
    pub fn short(&self) -> &str {
        &self.0[..8]
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
    fn references_with_slash_or_dotdot_are_refused() {
        for bad in ["../x", "a/b", "..", ".", "x..y", "", "a\nb"] {
            let e = validate_reference(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
        validate_reference("0193a1b2").unwrap();
        validate_reference("my-feature").unwrap();
    }
}
