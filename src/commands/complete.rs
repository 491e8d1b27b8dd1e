//! Shell completion of what only csbox knows: session ids (their unique prefixes), session
//! names, profile names. clap_complete's dynamic engine (`unstable-dynamic`) runs in the
//! binary itself: the script `csbox completions SHELL` prints calls
//! `CSBOX_COMPLETE=SHELL csbox -- WORDS…` at each Tab, which lands in [`complete_if_asked`]
//! before any other work. Chosen over a hidden helper subcommand because one engine then
//! serves bash, zsh, fish, elvish and PowerShell with the same candidates, where a helper
//! would need hand-written glue in five generated scripts. The engine's interface between
//! script and binary is unstable across clap_complete versions: the script calls the
//! installed csbox, and Cargo.lock pins the version they share.

use clap_complete::engine::CompletionCandidate;

use crate::paths::Paths;
use crate::session::id::unique_prefix_lens;
use crate::session::Store;

/// The variable the completion scripts set (not clap's default `COMPLETE`, which other
/// programs' users may have set for something else).
pub const VAR: &str = "CSBOX_COMPLETE";

/// Answer a completion request and exit, if this run is one.
pub fn complete_if_asked(factory: fn() -> clap::Command) {
    clap_complete::CompleteEnv::with_factory(factory)
        .var(VAR)
        .bin("csbox")
        .completer("csbox")
        .complete();
}

/// The registration script for `shell`, as `CSBOX_COMPLETE=SHELL csbox` prints it.
pub fn registration(
    shell: clap_complete::Shell,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    use clap_complete::env::EnvCompleter;
    let c: &dyn EnvCompleter = match shell {
        clap_complete::Shell::Bash => &clap_complete::env::Bash,
        clap_complete::Shell::Zsh => &clap_complete::env::Zsh,
        clap_complete::Shell::Fish => &clap_complete::env::Fish,
        clap_complete::Shell::Elvish => &clap_complete::env::Elvish,
        clap_complete::Shell::PowerShell => &clap_complete::env::Powershell,
        _ => &clap_complete::env::Bash,
    };
    c.write_registration(VAR, "csbox", "csbox", "csbox", out)
}

/// Every session: its unique prefix (with its name and state as help), and its name.
pub fn sessions() -> Vec<CompletionCandidate> {
    let Ok(paths) = Paths::from_env() else {
        return Vec::new();
    };
    let Ok(list) = Store::new(paths.sessions_dir).list(false) else {
        return Vec::new();
    };
    let ids: Vec<_> = list.iter().map(|s| s.id.clone()).collect();
    let lens = unique_prefix_lens(&ids);
    let mut out = Vec::new();
    for (s, len) in list.iter().zip(lens) {
        let name = s.meta.as_ref().and_then(|m| m.name.clone());
        let help = match &name {
            Some(n) => format!("{} {}", crate::human::printable(n), s.state_word()),
            None => s.state_word(),
        };
        out.push(CompletionCandidate::new(s.id.prefix(len)).help(Some(help.into())));
        if let Some(n) = name.filter(|n| !n.chars().any(char::is_control)) {
            out.push(CompletionCandidate::new(n).help(Some(s.id.to_string().into())));
        }
    }
    out
}

/// Every profile name: the built-ins and the user's.
pub fn profiles() -> Vec<CompletionCandidate> {
    let Ok(paths) = Paths::from_env() else {
        return Vec::new();
    };
    crate::profile::list(&paths.user_profiles_dir())
        .into_iter()
        .map(|(name, _, description)| CompletionCandidate::new(name).help(Some(description.into())))
        .collect()
}
