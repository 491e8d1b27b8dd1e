//! The supervisor's half of a proxied network: the socket pair pid 1 passes accepted
//! connections over, the proxy that serves them (src/net), and what the user is told
//! about refused connections.
//!
//! A refusal is told once per host. With a terminal, after the command exits, in one
//! block: a line printed while a TUI (Claude Code) owns the screen would be drawn over
//! or corrupt it. Without one (CI, scripts), at once on stderr, where a log reader
//! wants it next to the failure it explains. Every connection is in `net.jsonl` too.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::net::{AuditLog, Policy, Proxy, Upstream};
use crate::plan::{NetPlan, Plan};

/// The socket pair of one launch: `inside` goes to pid 1, `outside` to the proxy.
pub struct Egress {
    inside: OwnedFd,
    outside: OwnedFd,
}

/// Refused destinations of a session: host:port → (count, why).
type Refusals = Arc<Mutex<BTreeMap<String, (usize, String)>>>;

/// What is reported when the session ends.
pub struct Report {
    refused: Refusals,
    at_end: bool,
}

impl Egress {
    /// A socket pair when the plan proxies the network.
    pub fn new(plan: &Plan) -> Result<Option<Egress>> {
        if plan.network.proxy_port.is_none() || !plan.namespaces.net {
            return Ok(None);
        }
        let (inside, outside) = crate::net::fd_socketpair()
            .map_err(|e| Error::io("socketpair(AF_UNIX, SOCK_SEQPACKET)", "", e))?;
        Ok(Some(Egress { inside, outside }))
    }

    /// The descriptor pid 1 relays over (inherited through clone).
    pub fn inside_fd(&self) -> RawFd {
        self.inside.as_raw_fd()
    }

    /// After the clone: close our copy of pid 1's end and serve the other on a thread.
    pub fn serve(self, plan: &Plan) -> Result<Report> {
        let net = &plan.network;
        let proxy = proxy_for(plan, net)?;
        let refused: Refusals = Default::default();
        let at_end = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let r = refused.clone();
        let proxy = proxy.on_blocked(move |host, port, why| {
            let key = format!("{host}:{port}");
            let line = format!("csbox: blocked connection to {key} ({why})");
            let mut m = r.lock().unwrap_or_else(|p| p.into_inner());
            let e = m.entry(key).or_insert((0, line));
            e.0 += 1;
            if e.0 == 1 && !at_end {
                eprintln!("{}", e.1);
            }
        });
        raise_nofile();
        one_malloc_arena();
        drop(self.inside);
        let outside = self.outside;
        let proxy = Arc::new(proxy);
        std::thread::Builder::new()
            .name("csbox-proxy".into())
            .spawn(move || {
                if let Err(e) = proxy.serve_passed_fds(outside) {
                    crate::debug!("net: the proxy stopped: {e}");
                }
            })
            .map_err(|e| Error::io("spawn the proxy thread", "", e))?;
        Ok(Report { refused, at_end })
    }
}

fn proxy_for(plan: &Plan, net: &NetPlan) -> Result<Proxy> {
    let policy = Policy::new(plan.profile.clone(), &net.allow, &net.deny)
        .map_err(|e| Error::Usage(format!("profile {:?}: {e}", plan.profile)))?;
    let mut proxy = Proxy::new(policy);
    if let Some(u) = &net.upstream {
        // Read here, outside the sandbox: the plan holds only the variable's name.
        let url = std::env::var(&u.var).unwrap_or_default();
        let up = Upstream::from_url(&url)
            .map_err(|e| Error::Usage(format!("{}: {e}; fix it or unset it", u.var)))?
            .with_no_proxy(&u.no_proxy);
        proxy = proxy.upstream(Some(up));
    }
    if let Some(rel) = &net.audit {
        let dir = crate::fsutil::open_dir_nofollow(&plan.session.dir)
            .map_err(|e| Error::io("open", plan.session.dir.clone(), e))?;
        // Created by the first connection: most runs make none.
        proxy = proxy.audit(AuditLog::open_lazily_in(dir, &rel.to_string_lossy()));
    }
    Ok(proxy)
}

/// The proxy holds six descriptors per client: let it have the hard limit.
fn raise_nofile() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on our own limits.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// glibc gives threads that allocate at once arenas of their own (up to 8 per core),
/// each a 132 KiB heap of which 16–24 KiB end up touched, and keeps them: with a thread
/// per tunnel, 100 tunnels had 15 arenas (376 KiB). The proxy's handshake threads are
/// short-lived now and allocate little, so one shared arena costs them nothing
/// measurable; it saved another 26 KiB with 100 tunnels opened one after another.
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a parameter of the allocator; it is safe to call at any
    // time (new threads then attach to the existing arena).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

impl Report {
    /// At the end of a session with a terminal: each refused destination once.
    pub fn finish(&self) {
        if !self.at_end {
            return;
        }
        let m = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        for (count, why) in m.values() {
            let times = if *count > 1 {
                format!(" ({count} times)")
            } else {
                String::new()
            };
            eprintln!("{why}{times}");
        }
    }
}
