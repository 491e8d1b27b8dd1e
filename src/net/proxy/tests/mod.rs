//! The proxy end to end over real loopback sockets: servers started here, on 127.0.0.1.

use super::*;
use crate::net::{bind_loopback_listeners, fd_socketpair, StaticResolver};
use std::io::{BufRead, BufReader, Read};
use std::net::Shutdown;
use std::net::{IpAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::thread::JoinHandle;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Echoes what it reads until EOF, then says "bye" and closes: shows both directions and
/// the half-close. Returns its port.
fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            std::thread::spawn(move || {
                let mut buf = [0; 8192];
                loop {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if c.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = c.write_all(b"bye");
            });
        }
    });
    port
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn fast() -> ProxyConfig {
    ProxyConfig {
        head_timeout: Duration::from_millis(400),
        connect_timeout: Duration::from_secs(2),
        ..ProxyConfig::default()
    }
}

fn policy(allow: &[&str], deny: &[&str]) -> Policy {
    Policy::new("default", allow, deny).unwrap()
}

/// Serve `proxy` on a loopback listener of its own; returns its port.
fn start(proxy: Proxy) -> u16 {
    let proxy = Arc::new(proxy);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let _ = proxy.spawn(c);
        }
    });
    port
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Send `request`, read the answer's head; returns the head and the stream.
fn ask(port: u16, request: &[u8]) -> (String, BufReader<TcpStream>) {
    let mut s = connect(port);
    s.write_all(request).unwrap();
    let mut r = BufReader::new(s);
    let head = read_head_lines(&mut r);
    (head, r)
}

fn read_head_lines(r: &mut BufReader<TcpStream>) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    head
}

fn body(mut r: BufReader<TcpStream>) -> String {
    let mut b = String::new();
    r.read_to_string(&mut b).unwrap();
    b
}

fn connect_req(target: &str) -> Vec<u8> {
    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").into_bytes()
}

/// Through an open tunnel: echo, half-close, "bye", EOF.
fn check_echo_and_half_close(mut r: BufReader<TcpStream>) {
    r.get_mut().write_all(b"hello").unwrap();
    let mut buf = [0; 5];
    r.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    r.get_mut().shutdown(Shutdown::Write).unwrap();
    assert_eq!(body(r), "bye");
}

type Blocked = Arc<Mutex<Vec<(String, u16, String)>>>;

fn recording(p: Proxy) -> (Proxy, Blocked) {
    let seen: Blocked = Arc::default();
    let s = seen.clone();
    (
        p.on_blocked(move |h, port, why| s.lock().unwrap().push((h.into(), port, why.into()))),
        seen,
    )
}

#[test]
fn allowed_connect_relays_both_ways_with_half_close() {
    let echo = echo_server();
    let p = start(Proxy::new(policy(&[&format!("127.0.0.1:{echo}")], &[])).config(fast()));
    let (head, r) = ask(p, &connect_req(&format!("127.0.0.1:{echo}")));
    assert_eq!(head, "HTTP/1.1 200 Connection established\r\n\r\n");
    check_echo_and_half_close(r);
}

#[test]
fn bytes_sent_with_the_connect_head_are_not_lost() {
    let echo = echo_server();
    let p = start(Proxy::new(policy(&[&format!("127.0.0.1:{echo}")], &[])).config(fast()));
    let mut req = connect_req(&format!("127.0.0.1:{echo}"));
    req.extend_from_slice(b"early");
    let (head, mut r) = ask(p, &req);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut buf = [0; 5];
    r.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"early");
}

#[test]
fn a_port_not_allowed_gets_403_naming_rule_and_profile() {
    let echo = echo_server();
    let other = echo_server();
    let (proxy, seen) =
        recording(Proxy::new(policy(&[&format!("127.0.0.1:{echo}")], &[])).config(fast()));
    let p = start(proxy);
    let (head, r) = ask(p, &connect_req(&format!("127.0.0.1:{other}")));
    assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{head}");
    assert!(head.contains("\r\nContent-Type: text/plain\r\n"), "{head}");
    assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
    let b = body(r);
    assert_eq!(
        b,
        format!(
            "csbox: blocked connection to 127.0.0.1:{other} (a private address, not in profile \"default\"'s \
             network.allow (only an exact rule reaches it); add --allow-host 127.0.0.1:{other})\n"
        )
    );
    assert_eq!(b.lines().count(), 1);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].0.as_str(), seen[0].1), ("127.0.0.1", other));
}

