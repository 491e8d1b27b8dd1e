//! Paths in profiles and flags: `~`, `$HOME` and `$PWD` expand; relative paths are taken
//! from the working directory; `..` is resolved lexically. This is pure: `resolve` then
//! looks up where each expanded path really points (symlinks resolved), so a mount lands
//! where the path points, never elsewhere.

use std::path::{Component, Path, PathBuf};

/// What is wrong with a path as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("empty path; expected an absolute path, ~/…, $HOME/…, $PWD/… or a path relative to the working directory")]
    Empty,
    #[error("contains a NUL byte")]
    Nul,
    #[error("~user is not supported; expected ~ or ~/…")]
    TildeUser,
    #[error("only $HOME and $PWD expand, at the start of a path")]
    Variable,
    #[error("more than one ':'; expected SRC or SRC:DST")]
    TooManyColons,
    #[error("the destination would cover the whole file system")]
    RootDestination,
}

/// Syntax only (no expansion): what can be checked when a profile is parsed.
pub fn check_path_syntax(p: &str) -> Result<(), PathError> {
    if p.is_empty() {
        return Err(PathError::Empty);
    }
    if p.contains('\0') {
        return Err(PathError::Nul);
    }
    if p.starts_with('~') && !(p == "~" || p.starts_with("~/")) {
        return Err(PathError::TildeUser);
    }
    if p.contains('$')
        && !(p.starts_with("$HOME")
            || p.starts_with("$PWD")
            || p.starts_with("${HOME}")
            || p.starts_with("${PWD}"))
    {
        return Err(PathError::Variable);
    }
    Ok(())
}

pub fn is_root(p: &str) -> bool {
    let t = p.trim_end_matches('/');
    t.is_empty() && p.starts_with('/')
}

/// Split `SRC[:DST]` and check both halves.
pub fn split_bind(spec: &str) -> Result<(String, Option<String>), PathError> {
    let mut parts = spec.splitn(3, ':');
    let src = parts.next().unwrap_or_default().to_string();
    let dst = parts.next().map(str::to_string);
    if parts.next().is_some() {
        return Err(PathError::TooManyColons);
    }
    check_path_syntax(&src)?;
    if let Some(d) = &dst {
        check_path_syntax(d)?;
        if is_root(d) {
            return Err(PathError::RootDestination);
        }
    }
    Ok((src, dst))
}

/// Expand and normalise a path lexically (see the module doc). Reads nothing.
pub fn lexical(p: &str, home: &Path, cwd: &Path) -> Result<PathBuf, PathError> {
    check_path_syntax(p)?;
    let replaced: PathBuf = if p == "~" {
        home.to_path_buf()
    } else if let Some(rest) = p.strip_prefix("~/") {
        // `~//x` is `~/x`, as the shell has it (joined as it is, the absolute `/x` took
        // the home's place: `--hide ~//secret` hid nothing, red-team 9, A9-7).
        home.join(rest.trim_start_matches('/'))
    } else if let Some(rest) = p
        .strip_prefix("${HOME}")
        .or_else(|| p.strip_prefix("$HOME"))
    {
        home.join(rest.trim_start_matches('/'))
    } else if let Some(rest) = p.strip_prefix("${PWD}").or_else(|| p.strip_prefix("$PWD")) {
        cwd.join(rest.trim_start_matches('/'))
    } else {
        cwd.join(p)
    };
    // Spelled cleanly already (no `..`, `.`, `//`, trailing `/`): itself, with no
    // component walk (a launch expands some hundred paths).
    if replaced.is_absolute()
        && no_parent_component(replaced.as_os_str().as_encoded_bytes())
        && crate::pathkey::is_clean(replaced.as_os_str().as_encoded_bytes())
    {
        return Ok(replaced);
    }
    let mut out = PathBuf::from("/");
    for c in replaced.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    Ok(out)
}

/// Whether no component of `b` is `..`.
fn no_parent_component(b: &[u8]) -> bool {
    b.split(|&c| c == b'/').all(|c| c != b"..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilde_home_pwd_and_dotdot_expand() {
        let h = Path::new("/nonexistent/home/u");
        let c = Path::new("/nonexistent/p");
        assert_eq!(lexical("~", h, c).unwrap(), h);
        assert_eq!(lexical("~/.ssh", h, c).unwrap(), h.join(".ssh"));
        assert_eq!(lexical("~//.ssh/", h, c).unwrap(), h.join(".ssh"));
        assert_eq!(lexical("~/./a//b/.", h, c).unwrap(), h.join("a/b"));
        assert_eq!(lexical("$HOME/x", h, c).unwrap(), h.join("x"));
        assert_eq!(lexical("${PWD}/build", h, c).unwrap(), c.join("build"));
        assert_eq!(lexical("sub/../other", h, c).unwrap(), c.join("other"));
        assert_eq!(lexical("/../../etc", h, c).unwrap(), Path::new("/etc"));
        assert_eq!(lexical("~root/x", h, c), Err(PathError::TildeUser));
        assert_eq!(lexical("$USER/x", h, c), Err(PathError::Variable));
    }

    #[test]
    fn bind_specs_split_once() {
        assert_eq!(
            split_bind("/a:/b").unwrap(),
            ("/a".into(), Some("/b".into()))
        );
        assert_eq!(split_bind("~/x").unwrap(), ("~/x".into(), None));
        assert_eq!(split_bind("/a:/b:/c"), Err(PathError::TooManyColons));
        assert_eq!(split_bind("/a:/"), Err(PathError::RootDestination));
        assert_eq!(split_bind(":/b"), Err(PathError::Empty));
    }
}
