#!/usr/bin/env python3
"""Where a launch's time goes, from CSBOX_TRACE=1 (bench/startup.sh's breakdown).

  trace.py RUNS LABEL 'CMD ...' [LABEL 'CMD ...' ...]

Runs each command RUNS times, interleaved (run 1 of every command, then run 2, ...), with
CSBOX_TRACE=1, and prints one markdown table: a row per phase, a column per command, the
median in microseconds, the biggest phase (of the first command) first.

csbox prints `csbox-trace: PHASE MICROSECONDS` at exit, one line per mark, in time order,
each the time since the mark before it on one timeline that merges the supervisor and the
sandbox's processes (the child writes its stage times into a shared page). So a child
stage that runs while the supervisor is still returning from clone(2) is counted once, in
whichever comes first; the first mark after "prepare" holds the clone(2) system call itself
(creating the namespaces), and is also shown on its own row. The trace starts at main():
what comes before (execve, the dynamic loader, Rust's runtime start) and after the report
(exit) is the row "outside the trace": the wall time this script measures around the
process, minus the traced total, minus the same wall time of /bin/true (the cost of
starting any process from here).
"""
import os
import shlex
import statistics
import subprocess
import sys
import time

PREPARE = "prepare (plan to syscalls, seccomp filter)"
CLONE_ROW = "= clone(2) itself (the first mark after prepare)"
TOTAL = "traced total (main() to the last mark)"
OUTSIDE = "outside the trace (exec, loader, runtime start, exit)"
WALL = "wall time from fork to reap (this script)"


def once(argv, env):
    t0 = time.perf_counter_ns()
    p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    wall = (time.perf_counter_ns() - t0) / 1000
    if p.returncode != 0:
        raise SystemExit("trace.py: %s failed (%d): %s" % (argv, p.returncode,
                                                           p.stderr.decode(errors="replace")))
    phases = []
    for line in p.stderr.decode(errors="replace").splitlines():
        if line.startswith("csbox-trace: "):
            name, _, us = line[len("csbox-trace: "):].rpartition(" ")
            phases.append((name, int(us)))
    return wall, phases


def main(argv):
    if len(argv) < 4 or len(argv) % 2:
        raise SystemExit(__doc__)
    runs = int(argv[1])
    cases = [(argv[i], shlex.split(argv[i + 1])) for i in range(2, len(argv), 2)]
    env = dict(os.environ, CSBOX_TRACE="1")
    # per case: {phase: [us, ...]}, in first-seen order
    data = [dict() for _ in cases]
    true_wall = []
    for _ in range(runs):
        true_wall.append(once(["/bin/true"], env)[0])
        for k, (_, cmd) in enumerate(cases):
            wall, phases = once(cmd, env)
            d = data[k]
            total = sum(us for _, us in phases)
            for i, (name, us) in enumerate(phases):
                d.setdefault(name, []).append(us)
                if i > 0 and phases[i - 1][0] == PREPARE:
                    d.setdefault(CLONE_ROW, []).append(us)
            d.setdefault(TOTAL, []).append(total)
            d.setdefault(WALL, []).append(wall)
            d.setdefault("_outside", []).append(wall - total)
    tw = statistics.median(true_wall)
    for d in data:
        d[OUTSIDE] = [max(0.0, x - tw) for x in d.pop("_outside")]

    med = [{k: statistics.median(v) for k, v in d.items()} for d in data]
    special = [CLONE_ROW, OUTSIDE, TOTAL, WALL]
    names = []
    for d in data:
        for n in d:
            if n not in names and n not in special:
                names.append(n)
    first = med[0]
    # the share outside the trace is placed by its size, like a phase
    big = names + [OUTSIDE]
    big.sort(key=lambda n: -first.get(n, -1))
    labels = [c[0] for c in cases]
    print("| phase (median µs of %d runs) | %s |" % (runs, " | ".join(labels)))
    print("|---|%s" % ("---:|" * len(labels)))

    def cell(m, n):
        return "%.0f" % m[n] if n in m else "–"

    for n in big:
        print("| %s | %s |" % (n, " | ".join(cell(m, n) for m in med)))
    for n in [CLONE_ROW, TOTAL, WALL]:
        print("| %s | %s |" % (n, " | ".join(cell(m, n) for m in med)))
    print("| /bin/true, the same way | %s |" % " | ".join("%.0f" % tw for _ in med))
    print()
    print("Each phase's median is taken on its own, so the medians do not add up to the "
          "median total exactly. `%s` is included in the row of whichever mark follows "
          "prepare (usually `child: die-with-parent`)." % CLONE_ROW.lstrip("= "))


if __name__ == "__main__":
    main(sys.argv)
