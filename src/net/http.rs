//! The little HTTP/1.1 a forward proxy needs: find and parse a request head, read the
//! target of `CONNECT` and of an absolute-form request, rewrite a request for the origin,
//! read a status line. Pure code over bytes; strict, because whatever it accepts is
//! relayed to a server on the sandbox's behalf.

use super::policy::{parse_port, printable, split_host_port};

/// Hop-by-hop headers (RFC 9110 §7.6.1) and the proxy's own: never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

/// Framing headers stay even when `Connection` lists them: dropping them would change
/// where the request body ends.
const NEVER_STRIPPED: &[&str] = &["content-length", "transfer-encoding"];

/// Offset just past the blank line ending the head, if it is in `buf`.
pub(crate) fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// A parsed request head borrowing the bytes it came from.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub method: &'a str,
    pub target: &'a str,
    pub version: &'a str,
    pub headers: Vec<(&'a str, &'a [u8])>,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn token(s: &[u8]) -> Option<&str> {
    if !s.is_empty() && s.iter().all(|&b| is_tchar(b)) {
        std::str::from_utf8(s).ok()
    } else {
        None
    }
}

/// Parse a head ending in CRLF CRLF. Refuses obsolete line folding, whitespace before a
/// header's colon, control characters in a value (RFC 9112 §5, a proxy MUST reject
/// these: they are how requests are smuggled), and anything but HTTP/1.0 or 1.1.
pub(crate) fn parse_request(head: &[u8]) -> Result<Request<'_>, String> {
    if !head.ends_with(b"\r\n\r\n") {
        return Err("the request head does not end with a blank line".into());
    }
    // Every line, the last header's included, ends in CRLF; the blank line is cut off.
    let body = &head[..head.len() - 2];
    let mut lines = body
        .split_inclusive(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r\n"));
    let line = lines
        .next()
        .flatten()
        .ok_or("the request line does not end with CRLF")?;
    let mut parts = line.split(|&b| b == b' ');
    let (Some(m), Some(t), Some(v), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the request line is not 'METHOD target HTTP/1.1'".into());
    };
    let method = token(m).ok_or("the method is not an HTTP token")?;
    if t.is_empty() || !t.iter().all(|&b| b.is_ascii_graphic()) {
        return Err("the request target has spaces or control characters".into());
    }
    let target = std::str::from_utf8(t).map_err(|_| "the request target is not ASCII")?;
    let version = match v {
        b"HTTP/1.1" => "HTTP/1.1",
        b"HTTP/1.0" => "HTTP/1.0",
        _ => return Err("only HTTP/1.0 and HTTP/1.1 are spoken here".into()),
    };
    let mut headers = Vec::new();
    for l in lines {
        let l = l.ok_or("a header line ends with a bare LF")?;
        if l.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            return Err("obsolete header line folding is not accepted".into());
        }
        let colon = l
            .iter()
            .position(|&b| b == b':')
            .ok_or("a header line has no ':'")?;
        let name = token(&l[..colon]).ok_or("a header name is not an HTTP token")?;
        let value = trim_ows(&l[colon + 1..]);
        if value
            .iter()
            .any(|&b| b == 0 || b == b'\r' || b == b'\n' || (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            return Err(format!("header {name} has control characters"));
        }
        headers.push((name, value));
    }
    Ok(Request {
        method,
        target,
        version,
        headers,
    })
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// `host:port` of a CONNECT (authority form: the port is required).
pub(crate) fn connect_target(target: &str) -> Result<(&str, u16), String> {
    match split_host_port(target)? {
        (h, Some(p)) if !h.is_empty() => Ok((h, parse_port(p)?)),
        _ => Err(format!("CONNECT needs host:port, not {target:?}")),
    }
}

/// An absolute-form `http://host[:port]/path?query` split into host, port (default 80) and
/// the origin-form target (`/path?query`, without a fragment).
pub(crate) fn absolute_target(target: &str) -> Result<(&str, u16, String), String> {
    let scheme_end = target.find("://").ok_or_else(|| {
        format!("{target:?} is not an absolute http:// URL; this is a proxy, so clients send the whole URL")
    })?;
    let scheme = &target[..scheme_end];
    if scheme.eq_ignore_ascii_case("https") {
        return Err("https:// URLs go through CONNECT; csbox never terminates TLS".into());
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(format!(
            "the {scheme:?} scheme is not proxied; only http:// and CONNECT"
        ));
    }
    let rest = &target[scheme_end + 3..];
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    if authority.contains('@') {
        return Err("credentials in a URL are not forwarded; send an Authorization header".into());
    }
    let (host, port) = match split_host_port(authority)? {
        (h, None) => (h, 80),
        (h, Some(p)) => (h, parse_port(p)?),
    };
    if host.is_empty() {
        return Err(format!("{target:?} names no host"));
    }
    let tail = tail.split('#').next().unwrap_or("");
    let path = if tail.starts_with('/') {
        tail.to_string()
    } else {
        format!("/{tail}")
    };
    Ok((host, port, path))
}

/// The request to send on: `request_target` (origin form to a server, absolute form to an
/// upstream proxy), `Host` set from the URL (RFC 9112 §3.2.2: a proxy replaces a Host that
/// disagrees, else an allowed connection could name another virtual host), hop-by-hop
/// headers and those `Connection` lists dropped, `proxy_auth` added, `Connection: close`.
pub(crate) fn forward_head(
    req: &Request,
    request_target: &str,
    host: &str,
    proxy_auth: Option<&str>,
) -> Vec<u8> {
    let mut listed: Vec<String> = Vec::new();
    for (name, value) in &req.headers {
        if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("proxy-connection")
        {
            for t in value.split(|&b| b == b',') {
                let t = String::from_utf8_lossy(trim_ows(t)).to_ascii_lowercase();
                if !NEVER_STRIPPED.contains(&t.as_str()) {
                    listed.push(t);
                }
            }
        }
    }
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(
        format!(
            "{} {} {}\r\nHost: {host}\r\n",
            req.method, request_target, req.version
        )
        .as_bytes(),
    );
    for (name, value) in &req.headers {
        let lower = name.to_ascii_lowercase();
        if lower == "host" || HOP_BY_HOP.contains(&lower.as_str()) || listed.contains(&lower) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(a) = proxy_auth {
        out.extend_from_slice(format!("Proxy-Authorization: {a}\r\n").as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

/// The status code and reason of a response head (`HTTP/1.1 407 Proxy Authentication
/// Required`), reason cut to printable ASCII.
pub(crate) fn parse_status(head: &[u8]) -> Result<(u16, String), String> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or(b"");
    let line = String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line));
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err("the answer is not an HTTP/1.x status line".into());
    }
    let code: u16 = code
        .parse()
        .map_err(|_| "the status code is not a number")?;
    Ok((code, printable(parts.next().unwrap_or(""), 80)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Request<'_>, String> {
        parse_request(s.as_bytes())
    }

    #[test]
    fn a_connect_head_parses() {
        let r = parse("CONNECT api.example.test:443 HTTP/1.1\r\nHost: api.example.test:443\r\nUser-Agent:  x \r\n\r\n")
            .unwrap();
        assert_eq!(r.method, "CONNECT");
        assert_eq!(connect_target(r.target).unwrap(), ("api.example.test", 443));
        assert_eq!(r.headers[1], ("User-Agent", &b"x"[..]));
        assert_eq!(connect_target("[::1]:8080").unwrap(), ("[::1]", 8080));
    }

    #[test]
    fn malformed_heads_are_refused() {
        for h in [
            "GET\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "GET / HTTP/2\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET / HTTP/1.1\r\nName : x\r\n\r\n",
            "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            "GET / HTTP/1.1\nA: b\r\n\r\n",
            "GET / HTTP/1.1\r\nA: b\x01c\r\n\r\n",
            "G\x00T / HTTP/1.1\r\n\r\n",
            "GET /\x7f HTTP/1.1\r\n\r\n",
        ] {
            assert!(parse(h).is_err(), "{h:?}");
        }
        assert!(connect_target("example.test").is_err());
        assert!(connect_target(":443").is_err());
        assert!(connect_target("example.test:0").is_err());
    }

    #[test]
    fn absolute_targets_split_into_host_port_and_origin_form() {
        assert_eq!(
            absolute_target("http://Example.test/a/b?c=d#frag").unwrap(),
            ("Example.test", 80, "/a/b?c=d".to_string())
        );
        assert_eq!(
            absolute_target("http://127.0.0.1:8080").unwrap(),
            ("127.0.0.1", 8080, "/".to_string())
        );
        assert_eq!(
            absolute_target("HTTP://[::1]:81?q").unwrap(),
            ("[::1]", 81, "/?q".to_string())
        );
        for bad in [
            "/just/a/path",
            "https://x.test/",
            "ftp://x.test/",
            "http://u:p@x.test/",
            "http:///p",
            "http://x.test:99999/",
        ] {
            assert!(absolute_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarding_strips_hop_by_hop_and_listed_headers_and_fixes_host() {
        let r = parse(
            "POST http://a.test/x HTTP/1.1\r\nHost: other.test\r\nProxy-Connection: keep-alive\r\n\
             Proxy-Authorization: Basic c2VjcmV0\r\nConnection: X-Secret, content-length\r\n\
             X-Secret: 1\r\nContent-Length: 3\r\nKeep-Alive: 5\r\nAccept: */*\r\n\r\n",
        )
        .unwrap();
        let out = String::from_utf8(forward_head(&r, "/x", "a.test", None)).unwrap();
        assert_eq!(
            out,
            "POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        let out = String::from_utf8(forward_head(
            &r,
            "http://a.test/x",
            "a.test",
            Some("Basic dTpw"),
        ))
        .unwrap();
        assert!(
            out.starts_with("POST http://a.test/x HTTP/1.1\r\n"),
            "{out}"
        );
        assert!(
            out.contains("\r\nProxy-Authorization: Basic dTpw\r\n"),
            "{out}"
        );
        assert!(!out.contains("c2VjcmV0"), "{out}");
    }

    #[test]
    fn status_lines_parse_and_reasons_are_printable() {
        assert_eq!(
            parse_status(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n").unwrap(),
            (407, "Proxy Authentication Required".into())
        );
        assert_eq!(parse_status(b"HTTP/1.0 200\r\n\r\n").unwrap().0, 200);
        assert_eq!(
            parse_status(b"HTTP/1.1 403 a\x1b[2Jb\r\n").unwrap().1,
            "a?[2Jb"
        );
        assert!(parse_status(b"SSH-2.0-OpenSSH\r\n").is_err());
    }
}
