//! Reading a profile: find it (a user profile, a built-in, or a path), read it bounded
//! (a regular file of at most 1 MiB, never blocking on a FIFO), check every field's
//! shape against [`SCHEMA`] so each error names the field, then deserialise, validate
//! what JSON cannot say (paths, names, limits), and follow `extends`.
//!
//! Every error has one form: `profile FILE:LINE:COL: field "X": what is wrong; what to do`.

use std::path::{Path, PathBuf};

use super::expand;
use super::model::{Profile, ProfileFile, BUILTINS};
pub use super::schema::MAX_TIMEOUT_SECS;
use super::schema::{check_object, kind_of, SCHEMA};

/// A profile file is read at most this big.
pub const MAX_PROFILE_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field with a wrong value, located in its file.
    #[error("profile {file}:{line}:{col}: field \"{field}\": {problem}")]
    Field {
        file: String,
        line: usize,
        col: usize,
        field: String,
        problem: String,
    },
    /// The text is not a JSON object.
    #[error("profile {file}:{line}:{col}: {problem}")]
    Syntax {
        file: String,
        line: usize,
        col: usize,
        problem: String,
    },
    /// The file cannot be used as a profile at all.
    #[error("profile {}: {problem}", path.display())]
    Unreadable { path: PathBuf, problem: String },
    #[error("unknown profile {name:?}: built-ins are {}, user profiles live in {} (see `csbox profile list`)", builtin_names(), dir.display())]
    Unknown { name: String, dir: PathBuf },
}

