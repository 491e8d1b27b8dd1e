//! `csbox completions SHELL`: shell completions generated from the command line itself.

use clap::Args;

use crate::exit::Result;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  csbox completions bash > ~/.local/share/bash-completion/completions/csbox\n  csbox completions zsh > ~/.zfunc/_csbox"
)]
pub struct CompletionsArgs {
    /// The shell
    pub shell: clap_complete::Shell,
}

/// `cmd` is the whole command line (`Cli::command()`), passed in by the dispatcher.
pub fn completions(a: CompletionsArgs, mut cmd: clap::Command) -> Result<i32> {
    clap_complete::generate(a.shell, &mut cmd, "csbox", &mut std::io::stdout());
    Ok(0)
}
