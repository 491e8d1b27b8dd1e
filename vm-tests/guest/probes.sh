#!/bin/sh
# csbox probes, run inside a VM as an unprivileged user: the same observable promises as
# tests/run.rs and tests/profiles.rs, in sh. `probes.sh PROBE [ARG]…` prints `ok PROBE`
# or `FAILED PROBE: why` per probe and `# …` lines for context.
CSBOX=${CSBOX:-/csbox/csbox}
SESS=$HOME/.local/share/csbox/sessions
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
failed=0

ok() { echo "ok $1"; }
fail() { printf 'FAILED %s: %s\n' "$1" "$(printf %s "$2" | tr '\n' ' ' | cut -c1-400)"; failed=1; }
has() { case $1 in *"$2"*) return 0 ;; esac; return 1; }
# csbox run with no terminal; stdout in $o, stderr in $e, exit code in $rc.
run() { "$CSBOX" run "$@" </dev/null >"$W/o" 2>"$W/e"; rc=$?; o=$(cat "$W/o"); e=$(cat "$W/e"); }
sh_in() { run -- sh -c "$1"; }

# A realistic ~/.claude, as tests/common's TestEnv makes it.
fresh_home() {
  rm -rf ~/.claude ~/.claude.json ~/.local/share/csbox ~/.config/systemd/user
  mkdir -p ~/.claude/skills/x ~/.claude/agents ~/.claude/commands
  echo '# skill x' >~/.claude/skills/x/SKILL.md
  echo '{"hooks":{}}' >~/.claude/settings.json
  echo 'be nice' >~/.claude/CLAUDE.md
  echo '{"display":"old"}' >~/.claude/history.jsonl
  echo '{"hasCompletedOnboarding":true}' >~/.claude.json
}
# merge.lock: csbox's own lock, made by the first merge-back that has something to look at.
snapshot() { (cd ~/.claude && find . ! -name merge.lock -printf '%p %y %m %l\n' | sort && find . -type f ! -name merge.lock -exec md5sum {} + | sort); }
last_session() { ls -d "$SESS"/*/session.json 2>/dev/null | sort | tail -1 | sed 's,/session.json$,,'; }

p_history() {
  fresh_home
  # A line of this project (the working directory's): the session sees it, not "old".
  mine=$(printf '{"display":"mine","project":"%s"}' "$(pwd -P)")
  echo "$mine" >>~/.claude/history.jsonl
  sh_in true
  [ $rc = 0 ] || { fail history "a first \`csbox run -- true\` exited $rc: $e"; return; }
  before=$(snapshot)
  sh_in 'echo "{\"display\":\"new\"}" >> ~/.claude/history.jsonl && mkdir -p ~/.claude/projects/p && echo t > ~/.claude/projects/p/s.jsonl && echo "{\"x\":1}" > ~/.claude.json && cat ~/.claude/history.jsonl'
  [ $rc = 0 ] || { fail history "exit $rc: $e"; return; }
  [ "$o" = "$mine
{\"display\":\"new\"}" ] || { fail history "the session should see this project's history (not another's), then its own write: $o"; return; }
  [ "$(snapshot)" = "$before" ] || { fail history "~/.claude changed: $(echo "$before" >"$W/b"; snapshot | diff "$W/b" - | tail -n +2 | head -5)"; return; }
  [ "$(cat ~/.claude.json)" = '{"hasCompletedOnboarding":true}' ] || { fail history "~/.claude.json changed: $(cat ~/.claude.json)"; return; }
  st=$(last_session)/state
  grep -q new "$st/history.jsonl" 2>/dev/null || { fail history "the write is not in the session layer $st"; return; }
  [ "$(cat "$st/projects/p/s.jsonl" 2>/dev/null)" = t ] || { fail history "projects/p/s.jsonl is not in the session layer"; return; }
  [ "$(cat "$st/.claude.json" 2>/dev/null)" = '{"x":1}' ] || { fail history "~/.claude.json inside is not the session's copy"; return; }
  ok history
}

p_skills() {
  fresh_home
  sh_in 'touch ~/.claude/skills/x/new; echo touch=$?; echo evil > ~/.claude/settings.json; echo settings=$?; echo x >> ~/.claude/CLAUDE.md; echo md=$?; mount -o remount,rw ~/.claude/skills 2>/dev/null; echo remount=$?; umount ~/.claude/skills 2>/dev/null; echo umount=$?; cat ~/.claude/skills/x/SKILL.md'
  has "$e" "Read-only file system" || { fail skills "no EROFS: $e"; return; }
  for k in touch settings md remount umount; do
    has "$o" "$k=" && ! has "$o" "$k=0" || { fail skills "$k must fail inside: $o"; return; }
  done
  has "$o" "# skill x" || { fail skills "the shared skill is not visible: $o"; return; }
  [ ! -e ~/.claude/skills/x/new ] || { fail skills "a file appeared in the real skills/"; return; }
  [ "$(cat ~/.claude/settings.json)" = '{"hooks":{}}' ] || { fail skills "the real settings.json changed"; return; }
  ok skills
}

p_invisible() {
  fresh_home
  "$CSBOX" run --name a -- sh -c 'echo secret-a > ~/.claude/marker-a; mkdir -p ~/.claude/todos; echo a > ~/.claude/todos/a.json; echo ready; sleep 60' </dev/null >"$W/a" 2>&1 &
  a=$!
  i=0
  until grep -q ready "$W/a"; do
    i=$((i + 1)); [ $i -lt 100 ] || { kill $a; fail invisible "session a never started: $(cat "$W/a")"; return; }
    sleep 0.2
  done
  sh_in "cat ~/.claude/marker-a; echo marker=\$?; ls ~/.claude/todos; ls -A ~/.claude/sessions | wc -l; ls -A $SESS | wc -l; ls -A ~/.local/share/csbox/sessions | wc -l"
  kill $a; wait $a
  ! has "$o" secret-a || { fail invisible "session b read a's file: $o"; return; }
  has "$o" marker=1 || { fail invisible "$o"; return; }
  [ "$(echo "$o" | tail -3 | tr '\n' ' ')" = "0 0 0 " ] || { fail invisible "sessions dir and store must look empty inside: $o"; return; }
  [ ! -e ~/.claude/marker-a ] || { fail invisible "a's write reached the real ~/.claude"; return; }
  ok invisible
}

p_caps() {
  sh_in "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status; id -u"
  for c in CapInh CapPrm CapEff CapBnd CapAmb; do
    echo "$o" | grep -q "^$c:	0000000000000000$" || { fail caps "$c is not 0: $o $e"; return; }
  done
  echo "$o" | grep -q "^NoNewPrivs:	1$" || { fail caps "NoNewPrivs is not 1: $o"; return; }
  [ "$(echo "$o" | tail -1)" = "$(id -u)" ] || { fail caps "not mapped to the user's own uid: $o"; return; }
  ok caps
}

p_pids() {
  me=$$
  sh_in "echo self=\$\$; ls /proc | grep -E '^[0-9]+\$' | sort -n | tr '\\n' ' '; echo; kill -0 $me 2>/dev/null; echo kill=\$?"
  has "$o" self=2 || { fail pids "the command should be pid 2 under csbox's pid 1: $o $e"; return; }
  pids=$(echo "$o" | sed -n 2p)
  n=0
  for p in $pids; do
    n=$((n + 1)); [ "$p" -lt 20 ] || { fail pids "a host pid is visible: $pids"; return; }
  done
  [ $n -le 6 ] || { fail pids "too many pids: $pids"; return; }
  has "$o" kill=1 || { fail pids "kill -0 of a host pid worked: $o"; return; }
  ok pids
}

p_exits() {
  sh_in 'exit 42'; [ $rc = 42 ] || { fail exits "exit 42 gave $rc: $e"; return; }
  sh_in 'kill -TERM $$; sleep 5'; [ $rc = 143 ] || { fail exits "SIGTERM gave $rc"; return; }
  "$CSBOX" run -- sleep 30 </dev/null >/dev/null 2>&1 &
  c=$!
  sleep 1
  kill -TERM $c; wait $c; r=$?
  [ $r = 143 ] || { fail exits "SIGTERM to the supervisor gave $r"; return; }
  run -- no-such-command-xyz; [ $rc = 127 ] || { fail exits "not found gave $rc"; return; }
  run -- /etc/passwd; [ $rc = 126 ] || { fail exits "not executable gave $rc"; return; }
  ok exits
}

# Kernels without unprivileged overlayfs: one warning, a fresh ~/.claude, shared config
# still read-only (tests/profiles.rs forces the same mode by profile).
p_fresh() {
  fresh_home
  sh_in 'cat ~/.claude/settings.json ~/.claude/skills/x/SKILL.md; touch ~/.claude/skills/x/n; echo ro=$?; echo h >> ~/.claude/history.jsonl; cat ~/.claude/history.jsonl; ls -A ~/.claude/sessions | wc -l'
  [ $rc = 0 ] || { fail fresh "exit $rc: $e"; return; }
  has "$e" "falling back to a fresh ~/.claude" || { fail fresh "no fallback warning (did overlayfs work on $(uname -r)?): $e"; return; }
  [ "$(echo "$e" | grep -c 'falling back')" = 1 ] || { fail fresh "the warning should be one line: $e"; return; }
  echo "# $(echo "$e" | grep 'falling back')"
  has "$o" '{"hooks":{}}' && has "$o" "# skill x" || { fail fresh "shared config not visible: $o"; return; }
  has "$o" ro=1 || { fail fresh "skills/ writable: $o"; return; }
  has "$o" "h
0" && ! has "$o" old || { fail fresh "history should be fresh, not the user's: $o"; return; }
  [ "$(cat ~/.claude/history.jsonl)" = '{"display":"old"}' ] || { fail fresh "the real history changed"; return; }
  [ ! -e ~/.claude/skills/x/n ] || { fail fresh "a file appeared in the real skills/"; return; }
  ok fresh
}

# user namespaces refused (SYSCTL names why): run says so and exits 125, doctor names it,
# the compat profile still runs.
p_refused() {
  s=$1
  fresh_home
  run -- true
  [ $rc = 125 ] || { fail refused "csbox run exited $rc, not 125: $e"; return; }
  has "$e" "$s" || { fail refused "the message does not name $s: $e"; return; }
  has "$e" "--profile compat" && has "$e" "csbox doctor" || { fail refused "the message does not point to --profile compat and csbox doctor: $e"; return; }
  echo "$e" | head -3 | sed "s/^/# /"
  d=$("$CSBOX" doctor 2>&1 </dev/null); drc=$?
  if has "$d" "not implemented"; then fail refused "csbox doctor not implemented"; return; fi
  [ $drc != 0 ] || { fail refused "csbox doctor exited 0 on a machine without user namespaces: $d"; return; }
  has "$d" "$s" || { fail refused "csbox doctor does not name $s: $d"; return; }
  run --profile compat -- sh -c 'echo compat-ran'
  [ $rc = 0 ] && [ "$o" = compat-ran ] || { fail refused "--profile compat did not run (exit $rc): $o $e"; return; }
  has "$e" "NO SANDBOX" || { fail refused "--profile compat did not say NO SANDBOX: $e"; return; }
  ok refused
}

p_apparmor_refused() {
  fresh_home
  run -- true
  [ $rc = 125 ] || { fail apparmor-refused "csbox run exited $rc, not 125, under the AppArmor restriction: $e"; return; }
  has "$e" "profiles/apparmor/csbox" || { fail apparmor-refused "the message does not name profiles/apparmor/csbox: $e"; return; }
  ok apparmor-refused
}

# Under the repo's AppArmor profile the sandboxed command carries its label.
p_aa_label() {
  sh_in 'cat /proc/self/attr/current'
  [ $rc = 0 ] || { fail aa-label "csbox run under profiles/apparmor/csbox exited $rc: $e"; return; }
  has "$o" csbox || { fail aa-label "the command does not run under the csbox profile: $o"; return; }
  echo "# AppArmor label inside: $o"
  ok aa-label
}

# systemd timer: an old (ended) session and an active one exist before the clock jumps.
p_gc_prepare() {
  fresh_home
  sh_in 'echo x > ~/.claude/notes'
  [ $rc = 0 ] || { fail gc-prepare "exit $rc: $e"; return; }
  last_session >~/old-session
  nohup "$CSBOX" run --name active -- sleep 900 </dev/null >/dev/null 2>&1 &
  i=0
  until [ "$(ls "$SESS/active" 2>/dev/null | wc -l)" = 1 ]; do
    i=$((i + 1)); [ $i -lt 100 ] || { fail gc-prepare "the active session never appeared in $SESS/active"; return; }
    sleep 0.2
  done
  readlink -f "$SESS/active/$(ls "$SESS/active")" >~/active-session
  echo "# old $(cat ~/old-session), active $(cat ~/active-session)"
  ok gc-prepare
}

p_gc_timer() {
  old=$(cat ~/old-session) active=$(cat ~/active-session)
  units=$("$CSBOX" gc --print-units 2>&1 </dev/null)
  if has "$units" "not implemented"; then fail gc-timer "csbox gc not implemented"; return; fi
  has "$units" csbox-gc.service && has "$units" csbox-gc.timer || { fail gc-timer "--print-units does not print csbox-gc.service and csbox-gc.timer: $units"; return; }
  out=$("$CSBOX" gc --install-timer --days 7 2>&1 </dev/null) || { fail gc-timer "--install-timer failed: $out"; return; }
  u=~/.config/systemd/user
  [ -f $u/csbox-gc.service ] && [ -f $u/csbox-gc.timer ] || { fail gc-timer "no user units in $u: $out"; return; }
  [ -d "$old" ] || { fail gc-timer "the old session went before the timer fired"; return; }
  # The test drop-in: fire 2 s after the timer starts instead of weekly (RandomizedDelaySec
  # applies to every trigger, OnActiveSec too: zero it).
  mkdir -p $u/csbox-gc.timer.d
  printf '[Timer]\nOnActiveSec=2s\nAccuracySec=1s\nRandomizedDelaySec=0\n' >$u/csbox-gc.timer.d/vmtest.conf
  systemctl --user daemon-reload && systemctl --user restart csbox-gc.timer || { fail gc-timer "systemctl --user restart csbox-gc.timer failed"; return; }
  t=0
  while [ -d "$old" ]; do
    t=$((t + 1)); [ $t -lt 60 ] || { fail gc-timer "the timer did not remove the old session within 30 s: $(systemctl --user status csbox-gc.timer csbox-gc.service 2>&1 | tail -15)"; return; }
    sleep 0.5
  done
  echo "# old session removed about $((t / 2)) s after the timer started"
  [ -d "$active" ] || { fail gc-timer "gc removed the active session"; return; }
  res=$(systemctl --user show -p Result --value csbox-gc.service)
  [ "$res" = success ] || { fail gc-timer "csbox-gc.service result: $res"; return; }
  pkill -TERM -u "$(id -u)" -f 'csbox run --name active' 2>/dev/null
  ok gc-timer
}

# Containment (tests/escape.rs in sh): each attempt runs under the default profile and
# must leave the host as it was, then under compat (no sandbox), where it must show, so
# the probe cannot pass because nothing ran. /srv/out is a dir of the user outside the
# home and /tmp, made by the guest's init.
attempts() {
  mkdir -p ~/proj/.git/hooks ~/.ssh
  [ -f ~/proj/.git/HEAD ] || echo 'ref: refs/heads/main' >~/proj/.git/HEAD
  echo orig >~/.bashrc
  echo "secret-$$" >~/.ssh/id_ed25519; chmod 600 ~/.ssh/id_ed25519
  rm -f /srv/out/x ~/.config/csbox/profiles/default.json ~/proj/.git/hooks/pre-commit /var/tmp/csbox-vm-x
  (cd ~/proj && "$CSBOX" run "$@" -- sh -c '
    echo RAN
    echo evil >> ~/.bashrc
    mkdir -p ~/.config/csbox/profiles && echo "{\"isolation\":\"none\"}" > ~/.config/csbox/profiles/default.json
    echo x > /srv/out/x
    echo x > /var/tmp/csbox-vm-x
    echo x > .git/hooks/pre-commit
    cat ~/.ssh/id_ed25519
    readlink /proc/self/ns/net' </dev/null >"$W/o" 2>"$W/e")
  o=$(cat "$W/o"); e=$(cat "$W/e")
}
escapes() {
  out=""
  grep -q evil ~/.bashrc && out="$out bashrc"
  [ -e ~/.config/csbox/profiles/default.json ] && out="$out profile"
  [ -e /srv/out/x ] && out="$out host-ro"
  [ -e /var/tmp/csbox-vm-x ] && out="$out var-tmp"
  [ -e ~/proj/.git/hooks/pre-commit ] && out="$out git-hook"
  has "$o" "secret-$$" && out="$out ssh-key"
  has "$o" "$(readlink /proc/self/ns/net)" && out="$out host-net"
  echo "$out"
}
p_contain() {
  fresh_home
  attempts
  has "$o" RAN || { fail contain "the sandbox did not run: $e"; return; }
  got=$(escapes)
  [ -z "$got" ] || { fail contain "escaped under default:$got ($e)"; return; }
  attempts --profile compat
  got=$(escapes)
  [ "$got" = " bashrc profile host-ro var-tmp git-hook ssh-key host-net" ] || { fail contain "without a sandbox the probes must see every escape, saw:$got"; return; }
  rm -rf ~/.config/csbox ~/proj/.git/hooks/pre-commit /srv/out/x /var/tmp/csbox-vm-x
  ok contain
}

# No unprivileged overlayfs (5.10): the home is read-only with private caches, said in
# one line, and nothing reaches the host.
p_rohome() {
  fresh_home
  mkdir -p ~/.cache
  echo orig >~/.bashrc
  (cd ~ && mkdir -p proj && cd proj && "$CSBOX" run -- sh -c 'echo x > ~/.cache/c && echo cache=ok; echo evil >> ~/.bashrc; echo rc=$?; cat ~/.cache/c' </dev/null >"$W/o" 2>"$W/e")
  o=$(cat "$W/o"); e=$(cat "$W/e")
  has "$e" "read-only instead" || { fail rohome "no read-only-home warning (did the home overlay work on $(uname -r)?): $e"; return; }
  [ "$(echo "$e" | grep -c 'read-only instead')" = 1 ] || { fail rohome "the warning should be one line: $e"; return; }
  echo "# $(echo "$e" | grep 'read-only instead' | cut -c1-200)"
  has "$o" cache=ok || { fail rohome "a private cache dir is not writable: $o $e"; return; }
  has "$o" "rc=0" && { fail rohome "~/.bashrc was writable: $o"; return; }
  [ "$(cat ~/.bashrc)" = orig ] || { fail rohome "~/.bashrc changed on the host"; return; }
  [ ! -e ~/.cache/c ] || { fail rohome "the cache write reached the host"; return; }
  ok rohome
}

for p in "$@"; do
  case $p in
    history) p_history ;; skills) p_skills ;; invisible) p_invisible ;;
    caps) p_caps ;; pids) p_pids ;; exits) p_exits ;; fresh) p_fresh ;;
    contain) p_contain ;; rohome) p_rohome ;;
    refused) shift; p_refused "$1"; break ;;
    apparmor-refused) p_apparmor_refused ;; aa-label) p_aa_label ;;
    gc-prepare) p_gc_prepare ;; gc-timer) p_gc_timer ;;
    *) fail "$p" "no such probe" ;;
  esac
done
exit $failed
