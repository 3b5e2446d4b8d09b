#!/usr/bin/env bash
# Throughput of virtual `stat` (calls/s, median of REPS runs) with 1, 2, 4 and 8 program threads
# stat'ing one file in /cvmfs, under perch and (PERCH_OLD=path) under another build beside it,
# with native stat of the same file on its real path for reference. Each run makes TOTAL calls
# split over the threads.
# Reproduce with:  bash bench/stat_threads.sh
#                  PERCH_OLD=/work/main/target/release/perch REPS=7 bash bench/stat_threads.sh
#                  MODE=notify bash bench/stat_threads.sh   (perch run --mode; auto by default)
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-5}
TOTAL=${TOTAL:-40000}
THREADS=${THREADS:-"1 2 4 8"}
if [ -z "${PERCH:-}" ]; then
  cargo build --quiet --release -p perch
  PERCH=$PWD/target/release/perch
fi
PERCH_OLD=${PERCH_OLD:-}
W=$(mktemp -d /tmp/perch-statbench-XXXXXX)
trap 'rm -rf "$W"' EXIT
FQRN=bench.example.org
mkdir -p "$W/src/a/b/c" "$W/etc" "$W/cache" "$W/cache-old"
echo hello > "$W/src/a/b/c/file"
cc -O2 -pthread -o "$W/stat_threads" bench/stat_threads.c
"$PERCH" keygen $FQRN "$W/keys" >/dev/null
"$PERCH" publish "$W/src" --fqrn $FQRN --keys "$W/keys" --stratum "$W/stratum" >/dev/null
printf 'CVMFS_SERVER_URL=file://%s/stratum\nCVMFS_HTTP_PROXY=DIRECT\nCVMFS_PUBLIC_KEY=%s/keys/%s.pub\n' "$W" "$W" $FQRN > "$W/client.conf"
run_with() { # binary cache args...
  local bin=$1 cache=$2; shift 2
  "$bin" run --mode "${MODE:-auto}" --config-dir "$W/etc" --config "$W/client.conf" --cache "$cache" -r $FQRN -- "$@"
}
median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
rate() { # command... ; median calls/s of REPS runs
  local i
  for i in $(seq "$REPS"); do "$@" || echo 0; done | median
}
VPATH=/cvmfs/$FQRN/a/b/c/file
run_with "$PERCH" "$W/cache" "$W/stat_threads" "$VPATH" 1 10 >/dev/null
[ -z "$PERCH_OLD" ] || run_with "$PERCH_OLD" "$W/cache-old" "$W/stat_threads" "$VPATH" 1 10 >/dev/null

echo "# bash bench/stat_threads.sh   REPS=$REPS TOTAL=$TOTAL, $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# stat($VPATH), calls/s (median); native = the same file on its real path"
if [ -n "$PERCH_OLD" ]; then
  printf '%-8s %12s %12s %12s %8s\n' threads native "perch(old)" perch new/old
else
  printf '%-8s %12s %12s\n' threads native perch
fi
for t in $THREADS; do
  n=$(rate "$W/stat_threads" "$W/src/a/b/c/file" "$t" "$((TOTAL * 20))")
  # Old and new alternate run by run, so that load from elsewhere falls on both alike.
  : > "$W/new"; : > "$W/old"
  for _ in $(seq "$REPS"); do
    [ -z "$PERCH_OLD" ] || { run_with "$PERCH_OLD" "$W/cache-old" "$W/stat_threads" "$VPATH" "$t" "$TOTAL" || echo 0; } >> "$W/old"
    { run_with "$PERCH" "$W/cache" "$W/stat_threads" "$VPATH" "$t" "$TOTAL" || echo 0; } >> "$W/new"
  done
  p=$(median < "$W/new")
  if [ -n "$PERCH_OLD" ]; then
    o=$(median < "$W/old")
    printf '%-8s %12s %12s %12s %7.2fx\n' "$t" "$n" "$o" "$p" "$(awk -v a="$p" -v b="$o" 'BEGIN{print (b > 0 ? a / b : 0)}')"
  else
    printf '%-8s %12s %12s\n' "$t" "$n" "$p"
  fi
done
