#!/usr/bin/env bash
# Builds the release binary that batch jobs carry: glibc with crt-static, no
# dynamic dependencies. The explicit --target keeps the static flag away from
# build scripts and proc macros. Output: target/x86_64-unknown-linux-gnu/release/perch
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --locked --target x86_64-unknown-linux-gnu -p perch "$@"
bin=target/x86_64-unknown-linux-gnu/release/perch
echo "$bin"
