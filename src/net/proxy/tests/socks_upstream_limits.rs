//! SOCKS5, the upstream proxy, malformed and slow clients, limits, fd passing, audit.

use super::*;

fn socks(port: u16, request: &[u8]) -> (u8, TcpStream) {
    let mut s = connect(port);
    s.write_all(&[5, 1, 0]).unwrap();
    let mut m = [0; 2];
    s.read_exact(&mut m).unwrap();
    assert_eq!(m, [5, 0]);
    s.write_all(request).unwrap();
    let mut rep = [0; 10];
    s.read_exact(&mut rep).unwrap();
    assert_eq!((rep[0], rep[2], rep[3]), (5, 0, 1));
    (rep[1], s)
}

fn socks_domain(name: &str, port: u16) -> Vec<u8> {
    let mut r = vec![5, 1, 0, 3, name.len() as u8];
    r.extend_from_slice(name.as_bytes());
    r.extend_from_slice(&port.to_be_bytes());
    r
}

#[test]
fn socks5_connect_by_name_and_by_address() {
    let echo = echo_server();
    let p = start(resolving(
        &[&format!("svc.test:{echo}"), &format!("127.0.0.1:{echo}")],
        "svc.test",
    ));
    let (code, s) = socks(p, &socks_domain("svc.test", echo));
    assert_eq!(code, 0);
    check_echo_and_half_close(BufReader::new(s));
    let mut v4 = vec![5, 1, 0, 1, 127, 0, 0, 1];
    v4.extend_from_slice(&echo.to_be_bytes());
    let (code, s) = socks(p, &v4);
    assert_eq!(code, 0);
    check_echo_and_half_close(BufReader::new(s));
}

#[test]
fn socks5_refusals_and_unsupported_requests_get_their_reply_codes() {
    let echo = echo_server();
    let (proxy, seen) = recording(resolving(&["*.test"], "svc.test"));
    let p = start(proxy);
    assert_eq!(socks(p, &socks_domain("other.example", 443)).0, 0x02);
    assert_eq!(
        socks(p, &socks_domain("svc.test", 443)).0,
        0x02,
        "rebinding guard"
    );
    let mut bind = socks_domain("svc.test", echo);
    bind[1] = 2; // BIND
    assert_eq!(socks(p, &bind).0, 0x07);
    assert_eq!(socks(p, &[5, 1, 0, 9, 0, 0]).0, 0x08);
    assert_eq!(seen.lock().unwrap().len(), 2);
    // A client offering only username/password auth is told no method is acceptable.
    let mut s = connect(p);
    s.write_all(&[5, 1, 2]).unwrap();
    let mut m = [0; 2];
    s.read_exact(&mut m).unwrap();
    assert_eq!(m, [5, 0xff]);
}

#[test]
fn socks5_connection_refused_is_reply_5() {
    let port = closed_port();
    let p = start(Proxy::new(policy(&[&format!("127.0.0.1:{port}")], &[])).config(fast()));
    let mut v4 = vec![5, 1, 0, 1, 127, 0, 0, 1];
    v4.extend_from_slice(&port.to_be_bytes());
    assert_eq!(socks(p, &v4).0, 0x05);
}

#[test]
fn an_unreachable_destination_gets_a_one_line_502() {
    let port = closed_port();
    let p = start(
        Proxy::new(policy(&[&format!("127.0.0.1:{port}"), "nx.test"], &[]))
            .resolver(Arc::new(StaticResolver::new()))
            .config(fast()),
    );
    let (head, r) = ask(p, &connect_req(&format!("127.0.0.1:{port}")));
    assert!(head.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{head}");
    let b = body(r);
    assert_eq!(b.lines().count(), 1);
    assert!(b.contains("connection refused"), "{b}");
    let (head, r) = ask(p, &connect_req("nx.test:443"));
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert!(body(r).contains("cannot resolve nx.test"));
}

/// A tiny upstream proxy: records each request head, answers `answer`, and after a 200
/// to CONNECT echoes like [`echo_server`]; to a plain request it answers "ok" itself.
fn upstream_proxy(answer: &'static str) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let h = heads.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let h = h.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(c);
                let head = read_head_lines(&mut r);
                let connect = head.starts_with("CONNECT ");
                h.lock().unwrap().push(head);
                if !connect {
                    let _ = r.get_mut().write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    );
                    return;
                }
                let _ = r.get_mut().write_all(answer.as_bytes());
                if !answer.starts_with("HTTP/1.1 200") {
                    return;
                }
                let mut buf = [0; 4096];
                loop {
                    match r.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let _ = r.get_mut().write_all(&buf[..n]);
                        }
                    }
                }
                let _ = r.get_mut().write_all(b"bye");
            });
        }
    });
    (port, heads)
}

