//! Building a plan: pure code over the profile, the session and the [`Facts`] that
//! `resolve` gathered. Nothing here touches the file system; what a step needs to know
//! about a host path (where it really points, whether it is a directory) is a fact.

use std::path::{Path, PathBuf};

use super::*;
use crate::paths::Paths;
use crate::profile::expand::{lexical, split_bind, PathError};
use crate::profile::{Access, EnvPolicyKind, Home, Network, Profile, SeccompLevel};
use crate::session::store::{STATE_DIR, WORK_DIR};

/// Why a plan cannot be built: each names the profile or flag, the path, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A hidden home needs a project directory below it.
    #[error("profile {profile:?} hides your home directory except the project dir, and the working directory is {} itself: cd into a project first", home.display())]
    WorkingDirIsHome { profile: String, home: PathBuf },
    /// The bound working directory would cover or reveal something it must not.
    #[error("profile {profile:?} binds the working directory {} into the sandbox{}, and it {} {what} ({}): cd into a project first",
        cwd.display(), if *read_only { " read-only" } else { "" },
        if *holds { "holds" } else { "lies inside" }, dir.display())]
    WorkingDirOverlaps {
        profile: String,
        cwd: PathBuf,
        read_only: bool,
        holds: bool,
        what: &'static str,
        dir: PathBuf,
    },
    /// A path in a profile field or flag does not parse.
    #[error("{origin} {spec:?}: {why}")]
    BadPath {
        origin: String,
        spec: String,
        why: PathError,
    },
    /// A bind source does not exist.
    #[error("{origin} {spec:?}: the source {} does not exist; create it or fix the path", path.display())]
    MissingSource {
        origin: String,
        spec: String,
        path: PathBuf,
    },
    /// A mount point outside the sandbox's own tmpfs does not exist.
    #[error("{origin} {spec:?}: the destination {} does not exist: create it first (csbox makes mount points only inside its own tmpfs, never in your real file system)", path.display())]
    MissingDestination {
        origin: String,
        spec: String,
        path: PathBuf,
    },
}

/// Paths the command line adds for one run, kept apart from the profile's so an error
/// can name the flag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub bind: Vec<String>,
    pub ro_bind: Vec<String>,
    pub hide: Vec<String>,
}

/// What the plan is built from. Everything here is data; nothing is read from the system.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    pub paths: &'a Paths,
    pub session_id: &'a str,
    pub session_dir: &'a Path,
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    pub host_env: Vec<(String, String)>,
    pub uid: u32,
    pub gid: u32,
    pub state_mode: StateMode,
    pub profile: &'a Profile,
    pub overrides: &'a Overrides,
    pub exe: PathBuf,
    pub facts: &'a Facts,
    /// The terminal csbox runs in, if any (bound at /dev/console).
    pub tty: Option<PathBuf>,
    pub remove_on_exit: bool,
}

/// Calls strict seccomp refuses: kernel keyrings, bpf, perf, userfaultfd, modules, kexec,
/// swap, reboot, accounting, handle-based opens.
pub const STRICT_DENY: &[&str] = &[
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "acct",
    "swapon",
    "swapoff",
    "reboot",
    "open_by_handle_at",
];

/// Host device nodes a sandbox's /dev holds.
pub const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

const OVERRIDDEN_ENV: &[&str] = &[
    "CLAUDE_CONFIG_DIR",
    "DISABLE_AUTOUPDATER",
    "CLAUDE_CODE_TMPDIR",
    "CSBOX_SESSION_ID",
];

/// Every host path whose fact [`build`] consults, spelled as it spells them: `resolve`
/// looks each one up before building.
pub fn wanted_paths(
    paths: &Paths,
    profile: &Profile,
    overrides: &Overrides,
    cwd: &Path,
    exe: &Path,
) -> Vec<PathBuf> {
    let mut out = vec![
        paths.home.clone(),
        paths.claude_root.clone(),
        paths.sessions_dir.clone(),
        paths.claude_json.clone(),
        cwd.to_path_buf(),
        exe.to_path_buf(),
    ];
    let c = &profile.claude;
    out.extend(
        c.read_only
            .iter()
            .chain(&c.read_write)
            .map(|n| paths.claude_root.join(n)),
    );
    let ex = |s: &str| lexical(s, &paths.home, cwd).ok();
    for spec in profile_binds(profile, overrides).map(|(_, spec, _)| spec) {
        if let Ok((src, dst)) = split_bind(spec) {
            out.extend(ex(&src));
            out.extend(dst.as_deref().and_then(ex));
        }
    }
    for t in profile
        .tmpfs
        .iter()
        .chain(&profile.hide)
        .chain(&overrides.hide)
    {
        out.extend(ex(t));
    }
    out
}

