#!/usr/bin/env bash
# Startup of `csbox run -- /bin/true` under each profile against bubblewrap doing the same
# containment, side by side in ONE hyperfine run (median of RUNS runs each), as an
# unprivileged user, on a real disk; then where the time goes (CSBOX_TRACE=1, per phase),
# and the supervisor's memory while a session runs (and with 100 proxy tunnels open).
#
#   bench/startup.sh      as root: measures as user csbox-test (created if needed); as a user:
#                         measures as you (then set SECCOMP_LEN_default=… etc., see below)
#
# Environment:
#   RUNS (100)         hyperfine runs per command;  WARMUP (10) runs before each
#   TRACE_RUNS (100)   runs per profile for the per-phase breakdown
#   BENCH_USER         (csbox-test) the user measured, when run as root
#   BENCH_DIR          (/var/tmp) where the home, the project and the session store live: a
#                      real disk. Not /tmp or /dev/shm: the sandbox has its own.
#   TMPFS_STORE        an extra pair of lines with the session store on a tmpfs against the
#                      same store on disk, both through `env SESSIONS_DIR=…` (the only way to
#                      move the store, and env costs one exec, so the pair is compared with
#                      each other, not with the others). As root: on unless TMPFS_STORE=0 (a
#                      tmpfs is mounted for it); as a user: TMPFS_STORE=DIR, a directory on a
#                      tmpfs of yours.
#   OLD_CSBOX          a csbox binary from before the hardening issue (e.g. built from
#                      1423042): as root, an extra bwrap line with a filter of *its* length,
#                      so the two bwrap lines show what the bigger filter costs at startup;
#                      and a compat line of it beside this csbox's (the same work: the
#                      before/after of the architecture issue).
#   SECCOMP           `real`: give bwrap csbox's own seccomp programs (root only) instead of
#                      the synthetic ones of the same shape (the default, see below)
#   SECCOMP_LEN_<profile>  (user runs) the instruction count of csbox's filter under that
#                      profile (default, strict, ci, host for --net host); as root it is read
#                      off a running session (bench/seccomp-bpf.py shape).
#
# As a user, the key quota (kernel.keys.maxkeys, 200) can run out at hyperfine's launch rate
# (each sandbox's fresh session keyring is freed only seconds later): a launch then fails
# with keyctl EDQUOT; as root the script raises the quota while it runs.
#
# The bubblewrap lines are generated from `csbox run --dry-run --profile P` by
# bench/bwrap-equiv.py, one flag per step of csbox's plan, and the script prints each flag
# with what csbox does for it (and what bubblewrap 0.8 cannot do: overlayfs, Landlock, the
# proxy). Their seccomp filter is a synthetic program with csbox's instruction count and
# layout (bench/seccomp-bpf.py synth; its docstring says how it approximates csbox's, and
# the script prints the attach time of both). bwrap reads
# the program from an fd; the fd is opened once here and rewound by hyperfine's --prepare
# before every run of every command (a perl one-liner, not timed, the same for all lines).
set -euo pipefail
SCRIPT="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
RUNS="${RUNS:-100}"
WARMUP="${WARMUP:-10}"
TRACE_RUNS="${TRACE_RUNS:-100}"
MODE="${1:-}"
PROFILES=(default strict ci host)   # host: the default profile with --net host

profile_flags() { # the csbox run flags of a PROFILES entry
  case "$1" in host) echo "--net host" ;; *) echo "--profile $1" ;; esac
}

# --- as the measured user: the home, the project, the bwrap state session, the plans ----
setup_home() {
  export HOME="$WORK/home"
  mkdir -p "$HOME/.claude/skills/x" "$HOME/.claude/agents" "$HOME/.claude/commands" \
    "$HOME/.claude/plugins" "$HOME/proj"
  # A realistic ~/.claude: settings, CLAUDE.md, a skill, a login.
  echo '{"hooks":{}}' > "$HOME/.claude/settings.json"
  echo 'be nice' > "$HOME/.claude/CLAUDE.md"
  echo '# x' > "$HOME/.claude/skills/x/SKILL.md"
  echo '{}' > "$HOME/.claude.json"
  echo '{}' > "$HOME/.claude/.credentials.json"
  # inside the sandbox only the home and the project are visible of $WORK
  cp "$HELPERS/netbench.py" "$HOME/proj/netbench.py"
  cd "$HOME/proj"
  # The bwrap lines bind this session's state where csbox binds the new session's.
  "$CSBOX_BIN" run --name bench-bwrap-state -- /bin/true
  for p in "${PROFILES[@]}"; do
    # shellcheck disable=SC2046
    "$CSBOX_BIN" run $(profile_flags "$p") --dry-run -- /bin/true > "$WORK/plan-$p.json"
  done
}

