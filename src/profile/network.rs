//! A profile's network policy: how the sandbox reaches the network, and which hosts it
//! may reach through csbox's proxy.
//!
//! In a file, `network` is a mode (`"proxy"`, `"none"`, `"host"`) or an object
//! `{"mode", "allow", "deny"}`. An object that names `mode` starts a new policy (so
//! `strict` is not stuck with `default`'s list); one that only adds `allow`/`deny`
//! extends the inherited one. `@claude` and `@registries` in a list stand for the
//! built-in lists below, expanded when the profile is loaded.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Network {
    /// A network namespace of its own whose only way out is csbox's filtering proxy.
    Proxy,
    /// A network namespace with only `lo`.
    None,
    /// The host's network: an explicit opt-out (`csbox doctor` and `--dry-run` flag it).
    Host,
}

/// `network` as a file writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum NetworkFile {
    Mode(Network),
    Policy(NetworkPolicyFile),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicyFile {
    pub mode: Option<Network>,
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
}

/// The resolved policy. Serialises in the file format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkPolicy {
    pub mode: Network,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

/// Claude Code's own endpoints, read off the real CLI behind a logging proxy (2.1.197):
/// the API (settings, bootstrap, messages, OAuth profile), login and token refresh
/// (platform.claude.com), the plugin marketplace it fetches at start
/// (downloads.claude.ai), claude.ai's MCP connectors (mcp-proxy.anthropic.com).
pub const CLAUDE_HOSTS: &[&str] = &[
    "api.anthropic.com",
    "platform.claude.com",
    "downloads.claude.ai",
    "mcp-proxy.anthropic.com",
];

/// The package registries and code hosts a coding agent needs.
pub const REGISTRY_HOSTS: &[&str] = &[
    "registry.npmjs.org",
    "registry.yarnpkg.com",
    "pypi.org",
    "files.pythonhosted.org",
    "crates.io",
    "index.crates.io",
    "static.crates.io",
    "static.rust-lang.org",
    "proxy.golang.org",
    "sum.golang.org",
    "github.com",
    "api.github.com",
    "codeload.github.com",
    "*.githubusercontent.com",
];

/// The named lists a rule list may use.
pub const GROUPS: &[(&str, &[&str])] =
    &[("@claude", CLAUDE_HOSTS), ("@registries", REGISTRY_HOSTS)];

impl NetworkPolicy {
    pub fn host() -> Self {
        NetworkPolicy {
            mode: Network::Host,
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }

    /// Apply a file's `network` over the inherited policy.
    pub fn apply(&mut self, f: NetworkFile) {
        match f {
            NetworkFile::Mode(m) => self.mode = m,
            NetworkFile::Policy(p) => {
                if let Some(m) = p.mode {
                    *self = NetworkPolicy {
                        mode: m,
                        allow: Vec::new(),
                        deny: Vec::new(),
                    };
                }
                self.add(p.allow.unwrap_or_default(), p.deny.unwrap_or_default());
            }
        }
    }

    /// Add rules (groups expanded), each once.
    pub fn add(&mut self, allow: Vec<String>, deny: Vec<String>) {
        for (list, new) in [(&mut self.allow, allow), (&mut self.deny, deny)] {
            for rule in new.iter().flat_map(|r| expand(r)) {
                if !list.contains(&rule) {
                    list.push(rule);
                }
            }
        }
    }
}

/// A rule, or the members of the group it names.
fn expand(rule: &str) -> Vec<String> {
    match GROUPS.iter().find(|(g, _)| *g == rule) {
        Some((_, hosts)) => hosts.iter().map(|h| h.to_string()).collect(),
        None => vec![rule.to_string()],
    }
}

/// Why `rule` is not a rule (group names known, host syntax valid), for the loader.
pub fn check_rule(rule: &str) -> Result<(), String> {
    if let Some(name) = rule.strip_prefix('@') {
        if GROUPS.iter().any(|(g, _)| *g == rule) {
            return Ok(());
        }
        let known: Vec<&str> = GROUPS.iter().map(|(g, _)| *g).collect();
        return Err(format!(
            "unknown list @{name}; the built-in lists are {}",
            known.join(", ")
        ));
    }
    crate::net::Rule::parse(rule).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mode_starts_a_new_policy_and_lists_alone_extend_it() {
        let mut p = NetworkPolicy::host();
        p.apply(NetworkFile::Policy(NetworkPolicyFile {
            mode: Some(Network::Proxy),
            allow: Some(vec!["@claude".into(), "@registries".into()]),
            deny: None,
        }));
        assert!(
            p.allow.contains(&"api.anthropic.com".into()) && p.allow.contains(&"pypi.org".into())
        );
        let mut strict = p.clone();
        strict.apply(NetworkFile::Policy(NetworkPolicyFile {
            mode: Some(Network::Proxy),
            allow: Some(vec!["@claude".into()]),
            deny: None,
        }));
        assert_eq!(
            strict.allow,
            CLAUDE_HOSTS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        );
        let mut mine = p.clone();
        mine.apply(NetworkFile::Policy(NetworkPolicyFile {
            mode: None,
            allow: Some(vec!["example.com".into()]),
            deny: Some(vec!["*.evil.example".into()]),
        }));
        assert!(
            mine.allow.contains(&"pypi.org".into()) && mine.allow.contains(&"example.com".into())
        );
        assert_eq!(mine.deny, vec!["*.evil.example".to_string()]);
        mine.apply(NetworkFile::Mode(Network::None));
        assert_eq!(mine.mode, Network::None);
        assert!(check_rule("@nope").unwrap_err().contains("@claude"));
        assert!(check_rule("exa mple.com").is_err());
        assert!(check_rule("*.example.com:8443").is_ok());
    }
}
