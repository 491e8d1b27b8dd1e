//! A running session's control socket, `SESSIONS_DIR/<id>/control.sock`, served by its
//! supervisor (`csbox run`) for as long as the command runs: `csbox enter` gets the
//! sandbox's namespaces and launched plan from it, `csbox stop` asks it to signal the
//! command.
//!
//! Why a socket and not `setns` on the pidfd of the sandbox's pid 1: pid 1 is csbox's own
//! code, cloned without an exec, so its memory belongs to the user namespace csbox was
//! started in, and it is not dumpable (nothing inside may read it). The kernel lets
//! `setns(pidfd)` and `open(/proc/PID/ns/*)` through only with ptrace access, which for a
//! non-dumpable process needs CAP_SYS_PTRACE in that outer namespace: root has it, the
//! session's owner does not. So pid 1 opens its own `/proc/self/ns/*` while it still may
//! and hands them to the supervisor, which hands them to `enter`. A namespace fd names
//! the namespace itself: no pid is involved, so a reused pid can never be entered.
//!
//! Who may ask: the socket lies in the session dir (mode 0700, hidden inside every
//! sandbox), and the server answers only a peer with its own uid (SO_PEERCRED). The
//! client checks that the server is the supervisor the session record names.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

pub const SOCKET: &str = "control.sock";
const MAGIC: &[u8; 4] = b"CSB1";
/// Bound on a plan a client accepts.
const PLAN_LIMIT: u32 = 16 << 20;
const TIMEOUT_SECS: libc::time_t = 5;

/// What the supervisor offers for the life of the command.
pub struct Offer {
    /// The sandbox's namespaces (user, mnt, pid, ipc, uts, net), opened by its pid 1;
    /// empty without a sandbox (compat), where there is nothing to enter.
    pub ns: Vec<OwnedFd>,
    /// The launched plan as JSON. Only ever in memory: it holds the environment.
    pub plan: Vec<u8>,
    /// The process `stop` kills after its grace (pid 1, or the command under compat): a
    /// pidfd where the kernel has them (Linux ≥ 5.3), so a reused pid is never hit.
    pub target: Target,
}

pub enum Target {
    Pidfd(OwnedFd),
    Pid(libc::pid_t),
}

impl Target {
    /// A pidfd of our own child `pid`, which is not reaped yet, so it is still that child.
    pub fn of_child(pid: libc::pid_t) -> Target {
        // SAFETY: pidfd_open(2) returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
        if fd >= 0 {
            // SAFETY: fresh descriptor.
            Target::Pidfd(unsafe { OwnedFd::from_raw_fd(fd) })
        } else {
            Target::Pid(pid)
        }
    }

    fn kill(&self) -> io::Result<()> {
        let r = match self {
            // SAFETY: pidfd_send_signal to our own child's pidfd.
            Target::Pidfd(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<u8>(),
                    0,
                ) as i32
            },
            // SAFETY: kill(2) of our own child, not reaped yet (old kernels, no pidfd).
            Target::Pid(p) => unsafe { libc::kill(*p, libc::SIGKILL) },
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// What a client asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// The namespaces and the plan.
    Enter,
    /// SIGTERM to the supervisor, which forwards it to the command as it forwards any.
    Term,
    /// SIGKILL to the sandbox's pid 1: everything inside dies with it.
    Kill,
}

impl Ask {
    fn word(self) -> &'static [u8] {
        match self {
            Ask::Enter => b"enter\n",
            Ask::Term => b"term\n",
            Ask::Kill => b"kill\n",
        }
    }
}

/// Answer codes.
const OK: u32 = 0;
const NO_SANDBOX: u32 = 1;
const FAILED: u32 = 2;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `/proc/self/fd/N/control.sock`: a short path to the socket in the directory `dir`
/// (sun_path holds 108 bytes; a store path may be longer).
fn sockaddr(dir: &OwnedFd) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    let path = format!("/proc/self/fd/{}/{SOCKET}", dir.as_raw_fd());
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in sa.sun_path.iter_mut().zip(path.bytes()) {
        *d = s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + path.len() + 1;
    Ok((sa, len as libc::socklen_t))
}

fn unix_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) returns a new fd or -1.
    let fd =
        cvt(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_timeouts(fd: &OwnedFd) {
    let tv = libc::timeval {
        tv_sec: TIMEOUT_SECS,
        tv_usec: 0,
    };
    for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        // SAFETY: setsockopt with a timeval of the right size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
    }
}

/// The peer's (pid, uid).
pub fn peer(fd: BorrowedFd) -> io::Result<(libc::pid_t, libc::uid_t)> {
    // SAFETY: all-zero ucred; getsockopt fills it.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: valid fd, buffer and length.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok((cred.pid, cred.uid))
}

