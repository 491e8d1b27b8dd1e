//! Step 0 of a plan: what the sandbox shows of the home and which project it makes
//! writable (the working directory, or the top of its git worktree), with the git dirs
//! a commit writes to and the project files that must stay read-only.

use std::path::{Path, PathBuf};

use super::facts::{Facts, GitLayout};
use super::input::{Error, PlanInput};
use super::model::*;
use crate::profile::{Access, Home, Isolation};

/// Project files that run code on the host later, relative to the project, when the
/// profile does not list its own: what Claude Code's own sandbox protects too.
pub const PROTECTED: &[&str] = &[
    ".git/hooks",
    ".git/config",
    ".gitmodules",
    ".claude/settings.json",
    ".claude/settings.local.json",
    ".claude/commands",
    ".claude/agents",
    ".mcp.json",
    ".vscode",
    ".idea",
    ".envrc",
];

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
        return Ok((view_without_project(home, home_mode), notes));
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
            return Ok((view_without_project(home, home_mode), notes));
        }
        return Err(e);
    }
    let git = git.filter(|g| g.top == path);
    let (protected, watched) = protection(input, &path, git);
    let git_dirs = git
        .map(|g| {
            let mut dirs = vec![g.common.clone()];
            if !g.gitdir.starts_with(&g.common) {
                dirs.push(g.gitdir.clone());
            }
            dirs.retain(|d| !d.starts_with(&path));
            dirs
        })
        .unwrap_or_default();
    let project = ProjectView {
        path,
        read_only,
        git_dirs,
        protected,
        watched,
    };
    let view = View {
        home,
        home_mode,
        host_read_only: true,
        project: Some(project),
    };
    Ok((view, notes))
}

fn view_without_project(home: PathBuf, home_mode: Home) -> View {
    View {
        home,
        home_mode,
        host_read_only: true,
        project: None,
    }
}

/// Why binding `dir` as the project would cover the `~/.claude` view or the home, or
/// reveal the session store: it holds one of them, or lies inside ~/.claude or the
/// store. Compared as the kernel resolves them (the facts are canonical).
fn overlap(input: &PlanInput, dir: &Path, read_only: bool) -> Option<Error> {
    let p = input.paths;
    let facts = input.facts;
    for (what, other, not_inside) in [
        ("your home", facts.real(&p.home), false),
        ("~/.claude", facts.real(&p.claude_root), true),
        ("the session store", facts.real(&p.sessions_dir), true),
    ] {
        let holds = other.starts_with(dir);
        if holds || (not_inside && dir.starts_with(&other)) {
            return Some(Error::WorkingDirOverlaps {
                profile: input.profile.name.clone(),
                cwd: dir.to_path_buf(),
                read_only,
                holds,
                what,
                dir: other,
            });
        }
    }
    None
}

/// The profile's protected paths in this project (and in its git dirs), split into those
/// that exist (bound read-only) and those that do not (watched: reported if created).
fn protection(
    input: &PlanInput,
    project: &Path,
    git: Option<&GitLayout>,
) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let prof = input.profile;
    let facts: &Facts = input.facts;
    let list: Vec<&str> = if prof.protect.is_empty() {
        PROTECTED.to_vec()
    } else {
        prof.protect.iter().map(String::as_str).collect()
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    for rel in list {
        if rel == ".git/config" && prof.allow_git_config {
            continue;
        }
        // A linked worktree's `.git` is a file: its hooks and config are the common dir's.
        let p = match (rel.strip_prefix(".git/"), git) {
            (Some(inner), Some(g)) => g.common.join(inner),
            _ => project.join(rel),
        };
        paths.push(p);
    }
    if let Some(g) = git {
        for m in &g.modules {
            paths.push(m.join("hooks"));
            if !prof.allow_git_config {
                paths.push(m.join("config"));
            }
        }
        if !prof.allow_git_config {
            paths.extend(g.worktree_configs.iter().cloned());
        }
    }
    let (mut protected, mut watched) = (Vec::new(), Vec::new());
    for p in paths {
        if protected.contains(&p) || watched.contains(&p) {
            continue;
        }
        match facts.kind(&p) {
            Some(_) => protected.push(p),
            None => watched.push(p),
        }
    }
    (protected, watched)
}

/// The paths [`view`] asks facts about, for `resolve`.
pub(super) fn wanted(
    input_cwd: &Path,
    prof: &crate::profile::Profile,
    git: Option<&GitLayout>,
) -> Vec<PathBuf> {
    let list: Vec<&str> = if prof.protect.is_empty() {
        PROTECTED.to_vec()
    } else {
        prof.protect.iter().map(String::as_str).collect()
    };
    let top = git
        .map(|g| g.top.clone())
        .unwrap_or_else(|| input_cwd.to_path_buf());
    let mut out = Vec::new();
    for base in [top.as_path(), input_cwd] {
        for rel in &list {
            match (rel.strip_prefix(".git/"), git) {
                (Some(inner), Some(g)) => out.push(g.common.join(inner)),
                _ => out.push(base.join(rel)),
            }
        }
    }
    if let Some(g) = git {
        for m in &g.modules {
            out.push(m.join("hooks"));
            out.push(m.join("config"));
        }
        out.extend(g.worktree_configs.iter().cloned());
        out.push(g.top.clone());
        out.push(g.common.clone());
        out.push(g.gitdir.clone());
    }
    out
}