user_env() {
  export HOME="$WORK/home" CSBOX_NO_UPDATE=1
  # A PATH the user can read (root's may point into /root).
  export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
  cd "$WORK"
}

if [ "$MODE" = "--as-user" ]; then
  user_env
  [ "${2:-}" = setup ] && { setup_home; exit 0; }
fi

# --- preparation (root or a user running it directly) ----------------------------------
if [ "$MODE" != "--as-user" ]; then
  cd "$(dirname "$SCRIPT")/.."
  need=()
  command -v bwrap >/dev/null || need+=(bubblewrap)
  command -v hyperfine >/dev/null || need+=(hyperfine)
  command -v unshare >/dev/null || need+=(util-linux)
  command -v python3 >/dev/null || need+=(python3)
  command -v perl >/dev/null || need+=(perl-base)
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
      echo "missing: ${need[*]} (sudo apt-get install ${need[*]})" >&2
      exit 1
    fi
  fi
  cargo build --release --quiet --locked
  BIN="$PWD/${CARGO_TARGET_DIR:-target}/release/csbox"
  WORK="$(mktemp -d "${BENCH_DIR:-/var/tmp}/csbox-bench.XXXXXX")"
  chmod 755 "$WORK"
  cleanup() {
    if [ -n "${MOUNTED:-}" ]; then umount "$MOUNTED" || true; fi
    if [ -n "${MAXKEYS:-}" ]; then echo "$MAXKEYS" > /proc/sys/kernel/keys/maxkeys; fi
    chmod -R u+rwx "$WORK" 2>/dev/null || true
    rm -rf "$WORK"
  }
  trap cleanup EXIT
fi

