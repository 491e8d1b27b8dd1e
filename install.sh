#!/usr/bin/env bash
# install.sh: build csbox from this checkout and install it, on Debian and Ubuntu.
#
#   ./install.sh                 binary in /usr/local/bin, man pages, completions
#   ./install.sh --user          binary in ~/.local/bin (nothing outside your home but apt)
#   ./install.sh --prefix DIR    binary in DIR/bin, man pages in DIR/share/man
#
# Run it as yourself (it uses sudo for apt-get and the install) or as root (no sudo
# needed). Steps, each said as it runs:
#   1. apt-get update; apt-get install a C toolchain and CA certificates.
#   2. Rust >= the rust-version in Cargo.toml: a cargo already on PATH (or in
#      ~/.cargo/bin) if new enough; else the newest one apt offers (Debian 12: cargo-web
#      from bookworm-security; Ubuntu 24.04: cargo-1.NN from noble-updates); else rustup
#      (downloads from static.rust-lang.org). If none of these works it stops and says
#      what to do.
#   3. cargo build --release --locked, as the user running the script.
#   4. install the binary, the man pages and the shell completions; where AppArmor
#      restricts user namespaces (Ubuntu >= 23.10), profiles/apparmor/csbox too.
set -euo pipefail
cd "$(dirname "$0")"

prefix=/usr/local
user_install=
while [ $# -gt 0 ]; do
  case $1 in
    --user) user_install=1; prefix=$HOME/.local ;;
    --prefix) [ $# -ge 2 ] || { echo "install.sh: --prefix needs a directory" >&2; exit 2; }; prefix=$2; shift ;;
    --prefix=*) prefix=${1#--prefix=} ;;
    -h|--help) sed -n '2,18s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see ./install.sh --help)" >&2; exit 2 ;;
  esac
  shift
done
case $prefix in /*) ;; *) echo "install.sh: --prefix must be an absolute path, not $prefix" >&2; exit 2 ;; esac

say() { printf '== %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" = 0 ]; then
  as_root=()
elif command -v sudo >/dev/null; then
  as_root=(sudo)
else
  as_root=(no-sudo)
fi
root() {
  if [ "${as_root[0]:-}" = no-sudo ]; then
    die "this step needs root and sudo is not installed: run ./install.sh as root (su -), or install sudo and add yourself to the sudo group"
  fi
  "${as_root[@]}" "$@"
}

need=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -1)
[ -n "$need" ] || die "no rust-version in Cargo.toml"

# version_ge A B: A >= B for dotted versions (1.89.0 >= 1.89).
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]; }

# The rustc version a cargo uses (rustc beside it, else the one on PATH), or nothing.
rustc_version_of() {
  local rustc
  rustc=$(dirname "$1")/rustc
  [ -x "$rustc" ] || rustc=$(command -v rustc || true)
  [ -n "$rustc" ] && "$rustc" --version 2>/dev/null | awk '{print $2}' | sed 's/-.*//'
}

export DEBIAN_FRONTEND=noninteractive
if [ "${as_root[0]:-}" = no-sudo ] && [ -n "$user_install" ] && command -v cc >/dev/null; then
  say "system packages: no root and no sudo; a C compiler is there, going on without apt"
else
  say "system packages: apt-get update; apt-get install build-essential ca-certificates"
  root apt-get update -q
  root apt-get install -y -q --no-install-recommends build-essential ca-certificates
fi

# The version apt would install of a package (major.minor), or nothing.
candidate() {
  apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: \([0-9]*\.[0-9]*\).*/\1/p' | grep .
}

