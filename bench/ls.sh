#!/usr/bin/env bash
# How long `csbox ls` (and `ls --json`, `ls --size`) takes over a store of N sessions.
# Usage: bench/ls.sh [N]   (default 10000). Builds csbox in release mode if needed.
# CSBOX_OLD=PATH: also time that binary on the same store, side by side in the same hyperfine
# run, and print new/old ratios (to check that a change did not slow `ls` down).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-10000}"
cargo build --release --quiet
BIN="$PWD/target/release/csbox"
WORK="$(mktemp -d /var/tmp/csbox-ls-bench.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
export HOME="$WORK/home" SESSIONS_DIR="$WORK/store"
mkdir -p "$HOME/.claude" "$SESSIONS_DIR/active"
echo "building $N sessions in $SESSIONS_DIR ..."
python3 - "$SESSIONS_DIR" "$N" <<'PY'
import json, os, sys, time, uuid
store, n = sys.argv[1], int(sys.argv[2])
t0 = int(time.time() * 1000) - n * 1000
for i in range(n):
    ms = t0 + i * 1000
    # a UUIDv7: 48-bit ms timestamp, version 7, variant 10
    r = int.from_bytes(os.urandom(10), "big")
    u = (ms << 80) | (0x7 << 76) | ((r >> 68) & 0xFFF) << 64 | (0b10 << 62) | (r & ((1 << 62) - 1))
    sid = str(uuid.UUID(int=u))
    d = os.path.join(store, sid)
    os.makedirs(os.path.join(d, "state", "sessions"))
    os.makedirs(os.path.join(d, "work"))
    open(os.path.join(d, "lock"), "w").close()
    with open(os.path.join(d, "state", "history.jsonl"), "w") as f:
        f.write('{"display":"x"}\n')
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + ".000Z"
    meta = {"version": 1, "id": sid, "name": f"s{i}", "profile": "default", "command": ["claude"],
            "cwd": "/home/u/p", "created": ts, "started": ts, "ended": ts, "exit": {"code": 0},
            "supervisor_pid": 1, "boot_id": "x", "runs": 1}
    with open(os.path.join(d, "session.json"), "w") as f:
        json.dump(meta, f)
PY
"$BIN" ls | head -3 || true  # csbox ls ends on the closed pipe (SIGPIPE)
echo "sessions listed: $(( $("$BIN" ls | wc -l) - 1 ))"
if [ -n "${CSBOX_OLD:-}" ]; then
  command -v hyperfine >/dev/null || { echo "CSBOX_OLD needs hyperfine" >&2; exit 1; }
  echo "sessions listed by the old binary: $(( $("$CSBOX_OLD" ls | wc -l) - 1 ))"
  hyperfine --warmup 2 --runs "${RUNS:-10}" -N --export-json "$WORK/ls.json" \
    -n "new ls" "$BIN ls" -n "old ls" "$CSBOX_OLD ls" \
    -n "new ls --json" "$BIN ls --json" -n "old ls --json" "$CSBOX_OLD ls --json" \
    -n "new ls --size" "$BIN ls --size" -n "old ls --size" "$CSBOX_OLD ls --size"
  python3 - "$WORK/ls.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
print("| command | new median | old median | new/old (median) | new/old (system CPU) |")
print("|---|---:|---:|---:|---:|")
for a in ["ls", "ls --json", "ls --size"]:
    n, o = r["new " + a], r["old " + a]
    print("| `csbox %s` | %.0f ms | %.0f ms | %.2f | %.2f |" % (a, n["median"] * 1e3, o["median"] * 1e3,
          n["median"] / o["median"], n["system"] / o["system"]))
PY
elif command -v hyperfine >/dev/null; then
  hyperfine --warmup 2 --runs 10 -N "$BIN ls" "$BIN ls --json" "$BIN ls --size"
else
  for args in "ls" "ls --json" "ls --size"; do
    s=$(date +%s%N); "$BIN" $args >/dev/null; e=$(date +%s%N)
    echo "csbox $args: $(( (e - s) / 1000000 )) ms"
  done
fi
