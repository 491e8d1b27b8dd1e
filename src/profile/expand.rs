//! Paths in profiles and flags: `~`, `$HOME` and `$PWD` expand; relative paths are taken
//! from the working directory; `..` is resolved lexically and then symlinks are resolved
//! for paths that exist, so a mount lands where the path really points, never elsewhere.

use std::path::{Component, Path, PathBuf};

/// Syntax only (no expansion): what can be checked when a profile is parsed.
pub fn check_path_syntax(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("empty path; expected an absolute path, ~/…, $HOME/…, $PWD/… or a path relative to the working directory".into());
    }
    if p.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if p.starts_with('~') && !(p == "~" || p.starts_with("~/")) {
        return Err("~user is not supported; expected ~ or ~/…".into());
    }
    if p.contains('$')
        && !(p.starts_with("$HOME")
            || p.starts_with("$PWD")
            || p.starts_with("${HOME}")
            || p.starts_with("${PWD}"))
    {
        return Err("only $HOME and $PWD expand, at the start of a path".into());
    }
    Ok(())
}

pub fn is_root(p: &str) -> bool {
    let t = p.trim_end_matches('/');
    t.is_empty() && p.starts_with('/')
}

/// Split `SRC[:DST]` and check both halves.
pub fn split_bind(spec: &str) -> Result<(String, Option<String>), String> {
    let mut parts = spec.splitn(3, ':');
    let src = parts.next().unwrap_or_default().to_string();
    let dst = parts.next().map(str::to_string);
    if parts.next().is_some() {
        return Err("more than one ':'; expected SRC or SRC:DST".into());
    }
    check_path_syntax(&src)?;
    if let Some(d) = &dst {
        check_path_syntax(d)?;
        if is_root(d) {
            return Err("the destination would cover the whole file system".into());
        }
    }
    Ok((src, dst))
}

/// Expand and normalise a path (see the module doc).
pub fn expand(p: &str, home: &Path, cwd: &Path) -> Result<PathBuf, String> {
    check_path_syntax(p)?;
    let replaced: PathBuf = if p == "~" {
        home.to_path_buf()
    } else if let Some(rest) = p.strip_prefix("~/") {
        home.join(rest)
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
    Ok(crate::paths::canonical_or_self(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilde_home_pwd_and_dotdot_expand() {
        let h = Path::new("/nonexistent/home/u");
        let c = Path::new("/nonexistent/p");
        assert_eq!(expand("~", h, c).unwrap(), h);
        assert_eq!(expand("~/.ssh", h, c).unwrap(), h.join(".ssh"));
        assert_eq!(expand("$HOME/x", h, c).unwrap(), h.join("x"));
        assert_eq!(expand("${PWD}/build", h, c).unwrap(), c.join("build"));
        assert_eq!(expand("sub/../other", h, c).unwrap(), c.join("other"));
        assert_eq!(expand("/../../etc", h, c).unwrap(), Path::new("/etc"));
        assert!(expand("~root/x", h, c).is_err());
        assert!(expand("$USER/x", h, c).is_err());
    }

    #[test]
    fn symlinks_resolve_to_where_they_point() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("real")).unwrap();
        std::os::unix::fs::symlink(d.path().join("real"), d.path().join("link")).unwrap();
        let got = expand("link/x", d.path(), d.path()).unwrap();
        assert_eq!(got, d.path().canonicalize().unwrap().join("real/x"));
    }

    #[test]
    fn bind_specs_split_once() {
        assert_eq!(
            split_bind("/a:/b").unwrap(),
            ("/a".into(), Some("/b".into()))
        );
        assert_eq!(split_bind("~/x").unwrap(), ("~/x".into(), None));
        assert!(split_bind("/a:/b:/c").is_err());
        assert!(split_bind("/a:/").is_err());
        assert!(split_bind(":/b").is_err());
    }
}
