#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser (fuzz/, cargo-fuzz + libFuzzer): each target runs for
# SECONDS (default 600) from the committed seeds (fuzz/seeds/<target>) plus what earlier runs
# found (fuzz/corpus/<target>, not committed), one target at a time, and the table says how long
# it ran, executions, executions per second, coverage (libFuzzer's `cov`: edges reached) and
# crashes. A crash leaves its input in fuzz/artifacts/<target>/ (reproduce with
# `cargo fuzz run <target> <file>` in fuzz/); turn it into a regression test in the crate that
# owns the parser.
#   bash bench/fuzz.sh [SECONDS] [TARGET...]
# Needs cargo-fuzz (`cargo install cargo-fuzz`). The stable toolchain runs it with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z flags). Targets are built without a sanitizer: the
# code under test is safe Rust (and SQLite's C, which is not instrumented either way), and
# debug assertions (overflow checks) stay on.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_EACH=${1:-600}
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  mapfile -t TARGETS < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^perch-fuzz$')
fi
export RUSTC_BOOTSTRAP=1
FLAGS=(--sanitizer none --debug-assertions)
cargo fuzz build "${FLAGS[@]}" >&2
W=$(mktemp -d /tmp/perch-fuzzrun-XXXXXX)
trap 'rm -rf "$W"' EXIT
export TMPDIR=$W    # the targets' scratch files
printf '%-12s %8s %12s %9s %7s %8s\n' target seconds execs exec/s cov crashes
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  before=$(ls "artifacts/$t" | wc -l)
  start=$(date +%s)
  dict=()
  if [ -f "dicts/$t.dict" ]; then dict=(-dict="dicts/$t.dict"); fi
  set +e
  cargo fuzz run "${FLAGS[@]}" "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$SECONDS_EACH" -print_final_stats=1 -timeout=20 -rss_limit_mb=2048 \
    -max_len=65536 "${dict[@]}" >"$W/$t.log" 2>&1
  set -e
  took=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$W/$t.log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$W/$t.log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$W/$t.log" | tail -1 | cut -d' ' -f2)
  crashes=$(( $(ls "artifacts/$t" | wc -l) - before ))
  printf '%-12s %8s %12s %9s %7s %8s\n' "$t" "$took" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$crashes"
  if [ "$crashes" -gt 0 ]; then
    grep -m3 -E 'panicked|ERROR: libFuzzer|SUMMARY' "$W/$t.log" | sed 's/^/    /' || true
    cp "$W/$t.log" "artifacts/$t/last-run.log"
  fi
done
