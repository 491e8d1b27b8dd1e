//! `csbox doctor`: the command line of the machine check; the work is in `doctor`.

use clap::Args;

use crate::exit::Result;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  csbox doctor\n  csbox doctor --json")]
pub struct DoctorArgs {
    /// Print the checks as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn doctor(a: DoctorArgs) -> Result<i32> {
    Ok(crate::doctor::command(a.json)?)
}
