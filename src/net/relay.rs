//! Moving bytes between clients and destinations: one thread for every open tunnel of a
//! proxy (an epoll(7) loop, [`Relayer`], started with the first tunnel), data moved with
//! splice(2) through a pipe per direction so it is never copied into user space.
//!
//! Why one thread and not one per tunnel: tunnels mostly sit idle (keep-alive HTTPS), and
//! a thread costs what its stack touched (12 KiB measured) plus a malloc arena; 100 open
//! tunnels were 1.7 MiB of the supervisor's RSS that way. The handshake (request head,
//! resolution, connect) blocks, so it still runs on a short-lived thread per client,
//! which hands the open tunnel over here.
//!
//! A direction reads into its pipe while the pipe has room and writes out while it holds
//! data, so the destination's next bytes are read while the client is still taking the
//! last ones (the old loop read only into an empty pipe: stop-and-wait in 64 KiB steps).
//! A direction that fills its 64 KiB pipe is carrying bulk data; its pipe is then grown
//! to [`BULK_PIPE`] (F_SETPIPE_SZ), for at most [`MAX_BULK`] pipes at once, because
//! grown pipes count against the user's pipe quota (`fs.pipe-user-pages-soft`, 16384
//! pages), which the sandbox's own pipes share: past it every new pipe gets one page.
//!
//! Each direction ends on its own: EOF from one side becomes shutdown(SHUT_WR) on the
//! other, so a client that half-closes still gets the whole answer. An error on either
//! side (reset, EPIPE) ends both.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{mpsc, Arc};

/// A pipe's default capacity (16 pages): what every direction starts with.
const PIPE: usize = 64 * 1024;
/// What a pipe carrying bulk data is grown to: `fs.pipe-max-size`'s default, the most an
/// unprivileged user may ask for.
const BULK_PIPE: usize = 1024 * 1024;
/// Grown pipes at once (8 × 256 pages of the 16384-page quota).
const MAX_BULK: usize = 8;
/// Bytes one tunnel may move per wakeup before the other tunnels get their turn.
const BUDGET: usize = 4 * 1024 * 1024;
/// The epoll key of the eventfd that says a tunnel was handed over.
const WAKE: u64 = u64::MAX;

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

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Bytes moved each way by a tunnel, and the error that ended it early, if any.
#[derive(Debug, Default)]
pub(crate) struct Relayed {
    pub up: u64,
    pub down: u64,
    pub error: Option<io::Error>,
}

/// What a finished tunnel is reported to (the audit log, the active-client count).
pub(crate) type Done = Box<dyn FnOnce(Relayed) + Send>;

/// One open tunnel: the client's socket, the destination's, their pipes.
pub(crate) struct Ends {
    pub client: TcpStream,
    pub server: TcpStream,
    pub pipes: Pipes,
}

/// One direction's state; the descriptors belong to the tunnel's [`Ends`].
struct Dir {
    src: RawFd,
    dst: RawFd,
    pipe_r: RawFd,
    pipe_w: RawFd,
    /// Bytes read from `src` and still in the pipe.
    held: usize,
    /// The pipe's capacity, as far as we know.
    cap: usize,
    eof: bool,
    done: bool,
    moved: u64,
}

enum Pumped {
    /// Both ends said EAGAIN: an edge (epoll) will come.
    Blocked,
    /// Out of budget with more to move: pump again before sleeping.
    Budget,
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

/// Err(e) for an error that ends the tunnel, Ok(None) for "would block", Ok(Some(n)) moved.
fn moved(r: io::Result<usize>) -> io::Result<Option<usize>> {
    match r {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Some(0)),
        Err(e) => Err(e),
    }
}

impl Dir {
    fn new(src: RawFd, dst: RawFd, pipe: &(OwnedFd, OwnedFd)) -> Dir {
        Dir {
            src,
            dst,
            pipe_r: pipe.0.as_raw_fd(),
            pipe_w: pipe.1.as_raw_fd(),
            held: 0,
            cap: PIPE,
            eof: false,
            done: false,
            moved: 0,
        }
    }

