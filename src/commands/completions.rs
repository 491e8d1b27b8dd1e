//! `csbox completions SHELL [--install]`: the shell's completion script, printed or
//! installed where the shell looks for a user's completions. It asks the installed csbox
//! at each Tab (`commands::complete`), so session ids, names and profiles complete too.

use std::path::PathBuf;

use clap::Args;
use clap_complete::Shell;

use crate::error::Error;
use crate::exit::Result;
use crate::fsutil::{atomic_write, Durability};
use crate::paths::Paths;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  csbox completions bash --install   ~/.local/share/bash-completion/completions/csbox\n  csbox completions fish --install   ~/.config/fish/completions/csbox.fish\n  csbox completions zsh --install    ~/.zfunc/_csbox (add `fpath=(~/.zfunc $fpath)` before compinit in ~/.zshrc)\n  source <(csbox completions bash)   this shell only\n\nThe script calls `csbox` (on PATH) at each Tab: subcommands, flags, session ids and names, and profile names complete. Print it again after upgrading csbox."
)]
pub struct CompletionsArgs {
    /// The shell
    pub shell: Shell,
    /// Write the script where the shell finds it for you (bash, zsh, fish), creating the
    /// directory, instead of printing it
    #[arg(long)]
    pub install: bool,
}

pub fn completions(a: CompletionsArgs) -> Result<i32> {
    if !a.install {
        super::complete::registration(a.shell, &mut std::io::stdout())
            .map_err(|e| Error::io("write", "stdout", e))?;
        return Ok(0);
    }
    let paths = Paths::from_env()?;
    let (dir, name) = user_dir(a.shell, &paths)?;
    let mut script = Vec::new();
    super::complete::registration(a.shell, &mut script)
        .map_err(|e| Error::io("write", "the script", e))?;
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
    atomic_write(&dir, name, &script, 0o644, Durability::Rename)?;
    println!("wrote {}", dir.join(name).display());
    match a.shell {
        Shell::Bash => println!(
            "bash-completion loads it in new shells (Debian/Ubuntu: apt-get install bash-completion)"
        ),
        Shell::Zsh if !zshrc_names_zfunc(&paths) => println!(
            "zsh loads it once ~/.zshrc has, before compinit: fpath=(~/.zfunc $fpath); autoload -Uz compinit && compinit"
        ),
        _ => println!("new shells load it"),
    }
    Ok(0)
}

/// Where each shell looks for one user's completions, and the file name it expects.
/// bash-completion ≥ 2.8: `$BASH_COMPLETION_USER_DIR/completions` (its first entry), else
/// `$XDG_DATA_HOME/bash-completion/completions`. fish: `$XDG_CONFIG_HOME/fish/completions`.
/// zsh has no per-user default on its `fpath`; `~/.zfunc` is the usual convention.
fn user_dir(shell: Shell, paths: &Paths) -> Result<(PathBuf, &'static str)> {
    Ok(match shell {
        Shell::Bash => {
            let base = std::env::var_os("BASH_COMPLETION_USER_DIR")
                .and_then(|v| std::env::split_paths(&v).next())
                .filter(|p| p.is_absolute())
                .unwrap_or_else(|| paths.data_home.join("bash-completion"));
            (base.join("completions"), "csbox")
        }
        Shell::Zsh => (paths.home.join(".zfunc"), "_csbox"),
        Shell::Fish => (paths.config_home.join("fish/completions"), "csbox.fish"),
        other => {
            return Err(Error::Usage(format!(
                "--install knows bash, zsh and fish; for {other}, print the script (csbox completions {other}) and load it from your shell's profile"
            ))
            .into())
        }
    })
}

fn zshrc_names_zfunc(paths: &Paths) -> bool {
    let dir = std::env::var_os("ZDOTDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| paths.home.clone());
    std::fs::read_to_string(dir.join(".zshrc")).is_ok_and(|s| s.contains(".zfunc"))
}
