//! `csbox gc`: the command line of the cleaner; the work is in `gc`.

use clap::Args;

use crate::exit::Result;
use crate::gc::{self, units::Action};

#[derive(Debug, Args)]
#[command(
    long_about = "Remove old, empty and orphaned sessions, never an active one (one whose lock is held, checked at the moment of deletion).\n\nWithout --empty or --orphaned, gc removes every inactive session that is old (last activity more than --days N ago, default 7), empty (its state holds only what csbox made) or orphaned (no valid session.json, or it started and never ended). --empty and --orphaned restrict the run to the kinds named; add --days N to remove old ones too. Stale active/ links and .new-*/.trash-* leftovers older than an hour are always cleaned up.",
    after_help = "Examples:\n  csbox gc --dry-run\n  csbox gc --days 30\n  csbox gc --empty                   only empty sessions\n  csbox gc --max-size 10G --json\n  csbox gc --install-timer --calendar weekly --days 30\n  csbox gc --print-units"
)]
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
        json: a.json,
        max_size: a.max_size,
        timer,
        calendar: a.calendar,
    })?)
}
