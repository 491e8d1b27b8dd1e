//! Servers a network test starts on the host's loopback (nothing else is ever contacted):
//! an HTTP server that answers `ok`, and an upstream proxy that logs what it is asked
//! and refuses it or tunnels it to a loopback port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// An HTTP server on 127.0.0.1 answering every request `200 ok`; its port.
pub fn http_ok_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(c);
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let _ = r.get_mut().write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            });
        }
    });
    port
}

/// What the upstream proxy does with a request.
#[derive(Clone, Copy)]
pub enum Upstream {
    Refuse,
    /// Answer a CONNECT with 200 and relay to this loopback port.
    TunnelTo(u16),
}

/// A proxy on 127.0.0.1: each request's head lines (request line, Proxy-Authorization)
/// are logged.
pub fn upstream_proxy(mode: Upstream) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let log: Arc<Mutex<Vec<String>>> = Default::default();
    let lg = log.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let lg = lg.clone();
            std::thread::spawn(move || serve_upstream(c, mode, lg));
        }
    });
    (port, log)
}

fn serve_upstream(c: TcpStream, mode: Upstream, log: Arc<Mutex<Vec<String>>>) {
    let mut r = BufReader::new(c);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if !r.read_line(&mut line).is_ok_and(|n| n > 0) || line == "\r\n" {
            break;
        }
        head.push(line.trim_end().to_string());
    }
    let first = head.first().cloned().unwrap_or_default();
    let auth = head
        .iter()
        .find(|h| h.to_ascii_lowercase().starts_with("proxy-authorization:"))
        .cloned();
    log.lock()
        .unwrap()
        .push(format!("{first} | {}", auth.unwrap_or_default()));
    let mut c = r.into_inner();
    match mode {
        Upstream::Refuse => {
            let _ = c.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
        }
        Upstream::TunnelTo(port) => {
            let Ok(mut t) = TcpStream::connect(("127.0.0.1", port)) else {
                return;
            };
            let _ = c.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
            let (mut c2, mut t2) = (c.try_clone().unwrap(), t.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut t2);
                let _ = t2.shutdown(std::net::Shutdown::Write);
            });
            let _ = std::io::copy(&mut t, &mut c);
        }
    }
    let _ = c.shutdown(std::net::Shutdown::Write);
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
}
