//! The flags that shape a sandbox, shared by `csbox run` and `csbox spec` so an exported
//! spec takes exactly what a launch takes.

use clap::Args;

use crate::error::{Error, Result};
use crate::plan::Overrides;
use crate::profile::Network;
use crate::resolve::Request;

#[derive(Debug, Clone, Args)]
pub struct SandboxArgs {
    /// Sandbox profile: a built-in (default, strict, ci, compat), a user profile name, or a path
    #[arg(long, env = "CSBOX_PROFILE", default_value = "default", add = clap_complete::engine::ArgValueCandidates::new(super::complete::profiles))]
    pub profile: String,
    /// Bind SRC at DST (default: the same path), read-write, for this run
    #[arg(long = "bind", value_name = "SRC[:DST]")]
    pub bind: Vec<String>,
    /// Bind SRC at DST read-only, for this run
    #[arg(long = "ro-bind", value_name = "SRC[:DST]")]
    pub ro_bind: Vec<String>,
    /// Hide a file or directory inside the sandbox, for this run
    #[arg(long, value_name = "PATH")]
    pub hide: Vec<String>,
    /// Show a path the profile hides (e.g. ~/.ssh), for this run
    #[arg(long, value_name = "PATH")]
    pub unhide: Vec<String>,
    /// Network: `proxy` (own namespace, out only through csbox's filtering proxy), `none` (only lo) or `host` (the host's network: no isolation)
    #[arg(long, value_name = "proxy|none|host", value_parser = ["proxy", "none", "host"])]
    pub net: Option<String>,
    /// Let the proxy reach HOST[:PORT] (also *.domain), for this run
    #[arg(long = "allow-host", value_name = "HOST[:PORT]")]
    pub allow_host: Vec<String>,
    /// Refuse HOST[:PORT] (also *.domain) even if the profile allows it, for this run
    #[arg(long = "deny-host", value_name = "HOST[:PORT]")]
    pub deny_host: Vec<String>,
    /// Set an environment variable inside
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
}

impl SandboxArgs {
    /// The resolve request for `command` (empty: claude). `remove_on_exit` is `--rm` /
    /// `--keep` where the command has them.
    pub fn request(&self, command: &[String], remove_on_exit: Option<bool>) -> Result<Request> {
        let env = self
            .env
            .iter()
            .map(|kv| {
                kv.split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| Error::Usage(format!("--env {kv:?}: expected K=V")))
            })
            .collect::<Result<_>>()?;
        Ok(Request {
            profile: self.profile.clone(),
            overrides: Overrides {
                bind: self.bind.clone(),
                ro_bind: self.ro_bind.clone(),
                hide: self.hide.clone(),
                unhide: self.unhide.clone(),
            },
            net: match self.net.as_deref() {
                Some("proxy") => Some(Network::Proxy),
                Some("none") => Some(Network::None),
                Some("host") => Some(Network::Host),
                _ => None,
            },
            allow_hosts: self.allow_host.clone(),
            deny_hosts: self.deny_host.clone(),
            env,
            command: command.to_vec(),
            remove_on_exit,
        })
    }
}
