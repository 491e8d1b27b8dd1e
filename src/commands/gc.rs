//! `csbox gc`: the command line of the cleaner; the work is in `gc`.

use clap::Args;

use crate::exit::Result;
use crate::gc::{self, units::Action};

#[derive(Debug, Args)]
#[command(
    long_about = "Remove old, empty and orphaned sessions, never an active one (one whose lock is held, checked at the moment of deletion).\n\nWithout --empty, --orphaned or --crashed, gc removes every inactive session that is old (last activity more than --days N ago, default 7), empty (its state holds only what csbox made) or orphaned (no valid session.json, and unchanged for an hour). A crashed session (it started and never ended: its supervisor was killed, the machine went down or the disk was full) is kept like an exited one and goes only when old, or with --crashed. --empty, --orphaned and --crashed restrict the run to the kinds named; add --days N to remove old ones too. A session with a file system mounted inside, one gc cannot read and one whose lock is no regular file are kept and named. Stale active/ links and .new-*/.trash-* leftovers older than an hour are always cleaned up.",
    after_help = "Examples:\n  csbox gc --dry-run\n  csbox gc --days 30\n  csbox gc --empty                   only empty sessions\n  csbox gc --max-size 10G --json\n  csbox gc --install-timer --calendar weekly --days 30\n  csbox gc --print-units"
)]
pub struct GcArgs {
    /// Print what would be removed and why; change nothing
    #[arg(long, conflicts_with = "timer")]
    pub dry_run: bool,
    /// A session is old when its last activity is more than N days ago [default: 7,
    /// unless --empty, --orphaned or --crashed restricts the run]
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = parse_days)]
    pub days: Option<u64>,
    /// Remove only empty sessions (and old ones if --days is given)
    #[arg(long)]
    pub empty: bool,
    /// Remove only orphaned sessions (and old ones if --days is given)
    #[arg(long)]
    pub orphaned: bool,
    /// Remove crashed sessions whatever their age (started, never ended; kept otherwise
    /// until old)
    #[arg(long)]
    pub crashed: bool,
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

/// `--days N`: a whole number of days, ≥ 0. "-1" reaches this parser (not clap's "unexpected
/// argument") so the message says what is wrong with the value.
fn parse_days(s: &str) -> std::result::Result<u64, String> {
    s.trim().parse::<u64>().map_err(|_| {
        format!("expected a whole number of days, 0 or more (like 7 or 30), not {s:?}")
    })
}

pub fn gc(a: GcArgs) -> Result<i32> {
    let timer = match (a.install_timer, a.uninstall_timer, a.print_units) {
        (true, _, _) => Some(Action::Install),
        (_, true, _) => Some(Action::Uninstall),
        (_, _, true) => Some(Action::Print),
        _ => None,
    };
    Ok(gc::run(&gc::Request {
        dry_run: a.dry_run,
        days: a.days,
        empty: a.empty,
        orphaned: a.orphaned,
        crashed: a.crashed,
        json: a.json,
        max_size: a.max_size,
        timer,
        calendar: a.calendar,
    })?)
}