if [ "$MODE" != "--as-user" ] && [ "$(id -u)" = 0 ]; then
  BENCH_USER="${BENCH_USER:-csbox-test}"
  id "$BENCH_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$BENCH_USER"
  # The binary and the helpers must be reachable by the user (a checkout under /root is not).
  cp "$BIN" "$WORK/csbox"
  cp "$SCRIPT" bench/seccomp-bpf.py bench/bwrap-equiv.py bench/trace.py bench/netbench.py "$WORK/"
  chmod 755 "$WORK"/*
  chown "$BENCH_USER": "$WORK"
  if [ "${TMPFS_STORE:-1}" != 0 ]; then
    TMPSTORE="$WORK/tmpfs-store"
    mkdir "$TMPSTORE"
    mount -t tmpfs -o "mode=0700,uid=$(id -u "$BENCH_USER"),gid=$(id -g "$BENCH_USER")" tmpfs "$TMPSTORE"
    MOUNTED="$TMPSTORE"
  fi
  as_user() { runuser -u "$BENCH_USER" -- env RUNS="$RUNS" WARMUP="$WARMUP" TRACE_RUNS="$TRACE_RUNS" \
    CSBOX_BIN="$WORK/csbox" WORK="$WORK" HELPERS="$WORK" TMPSTORE="${TMPSTORE:-}" \
    SECCOMP="${SECCOMP:-}" bash "$WORK/startup.sh" --as-user "$@"; }
  # Every sandbox joins a fresh session keyring, which counts against the user's key quota
  # (kernel.keys.maxkeys, 200 by default) and is freed only seconds after the sandbox
  # exits: at hyperfine's launch rate (over 100 a second) the quota runs out and a launch
  # fails (keyctl EDQUOT). A real limit of csbox (see bench/RESULTS.md), raised here while
  # the benchmark runs and put back at exit.
  MAXKEYS=$(cat /proc/sys/kernel/keys/maxkeys)
  [ "$MAXKEYS" -ge 5000 ] && MAXKEYS= || echo 5000 > /proc/sys/kernel/keys/maxkeys
  as_user setup
  # csbox's filter under each profile, read off a running session's command: its shape
  # (instruction count, i386 block length) for the synthetic program, and the program.
  filter_info() { # filter_info OUT_PREFIX CSBOX_BINARY FLAGS...
    local out=$1 ru sup pid1 cmd ok=
    shift
    runuser -u "$BENCH_USER" -- env HOME="$WORK/home" CSBOX_NO_UPDATE=1 \
      bash -c 'cd "$HOME/proj" && exec "$@" -- sleep 3' _ "$@" &
    ru=$!
    for _ in $(seq 100); do
      sup=$(pgrep -P "$ru" | head -1 || true)
      pid1=${sup:+$(pgrep -P "$sup" | head -1 || true)}
      cmd=${pid1:+$(pgrep -P "$pid1" | head -1 || true)}
      if [ -n "$cmd" ] && grep -q '^Seccomp:[[:space:]]*2' "/proc/$cmd/status" 2>/dev/null \
        && [ "$(cat "/proc/$cmd/comm" 2>/dev/null)" = sleep ]; then
        python3 bench/seccomp-bpf.py shape "$cmd" > "$out.shape" 2>/dev/null \
          || python3 bench/seccomp-bpf.py length "$cmd" > "$out.shape"
        python3 bench/seccomp-bpf.py dump "$cmd" "$out.real"
        ok=1
        break
      fi
      sleep 0.05
    done
    wait "$ru"
    [ -n "$ok" ] || { echo "startup.sh: could not read the filter of: $*" >&2; exit 1; }
  }
  for p in "${PROFILES[@]}"; do
    # shellcheck disable=SC2046
    filter_info "$WORK/seccomp-$p" "$WORK/csbox" run $(profile_flags "$p")
  done
  if [ -n "${OLD_CSBOX:-}" ]; then
    cp "$OLD_CSBOX" "$WORK/csbox-old" && chmod 755 "$WORK/csbox-old"
    filter_info "$WORK/seccomp-old" "$WORK/csbox-old" run
  fi
  chmod 644 "$WORK"/seccomp-*
  cd /
  as_user
  exit
fi

if [ "$MODE" != "--as-user" ]; then
  # A user running it directly.
  CSBOX_BIN="$BIN"
  HELPERS="$(dirname "$SCRIPT")"
  TMPSTORE="${TMPFS_STORE:-}"
  [ "$TMPSTORE" = 1 ] && TMPSTORE=
  user_env
  setup_home
  for p in "${PROFILES[@]}"; do
    v="SECCOMP_LEN_$p"
    [ -n "${!v:-}" ] && echo "${!v}" > "$WORK/seccomp-$p.shape"
  done
fi

# --- the measurement, as the user --------------------------------------------------------
cd "$HOME/proj"
STATE_SESSION="$(ls -d "$HOME"/.local/share/csbox/sessions/0*/ | head -1)"
STATE_SESSION="${STATE_SESSION%/}"
STORE="$HOME/.local/share/csbox/sessions"

echo "## Startup: csbox against bubblewrap doing the same containment"
echo
echo "$(date -u +%Y-%m-%dT%H:%MZ), $(uname -r), $(nproc) cores, bwrap $(bwrap --version | awk '{print $2}'), $(hyperfine --version)"
load() { echo "$(uptime | sed 's/.*load average/load average/'); pressure: cpu $(awk '/^some/ {print $2}' /proc/pressure/cpu 2>/dev/null), io $(awk '/^some/ {print $2}' /proc/pressure/io 2>/dev/null)"; }
echo "Load before: $(load)"
echo "Store on $(stat -f -c %T "$STORE") ($(df --output=source "$STORE" | tail -1)), $RUNS runs each after $WARMUP warm-ups, as $(id -un)"
echo

# Seccomp programs for bwrap, one fd per profile (rewound before every run): synthetic ones
# of csbox's shape, or with SECCOMP=real csbox's own programs (as root only).
declare -A FD BW
PREP_FDS=""
for p in "${PROFILES[@]}" old; do
  [ -s "$WORK/seccomp-$p.shape" ] || continue
  if [ "${SECCOMP:-}" = real ] && [ -s "$WORK/seccomp-$p.real" ]; then
    cp "$WORK/seccomp-$p.real" "$WORK/seccomp-$p.bpf"
  else
    # shellcheck disable=SC2046
    python3 "$HELPERS/seccomp-bpf.py" synth $(cat "$WORK/seccomp-$p.shape" | awk '{print $1}') "$WORK/seccomp-$p.bpf" \
      $(awk 'NF > 1 {print $2}' "$WORK/seccomp-$p.shape")
  fi
  exec {fd}<"$WORK/seccomp-$p.bpf"
  FD[$p]=$fd
  PREP_FDS="$PREP_FDS $fd"
