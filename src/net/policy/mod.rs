//! Which destinations the sandbox may reach: rules, the decision, and the private-address
//! guard. Pure code except [`SystemResolver`]; the rules are documented in [`crate::net`].

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::time::Duration;

/// Ports a rule without `:port` covers: the web's two.
const DEFAULT_PORTS: [u16; 2] = [443, 80];

/// The longest DNS name (RFC 1035 §2.3.4, without the trailing dot).
const MAX_NAME: usize = 253;

/// A destination host as the client named it: an IP literal or a DNS name, normalised
/// (lower case, no trailing dot, IPv6 without brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    Ip(IpAddr),
    Name(String),
}

impl Dest {
    /// Parse a host as it appears in `CONNECT host:port`, a URL or a SOCKS request
    /// (`[::1]` or `::1`, `127.0.0.1`, `api.example.com.`).
    ///
    /// Names are limited to letters, digits, `-`, `_` and dots. A name whose last label is
    /// numeric (`2130706433`, `127.1`, `0x7f.1`) is refused: no top-level domain is numeric,
    /// but getaddrinfo's inet_aton reads those as IPv4 and would hand out 127.0.0.1 under
    /// a name no rule author thinks of as an address.
    pub fn parse(host: &str) -> Result<Dest, String> {
        let h = host.strip_suffix('.').unwrap_or(host);
        // Errors quote the host; it may come from the sandbox and end up on a terminal.
        let host = printable(host, 255);
        if let Some(inner) = h.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| format!("{host:?}: an IPv6 address lacks its closing ']'"))?;
            return inner
                .parse::<Ipv6Addr>()
                .map(|a| Dest::Ip(IpAddr::V6(a)))
                .map_err(|_| format!("{host:?} is not an IPv6 address"));
        }
        if let Ok(ip) = h.parse::<IpAddr>() {
            return Ok(Dest::Ip(ip));
        }
        check_name(h).map_err(|why| format!("{host:?} is not a host name ({why})"))?;
        Ok(Dest::Name(h.to_ascii_lowercase()))
    }

    /// Is this `localhost` or a name under it (RFC 6761 §6.3: always loopback)?
    fn is_localhost(&self) -> bool {
        matches!(self, Dest::Name(n) if n == "localhost" || n.ends_with(".localhost"))
    }
}

impl std::fmt::Display for Dest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dest::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Dest::Ip(a) => write!(f, "{a}"),
            Dest::Name(n) => f.write_str(n),
        }
    }
}

/// `s` cut to `max` characters, anything but printable ASCII as '?': text from the
/// sandbox or the network that reaches a terminal or a one-line reply.
pub(crate) fn printable(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

fn check_name(h: &str) -> Result<(), &'static str> {
    if h.is_empty() {
        return Err("empty");
    }
    if h.len() > MAX_NAME {
        return Err("longer than 253 characters");
    }
    let mut last = "";
    for label in h.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("a label longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("only letters, digits, '-', '_' and '.' are allowed");
        }
        last = label;
    }
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || (last.len() > 2
            && last[..2].eq_ignore_ascii_case("0x")
            && last[2..].bytes().all(|b| b.is_ascii_hexdigit()));
    if numeric {
        return Err("numeric last label: write an IP address in dotted form");
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RuleHost {
    /// `api.example.com`: that name only.
    Exact(String),
    /// `*.example.com`, stored as `example.com`: names strictly below it.
    Below(String),
    Ip(IpAddr),
}

/// One `network.allow` / `network.deny` entry: `host`, `*.domain` or an IP literal, with an
/// optional `:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    text: String,
    host: RuleHost,
    port: Option<u16>,
}

