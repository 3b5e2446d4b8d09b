#!/usr/bin/env bash
# Trust on use (issue 9): what verifying cached objects costs, on a warm local cache.
#   verify   a ${SIZE_MB} MB file read by `perch cat` with its index stamp valid (no hashing), and
#            after `chmod` of its cache object (ctime changed: hashed again against the digest
#            this user's download recorded); the difference is the first-use verification,
#            reported as MB/s. Median of $N runs each.
#   open     $OPENS open+close of one cached file by python3 under `perch run`, this build against
#            PERCH_BASE (a build without trust on use, e.g. main's) if given; the difference per
#            open is the index check (fstat + lookup, twice: the shadow file kept, then the fd).
# Reproduce with:  PERCH_BASE=/work/main/target/release/perch bash bench/trust.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-256}
N=${N:-5}
OPENS=${OPENS:-20000}
FQRN=trust-bench.example.org
if [ -z "${PERCH:-}" ]; then cargo build --quiet --release -p perch; fi
PERCH=${PERCH:-$PWD/target/release/perch}   # PERCH=path measures another build (no build)
W=$(mktemp -d /tmp/perch-trustbench-XXXXXX)
trap 'rm -rf "$W"' EXIT

mkdir -p "$W/src"
head -c $((SIZE_MB << 20)) /dev/urandom >"$W/src/big"
echo hello >"$W/src/hello.txt"
"$PERCH" keygen "$FQRN" "$W/keys" >/dev/null
"$PERCH" publish "$W/src" --fqrn "$FQRN" --keys "$W/keys" --stratum "$W/stratum" --chunk-sizes off >/dev/null
printf 'CVMFS_SERVER_URL=file://%s/stratum\nCVMFS_HTTP_PROXY=DIRECT\nCVMFS_PUBLIC_KEY=%s/keys/%s.pub\n' \
  "$W" "$W" "$FQRN" >"$W/client.conf"
mkdir -p "$W/etc"
args() { echo --config-dir "$W/etc" --config "$W/client.conf" --cache "$W/cache-$1"; }

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }

# ---- verify ----
"$PERCH" cat $(args a) "/cvmfs/$FQRN/big" >/dev/null   # cold: downloaded and hashed while streaming
OBJ=$(find "$W/cache-a/$FQRN" -path '*/[0-9a-f][0-9a-f]/*' -size +1M -type f | head -1)
warm=() rehash=()
for _ in $(seq "$N"); do
  t0=$(now); "$PERCH" cat $(args a) "/cvmfs/$FQRN/big" >/dev/null; t1=$(now)
  warm+=("$(echo "$t1 - $t0" | bc -l)")
  chmod 555 "$OBJ"   # same mode, new ctime: the index stamp no longer matches
  t0=$(now); "$PERCH" cat $(args a) "/cvmfs/$FQRN/big" >/dev/null; t1=$(now)
  rehash+=("$(echo "$t1 - $t0" | bc -l)")
done
w=$(printf '%s\n' "${warm[@]}" | median)
r=$(printf '%s\n' "${rehash[@]}" | median)
printf 'verify: %d MB  warm (stamp valid) %.3f s  after chmod (hashed again) %.3f s  => %.0f MB/s first-use verification\n' \
  "$SIZE_MB" "$w" "$r" "$(echo "$SIZE_MB / ($r - $w)" | bc -l)"

# ---- open ----
SCRIPT="import os, time
p = '/cvmfs/$FQRN/hello.txt'
os.close(os.open(p, os.O_RDONLY))
t = time.perf_counter()
for _ in range($OPENS):
    os.close(os.open(p, os.O_RDONLY))
print((time.perf_counter() - t) / $OPENS * 1e6)"
per_open() { # $1 = perch binary, $2 = cache name
  for _ in $(seq "$N"); do "$1" run $(args "$2") -r "$FQRN" -- python3 -c "$SCRIPT"; done | median
}
mine=$(per_open "$PERCH" b)
printf 'open: %.1f us per open+close under perch run (this build, trust index check included)\n' "$mine"
if [ -n "${PERCH_BASE:-}" ]; then
  base=$(per_open "$PERCH_BASE" c)
  printf 'open: %.1f us per open+close under perch run (%s)  => index check %.1f us per open\n' \
    "$base" "$PERCH_BASE" "$(echo "$mine - $base" | bc -l)"
fi
echo "(machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
