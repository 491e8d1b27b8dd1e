//! Moving accepted connections out of the sandbox's network namespace.
//!
//! Inside, pid 1 listens on `127.0.0.1:PORT` and `[::1]:PORT` ([`bind_loopback_listeners`]),
//! accepts, and sends each connection's descriptor over a Unix socket to the supervisor
//! ([`relay_accept_loop`]); the supervisor serves it ([`Proxy::serve_passed_fds`]). A
//! socket keeps the namespace it was created in, so the proxy's *upstream* sockets, made
//! by the supervisor, are in the host's namespace while the client side stays inside.
//!
//! The inside half runs in a forked child of a multi-threaded process: it neither
//! allocates nor panics, and reports errors as `io::Error` from errno (no allocation).
//!
//! [`Proxy::serve_passed_fds`]: super::Proxy::serve_passed_fds

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Room for the control message of one descriptor, aligned for `cmsghdr`. The receiver
/// has room for exactly this much, so a sender cannot make it keep more than two
/// descriptors per message (the kernel drops what does not fit, MSG_CTRUNC).
#[repr(C, align(8))]
struct CmsgBuf([u8; 32]);

fn cmsg_space() -> usize {
    // SAFETY: pure arithmetic.
    unsafe { libc::CMSG_SPACE(size_of::<RawFd>() as u32) as usize }
}

/// A connected pair of `SOCK_SEQPACKET` Unix sockets, close-on-exec: message boundaries
/// keep one descriptor per message.
pub fn fd_socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: socketpair with a valid array.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: fresh descriptors.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Send `fd` over the Unix socket `sock` (SCM_RIGHTS, one descriptor and one byte per
/// message). MSG_NOSIGNAL: a vanished supervisor is an EPIPE error, not a SIGPIPE.
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cbuf = CmsgBuf([0; 32]);
    // SAFETY: msghdr and cmsg filled within our buffers, as cmsg(3) describes.
    unsafe {
        let mut msg: libc::msghdr = zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.0.as_mut_ptr().cast();
        msg.msg_controllen = cmsg_space() as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd.as_raw_fd());
        loop {
            let r = libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL);
            if r >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Receive one descriptor sent by [`send_fd`]; `None` when the peer has closed. It arrives
/// close-on-exec (MSG_CMSG_CLOEXEC), so no child csbox starts inherits it. A message
/// without a descriptor is skipped; extra descriptors in one message are closed.
pub fn recv_fd(sock: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    loop {
        let mut byte = [0u8; 1];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut cbuf = CmsgBuf([0; 32]);
        // SAFETY: recvmsg into our buffers; the cmsg walk stays within msg_controllen.
        unsafe {
            let mut msg: libc::msghdr = zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.0.as_mut_ptr().cast();
            msg.msg_controllen = cmsg_space() as _;
            let r = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut got: Option<OwnedFd> = None;
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                    let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    for i in 0..len / size_of::<RawFd>() {
                        let fd = OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i)));
                        if got.is_none() {
                            got = Some(fd);
                        } // else: dropped, i.e. closed
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
            if got.is_some() {
                return Ok(got);
            }
            if r == 0 {
                return Ok(None);
            }
        }
    }
}

/// The listeners pid 1 holds inside the sandbox: `127.0.0.1:port` always, `[::1]:port`
/// when the namespace has IPv6. Both are non-blocking and close-on-exec.
#[derive(Debug)]
pub struct LoopbackListeners {
    pub port: u16,
    pub v4: OwnedFd,
    pub v6: Option<OwnedFd>,
}

impl LoopbackListeners {
    /// [`relay_accept_loop`] over both listeners.
    pub fn relay_accept_loop(&self, sock: BorrowedFd<'_>) -> io::Result<()> {
        use std::os::fd::AsFd;
        match &self.v6 {
            Some(v6) => relay_accept_loop(&[self.v4.as_fd(), v6.as_fd()], sock),
            None => relay_accept_loop(&[self.v4.as_fd()], sock),
        }
    }
}