    /// Move what can move without blocking, up to `budget` bytes written. A read that
    /// says EAGAIN may mean a full pipe rather than an empty socket; then the pipe holds
    /// data, the write is tried, and either it moves (and the loop reads again) or the
    /// destination's EAGAIN promises an edge.
    fn pump(&mut self, budget: &mut usize, bulk: &mut usize) -> io::Result<Pumped> {
        loop {
            if self.done {
                return Ok(Pumped::Done);
            }
            let mut progress = false;
            if !self.eof && self.held < self.cap {
                match moved(splice(self.src, self.pipe_w, self.cap - self.held))? {
                    Some(0) => {
                        self.eof = true;
                        progress = true;
                    }
                    Some(n) => {
                        self.held += n;
                        progress = true;
                        if self.held >= PIPE && self.cap == PIPE && *bulk < MAX_BULK {
                            self.grow(bulk);
                        }
                    }
                    None => {}
                }
            }
            if self.held > 0 {
                if let Some(n) = moved(splice(self.pipe_r, self.dst, self.held))? {
                    self.held -= n;
                    self.moved += n as u64;
                    *budget = budget.saturating_sub(n);
                    progress |= n > 0;
                }
            } else if self.eof {
                // SAFETY: shutdown of a socket we hold. An error (peer already gone) is
                // the other direction's to report.
                unsafe { libc::shutdown(self.dst, libc::SHUT_WR) };
                self.done = true;
                return Ok(Pumped::Done);
            }
            if !progress {
                return Ok(Pumped::Blocked);
            }
            if *budget == 0 {
                return Ok(Pumped::Budget);
            }
        }
    }

    /// F_SETPIPE_SZ to [`BULK_PIPE`]; refused (EPERM past the quota or pipe-max-size),
    /// the pipe keeps its size and is not asked again.
    fn grow(&mut self, bulk: &mut usize) {
        // SAFETY: fcntl on our pipe.
        let r = unsafe { libc::fcntl(self.pipe_w, libc::F_SETPIPE_SZ, BULK_PIPE as libc::c_int) };
        if r > 0 {
            self.cap = r as usize;
            *bulk += 1;
        } else {
            self.cap = PIPE - 1; // not PIPE: never tried again
        }
    }

    fn grown(&self) -> bool {
        self.cap > PIPE
    }
}

/// A tunnel in the relay loop.
struct Conn {
    ends: Ends,
    dirs: [Dir; 2],
    done: Option<Done>,
    queued: bool,
}

impl Conn {
    fn new(ends: Ends, done: Done) -> Conn {
        let (c, s) = (ends.client.as_raw_fd(), ends.server.as_raw_fd());
        let dirs = [
            Dir::new(c, s, &ends.pipes.up),
            Dir::new(s, c, &ends.pipes.down),
        ];
        Conn {
            ends,
            dirs,
            done: Some(done),
            queued: false,
        }
    }

    /// Pump both directions. `Done` when both have ended or one failed (`Err`).
    fn pump(&mut self, bulk: &mut usize) -> io::Result<Pumped> {
        let mut budget = BUDGET;
        let mut out = Pumped::Done;
        for d in &mut self.dirs {
            match d.pump(&mut budget, bulk)? {
                Pumped::Done => {}
                Pumped::Blocked => {
                    if matches!(out, Pumped::Done) {
                        out = Pumped::Blocked;
                    }
                }
                Pumped::Budget => out = Pumped::Budget,
            }
        }
        Ok(out)
    }

    fn finish(mut self, error: Option<io::Error>, bulk: &mut usize) {
        *bulk -= self.dirs.iter().filter(|d| d.grown()).count();
        let r = Relayed {
            up: self.dirs[0].moved,
            down: self.dirs[1].moved,
            error,
        };
        let done = self.done.take();
        drop(self);
        if let Some(f) = done {
            f(r);
        }
    }
}

/// The relay thread of one proxy: tunnels are handed to it with [`Relayer::add`]. It
/// ends once the `Relayer` is dropped and its last tunnel has ended.
pub(crate) struct Relayer {
    tx: Option<mpsc::Sender<(Ends, Done)>>,
    wake: Arc<OwnedFd>,
}

