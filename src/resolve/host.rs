//! What resolve reads about the host beyond single paths: the mounts below the home, the
//! git worktree the working directory lies in, where /etc/resolv.conf points, the agent
//! sockets. Everything is read bounded, regular files only, and nothing from the
//! project is run (git's own layout files are read, git is not: it would obey the
//! project's config).

use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use crate::fsutil::read_regular;
use crate::gitdirs::Area;
use crate::paths::canonical_or_self;
use crate::plan::{GitLayout, HostLayout};

/// A `.git` file or `commondir` is one line.
const GIT_FILE_CAP: u64 = 4096;
/// A git config file is read at most this big, and includes followed this deep.
const GIT_CONFIG_CAP: u64 = 1 << 20;
const GIT_INCLUDE_DEPTH: usize = 4;
/// /proc/net/unix is read at most this big (a line is about 100 bytes).
const NET_UNIX_CAP: u64 = 64 << 20;
/// `__SO_ACCEPTCON` in /proc/net/unix's flags: a listening socket.
const SO_ACCEPTCON: u32 = 1 << 16;

/// What an unsandboxed plan needs of the host: where the runtime dir is.
pub fn unsandboxed(uid: u32, env: &[(String, String)]) -> HostLayout {
    HostLayout {
        runtime_dir: runtime_dir(uid, env),
        ..HostLayout::default()
    }
}

fn runtime_dir(uid: u32, env: &[(String, String)]) -> PathBuf {
    env.iter()
        .find(|(k, _)| k == "XDG_RUNTIME_DIR")
        .map(|(_, v)| PathBuf::from(v))
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from(format!("/run/user/{uid}")))
}

pub fn layout(
    home: &Path,
    store: &Path,
    cwd: &Path,
    uid: u32,
    env: &[(String, String)],
) -> HostLayout {
    let var = |k: &str| env.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    let runtime_dir = runtime_dir(uid, env);
    let home = canonical_or_self(home);
    let socket = |p: PathBuf| is_socket(&p).then(|| canonical_or_self(&p));
    let mut relative_hooks = Vec::new();
    let git = git_layout(cwd, &mut relative_hooks);
    if git.is_none() {
        // No repository around the project: what the user's and system's config say
        // still applies to one the session makes in it.
        for config in outer_git_configs() {
            config_refs(&config, cwd, 0, &mut Vec::new(), &mut relative_hooks);
        }
    }
    relative_hooks.sort();
    relative_hooks.dedup();
    let top_names = top_names(git.as_ref().map(|g| g.top.as_path()), cwd);
    HostLayout {
        home_submounts: submounts(&home, &canonical_or_self(store)),
        git,
        relative_hooks,
        top_names,
        resolv_conf: std::fs::canonicalize("/etc/resolv.conf")
            .ok()
            .filter(|p| p.starts_with("/run/")),
        ssh_agent: var("SSH_AUTH_SOCK").map(PathBuf::from).and_then(socket),
        gpg_agent: socket(runtime_dir.join("gnupg/S.gpg-agent"))
            .or_else(|| socket(home.join(".gnupg/S.gpg-agent"))),
        runtime_dir,
        sockets: listening_sockets(),
        csbox_exe: std::env::current_exe().ok().map(|p| canonical_or_self(&p)),
        inotify_max: inotify_max(),
        private_runtime: var("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| private_dir(p, uid)),
        ..HostLayout::default()
    }
}

/// The entries of the worktree's top and of the working directory (see
/// `HostLayout::top_names`), each read without following a link, bounded.
fn top_names(top: Option<&Path>, cwd: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in top.into_iter().chain([cwd]) {
        if out.iter().any(|p: &PathBuf| p.parent() == Some(dir)) {
            continue;
        }
        let Ok(fd) = crate::fsutil::open_dir_nofollow(dir) else {
            continue;
        };
        let Ok(names) = crate::fsutil::read_names(std::os::fd::AsRawFd::as_raw_fd(&fd)) else {
            continue;
        };
        out.extend(
            names
                .iter()
                .take(crate::plan::TOP_NAMES_CAP)
                .map(|n| dir.join(std::ffi::OsStr::from_bytes(n.to_bytes()))),
        );
    }
    out
}

/// The host's inotify bounds for the user (instances, watches).
fn inotify_max() -> Option<(u64, u64)> {
    let read = |n: &str| -> Option<u64> {
        let t = read_regular(Path::new(&format!("/proc/sys/user/{n}")), 64).ok()?;
        String::from_utf8_lossy(&t).trim().parse().ok()
    };
    Some((read("max_inotify_instances")?, read("max_inotify_watches")?))
}

/// A directory (not a link) owned by `uid` that nobody else may enter.
fn private_dir(p: &Path, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    p.is_absolute()
        && std::fs::symlink_metadata(p)
            .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o777 == 0o700)
}

