//! `csbox update` through the real binary, against a real HTTP server on 127.0.0.1 that
//! serves recorded npm documents (tests/fixtures/npm), with stub `claude` and `npm`; over
//! TLS with a test CA made here, and through a CONNECT proxy started here.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use csbox::paths::Paths;
use csbox::update::background::{maybe_spawn_with, BackgroundConfig};

const OLD: &str = "2.1.197";
/// What the recorded dist-tags say `latest` is.
const LATEST: &str = "2.1.330";
const TAGS_PATH: &str = "/-/package/@anthropic-ai%2fclaude-code/dist-tags";
const DOC_PATH: &str = "/@anthropic-ai%2fclaude-code";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/npm")
            .join(name),
    )
    .unwrap()
}

/// One answer of the test registry.
#[derive(Clone)]
enum Reply {
    Ok(&'static str, Vec<u8>),
    Status(u16, &'static str),
    /// A 200 whose body ends when the connection closes: no Content-Length to go by.
    Unsized(Vec<u8>),
    /// Accept the connection and never answer.
    Hang,
    /// A 200 whose body comes one byte per interval: each read succeeds, the whole never
    /// arrives in time.
    Drip(Vec<u8>, Duration),
}

type Routes = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

/// A tiny HTTP/1.1 server on 127.0.0.1: one thread per connection, one request each.
struct Registry {
    url: String,
}

impl Registry {
    fn start(routes: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let routes: Routes = Arc::new(routes);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let routes = routes.clone();
                std::thread::spawn(move || serve(conn, &routes));
            }
        });
        Registry { url }
    }

    /// The same over HTTPS, with a certificate for 127.0.0.1 that `ca` signed.
    fn start_tls(ca: &TestCa, routes: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let routes: Routes = Arc::new(routes);
        let config = ca.server_config();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (routes, config) = (routes.clone(), config.clone());
                std::thread::spawn(move || {
                    let tls = rustls::ServerConnection::new(config).unwrap();
                    let mut stream = rustls::StreamOwned::new(tls, conn);
                    serve(&mut stream, &routes);
                    stream.conn.send_close_notify();
                    let _ = stream.flush();
                });
            }
        });
        Registry { url }
    }

    /// The recorded registry over HTTPS.
    fn recorded_tls(ca: &TestCa) -> Self {
        Self::start_tls(ca, |path| match path {
            TAGS_PATH => Reply::Ok("application/json", fixture("dist-tags.json")),
            _ => Reply::Status(404, "{\"error\":\"Not found\"}"),
        })
    }

    /// The registry as npmjs.org answered when the fixtures were recorded.
    fn recorded() -> Self {
        Self::start(|path| match path {
            TAGS_PATH => Reply::Ok("application/json", fixture("dist-tags.json")),
            DOC_PATH => Reply::Ok("application/json", fixture("claude-code.json")),
            _ => Reply::Status(404, "{\"error\":\"Not found\"}"),
        })
    }

    /// Every request gets the same answer.
    fn always(reply: Reply) -> Self {
        Self::start(move |_| reply.clone())
    }
}

fn serve(mut conn: impl Read + Write, routes: &Routes) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.split_whitespace().nth(1).unwrap_or("/");
    // Servers must accept the absolute form (RFC 9112 3.2.2); ureq 2 sends it whenever a
    // proxy is set, inside a CONNECT tunnel too.
    let path = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]).to_string(),
        None => target.to_string(),
    };
    let (status, ctype, body) = match routes(&path) {
        Reply::Ok(ctype, body) => (200, ctype, body),
        Reply::Unsized(body) => {
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
            );
            let _ = conn.write_all(&body);
            return;
        }
        Reply::Status(code, body) => (code, "application/json", body.as_bytes().to_vec()),
        Reply::Hang => {
            std::thread::sleep(Duration::from_secs(60));
            return;
        }
        Reply::Drip(body, every) => {
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            for b in body {
                if conn.write_all(&[b]).and_then(|_| conn.flush()).is_err() {
                    return;
                }
                std::thread::sleep(every);
            }
            return;
        }
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(&body);
}

/// A CA made for one test, and a server certificate for 127.0.0.1 that it signed. Not in
/// any trust store: csbox trusts it only when told to.
struct TestCa {
    pem: String,
    leaf: rustls::pki_types::CertificateDer<'static>,
    leaf_key: Vec<u8>,
}

impl TestCa {
    fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.distinguished_name
            .push(DnType::CommonName, "csbox test interception CA");
        let ca = ca.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        TestCa {
            pem: ca.pem(),
            leaf: leaf.der().clone(),
            leaf_key: leaf_key.serialize_der(),
        }
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = rustls::pki_types::PrivateKeyDer::try_from(self.leaf_key.clone()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![self.leaf.clone()], key)
        .unwrap();
        Arc::new(config)
    }

    /// The CA as a PEM file readable by whoever runs csbox.
    fn write_pem(&self, path: &Path) -> String {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &self.pem).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
        path.display().to_string()
    }
}

/// An HTTP proxy on 127.0.0.1 that only tunnels (CONNECT), as corporate proxies do for
/// https:// URLs, and records each request line it gets.
struct ConnectProxy {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || tunnel(conn, &log));
            }
        });
        ConnectProxy { url, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn tunnel(mut client: TcpStream, log: &Mutex<Vec<String>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let line = head.lines().next().unwrap_or("").to_string();
    log.lock().unwrap().push(line.clone());
    let target = match line.split_whitespace().collect::<Vec<_>>()[..] {
        ["CONNECT", target, _] => target.to_string(),
        _ => {
            let _ = client.write_all(b"HTTP/1.1 405 Only CONNECT\r\nContent-Length: 0\r\n\r\n");
            return;
        }
    };
    let Ok(mut upstream) = TcpStream::connect(&target) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
    let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut upstream, &mut client);
    let _ = client.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}