impl Relayer {
    /// Start the thread (named `csbox-relay`, with a stack of `stack_size` bytes).
    pub(crate) fn start(stack_size: usize) -> io::Result<Relayer> {
        // SAFETY: plain descriptor-creating calls; results checked.
        let (ep, wake) = unsafe {
            let ep = OwnedFd::from_raw_fd(cvt(libc::epoll_create1(libc::EPOLL_CLOEXEC))?);
            let wake = cvt(libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))?;
            (ep, Arc::new(OwnedFd::from_raw_fd(wake)))
        };
        epoll_add(&ep, wake.as_raw_fd(), libc::EPOLLIN as u32, WAKE)?;
        let (tx, rx) = mpsc::channel();
        let w = wake.clone();
        std::thread::Builder::new()
            .name("csbox-relay".into())
            .stack_size(stack_size)
            .spawn(move || run(ep, w, rx))?;
        Ok(Relayer { tx: Some(tx), wake })
    }

    /// Relay `ends` until both directions have ended, then call `done` (on the relay
    /// thread). The sockets are made non-blocking.
    pub(crate) fn add(&self, ends: Ends, done: Done) {
        let gone = || io::Error::other("the relay thread has stopped");
        match &self.tx {
            Some(tx) => match tx.send((ends, done)) {
                Ok(()) => self.wake(),
                Err(mpsc::SendError((_, done))) => done(Relayed {
                    error: Some(gone()),
                    ..Relayed::default()
                }),
            },
            None => done(Relayed {
                error: Some(gone()),
                ..Relayed::default()
            }),
        }
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: an 8-byte write to our eventfd. It cannot fail short of the counter
        // overflowing (2^64 - 2 wakeups unread), and a missed wakeup is then harmless.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

impl Drop for Relayer {
    fn drop(&mut self) {
        // The sender first, so the woken thread sees the channel closed.
        drop(self.tx.take());
        self.wake();
    }
}

fn epoll_add(ep: &OwnedFd, fd: RawFd, events: u32, key: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: key };
    // SAFETY: epoll_ctl with a valid event.
    cvt(unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) }).map(drop)
}

fn epoll_del(ep: &OwnedFd, fd: RawFd) {
    // SAFETY: epoll_ctl DEL; an error (not registered) changes nothing.
    unsafe {
        libc::epoll_ctl(
            ep.as_raw_fd(),
            libc::EPOLL_CTL_DEL,
            fd,
            std::ptr::null_mut(),
        )
    };
}

/// splice(2) into a socket whose peer is gone raises SIGPIPE (the kernel sends it without
/// MSG_NOSIGNAL), whose default action would kill the supervisor: the relay thread blocks
/// it for good (a blocked thread-directed signal just stays pending).
fn block_sigpipe() {
    // SAFETY: sigset manipulation on a local; pthread_sigmask on this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// The tunnels of the loop, by slot (a slot is a tunnel's epoll key).
#[derive(Default)]
struct Slots {
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    live: usize,
    /// Pipes grown to BULK_PIPE.
    bulk: usize,
}

impl Slots {
    /// Register a handed-over tunnel; its slot, or None when it could not be (then it
    /// has been finished with the error).
    fn insert(&mut self, ep: &OwnedFd, ends: Ends, done: Done) -> Option<usize> {
        let conn = Conn::new(ends, done);
        let ev = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        let slot = self.free.pop().unwrap_or(self.conns.len());
        let fds = [conn.ends.client.as_raw_fd(), conn.ends.server.as_raw_fd()];
        let reg = conn
            .ends
            .client
            .set_nonblocking(true)
            .and_then(|_| conn.ends.server.set_nonblocking(true))
            .and_then(|_| epoll_add(ep, fds[0], ev, slot as u64))
            .and_then(|_| epoll_add(ep, fds[1], ev, slot as u64));
        if let Err(e) = reg {
            epoll_del(ep, fds[0]);
            // A slot from the free list goes back; a fresh one (conns.len()) was never used.
            if slot < self.conns.len() {
                self.free.push(slot);
            }
            conn.finish(Some(e), &mut self.bulk);
            return None;
        }
        if slot == self.conns.len() {
            self.conns.push(Some(conn));
        } else {
            self.conns[slot] = Some(conn);
        }
        self.live += 1;
        Some(slot)
    }

    /// Pump the tunnel in `slot`; true when it needs pumping again before sleeping.
    fn pump(&mut self, ep: &OwnedFd, slot: usize) -> bool {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return false;
        };
        conn.queued = false;
        let error = match conn.pump(&mut self.bulk) {
            Ok(Pumped::Blocked) => return false,
            Ok(Pumped::Budget) => return true,
            Ok(Pumped::Done) => None,
            Err(e) => Some(e),
        };
        let Some(conn) = self.conns[slot].take() else {
            return false;
        };
        epoll_del(ep, conn.ends.client.as_raw_fd());
        epoll_del(ep, conn.ends.server.as_raw_fd());
        self.free.push(slot);
        self.live -= 1;
        conn.finish(error, &mut self.bulk);
        false
    }

    /// Mark `slot` to be pumped in this round; false if it already is (or is empty).
    fn queue(&mut self, slot: usize) -> bool {
        match self.conns.get_mut(slot).and_then(Option::as_mut) {
            Some(c) if !c.queued => {
                c.queued = true;
                true
            }
            _ => false,
        }
    }
}

