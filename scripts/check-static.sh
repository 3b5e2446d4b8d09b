#!/usr/bin/env bash
# Checks the static release binary the way a batch node sees it: no dynamic
# dependencies, runs from an empty environment in a read-only directory with no
# HOME and no TMPDIR, and reads a repository (the tiny fixture, over file://).
# Usage: scripts/check-static.sh [PATH_TO_PERCH]   (default: the build-static.sh output)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/x86_64-unknown-linux-gnu/release/perch}")
fixtures=$(realpath "${PERCH_FIXTURES:-../shared/fixtures}")
fail() { echo "check-static: FAIL: $*" >&2; exit 1; }

file "$bin" | grep -q "static" || fail "not statically linked: $(file "$bin")"
deps=$(ldd "$bin" 2>&1 || true)
case "$deps" in
  *"statically linked"*|*"not a dynamic executable"*) ;;
  *) fail "ldd lists dynamic dependencies: $deps" ;;
esac
env -i "$bin" --version | grep -q "linkage: static" || fail "--version does not report a static build"

work=$(mktemp -d); trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
mkdir "$work/ro" "$work/cache"
cat > "$work/tiny.conf" <<CONF
CVMFS_SERVER_URL=file://$fixtures/tiny.example.org/stratum0
CVMFS_PUBLIC_KEY=$fixtures/tiny.example.org/keys/tiny.example.org.pub
CVMFS_HTTP_PROXY=DIRECT
CVMFS_CACHE_BASE=$work/cache
CONF
chmod 555 "$work/ro"
out=$(cd "$work/ro" && env -i "$bin" cat --config "$work/tiny.conf" /cvmfs/tiny.example.org/hello.txt)
[ "$out" = "hello tiny" ] || fail "perch cat from an empty environment printed: $out"
out=$(cd "$work/ro" && env -i "$bin" run --config "$work/tiny.conf" -- /bin/cat /cvmfs/tiny.example.org/dir/a.txt)
[ "$out" = "a" ] || fail "perch run from an empty environment printed: $out"
echo "1 passed, 0 failed"
