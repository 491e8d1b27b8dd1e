//! How Claude Code was installed, which version it is, and the command that installs
//! another version the same way.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use semver::Version;

use super::registry::PACKAGE;
use super::version::{clip, parse_version_output};

/// `claude --version` is instant; a wedged binary must not hang the background check.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);
/// An install downloads ~250 MB; a stuck one must still end (new sessions wait on it).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `npm install -g`: the binary lives under `<prefix>/lib/node_modules/@anthropic-ai/claude-code`.
    NpmGlobal {
        prefix: PathBuf,
    },
    /// The native installer: `~/.local/bin/claude` → `~/.local/share/claude/versions/<v>`.
    Native,
    Unknown,
}

impl Method {
    pub fn name(&self) -> &'static str {
        match self {
            Method::NpmGlobal { .. } => "npm-global",
            Method::Native => "native",
            Method::Unknown => "unknown",
        }
    }
}

/// Classify the binary by where its symlinks finally lead (`realpath`).
pub fn method_from_realpath(real: &Path) -> Method {
    let parts: Vec<_> = real.components().collect();
    for i in 1..parts.len().saturating_sub(2) {
        let is = |j: usize, s: &str| parts[j].as_os_str() == s;
        // `<prefix>/lib/node_modules` is npm's global layout on Unix; a project's local
        // `node_modules` has no `lib/` above it and is not ours to update.
        if is(i - 1, "lib")
            && is(i, "node_modules")
            && is(i + 1, "@anthropic-ai")
            && parts[i + 2]
                .as_os_str()
                .to_string_lossy()
                .starts_with("claude-code")
        {
            let prefix: PathBuf = parts[..i - 1].iter().collect();
            return Method::NpmGlobal { prefix };
        }
    }
    let parent = real.parent();
    let grand = parent.and_then(Path::parent);
    let name = |p: Option<&Path>| p.and_then(Path::file_name).map(|n| n.to_owned());
    if name(parent).as_deref() == Some("versions".as_ref())
        && name(grand).as_deref() == Some("claude".as_ref())
    {
        return Method::Native;
    }
    Method::Unknown
}

pub fn detect_method(claude: &Path) -> Method {
    match claude.canonicalize() {
        Ok(real) => method_from_realpath(&real),
        Err(_) => Method::Unknown,
    }
}

/// The argv that installs exactly `version` the way `method` did. `npm` is the npm to use;
/// `prefix_writable` false means npm runs through `sudo -n`, which fails instead of asking
/// for a password (the README shows the sudoers line that allows exactly this command).
/// sudo resets the environment, so a `registry` other than npm's default (the one the
/// version was found in) goes on the command line there; otherwise npm gets it through
/// its environment.
pub fn installer_argv(
    method: &Method,
    claude: &Path,
    npm: &Path,
    version: &Version,
    prefix_writable: bool,
    registry: Option<&str>,
) -> Option<Vec<OsString>> {
    let v = version.to_string();
    match method {
        Method::NpmGlobal { .. } => {
            let mut argv: Vec<OsString> = Vec::new();
            if !prefix_writable {
                argv.extend(["sudo".into(), "-n".into()]);
            }
            argv.push(npm.into());
            argv.extend([
                "install".into(),
                "-g".into(),
                format!("{PACKAGE}@{v}").into(),
            ]);
            // Not a URL with credentials in it: every user can read a command line.
            if let (false, Some(r)) = (prefix_writable, registry.filter(|r| !has_userinfo(r))) {
                argv.push(format!("--registry={r}").into());
            }
            Some(argv)
        }
        Method::Native => Some(vec![claude.into(), "install".into(), v.into()]),
        Method::Unknown => None,
    }
}

/// `scheme://user:secret@host/…`: the URL carries credentials.
pub fn has_userinfo(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#'])
        .next()
        .unwrap_or("")
        .contains('@')
}

/// npm writes the package under `<prefix>/lib/node_modules` and its link under `<prefix>/bin`.
pub fn npm_prefix_writable(prefix: &Path) -> bool {
    use nix::unistd::{access, AccessFlags};
    ["lib/node_modules", "bin"]
        .iter()
        .all(|d| access(&prefix.join(d), AccessFlags::W_OK).is_ok())
}

/// The npm that owns `prefix` (nvm and friends keep one per prefix), else npm on PATH.
pub fn find_npm(prefix: &Path, path_var: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    let own = prefix.join("bin/npm");
    if own.is_file() {
        return Some(own);
    }
    crate::paths::find_on_path("npm".as_ref(), path_var)
}

/// Run `claude --version` and parse it.
pub fn installed_version(claude: &Path) -> Result<Version, String> {
    let what = format!("`{} --version`", claude.display());
    let mut child = Command::new(claude)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}; set CLAUDE_BIN to the claude binary"))?;
    let status = wait_bounded(&mut child, VERSION_TIMEOUT)
        .map_err(|e| format!("waiting for {what}: {e}"))?
        .ok_or_else(|| {
            format!(
                "{what} did not finish within {} s",
                VERSION_TIMEOUT.as_secs()
            )
        })?;
    let mut out = String::new();
    if let Some(mut so) = child.stdout.take() {
        let mut buf = Vec::new();
        let _ = so.by_ref().take(4096).read_to_end(&mut buf);
        out = String::from_utf8_lossy(&buf).into_owned();
    }
    if !status.success() {
        return Err(format!("{what} failed ({status}): {}", clip(&out)));
    }
    parse_version_output(&out).map_err(|e| format!("{what} {e}"))
}

