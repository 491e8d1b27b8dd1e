#!/usr/bin/env bash
# Startup time of `csbox run -- /bin/true` against bubblewrap with the same isolation,
# side by side in one hyperfine run, as an unprivileged user. Prints a markdown table and
# the csbox/bwrap ratio. One command on a fresh Debian/Ubuntu machine:
#
#   bench/startup.sh            (as root it runs the measurement as user csbox-test,
#                                creating it if needed; as a user it runs as you)
#
# Environment: RUNS (default 100), WARMUP (default 10), BENCH_USER (default csbox-test),
# BENCH_DIR (where the fake home and the session store live; default /var/tmp). A tmpfs
# there takes the disk out of the csbox lines, which write session records and bwrap does
# not: `mkdir -p /mnt/b && mount -t tmpfs tmpfs /mnt/b && BENCH_DIR=/mnt/b bench/startup.sh`
# (not /tmp or /dev/shm: the sandbox has its own).
set -euo pipefail
SCRIPT="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
[ "${1:-}" = "--as-user" ] || cd "$(dirname "$SCRIPT")/.."
RUNS="${RUNS:-100}"
WARMUP="${WARMUP:-10}"

if [ "${1:-}" != "--as-user" ]; then
need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v hyperfine >/dev/null || need+=(hyperfine)
command -v unshare >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
command -v pgrep >/dev/null || need+=(procps)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "missing: ${need[*]} (sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
fi
cargo build --release --quiet --locked
BIN="$PWD/target/release/csbox"
fi

if [ "$(id -u)" = 0 ]; then
  BENCH_USER="${BENCH_USER:-csbox-test}"
  id "$BENCH_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$BENCH_USER"
  WORK="$(mktemp -d "${BENCH_DIR:-/var/tmp}/csbox-bench.XXXXXX")"
  chmod 755 "$WORK"
  chown "$BENCH_USER": "$WORK"
  # The binary and this script must be reachable by the user (a checkout under /root is not).
  cp "$BIN" "$WORK/csbox" && chmod 755 "$WORK/csbox"
  cp "$SCRIPT" "$WORK/startup.sh" && chmod 755 "$WORK/startup.sh"
  trap 'rm -rf "$WORK"' EXIT
  cd /
  runuser -u "$BENCH_USER" -- env RUNS="$RUNS" WARMUP="$WARMUP" CSBOX_BIN="$WORK/csbox" WORK="$WORK" bash "$WORK/startup.sh" --as-user
  exit
fi

if [ "${1:-}" != "--as-user" ]; then
  WORK="$(mktemp -d "${BENCH_DIR:-/var/tmp}/csbox-bench.XXXXXX")"
  trap 'rm -rf "$WORK"' EXIT
  CSBOX_BIN="$BIN"
fi

# A realistic ~/.claude: settings, CLAUDE.md, a skill, history, a login.
export HOME="$WORK/home"
mkdir -p "$HOME/.claude/skills/x" "$HOME/.claude/agents" "$HOME/.claude/commands" "$HOME/.claude/plugins" "$HOME/proj"
echo '{"hooks":{}}' > "$HOME/.claude/settings.json"
echo 'be nice' > "$HOME/.claude/CLAUDE.md"
echo '# x' > "$HOME/.claude/skills/x/SKILL.md"
echo '{}' > "$HOME/.claude.json"
echo '{}' > "$HOME/.claude/.credentials.json"
cd "$HOME/proj"
# No background update check in a benchmark (its hot-path cost is one stat(2); the check
# itself runs detached and is measured in the update tests).
export CSBOX_NO_UPDATE=1

# A session to re-use for the bwrap line's state dir, made by csbox itself.
"$CSBOX_BIN" run --name bench-bwrap-state -- /bin/true
STATE="$(ls -d "$HOME"/.local/share/csbox/sessions/0*/state | head -1)"
STORE="$HOME/.local/share/csbox/sessions"
C="$HOME/.claude"

# bubblewrap with csbox's default isolation, flag by flag:
#   --unshare-user --unshare-pid --unshare-ipc --unshare-uts   user/pid/ipc/uts namespaces (own uid)
#   --die-with-parent                                          PR_SET_PDEATHSIG
#   --new-session                                              csbox: the TIOCSTI seccomp filter instead
#   --bind / /                                                 the rest of the file system as the user sees it
#   --bind STATE ~/.claude                                     the session's ~/.claude (bwrap 0.8 has no overlay)
#   --ro-bind ~/.claude/{skills,agents,commands,plugins,settings.json,CLAUDE.md}   shared config read-only
#   --bind ~/.claude/.credentials.json                         the shared login
#   --bind STATE/.claude.json ~/.claude.json                   the session's .claude.json
#   --tmpfs /tmp  --tmpfs STORE                                private /tmp, store hidden
#   --dev /dev  --proc /proc                                   minimal /dev, fresh /proc
#   (capabilities: bwrap drops all in the user namespace by default, like csbox)
BWRAP="bwrap --unshare-user --unshare-pid --unshare-ipc --unshare-uts --die-with-parent --new-session \
 --bind / / --bind $STATE $C \
 --ro-bind $C/skills $C/skills --ro-bind $C/agents $C/agents --ro-bind $C/commands $C/commands \
 --ro-bind $C/plugins $C/plugins --ro-bind $C/settings.json $C/settings.json --ro-bind $C/CLAUDE.md $C/CLAUDE.md \
 --bind $C/.credentials.json $C/.credentials.json --bind $STATE/.claude.json $HOME/.claude.json \
 --tmpfs /tmp --tmpfs $STORE --dev /dev --proc /proc /bin/true"
$BWRAP  # it works before it is timed

OUT="$WORK/hyperfine.json"
hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$OUT" \
  -n "csbox run -- /bin/true" "$CSBOX_BIN run -- /bin/true" \
  -n "csbox run --rm -- /bin/true" "$CSBOX_BIN run --rm -- /bin/true" \
  -n "csbox run --profile compat -- /bin/true" "$CSBOX_BIN run --profile compat -- /bin/true" \
  -n "bwrap (same isolation)" "$BWRAP" \
  -n "unshare -Urm /bin/true" "unshare -Urm /bin/true" \
  -n "/bin/true" "/bin/true" >/dev/null 2>"$WORK/hyperfine.err" || { cat "$WORK/hyperfine.err"; exit 1; }

python3 - "$OUT" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
bw = r["bwrap (same isolation)"]["mean"]
print("| command | mean | σ | vs bwrap |")
print("|---|---|---|---|")
for name, x in r.items():
    print(f"| `{name}` | {x['mean']*1e3:.2f} ms | {x['stddev']*1e3:.2f} ms | {x['mean']/bw:.2f}× |")
cs = r["csbox run -- /bin/true"]["mean"]
print()
print(f"csbox/bwrap ratio: {cs/bw:.2f} (goal ≤ 0.80)")
PY

# Memory while a session runs: the supervisor outside and pid 1 inside (VmRSS).
"$CSBOX_BIN" run --rm -- sleep 3 &
SUP=$!
for _ in $(seq 50); do PID1=$(pgrep -P "$SUP" | head -1 || true); [ -n "$PID1" ] && break; sleep 0.05; done
sleep 0.5
rss() { awk '/^VmRSS/ {printf "%.1f MiB", $2 / 1024}' "/proc/$1/status"; }
if [ -n "${PID1:-}" ]; then
  echo "RSS while a session runs: supervisor $(rss "$SUP"), pid 1 inside $(rss "$PID1")"
else
  echo "RSS: pid 1 of the session was not found within 2.5 s" >&2
fi
wait "$SUP"
