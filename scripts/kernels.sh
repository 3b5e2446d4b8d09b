#!/usr/bin/env bash
# perch run on other Linux kernels: boots Debian's kernels for bullseye (5.10), bookworm (6.1)
# and trixie (6.12) in qemu with an initramfs holding busybox, the static perch and a stratum
# published by perch, and runs the same checks in each as root and as uid 65534, in every
# run mode the binary offers. One line per kernel x mode x user; exits non-zero on any failure.
#
# Usage: scripts/kernels.sh [SUITE...]          (default: bullseye bookworm trixie)
#   PERCH_BIN=path        the static perch to test (default: scripts/build-static.sh's output)
#   PERCH_KERNEL_CACHE=d  where verified kernel packages are kept (default: ~/.cache/perch-kernels)
#   DEBIAN_MIRROR=url     the Debian archive (default: http://deb.debian.org/debian, as apt uses)
#
# The kernel packages are checked like apt checks them: the suite's InRelease must carry a
# valid signature of a key in debian-archive-keyring, Packages.xz must match the SHA-256 that
# InRelease lists, and the .deb must match the SHA-256 that Packages lists.
#
# A kernel older than 5.14 has no seccomp notification with ADDFD_FLAG_SEND: notify mode must
# refuse there with its documented exit code 206 and one line naming the kernel. That refusal
# is reported as REFUSED and is not a failure on such a kernel; on any newer kernel it is.
# Then the guest sets user.max_user_namespaces=0 (no fuse mode) and checks that auto mode runs
# every check in notify mode, or in ptrace mode before 5.14 (picks-notify / picks-ptrace).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/guest.sh
SUITES=("$@")
[ ${#SUITES[@]} -gt 0 ] || SUITES=(bullseye bookworm trixie)
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
CACHE=${PERCH_KERNEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/perch-kernels}
BIN=${PERCH_BIN:-target/x86_64-unknown-linux-gnu/release/perch}
[ -x "$BIN" ] || BIN=$(bash scripts/build-static.sh | tail -n 1)
BIN=$(realpath "$BIN")
BUSYBOX=$(command -v busybox)
file -L "$BUSYBOX" | grep -q 'statically linked' || { echo "kernels: $BUSYBOX is not static (install busybox-static)" >&2; exit 1; }
mkdir -p "$CACHE"
W=$(mktemp -d /tmp/perch-kernels-XXXXXX)
[ -n "${KEEP:-}" ] && echo "kernels: keeping $W" >&2 || trap 'rm -rf "$W"' EXIT

# ---- verified kernel packages ----
fetch() { # URL FILE
  curl -fsSL --retry 3 --connect-timeout 20 -o "$2.part" "$1" && mv "$2.part" "$2"
}
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
stanza_of() { # PACKAGE FILE: the Packages stanza of PACKAGE (names are matched literally: 6.12.1+deb13)
  awk -v RS= -v want="Package: $1" '{ n = split($0, l, "\n"); for (i = 1; i <= n; i++) if (l[i] == want) { print; exit } }' "$2"
}

# Prints the path of the verified vmlinuz of SUITE's default amd64 kernel.
kernel_of() {
  local suite=$1 d=$W/$suite
  mkdir -p "$d"
  fetch "$MIRROR/dists/$suite/InRelease" "$d/InRelease"
  gpgv --quiet --keyring "$KEYRING" --output "$d/Release" "$d/InRelease" 2>"$d/gpgv.log" ||
    { echo "kernels: $suite: InRelease signature does not verify:" >&2; cat "$d/gpgv.log" >&2; return 1; }
  local want
  want=$(awk '/^SHA256:/ { s = 1; next } /^[^ ]/ { s = 0 } s && $3 == "main/binary-amd64/Packages.xz" { print $1 }' "$d/Release")
  [ -n "$want" ] || { echo "kernels: $suite: Release lists no main/binary-amd64/Packages.xz" >&2; return 1; }
  fetch "$MIRROR/dists/$suite/main/binary-amd64/Packages.xz" "$d/Packages.xz"
  [ "$(sha256_of "$d/Packages.xz")" = "$want" ] || { echo "kernels: $suite: Packages.xz checksum mismatch" >&2; return 1; }
  xz -dc "$d/Packages.xz" > "$d/Packages"
  # The metapackage linux-image-amd64 depends on the current kernel image package.
  local image
  image=$(stanza_of linux-image-amd64 "$d/Packages" |
          sed -n 's/^Depends: *\(linux-image-[^ ,]*\).*/\1/p' | head -n 1)
  [ -n "$image" ] || { echo "kernels: $suite: no linux-image-amd64 in Packages" >&2; return 1; }
  local stanza file sha
  stanza=$(stanza_of "$image" "$d/Packages")
  file=$(sed -n 's/^Filename: //p' <<<"$stanza" | head -n 1)
  sha=$(sed -n 's/^SHA256: //p' <<<"$stanza" | head -n 1)
  [ -n "$file" ] && [ -n "$sha" ] || { echo "kernels: $suite: no Filename/SHA256 for $image" >&2; return 1; }
  local deb=$CACHE/$(basename "$file")
  if [ ! -f "$deb" ] || [ "$(sha256_of "$deb")" != "$sha" ]; then
    echo "kernels: $suite: downloading $(basename "$file")" >&2
    fetch "$MIRROR/$file" "$deb.new"
    [ "$(sha256_of "$deb.new")" = "$sha" ] || { rm -f "$deb.new"; echo "kernels: $suite: $file checksum mismatch" >&2; return 1; }
    mv "$deb.new" "$deb"
  fi
  mkdir -p "$d/x"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$d/x" --wildcards './boot/vmlinuz-*'
  # FUSE is a module in 5.10 and 6.1 (built in from 6.12): the guest loads it for fuse mode.
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$d/x" --wildcards --no-anchored 'fs/fuse/fuse.ko' 2>/dev/null || true
  ls "$d"/x/boot/vmlinuz-* | head -n 1
}

# ---- the initramfs: busybox, perch, a published stratum, the checks ----
FQRN=kernels.example.org
R=$W/root
mkdir -p "$R"/{bin,proc,sys,dev,tmp,newroot}
cp "$BUSYBOX" "$R/bin/busybox"
cp "$BIN" "$R/bin/perch"
# busybox's setpriv cannot change uids: a small static helper drops to UID:GID and execs.
cat > "$W/asuser.c" <<'EOF'
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
  unsigned uid, gid;
  if (argc < 3 || sscanf(argv[1], "%u:%u", &uid, &gid) != 2) {
    fputs("usage: asuser UID:GID PROG [ARGS]\n", stderr);
    return 2;
  }
  if (setgroups(0, NULL) || setgid(gid) || setuid(uid)) { perror("asuser"); return 1; }
  execvp(argv[2], argv + 2);
  perror("asuser: exec");
  return 127;
}
EOF
gcc -static -O2 -o "$R/bin/asuser" "$W/asuser.c"
guest_tree "$R" / "$BIN" "$BUSYBOX" "$W"
cat > "$R/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
# A node's root is a real file system, not the initramfs rootfs (where pivot_root, which
# fuse mode uses for its new root, is refused): move everything to a tmpfs and switch to it.
if [ "$1" != stage2 ]; then
  mkdir -p /newroot
  mount -t tmpfs -o size=900m root /newroot
  for f in /*; do
    case $f in /newroot|/proc|/sys|/dev) ;; *) cp -a "$f" /newroot/ ;; esac
  done
  mkdir -p /newroot/proc /newroot/sys /newroot/dev /newroot/tmp
  exec switch_root /newroot /init stage2
fi
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
chmod 1777 /tmp
[ -f /modules/fuse.ko ] && insmod /modules/fuse.ko
# What udev does on a distribution (devtmpfs alone makes it 0600): anyone may open /dev/fuse.
[ -c /dev/fuse ] && chmod 666 /dev/fuse
echo "BOOTED $(uname -r)"
echo "DEVFUSE $(ls -l /dev/fuse 2>&1 | cut -c1-10) userns=$(cat /proc/sys/user/max_user_namespaces 2>/dev/null)"
sh /checks.sh root /
asuser 65534:65534 sh /checks.sh uid65534 /
# A node that refuses user namespaces (user.max_user_namespaces=0, as on many HPC images): auto
# mode must still run the job, in notify mode, or in ptrace mode on a kernel before 5.14.
if [ -w /proc/sys/user/max_user_namespaces ]; then
  echo 0 > /proc/sys/user/max_user_namespaces
  k=$(uname -r); major=${k%%.*} rest=${k#*.}; minor=${rest%%.*}
  want=notify; { [ "$major" -lt 5 ] || { [ "$major" -eq 5 ] && [ "$minor" -lt 14 ]; }; } && want=ptrace
  MODES=auto AUTO_PICKS=$want sh /checks.sh root-nouserns /
  asuser 65534:65534 env MODES=auto AUTO_PICKS=$want sh /checks.sh uid65534-nouserns /
fi
echo "DONE $(uname -r)"
poweroff -f
EOF
chmod 755 "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) > "$W/initrd.gz"

# ---- boot each kernel ----
accel=(-accel tcg)
if [ -r /dev/kvm ] && [ -w /dev/kvm ] && grep -qE 'vmx|svm' /proc/cpuinfo; then accel=(-accel kvm -accel tcg); fi
PASSED=0 NFAILED=0
for suite in "${SUITES[@]}"; do
  vmlinuz=$(kernel_of "$suite") || { echo "KERNEL $suite: could not get a verified kernel"; NFAILED=$((NFAILED + 1)); continue; }
  # A second archive appended to the initramfs (the kernel unpacks both) with this kernel's fuse.ko.
  cp "$W/initrd.gz" "$W/$suite.initrd"
  fuse_ko=$(find "$W/$suite/x" -name fuse.ko | head -n 1)
  if [ -n "$fuse_ko" ]; then
    mkdir -p "$W/$suite/extra/modules" && cp "$fuse_ko" "$W/$suite/extra/modules/"
    (cd "$W/$suite/extra" && find . | cpio -o -H newc --quiet | gzip -1) >> "$W/$suite.initrd"
  fi
  start=$(date +%s)
  timeout 600 qemu-system-x86_64 "${accel[@]}" -m 1024 -smp 1 -nographic -no-reboot \
    -kernel "$vmlinuz" -initrd "$W/$suite.initrd" \
    -append "console=ttyS0 rdinit=/init panic=-1 quiet loglevel=3" > "$W/$suite.log" 2>&1 || true
  secs=$(( $(date +%s) - start ))
  tr -d '\r' < "$W/$suite.log" > "$W/$suite.out"
  kver=$(sed -n 's/.*BOOTED \([^ ]*\).*/\1/p' "$W/$suite.out" | head -n 1)
  if ! grep -q '^DONE ' "$W/$suite.out"; then
    echo "KERNEL $suite ${kver:-?}: did not finish the checks in ${secs}s; last lines:"; tail -n 20 "$W/$suite.out"
    NFAILED=$((NFAILED + 1)); continue
  fi
  echo "KERNEL $suite $kver: booted and checked in ${secs}s; /dev/fuse and user namespaces: $(sed -n 's/.*DEVFUSE //p' "$W/$suite.out" | head -n 1)"
  major=${kver%%.*} rest=${kver#*.}; minor=${rest%%.*}
  old=0; { [ "$major" -lt 5 ] || { [ "$major" -eq 5 ] && [ "$minor" -lt 14 ]; }; } && old=1
  accept=; [ $old = 1 ] && accept='too old'
  guest_report "$W/$suite.out" "$accept"
done
echo "kernels: $PASSED passed, $NFAILED failed"
[ "$NFAILED" = 0 ]