fn builtin_names() -> String {
    BUILTINS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where a profile's text came from, for messages.
#[derive(Debug, Clone)]
struct Source {
    label: String,
    /// Directory that relative `extends` paths are taken from.
    dir: Option<PathBuf>,
    text: String,
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Line and column (1-based) of `"key"` for a dotted field path (`claude.readOnly`: the
/// key `readOnly` after the key `claude`), or 1:1.
fn locate(text: &str, field: &str) -> (usize, usize) {
    let mut from = 0;
    let mut at = None;
    for key in field.split('.') {
        let needle = format!("\"{key}\"");
        match text[from..].find(&needle) {
            Some(p) => {
                at = Some(from + p);
                from += p + needle.len();
            }
            None => break,
        }
    }
    let Some(pos) = at else { return (1, 1) };
    let before = &text[..pos];
    let line = before.matches('\n').count() + 1;
    let col = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    (line, col)
}

fn field_error(src: &Source, field: &str, problem: impl Into<String>) -> Error {
    let (line, col) = locate(&src.text, field);
    Error::Field {
        file: src.label.clone(),
        line,
        col,
        field: field.to_string(),
        problem: problem.into(),
    }
}

/// Read a profile file: a regular file (a FIFO or a device is refused without blocking),
/// at most [`MAX_PROFILE_BYTES`], UTF-8.
fn read_file(path: &Path) -> Result<String, Error> {
    let bad = |problem: String| Error::Unreadable {
        path: path.to_path_buf(),
        problem,
    };
    use std::io::ErrorKind as K;
    let bytes = crate::fsutil::read_regular(path, MAX_PROFILE_BYTES).map_err(|e| {
        bad(match e.kind() {
            K::NotFound => "no such file; give a profile name (see `csbox profile list`) or the path of a .json file".into(),
            K::IsADirectory => "is a directory; expected a .json file".into(),
            K::InvalidInput => format!("is {e}; expected a .json file"),
            K::InvalidData => format!("is {e}; a profile is at most {MAX_PROFILE_BYTES} bytes"),
            _ => format!("cannot read it: {e}"),
        })
    })?;
    String::from_utf8(bytes).map_err(|e| {
        bad(format!(
            "is not UTF-8 text (invalid byte at offset {}); save it as UTF-8",
            e.utf8_error().valid_up_to()
        ))
    })
}

fn load_source(
    reference: &str,
    user_dir: &Path,
    relative_to: Option<&Path>,
) -> Result<(String, Source), Error> {
    if is_name(reference) {
        let user = user_dir.join(format!("{reference}.json"));
        if std::fs::symlink_metadata(&user).is_ok() {
            let text = read_file(&user)?;
            let source = Source {
                label: user.display().to_string(),
                dir: user.parent().map(Path::to_path_buf),
                text,
            };
            return Ok((reference.into(), source));
        }
        if let Some((_, text)) = BUILTINS.iter().find(|(n, _)| *n == reference) {
            let source = Source {
                label: format!("built-in {reference}"),
                dir: None,
                text: text.to_string(),
            };
            return Ok((reference.into(), source));
        }
        return Err(Error::Unknown {
            name: reference.into(),
            dir: user_dir.to_path_buf(),
        });
    }
    let path = match relative_to {
        Some(dir) if Path::new(reference).is_relative() => dir.join(reference),
        _ => PathBuf::from(reference),
    };
    let text = read_file(&path)?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| reference.into());
    let source = Source {
        label: path.display().to_string(),
        dir: path.parent().map(Path::to_path_buf),
        text,
    };
    Ok((name, source))
}

fn parse(src: &Source) -> Result<ProfileFile, Error> {
    // Editors on some systems start UTF-8 files with a byte-order mark; JSON has none.
    let text = src.text.strip_prefix('\u{feff}').unwrap_or(&src.text);
    if text.trim().is_empty() {
        return Err(Error::Syntax {
            file: src.label.clone(),
            line: 1,
            col: 1,
            problem: "the file is empty; expected a JSON object like {\"extends\": \"default\"}"
                .into(),
        });
    }
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::Syntax {
        file: src.label.clone(),
        line: e.line(),
        col: e.column(),
        problem: format!(
            "{}; fix the JSON",
            e.to_string()
                .replace(&format!(" at line {} column {}", e.line(), e.column()), "")
        ),
    })?;
    let serde_json::Value::Object(m) = &value else {
        return Err(Error::Syntax {
            file: src.label.clone(),
            line: 1,
            col: 1,
            problem: format!(
                "{} is not a profile; expected a JSON object",
                kind_of(&value)
            ),
        });
    };
    check_object("", m, SCHEMA).map_err(|(field, problem)| field_error(src, &field, problem))?;
    let f: ProfileFile = serde_json::from_value(value).map_err(|e| Error::Syntax {
        file: src.label.clone(),
        line: 1,
        col: 1,
        problem: e.to_string(),
    })?;
    validate(&f, src)?;
    Ok(f)
}

/// Checks the shape cannot express: names, paths, limits. Each names the field.
fn validate(f: &ProfileFile, src: &Source) -> Result<(), Error> {
    let err = |field: &str, problem: String| Err(field_error(src, field, problem));
    if let Some(c) = &f.claude {
        let lists = [
            ("claude.readOnly", &c.read_only),
            ("claude.readWrite", &c.read_write),
            ("claude.private", &c.private),
        ];
        for (field, list) in lists {
            for e in list.iter().flatten() {
                if e.is_empty()
                    || e.contains('/')
                    || e == "."
                    || e == ".."
                    || e == "sessions"
                    || e.contains('\0')
                {
                    return err(field, format!("{e:?} is not allowed; expected an entry name directly inside ~/.claude, like \"skills\" (not \"sessions\")"));
                }
            }
        }
        let mut seen: Vec<&str> = Vec::new();
        for e in c.merge_back.iter().flatten() {
            if !super::model::MERGE_BACK.contains(&e.as_str()) {
                return err(
                    "claude.mergeBack",
                    format!(
                        "{e:?} is not something csbox merges back; expected some of {} ([] merges nothing)",
                        super::model::MERGE_BACK.iter().map(|m| format!("\"{m}\"")).collect::<Vec<_>>().join(", ")
                    ),
                );
            }
            if seen.contains(&e.as_str()) {
                return err("claude.mergeBack", format!("{e:?} is listed twice"));
            }
            seen.push(e);
        }
        for e in c.read_only.iter().flatten() {
            if c.read_write.iter().flatten().any(|x| x == e) {
                return err(
                    "claude.readWrite",
                    format!("{e:?} is also in readOnly; put each entry in one list"),
                );
            }
        }
    }
    for (field, list) in [("bind", &f.bind), ("roBind", &f.ro_bind)] {
        for b in list.iter().flatten() {
            if let Err(why) = expand::split_bind(b) {
                return err(field, format!("{b:?}: {why}"));
            }
        }
    }
    for (field, list) in [
        ("tmpfs", &f.tmpfs),
        ("hide", &f.hide),
        ("unhide", &f.unhide),
    ] {
        for p in list.iter().flatten() {
            if let Err(why) = expand::check_path_syntax(p) {
                return err(field, format!("{p:?}: {why}"));
            }
            if expand::is_root(p) {
                return err(
                    field,
                    format!("{p:?} would cover the whole file system; give a directory below /"),
                );
            }
        }
    }
    for (k, v) in f.rlimits.iter().flatten() {
        if let Err(why) = v.check(k) {
            return err(&format!("rlimits.{k}"), why);
        }
    }
    if let Some(e) = &f.env {
        let names = e
            .allow
            .iter()
            .flatten()
            .chain(e.set.iter().flat_map(|m| m.keys()));
        for k in names {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return err("env", format!("{k:?} is not a variable name"));
            }
        }
    }
    if let Some(super::model::NetworkFile::Policy(p)) = &f.network {
        for (field, list) in [("network.allow", &p.allow), ("network.deny", &p.deny)] {
            for r in list.iter().flatten() {
                if let Err(why) = super::network::check_rule(r) {
                    return err(field, why);
                }
            }
        }
    }
    for s in f.sockets.iter().flatten() {
        if !matches!(s.as_str(), "ssh-agent" | "gpg-agent") && !s.starts_with('/') {
            return err(
                "sockets",
                format!(
                    "{s:?}: expected \"ssh-agent\", \"gpg-agent\" or an absolute path to a socket"
                ),
            );
        }
    }
    for p in f.protect.iter().flatten() {
        if !protect_entry_ok(p) {
            return err(
                "protect",
                format!("{p:?}: expected a path inside the project, like \".git/hooks\", or a name at its top with one `*`, like \"*.code-workspace\""),
            );
        }
    }
    if f.extends.as_deref() == Some("") {
        return err("extends", "empty; give a profile name or path".into());
    }
    Ok(())
}

