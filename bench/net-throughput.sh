#!/usr/bin/env bash
# A download from a loopback server on the host through csbox's proxy (CONNECT, from inside
# `csbox run`) against the same download with `--net host` (no proxy, the host's loopback
# directly), both from inside csbox, ROUNDS rounds interleaved; issue 14's goal is that the
# proxied download runs at >= 80% of the direct one. Also says where the CPU goes: the
# server, the client and the supervisor (whose relay thread splices the bytes) each report
# their CPU time, and with 2 cores a third busy party shows up in the wall time.
#
#   bench/net-throughput.sh [SIZE_MIB [ROUNDS]]     default 1024 MiB, 5 rounds
#
# Two clients: netbench.py fetch (Python, recv_into one 1 MiB buffer: little CPU per byte)
# and curl (its 16 KiB default buffer: a real tool). And, for scale, the same fetch on the
# host without csbox, directly and through a minimal splice(2) relay (netbench.py relay,
# 64 KiB and 1 MiB pipes): what one more TCP hop over loopback costs any proxy here. As root it runs as BENCH_USER
# (csbox-test); STRACE=1 adds one proxied round under `strace -f -c` (system call counts of
# the supervisor and the sandbox together: splice/poll are the proxy's, recvfrom the
# client's), slow by nature, so not timed.
set -euo pipefail
SCRIPT="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
SIZE_MIB="${1:-1024}"
ROUNDS="${2:-5}"