# Print the cargo to build with, installing one if needed; empty when there is none.
# (It runs in $(...), where bash does not apply set -e: each step checks for itself.)
find_cargo() {
  local c v
  for c in "$(command -v cargo || true)" "$HOME/.cargo/bin/cargo"; do
    [ -n "$c" ] && [ -x "$c" ] || continue
    v=$(rustc_version_of "$c")
    if [ -n "$v" ] && version_ge "$v" "$need"; then echo "$c"; return; fi
    echo "   $c uses rustc ${v:-?}, older than $need (Cargo.toml's rust-version)" >&2
  done
  # From the distribution: its own cargo if new enough (Debian 13+, newer Ubuntus), the
  # "web" toolchain Debian 12 keeps current for its browsers, or Ubuntu's versioned ones.
  local pkg best="" bestv=""
  for pkg in cargo cargo-web $(apt-cache pkgnames cargo-1. 2>/dev/null | grep -E '^cargo-1\.[0-9]+$' | sort -V); do
    # Debian's cargo package has its own version numbers: go by the rustc it comes with.
    case $pkg in
      cargo) v=$(candidate rustc || true) ;;
      cargo-web) v=$(candidate rustc-web || true) ;;
      *) v=$(candidate "$pkg" || true); [ -z "$v" ] || v=${pkg#cargo-} ;;
    esac
    [ -n "$v" ] && version_ge "$v" "$need" || continue
    if [ -z "$bestv" ] || version_ge "$v" "$bestv"; then best=$pkg; bestv=$v; fi
  done
  if [ -n "$best" ] && ! { [ "$best" = cargo-web ] && dpkg -s rustup >/dev/null 2>&1; }; then
    echo "   installing $best ($bestv) from apt" >&2
    [ "$best" != cargo-web ] || ! dpkg -s cargo >/dev/null 2>&1 ||
      echo "   (cargo-web replaces Debian's older cargo package)" >&2
    root apt-get install -y -q --no-install-recommends "$best" >&2 || return
    case $best in
      cargo-1.*) echo "/usr/lib/rust-${best#cargo-}/bin/cargo" ;;
      *) echo /usr/bin/cargo ;;
    esac
    return
  fi
  # rustup: its installer and toolchains come from static.rust-lang.org.
  if command -v rustup >/dev/null || [ -x "$HOME/.cargo/bin/rustup" ]; then
    echo "   rustup toolchain install stable; rustup default stable" >&2
    PATH=$HOME/.cargo/bin:$PATH rustup toolchain install stable --profile minimal >&2 &&
      PATH=$HOME/.cargo/bin:$PATH rustup default stable >&2 &&
      { echo "$HOME/.cargo/bin/cargo"; return; }
  else
    echo "   no apt package has Rust >= $need; trying rustup (https://sh.rustup.rs)" >&2
    command -v curl >/dev/null || root apt-get install -y -q --no-install-recommends curl >&2
    if curl --proto '=https' --tlsv1.2 -sSf --max-time 60 https://sh.rustup.rs | sh -s -- -y --profile minimal >&2; then
      echo "$HOME/.cargo/bin/cargo"; return
    fi
  fi
}

say "Rust >= $need"
cargo=$(find_cargo)
if [ -z "$cargo" ]; then
  die "found no Rust >= $need. Any one of these gives one, then run ./install.sh again:
  - Debian 12: enable the security updates (deb http://deb.debian.org/debian-security bookworm-security main
    in /etc/apt/sources.list), which carry cargo-web >= 1.89
  - Ubuntu 24.04: enable noble-updates, which carries cargo-1.NN packages
  - rustup from https://rustup.rs (needs to reach static.rust-lang.org), then open a new shell"
fi
rustc_dir=$(dirname "$cargo")
say "building with $cargo (rustc $(rustc_version_of "$cargo")): cargo build --release --locked"
PATH=$rustc_dir:$PATH "$cargo" build --release --locked
bin=${CARGO_TARGET_DIR:-target}/release/csbox
[ -x "$bin" ] || die "the build left no $bin"

if [ -n "$user_install" ]; then inst=(); else inst=(root); fi
say "installing to $prefix/bin/csbox"
"${inst[@]}" install -D -m 755 "$bin" "$prefix/bin/csbox"
man=$(mktemp -d)
trap 'rm -rf "$man"' EXIT
"$bin" man --out "$man" >/dev/null
"${inst[@]}" install -d -m 755 "$prefix/share/man/man1"
"${inst[@]}" install -m 644 "$man"/*.1 "$prefix/share/man/man1/"
if [ -n "$user_install" ]; then
  for sh in bash zsh fish; do "$prefix/bin/csbox" completions "$sh" --install | sed 's/^/   /'; done
else
  # Where each shell looks on every user's behalf (XDG_DATA_DIRS starts with /usr/local/share).
  "$bin" completions bash >"$man/csbox.bash"
  "$bin" completions zsh >"$man/_csbox"
  "$bin" completions fish >"$man/csbox.fish"
  "${inst[@]}" install -D -m 644 "$man/csbox.bash" "$prefix/share/bash-completion/completions/csbox"
  "${inst[@]}" install -D -m 644 "$man/_csbox" "$prefix/share/zsh/site-functions/_csbox"
  "${inst[@]}" install -D -m 644 "$man/csbox.fish" "$prefix/share/fish/vendor_completions.d/csbox.fish"
fi

# Ubuntu >= 23.10 refuses user namespaces to programs without an AppArmor profile that
# allows them; the profile names the usual install paths.
if [ "$(cat /proc/sys/kernel/apparmor_restrict_unprivileged_userns 2>/dev/null)" = 1 ]; then
  say "AppArmor restricts user namespaces: installing profiles/apparmor/csbox"
  root install -m 644 profiles/apparmor/csbox /etc/apparmor.d/csbox
  root apparmor_parser -r /etc/apparmor.d/csbox
  case $prefix in /usr|/usr/local|"$HOME/.local") ;; *)
    echo "   $prefix/bin/csbox is not among the profile's paths: add it to @{csbox_exec} in /etc/apparmor.d/csbox" ;;
  esac
fi

say "installed $("$prefix/bin/csbox" --version)"
case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) echo "   $prefix/bin is not on your PATH: add it (Debian's ~/.profile adds ~/.local/bin at the next login once it exists)" ;;
esac
command -v claude >/dev/null || [ -x "$HOME/.local/bin/claude" ] ||
  echo "   Claude Code is not installed yet: see \"Claude Code\" in README.md (csbox run -- bash works without it)"
echo "   start a session: csbox run"
