//! The plan's types: what a sandbox is, as data.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use super::facts::NodeKind;
pub use crate::profile::StateMode;
use crate::profile::{Home, Isolation};

pub const PLAN_VERSION: u32 = 4;

/// `~/.claude` entries that hold configuration every session runs (hooks live in
/// settings.json, their scripts by convention in `hooks/`; `rules/*.md` are the user's
/// memory beside `CLAUDE.md`): shared, but read-only inside. The built-in profiles'
/// `claude.readOnly`.
pub const SHARED_READ_ONLY: &[&str] = &[
    "skills",
    "agents",
    "commands",
    "plugins",
    "output-styles",
    "settings.json",
    "CLAUDE.md",
    "hooks",
    "rules",
    "keybindings.json",
];

/// ioctls that push input into a terminal (CVE-2017-5226) or drive the console.
pub const TIOCSTI: u64 = 0x5412;
pub const TIOCLINUX: u64 = 0x541C;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub version: u32,
    /// The profile this plan was built from.
    pub profile: String,
    /// `none`: no sandbox at all (the compat profile).
    pub isolation: Isolation,
    pub session: PlanSession,
    pub namespaces: Namespaces,
    /// Map the user to their own uid/gid inside (not root: Claude Code refuses
    /// --dangerously-skip-permissions as uid 0).
    pub uid: u32,
    pub gid: u32,
    pub state_mode: StateMode,
    /// What the sandbox shows of the user's home and project: facts an exporter needs to
    /// rebuild the host's view without re-deriving them from the mount list.
    pub view: View,
    /// Mount operations, applied in this order.
    pub mounts: Vec<MountOp>,
    /// The resolved executable (argv[0] looked up on PATH outside).
    pub exe: PathBuf,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Capabilities kept inside (names as in capabilities(7), e.g. `CAP_NET_BIND_SERVICE`);
    /// every other one is dropped from every set, the bounding set included.
    pub capabilities: Vec<String>,
    /// prctl(PR_SET_NO_NEW_PRIVS): exec can never gain privileges (setuid, file caps).
    pub no_new_privs: bool,
    pub seccomp: Seccomp,
    pub network: NetPlan,
    /// None: no Landlock (no sandbox, or a profile without it); the launcher applies what
    /// the kernel supports and `csbox doctor` reports the ABI.
    pub landlock: Option<Landlock>,
    /// Kill everything inside when the supervisor dies (PR_SET_PDEATHSIG).
    pub die_with_parent: bool,
    /// Written to `/proc/sys/user/max_user_namespaces` inside (the limit is per user
    /// namespace): `Some(0)` means nothing inside can create a user namespace of its own.
    pub max_user_namespaces: Option<u64>,
    /// Written to `/proc/sys/user/max_inotify_instances` and `max_inotify_watches` inside
    /// (per user namespace, and charged to the user's own as well): an eighth of the
    /// host's instances and a quarter of its watches, so a session cannot take the inotify
    /// instances and watches that csbox's live watch of the project and the user's own
    /// tools need (red-team 4, A4-10).
    #[serde(default)]
    pub inotify_limits: Option<InotifyLimits>,
    /// Resource limits set on the command (name, value), soft and hard.
    pub rlimits: Vec<(String, u64)>,
    /// Wall-clock limit: SIGTERM, then SIGKILL 10 s later.
    pub timeout_secs: Option<u64>,
    /// Without a sandbox (compat): the shared `~/.claude` entries linked into the
    /// session's config dir for the session's lifetime.
    pub compat_links: Vec<CompatLink>,
    /// Remove the session when the command exits (`--rm`, or the profile's
    /// `removeOnExit` unless `--keep`).
    pub remove_on_exit: bool,
    /// Give the sandbox a new, empty session keyring (keyctl(KEYCTL_JOIN_SESSION_KEYRING)),
    /// as runc does: the invoking shell's keys are not reachable.
    pub new_session_keyring: bool,
    /// Things the user should know before the launch (a socket asked for that is not
    /// there, a working directory that is the home), printed once on stderr.
    pub notes: Vec<String>,
}

