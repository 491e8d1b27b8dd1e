//! Network policy: every sandbox has its own network namespace, and its only way out is
//! csbox's proxy. Every server these tests talk to listens on the host's loopback and is
//! started here (tests/common/net.rs); a Claude Code run goes through a loopback upstream
//! that refuses everything, so nothing leaves the machine. As root and as the
//! unprivileged user.

mod common;

use std::time::{Duration, Instant};

use common::net::{http_ok_server, upstream_proxy, Upstream};
use common::*;

/// A client inside: `direct HOST:PORT` connects without the proxy; `connect HOST:PORT`
/// asks the proxy for a tunnel and sends a GET through it; `get URL` is a plain-HTTP
/// request through HTTP_PROXY. Prints what came back, one line.
const CLIENT: &str = r#"
import os, socket, sys, urllib.request
what, arg = sys.argv[1], sys.argv[2]
def hostport(a):
    h, p = a.rsplit(":", 1)
    return h, int(p)
try:
    if what == "direct":
        socket.create_connection(hostport(arg), timeout=3).close()
        print("direct connected")
    elif what == "connect":
        port = int(os.environ["HTTPS_PROXY"].rsplit(":", 1)[1])
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (arg, arg)).encode())
        head = s.recv(65536).decode(errors="replace")
        first = head.split("\r\n")[0]
        if " 200 " in first + " ":
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            body = b""
            while True:
                b = s.recv(65536)
                if not b: break
                body += b
            print("tunnel", first.split()[1], body.decode(errors="replace").split("\r\n\r\n")[-1])
        else:
            print("refused", first.split()[1], head.split("\r\n\r\n", 1)[-1].strip())
    else:
        # Through the proxy even for 127.0.0.1 (which NO_PROXY sends direct).
        os.environ["no_proxy"] = os.environ["NO_PROXY"] = ""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": os.environ["HTTP_PROXY"]}))
        try:
            r = opener.open(arg, timeout=10)
            print("get", r.status, r.read().decode())
        except urllib.error.HTTPError as e:
            print("get", e.code, e.read().decode().strip())
except Exception as e:
    print("error", type(e).__name__, e)
"#;

/// `csbox run ARGS -- python3 -c CLIENT WHAT ARG` in a project: the client's line.
fn client(env: &TestEnv, args: &[&str], what: &str, arg: &str) -> String {
    let proj = env.home.join("proj");
    std::fs::create_dir_all(&proj).unwrap();
    env.chown_all(&proj);
    let mut all: Vec<&str> = vec!["run"];
    all.extend(args);
    all.extend(["--", "python3", "-c", CLIENT, what, arg]);
    let out = env.csbox(&all).current_dir(&proj).output().unwrap();
    eprintln!(
        "[{}] {all:?}: {}{}",
        env.user.label(),
        stdout(&out),
        stderr(&out)
    );
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_string()
}

