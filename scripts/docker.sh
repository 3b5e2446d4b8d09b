#!/usr/bin/env bash
# perch run inside a real Docker engine: starts its own dockerd (own data root, no iptables, no
# bridge), imports a Debian image made with debootstrap (minbase + python3), and runs the static
# perch in containers with Docker's default seccomp profile, as root and as --user 65534:65534,
# with the same checks as scripts/kernels.sh plus python3; then once more with
# `--security-opt seccomp=unconfined` to show which mode perch picks there (no /dev/fuse in a
# container either way). Stops dockerd and removes what it made. Exits non-zero on any failure.
#
# Usage: scripts/docker.sh
#   PERCH_BIN=path          the static perch (default: scripts/build-static.sh's output)
#   PERCH_DOCKER_CACHE=dir  where the debootstrap image tarball is kept (~/.cache/perch-docker)
#   DEBIAN_MIRROR=url       for debootstrap (default: http://deb.debian.org/debian)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/guest.sh
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${PERCH_DOCKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/perch-docker}
BIN=${PERCH_BIN:-target/x86_64-unknown-linux-gnu/release/perch}
[ -x "$BIN" ] || BIN=$(bash scripts/build-static.sh | tail -n 1)
BIN=$(realpath "$BIN")
for tool in dockerd docker debootstrap; do
  command -v "$tool" >/dev/null || { echo "docker: $tool is missing (apt-get install docker.io debootstrap)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "docker: must run as root (it starts its own dockerd)" >&2; exit 1; }
FQRN=docker.example.org
W=$(mktemp -d /tmp/perch-docker-XXXXXX)
chmod 755 "$W"
DOCKER=(docker -H "unix://$W/docker.sock")
cleanup() {
  if [ -f "$W/dockerd.pid" ]; then
    kill "$(cat "$W/dockerd.pid")" 2>/dev/null || true
    for _ in $(seq 50); do [ -e "$W/dockerd.pid" ] || break; sleep 0.2; done
  fi
  # Whatever dockerd left mounted below its roots (overlay layers, netns files).
  { grep -o " $W/[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT

# ---- the image: Debian minbase + python3, made once with debootstrap ----
mkdir -p "$CACHE"
image_tar=$CACHE/bookworm-minbase-python3.tar
if [ ! -s "$image_tar" ]; then
  echo "docker: making the image with debootstrap (once; cached in $image_tar)" >&2
  debootstrap --variant=minbase --include=python3 bookworm "$W/rootfs" "$MIRROR" > "$W/debootstrap.log" 2>&1 ||
    { tail -n 20 "$W/debootstrap.log" >&2; exit 1; }
  tar -C "$W/rootfs" -cf "$image_tar.part" . && mv "$image_tar.part" "$image_tar"
  rm -rf "$W/rootfs"
fi

# ---- dockerd of our own ----
dockerd --iptables=false --ip6tables=false --bridge=none --data-root "$W/data" --exec-root "$W/exec" \
  --pidfile "$W/dockerd.pid" -H "unix://$W/docker.sock" > "$W/dockerd.log" 2>&1 &
for _ in $(seq 100); do "${DOCKER[@]}" version >/dev/null 2>&1 && break; sleep 0.3; done
"${DOCKER[@]}" version >/dev/null 2>&1 || { echo "docker: dockerd did not start:" >&2; tail -n 20 "$W/dockerd.log" >&2; exit 1; }
"${DOCKER[@]}" info --format '{{.SecurityOptions}}' | grep -q seccomp ||
  { echo "docker: this dockerd has no seccomp support; the default profile cannot be tested" >&2; exit 1; }
"${DOCKER[@]}" import "$image_tar" perch-test:bookworm >/dev/null

# ---- the test tree, mounted read-only at /perchtest ----
R=$W/root
mkdir -p "$R"
guest_tree "$R" /perchtest "$BIN" "$(command -v busybox)" "$W/work"
PASSED=0 NFAILED=0
run() { # label docker-run-options...
  local label=$1; shift
  "${DOCKER[@]}" run --rm --network none -v "$R:/perchtest:ro" -v "$BIN:/usr/local/bin/perch:ro" \
    "$@" perch-test:bookworm sh /perchtest/checks.sh "$label" /perchtest > "$W/$label.out" 2>&1 || true
  if ! grep -q '^CHECK ' "$W/$label.out"; then
    echo "  $label: no checks ran:"; sed 's/^/    /' "$W/$label.out" | head -n 20; NFAILED=$((NFAILED + 1)); return
  fi
  # Forced fuse mode has no /dev/fuse (and, under the default profile, no user namespace).
  guest_report "$W/$label.out" 'fuse mode unavailable'
}
echo "DOCKER $("${DOCKER[@]}" version --format '{{.Server.Version}}'), default seccomp profile:"
run root
run uid65534 --user 65534:65534
echo "DOCKER seccomp=unconfined (modes perch offers: $(cat "$R/etc/modes")):"
run unconfined-root --security-opt seccomp=unconfined
echo "docker: $PASSED passed, $NFAILED failed"
[ "$NFAILED" = 0 ]
