//! The command line: clap definitions and dispatch. Every subcommand of the product is
//! registered here; each one's work lives in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::error::{report, Result};

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
    #[command(
        after_help = "Examples:\n  csbox run\n  csbox run --name review -- claude --resume\n  csbox run --session 0193a1b2      re-enter an inactive session with its state\n  csbox run --rm -- bash -c 'make test'\n  csbox run --dry-run               print the sandbox plan as JSON\n  csbox run --profile strict        home hidden but the project, no network\n  csbox run --profile ci --json-status 3 -- claude -p 'fix the build' 3>status.json\n  csbox run --ro-bind ~/datasets --net none -- bash"
    )]
    Run(RunArgs),
    /// List sessions, newest first
    #[command(
        after_help = "Examples:\n  csbox ls\n  csbox ls --active\n  csbox ls --json | jq '.[].id'\n  csbox ls --size"
    )]
    Ls(LsArgs),
    /// Show one session, all its fields
    #[command(after_help = "Examples:\n  csbox show 0193a1b2\n  csbox show fix-login --json")]
    Show(ShowArgs),
    /// Remove old, empty and orphaned sessions, never an active one
    #[command(
        long_about = "Remove old, empty and orphaned sessions, never an active one (one whose lock is held, checked at the moment of deletion).\n\nWithout --empty or --orphaned, gc removes every inactive session that is old (last activity more than --days N ago, default 7), empty (its state holds only what csbox made) or orphaned (no valid session.json, or it started and never ended). --empty and --orphaned restrict the run to the kinds named; add --days N to remove old ones too. Stale active/ links and .new-*/.trash-* leftovers older than an hour are always cleaned up.",
        after_help = "Examples:\n  csbox gc --dry-run\n  csbox gc --days 30\n  csbox gc --empty                   only empty sessions\n  csbox gc --max-size 10G --json\n  csbox gc --install-timer --calendar weekly --days 30\n  csbox gc --print-units"
    )]
    Gc(GcArgs),
    /// Install a newer Claude Code when no session is running
    #[command(
        after_help = "Examples:\n  csbox update --check\n  csbox update --check --json\n  csbox update --yes"
    )]
    Update(UpdateArgs),
    /// Export the sandbox as an OCI runtime spec (config.json) or bundle
    #[command(
        after_help = "Examples:\n  csbox spec > config.json              preview (no session)\n  csbox spec --profile ci --new --bundle ./bundle -- claude -p 'run the tests'\n  sudo runc run -b ./bundle job1\n  csbox spec --session 0193a1b2 --rootless --bundle ./b"
    )]
    Spec(SpecArgs),
    /// Check what this machine supports (user namespaces, overlayfs, seccomp, claude)
    #[command(after_help = "Examples:\n  csbox doctor\n  csbox doctor --json")]
    Doctor(DoctorArgs),
    /// List and show sandbox profiles
    #[command(after_help = "Examples:\n  csbox profile list\n  csbox profile show strict")]
    Profile(ProfileArgs),
    /// Print shell completions
    #[command(
        after_help = "Examples:\n  csbox completions bash > ~/.local/share/bash-completion/completions/csbox\n  csbox completions zsh > ~/.zfunc/_csbox"
    )]
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A human label for the new session
    #[arg(long)]
    pub name: Option<String>,
    /// Re-enter an existing, inactive session (id, id prefix or name)
    #[arg(long, conflicts_with = "name")]
    pub session: Option<String>,
    /// Delete the session when it exits
    #[arg(long)]
    pub rm: bool,
    /// Print the sandbox plan as JSON and run nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Sandbox profile: a built-in (default, strict, ci, compat), a user profile name, or a path
    #[arg(long, env = "CSBOX_PROFILE", default_value = "default")]
    pub profile: String,
    /// Bind SRC at DST (default: the same path), read-write, for this run
    #[arg(long = "bind", value_name = "SRC[:DST]")]
    pub bind: Vec<String>,
    /// Bind SRC at DST read-only, for this run
    #[arg(long = "ro-bind", value_name = "SRC[:DST]")]
    pub ro_bind: Vec<String>,
    /// Hide a file or directory inside the sandbox, for this run
    #[arg(long, value_name = "PATH")]
    pub hide: Vec<String>,
    /// Network: `none` (only lo) or `host`
    #[arg(long, value_name = "none|host", value_parser = ["none", "host"])]
    pub net: Option<String>,
    /// Set an environment variable inside
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Write {session,pid,started} at start and {exit_code|signal,ended} at end as JSON lines to a file or an open fd
    #[arg(long, value_name = "PATH|FD")]
    pub json_status: Option<String>,
    /// Keep the session at exit even if the profile removes it (ci)
    #[arg(long, conflicts_with = "rm")]
    pub keep: bool,
    /// The command and its arguments (default: claude)
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print all records as one JSON array
    #[arg(long)]
    pub json: bool,
    /// Only active sessions
    #[arg(long)]
    pub active: bool,
    /// Compute each session's size on disk (walks every file)
    #[arg(long)]
    pub size: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Session id, unique id prefix, or name
    pub id: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Print what would be removed and why; change nothing
    #[arg(long, conflicts_with = "timer")]
    pub dry_run: bool,
    /// A session is old when its last activity is more than N days ago [default: 7,
    /// unless --empty or --orphaned restricts the run]
    #[arg(long, value_name = "N")]
    pub days: Option<u64>,
    /// Remove only empty sessions (and old ones if --days is given)
    #[arg(long)]
    pub empty: bool,
    /// Remove only orphaned sessions (and old ones if --days is given)
    #[arg(long)]
    pub orphaned: bool,
    /// Print the report as JSON
    #[arg(long, conflicts_with = "timer")]
    pub json: bool,
    /// Then remove the oldest inactive sessions until the store is under SIZE (10G, 500M)
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<String>,
    /// Install a systemd user timer that runs gc with the rules given
    #[arg(long, group = "timer")]
    pub install_timer: bool,
    /// Disable and remove the systemd user timer
    #[arg(long, group = "timer")]
    pub uninstall_timer: bool,
    /// Print the systemd units (for system-wide installs and packagers)
    #[arg(long, group = "timer")]
    pub print_units: bool,
    /// OnCalendar= for the timer
    #[arg(long, default_value = "weekly", requires = "timer")]
    pub calendar: String,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Only check, install nothing. Exit code: 0 up to date, 10 a newer version is
    /// available, 125 the check failed
    #[arg(long)]
    pub check: bool,
    /// The dist-tag to follow (latest, stable, or any other tag)
    #[arg(long, default_value = "latest")]
    pub channel: String,
    /// Print the result as one JSON object on stdout; a failure prints {"error": ...,
    /// "installed": ...}
    #[arg(long)]
    pub json: bool,
    /// Install without asking (without a terminal csbox never asks)
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct SpecArgs {
    /// Sandbox profile: a built-in (default, strict, ci), a user profile name, or a path
    #[arg(long, env = "CSBOX_PROFILE", default_value = "default")]
    pub profile: String,
    /// Use an existing session's layer (id, id prefix or name)
    #[arg(long)]
    pub session: Option<String>,
    /// Create a new session for the bundle
    #[arg(long, conflicts_with = "session")]
    pub new: bool,
    /// Write a complete bundle (config.json + rootfs/) to DIR
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// A spec for an unprivileged runtime user (a user namespace maps your uid and gid)
    #[arg(long)]
    pub rootless: bool,
    /// The command and its arguments (default: claude)
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ProfileArgs {
    #[command(subcommand)]
    pub command: ProfileCommand,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// List built-in and user profiles
    List,
    /// Print a resolved profile
    Show { name: String },
}

pub fn main() -> i32 {
    // Rust's runtime ignores SIGPIPE, and an ignored signal survives execve: the command
    // in the sandbox would never get SIGPIPE (`yes | head` would spin), and `csbox ls |
    // head` would panic. Restore the default, as every C program has it.
    // SAFETY: setting a signal disposition at startup, single-threaded.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    crate::log::init_from_env();
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
    use crate::commands;
    match cli.command {
        Command::Run(a) => commands::run::run(a),
        Command::Ls(a) => commands::ls::ls(a),
        Command::Show(a) => commands::ls::show(a),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "csbox", &mut std::io::stdout());
            Ok(0)
        }
        Command::Gc(a) => crate::gc::run(a),
        Command::Update(a) => crate::update::command(a),
        Command::Spec(a) => commands::spec::spec(a),
        Command::Doctor(a) => crate::doctor::command(a),
        Command::Profile(a) => commands::profile::profile(a),
    }
}