#[test]
fn allowed_connects_chain_through_the_upstream_with_its_credentials() {
    let (up, heads) = upstream_proxy("HTTP/1.1 200 Connection established\r\n\r\n");
    let upstream = Upstream::from_url(&format!("http://user:s3cret@127.0.0.1:{up}")).unwrap();
    let p = start(
        Proxy::new(policy(&["api.example.test", "localhost"], &[]))
            .resolver(Arc::new(StaticResolver::new()))
            .upstream(Some(upstream))
            .config(fast()),
    );
    // No resolver entry for api.example.test: csbox does not resolve it, the upstream does.
    let (head, r) = ask(p, &connect_req("api.example.test:443"));
    assert_eq!(head, "HTTP/1.1 200 Connection established\r\n\r\n");
    let mut s = r.into_inner();
    s.write_all(b"hello").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert_eq!(all, "hellobye");
    let auth = format!("Basic {}", crate::net::upstream::base64(b"user:s3cret"));
    let got = heads.lock().unwrap()[0].clone();
    assert_eq!(
        got,
        format!("CONNECT api.example.test:443 HTTP/1.1\r\nHost: api.example.test:443\r\nProxy-Authorization: {auth}\r\n\r\n")
    );
    assert!(!all.contains("s3cret") && !all.contains(&auth[6..]));

    // Policy still applies first: nothing reaches the upstream for a refused host.
    let (head, _) = ask(p, &connect_req("evil.example:443"));
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(heads.lock().unwrap().len(), 1);
}

