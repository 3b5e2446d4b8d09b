#!/usr/bin/env bash
# Task start-up cost for batch jobs: `perch run -- /bin/true` (no repository touched) and
# `perch run -- cat /cvmfs/tiny.example.org/hello.txt` (one repository mounted, warm cache) in
# fuse mode and in notify mode, against native. All commands run interleaved, N times each, in
# one run of this script; it prints the median and first quartile of the wall time and the
# median CPU time (user + system of perch, its threads and the program).
# Reproduce with:  bash bench/startup.sh            (N=40 by default)
#   PERCH_OLD=path   adds the same rows for another build (e.g. before a change), interleaved
#   PERCH_BIN=path   the build to measure (default: cargo build --release -p perch)
# The fuse rows need user namespaces and /dev/fuse; they fail the script otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-40}
if [ -z "${PERCH_BIN:-}" ]; then
  cargo build --quiet --release -p perch
  PERCH_BIN=$PWD/target/release/perch
fi
FIX=$(realpath "${PERCH_FIXTURES:-../shared/fixtures}")
W=$(mktemp -d /tmp/perch-startup-XXXXXX)
trap 'rm -rf "$W"' EXIT
cat > "$W/c.conf" <<CONF
CVMFS_SERVER_URL=file://$FIX/tiny.example.org/stratum0
CVMFS_PUBLIC_KEY=$FIX/tiny.example.org/keys/tiny.example.org.pub
CVMFS_HTTP_PROXY=DIRECT
CVMFS_CACHE_BASE=$W/cache
CONF
FILE=/cvmfs/tiny.example.org/hello.txt
"$PERCH_BIN" run --config "$W/c.conf" --mode notify -- cat "$FILE" >/dev/null  # warm the cache
echo "# bash bench/startup.sh   (N=$N, $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg))"
rows=("native /bin/true=/bin/true" "native cat=cat $FIX/tiny.example.org/client.conf")
for b in new ${PERCH_OLD:+old}; do
  bin=$PERCH_BIN; [ "$b" = old ] && bin=$(realpath "$PERCH_OLD")
  for mode in notify fuse; do
    rows+=("$b $mode /bin/true=$bin run --config $W/c.conf --mode $mode -- /bin/true")
    rows+=("$b $mode cat=$bin run --config $W/c.conf --mode $mode -- cat $FILE")
  done
done
python3 - "$N" "${rows[@]}" <<'PY'
import os, shlex, statistics, sys, time
n = int(sys.argv[1])
rows = [a.split("=", 1) for a in sys.argv[2:]]
wall = {l: [] for l, _ in rows}
cpu = {l: [] for l, _ in rows}
null = os.open(os.devnull, os.O_WRONLY)
for _ in range(n):
    for label, cmd in rows:
        argv = shlex.split(cmd)
        t0 = time.perf_counter_ns()
        pid = os.posix_spawnp(argv[0], argv, os.environ,
                              file_actions=[(os.POSIX_SPAWN_DUP2, null, 1)])
        _, status, ru = os.wait4(pid, 0)
        t1 = time.perf_counter_ns()
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"startup: {label!r} failed: {cmd}")
        wall[label].append((t1 - t0) / 1e3)
        cpu[label].append((ru.ru_utime + ru.ru_stime) * 1e6)
print(f"{'':24s} {'wall median':>12s} {'wall p25':>10s} {'cpu median':>11s}")
for label, _ in rows:
    w = sorted(wall[label])
    print(f"{label:24s} {statistics.median(w):9.0f} us {w[len(w) // 4]:7.0f} us"
          f" {statistics.median(cpu[label]):8.0f} us")
PY