/// The relay thread: wait for edges on every tunnel's sockets (edge-triggered: a tunnel
/// is pumped until EAGAIN, or until its budget, and then queued to go on at once).
fn run(ep: OwnedFd, wake: Arc<OwnedFd>, rx: mpsc::Receiver<(Ends, Done)>) {
    block_sigpipe();
    let mut slots = Slots::default();
    let mut open = true;
    let mut ready: Vec<usize> = Vec::new();
    let mut again: Vec<usize> = Vec::new();
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
    while open || slots.live > 0 {
        let timeout = if again.is_empty() { -1 } else { 0 };
        // SAFETY: epoll_wait into our array.
        let n = unsafe {
            libc::epoll_wait(
                ep.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as _,
                timeout,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // Not reached (EBADF, EFAULT, EINVAL are ours to avoid); end every tunnel.
            for c in slots.conns.iter_mut().filter_map(Option::take) {
                c.finish(
                    Some(io::Error::new(e.kind(), e.to_string())),
                    &mut slots.bulk,
                );
            }
            return;
        }
        ready.clear();
        for &slot in &again {
            if slots.queue(slot) {
                ready.push(slot);
            }
        }
        again.clear();
        for ev in &events[..n as usize] {
            let key = ev.u64;
            if key != WAKE {
                if slots.queue(key as usize) {
                    ready.push(key as usize);
                }
                continue;
            }
            let mut count = [0u8; 8];
            // SAFETY: draining our eventfd (non-blocking).
            unsafe { libc::read(wake.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
            loop {
                match rx.try_recv() {
                    Ok((ends, done)) => {
                        if let Some(slot) = slots.insert(&ep, ends, done) {
                            slots.queue(slot);
                            ready.push(slot);
                        }
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
        }
        for &slot in &ready {
            if slots.pump(&ep, slot) {
                again.push(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener};
    use std::time::Duration;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    /// Hand `client` ↔ `server` to `relayer`; the receiver gets the counts at the end.
    fn add(relayer: &Relayer, client: TcpStream, server: TcpStream) -> mpsc::Receiver<Relayed> {
        let (tx, rx) = mpsc::channel();
        let ends = Ends {
            client,
            server,
            pipes: Pipes::new().unwrap(),
        };
        relayer.add(
            ends,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx
    }

    #[test]
    fn both_directions_flow_and_half_close_is_passed_on() {
        // outer_client <-> [client | relay | server] <-> outer_server
        let (mut outer_client, client) = pair();
        let (server, mut outer_server) = pair();
        // Dropped at once: the thread still relays its tunnel to the end.
        let done = add(&Relayer::start(128 * 1024).unwrap(), client, server);
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
        let r = done.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!((r.up, r.down), (3_000_000, 27));
        assert!(r.error.is_none(), "{:?}", r.error);
    }

    #[test]
    fn a_reset_ends_both_directions() {
        let (outer_client, client) = pair();
        let (server, mut outer_server) = pair();
        let relayer = Relayer::start(128 * 1024).unwrap();
        let done = add(&relayer, client, server);
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
        done.recv_timeout(Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn one_thread_relays_many_tunnels_and_a_bulk_one_stalls_none() {
        let relayer = Relayer::start(128 * 1024).unwrap();
        // A bulk download nobody reads yet: its client side fills, its pipe grows.
        let (mut bulk_client, client) = pair();
        let (server, mut bulk_server) = pair();
        let bulk_done = add(&relayer, client, server);
        let writer = std::thread::spawn(move || {
            let block = vec![7u8; 1 << 20];
            for _ in 0..16 {
                bulk_server.write_all(&block).unwrap();
            }
        });
        // Meanwhile 20 small tunnels on the same thread each carry a ping both ways.
        let mut small = Vec::new();
        for _ in 0..20 {
            let (c, client) = pair();
            let (server, s) = pair();
            small.push((c, s, add(&relayer, client, server)));
        }
        for (c, s, done) in small {
            let (mut c, mut s) = (c, s);
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c.write_all(b"ping").unwrap();
            let mut buf = [0; 4];
            s.read_exact(&mut buf).unwrap();
            s.write_all(b"pong").unwrap();
            c.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"pong");
            drop((c, s));
            let r = done.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!((r.up, r.down), (4, 4));
        }
        let mut n = 0;
        let mut buf = vec![0; 1 << 16];
        while n < 16 << 20 {
            n += bulk_client.read(&mut buf).unwrap();
        }
        writer.join().unwrap();
        drop(bulk_client);
        let r = bulk_done.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(r.down, 16 << 20);
    }
}