/// The pathname sockets listening in this network namespace, as /proc/net/unix names
/// them, that exist here as socket files (resolved, deduplicated). A socket bound in
/// another network namespace is not listed there; one bound in another mount namespace
/// may not exist here.
pub fn listening_sockets() -> Vec<PathBuf> {
    let Ok(text) = read_regular(Path::new("/proc/net/unix"), NET_UNIX_CAP) else {
        return Vec::new();
    };
    // Sockets crowd a few directories: each directory is resolved once, then each
    // socket costs one lstat.
    let mut dirs: foldhash::HashMap<PathBuf, Option<PathBuf>> = Default::default();
    let mut out: Vec<PathBuf> = Vec::new();
    for p in listening_paths(&text) {
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            continue;
        };
        let real_dir = dirs
            .entry(parent.to_path_buf())
            .or_insert_with(|| dir_real(parent));
        let Some(real) = real_dir.as_ref().map(|d| d.join(name)) else {
            continue;
        };
        if is_socket_nofollow(&real) {
            out.push(real);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// /proc/net/unix lines: `Num RefCount Protocol Flags Type St Inode Path`; the path of
/// a listening (`__SO_ACCEPTCON`) socket bound to an absolute name (an abstract one
/// starts with `@`, an unbound one has none).
fn listening_paths(text: &[u8]) -> impl Iterator<Item = PathBuf> + '_ {
    use std::os::unix::ffi::OsStrExt;
    text.split(|b| *b == b'\n').skip(1).filter_map(|line| {
        let mut fields = line.splitn(8, |b| *b == b' ').filter(|f| !f.is_empty());
        let flags = fields.nth(3)?;
        let flags = u32::from_str_radix(std::str::from_utf8(flags).ok()?, 16).ok()?;
        let path = line.splitn(8, |b| *b == b' ').nth(7)?;
        (flags & SO_ACCEPTCON != 0 && path.first() == Some(&b'/'))
            .then(|| PathBuf::from(std::ffi::OsStr::from_bytes(path)))
    })
}

/// Where the directory `d` really is (O_PATH follows every link, /proc/self/fd names
/// the result), if it is one.
fn dir_real(d: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(d)
        .ok()?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .ok()
        .filter(|r| r.is_absolute())
}

fn is_socket_nofollow(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket())
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

/// The nearest `.git` above the working directory, and what it points to; the relative
/// `core.hooksPath` values of its configs (and the user's and system's) are added to
/// `relative_hooks`.
pub fn git_layout(cwd: &Path, relative_hooks: &mut Vec<PathBuf>) -> Option<GitLayout> {
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
    // Every submodule's and linked worktree's git dir, at any depth (`modules/libs/x`
    // of a submodule named `libs/x`, nested `modules/sm/modules/inner`: red-team 7, A7-1).
    let (mut modules, mut worktrees) = (Vec::new(), Vec::new());
    let cut = crate::fsutil::open_dir_nofollow(&common)
        .ok()
        .and_then(|fd| {
            crate::gitdirs::walk(&fd, &common, &mut |f| match (f.git, f.area) {
                (true, Area::Modules) => modules.push(f.path.to_path_buf()),
                (true, Area::Worktrees) => worktrees.push(f.path.to_path_buf()),
                (false, _) => {}
            })
        });
    modules.sort();
    worktrees.sort();
    // Each submodule's `.git` file in its worktree (`core.worktree` of its git dir's
    // config): rewritten, it points git at a dir of the session's, and a plain `git
    // status` at the top recurses into it (red-team 5, A5-2).
    let mut module_gitfiles: Vec<PathBuf> = modules
        .iter()
        .filter_map(|m| {
            let text = read_regular(&m.join("config"), GIT_CONFIG_CAP).ok()?;
            let wt = crate::gitconfig::parse(&String::from_utf8_lossy(&text))
                .entries
                .into_iter()
                .find(|e| e.section == "core" && e.sub.is_none() && e.key == "worktree")?
                .value;
            let abs = crate::profile::expand::lexical(&wt, &top, m).ok()?;
            (abs.starts_with(&top) && abs != top).then(|| abs.join(".git"))
        })
        .collect();
    module_gitfiles.sort();
    let mut config_paths = Vec::new();
    let repo = [
        common.join("config"),
        common.join("config.worktree"),
        gitdir.join("config.worktree"),
    ];
    // The user's and the system's config too: a relative `core.hooksPath = .githooks`
    // there makes every repository's `.githooks/` its hooks (red-team 9, A9-2).
    for config in outer_git_configs().into_iter().chain(repo) {
        config_refs(&config, &top, 0, &mut config_paths, relative_hooks);
    }
    config_paths.sort();
    config_paths.dedup();
    Some(GitLayout {
        top,
        gitdir,
        common,
        modules,
        module_gitfiles,
        worktrees,
        config_paths,
        cut,
    })
}

/// The config files git reads before a repository's own, as git finds them: the system's
/// (`GIT_CONFIG_SYSTEM`, else `/etc/gitconfig` and `/usr/local/etc/gitconfig` for a git
/// built with that prefix; none under `GIT_CONFIG_NOSYSTEM`) and the user's
/// (`GIT_CONFIG_GLOBAL`, else `$XDG_CONFIG_HOME/git/config` and `~/.gitconfig`).
fn outer_git_configs() -> Vec<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut out = Vec::new();
    if var("GIT_CONFIG_NOSYSTEM").is_none() {
        match var("GIT_CONFIG_SYSTEM") {
            Some(p) => out.push(p),
            None => out.extend(["/etc/gitconfig", "/usr/local/etc/gitconfig"].map(PathBuf::from)),
        }
    }
    match var("GIT_CONFIG_GLOBAL") {
        Some(p) => out.push(p),
        None => {
            let home = var("HOME").unwrap_or_default();
            let xdg = var("XDG_CONFIG_HOME").unwrap_or_else(|| home.join(".config"));
            out.push(xdg.join("git/config"));
            out.push(home.join(".gitconfig"));
        }
    }
    out
}

