#!/usr/bin/env bash
# Checks the static release binary the way a batch node sees it: no dynamic
# dependencies, no NSS code, runs from an empty environment in a read-only directory with no
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
# No NSS (issue 5): a static glibc binary that calls getaddrinfo, getpwnam... loads the
# node's NSS modules at run time and breaks with another glibc. Only defined symbols count:
# glibc's fork keeps weak undefined references to the NSS database that resolve to nothing.
# (dlopen itself stays: static glibc links it for iconv modules and its dlfcn hooks.)
nss=$(nm "$bin" | awk 'NF == 3 { print $3 }' | grep -xE 'getaddrinfo|getnameinfo|gethostby[a-z0-9_]+|getpw(nam|uid|ent)[a-z0-9_]*|getgr(nam|gid|ent)[a-z0-9_]*|getgrouplist|initgroups|getserv[a-z_]+|getproto[a-z_]+|getspnam[a-z_]*|_nss_[a-z0-9_]+|__nss_[a-z0-9_]+|__nscd_[a-z0-9_]+' || true)
[ -z "$nss" ] || fail "NSS code is linked in: $(echo "$nss" | tr '\n' ' ' | cut -c1-300)"

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
# Over HTTP, with a server name only a hosts file knows: perch's own resolver, no NSS.
"$bin" serve "$fixtures/tiny.example.org/stratum0" --listen 127.0.0.1:0 > "$work/serve.out" &
serve_pid=$!
trap 'kill $serve_pid 2>/dev/null || true; wait $serve_pid 2>/dev/null || true; chmod -R u+w "$work"; rm -rf "$work"' EXIT
for _ in $(seq 50); do grep -q 'http://' "$work/serve.out" && break; sleep 0.1; done
port=$(sed -n 's|.*http://127.0.0.1:\([0-9]*\).*|\1|p' "$work/serve.out")
[ -n "$port" ] || fail "perch serve did not start: $(cat "$work/serve.out")"
echo "127.0.0.1 stratum.check-static.invalid" > "$work/hosts"
sed -e "s|^CVMFS_SERVER_URL=.*|CVMFS_SERVER_URL=http://stratum.check-static.invalid:$port|" \
    -e "s|^CVMFS_CACHE_BASE=.*|CVMFS_CACHE_BASE=$work/cache-http|" "$work/tiny.conf" > "$work/http.conf"
out=$(cd "$work/ro" && env -i PERCH_HOSTS_FILE="$work/hosts" "$bin" cat --config "$work/http.conf" /cvmfs/tiny.example.org/hello.txt)
[ "$out" = "hello tiny" ] || fail "perch cat over http://stratum.check-static.invalid printed: $out"
echo "1 passed, 0 failed"
