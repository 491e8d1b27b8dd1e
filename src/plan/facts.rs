//! What `resolve` found out about host paths before the plan is built, so that building
//! the plan reads nothing: where a path really points, and what is there.

use std::path::{Path, PathBuf};

use crate::pathkey::PathMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Dir,
    /// Anything that is not a directory: a file, a socket, a device.
    File,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathFact {
    /// The path with its symlinks resolved (for the longest prefix that exists).
    pub real: PathBuf,
    /// What is there; None when nothing is.
    pub kind: Option<NodeKind>,
}

/// Facts keyed by the path as the plan spells it (expanded, lexically normalised), and
/// what resolve found out about the host's layout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Hashed, not ordered: a plan looks up some thousand paths, and ordering `Path`s
    /// compares them component by component (a third of a launch's CPU time once); and
    /// hashed as bytes (`Path`'s own hash walks the components: see `pathkey`).
    map: PathMap<PathFact>,
    /// Paths looked up whose last component is a symbolic link, and its target as written.
    links: PathMap<PathBuf>,
    pub host: HostLayout,
}

/// Entries of one project top listed for the protect patterns, at most.
pub const TOP_NAMES_CAP: usize = 16_384;

/// The host beyond single paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostLayout {
    /// Mount points strictly below the home (another file system, a bind mount): an
    /// overlay of the home does not show what is mounted there, so they are bound back.
    pub home_submounts: Vec<PathBuf>,
    /// The git worktree the working directory lies in.
    pub git: Option<GitLayout>,
    /// The relative `core.hooksPath` values (`.githooks`, `../hooks`) of the user's, the
    /// system's and the repository's git config, as written: git resolves one against
    /// the top of each worktree it runs in, a repository nested in the project too.
    pub relative_hooks: Vec<PathBuf>,
    /// The entries of the project's possible tops (the worktree's top, the working
    /// directory), at most [`TOP_NAMES_CAP`] of each: what a protect pattern
    /// (`*.code-workspace`) is matched against at launch.
    pub top_names: Vec<PathBuf>,
    /// The file /etc/resolv.conf points to when it lies under /run (systemd-resolved,
    /// NetworkManager): bound back read-only into the sandbox's private /run.
    pub resolv_conf: Option<PathBuf>,
    /// `$SSH_AUTH_SOCK` when it names a socket.
    pub ssh_agent: Option<PathBuf>,
    /// gpg-agent's socket (`$XDG_RUNTIME_DIR/gnupg/S.gpg-agent` or
    /// `~/.gnupg/S.gpg-agent`) when there is one.
    pub gpg_agent: Option<PathBuf>,
    /// `$XDG_RUNTIME_DIR` (default /run/user/UID): an empty private tmpfs inside.
    pub runtime_dir: PathBuf,
    /// Pathname Unix sockets listening in the host's network namespace
    /// (/proc/net/unix) that exist as socket files, symlinks resolved.
    pub sockets: Vec<PathBuf>,
    /// csbox's own binary, symlinks resolved: a project must not hold it.
    pub csbox_exe: Option<PathBuf>,
    /// `st_mode` of what exists strictly between the home and each absent path the plan
    /// may hide (the home's mask layer repeats those directories with their modes).
    pub home_nodes: PathMap<u32>,
    /// The host's `user.max_inotify_instances` and `user.max_inotify_watches` (the user's
    /// bounds, which a sandbox's own are carved from).
    pub inotify_max: Option<(u64, u64)>,
    /// `$XDG_RUNTIME_DIR` when it is a directory of the user's own with mode 0700: the
    /// home's mask layer is made there, else in a fresh dir in /tmp.
    pub private_runtime: Option<PathBuf>,
    /// What the host's `~/.claude` holds that is not this project's.
    pub claude: Option<ClaudeLower>,
}

/// What the host's `~/.claude` holds that the session's view is made from: every
/// project's transcripts, file-history backups, todos and prompts, of which the session
/// may see only its own project's (attack-3 A3-4), and what the user's shared config
/// names in it (red-team 8, A8-1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaudeLower {
    /// Modes of `projects`, `file-history` and `todos`, those that are directories.
    pub dirs: Vec<(String, u32)>,
    /// Names in `file-history/` (one per conversation uuid).
    pub file_history: Vec<String>,
    /// Names in `todos/` (`<conversation uuid>-agent-<uuid>.json`).
    pub todos: Vec<String>,
    /// This project's conversations: the uuids of `projects/<own key>/<uuid>.jsonl`.
    pub own: Vec<String>,
    /// Of `projects/`, this project's keys that are directories (not links): each is
    /// shown in the session by an overlay of its own.
    pub own_keys: Vec<String>,
    /// Of `file-history/`, this project's conversations' dirs, newest first, at most
    /// [`OWN_FILE_HISTORY_CAP`]: each is shown in the session by an overlay of its own.
    pub own_file_history: Vec<String>,
    /// Of `todos/`, this project's conversations' files (name, mode, content), copied
    /// into the mask layer (small JSON files; at most [`TODO_COPY_CAP`] bytes in all).
    pub own_todos: Vec<(String, u32, String)>,
    /// `history.jsonl` when it is a regular file.
    pub history: Option<HistoryCopy>,
    /// Entries of `~/.claude` the shared `settings.json` and `CLAUDE.md` name (a status
    /// line or hook script, an `@~/.claude/…` import) that the host has, with their kind
    /// (links followed): shown read-only in the session but for Claude Code's data
    /// (`plan::allow`).
    pub referenced: Vec<(String, NodeKind)>,
    /// Of the names settings.json and CLAUDE.md reference, those that are symbolic links:
    /// where a link to a regular file leads (shared only where the sandbox shows that
    /// file anyway), or None for a link to anything else (a directory: never shared, it
    /// could show the whole config or a hidden dir: red-team 9, A9-1).
    pub referenced_links: Vec<(String, Option<PathBuf>)>,
}

