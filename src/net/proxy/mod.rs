//! Serving one client connection: read what it asks (HTTP CONNECT, an absolute-form
//! http:// request, or SOCKS5), decide, connect (directly or through the upstream proxy),
//! answer, relay, log.

use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use super::audit::{AuditLog, Outcome, Protocol, Record};
use super::fdpass::recv_fd;
use super::http;
use super::policy::{printable, Decision, Dest, Policy, Resolver, SystemResolver};
use super::relay::{Ends, Pipes, Relayed, Relayer};
use super::upstream::Upstream;

/// Limits of one proxy. The defaults suit a real session; tests shorten the timeouts.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// For the whole request head (or SOCKS5 handshake), not per read: a client dribbling
    /// one byte at a time cannot hold a thread longer. Also the upstream proxy's answer.
    pub head_timeout: Duration,
    /// For connecting to the destination, across all its addresses.
    pub connect_timeout: Duration,
    /// Largest request head accepted (request line and headers).
    pub max_head: usize,
    /// Connections served at once; more are answered 503 and closed. Each costs two
    /// sockets and two pipes: six descriptors, and 2 × 16 pages of the user's pipe quota
    /// (`fs.pipe-user-pages-soft`, 16384 pages: past it every new pipe of the user, the
    /// sandbox's included, gets a single page); 256 stays at half the quota, with room
    /// for the few pipes the relay grows for bulk data (src/net/relay.rs).
    pub max_clients: usize,
    /// Stack of each client's handshake thread and of the relay thread. Their work is
    /// shallow (resolution runs on its own thread, see [`SystemResolver`]) and untouched
    /// stack pages cost no memory.
    pub stack_size: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            head_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_head: 16 * 1024,
            max_clients: 256,
            stack_size: 128 * 1024,
        }
    }
}

/// Called once per refused connection with the destination host, port, and the reason
/// (one sentence naming the rule, the profile and what to do). Host and reason are safe
/// to print: nothing the client sent reaches them unescaped.
pub type BlockedFn = dyn Fn(&str, u16, &str) + Send + Sync;

/// The proxy engine: shared by every client thread.
pub struct Proxy {
    policy: Arc<Policy>,
    resolver: Arc<dyn Resolver>,
    upstream: Option<Arc<Upstream>>,
    audit: Option<Arc<AuditLog>>,
    on_blocked: Option<Box<BlockedFn>>,
    config: ProxyConfig,
    active: AtomicUsize,
    /// The thread relaying every open tunnel, started with the first.
    relayer: OnceLock<Relayer>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("policy", &self.policy)
            .field("upstream", &self.upstream)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What one connection came to, for the audit log.
struct Log {
    host: String,
    port: u16,
    outcome: Outcome,
    rule: String,
    protocol: Protocol,
    up: u64,
    down: u64,
    error: Option<String>,
    /// The open tunnel, to be handed to the relay thread (which then logs).
    relay: Option<Ends>,
}

impl Log {
    fn failed(protocol: Protocol, host: &str, port: u16, error: String) -> Log {
        Log {
            host: host.to_string(),
            port,
            outcome: Outcome::Failed,
            rule: String::new(),
            protocol,
            up: 0,
            down: 0,
            error: Some(error),
            relay: None,
        }
    }

