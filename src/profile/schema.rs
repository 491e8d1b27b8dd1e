//! The shape of a profile file: every field and the JSON it takes, checked before
//! deserialising so that each error names the field and says what was expected.

use super::model::RLIMITS;

/// A wall-clock limit longer than a year is a typo, and would overflow nothing but help
/// nobody.
pub const MAX_TIMEOUT_SECS: u64 = 365 * 24 * 3600;

const NET_MODES: &[&str] = &["proxy", "none", "host"];

/// The JSON shape of a profile field.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    Str,
    Bool,
    /// A whole number in this range.
    Count(u64, u64),
    /// One of these strings.
    Choice(&'static [&'static str]),
    /// A list of strings.
    Strings,
    /// An object with these fields.
    Object(&'static [(&'static str, Shape)]),
    /// An object of string values.
    StringMap,
    /// An object of resource limits: a whole number or "unlimited" each.
    Limits,
    /// Either shape.
    Or(&'static Shape, &'static Shape),
}

/// Every field a profile file may have, and its shape.
pub const SCHEMA: &[(&str, Shape)] = &[
    ("$schema", Shape::Str),
    ("description", Shape::Str),
    ("extends", Shape::Str),
    ("isolation", Shape::Choice(&["namespaces", "none"])),
    (
        "network",
        Shape::Or(
            &Shape::Choice(NET_MODES),
            &Shape::Object(&[
                ("mode", Shape::Choice(NET_MODES)),
                ("allow", Shape::Strings),
                ("deny", Shape::Strings),
            ]),
        ),
    ),
    (
        "home",
        Shape::Choice(&["overlay", "readOnly", "hidden", "visible"]),
    ),
    ("project", Shape::Choice(&["rw", "ro"])),
    ("bind", Shape::Strings),
    ("roBind", Shape::Strings),
    ("tmpfs", Shape::Strings),
    ("hide", Shape::Strings),
    ("unhide", Shape::Strings),
    ("sockets", Shape::Strings),
    ("protect", Shape::Strings),
    ("allowGitConfig", Shape::Bool),
    (
        "claude",
        Shape::Object(&[
            ("state", Shape::Choice(&["overlay", "fresh"])),
            ("readOnly", Shape::Strings),
            ("readWrite", Shape::Strings),
            ("private", Shape::Strings),
            ("mergeBack", Shape::Strings),
        ]),
    ),
    (
        "env",
        Shape::Object(&[
            ("policy", Shape::Choice(&["pass", "allowlist"])),
            ("allow", Shape::Strings),
            ("deny", Shape::Strings),
            ("denyUrlCredentials", Shape::Bool),
            ("set", Shape::StringMap),
        ]),
    ),
    ("rlimits", Shape::Limits),
    ("timeoutSecs", Shape::Count(1, MAX_TIMEOUT_SECS)),
    ("seccomp", Shape::Choice(&["default", "strict"])),
    ("nestedUserns", Shape::Bool),
    ("jsonStatus", Shape::Bool),
    ("removeOnExit", Shape::Bool),
];

pub(super) fn kind_of(v: &serde_json::Value) -> String {
    use serde_json::Value::*;
    match v {
        Null => "null".into(),
        Bool(b) => format!("{b} (a boolean)"),
        Number(n) => format!("{n} (a number)"),
        String(s) => format!("{s:?} (a string)"),
        Array(_) => "a list".into(),
        Object(_) => "an object".into(),
    }
}

fn quoted(list: &[&str]) -> String {
    list.iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The closest known name, for "did you mean".
fn suggest<'a>(key: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase();
    known
        .min_by_key(|k| {
            let k = k.to_ascii_lowercase();
            let common = k.chars().zip(lower.chars()).filter(|(a, b)| a == b).count();
            k.len().max(lower.len()) - common
        })
        .filter(|k| {
            let mut a: Vec<char> = k.to_ascii_lowercase().chars().collect();
            let mut b: Vec<char> = lower.chars().collect();
            a.sort_unstable();
            b.sort_unstable();
            a == b || k.eq_ignore_ascii_case(key)
        })
}

