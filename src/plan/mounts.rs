//! The mount list of a plan, step by step: each step is a method that appends its
//! operations, in the order the launcher applies them.

use std::path::{Path, PathBuf};

use super::facts::PathFact;
use super::input::{profile_binds, Error, PlanInput, DEV_NODES};
use super::model::*;
use crate::profile::expand::{lexical, split_bind};
use crate::profile::Network;
use crate::session::store::{STATE_DIR, WORK_DIR};

/// The mount list, step by step, and the tmpfs roots made so far (a mount point inside
/// one of them may be created; anywhere else it must exist).
pub(super) struct Mounts<'a> {
    input: &'a PlanInput<'a>,
    ops: Vec<MountOp>,
    tmpfs_roots: Vec<PathBuf>,
}

impl<'a> Mounts<'a> {
    pub(super) fn new(input: &'a PlanInput<'a>) -> Self {
        Mounts {
            input,
            ops: vec![MountOp::MakeSlave { path: "/".into() }],
            tmpfs_roots: Vec::new(),
        }
    }

    pub(super) fn build(mut self, view: &View) -> Result<Vec<MountOp>, Error> {
        self.hidden_home(view);
        self.claude_view();
        self.shared_entries();
        self.private_tmp();
        self.project(view);
        self.profile_paths()?;
        self.hidden_paths()?;
        self.network();
        self.dev_and_proc();
        Ok(self.ops)
    }

    fn in_tmpfs(&self, d: &Path) -> bool {
        self.tmpfs_roots.iter().any(|r| d.starts_with(r))
    }

    /// Paths csbox itself makes sure exist before the launch (`prepare_claude_root` and
    /// the session store), whatever the facts gathered earlier said.
    fn ensured(&self, d: &Path) -> Option<NodeKind> {
        let p = self.input.paths;
        if d == p.claude_root || d == p.sessions_dir {
            Some(NodeKind::Dir)
        } else if d == p.claude_json || d == p.claude_root.join(".credentials.json") {
            Some(NodeKind::File)
        } else {
            self.input.facts.kind(d)
        }
    }

    /// Inside ~/.claude in the fresh mode, every mount point is made in the session's
    /// own (empty) config dir.
    fn may_create(&self, d: &Path) -> bool {
        self.in_tmpfs(d)
            || (self.input.state_mode == StateMode::Fresh
                && d.starts_with(&self.input.paths.claude_root))
    }

    fn bind(&mut self, src: &Path, dst: &Path, flags: MountFlags, create: Option<NodeKind>) {
        self.ops.push(MountOp::Bind {
            src: src.to_path_buf(),
            dst: dst.to_path_buf(),
            flags,
            create_dst: create,
        });
    }

    /// 1. Under the strict profiles, an empty home: only what is bound back is there.
    fn hidden_home(&mut self, view: &View) {
        if !view.home_hidden {
            return;
        }
        let p = self.input.paths;
        self.ops.push(MountOp::Tmpfs {
            dst: p.home.clone(),
            mode: 0o700,
            size: None,
            flags: MountFlags::NOSUID_NODEV,
        });
        self.tmpfs_roots.push(p.home.clone());
        if p.claude_root.starts_with(&p.home) {
            self.ops.push(MountOp::Mkdir {
                path: p.claude_root.clone(),
            });
        }
    }

    /// 2. ~/.claude: the session's layer over the real config (or, without overlayfs,
    ///    the session's own dir in its place).
    fn claude_view(&mut self) {
        let input = self.input;
        let root = &input.paths.claude_root;
        let state = input.session_dir.join(STATE_DIR);
        match input.state_mode {
            StateMode::Overlay => self.ops.push(MountOp::Overlay {
                dst: root.clone(),
                lower: root.clone(),
                upper: state,
                work: input.session_dir.join(WORK_DIR),
                flags: MountFlags::NOSUID_NODEV,
            }),
            StateMode::Fresh => self.bind(&state, root, MountFlags::NONE, None),
        }
    }

    /// 3. Shared configuration, read-only, and shared writable entries (the login);
    ///    then the session's own `sessions/` and `~/.claude.json`. Sources are the real
    ///    entries, opened before the overlay hides them. Claude Code writes
    ///    .credentials.json by tmp+rename and falls back to writing in place on EBUSY.
    fn shared_entries(&mut self) {
        let input = self.input;
        let root = &input.paths.claude_root;
        let c = &input.profile.claude;
        let entries = c.read_only.iter().map(|n| (n, true));
        for (name, ro) in entries.chain(c.read_write.iter().map(|n| (n, false))) {
            let e = root.join(name);
            // An entry the user does not have is simply not there.
            let Some(kind) = self.ensured(&e) else {
                continue;
            };
            let create = self.may_create(&e).then_some(kind);
            self.bind(&e, &e, MountFlags::NONE.read_only(ro), create);
        }
        // Claude Code keeps sessions/<pid>.json in its config dir: that must be this
        // session's own, whatever the lower layer has there (the old store, or a link
        // to ours).
        let state = input.session_dir.join(STATE_DIR);
        self.bind(
            &state.join("sessions"),
            &root.join("sessions"),
            MountFlags::NONE,
            None,
        );
        // Tools that hard-code ~/.claude.json see the session's copy.
        let cj = &input.paths.claude_json;
        let create = self.may_create(cj).then_some(NodeKind::File);
        self.bind(&state.join(".claude.json"), cj, MountFlags::NONE, create);
    }