/// Listen on `127.0.0.1:port` and `[::1]:port` (IPV6_V6ONLY). Port 0 picks a free port for
/// 127.0.0.1 and takes the same one on ::1, retrying if ::1 has it taken. A namespace
/// without IPv6 (EAFNOSUPPORT, EADDRNOTAVAIL) gets the IPv4 listener alone. `lo` must be
/// up. Allocates nothing.
pub fn bind_loopback_listeners(port: u16) -> io::Result<LoopbackListeners> {
    for _ in 0..16 {
        let v4 = listen_loopback(false, port)?;
        let got = local_port(&v4)?;
        match listen_loopback(true, got) {
            Ok(v6) => {
                return Ok(LoopbackListeners {
                    port: got,
                    v4,
                    v6: Some(v6),
                })
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
                ) =>
            {
                return Ok(LoopbackListeners {
                    port: got,
                    v4,
                    v6: None,
                })
            }
            Err(e) if port == 0 && e.raw_os_error() == Some(libc::EADDRINUSE) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::from_raw_os_error(libc::EADDRINUSE))
}

fn listen_loopback(v6: bool, port: u16) -> io::Result<OwnedFd> {
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain socket calls on a descriptor we own; sockaddrs built on the stack.
    unsafe {
        let fd = cvt(libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        ))?;
        let fd = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let setopt = |level, name| {
            cvt(libc::setsockopt(
                fd.as_raw_fd(),
                level,
                name,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as _,
            ))
        };
        setopt(libc::SOL_SOCKET, libc::SO_REUSEADDR)?;
        if v6 {
            setopt(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)?;
            let mut sa: libc::sockaddr_in6 = zeroed();
            sa.sin6_family = libc::AF_INET6 as _;
            sa.sin6_port = port.to_be();
            sa.sin6_addr.s6_addr[15] = 1;
            cvt(libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in6).cast(),
                size_of::<libc::sockaddr_in6>() as _,
            ))?;
        } else {
            let mut sa: libc::sockaddr_in = zeroed();
            sa.sin_family = libc::AF_INET as _;
            sa.sin_port = port.to_be();
            sa.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            cvt(libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as _,
            ))?;
        }
        cvt(libc::listen(fd.as_raw_fd(), libc::SOMAXCONN))?;
        Ok(fd)
    }
}

