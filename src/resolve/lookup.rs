//! Where the plan's paths really point, and what is there: a few hundred paths per launch
//! (the hide list, the project's protected names, the `~/.claude` entries), most of them
//! absent. Each path costs a look-up of its own only where it may exist: a directory that
//! holds several wanted names is listed once, and a name its listing lacks is absent with
//! no system call (a `~/.config` of a fresh account: 60 names, one listing).

// foldhash: std's SipHash of PathBufs was 7 % of a default launch's CPU (perf); paths
// are keyed by their bytes (`pathkey`): `Path`'s own hash walks the components.
use foldhash::{HashMap, HashSet};
use std::borrow::Cow;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::pathkey::{clean, PathMap, PathSet};

use crate::paths::canonical_or_self;
use crate::plan::{Facts, NodeKind, PathFact};

/// A directory is listed for its wanted names when it holds at least this many: below,
/// a look-up per name costs less than the listing (open, getdents, close).
const LIST_FROM: usize = 4;
/// A directory with more entries than this is not kept as a listing (a home with a
/// hundred thousand files): its names are looked up one by one.
const LIST_CAP: usize = 4096;

/// Where each path really points, and what is there (following symlinks, as a mount
/// does).
pub fn look_up(paths: impl IntoIterator<Item = PathBuf>) -> Facts {
    let paths: Vec<PathBuf> = paths.into_iter().collect();
    let mut l = Lookup::new(&paths);
    let mut facts = Facts::default();
    for p in paths.iter().cloned() {
        if facts.contains(&p) {
            continue;
        }
        let fact = l.fact_of(&p);
        if fact.real != p {
            // A protected path that is a link is watched, not bound: what it points to
            // when the session starts is kept to tell the link from its replacement.
            if let Ok(target) = std::fs::read_link(&p) {
                facts.insert_link(p.clone(), target);
            }
        }
        facts.insert(fact.real.clone(), fact.clone());
        facts.insert(p, fact);
    }
    facts
}

/// What exists strictly between the home and each absent path in `wanted` that lies
/// below it, with its `st_mode` (lstat: `real` has its links resolved already).
pub(super) fn home_nodes(facts: &Facts, wanted: &[PathBuf], home: &Path) -> PathMap<u32> {
    use std::os::unix::fs::MetadataExt;
    let mut out = PathMap::default();
    // Many hidden paths share a missing parent (`~/.config` on a fresh account): one
    // lstat each.
    let mut missing = PathSet::default();
    for p in wanted {
        let (real, kind) = match facts.looked_up(p) {
            Some(f) => (f.real.as_path(), f.kind),
            None => (p.as_path(), None),
        };
        if kind.is_some() {
            continue;
        }
        let Some(rel) = crate::pathkey::rel(real, home) else {
            continue;
        };
        // Each directory between the home and the path: a prefix of `real`'s bytes up to
        // a separator of `rel` (a suffix of them), with nothing copied to ask.
        let (whole, tail) = (real.as_os_str().as_bytes(), rel.as_os_str().as_bytes());
        let base = whole.len() - tail.len();
        let seps = tail.iter().enumerate().filter(|(_, &c)| c == b'/');
        for (sep, _) in seps {
            let cur = Path::new(std::ffi::OsStr::from_bytes(&whole[..base + sep]));
            if let Some(m) = out.get(cur) {
                if m & libc::S_IFMT == libc::S_IFDIR {
                    continue;
                }
                break;
            }
            if missing.contains(cur) {
                break;
            }
            match std::fs::symlink_metadata(cur) {
                Ok(m) => {
                    out.insert(cur.to_path_buf(), m.mode());
                    if !m.is_dir() {
                        break;
                    }
                }
                Err(_) => {
                    missing.insert(cur.to_path_buf());
                    break;
                }
            }
        }
    }
    out
}

/// One path's fact in three system calls when it exists: open(O_PATH) follows every
/// symlink as a mount would, fstat says what is there, and /proc/self/fd names where it
/// really is (realpath(3) would readlink every component). A missing path is its
/// longest existing prefix, resolved, with the rest as written.

/// One look-up's memory: the facts found so far (the hide list's entries share their
/// parents) and the listings of directories that hold many wanted names.
struct Lookup<'p> {
    seen: PathMap<PathFact>,
    /// Distinct wanted names per parent directory, as spelled (not resolved); borrowed
    /// from the wanted paths (a copy of every ancestor was 5 % of a launch's CPU).
    wanted_in: HashMap<Cow<'p, [u8]>, usize>,
    /// Listings by resolved directory; None where it could not be listed.
    listed: PathMap<Option<HashSet<OsString>>>,
}