#[test]
fn plain_http_goes_to_the_upstream_in_absolute_form() {
    let (up, heads) = upstream_proxy("unused");
    let upstream = Upstream::from_url(&format!("http://u:pw@127.0.0.1:{up}")).unwrap();
    let p = start(
        Proxy::new(policy(&["api.example.test"], &[]))
            .upstream(Some(upstream))
            .config(fast()),
    );
    let (head, r) = ask(
        p,
        b"GET http://api.example.test/x HTTP/1.1\r\nProxy-Authorization: Basic Y2xpZW50\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert_eq!(body(r), "ok");
    let got = heads.lock().unwrap()[0].clone();
    assert_eq!(
        got,
        format!(
            "GET http://api.example.test/x HTTP/1.1\r\nHost: api.example.test\r\nProxy-Authorization: Basic {}\r\nConnection: close\r\n\r\n",
            crate::net::upstream::base64(b"u:pw")
        )
    );
}

#[test]
fn an_upstream_refusal_is_a_502_without_credentials() {
    let (up, _) = upstream_proxy(
        "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 6\r\n\r\nsecret",
    );
    let upstream = Upstream::from_url(&format!("http://user:s3cret@127.0.0.1:{up}")).unwrap();
    let p = start(
        Proxy::new(policy(&["api.example.test"], &[]))
            .upstream(Some(upstream))
            .config(fast()),
    );
    let (head, r) = ask(p, &connect_req("api.example.test:443"));
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    let b = body(r);
    assert!(
        b.contains("answered \"407 Proxy Authentication Required\""),
        "{b}"
    );
    assert!(!b.contains("s3cret") && !b.contains("secret"), "{b}");
}

#[test]
fn no_proxy_destinations_go_direct() {
    let echo = echo_server();
    let (up, heads) = upstream_proxy("HTTP/1.1 200 Connection established\r\n\r\n");
    let upstream = Upstream::from_url(&format!("http://127.0.0.1:{up}"))
        .unwrap()
        .with_no_proxy("127.0.0.1");
    let p = start(
        Proxy::new(policy(&[&format!("127.0.0.1:{echo}")], &[]))
            .upstream(Some(upstream))
            .config(fast()),
    );
    let (head, r) = ask(p, &connect_req(&format!("127.0.0.1:{echo}")));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    check_echo_and_half_close(r);
    assert!(heads.lock().unwrap().is_empty());
}

#[test]
fn garbage_and_malformed_requests_get_400() {
    let p = start(Proxy::new(policy(&["*.example.test"], &[])).config(fast()));
    for req in [
        &b"\x16\x03\x01\x02\x00garbage"[..],
        b"GET\r\n\r\n",
        b"CONNECT a.example.test HTTP/1.1\r\n\r\n",
        b"CONNECT a.example.test:443 HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET http://a.example.test/ HTTP/1.1\r\nX: 1\r\n folded\r\n\r\n",
    ] {
        let (head, r) = ask(p, req);
        assert!(
            head.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{req:?}: {head}"
        );
        assert!(body(r).starts_with("csbox: bad proxy request: "));
    }
}

#[test]
fn an_oversized_head_gets_400() {
    let p = start(Proxy::new(policy(&["*.example.test"], &[])).config(fast()));
    let mut req = b"GET http://a.example.test/ HTTP/1.1\r\n".to_vec();
    while req.len() < 20 * 1024 {
        req.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let (head, r) = ask(p, &req);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(body(r).contains("over 16384 bytes"));
}

#[test]
fn a_slow_or_silent_client_times_out_with_408() {
    let p = start(Proxy::new(policy(&["*.example.test"], &[])).config(fast()));
    let t = Instant::now();
    let (head, _) = ask(p, b"");
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    // Dribbling bytes does not extend the deadline: it is for the whole head.
    let mut s = connect(p);
    for _ in 0..6 {
        if s.write_all(b"G").is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut r = BufReader::new(s);
    let head = read_head_lines(&mut r);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // A half-finished SOCKS5 handshake is dropped the same way.
    let mut s = connect(p);
    s.write_all(&[5, 1]).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
}

#[test]
fn past_max_clients_a_client_gets_503() {
    let mut cfg = fast();
    cfg.max_clients = 1;
    cfg.head_timeout = Duration::from_secs(5);
    let proxy = Arc::new(Proxy::new(policy(&["*.example.test"], &[])).config(cfg));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let first = connect(port);
    let (a, _) = l.accept().unwrap();
    proxy.spawn(a).unwrap();
    let mut second = connect(port);
    let (b, _) = l.accept().unwrap();
    assert!(proxy.spawn(b).is_err());
    let mut got = String::new();
    second.read_to_string(&mut got).unwrap();
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    drop(first);
    let t = Instant::now();
    while proxy.active() > 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        proxy.active(),
        0,
        "the counter falls back when a client ends"
    );
}

#[test]
fn connections_accepted_inside_are_passed_out_and_served() {
    let echo = echo_server();
    let proxy = Arc::new(Proxy::new(policy(&[&format!("127.0.0.1:{echo}")], &[])).config(fast()));
    let listeners = bind_loopback_listeners(0).unwrap();
    let port = listeners.port;
    let (inside, outside) = fd_socketpair().unwrap();
    let inside_dup = inside.try_clone().unwrap();
    let accept: JoinHandle<io::Result<()>> =
        std::thread::spawn(move || listeners.relay_accept_loop(inside.as_fd()));
    let serve = std::thread::spawn(move || proxy.serve_passed_fds(outside));
    let (head, r) = ask(port, &connect_req(&format!("127.0.0.1:{echo}")));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    check_echo_and_half_close(r);
    if let Ok(mut s) = TcpStream::connect(("::1", port)) {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&connect_req(&format!("127.0.0.1:{echo}")))
            .unwrap();
        let head = read_head_lines(&mut BufReader::new(s));
        assert!(head.starts_with("HTTP/1.1 200"), "over ::1: {head}");
    }
    // When pid 1 goes, its end of the socket closes: serve_passed_fds sees EOF and
    // returns, and the accept loop sees the hang-up. Shutting the socket down stands in.
    // SAFETY: shutdown of a socket we hold a duplicate of.
    unsafe { libc::shutdown(inside_dup.as_raw_fd(), libc::SHUT_RDWR) };
    assert!(serve.join().unwrap().is_ok());
    assert!(accept.join().unwrap().is_ok());
}

#[test]
fn the_audit_log_records_allowed_and_refused_connections() {
    let echo = echo_server();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.jsonl");
    let log = Arc::new(AuditLog::open(&path).unwrap());
    let p = start(
        Proxy::new(policy(&[&format!("127.0.0.1:{echo}")], &[]))
            .audit(log)
            .config(fast()),
    );
    let (_, r) = ask(p, &connect_req(&format!("127.0.0.1:{echo}")));
    check_echo_and_half_close(r);
    let (_, r) = ask(p, &connect_req("evil.example:443"));
    body(r);
    let (_, r) = ask(p, b"NOT A REQUEST\r\n\r\n");
    body(r);
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let t = Instant::now();
    while lines().len() < 3 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let v = lines();
    assert_eq!(v.len(), 3, "{v:?}");
    let find = |d: &str| v.iter().find(|l| l["decision"] == d).unwrap().clone();
    let a = find("allowed");
    assert_eq!(a["host"], "127.0.0.1");
    assert_eq!(a["port"], echo);
    assert_eq!(a["rule"], format!("127.0.0.1:{echo}"));
    assert_eq!(a["protocol"], "connect");
    assert_eq!(a["bytes_up"], 5);
    assert_eq!(a["bytes_down"], 8, "hello + bye");
    assert!(a["duration_ms"].is_u64());
    let r = find("refused");
    assert_eq!(r["host"], "evil.example");
    assert_eq!(r["port"], 443);
    assert_eq!(r["rule"], "not in network.allow");
    assert_eq!(r["bytes_up"], 0);
    let f = find("failed");
    assert!(f["error"].as_str().unwrap().contains("HTTP/1.1"), "{f}");
}

#[test]
fn a_refusal_reaches_a_client_still_sending_its_body() {
    let p = start(Proxy::new(policy(&["*.example.test"], &[])).config(fast()));
    let mut s = connect(p);
    let body = vec![b'x'; 200_000];
    s.write_all(
        format!(
            "POST http://evil.example/upload HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    // The proxy answers after the head; the body is still arriving. Written from a
    // thread, as a client would while it also reads.
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&body);
    });
    let mut r = BufReader::new(s);
    let head = read_head_lines(&mut r);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("csbox: blocked connection to evil.example:80"),
        "{line}"
    );
    writer.join().unwrap();
}

