#!/usr/bin/env bash
# Compare `csbox gc` with `rm -rf` on the same store, side by side.
#
#   bench/gc.sh [SESSIONS [FILES [RUNS]]]      default: 10000 sessions, 1000000 files, 3 runs
#
# Before every timed run the store is rebuilt: SESSIONS exited sessions, 30 days idle,
# holding FILES files in total (transcripts, todos, shell snapshots, file history), each
# with an overlay work/work dir left mode 000, as real sessions are. gc removes them all
# (they are old); `rm -rf` removes the same trees. Uses hyperfine when installed
# (apt-get install hyperfine), plain timing otherwise; python3 builds the trees.
# BENCH_DIR (default /var/tmp/csbox-gc-bench) must be on a local disk with room (~5G).
# The full default takes ~17 minutes on a 2-core VM with a slow disk (each rebuild of
# 1M files ~2 min, each removal 2-6 min); `bench/gc.sh 1000 100000 3` takes ~6.
# CSBOX_OLD=PATH: also time that binary's gc on the same rebuilt store, in the same hyperfine
# run, and print the new/old ratio (wall and kernel CPU; needs hyperfine).
set -euo pipefail

build() { # build STORE SESSIONS FILES
  rm -rf "$1"
  python3 - "$1" "$2" "$3" <<'PY'
import json, os, random, sys, time
store, n, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
per = max(total // n - 4, 0)  # besides session.json, lock, .claude.json, history.jsonl
dirs = ["projects/-home-u-proj", "todos", "shell-snapshots", "file-history/f"]
body = b"x" * 200
now = time.time()
ended = now - 30 * 86400
def rfc(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".000Z"
os.makedirs(store + "/active", mode=0o700)
for i in range(n):
    ms = int((ended - 3600) * 1000) + i
    r = random.getrandbits(74)
    h = "%012x7%03x%04x%012x" % (ms, r >> 62, 0x8000 | ((r >> 48) & 0x3FFF), r & 0xFFFFFFFFFFFF)
    sid = "-".join([h[:8], h[8:12], h[12:16], h[16:20], h[20:]])
    d = os.path.join(store, sid)
    os.makedirs(d + "/state/sessions")
    for sub in dirs:
        os.makedirs(d + "/state/" + sub)
    os.makedirs(d + "/work/work")
    meta = {"version": 1, "id": sid, "profile": "default", "command": ["claude"], "cwd": "/home/u/proj",
            "created": rfc(ended - 3600), "started": rfc(ended - 3600), "ended": rfc(ended),
            "exit": {"code": 0}, "runs": 1}
    with open(d + "/session.json", "w") as f:
        json.dump(meta, f)
    open(d + "/lock", "w").close()
    for name in ("state/.claude.json", "state/history.jsonl"):
        with open(os.path.join(d, name), "wb") as f:
            f.write(body)
    for k in range(per):
        with open("%s/state/%s/%d" % (d, dirs[k % len(dirs)], k), "wb") as f:
            f.write(body)
    os.chmod(d + "/work/work", 0)
    os.utime(d, (ended, ended))
PY
  sync
}

# seconds since $1 (a `date +%s.%N`), without needing bc
since() { python3 -c 'import sys, time; print("%.2f" % (time.time() - float(sys.argv[1])))' "$1"; }

if [ "${1:-}" = "--build" ]; then
  shift
  build "$@"
  exit 0
fi

SESSIONS=${1:-10000}
FILES=${2:-1000000}
RUNS=${3:-3}
ROOT=${BENCH_DIR:-/var/tmp/csbox-gc-bench}
cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { echo "bench/gc.sh needs python3 (apt-get install python3)" >&2; exit 1; }
cargo build --release --quiet
CSBOX=$(realpath "${CARGO_TARGET_DIR:-target}/release/csbox")
STORE=$ROOT/sessions
mkdir -p "$ROOT"
GC="env -i HOME=$ROOT SESSIONS_DIR=$STORE $CSBOX gc"
PREP="bash $PWD/bench/gc.sh --build $STORE $SESSIONS $FILES"

echo "== $SESSIONS sessions, $FILES files, in $STORE"
start=$(date +%s.%N)
$PREP
echo "   building the tree takes $(since "$start") s"
echo "== sanity: gc removes every session"
$GC
left=$(find "$STORE" -mindepth 1 -maxdepth 1 ! -name active | wc -l)
[ "$left" -eq 0 ] || { echo "gc left $left entries" >&2; exit 1; }

if command -v hyperfine >/dev/null; then
  old=()
  if [ -n "${CSBOX_OLD:-}" ]; then
    echo "== sanity: the old binary's gc removes every session"
    $PREP
    env -i HOME="$ROOT" SESSIONS_DIR="$STORE" "$CSBOX_OLD" gc
    left=$(find "$STORE" -mindepth 1 -maxdepth 1 ! -name active | wc -l)
    [ "$left" -eq 0 ] || { echo "the old gc left $left entries" >&2; exit 1; }
    old=(-n "csbox gc (old)" "env -i HOME=$ROOT SESSIONS_DIR=$STORE $CSBOX_OLD gc")
  fi
  hyperfine --runs "$RUNS" --prepare "$PREP" --export-json "$ROOT/result.json" \
    -n "csbox gc" "$GC" \
    "${old[@]}" \
    -n "rm -rf" "rm -rf $STORE"
  python3 - "$ROOT/result.json" <<'PY'
import json, sys
x = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
r = {k: v["mean"] for k, v in x.items()}
print("gc / rm -rf = %.2f  (gc %.2f s, rm -rf %.2f s)" % (r["csbox gc"] / r["rm -rf"], r["csbox gc"], r["rm -rf"]))
if "csbox gc (old)" in r:
    n, o = x["csbox gc"], x["csbox gc (old)"]
    print("gc new / old = %.2f wall (new %.2f s, old %.2f s), %.2f kernel CPU (new %.2f s, old %.2f s), %.2f user CPU"
          % (n["mean"] / o["mean"], n["mean"], o["mean"], n["system"] / o["system"], n["system"], o["system"],
             n["user"] / o["user"]))
    print("kernel CPU: rm -rf %.2f s" % x["rm -rf"]["system"])
PY
else
  echo "(hyperfine not installed: plain timing)"
  gc_t=(); rm_t=()
  for _ in $(seq "$RUNS"); do
    $PREP; s=$(date +%s.%N); $GC >/dev/null; gc_t+=("$(since "$s")")
    $PREP; s=$(date +%s.%N); rm -rf "$STORE"; rm_t+=("$(since "$s")")
  done
  python3 - "${gc_t[*]}" "${rm_t[*]}" <<'PY'
import sys
g, r = (sum(map(float, a.split())) for a in sys.argv[1:3])
print("gc / rm -rf = %.2f  (gc %s s, rm -rf %s s)" % (g / r, sys.argv[1], sys.argv[2]))
PY
fi
rm -rf "$ROOT"
