//! `csbox enter ID [-- CMD…]`: a second process in a running session (default: the
//! session's `$SHELL`), in its sandbox with the restrictions its command has.

use clap::Args;

use crate::error::Error;
use crate::exit::Result;
use crate::human::printable;
use crate::paths::Paths;
use crate::plan::Plan;
use crate::session::control::{Client, ConnectError, SOCKET};
use crate::session::Store;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  csbox enter 0193a1b2                 a shell in the running session\n  csbox enter fix-login -- git status\n  csbox enter 0193a1b2 -- sh -c 'ls ~/.claude/projects'\n\nThe process joins the session's namespaces with what its command has: no capabilities, no_new_privs, the same seccomp filter and Landlock rules, environment and working directory. Its exit does not end the session; the session's end ends it."
)]
pub struct EnterArgs {
    /// Session id, unique id prefix, or name (it must be running)
    #[arg(add = clap_complete::engine::ArgValueCandidates::new(super::complete::sessions))]
    pub id: String,
    /// The command to run inside (default: the session's $SHELL, else /bin/sh)
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// Connect to a running session's supervisor, or say why not.
pub fn connect(
    store: &Store,
    reference: &str,
    verb: &str,
) -> Result<(crate::session::SessionId, Client)> {
    let id = store.resolve(reference)?;
    let info = store.info(&id, false)?;
    if !info.is_active() {
        return Err(Error::BadSession {
            msg: format!(
                "session {id} is not running ({}): `csbox {verb}` needs a running session; start it again with `csbox run --session {id}`",
                info.state_word()
            ),
        }
        .into());
    }
    let dfd = store.open_session_dir(&id)?;
    let supervisor = info.meta.as_ref().and_then(|m| m.supervisor_pid);
    let sock = info.dir.join(SOCKET);
    let client = Client::connect(&dfd, supervisor).map_err(|e| match e {
        ConnectError::Missing => Error::BadSession {
            msg: format!("session {id} runs, but its supervisor serves no {SOCKET} (an older csbox started it): `csbox {verb}` cannot reach it"),
        },
        ConnectError::NotSocket(kind) => Error::Other(format!("{} is {kind}, not csbox's socket: not used", sock.display())),
        ConnectError::Refused => Error::BadSession {
            msg: format!("session {id}'s supervisor does not answer on {} (it is ending, or it was killed)", sock.display()),
        },
        ConnectError::OtherUser { uid } => Error::BadSession {
            // SAFETY: getuid never fails.
            msg: format!(
                "session {id} is uid {uid}'s: only the user who started it owns its namespaces and may {verb} it (you are uid {})",
                unsafe { libc::getuid() }
            ),
        },
        ConnectError::NotSupervisor { pid } => Error::Other(format!(
            "the process serving {} (pid {pid}) is not session {id}'s supervisor (pid {} in its session.json): not used",
            sock.display(),
            supervisor.map(|p| p.to_string()).unwrap_or_else(|| "none".into())
        )),
        ConnectError::Io(e) => Error::io("connect", sock.clone(), e),
    })?;
    Ok((id, client))
}

pub fn enter_cmd(a: EnterArgs) -> Result<i32> {
    if std::env::var_os("CSBOX_SESSION_ID").is_some() {
        return Err(Error::Usage("csbox enter inside a csbox session is not supported: the session store is hidden in here".into()).into());
    }
    let paths = Paths::from_env()?;
    let store = Store::new(paths.sessions_dir.clone());
    let (id, client) = connect(&store, &a.id, "enter")?;
    let reply = client
        .enter()
        .map_err(|e| Error::io("ask the supervisor (control.sock) for", store.dir.join(id.as_str()), e))?
        .ok_or_else(|| Error::BadSession {
            msg: format!("session {id} runs without a sandbox (profile compat): there is nothing to enter, its processes are ordinary processes of yours"),
        })?;
    drop(client);
    let plan: Plan = serde_json::from_slice(&reply.plan)
        .map_err(|e| Error::Other(format!("session {id}'s supervisor sent a plan this csbox cannot read ({e}): use the csbox that started it")))?;
    let argv = if a.command.is_empty() {
        let shell = plan
            .env
            .iter()
            .find(|(k, _)| k == "SHELL")
            .map(|(_, v)| v.clone())
            .filter(|s| !s.is_empty());
        vec![shell.unwrap_or_else(|| "/bin/sh".into())]
    } else {
        a.command
    };
    crate::debug!("entering session {id}: {}", printable(&argv.join(" ")));
    let status = crate::sandbox::enter::enter(&plan, &reply.ns, &argv)?;
    Ok(status.shell_code())
}
