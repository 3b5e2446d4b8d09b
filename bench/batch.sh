#!/usr/bin/env bash
# Wall time of the Makeflow/Work Queue recipe (examples/makeflow/perch.jx): TASKS tasks on
# WORKERS local one-core workers, each task `perch run` of a script from /cvmfs, all sharing
# one alien cache; the repository is served by nginx on 127.0.0.1. Three runs, each in a fresh
# workflow directory: cold (empty alien cache), warm (same alien cache), offline (same alien
# cache, nginx stopped; with the default retry, then with CVMFS_MAX_RETRIES=0). The same
# recipe as crates/perch/tests/batch_makeflow.rs.
# Reproduce with:  bash bench/batch.sh      (TASKS=200 WORKERS=4 by default; PERCH=path picks
# the binary, default the static one of scripts/build-static.sh, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
TASKS=${TASKS:-200}
WORKERS=${WORKERS:-4}
FQRN=batch.example.org
PERCH=${PERCH:-target/x86_64-unknown-linux-gnu/release/perch}
[ -x "$PERCH" ] || bash scripts/build-static.sh >/dev/null
PERCH=$(realpath "$PERCH")
for b in nginx makeflow work_queue_worker; do
  command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || { echo "batch.sh: $b is missing (see test.sh)" >&2; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

W=$(mktemp -d /tmp/perch-batch-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT

# ---- the repository: a task script, a helper and 20 parts of a few kB ----
T=$W/tree
mkdir -p "$T/bin" "$T/lib" "$T/share"
cat > "$T/bin/task.sh" <<'EOF'
#!/bin/sh
n=$1
repo=/cvmfs/batch.example.org
. "$repo/lib/square.sh"
part=$((n % 20))
file="$repo/share/part-$part.txt"
printf 'task %s part %s: %s, %s bytes, square %s\n' "$n" "$part" "$(head -n 1 "$file")" "$(wc -c < "$file")" "$(square "$n")"
EOF
echo 'square() { echo $(($1 * $1)); }' > "$T/lib/square.sh"
for p in $(seq 0 19); do
  { echo "part $p of the batch test repository"
    for l in $(seq 0 $((99 + 10 * p))); do printf '%02d %04d some data for the tasks to read\n' "$p" "$l"; done
  } > "$T/share/part-$p.txt"
done
"$PERCH" keygen "$FQRN" "$W/keys" >/dev/null
"$PERCH" publish "$T" --fqrn "$FQRN" --keys "$W/keys" --stratum "$W/www/cvmfs/$FQRN" >/dev/null

# ---- nginx on a free port (the kernel picks it) ----
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$W/nginx"
user=; [ "$(id -u)" -eq 0 ] && user="user root;"
cat > "$W/nginx/nginx.conf" <<EOF
$user
daemon off;
worker_processes 1;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log;
events { worker_connections 256; }
http {
  access_log $W/nginx/access.log;
  client_body_temp_path $W/nginx/cb; proxy_temp_path $W/nginx/px; fastcgi_temp_path $W/nginx/fc;
  uwsgi_temp_path $W/nginx/uw; scgi_temp_path $W/nginx/sc;
  server { listen 127.0.0.1:$PORT; root $W/www; }
}
EOF
"$NGINX" -p "$W/nginx" -e "$W/nginx/error.log" -c "$W/nginx/nginx.conf" &
nginx_pid=$!; pids+=("$nginx_pid")
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

# ---- one workflow run in a fresh directory; sets SECS to its wall time ----
run() { # name [extra client.conf line]
  local d=$W/$1 mf_pid port s e i wpids=()
  mkdir "$d"
  cp examples/makeflow/perch.jx "$PERCH" "$W/keys/$FQRN.pub" "$d/"
  printf 'CVMFS_SERVER_URL=http://127.0.0.1:%s/cvmfs/@fqrn@\nCVMFS_PUBLIC_KEY=%s.pub\nCVMFS_HTTP_PROXY=DIRECT\n' "$PORT" "$FQRN" > "$d/client.conf"
  [ -z "${2:-}" ] || echo "$2" >> "$d/client.conf"
  cat > "$d/site.json" <<EOF
{"TASKS": $TASKS, "ALIEN": "$W/alien", "PROXY": "DIRECT", "CONFIG": "client.conf",
 "EXTRA_INPUTS": ["$FQRN.pub"], "PROGRAM": "sh /cvmfs/$FQRN/bin/task.sh"}
EOF
  export OMPI_MCA_ess_singleton_isolated=1 CATALOG_HOST=127.0.0.1 XDG_CACHE_HOME=$W/xdg
  s=$(date +%s%N)
  (cd "$d" && exec makeflow -T wq -Z "$d/port" --jx --jx-args site.json perch.jx >"$d/makeflow.out" 2>&1) &
  mf_pid=$!; pids+=("$mf_pid")
  for _ in $(seq 300); do port=$(cat "$d/port" 2>/dev/null || true); [ -n "$port" ] && break; sleep 0.1; done
  [ -n "$port" ] || { echo "batch.sh: makeflow did not listen" >&2; tail "$d/makeflow.out" >&2; exit 1; }
  for i in $(seq "$WORKERS"); do
    mkdir "$d/w$i"
    work_queue_worker --single-shot --timeout=120 --cores=1 --workdir "$d/w$i" 127.0.0.1 "$port" >"$d/w$i.out" 2>&1 &
    pids+=("$!"); wpids+=("$!")
  done
  wait "$mf_pid" || { echo "batch.sh: makeflow failed ($1)" >&2; tail -20 "$d/makeflow.out" >&2; exit 1; }
  e=$(date +%s%N)
  wait "${wpids[@]}" 2>/dev/null || true   # single-shot workers leave with the manager
  for i in $(seq "$TASKS"); do
    grep -q "^task $i part $((i % 20)): part $((i % 20)) of the batch test repository" "$d/out.$i" \
      || { echo "batch.sh: wrong output out.$i ($1)" >&2; exit 1; }
  done
  SECS=$(awk -v ns=$((e - s)) 'BEGIN { printf "%.1f", ns / 1e9 }')
}

run cold; cold=$SECS
objects=$(grep -c ' /cvmfs/batch.example.org/data/' "$W/nginx/access.log" || true)
run warm; warm=$SECS
objects_warm=$(grep -c ' /cvmfs/batch.example.org/data/' "$W/nginx/access.log" || true)
kill "$nginx_pid"; wait "$nginx_pid" 2>/dev/null || true
run offline; offline=$SECS
run offline0 CVMFS_MAX_RETRIES=0; offline0=$SECS

echo "# bash bench/batch.sh   (TASKS=$TASKS WORKERS=$WORKERS, $(nproc) cores, $(uname -r), perch $(file -b "$PERCH" | grep -o -E "(static-pie|statically|dynamically) linked"))"
printf '%-44s %8s s  %s\n' "cold alien cache (stratum up)" "$cold" "$objects object downloads"
printf '%-44s %8s s  %s\n' "warm alien cache (stratum up)" "$warm" "$((objects_warm - objects)) object downloads"
printf '%-44s %8s s  %s\n' "warm alien cache, stratum stopped (offline)" "$offline" "default CVMFS_MAX_RETRIES=1"
printf '%-44s %8s s  %s\n' "warm alien cache, stratum stopped (offline)" "$offline0" "CVMFS_MAX_RETRIES=0 (docs/site-admins.md)"
