#!/usr/bin/env bash
# The million-entry directory of crates/perch-cvmfs/tests/hostile.rs (which runs 100 000 entries
# in `cargo test`): a signed revision whose root catalog has one directory of ENTRIES rows,
# mounted and listed by perch's client twice: streamed (Repository::for_each_child, what fills
# the shadow tree) and collected and sorted (Repository::list, what `perch ls` prints). Prints
# how long building and each listing took and the peak RSS (VmHWM, reset before each listing
# through /proc/self/clear_refs) against the RSS before it.
#   bash bench/hostile.sh [ENTRIES]        (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
PERCH_HOSTILE_ENTRIES=${1:-1000000} cargo test -q -p perch-cvmfs --test hostile \
  directory_with_very_many_entries -- --exact --nocapture --test-threads=1 2>&1 |
  grep -E 'directory of|test result'
