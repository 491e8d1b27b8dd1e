//! Moving bytes between the client and the destination: one thread per connection, both
//! directions in one poll(2) loop, data moved with splice(2) through a pipe per direction
//! so it is never copied into user space (on loopback the proxy then costs about what a
//! direct connection costs; see the benchmark test in `proxy.rs`).
//!
//! Each direction ends on its own: EOF from one side becomes shutdown(SHUT_WR) on the
//! other, so a client that half-closes still gets the whole answer. An error on either
//! side (reset, EPIPE) ends both.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Most bytes one splice(2) call moves: a pipe's default capacity (16 pages).
const CHUNK: usize = 64 * 1024;

/// The two pipes of one connection, made before the client is told the tunnel is up so
/// running out of descriptors is a 502, not a broken tunnel.
pub(crate) struct Pipes {
    up: (OwnedFd, OwnedFd),
    down: (OwnedFd, OwnedFd),
}

impl Pipes {
    pub(crate) fn new() -> io::Result<Pipes> {
        Ok(Pipes {
            up: pipe()?,
            down: pipe()?,
        })
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: pipe2 with a valid array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

struct Dir<'a> {
    src: RawFd,
    dst: RawFd,
    pipe: &'a (OwnedFd, OwnedFd),
    /// Bytes read from `src` and still in the pipe.
    held: usize,
    eof: bool,
    done: bool,
    moved: u64,
}

enum Step {
    /// Wait for `fd` to be readable or writable.
    Wait(RawFd, libc::c_short),
    Done,
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: splice between descriptors we hold; no offsets.
    let r = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl Dir<'_> {
    /// Move as much as can move without blocking; say what to wait for next.
    fn pump(&mut self) -> io::Result<Step> {
        loop {
            if self.held == 0 && !self.eof {
                match splice(self.src, self.pipe.1.as_raw_fd(), CHUNK) {
                    Ok(0) => self.eof = true,
                    Ok(n) => self.held += n,
                    Err(e) if would_block(&e) => return Ok(Step::Wait(self.src, libc::POLLIN)),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            if self.held > 0 {
                match splice(self.pipe.0.as_raw_fd(), self.dst, self.held) {
                    Ok(n) => {
                        self.held -= n;
                        self.moved += n as u64;
                    }
                    Err(e) if would_block(&e) => return Ok(Step::Wait(self.dst, libc::POLLOUT)),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            } else if self.eof {
                // SAFETY: shutdown of a socket we hold. An error (peer already gone) is
                // the other direction's to report.
                unsafe { libc::shutdown(self.dst, libc::SHUT_WR) };
                self.done = true;
                return Ok(Step::Done);
            }
        }
    }
}

/// Bytes moved each way by [`relay`], and the error that ended it early, if any.
#[derive(Debug, Default)]
pub(crate) struct Relayed {
    pub up: u64,
    pub down: u64,
    pub error: Option<io::Error>,
}

/// Relay until both directions have ended. The sockets are made non-blocking.
///
/// splice(2) into a socket whose peer is gone raises SIGPIPE (the kernel sends it without
/// MSG_NOSIGNAL); the caller's thread must block or ignore it, see `Proxy::serve`.
pub(crate) fn relay(client: &TcpStream, server: &TcpStream, pipes: &Pipes) -> Relayed {
    let mut out = Relayed::default();
    if let Err(e) = client
        .set_nonblocking(true)
        .and_then(|_| server.set_nonblocking(true))
    {
        out.error = Some(e);
        return out;
    }
    let mut dirs = [
        Dir {
            src: client.as_raw_fd(),
            dst: server.as_raw_fd(),
            pipe: &pipes.up,
            held: 0,
            eof: false,
            done: false,
            moved: 0,
        },
        Dir {
            src: server.as_raw_fd(),
            dst: client.as_raw_fd(),
            pipe: &pipes.down,
            held: 0,
            eof: false,
            done: false,
            moved: 0,
        },
    ];
    let mut pfds = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; 2];
    'outer: loop {
        let mut n = 0;
        for d in dirs.iter_mut().filter(|d| !d.done) {
            match d.pump() {
                Ok(Step::Wait(fd, ev)) => {
                    pfds[n] = libc::pollfd {
                        fd,
                        events: ev,
                        revents: 0,
                    };
                    n += 1;
                }
                Ok(Step::Done) => {}
                Err(e) => {
                    out.error = Some(e);
                    break 'outer;
                }
            }
        }
        if n == 0 {
            break;
        }
        loop {
            // SAFETY: poll over our array of `n` entries.
            let r = unsafe { libc::poll(pfds.as_mut_ptr(), n as libc::nfds_t, -1) };
            if r >= 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                out.error = Some(e);
                break 'outer;
            }
        }
    }
    out.up = dirs[0].moved;
    out.down = dirs[1].moved;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener};

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn both_directions_flow_and_half_close_is_passed_on() {
        // outer_client <-> [client | relay | server] <-> outer_server
        let (mut outer_client, client) = pair();
        let (server, mut outer_server) = pair();
        let t = std::thread::spawn(move || relay(&client, &server, &Pipes::new().unwrap()));
        let big: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        let sent = big.clone();
        let w = std::thread::spawn(move || {
            outer_client.write_all(&sent).unwrap();
            outer_client.shutdown(Shutdown::Write).unwrap();
            let mut back = Vec::new();
            outer_client.read_to_end(&mut back).unwrap();
            back
        });
        let mut got = Vec::new();
        outer_server.read_to_end(&mut got).unwrap();
        assert!(got == big, "client's bytes arrive whole, then EOF");
        outer_server
            .write_all(b"answer after the half-close")
            .unwrap();
        drop(outer_server);
        assert_eq!(w.join().unwrap(), b"answer after the half-close");
        let r = t.join().unwrap();
        assert_eq!((r.up, r.down), (3_000_000, 27));
        assert!(r.error.is_none(), "{:?}", r.error);
    }

    #[test]
    fn a_reset_ends_both_directions() {
        let (outer_client, client) = pair();
        let (server, mut outer_server) = pair();
        let t = std::thread::spawn(move || relay(&client, &server, &Pipes::new().unwrap()));
        // SO_LINGER 0: close sends RST.
        let l = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt with a linger struct.
        unsafe {
            libc::setsockopt(
                outer_client.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&l as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as _,
            )
        };
        drop(outer_client);
        let mut buf = Vec::new();
        let _ = outer_server.read_to_end(&mut buf);
        t.join().unwrap();
    }
}
