//! The mount list of a plan, step by step: each step is a method that appends its
//! operations, in the order the launcher applies them.
//!
//! The shape: the host's root, read-only, nosuid, nodev, with a private /tmp; private
//! /var/tmp, /run and $XDG_RUNTIME_DIR; the home (copy-on-write, read-only, hidden, or
//! opted out); the `~/.claude` view with the session's own per-session state; the
//! project writable, the directories holding its hook files pinned (bound onto
//! themselves), the hook files read-only; the profile's binds and sockets; hidden paths
//! and the host's listening sockets still in sight; /dev and /proc last. Every destination
//! is a path with its symlinks resolved on the host, so it means the same place in the
//! sandbox's copy of the host's tree.

use std::path::{Path, PathBuf};

use super::facts::PathFact;
use super::input::{profile_binds, Error, PlanInput, DEV_NODES};
use super::model::*;
use crate::profile::expand::split_bind;
use crate::profile::{Home, Network};
pub use crate::session::store::{HOME_UPPER, HOME_WORK};
use crate::session::store::{STATE_DIR, WORK_DIR};

/// Under a read-only home, private dirs over these caches (those the host has), so
/// builds and package managers still work; each starts empty.
pub const CACHES: &[&str] = &[
    ".cache",
    ".npm",
    ".cargo/registry",
    ".cargo/git",
    ".gradle/caches",
    ".m2/repository",
    "go/pkg/mod",
    ".yarn",
    ".pnpm-store",
    ".bun/install/cache",
];
/// Paths of the sandbox's fresh /proc hidden as OCI runtimes hide them.
pub const PROC_MASKED: &[(&str, NodeKind)] = &[
    ("/proc/keys", NodeKind::File),
    ("/proc/key-users", NodeKind::File),
    ("/proc/kcore", NodeKind::File),
    ("/proc/timer_list", NodeKind::File),
    ("/proc/sched_debug", NodeKind::File),
    ("/proc/latency_stats", NodeKind::File),
    ("/proc/acpi", NodeKind::Dir),
    ("/proc/scsi", NodeKind::Dir),
];

/// Where the private cache dirs of a read-only home live in the session dir.
pub const CACHE_DIR: &str = "home/caches";

/// `~/.claude` dirs that hold one Claude Code session's own state, bound from the
/// session's layer (see `session::store::SESSION_OWN_DIRS`).
pub const SESSION_OWN: &[&str] = crate::session::store::SESSION_OWN_DIRS;

/// Where the work dirs of the overlays on this project's entries of `~/.claude`
/// (`projects/<key>`, `file-history/<uuid>`) live in the session dir.
pub const CLAUDE_WORK: &str = "claude-work";

/// What a mount point made so far shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shows {
    /// A tmpfs of the sandbox's own: a mount point may be created there, and a host path
    /// there is out of sight already.
    Tmpfs,
    /// Host content: nothing may be created there (it would be made in the user's real
    /// file system).
    Host,
    /// An overlay: host content below, the session's layer on top (a host socket there
    /// cannot be connected to through it).
    Overlay,
}

/// The mount list, step by step, and what each mount point made so far shows: a tmpfs
/// of the sandbox's own (where a mount point may be created, and where a host path is
/// already out of sight) or host content (where nothing may be created: it would be made
/// in the user's real file system).
pub(super) struct Mounts<'a> {
    input: &'a PlanInput<'a>,
    ops: Vec<MountOp>,
    /// (mount point, what it shows), in the order they were mounted.
    points: Vec<(PathBuf, Shows)>,
}

fn session(rel: impl AsRef<Path>) -> Source {
    Source::Session(rel.as_ref().to_path_buf())
}

impl<'a> Mounts<'a> {
    pub(super) fn new(input: &'a PlanInput<'a>) -> Self {
        Mounts {
            input,
            ops: vec![MountOp::MakeSlave { path: "/".into() }],
            points: Vec::new(),
        }
    }

    pub(super) fn build(mut self, view: &View) -> Result<Vec<MountOp>, Error> {
        self.root();
        self.private_dirs();
        self.home(view);
        self.claude_view();
        self.shared_entries();
        self.project(view);
        self.profile_paths()?;
        self.sockets();
        self.hidden_paths()?;
        self.network();
        self.dev_and_proc();
        Ok(self.ops)
    }

    fn real(&self, p: &Path) -> PathBuf {
        self.input.facts.real(p)
    }

