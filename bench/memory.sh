#!/usr/bin/env bash
# Peak resident memory (VmHWM) of the perch process after `perch run -- find /cvmfs/<repo>`
# over generated repositories of SIZES entries (default 100 000 and 1 000 000), each in one
# catalog and split into nested catalogs, for one or more perch binaries side by side.
# Reproduce with:  bash bench/memory.sh
#   PERCH="path/a path/b"   binaries to compare (default: this tree's release build)
#   SIZES="100000 1000000"  entries per repository;  KEEP=DIR  reuse generated strata in DIR
#   MODE=auto|fuse|notify|ptrace  the `perch run` mode (default auto: fuse where it works)
# Generating: python3 writes the tree (every file the same 2 bytes, so one object), then
# `perch publish` of the first binary; the time each step takes is printed.
# Layout: top/dNNN/sNNN/fNNN, 100 files per leaf directory; "nested" puts a .cvmfscatalog in
# every dNNN (one catalog per 10 000 files) and in every dNNN/s000.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES:-"100000 1000000"}
MODE=${MODE:-auto}
if [ -z "${PERCH:-}" ]; then
  cargo build --quiet --release -p perch
  PERCH=$PWD/target/release/perch
fi
read -r -a BINS <<<"$PERCH"
W=${KEEP:-$(mktemp -d /tmp/perch-mem-XXXXXX)}
mkdir -p "$W"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$W"' EXIT
echo "# MODE=$MODE bash bench/memory.sh   ($(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg))"

gen_tree() { # dir entries nested(0|1)
  python3 - "$@" <<'EOF'
import os, sys
root, n, nested = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
made, leaf = 0, 0  # entries written (directories and files), leaf directories made
while made < n:
    d, s = divmod(leaf, 100)
    top = os.path.join(root, f"d{d:03}")
    if s == 0:
        os.makedirs(top)
        made += 1
        if nested:
            open(os.path.join(top, ".cvmfscatalog"), "w").close()
    path = os.path.join(top, f"s{s:03}")
    os.mkdir(path)
    if nested and s == 0:
        open(os.path.join(path, ".cvmfscatalog"), "w").close()
    made += 1
    for f in range(min(100, max(n - made, 0))):
        with open(os.path.join(path, f"f{f:03}"), "w") as fh:
            fh.write("x\n")
        made += 1
    leaf += 1
EOF
}

for n in $SIZES; do
  for layout in flat nested; do
    R=$W/$n-$layout
    FQRN=mem$n$layout.example.org
    if [ ! -f "$R/stratum/.cvmfspublished" ]; then
      rm -rf "$R"; mkdir -p "$R"
      s=$(date +%s%N)
      gen_tree "$R/src" "$n" "$([ $layout = nested ] && echo 1 || echo 0)"
      m=$(date +%s%N)
      "${BINS[0]}" keygen "$FQRN" "$R/keys" >/dev/null
      "${BINS[0]}" publish "$R/src" --fqrn "$FQRN" --keys "$R/keys" --stratum "$R/stratum" --chunk-sizes off >/dev/null
      e=$(date +%s%N)
      entries=$(find "$R/src" -not -name .cvmfscatalog | wc -l)
      echo "generated $n-$layout: $entries entries; tree $(( (m - s) / 1000000 )) ms, publish $(( (e - m) / 1000000 )) ms"
      rm -rf "$R/src"
      printf 'CVMFS_SERVER_URL=file://%s/stratum\nCVMFS_HTTP_PROXY=DIRECT\nCVMFS_PUBLIC_KEY=%s/keys/%s.pub\n' "$R" "$R" "$FQRN" >"$R/client.conf"
    fi
    for bin in "${BINS[@]}"; do
      rm -rf "$R/cache" "$R/etc"; mkdir -p "$R/cache" "$R/etc"
      # `find` once cold (downloads, shadow tree built) and once warm, then a warm
      # `find -size +1000k`, which stats every entry (plain GNU find reads d_type and stats
      # only directories). VmHWM of the perch process is read by the job from /proc/$PPID
      # (perch is the parent of the program it runs).
      for pass in "cold:" "warm:" "warm, stat all:-size +1000k"; do
        s=$(date +%s%N)
        out=$("$bin" run --mode "$MODE" --config-dir "$R/etc" --config "$R/client.conf" --cache "$R/cache" -r "$FQRN" -- \
          sh -c 'c=$(find /cvmfs/'"$FQRN ${pass#*:}"' | wc -l); printf "%s %s %s\n" "$c" "$(cat /proc/$PPID/comm)" "$(grep VmHWM /proc/$PPID/status | tr -s " \t" " ")"')
        e=$(date +%s%N)
        echo "$n-$layout ${pass%%:*} $bin: find printed ${out%% *} paths in $(( (e - s) / 1000000 )) ms; ${out#* }"
      done
    done
  done
done
