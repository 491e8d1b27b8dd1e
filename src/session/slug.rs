//! Claude Code's name for a project: the directory under `~/.claude/projects/` where it
//! files the conversations (and the auto-memory) of a working directory. `--resume` finds
//! a conversation by it, and merge-back merges only the session's own.

use std::path::Path;

/// Claude Code's project directory name for a working directory (its realpath): every
/// character but ASCII letters and digits becomes `-`, one per UTF-16 unit; a name over
/// 200 characters is cut there and gets `-` and a base-36 hash of the path (observed in
/// Claude Code 2.1.197, /work/notes/claude-code.md B.1).
pub fn slug(path: &Path) -> String {
    let s = path.to_string_lossy();
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else {
            out.extend(std::iter::repeat_n('-', c.len_utf16()));
        }
    }
    if out.len() <= 200 {
        return out;
    }
    // Java's String.hashCode over UTF-16 units, as a 32-bit int; then |h| in base 36.
    let h = s
        .encode_utf16()
        .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(u as i32));
    let mut n = (h as i64).unsigned_abs();
    let mut digits = Vec::new();
    loop {
        digits.push(std::char::from_digit((n % 36) as u32, 36).expect("a digit"));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    format!(
        "{}-{}",
        &out[..200],
        digits.iter().rev().collect::<String>()
    )
}

/// Does the project dir name `dir` belong to `slug` (long slugs match by their first 200
/// characters, as Claude Code reads them)?
pub fn slug_matches(dir: &str, slug: &str) -> bool {
    dir == slug || (slug.len() > 200 && dir.starts_with(&format!("{}-", &slug[..200])))
}

/// Whether `name` in `file-history/` or `todos/` (`<uuid>` or
/// `<uuid>-agent-<uuid>.json`) belongs to one of the conversations `own`.
pub fn is_own_conversation(own: &[String], name: &str) -> bool {
    own.iter().any(|u| {
        name == u
            || name
                .strip_prefix(u.as_str())
                .is_some_and(|r| r.starts_with('-'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_claude_codes_rule() {
        assert_eq!(slug(Path::new("/tmp/ccr/a.b_c-d")), "-tmp-ccr-a-b-c-d");
        assert_eq!(
            slug(Path::new("/tmp/ccr/.hidden/Upper")),
            "-tmp-ccr--hidden-Upper"
        );
        assert_eq!(slug(Path::new("/tmp/ccr/ünï")), "-tmp-ccr--n-");
        assert_eq!(
            slug(Path::new("/x/😀")),
            "-x---",
            "a character outside the BMP is two UTF-16 units"
        );
        let long = format!("/{}", "segment-11-long/".repeat(20));
        let s = slug(Path::new(&long));
        assert_eq!(s.len() > 200, true);
        assert!(s.starts_with("-segment-11-long-"));
        assert!(slug_matches(&s, &s));
        assert!(slug_matches(&format!("{}-zzz", &s[..200]), &s));
        assert!(!slug_matches("-tmp-x", "-tmp-y"));
    }
}