done
for p in "${PROFILES[@]}"; do
  sc=()
  [ -n "${FD[$p]:-}" ] && sc=(--seccomp "${FD[$p]}")
  BW[$p]=$(python3 "$HELPERS/bwrap-equiv.py" "$WORK/plan-$p.json" "$STATE_SESSION" "${sc[@]}" \
    --explain "$WORK/explain-$p.txt" -- /bin/true)
done
if [ -n "${FD[old]:-}" ]; then
  BW[old]=$(python3 "$HELPERS/bwrap-equiv.py" "$WORK/plan-default.json" "$STATE_SESSION" \
    --seccomp "${FD[old]}" -- /bin/true)
fi
rewind() { for f in $PREP_FDS; do python3 -c 'import os,sys; os.lseek(int(sys.argv[1]), 0, 0)' "$f"; done; }
# Each works before it is timed.
for k in "${!BW[@]}"; do rewind; eval "${BW[$k]}" || { echo "the bwrap line for $k fails: ${BW[$k]}" >&2; exit 1; }; done

short() { sed -e "s|$STATE_SESSION|SESSION|g" -e "s|$HOME|~|g"; }
echo "What each bubblewrap flag stands for (the default profile; SESSION is a session csbox made):"
echo
echo '```'
python3 "$HELPERS/bwrap-equiv.py" show "$WORK/explain-default.txt" | short
echo '```'
echo
for p in strict ci host; do
  echo "\`$(profile_flags "$p")\` differs from default in (- default only, + here only):"
  echo '```'
  python3 "$HELPERS/bwrap-equiv.py" show "$WORK/explain-$p.txt" "$WORK/explain-default.txt" | short
  echo '```'
done
what="a synthetic program of csbox's shape (bench/seccomp-bpf.py synth)"
[ "${SECCOMP:-}" = real ] && what="csbox's own program, dumped from a session"
for p in "${PROFILES[@]}" old; do
  label="\`$(profile_flags "$p")\`"
  [ "$p" = old ] && label="the old binary's default profile"
  if [ -n "${FD[$p]:-}" ]; then
    read -r n c <"$WORK/seccomp-$p.shape" || true
    echo "- seccomp for $label: $n instructions${c:+ ($c in the i386 block)}: in bwrap $what."
  elif [ "$p" != old ]; then
    echo "- no seccomp shape known for $label (run as root, or set SECCOMP_LEN_$p): its bwrap line has no filter."
  fi
done
if [ -n "${FD[default]:-}" ] && [ -s "$WORK/seccomp-default.real" ]; then
  python3 "$HELPERS/seccomp-bpf.py" synth "$(awk '{print $1}' "$WORK/seccomp-default.shape")" "$WORK/synth-default.bpf" \
    $(awk 'NF > 1 {print $2}' "$WORK/seccomp-default.shape")
  echo "- the approximation, attach time (prctl, median of 200): $(python3 "$HELPERS/seccomp-bpf.py" attach \
    "$WORK/seccomp-default.real" "$WORK/synth-default.bpf" ${FD[old]:+"$WORK/seccomp-old.real"} \
    | sed -e "s|$WORK/seccomp-default.real|csbox's default|" -e "s|$WORK/synth-default.bpf|the synthetic one|" \
      -e "s|$WORK/seccomp-old.real|the old binary's|" | paste -sd ';' | sed 's/;/; /g')"
fi
echo

# The perl one-liner that rewinds every seccomp fd, as hyperfine's --prepare.
PREP="true"
[ -n "$PREP_FDS" ] && PREP="perl -e 'for (@ARGV) { open(my \$f, \"<&=\", \$_) or die \"fd \$_: \$!\"; sysseek(\$f, 0, 0) or die }'$PREP_FDS"

