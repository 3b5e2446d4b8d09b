#!/usr/bin/env bash
# Peak resident memory (VmHWM) of the perch process while a program lists one directory of
# ENTRIES entries under `perch run` (the shadow tree fills that directory on the first
# listing), for one or more perch binaries side by side.
#   bash bench/listing.sh [ENTRIES]         (default 1000000)
#   PERCH="path/a path/b"   binaries to compare (default: this tree's release build)
#   KEEP=DIR                keep (and reuse) the generated stratum in DIR
# Generating: python3 writes ENTRIES empty files into one directory, `perch publish` of the
# first binary publishes them as one catalog. Each binary then runs `ls -f` (no sorting:
# the program holds nothing) over the directory twice: cold (shadow directory filled from
# the catalog) and warm (filled already), with a fresh cache, in notify mode, or in the mode
# MODE names (MODE=fuse: perch-fuse reads the directory from its catalog a page at a time).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
MODE=${MODE:-notify}
if [ -z "${PERCH:-}" ]; then
  cargo build --quiet --release -p perch
  PERCH=$PWD/target/release/perch
fi
read -r -a BINS <<<"$PERCH"
W=${KEEP:-$(mktemp -d /tmp/perch-listing-XXXXXX)}
mkdir -p "$W"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$W"' EXIT
echo "# MODE=$MODE bash bench/listing.sh $N   ($(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg))"
R=$W/$N
FQRN=listing$N.example.org
if [ ! -f "$R/stratum/.cvmfspublished" ]; then
  rm -rf "$R"; mkdir -p "$R/src/big"
  s=$(date +%s%N)
  python3 - "$R/src/big" "$N" <<'EOF'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    os.close(os.open(os.path.join(d, f"f{i:07}"), os.O_CREAT | os.O_WRONLY, 0o644))
EOF
  m=$(date +%s%N)
  "${BINS[0]}" keygen "$FQRN" "$R/keys" >/dev/null
  "${BINS[0]}" publish "$R/src" --fqrn "$FQRN" --keys "$R/keys" --stratum "$R/stratum" --chunk-sizes off >/dev/null
  e=$(date +%s%N)
  echo "generated $N entries: tree $(( (m - s) / 1000000 )) ms, publish $(( (e - m) / 1000000 )) ms"
  rm -rf "$R/src"
  printf 'CVMFS_SERVER_URL=file://%s/stratum\nCVMFS_HTTP_PROXY=DIRECT\nCVMFS_PUBLIC_KEY=%s/keys/%s.pub\n' "$R" "$R" "$FQRN" >"$R/client.conf"
fi
for bin in "${BINS[@]}"; do
  rm -rf "$R/cache" "$R/etc"; mkdir -p "$R/cache" "$R/etc"
  for pass in cold warm; do
    s=$(date +%s%N)
    # perch is the parent of the program it runs: the job reads its VmHWM from /proc/$PPID.
    out=$("$bin" run --mode "$MODE" --config-dir "$R/etc" --config "$R/client.conf" --cache "$R/cache" -r "$FQRN" -- \
      sh -c 'c=$(ls -f /cvmfs/'"$FQRN"'/big | wc -l); printf "%s %s\n" "$c" "$(grep VmHWM /proc/$PPID/status | tr -s " \t" " ")"')
    e=$(date +%s%N)
    echo "$pass $bin: ls -f printed ${out%% *} names in $(( (e - s) / 1000000 )) ms; ${out#* }"
  done
done
