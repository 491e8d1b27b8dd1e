//! `csbox man --out DIR` (hidden): the man pages, csbox.1 and one per subcommand
//! (csbox-run.1, csbox-profile-show.1, …), rendered by clap_mangen from the very clap
//! definitions `--help` prints, so the two cannot drift apart. Packagers and `install.sh`
//! run it; it is not a user command, hence hidden.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::error::Error;
use crate::exit::Result;

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `cmd` is the whole command line (`Cli::command()`), passed in by the dispatcher.
pub fn man(a: ManArgs, cmd: clap::Command) -> Result<i32> {
    if a.out.exists() && !a.out.is_dir() {
        return Err(Error::Usage(format!("--out {}: not a directory", a.out.display())).into());
    }
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io("create", &a.out, e))?;
    // Built once so every subcommand knows its full name ("csbox-run") and its usage.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_pages(&cmd, &a.out, &mut written)?;
    for p in written {
        println!("{}", p.display());
    }
    Ok(0)
}

fn write_pages(cmd: &clap::Command, out: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    let page = clap_mangen::Man::new(cmd.clone())
        .date(page_date())
        .manual("csbox manual");
    let path = out.join(page.get_filename());
    let mut text = Vec::new();
    page.render(&mut text)
        .map_err(|e| Error::io("render", &path, e))?;
    std::fs::write(&path, text).map_err(|e| Error::io("write", &path, e))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, out, written)?;
    }
    Ok(())
}

/// The date in the page footer: `SOURCE_DATE_EPOCH` when a package build sets it
/// (reproducible builds), else today. Never empty: clap_mangen drops an empty `.TH` field,
/// which shifts the source into the date's place.
fn page_date() -> String {
    let t = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
        .unwrap_or_else(std::time::SystemTime::now);
    humantime::format_rfc3339(t).to_string()[..10].to_string()
}
