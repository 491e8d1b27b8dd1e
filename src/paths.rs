//! The one place that reads `HOME`, `CLAUDE_ROOT`, `SESSIONS_DIR`, `CLAUDE_BIN` and the XDG
//! variables, and turns them into absolute paths.
//!
//! The store lives outside `CLAUDE_ROOT` by default (`$XDG_DATA_HOME/csbox/sessions`): the
//! session's overlay uses `CLAUDE_ROOT` as its lower layer, and an upper dir inside its own
//! lower dir is refused by older kernels, gives ELOOP on newer ones, and other sessions'
//! writes would change the lower layer under a live mount. `~/.claude/sessions` is kept as a
//! symlink to the store so the old scripts' habits (`ls ~/.claude/sessions/active/`) work.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub home: PathBuf,
    /// The user's real Claude config dir (`CLAUDE_ROOT`, default `~/.claude`).
    pub claude_root: PathBuf,
    /// `~/.claude.json`, which Claude Code keeps in `$HOME` when `CLAUDE_CONFIG_DIR` is unset.
    pub claude_json: PathBuf,
    /// The session store (`SESSIONS_DIR`).
    pub sessions_dir: PathBuf,
    /// True when `SESSIONS_DIR` was not set and the default is used.
    pub sessions_dir_is_default: bool,
    /// `CLAUDE_BIN` as given, or None to look `claude` up on PATH.
    pub claude_bin: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME` (default `~/.config`), for user profiles and systemd units.
    pub config_home: PathBuf,
    /// `$XDG_DATA_HOME` (default `~/.local/share`), for the store and bash completions.
    pub data_home: PathBuf,
    pub path_var: Option<OsString>,
}

/// What the environment said; separated so path logic is testable without touching env.
#[derive(Debug, Default, Clone)]
pub struct EnvInput {
    pub home: Option<OsString>,
    pub claude_root: Option<OsString>,
    pub sessions_dir: Option<OsString>,
    pub claude_bin: Option<OsString>,
    pub xdg_data_home: Option<OsString>,
    pub xdg_config_home: Option<OsString>,
    pub path: Option<OsString>,
    pub cwd: PathBuf,
}

impl EnvInput {
    pub fn from_process() -> Result<Self> {
        let get = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let mut env = EnvInput {
            home: get("HOME"),
            claude_root: get("CLAUDE_ROOT"),
            sessions_dir: get("SESSIONS_DIR"),
            claude_bin: get("CLAUDE_BIN"),
            xdg_data_home: get("XDG_DATA_HOME"),
            xdg_config_home: get("XDG_CONFIG_HOME"),
            path: get("PATH"),
            cwd: PathBuf::new(),
        };
        // The working directory only makes relative variables absolute: `ls`, `gc` and
        // `show` run from a deleted one (getcwd ENOENT) as long as none is relative.
        env.cwd = match std::env::current_dir() {
            Ok(cwd) => cwd,
            Err(e) => {
                let vars = [
                    ("HOME", &env.home),
                    ("CLAUDE_ROOT", &env.claude_root),
                    ("SESSIONS_DIR", &env.sessions_dir),
                    ("XDG_DATA_HOME", &env.xdg_data_home),
                    ("XDG_CONFIG_HOME", &env.xdg_config_home),
                ];
                if let Some((k, _)) = vars
                    .iter()
                    .find(|(_, v)| v.as_ref().is_some_and(|v| Path::new(v).is_relative()))
                {
                    return Err(Error::io("getcwd", ".", e).hint(format!(
                        "{k} is a relative path and the working directory is gone: cd to an existing directory, or make {k} absolute"
                    )));
                }
                PathBuf::from("/")
            }
        };
        Ok(env)
    }
}

impl Paths {
    pub fn from_env() -> Result<Self> {
        Self::resolve(&EnvInput::from_process()?)
    }

    pub fn resolve(env: &EnvInput) -> Result<Self> {
        let home = match &env.home {
            Some(h) => absolute(&env.cwd, Path::new(h)),
            None => {
                return Err(Error::Usage(
                    "HOME is not set: csbox needs it to find ~/.claude (set HOME or CLAUDE_ROOT and SESSIONS_DIR)".into(),
                ))
            }
        };
        let claude_root = match &env.claude_root {
            Some(p) => absolute(&env.cwd, Path::new(p)),
            None => home.join(".claude"),
        };
        let data_home = match &env.xdg_data_home {
            Some(d) if Path::new(d).is_absolute() => PathBuf::from(d),
            _ => home.join(".local/share"),
        };
        let (sessions_dir, sessions_dir_is_default) = match &env.sessions_dir {
            Some(p) => (absolute(&env.cwd, Path::new(p)), false),
            None => (data_home.join("csbox/sessions"), true),
        };
        let config_home = match &env.xdg_config_home {
            Some(d) if Path::new(d).is_absolute() => PathBuf::from(d),
            _ => home.join(".config"),
        };
        Ok(Paths {
            claude_json: home.join(".claude.json"),
            home,
            claude_root,
            sessions_dir,
            sessions_dir_is_default,
            claude_bin: env.claude_bin.as_ref().map(PathBuf::from),
            config_home,
            data_home,
            path_var: env.path.clone(),
        })
    }

    /// `CLAUDE_ROOT/sessions`: where the old scripts kept sessions; now a link to the store.
    pub fn legacy_sessions_link(&self) -> PathBuf {
        self.claude_root.join("sessions")
    }

    pub fn update_lock(&self) -> PathBuf {
        self.claude_root.join("update.lock")
    }

    pub fn update_log(&self) -> PathBuf {
        self.claude_root.join("update.log")
    }

    pub fn user_profiles_dir(&self) -> PathBuf {
        self.config_home.join("csbox/profiles")
    }

    /// True when the store lies inside `CLAUDE_ROOT` (the overlapping-layers case).
    pub fn store_inside_claude_root(&self) -> bool {
        let root = canonical_or_self(&self.claude_root);
        let store = canonical_or_self(&self.sessions_dir);
        store.starts_with(&root)
    }

    /// The command run when `csbox run` gets no `-- CMD`: `CLAUDE_BIN`, else `claude` on
    /// PATH, else the native installer's `~/.local/bin/claude` (Debian's `~/.profile` puts
    /// that directory on PATH only at the first login after it exists).
    pub fn find_claude(&self) -> Option<PathBuf> {
        match &self.claude_bin {
            Some(p) if p.components().count() > 1 => Some(p.clone()),
            Some(p) => find_on_path(p.as_os_str(), self.path_var.as_deref()),
            None => find_on_path("claude".as_ref(), self.path_var.as_deref()).or_else(|| {
                let native = self.home.join(".local/bin");
                find_on_path("claude".as_ref(), Some(native.as_os_str()))
            }),
        }
    }
}

fn absolute(cwd: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}

/// The nearest existing directory at or above `p`: where csbox would create `p`.
pub fn existing_ancestor(p: &Path) -> Option<PathBuf> {
    p.ancestors().find(|a| a.is_dir()).map(Path::to_path_buf)
}

/// Where `p` really is, symlinks resolved, when it exists: one open(O_PATH) and the name
/// /proc gives its descriptor (realpath(3) reads a link per component: 10 system calls
/// for ~/.local/share/csbox/sessions). realpath where /proc cannot say.
pub fn real_path(p: &Path) -> Option<PathBuf> {
    let f = open_path(p).ok()?;
    proc_name(&f).or_else(|| p.canonicalize().ok())
}

/// The absolute path /proc gives an open descriptor (None for a deleted file or where
/// /proc is not mounted).
pub fn proc_name(f: &impl std::os::fd::AsRawFd) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .ok()
        .filter(|r| r.is_absolute() && !r.as_os_str().as_encoded_bytes().ends_with(b" (deleted)"))
}

/// `p` opened with O_PATH (every symlink followed, nothing read).
pub fn open_path(p: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(p)
}

/// Resolve symlinks of the longest existing prefix, keep the rest as written.
pub fn canonical_or_self(p: &Path) -> PathBuf {
    if let Some(c) = real_path(p) {
        return c;
    }
    match (p.parent(), p.file_name()) {
        (Some(parent), Some(name)) if parent != p => canonical_or_self(parent).join(name),
        _ => p.to_path_buf(),
    }
}

/// `which`: the first executable regular file called `name` on `path`.
pub fn find_on_path(name: &std::ffi::OsStr, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = path?;
    std::env::split_paths(path).find_map(|dir| {
        let cand = dir.join(name);
        let md = std::fs::metadata(&cand).ok()?;
        (md.is_file() && md.permissions().mode() & 0o111 != 0).then_some(cand)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(home: &str) -> EnvInput {
        EnvInput {
            home: Some(home.into()),
            cwd: "/work".into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_follow_the_old_scripts_and_xdg() {
        let p = Paths::resolve(&env("/home/u")).unwrap();
        assert_eq!(p.claude_root, PathBuf::from("/home/u/.claude"));
        assert_eq!(p.claude_json, PathBuf::from("/home/u/.claude.json"));
        assert_eq!(
            p.sessions_dir,
            PathBuf::from("/home/u/.local/share/csbox/sessions")
        );
        assert!(p.sessions_dir_is_default);
        assert_eq!(
            p.legacy_sessions_link(),
            PathBuf::from("/home/u/.claude/sessions")
        );
        assert_eq!(p.update_log(), PathBuf::from("/home/u/.claude/update.log"));
        assert_eq!(p.data_home, PathBuf::from("/home/u/.local/share"));
    }

    #[test]
    fn env_overrides_and_relative_paths_are_made_absolute() {
        let mut e = env("/home/u");
        e.claude_root = Some("cr".into());
        e.sessions_dir = Some("/srv/s".into());
        e.xdg_data_home = Some("relative-is-ignored".into());
        let p = Paths::resolve(&e).unwrap();
        assert_eq!(p.claude_root, PathBuf::from("/work/cr"));
        assert_eq!(p.sessions_dir, PathBuf::from("/srv/s"));
        assert!(!p.sessions_dir_is_default);
    }

    #[test]
    fn claude_is_found_on_path_first_then_in_the_native_installers_dir() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let (home, bin) = (t.path().join("home"), t.path().join("bin"));
        let native = home.join(".local/bin/claude");
        let mut e = env(home.to_str().unwrap());
        e.path = Some(bin.clone().into());
        assert_eq!(Paths::resolve(&e).unwrap().find_claude(), None);
        for exe in [&native, &bin.join("claude")] {
            std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
            std::fs::write(exe, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(exe, std::fs::Permissions::from_mode(0o755)).unwrap();
            assert_eq!(
                Paths::resolve(&e).unwrap().find_claude().as_ref(),
                Some(exe),
                "PATH's claude wins over ~/.local/bin's"
            );
        }
    }

    #[test]
    fn missing_home_is_a_usage_error() {
        let e = EnvInput {
            cwd: "/".into(),
            ..Default::default()
        };
        assert_eq!(Paths::resolve(&e).unwrap_err().exit_code(), 2);
    }
}