fn net_log(env: &TestEnv) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(latest_session(env).join("net.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_hosts_loopback_is_unreachable_directly_and_through_the_proxy_only_where_allowed() {
    let (a, b) = (http_ok_server(), http_ok_server());
    for user in users() {
        let env = TestEnv::new(user);
        let allow = format!("127.0.0.1:{a}");
        // Shown to be reachable when the sandbox shares the host's network.
        assert_eq!(
            client(&env, &["--net", "host"], "direct", &allow),
            "direct connected"
        );
        let line = client(&env, &["--allow-host", &allow], "direct", &allow);
        assert!(
            line.starts_with("error ConnectionRefusedError"),
            "no route to the host's loopback: {line}"
        );
        assert_eq!(
            client(&env, &["--allow-host", &allow], "connect", &allow),
            "tunnel 200 ok"
        );
        let log = net_log(&env);
        assert_eq!(log.len(), 1, "{log:?}");
        assert_eq!(
            (
                log[0]["host"].as_str(),
                log[0]["port"].as_u64(),
                log[0]["decision"].as_str()
            ),
            (Some("127.0.0.1"), Some(a as u64), Some("allowed"))
        );
        assert!(log[0]["bytes_down"].as_u64().unwrap() > 0);
        // The other server is not allowed: 403, naming the rule list and the profile.
        let other = format!("127.0.0.1:{b}");
        let line = client(&env, &["--allow-host", &allow], "connect", &other);
        assert!(line.starts_with("refused 403"), "{line}");
        assert!(
            line.contains("network.allow") && line.contains("\"default\"") && line.contains(&other),
            "{line}"
        );
        let log = net_log(&env);
        assert_eq!(log.len(), 1);
        assert_eq!(
            (log[0]["decision"].as_str(), log[0]["port"].as_u64()),
            (Some("refused"), Some(b as u64))
        );
        // Plain HTTP through HTTP_PROXY, allowed and refused.
        assert_eq!(
            client(
                &env,
                &["--allow-host", &allow],
                "get",
                &format!("http://{allow}/x")
            ),
            "get 200 ok"
        );
        assert!(client(&env, &[], "get", &format!("http://{allow}/x")).starts_with("get 403"));
    }
}

#[test]
fn deny_beats_allow_and_wildcards_never_reach_localhost() {
    let a = http_ok_server();
    let env = TestEnv::new(*users().last().unwrap());
    let target = format!("localhost:{a}");
    assert_eq!(
        client(&env, &["--allow-host", &target], "connect", &target),
        "tunnel 200 ok",
        "named exactly"
    );
    let line = client(
        &env,
        &["--allow-host", &target, "--deny-host", "localhost"],
        "connect",
        &target,
    );
    assert!(line.starts_with("refused 403"), "deny wins: {line}");
    let line = client(
        &env,
        &["--allow-host", "*.localhost"],
        "connect",
        &format!("x.localhost:{a}"),
    );
    assert!(
        line.starts_with("refused 403"),
        "a wildcard never reaches localhost: {line}"
    );
    let line = client(&env, &["--allow-host", "*.localhost"], "connect", &target);
    assert!(
        line.starts_with("refused 403"),
        "*. is for subdomains only: {line}"
    );
    // A bad rule is a usage error.
    let out = env.run(&["run", "--allow-host", "exa mple.com", "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// Listen on the abstract socket `@name` in the current network namespace.
const ABSTRACT_LISTEN: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind("\0" + sys.argv[1]); s.listen(4)
print("listening", flush=True)
time.sleep(30)
"#;
const ABSTRACT_CONNECT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect("\0" + sys.argv[1]); print("connected")
except OSError as e:
    print("refused", e)
"#;

#[test]
fn abstract_sockets_of_the_host_and_of_other_sessions_are_unreachable() {
    let env = TestEnv::new(*users().last().unwrap());
    let name = format!("csbox-test-abstract-{}", std::process::id());
    let connect = |profile: &str, n: &str| {
        let out = env
            .csbox(&[
                "run",
                "--profile",
                profile,
                "--",
                "python3",
                "-c",
                ABSTRACT_CONNECT,
                n,
            ])
            .output()
            .unwrap();
        stdout(&out).trim().to_string()
    };
    // On the host.
    let mut host = env
        .command("python3")
        .args(["-c", ABSTRACT_LISTEN, &name])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_marker(&mut host, "listening");
    assert_eq!(
        connect("compat", &name),
        "connected",
        "reachable without a sandbox"
    );
    assert!(
        connect("default", &name).starts_with("refused"),
        "the host's abstract socket"
    );
    let _ = host.kill();
    // In another session.
    let other = format!("{name}-session");
    let mut sess = env
        .csbox(&["run", "--", "python3", "-c", ABSTRACT_LISTEN, &other])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_marker(&mut sess, "listening");
    assert!(
        connect("default", &other).starts_with("refused"),
        "another session's abstract socket"
    );
    let _ = sess.kill();
}

#[test]
fn an_upstream_proxy_is_chained_and_its_credentials_stay_outside() {
    let target = http_ok_server();
    let (up, log) = upstream_proxy(Upstream::TunnelTo(target));
    for user in users() {
        let env = TestEnv::new(user);
        let proj = env.home.join("proj");
        std::fs::create_dir_all(&proj).unwrap();
        env.chown_all(env.dir.path());
        let secret = format!("s3cret{}", std::process::id());
        let script = format!(
            "python3 -c '{}' connect allowed.example:80; env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'",
            CLIENT.replace('\'', r#"'\''"#)
        );
        let out = env
            .csbox(&[
                "run",
                "--allow-host",
                "allowed.example",
                "--",
                "sh",
                "-c",
                &script,
            ])
            .current_dir(&proj)
            .env(
                "HTTPS_PROXY",
                format!("http://corp:{secret}@127.0.0.1:{up}"),
            )
            .output()
            .unwrap();
        let o = stdout(&out);
        eprintln!("{o}{}", stderr(&out));
        assert!(o.contains("tunnel 200 ok"), "{o}");
        assert!(
            !o.contains(&secret),
            "the upstream's password is not visible inside"
        );
        let got = log.lock().unwrap().clone();
        assert!(
            got.iter()
                .any(|l| l.starts_with("CONNECT allowed.example:80 ")
                    && l.contains("Proxy-Authorization: Basic")),
            "went through the upstream with its credentials: {got:?}"
        );
    }
}

#[test]
fn claude_code_under_strict_reaches_its_api_through_the_proxy() {
    let Some(claude) =
        csbox::paths::find_on_path("claude".as_ref(), std::env::var_os("PATH").as_deref())
    else {
        return cannot_run("claude is not installed (.ci/run installs it)");
    };
    let (up, log) = upstream_proxy(Upstream::Refuse);
    let env = TestEnv::new(*users().last().unwrap());
    let proj = env.home.join("proj");
    std::fs::create_dir_all(&proj).unwrap();
    env.chown_all(env.dir.path());
    let c = env
        .csbox(&[
            "run",
            "--profile",
            "strict",
            "--",
            claude.to_str().unwrap(),
            "-p",
            "hi",
        ])
        .current_dir(&proj)
        .env("ANTHROPIC_API_KEY", "sk-ant-api03-csbox-test")
        .env("HTTPS_PROXY", format!("http://127.0.0.1:{up}"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60)
        && !log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("api.anthropic.com:443"))
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: kill(2) of our own child; csbox forwards it.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let out = c.wait_with_output().unwrap();
    eprintln!("{}{}", stdout(&out), stderr(&out));
    let got = log.lock().unwrap().clone();
    assert!(
        got.iter()
            .any(|l| l.starts_with("CONNECT api.anthropic.com:443")),
        "claude's first API request reached the proxy: {got:?}"
    );
    let hosts: Vec<String> = net_log(&env)
        .iter()
        .filter_map(|l| l["host"].as_str().map(String::from))
        .collect();
    assert!(
        hosts.iter().any(|h| h == "api.anthropic.com"),
        "logged: {hosts:?}"
    );
}