C="$CSBOX_BIN"
NAMES=() CMDS=()
add() { NAMES+=("$1"); CMDS+=("$2"); }
add "csbox run -- /bin/true" "$C run -- /bin/true"
add "csbox run --profile strict -- /bin/true" "$C run --profile strict -- /bin/true"
add "csbox run --profile ci -- /bin/true" "$C run --profile ci -- /bin/true"
add "csbox run --net host -- /bin/true" "$C run --net host -- /bin/true"
add "csbox run --profile compat -- /bin/true" "$C run --profile compat -- /bin/true"
# Issue 18's before/after: the old binary doing the same work (compat: no namespaces, the
# one profile whose work has not changed since 1423042).
[ -x "$WORK/csbox-old" ] && add "OLD_CSBOX run --profile compat -- /bin/true" "$WORK/csbox-old run --profile compat -- /bin/true"
if [ -n "${TMPSTORE:-}" ]; then
  add "env SESSIONS_DIR=tmpfs csbox run -- /bin/true" "env SESSIONS_DIR=$TMPSTORE $C run -- /bin/true"
  add "env SESSIONS_DIR=disk csbox run -- /bin/true" "env SESSIONS_DIR=$STORE $C run -- /bin/true"
fi
add "bwrap ≡ default" "${BW[default]}"
add "bwrap ≡ strict" "${BW[strict]}"
add "bwrap ≡ ci" "${BW[ci]}"
add "bwrap ≡ --net host" "${BW[host]}"
[ -n "${BW[old]:-}" ] && add "bwrap ≡ default, old filter length" "${BW[old]}"
add "csbox --version" "$C --version"
add "unshare -Urm /bin/true" "unshare -Urm /bin/true"
add "/bin/true" "/bin/true"

args=()
for i in "${!NAMES[@]}"; do args+=(-n "${NAMES[$i]}" "${CMDS[$i]}"); done
OUT="$WORK/hyperfine.json"
hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --prepare "$PREP" --export-json "$OUT" \
  "${args[@]}" >/dev/null 2>"$WORK/hyperfine.err" || { cat "$WORK/hyperfine.err"; exit 1; }
echo "Load after: $(load)"
echo

python3 - "$OUT" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
match = {
    "csbox run -- /bin/true": "bwrap ≡ default",
    "csbox run --profile strict -- /bin/true": "bwrap ≡ strict",
    "csbox run --profile ci -- /bin/true": "bwrap ≡ ci",
    "csbox run --net host -- /bin/true": "bwrap ≡ --net host",
    "env SESSIONS_DIR=tmpfs csbox run -- /bin/true": "env SESSIONS_DIR=disk csbox run -- /bin/true",
    "bwrap ≡ default, old filter length": "bwrap ≡ default",
    "OLD_CSBOX run --profile compat -- /bin/true": "csbox run --profile compat -- /bin/true",
}
ms = lambda s: s * 1e3
med = lambda n: r[n]["median"]
print("| command | median | mean | σ | ratio (median) |")
print("|---|---:|---:|---:|---|")
true = med("/bin/true")
for name, x in r.items():
    if name in match and match[name] in r:
        ratio = "%.2f× `%s`" % (x["median"] / med(match[name]), match[name])
    elif name == "csbox run --profile compat -- /bin/true":
        ratio = "+%.2f ms over `/bin/true`" % ms(x["median"] - true)
    elif name == "csbox --version":
        ratio = "+%.2f ms over `/bin/true` (csbox's process start)" % ms(x["median"] - true)
    elif name.startswith("bwrap") or name.startswith("env ") or name == "/bin/true":
        ratio = ""
    else:
        ratio = "%.2f× `bwrap ≡ default`" % (x["median"] / med("bwrap ≡ default"))
    print("| `%s` | %.2f ms | %.2f ms | %.2f ms | %s |" % (name, ms(x["median"]), ms(x["mean"]), ms(x["stddev"]), ratio))
print()

def verdict(v):
    return "**met**" if v <= 0.6 else ("acceptable (≤ 0.8), goal not met" if v <= 0.8 else "**not met** (> 0.8)")
for cs, bw in [("csbox run -- /bin/true", "bwrap ≡ default"),
               ("csbox run --profile strict -- /bin/true", "bwrap ≡ strict"),
               ("csbox run --profile ci -- /bin/true", "bwrap ≡ ci")]:
    v = med(cs) / med(bw)
    print("- `%s` / `%s`: **%.2f** (goal ≤ 0.60, floor 0.80): %s" % (cs, bw, v, verdict(v)))