fn write_all(fd: &OwnedFd, mut b: &[u8]) -> io::Result<()> {
    while !b.is_empty() {
        // SAFETY: write from a valid buffer; MSG_NOSIGNAL: a vanished peer is EPIPE.
        let n = unsafe {
            libc::send(
                fd.as_raw_fd(),
                b.as_ptr().cast(),
                b.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        b = &b[n as usize..];
    }
    Ok(())
}

fn read_exact(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: read into a valid buffer.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the supervisor closed the control socket",
            ));
        }
        got += n as usize;
    }
    Ok(())
}

fn header(status: u32, nfds: u32, plan_len: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(MAGIC);
    h[4..8].copy_from_slice(&status.to_le_bytes());
    h[8..12].copy_from_slice(&nfds.to_le_bytes());
    h[12..].copy_from_slice(&plan_len.to_le_bytes());
    h
}

/// The server: a thread that answers one client at a time until [`Server::stop`].
pub struct Server {
    listener: Arc<OwnedFd>,
    dir: OwnedFd,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Held while a request is answered; true once stopped (no answer starts after).
    answering: Arc<std::sync::Mutex<bool>>,
}

impl Server {
    /// Bind `dir/control.sock` (whatever was at the name is removed first: the session
    /// dir is csbox's) and serve `offer` from a thread. The thread inherits the caller's
    /// blocked signals, so it never takes one meant for the supervisor.
    pub fn start(dir: &OwnedFd, offer: Offer) -> io::Result<Server> {
        let dir = OwnedFd::from(dir.try_clone()?);
        let name = CString::new(SOCKET).expect("no NUL");
        // SAFETY: unlinkat on a valid fd and C string.
        unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) };
        let l = unix_socket()?;
        let (sa, len) = sockaddr(&dir)?;
        // SAFETY: bind/listen with a valid address.
        cvt(unsafe { libc::bind(l.as_raw_fd(), (&sa as *const libc::sockaddr_un).cast(), len) })?;
        // SAFETY: as above.
        cvt(unsafe { libc::listen(l.as_raw_fd(), 8) })?;
        let listener = Arc::new(l);
        let l2 = listener.clone();
        let answering = Arc::new(std::sync::Mutex::new(false));
        let a2 = answering.clone();
        let thread = std::thread::Builder::new()
            .name("csbox-control".into())
            .spawn(move || serve(&l2, &offer, &a2))?;
        Ok(Server {
            listener,
            dir,
            thread: Some(thread),
            answering,
        })
    }

    /// Stop answering and remove the socket (the command has ended).
    pub fn stop(mut self) {
        // SAFETY: shutdown(2) wakes the thread's accept(), which then fails.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        // Not joined: waiting for the thread to be scheduled cost 1-6 ms at the end of
        // every run on a busy machine. A request being answered (`csbox stop`'s kill,
        // whose answer the client waits for) is waited for by the lock; none starts after.
        *self.answering.lock().unwrap_or_else(|e| e.into_inner()) = true;
        drop(self.thread.take());
        let name = CString::new(SOCKET).expect("no NUL");
        // SAFETY: unlinkat on a valid fd and C string.
        unsafe { libc::unlinkat(self.dir.as_raw_fd(), name.as_ptr(), 0) };
    }
}

fn serve(l: &OwnedFd, offer: &Offer, answering: &std::sync::Mutex<bool>) {
    // SAFETY: getuid never fails.
    let me = unsafe { libc::getuid() };
    loop {
        // SAFETY: accept4 on our listener.
        let c = unsafe {
            libc::accept4(
                l.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if c < 0 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR | libc::ECONNABORTED | libc::EMFILE | libc::ENFILE) => continue,
                _ => return, // shut down
            }
        }
        // SAFETY: fresh descriptor.
        let c = unsafe { OwnedFd::from_raw_fd(c) };
        if !peer(c.as_fd()).is_ok_and(|(_, uid)| uid == me) {
            continue;
        }
        set_timeouts(&c);
        let stopped = answering.lock().unwrap_or_else(|e| e.into_inner());
        if *stopped {
            return;
        }
        let _ = answer(&c, offer);
        drop(stopped);
    }
}

fn answer(c: &OwnedFd, offer: &Offer) -> io::Result<()> {
    let mut req = [0u8; 6];
    let mut n = 0;
    while n < req.len() {
        read_exact(c, &mut req[n..n + 1])?;
        n += 1;
        if req[n - 1] == b'\n' {
            break;
        }
    }
    let req = &req[..n];
    if req == Ask::Enter.word() {
        if offer.ns.is_empty() {
            return write_all(c, &header(NO_SANDBOX, 0, 0));
        }
        write_all(
            c,
            &header(OK, offer.ns.len() as u32, offer.plan.len() as u32),
        )?;
        for fd in &offer.ns {
            crate::net::send_fd(c.as_fd(), fd.as_fd())?;
        }
        return write_all(c, &offer.plan);
    }
    let done = if req == Ask::Term.word() {
        // SAFETY: signalling ourselves; the supervisor's signalfd takes it and forwards it.
        cvt(unsafe { libc::kill(libc::getpid(), libc::SIGTERM) }).map(drop)
    } else if req == Ask::Kill.word() {
        offer.target.kill()
    } else {
        Err(io::Error::from_raw_os_error(libc::EINVAL))
    };
    write_all(c, &header(if done.is_ok() { OK } else { FAILED }, 0, 0))
}

