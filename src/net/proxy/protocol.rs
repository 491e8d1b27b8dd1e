//! The three protocols a client may speak (HTTP CONNECT, plain-HTTP forwarding, SOCKS5),
//! the policy decision, and opening the destination directly or through the upstream.

use super::sock::*;
use super::*;

impl Proxy {
    pub(super) fn http(&self, mut c: Client) -> Log {
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

    pub(super) fn socks5(&self, mut c: Client) -> Log {
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
            relay: None,
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
        let pipes = match self.relay_ready() {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("cannot relay to {shown}:{port}: {e}");
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
            relay: None,
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
        self.finish_relay(s, server, pipes, log)
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
        let pipes = match self.relay_ready() {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("cannot relay to {shown}:{port}: {e}");
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
            relay: None,
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
        self.finish_relay(s, server, pipes, log)
    }

    /// The relay thread running and the tunnel's pipes made: checked before the client
    /// is told the tunnel is up, so a failure is a 502, not a broken tunnel.
    fn relay_ready(&self) -> io::Result<Pipes> {
        self.relayer()?;
        Pipes::new().map_err(|e| io::Error::new(e.kind(), format!("pipe2: {e}")))
    }

    /// The tunnel is open: hand it over (see [`Proxy::serve`]).
    fn finish_relay(
        &self,
        client: TcpStream,
        server: TcpStream,
        pipes: Pipes,
        mut log: Log,
    ) -> Log {
        let _ = server.set_nodelay(true);
        log.relay = Some(Ends {
            client,
            server,
            pipes,
        });
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
pub(super) fn shown_host(host: &str) -> String {
    match Dest::parse(host) {
        Ok(d) => d.to_string(),
        Err(_) => printable(host, 255),
    }
}
