#!/usr/bin/env python3
"""Seccomp programs for bench/startup.sh's bubblewrap lines.

  seccomp-bpf.py length PID       the instruction count of PID's seccomp filter (root:
                                  PTRACE_SECCOMP_GET_FILTER needs CAP_SYS_ADMIN)
  seccomp-bpf.py shape PID        `TOTAL COMPAT`: the count and the length of the block for
                                  the 32-bit (i386) entry point of a filter laid out as
                                  csbox's (1 when that entry point is refused whole)
  seccomp-bpf.py dump PID OUT     PID's filter itself, as the raw sock_filter array
  seccomp-bpf.py synth N OUT [COMPAT]
                                  a program of exactly N instructions shaped like csbox's
                                  (below), COMPAT of them in the i386 block (default: a
                                  third, csbox's proportion), as `bwrap --seccomp FD` reads it
  seccomp-bpf.py attach FILE...   the median time prctl(PR_SET_SECCOMP) takes to attach each
                                  program (200 forks each), to check the approximation

What a launch pays for a filter is its attach, and the attach is not only linear in the
instruction count (copying, checking, converting to eBPF and JIT-compiling it): since Linux
5.11 the kernel also runs the filter once for every system call number of the native and
of the compat arch, to cache which calls are always allowed, so the length of the path
each number walks counts too. So the synthetic program has csbox's count and csbox's
layout: load the arch; x86-64 jumps to one block, i386 to another, any other arch is
allowed (as in csbox's); each block loads the call number and walks a balanced tree of JGE
splits down to leaves of up to 4 JEQ tests, a refused number returning ERRNO(EPERM), the
same tree csbox's compiler builds. Block sizes are csbox's own when `shape` read them off
a running session (under strict the i386 block is one `ret`). The numbers compared are
made up (0x3e8 + 3k, above every real call), so no real call matches and each walks one
root-to-leaf path to ALLOW, as every call of /bin/true does under csbox. It differs in: the
numbers; no argument checks on any path (csbox's ioctl, socket and personality rules load
an argument, which also ends the kernel's caching walk early for those numbers); x32 not
told apart (csbox's native block also holds the x32 numbers); and a few unreachable `ret`s
at the end of each block to make the counts exact. `attach` shows how close it comes. It is
meant to cost what csbox's costs, not to refuse what csbox's refuses.
"""
import ctypes
import os
import statistics
import struct
import sys
import time

BPF_LD, BPF_W, BPF_ABS = 0x00, 0x00, 0x20
BPF_JMP, BPF_JA, BPF_JEQ, BPF_JGE, BPF_K = 0x05, 0x00, 0x10, 0x30, 0x00
BPF_RET = 0x06
RET_ALLOW = 0x7FFF0000
RET_EPERM = 0x00050000 | 1
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
LEAF = 4


def ins(code, k=0, jt=0, jf=0):
    return (code, jt, jf, k)


def tree(nrs):
    """csbox's shape: JGE splits down to leaves of <= LEAF JEQ tests."""
    if len(nrs) <= LEAF:
        out = []
        for i, n in enumerate(nrs):
            # jt: past the remaining tests and the ALLOW, onto the shared refusal
            out.append(ins(BPF_JMP | BPF_JEQ | BPF_K, n, jt=len(nrs) - i, jf=0))
        out.append(ins(BPF_RET | BPF_K, RET_ALLOW))
        out.append(ins(BPF_RET | BPF_K, RET_EPERM))
        return out
    mid = len(nrs) // 2
    left, right = tree(nrs[:mid]), tree(nrs[mid:])
    if len(left) < 256:
        head = [ins(BPF_JMP | BPF_JGE | BPF_K, nrs[mid], jt=len(left), jf=0)]
    else:
        head = [ins(BPF_JMP | BPF_JGE | BPF_K, nrs[mid], jt=0, jf=1),
                ins(BPF_JMP | BPF_JA, len(left))]
    return head + left + right


def block(n):
    """A block of exactly n instructions: load the number, a tree, unreachable filler."""
    if n <= 1:
        return [ins(BPF_RET | BPF_K, RET_EPERM)]  # the entry point refused whole
    best = None
    k = 1
    while True:
        body = [ins(BPF_LD | BPF_W | BPF_ABS, 0)] + tree([0x3E8 + 3 * i for i in range(k)])
        if len(body) > n:
            break
        best = body
        k += 1
    if best is None:  # too short for a tree: load the number, allow
        best = [ins(BPF_LD | BPF_W | BPF_ABS, 0)]
    return best + [ins(BPF_RET | BPF_K, RET_ALLOW)] * (n - len(best))


