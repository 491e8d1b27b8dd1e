//! Profiles: how strict a sandbox is, as JSON in the style of Claude Code's settings.json
//! (camelCase keys). Parsed strictly: an unknown field is an error. A profile may `extends`
//! another; scalars override, lists append, maps merge.
//!
//! Built-ins live in `profiles/*.json` and are compiled in. User profiles live in
//! `$XDG_CONFIG_HOME/csbox/profiles/NAME.json` and shadow a built-in of the same name.

pub mod expand;
mod load;
mod model;
pub mod network;
mod schema;

pub use load::{list, load, Error, MAX_PROFILE_BYTES, MAX_TIMEOUT_SECS};
pub use model::*;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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
        assert_eq!(strict.network.mode, Network::Proxy);
        assert_eq!(
            strict.network.allow,
            crate::profile::network::CLAUDE_HOSTS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
            "strict replaces default's list"
        );
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
        assert!(ci.remove_on_exit && !ci.json_status && ci.timeout_secs.is_some());
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
