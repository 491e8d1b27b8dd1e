# vm-tests/chroot.sh: sourced by vm-tests/readme and vm-tests/deb. A fresh Debian root
# (debootstrap minbase, cached as a tarball) and a way to run commands in it as a machine
# of its own would: its own mount and pid namespaces, a real root (pivot_root, not
# chroot(2): the kernel refuses unprivileged user namespaces to a chrooted process, see
# user_namespaces(7), so csbox could not run in a plain chroot), fresh /proc and /sys,
# the host's /dev. The network is the host's.
#
# Needs root, debootstrap, unshare and pivot_root (util-linux).

chroot_mirror=${VM_MIRROR:-http://deb.debian.org/debian}
chroot_cache=${VM_CACHE:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/cache}
CHROOT_VERSION=1

chroot_die() { printf '%s: %s\n' "${0##*/}" "$*" >&2; exit 2; }

chroot_need_tools() {
  local missing=()
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v pivot_root >/dev/null || missing+=(util-linux)
  [ ${#missing[@]} -eq 0 ] && return
  [ "$(id -u)" = 0 ] || chroot_die "missing ${missing[*]}; install them or run as root"
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# What a new Debian install has and debootstrap does not write: the security and
# updates suites in its sources, and this network's local CAs (a TLS-inspecting proxy's
# CA, as an administrator would add it; ca-certificates picks it up once installed).
chroot_customize() {
  local root=$1 suite=$2
  cat >"$root/etc/apt/sources.list" <<EOF
deb $chroot_mirror $suite main
deb $chroot_mirror $suite-updates main
deb ${chroot_mirror%/debian}/debian-security $suite-security main
EOF
  echo csbox-chroot >"$root/etc/hostname"
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/*
}

# Print the path of the cached tarball of a fresh SUITE root, building it if missing.
chroot_base() {
  local suite=$1 key tar
  key=$(printf '%s\n' "$CHROOT_VERSION" "$suite" "$chroot_mirror" "$(declare -f chroot_customize)" | sha256sum | cut -c1-12)
  tar=$chroot_cache/chroot-$suite-$key.tar
  if [ -s "$tar" ]; then echo "$tar"; return; fi
  mkdir -p "$chroot_cache"
  local tmp t0=$SECONDS
  tmp=$(mktemp -d "$chroot_cache/chroot-$suite.XXXXXX")
  printf '# debootstrap --variant=minbase %s (cached as %s)\n' "$suite" "${tar##*/}" >&2
  debootstrap --variant=minbase "$suite" "$tmp/root" "$chroot_mirror" >"$tmp/log" 2>&1 ||
    { tail -20 "$tmp/log" >&2; rm -rf "$tmp"; chroot_die "debootstrap $suite failed"; }
  chroot_customize "$tmp/root" "$suite"
  tar -C "$tmp/root" -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
  rm -rf "$tmp"
  local old
  for old in "$chroot_cache/chroot-$suite"-*.tar; do [ "$old" = "$tar" ] || rm -f "$old"; done
  printf '# %s root built in %d s\n' "$suite" $((SECONDS - t0)) >&2
  echo "$tar"
}

# chroot_new DIR SUITE: a fresh root at DIR/root.
chroot_new() {
  local dir=$1 suite=$2 tar
  tar=$(chroot_base "$suite")
  mkdir -p "$dir/root"
  tar -C "$dir/root" -xf "$tar"
  cp -L /etc/resolv.conf "$dir/root/etc/resolv.conf"
  local crt
  for crt in /usr/local/share/ca-certificates/*.crt; do
    [ -e "$crt" ] || continue
    mkdir -p "$dir/root/usr/local/share/ca-certificates"
    cp "$crt" "$dir/root/usr/local/share/ca-certificates/"
  done
}

# chroot_run ROOT SCRIPT: run SCRIPT with bash as root of ROOT, with a clean environment
# (proxy variables pass, as they would be set on that machine). Everything it started
# dies with it (its own pid namespace); its mounts go with its mount namespace.
chroot_run() {
  local root=$1 script=$2 env=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    HOME=/root LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive)
  local v
  for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [ -z "${!v:-}" ] || env+=("$v=${!v}")
  done
  unshare --mount --pid --fork --propagation private -- bash -c '
    set -e
    r=$1; shift
    mount --bind "$r" "$r"
    mount -t proc proc "$r/proc"
    mount -t sysfs sysfs "$r/sys"
    mount --rbind /dev "$r/dev"
    mount -t tmpfs -o mode=755 tmpfs "$r/run"
    mkdir -p "$r/.oldroot"
    cd "$r"
    pivot_root . .oldroot
    umount -l /.oldroot
    rmdir /.oldroot
    cd /
    exec env -i "$@"' chroot-run "$root" "${env[@]}" bash -c "$script"
}