/// At most this many of this project's `file-history/<uuid>` dirs are shown in a
/// session: the newest, the one `claude --continue` takes up again, whose `/rewind` wants
/// its earlier backups. Each is an overlay mount of its own, and an overlay costs a few
/// milliseconds on a loaded disk (its mount checks the work dir by making files in it,
/// its teardown at exit syncs the upper file system), so the rest are left out.
pub const OWN_FILE_HISTORY_CAP: usize = 1;
/// At most this many bytes of this project's todo files are copied into the mask layer
/// (the plan carries them; one file at most a quarter of it).
pub const TODO_COPY_CAP: usize = 256 << 10;

/// A `history.jsonl` bigger than this is not scanned at start-up: the session sees an
/// empty one, and the plan says so.
pub const HISTORY_CAP: u64 = 64 << 20;
/// The copy keeps this project's latest lines up to this size: the plan carries it, and
/// a plan travels to `csbox enter` through a bounded control socket.
pub const HISTORY_COPY_CAP: usize = 4 << 20;

/// This project's lines of the host's `history.jsonl` (those whose `project` is the
/// working directory), each with its newline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryCopy {
    pub mode: u32,
    pub lines: String,
    /// The file was too big to read at start-up: `lines` is empty.
    pub too_big: bool,
    /// This project's older lines left out to keep the copy within `HISTORY_COPY_CAP`.
    pub dropped: u64,
}

/// Where a git worktree keeps what its commits write, found by reading `.git` files (git
/// itself is never run: it would run the project's config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitLayout {
    /// The top of the worktree (where `.git` is).
    pub top: PathBuf,
    /// The worktree's own git dir (`top/.git`, or `<common>/worktrees/<name>`).
    pub gitdir: PathBuf,
    /// The common dir: objects, refs, hooks, config (the same as `gitdir` unless this is
    /// a linked worktree).
    pub common: PathBuf,
    /// Submodules' git dirs, each with hooks and a config: every git dir below
    /// `<common>/modules/` at any depth (`modules/libs/x`, nested `modules/sm/modules/inner`)
    /// and below the `modules/` of a linked worktree's (see `gitdirs`).
    pub modules: Vec<PathBuf>,
    /// Submodules' `.git` files in their worktrees (from each one's `core.worktree`).
    pub module_gitfiles: Vec<PathBuf>,
    /// Linked worktrees' git dirs (every git dir below `<common>/worktrees/`), each with a
    /// `commondir` (where git takes config and hooks from) and maybe a `config.worktree`.
    pub worktrees: Vec<PathBuf>,
    /// What the repository's config names for git to run or read: `core.hooksPath` and
    /// `include.path`/`includeIf.*.path`, as absolute paths (not resolved).
    pub config_paths: Vec<PathBuf>,
    /// Where the listing of `modules` and `worktrees` stopped at a bound (`gitdirs`), if
    /// it did: the git dirs past it are not protected, and the plan says so.
    pub cut: Option<PathBuf>,
}

impl Facts {
    pub fn insert(&mut self, path: PathBuf, fact: PathFact) {
        self.map.insert(path, fact);
    }

    /// The fact for `p`; a path nobody looked at counts as missing and unresolved.
    pub fn get(&self, p: &Path) -> PathFact {
        self.map.get(p).cloned().unwrap_or_else(|| PathFact {
            real: p.to_path_buf(),
            kind: None,
        })
    }

    /// The fact for `p` when it was looked at (no copy).
    pub fn looked_up(&self, p: &Path) -> Option<&PathFact> {
        self.map.get(p)
    }

    pub fn real(&self, p: &Path) -> PathBuf {
        self.get(p).real
    }

    pub fn kind(&self, p: &Path) -> Option<NodeKind> {
        self.get(p).kind
    }

    pub fn contains(&self, p: &Path) -> bool {
        self.map.contains_key(p)
    }

    pub fn insert_link(&mut self, path: PathBuf, target: PathBuf) {
        self.links.insert(path, target);
    }

    /// The target of `p` when `p` itself is a symbolic link.
    pub fn link(&self, p: &Path) -> Option<&Path> {
        self.links.get(p).map(PathBuf::as_path)
    }
}