/// Check `v` against `shape`; Err is (field path, what is wrong; what to do).
fn check(path: &str, v: &serde_json::Value, shape: Shape) -> Result<(), (String, String)> {
    use serde_json::Value;
    let wrong = |want: &str| Err((path.to_string(), format!("{} is not {want}", kind_of(v))));
    match (shape, v) {
        (Shape::Str, Value::String(_)) | (Shape::Bool, Value::Bool(_)) => Ok(()),
        (Shape::Str, _) => wrong("a string"),
        (Shape::Bool, _) => wrong("true or false"),
        (Shape::Count(lo, hi), Value::Number(n)) => match n.as_u64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(()),
            _ => Err((
                path.to_string(),
                format!("{n} is out of range; expected a whole number from {lo} to {hi}"),
            )),
        },
        (Shape::Count(lo, hi), _) => wrong(&format!("a whole number from {lo} to {hi}")),
        (Shape::Choice(list), Value::String(s)) if list.contains(&s.as_str()) => Ok(()),
        (Shape::Choice(list), _) => wrong(&format!("one of {}", quoted(list))),
        (Shape::Strings, Value::Array(items)) => match items.iter().position(|i| !i.is_string()) {
            None => Ok(()),
            Some(i) => Err((
                path.to_string(),
                format!(
                    "item {i} is {}; expected a list of strings",
                    kind_of(&items[i])
                ),
            )),
        },
        (Shape::Strings, _) => wrong("a list of strings, like [\"~/x\"]"),
        (Shape::StringMap, Value::Object(m)) => match m.iter().find(|(_, x)| !x.is_string()) {
            None => Ok(()),
            Some((k, x)) => Err((
                format!("{path}.{k}"),
                format!("{} is not a string", kind_of(x)),
            )),
        },
        (Shape::StringMap, _) => wrong("an object of strings, like {\"K\": \"v\"}"),
        (Shape::Limits, Value::Object(m)) => {
            for (k, x) in m {
                if !RLIMITS.iter().any(|(n, _)| n == k) {
                    let names: Vec<&str> = RLIMITS.iter().map(|(n, _)| *n).collect();
                    return Err((
                        path.to_string(),
                        format!("unknown limit {k:?}; expected one of {}", names.join(", ")),
                    ));
                }
                if !(x.as_u64().is_some() || x.as_str() == Some("unlimited")) {
                    return Err((
                        format!("{path}.{k}"),
                        format!(
                            "{} is not a limit; expected a whole number ≥ 0 or \"unlimited\"",
                            kind_of(x)
                        ),
                    ));
                }
            }
            Ok(())
        }
        (Shape::Limits, _) => wrong("an object of limits, like {\"nofile\": 4096}"),
        (Shape::Or(a, b), _) => check(path, v, *a).or_else(|ea| {
            check(path, v, *b).map_err(|eb| {
                // An object was meant as the object form: its own error says more.
                if v.is_object() {
                    eb
                } else {
                    (
                        ea.0,
                        format!("{}; or an object {{\"mode\", \"allow\", \"deny\"}}", ea.1),
                    )
                }
            })
        }),
        (Shape::Object(fields), Value::Object(m)) => check_object(path, m, fields),
        (Shape::Object(fields), _) => wrong(&format!(
            "an object with the fields {}",
            quoted(&fields.iter().map(|(n, _)| *n).collect::<Vec<_>>())
        )),
    }
}

pub(super) fn check_object(
    prefix: &str,
    m: &serde_json::Map<String, serde_json::Value>,
    fields: &[(&str, Shape)],
) -> Result<(), (String, String)> {
    for (k, v) in m {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let Some((_, shape)) = fields.iter().find(|(n, _)| n == k) else {
            let known: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
            let hint = match suggest(k, known.iter().copied()) {
                Some(s) => format!("did you mean \"{s}\"?"),
                None => format!("expected one of {}", quoted(&known)),
            };
            return Err((path, format!("unknown field; {hint}")));
        };
        check(&path, v, *shape)?;
    }
    Ok(())
}
