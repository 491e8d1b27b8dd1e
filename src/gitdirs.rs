//! The git dirs git keeps inside a repository's own: submodules' below `modules/` and
//! linked worktrees' below `worktrees/`. git finds a submodule's by its name, and a name
//! may hold slashes (`git submodule add URL libs/x` puts it at `modules/libs/x`); a
//! nested submodule's is in `modules/<a>/modules/<b>`, and a `.git` file pointing
//! anywhere below `modules/` or `worktrees/` is followed by every `git status` at the
//! top. So csbox lists them all, one rule at every depth (red-team 7, A7-1, A7-2): a
//! directory there is a git dir when it has a `HEAD`, or a `config`, `objects/` and
//! `refs/` (what a `commondir` may name for its config: red-team 6, A6-2); the walk goes
//! into the `modules/` of each git dir, and into every directory that is none (`libs/`
//! of `libs/x`). The same walk tells the plan what to pin at launch and the exit walk
//! where to look.
//!
//! The tree is hostile (the session may have written it): each directory is opened
//! beneath its parent, never through a link and never blocking, and the walk is
//! bounded in depth and in entries; where it stopped is returned, for the caller to say.

use std::ffi::{CStr, OsStr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Components below the repository's git dir the walk goes, at most: a submodule named
/// `a/b/c` nested three deep is at depth 12.
pub const DEPTH_CAP: usize = 32;
/// Entries of `modules/`, `worktrees/` and the directories below them looked at, at most.
pub const ENTRY_CAP: usize = 16_384;

/// Which of the two a directory lies below.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    /// `modules/`: submodules' git dirs.
    Modules,
    /// `worktrees/`: linked worktrees' git dirs.
    Worktrees,
}

/// One directory the walk went into.
pub struct Found<'a> {
    /// The directory, opened (no link followed).
    pub fd: &'a OwnedFd,
    pub path: &'a Path,
    pub area: Area,
    /// A git dir (else a directory on the way to one, like `modules/libs`).
    pub git: bool,
}

/// Every directory below `git_dir`'s (at `path`) `modules/` and `worktrees/` as the
/// module doc says, each given to `f`, shallowest first within a branch; where the walk
/// stopped at a bound, if it did.
pub fn walk(git_dir: &OwnedFd, path: &Path, f: &mut dyn FnMut(Found<'_>)) -> Option<PathBuf> {
    let mut w = Walker {
        seen: 0,
        cut: None,
        f,
    };
    for (name, area) in [(c"modules", Area::Modules), (c"worktrees", Area::Worktrees)] {
        if let Some(d) = open_dir_at(git_dir, name) {
            let sub = OsStr::from_bytes(name.to_bytes());
            w.area_at(&d, &path.join(sub), area, 1);
        }
    }
    w.cut
}

/// Whether a directory with these entries is a git dir (see the module doc).
pub fn is_git_dir(names: &[std::ffi::CString]) -> bool {
    let has = |n: &[u8]| names.iter().any(|c| c.to_bytes() == n);
    has(b"HEAD") || (has(b"config") && has(b"objects") && has(b"refs"))
}

/// What git keeps in a git dir itself (`modules/` is walked on its own): no submodule's
/// git dir is below them.
const GITS_OWN: &[&[u8]] = &[
    b"modules",
    b"objects",
    b"refs",
    b"logs",
    b"hooks",
    b"info",
    b"worktrees",
    b"branches",
    b"rr-cache",
    b"lfs",
    b"rebase-merge",
    b"rebase-apply",
    b"sequencer",
];

struct Walker<'f> {
    seen: usize,
    cut: Option<PathBuf>,
    f: &'f mut dyn FnMut(Found<'_>),
}

type Entries = Vec<(std::ffi::CString, rustix::fs::FileType)>;