impl Rule {
    /// Parse `api.example.com`, `*.example.com:8443`, `10.0.0.5:5432`, `[::1]:8080`.
    pub fn parse(text: &str) -> Result<Rule, String> {
        let t = text.trim();
        let bad = |why: &str| format!("network rule {text:?}: {why}");
        if t.is_empty() {
            return Err(bad(
                "empty; write a host name such as api.example.com or *.example.com",
            ));
        }
        let (host, port) = split_host_port(t).map_err(|e| bad(&e))?;
        let port = match port {
            None => None,
            Some(p) => Some(parse_port(p).map_err(|e| bad(&e))?),
        };
        let host = if let Some(domain) = host.strip_prefix("*.") {
            match Dest::parse(domain) {
                Ok(Dest::Name(d)) => RuleHost::Below(d),
                Ok(Dest::Ip(_)) => return Err(bad("a wildcard cannot stand before an IP address")),
                Err(_) if domain.is_empty() || domain == "." => {
                    return Err(bad("'*.' needs a domain after it, e.g. *.example.com"))
                }
                Err(e) => return Err(bad(&e)),
            }
        } else if host.contains('*') {
            return Err(bad(
                "'*' is only allowed as a leading '*.' (e.g. *.example.com)",
            ));
        } else if host.contains(':') && !host.starts_with('[') {
            return Err(bad("write an IPv6 address in brackets, e.g. [::1]:8080"));
        } else {
            match Dest::parse(host).map_err(|e| bad(&e))? {
                Dest::Ip(ip) => RuleHost::Ip(ip),
                Dest::Name(n) => RuleHost::Exact(n),
            }
        };
        Ok(Rule {
            text: t.to_string(),
            host,
            port,
        })
    }

    /// The rule as written (trimmed).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn port_matches(&self, port: u16, any_when_unset: bool) -> bool {
        match self.port {
            Some(p) => p == port,
            None => any_when_unset || DEFAULT_PORTS.contains(&port),
        }
    }

    /// Does the rule name this host itself (not through `*.`)?
    fn names(&self, dest: &Dest) -> bool {
        match (&self.host, dest) {
            (RuleHost::Exact(r), Dest::Name(n)) => r == n,
            (RuleHost::Ip(r), Dest::Ip(ip)) => canonical(*r) == canonical(*ip),
            _ => false,
        }
    }

    fn covers_below(&self, dest: &Dest) -> bool {
        match (&self.host, dest) {
            (RuleHost::Below(d), Dest::Name(n)) => {
                n.len() > d.len() + 1 && n.ends_with(d.as_str()) && {
                    let cut = n.len() - d.len() - 1;
                    n.as_bytes()[cut] == b'.'
                }
            }
            _ => false,
        }
    }

    fn names_ip(&self, ip: IpAddr, port: u16) -> bool {
        matches!(self.host, RuleHost::Ip(r) if canonical(r) == canonical(ip))
            && self.port_matches(port, true)
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Split `host[:port]` where host may be `[v6]`. An unbracketed host with several colons is
/// returned whole (the caller reports it).
pub(crate) fn split_host_port(t: &str) -> Result<(&str, Option<&str>), String> {
    if t.starts_with('[') {
        let close = t
            .find(']')
            .ok_or_else(|| "an IPv6 address lacks its closing ']'".to_string())?;
        let (h, rest) = t.split_at(close + 1);
        return match rest {
            "" => Ok((h, None)),
            r => match r.strip_prefix(':') {
                Some(p) => Ok((h, Some(p))),
                None => Err(format!("unexpected {r:?} after the address")),
            },
        };
    }
    match t.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Ok((h, Some(p))),
        _ => Ok((t, None)),
    }
}

pub(crate) fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 && !p.starts_with('+') => Ok(n),
        _ => Err(format!("port {p:?} is not a number from 1 to 65535")),
    }
}

/// IPv4-mapped and IPv4-compatible IPv6 addresses compare and classify as their IPv4 form.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Is `ip` an address a sandbox must not reach by accident: this host, the local network,
/// the cloud metadata service, or nothing routable at all? The list is in [`crate::net`].
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => is_private_v4(a),
        IpAddr::V6(a) => {
            let s = a.segments();
            // ::ffff:a.b.c.d (mapped), ::a.b.c.d (compatible, deprecated but still parsed by
            // some stacks) and 64:ff9b::a.b.c.d (NAT64 well-known prefix) all carry an IPv4
            // address the kernel or a NAT64 gateway may route to.
            let carries_v4 = (s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0))
                || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
            let embedded = carries_v4.then(|| Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32));
            if a.is_unspecified() || a.is_loopback() {
                return true;
            }
            if let Some(v4) = embedded {
                if is_private_v4(v4) {
                    return true;
                }
            }
            (s[0] & 0xfe00) == 0xfc00 // fc00::/7 unique local
                || (s[0] & 0xffc0) == 0xfe80 // fe80::/10 link-local
                || (s[0] & 0xffc0) == 0xfec0 // fec0::/10 site-local (deprecated)
                || (s[0] & 0xff00) == 0xff00 // ff00::/8 multicast
        }
    }
}

