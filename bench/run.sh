#!/usr/bin/env bash
# perch run (notify, fuse and ptrace modes) vs native vs Debian's proot, from one run: median wall
# time of each workload and its ratio to native, on native paths and with the inputs in /cvmfs
# (warm cache). The fuse column needs user namespaces and /dev/fuse (it says FAILED otherwise).
# The last column is half of Parrot's ratio for the workload (issue 11's figures, measured on
# this kind of machine): the goal for ptrace mode.
# Reproduce with:  bash bench/run.sh            (REPS=5 by default; BIG=1 adds cat of a 1 GiB file)
# Options (environment):
#   ROWS=REGEX      only the workloads whose name matches (grep -E), e.g. ROWS=threads
#   PERCH=path      measure this build instead of building target/release/perch
#   PERCH_OLD=path  add a column for another build (e.g. main's), run alternately with PERCH
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-5}
ROWS=${ROWS:-}
if [ -z "${PERCH:-}" ]; then
  cargo build --quiet --release -p perch
  PERCH=$PWD/target/release/perch
fi
PERCH_OLD=${PERCH_OLD:-}
W=$(mktemp -d /tmp/perch-bench-XXXXXX)
trap 'rm -rf "$W"' EXIT
FQRN=bench.example.org
SRC=$W/src
mkdir -p "$SRC"

# ---- the tree published as a repository (same content as the native inputs) ----
PY=$(command -v /usr/bin/python3 || command -v python3)   # not a pyenv shim: measure python itself
PYLIB=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
cp -a "$PYLIB" "$SRC/pylib"
rm -rf "$SRC/pylib/site-packages" "$SRC/pylib/dist-packages"
cat > "$SRC/small.c" <<'EOF'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
int main(int argc, char **argv) { qsort(argv + 1, argc - 1, sizeof *argv, cmp); for (int i = 1; i < argc; i++) puts(argv[i]); return 0; }
EOF
mkdir -p "$SRC/proj" "$SRC/many"
for i in $(seq 1 17); do
  printf '#include "common.h"\nint f%d(int x) { int s = 0; for (int i = 0; i < x; i++) s += i * %d; return s; }\n' "$i" "$i" > "$SRC/proj/f$i.c"
done
printf 'int f1(int);\n' > "$SRC/proj/common.h"
printf 'SRC ?= .\nOBJS = $(patsubst $(SRC)/%%.c,%%.o,$(wildcard $(SRC)/f*.c))\nall: libp.a\nlibp.a: $(OBJS)\n\tar rcs $@ $^\n%%.o: $(SRC)/%%.c $(SRC)/common.h\n\t$(CC) -O2 -I$(SRC) -c -o $@ $<\n' > "$SRC/proj/Makefile"
for i in $(seq 1 1000); do head -c $((512 + i)) /dev/urandom > "$SRC/many/f$i"; done
if [ "${BIG:-0}" = 1 ]; then head -c 1073741824 /dev/urandom > "$SRC/big"; fi
"$PERCH" keygen $FQRN "$W/keys" >/dev/null
"$PERCH" publish "$SRC" --fqrn $FQRN --keys "$W/keys" --stratum "$W/stratum" --chunk-sizes off >/dev/null
printf 'CVMFS_SERVER_URL=file://%s/stratum\nCVMFS_HTTP_PROXY=DIRECT\nCVMFS_PUBLIC_KEY=%s/keys/%s.pub\n' "$W" "$W" $FQRN > "$W/client.conf"
mkdir -p "$W/etc" "$W/cache" "$W/cache-old" "$W/out"
RUN=("$PERCH" run --mode notify --config-dir "$W/etc" --config "$W/client.conf" --cache "$W/cache" -r $FQRN --)
FUSE=("$PERCH" run --mode fuse --config-dir "$W/etc" --config "$W/client.conf" --cache "$W/cache" -r $FQRN --)
PTRACE=("$PERCH" run --mode ptrace --config-dir "$W/etc" --config "$W/client.conf" --cache "$W/cache" -r $FQRN --)
# The old build may predate --mode (notify was its only mode).
OLD=("${PERCH_OLD:-false}" run --mode notify --config-dir "$W/etc" --config "$W/client.conf" --cache "$W/cache-old" -r $FQRN --)
CV=/cvmfs/$FQRN

