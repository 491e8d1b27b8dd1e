#!/usr/bin/env bash
# What hiding the host's listening Unix sockets costs csbox: `csbox run --rm -- true` and
# `csbox run --dry-run` with N sockets listening from one process, in a directory csbox
# hides them in (/srv) and in one that is private already (/run). As root (it makes the
# sockets there), measuring as BENCH_USER (default csbox-test):
#
#   cargo build --release && bench/host-sockets.sh        (N: 0 1000 10000)
#
# Environment: CSBOX (default target/release/csbox), RUNS (default 15), BENCH_USER.
set -euo pipefail
cd "$(dirname "$0")/.."
CSBOX="$(realpath "${CSBOX:-target/release/csbox}")"
RUNS="${RUNS:-15}"
USER_="${BENCH_USER:-csbox-test}"
[ "$(id -u)" = 0 ] || { echo "run as root: the sockets go under /srv and /run" >&2; exit 2; }
command -v perf >/dev/null || { echo "needs perf (apt-get install linux-perf)" >&2; exit 2; }
work="$(mktemp -d /var/tmp/csbox-sockets.XXXXXX)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/home/proj" && chown -R "$USER_" "$work"
cat > "$work/listen.py" <<'PY'
import os, resource, socket, sys, time
n, d = int(sys.argv[1]), sys.argv[2]
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 100, n + 100))
os.makedirs(d, exist_ok=True)
keep = []
for i in range(n):
    s = socket.socket(socket.AF_UNIX)
    p = f"{d}/s{i}.sock"
    s.bind(p); s.listen(1); os.chmod(p, 0o666); keep.append(s)
open(d + ".ready", "w").close()
time.sleep(3600)
PY
mean() { # ARGS...: the mean wall time of csbox ARGS as the user, in ms
  (cd "$work/home/proj" && perf stat -r "$RUNS" runuser -u "$USER_" -- env HOME="$work/home" CSBOX_NO_UPDATE=1 "$CSBOX" "$@" 2>&1 >/dev/null) |
    awk '/elapsed/ { printf "%.0f ms", $1 * 1000 }'
}
echo "| listening sockets | where | hidden | run -- true | run --dry-run |"
echo "|---|---|---|---|---|"
for n in 0 1000 10000; do
  for d in /srv /run; do
    [ "$n" = 0 ] && [ "$d" = /run ] && continue
    dir="$d/csbox-sockets-bench" pid=
    if [ "$n" -gt 0 ]; then
      python3 "$work/listen.py" "$n" "$dir" & pid=$!
      while [ ! -e "$dir.ready" ]; do sleep 0.1; done
    fi
    hidden=$(cd "$work/home/proj" && runuser -u "$USER_" -- env HOME="$work/home" CSBOX_NO_UPDATE=1 "$CSBOX" run --dry-run -- true |
      python3 -c 'import json, sys; print(sum(m["op"] == "hide" for m in json.load(sys.stdin)["mounts"]))')
    echo "| $n | $d | $hidden | $(mean run --rm -- true) | $(mean run --dry-run -- true) |"
    [ -n "$pid" ] && kill "$pid"
    rm -rf "$dir" "$dir.ready"
  done
done