/// A `protect` entry: a path inside the project, or a name at its top with one `*`.
fn protect_entry_ok(p: &str) -> bool {
    let pattern_ok = !p.contains('*') || (p.matches('*').count() == 1 && !p.contains('/'));
    !p.is_empty() && !p.starts_with('/') && !p.split('/').any(|c| c == "..") && pattern_ok
}

/// Load and resolve a profile by name or path, following `extends`.
pub fn load(reference: &str, user_dir: &Path) -> Result<Profile, Error> {
    let (name, src) = load_source(reference, user_dir, None)?;
    let mut chain = vec![(src.clone(), parse(&src)?)];
    let mut seen = vec![src.label.clone()];
    while let Some(parent) = chain.last().and_then(|(_, f)| f.extends.clone()) {
        let child_src = chain.last().expect("the chain is never empty").0.clone();
        let (_, psrc) = load_source(&parent, user_dir, child_src.dir.as_deref()).map_err(|e| {
            field_error(
                &child_src,
                "extends",
                format!("{parent:?} cannot be loaded: {e}"),
            )
        })?;
        if seen.contains(&psrc.label) {
            let cycle = seen.join(" → ");
            return Err(field_error(
                &child_src,
                "extends",
                format!("{parent:?} extends itself through {cycle}; break the cycle"),
            ));
        }
        if chain.len() >= 16 {
            return Err(field_error(
                &child_src,
                "extends",
                "more than 16 levels; use a shorter chain",
            ));
        }
        seen.push(psrc.label.clone());
        let pf = parse(&psrc)?;
        chain.push((psrc, pf));
    }
    let mut p = Profile::base(&name, &src.label);
    for (_, f) in chain.into_iter().rev() {
        p.apply(f);
    }
    Ok(p)
}

