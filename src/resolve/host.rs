//! What resolve reads about the host beyond single paths: the mounts below the home, the
//! git worktree the working directory lies in, where /etc/resolv.conf points, the agent
//! sockets. Everything is read bounded, regular files only, and nothing from the
//! project is run (git's own layout files are read, git is not: it would obey the
//! project's config).

use std::path::{Path, PathBuf};

use crate::fsutil::read_regular;
use crate::paths::canonical_or_self;
use crate::plan::{GitLayout, HostLayout};

/// A `.git` file or `commondir` is one line.
const GIT_FILE_CAP: u64 = 4096;
/// Submodules and linked worktrees looked at, at most.
const GIT_LIST_CAP: usize = 256;

pub fn layout(
    home: &Path,
    store: &Path,
    cwd: &Path,
    uid: u32,
    env: &[(String, String)],
) -> HostLayout {
    let var = |k: &str| env.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    let runtime_dir = var("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from(format!("/run/user/{uid}")));
    let home = canonical_or_self(home);
    let socket = |p: PathBuf| is_socket(&p).then(|| canonical_or_self(&p));
    HostLayout {
        home_submounts: submounts(&home, &canonical_or_self(store)),
        git: git_layout(cwd),
        resolv_conf: std::fs::canonicalize("/etc/resolv.conf")
            .ok()
            .filter(|p| p.starts_with("/run/")),
        ssh_agent: var("SSH_AUTH_SOCK").map(PathBuf::from).and_then(socket),
        gpg_agent: socket(runtime_dir.join("gnupg/S.gpg-agent"))
            .or_else(|| socket(home.join(".gnupg/S.gpg-agent"))),
        runtime_dir,
    }
}

fn is_socket(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// Mount points strictly below `home` (not below the store), outermost only: a
/// recursive bind of each brings what is mounted deeper.
fn submounts(home: &Path, store: &Path) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = crate::fsutil::mount_points()
        .into_iter()
        .filter(|p| p.starts_with(home) && p != home && !p.starts_with(store))
        .collect();
    points.sort();
    points.dedup();
    let mut outer: Vec<PathBuf> = Vec::new();
    for p in points {
        if !outer.iter().any(|o| p.starts_with(o)) {
            outer.push(p);
        }
    }
    outer
}

fn read_line(p: &Path) -> Option<String> {
    let b = read_regular(p, GIT_FILE_CAP).ok()?;
    Some(String::from_utf8_lossy(&b).trim().to_string())
}

/// The nearest `.git` above the working directory, and what it points to.
pub fn git_layout(cwd: &Path) -> Option<GitLayout> {
    let (top, dotgit) = cwd
        .ancestors()
        .map(|d| (d.to_path_buf(), d.join(".git")))
        .find(|(_, g)| std::fs::symlink_metadata(g).is_ok())?;
    let md = std::fs::symlink_metadata(&dotgit).ok()?;
    let gitdir = if md.is_dir() {
        dotgit
    } else if md.is_file() {
        let line = read_line(&dotgit)?;
        let rel = line.strip_prefix("gitdir:")?.trim();
        canonical_or_self(&top.join(rel))
    } else {
        return None;
    };
    let common = match read_line(&gitdir.join("commondir")) {
        Some(rel) => canonical_or_self(&gitdir.join(rel)),
        None => gitdir.clone(),
    };
    let list = |d: PathBuf| -> Vec<PathBuf> {
        std::fs::read_dir(d)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .take(GIT_LIST_CAP)
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut modules = list(common.join("modules"));
    modules.sort();
    let mut worktree_configs: Vec<PathBuf> = list(common.join("worktrees"))
        .into_iter()
        .chain([gitdir.clone(), common.clone()])
        .map(|d| d.join("config.worktree"))
        .filter(|p| p.exists())
        .collect();
    worktree_configs.sort();
    worktree_configs.dedup();
    Some(GitLayout {
        top,
        gitdir,
        common,
        modules,
        worktree_configs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linked_worktree_points_at_its_common_dir() {
        let d = tempfile::tempdir().unwrap();
        let main = d.path().join("main");
        let wt = d.path().join("wt");
        std::fs::create_dir_all(main.join(".git/worktrees/wt")).unwrap();
        std::fs::create_dir_all(main.join(".git/modules/sub")).unwrap();
        std::fs::create_dir_all(wt.join("src")).unwrap();
        std::fs::write(
            wt.join(".git"),
            format!("gitdir: {}\n", main.join(".git/worktrees/wt").display()),
        )
        .unwrap();
        std::fs::write(main.join(".git/worktrees/wt/commondir"), "../..\n").unwrap();
        std::fs::write(main.join(".git/worktrees/wt/config.worktree"), "").unwrap();
        let g = git_layout(&wt.join("src")).unwrap();
        let real = |p: &Path| p.canonicalize().unwrap();
        assert_eq!(g.top, wt);
        assert_eq!(g.gitdir, real(&main.join(".git/worktrees/wt")));
        assert_eq!(g.common, real(&main.join(".git")));
        assert_eq!(g.modules, vec![real(&main.join(".git/modules/sub"))]);
        assert_eq!(
            g.worktree_configs,
            vec![real(&main.join(".git/worktrees/wt/config.worktree"))]
        );
        let m = git_layout(&main).unwrap();
        assert_eq!((m.top, m.gitdir.clone()), (main.clone(), main.join(".git")));
        assert_eq!(m.common, m.gitdir);
    }
}