    /// What `d` shows: what the deepest mount point above it (the latest, among
    /// equals) shows.
    fn shows(&self, d: &Path) -> Shows {
        let mut best: Option<(usize, Shows)> = None;
        for (p, shows) in &self.points {
            if d.starts_with(p) {
                let depth = p.components().count();
                if best.is_none_or(|(b, _)| depth >= b) {
                    best = Some((depth, *shows));
                }
            }
        }
        best.map_or(Shows::Host, |(_, s)| s)
    }

    /// Whether `d` lies in one of the sandbox's own tmpfs.
    fn in_tmpfs(&self, d: &Path) -> bool {
        self.shows(d) == Shows::Tmpfs
    }

    fn push(&mut self, op: MountOp) {
        let point = match &op {
            MountOp::Tmpfs { dst, .. } | MountOp::Hide { dst, .. } => {
                Some((dst.clone(), Shows::Tmpfs))
            }
            MountOp::Bind { dst, .. } => Some((dst.clone(), Shows::Host)),
            MountOp::Overlay { dst, .. } => Some((dst.clone(), Shows::Overlay)),
            _ => None,
        };
        self.points.extend(point);
        self.ops.push(op);
    }

    fn ensured(&self, d: &Path) -> Option<NodeKind> {
        super::allow::ensured(self.input, d)
    }

    /// Inside ~/.claude in the fresh mode, every mount point is made in the session's
    /// own (empty) config dir.
    fn may_create(&self, d: &Path) -> bool {
        self.in_tmpfs(d)
            || (self.input.state_mode == StateMode::Fresh
                && d.starts_with(self.real(&self.input.paths.claude_root)))
    }

    fn bind(&mut self, src: Source, dst: &Path, flags: MountFlags, create: Option<NodeKind>) {
        self.push(MountOp::Bind {
            src,
            dst: dst.to_path_buf(),
            flags,
            create_dst: create,
        });
    }

    /// A host path bound at the same place, read-only.
    fn bind_back(&mut self, p: &Path, kind: NodeKind) {
        let create = self.in_tmpfs(p).then_some(kind);
        self.bind(
            Source::Host(p.to_path_buf()),
            p,
            MountFlags::RO_NOSUID_NODEV,
            create,
        );
    }

    fn tmpfs(&mut self, dst: &Path, mode: u32) {
        if self.in_tmpfs(dst) {
            self.push(MountOp::Mkdir {
                path: dst.to_path_buf(),
                mode: 0o755,
            });
        }
        self.push(MountOp::Tmpfs {
            dst: dst.to_path_buf(),
            mode,
            size: None,
            flags: MountFlags::NOSUID_NODEV,
        });
    }

    /// 1. The host's tree, read-only, nosuid, nodev, with a private /tmp.
    fn root(&mut self) {
        self.push(MountOp::HostRoot {
            flags: MountFlags::RO_NOSUID_NODEV,
            tmp_mode: 0o1777,
        });
        self.points.push(("/".into(), Shows::Host));
        self.points.push(("/tmp".into(), Shows::Tmpfs));
    }

    /// 2. Private /var/tmp, /run and runtime dir: no host socket (D-Bus, systemd, the
    ///    agents, docker.sock) is there, and nothing is shared with other sessions. Only
    ///    what name resolution needs comes back.
    fn private_dirs(&mut self) {
        let host = &self.input.facts.host;
        if self.input.facts.kind(Path::new("/var/tmp")).is_some() {
            self.tmpfs(Path::new("/var/tmp"), 0o1777);
        }
        self.tmpfs(Path::new("/run"), 0o755);
        self.push(MountOp::Mkdir {
            path: "/run/lock".into(),
            mode: 0o1777,
        });
        let runtime = host.runtime_dir.clone();
        if self.in_tmpfs(&runtime) || self.input.facts.kind(&runtime).is_some() {
            self.tmpfs(&runtime, 0o700);
        }
        if let Some(r) = host.resolv_conf.clone() {
            self.bind_back(&r, NodeKind::File);
        }
    }

