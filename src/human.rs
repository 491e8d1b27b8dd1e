//! Sizes and ages as people read them (`du -h`, `ps`), for every command that prints them.

use std::time::Duration;

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

/// Text from an untrusted place (a session record, a file name a session made) as it may
/// be printed: control characters (a terminal escape, a newline) and the bidirectional
/// overrides that reorder what a terminal shows (CVE-2021-42574) escaped as `\u{..}`.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A path from an untrusted place as it may be printed, and found again: valid UTF-8
/// as [`printable`] makes it, a backslash as `\\`, and every byte that is not UTF-8 as
/// `\xHH` (`x\xff` for the name `x` followed by the byte 0xff).
pub fn printable_path(p: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for chunk in p.as_os_str().as_bytes().utf8_chunks() {
        out.push_str(&printable(&chunk.valid().replace('\\', "\\\\")));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_paths_print_escaped_and_unambiguous() {
        use std::os::unix::ffi::OsStrExt;
        let p = std::path::Path::new(std::ffi::OsStr::from_bytes(b"/h/x\xff\\y\x1b[8m\xc3\xa9"));
        assert_eq!(printable_path(p), "/h/x\\xff\\\\y\\u{1b}[8m\u{e9}");
    }

    #[test]
    fn ages_and_sizes_read_like_du_and_ps() {
        assert_eq!(human_age(Duration::from_secs(5)), "5s");
        assert_eq!(human_age(Duration::from_secs(7200)), "2h");
        assert_eq!(human_age(Duration::from_secs(86400 * 9)), "9d");
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1536), "1.5K");
        assert_eq!(human_size(3 << 30), "3.0G");
    }

    #[test]
    fn control_characters_and_bidi_overrides_are_escaped() {
        assert_eq!(printable("a\u{1b}[2Jb\n"), "a\\u{1b}[2Jb\\u{a}");
        assert_eq!(printable("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(printable("ünï ok"), "ünï ok");
    }
}
