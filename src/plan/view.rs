//! Step 0 of a plan: what the sandbox shows of the home and which project it makes
//! writable (the working directory, or the top of its git worktree), with the git dirs
//! a commit writes to and the project files that must stay read-only.

use std::path::{Path, PathBuf};

use super::input::{Error, PlanInput};
use super::model::*;
use crate::profile::{Access, Home, Isolation};

pub(super) fn view(input: &PlanInput) -> Result<(View, Vec<String>), Error> {
    let p = input.paths;
    let prof = input.profile;
    let facts = input.facts;
    let sandboxed = prof.isolation == Isolation::Namespaces;
    let home = facts.real(&p.home);
    let home_mode = if sandboxed { prof.home } else { Home::Visible };
    let mut notes = Vec::new();
    if !sandboxed {
        let view = View {
            home,
            home_mode,
            host_read_only: false,
            project: None,
            home_masks: Vec::new(),
        };
        return Ok((view, notes));
    }
    let cwd = &input.cwd;
    let hidden = home_mode == Home::Hidden;
    if hidden && (cwd == &home || cwd == &p.home || !cwd.starts_with("/")) {
        return Err(Error::WorkingDirIsHome {
            profile: prof.name.clone(),
            home: p.home.clone(),
        });
    }
    let read_only = prof.project == Access::Ro;
    // The top of the git worktree when it is a sensible project (not the home, nothing
    // csbox keeps); else the working directory.
    let git = facts.host.git.as_ref();
    let git_top = git
        .map(|g| g.top.clone())
        .filter(|t| overlap(input, t, read_only).is_none() && *t != home);
    let path = match git_top {
        Some(t) => t,
        None => cwd.clone(),
    };
    // /tmp itself is never bound: the host's sockets there (tmux, ssh-agent, X11) would
    // be reachable even read-only.
    if path == Path::new("/tmp") || (path == home && !hidden && !read_only) {
        if path == home {
            notes.push(format!(
                "the working directory is your home {}: nothing is bound writable; what the session writes lands in its own layer (see `csbox diff`)",
                home.display()
            ));
        }
        return Ok((view_without_project(input, home, home_mode)?, notes));
    }
    if let Some(e) = overlap(input, &path, read_only) {
        // A working directory that holds the home (/, /home) under a writable profile is
        // simply not bound; one inside ~/.claude or the store, or any under a read-only
        // or hidden-home profile, is refused.
        let holds_home_only = matches!(
            &e,
            Error::WorkingDirOverlaps {
                holds: true,
                what: "your home",
                ..
            }
        );
        if holds_home_only && !read_only && !hidden {
            notes.push(format!(
                "the working directory {} holds your home: nothing is bound writable; cd into a project to work on it",
                path.display()
            ));
            return Ok((view_without_project(input, home, home_mode)?, notes));
        }
        return Err(e);
    }
    let git = git.filter(|g| g.top == path);
    if let Some(at) = git.and_then(|g| g.cut.as_ref()) {
        notes.push(format!(
            "the submodules' and worktrees' git dirs in {} are too many or too deep to list (more than {} entries or {} levels; the listing stopped at {}): the config and hooks of those past it are not read-only inside",
            git.map(|g| g.common.display().to_string()).unwrap_or_default(),
            crate::gitdirs::ENTRY_CAP,
            crate::gitdirs::DEPTH_CAP,
            at.display()
        ));
    }
    let prot = super::protect::protection(input, &path, git);
    let git_dirs = super::protect::roots(&path, git).split_off(1);
    let project = ProjectView {
        path,
        read_only,
        git_dirs,
        protected: prot.protected,
        pinned: prot.pinned,
        watched: prot.watched,
        watched_dirs: prot.watched_dirs,
        patterns: prot.patterns,
        nested_hooks: input.facts.host.relative_hooks.clone(),
    };
    let view = View {
        home_masks: super::hide::home_masks(input, &home, home_mode)?,
        home,
        home_mode,
        host_read_only: true,
        project: Some(project),
    };
    Ok((view, notes))
}

fn view_without_project(input: &PlanInput, home: PathBuf, home_mode: Home) -> Result<View, Error> {
    Ok(View {
        home_masks: super::hide::home_masks(input, &home, home_mode)?,
        home,
        home_mode,
        host_read_only: true,
        project: None,
    })
}

/// Why binding `dir` as the project would cover the `~/.claude` view or the home, reveal
/// the session store, or let the session loosen csbox itself (its profiles, its systemd
/// units, its binary under the home): it holds one of them, or lies inside one.
/// Compared as the kernel resolves them (the facts are canonical).
fn overlap(input: &PlanInput, dir: &Path, read_only: bool) -> Option<Error> {
    let p = input.paths;
    let facts = input.facts;
    let home = facts.real(&p.home);
    let exe = facts
        .host
        .csbox_exe
        .clone()
        .filter(|e| e.starts_with(&home));
    let checks = [
        ("your home", Some(home.clone()), false, ""),
        ("~/.claude", Some(facts.real(&p.claude_root)), true, ""),
        ("the session store", Some(facts.real(&p.sessions_dir)), true, ""),
        (
            "csbox's configuration",
            Some(facts.real(&p.config_home.join("csbox"))),
            true,
            ": a session could write a profile that turns every later sandbox off",
        ),
        (
            "your systemd user units",
            Some(facts.real(&p.config_home.join("systemd/user"))),
            true,
            ": a session could install a unit that runs outside any sandbox (csbox's own gc units live there)",
        ),
        (
            "the csbox binary",
            exe,
            false,
            ": a session could replace the program every later sandbox is made by",
        ),
    ];
    for (what, other, not_inside, why) in checks {
        let Some(other) = other else { continue };
        let holds = other.starts_with(dir);
        if holds || (not_inside && dir.starts_with(&other)) {
            return Some(Error::WorkingDirOverlaps {
                profile: input.profile.name.clone(),
                cwd: dir.to_path_buf(),
                read_only,
                holds,
                what,
                dir: other,
                why,
            });
        }
    }
    None
}