def synth(n, compat=None):
    head = 6  # ld arch; jeq x86-64; ja native; jeq i386; ja compat; ret ALLOW
    if compat is None:
        compat = (n - head) // 3
    native = block(n - head - compat)
    comp = block(compat)
    prog = [
        ins(BPF_LD | BPF_W | BPF_ABS, 4),  # seccomp_data.arch
        ins(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, jt=0, jf=1),
        ins(BPF_JMP | BPF_JA, 3),  # to the native block
        ins(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_I386, jt=0, jf=1),
        ins(BPF_JMP | BPF_JA, 1 + len(native)),  # to the compat block
        ins(BPF_RET | BPF_K, RET_ALLOW),  # another arch
    ] + native + comp
    assert len(prog) == n, (len(prog), n)
    return b"".join(struct.pack("=HBBI", *i) for i in prog)


def shape(raw):
    """(count, length of the i386 block) of a program laid out as csbox's."""
    prog = [struct.unpack("=HBBI", raw[i:i + 8]) for i in range(0, len(raw), 8)]
    n = len(prog)
    ja = [i for i in range(6) if prog[i][0] == BPF_JMP | BPF_JA]
    arch = [prog[i - 1][3] for i in ja]
    if len(ja) != 2 or AUDIT_ARCH_I386 not in arch:
        raise SystemExit("shape: not laid out as csbox's filter (%d instructions)" % n)
    starts = {a: i + 1 + prog[i][3] for i, a in zip(ja, arch)}
    s32 = starts[AUDIT_ARCH_I386]
    after = [v for v in starts.values() if v > s32]
    return n, (min(after) if after else n) - s32


def attach_time(path, reps=200):
    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    libc = ctypes.CDLL(None, use_errno=True)
    data = open(path, "rb").read()
    buf = ctypes.create_string_buffer(data, len(data))
    prog = Fprog(len(data) // 8, ctypes.cast(buf, ctypes.c_void_p))
    r, w = os.pipe()
    out = []
    for _ in range(reps):
        pid = os.fork()
        if pid == 0:
            libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
            t0 = time.perf_counter_ns()
            rc = libc.prctl(22, 2, ctypes.byref(prog), 0, 0)  # PR_SET_SECCOMP, MODE_FILTER
            t1 = time.perf_counter_ns()
            os.write(w, (b"%d" % (t1 - t0 if rc == 0 else -1)).ljust(16))
            os._exit(0)
        os.waitpid(pid, 0)
        out.append(int(os.read(r, 16)))
    if min(out) < 0:
        raise SystemExit("attach: the kernel refused %s" % path)
    return statistics.median(out) / 1000


PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT = 17, 0x4206, 0x4207
PTRACE_SECCOMP_GET_FILTER = 0x420C


def filter_of(pid):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    libc.ptrace.restype = ctypes.c_long
    if libc.ptrace(PTRACE_SEIZE, pid, None, None) != 0:
        raise OSError(ctypes.get_errno(), f"PTRACE_SEIZE {pid}")
    try:
        libc.ptrace(PTRACE_INTERRUPT, pid, None, None)
        os.waitpid(pid, 0x40000000)  # __WALL: the tracee is stopped
        n = libc.ptrace(PTRACE_SECCOMP_GET_FILTER, pid, None, None)
        if n < 0:
            raise OSError(ctypes.get_errno(), f"PTRACE_SECCOMP_GET_FILTER {pid} (no filter?)")
        buf = ctypes.create_string_buffer(n * 8)
        libc.ptrace(PTRACE_SECCOMP_GET_FILTER, pid, None, buf)
        return n, buf.raw
    finally:
        libc.ptrace(PTRACE_DETACH, pid, None, None)


def main(argv):
    if len(argv) == 3 and argv[1] == "length":
        print(filter_of(int(argv[2]))[0])
    elif len(argv) == 3 and argv[1] == "shape":
        print("%d %d" % shape(filter_of(int(argv[2]))[1]))
    elif len(argv) == 4 and argv[1] == "dump":
        open(argv[3], "wb").write(filter_of(int(argv[2]))[1])
    elif len(argv) in (4, 5) and argv[1] == "synth":
        compat = int(argv[4]) if len(argv) == 5 else None
        open(argv[3], "wb").write(synth(int(argv[2]), compat))
    elif len(argv) >= 3 and argv[1] == "attach":
        for p in argv[2:]:
            print("%s: %d instructions, attach %.1f µs (median)" % (p, os.path.getsize(p) // 8, attach_time(p)))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