    /// 3. The home: copy-on-write over the host's, read-only with private caches,
    ///    hidden, or (opted out) the host's own read-write. What is mounted below the home
    ///    on the host comes back read-only (an overlay shows only the home's own file
    ///    system).
    fn home(&mut self, view: &View) {
        let home = view.home.clone();
        if self.in_tmpfs(&home) {
            self.push(MountOp::Mkdir {
                path: home.clone(),
                mode: 0o755,
            });
        }
        match view.home_mode {
            Home::Overlay => self.push(MountOp::Overlay {
                dst: home.clone(),
                lower: Source::Host(home.clone()),
                upper: session(HOME_UPPER),
                work: session(HOME_WORK),
                flags: MountFlags::NOSUID_NODEV,
                masks: super::masks::home_layer(self.input, view),
            }),
            Home::ReadOnly => {
                for c in CACHES {
                    let dst = home.join(c);
                    if self.input.facts.kind(&dst) == Some(NodeKind::Dir) {
                        let src = session(Path::new(CACHE_DIR).join(c.replace('/', "_")));
                        self.bind(src, &dst, MountFlags::NOSUID_NODEV, None);
                    }
                }
            }
            Home::Hidden => {
                self.tmpfs(&home, 0o700);
                return;
            }
            Home::Visible => self.bind(
                Source::Host(home.clone()),
                &home,
                MountFlags::NOSUID_NODEV,
                None,
            ),
        }
        if view.home_mode == Home::Overlay {
            let subs = self.input.facts.host.home_submounts.clone();
            for m in subs {
                self.bind_back(&m, NodeKind::Dir);
            }
        }
    }

    /// 4. ~/.claude: the session's layer over csbox's mask layer over an empty dir, so
    ///    that nothing of the host's config shows but what step 4b and 5 mount into it
    ///    (or, without overlayfs, the session's own dir in its place).
    fn claude_view(&mut self) {
        let root = self.real(&self.input.paths.claude_root);
        if self.in_tmpfs(&root) {
            self.push(MountOp::Mkdir {
                path: root.clone(),
                mode: 0o700,
            });
        }
        match self.input.state_mode {
            StateMode::Overlay => {
                self.push(MountOp::Overlay {
                    dst: root.clone(),
                    lower: session(super::masks::CLAUDE_BASE),
                    upper: session(STATE_DIR),
                    work: session(WORK_DIR),
                    flags: MountFlags::NOSUID_NODEV,
                    masks: super::masks::claude_layer(self.input),
                });
                self.own_conversations(&root);
            }
            StateMode::Fresh => {
                self.bind(session(STATE_DIR), &root, MountFlags::NOSUID_NODEV, None)
            }
        }
    }

    /// 4b. This project's entries of the conversation dirs (directories of the mask
    ///     layer that hold nothing else: see `masks::claude_layer`), each an overlay of the host's entry below the session's
    ///     own (`state/projects/<key>`, where Claude Code's writes landed before and
    ///     merge-back looks), so nothing another project has there can show.
    fn own_conversations(&mut self, root: &Path) {
        let Some(lower) = self.input.facts.host.claude.as_ref() else {
            return;
        };
        let keys = lower.own_keys.iter().map(|k| Path::new("projects").join(k));
        let fh = lower
            .own_file_history
            .iter()
            .map(|u| Path::new("file-history").join(u));
        let rels: Vec<PathBuf> = keys.chain(fh).collect();
        for (i, rel) in rels.into_iter().enumerate() {
            self.push(MountOp::Overlay {
                dst: root.join(&rel),
                lower: Source::Host(root.join(&rel)),
                upper: session(Path::new(STATE_DIR).join(&rel)),
                work: session(Path::new(CLAUDE_WORK).join(i.to_string())),
                flags: MountFlags::NOSUID_NODEV,
                masks: None,
            });
        }
    }

    /// 5. The host entries of ~/.claude the session sees (`allow::shared`: shared
    ///    configuration read-only, the login writable), each onto its mount point in the
    ///    mask layer; then the session's own `sessions/` and `~/.claude.json`. Sources are
    ///    the real entries, opened before the overlay hides them. Claude Code writes
    ///    .credentials.json by tmp+rename and falls back to writing in place on EBUSY.
    fn shared_entries(&mut self) {
        let input = self.input;
        let root = self.real(&input.paths.claude_root);
        for s in super::allow::shared(input) {
            let e = root.join(&s.name);
            let create = self.may_create(&e).then_some(s.kind);
            let flags = MountFlags::NOSUID_NODEV.read_only(s.read_only);
            self.bind(Source::Host(e.clone()), &e, flags, create);
        }
        // Claude Code keeps sessions/<pid>.json, its shell snapshots and each session's
        // env in its config dir: those must be this session's own, whatever the lower
        // layer has there (the old store, a link to ours, the host's snapshots).
        for name in SESSION_OWN {
            let own = Path::new(STATE_DIR).join(name);
            self.bind(
                session(own),
                &root.join(name),
                MountFlags::NOSUID_NODEV,
                None,
            );
        }
        // Claude Code (CLAUDE_CONFIG_DIR=~/.claude) reads ~/.claude/.claude.json, which is
        // the layer's own `state/.claude.json`: bound there too, so that it is a mount
        // point the session cannot unlink or rename (EBUSY) and replace by a link that
        // the next mount of `state/.claude.json` (by a runtime, from a bundle) would
        // follow. Claude Code falls back to writing in place on EBUSY. Tools that
        // hard-code ~/.claude.json see the same file.
        let src = session(Path::new(STATE_DIR).join(".claude.json"));
        self.bind(
            src.clone(),
            &root.join(".claude.json"),
            MountFlags::NOSUID_NODEV,
            None,
        );
        let cj = self.real(&input.paths.claude_json);
        let create = self.may_create(&cj).then_some(NodeKind::File);
        self.bind(src, &cj, MountFlags::NOSUID_NODEV, create);
    }