fn local_port(fd: &OwnedFd) -> io::Result<u16> {
    // SAFETY: getsockname into a sockaddr_storage-sized buffer.
    unsafe {
        let mut ss: libc::sockaddr_storage = zeroed();
        let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        cvt(libc::getsockname(
            fd.as_raw_fd(),
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        ))?;
        // sin_port and sin6_port sit at the same offset, right after the family.
        let sin = &*(&ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>();
        Ok(u16::from_be(sin.sin_port))
    }
}

/// The most listeners [`relay_accept_loop`] polls (it keeps its poll set on the stack).
pub const MAX_LISTENERS: usize = 8;

/// Accept on every listener and pass each connection to the supervisor over `sock`, then
/// close it here. Returns `Ok(())` when the supervisor's end closes (POLLHUP), `Err` when
/// polling, accepting or sending fails for a reason other than the client (a connection
/// reset before accept is skipped). Out of descriptors, it pauses 100 ms instead of
/// spinning on a listener that stays readable. No allocation, no panic.
pub fn relay_accept_loop(listeners: &[BorrowedFd<'_>], sock: BorrowedFd<'_>) -> io::Result<()> {
    if listeners.is_empty() || listeners.len() > MAX_LISTENERS {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let none = libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    };
    let mut pfds = [none; MAX_LISTENERS + 1];
    // Asking for no events on `sock` still reports POLLHUP/POLLERR: the supervisor's end
    // closing is the signal to stop. (POLLIN would spin if it ever wrote to us.)
    pfds[0].fd = sock.as_raw_fd();
    for (p, l) in pfds[1..].iter_mut().zip(listeners) {
        p.fd = l.as_raw_fd();
        p.events = libc::POLLIN;
    }
    let n = listeners.len() + 1;
    loop {
        // SAFETY: poll over our stack array.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), n as libc::nfds_t, -1) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if pfds[0].revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            return Ok(());
        }
        for i in 1..n {
            let rev = pfds[i].revents;
            if rev & libc::POLLNVAL != 0 {
                return Err(io::Error::from_raw_os_error(libc::EBADF));
            }
            if rev & (libc::POLLIN | libc::POLLERR) == 0 {
                continue;
            }
            // SAFETY: accept4 on a listener; no address wanted.
            let c = unsafe {
                libc::accept4(
                    pfds[i].fd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if c < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    // Nothing there after all, or the client gave up before accept(2)
                    // (accept(2) lists these as retryable network errors).
                    Some(
                        libc::EAGAIN
                        | libc::EINTR
                        | libc::ECONNABORTED
                        | libc::EPROTO
                        | libc::EPERM
                        | libc::ENETDOWN
                        | libc::ENOPROTOOPT
                        | libc::EHOSTDOWN
                        | libc::ENONET
                        | libc::EHOSTUNREACH
                        | libc::EOPNOTSUPP
                        | libc::ENETUNREACH,
                    ) => continue,
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                        // SAFETY: poll on the first entry only, as a sleep that still
                        // notices the supervisor going away.
                        unsafe { libc::poll(pfds.as_mut_ptr(), 1, 100) };
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            // SAFETY: fresh descriptor from accept4.
            let conn = unsafe { OwnedFd::from_raw_fd(c) };
            use std::os::fd::AsFd;
            send_fd(sock, conn.as_fd())?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpStream, UdpSocket};
    use std::os::fd::AsFd;

    #[test]
    fn a_descriptor_crosses_a_socketpair_and_arrives_cloexec() {
        let (a, b) = fd_socketpair().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        send_fd(a.as_fd(), w.as_fd()).unwrap();
        drop(w);
        let got = recv_fd(b.as_fd()).unwrap().unwrap();
        let flags = nix::fcntl::fcntl(got.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
        std::fs::File::from(got).write_all(b"hi").unwrap();
        let mut buf = [0; 2];
        std::fs::File::from(r).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        drop(a);
        assert!(recv_fd(b.as_fd()).unwrap().is_none(), "EOF is None");
    }

    #[test]
    fn works_over_a_stream_socketpair_too() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..3 {
            send_fd(a.as_fd(), u.as_fd()).unwrap();
        }
        for _ in 0..3 {
            assert!(recv_fd(b.as_fd()).unwrap().is_some());
        }
        drop(a);
        assert!(recv_fd(b.as_fd()).unwrap().is_none());
    }

    #[test]
    fn sending_to_a_closed_peer_is_an_error_not_a_signal() {
        let (a, b) = fd_socketpair().unwrap();
        drop(b);
        let e = send_fd(a.as_fd(), a.as_fd()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPIPE));
    }

    #[test]
    fn port_zero_binds_both_loopbacks_on_one_port() {
        let l = bind_loopback_listeners(0).unwrap();
        assert_ne!(l.port, 0);
        TcpStream::connect(("127.0.0.1", l.port)).unwrap();
        if let Some(v6) = &l.v6 {
            assert_eq!(local_port(v6).unwrap(), l.port);
            TcpStream::connect(("::1", l.port)).unwrap();
        }
        // The same port again is taken.
        assert!(bind_loopback_listeners(l.port).is_err());
    }

    #[test]
    fn accept_loop_passes_connections_and_stops_when_the_supervisor_closes() {
        let l = bind_loopback_listeners(0).unwrap();
        let (inside, outside) = fd_socketpair().unwrap();
        let port = l.port;
        let t = std::thread::spawn(move || l.relay_accept_loop(inside.as_fd()));
        let mut addrs = vec!["127.0.0.1"];
        if TcpStream::connect(("::1", port)).is_ok() {
            // That connection was passed too; take it.
            recv_fd(outside.as_fd()).unwrap().unwrap();
            addrs.push("::1");
        }
        for a in addrs {
            let mut c = TcpStream::connect((a, port)).unwrap();
            let got = recv_fd(outside.as_fd()).unwrap().unwrap();
            let mut s = TcpStream::from(got);
            c.write_all(b"ping").unwrap();
            let mut buf = [0; 4];
            s.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"ping");
        }
        drop(outside);
        assert!(t.join().unwrap().is_ok());
    }

    #[test]
    fn accept_loop_refuses_an_empty_or_oversized_listener_set() {
        let (a, _b) = fd_socketpair().unwrap();
        assert!(relay_accept_loop(&[], a.as_fd()).is_err());
        let many = [a.as_fd(); MAX_LISTENERS + 1];
        assert!(relay_accept_loop(&many, a.as_fd()).is_err());
    }
}
