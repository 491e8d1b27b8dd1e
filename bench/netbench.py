#!/usr/bin/env python3
"""Loopback servers and clients for bench/startup.sh (RSS with open tunnels) and
bench/net-throughput.sh (a download through csbox's proxy). Standard library only.

  netbench.py serve-hold PORTFILE          accept connections and hold them open (read to EOF)
  netbench.py serve-bytes PORTFILE SIZE    answer any HTTP request with SIZE bytes
  netbench.py tunnels PROXY TARGET N READY HOLD
                                           open N CONNECT tunnels to TARGET (host:port)
                                           through the HTTP proxy PROXY (host:port), check
                                           each says 200 and carries a byte both ways,
                                           create the file READY, hold them HOLD seconds
  netbench.py fetch TARGET [PROXY]         GET http://TARGET/ (through a CONNECT tunnel
                                           when PROXY is given), read the body into one
                                           reused 1 MiB buffer; prints `BYTES SECONDS
                                           USER_CPU SYS_CPU` (its own, in seconds)
  netbench.py relay PORTFILE TARGET PIPE   a minimal relay, for comparison with csbox's proxy:
                                           per connection, forward the request head to TARGET,
                                           then move the answer with splice(2) through a pipe
                                           of PIPE bytes (0: the default 64 KiB), one way
  netbench.py cpu OUT CMD...               run CMD, then write `WALL USER SYS` of it (wait4's
                                           rusage: CMD and the descendants it reaped) to OUT

Servers write their port to PORTFILE once listening and run until killed.
"""
import fcntl
import os
import resource
import socket
import sys
import threading
import time

CHUNK = 1 << 20


def listen(portfile):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(512)
    tmp = portfile + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(s.getsockname()[1]))
    os.rename(tmp, portfile)
    return s


def serve(portfile, handler):
    s = listen(portfile)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handler, args=(c,), daemon=True).start()


def hold(c):
    # echo what comes (the tunnel check sends one byte), until EOF
    try:
        while True:
            b = c.recv(4096)
            if not b:
                break
            c.sendall(b)
    except OSError:
        pass
    c.close()


def read_head(c):
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = c.recv(4096)
        if not b:
            raise OSError("connection closed before the end of the head")
        buf += b
    return buf


def bytes_handler(size):
    block = b"\x5a" * CHUNK

    def handle(c):
        try:
            read_head(c)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
            left = size
            while left > 0:
                n = min(left, CHUNK)
                c.sendall(block[:n] if n < CHUNK else block)
                left -= n
        except OSError:
            pass
        c.close()

    return handle


def hostport(s):
    h, _, p = s.rpartition(":")
    return h, int(p)


def tunnel(proxy, target):
    c = socket.create_connection(hostport(proxy))
    c.sendall(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target.encode(), target.encode()))
    head = read_head(c)
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" ":
        raise SystemExit("netbench: CONNECT %s: %s" % (target, status.decode(errors="replace")))
    return c, head[head.index(b"\r\n\r\n") + 4:]


def tunnels(proxy, target, n, ready, secs):
    held = []
    for _ in range(n):
        c, _ = tunnel(proxy, target)
        c.sendall(b"x")
        if c.recv(1) != b"x":
            raise SystemExit("netbench: a tunnel did not echo")
        held.append(c)
    open(ready, "w").close()
    time.sleep(secs)
    for c in held:
        c.close()


def fetch(target, proxy=None):
    t0 = time.perf_counter()
    if proxy:
        c, early = tunnel(proxy, target)
    else:
        c, early = socket.create_connection(hostport(target)), b""
    c.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % target.encode())
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    head = early
    while b"\r\n\r\n" not in head:
        k = c.recv_into(view)
        if k == 0:
            raise SystemExit("netbench: no response head")
        head += bytes(view[:k])
    end = head.index(b"\r\n\r\n") + 4
    length = None
    for line in head[:end].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    got = len(head) - end
    while got < length:
        k = c.recv_into(view)
        if k == 0:
            break
        got += k
    secs = time.perf_counter() - t0
    c.close()
    if got != length:
        raise SystemExit("netbench: got %d of %d bytes" % (got, length))
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(got, "%.4f" % secs, "%.3f" % ru.ru_utime, "%.3f" % ru.ru_stime)


def relay_handler(target, pipesz):
    def handle(c):
        try:
            u = socket.create_connection(hostport(target))
            u.sendall(read_head(c))
            r, w = os.pipe()
            if pipesz:
                fcntl.fcntl(w, 1031, pipesz)  # F_SETPIPE_SZ
            cap = fcntl.fcntl(w, 1032)  # F_GETPIPE_SZ
            while True:
                k = os.splice(u.fileno(), w, cap, flags=os.SPLICE_F_MOVE)
                if k == 0:
                    break
                while k:
                    k -= os.splice(r, c.fileno(), k, flags=os.SPLICE_F_MOVE)
            os.close(r)
            os.close(w)
            u.close()
        except OSError:
            pass
        c.close()

    return handle


def cpu(out, argv):
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    _, status, ru = os.wait4(pid, 0)
    with open(out, "w") as f:
        f.write("%.4f %.3f %.3f\n" % (time.perf_counter() - t0, ru.ru_utime, ru.ru_stime))
    sys.exit(os.waitstatus_to_exitcode(status))


def main(a):
    if len(a) == 3 and a[1] == "serve-hold":
        serve(a[2], hold)
    elif len(a) == 4 and a[1] == "serve-bytes":
        serve(a[2], bytes_handler(int(a[3])))
    elif len(a) == 7 and a[1] == "tunnels":
        tunnels(a[2], a[3], int(a[4]), a[5], float(a[6]))
    elif len(a) in (3, 4) and a[1] == "fetch":
        fetch(a[2], a[3] if len(a) == 4 else None)
    elif len(a) == 5 and a[1] == "relay":
        serve(a[2], relay_handler(a[3], int(a[4])))
    elif len(a) >= 4 and a[1] == "cpu":
        cpu(a[2], a[3:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
