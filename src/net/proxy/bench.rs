//! Measurements, not checks: `#[ignore]`d, run by hand in release mode and read.
//!
//! ```text
//! cargo test --release --lib net::proxy::bench -- --ignored --nocapture --test-threads=1
//! ```
//!
//! - `throughput_through_connect_vs_direct`: 1 GiB to a loopback sink, directly and
//!   through a CONNECT tunnel, three rounds each; prints both rates and the ratio.
//! - `rss_with_100_idle_tunnels`: runs the proxy in a child process (this test binary
//!   again, see `rss_proxy_child`), opens 100 tunnels through it to an echo server here,
//!   and prints the child's VmRSS before and after.

use super::*;
use std::io::Read;
use std::io::{BufRead, BufReader};
use std::net::Shutdown;
use std::net::TcpListener;
use std::process::{Command, Stdio};

const GIB: u64 = 1 << 30;
const CHUNK: usize = 256 * 1024;

/// Reads each connection to EOF and sends back the byte count as 8 bytes.
fn sink() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = vec![0u8; CHUNK];
                let mut n = 0u64;
                while let Ok(k) = c.read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    n += k as u64;
                }
                let _ = c.write_all(&n.to_be_bytes());
            });
        }
    });
    port
}

fn push(mut s: TcpStream, total: u64) -> Duration {
    let buf = vec![0x5au8; CHUNK];
    let t = Instant::now();
    let mut left = total;
    while left > 0 {
        let k = (left as usize).min(CHUNK);
        s.write_all(&buf[..k]).unwrap();
        left -= k as u64;
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut n = [0u8; 8];
    s.read_exact(&mut n).unwrap();
    assert_eq!(u64::from_be_bytes(n), total);
    t.elapsed()
}

fn tunnel(proxy_port: u16, target: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", proxy_port)).unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes())
        .unwrap();
    let mut head = [0u8; 39];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head[..], b"HTTP/1.1 200 Connection established\r\n\r\n");
    s
}

fn serve_on_loopback(proxy: Proxy) -> u16 {
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

#[test]
#[ignore]
fn throughput_through_connect_vs_direct() {
    let sink = sink();
    let target = format!("127.0.0.1:{sink}");
    let p = serve_on_loopback(Proxy::new(
        Policy::new("bench", &[&target], &[] as &[&str]).unwrap(),
    ));
    let rate = |d: Duration| GIB as f64 / d.as_secs_f64() / 1e9;
    let (mut direct, mut proxied) = (Vec::new(), Vec::new());
    let cpu = || {
        // SAFETY: getrusage into a local.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        t(ru.ru_utime) + t(ru.ru_stime)
    };
    let (mut cpu_direct, mut cpu_proxied) = (Vec::new(), Vec::new());
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    for _ in 0..rounds {
        let c0 = cpu();
        let d = push(TcpStream::connect(("127.0.0.1", sink)).unwrap(), GIB);
        cpu_direct.push((cpu() - c0) / d.as_secs_f64());
        direct.push(rate(d));
        let c0 = cpu();
        let d = push(tunnel(p, &target), GIB);
        cpu_proxied.push((cpu() - c0) / d.as_secs_f64());
        proxied.push(rate(d));
    }
    println!("CPUs busy, direct: {cpu_direct:.2?}, proxied: {cpu_proxied:.2?}");
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    println!("direct  GB/s: {direct:.2?}");
    println!("proxied GB/s: {proxied:.2?}");
    println!("ratio of best runs: {:.2}", best(&proxied) / best(&direct));
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!(
        "ratio of medians: {:.2}",
        median(&proxied) / median(&direct)
    );
}

fn vm_rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("Threads:"))
}

/// The proxy process of `rss_with_100_idle_tunnels`; does nothing unless started by it.
#[test]
#[ignore]
fn rss_proxy_child() {
    let Ok(target) = std::env::var("CSBOX_NET_BENCH_TARGET") else {
        return;
    };
    let p = serve_on_loopback(Proxy::new(
        Policy::new("bench", &[&target], &[] as &[&str]).unwrap(),
    ));
    println!("PORT {p}");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    std::process::exit(0);
}

#[test]
#[ignore]
fn rss_with_100_idle_tunnels() {
    // An echo server here, the proxy in a child.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let echo = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut b = [0u8; 1024];
                while let Ok(n) = c.read(&mut b) {
                    if n == 0 || c.write_all(&b[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let target = format!("127.0.0.1:{echo}");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "net::proxy::bench::rss_proxy_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CSBOX_NET_BENCH_TARGET", &target)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let port: u16 = loop {
        let mut line = String::new();
        assert_ne!(out.read_line(&mut line).unwrap(), 0, "child ended early");
        // libtest's "test … ... " precedes it on the same line.
        if let Some(i) = line.find("PORT ") {
            break line[i + 5..].trim().parse().unwrap();
        }
    };
    let pid = child.id();
    let ping = |s: &mut TcpStream| {
        s.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
    };
    // One tunnel first, so first-use costs (thread arena, lazily mapped code) are in the
    // baseline.
    let mut warm = tunnel(port, &target);
    ping(&mut warm);
    drop(warm);
    std::thread::sleep(Duration::from_millis(300));
    let (base, base_threads) = vm_rss_kib(pid);
    let mut tunnels: Vec<TcpStream> = (0..100).map(|_| tunnel(port, &target)).collect();
    for t in &mut tunnels {
        ping(t);
    }
    std::thread::sleep(Duration::from_millis(500));
    let (with, threads) = vm_rss_kib(pid);
    println!(
        "proxy child VmRSS: {base} KiB ({base_threads} threads) idle -> {with} KiB ({threads} threads) \
         with 100 open tunnels: {:.1} KiB per tunnel",
        (with.saturating_sub(base)) as f64 / 100.0
    );
    drop(tunnels);
    drop(child.stdin.take());
    let _ = child.wait();
}