#[test]
fn a_refused_name_gets_the_documented_one_line_body() {
    let p = start(Proxy::new(policy(&["*.example.test"], &[])).config(fast()));
    let (head, r) = ask(p, &connect_req("evil.example:443"));
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(
        body(r),
        "csbox: blocked connection to evil.example:443 (not in profile \"default\"'s network.allow; \
         add --allow-host evil.example)\n"
    );
}

#[test]
fn deny_beats_allow_through_the_proxy() {
    let echo = echo_server();
    let rule = format!("127.0.0.1:{echo}");
    let p = start(Proxy::new(policy(&[&rule], &["127.0.0.1"])).config(fast()));
    let (head, r) = ask(p, &connect_req(&rule));
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(body(r).contains("network.deny"));
}

fn resolving(allow: &[&str], name: &str) -> Proxy {
    Proxy::new(policy(allow, &[]))
        .resolver(Arc::new(StaticResolver::new().with(name, &[LOCALHOST])))
        .config(fast())
}

#[test]
fn wildcard_reaches_subdomains_only_and_never_a_private_address() {
    let echo = echo_server();
    let rule = format!("*.example.test:{echo}");
    let proxy = Proxy::new(policy(&[&rule], &[]))
        .resolver(Arc::new(
            StaticResolver::new()
                .with("a.example.test", &[LOCALHOST])
                .with("example.test", &[LOCALHOST]),
        ))
        .config(fast());
    let p = start(proxy);
    let (head, r) = ask(p, &connect_req(&format!("example.test:{echo}")));
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(body(r).contains("not in profile"));
    let (head, r) = ask(p, &connect_req(&format!("a.example.test:{echo}")));
    assert!(
        head.starts_with("HTTP/1.1 403"),
        "matched, but resolves to loopback: {head}"
    );
    let b = body(r);
    assert!(
        b.contains("resolves to 127.0.0.1, a private address"),
        "{b}"
    );
}

#[test]
fn a_name_resolving_to_loopback_is_refused_unless_named_exactly() {
    let echo = echo_server();
    let p = start(resolving(&[&format!("*.test:{echo}")], "evil.test"));
    let (head, r) = ask(p, &connect_req(&format!("evil.test:{echo}")));
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let b = body(r);
    assert!(
        b.contains(&format!("add --allow-host evil.test:{echo}")),
        "{b}"
    );

    let p = start(resolving(&[&format!("evil.test:{echo}")], "evil.test"));
    let (head, r) = ask(p, &connect_req(&format!("evil.test:{echo}")));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    check_echo_and_half_close(r);
}

/// An HTTP server that records the request head it got and answers "ok".
fn http_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let h = heads.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let mut r = BufReader::new(c);
            let head = read_head_lines(&mut r);
            let mut body = vec![0; 4];
            if head.contains("Content-Length: 4") {
                r.read_exact(&mut body).unwrap();
            }
            h.lock().unwrap().push(head);
            let _ = r
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (port, heads)
}

#[test]
fn plain_http_is_forwarded_in_origin_form_without_proxy_headers() {
    let (srv, heads) = http_server();
    let p = start(Proxy::new(policy(&[&format!("127.0.0.1:{srv}")], &[])).config(fast()));
    let req = format!(
        "POST http://127.0.0.1:{srv}/a/b?c=d HTTP/1.1\r\nHost: elsewhere.test\r\n\
         Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic c2VjcmV0\r\n\
         Connection: X-Hop\r\nX-Hop: 1\r\nContent-Length: 4\r\nAccept: */*\r\n\r\nbody"
    );
    let (head, r) = ask(p, req.as_bytes());
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body(r), "ok");
    let got = heads.lock().unwrap()[0].clone();
    assert_eq!(
        got,
        format!(
            "POST /a/b?c=d HTTP/1.1\r\nHost: 127.0.0.1:{srv}\r\nContent-Length: 4\r\nAccept: */*\r\n\
             Connection: close\r\n\r\n"
        )
    );
}

#[test]
fn plain_http_to_a_refused_host_gets_403_and_https_urls_get_400() {
    let p = start(Proxy::new(policy(&["*.example.test"], &[])).config(fast()));
    let (head, r) = ask(
        p,
        b"GET http://evil.example/ HTTP/1.1\r\nHost: evil.example\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(body(r).contains("blocked connection to evil.example:80"));
    let (head, r) = ask(p, b"GET https://a.example.test/ HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(body(r).contains("CONNECT"));
    let (head, _) = ask(p, b"GET / HTTP/1.1\r\nHost: a.example.test\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 400"),
        "origin form is not a proxy request: {head}"
    );
}

mod socks_upstream_limits;