fn is_private_v4(a: Ipv4Addr) -> bool {
    let [o0, o1, ..] = a.octets();
    o0 == 0 // 0/8 "this network"; 0.0.0.0 reaches the local host
        || o0 == 10
        || (o0 == 100 && (o1 & 0xc0) == 64) // 100.64/10 CGNAT
        || o0 == 127
        || (o0 == 169 && o1 == 254) // link-local, cloud metadata 169.254.169.254
        || (o0 == 172 && (o1 & 0xf0) == 16)
        || (o0 == 192 && o1 == 168)
        || o0 >= 224 // 224/4 multicast, 240/4 reserved, 255.255.255.255 broadcast
}

/// The outcome of [`Policy::decide`] or [`Policy::check_resolved`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The rule that decided, as written, or what stood in for one ("not in network.allow",
    /// "private address", "invalid host").
    pub rule: String,
    /// One sentence for the user: why, and what to do when refused.
    pub reason: String,
    /// The allowing rule names the host itself (not through `*.`), which is what lets a
    /// name resolve to a private address (see [`crate::net`]).
    pub exact: bool,
}

/// Allow and deny lists of one profile.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The profile name, quoted in refusals so the user knows which file to edit.
    pub profile: String,
    pub allow: Vec<Rule>,
    pub deny: Vec<Rule>,
}

impl Policy {
    /// Parse every rule; the first bad one is the error.
    pub fn new(
        profile: impl Into<String>,
        allow: &[impl AsRef<str>],
        deny: &[impl AsRef<str>],
    ) -> Result<Policy, String> {
        fn parse_all(list: &[impl AsRef<str>]) -> Result<Vec<Rule>, String> {
            list.iter().map(|r| Rule::parse(r.as_ref())).collect()
        }
        Ok(Policy {
            profile: profile.into(),
            allow: parse_all(allow)?,
            deny: parse_all(deny)?,
        })
    }

    /// Decide on `host:port` by name alone: deny rules first, then allow rules. An IP
    /// literal or a localhost name needs a rule naming it exactly.
    pub fn decide(&self, host: &str, port: u16) -> Decision {
        let dest = match Dest::parse(host) {
            Ok(d) => d,
            Err(e) => {
                return refused(
                    "invalid host",
                    format!("{e}; ask for a DNS name or an IP address"),
                )
            }
        };
        let shown = hostport(&dest, port);
        if let Some(r) = self
            .deny
            .iter()
            .find(|r| (r.names(&dest) || r.covers_below(&dest)) && r.port_matches(port, true))
        {
            return refused(
                r.as_str(),
                format!(
                    "{shown} matches {:?} in profile {:?}'s network.deny; remove that rule to allow it",
                    r.as_str(),
                    self.profile
                ),
            );
        }
        let allowed = |r: &Rule, exact: bool| Decision {
            allowed: true,
            rule: r.as_str().to_string(),
            reason: format!(
                "allowed by {:?} in profile {:?}'s network.allow",
                r.as_str(),
                self.profile
            ),
            exact,
        };
        if let Some(r) = self
            .allow
            .iter()
            .find(|r| r.names(&dest) && r.port_matches(port, false))
        {
            return allowed(r, true);
        }
        let special = matches!(dest, Dest::Ip(_)) || dest.is_localhost();
        if !special {
            if let Some(r) = self
                .allow
                .iter()
                .find(|r| r.covers_below(&dest) && r.port_matches(port, false))
            {
                return allowed(r, false);
            }
        }
        let what = match &dest {
            Dest::Ip(ip) if is_private(*ip) => "a private address, ",
            Dest::Ip(_) => "an IP address, ",
            Dest::Name(_) if special => "a loopback name, ",
            Dest::Name(_) => "",
        };
        let need = if special {
            " (only an exact rule reaches it)"
        } else {
            ""
        };
        refused(
            "not in network.allow",
            format!(
                "{what}not in profile {:?}'s network.allow{need}; add --allow-host {}",
                self.profile,
                rule_text(&dest, port)
            ),
        )
    }

