//! The command line: the subcommand enum and dispatch. Each subcommand's arguments and
//! work live in `commands/`.

use clap::{Parser, Subcommand};

use crate::commands::{
    completions::CompletionsArgs, diff::DiffArgs, doctor::DoctorArgs, enter::EnterArgs, gc::GcArgs,
    ls::LsArgs, ls::ShowArgs, man::ManArgs, merge::MergeArgs, profile::ProfileArgs,
    quarantine::QuarantineArgs, rm::RmArgs, run::RunArgs, spec::SpecArgs, stop::StopArgs,
    update::UpdateArgs,
};
use crate::exit::{report, Result};

#[derive(Debug, Parser)]
#[command(
    name = "csbox",
    version,
    about = "Run parallel Claude Code sessions, each in its own sandbox with a private copy-on-write ~/.claude",
    long_about = "csbox starts each Claude Code session in a Linux user + mount namespace. Inside, ~/.claude \
looks like your own config, but every write lands in that session's own layer; shared skills, agents, \
commands and plugins are read-only, and other sessions are invisible. No setuid, no root, no daemon.",
    after_help = "Examples:\n  csbox run                      start claude in a new session\n  csbox run --name fix-login     the same, with a label\n  csbox run -- bash              a shell in a new session\n  csbox ls                       list sessions, newest first\n  csbox doctor                   check what this machine supports\n\nEnvironment: CLAUDE_ROOT (default ~/.claude), SESSIONS_DIR (default ~/.local/share/csbox/sessions), \nCLAUDE_BIN (default: claude on PATH), CSBOX_LOG=debug for debug logs."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a session (default command: claude) in its own sandbox
    Run(RunArgs),
    /// List sessions, newest first
    Ls(LsArgs),
    /// Show one session, all its fields
    Show(ShowArgs),
    /// What a session changed outside its project (its home and ~/.claude layers)
    Diff(DiffArgs),
    /// Run a second process (default: a shell) in a running session's sandbox
    Enter(EnterArgs),
    /// Stop a running session: SIGTERM to its command, SIGKILL after --grace
    Stop(StopArgs),
    /// Remove sessions (never a running one)
    Rm(RmArgs),
    /// Merge a session's conversations into your real ~/.claude now (sessions merge themselves when they end)
    Merge(MergeArgs),
    /// Remove old, empty and orphaned sessions, never an active one
    Gc(GcArgs),
    /// Install a newer Claude Code when no session is running
    Update(UpdateArgs),
    /// Export the sandbox as an OCI runtime spec (config.json) or bundle
    Spec(SpecArgs),
    /// Check what this machine supports (user namespaces, overlayfs, seccomp, claude)
    Doctor(DoctorArgs),
    /// List and show sandbox profiles
    Profile(ProfileArgs),
    /// Print shell completions, or install them for you (--install)
    Completions(CompletionsArgs),
    /// Run by an OCI runtime around a container `csbox spec` exported: record its start
    /// (--mark-start), and when it stops move what the session made among the project's
    /// hook and config files out of it
    #[command(hide = true)]
    Quarantine(QuarantineArgs),
    /// Write the man pages (csbox.1, csbox-run.1, ...) into a directory, for packagers
    #[command(hide = true)]
    Man(ManArgs),
}

pub fn main() -> i32 {
    // Rust's runtime ignores SIGPIPE, and an ignored signal survives execve: the command
    // in the sandbox would never get SIGPIPE (`yes | head` would spin), and `csbox ls |
    // head` would panic. Restore the default, as every C program has it.
    // SAFETY: setting a signal disposition at startup, single-threaded.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    crate::log::init_from_env();
    // A Tab in a shell whose completion script csbox printed: answer it and exit.
    crate::commands::complete::complete_if_asked(<Cli as clap::CommandFactory>::command);
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap prints help/version to stdout with exit 0, usage errors with exit 2.
            let _ = e.print();
            return e.exit_code();
        }
    };
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => report(&e),
    }
}

fn dispatch(cli: Cli) -> Result<i32> {
    use crate::commands::*;
    match cli.command {
        Command::Run(a) => run::run(a),
        Command::Ls(a) => ls::ls(a),
        Command::Show(a) => ls::show(a),
        Command::Diff(a) => diff::diff_cmd(a),
        Command::Merge(a) => merge::merge_cmd(a),
        Command::Enter(a) => enter::enter_cmd(a),
        Command::Stop(a) => stop::stop_cmd(a),
        Command::Rm(a) => rm::rm_cmd(a),
        Command::Gc(a) => gc::gc(a),
        Command::Update(a) => update::update(a),
        Command::Spec(a) => spec::spec(a),
        Command::Doctor(a) => doctor::doctor(a),
        Command::Profile(a) => profile::profile(a),
        Command::Quarantine(a) => quarantine::quarantine(a),
        Command::Completions(a) => completions::completions(a),
        Command::Man(a) => {
            use clap::CommandFactory;
            man::man(a, Cli::command())
        }
    }
}
