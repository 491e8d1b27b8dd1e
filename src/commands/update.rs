//! `csbox update`: the command line of the updater; the work is in `update`.

use clap::Args;

use crate::exit::Result;
use crate::update;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  csbox update --check\n  csbox update --check --json\n  csbox update --yes"
)]
pub struct UpdateArgs {
    /// Only check; exit non-zero on errors
    #[arg(long)]
    pub check: bool,
    /// The dist-tag to follow
    #[arg(long, default_value = "latest")]
    pub channel: String,
    /// Print the result as one JSON object
    #[arg(long)]
    pub json: bool,
    /// Install without asking
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