fn profile_binds<'a>(
    profile: &'a Profile,
    overrides: &'a Overrides,
) -> impl Iterator<Item = (String, &'a str, bool)> + 'a {
    let field = |list: &'a [String], origin: &'static str, ro: bool| {
        list.iter()
            .map(move |s| (origin.to_string(), s.as_str(), ro))
    };
    field(&profile.bind, "profile field \"bind\"", false)
        .chain(field(&profile.ro_bind, "profile field \"roBind\"", true))
        .chain(field(&overrides.bind, "--bind", false))
        .chain(field(&overrides.ro_bind, "--ro-bind", true))
}

pub fn build(input: &PlanInput) -> Result<Plan, Error> {
    let prof = input.profile;
    let sandboxed = prof.isolation == Isolation::Namespaces;
    let view = view(input)?;
    let mounts = if sandboxed {
        Mounts::new(input).build(&view)?
    } else {
        Vec::new()
    };
    let state = input.session_dir.join(STATE_DIR);
    Ok(Plan {
        version: PLAN_VERSION,
        profile: prof.name.clone(),
        isolation: prof.isolation,
        session: PlanSession {
            id: input.session_id.to_string(),
            dir: input.session_dir.to_path_buf(),
            state_dir: state.clone(),
            work_dir: input.session_dir.join(WORK_DIR),
        },
        namespaces: Namespaces {
            user: sandboxed,
            mount: sandboxed,
            pid: sandboxed,
            ipc: sandboxed,
            uts: sandboxed,
            net: sandboxed && prof.network == Network::None,
        },
        uid: input.uid,
        gid: input.gid,
        state_mode: input.state_mode,
        view,
        mounts,
        exe: input.exe.clone(),
        argv: input.argv.clone(),
        env: env(input, &state),
        cwd: input.cwd.clone(),
        capabilities: Vec::new(),
        no_new_privs: sandboxed,
        seccomp: seccomp(prof, sandboxed),
        die_with_parent: true,
        max_user_namespaces: (sandboxed && !prof.nested_userns).then_some(0),
        rlimits: prof.rlimits.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        timeout_secs: prof.timeout_secs,
        compat_links: if sandboxed {
            Vec::new()
        } else {
            compat_links(input, &state)
        },
        remove_on_exit: input.remove_on_exit,
    })
}

/// Step 0: what the sandbox shows of the home and the project, and whether the working
/// directory fits the profile.
fn view(input: &PlanInput) -> Result<View, Error> {
    let p = input.paths;
    let prof = input.profile;
    let cwd = &input.cwd;
    let hidden_home = prof.home == Home::Hidden && prof.isolation == Isolation::Namespaces;
    if hidden_home && (cwd == &p.home || !cwd.starts_with("/")) {
        return Err(Error::WorkingDirIsHome {
            profile: prof.name.clone(),
            home: p.home.clone(),
        });
    }
    // The working directory is bound back over what the other steps build: under /tmp
    // (the host's, over the private tmpfs), under a hidden home, or anywhere for a
    // read-only project. /tmp itself is never bound: the host's sockets there (tmux,
    // ssh-agent, X11) would be reachable even read-only.
    let read_only = prof.project == Access::Ro;
    let bound = cwd != Path::new("/tmp")
        && (cwd.starts_with("/tmp") || (hidden_home && cwd.starts_with(&p.home)) || read_only);
    if bound {
        // Such a bind must not cover the ~/.claude view or the home's tmpfs (nor reveal
        // the session store): refuse a working directory that holds one of them or lies
        // inside ~/.claude or the store. Compared as the kernel resolves them (getcwd is
        // canonical; HOME may go through a symlink).
        let facts = input.facts;
        for (what, dir, not_inside) in [
            ("your home", facts.real(&p.home), false),
            ("~/.claude", facts.real(&p.claude_root), true),
            ("the session store", facts.real(&p.sessions_dir), true),
        ] {
            let holds = dir.starts_with(cwd);
            if holds || (not_inside && cwd.starts_with(&dir)) {
                return Err(Error::WorkingDirOverlaps {
                    profile: prof.name.clone(),
                    cwd: cwd.clone(),
                    read_only,
                    holds,
                    what,
                    dir,
                });
            }
        }
    }
    Ok(View {
        home: p.home.clone(),
        home_hidden: hidden_home,
        project: bound.then(|| ProjectView {
            path: cwd.clone(),
            read_only,
        }),
    })
}

/// The mount list, step by step, and the tmpfs roots made so far (a mount point inside
/// one of them may be created; anywhere else it must exist).
struct Mounts<'a> {
    input: &'a PlanInput<'a>,
    ops: Vec<MountOp>,
    tmpfs_roots: Vec<PathBuf>,
}

