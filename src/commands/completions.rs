//! `csbox completions SHELL`: shell completions generated from the command line itself.

use clap::{Args, CommandFactory};

use crate::error::Result;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  csbox completions bash > ~/.local/share/bash-completion/completions/csbox\n  csbox completions zsh > ~/.zfunc/_csbox"
)]
pub struct CompletionsArgs {
    /// The shell
    pub shell: clap_complete::Shell,
}

pub fn completions(a: CompletionsArgs) -> Result<i32> {
    let mut cmd = crate::cli::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "csbox", &mut std::io::stdout());
    Ok(0)
}