/// A fake home with Claude Code "installed" with npm under `<dir>/npm-prefix` (the real
/// layout: `bin/claude` → `lib/node_modules/@anthropic-ai/claude-code/bin/claude.exe`) and
/// a stub `npm` on PATH that records its arguments and "installs" by changing the version
/// the stub claude prints.
struct Updater {
    env: TestEnv,
    registry: Registry,
    state: PathBuf,
    bin_dirs: Vec<PathBuf>,
}

fn script(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

impl Updater {
    fn npm_global(installed: &str, registry: Registry) -> Self {
        Self::npm_global_as(As::me(), installed, registry)
    }

    /// The home belongs to `user`; the npm prefix, the stubs and their state to whoever
    /// runs the test (root, when `user` is not: a system-wide npm).
    fn npm_global_as(user: As, installed: &str, registry: Registry) -> Self {
        let env = TestEnv::new(user);
        let dir = env.dir.path().to_path_buf();
        let state = dir.join("state");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join("installed-version"), installed).unwrap();
        let s = sh_quote(&state);
        let pkg = dir.join("npm-prefix/lib/node_modules/@anthropic-ai/claude-code");
        script(
            &pkg.join("bin/claude.exe"),
            &format!("[ \"$1\" = --version ] || exit 2\necho \"$(cat {s}/installed-version) (Claude Code)\"\n"),
        );
        std::fs::create_dir_all(dir.join("npm-prefix/bin")).unwrap();
        std::os::unix::fs::symlink(
            "../lib/node_modules/@anthropic-ai/claude-code/bin/claude.exe",
            dir.join("npm-prefix/bin/claude"),
        )
        .unwrap();
        script(
            &dir.join("stubs/npm"),
            &format!(
                "echo \"$*\" >> {s}/npm-args\n\
                 [ \"$1 $2\" = \"install -g\" ] || exit 0\n\
                 sleep \"$(cat {s}/npm-sleep 2>/dev/null || echo 0)\"\n\
                 [ -e {s}/npm-breaks ] || echo \"${{3##*@}}\" > {s}/installed-version\n\
                 echo 'added 1 package in 1s'\n"
            ),
        );
        Updater {
            bin_dirs: vec![dir.join("npm-prefix/bin"), dir.join("stubs")],
            env,
            registry,
            state,
        }
    }

    fn path_var(&self) -> String {
        let mut dirs: Vec<String> = self
            .bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        dirs.push("/usr/bin:/bin".into());
        dirs.join(":")
    }

    fn csbox(&self, args: &[&str]) -> Command {
        let mut c = self.env.csbox(args);
        c.env("PATH", self.path_var())
            .env("CSBOX_REGISTRY", &self.registry.url);
        c
    }

    fn update(&self, args: &[&str]) -> Output {
        self.update_with(&[], args)
    }

    /// `csbox update ARGS` with these variables added to the test environment.
    fn update_with(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut all = vec!["update"];
        all.extend_from_slice(args);
        let out = self
            .csbox(&all)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        eprintln!(
            "csbox {all:?} -> {:?}\n--- stdout\n{}--- stderr\n{}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        out
    }

    fn npm_args(&self) -> Option<String> {
        std::fs::read_to_string(self.state.join("npm-args")).ok()
    }

    fn installed(&self) -> String {
        std::fs::read_to_string(self.state.join("installed-version"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.env.claude_root().join("update.log")).unwrap_or_default()
    }

    /// The JSON attempt lines of update.log (installer output lies between them).
    fn attempts(&self) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter(|l| l.starts_with("{\"ts\""))
            .map(|l| serde_json::from_str(l).expect("an attempt line is JSON"))
            .collect()
    }

    fn last_attempt(&self) -> serde_json::Value {
        self.attempts()
            .pop()
            .expect("update.log has an attempt line")
    }

    fn paths(&self) -> Paths {
        Paths::resolve(&csbox::paths::EnvInput {
            home: Some(self.env.home.clone().into()),
            cwd: self.env.home.clone(),
            ..Default::default()
        })
        .unwrap()
    }

    fn wait_for_attempts(&self, n: usize, within: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            let a = self.attempts();
            if a.len() >= n || Instant::now() > deadline {
                return a;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn one_line(s: &str) -> &str {
    let t = s.trim_end();
    assert_eq!(t.lines().count(), 1, "expected exactly one line, got {s:?}");
    t
}

#[test]
fn update_reports_up_to_date_when_the_installed_version_is_latest() {
    let u = Updater::npm_global(LATEST, Registry::recorded());
    let out = u.update(&["--check"]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out).trim(),
        format!("Claude Code {LATEST} is up to date (latest: {LATEST})")
    );
    let out = u.update(&["--yes"]);
    assert!(out.status.success());
    assert_eq!(u.npm_args(), None, "npm must not run when up to date");
    let a = u.attempts();
    assert_eq!(a.len(), 2);
    for line in a {
        assert_eq!(line["outcome"], "up-to-date");
        assert_eq!(line["from"], LATEST);
        assert_eq!(line["to"], LATEST);
        assert_eq!(line["method"], "npm-global");
    }
}

#[test]
fn check_json_reports_a_newer_version_and_installs_nothing() {
    let u = Updater::npm_global(OLD, Registry::recorded());
    let out = u.update(&["--check", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(10),
        "--check: an update is available"
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"installed": OLD, "latest": LATEST, "update_available": true, "method": "npm-global"})
    );
    assert_eq!(u.npm_args(), None);
    assert_eq!(u.last_attempt()["outcome"], "available");
}

#[test]
fn update_installs_the_exact_version_with_npm_when_no_session_runs() {
    let u = Updater::npm_global(OLD, Registry::recorded());
    // No terminal and no --yes: installs (that is how the background check runs).
    let out = u.update(&[]);
    assert!(out.status.success());
    assert_eq!(
        u.npm_args().as_deref(),
        Some(format!("install -g @anthropic-ai/claude-code@{LATEST}\n").as_str())
    );
    assert_eq!(u.installed(), LATEST);
    assert_eq!(
        stdout(&out).trim(),
        format!("Installed Claude Code {LATEST} (was {OLD}).")
    );
    let a = u.last_attempt();
    assert_eq!(
        (a["outcome"].as_str(), a["from"].as_str(), a["to"].as_str()),
        (Some("installed"), Some(OLD), Some(LATEST))
    );
    // Without a terminal the installer's output goes to the log, before the attempt line.
    let log = u.log();
    let npm_out = log.find("added 1 package").expect("npm output in the log");
    assert!(npm_out < log.rfind("{\"ts\"").unwrap(), "{log}");
}

#[test]
fn update_fails_when_the_new_version_does_not_show_after_installing() {
    let u = Updater::npm_global(OLD, Registry::recorded());
    std::fs::write(u.state.join("npm-breaks"), "").unwrap();
    let out = u.update(&["--yes"]);
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    let last = err.trim_end().lines().last().unwrap_or("");
    assert!(
        last.contains(&format!("now reports {OLD}, not {LATEST}")),
        "{err}"
    );
    let a = u.last_attempt();
    assert_eq!(a["outcome"], "failed");
    assert!(a["reason"].as_str().unwrap().contains("now reports"));
}

#[test]
fn native_installs_are_updated_with_claude_install() {
    let env = TestEnv::new(As::me());
    let share = env.home.join(".local/share/claude/versions");
    let bin = env.home.join(".local/bin");
    let version_script = |v: &str| {
        format!(
            "if [ \"$1\" = install ]; then\n\
               printf '%s\\n' \"$*\" >> {share}/../install-args\n\
               cp \"$0\" {share}/$2 && sed -i \"s/^V=.*/V=$2/\" {share}/$2\n\
               ln -sfn {share}/$2 {bin}/claude\n\
               exit 0\n\
             fi\n\
             V={v}\n\
             echo \"$V (Claude Code)\"\n",
            share = sh_quote(&share),
            bin = sh_quote(&bin)
        )
    };
    script(&share.join(OLD), &version_script(OLD));
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(share.join(OLD), bin.join("claude")).unwrap();
    let u = Updater {
        bin_dirs: vec![bin.clone()],
        env,
        registry: Registry::recorded(),
        state: PathBuf::new(),
    };
    let out = u.update(&["--check", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["method"], "native");
    let out = u.update(&["--yes"]);
    assert!(out.status.success());
    let args = std::fs::read_to_string(share.join("../install-args")).unwrap();
    assert_eq!(args, format!("install {LATEST}\n"));
    assert_eq!(u.last_attempt()["outcome"], "installed");
}

/// Holds a session's shared update lock through the library call `csbox run` uses, in a
/// separate process, until killed.
fn session_lock_holder(u: &Updater, test_name: &str) -> std::process::Child {
    let root = u.env.claude_root();
    let mut child = self_exec(test_name, &[("CSBOX_TEST_ROOT", root.to_str().unwrap())])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_marker(&mut child, "HELD");
    child
}

fn hold_session_lock_as_child() {
    let home = std::env::var("CSBOX_TEST_ROOT").unwrap();
    let paths = Paths::resolve(&csbox::paths::EnvInput {
        home: Some("/nonexistent".into()),
        claude_root: Some(home.into()),
        cwd: "/".into(),
        ..Default::default()
    })
    .unwrap();
    let fd = csbox::update::hold_for_session(&paths).unwrap();
    assert!(fd.is_some());
    println!("HELD");
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn update_is_skipped_while_a_session_is_active() {
    if is_child() {
        return hold_session_lock_as_child();
    }
    let u = Updater::npm_global(OLD, Registry::recorded());
    let mut session = session_lock_holder(&u, "update_is_skipped_while_a_session_is_active");
    let out = u.update(&["--yes"]);
    assert!(out.status.success(), "skipping is not a failure");
    assert!(
        stdout(&out).contains("sessions are running"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        u.npm_args(),
        None,
        "npm must not run while a session is active"
    );
    assert_eq!(u.installed(), OLD);
    let a = u.last_attempt();
    assert_eq!(a["outcome"], "skipped-active");
    assert_eq!(a["to"], LATEST);

    session.kill().unwrap();
    session.wait().unwrap();
    let out = u.update(&["--yes"]);
    assert!(out.status.success());
    assert_eq!(u.installed(), LATEST);
    assert_eq!(u.last_attempt()["outcome"], "installed");
}

/// `csbox update --yes` with an npm that takes 2 s, returned once npm has started: from
/// then until it ends the installer holds the update lock.
fn start_slow_install(u: &Updater) -> std::process::Child {
    std::fs::write(u.state.join("npm-sleep"), "2").unwrap();
    let mut installer = u
        .csbox(&["update", "--yes"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while u.npm_args().is_none() {
        if Instant::now() > deadline {
            let _ = installer.kill();
            let _ = installer.wait();
            panic!("npm never started: {}", u.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    installer
}

#[test]
fn a_session_starting_during_an_install_waits_for_it_then_starts() {
    let u = Updater::npm_global(OLD, Registry::recorded());
    let mut installer = start_slow_install(&u);
    let t0 = Instant::now();
    let held = csbox::update::hold_for_session(&u.paths()).unwrap();
    let waited = t0.elapsed();
    assert!(
        held.is_some(),
        "the session gets its lock once the install ends"
    );
    assert!(
        waited >= Duration::from_millis(1000),
        "waited only {waited:?}"
    );
    assert!(waited < Duration::from_secs(30), "waited {waited:?}");
    assert_eq!(
        u.installed(),
        LATEST,
        "the session starts after the install, not during it"
    );
    assert!(installer.wait().unwrap().success());
    assert_eq!(u.last_attempt()["outcome"], "installed");
}

#[test]
fn a_session_stops_waiting_for_a_stuck_install_after_the_bound() {
    let u = Updater::npm_global(OLD, Registry::recorded());
    let paths = u.paths();
    // flock conflicts between open file descriptions, even in one process.
    let _installer = csbox::session::lock::lock_path(&paths.update_lock(), true, true)
        .unwrap()
        .expect("nothing else holds the lock");
    let t0 = Instant::now();
    let held = csbox::update::hold_for_session_within(&paths, Duration::from_millis(400)).unwrap();
    assert!(held.is_none(), "starts without the lock after the bound");
    assert!(t0.elapsed() >= Duration::from_millis(400));
}

#[test]
fn update_refuses_to_run_inside_a_session() {
    let u = Updater::npm_global(OLD, Registry::recorded());
    let out = u
        .csbox(&["update", "--yes"])
        .env("CSBOX_SESSION_ID", "0193")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line(&stderr(&out)).contains("must run outside sessions"));
    assert_eq!(u.npm_args(), None);
}

/// A bad answer: exit non-zero, one line on stderr and one failed attempt in the log,
/// each naming the problem.
fn assert_fails_cleanly(u: &Updater, args: &[&str], phrase: &str) {
    let out = u.update(args);
    assert_eq!(out.status.code(), Some(125), "exit code");
    let err = stderr(&out);
    assert!(
        one_line(&err).contains(phrase),
        "stderr {err:?} lacks {phrase:?}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let a = u.last_attempt();
    assert_eq!(a["outcome"], "failed");
    assert!(a["reason"].as_str().unwrap().contains(phrase), "{a}");
    assert_eq!(u.npm_args(), None);
}

fn old_install_with_registry_answering(json: Vec<u8>) -> Updater {
    Updater::npm_global(OLD, Registry::always(Reply::Ok("application/json", json)))
}

#[test]
fn a_registry_answering_garbage_json_is_a_clean_failure() {
    let u = old_install_with_registry_answering(b"{\"latest\": \"2.1".to_vec());
    assert_fails_cleanly(&u, &["--check"], "not JSON");
}

#[test]
fn a_registry_answering_html_is_a_clean_failure() {
    let page = b"<!DOCTYPE html>\n<html><body>Please log in to the proxy</body></html>\n".to_vec();
    let u = Updater::npm_global(OLD, Registry::always(Reply::Ok("text/html", page)));
    assert_fails_cleanly(&u, &["--check"], "HTML, not JSON");
}

#[test]
fn a_registry_answering_404_is_a_clean_failure() {
    let u = Updater::npm_global(OLD, Registry::always(Reply::Status(404, "{}")));
    assert_fails_cleanly(&u, &["--check"], "404 Not Found");
}

#[test]
fn a_registry_answering_500_is_a_clean_failure_also_without_check() {
    let u = Updater::npm_global(OLD, Registry::always(Reply::Status(500, "oops")));
    assert_fails_cleanly(&u, &["--check"], "answered 500");
    assert_fails_cleanly(&u, &["--yes"], "answered 500");
}

#[test]
fn a_registry_answering_several_megabytes_is_a_clean_failure() {
    let mut body = b"{\"latest\":\"".to_vec();
    body.resize(8 << 20, b'9');
    let u = old_install_with_registry_answering(body.clone());
    assert_fails_cleanly(&u, &["--check"], "more than 64 KiB");
    // Without a Content-Length only the bytes read count.
    let u = Updater::npm_global(OLD, Registry::always(Reply::Unsized(body)));
    assert_fails_cleanly(&u, &["--check"], "more than 64 KiB");
}

#[test]
fn a_registry_that_hangs_times_out_within_five_seconds() {
    let u = Updater::npm_global(OLD, Registry::always(Reply::Hang));
    let t0 = Instant::now();
    assert_fails_cleanly(&u, &["--check"], "within 5 s");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(4500) && took < Duration::from_secs(8),
        "took {took:?}"
    );
}

#[test]
fn a_non_semver_dist_tag_is_a_clean_failure() {
    let u = old_install_with_registry_answering(b"{\"latest\":\"2.1.x-final!\"}".to_vec());
    assert_fails_cleanly(&u, &["--check"], "not a semver version");
}

#[test]
fn a_non_semver_installed_version_is_a_clean_failure() {
    let u = Updater::npm_global("two point one", Registry::recorded());
    assert_fails_cleanly(&u, &["--check"], "not a semver version");
}

#[test]
fn a_missing_stable_channel_names_the_tags_that_exist() {
    let u = Updater::npm_global(OLD, Registry::recorded());
    assert_fails_cleanly(
        &u,
        &["--check", "--channel", "stable"],
        "no \"stable\" dist-tag",
    );
}

#[test]
fn a_registry_without_the_dist_tags_endpoint_is_asked_for_the_package_document() {
    let u = Updater::npm_global(
        OLD,
        Registry::start(|path| match path {
            DOC_PATH => Reply::Ok("application/json", fixture("claude-code.json")),
            _ => Reply::Status(404, "{}"),
        }),
    );
    let out = u.update(&["--check", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(10),
        "--check: an update is available"
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["latest"], LATEST);
}

/// Child half of the background tests: what `csbox run` does, in a process of its own
/// with the test's environment, using the real csbox binary as the executable.
fn spawn_background_check_as_child() {
    let paths = Paths::from_env().unwrap();
    let cfg = BackgroundConfig::from_env();
    let t0 = Instant::now();
    let started = maybe_spawn_with(&paths, &cfg, Some(Path::new(CSBOX)));
    println!("RESULT {started} {}", t0.elapsed().as_micros());
}

/// Run the child half with `u`'s environment; return (started, microseconds it took).
fn background_check(u: &Updater, test_name: &str, extra: &[(&str, &str)]) -> (bool, u128) {
    let path = u.path_var();
    let home = u.env.home.display().to_string();
    let mut env = vec![
        ("HOME", home.as_str()),
        ("PATH", path.as_str()),
        ("CSBOX_REGISTRY", u.registry.url.as_str()),
        ("CSBOX_UPDATE_INTERVAL", "3600"),
    ];
    env.extend_from_slice(extra);
    let mut cmd = self_exec(test_name, &[]);
    for k in [
        "CSBOX_NO_UPDATE",
        "CSBOX_SESSION_ID",
        "CLAUDE_ROOT",
        "CLAUDE_BIN",
        "XDG_DATA_HOME",
    ] {
        cmd.env_remove(k);
    }
    // The detached check inherits this environment: keep an outer proxy off loopback.
    cmd.env("NO_PROXY", "127.0.0.1").envs(env);
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let rest = wait_for_marker(&mut child, "RESULT");
    assert!(child.wait().unwrap().success());
    let mut it = rest.split_whitespace();
    (
        it.next() == Some("true"),
        it.next().unwrap().parse().unwrap(),
    )
}

#[test]
fn the_background_check_fires_once_per_interval() {
    if is_child() {
        return spawn_background_check_as_child();
    }
    let name = "the_background_check_fires_once_per_interval";
    let u = Updater::npm_global(LATEST, Registry::recorded());
    assert!(
        !background_check(&u, name, &[("CSBOX_NO_UPDATE", "1")]).0,
        "CSBOX_NO_UPDATE=1 turns it off"
    );
    assert!(
        !background_check(&u, name, &[("CSBOX_SESSION_ID", "x")]).0,
        "never inside a session"
    );
    let (first, due_us) = background_check(&u, name, &[]);
    let (second, hot_us) = background_check(&u, name, &[]);
    assert!(first && !second, "first {first}, second {second}");
    let a = u.wait_for_attempts(1, Duration::from_secs(20));
    assert_eq!(a.len(), 1, "the check ran: {}", u.log());
    assert_eq!(a[0]["outcome"], "up-to-date");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(u.attempts().len(), 1, "fired twice within the interval");

    // An interval later it fires again.
    let stamp = u.env.claude_root().join("update.checked");
    let old = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&stamp)
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert!(background_check(&u, name, &[]).0);
    assert_eq!(u.wait_for_attempts(2, Duration::from_secs(20)).len(), 2);
    eprintln!("LATENCY background check: due (spawn) {due_us} us, not due (one stat) {hot_us} us");
}

#[test]
fn the_background_check_does_not_delay_the_caller() {
    if is_child() {
        return spawn_background_check_as_child();
    }
    // The check hangs on the registry for 5 s; the caller must not notice.
    let u = Updater::npm_global(OLD, Registry::always(Reply::Hang));
    let t0 = Instant::now();
    let (started, took_us) =
        background_check(&u, "the_background_check_does_not_delay_the_caller", &[]);
    let helper_total = t0.elapsed();
    assert!(started);
    assert!(took_us < 100_000, "maybe_spawn took {took_us} us");
    assert!(
        u.attempts().is_empty(),
        "the check cannot have finished yet"
    );
    // The detached check outlives its caller and logs the timeout by itself.
    let a = u.wait_for_attempts(1, Duration::from_secs(20));
    assert_eq!(a.len(), 1, "{}", u.log());
    assert_eq!(a[0]["outcome"], "failed");
    assert!(a[0]["reason"].as_str().unwrap().contains("within 5 s"));
    eprintln!("LATENCY background check with a hanging registry: {took_us} us in the caller ({helper_total:?} for the whole helper process)");
}

/// `csbox run` works on this machine (user namespaces allowed); else say why and skip
/// (under CI=true that fails).
fn sessions_work(u: &Updater) -> bool {
    let out = u.csbox(&["run", "--rm", "--", "true"]).output().unwrap();
    if !out.status.success() {
        cannot_run(&format!(
            "csbox run does not work here: {}",
            stderr(&out).trim()
        ));
        return false;
    }
    true
}

/// `csbox run -- ARGS` in the background, returned once the session is active.
fn start_session(u: &Updater, args: &[&str]) -> std::process::Child {
    let mut all = vec!["run", "--rm", "--"];
    all.extend_from_slice(args);
    let mut child = u.csbox(&all).stdout(Stdio::null()).spawn().unwrap();
    let active = || {
        let out = u.csbox(&["ls", "--json", "--active"]).output().ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(v.as_array()?.len())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while active() != Some(1) {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the session never became active");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn stop_session(mut child: std::process::Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    child.wait().unwrap();
}

#[test]
fn update_is_skipped_while_a_real_csbox_run_session_is_active() {
    let u = Updater::npm_global(OLD, Registry::recorded());
    if !sessions_work(&u) {
        return;
    }
    let session = start_session(&u, &["sleep", "30"]);
    let out = u.update(&["--yes"]);
    assert!(out.status.success());
    assert_eq!(u.last_attempt()["outcome"], "skipped-active");
    assert_eq!(u.npm_args(), None, "npm must not run under a live session");
    stop_session(session);
    let out = u.update(&["--yes"]);
    assert!(out.status.success());
    assert_eq!(u.last_attempt()["outcome"], "installed");
    assert_eq!(u.installed(), LATEST);
}

#[test]
fn a_csbox_run_started_during_an_install_waits_then_runs() {
    let u = Updater::npm_global(OLD, Registry::recorded());
    if !sessions_work(&u) {
        return;
    }
    let mut installer = start_slow_install(&u);
    let t0 = Instant::now();
    let version_file = u.state.join("installed-version");
    // Bound in: the stubs' state is not in the home, and under a checkout in /tmp it is
    // behind the session's private /tmp.
    let state = u.state.to_str().unwrap();
    let out = u
        .csbox(&[
            "run",
            "--rm",
            "--ro-bind",
            state,
            "--",
            "cat",
            version_file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let waited = t0.elapsed();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("waiting up to 60 s"),
        "{}",
        stderr(&out)
    );
    assert!(
        waited >= Duration::from_millis(1000),
        "waited only {waited:?}"
    );
    assert_eq!(
        stdout(&out).trim(),
        LATEST,
        "the session ran after the install"
    );
    assert!(installer.wait().unwrap().success());
    assert_eq!(u.last_attempt()["outcome"], "installed");
}

#[test]
fn the_end_of_a_csbox_run_session_starts_one_background_update() {
    let u = Updater::npm_global(OLD, Registry::recorded());
    if !sessions_work(&u) {
        return;
    }
    let run = |u: &Updater| {
        let t0 = Instant::now();
        let out = u
            .csbox(&["run", "--rm", "--", "true"])
            .env_remove("CSBOX_NO_UPDATE")
            .env("CSBOX_UPDATE_INTERVAL", "3600")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        t0.elapsed()
    };
    let first = run(&u);
    // The check outlives `run`, finds no session and installs. (A session started before
    // it takes the lock would make it skip: that is the point.)
    let a = u.wait_for_attempts(1, Duration::from_secs(20));
    assert_eq!(a.len(), 1, "{}", u.log());
    assert_eq!(a[0]["outcome"], "installed", "{}", u.log());
    assert_eq!(u.installed(), LATEST);
    let second = run(&u);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(u.attempts().len(), 1, "a second check within the interval");
    eprintln!("LATENCY csbox run -- true: {first:?} when the check is due, {second:?} when not");
}

#[test]
fn a_due_background_check_waits_for_the_last_session_instead_of_a_whole_interval() {
    if is_child() {
        return match std::env::var("CSBOX_TEST_ROLE").as_deref() {
            Ok("hold") => hold_session_lock_as_child(),
            _ => spawn_background_check_as_child(),
        };
    }
    let name = "a_due_background_check_waits_for_the_last_session_instead_of_a_whole_interval";
    let u = Updater::npm_global(LATEST, Registry::recorded());
    let root = u.env.claude_root();
    let mut session = self_exec(
        name,
        &[
            ("CSBOX_TEST_ROOT", root.to_str().unwrap()),
            ("CSBOX_TEST_ROLE", "hold"),
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    wait_for_marker(&mut session, "HELD");
    // Due, but another session runs: nothing starts and the interval stays unclaimed.
    assert!(
        !background_check(&u, name, &[]).0,
        "no check while a session runs"
    );
    assert!(!background_check(&u, name, &[]).0);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        u.attempts().len(),
        0,
        "no skipped-active noise in the log: {}",
        u.log()
    );
    session.kill().unwrap();
    session.wait().unwrap();
    // The last session has ended: the next one to end starts the check at once.
    assert!(background_check(&u, name, &[]).0);
    let a = u.wait_for_attempts(1, Duration::from_secs(20));
    assert_eq!(a[0]["outcome"], "up-to-date");
}

/// A sudoers drop-in that is removed again when the test ends, however it ends.
struct SudoersDropIn(PathBuf);

impl SudoersDropIn {
    fn install(line: &str) -> Self {
        // sudo ignores drop-ins whose name contains a dot.
        let path = PathBuf::from(format!(
            "/etc/sudoers.d/csbox-test-update-{}",
            std::process::id()
        ));
        let guard = SudoersDropIn(path.clone());
        std::fs::write(&path, format!("{line}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).unwrap();
        let check = Command::new("/usr/sbin/visudo")
            .arg("-cf")
            .arg(&guard.0)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "visudo rejects {line:?}: {}",
            stderr(&check)
        );
        guard
    }
}

impl Drop for SudoersDropIn {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A system-wide npm (its prefix belongs to root) and an unprivileged user: csbox installs
/// through `sudo -n` with exactly the command that the README's sudoers line allows. With
/// the real sudo and no such line, the update fails cleanly and says what to add; with the
/// README's line (its npm path adjusted, as the README says), the same update installs.
#[test]
fn a_root_owned_npm_prefix_installs_through_sudo_with_the_readme_sudoers_line() {
    if As::me().uid != 0 {
        cannot_run("writing a sudoers drop-in needs root");
        return;
    }
    if !Path::new("/usr/bin/sudo").exists() || !Path::new("/usr/sbin/visudo").exists() {
        cannot_run("sudo is not installed (.ci/run installs it: apt-get install sudo)");
        return;
    }
    let Some(user) = users().into_iter().find(|u| u.uid != 0) else {
        cannot_run("no unprivileged user to install as (.ci/run creates csbox-test)");
        return;
    };
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(user.uid))
        .unwrap()
        .unwrap()
        .name;
    let u = Updater::npm_global_as(user, OLD, Registry::recorded());
    let npm = u.bin_dirs[1].join("npm");

    let out = u.update(&["--yes"]);
    assert!(!out.status.success(), "installed without a sudoers line?");
    let err = stderr(&out);
    // sudo clears the environment: the registry the version came from rides along as an
    // argument, which the sudoers line's trailing `*` allows.
    let command = format!(
        "sudo -n {} install -g @anthropic-ai/claude-code@{LATEST} --registry={}",
        npm.display(),
        u.registry.url
    );
    assert!(err.contains(&command) && err.contains("sudoers"), "{err}");
    assert_eq!(u.npm_args(), None, "npm never ran");
    assert_eq!(u.installed(), OLD);
    assert_eq!(u.last_attempt()["outcome"], "failed");

    // The README's line, with `command -v npm` for /usr/bin/npm.
    // (sudoers escapes a space in a command's path with a backslash.)
    let _line = SudoersDropIn::install(&format!(
        "{name} ALL=(ALL) NOPASSWD: {} install -g @anthropic-ai/claude-code@*",
        npm.display().to_string().replace(' ', "\\ ")
    ));
    let out = u.update(&["--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        u.npm_args().as_deref(),
        Some(
            format!(
                "install -g @anthropic-ai/claude-code@{LATEST} --registry={}\n",
                u.registry.url
            )
            .as_str()
        )
    );
    assert_eq!(u.installed(), LATEST);
    assert_eq!(u.last_attempt()["outcome"], "installed");
}

/// The background check that `csbox run` starts at session end may run for minutes (here
/// the registry hangs for its 5 s timeout). It must not hold the fds the caller inherited:
/// a CI runner that reads a pipe until EOF would otherwise wait for the check too.
#[test]
fn the_background_check_holds_none_of_the_callers_fds() {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    let u = Updater::npm_global(OLD, Registry::always(Reply::Hang));
    if !sessions_work(&u) {
        return;
    }
    let mut fds = [0; 2];
    // SAFETY: pipe2 into a local array; both ends are owned below.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: the two fds pipe2 just made, each owned once.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let w_fd = w.as_raw_fd();
    let mut cmd = u.csbox(&["run", "--rm", "--", "true"]);
    cmd.env_remove("CSBOX_NO_UPDATE")
        .env("CSBOX_UPDATE_INTERVAL", "3600")
        .env("NO_PROXY", "127.0.0.1");
    // SAFETY: dup2 only, between fork and exec. dup2 clears CLOEXEC on fd 3: csbox
    // inherits the write end as a shell or a runner would hand it over.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(w_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let exited = Instant::now();
    assert!(out.status.success(), "{}", stderr(&out));
    drop(w);
    let mut reader = std::fs::File::from(r);
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    let eof_after = exited.elapsed();
    // The check did start, and hung on the registry after csbox had gone.
    let a = u.wait_for_attempts(1, Duration::from_secs(20));
    assert_eq!(a.len(), 1, "no background check ran: {}", u.log());
    assert!(
        a[0]["reason"].as_str().unwrap_or("").contains("within 5 s"),
        "{a:?}"
    );
    assert!(
        eof_after < Duration::from_secs(2),
        "the pipe csbox inherited stayed open {eof_after:?} after it exited"
    );
}

/// A home whose Claude Code is `installed`, asking an HTTPS registry that `ca` signed.
fn over_tls(installed: &str) -> (Updater, TestCa) {
    let ca = TestCa::new();
    let u = Updater::npm_global(installed, Registry::recorded_tls(&ca));
    (u, ca)
}

#[test]
fn an_https_registry_signed_by_an_unknown_ca_fails_naming_the_certificate_problem() {
    let (u, _ca) = over_tls(LATEST);
    // The test environment has no SSL_CERT_FILE: only the system store, without the CA.
    assert_fails_cleanly(&u, &["--check"], "not signed by a CA csbox trusts");
    let reason = u.last_attempt()["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("UnknownIssuer")
            && reason.contains("the system store")
            && reason.contains("NODE_EXTRA_CA_CERTS"),
        "{reason}"
    );
}

#[test]
fn ssl_cert_file_makes_an_intercepting_ca_trusted() {
    let (u, ca) = over_tls(LATEST);
    let pem = ca.write_pem(&u.env.dir.path().join("ca/corp.pem"));
    let out = u.update_with(&[("SSL_CERT_FILE", &pem)], &["--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!("Claude Code {LATEST} is up to date (latest: {LATEST})")
    );
}

#[test]
fn ssl_cert_dir_makes_an_intercepting_ca_trusted() {
    let (u, ca) = over_tls(LATEST);
    let dir = u.env.dir.path().join("ca-dir");
    ca.write_pem(&dir.join("corp.pem"));
    let out = u.update_with(&[("SSL_CERT_DIR", dir.to_str().unwrap())], &["--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn node_extra_ca_certs_adds_the_ca_to_the_system_store() {
    let (u, ca) = over_tls(OLD);
    let pem = ca.write_pem(&u.env.dir.path().join("ca/corp.pem"));
    let out = u.update_with(&[("NODE_EXTRA_CA_CERTS", &pem)], &["--check", "--json"]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["latest"], LATEST);
}

#[test]
fn npm_cafile_from_the_npmrc_or_the_environment_is_trusted() {
    let (u, ca) = over_tls(LATEST);
    let pem = ca.write_pem(&u.env.dir.path().join("ca/corp.pem"));
    let out = u.update_with(&[("npm_config_cafile", &pem)], &["--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // `~/` expands, as npm expands it in path settings.
    ca.write_pem(&u.env.home.join(".config/corp.pem"));
    std::fs::write(
        u.env.home.join(".npmrc"),
        "//registry.npmjs.org/:_authToken=npm_NOT_READ\ncafile=~/.config/corp.pem\n",
    )
    .unwrap();
    u.env.chown_all(&u.env.home);
    let out = u.update(&["--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // NPM_CONFIG_USERCONFIG names another npmrc, which has no cafile.
    let other = u.env.dir.path().join("other-npmrc");
    std::fs::write(&other, "fund=false\n").unwrap();
    let out = u.update_with(
        &[("NPM_CONFIG_USERCONFIG", other.to_str().unwrap())],
        &["--check"],
    );
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
}

#[test]
fn a_bad_ca_file_is_one_line_naming_the_variable_and_the_path() {
    let (u, _ca) = over_tls(LATEST);
    let missing = u.env.dir.path().join("nope.pem");
    let missing = missing.to_str().unwrap();
    let out = u.update_with(&[("NODE_EXTRA_CA_CERTS", missing)], &["--check"]);
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        one_line(&err).contains(&format!("NODE_EXTRA_CA_CERTS={missing}: No such file")),
        "{err}"
    );

    let junk = u.env.dir.path().join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = u.update_with(&[("SSL_CERT_FILE", junk.to_str().unwrap())], &["--check"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        one_line(&stderr(&out)).contains(&format!("SSL_CERT_FILE={}: ", junk.display())),
        "{}",
        stderr(&out)
    );

    // A FIFO is refused at once, not waited on.
    let fifo = u.env.dir.path().join("ca.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let t0 = Instant::now();
    let out = u.update_with(
        &[("npm_config_cafile", fifo.to_str().unwrap())],
        &["--check"],
    );
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(out.status.code(), Some(125));
    assert!(
        one_line(&stderr(&out)).contains(&format!(
            "npm_config_cafile={}: not a regular file",
            fifo.display()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn https_proxy_tunnels_the_check_with_connect_and_tls_end_to_end() {
    let (u, ca) = over_tls(OLD);
    let pem = ca.write_pem(&u.env.dir.path().join("ca/corp.pem"));
    let proxy = ConnectProxy::start();
    let out = u.update_with(
        &[("HTTPS_PROXY", &proxy.url), ("SSL_CERT_FILE", &pem)],
        &["--check"],
    );
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    let authority = u.registry.url.trim_start_matches("https://");
    assert_eq!(
        proxy.requests(),
        vec![format!("CONNECT {authority} HTTP/1.1")]
    );
    // NO_PROXY sends it direct.
    let out = u.update_with(
        &[
            ("HTTPS_PROXY", &proxy.url),
            ("NO_PROXY", "localhost,127.0.0.1"),
            ("SSL_CERT_FILE", &pem),
        ],
        &["--check"],
    );
    assert_eq!(out.status.code(), Some(10));
    assert_eq!(proxy.requests().len(), 1, "NO_PROXY was ignored");
}

#[test]
fn npm_https_proxy_config_is_used_when_the_environment_names_no_proxy() {
    let (u, ca) = over_tls(LATEST);
    let pem = ca.write_pem(&u.env.dir.path().join("ca/corp.pem"));
    let authority = u.registry.url.trim_start_matches("https://").to_string();
    let connect = format!("CONNECT {authority} HTTP/1.1");

    let npm_env = ConnectProxy::start();
    let out = u.update_with(
        &[
            ("npm_config_https_proxy", &npm_env.url),
            ("SSL_CERT_FILE", &pem),
        ],
        &["--check"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(npm_env.requests(), vec![connect.clone()]);

    // The npmrc's https-proxy, unless the environment says otherwise.
    let npmrc = ConnectProxy::start();
    std::fs::write(
        u.env.home.join(".npmrc"),
        format!("https-proxy = {}\n", npmrc.url),
    )
    .unwrap();
    u.env.chown_all(&u.env.home);
    let out = u.update_with(&[("SSL_CERT_FILE", &pem)], &["--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(npmrc.requests(), vec![connect.clone()]);
    let env_wins = ConnectProxy::start();
    let out = u.update_with(
        &[("HTTPS_PROXY", &env_wins.url), ("SSL_CERT_FILE", &pem)],
        &["--check"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env_wins.requests(), vec![connect]);
    assert_eq!(npmrc.requests().len(), 1, "HTTPS_PROXY wins over the npmrc");
}

#[test]
fn a_dripping_fallback_document_still_ends_the_check_within_one_deadline() {
    let body = fixture("claude-code.json");
    let u = Updater::npm_global(
        OLD,
        Registry::start(move |path| match path {
            // A slow 404 uses up most of the budget, then the fallback drips: with 5 s per
            // request this took 9 s.
            TAGS_PATH => {
                std::thread::sleep(Duration::from_secs(4));
                Reply::Status(404, "{}")
            }
            _ => Reply::Drip(body.clone(), Duration::from_millis(100)),
        }),
    );
    let t0 = Instant::now();
    assert_fails_cleanly(&u, &["--check"], "within 5 s");
    let took = t0.elapsed();
    eprintln!("LATENCY 404 then a dripping document: {took:?}");
    assert!(
        took >= Duration::from_millis(4500) && took < Duration::from_secs(7),
        "took {took:?}: one 5 s deadline for both requests, not 5 s each"
    );
}

#[test]
fn check_exit_codes_tell_up_to_date_available_and_failed_apart() {
    let u = Updater::npm_global(LATEST, Registry::recorded());
    assert_eq!(u.update(&["--check"]).status.code(), Some(0));
    let u = Updater::npm_global(OLD, Registry::recorded());
    assert_eq!(u.update(&["--check"]).status.code(), Some(10));
    assert_eq!(
        u.update(&["--check", "--channel", "stable"]).status.code(),
        Some(125)
    );
    // Installing is not a check: success is 0.
    assert_eq!(u.update(&["--yes"]).status.code(), Some(0));
}

#[test]
fn a_failed_check_with_json_prints_an_error_object_on_stdout() {
    let u = Updater::npm_global(OLD, Registry::always(Reply::Status(500, "oops")));
    let out = u.update(&["--check", "--json"]);
    assert_eq!(out.status.code(), Some(125));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["installed"], OLD);
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("answered 500"), "{v}");
    assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
    // The message stays on stderr too, the same one line.
    assert_eq!(one_line(&stderr(&out)), format!("csbox: {error}"));

    // Before the installed version is known, `installed` is null.
    let out = u
        .csbox(&["update", "--check", "--json"])
        .env("PATH", u.env.dir.path().join("empty"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["installed"], serde_json::Value::Null);
    assert!(
        v["error"].as_str().unwrap().contains("claude not found"),
        "{v}"
    );
}