impl Walker<'_> {
    /// `dir` (at `path`, `depth` components below the git dir), listed: the entries it has.
    fn area_at(&mut self, dir: &OwnedFd, path: &Path, area: Area, depth: usize) {
        // One listing per directory: a second read of the same fd starts at its end.
        if let Ok(entries) = crate::fsutil::read_entries(dir.as_raw_fd()) {
            self.area(&entries, dir, path, area, depth);
        }
    }

    /// The `entries` of `dir` (at `path`, `depth` components below the git dir).
    fn area(&mut self, entries: &Entries, dir: &OwnedFd, path: &Path, area: Area, depth: usize) {
        for (name, ft) in entries {
            if self.cut.is_some() {
                return;
            }
            // What the directory says is no directory is none (a file, a link).
            if !matches!(
                ft,
                rustix::fs::FileType::Directory | rustix::fs::FileType::Unknown
            ) {
                continue;
            }
            let child = path.join(OsStr::from_bytes(name.to_bytes()));
            self.seen += 1;
            if self.seen > ENTRY_CAP || depth >= DEPTH_CAP {
                self.cut = Some(child);
                return;
            }
            let Some(sub) = open_dir_at(dir, name) else {
                continue;
            };
            let Ok(below) = crate::fsutil::read_entries(sub.as_raw_fd()) else {
                continue;
            };
            let names: Vec<std::ffi::CString> = below.iter().map(|(n, _)| n.clone()).collect();
            let git = is_git_dir(&names);
            (self.f)(Found {
                fd: &sub,
                path: &child,
                area,
                git,
            });
            if !git {
                self.area(&below, &sub, &child, area, depth + 1);
                continue;
            }
            if names.iter().any(|n| n.to_bytes() == b"modules") {
                if let Some(m) = open_dir_at(&sub, c"modules") {
                    self.area_at(&m, &child.join("modules"), Area::Modules, depth + 2);
                }
            }
            // A submodule named `s/x` has its git dir at `modules/s/x` whether or not one
            // named `s` is at `modules/s`: what a git dir there holds besides git's own
            // dirs is looked into too.
            if area == Area::Modules {
                let own: Entries = below
                    .into_iter()
                    .filter(|(n, _)| !GITS_OWN.contains(&n.to_bytes()))
                    .collect();
                self.area(&own, &sub, &child, area, depth + 1);
            }
        }
    }
}

/// `dir/name`, a directory, opened read-only without following a link or blocking.
fn open_dir_at(dir: &OwnedFd, name: &CStr) -> Option<OwnedFd> {
    crate::fsutil::open_dir_at(dir, name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk(root: &Path, dirs: &[&str]) {
        for d in dirs {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
    }

    fn found(root: &Path) -> (Vec<(String, Area, bool)>, Option<PathBuf>) {
        let fd = crate::fsutil::open_dir_nofollow(root).unwrap();
        let mut out = Vec::new();
        let cut = walk(&fd, root, &mut |f| {
            let rel = f.path.strip_prefix(root).unwrap().display().to_string();
            out.push((rel, f.area, f.git));
        });
        out.sort_by(|a, b| a.0.cmp(&b.0));
        (out, cut)
    }

    #[test]
    fn git_dirs_are_found_at_every_depth_below_modules_and_worktrees() {
        let d = tempfile::tempdir().unwrap();
        let g = d.path();
        // Submodules `sm` (with a nested `inner`) and `libs/x`; a session's full git dir
        // at `modules/v/m`, a HEAD-less one at `worktrees/a/b`, a worktree `w`.
        mk(
            g,
            &[
                "modules/sm/objects",
                "modules/sm/modules/inner/objects",
                "modules/libs/x/refs",
                "modules/v/m/objects",
                "modules/v/m/refs",
                // A submodule `sm/x`'s git dir inside `sm`'s (red-team 7, A7-2).
                "modules/sm/x/objects",
                "worktrees/w",
                "worktrees/a/b/objects",
                "worktrees/a/b/refs",
                // Not git dirs' own `modules/`: not looked into.
                "modules/sm/refs/heads/deep/objects",
            ],
        );
        for f in [
            "modules/sm/HEAD",
            "modules/sm/modules/inner/HEAD",
            "modules/libs/x/HEAD",
            "modules/v/m/config",
            "modules/sm/x/HEAD",
            "worktrees/w/HEAD",
            "worktrees/a/b/config",
        ] {
            std::fs::write(g.join(f), "x\n").unwrap();
        }
        // A link is never followed.
        std::os::unix::fs::symlink(g.join("modules/sm"), g.join("modules/link")).unwrap();
        let (got, cut) = found(g);
        let want: Vec<(String, Area, bool)> = [
            ("modules/libs", Area::Modules, false),
            ("modules/libs/x", Area::Modules, true),
            ("modules/sm", Area::Modules, true),
            ("modules/sm/modules/inner", Area::Modules, true),
            ("modules/sm/x", Area::Modules, true),
            ("modules/v", Area::Modules, false),
            ("modules/v/m", Area::Modules, true),
            ("worktrees/a", Area::Worktrees, false),
            ("worktrees/a/b", Area::Worktrees, true),
            ("worktrees/w", Area::Worktrees, true),
        ]
        .into_iter()
        .map(|(p, a, g)| (p.to_string(), a, g))
        .collect();
        assert_eq!(got, want);
        assert_eq!(cut, None);
    }

    #[test]
    fn the_walk_stops_at_its_depth_bound_and_says_where() {
        let d = tempfile::tempdir().unwrap();
        let deep: String = (0..DEPTH_CAP + 3).map(|i| format!("d{i}/")).collect();
        mk(d.path(), &[&format!("modules/{deep}")]);
        let (got, cut) = found(d.path());
        assert_eq!(got.len(), DEPTH_CAP - 1, "{got:?}");
        let cut = cut.expect("a bound was hit");
        assert_eq!(
            cut.strip_prefix(d.path()).unwrap().components().count(),
            DEPTH_CAP + 1
        );
    }
}
