//! The sandbox's only way out: a filtering HTTP/SOCKS5 proxy run by the supervisor.
//!
//! A sandbox with a network policy gets a network namespace of its own holding only `lo`.
//! Inside, pid 1 listens on `127.0.0.1:PORT` and `[::1]:PORT` and passes every accepted
//! connection out over a Unix socket ([`fdpass`]); outside, the supervisor's [`Proxy`]
//! serves it: reads the request, applies the profile's [`Policy`], connects from the
//! host's namespace, relays bytes, and appends a line to `net.jsonl` ([`AuditLog`]). The
//! command inside is assumed hostile, so everything it sends is bounded, validated and
//! never trusted for a decision the proxy can make itself.
//!
//! ```no_run
//! use std::os::fd::AsFd;
//! use std::sync::Arc;
//! use csbox::net::{self, AuditLog, Policy, Proxy, Upstream};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (inside, outside) = net::fd_socketpair()?;
//!
//! // Pid 1, in the new network namespace with `lo` up (no allocation from here on):
//! let listeners = net::bind_loopback_listeners(0)?; // the command gets
//! // HTTPS_PROXY=http://127.0.0.1:{listeners.port}, ALL_PROXY=socks5h://…
//! let _ = listeners.relay_accept_loop(inside.as_fd()); // returns when the supervisor goes
//!
//! // The supervisor, on the host side:
//! let policy = Policy::new("default", &["api.anthropic.com", "*.npmjs.org"], &[] as &[&str])?;
//! let upstream = match std::env::var("HTTPS_PROXY") {
//!     Ok(url) => Some(Upstream::from_url(&url)?
//!         .with_no_proxy(&std::env::var("NO_PROXY").unwrap_or_default())),
//!     Err(_) => None,
//! };
//! let proxy = Proxy::new(policy)
//!     .upstream(upstream)
//!     .audit(AuditLog::open("sessions/ID/net.jsonl".as_ref())?)
//!     .on_blocked(|host, port, why| eprintln!("csbox: blocked {host}:{port}: {why}"));
//! std::thread::spawn(move || Arc::new(proxy).serve_passed_fds(outside));
//! # Ok(()) }
//! ```
//!
//! # What the proxy speaks
//! - `CONNECT host:port` (HTTPS_PROXY): a byte tunnel; TLS is never terminated, so the
//!   proxy sees the name the client asked for, not the SNI or Host inside the tunnel.
//! - `GET http://host[:port]/path` (HTTP_PROXY): forwarded in origin form with `Host` set
//!   from the URL, hop-by-hop headers (`Connection` and what it lists, `Proxy-*`,
//!   `Keep-Alive`, `TE`, `Trailer`, `Upgrade`) removed and `Connection: close` added. One
//!   request per client connection: clients see `Connection: close` and reconnect.
//! - SOCKS5 (`ALL_PROXY=socks5h://127.0.0.1:PORT`): no-auth, CONNECT only, IPv4, IPv6 and
//!   domain addresses; a refusal is reply 0x02 "connection not allowed by ruleset".
//!
//! A refusal is `403 Forbidden` with a one-line body naming destination, rule, profile and
//! the fix (`csbox: blocked connection to evil.example:443 (not in profile "default"'s
//! network.allow; add --allow-host evil.example)`); an unreachable destination is `502`,
//! a malformed request `400`, a request head not complete within `head_timeout` `408`.
//!
//! # Rules
//! `network.allow` and `network.deny` hold rules: a host name (`api.example.com`), a
//! wildcard (`*.example.com`: names *below* example.com, not example.com itself, as
//! Anthropic's sandbox-runtime reads it) or an IP literal (`10.0.0.5`, `[fd00::1]`), each
//! with an optional `:port`. Matching ignores case and a trailing dot.
//! - An allow rule without a port covers 443 and 80 only; a deny rule without a port
//!   covers every port (denying is meant to be total).
//! - Deny wins over allow.
//! - A destination that is an IP literal, or `localhost` / `*.localhost`, is allowed only
//!   by a rule naming it exactly: wildcards never reach them. A destination host in an
//!   unusual numeric form (`2130706433`, `127.1`, `0x7f.1`: getaddrinfo reads them as
//!   IPv4) is refused as invalid.
//! - The proxy connects from the host's namespace: `127.0.0.1:5432` or `localhost:3000`
//!   in a rule is the *host's* loopback (a database or dev server there), never the
//!   sandbox's own.
//!
//! # Private addresses and DNS rebinding
//! "Private" means: IPv4 0/8, 10/8, 100.64/10, 127/8, 169.254/16, 172.16/12, 192.168/16,
//! 224/4 (multicast), 240/4 and 255.255.255.255; IPv6 ::, ::1, fc00::/7, fe80::/10,
//! fec0::/10, ff00::/8, and every IPv6 form that carries one of the IPv4 ranges
//! (::ffff:a.b.c.d, ::a.b.c.d, 64:ff9b::a.b.c.d).
//!
//! A name allowed by a wildcard could be made to resolve to such an address by whoever
//! controls its DNS (DNS rebinding: `x.attacker.example` → 169.254.169.254). So after
//! resolving, **if any address of a name is private, the connection is refused unless the
//! allowing rule names that host exactly** (not through `*.`). Naming a host exactly is
//! the user saying "this host, wherever it is" (e.g. an intranet service on 10.x). Refused
//! is the whole connection, not just the private addresses, so a half-rebound name fails
//! loudly instead of working by luck. An address a deny rule names (`169.254.169.254`) is
//! refused even for an exactly-named host. The proxy connects only to the addresses it
//! checked, so a second, different DNS answer cannot slip in between check and use.
//!
//! # Upstream proxy
//! When the host itself must go through a proxy ([`Upstream`], parsed from the outer
//! `HTTPS_PROXY` URL, with its `NO_PROXY` list), the policy is applied first, exactly as
//! without one, then:
//! - a tunnel (CONNECT, SOCKS5) is requested from the upstream with `CONNECT host:port`
//!   and `Proxy-Authorization: Basic …`; any 2xx opens it, anything else is a 502 naming
//!   the upstream's status line (never its body, never the credentials);
//! - a plain-HTTP request is sent to the upstream in absolute form with the credentials
//!   (many proxies, squid by default, refuse CONNECT to port 80);
//! - destinations `NO_PROXY` lists are reached directly.
//!
//! Through an upstream csbox does **not** resolve the destination: the upstream does, and
//! the private-address check applies only to the name as asked (IP literals, localhost).
//! What a name resolves to on the upstream's network is the upstream's policy.
//! The credentials are read on the host and never reach the sandbox.
//!
//! # Resources
//! Each client's request is read, decided and connected on a short-lived thread of its
//! own (128 KiB stack by default, of which it touches a few pages); the open tunnel is
//! then handed to the proxy's one relay thread, an epoll loop over every tunnel, started
//! with the first (src/net/relay.rs says why one thread). Both directions are relayed by
//! splice(2) through a pipe each, so relayed data stays in the kernel and an idle tunnel
//! costs its descriptors and a few hundred bytes of heap. At most
//! [`ProxyConfig::max_clients`] at once, six descriptors each (the caller should raise
//! `RLIMIT_NOFILE`'s soft limit to the hard one). splice can raise SIGPIPE, which the
//! relay thread blocks.

pub mod audit;
pub mod fdpass;
mod http;
pub mod policy;
pub mod proxy;
mod relay;
pub mod upstream;

pub use audit::{AuditLog, Outcome, Protocol, Record};
pub use fdpass::{
    bind_loopback_listeners, fd_socketpair, recv_fd, relay_accept_loop, send_fd, LoopbackListeners,
};
pub use policy::{
    is_private, Decision, Dest, Policy, Resolver, Rule, StaticResolver, SystemResolver,
};
pub use proxy::{BlockedFn, Proxy, ProxyConfig};
pub use upstream::Upstream;