/// A sandbox's own inotify bounds (see [`Plan::inotify_limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InotifyLimits {
    pub instances: u64,
    pub watches: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSession {
    pub id: String,
    pub dir: PathBuf,
    pub state_dir: PathBuf,
    pub work_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct View {
    /// The user's home as the host has it (symlinks resolved).
    pub home: PathBuf,
    /// What the sandbox makes of it: copy-on-write, read-only, hidden (an empty tmpfs
    /// with only the project and the `~/.claude` view bound back) or, opted out, the
    /// host's own read-write.
    pub home_mode: Home,
    /// True when the host's file system is the sandbox's root read-only (every
    /// sandboxed profile; an exporter rebuilds it from the host's top-level dirs).
    pub host_read_only: bool,
    /// The project the plan binds writable (or read-only): the working directory, or the
    /// top of the git worktree it lies in. None: nothing of the host is writable but
    /// what the profile binds (the working directory is the home, or compat).
    pub project: Option<ProjectView>,
    /// Hidden paths under the copy-on-write home that did not exist at the start: each
    /// is masked by an overlay whiteout in the home overlay's read-only mask layer
    /// (`MountOp::Overlay::masks`), so that a file the host creates there during the
    /// session stays out of sight, and the session cannot remove the mask. What the
    /// session itself creates there is its own, in its layer.
    pub home_masks: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectView {
    pub path: PathBuf,
    pub read_only: bool,
    /// The git directories the project's commits write to, when they lie outside it (a
    /// linked worktree's common dir).
    pub git_dirs: Vec<PathBuf>,
    /// Paths that run code on the host later (hooks, configs that name commands),
    /// read-only inside: those that exist, each where it really is, inside the project or
    /// a git dir (a link pointing out of them is never bound: see `watched`).
    pub protected: Vec<PathBuf>,
    /// Directories bound onto themselves (writable, as the project is) before the
    /// protected paths: the parents of protected and watched paths. A mount point cannot
    /// be renamed or removed (EBUSY), so `mv .git .git-old; mkdir .git` cannot put a
    /// fresh `.git/config` where the read-only one was.
    pub pinned: Vec<PathBuf>,
    /// Paths of the same list that are not bound: absent at the start, or a symbolic
    /// link (binding it would bind wherever it points). One the session creates, or a
    /// link it replaces, is moved into the session's quarantine at exit.
    pub watched: Vec<Watched>,
    /// Directories whose entries made by the session are watched for code-steering
    /// files: a new linked worktree's `commondir` and `config.worktree`, a new
    /// submodule's `config` and `hooks`.
    pub watched_dirs: Vec<WatchedDir>,
    /// The protect list's patterns (`*.code-workspace`): a new entry of the project's top
    /// that matches one is moved as a watched path is. Those there at the start are in
    /// `protected`.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Relative hooks paths of the git configs (`../hooks`), as written: for a
    /// repository or linked worktree below the top, each is resolved against that
    /// one's top, and what the session made there inside the project is moved as a
    /// watched path is (red-team 9b, A9-2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nested_hooks: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watched {
    pub path: PathBuf,
    /// The symbolic link there at the start (its target as written): left alone while
    /// it is the same link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchedDir {
    pub dir: PathBuf,
    /// Entries there at the start: their files are protected or watched by name.
    pub known: Vec<String>,
    /// The names looked for in every other entry.
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespaces {
    pub user: bool,
    pub mount: bool,
    pub pid: bool,
    pub ipc: bool,
    pub uts: bool,
    pub net: bool,
}

/// One kind of namespace; `Namespaces::kinds` lists those a plan unshares, for the
/// launcher (clone flags), its error messages and the OCI export alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsKind {
    User,
    Mount,
    Pid,
    Ipc,
    Uts,
    Net,
}

impl NsKind {
    pub fn clone_flag(self) -> libc::c_int {
        match self {
            NsKind::User => libc::CLONE_NEWUSER,
            NsKind::Mount => libc::CLONE_NEWNS,
            NsKind::Pid => libc::CLONE_NEWPID,
            NsKind::Ipc => libc::CLONE_NEWIPC,
            NsKind::Uts => libc::CLONE_NEWUTS,
            NsKind::Net => libc::CLONE_NEWNET,
        }
    }

    pub fn clone_flag_name(self) -> &'static str {
        match self {
            NsKind::User => "CLONE_NEWUSER",
            NsKind::Mount => "CLONE_NEWNS",
            NsKind::Pid => "CLONE_NEWPID",
            NsKind::Ipc => "CLONE_NEWIPC",
            NsKind::Uts => "CLONE_NEWUTS",
            NsKind::Net => "CLONE_NEWNET",
        }
    }
}

impl Namespaces {
    pub fn kinds(&self) -> Vec<NsKind> {
        [
            (self.user, NsKind::User),
            (self.mount, NsKind::Mount),
            (self.pid, NsKind::Pid),
            (self.ipc, NsKind::Ipc),
            (self.uts, NsKind::Uts),
            (self.net, NsKind::Net),
        ]
        .into_iter()
        .filter_map(|(on, k)| on.then_some(k))
        .collect()
    }
}

/// Per-mount flags, applied to the mount an operation creates (and, for a recursive
/// bind, to every mount below it). A flag the kernel locked on a source mount (a
/// read-only host mount seen from a user namespace) stays set whatever this says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountFlags {
    pub read_only: bool,
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
}