#[test]
fn connect_to_ipv6_loopback_named_exactly() {
    let Ok(l) = TcpListener::bind("[::1]:0") else {
        return; // no IPv6 here
    };
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut c, _)) = l.accept() {
            let _ = c.write_all(b"v6");
        }
    });
    let p = start(Proxy::new(policy(&[&format!("[::1]:{port}")], &[])).config(fast()));
    let (head, r) = ask(p, &connect_req(&format!("[::1]:{port}")));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body(r), "v6");
}

/// The body of `a_vanishing_client_does_not_raise_sigpipe`, run in a child process so it
/// can restore SIGPIPE's default action (death) without touching other tests.
#[test]
#[ignore]
fn sigpipe_child() {
    if std::env::var_os("CSBOX_NET_SIGPIPE_CHILD").is_none() {
        return;
    }
    // SAFETY: the child runs this test alone.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // A server that streams until the peer is gone.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let chunk = vec![0u8; 65536];
                while c.write_all(&chunk).is_ok() {}
            });
        }
    });
    let p = start(Proxy::new(policy(&[&format!("127.0.0.1:{port}")], &[])).config(fast()));
    for _ in 0..20 {
        let (head, mut r) = ask(p, &connect_req(&format!("127.0.0.1:{port}")));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut buf = [0u8; 1000];
        r.read_exact(&mut buf).unwrap();
        // A FIN first (the proxy's socket goes to CLOSE_WAIT), then close with unread
        // data: the reset that follows makes the proxy's next splice into the socket fail
        // with EPIPE, which is when the kernel raises SIGPIPE (tcp_reset in CLOSE_WAIT).
        r.get_mut().shutdown(Shutdown::Write).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        drop(r);
    }
    std::thread::sleep(Duration::from_millis(300));
    println!("SIGPIPE-CHILD-SURVIVED");
}

#[test]
fn a_vanishing_client_does_not_raise_sigpipe() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "net::proxy::tests::socks_upstream_limits::sigpipe_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CSBOX_NET_SIGPIPE_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("SIGPIPE-CHILD-SURVIVED"),
        "{:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
