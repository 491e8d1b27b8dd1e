//! The profile model: every field as a file writes it ([`ProfileFile`]) and resolved
//! ([`Profile`]), and how a file applies over the profile it extends.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use super::network::{Network, NetworkFile, NetworkPolicy};

pub const BUILTINS: &[(&str, &str)] = &[
    ("default", include_str!("../../profiles/default.json")),
    ("strict", include_str!("../../profiles/strict.json")),
    ("ci", include_str!("../../profiles/ci.json")),
    ("compat", include_str!("../../profiles/compat.json")),
];

/// What a session's merge-back may bring into the real `~/.claude` (`claude.mergeBack`),
/// and the default: the conversation state `claude --resume`, `--continue`, the `/resume`
/// picker and up-arrow history read. `projects` holds the transcripts
/// (`projects/<slug>/<uuid>.jsonl`), their tool results and subagents (`<uuid>/`) and the
/// project's auto-memory (`memory/`); only the session's own project's merge (its working
/// directory's, see `session::merge`). Nothing here is ever run by Claude Code: settings,
/// hooks, skills, agents, commands, plugins and shell snapshots are not on the list.
pub const MERGE_BACK: &[&str] = &[
    "projects",
    "history.jsonl",
    "todos",
    "plans",
    "file-history",
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
#[serde(rename_all = "snake_case")]
pub enum StateMode {
    /// `~/.claude` is an overlay: csbox's mask layer below (the host's entries it shows
    /// bound into it: `plan::allow`), the session's layer on top.
    Overlay,
    /// The old launcher's behaviour: the session's own dir, settings copied in.
    Fresh,
}

/// A resource limit as a profile writes it: a number, or "unlimited".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Limit {
    Value(u64),
    Word(LimitWord),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LimitWord {
    Unlimited,
}

impl Limit {
    /// The value setrlimit(2) gets.
    pub fn value(self) -> u64 {
        match self {
            Limit::Value(v) => v,
            Limit::Word(LimitWord::Unlimited) => libc::RLIM_INFINITY,
        }
    }

    /// A limit above this user's hard limit would fail in the sandbox (only root may
    /// raise a hard limit): refuse it when the profile is loaded.
    pub fn check(self, name: &str) -> Result<(), String> {
        let Some((_, res)) = RLIMITS.iter().find(|(n, _)| *n == name) else {
            return Err(format!("unknown limit {name:?}"));
        };
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct we pass.
        if unsafe { libc::getrlimit(*res as _, &mut cur) } != 0 {
            return Ok(());
        }
        let hard = cur.rlim_max;
        if hard != libc::RLIM_INFINITY && self.value() > hard {
            return Err(format!(
                "{} is above this user's hard limit {hard} (`ulimit -H`); only root can raise a hard limit, so lower it",
                match self {
                    Limit::Value(v) => v.to_string(),
                    Limit::Word(_) => "\"unlimited\"".into(),
                }
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Isolation {
    Namespaces,
    /// No sandbox at all: the old launcher's per-session CLAUDE_CONFIG_DIR.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Home {
    /// Copy-on-write: the host's home is the lower layer of an overlay whose upper layer
    /// is the session's own (`SESSIONS_DIR/<id>/home/`); no write reaches the host.
    Overlay,
    /// Read-only, with private per-session dirs over the usual caches: the fallback
    /// where overlayfs on the home cannot be had.
    ReadOnly,
    /// An empty tmpfs over $HOME; only the project dir and the ~/.claude view come back.
    Hidden,
    /// The host's home, read-write: an explicit opt-out that `csbox doctor` and
    /// `--dry-run` flag. Anything the session writes there persists.
    Visible,
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
    /// What Docker's default profile refuses without added capabilities, but what nested
    /// bubblewrap and debuggers need (see `plan::seccomp`).
    Default,
    /// Also no namespaces, mounts, tracing or 32-bit entry points.
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
    pub network: Option<NetworkFile>,
    pub home: Option<Home>,
    pub project: Option<Access>,
    pub bind: Option<Vec<String>>,
    pub ro_bind: Option<Vec<String>>,
    pub tmpfs: Option<Vec<String>>,
    pub hide: Option<Vec<String>>,
    /// Paths taken out of `hide` (inherited or built in), e.g. `~/.ssh`.
    pub unhide: Option<Vec<String>>,
    /// Host sockets passed in on purpose: `ssh-agent`, `gpg-agent`, or a path.
    pub sockets: Option<Vec<String>>,
    /// Paths in the project that run code on the host later (`.git/hooks`, `.vscode`):
    /// read-only inside, and reported when a session creates one.
    pub protect: Option<Vec<String>>,
    /// Lift the protection of `.git/config`.
    pub allow_git_config: Option<bool>,
    pub claude: Option<ClaudeFile>,
    pub env: Option<EnvFile>,
    pub rlimits: Option<BTreeMap<String, Limit>>,
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
    /// Entries inherited as shared that this profile makes private again: the session's
    /// own, empty at first (nothing of the host's `~/.claude` is shown but what is shared:
    /// `plan::allow`).
    pub private: Option<Vec<String>>,
    /// What merges back into the real `~/.claude` when a session ends (entries of
    /// [`MERGE_BACK`]); replaces the inherited list, `[]` merges nothing.
    pub merge_back: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvFile {
    pub policy: Option<EnvPolicyKind>,
    pub allow: Option<Vec<String>>,
    /// Variable name patterns (`*` anywhere) not passed in unless `allow` names them.
    pub deny: Option<Vec<String>>,
    /// Also refuse any variable (but those `allow` names) whose value is a URL with a
    /// password in it (`postgres://user:pass@host/db`).
    pub deny_url_credentials: Option<bool>,
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
    pub network: NetworkPolicy,
    pub home: Home,
    pub project: Access,
    pub bind: Vec<String>,
    pub ro_bind: Vec<String>,
    pub tmpfs: Vec<String>,
    pub hide: Vec<String>,
    pub unhide: Vec<String>,
    pub sockets: Vec<String>,
    pub protect: Vec<String>,
    pub allow_git_config: bool,
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
    pub merge_back: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvPolicy {
    pub policy: EnvPolicyKind,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub deny_url_credentials: bool,
    pub set: BTreeMap<String, String>,
}

impl EnvPolicy {
    /// Whether the host's variable `k` is passed in: `set` always wins (it is replaced),
    /// then `allow` by name, then `deny` by pattern, then the policy.
    pub fn passes(&self, k: &str) -> bool {
        if self.allow.iter().any(|a| a == k) {
            return true;
        }
        if self.deny.iter().any(|p| glob(p, k)) {
            return false;
        }
        self.policy == EnvPolicyKind::Pass
    }

    /// [`EnvPolicy::passes`], and then, with `deny_url_credentials`, not a value that
    /// carries a URL's password.
    pub fn passes_var(&self, k: &str, v: &str) -> bool {
        self.passes(k)
            && (!self.deny_url_credentials
                || self.allow.iter().any(|a| a == k)
                || !has_url_password(v))
    }
}

/// Whether `v` holds a URL whose authority has a password: `scheme://user:pass@host`
/// (anywhere in the value, so a list of URLs counts too).
pub fn has_url_password(v: &str) -> bool {
    v.match_indices("://").any(|(i, _)| {
        let scheme = &v[..i];
        let valid_scheme = scheme
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        let rest = &v[i + 3..];
        let authority = rest
            .split(['/', '?', '#', ' ', ',', ';'])
            .next()
            .unwrap_or("");
        valid_scheme
            && authority.rsplit_once('@').is_some_and(|(userinfo, _)| {
                userinfo
                    .split_once(':')
                    .is_some_and(|(_, pass)| !pass.is_empty())
            })
    })
}

/// `*` matches any run of characters (none included); everything else is literal.
pub fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

impl Profile {
    pub(super) fn base(name: &str, source: &str) -> Self {
        Profile {
            name: name.into(),
            source: source.into(),
            description: String::new(),
            isolation: Isolation::Namespaces,
            network: NetworkPolicy::host(),
            home: Home::Overlay,
            project: Access::Rw,
            bind: vec![],
            ro_bind: vec![],
            tmpfs: vec![],
            hide: vec![],
            unhide: vec![],
            sockets: vec![],
            protect: vec![],
            allow_git_config: false,
            claude: ClaudeView {
                state: StateMode::Overlay,
                read_only: vec![],
                read_write: vec![],
                merge_back: MERGE_BACK.iter().map(|s| s.to_string()).collect(),
            },
            env: EnvPolicy {
                policy: EnvPolicyKind::Pass,
                allow: vec![],
                deny: vec![],
                deny_url_credentials: false,
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

    pub(super) fn apply(&mut self, f: ProfileFile) {
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
        if let Some(n) = f.network {
            self.network.apply(n);
        }
        set(&mut self.home, f.home);
        set(&mut self.project, f.project);
        add(&mut self.bind, f.bind);
        add(&mut self.ro_bind, f.ro_bind);
        add(&mut self.tmpfs, f.tmpfs);
        add(&mut self.hide, f.hide);
        add(&mut self.unhide, f.unhide);
        add(&mut self.sockets, f.sockets);
        add(&mut self.protect, f.protect);
        set(&mut self.allow_git_config, f.allow_git_config);
        if let Some(c) = f.claude {
            set(&mut self.claude.state, c.state);
            add(&mut self.claude.read_only, c.read_only);
            add(&mut self.claude.read_write, c.read_write);
            let private = c.private.unwrap_or_default();
            self.claude.read_only.retain(|e| !private.contains(e));
            self.claude.read_write.retain(|e| !private.contains(e));
            // A list that replaces, not appends: `[]` must turn merge-back off.
            set(&mut self.claude.merge_back, c.merge_back);
        }
        if let Some(e) = f.env {
            set(&mut self.env.policy, e.policy);
            add(&mut self.env.allow, e.allow);
            add(&mut self.env.deny, e.deny);
            set(&mut self.env.deny_url_credentials, e.deny_url_credentials);
            self.env.set.extend(e.set.unwrap_or_default());
        }
        self.rlimits.extend(
            f.rlimits
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.value())),
        );
        if f.timeout_secs.is_some() {
            self.timeout_secs = f.timeout_secs;
        }
        set(&mut self.seccomp, f.seccomp);
        set(&mut self.nested_userns, f.nested_userns);
        set(&mut self.json_status, f.json_status);
        set(&mut self.remove_on_exit, f.remove_on_exit);
    }
}
