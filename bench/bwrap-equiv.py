#!/usr/bin/env python3
"""bubblewrap doing what a csbox plan does, for bench/startup.sh.

  bwrap-equiv.py PLAN.json SESSION_DIR [--seccomp FD] [--share-net] [--explain FILE] -- CMD...
  bwrap-equiv.py show EXPLAIN [BASE_EXPLAIN]

PLAN.json is `csbox run --dry-run --profile P -- CMD` (every mount the native launcher makes,
the namespaces, the seccomp rules, the network plan). SESSION_DIR is an existing session
made by csbox, standing in for the plan's session paths (the plan names a session that
does not exist yet). Prints the bwrap command line on stdout, one flag or flag group per
plan step, in the plan's order; --explain FILE writes each flag with the csbox step it
stands for (and the steps bwrap 0.8 cannot do, which csbox pays for and bwrap does not).
--share-net: keep the host's network (the line matching `csbox run --net host`).
`show` prints an --explain file as commented flags, or only where it differs from another.
"""
import json
import os
import shlex
import sys


def main(argv):
    if len(argv) in (3, 4) and argv[1] == "show":
        return show(*argv[2:])
    if "--" not in argv:
        raise SystemExit(__doc__)
    cut = argv.index("--")
    args, cmd = argv[1:cut], argv[cut + 1:]
    plan_path, session = args[0], args[1]
    opts = args[2:]
    seccomp_fd = opts[opts.index("--seccomp") + 1] if "--seccomp" in opts else None
    share_net = "--share-net" in opts
    explain = opts[opts.index("--explain") + 1] if "--explain" in opts else None
    plan = json.load(open(plan_path))

    out = ["bwrap"]  # the command
    why = []  # (flags, what csbox does)

    def add(flags, what, shown=None):
        out.extend(flags)
        why.append((shown or " ".join(shlex.quote(f) for f in flags), what))

    def missing(what):
        why.append(("(no flag)", what))

    def src(s):
        return s["host"] if "host" in s else os.path.join(session, s["session"])

    ns = plan["namespaces"]
    flags = []
    for k, flag in [("user", "--unshare-user"), ("pid", "--unshare-pid"), ("ipc", "--unshare-ipc"),
                    ("uts", "--unshare-uts")]:
        if ns.get(k):
            flags.append(flag)
    add(flags, "clone(CLONE_NEWUSER|CLONE_NEWNS|CLONE_NEWPID|CLONE_NEWIPC|CLONE_NEWUTS), "
               "uid/gid mapped to the user's own (bwrap: the same ids by default; a mount "
               "namespace always)")
    if ns.get("net") and not share_net:
        add(["--unshare-net"], "CLONE_NEWNET: the sandbox's own network namespace, lo up "
                               "(bwrap brings lo up too)")
        if plan["network"].get("mode") == "proxy":
            missing("the proxy: pid 1 listens on 127.0.0.1/[::1]:%s and passes each connection "
                    "to the supervisor's proxy thread (bwrap has no way out of its namespace)"
                    % plan["network"].get("proxy_port"))
    if plan.get("die_with_parent"):
        add(["--die-with-parent"], "PR_SET_PDEATHSIG(SIGKILL) in pid 1")
    if plan.get("max_user_namespaces") == 0:
        add(["--disable-userns"], "user.max_user_namespaces=0 inside (no nested user namespaces)")

    for m in plan["mounts"]:
        op = m["op"]
        if op == "make_slave":
            missing("mount --make-rslave / (bwrap does the same unasked)")
        elif op == "host_root":
            add(["--ro-bind", "/", "/"], "the host's / bound recursively, read-only, nosuid, "
                "nodev all the way down, then pivot_root into it (bwrap: the same, on its own "
                "staging tmpfs)")
            add(["--perms", "%o" % m["tmp_mode"], "--tmpfs", "/tmp"],
                "a private tmpfs on /tmp, mode %o" % m["tmp_mode"])
        elif op == "tmpfs":
            f = ["--perms", "%o" % m["mode"]]
            if m.get("size"):
                f += ["--size", str(m["size"])]
            add(f + ["--tmpfs", m["dst"]], "a private tmpfs on %s, mode %o" % (m["dst"], m["mode"]))
        elif op == "mkdir":
            add(["--perms", "%o" % m["mode"], "--dir", m["path"]],
                "mkdir %s, mode %o" % (m["path"], m["mode"]))
        elif op == "overlay":
            dst = m["dst"]
            if "session" in m["upper"] and m["upper"]["session"] == "state":
                add(["--bind", src(m["upper"]), dst],
                    "overlayfs on %s (lower: yours, upper: the session's state): bwrap 0.8 has "
                    "no overlay (0.9 has --overlay), so the session's layer is bound instead"
                    % dst)
            else:
                missing("overlayfs on %s (the copy-on-write home; lower: %s, upper: the "
                        "session's %s): bwrap 0.8 has no overlay, and the home stays read-only "
                        "under --ro-bind / / (csbox pays for this mount, bwrap does not)"
                        % (dst, src(m["lower"]), m["upper"].get("session")))
        elif op == "bind":
            ro = m["flags"]["read_only"]
            add(["--ro-bind" if ro else "--bind", src(m["src"]), m["dst"]],
                "bind %s on %s, %s, nosuid, nodev" % (src(m["src"]), m["dst"],
                                                     "read-only" if ro else "read-write"))
        elif op == "hide":
            dst = m["dst"]
            if not os.path.exists(dst):
                missing("hide %s (absent here)" % dst)
            elif m["kind"] == "dir":
                add(["--perms", "755", "--size", "4096", "--tmpfs", dst, "--remount-ro", dst],
                    "hide %s: an empty read-only tmpfs over it" % dst)
            else:
                add(["--ro-bind", "/dev/null", dst], "hide %s: /dev/null bound read-only over it"
                    % dst)
        elif op == "loopback_up":
            missing("ioctl(SIOCSIFFLAGS, lo, IFF_UP) (bwrap does it with --unshare-net)")
        elif op == "sysfs":
            missing("a fresh sysfs on %s, read-only (bwrap has no sysfs op; the host's /sys is "
                    "already read-only in the --ro-bind / / tree)" % m["dst"])
        elif op == "dev":
            add(["--dev", m["dst"]], "a tmpfs on /dev with %s bound from the host, a private "
                "devpts, the ptmx/fd/stdio links and /dev/shm (bwrap's --dev: the same set)"
                % " ".join(m["nodes"]))
        elif op == "proc":
            add(["--proc", m["dst"]], "a fresh proc on %s (bwrap also binds /proc/sys, "
                "sysrq-trigger, irq and bus read-only)" % m["dst"])
        else:
            raise SystemExit("bwrap-equiv.py: unknown plan op %r" % op)

    if plan.get("new_session_keyring"):
        missing("keyctl(KEYCTL_JOIN_SESSION_KEYRING): a fresh session keyring")
    ll = plan.get("landlock")
    if ll:
        missing("Landlock: %s%s (bwrap has none)" % (
            "writes only beneath %s, " % ", ".join(ll["writable"]) if ll.get("writable") else "",
            "abstract-socket and signal scopes" if ll.get("scope_ipc") else ""))
    if plan.get("no_new_privs"):
        missing("PR_SET_NO_NEW_PRIVS (bwrap sets it unasked)")
    if not plan.get("capabilities"):
        missing("every capability dropped, bounding set too (bwrap: the same unasked)")
    add(["--chdir", plan["cwd"]], "chdir to the project")
    if seccomp_fd is not None:
        n = len(plan["seccomp"]["rules"])
        add(["--seccomp", seccomp_fd], "csbox's seccomp filter (%d rules, %s): here a "
            "program of its size and layout (bench/seccomp-bpf.py)"
            % (n, "32-bit entry points refused" if plan["seccomp"].get("deny_compat_abis")
               else "native, x32 and i386 entry points"), shown="--seccomp FD")
    else:
        missing("csbox's seccomp filter (bwrap line without one: no filter length known)")
    out += ["--"] + cmd
    print(" ".join(shlex.quote(a) for a in out))
    if explain:
        with open(explain, "w") as f:
            for flags, what in why:
                f.write("%s\t%s\n" % (flags, what))


def show(path, base=None):
    """Print an --explain file as commented flags; with BASE, only the entries that differ
    from BASE's (- only in BASE, + only here)."""
    def entries(p):
        return [tuple(line.rstrip("\n").split("\t", 1)) for line in open(p)]
    def put(mark, flags, what):
        if len(flags) <= 38:
            print("%s%-38s # %s" % (mark, flags, what))
        else:
            print("%s%s\n%s%38s # %s" % (mark, flags, mark, "", what))
    mine = entries(path)
    if base is None:
        for flags, what in mine:
            put("", flags, what)
        return
    theirs = entries(base)
    diff = [("- ", e) for e in theirs if e not in mine] + [("+ ", e) for e in mine if e not in theirs]
    for mark, (flags, what) in diff:
        put(mark, flags, what)
    if not diff:
        print("(the same)")


if __name__ == "__main__":
    main(sys.argv)