d = ms(med("csbox run --profile compat -- /bin/true") - true)
print("- compat − `/bin/true`: **%.2f ms** (goal ≤ 0.70 ms): %s" % (d, "**met**" if d <= 0.7 else "**not met**"))
net = ms(med("csbox run -- /bin/true") - med("csbox run --net host -- /bin/true"))
bwnet = ms(med("bwrap ≡ default") - med("bwrap ≡ --net host"))
print("- the network namespace + relay + proxy: default − `--net host` = **%.2f ms** (issue 14: ≤ 1 ms): %s; "
      "bwrap's `--unshare-net` alone: %.2f ms" % (net, "**met**" if net <= 1 else "**not met**", bwnet))
if "bwrap ≡ default, old filter length" in r:
    f = ms(med("bwrap ≡ default") - med("bwrap ≡ default, old filter length"))
    print("- the bigger seccomp filter (bwrap with csbox's length − with the old length): **%.2f ms** "
          "(issue 13: ≤ 0.2 ms): %s" % (f, "**met**" if f <= 0.2 else "**not met**"))
if "OLD_CSBOX run --profile compat -- /bin/true" in r:
    v = med("csbox run --profile compat -- /bin/true") / med("OLD_CSBOX run --profile compat -- /bin/true")
    print("- compat, this csbox / OLD_CSBOX (the same work; issue 18: no slowdown): **%.2f**: %s"
          % (v, "**met**" if v <= 1.0 else "**not met**"))
if "env SESSIONS_DIR=tmpfs csbox run -- /bin/true" in r:
    t = ms(med("env SESSIONS_DIR=disk csbox run -- /bin/true") - med("env SESSIONS_DIR=tmpfs csbox run -- /bin/true"))
    print("- what the disk costs csbox (store on disk − store on tmpfs): %.2f ms" % t)
PY
echo

echo "## Where the time goes: CSBOX_TRACE=1, $TRACE_RUNS runs each, interleaved"
echo
python3 "$HELPERS/trace.py" "$TRACE_RUNS" \
  default "$C run -- /bin/true" \
  strict "$C run --profile strict -- /bin/true" \
  ci "$C run --profile ci -- /bin/true" \
  "--net host" "$C run --net host -- /bin/true" \
  compat "$C run --profile compat -- /bin/true"
echo

echo "## Supervisor memory (VmRSS of the csbox process outside; pid 1 inside for reference)"
echo
kib() { awk "/^$2:/ {print \$2}" "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.2f MiB", k / 1024}'; }
"$C" run -- sleep 5 &
SUP=$!
PID1=
for _ in $(seq 100); do PID1=$(pgrep -P "$SUP" | head -1 || true); [ -n "$PID1" ] && break; sleep 0.05; done
sleep 1
[ -n "$PID1" ] || { echo "pid 1 of the session did not appear" >&2; exit 1; }
idle=$(kib "$SUP" VmRSS)
echo "- \`csbox run -- sleep 5\`, 1 s in: supervisor **$(mib "$idle")** (goal ≤ 4 MiB: $([ "$idle" -le 4096 ] && echo met || echo '**not met**')), $(kib "$SUP" Threads) threads; pid 1 $(mib "$(kib "$PID1" VmRSS)")"
wait "$SUP"

rm -f "$WORK/hold.port" "$HOME/proj/.tunnels-ready"
python3 "$HELPERS/netbench.py" serve-hold "$WORK/hold.port" &
SRV=$!
for _ in $(seq 100); do [ -s "$WORK/hold.port" ] && break; sleep 0.05; done
PORT=$(cat "$WORK/hold.port")
"$C" run --allow-host "127.0.0.1:$PORT" -- \
  python3 netbench.py tunnels 127.0.0.1:3128 "127.0.0.1:$PORT" 100 "$HOME/proj/.tunnels-ready" 4 &
SUP=$!
for _ in $(seq 300); do [ -e "$HOME/proj/.tunnels-ready" ] && break; sleep 0.05; done
[ -e "$HOME/proj/.tunnels-ready" ] || { echo "the 100 tunnels did not open" >&2; kill "$SRV"; exit 1; }
sleep 0.5
busy=$(kib "$SUP" VmRSS)
echo "- the same with 100 CONNECT tunnels open through its proxy (to a loopback server on the host): supervisor **$(mib "$busy")** (goal ≤ 6 MiB: $([ "$busy" -le 6144 ] && echo met || echo '**not met**')), $(kib "$SUP" Threads) threads, peak $(mib "$(kib "$SUP" VmHWM)")"
wait "$SUP"
kill "$SRV"
