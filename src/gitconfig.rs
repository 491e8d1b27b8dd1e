//! git's config syntax, as csbox reads it: to find what a repository's config names for
//! git to run or read (resolve), and to tell a config `git init` or `git clone` wrote
//! from one that steers git (quarantine). csbox never runs git on a project: git would
//! obey its config.
//!
//! A small reader: sections are `[name]` or `[name "sub"]` (a key may follow on the same
//! line), keys and section names are case-insensitive, values may be quoted, `#` and `;`
//! start comments. What it cannot read is counted, so a caller can refuse to trust it.

/// One `key = value` of a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The section's name, lowercase (`core`, `remote`).
    pub section: String,
    /// The subsection as written (`origin` of `[remote "origin"]`).
    pub sub: Option<String>,
    /// The key, lowercase.
    pub key: String,
    /// The value, unquoted, comments cut.
    pub value: String,
}

#[derive(Debug, Default)]
pub struct Config {
    pub entries: Vec<Entry>,
    /// Lines that are none of a section, an entry, a comment or blank (a bare boolean
    /// key, a continuation, a byte-order mark).
    pub unread: usize,
}

pub fn parse(text: &str) -> Config {
    let mut out = Config::default();
    let (mut section, mut sub) = (String::new(), None);
    for raw in text.lines() {
        let mut line = raw.trim();
        if let Some(rest) = line.strip_prefix('[') {
            let Some(end) = rest.find(']') else {
                out.unread += 1;
                continue;
            };
            let head = &rest[..end];
            let (name, s) = match head.split_once(['"', ' ']) {
                Some((n, s)) => (n, Some(s.trim().trim_matches('"').to_string())),
                None => (head, None),
            };
            section = name.trim().to_ascii_lowercase();
            sub = s;
            line = rest[end + 1..].trim();
        }
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            out.unread += 1;
            continue;
        };
        let value = value.split(['#', ';']).next().unwrap_or("").trim();
        out.entries.push(Entry {
            section: section.clone(),
            sub: sub.clone(),
            key: key.trim().to_ascii_lowercase(),
            value: value.trim_matches('"').to_string(),
        });
    }
    out
}

/// What `git init`, `git clone` and `git submodule` write into a repository's config,
/// and the identity a script sets before it commits (`git config user.email`): nothing
/// there runs a command or points git at other files.
const PLAIN: &[(&str, &str)] = &[
    ("core", "repositoryformatversion"),
    ("core", "filemode"),
    ("core", "bare"),
    ("core", "logallrefupdates"),
    ("core", "ignorecase"),
    ("core", "precomposeunicode"),
    ("core", "symlinks"),
    ("core", "worktree"),
    ("remote", "url"),
    ("remote", "fetch"),
    ("branch", "remote"),
    ("branch", "merge"),
    ("submodule", "url"),
    ("submodule", "active"),
    ("init", "defaultbranch"),
    ("extensions", "objectformat"),
    ("user", "name"),
    ("user", "email"),
];

/// Whether a config holds only what git itself writes (see [`PLAIN`]), with no URL
/// through a transport that runs a command (`ext::`).
pub fn is_plain(text: &str) -> bool {
    let c = parse(text);
    c.unread == 0
        && c.entries.iter().all(|e| {
            PLAIN.contains(&(e.section.as_str(), e.key.as_str()))
                && !(e.key == "url" && e.value.contains("::"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_git_init_writes_is_plain_and_what_steers_git_is_not() {
        let init = "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n\tlogallrefupdates = true\n\
[remote \"origin\"]\n\turl = https://example.com/r.git\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n[branch \"main\"]\n\tremote = origin\n\tmerge = refs/heads/main\n\
[user]\n\tname = t\n\temail = t@t\n";
        assert!(is_plain(init));
        for evil in [
            "[core]\n\tfsmonitor = \"id > /tmp/x; false\"\n",
            "[core] hooksPath = /tmp/h\n",
            "[include]\n\tpath = ../x\n",
            "[remote \"o\"]\n\turl = ext::sh -c id\n",
            "[core.x]\n\tbare = false\n",
            "\u{feff}[core]\n\tbare = false\n",
            "[core]\n\tfsmonitor\n",
        ] {
            assert!(!is_plain(evil), "{evil:?}");
        }
        let c = parse("[includeIf \"gitdir:~/w/\"]\n  Path = \"x.inc\" # mine\n[Core]HooksPath=h");
        assert_eq!(
            c.entries[0],
            Entry {
                section: "includeif".into(),
                sub: Some("gitdir:~/w/".into()),
                key: "path".into(),
                value: "x.inc".into()
            }
        );
        assert_eq!(
            (
                c.entries[1].section.as_str(),
                c.entries[1].key.as_str(),
                c.entries[1].value.as_str()
            ),
            ("core", "hookspath", "h")
        );
    }
}
