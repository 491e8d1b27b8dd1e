//! From what the user asked for to the inputs of a plan: the profile with the command
//! line's overrides, the command and where it runs, and the facts about every host path
//! the plan will name (where it really points, whether it exists). This is where the file
//! system is read, once, so that `plan::build` stays pure. `csbox run` and `csbox spec`
//! both start here, so an exported sandbox is the one `run` would launch.

mod claude;
mod host;
mod lookup;

use lookup::home_nodes;
pub use lookup::look_up;

use std::path::{Path, PathBuf};

use crate::error::{Error, EXIT_NOT_FOUND};
use crate::exit::Result;
use crate::paths::{find_on_path, Paths};
use crate::plan::{self, Facts, Overrides, Plan, PlanInput, StateMode};
use crate::profile::{self, Isolation, Network, Profile};

/// What the command line asks for, as plain values (the clap types stay in `commands/`).
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// A built-in name, a user profile name, or a path.
    pub profile: String,
    pub overrides: Overrides,
    pub net: Option<Network>,
    /// `--allow-host`, `--deny-host`: rules added to the profile's network policy.
    pub allow_hosts: Vec<String>,
    pub deny_hosts: Vec<String>,
    /// `--env K=V`, already split.
    pub env: Vec<(String, String)>,
    /// The command and its arguments; empty: claude.
    pub command: Vec<String>,
    /// `--rm` (Some(true)) or `--keep` (Some(false)); None: the profile decides.
    pub remove_on_exit: Option<bool>,
}

/// Everything decided before any session exists.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub paths: Paths,
    pub profile: Profile,
    pub overrides: Overrides,
    pub argv: Vec<String>,
    pub exe: PathBuf,
    pub cwd: PathBuf,
    pub host_env: Vec<(String, String)>,
    pub uid: u32,
    pub gid: u32,
    pub facts: Facts,
    pub tty: Option<PathBuf>,
    pub remove_on_exit: bool,
}