    /// 4. A private /tmp.
    fn private_tmp(&mut self) {
        self.ops.push(MountOp::Tmpfs {
            dst: "/tmp".into(),
            mode: 0o1777,
            size: None,
            flags: MountFlags::NOSUID_NODEV,
        });
        self.tmpfs_roots.push("/tmp".into());
    }

    /// 5. The project (and, under a hidden home, the command itself) stay visible; a
    ///    read-only project is bound read-only wherever it is.
    fn project(&mut self, view: &View) {
        let input = self.input;
        if let Some(proj) = &view.project {
            let create = self.in_tmpfs(&proj.path).then_some(NodeKind::Dir);
            let path = proj.path.clone();
            self.bind(
                &path,
                &path,
                MountFlags::NONE.read_only(proj.read_only),
                create,
            );
        }
        let exe_real = input.facts.real(&input.exe);
        if view.home_hidden && exe_real.starts_with(&input.paths.home) {
            self.bind(
                &exe_real,
                &exe_real,
                MountFlags::NONE.read_only(true),
                Some(NodeKind::File),
            );
        }
    }

    fn expand(&self, origin: &str, spec: &str, p: &str) -> Result<PathBuf, Error> {
        let input = self.input;
        let lex = lexical(p, &input.paths.home, &input.cwd).map_err(|why| Error::BadPath {
            origin: origin.to_string(),
            spec: spec.to_string(),
            why,
        })?;
        Ok(input.facts.real(&lex))
    }

    fn fact_of(&self, origin: &str, spec: &str, p: &str) -> Result<PathFact, Error> {
        let input = self.input;
        let lex = lexical(p, &input.paths.home, &input.cwd).map_err(|why| Error::BadPath {
            origin: origin.to_string(),
            spec: spec.to_string(),
            why,
        })?;
        Ok(input.facts.get(&lex))
    }

    /// 6. The profile's and the command line's own binds and tmpfs.
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
            let create = self.in_tmpfs(&dst.real).then_some(kind);
            if create.is_none() && dst.kind.is_none() {
                return Err(Error::MissingDestination {
                    origin,
                    spec: spec.to_string(),
                    path: dst.real,
                });
            }
            self.bind(&src.real, &dst.real, MountFlags::NONE.read_only(ro), create);
        }
        for t in &input.profile.tmpfs {
            let dst = self.expand("profile field \"tmpfs\"", t, t)?;
            if self.in_tmpfs(&dst) {
                self.ops.push(MountOp::Mkdir { path: dst.clone() });
            } else if input.facts.kind(&dst).is_none() {
                return Err(Error::MissingDestination {
                    origin: "profile field \"tmpfs\"".into(),
                    spec: t.clone(),
                    path: dst,
                });
            }
            self.ops.push(MountOp::Tmpfs {
                dst: dst.clone(),
                mode: 0o755,
                size: None,
                flags: MountFlags::NOSUID_NODEV,
            });
            self.tmpfs_roots.push(dst);
        }
        Ok(())
    }

    /// 7. Other sessions are invisible; so is whatever the profile hides. A path that
    ///    does not exist, or already lies under a tmpfs of this plan, needs nothing.
    fn hidden_paths(&mut self) -> Result<(), Error> {
        let input = self.input;
        let store = input.paths.sessions_dir.clone();
        self.hide(&store, self.ensured(&store));
        let hides = input
            .profile
            .hide
            .iter()
            .map(|h| ("profile field \"hide\"", h));
        for (origin, h) in hides.chain(input.overrides.hide.iter().map(|h| ("--hide", h))) {
            let f = self.fact_of(origin, h, h)?;
            self.hide(&f.real, f.kind);
        }
        Ok(())
    }

    fn hide(&mut self, dst: &Path, kind: Option<NodeKind>) {
        if let Some(kind) = kind.filter(|_| !self.in_tmpfs(dst)) {
            self.ops.push(MountOp::Hide {
                dst: dst.to_path_buf(),
                kind,
            });
        }
    }

    /// 8. Without the host's network: `lo` up, and a sysfs that shows this namespace.
    fn network(&mut self) {
        if self.input.profile.network == Network::None {
            self.ops.push(MountOp::LoopbackUp);
            self.ops.push(MountOp::Sysfs {
                dst: "/sys".into(),
                flags: MountFlags::SEALED,
            });
        }
    }

    /// 9. /dev and /proc last: /proc/self/fd is how earlier binds reach their sources.
    fn dev_and_proc(&mut self) {
        self.ops.push(MountOp::Dev {
            dst: "/dev".into(),
            nodes: DEV_NODES.iter().map(|s| s.to_string()).collect(),
            console: self.input.tty.clone(),
        });
        self.ops.push(MountOp::Proc {
            dst: "/proc".into(),
            flags: MountFlags {
                read_only: false,
                ..MountFlags::SEALED
            },
        });
    }
}