    fn rule(mut self, rule: &str) -> Log {
        self.rule = rule.to_string();
        self
    }
}

/// Why a destination could not be opened.
enum Fail {
    /// The addresses it resolved to are refused (rebinding guard, deny rule).
    Refused(Decision),
    /// Resolution, connection or the upstream proxy failed; `socks` is the SOCKS5 reply.
    Unreachable { msg: String, socks: u8 },
}

struct Opened {
    stream: TcpStream,
    via_upstream: bool,
    /// Bytes the upstream proxy sent after its CONNECT answer: the destination's.
    early: Vec<u8>,
}

mod protocol;
mod sock;

use sock::*;

/// Counts a client in `active` for as long as it is served, its tunnel's relaying
/// included.
struct Active(Arc<Proxy>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Proxy {
    /// A proxy applying `policy`, resolving with [`SystemResolver`], going direct, not
    /// logging.
    pub fn new(policy: impl Into<Arc<Policy>>) -> Proxy {
        Proxy {
            policy: policy.into(),
            resolver: Arc::new(SystemResolver::default()),
            upstream: None,
            audit: None,
            on_blocked: None,
            config: ProxyConfig::default(),
            active: AtomicUsize::new(0),
            relayer: OnceLock::new(),
        }
    }

    pub fn resolver(mut self, r: Arc<dyn Resolver>) -> Self {
        self.resolver = r;
        self
    }

    /// Chain allowed connections through this proxy (see [`crate::net`] for what changes).
    pub fn upstream(mut self, u: Option<Upstream>) -> Self {
        self.upstream = u.map(Arc::new);
        self
    }

    pub fn audit(mut self, log: impl Into<Arc<AuditLog>>) -> Self {
        self.audit = Some(log.into());
        self
    }

    pub fn on_blocked(mut self, f: impl Fn(&str, u16, &str) + Send + Sync + 'static) -> Self {
        self.on_blocked = Some(Box::new(f));
        self
    }

    pub fn config(mut self, c: ProxyConfig) -> Self {
        self.config = c;
        self
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Clients being served right now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Serve `client` on a thread of its own. At `max_clients`, the client gets a 503 and
    /// is closed (and this returns an error saying so).
    pub fn spawn(self: &Arc<Self>, client: TcpStream) -> io::Result<()> {
        let prev = self.active.fetch_add(1, Ordering::SeqCst);
        let guard = Active(self.clone());
        if prev >= self.config.max_clients {
            // Non-blocking: a client that does not read must not stall the caller.
            let _ = client.set_nonblocking(true);
            let _ = (&client).write(&http_error(
                "503 Service Unavailable",
                &format!(
                    "csbox: too many open proxy connections ({}); close some and retry",
                    self.config.max_clients
                ),
            ));
            return Err(io::Error::other(format!(
                "{} proxy connections are open already",
                self.config.max_clients
            )));
        }
        std::thread::Builder::new()
            .name("csbox-net".into())
            .stack_size(self.config.stack_size)
            .spawn(move || {
                let proxy = guard.0.clone();
                proxy.serve_counted(client, Some(guard));
            })
            .map(drop)
    }

    /// Receive client connections over the Unix socket `sock` (sent by
    /// [`relay_accept_loop`](super::relay_accept_loop) inside the sandbox) and serve each
    /// on its own thread. Returns when the sender closes its end; a descriptor that is not
    /// a stream socket is closed unserved.
    pub fn serve_passed_fds(self: Arc<Self>, sock: OwnedFd) -> io::Result<()> {
        loop {
            let Some(fd) = recv_fd(sock.as_fd())? else {
                return Ok(());
            };
            if !is_stream_socket(&fd) {
                crate::debug!("net: a passed descriptor is not a stream socket; closed");
                continue;
            }
            if let Err(e) = self.spawn(TcpStream::from(fd)) {
                crate::debug!("net: client not served: {e}");
            }
        }
    }

    /// Serve one client: its request read, decided and answered in the calling thread;
    /// a tunnel, once open, relayed by the proxy's relay thread until it ends (this
    /// returns before). The socket may come from anywhere (typically accepted inside the
    /// sandbox and passed out); the proxy never needs to have listened itself. Never
    /// panics on client input.
    pub fn serve(&self, client: TcpStream) {
        self.serve_counted(client, None)
    }

    fn serve_counted(&self, client: TcpStream, active: Option<Active>) {
        let _sigpipe = SigpipeBlocked::new();
        let start = SystemTime::now();
        let t0 = Instant::now();
        let Some(mut log) = self.handle(client, t0) else {
            return;
        };
        let audit = self.audit.clone();
        let Some(ends) = log.relay.take() else {
            return record(audit.as_deref(), &log, start, t0);
        };
        let done = move |r: Relayed| {
            log.up += r.up;
            log.down += r.down;
            if let Some(e) = r.error {
                log.error = Some(format!("relay: {}", strip_os_error(&e)));
            }
            record(audit.as_deref(), &log, start, t0);
            drop(active);
        };
        match self.relayer() {
            Ok(r) => r.add(ends, Box::new(done)),
            // Not reached: tunnel() and forward() started the relayer before answering.
            Err(e) => done(Relayed {
                error: Some(e),
                ..Relayed::default()
            }),
        }
    }

    /// The relay thread, started on first use.
    fn relayer(&self) -> io::Result<&Relayer> {
        if let Some(r) = self.relayer.get() {
            return Ok(r);
        }
        let r = Relayer::start(self.config.stack_size)
            .map_err(|e| io::Error::new(e.kind(), format!("starting the relay thread: {e}")))?;
        // A racing first tunnel may have started one too: the loser's thread ends at once.
        Ok(self.relayer.get_or_init(|| r))
    }

    fn handle(&self, client: TcpStream, t0: Instant) -> Option<Log> {
        let _ = client.set_nonblocking(false);
        let _ = client.set_write_timeout(Some(self.config.head_timeout));
        let _ = client.set_nodelay(true);
        let mut c = Client {
            s: client,
            buf: Vec::new(),
            pos: 0,
            deadline: t0 + self.config.head_timeout,
        };
        match read_more(&mut c.s, &mut c.buf, 1024, c.deadline) {
            Ok(0) => return None, // connected and left: nothing to log
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                reply_and_close(&mut c.s, &self.timeout_reply());
                return Some(Log::failed(Protocol::Http, "", 0, self.timeout_text()));
            }
            Err(e) => {
                return Some(Log::failed(
                    Protocol::Http,
                    "",
                    0,
                    format!("reading the request: {e}"),
                ))
            }
        }
        match c.buf[0] {
            5 => Some(self.socks5(c)),
            b'A'..=b'Z' => Some(self.http(c)),
            _ => {
                let why = "neither HTTP nor SOCKS5 (csbox's proxy takes CONNECT, http:// URLs and SOCKS5)";
                reply_and_close(
                    &mut c.s,
                    &http_error(
                        "400 Bad Request",
                        &format!("csbox: bad proxy request: {why}"),
                    ),
                );
                Some(Log::failed(Protocol::Http, "", 0, why.into()))
            }
        }
    }

    fn timeout_text(&self) -> String {
        format!(
            "no complete request within {} s",
            self.config.head_timeout.as_secs_f32()
        )
    }

    fn timeout_reply(&self) -> Vec<u8> {
        http_error(
            "408 Request Timeout",
            &format!("csbox: {}", self.timeout_text()),
        )
    }
}

fn record(audit: Option<&AuditLog>, l: &Log, start: SystemTime, t0: Instant) {
    if let Some(audit) = audit {
        audit.record(&Record {
            start,
            host: &l.host,
            port: l.port,
            outcome: l.outcome,
            rule: &l.rule,
            protocol: l.protocol,
            bytes_up: l.up,
            bytes_down: l.down,
            duration: t0.elapsed(),
            error: l.error.as_deref(),
        });
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod bench;
