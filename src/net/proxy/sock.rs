//! Socket helpers of the proxy: bounded reads of a request head, connecting with a
//! deadline, error replies, SIGPIPE blocking, the active-client count.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::net::http;

/// The client socket with what has been read from it but not yet used.
pub(super) struct Client {
    pub(super) s: TcpStream,
    pub(super) buf: Vec<u8>,
    pub(super) pos: usize,
    pub(super) deadline: Instant,
}

pub(super) fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "timed out")
}

/// Read up to `room` more bytes into `buf` before `deadline`. Ok(0) is EOF.
pub(super) fn read_more(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    room: usize,
    deadline: Instant,
) -> io::Result<usize> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        s.set_read_timeout(Some(left))?;
        let old = buf.len();
        buf.resize(old + room, 0);
        let r = s.read(&mut buf[old..]);
        buf.truncate(old + *r.as_ref().unwrap_or(&0));
        match r {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // SO_RCVTIMEO expiring reads as EAGAIN.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(timed_out()),
            Err(e) => return Err(e),
        }
    }
}

pub(super) enum Head {
    /// The head is `buf[..n]`.
    Complete(usize),
    Eof,
    TooLong,
}

pub(super) fn read_head(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    max: usize,
    deadline: Instant,
) -> io::Result<Head> {
    loop {
        if let Some(end) = http::head_end(buf) {
            return Ok(Head::Complete(end));
        }
        if buf.len() >= max {
            return Ok(Head::TooLong);
        }
        if read_more(s, buf, (max - buf.len()).min(4096), deadline)? == 0 {
            return Ok(Head::Eof);
        }
    }
}

impl Client {
    /// The next `n` bytes (SOCKS5 fields), reading as needed.
    pub(super) fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        while self.buf.len() - self.pos < n {
            if read_more(&mut self.s, &mut self.buf, n.max(512), self.deadline)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        self.pos += n;
        Ok(&self.buf[self.pos - n..self.pos])
    }

    /// Hand over the socket and whatever was read past the request.
    pub(super) fn into_parts(mut self) -> (TcpStream, Vec<u8>) {
        let rest = self.buf.split_off(self.pos);
        (self.s, rest)
    }
}

/// Connect to the first address that answers within `timeout` overall. Each address gets
/// an equal share of the time left, so a black-holed first address (often IPv6 on a host
/// without a v6 route) cannot use it all. The error keeps the last errno (for the SOCKS5
/// reply) and names every address tried.
pub(super) fn connect_any(
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<TcpStream, (io::Error, String)> {
    let deadline = Instant::now() + timeout;
    let mut tried = Vec::new();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for (i, a) in addrs.iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            last = timed_out();
            tried.push(format!("{a}: not tried, out of time"));
            break;
        }
        let share = left / (addrs.len() - i) as u32;
        match TcpStream::connect_timeout(a, share.max(Duration::from_millis(1))) {
            Ok(s) => return Ok(s),
            Err(e) => {
                tried.push(format!("{a}: {}", strip_os_error(&e)));
                last = e;
            }
        }
    }
    Err((last, tried.join("; ")))
}

/// "Connection refused (os error 111)" → "connection refused".
pub(super) fn strip_os_error(e: &io::Error) -> String {
    let s = e.to_string();
    let s = s.split(" (os error").next().unwrap_or(&s).to_string();
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => s,
    }
}

/// SOCKS5 reply code (RFC 1928 §6) for a failed connect.
pub(super) fn socks_code(e: &io::Error) -> u8 {
    match e.raw_os_error() {
        Some(libc::ENETUNREACH) => 0x03,
        Some(libc::EHOSTUNREACH) | Some(libc::ETIMEDOUT) => 0x04,
        Some(libc::ECONNREFUSED) => 0x05,
        _ if e.kind() == io::ErrorKind::TimedOut => 0x04,
        _ => 0x01,
    }
}

/// Write a short reply, then close so the client reads it: shutdown(SHUT_WR), and drain
/// what it still sends for a moment, because closing with unread input sends a reset that
/// can destroy the reply before the client has read it.
pub(super) fn reply_and_close(s: &mut TcpStream, reply: &[u8]) {
    let _ = s.write_all(reply);
    let _ = s.shutdown(Shutdown::Write);
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 2048];
    let mut drained = 0;
    while drained < 64 * 1024 {
        match s.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

pub(super) fn http_error(status: &str, body: &str) -> Vec<u8> {
    let body = format!("{}\n", body.replace(['\r', '\n'], " "));
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub(super) fn socks_reply(code: u8) -> [u8; 10] {
    // The bound address is left 0.0.0.0:0: clients ignore it for CONNECT, and the real
    // one would tell the sandbox the host's address.
    [5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

/// Blocks SIGPIPE in the current thread for the life of the value. splice(2) into a
/// socket the peer closed raises SIGPIPE, and its default action kills the whole
/// supervisor; a blocked thread-directed signal just waits, and is discarded on drop.
pub(super) struct SigpipeBlocked {
    old: libc::sigset_t,
    was_blocked: bool,
}

impl SigpipeBlocked {
    pub(super) fn new() -> SigpipeBlocked {
        // SAFETY: sigset manipulation on locals; pthread_sigmask on this thread.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGPIPE);
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            let was_blocked = libc::sigismember(&old, libc::SIGPIPE) == 1;
            SigpipeBlocked { old, was_blocked }
        }
    }
}

impl Drop for SigpipeBlocked {
    fn drop(&mut self) {
        if self.was_blocked {
            return;
        }
        // SAFETY: as in new; a zero timeout only collects what is pending.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGPIPE);
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            while libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) == libc::SIGPIPE {}
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}

pub(super) fn is_stream_socket(fd: &OwnedFd) -> bool {
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a c_int.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    r == 0 && ty == libc::SOCK_STREAM
}