    /// 6. The project, writable (or read-only), with the git dirs its commits write to;
    ///    then its hook files read-only over it. Under a hidden home, the command itself
    ///    is bound too.
    fn project(&mut self, view: &View) {
        let input = self.input;
        if let Some(proj) = &view.project {
            let flags = MountFlags::NOSUID_NODEV.read_only(proj.read_only);
            let create = self.in_tmpfs(&proj.path).then_some(NodeKind::Dir);
            let path = proj.path.clone();
            self.bind(Source::Host(path.clone()), &path, flags, create);
            for g in proj.git_dirs.clone() {
                let create = self.in_tmpfs(&g).then_some(NodeKind::Dir);
                self.bind(Source::Host(g.clone()), &g, flags, create);
            }
            // Parents first, as mount points of their own: what is protected in them
            // cannot be renamed aside with them.
            for d in proj.pinned.clone() {
                self.bind(Source::Host(d.clone()), &d, flags, None);
            }
            for p in proj.protected.clone() {
                let kind = input.facts.kind(&p).unwrap_or(NodeKind::File);
                let create = self.in_tmpfs(&p).then_some(kind);
                self.bind(
                    Source::Host(p.clone()),
                    &p,
                    MountFlags::RO_NOSUID_NODEV,
                    create,
                );
            }
        }
        let exe_real = self.real(&input.exe);
        if view.home_mode == Home::Hidden && exe_real.starts_with(&view.home) {
            self.bind(
                Source::Host(exe_real.clone()),
                &exe_real,
                MountFlags::RO_NOSUID_NODEV,
                Some(NodeKind::File),
            );
        }
    }

    fn fact_of(&self, origin: &str, spec: &str, p: &str) -> Result<PathFact, Error> {
        super::hide::fact_of(self.input, origin, spec, p)
    }

    /// 7. The profile's and the command line's own binds and tmpfs.
    fn profile_paths(&mut self) -> Result<(), Error> {
        let input = self.input;
        for (origin, spec, ro) in profile_binds(input.profile, input.overrides) {
            let (src, dst) = split_bind(spec).map_err(|why| Error::BadPath {
                origin: origin.clone(),
                spec: spec.to_string(),
                why,
            })?;
            let src = self.fact_of(&origin, spec, &src)?;
            let Some(kind) = src.kind else {
                return Err(Error::MissingSource {
                    origin,
                    spec: spec.to_string(),
                    path: src.real,
                });
            };
            let dst = match dst {
                Some(d) => self.fact_of(&origin, spec, &d)?,
                None => src.clone(),
            };
            if dst.real == Path::new("/tmp") {
                return Err(Error::BadDestination {
                    origin,
                    spec: spec.to_string(),
                    path: dst.real,
                    why: "is the sandbox's private tmpfs, which csbox sets the sandbox up through; bind below it, or elsewhere (e.g. --ro-bind /tmp:/run/host-tmp)",
                });
            }
            let create = self.in_tmpfs(&dst.real).then_some(kind);
            if create.is_none() && dst.kind.is_none() {
                return Err(Error::MissingDestination {
                    origin,
                    spec: spec.to_string(),
                    path: dst.real,
                });
            }
            let flags = MountFlags::NOSUID_NODEV.read_only(ro);
            self.bind(Source::Host(src.real), &dst.real, flags, create);
        }
        for t in &input.profile.tmpfs {
            let f = self.fact_of("profile field \"tmpfs\"", t, t)?;
            if f.kind.is_some_and(|k| k != NodeKind::Dir) {
                return Err(Error::BadDestination {
                    origin: "profile field \"tmpfs\"".into(),
                    spec: t.clone(),
                    path: f.real,
                    why: "is not a directory: a tmpfs is mounted on a directory",
                });
            }
            if !self.in_tmpfs(&f.real) && f.kind.is_none() {
                return Err(Error::MissingDestination {
                    origin: "profile field \"tmpfs\"".into(),
                    spec: t.clone(),
                    path: f.real,
                });
            }
            self.tmpfs(&f.real, 0o755);
        }
        Ok(())
    }

