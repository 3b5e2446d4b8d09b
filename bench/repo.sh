#!/usr/bin/env bash
# Reader and publisher figures: publish throughput of a generated 5 000-entry tree,
# warm lookup latency 6 levels deep through 2 nested catalogs, listing a 2 000-entry
# directory. Reproduce with: bash bench/repo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
echo "# bash bench/repo.sh   ($(nproc) cores, $(uname -r))"
cargo run --quiet --release -p perch --example bench_repo
