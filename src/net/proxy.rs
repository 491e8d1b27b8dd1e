//! Serving one client connection: read what it asks (HTTP CONNECT, an absolute-form
//! http:// request, or SOCKS5), decide, connect (directly or through the upstream proxy),
//! answer, relay, log.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::audit::{AuditLog, Outcome, Protocol, Record};
use super::fdpass::recv_fd;
use super::http;
use super::policy::{printable, Decision, Dest, Policy, Resolver, SystemResolver};
use super::relay::{relay, Pipes};
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
    /// Connections served at once; more are answered 503 and closed. Each costs a thread,
    /// two sockets and two pipes: six descriptors, and 2 × 16 pages of the user's pipe
    /// quota (`fs.pipe-user-pages-soft`, 16384 pages: past it every new pipe of the user,
    /// the sandbox's included, gets a single page). 256 stays at half the quota.
    pub max_clients: usize,
    /// Stack of each client thread. Its work is shallow (resolution runs on its own
    /// thread, see [`SystemResolver`]) and untouched stack pages cost no memory.
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

/// The client socket with what has been read from it but not yet used.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    deadline: Instant,
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "timed out")
}

/// Read up to `room` more bytes into `buf` before `deadline`. Ok(0) is EOF.
fn read_more(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    room: usize,
    deadline: Instant,
) -> io::Result<usize> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        s.set_read_timeout(Some(left))?;
        let old = buf.len();
        buf.resize(old + room, 0);
        let r = s.read(&mut buf[old..]);
        buf.truncate(old + *r.as_ref().unwrap_or(&0));
        match r {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // SO_RCVTIMEO expiring reads as EAGAIN.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(timed_out()),
            Err(e) => return Err(e),
        }
    }
}

enum Head {
    /// The head is `buf[..n]`.
    Complete(usize),
    Eof,
    TooLong,
}

fn read_head(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    max: usize,
    deadline: Instant,
) -> io::Result<Head> {
    loop {
        if let Some(end) = http::head_end(buf) {
            return Ok(Head::Complete(end));
        }
        if buf.len() >= max {
            return Ok(Head::TooLong);
        }
        if read_more(s, buf, (max - buf.len()).min(4096), deadline)? == 0 {
            return Ok(Head::Eof);
        }
    }
}

impl Client {
    /// The next `n` bytes (SOCKS5 fields), reading as needed.
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        while self.buf.len() - self.pos < n {
            if read_more(&mut self.s, &mut self.buf, n.max(512), self.deadline)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        self.pos += n;
        Ok(&self.buf[self.pos - n..self.pos])
    }

    /// Hand over the socket and whatever was read past the request.
    fn into_parts(mut self) -> (TcpStream, Vec<u8>) {
        let rest = self.buf.split_off(self.pos);
        (self.s, rest)
    }
}

/// Connect to the first address that answers within `timeout` overall. Each address gets
/// an equal share of the time left, so a black-holed first address (often IPv6 on a host
/// without a v6 route) cannot use it all. The error keeps the last errno (for the SOCKS5
/// reply) and names every address tried.
fn connect_any(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, (io::Error, String)> {
    let deadline = Instant::now() + timeout;
    let mut tried = Vec::new();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for (i, a) in addrs.iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            last = timed_out();
            tried.push(format!("{a}: not tried, out of time"));
            break;
        }
        let share = left / (addrs.len() - i) as u32;
        match TcpStream::connect_timeout(a, share.max(Duration::from_millis(1))) {
            Ok(s) => return Ok(s),
            Err(e) => {
                tried.push(format!("{a}: {}", strip_os_error(&e)));
                last = e;
            }
        }
    }
    Err((last, tried.join("; ")))
}

/// "Connection refused (os error 111)" → "connection refused".
fn strip_os_error(e: &io::Error) -> String {
    let s = e.to_string();
    let s = s.split(" (os error").next().unwrap_or(&s).to_string();
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => s,
    }
}

/// SOCKS5 reply code (RFC 1928 §6) for a failed connect.
fn socks_code(e: &io::Error) -> u8 {
    match e.raw_os_error() {
        Some(libc::ENETUNREACH) => 0x03,
        Some(libc::EHOSTUNREACH) | Some(libc::ETIMEDOUT) => 0x04,
        Some(libc::ECONNREFUSED) => 0x05,
        _ if e.kind() == io::ErrorKind::TimedOut => 0x04,
        _ => 0x01,
    }
}