if [ "${3:-}" != "--as-user" ]; then
  cd "$(dirname "$SCRIPT")/.."
  command -v python3 >/dev/null || { echo "needs python3" >&2; exit 1; }
  cargo build --release --quiet --locked
  BIN="$PWD/${CARGO_TARGET_DIR:-target}/release/csbox"
  WORK="$(mktemp -d "${BENCH_DIR:-/var/tmp}/csbox-net-bench.XXXXXX")"
  chmod 755 "$WORK"
  trap 'chmod -R u+rwx "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
  cp "$BIN" "$WORK/csbox"
  cp "$SCRIPT" bench/netbench.py "$WORK/"
  chmod 755 "$WORK"/*
  if [ "$(id -u)" = 0 ]; then
    U="${BENCH_USER:-csbox-test}"
    id "$U" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$U"
    chown "$U": "$WORK"
    cd /
    runuser -u "$U" -- env WORK="$WORK" STRACE="${STRACE:-}" bash "$WORK/net-throughput.sh" "$SIZE_MIB" "$ROUNDS" --as-user
  else
    WORK="$WORK" bash "$WORK/net-throughput.sh" "$SIZE_MIB" "$ROUNDS" --as-user
  fi
  exit
fi

export HOME="$WORK/home" CSBOX_NO_UPDATE=1 PATH=/usr/local/bin:/usr/bin:/bin
mkdir -p "$HOME/.claude" "$HOME/proj"
cp "$WORK/netbench.py" "$HOME/proj/"
cd "$HOME/proj"
C="$WORK/csbox"
NB="python3 netbench.py"
SIZE=$((SIZE_MIB << 20))

python3 "$WORK/netbench.py" serve-bytes "$WORK/port" "$SIZE" &
SRV=$!
trap 'kill $SRV 2>/dev/null; chmod -R u+rwx "$WORK" 2>/dev/null' EXIT
for _ in $(seq 100); do [ -s "$WORK/port" ] && break; sleep 0.05; done
P=$(cat "$WORK/port")
T="127.0.0.1:$P"
python3 "$WORK/netbench.py" relay "$WORK/relay64k.port" "$T" 0 &
R1=$!
python3 "$WORK/netbench.py" relay "$WORK/relay1m.port" "$T" 1048576 &
R2=$!
trap 'kill $SRV $R1 $R2 2>/dev/null; chmod -R u+rwx "$WORK" 2>/dev/null' EXIT
for _ in $(seq 100); do [ -s "$WORK/relay64k.port" ] && [ -s "$WORK/relay1m.port" ] && break; sleep 0.05; done
load() { echo "$(uptime | sed 's/.*load average/load average/'); pressure: cpu $(awk '/^some/ {print $2}' /proc/pressure/cpu 2>/dev/null)"; }
echo "## Throughput through the proxy: $SIZE_MIB MiB from a loopback server, $ROUNDS rounds"
echo
echo "$(date -u +%Y-%m-%dT%H:%MZ), $(uname -r), $(nproc) cores. Load before: $(load)"
echo

srv_cpu() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$SRV/stat"; }
# one CASE: prints `seconds client_cpu supervisor_cpu server_cpu`
one() {
  local s0 out
  s0=$(srv_cpu)
  case "$1" in
    proxy) out=$($NB cpu "$WORK/cpu" "$C" run --allow-host "$T" -- $NB fetch "$T" 127.0.0.1:3128) ;;
    direct) out=$($NB cpu "$WORK/cpu" "$C" run --net host -- $NB fetch "$T") ;;
    curl-proxy) out=$($NB cpu "$WORK/cpu" "$C" run --allow-host "$T" -- curl -sS --noproxy '' -p \
        -x http://127.0.0.1:3128 -o /dev/null -w '%{size_download} %{time_total} - -\n' "http://$T/") ;;
    curl-direct) out=$($NB cpu "$WORK/cpu" "$C" run --net host -- curl -sS -o /dev/null \
        -w '%{size_download} %{time_total} - -\n' "http://$T/") ;;
    host-direct) out=$($NB cpu "$WORK/cpu" $NB fetch "$T") ;;
    host-relay64k) out=$($NB cpu "$WORK/cpu" $NB fetch "127.0.0.1:$(cat "$WORK/relay64k.port")") ;;
    host-relay1m) out=$($NB cpu "$WORK/cpu" $NB fetch "127.0.0.1:$(cat "$WORK/relay1m.port")") ;;
  esac
  read -r bytes secs cu cs <<<"$out"
  [ "$bytes" = "$SIZE" ] || { echo "$1: got $bytes bytes of $SIZE" >&2; exit 1; }
  read -r _ su ss <"$WORK/cpu"
  python3 -c 'import sys; a=sys.argv[1:]; f=lambda x: 0.0 if x == "-" else float(x)
print("%s %.3f %s %.3f %.3f" % (a[0], float(a[1]), "-" if a[2] == "-" else "%.3f" % (f(a[2]) + f(a[3])), float(a[4]) + float(a[5]), float(a[7]) - float(a[6])))' \
    "$1" "$secs" "$cu" "$cs" "$su" "$ss" "$s0" "$(srv_cpu)"
}

CASES=(proxy direct curl-proxy curl-direct host-direct host-relay64k host-relay1m)
for c in "${CASES[@]}"; do one "$c" >/dev/null; done   # warm-up
: > "$WORK/rounds"
for _ in $(seq "$ROUNDS"); do
  for c in "${CASES[@]}"; do one "$c" >> "$WORK/rounds"; done
done
echo "Load after: $(load)"
echo

python3 - "$WORK/rounds" "$SIZE" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
size = int(sys.argv[2])
by = {}
for case, secs, ccpu, scpu, srv in rows:
    by.setdefault(case, []).append((float(secs), ccpu, float(scpu), float(srv)))
def med(case, i):
    v = [r[i] for r in by[case] if r[i] != "-"]
    return statistics.median(float(x) for x in v) if v else None
print("| case | median time | median rate | client CPU | supervisor CPU | server CPU |")
print("|---|---:|---:|---:|---:|---:|")
names = {"proxy": "netbench fetch, through the proxy (CONNECT)", "direct": "netbench fetch, `--net host`",
         "curl-proxy": "curl -p, through the proxy (CONNECT)", "curl-direct": "curl, `--net host`",
         "host-direct": "no csbox: netbench fetch on the host", "host-relay64k": "no csbox: through a splice relay, 64 KiB pipe",
         "host-relay1m": "no csbox: through a splice relay, 1 MiB pipe"}
for case in names:
    t = med(case, 0)
    c = med(case, 1)
    print("| %s | %.3f s | %.0f MiB/s | %s | %.2f s | %.2f s |" % (
        names[case], t, size / t / 2**20, "%.2f s" % c if c is not None else "–", med(case, 2), med(case, 3)))
print()
for a, b, what in [("proxy", "direct", "netbench"), ("curl-proxy", "curl-direct", "curl")]:
    r = med(b, 0) / med(a, 0)
    print("- %s: proxied rate / direct rate = **%.2f** (goal ≥ 0.80): %s" % (what, r, "**met**" if r >= 0.8 else "**not met**"))
for a in ["host-relay64k", "host-relay1m"]:
    print("- for scale, %s / host direct = %.2f" % (names[a].replace("no csbox: ", ""), med("host-direct", 0) / med(a, 0)))
print()
print("The \"supervisor CPU\" of the no-csbox lines is the fetch process's own. Supervisor CPU is csbox's (all its threads: the proxy splices in one relay thread for all tunnels) "
      "over the whole `csbox run`, startup included (a few ms). The client's is its own "
      "getrusage (curl does not report it). The server's is its process's CPU during the round.")
PY

if [ -n "${STRACE:-}" ]; then
  echo
  echo "### One proxied round under strace -f -c (counts, not times)"
  echo '```'
  strace -f -c -o "$WORK/strace" "$C" run --allow-host "$T" -- $NB fetch "$T" 127.0.0.1:3128 >/dev/null
  head -20 "$WORK/strace"
  echo '```'
fi
