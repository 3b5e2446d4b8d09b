#!/usr/bin/env bash
# The Makeflow recipe at scale: examples/makeflow/perch.jx, unchanged, with TASKS tasks (1000 by
# default) on WORKERS local Work Queue workers (4), each task carrying the static perch binary as
# an input file and running a script from /cvmfs, all on one alien cache, against a repository
# served by nginx on 127.0.0.1. Runs the workflow cold (empty alien cache), then warm (a fresh
# workflow directory, the same alien cache), and prints for each: wall time, tasks whose output
# is right, and the object requests nginx saw against the number of objects (each object must be
# fetched once in all).
# Reproduce with:  bash bench/makeflow.sh        (TASKS=1000 WORKERS=4; PERCH=path for a build)
set -euo pipefail
cd "$(dirname "$0")/.."
TASKS=${TASKS:-1000}
WORKERS=${WORKERS:-4}
FQRN=batch.example.org
NGINX=${PERCH_NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
for tool in makeflow work_queue_worker; do
  command -v "$tool" >/dev/null || { echo "makeflow: $tool is missing (Debian: coop-computing-tools)" >&2; exit 1; }
done
if [ -z "${PERCH:-}" ]; then
  PERCH=$(bash scripts/build-static.sh | tail -n 1)
fi
PERCH=$(realpath "$PERCH")
W=$(mktemp -d /tmp/perch-mfbench-XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT

# ---- the repository: a task script, a shell library, 20 parts ----
mkdir -p "$W/src/bin" "$W/src/lib" "$W/src/share"
cat > "$W/src/bin/task.sh" <<'EOF'
#!/bin/sh
n=$1
repo=/cvmfs/batch.example.org
. "$repo/lib/square.sh"
part=$((n % 20))
file="$repo/share/part-$part.txt"
printf 'task %s part %s: %s, %s bytes, square %s\n' "$n" "$part" "$(head -n 1 "$file")" "$(wc -c < "$file")" "$(square "$n")"
EOF
echo 'square() { echo $(($1 * $1)); }' > "$W/src/lib/square.sh"
for p in $(seq 0 19); do
  { echo "part $p"; for l in $(seq 1 $((100 + 10 * p))); do echo "$p $l some data for the tasks"; done; } > "$W/src/share/part-$p.txt"
done
"$PERCH" keygen $FQRN "$W/keys" >/dev/null
mkdir -p "$W/www"
"$PERCH" publish "$W/src" --fqrn $FQRN --keys "$W/keys" --stratum "$W/www/$FQRN" >/dev/null
NOBJ=$(find "$W/www/$FQRN/data" -type f | wc -l)

# ---- nginx on a free loopback port, with an access log ----
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
    log_format perch '\$status \$request_uri';
    access_log $W/nginx/access.log perch;
    client_body_temp_path $W/nginx/client_body;
    proxy_temp_path $W/nginx/proxy;
    fastcgi_temp_path $W/nginx/fastcgi;
    uwsgi_temp_path $W/nginx/uwsgi;
    scgi_temp_path $W/nginx/scgi;
    server { listen 127.0.0.1:$PORT; root $W/www; }
}
EOF
"$NGINX" -p "$W/nginx" -e "$W/nginx/error.log" -c "$W/nginx/nginx.conf" &
PIDS+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/$FQRN/.cvmfspublished" && break; sleep 0.1; done
requests() { grep -c " /$FQRN/data/" "$W/nginx/access.log" || true; }

# ---- the workflow, as a site would run it ----
ALIEN=$W/alien
mkdir -p "$ALIEN"
expected() { # task -> its line
  local n=$1 p=$(( $1 % 20 ))
  printf 'task %s part %s: part %s, %s bytes, square %s\n' "$n" "$p" "$p" "$(wc -c < "$W/src/share/part-$p.txt")" $(( n * n ))
}
for n in $(seq 1 "$TASKS"); do expected "$n"; done > "$W/expected"
run_workflow() { # dir: prints "seconds ok-tasks"
  local d=$1 s e
  mkdir -p "$d"
  cp "$PERCH" "$d/perch"
  cp examples/makeflow/perch.jx "$d/"
  cp "$W/keys/$FQRN.pub" "$d/"
  printf 'CVMFS_SERVER_URL=http://127.0.0.1:%s/@fqrn@\nCVMFS_PUBLIC_KEY=%s.pub\n' "$PORT" $FQRN > "$d/site.conf"
  printf '{"TASKS": %s, "ALIEN": "%s", "PROXY": "DIRECT", "CONFIG": "site.conf", "EXTRA_INPUTS": ["%s.pub"], "PROGRAM": "sh /cvmfs/%s/bin/task.sh"}\n' \
    "$TASKS" "$ALIEN" $FQRN $FQRN > "$d/site.json"
  local wpids=()
  s=$(date +%s%N)
  (cd "$d" && OMPI_MCA_ess_singleton_isolated=1 CATALOG_HOST=127.0.0.1 \
     makeflow -T wq -Z port --jx --jx-args site.json perch.jx > makeflow.log 2>&1) &
  local mf=$!
  for _ in $(seq 200); do [ -s "$d/port" ] && break; sleep 0.1; done
  for i in $(seq 1 "$WORKERS"); do
    mkdir -p "$d/w$i"
    CATALOG_HOST=127.0.0.1 work_queue_worker --single-shot --timeout=120 --cores=1 --workdir "$d/w$i" \
      127.0.0.1 "$(cat "$d/port")" > "$d/w$i.log" 2>&1 &
    wpids+=($!); PIDS+=($!)
  done
  wait "$mf" || { echo "makeflow failed:" >&2; tail -n 20 "$d/makeflow.log" >&2; }
  e=$(date +%s%N)
  for p in "${wpids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  local ok=0
  for n in $(seq 1 "$TASKS"); do
    [ -f "$d/out.$n" ] && [ "$(cat "$d/out.$n")" = "$(sed -n "${n}p" "$W/expected")" ] && ok=$((ok + 1))
  done
  echo "$(awk -v a="$s" -v b="$e" 'BEGIN { printf "%.1f", (b - a) / 1e9 }') $ok"
}

echo "# bash bench/makeflow.sh   TASKS=$TASKS WORKERS=$WORKERS, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(OMPI_MCA_ess_singleton_isolated=1 makeflow -v 2>&1 | grep -m1 -i version)"
printf '%-34s %9s %10s %22s\n' run seconds "tasks ok" "object requests/objects"
r0=$(requests)
read -r t ok <<<"$(run_workflow "$W/cold")"
printf '%-34s %9s %10s %22s\n' "cold (empty alien cache)" "$t" "$ok/$TASKS" "$(( $(requests) - r0 ))/$NOBJ"
r0=$(requests)
read -r t ok <<<"$(run_workflow "$W/warm")"
printf '%-34s %9s %10s %22s\n' "warm (same alien cache)" "$t" "$ok/$TASKS" "$(( $(requests) - r0 ))/$NOBJ"
