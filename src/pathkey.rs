//! Paths as bytes, for the launch path's maps and prefix tests.
//!
//! `std::path::Path` hashes, compares and tests prefixes component by component, so that
//! `/a//b/` and `/a/b` are one path. A launch looks up and compares some thousand paths
//! (the hide and protect lists against the host's facts): `Path::hash`, `Components::next`
//! and `Path::starts_with` were a third of a `csbox run --dry-run`'s instructions
//! (callgrind). Every path csbox builds is *clean* (no empty or `.` component, no
//! trailing `/`), and for clean paths the bytes say the same as the components; a path
//! that is not clean is spelled cleanly first, so each helper here means exactly what
//! its `std` counterpart means.

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

/// Whether `b` spells its components one way only: no `//`, no `.` component, no
/// trailing `/` (but `/` itself).
pub fn is_clean(b: &[u8]) -> bool {
    let n = b.len();
    if n <= 1 {
        return b != b".";
    }
    // A `.` component ends at a `/` or at the end; so does an empty one. (A one-pass
    // form tracking each component's start was tried: 7 % more instructions in all.)
    let dot_before = |i: usize| b[i - 1] == b'.' && (i == 1 || b[i - 2] == b'/');
    if b[n - 1] == b'/' || dot_before(n) {
        return false;
    }
    !(1..n).any(|i| b[i] == b'/' && (b[i - 1] == b'/' || dot_before(i)))
}

/// `p`'s components spelled cleanly (see [`is_clean`]): `p`'s own bytes when they are.
pub fn clean(p: &Path) -> Cow<'_, [u8]> {
    let b = p.as_os_str().as_bytes();
    if is_clean(b) {
        return Cow::Borrowed(b);
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::RootDir => out.push("/"),
            c => out.push(c.as_os_str()),
        }
    }
    Cow::Owned(out.into_os_string().into_vec())
}

/// Whether `p` lies at or below `dir` (`Path::starts_with`).
pub fn under(p: &Path, dir: &Path) -> bool {
    rel(p, dir).is_some()
}

/// `p` relative to `dir` (`Path::strip_prefix`): `""` when they are the same path.
pub fn rel<'a>(p: &'a Path, dir: &Path) -> Option<&'a Path> {
    let (pb, db) = (p.as_os_str().as_bytes(), dir.as_os_str().as_bytes());
    if db.is_empty() || !is_clean(pb) || !is_clean(db) {
        return p.strip_prefix(dir).ok();
    }
    let rest = pb.strip_prefix(db)?;
    let rest = if db == b"/" || rest.is_empty() {
        rest
    } else {
        rest.strip_prefix(b"/")?
    };
    Some(Path::new(OsStr::from_bytes(rest)))
}

/// A map keyed by paths, hashed and compared as their clean bytes: one entry per path as
/// `Path`'s own equality has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathMap<V>(foldhash::HashMap<OsString, V>);

impl<V> Default for PathMap<V> {
    fn default() -> Self {
        Self(Default::default())
    }
}

fn owned_key(p: PathBuf) -> OsString {
    if is_clean(p.as_os_str().as_bytes()) {
        p.into_os_string()
    } else {
        OsString::from_vec(clean(&p).into_owned())
    }
}

fn with_key<R>(p: &Path, f: impl FnOnce(&OsStr) -> R) -> R {
    f(OsStr::from_bytes(&clean(p)))
}

impl<V> PathMap<V> {
    pub fn get(&self, p: &Path) -> Option<&V> {
        with_key(p, |k| self.0.get(k))
    }

    pub fn get_mut(&mut self, p: &Path) -> Option<&mut V> {
        with_key(p, |k| self.0.get_mut(k))
    }

    pub fn contains_key(&self, p: &Path) -> bool {
        with_key(p, |k| self.0.contains_key(k))
    }

    pub fn insert(&mut self, p: PathBuf, v: V) -> Option<V> {
        self.0.insert(owned_key(p), v)
    }

    /// The value at `p`, made by `f` when there is none.
    pub fn get_or_insert_with(&mut self, p: &Path, f: impl FnOnce() -> V) -> &mut V {
        let k = clean(p);
        if !self.0.contains_key(OsStr::from_bytes(&k)) {
            self.0.insert(OsString::from_vec(k.to_vec()), f());
        }
        self.0
            .get_mut(OsStr::from_bytes(&k))
            .expect("inserted above")
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Path, &V)> {
        self.0.iter().map(|(k, v)| (Path::new(k), v))
    }
}

impl<V> FromIterator<(PathBuf, V)> for PathMap<V> {
    fn from_iter<I: IntoIterator<Item = (PathBuf, V)>>(it: I) -> Self {
        let mut m = Self::default();
        for (p, v) in it {
            m.insert(p, v);
        }
        m
    }
}

impl FromIterator<PathBuf> for PathSet {
    fn from_iter<I: IntoIterator<Item = PathBuf>>(it: I) -> Self {
        let mut s = Self::default();
        for p in it {
            s.insert(p);
        }
        s
    }
}

/// A set of paths, as [`PathMap`] keys them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathSet(PathMap<()>);

impl PathSet {
    /// True when `p` was not in the set.
    pub fn insert(&mut self, p: PathBuf) -> bool {
        self.0.insert(p, ()).is_none()
    }

    pub fn contains(&self, p: &Path) -> bool {
        self.0.contains_key(p)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spelled() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof!["a", "b", "ab", ".", "..", "", "a.b"], 0..6)
            .prop_flat_map(|parts| {
                (Just(parts), any::<bool>(), any::<bool>()).prop_map(|(parts, abs, trail)| {
                    let mut s = if abs { "/".to_string() } else { String::new() };
                    s.push_str(&parts.join("/"));
                    if trail {
                        s.push('/');
                    }
                    s
                })
            })
    }

    proptest! {
        /// Each helper means what its std counterpart means, for any spelling.
        #[test]
        fn the_helpers_agree_with_std(a in spelled(), b in spelled()) {
            let (pa, pb) = (Path::new(&a), Path::new(&b));
            prop_assert_eq!(under(pa, pb), pa.starts_with(pb));
            prop_assert_eq!(rel(pa, pb), pa.strip_prefix(pb).ok());
            prop_assert_eq!(clean(pa) == clean(pb), pa == pb);
            let mut m = PathMap::default();
            m.insert(pa.to_path_buf(), 1);
            prop_assert_eq!(m.get(pb).is_some(), pa == pb);
            let spelled = clean(pa);
            prop_assert_eq!(Path::new(OsStr::from_bytes(&spelled)), pa);
            // Clean: std's components, put back together, spell it the same (std keeps a
            // leading `.`, which is_clean does not take).
            let respelled: PathBuf = pa.components().collect();
            let lead_dot = a == "." || a.starts_with("./");
            prop_assert_eq!(
                is_clean(a.as_bytes()),
                !lead_dot && respelled.as_os_str().as_bytes() == a.as_bytes()
            );
        }
    }

    #[test]
    fn clean_spellings_are_recognised() {
        for s in [
            "", "/", "/a", "/a/b", "a", "a/..", "/a/.b", "/a/b.", "..", "/..",
        ] {
            assert!(is_clean(s.as_bytes()), "{s}");
        }
        for s in ["//", "/a/", "/a//b", "/./a", "a/.", ".", "./a", "/a/./b"] {
            assert!(!is_clean(s.as_bytes()), "{s}");
        }
    }
}