/// Why a client got no answer.
#[derive(Debug)]
pub enum ConnectError {
    /// No socket: the session is not running under a csbox that serves one.
    Missing,
    /// Something else is at the name (kind named).
    NotSocket(&'static str),
    /// Nobody listens (a supervisor that was killed left it).
    Refused,
    /// The process listening runs as another user: the session (and its namespaces) is
    /// that user's.
    OtherUser {
        uid: libc::uid_t,
    },
    /// The process listening is not the supervisor the session record names.
    NotSupervisor {
        pid: libc::pid_t,
    },
    Io(io::Error),
}

/// What `enter` gets.
pub struct EnterReply {
    pub ns: Vec<OwnedFd>,
    pub plan: Vec<u8>,
}

/// A connection to a session's supervisor.
pub struct Client {
    sock: OwnedFd,
    pub server_pid: libc::pid_t,
}

impl Client {
    /// Connect to `dir/control.sock`; the server must run as us, and as `supervisor`
    /// when the record names one.
    pub fn connect(dir: &OwnedFd, supervisor: Option<u32>) -> Result<Client, ConnectError> {
        let name = CString::new(SOCKET).expect("no NUL");
        // SAFETY: all-zero stat; fstatat fills it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd, C string and buffer.
        if unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                name.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        } != 0
        {
            let e = io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::ENOENT) {
                ConnectError::Missing
            } else {
                ConnectError::Io(e)
            });
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            let kind = match st.st_mode & libc::S_IFMT {
                libc::S_IFLNK => "a symbolic link",
                libc::S_IFIFO => "a FIFO",
                libc::S_IFDIR => "a directory",
                libc::S_IFREG => "a regular file",
                _ => "a device",
            };
            return Err(ConnectError::NotSocket(kind));
        }
        let sock = unix_socket().map_err(ConnectError::Io)?;
        set_timeouts(&sock);
        let (sa, len) = sockaddr(dir).map_err(ConnectError::Io)?;
        // SAFETY: connect with a valid address.
        if unsafe {
            libc::connect(
                sock.as_raw_fd(),
                (&sa as *const libc::sockaddr_un).cast(),
                len,
            )
        } != 0
        {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ECONNREFUSED | libc::ENOENT) => ConnectError::Refused,
                _ => ConnectError::Io(e),
            });
        }
        let (pid, uid) = peer(sock.as_fd()).map_err(ConnectError::Io)?;
        // SAFETY: getuid never fails.
        if uid != unsafe { libc::getuid() } {
            return Err(ConnectError::OtherUser { uid });
        }
        if supervisor.is_some_and(|s| s as libc::pid_t != pid) {
            return Err(ConnectError::NotSupervisor { pid });
        }
        Ok(Client {
            sock,
            server_pid: pid,
        })
    }

    fn ask(&self, what: Ask) -> io::Result<(u32, u32, u32)> {
        write_all(&self.sock, what.word())?;
        let mut h = [0u8; 16];
        read_exact(&self.sock, &mut h)?;
        if &h[..4] != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a csbox control socket",
            ));
        }
        let num = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().expect("4 bytes"));
        Ok((num(4), num(8), num(12)))
    }

    /// The sandbox's namespaces and plan; `Ok(None)` when there is no sandbox (compat).
    pub fn enter(&self) -> io::Result<Option<EnterReply>> {
        let (status, nfds, plan_len) = self.ask(Ask::Enter)?;
        match status {
            OK => {}
            NO_SANDBOX => return Ok(None),
            _ => return Err(io::Error::other("the supervisor refused")),
        }
        if nfds > 8 || plan_len > PLAN_LIMIT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "an answer past csbox's bounds",
            ));
        }
        let mut ns = Vec::new();
        for _ in 0..nfds {
            match crate::net::recv_fd(self.sock.as_fd())? {
                Some(fd) => ns.push(fd),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the supervisor closed the control socket",
                    ))
                }
            }
        }
        let mut plan = vec![0u8; plan_len as usize];
        read_exact(&self.sock, &mut plan)?;
        Ok(Some(EnterReply { ns, plan }))
    }

    /// Ask for SIGTERM (forwarded to the command) or SIGKILL (of the whole sandbox).
    pub fn signal(&self, kill: bool) -> io::Result<()> {
        let (status, _, _) = self.ask(if kill { Ask::Kill } else { Ask::Term })?;
        if status == OK {
            Ok(())
        } else {
            Err(io::Error::other("the supervisor could not send the signal"))
        }
    }
}