impl Resolved {
    /// Load the profile, apply the overrides, check the store's place, resolve the
    /// command (default: claude), look up the host paths. Nothing is created.
    pub fn resolve(req: &Request) -> Result<Resolved> {
        let paths = Paths::from_env()?;
        // A bad profile or flag fails here, before anything is created.
        let mut profile = profile::load(&req.profile, &paths.user_profiles_dir())?;
        if let Some(n) = req.net {
            profile.network.mode = n;
        }
        for (flag, list) in [
            ("--allow-host", &req.allow_hosts),
            ("--deny-host", &req.deny_hosts),
        ] {
            for h in list.iter() {
                crate::profile::network::check_rule(h)
                    .map_err(|why| Error::Usage(format!("{flag} {h:?}: {why}")))?;
            }
        }
        profile
            .network
            .add(req.allow_hosts.clone(), req.deny_hosts.clone());
        profile
            .env
            .set
            .extend(req.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let argv = if req.command.is_empty() {
            vec!["claude".to_string()]
        } else {
            req.command.clone()
        };
        let cwd = std::env::current_dir().map_err(|e| Error::io("getcwd", ".", e))?;
        let exe = resolve_command(&paths, &argv, req.command.is_empty(), &cwd)?;
        let host_env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let uid = nix::unistd::getuid().as_raw();
        let layout = if profile.isolation == Isolation::Namespaces {
            host::layout(&paths.home, &paths.sessions_dir, &cwd, uid, &host_env)
        } else {
            // No sandbox: nothing of the host's layout goes into the plan.
            host::unsandboxed(uid, &host_env)
        };
        let wanted = plan::wanted_paths(&paths, &profile, &req.overrides, &cwd, &exe, &layout);
        let mut facts = look_up(wanted.clone());
        let home = facts.real(&paths.home);
        // Checked on the looked-up facts: resolving both paths again cost 8 calls.
        if profile.isolation == Isolation::Namespaces
            && facts
                .real(&paths.sessions_dir)
                .starts_with(facts.real(&paths.claude_root))
        {
            return Err(Error::Usage(format!(
                "SESSIONS_DIR ({}) lies inside CLAUDE_ROOT ({}): every session's ~/.claude view is made from CLAUDE_ROOT and \
merge-back writes into it, so a store there would put each session's layers where the others and the host's Claude Code read; \
unset SESSIONS_DIR (default ~/.local/share/csbox/sessions) or point it elsewhere",
                paths.sessions_dir.display(),
                paths.claude_root.display()
            ))
            .into());
        }
        facts.host = layout;
        if profile.isolation == Isolation::Namespaces {
            facts.host.home_nodes = home_nodes(&facts, &wanted, &home);
            let root = facts.real(&paths.claude_root);
            facts.host.claude = claude::lower(&root, &cwd).map(|mut l| {
                let c = &profile.claude;
                let shared: Vec<String> =
                    c.read_only.iter().chain(&c.read_write).cloned().collect();
                (l.referenced, l.referenced_links) =
                    claude::referenced(&root, &paths.claude_root, &paths.home, &shared);
                l
            });
        }
        let remove_on_exit = req.remove_on_exit.unwrap_or(profile.remove_on_exit);
        Ok(Resolved {
            paths,
            profile,
            overrides: req.overrides.clone(),
            argv,
            exe,
            cwd,
            host_env,
            uid,
            gid: nix::unistd::getgid().as_raw(),
            facts,
            tty: controlling_tty(),
            remove_on_exit,
        })
    }

    /// The plan for session `id` (its directory `dir`) in the given state mode.
    pub fn plan(&self, id: &str, dir: &Path, mode: StateMode) -> Result<Plan, plan::Error> {
        self.plan_with(id, dir, mode, false)
    }

    /// As [`Resolved::plan`]; with `home_read_only`, a copy-on-write home falls back to a
    /// read-only one (where overlayfs refuses the home).
    pub fn plan_with(
        &self,
        id: &str,
        dir: &Path,
        mode: StateMode,
        home_read_only: bool,
    ) -> Result<Plan, plan::Error> {
        let mut profile = self.profile.clone();
        if home_read_only && profile.home == crate::profile::Home::Overlay {
            profile.home = crate::profile::Home::ReadOnly;
        }
        plan::build(&PlanInput {
            paths: &self.paths,
            session_id: id,
            session_dir: dir,
            argv: self.argv.clone(),
            cwd: self.cwd.clone(),
            host_env: self.host_env.clone(),
            uid: self.uid,
            gid: self.gid,
            state_mode: mode,
            profile: &profile,
            overrides: &self.overrides,
            exe: self.exe.clone(),
            facts: &self.facts,
            tty: self.tty.clone(),
            remove_on_exit: self.remove_on_exit,
        })
    }
}

/// The terminal on stdin, stdout or stderr, if one is a terminal with a name under /dev/.
fn controlling_tty() -> Option<PathBuf> {
    (0..3)
        .find_map(|fd| {
            // SAFETY: 0, 1 and 2 stay open for the whole process; only borrowed here.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            nix::unistd::ttyname(fd).ok()
        })
        .filter(|p| p.starts_with("/dev/") && p.components().count() >= 3)
}

/// The command must exist before a session is made for it.
fn resolve_command(
    paths: &Paths,
    argv: &[String],
    default: bool,
    cwd: &Path,
) -> Result<PathBuf, Error> {
    if default {
        return paths.find_claude().ok_or_else(|| Error::Exec {
            msg: "claude is not installed (not on PATH, CLAUDE_BIN unset): install it with \
`npm install -g @anthropic-ai/claude-code`, set CLAUDE_BIN, or run another command: csbox run -- bash"
                .into(),
            code: EXIT_NOT_FOUND,
        });
    }
    let cmd = &argv[0];
    if cmd.contains('/') {
        let p = cwd.join(cmd);
        return if p.exists() {
            Ok(p)
        } else {
            Err(Error::Exec {
                msg: format!("{cmd}: no such file"),
                code: EXIT_NOT_FOUND,
            })
        };
    }
    find_on_path(cmd.as_ref(), paths.path_var.as_deref()).ok_or_else(|| Error::Exec {
        msg: format!("{cmd}: command not found on PATH"),
        code: EXIT_NOT_FOUND,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::NodeKind;

    #[test]
    fn symlinks_resolve_to_where_they_point_and_kinds_are_known() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("real")).unwrap();
        std::fs::write(d.path().join("real/f"), "x").unwrap();
        std::os::unix::fs::symlink(d.path().join("real"), d.path().join("link")).unwrap();
        let link = d.path().join("link");
        let facts = look_up([link.clone(), link.join("f"), link.join("nope")]);
        let real = d.path().canonicalize().unwrap().join("real");
        assert_eq!(facts.real(&link), real);
        assert_eq!(facts.kind(&link), Some(NodeKind::Dir));
        assert_eq!(facts.kind(&link.join("f")), Some(NodeKind::File));
        assert_eq!(facts.kind(&link.join("nope")), None);
        assert_eq!(facts.real(&link.join("nope")), real.join("nope"));
        // The real spelling is known too: a plan step may look either up.
        assert_eq!(facts.kind(&real), Some(NodeKind::Dir));
    }

    /// A listed directory answers for its absent names: every name gets the fact a look-up
    /// of its own would give (a file, a dir, a link out, a dangling link, absent names,
    /// names below a file and below a missing dir).
    #[test]
    fn listed_directories_give_the_facts_single_look_ups_give() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        let h = root.join("h");
        std::fs::create_dir_all(h.join("dir")).unwrap();
        std::fs::create_dir(root.join("out")).unwrap();
        std::fs::write(h.join("file"), "x").unwrap();
        std::os::unix::fs::symlink(root.join("out"), h.join("linkout")).unwrap();
        std::os::unix::fs::symlink(root.join("gone"), h.join("dangling")).unwrap();
        let names = [
            "file",
            "dir",
            "linkout",
            "dangling",
            "absent1",
            "absent2",
            "file/below",
            "missing/below",
            "linkout/x",
            "dir/y",
        ];
        let wanted: Vec<PathBuf> = names.iter().map(|n| h.join(n)).collect();
        let all = look_up(wanted.clone());
        for p in &wanted {
            let alone = look_up([p.clone()]);
            assert_eq!(all.real(p), alone.real(p), "real of {}", p.display());
            assert_eq!(all.kind(p), alone.kind(p), "kind of {}", p.display());
        }
        assert_eq!(all.kind(&h.join("linkout")), Some(NodeKind::Dir));
        assert_eq!(all.real(&h.join("linkout/x")), root.join("out/x"));
        assert_eq!(all.kind(&h.join("absent1")), None);
        assert_eq!(all.kind(&h.join("dangling")), None);
        assert_eq!(all.real(&h.join("missing/below")), h.join("missing/below"));
    }
}
