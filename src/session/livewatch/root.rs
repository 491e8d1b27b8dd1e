//! The watches of the project's own code-steering paths: at its top and in its git dirs
//! (`ProjectView::watched`, `watched_dirs`), each directory with the names that matter there.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::plan::ProjectView;

/// What wakes the watch in one directory: any new entry, or only these names.
pub(super) type Names = Option<Vec<OsString>>;

/// The directories to watch and the names that matter in each: for a watched path, its
/// nearest existing ancestor within the project (or a git dir of it) and the name below
/// that leads to it; for a watched directory, the directory (any new entry) and each
/// entry the session made there (the names it looks for).
pub(super) fn targets(p: &ProjectView) -> Vec<(PathBuf, Names)> {
    let roots: Vec<&PathBuf> = std::iter::once(&p.path).chain(&p.git_dirs).collect();
    let mut out: Vec<(PathBuf, Names)> = Vec::new();
    let mut add =
        |dir: PathBuf, name: Option<OsString>| match out.iter_mut().find(|(d, _)| *d == dir) {
            Some((_, names)) => {
                if let (Some(v), Some(n)) = (names.as_mut(), name.clone()) {
                    if !v.contains(&n) {
                        v.push(n);
                    }
                } else {
                    *names = None;
                }
            }
            None => out.push((dir, name.map(|n| vec![n]))),
        };
    let is_dir = |d: &Path| std::fs::symlink_metadata(d).is_ok_and(|m| m.is_dir());
    for w in &p.watched {
        // A watched directory that exists now (`.git/hooks` made by the session's `git
        // init`, where the project had none): what arrives in it is looked at at once, not
        // at exit (red-team 8, A8-3: a pre-commit added to it ran on the host's commit).
        if is_dir(&w.path) {
            add(w.path.clone(), None);
        }
        let Some(root) = roots
            .iter()
            .filter(|r| w.path.starts_with(r))
            .max_by_key(|r| r.components().count())
        else {
            continue;
        };
        let mut below = w.path.as_path();
        while let Some(parent) = below.parent() {
            if !parent.starts_with(root) {
                break;
            }
            if is_dir(parent) {
                add(parent.to_path_buf(), below.file_name().map(OsString::from));
                break;
            }
            below = parent;
        }
    }
    // The top, for the protect patterns (`*.code-workspace`): the events' names are
    // matched against them (`Watch::events`); the pattern itself stands for them here.
    if let Some(pat) = p.patterns.first() {
        add(p.path.clone(), Some(OsString::from(pat)));
    }
    for wd in &p.watched_dirs {
        let mut d = wd.dir.as_path();
        while !is_dir(d) {
            match d.parent() {
                Some(up) if roots.iter().any(|r| up.starts_with(r)) => d = up,
                _ => break,
            }
        }
        if d == wd.dir {
            add(d.to_path_buf(), None);
            for e in std::fs::read_dir(d)
                .into_iter()
                .flatten()
                .flatten()
                .take(1024)
            {
                let name = e.file_name();
                if wd.known.iter().any(|k| OsString::from(k) == name) || !is_dir(&e.path()) {
                    continue;
                }
                for n in &wd.names {
                    add(e.path(), Some(n.into()));
                }
            }
        } else if is_dir(d) {
            let next = wd
                .dir
                .strip_prefix(d)
                .ok()
                .and_then(|r| r.components().next());
            add(d.to_path_buf(), next.map(|c| c.as_os_str().to_os_string()));
        }
    }
    out
}
