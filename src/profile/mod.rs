//! Profiles: how strict a sandbox is, as JSON in the style of Claude Code's settings.json
//! (camelCase keys). Parsed strictly: an unknown field is an error. A profile may `extends`
//! another; scalars override, lists append, maps merge.
//!
//! Built-ins live in `profiles/*.json` and are compiled in. User profiles live in
//! `$XDG_CONFIG_HOME/csbox/profiles/NAME.json` and shadow a built-in of the same name.

pub mod expand;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::plan::StateMode;

pub const BUILTINS: &[(&str, &str)] = &[
    ("default", include_str!("../../profiles/default.json")),
    ("strict", include_str!("../../profiles/strict.json")),
    ("ci", include_str!("../../profiles/ci.json")),
    ("compat", include_str!("../../profiles/compat.json")),
];

/// rlimit names a profile may set.
pub const RLIMITS: &[(&str, u32)] = &[
    ("as", libc::RLIMIT_AS),
    ("core", libc::RLIMIT_CORE),
    ("cpu", libc::RLIMIT_CPU),
    ("data", libc::RLIMIT_DATA),
    ("fsize", libc::RLIMIT_FSIZE),
    ("memlock", libc::RLIMIT_MEMLOCK),
    ("nofile", libc::RLIMIT_NOFILE),
    ("nproc", libc::RLIMIT_NPROC),
    ("stack", libc::RLIMIT_STACK),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Isolation {
    Namespaces,
    /// No sandbox at all: the old launcher's per-session CLAUDE_CONFIG_DIR.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Network {
    Host,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Home {
    Visible,
    /// An empty tmpfs over $HOME; only the project dir and the ~/.claude view come back.
    Hidden,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Access {
    Rw,
    Ro,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EnvPolicyKind {
    Pass,
    Allowlist,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SeccompLevel {
    /// TIOCSTI/TIOCLINUX denied.
    Default,
    /// Also kernel keyring, bpf, perf, userfaultfd, module and kexec calls, and every
    /// 32-bit entry point.
    Strict,
}

/// A profile file as written: every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProfileFile {
    #[serde(rename = "$schema")]
    pub schema: Option<String>,
    pub description: Option<String>,
    pub extends: Option<String>,
    pub isolation: Option<Isolation>,
    pub network: Option<Network>,
    pub home: Option<Home>,
    pub project: Option<Access>,
    pub bind: Option<Vec<String>>,
    pub ro_bind: Option<Vec<String>>,
    pub tmpfs: Option<Vec<String>>,
    pub hide: Option<Vec<String>>,
    pub claude: Option<ClaudeFile>,
    pub env: Option<EnvFile>,
    pub rlimits: Option<BTreeMap<String, u64>>,
    pub timeout_secs: Option<u64>,
    pub seccomp: Option<SeccompLevel>,
    pub nested_userns: Option<bool>,
    pub json_status: Option<bool>,
    pub remove_on_exit: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaudeFile {
    pub state: Option<StateMode>,
    pub read_only: Option<Vec<String>>,
    pub read_write: Option<Vec<String>>,
    /// Entries inherited as shared that this profile makes private (copy-on-write) again.
    pub private: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvFile {
    pub policy: Option<EnvPolicyKind>,
    pub allow: Option<Vec<String>>,
    pub set: Option<BTreeMap<String, String>>,
}

/// A resolved profile: every field decided. Serialises in the profile file format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub name: String,
    pub source: String,
    pub description: String,
    pub isolation: Isolation,
    pub network: Network,
    pub home: Home,
    pub project: Access,
    pub bind: Vec<String>,
    pub ro_bind: Vec<String>,
    pub tmpfs: Vec<String>,
    pub hide: Vec<String>,
    pub claude: ClaudeView,
    pub env: EnvPolicy,
    pub rlimits: BTreeMap<String, u64>,
    pub timeout_secs: Option<u64>,
    pub seccomp: SeccompLevel,
    pub nested_userns: bool,
    pub json_status: bool,
    pub remove_on_exit: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaudeView {
    pub state: StateMode,
    pub read_only: Vec<String>,
    pub read_write: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvPolicy {
    pub policy: EnvPolicyKind,
    pub allow: Vec<String>,
    pub set: BTreeMap<String, String>,
}

impl Profile {
    fn base(name: &str, source: &str) -> Self {
        Profile {
            name: name.into(),
            source: source.into(),
            description: String::new(),
            isolation: Isolation::Namespaces,
            network: Network::Host,
            home: Home::Visible,
            project: Access::Rw,
            bind: vec![],
            ro_bind: vec![],
            tmpfs: vec![],
            hide: vec![],
            claude: ClaudeView {
                state: StateMode::Overlay,
                read_only: vec![],
                read_write: vec![],
            },
            env: EnvPolicy {
                policy: EnvPolicyKind::Pass,
                allow: vec![],
                set: BTreeMap::new(),
            },
            rlimits: BTreeMap::new(),
            timeout_secs: None,
            seccomp: SeccompLevel::Default,
            nested_userns: true,
            json_status: false,
            remove_on_exit: false,
        }
    }

    fn apply(&mut self, f: ProfileFile) {
        fn set<T>(dst: &mut T, v: Option<T>) {
            if let Some(v) = v {
                *dst = v;
            }
        }
        fn add(dst: &mut Vec<String>, v: Option<Vec<String>>) {
            for x in v.unwrap_or_default() {
                if !dst.contains(&x) {
                    dst.push(x);
                }
            }
        }
        set(&mut self.description, f.description);
        set(&mut self.isolation, f.isolation);
        set(&mut self.network, f.network);
        set(&mut self.home, f.home);
        set(&mut self.project, f.project);
        add(&mut self.bind, f.bind);
        add(&mut self.ro_bind, f.ro_bind);
        add(&mut self.tmpfs, f.tmpfs);
        add(&mut self.hide, f.hide);
        if let Some(c) = f.claude {
            set(&mut self.claude.state, c.state);
            add(&mut self.claude.read_only, c.read_only);
            add(&mut self.claude.read_write, c.read_write);
            let private = c.private.unwrap_or_default();
            self.claude.read_only.retain(|e| !private.contains(e));
            self.claude.read_write.retain(|e| !private.contains(e));
        }
        if let Some(e) = f.env {
            set(&mut self.env.policy, e.policy);
            add(&mut self.env.allow, e.allow);
            self.env.set.extend(e.set.unwrap_or_default());
        }
        self.rlimits.extend(f.rlimits.unwrap_or_default());
        if f.timeout_secs.is_some() {
            self.timeout_secs = f.timeout_secs;
        }
        set(&mut self.seccomp, f.seccomp);
        set(&mut self.nested_userns, f.nested_userns);
        set(&mut self.json_status, f.json_status);
        set(&mut self.remove_on_exit, f.remove_on_exit);
    }
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

/// A profile error names the file, line, column and field, and what was expected.
fn located(src: &Source, field: &str, problem: &str) -> Error {
    let (line, col) = locate(&src.text, field);
    Error::Usage(format!(
        "profile {}:{line}:{col}: field \"{field}\": {problem}",
        src.label
    ))
}

/// Line and column (1-based) of the first `"key"` in `text`, or 1:1.
fn locate(text: &str, key: &str) -> (usize, usize) {
    let needle = format!("\"{key}\"");
    match text.find(&needle) {
        Some(pos) => {
            let before = &text[..pos];
            let line = before.matches('\n').count() + 1;
            let col = pos - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            (line, col)
        }
        None => (1, 1),
    }
}

fn load_source(
    reference: &str,
    user_dir: &Path,
    relative_to: Option<&Path>,
) -> Result<(String, Source)> {
    if is_name(reference) {
        let user = user_dir.join(format!("{reference}.json"));
        if user.is_file() {
            let text =
                std::fs::read_to_string(&user).map_err(|e| Error::io("read profile", &user, e))?;
            return Ok((
                reference.into(),
                Source {
                    label: user.display().to_string(),
                    dir: user.parent().map(Path::to_path_buf),
                    text,
                },
            ));
        }
        if let Some((_, text)) = BUILTINS.iter().find(|(n, _)| *n == reference) {
            return Ok((
                reference.into(),
                Source {
                    label: format!("built-in {reference}"),
                    dir: None,
                    text: text.to_string(),
                },
            ));
        }
        let names: Vec<&str> = BUILTINS.iter().map(|(n, _)| *n).collect();
        return Err(Error::Usage(format!(
            "unknown profile {reference:?}: built-ins are {}, user profiles live in {} (see `csbox profile list`)",
            names.join(", "),
            user_dir.display()
        )));
    }
    let path = match relative_to {
        Some(dir) if Path::new(reference).is_relative() => dir.join(reference),
        _ => PathBuf::from(reference),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::io("read profile", &path, e).hint("give a profile name or a path to a .json file")
    })?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| reference.into());
    Ok((
        name,
        Source {
            label: path.display().to_string(),
            dir: path.parent().map(Path::to_path_buf),
            text,
        },
    ))
}

fn parse(src: &Source) -> Result<ProfileFile> {
    if src.text.trim().is_empty() {
        return Err(Error::Usage(format!(
            "profile {}:1:1: the file is empty; expected a JSON object",
            src.label
        )));
    }
    let f: ProfileFile = serde_json::from_str(&src.text).map_err(|e| {
        Error::Usage(
            format!("profile {}:{}:{}: {e}", src.label, e.line(), e.column())
                .replace(&format!(" at line {} column {}", e.line(), e.column()), ""),
        )
    })?;
    validate(&f, src)?;
    Ok(f)
}

/// Checks serde cannot express: names, paths, limits. Each names the field.
fn validate(f: &ProfileFile, src: &Source) -> Result<()> {
    if let Some(c) = &f.claude {
        let lists = [
            ("readOnly", &c.read_only),
            ("readWrite", &c.read_write),
            ("private", &c.private),
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
                    return Err(located(src, field, &format!("{e:?} is not allowed; expected an entry name directly inside ~/.claude, like \"skills\" (not \"sessions\")")));
                }
            }
        }
        for e in c.read_only.iter().flatten() {
            if c.read_write.iter().flatten().any(|x| x == e) {
                return Err(located(
                    src,
                    "readWrite",
                    &format!("{e:?} is also in readOnly; expected each entry in one list"),
                ));
            }
        }
    }
    for (field, list) in [("bind", &f.bind), ("roBind", &f.ro_bind)] {
        for b in list.iter().flatten() {
            if let Err(why) = expand::split_bind(b) {
                return Err(located(src, field, &format!("{b:?}: {why}")));
            }
        }
    }
    for (field, list) in [("tmpfs", &f.tmpfs), ("hide", &f.hide)] {
        for p in list.iter().flatten() {
            if let Err(why) = expand::check_path_syntax(p) {
                return Err(located(src, field, &format!("{p:?}: {why}")));
            }
            if expand::is_root(p) {
                return Err(located(
                    src,
                    field,
                    &format!(
                        "{p:?} would cover the whole file system; expected a directory below /"
                    ),
                ));
            }
        }
    }
    for k in f.rlimits.iter().flat_map(|m| m.keys()) {
        if !RLIMITS.iter().any(|(n, _)| n == k) {
            let names: Vec<&str> = RLIMITS.iter().map(|(n, _)| *n).collect();
            return Err(located(
                src,
                "rlimits",
                &format!("unknown limit {k:?}; expected one of {}", names.join(", ")),
            ));
        }
    }
    if f.timeout_secs == Some(0) {
        return Err(located(
            src,
            "timeoutSecs",
            "0 would kill the command at once; expected a number of seconds ≥ 1, or leave it out",
        ));
    }
    if let Some(e) = &f.env {
        for k in e
            .allow
            .iter()
            .flatten()
            .chain(e.set.iter().flat_map(|m| m.keys()))
        {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(located(
                    src,
                    "env",
                    &format!("{k:?} is not a variable name"),
                ));
            }
        }
    }
    if let Some(x) = &f.extends {
        if x.is_empty() {
            return Err(located(
                src,
                "extends",
                "empty; expected a profile name or path",
            ));
        }
    }
    Ok(())
}

/// Load and resolve a profile by name or path, following `extends`.
pub fn load(reference: &str, user_dir: &Path) -> Result<Profile> {
    let (name, src) = load_source(reference, user_dir, None)?;
    let mut chain = vec![(src.clone(), parse(&src)?)];
    let mut seen = vec![src.label.clone()];
    while let Some(parent) = chain.last().and_then(|(_, f)| f.extends.clone()) {
        let (child_src, _) = chain.last().unwrap();
        let child_src = child_src.clone();
        let (_, psrc) = load_source(&parent, user_dir, child_src.dir.as_deref()).map_err(|e| {
            located(
                &child_src,
                "extends",
                &format!("{parent:?} cannot be loaded: {e}"),
            )
        })?;
        if seen.contains(&psrc.label) {
            return Err(located(
                &child_src,
                "extends",
                &format!("{parent:?} extends itself through {}", seen.join(" → ")),
            ));
        }
        if chain.len() >= 16 {
            return Err(located(
                &child_src,
                "extends",
                "more than 16 levels; expected a short chain",
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
    use super::*;

    fn none() -> &'static Path {
        Path::new("/nonexistent")
    }

    #[test]
    fn every_builtin_parses_and_says_what_it_is() {
        for (n, _) in BUILTINS {
            let p = load(n, none()).unwrap_or_else(|e| panic!("{n}: {e}"));
            assert!(!p.description.is_empty(), "{n}");
        }
        let strict = load("strict", none()).unwrap();
        assert_eq!(strict.network, Network::None);
        assert_eq!(strict.home, Home::Hidden);
        assert!(!strict.nested_userns);
        assert!(
            strict.claude.read_only.contains(&"skills".to_string()),
            "inherited from default"
        );
        let compat = load("compat", none()).unwrap();
        assert_eq!(compat.isolation, Isolation::None);
        let ci = load("ci", none()).unwrap();
        assert_eq!(ci.env.policy, EnvPolicyKind::Allowlist);
        assert!(ci.remove_on_exit && ci.json_status && ci.timeout_secs.is_some());
    }

    #[test]
    fn locate_finds_line_and_column() {
        assert_eq!(locate("{\n  \"a\": 1,\n  \"bind\": 2\n}", "bind"), (3, 3));
    }

    #[test]
    fn private_removes_inherited_shared_entries() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("mine.json"), r#"{"extends":"default","claude":{"private":["settings.json"],"readWrite":["keybindings.json"]}}"#).unwrap();
        let p = load("mine", d.path()).unwrap();
        assert!(!p.claude.read_only.contains(&"settings.json".to_string()));
        assert!(p
            .claude
            .read_write
            .contains(&"keybindings.json".to_string()));
        assert_eq!(p.source, d.path().join("mine.json").display().to_string());
    }
}
