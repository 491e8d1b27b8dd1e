//! `csbox completions SHELL`: the shell's completion script. It asks the installed csbox
//! at each Tab (`commands::complete`), so session ids, names and profiles complete too.

use clap::Args;

use crate::error::Error;
use crate::exit::Result;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  csbox completions bash > ~/.local/share/bash-completion/completions/csbox\n  csbox completions zsh > ~/.zfunc/_csbox\n  csbox completions fish > ~/.config/fish/completions/csbox.fish\n  source <(csbox completions bash)     for this shell only\n\nThe script calls `csbox` (on PATH) at each Tab: subcommands, flags, session ids and names, and profile names complete. Print it again after upgrading csbox."
)]
pub struct CompletionsArgs {
    /// The shell
    pub shell: clap_complete::Shell,
}

pub fn completions(a: CompletionsArgs) -> Result<i32> {
    super::complete::registration(a.shell, &mut std::io::stdout()).map_err(|e| Error::io("write", "stdout", e))?;
    Ok(0)
}