/// The paths a git config file names for git to run or read: `core.hooksPath` (relative
/// to the worktree's top) and the files it includes (relative to the config's own dir),
/// following includes a few levels deep. A relative hooksPath is also added to
/// `relative`, as written: git resolves it against the top of whichever worktree it runs
/// in, so `../hooks` names a dir inside the project for a repository nested in it
/// (red-team 9b, A9-2).
fn config_refs(
    config: &Path,
    top: &Path,
    depth: usize,
    out: &mut Vec<PathBuf>,
    relative: &mut Vec<PathBuf>,
) {
    let Ok(text) = read_regular(config, GIT_CONFIG_CAP) else {
        return;
    };
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let base = config.parent().unwrap_or(Path::new("/"));
    for e in crate::gitconfig::parse(&String::from_utf8_lossy(&text)).entries {
        // `~/` and relative paths as git expands them, `..` removed lexically.
        let at = |dir: &Path| crate::profile::expand::lexical(&e.value, &home, dir).ok();
        match (e.section.as_str(), e.key.as_str()) {
            ("core", "hookspath") => {
                let v = e.value.trim();
                if !v.is_empty() && !v.starts_with('/') && !v.starts_with('~') {
                    relative.push(PathBuf::from(v));
                }
                out.extend(at(top))
            }
            ("include" | "includeif", "path") => {
                let Some(p) = at(base) else { continue };
                if depth < GIT_INCLUDE_DEPTH && !out.contains(&p) {
                    out.push(p.clone());
                    config_refs(&p, top, depth + 1, out, relative);
                }
            }
            _ => {}
        }
    }
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
        // Git dirs have a HEAD; a submodule named `libs/x` (its git dir two levels down,
        // its work tree's `.git` file named by `core.worktree`) and one nested in `sub`.
        std::fs::create_dir_all(main.join(".git/modules/libs/x")).unwrap();
        std::fs::create_dir_all(main.join(".git/modules/sub/modules/inner")).unwrap();
        for g in [
            "worktrees/wt",
            "modules/sub",
            "modules/libs/x",
            "modules/sub/modules/inner",
        ] {
            std::fs::write(
                main.join(".git").join(g).join("HEAD"),
                "ref: refs/heads/m\n",
            )
            .unwrap();
        }
        std::fs::write(
            main.join(".git/modules/libs/x/config"),
            "[core]\n\tworktree = ../../../../libs/x\n",
        )
        .unwrap();
        std::fs::write(
            main.join(".git/worktrees/wt/config.worktree"),
            "[core]\n\thooksPath = .githooks # local\n",
        )
        .unwrap();
        std::fs::write(
            main.join(".git/config"),
            "[core]\n\tbare = false\n[include]\n\tpath = ../shared.gitconfig\n[includeIf \"gitdir:~/x/\"]\n\tpath = \"/etc/elsewhere\"\n",
        )
        .unwrap();
        std::fs::write(
            main.join("shared.gitconfig"),
            "[Core] HooksPath = \"tools/hooks\"\n",
        )
        .unwrap();
        let g = git_layout(&wt.join("src"), &mut Vec::new()).unwrap();
        let real = |p: &Path| p.canonicalize().unwrap();
        assert_eq!(g.top, wt);
        assert_eq!(g.gitdir, real(&main.join(".git/worktrees/wt")));
        assert_eq!(g.common, real(&main.join(".git")));
        assert_eq!(
            g.modules,
            ["libs/x", "sub", "sub/modules/inner"]
                .map(|m| real(&main.join(".git/modules").join(m)))
                .to_vec()
        );
        assert_eq!(g.cut, None);
        assert_eq!(g.worktrees, vec![real(&main.join(".git/worktrees/wt"))]);
        // hooksPath is relative to the worktree's top, an include to its config's dir.
        assert_eq!(
            g.config_paths,
            vec![
                PathBuf::from("/etc/elsewhere"),
                real(&main).join("shared.gitconfig"),
                wt.join(".githooks"),
                wt.join("tools/hooks"),
            ]
        );
        let m = git_layout(&main, &mut Vec::new()).unwrap();
        assert_eq!((m.top, m.gitdir.clone()), (main.clone(), main.join(".git")));
        assert_eq!(m.common, m.gitdir);
        assert_eq!(m.module_gitfiles, vec![main.join("libs/x/.git")]);
    }

    #[test]
    fn only_listening_pathname_sockets_are_taken_from_proc_net_unix() {
        let text = b"Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 20 /var/lib/app/d.sock
0000000000000000: 00000003 00000000 00000000 0001 03 21 /var/lib/app/d.sock
0000000000000000: 00000002 00000000 00010000 0001 01 22 @/tmp/.X11-unix/X0
0000000000000000: 00000002 00000000 00010000 0005 01 23 /srv/with space.sock
0000000000000000: 00000002 00000000 00000000 0002 07 24
";
        let got: Vec<PathBuf> = listening_paths(text).collect();
        assert_eq!(
            got,
            vec![
                PathBuf::from("/var/lib/app/d.sock"),
                PathBuf::from("/srv/with space.sock")
            ]
        );
    }
}
