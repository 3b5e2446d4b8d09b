#!/usr/bin/env bash
# Runs perch's whole test suite. Installs what the tests need (Debian packages)
# when it is missing, then checks formatting, lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")"

# binary:package pairs the tests use for real (servers, programs run under perch).
needs=(nginx:nginx-light squid:squid proot:proot python3:python3 gcc:gcc make:make git:git ps:procps
       setpriv:util-linux file:file nm:binutils makeflow:coop-computing-tools work_queue_worker:coop-computing-tools
       munged:munge slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client strace:strace
       qemu-system-x86_64:qemu-system-x86 busybox:busybox-static cpio:cpio curl:curl xz:xz-utils
       gpgv:gpgv dockerd:docker.io debootstrap:debootstrap)
missing=()
for pair in "${needs[@]}"; do
  bin=${pair%%:*} pkg=${pair#*:}
  if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$bin" ]; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}" >&2
  SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The binary batch jobs carry: built static, checked from an empty environment (no NSS, no
# dynamic dependencies), then shipped by the Makeflow and Slurm tests.
bash scripts/build-static.sh >/dev/null
bash scripts/check-static.sh
# The same binary on Debian's 5.10, 6.1 and 6.12 kernels, booted in qemu (scripts/kernels.sh).
bash scripts/kernels.sh
# The same binary in a real Docker engine with its default seccomp profile (scripts/docker.sh).
bash scripts/docker.sh
PERCH_BATCH_BIN="$PWD/target/x86_64-unknown-linux-gnu/release/perch" cargo test --workspace --no-fail-fast
