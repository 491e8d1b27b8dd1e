//! `csbox update`: the command line of the updater; the work is in `update`.

use clap::Args;

use crate::exit::Result;
use crate::update;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  csbox update --check\n  csbox update --check --json\n  csbox update --yes"
)]
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

pub fn update(a: UpdateArgs) -> Result<i32> {
    Ok(update::command(update::Request {
        check: a.check,
        channel: a.channel,
        json: a.json,
        yes: a.yes,
    })?)
}