impl MountFlags {
    pub const NONE: MountFlags = MountFlags {
        read_only: false,
        nosuid: false,
        nodev: false,
        noexec: false,
    };
    pub const NOSUID_NODEV: MountFlags = MountFlags {
        read_only: false,
        nosuid: true,
        nodev: true,
        noexec: false,
    };
    /// What the host's tree and read-only binds get.
    pub const RO_NOSUID_NODEV: MountFlags = MountFlags {
        read_only: true,
        nosuid: true,
        nodev: true,
        noexec: false,
    };
    /// What a hidden directory's empty tmpfs and a pseudo file system get.
    pub const SEALED: MountFlags = MountFlags {
        read_only: true,
        nosuid: true,
        nodev: true,
        noexec: true,
    };

    pub fn read_only(mut self, ro: bool) -> Self {
        self.read_only = ro;
        self
    }

    pub fn is_none(&self) -> bool {
        *self == MountFlags::NONE
    }
}

/// Where a bind or an overlay layer comes from. Host paths are the user's (resolved by
/// `resolve`); session paths are written by the sandbox and so are hostile: the launcher
/// opens them beneath the session directory, following no symlink, and checks their
/// type, so a link planted in a layer can never make it bind a host path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    Host(PathBuf),
    /// Relative to the session directory (`state`, `state/sessions`, `home/upper`).
    Session(PathBuf),
}