    /// Check the addresses an allowed name resolved to (DNS rebinding guard): a private
    /// address is refused unless the allowing rule named the host exactly, and an address
    /// a deny rule names is refused always. Returns `decision` unchanged when it stands.
    pub fn check_resolved(
        &self,
        host: &str,
        port: u16,
        decision: &Decision,
        addrs: &[SocketAddr],
    ) -> Decision {
        if !decision.allowed {
            return decision.clone();
        }
        let shown = match Dest::parse(host) {
            Ok(d) => hostport(&d, port),
            Err(_) => format!("{host}:{port}"),
        };
        for a in addrs {
            let ip = canonical(a.ip());
            if let Some(r) = self.deny.iter().find(|r| r.names_ip(ip, port)) {
                return refused(
                    r.as_str(),
                    format!(
                        "{shown} resolves to {ip}, which matches {:?} in profile {:?}'s network.deny",
                        r.as_str(),
                        self.profile
                    ),
                );
            }
            if is_private(ip) && !decision.exact {
                return refused(
                    "private address",
                    format!(
                        "{shown} resolves to {ip}, a private address, and {:?} names it only through '*.'; \
                         add --allow-host {} if it is meant to be reached",
                        decision.rule,
                        rule_text(&Dest::parse(host).unwrap_or(Dest::Name(host.into())), port)
                    ),
                );
            }
        }
        decision.clone()
    }
}

fn refused(rule: &str, reason: String) -> Decision {
    Decision {
        allowed: false,
        rule: rule.to_string(),
        reason,
        exact: false,
    }
}

fn hostport(dest: &Dest, port: u16) -> String {
    format!("{dest}:{port}")
}

/// The rule a user would add for this destination: the port only when it is not 80/443.
fn rule_text(dest: &Dest, port: u16) -> String {
    if DEFAULT_PORTS.contains(&port) {
        dest.to_string()
    } else {
        hostport(dest, port)
    }
}

/// Name resolution, behind a trait so tests can make a name resolve to loopback.
pub trait Resolver: Send + Sync {
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
}

/// getaddrinfo, on a helper thread: the glibc resolver and its NSS modules want more stack
/// than a client thread has, and the helper lets a stuck lookup be abandoned at `timeout`.
#[derive(Debug, Clone)]
pub struct SystemResolver {
    pub timeout: Duration,
}

impl Default for SystemResolver {
    fn default() -> Self {
        SystemResolver {
            timeout: Duration::from_secs(10),
        }
    }
}

/// Stack for the getaddrinfo helper thread. glibc's resolver keeps packet buffers on the
/// stack; 256 KiB is what musl gives a default thread and is plenty. The stack's pages go
/// back when the thread exits.
const RESOLVER_STACK: usize = 256 * 1024;

impl Resolver for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let (tx, rx) = mpsc::sync_channel(1);
        let name = host.to_string();
        std::thread::Builder::new()
            .name("csbox-dns".into())
            .stack_size(RESOLVER_STACK)
            .spawn(move || {
                let r = (name.as_str(), port)
                    .to_socket_addrs()
                    .map(|it| it.collect::<Vec<_>>());
                let _ = tx.send(r);
            })?;
        match rx.recv_timeout(self.timeout) {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {} s", self.timeout.as_secs()),
            )),
        }
    }
}

/// A fixed name → addresses map; unknown names fail like NXDOMAIN. For tests.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    map: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    pub fn new() -> Self {
        Self::default()
    }

    /// `host` (case-insensitive) resolves to `addrs`.
    pub fn with(mut self, host: &str, addrs: &[IpAddr]) -> Self {
        self.map.insert(host.to_ascii_lowercase(), addrs.to_vec());
        self
    }
}

impl Resolver for StaticResolver {
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let key = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if let Ok(ip) = key.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        match self.map.get(&key) {
            Some(ips) => Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host}: no such name (test resolver)"),
            )),
        }
    }
}

#[cfg(test)]
mod tests;