impl<'p> Lookup<'p> {
    fn new(paths: &'p [PathBuf]) -> Self {
        // Every ancestor is a wanted name of its parent: `~/.config/gh/hosts.yml` makes
        // `~/.config` worth listing for `gh` as much as `~/.config/gh` for `hosts.yml`.
        // Counted once per distinct name: a listing only answers for names that are
        // absent, and `/` holding every wanted path below `/home` is one name (`home`),
        // which a single look-up answers (listing `/`, `/var` and `/var/tmp` for a home
        // under /var/tmp cost a compat launch 8 % of its CPU).
        let mut names: HashSet<Cow<'p, [u8]>> = HashSet::default();
        let mut wanted_in: HashMap<Cow<'p, [u8]>, usize> = HashMap::default();
        for p in paths {
            for a in p.ancestors() {
                if !names.insert(clean(a)) {
                    break; // this one and its ancestors are counted already
                }
                if let Some(parent) = a.parent() {
                    *wanted_in.entry(clean(parent)).or_default() += 1;
                }
            }
        }
        Lookup {
            seen: PathMap::default(),
            wanted_in,
            listed: PathMap::default(),
        }
    }

    fn fact_of(&mut self, p: &Path) -> PathFact {
        if let Some(f) = self.seen.get(p) {
            return f.clone();
        }
        let f = self.fact_uncached(p);
        self.seen.insert(p.to_path_buf(), f.clone());
        f
    }

    fn fact_uncached(&mut self, p: &Path) -> PathFact {
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            return open_fact(p).unwrap_or_else(|| PathFact {
                real: p.to_path_buf(),
                kind: None,
            });
        };
        // A path alone in its parent (a home's `.local/share/csbox/sessions`, `/bin/true`)
        // is opened at once when it exists: its parent's look-up would spare nothing, and
        // its ancestors are not walked (four calls each: a compat launch's ten).
        let wanted = self.wanted_in.get(&*clean(parent)).copied().unwrap_or(0);
        let tried = wanted <= 1 && !self.seen.contains_key(parent);
        if tried {
            if let Some(f) = open_fact(p) {
                return f;
            }
        }
        // The parent first (memoized): below a missing directory or a file nothing
        // exists, and a directory holding many wanted names is listed once.
        let dir = self.fact_of(parent);
        let absent = || PathFact {
            real: dir.real.join(name),
            kind: None,
        };
        if dir.kind != Some(NodeKind::Dir) {
            return absent();
        }
        if wanted >= LIST_FROM && self.absent_from(&dir.real, name) {
            return absent();
        }
        if tried {
            return absent(); // opened above: not there
        }
        open_fact(p).unwrap_or_else(absent)
    }

    /// Whether the listing of the (resolved) directory `dir` lacks `name`; false when it
    /// cannot be listed.
    fn absent_from(&mut self, dir: &Path, name: &std::ffi::OsStr) -> bool {
        let listing = self.listed.get_or_insert_with(dir, || list(dir));
        listing.as_ref().is_some_and(|names| !names.contains(name))
    }
}

/// The names in `dir`, at most [`LIST_CAP`] of them (None past that, or when unreadable).
fn list(dir: &Path) -> Option<HashSet<OsString>> {
    let fd = crate::fsutil::open_dir_nofollow(dir).ok()?;
    let names = crate::fsutil::name_set(std::os::fd::AsRawFd::as_raw_fd(&fd)).ok()?;
    (names.len() <= LIST_CAP).then_some(names)
}

/// One existing path's fact in three system calls: open(O_PATH) follows every symlink as
/// a mount would, fstat says what is there, and /proc/self/fd names where it really is
/// (realpath(3) would readlink every component). None when nothing is there.
fn open_fact(p: &Path) -> Option<PathFact> {
    let f = crate::paths::open_path(p).ok()?;
    let kind = f.metadata().ok().map(|m| {
        if m.is_dir() {
            NodeKind::Dir
        } else {
            NodeKind::File
        }
    });
    let real = crate::paths::proc_name(&f).unwrap_or_else(|| canonical_or_self(p));
    Some(PathFact { real, kind })
}
