#!/usr/bin/env bash
# The static binary on another distribution: builds a minimal root file system of
# an older Debian release (older glibc than the build machine's) with debootstrap,
# copies ONLY the perch binary and a stratum into it, serves the stratum on
# loopback from outside, and inside `chroot` runs `perch run -- <program from /cvmfs>`.
# Needs root (chroot) and the Debian mirror that apt uses. Takes 2-5 minutes.
# Usage: scripts/other-distro.sh [PERCH_BINARY] [SUITE]   (default suite: bullseye)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/x86_64-unknown-linux-gnu/release/perch}")
suite=${2:-bullseye}
mirror=${DEBIAN_MIRROR:-$( (grep -rhoE '^(URIs:|deb) *http[^ ]+/debian/?$' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true) | head -1 | awk '{print $2}')}
[ -n "$mirror" ] || { echo "no Debian mirror found in apt's sources; set DEBIAN_MIRROR" >&2; exit 1; }
W=$(mktemp -d /tmp/perch-distro-XXXXXX)
cleanup() {
  [ -n "${srv:-}" ] && kill "$srv" 2>/dev/null
  mountpoint -q "$W/root/proc" 2>/dev/null && umount "$W/root/proc"
  rm -rf "$W"
}
trap cleanup EXIT
root=$W/root
echo "debootstrap $suite (minbase) from $mirror ..."
debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$W/debootstrap.log" 2>&1 || { tail "$W/debootstrap.log"; exit 1; }
echo "glibc inside: $(chroot "$root" /usr/bin/ldd --version | head -1)"
echo "glibc here:   $(ldd --version | head -1)"
# A repository with a script and a data file, published and served from outside.
mkdir -p "$W/src/bin"
printf '#!/bin/sh\necho "hello from $(dirname "$0") on $(. /etc/os-release; echo "$PRETTY_NAME")"\n' > "$W/src/bin/hello.sh"
chmod 755 "$W/src/bin/hello.sh"
"$bin" keygen distro.perch.local "$W/keys" >/dev/null
"$bin" publish "$W/src" --fqrn distro.perch.local --keys "$W/keys" --stratum "$W/stratum" >/dev/null
port=$(( 20000 + RANDOM % 20000 ))
"$bin" serve "$W/stratum" --listen "127.0.0.1:$port" >/dev/null & srv=$!
mkdir -p "$root/perch" && cp "$bin" "$root/perch/perch" && cp "$W/keys/distro.perch.local.pub" "$root/perch/"
cat > "$root/perch/c.conf" <<CONF
CVMFS_SERVER_URL=http://127.0.0.1:$port/cvmfs/@fqrn@
CVMFS_PUBLIC_KEY=/perch/distro.perch.local.pub
CVMFS_HTTP_PROXY=DIRECT
CVMFS_CACHE_BASE=/perch/cache
CONF
# perch reads /proc/<pid>/{cwd,fd} of the programs it supervises, as on any node.
mount -t proc proc "$root/proc"
sleep 0.5
out=$(chroot "$root" /usr/bin/env -i PATH=/usr/bin:/bin /perch/perch run --config /perch/c.conf -- /cvmfs/distro.perch.local/bin/hello.sh)
echo "$out"
case "$out" in
  "hello from /cvmfs/distro.perch.local/bin on Debian GNU/Linux 11"*) echo "1 passed, 0 failed" ;;
  *) echo "0 passed, 1 failed"; exit 1 ;;
esac