/// Built-in and user profile names with their descriptions.
pub fn list(user_dir: &Path) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = BUILTINS
        .iter()
        .map(|(n, _)| {
            let d = load(n, Path::new("/nonexistent"))
                .map(|p| p.description)
                .unwrap_or_default();
            (n.to_string(), "built-in".to_string(), d)
        })
        .collect();
    if let Ok(rd) = std::fs::read_dir(user_dir) {
        let mut users: Vec<_> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".json")
                    .map(str::to_string)
            })
            .filter(|n| is_name(n))
            .collect();
        users.sort();
        for n in users {
            let d = match load(&n, user_dir) {
                Ok(p) => p.description,
                Err(e) => format!("INVALID: {e}"),
            };
            out.retain(|(b, _, _)| *b != n);
            out.push((n, format!("user ({})", user_dir.display()), d));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::schema::Shape;
    use super::*;

    fn src(text: &str) -> Source {
        Source {
            label: "t.json".into(),
            dir: None,
            text: text.into(),
        }
    }

    fn problem(text: &str) -> String {
        parse(&src(text)).unwrap_err().to_string()
    }

    #[test]
    fn locate_finds_line_and_column_of_nested_fields() {
        assert_eq!(locate("{\n  \"a\": 1,\n  \"bind\": 2\n}", "bind"), (3, 3));
        let t = "{\"readOnly\": 1,\n \"claude\": {\n    \"readOnly\": [\"/\"]}}";
        assert_eq!(locate(t, "claude.readOnly"), (3, 5));
    }

    #[test]
    fn each_wrong_shape_names_the_field_and_what_is_expected() {
        for (text, words) in [
            (
                "{\"network\": 5}",
                &[
                    "field \"network\"",
                    "5 (a number)",
                    "\"proxy\", \"none\", \"host\"",
                ][..],
            ),
            (
                "{\"claude\": []}",
                &["field \"claude\"", "a list is not an object", "readOnly"],
            ),
            (
                "{\"netwrok\": \"none\"}",
                &["field \"netwrok\"", "did you mean \"network\""],
            ),
            (
                "{\"hide\": \"~/.ssh\"}",
                &["field \"hide\"", "list of strings"],
            ),
            (
                "{\"timeoutSecs\": 9223372036854775807}",
                &["field \"timeoutSecs\"", "out of range", "31536000"],
            ),
            (
                "{\"timeoutSecs\": -5}",
                &["field \"timeoutSecs\"", "out of range"],
            ),
            (
                "{\"rlimits\": {\"nofile\": \"lots\"}}",
                &["field \"rlimits.nofile\"", "unlimited"],
            ),
            (
                "{\"env\": {\"set\": {\"A\": 1}}}",
                &["field \"env.set.A\"", "not a string"],
            ),
            ("[1]", &["t.json:1:1", "a list is not a profile"]),
        ] {
            let p = problem(text);
            for w in words {
                assert!(p.contains(w), "{text}: {w:?} missing in {p}");
            }
        }
    }

    #[test]
    fn a_byte_order_mark_is_accepted() {
        assert!(parse(&src("\u{feff}{\"network\": \"none\"}")).is_ok());
    }

    #[test]
    fn every_choice_in_the_schema_deserialises() {
        fn walk(prefix: &str, fields: &[(&str, Shape)], out: &mut Vec<(String, &'static str)>) {
            for (name, shape) in fields {
                match shape {
                    Shape::Choice(list) => {
                        out.extend(list.iter().map(|c| (format!("{prefix}{name}"), *c)))
                    }
                    Shape::Object(inner) => walk(&format!("{prefix}{name}."), inner, out),
                    _ => {}
                }
            }
        }
        let mut choices = Vec::new();
        walk("", SCHEMA, &mut choices);
        for (field, choice) in choices {
            let json = match field.split_once('.') {
                Some((a, b)) => format!("{{\"{a}\": {{\"{b}\": \"{choice}\"}}}}"),
                None => format!("{{\"{field}\": \"{choice}\"}}"),
            };
            assert!(parse(&src(&json)).is_ok(), "{json}");
        }
    }

    #[test]
    fn fifos_directories_and_huge_files_are_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("p.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read_file(&fifo).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = read_file(d.path()).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        let big = d.path().join("big.json");
        std::fs::write(&big, vec![b' '; MAX_PROFILE_BYTES as usize + 1]).unwrap();
        assert!(read_file(&big).unwrap_err().to_string().contains("at most"));
        let bin = d.path().join("bin.json");
        std::fs::write(&bin, b"{\"a\xff\": 1}").unwrap();
        assert!(read_file(&bin)
            .unwrap_err()
            .to_string()
            .contains("not UTF-8"));
        let e = read_file(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