impl<'a> Mounts<'a> {
    fn new(input: &'a PlanInput<'a>) -> Self {
        Mounts {
            input,
            ops: vec![MountOp::MakeSlave { path: "/".into() }],
            tmpfs_roots: Vec::new(),
        }
    }

    fn build(mut self, view: &View) -> Result<Vec<MountOp>, Error> {
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

/// The command's environment: the host's (or the profile's allowlist of it), the
/// profile's own variables, then what csbox sets.
fn env(input: &PlanInput, state: &Path) -> Vec<(String, String)> {
    let prof = input.profile;
    let mut env: Vec<(String, String)> = input
        .host_env
        .iter()
        .filter(|(k, _)| !OVERRIDDEN_ENV.contains(&k.as_str()))
        .filter(|(k, _)| {
            prof.env.policy == EnvPolicyKind::Pass
                || prof.env.allow.contains(k)
                || prof.env.set.contains_key(k)
        })
        .filter(|(k, _)| !prof.env.set.contains_key(k))
        .cloned()
        .collect();
    env.extend(prof.env.set.iter().map(|(k, v)| (k.clone(), v.clone())));
    let sandboxed = prof.isolation == Isolation::Namespaces;
    let config_dir = if sandboxed {
        input.paths.claude_root.clone()
    } else {
        state.to_path_buf()
    };
    let var = |k: &str, v: String| (k.to_string(), v);
    env.push(var("CLAUDE_CONFIG_DIR", config_dir.display().to_string()));
    // Only `csbox update`, outside every sandbox, updates Claude Code.
    env.push(var("DISABLE_AUTOUPDATER", "1".into()));
    env.push(var("CSBOX_SESSION_ID", input.session_id.to_string()));
    if sandboxed {
        env.push(var("CLAUDE_CODE_TMPDIR", "/tmp".into()));
    }
    env
}

/// The seccomp rules of a profile: TIOCSTI/TIOCLINUX everywhere a sandbox runs, the
/// strict list, and no new user namespaces where the profile forbids them.
fn seccomp(prof: &Profile, sandboxed: bool) -> Seccomp {
    if !sandboxed {
        return Seccomp {
            rules: Vec::new(),
            deny_compat_abis: false,
        };
    }
    let eperm = libc::EPERM;
    let mut rules = terminal_rules();
    let strict = prof.seccomp == SeccompLevel::Strict;
    if strict {
        rules.push(SyscallRule {
            names: STRICT_DENY.iter().map(|s| s.to_string()).collect(),
            errno: eperm,
            arg: None,
        });
    }
    if !prof.nested_userns {
        let newuser = libc::CLONE_NEWUSER as u32;
        for name in ["unshare", "clone"] {
            rules.push(SyscallRule {
                names: vec![name.into()],
                errno: eperm,
                arg: Some(ArgMatch {
                    index: 0,
                    mask: newuser,
                    value: newuser,
                }),
            });
        }
        // clone3 passes its flags in memory seccomp cannot read: ENOSYS makes libc fall
        // back to clone, which the rule above sees.
        rules.push(SyscallRule {
            names: vec!["clone3".into()],
            errno: libc::ENOSYS,
            arg: None,
        });
    }
    Seccomp {
        rules,
        deny_compat_abis: strict,
    }
}

/// ioctl(fd, TIOCSTI | TIOCLINUX) refused with EPERM, on the low 32 bits of the request:
/// nothing inside can type into the user's terminal (CVE-2017-5226).
pub fn terminal_rules() -> Vec<SyscallRule> {
    [TIOCSTI, TIOCLINUX]
        .iter()
        .map(|req| SyscallRule {
            names: vec!["ioctl".into()],
            errno: libc::EPERM,
            arg: Some(ArgMatch {
                index: 1,
                mask: u32::MAX,
                value: *req as u32,
            }),
        })
        .collect()
}

/// Without a sandbox: the profile's shared entries, linked into the session's own
/// config dir while it runs.
fn compat_links(input: &PlanInput, state: &Path) -> Vec<CompatLink> {
    let c = &input.profile.claude;
    c.read_only
        .iter()
        .chain(&c.read_write)
        .map(|name| CompatLink {
            name: name.clone(),
            link: state.join(name),
            target: input.paths.claude_root.join(name),
            copy_back: name == ".credentials.json",
        })
        .collect()
}