/// Run the installer with the given stdio and wait for it (bounded).
pub fn run_installer(
    argv: &[OsString],
    output: Stdio,
    errors: Stdio,
    env: &[(&str, &str)],
) -> Result<(), String> {
    let shown = argv
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(errors);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    match wait_bounded(&mut child, INSTALL_TIMEOUT) {
        Ok(Some(st)) if st.success() => Ok(()),
        Ok(Some(st)) if argv[0] == "sudo" && st.code() == Some(1) => Err(format!(
            "`{shown}` failed ({st}): the npm prefix is not writable and sudo wants a password; add the sudoers line from the README (Updates) or run it yourself"
        )),
        Ok(Some(st)) => Err(format!("`{shown}` failed ({st})")),
        Ok(None) => Err(format!(
            "`{shown}` did not finish within {} min and was killed",
            INSTALL_TIMEOUT.as_secs() / 60
        )),
        Err(e) => Err(format!("waiting for `{shown}`: {e}")),
    }
}

/// Wait at most `limit`; on timeout kill the child and return None.
fn wait_bounded(child: &mut Child, limit: Duration) -> std::io::Result<Option<ExitStatus>> {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if start.elapsed() >= limit {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npm_global_is_recognised_by_its_prefix_layout() {
        let m = method_from_realpath(Path::new(
            "/usr/local/lib/node_modules/@anthropic-ai/claude-code/bin/claude.exe",
        ));
        assert_eq!(
            m,
            Method::NpmGlobal {
                prefix: "/usr/local".into()
            }
        );
        let nvm = method_from_realpath(Path::new(
            "/home/u/.nvm/versions/node/v22.1.0/lib/node_modules/@anthropic-ai/claude-code/cli.js",
        ));
        assert_eq!(
            nvm,
            Method::NpmGlobal {
                prefix: "/home/u/.nvm/versions/node/v22.1.0".into()
            }
        );
    }

    #[test]
    fn a_project_local_install_is_not_npm_global() {
        let m = method_from_realpath(Path::new(
            "/src/app/node_modules/@anthropic-ai/claude-code/bin/claude.exe",
        ));
        assert_eq!(m, Method::Unknown);
    }

    #[test]
    fn native_installs_live_in_claude_versions() {
        let m = method_from_realpath(Path::new("/home/u/.local/share/claude/versions/2.1.197"));
        assert_eq!(m, Method::Native);
        assert_eq!(
            method_from_realpath(Path::new("/usr/bin/claude")),
            Method::Unknown
        );
    }

    #[test]
    fn installers_name_the_exact_version() {
        let v = Version::parse("2.1.330").unwrap();
        let npm = Method::NpmGlobal {
            prefix: "/usr".into(),
        };
        let argv = |m, w| {
            installer_argv(
                m,
                "/home/u/.local/bin/claude".as_ref(),
                "/usr/bin/npm".as_ref(),
                &v,
                w,
                None,
            )
        };
        let line = |a: Option<Vec<OsString>>| {
            a.unwrap()
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            line(argv(&npm, true)),
            "/usr/bin/npm install -g @anthropic-ai/claude-code@2.1.330"
        );
        // What the documented sudoers line allows, and nothing more.
        assert_eq!(
            line(argv(&npm, false)),
            "sudo -n /usr/bin/npm install -g @anthropic-ai/claude-code@2.1.330"
        );
        assert_eq!(
            line(argv(&Method::Native, true)),
            "/home/u/.local/bin/claude install 2.1.330"
        );
        assert_eq!(argv(&Method::Unknown, true), None);
        // A registry other than npm's default survives sudo's cleared environment as an
        // argument (the README's sudoers line ends in `*`, which allows it).
        let with_registry = |w| {
            installer_argv(
                &npm,
                "/u/claude".as_ref(),
                "/usr/bin/npm".as_ref(),
                &v,
                w,
                Some("https://npm.example/"),
            )
        };
        assert_eq!(
            line(with_registry(false)),
            "sudo -n /usr/bin/npm install -g @anthropic-ai/claude-code@2.1.330 --registry=https://npm.example/"
        );
        assert!(has_userinfo("https://u:tok@npm.example/"));
        assert!(!has_userinfo("https://npm.example/@scope%2fpkg"));
        let secret = installer_argv(
            &npm,
            "/u/claude".as_ref(),
            "/usr/bin/npm".as_ref(),
            &v,
            false,
            Some("https://u:tok@npm.example/"),
        );
        assert_eq!(
            line(secret),
            "sudo -n /usr/bin/npm install -g @anthropic-ai/claude-code@2.1.330",
            "credentials never go on a command line"
        );
        assert_eq!(
            line(with_registry(true)),
            "/usr/bin/npm install -g @anthropic-ai/claude-code@2.1.330"
        );
    }
}