    /// 8. Host sockets the profile passes in on purpose, each at its own path.
    fn sockets(&mut self) {
        let host = &self.input.facts.host;
        let mut want: Vec<(PathBuf, PathBuf)> = Vec::new();
        for s in &self.input.profile.sockets {
            match s.as_str() {
                "ssh-agent" => want.extend(host.ssh_agent.clone().map(|p| (p.clone(), p))),
                // GnuPG looks in $XDG_RUNTIME_DIR/gnupg first when that dir exists.
                "gpg-agent" => want.extend(
                    host.gpg_agent
                        .clone()
                        .map(|p| (p, host.runtime_dir.join("gnupg/S.gpg-agent"))),
                ),
                path => {
                    let p = PathBuf::from(path);
                    if self.input.facts.kind(&p).is_some() {
                        let real = self.real(&p);
                        want.push((real.clone(), real));
                    }
                }
            }
        }
        for (src, dst) in want {
            let create = self.in_tmpfs(&dst).then_some(NodeKind::File);
            self.bind(Source::Host(src), &dst, MountFlags::NOSUID_NODEV, create);
        }
    }

    /// 9. Other sessions are invisible; so is whatever the profile hides, but what it
    ///    unhides. A path that does not exist, or already lies under a tmpfs of this
    ///    plan, needs nothing (under the copy-on-write home, a mask in the layer keeps a
    ///    later one out: `View::home_masks`). Hiding follows symlinks: the place a link
    ///    points to is what is covered. Then the host's listening sockets that are still
    ///    in sight, but those passed in on purpose.
    fn hidden_paths(&mut self) -> Result<(), Error> {
        let input = self.input;
        let store = self.real(&input.paths.sessions_dir);
        self.hide(&store, self.ensured(&input.paths.sessions_dir));
        for f in super::hide::hide_list(input)? {
            self.hide(&f.real, f.kind);
        }
        let passed: Vec<PathBuf> = self
            .ops
            .iter()
            .filter_map(|op| match op {
                MountOp::Bind {
                    src: Source::Host(s),
                    dst,
                    ..
                } if input.facts.host.sockets.contains(s) => Some(dst.clone()),
                _ => None,
            })
            .collect();
        // A socket in the home's lower layer cannot be connected to through the overlay;
        // anywhere else on the read-only host it can. (Decided before any is hidden: a
        // file's mount covers no other socket, and a host may have thousands.)
        let in_sight: Vec<PathBuf> = input
            .facts
            .host
            .sockets
            .iter()
            .filter(|s| self.shows(s) == Shows::Host && !passed.contains(s))
            .cloned()
            .collect();
        for dst in in_sight {
            self.push(MountOp::Hide {
                dst,
                kind: NodeKind::File,
            });
        }
        Ok(())
    }

    fn hide(&mut self, dst: &Path, kind: Option<NodeKind>) {
        if let Some(kind) = kind.filter(|_| !self.in_tmpfs(dst)) {
            self.push(MountOp::Hide {
                dst: dst.to_path_buf(),
                kind,
            });
        }
    }

    /// 10. Without the host's network: `lo` up, and a sysfs that shows this namespace.
    fn network(&mut self) {
        if self.input.profile.network.mode != Network::Host {
            self.push(MountOp::LoopbackUp);
            self.push(MountOp::Sysfs {
                dst: "/sys".into(),
                flags: MountFlags::SEALED,
            });
        }
    }

    /// 11. /dev and /proc last: /proc/self/fd is how earlier binds reach their sources.
    fn dev_and_proc(&mut self) {
        self.push(MountOp::Dev {
            dst: "/dev".into(),
            nodes: DEV_NODES.iter().map(|s| s.to_string()).collect(),
            console: self.input.tty.clone(),
        });
        self.push(MountOp::Proc {
            dst: "/proc".into(),
            flags: MountFlags {
                read_only: false,
                ..MountFlags::SEALED
            },
        });
        // What every OCI runtime masks in /proc: the keys the user can view (another
        // session keyring's descriptions), kernel memory and timers, ACPI and SCSI.
        for (p, kind) in PROC_MASKED {
            // Only what this kernel has (the host's /proc is the same kernel's).
            if self.input.facts.kind(Path::new(p)) == Some(*kind) {
                self.push(MountOp::Hide {
                    dst: p.into(),
                    kind: *kind,
                });
            }
        }
    }
}
