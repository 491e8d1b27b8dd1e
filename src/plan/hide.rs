//! What a plan hides: the profile's and the command line's hide list less what is
//! unhidden, and, under a copy-on-write home, the masks for those hidden paths that do
//! not exist yet (a credential file the host creates during the session must not show
//! through the home's lower layer).

use std::path::{Path, PathBuf};

use super::facts::PathFact;
use super::input::{Error, PlanInput};
use crate::profile::expand::lexical;
use crate::profile::Home;

/// A path spelled in a profile field or flag, expanded, with its fact.
pub(super) fn fact_of(
    input: &PlanInput,
    origin: &str,
    spec: &str,
    p: &str,
) -> Result<PathFact, Error> {
    let lex = lexical(p, &input.paths.home, &input.cwd).map_err(|why| Error::BadPath {
        origin: origin.to_string(),
        spec: spec.to_string(),
        why,
    })?;
    Ok(input.facts.get(&lex))
}

/// The hide list's facts, in order: the profile's entries but those it or `--unhide`
/// unhides, then `--hide` (which wins over an unhide).
pub(super) fn hide_list(input: &PlanInput) -> Result<Vec<PathFact>, Error> {
    let mut unhidden = crate::pathkey::PathSet::default();
    for u in &input.profile.unhide {
        unhidden.insert(fact_of(input, "profile field \"unhide\"", u, u)?.real);
    }
    for u in &input.overrides.unhide {
        unhidden.insert(fact_of(input, "--unhide", u, u)?.real);
    }
    let hides = input
        .profile
        .hide
        .iter()
        .map(|h| ("profile field \"hide\"", h));
    let mut out = Vec::new();
    for (origin, h) in hides.chain(input.overrides.hide.iter().map(|h| ("--hide", h))) {
        let f = fact_of(input, origin, h, h)?;
        if unhidden.contains(&f.real) && origin != "--hide" {
            continue;
        }
        out.push(f);
    }
    Ok(out)
}

/// Claude Code's own data in the home outside `~/.claude`, relative to the home: its
/// error and MCP-server logs for every project (`~/.cache/claude-cli-nodejs/<project
/// key>/`; red-team 9, A9-5). Under a copy-on-write home each is masked whether the host
/// has it or not, so a session starts with none of it and what its own Claude Code writes
/// there lands in its home layer.
pub const CLAUDE_HOME_DATA: &[&str] = &[".cache/claude-cli-nodejs"];

/// The hidden paths that do not exist and would show through the copy-on-write home's
/// lower layer if the host created them: below the home, not in what csbox mounts there
/// itself (the `~/.claude` view, the store, file systems bound back).
pub(super) fn home_masks(
    input: &PlanInput,
    home: &Path,
    mode: Home,
) -> Result<Vec<PathBuf>, Error> {
    if mode != Home::Overlay || input.profile.isolation != crate::profile::Isolation::Namespaces {
        return Ok(Vec::new());
    }
    let facts = input.facts;
    let own = [
        facts.real(&input.paths.claude_root),
        facts.real(&input.paths.claude_json),
        facts.real(&input.paths.sessions_dir),
    ];
    let mut out: Vec<PathBuf> = Vec::new();
    // Some hundred paths: a set, not `out.contains` (quadratic: 13 % of a launch's CPU).
    let mut seen = crate::pathkey::PathSet::default();
    let under = crate::pathkey::under;
    let outside = |p: &Path| {
        !under(p, home)
            || p == home
            || own.iter().any(|o| under(p, o))
            || facts.host.home_submounts.iter().any(|m| under(p, m))
    };
    // An existing hidden path is hidden by a bind (`mounts`), not here: a path the hide
    // list names is left to it.
    let mut bound = crate::pathkey::PathSet::default();
    for f in hide_list(input)? {
        let p = f.real;
        if f.kind.is_some() {
            bound.insert(p);
        } else if !outside(&p) && seen.insert(p.clone()) {
            out.push(p);
        }
    }
    for rel in CLAUDE_HOME_DATA {
        let p = facts.real(&input.paths.home.join(rel));
        if !outside(&p) && !bound.contains(&p) && seen.insert(p.clone()) {
            out.push(p);
        }
    }
    Ok(out)
}
