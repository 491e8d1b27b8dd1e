//! The proxy csbox itself must go through when the host has one (`HTTPS_PROXY` outside):
//! parsed from its URL, with credentials kept on the host side.

use super::policy::{parse_port, split_host_port, Dest};

/// An HTTP proxy to chain through. `auth` ("user:pass", percent-decoded) is sent to it as
/// `Proxy-Authorization: Basic …` and never to the client; `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    pub auth: Option<String>,
    /// Destinations reached directly, as in `NO_PROXY`: `*`, `host`, `.domain` or
    /// `*.domain` (a domain entry covers the domain and every name below it, as curl
    /// reads NO_PROXY), an IP address, each with an optional `:port`. Lower case.
    pub no_proxy: Vec<String>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("auth", &self.auth.as_ref().map(|_| "<hidden>"))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

impl Upstream {
    /// Parse `http://[user:pass@]host[:port][/]`; without a scheme, http is assumed, and
    /// without a port, 80 (the URL's default, as Node and Python read proxy URLs; curl
    /// would say 1080). https:// and socks proxies are not supported as upstreams.
    pub fn from_url(url: &str) -> Result<Upstream, String> {
        // The URL may hold a password: errors quote it with the credentials cut out.
        let shown = redact(url);
        let bad = |why: &str| format!("upstream proxy {shown:?}: {why}");
        let rest = match url.split_once("://") {
            Some((s, r)) if s.eq_ignore_ascii_case("http") => r,
            Some((s, _)) => {
                return Err(bad(&format!(
                    "the {s}:// scheme is not supported; csbox chains only through an http:// proxy"
                )))
            }
            None => url,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(bad("a proxy URL has no path"));
        }
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hp)) => {
                let (u, p) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let user = percent_decode(u).ok_or_else(|| bad("bad %-escape in the user name"))?;
                let pass = percent_decode(p).ok_or_else(|| bad("bad %-escape in the password"))?;
                (Some(format!("{user}:{pass}")), hp)
            }
            None => (None, rest),
        };
        let (host, port) = split_host_port(hostport).map_err(|e| bad(&e))?;
        let port = match port {
            Some(p) => parse_port(p).map_err(|e| bad(&e))?,
            None => 80,
        };
        // Kept without brackets: it is handed to the resolver as is.
        let host = match Dest::parse(host).map_err(|e| bad(&e))? {
            Dest::Ip(ip) => ip.to_string(),
            Dest::Name(n) => n,
        };
        Ok(Upstream {
            host,
            port,
            auth,
            no_proxy: Vec::new(),
        })
    }

    /// Add a comma-separated `NO_PROXY` list.
    pub fn with_no_proxy(mut self, list: &str) -> Self {
        for e in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let e = e.to_ascii_lowercase();
            let e = e
                .strip_prefix("*.")
                .or_else(|| e.strip_prefix('.'))
                .unwrap_or(&e);
            self.no_proxy.push(e.to_string());
        }
        self
    }

    /// Is `dest:port` listed in `no_proxy`, so reached directly?
    pub(crate) fn bypasses(&self, dest: &Dest, port: u16) -> bool {
        let host = dest.to_string();
        self.no_proxy.iter().any(|e| {
            if e == "*" {
                return true;
            }
            let (h, p) = match split_host_port(e) {
                Ok((h, Some(p))) => match parse_port(p) {
                    Ok(p) => (h, Some(p)),
                    Err(_) => return false,
                },
                Ok((h, None)) => (h, None),
                Err(_) => return false,
            };
            let h = match Dest::parse(h) {
                Ok(d) => d.to_string(),
                Err(_) => return false,
            };
            let host_ok =
                host == h || (matches!(dest, Dest::Name(_)) && host.ends_with(&format!(".{h}")));
            host_ok && p.is_none_or(|p| p == port)
        })
    }

    /// `host:port` as shown to users (no credentials).
    pub fn display(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The `Proxy-Authorization` value, if there are credentials.
    pub(crate) fn authorization(&self) -> Option<String> {
        self.auth
            .as_ref()
            .map(|a| format!("Basic {}", base64(a.as_bytes())))
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***@{}", &url[..s + 3], &url[at + 1..]),
        (None, Some(at)) => format!("***@{}", &url[at + 1..]),
        _ => url.to_string(),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// RFC 4648 base64 with padding: fifteen lines instead of a dependency.
pub(crate) fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn proxy_urls_parse_with_credentials_and_default_port() {
        let u = Upstream::from_url("http://user:p%40ss@Proxy.Corp:3128/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("proxy.corp", 3128));
        assert_eq!(u.auth.as_deref(), Some("user:p@ss"));
        assert_eq!(
            u.authorization().unwrap(),
            format!("Basic {}", base64(b"user:p@ss"))
        );
        let u = Upstream::from_url("proxy.corp").unwrap();
        assert_eq!((u.port, u.auth), (80, None));
        let u = Upstream::from_url("http://[::1]:8080").unwrap();
        assert_eq!(u.display(), "[::1]:8080");
    }

    #[test]
    fn bad_proxy_urls_are_refused_without_showing_the_password() {
        for url in [
            "https://u:secret@proxy.corp:3128",
            "socks5://proxy.corp:1080",
            "http://u:secret@proxy.corp:0",
            "http://u:secret@proxy.corp:3128/path",
            "http://u:sec%zzret@proxy.corp",
        ] {
            let e = Upstream::from_url(url).unwrap_err();
            assert!(!e.contains("secret") && !e.contains("sec%zz"), "{e}");
        }
        let dbg = format!(
            "{:?}",
            Upstream::from_url("http://u:secret@p.corp").unwrap()
        );
        assert!(!dbg.contains("secret"), "{dbg}");
    }

    #[test]
    fn no_proxy_entries_cover_domains_hosts_ports_and_star() {
        let u = Upstream::from_url("http://p.corp:3128")
            .unwrap()
            .with_no_proxy(" .internal.corp, *.svc.test, exact.test:8080, 10.1.2.3 ");
        let name = |n: &str| Dest::parse(n).unwrap();
        assert!(u.bypasses(&name("internal.corp"), 443));
        assert!(u.bypasses(&name("a.internal.corp"), 443));
        assert!(u.bypasses(&name("svc.test"), 443));
        assert!(u.bypasses(&name("x.svc.test"), 443));
        assert!(u.bypasses(&name("exact.test"), 8080));
        assert!(!u.bypasses(&name("exact.test"), 443));
        assert!(!u.bypasses(&name("notinternal.corp"), 443));
        assert!(u.bypasses(&name("10.1.2.3"), 443));
        assert!(!u.bypasses(&name("api.example.test"), 443));
        let all = Upstream::from_url("p.corp").unwrap().with_no_proxy("*");
        assert!(all.bypasses(&name("anything.test"), 1));
    }
}
