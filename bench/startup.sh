#!/usr/bin/env bash
# Task start-up cost for batch jobs: `perch run -- /bin/true` with a mounted
# repository and a warm cache, against native /bin/true, plus a task that reads
# one file from /cvmfs. Median of N runs each, from one run of this script.
# Reproduce with:  bash bench/startup.sh        (N=50 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-50}
cargo build --quiet --release -p perch
PERCH=$PWD/target/release/perch
FIX=$(realpath "${PERCH_FIXTURES:-../shared/fixtures}")
W=$(mktemp -d /tmp/perch-startup-XXXXXX)
trap 'rm -rf "$W"' EXIT
cat > "$W/c.conf" <<CONF
CVMFS_SERVER_URL=file://$FIX/tiny.example.org/stratum0
CVMFS_PUBLIC_KEY=$FIX/tiny.example.org/keys/tiny.example.org.pub
CVMFS_HTTP_PROXY=DIRECT
CVMFS_CACHE_BASE=$W/cache
CONF
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_ms() { # command... -> wall ms of one run
  local s e; s=$(date +%s%N); "$@" >/dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000 ))
}
"$PERCH" run --config "$W/c.conf" -- cat /cvmfs/tiny.example.org/hello.txt >/dev/null  # warm the cache
native=$(for _ in $(seq "$N"); do time_ms /bin/true; done | median)
perch_true=$(for _ in $(seq "$N"); do time_ms "$PERCH" run --config "$W/c.conf" -- /bin/true; done | median)
perch_cat=$(for _ in $(seq "$N"); do time_ms "$PERCH" run --config "$W/c.conf" -- cat /cvmfs/tiny.example.org/hello.txt; done | median)
echo "# bash bench/startup.sh   (N=$N, $(nproc) cores, $(uname -r)); median wall time in microseconds"
printf '%-52s %8s us\n' "native /bin/true" "$native"
printf '%-52s %8s us  (+%s us)\n' "perch run -- /bin/true (warm, no repository touched)" "$perch_true" "$((perch_true - native))"
printf '%-52s %8s us  (+%s us)\n' "perch run -- cat /cvmfs/tiny.example.org/hello.txt" "$perch_cat" "$((perch_cat - native))"