impl Source {
    /// The path on the host: a session path joined to the session directory.
    pub fn path(&self, session_dir: &std::path::Path) -> PathBuf {
        match self {
            Source::Host(p) => p.clone(),
            Source::Session(rel) => session_dir.join(rel),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum MountOp {
    /// Make every mount a slave of the host's, so nothing we mount propagates out.
    MakeSlave { path: PathBuf },
    /// The sandbox's root: a recursive bind of the host's `/` with `flags` on every mount
    /// in it (read-only, nosuid, nodev), and a private tmpfs at `/tmp` (mode `tmp_mode`).
    /// The launcher pivots into it before the next operation and detaches the host's tree
    /// after the last, so every later path is resolved inside the sandbox's root.
    HostRoot { flags: MountFlags, tmp_mode: u32 },
    Overlay {
        dst: PathBuf,
        lower: Source,
        upper: Source,
        work: Source,
        flags: MountFlags,
        /// csbox's read-only layer between the upper and `lower`
        /// (`lowerdir=<masks>:<lower>`): what the session must not see of `lower`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        masks: Option<MaskLayer>,
    },
    /// Bind `src` (opened before any mount is made, so no mount can redirect it) onto
    /// `dst`, recursively (submounts come along).
    Bind {
        src: Source,
        dst: PathBuf,
        flags: MountFlags,
        /// Create the mount point, a directory or an empty file like `src`, first. Only
        /// ever inside a tmpfs of this plan: csbox never creates a mount point in the
        /// user's real file system.
        create_dst: Option<NodeKind>,
    },
    Tmpfs {
        dst: PathBuf,
        /// Mode of the tmpfs root, e.g. 0o1777.
        mode: u32,
        /// Size limit in bytes (None: the kernel's default, half of RAM).
        size: Option<u64>,
        flags: MountFlags,
    },
    /// Cover a directory with an empty read-only tmpfs (mode 0755, 4 KiB, nosuid, nodev,
    /// noexec), or a file with a read-only bind of /dev/null: what OCI runtimes do for a
    /// `maskedPaths` entry. A path gone by the launch (a socket removed since) is nothing
    /// to hide, as for a runtime.
    Hide { dst: PathBuf, kind: NodeKind },
    /// A directory inside a tmpfs of this plan, with its missing parents (mode 0755);
    /// the last one gets `mode`.
    Mkdir { path: PathBuf, mode: u32 },
    /// Bring the loopback interface of a new network namespace up.
    LoopbackUp,
    /// A fresh sysfs, so /sys/class/net shows the new network namespace.
    Sysfs { dst: PathBuf, flags: MountFlags },
    /// A minimal /dev: a tmpfs (mode 0755, nosuid, noexec) holding binds of the host's
    /// `nodes`, the terminal csbox runs in as `console`, a private devpts at `pts` (new
    /// instance: the sandbox sees none of the host's ptys), `ptmx`, `fd`, `stdin`,
    /// `stdout`, `stderr` links, and `shm` (mode 1777).
    Dev {
        dst: PathBuf,
        /// Device nodes bound from the host's /dev, by name.
        nodes: Vec<String>,
        /// The host terminal bound at `dst/console` (as bubblewrap does), so tty(1) and
        /// ttyname(3) name the command's terminal.
        console: Option<PathBuf>,
    },
    /// A fresh /proc for the new pid namespace.
    Proc { dst: PathBuf, flags: MountFlags },
}

/// A lower layer csbox builds above an overlay's lower dir before each launch: whiteouts
/// hide the lower's entries (also ones the host makes later), files replace them.
/// Read-only to the session (it is no upper dir), so `touch f; rm f` inside cannot take
/// a mask away (attack-3 A3-8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskLayer {
    pub place: MaskPlace,
    /// In order, parents first; paths relative to the overlay's `dst`.
    pub entries: Vec<MaskEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum MaskPlace {
    /// A private directory outside the home, made by the supervisor for one launch and
    /// removed after it: `<runtime_dir>/csbox/masks/<id>/home` when `$XDG_RUNTIME_DIR`
    /// is the user's own 0700 dir, else a fresh `/tmp/csbox-<uid>-XXXXXX`. Not in the
    /// session dir: overlayfs refuses a lower layer inside another ("overlapping lowerdir
    /// path", ELOOP), and the default store lies inside the home.
    Private {
        runtime_dir: Option<PathBuf>,
        /// Where it was made for this launch; None in a plan not being launched.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        built: Option<PathBuf>,
    },
    /// Relative to the session dir (outside every layer the session writes).
    Session(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MaskEntry {
    /// A directory the lower has, with the lower's mode (overlayfs shows the topmost
    /// layer's attributes for a directory several layers hold).
    Dir { path: PathBuf, mode: u32 },
    /// An overlay whiteout (a 0/0 character device).
    Whiteout { path: PathBuf },
    /// A file shown instead of the lower's.
    File {
        path: PathBuf,
        mode: u32,
        content: String,
    },
}

impl MaskEntry {
    pub fn path(&self) -> &std::path::Path {
        match self {
            MaskEntry::Dir { path, .. }
            | MaskEntry::Whiteout { path }
            | MaskEntry::File { path, .. } => path,
        }
    }
}

/// The seccomp filter: everything not listed is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seccomp {
    /// Refused calls, each failing with its own errno (never a kill).
    pub rules: Vec<SyscallRule>,
    /// Refuse every call through a 32-bit entry point (i386, x32, arm32) with EPERM.
    pub deny_compat_abis: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyscallRule {
    pub names: Vec<String>,
    pub errno: i32,
    /// Refused only when the argument matches; None: always.
    pub arg: Option<ArgMatch>,
}

/// When a call's argument makes the rule refuse it. Arguments are compared on their low
/// 32 bits only: the kernel reads an ioctl request, clone/unshare flags, a socket family
/// and a persona as 32-bit values, so the high bits are ignored on purpose
/// (CVE-2019-10063: `TIOCSTI | 1<<32` is still TIOCSTI; Docker's 64-bit socket compare
/// lets `socket(0x1_0000_0028)` create an AF_VSOCK socket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "test", rename_all = "snake_case", deny_unknown_fields)]
pub enum ArgMatch {
    /// `(args[index] & mask) == value`.
    MaskedEq { index: u8, mask: u32, value: u32 },
    /// `args[index] & mask != 0`: any of these bits (e.g. any `CLONE_NEW*` flag).
    AnyBit { index: u8, mask: u32 },
    /// `args[index]` is none of `values`: an allow list (personalities, socket families).
    NotIn { index: u8, values: Vec<u32> },
}

impl ArgMatch {
    pub fn index(&self) -> u8 {
        match self {
            ArgMatch::MaskedEq { index, .. }
            | ArgMatch::AnyBit { index, .. }
            | ArgMatch::NotIn { index, .. } => *index,
        }
    }
}

/// How the sandbox reaches the network (see `profile::network`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetPlan {
    pub mode: crate::profile::Network,
    /// Proxy mode: the relay listens on 127.0.0.1 and ::1 at this port inside, and the
    /// supervisor's proxy decides each connection by these rules.
    pub proxy_port: Option<u16>,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    /// The host's own proxy the supervisor's chains through.
    pub upstream: Option<Upstream>,
    /// The connection log, relative to the session dir.
    pub audit: Option<PathBuf>,
}

/// A proxy the host itself must use: read from `var` at launch (so no credential is in
/// the plan); `shown` is its URL with the password elided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub var: String,
    pub shown: String,
    pub no_proxy: String,
}

/// Landlock, a second layer under the mounts: the writes the plan means to allow, and
/// nothing else, even if a mount were left writable by mistake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Landlock {
    /// Restrict file-system writes to beneath these paths (as the sandbox sees them).
    /// None: no file-system rules, because Landlock then also forbids every mount, and a
    /// profile that keeps nested namespaces for bubblewrap needs mounts.
    pub writable: Option<Vec<PathBuf>>,
    /// Landlock ABI 6 scopes: no connect to an abstract Unix socket made outside the
    /// sandbox, no signal to a process outside it.
    pub scope_ipc: bool,
}

/// A link from the session's own config dir to a shared `~/.claude` entry (compat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompatLink {
    /// The entry's name inside `~/.claude`.
    pub name: String,
    pub link: PathBuf,
    pub target: PathBuf,
    /// The shared login: Claude Code replaces the link by a file when it logs in or
    /// refreshes its token, and that file is copied back to `target` at exit.
    pub copy_back: bool,
}

impl Plan {
    /// True when the plan creates namespaces (everything but compat).
    pub fn sandboxed(&self) -> bool {
        self.isolation == Isolation::Namespaces
    }

    /// Every session-relative source the mounts name, in order, each once.
    pub fn session_sources(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for op in &self.mounts {
            let srcs: Vec<&Source> = match op {
                MountOp::Overlay {
                    lower, upper, work, ..
                } => vec![lower, upper, work],
                MountOp::Bind { src, .. } => vec![src],
                _ => vec![],
            };
            for s in srcs {
                if let Source::Session(rel) = s {
                    if !out.contains(rel) {
                        out.push(rel.clone());
                    }
                }
            }
        }
        out
    }
}
