//! `csbox profile list` and `csbox profile show NAME`.

use clap::{Args, Subcommand};

use crate::exit::Result;
use crate::paths::Paths;
use crate::profile;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  csbox profile list\n  csbox profile show strict")]
pub struct ProfileArgs {
    #[command(subcommand)]
    pub command: ProfileCommand,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// List built-in and user profiles
    List,
    /// Print a resolved profile
    Show {
        /// A built-in or user profile name, or a path
        #[arg(add = clap_complete::engine::ArgValueCandidates::new(super::complete::profiles))]
        name: String,
    },
}

pub fn profile(args: ProfileArgs) -> Result<i32> {
    let paths = Paths::from_env()?;
    let dir = paths.user_profiles_dir();
    match args.command {
        ProfileCommand::List => {
            let rows = profile::list(&dir);
            let w = rows.iter().map(|(n, _, _)| n.len()).max().unwrap_or(4);
            for (name, origin, desc) in rows {
                println!("{name:<w$}  {origin:<8}  {desc}");
            }
        }
        ProfileCommand::Show { name } => {
            let p = profile::load(&name, &dir)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&p).expect("profile serialises")
            );
        }
    }
    Ok(0)
}