cat > "$W/threads.py" <<'EOF'
import hashlib, os, sys, threading
root = sys.argv[1]
names = [os.path.join(root, f"f{i}") for i in range(1, 1001)]
def work(part):
    for n in part:
        os.stat(n)
        with open(n, "rb") as f:
            hashlib.sha1(f.read()).hexdigest()
ts = [threading.Thread(target=work, args=(names,)) for _ in range(8)]
for t in ts: t.start()
for t in ts: t.join()
EOF

# ---- timing ----
median_ms() { # command... ; prints the median of REPS runs in ms
  local times=() s e
  for _ in $(seq "$REPS"); do
    s=$(date +%s%N); "$@" >/dev/null 2>&1 || echo "FAILED: $*" >&2; e=$(date +%s%N)
    times+=($(( (e - s) / 1000000 )))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'
}
# perch and PERCH_OLD alternately, REPS runs each: "new old" medians in ms.
median_pair_ms() { # script-for-sh
  local new=() old=() s e
  for _ in $(seq "$REPS"); do
    s=$(date +%s%N); "${OLD[@]}" sh -c "$1" >/dev/null 2>&1 || echo "FAILED (old): $1" >&2; e=$(date +%s%N)
    old+=($(( (e - s) / 1000000 )))
    s=$(date +%s%N); "${RUN[@]}" sh -c "$1" >/dev/null 2>&1 || echo "FAILED: $1" >&2; e=$(date +%s%N)
    new+=($(( (e - s) / 1000000 )))
  done
  echo "$(printf '%s\n' "${new[@]}" | med) $(printf '%s\n' "${old[@]}" | med)"
}
med() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
selected() { [ -z "$ROWS" ] || grep -Eq -- "$ROWS" <<<"$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b == 0) b = 1; printf "%.2fx", a / b }'; }

# name @ script on native paths @ script with the inputs in /cvmfs ($D = the tree's location)
WORKLOADS=(
  "find /usr/lib (/cvmfs: find pylib)@find /usr/lib >/dev/null@find \$D/pylib >/dev/null"
  "500x /bin/true@i=0; while [ \$i -lt 500 ]; do /bin/true; i=\$((i+1)); done@i=0; while [ \$i -lt 500 ]; do /bin/true; i=\$((i+1)); done"
  "tar c /usr/share|cat (tar pylib)@tar cf - /usr/share 2>/dev/null | cat >/dev/null@tar cf - \$D/pylib 2>/dev/null | cat >/dev/null"
  "20x python3 imports@i=0; while [ \$i -lt 20 ]; do $PY -c 'import json, email, http.client'; i=\$((i+1)); done@i=0; while [ \$i -lt 20 ]; do PYTHONPATH=\$D/pylib $PY -S -c 'import json, email, http.client'; i=\$((i+1)); done"
  "gcc -O2 small.c@gcc -O2 -o $W/out/a.out $SRC/small.c@gcc -O2 -o $W/out/a.out \$D/small.c"
  "python 8 threads x 1000 files@$PY $W/threads.py $SRC/many@$PY $W/threads.py \$D/many"
  "make -j2 (17 C files)@rm -rf $W/out/m && mkdir $W/out/m && make -s -j2 -C $W/out/m -f $SRC/proj/Makefile SRC=$SRC/proj@rm -rf $W/out/m && mkdir $W/out/m && make -s -j2 -C $W/out/m -f \$D/proj/Makefile SRC=\$D/proj"
)
if [ "${BIG:-0}" = 1 ]; then
  WORKLOADS+=("cat 1 GiB@cat $SRC/big >/dev/null@cat \$D/big >/dev/null")
fi

# Warm the cache: every file of the tree fetched once through perch.
# (through a pipe: GNU tar does not read the files when its archive is /dev/null)
"${RUN[@]}" sh -c "tar cf - $CV 2>/dev/null | cat >/dev/null; true"
[ -z "$PERCH_OLD" ] || "${OLD[@]}" sh -c "tar cf - $CV 2>/dev/null | cat >/dev/null; true"

echo "# bash bench/run.sh   REPS=$REPS${ROWS:+ ROWS=$ROWS}, $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg), proot $(proot --version 2>&1 | grep -o '[0-9][0-9.]*$' | head -1 || true)"
[ -z "$PERCH_OLD" ] || echo "# perch(old) = $PERCH_OLD, run alternately with perch = $PERCH"
# Half of Parrot's ratio to native (3 runs, medians), the goal for ptrace mode; "-" if unknown.
parrot_half() {
  case "$1" in
    find*) echo 15.5x ;; 500x*) echo 1.95x ;; tar*) echo 7.5x ;; 20x\ python3*) echo 1.05x ;;
    gcc*) echo 1.95x ;; python\ 8*) echo 45x ;; make*) echo 2.2x ;; cat\ 1\ GiB*) echo 3.7x ;;
    *) echo - ;;
  esac
}
header() {
  if [ -n "$PERCH_OLD" ]; then
    printf '%-32s %9s %9s %9s %9s %9s %9s %8s %8s %8s %8s %8s %8s\n' "$1" native "notify(old)" notify fuse ptrace proot old/n notify/n fuse/n ptrace/n proot/n parrot/2
  else
    printf '%-32s %9s %9s %9s %9s %9s %8s %8s %8s %8s %8s\n' "$1" native notify fuse ptrace proot notify/n fuse/n ptrace/n proot/n parrot/2
  fi
}
row() { # name native-script perch-script proot-args...
  local name=$1 nat=$2 under=$3 n p o f t r; shift 3
  n=$(median_ms sh -c "$nat")
  if [ -n "$PERCH_OLD" ]; then
    read -r p o <<<"$(median_pair_ms "$under")"
  else
    p=$(median_ms "${RUN[@]}" sh -c "$under")
  fi
  f=$(median_ms "${FUSE[@]}" sh -c "$under")
  t=$(median_ms "${PTRACE[@]}" sh -c "$under")
  r=$(median_ms proot "$@" sh -c "$under")
  if [ -n "$PERCH_OLD" ]; then
    printf '%-32s %7sms %7sms %7sms %7sms %7sms %7sms %8s %8s %8s %8s %8s %8s\n' "$name" "$n" "$o" "$p" "$f" "$t" "$r" "$(ratio "$o" "$n")" "$(ratio "$p" "$n")" "$(ratio "$f" "$n")" "$(ratio "$t" "$n")" "$(ratio "$r" "$n")" "$(parrot_half "$name")"
  else
    printf '%-32s %7sms %7sms %7sms %7sms %7sms %8s %8s %8s %8s %8s\n' "$name" "$n" "$p" "$f" "$t" "$r" "$(ratio "$p" "$n")" "$(ratio "$f" "$n")" "$(ratio "$t" "$n")" "$(ratio "$r" "$n")" "$(parrot_half "$name")"
  fi
}
header "workload (native paths)"
for w in "${WORKLOADS[@]}"; do
  IFS='@' read -r name nat _ <<<"$w"
  selected "$name" || continue
  row "$name" "$nat" "$nat"
done
echo
header "workload (inputs in /cvmfs)"
for w in "${WORKLOADS[@]}"; do
  IFS='@' read -r name _ cvm <<<"$w"
  [ -n "$cvm" ] || continue
  selected "$name" || continue
  # proot shows the same tree at the same /cvmfs path with a bind.
  row "$name" "D=$SRC; $cvm" "D=$CV; $cvm" -b "$SRC:$CV"
done
echo
[ -z "$ROWS" ] || exit 0
# Where the time goes: notifications of one run of find /usr/lib, and the cost of each.
n=$(median_ms find /usr/lib)
stats=$("$PERCH" run --mode notify -d stats --config-dir "$W/etc" --config "$W/client.conf" --cache "$W/cache" -r $FQRN -- find /usr/lib 2>&1 >/dev/null | grep -o 'notifications=[0-9]*' | cut -d= -f2)
p=$(median_ms "${RUN[@]}" find /usr/lib)
echo "find /usr/lib (notify mode): $stats notifications, $(awk -v p="$p" -v n="$n" -v c="$stats" 'BEGIN{printf "%.1f", (p - n) * 1000 / c}') us each beyond native ($n ms native, $p ms perch)"
