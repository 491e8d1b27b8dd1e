//! npm's user config file, for the four keys csbox uses.

use std::collections::BTreeMap;
use std::path::Path;

use super::setting::Setting;

/// A user's npmrc is a few lines; one this big is not an npmrc.
pub(super) const NPMRC_CAP: u64 = 256 * 1024;

/// The keys of an npmrc that csbox uses; everything else (tokens above all) is skipped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NpmRc {
    pub https_proxy: Option<Setting>,
    pub proxy: Option<Setting>,
    pub noproxy: Option<Setting>,
    pub cafile: Option<Setting>,
}

/// Read the user's npmrc: a missing file is an empty one; anything that is not a small
/// regular file is an error (opened non-blocking: a FIFO there must not hang the check).
pub fn read_npmrc(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<NpmRc, String> {
    match crate::fsutil::read_regular(path, NPMRC_CAP) {
        Ok(bytes) => Ok(parse_npmrc(
            &String::from_utf8_lossy(&bytes),
            &path.display().to_string(),
            env,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NpmRc::default()),
        Err(e) => Err(format!(
            "cannot read the npm config {}: {e}; fix it or point NPM_CONFIG_USERCONFIG elsewhere",
            path.display()
        )),
    }
}

/// npm's ini dialect, for four keys: `key = value` lines before any `[section]`; `;` and
/// `#` start comments; a value may be quoted; `key[] = v` lines add to a list; `${VAR}`
/// expands from the environment (`${VAR?}` to nothing when unset); the last line wins.
pub fn parse_npmrc(text: &str, file: &str, env: &dyn Fn(&str) -> Option<String>) -> NpmRc {
    let mut rc = NpmRc::default();
    let mut lists: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            // Keys in sections are not top-level npm config.
            break;
        }
        if line.is_empty() || line.starts_with([';', '#']) {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let (key, is_list) = match key.strip_suffix("[]") {
            Some(k) => (k, true),
            None => (key, false),
        };
        let slot = match key {
            "https-proxy" => &mut rc.https_proxy,
            "proxy" => &mut rc.proxy,
            "noproxy" => &mut rc.noproxy,
            "cafile" => &mut rc.cafile,
            _ => continue,
        };
        let value = expand_env(&ini_value(raw), env);
        let value = if is_list {
            let list = lists.entry(key).or_default();
            list.push(value);
            list.join(",")
        } else {
            value
        };
        *slot = Some(Setting::new(value, format!("{key} in {file}")));
    }
    rc
}

/// An ini value: quoted (`"…"` with JSON escapes, or `'…'`), or bare up to an unescaped
/// `;` or `#`, as npm's ini parser reads it.
pub(super) fn ini_value(raw: &str) -> String {
    let v = raw.trim();
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        if let Ok(s) = serde_json::from_str::<String>(v) {
            return s;
        }
    }
    if v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'') {
        return v[1..v.len() - 1].to_string();
    }
    let mut out = String::new();
    let mut escaped = false;
    for c in v.chars() {
        if escaped {
            if !matches!(c, '\\' | ';' | '#') {
                out.push('\\');
            }
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if matches!(c, ';' | '#') {
            break;
        } else {
            out.push(c);
        }
    }
    if escaped {
        out.push('\\');
    }
    out.trim().to_string()
}

/// npm's `${NAME}` substitution: an unset NAME stays as written, `${NAME?}` becomes "".
fn expand_env(v: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = v;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start + 2..].find('}') else {
            break;
        };
        let inner = &rest[start + 2..start + 2 + len];
        let (name, optional) = match inner.strip_suffix('?') {
            Some(n) => (n, true),
            None => (inner, false),
        };
        out.push_str(&rest[..start]);
        match env(name) {
            Some(val) => out.push_str(&val),
            None if optional => {}
            None => out.push_str(&rest[start..start + 3 + len]),
        }
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    out
}