/// Write a short reply, then close so the client reads it: shutdown(SHUT_WR), and drain
/// what it still sends for a moment, because closing with unread input sends a reset that
/// can destroy the reply before the client has read it.
fn reply_and_close(s: &mut TcpStream, reply: &[u8]) {
    let _ = s.write_all(reply);
    let _ = s.shutdown(Shutdown::Write);
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 2048];
    let mut drained = 0;
    while drained < 64 * 1024 {
        match s.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

fn http_error(status: &str, body: &str) -> Vec<u8> {
    let body = format!("{}\n", body.replace(['\r', '\n'], " "));
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn socks_reply(code: u8) -> [u8; 10] {
    // The bound address is left 0.0.0.0:0: clients ignore it for CONNECT, and the real
    // one would tell the sandbox the host's address.
    [5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

/// Blocks SIGPIPE in the current thread for the life of the value. splice(2) into a
/// socket the peer closed raises SIGPIPE, and its default action kills the whole
/// supervisor; a blocked thread-directed signal just waits, and is discarded on drop.
struct SigpipeBlocked {
    old: libc::sigset_t,
    was_blocked: bool,
}

impl SigpipeBlocked {
    fn new() -> SigpipeBlocked {
        // SAFETY: sigset manipulation on locals; pthread_sigmask on this thread.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGPIPE);
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            let was_blocked = libc::sigismember(&old, libc::SIGPIPE) == 1;
            SigpipeBlocked { old, was_blocked }
        }
    }
}

impl Drop for SigpipeBlocked {
    fn drop(&mut self) {
        if self.was_blocked {
            return;
        }
        // SAFETY: as in new; a zero timeout only collects what is pending.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGPIPE);
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            while libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) == libc::SIGPIPE {}
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}

/// Counts a client in `active` for as long as it is served.
struct Active(Arc<Proxy>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

fn is_stream_socket(fd: &OwnedFd) -> bool {
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a c_int.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    r == 0 && ty == libc::SOCK_STREAM
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
                let g = guard;
                g.0.serve(client);
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

    /// Serve one client in the calling thread, until its connection is over. The socket
    /// may come from anywhere (typically accepted inside the sandbox and passed out);
    /// the proxy never needs to have listened itself. Never panics on client input.
    pub fn serve(&self, client: TcpStream) {
        let _sigpipe = SigpipeBlocked::new();
        let start = SystemTime::now();
        let t0 = Instant::now();
        let log = self.handle(client, t0);
        if let (Some(audit), Some(l)) = (&self.audit, log) {
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

    fn http(&self, mut c: Client) -> Log {
        let proto = if c.buf.starts_with(b"CONNECT ") {
            Protocol::Connect
        } else {
            Protocol::Http
        };
        let bad = |c: &mut Client, why: String| {
            reply_and_close(
                &mut c.s,
                &http_error(
                    "400 Bad Request",
                    &format!("csbox: bad proxy request: {why}"),
                ),
            );
            Log::failed(proto, "", 0, why)
        };
        let end = match read_head(&mut c.s, &mut c.buf, self.config.max_head, c.deadline) {
            Ok(Head::Complete(end)) => end,
            Ok(Head::TooLong) => {
                let why = format!("the request head is over {} bytes", self.config.max_head);
                return bad(&mut c, why);
            }
            Ok(Head::Eof) => {
                return Log::failed(
                    proto,
                    "",
                    0,
                    "the client closed before the request head was complete".into(),
                )
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                reply_and_close(&mut c.s, &self.timeout_reply());
                return Log::failed(proto, "", 0, self.timeout_text());
            }
            Err(e) => return Log::failed(proto, "", 0, format!("reading the request: {e}")),
        };
        let rest = c.buf.split_off(end);
        let head = std::mem::take(&mut c.buf);
        let req = match http::parse_request(&head) {
            Ok(r) => r,
            Err(why) => return bad(&mut c, why),
        };
        if req.method == "CONNECT" {
            match http::connect_target(req.target) {
                Ok((host, port)) => self.tunnel(c.s, host, port, Protocol::Connect, rest),
                Err(why) => bad(&mut c, why),
            }
        } else {
            match http::absolute_target(req.target) {
                Ok((host, port, path)) => self.forward(c.s, &req, host, port, &path, rest),
                Err(why) => bad(&mut c, why),
            }
        }
    }

    fn socks5(&self, mut c: Client) -> Log {
        let p = Protocol::Socks5;
        let gone = |e: io::Error| Log::failed(p, "", 0, format!("SOCKS5 handshake: {e}"));
        let n = match c.take(2) {
            Ok(h) => h[1] as usize,
            Err(e) => return gone(e),
        };
        let no_auth = match c.take(n) {
            Ok(m) => m.contains(&0),
            Err(e) => return gone(e),
        };
        if !no_auth {
            reply_and_close(&mut c.s, &[5, 0xff]);
            return Log::failed(
                p,
                "",
                0,
                "no acceptable SOCKS5 method (csbox offers no-auth only)".into(),
            );
        }
        if let Err(e) = c.s.write_all(&[5, 0]) {
            return gone(e);
        }
        let (ver, cmd, atyp) = match c.take(4) {
            Ok(r) => (r[0], r[1], r[3]),
            Err(e) => return gone(e),
        };
        if ver != 5 {
            return Log::failed(p, "", 0, format!("SOCKS version {ver} in the request"));
        }
        let host = match atyp {
            1 => match c.take(4) {
                Ok(a) => Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string(),
                Err(e) => return gone(e),
            },
            3 => {
                let len = match c.take(1) {
                    Ok(l) => l[0] as usize,
                    Err(e) => return gone(e),
                };
                match c.take(len) {
                    Ok(name) => String::from_utf8_lossy(name).into_owned(),
                    Err(e) => return gone(e),
                }
            }
            4 => match c.take(16) {
                Ok(a) => {
                    let a: [u8; 16] = a.try_into().unwrap_or([0; 16]);
                    format!("[{}]", Ipv6Addr::from(a))
                }
                Err(e) => return gone(e),
            },
            _ => {
                reply_and_close(&mut c.s, &socks_reply(0x08));
                return Log::failed(
                    p,
                    "",
                    0,
                    format!("SOCKS5 address type {atyp} is not supported"),
                );
            }
        };
        let port = match c.take(2) {
            Ok(b) => u16::from_be_bytes([b[0], b[1]]),
            Err(e) => return gone(e),
        };
        let shown = shown_host(&host);
        if cmd != 1 {
            reply_and_close(&mut c.s, &socks_reply(0x07));
            return Log::failed(
                p,
                &shown,
                port,
                format!("SOCKS5 command {cmd} is not supported; only CONNECT"),
            );
        }
        let (s, rest) = c.into_parts();
        self.tunnel(s, &host, port, p, rest)
    }

    fn refuse(
        &self,
        s: &mut TcpStream,
        proto: Protocol,
        shown: &str,
        port: u16,
        d: &Decision,
    ) -> Log {
        if let Some(f) = &self.on_blocked {
            f(shown, port, &d.reason);
        }
        match proto {
            Protocol::Socks5 => reply_and_close(s, &socks_reply(0x02)),
            _ => reply_and_close(
                s,
                &http_error(
                    "403 Forbidden",
                    &format!("csbox: blocked connection to {shown}:{port} ({})", d.reason),
                ),
            ),
        }
        Log {
            host: shown.to_string(),
            port,
            outcome: Outcome::Refused,
            rule: d.rule.clone(),
            protocol: proto,
            up: 0,
            down: 0,
            error: None,
        }
    }

    /// Answer 502 (or the SOCKS5 `socks` code) with the error `log` carries; return it.
    fn unreachable(&self, s: &mut TcpStream, log: Log, socks: u8) -> Log {
        let msg = log.error.as_deref().unwrap_or("unreachable");
        match log.protocol {
            Protocol::Socks5 => reply_and_close(s, &socks_reply(socks)),
            _ => reply_and_close(s, &http_error("502 Bad Gateway", &format!("csbox: {msg}"))),
        }
        log
    }

    /// Decide, open, and for a refusal or failure answer the client. Ok carries the
    /// connection and the rule that allowed it.
    fn decide_and_open(
        &self,
        s: &mut TcpStream,
        host: &str,
        port: u16,
        proto: Protocol,
        tunnel: bool,
    ) -> Result<(Dest, Opened, String), Log> {
        let shown = shown_host(host);
        let d = self.policy.decide(host, port);
        if !d.allowed {
            return Err(self.refuse(s, proto, &shown, port, &d));
        }
        let Ok(dest) = Dest::parse(host) else {
            // decide() refuses what does not parse; this is not reached.
            return Err(Log::failed(proto, &shown, port, "invalid host".into()));
        };
        match self.open(&dest, port, &d, tunnel) {
            Ok(o) => Ok((dest, o, d.rule)),
            Err(Fail::Refused(d2)) => Err(self.refuse(s, proto, &shown, port, &d2)),
            Err(Fail::Unreachable { msg, socks }) => Err(self.unreachable(
                s,
                Log::failed(proto, &shown, port, msg).rule(&d.rule),
                socks,
            )),
        }
    }

    /// CONNECT and SOCKS5: a byte tunnel to `host:port`.
    fn tunnel(
        &self,
        mut s: TcpStream,
        host: &str,
        port: u16,
        proto: Protocol,
        early_up: Vec<u8>,
    ) -> Log {
        let shown = shown_host(host);
        let (_, o, rule) = match self.decide_and_open(&mut s, host, port, proto, true) {
            Ok(x) => x,
            Err(log) => return log,
        };
        let pipes = match Pipes::new() {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("cannot relay to {shown}:{port}: pipe2: {e}");
                let log = Log::failed(proto, &shown, port, msg).rule(&rule);
                return self.unreachable(&mut s, log, 0x01);
            }
        };
        let socks_ok = socks_reply(0);
        let ok: &[u8] = match proto {
            Protocol::Socks5 => &socks_ok,
            _ => b"HTTP/1.1 200 Connection established\r\n\r\n",
        };
        let mut server = o.stream;
        let mut log = Log {
            host: shown.clone(),
            port,
            outcome: Outcome::Allowed,
            rule,
            protocol: proto,
            up: 0,
            down: 0,
            error: None,
        };
        let sent = s
            .write_all(ok)
            .and_then(|_| s.write_all(&o.early))
            .and_then(|_| server.set_write_timeout(Some(self.config.connect_timeout)))
            .and_then(|_| server.write_all(&early_up));
        if let Err(e) = sent {
            log.error = Some(format!("relay: {e}"));
            return log;
        }
        log.up = early_up.len() as u64;
        log.down = o.early.len() as u64;
        drop(early_up);
        self.finish_relay(&s, &server, &pipes, log)
    }

    /// An absolute-form http:// request: rewritten for the origin (or the upstream proxy),
    /// sent, then the connection relayed as is (one request per client connection: the
    /// origin is told `Connection: close`).
    fn forward(
        &self,
        mut s: TcpStream,
        req: &http::Request,
        host: &str,
        port: u16,
        path: &str,
        body: Vec<u8>,
    ) -> Log {
        let shown = shown_host(host);
        let (dest, o, rule) = match self.decide_and_open(&mut s, host, port, Protocol::Http, false)
        {
            Ok(x) => x,
            Err(log) => return log,
        };
        let pipes = match Pipes::new() {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("cannot relay to {shown}:{port}: pipe2: {e}");
                let log = Log::failed(Protocol::Http, &shown, port, msg).rule(&rule);
                return self.unreachable(&mut s, log, 0x01);
            }
        };
        let authority = if port == 80 {
            dest.to_string()
        } else {
            format!("{dest}:{port}")
        };
        let (target, auth) = match (&self.upstream, o.via_upstream) {
            (Some(u), true) => (format!("http://{authority}{path}"), u.authorization()),
            _ => (path.to_string(), None),
        };
        let head = http::forward_head(req, &target, &authority, auth.as_deref());
        let mut server = o.stream;
        let mut log = Log {
            host: shown,
            port,
            outcome: Outcome::Allowed,
            rule,
            protocol: Protocol::Http,
            up: 0,
            down: 0,
            error: None,
        };
        let sent = server
            .set_write_timeout(Some(self.config.connect_timeout))
            .and_then(|_| server.write_all(&head))
            .and_then(|_| server.write_all(&body));
        if let Err(e) = sent {
            log.error = Some(format!("sending the request: {e}"));
            return log;
        }
        log.up = (head.len() + body.len()) as u64;
        self.finish_relay(&s, &server, &pipes, log)
    }

    fn finish_relay(
        &self,
        client: &TcpStream,
        server: &TcpStream,
        pipes: &Pipes,
        mut log: Log,
    ) -> Log {
        let _ = server.set_nodelay(true);
        let r = relay(client, server, pipes);
        log.up += r.up;
        log.down += r.down;
        if let Some(e) = r.error {
            log.error = Some(format!("relay: {}", strip_os_error(&e)));
        }
        log
    }

    /// Connect to the destination, or to the upstream proxy for it.
    fn open(&self, dest: &Dest, port: u16, d: &Decision, tunnel: bool) -> Result<Opened, Fail> {
        let timeout = self.config.connect_timeout;
        if let Some(up) = self.upstream.as_ref().filter(|u| !u.bypasses(dest, port)) {
            let fail = |msg: String| Fail::Unreachable { msg, socks: 0x01 };
            let addrs = self.resolver.resolve(&up.host, up.port).map_err(|e| {
                fail(format!(
                    "cannot resolve the upstream proxy {}: {e}",
                    up.display()
                ))
            })?;
            let mut s = connect_any(&addrs, timeout).map_err(|(_, m)| {
                fail(format!(
                    "cannot connect to the upstream proxy {}: {m}",
                    up.display()
                ))
            })?;
            let early = if tunnel {
                self.upstream_connect(&mut s, up, dest, port)?
            } else {
                Vec::new()
            };
            return Ok(Opened {
                stream: s,
                via_upstream: true,
                early,
            });
        }
        let hostport = format!("{dest}:{port}");
        let addrs = match dest {
            Dest::Ip(ip) => vec![SocketAddr::new(*ip, port)],
            Dest::Name(n) => self
                .resolver
                .resolve(n, port)
                .map_err(|e| Fail::Unreachable {
                    msg: format!("cannot resolve {n}: {e}"),
                    socks: 0x04,
                })?,
        };
        if addrs.is_empty() {
            return Err(Fail::Unreachable {
                msg: format!("{dest} resolves to no address"),
                socks: 0x04,
            });
        }
        let checked = self
            .policy
            .check_resolved(&dest.to_string(), port, d, &addrs);
        if !checked.allowed {
            return Err(Fail::Refused(checked));
        }
        let s = connect_any(&addrs, timeout).map_err(|(e, m)| Fail::Unreachable {
            msg: format!("cannot connect to {hostport} ({m})"),
            socks: socks_code(&e),
        })?;
        Ok(Opened {
            stream: s,
            via_upstream: false,
            early: Vec::new(),
        })
    }

    /// Ask the upstream proxy for a tunnel. Its refusal is reported by status line only:
    /// its body is not relayed, and the credentials never appear in a message.
    fn upstream_connect(
        &self,
        s: &mut TcpStream,
        up: &Upstream,
        dest: &Dest,
        port: u16,
    ) -> Result<Vec<u8>, Fail> {
        let authority = format!("{dest}:{port}");
        let fail = |msg: String| Fail::Unreachable { msg, socks: 0x01 };
        let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some(a) = up.authorization() {
            req.push_str(&format!("Proxy-Authorization: {a}\r\n"));
        }
        req.push_str("\r\n");
        let talk = s
            .set_write_timeout(Some(self.config.head_timeout))
            .and_then(|_| s.write_all(req.as_bytes()));
        if let Err(e) = talk {
            return Err(fail(format!("the upstream proxy {}: {e}", up.display())));
        }
        let mut buf = Vec::new();
        let deadline = Instant::now() + self.config.head_timeout;
        let end = match read_head(s, &mut buf, self.config.max_head, deadline) {
            Ok(Head::Complete(end)) => end,
            Ok(Head::Eof) => {
                return Err(fail(format!(
                    "the upstream proxy {} closed without answering CONNECT {authority}",
                    up.display()
                )))
            }
            Ok(Head::TooLong) => {
                return Err(fail(format!(
                    "the upstream proxy {} sent an overlong answer",
                    up.display()
                )))
            }
            Err(e) => {
                return Err(fail(format!(
                    "the upstream proxy {} did not answer CONNECT {authority}: {e}",
                    up.display()
                )))
            }
        };
        match http::parse_status(&buf[..end]) {
            Ok((code, _)) if (200..300).contains(&code) => Ok(buf.split_off(end)),
            Ok((code, reason)) => {
                let hint = match code {
                    407 => "; check the credentials in the proxy URL (HTTPS_PROXY outside)",
                    403 => "; the upstream proxy's own policy refuses it",
                    _ => "",
                };
                Err(fail(format!(
                    "the upstream proxy {} answered \"{code} {reason}\" to CONNECT {authority}{hint}",
                    up.display()
                )))
            }
            Err(e) => Err(fail(format!("the upstream proxy {}: {e}", up.display()))),
        }
    }
}

/// The host as logged and shown: normalised when valid, else made printable.
fn shown_host(host: &str) -> String {
    match Dest::parse(host) {
        Ok(d) => d.to_string(),
        Err(_) => printable(host, 255),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod bench;
