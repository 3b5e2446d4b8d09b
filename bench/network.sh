#!/usr/bin/env bash
# The CVMFS client over a real network path: a ~200 MB repository (many small files, some
# large chunked ones, content that does not compress away) served by nginx on 127.0.0.1,
# read from one run of this script by
#   curl           the stratum's data/ objects, sequentially and with xargs -P $PAR (the limit),
#   perch          `perch cat` of every file (no interception), into an empty cache (cold),
#                  tar of the whole tree inside `perch run --mode notify` and `--mode fuse`,
#                  each into an empty cache (cold) and again with its cache full (warm), and
#                  with $PAR readers in parallel (cold, auto mode),
#   16 perch runs  started together on one empty alien cache: wall time and object requests
#                  nginx saw against the number of objects; then again with that cache full;
#                  $ROUNDS rounds, each on a new cache, medians shown.
#   cvmfs2         (CVMFS2=its install prefix) the CernVM-FS FUSE client on the same stratum:
#                  mount + the same tar from an empty cache (cold), then remounted (warm).
#                  Needs root and /dev/fuse; cvmfs2 is not packaged by Debian: build it from
#                  github.com/cvmfs/cvmfs (cmake -DBUILTIN_EXTERNALS=ON, client only).
# MB/s are stratum bytes (what goes over the wire) per second of wall time; ratio = time / curl.
# Reproduce with:  bash bench/network.sh        (SIZE_MB=200 PAR=8 JOBS=16 ROUNDS=3 by default)
#                  TREE=/usr/share bash bench/network.sh   (publish that tree instead)
#                  CVMFS2=/opt/cvmfs2 bash bench/network.sh   (adds the cvmfs2 rows)
#                  KEEP=1 bash bench/network.sh   (keeps the work directory, for runs back to back:
#                  on ext4 without a journal, deleting it slows file creation for minutes after)
set -euo pipefail
# Paths given relative to where the script was started.
[ -z "${TREE:-}" ] || TREE=$(realpath "$TREE")
[ -z "${CVMFS2:-}" ] || CVMFS2=$(realpath "$CVMFS2")
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-200}
PAR=${PAR:-8}
JOBS=${JOBS:-16}
ROUNDS=${ROUNDS:-3}
FQRN=bench.example.org
NGINX=${PERCH_NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
cargo build --quiet --release -p perch
PERCH=${PERCH:-$PWD/target/release/perch}   # PERCH=path compares another build
W=$(mktemp -d /tmp/perch-netbench-XXXXXX)
NGINX_PID=
CVMFS2=${CVMFS2:-}
cleanup() {
  # (a crashed client leaves a mount that cannot be stat'ed: look in /proc/mounts)
  if [ -n "$CVMFS2" ] && grep -q " $W/c2mnt " /proc/mounts; then
    umount -l "$W/c2mnt" || true
    sleep 1 # let the client's processes let go of the cache before it is removed
  fi
  if [ -n "$NGINX_PID" ]; then kill "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; fi
  if [ -n "${KEEP:-}" ]; then echo "kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

# ---- the tree: ~1/4 small text-like files (base64 of random bytes, compresses to ~75 %),
# ---- ~1/4 medium random files, ~1/2 large random files (chunked by the publisher) ----
if [ -n "${TREE:-}" ]; then
  cp -a "$TREE" "$W/src"
else
python3 - "$W/src" "$SIZE_MB" <<'EOF'
import base64, os, random, sys
root, total = sys.argv[1], int(sys.argv[2]) << 20
rng = random.Random(42)
def put(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
small = 0
i = 0
while small < total // 4:
    n = rng.randint(200, 12000)
    put(f"{root}/small/d{i % 40:02d}/f{i}.txt", base64.encodebytes(os.urandom(n * 3 // 4)))
    small += n
    i += 1
medium = 0
j = 0
while medium < total // 4:
    n = rng.randint(64 << 10, 2 << 20)
    put(f"{root}/medium/m{j}.bin", os.urandom(n))
    medium += n
    j += 1
large = total - small - medium
for k in range(4):
    put(f"{root}/large/l{k}.bin", os.urandom(large // 4))
EOF
fi
"$PERCH" keygen $FQRN "$W/keys" >/dev/null
STRATUM=$W/www/$FQRN
"$PERCH" publish "$W/src" --fqrn $FQRN --keys "$W/keys" --stratum "$STRATUM" >/dev/null

# ---- nginx on a free loopback port, configured like perch-testkit's ----
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$W/nginx"
USER_LINE=""
[ "$(id -u)" = 0 ] && USER_LINE="user root;"
cat > "$W/nginx/nginx.conf" <<EOF
$USER_LINE
daemon off;
worker_processes 2;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log warn;
events { worker_connections 1024; }
http {
    default_type application/octet-stream;
    log_format perch '\$remote_addr \$status \$request_method \$request_uri \$body_bytes_sent';
    access_log $W/nginx/access.log perch;
    client_body_temp_path $W/nginx/client_body;
    proxy_temp_path $W/nginx/proxy;
    fastcgi_temp_path $W/nginx/fastcgi;
    uwsgi_temp_path $W/nginx/uwsgi;
    scgi_temp_path $W/nginx/scgi;
    sendfile on;
    keepalive_timeout 30;
    keepalive_requests 100000;
    server {
        listen 127.0.0.1:$PORT;
        root $W/www;
        location / { expires 259200s; }
        location ~ "/\.cvmfs[^/]*\$" { expires 61s; }
    }
}
EOF
"$NGINX" -p "$W/nginx" -e "$W/nginx/error.log" -c "$W/nginx/nginx.conf" &
NGINX_PID=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/$FQRN/.cvmfspublished" && break; sleep 0.1; done
URL=http://127.0.0.1:$PORT/$FQRN

# ---- what a full read needs: every object of the stratum ----
(cd "$STRATUM" && find data -type f | sort) > "$W/objects"
sed "s|^|$URL/|" "$W/objects" > "$W/urls"
NOBJ=$(wc -l < "$W/objects")
BYTES=$(cd "$STRATUM" && xargs -a "$W/objects" stat -c %s | awk '{s += $1} END {print s}')
TREE_BYTES=$(du -sb "$W/src" | cut -f1)
FILES=$(find "$W/src" -type f | wc -l)

printf 'CVMFS_SERVER_URL=%s\nCVMFS_HTTP_PROXY=DIRECT\nCVMFS_PUBLIC_KEY=%s/keys/%s.pub\n' "$URL" "$W" $FQRN > "$W/client.conf"
mkdir -p "$W/etc"
run() { # cache-option cache-dir command... : perch run on the bench repository ($MODE)
  local opt=$1 dir=$2; shift 2
  "$PERCH" run --mode "${MODE:-auto}" --config-dir "$W/etc" --config "$W/client.conf" "$opt" "$dir" -r $FQRN -- "$@"
}
READ_ALL="tar cPf - /cvmfs/$FQRN | cat >/dev/null"
READ_PAR="find /cvmfs/$FQRN -type f -print0 | xargs -0 -P $PAR -n 50 cat | cat >/dev/null"
requests() { grep -c ' /'"$FQRN"'/data/' "$W/nginx/access.log" || true; }
now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'; }
declare -a ROWS
row() { ROWS+=("$1|$2|$3"); } # name|seconds|requests

# ---- 1. the physical limit: curl ----
mkdir -p "$W/dl"
r0=$(requests); s=$(now)
xargs -a "$W/urls" -n 500 curl -sf --remote-name-all --output-dir "$W/dl/seq"  --create-dirs
e=$(now); row "curl, sequential (keep-alive)" "$(secs "$s" "$e")" $(( $(requests) - r0 ))
r0=$(requests); s=$(now)
xargs -a "$W/urls" -P "$PAR" -n $(( (NOBJ + PAR - 1) / PAR )) curl -sf --remote-name-all --output-dir "$W/dl/par" --create-dirs
e=$(now); row "curl, xargs -P $PAR" "$(secs "$s" "$e")" $(( $(requests) - r0 ))
[ "$(find "$W/dl/seq" -type f | wc -l)" = "$NOBJ" ] || echo "WARNING: curl fetched $(find "$W/dl/seq" -type f | wc -l) of $NOBJ objects" >&2
# Nothing is deleted until the end: on some file systems (ext4 without a journal) creating a
# file right after many deletions is slower, which would tax the phases that follow.

# ---- 2. perch: cold, warm, parallel cold; perch cat without perch run (catalogs cached) ----
D=(--config-dir "$W/etc" --config "$W/client.conf" --cache "$W/cache3")
"$PERCH" find "${D[@]}" --type f /cvmfs/$FQRN > "$W/files"
r0=$(requests); s=$(now)
xargs -d '\n' -a "$W/files" "$PERCH" cat "${D[@]}" >/dev/null
e=$(now); row "perch cat (no perch run), cold" "$(secs "$s" "$e")" $(( $(requests) - r0 ))
for MODE in notify fuse; do
  r0=$(requests); s=$(now)
  run --cache "$W/cache-$MODE" sh -c "$READ_ALL"
  e=$(now); row "perch run tar ($MODE), cold cache" "$(secs "$s" "$e")" $(( $(requests) - r0 ))
  r0=$(requests); s=$(now)
  run --cache "$W/cache-$MODE" sh -c "$READ_ALL"
  e=$(now); row "perch run tar ($MODE), warm cache" "$(secs "$s" "$e")" $(( $(requests) - r0 ))
done
if [ -n "$CVMFS2" ]; then
  # The stock client settings (/etc/cvmfs/default.conf is not read when -o config= is given):
  # shared cache with its cache manager, 4 GB quota, permissions checked.
  c2conf() { # cache-dir
    printf '%s\n' "CVMFS_SERVER_URL=$URL" "CVMFS_PUBLIC_KEY=$W/keys/$FQRN.pub" \
      CVMFS_HTTP_PROXY=DIRECT "CVMFS_CACHE_BASE=$1" "CVMFS_RELOAD_SOCKETS=$1/run" \
      CVMFS_SHARED_CACHE=yes CVMFS_QUOTA_LIMIT=4000 CVMFS_CHECK_PERMISSIONS=yes \
      CVMFS_CLAIM_OWNERSHIP=yes CVMFS_NFILES=131072 > "$1.conf"
  }
  c2mount() { # cache-dir: mounts at $W/c2mnt (cvmfs2 returns once the mount is up)
    mkdir -p "$1/run" "$W/c2mnt"
    c2conf "$1"
    CVMFS_LIBRARY_PATH=$CVMFS2/lib LD_LIBRARY_PATH=$CVMFS2/lib \
      "$CVMFS2/bin/cvmfs2" -o "config=$1.conf,fsname=cvmfs2" $FQRN "$W/c2mnt" >"$W/c2mount.log" 2>&1 ||
      { echo "cvmfs2 could not mount $FQRN:" >&2; cat "$W/c2mount.log" >&2; return 1; }
  }
  c2busy() { # cache-dir: a cvmfs2 process (the mount's, or the shared cache's manager) uses it
    local p
    for p in $(pgrep -x cvmfs2 || true); do
      case "$(readlink "/proc/$p/cwd" 2>/dev/null)" in "$1" | "$1"/*) return 0 ;; esac
      tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF "config=$1.conf" && return 0
    done
    return 1
  }
  c2umount() { # cache-dir: unmounts, then waits until the client's processes have let go of it
    umount "$W/c2mnt"
    for _ in $(seq 100); do c2busy "$1" || break; sleep 0.1; done
  }
  C2_READ="tar cPf - $W/c2mnt | cat >/dev/null"
  for temp in cold warm; do
    r0=$(requests); s=$(now)
    c2mount "$W/cache-c2"
    sh -c "$C2_READ"
    e=$(now); row "cvmfs2 mount + tar, $temp cache" "$(secs "$s" "$e")" $(( $(requests) - r0 ))
    c2umount "$W/cache-c2"
  done
fi
MODE=auto
r0=$(requests); s=$(now)
run --cache "$W/cache2" sh -c "$READ_PAR"
e=$(now); row "perch run $PAR parallel cats, cold" "$(secs "$s" "$e")" $(( $(requests) - r0 ))

# ---- 3. $JOBS jobs at once on one empty alien cache, then with it full; $ROUNDS rounds ----
# One round varies a lot on a busy or small machine (1.2-2.2x here), so each round uses a new
# cache directory (nothing is deleted in between) and the rows give the median round.
jobs_round() { # alien-cache-dir: runs $JOBS readers at once, prints seconds; fails if one failed
  local s e p fail=0 pids=()
  s=$(now)
  for j in $(seq "$JOBS"); do
    run --alien-cache "$1" sh -c "$READ_ALL" 2>"$W/job$j.err" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || fail=$((fail + 1)); done
  e=$(now)
  [ "$fail" = 0 ] || { echo "WARNING: $fail of $JOBS jobs failed:" >&2; cat "$W"/job*.err >&2; }
  secs "$s" "$e"
}
median() { # [printf format]: the median of the numbers on stdin
  sort -n | awk -v f="${1:-%.2f}" '{ v[NR] = $1 } END { printf f, (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
cold=() warm=() ratios=() cold_req=()
for k in $(seq "$ROUNDS"); do
  mkdir -p "$W/alien$k"
  r0=$(requests)
  cold+=("$(jobs_round "$W/alien$k")")
  cold_req+=($(( $(requests) - r0 )))
  warm+=("$(jobs_round "$W/alien$k")") # the same with the alien cache full: no download
  ratios+=("$(awk -v c="${cold[-1]}" -v w="${warm[-1]}" 'BEGIN { printf "%.2f", c / w }')")
done
row "$JOBS x perch run tar, one alien cache" "$(printf '%s\n' "${cold[@]}" | median)" "$(printf '%s\n' "${cold_req[@]}" | median %d)"
row "$JOBS x perch run tar, alien cache full" "$(printf '%s\n' "${warm[@]}" | median)" 0
JOBS_NOTE="$JOBS jobs, $ROUNDS rounds (empty/full s): $(for k in "${!cold[@]}"; do printf '%s/%s=%sx ' "${cold[$k]}" "${warm[$k]}" "${ratios[$k]}"; done)median ratio $(printf '%s\n' "${ratios[@]}" | median)x"

# ---- report ----
CURL=$(echo "${ROWS[0]}" | cut -d'|' -f2)
WHAT="SIZE_MB=$SIZE_MB"; [ -z "${TREE:-}" ] || WHAT="TREE=$TREE"
echo "# bash bench/network.sh   $WHAT PAR=$PAR JOBS=$JOBS${CVMFS2:+ CVMFS2=$CVMFS2}, $(nproc) cores, $(uname -r), nginx on 127.0.0.1"
echo "# tree: $FILES files, $((TREE_BYTES >> 20)) MiB; stratum: $NOBJ objects in data/, $((BYTES >> 20)) MiB"
printf '%-40s %8s %9s %9s %14s\n' "read" "seconds" "MB/s" "vs curl" "data/ requests"
for r in "${ROWS[@]}"; do
  IFS='|' read -r name t n <<<"$r"
  printf '%-40s %8s %9s %9s %14s\n' "$name" "$t" \
    "$(awk -v b="$BYTES" -v t="$t" 'BEGIN { printf "%.0f", (t > 0) ? b / 1e6 / t : 0 }')" \
    "$(awk -v t="$t" -v c="$CURL" 'BEGIN { printf "%.2fx", (c > 0) ? t / c : 0 }')" "$n"
done
echo "(MB/s = the stratum's $((BYTES / 1000000)) MB of objects per second of wall time; for the $JOBS jobs, once, not per job)"
echo "$JOBS_NOTE"
dev=$(findmnt -n -o SOURCE --target "$W" 2>/dev/null || true)
[ "$(stat -f -c %T "$W")" != ext2/ext3 ] || [ -z "$dev" ] || [ -e "/proc/fs/jbd2/${dev##*/}-8" ] ||
  echo "note: $W is on ext4 without a journal: creating files within minutes of deleting many (an earlier run's clean-up) is much slower there (ext4 skips recently freed inodes one by one), which slows the cold rows"
