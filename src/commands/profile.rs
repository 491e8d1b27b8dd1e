//! `csbox profile list` and `csbox profile show NAME`.

use crate::cli::{ProfileArgs, ProfileCommand};
use crate::error::Result;
use crate::paths::Paths;
use crate::profile;

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
