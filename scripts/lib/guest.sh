# Shared by scripts/kernels.sh and scripts/docker.sh: the test repository and the checks that
# run inside a guest (a qemu VM, a container). Source it; needs FQRN set.

# guest_tree ROOT PREFIX BIN BUSYBOX WORK: fills ROOT with what the guest sees at PREFIX: a stratum
# published by BIN, the client configuration, the expected results, the modes to check and
# checks.sh. WORK is scratch space.
guest_tree() {
  local root=$1 prefix=$2 bin=$3 busybox=$4 work=$5 src=$5/src
  mkdir -p "$root"/{etc,expected} "$src"/{bin,data/sub}
  printf 'hello from %s\n' "$FQRN" > "$src/data/hello.txt"
  head -c 3000000 /dev/urandom > "$src/data/big.bin"
  printf 'deep\n' > "$src/data/sub/deep.txt"
  ln -s ../data/hello.txt "$src/bin/link.txt"
  printf '#!/bin/sh\necho "script ok $0 $*"\n' > "$src/bin/hello.sh"
  chmod 755 "$src/bin/hello.sh"
  cp "$busybox" "$src/bin/busybox"
  "$bin" keygen "$FQRN" "$work/keys" >/dev/null
  "$bin" publish "$src" --fqrn "$FQRN" --keys "$work/keys" --stratum "$root/stratum" >/dev/null
  cp "$work/keys/$FQRN.pub" "$root/etc/$FQRN.pub"
  printf 'CVMFS_SERVER_URL=file://%s/stratum\nCVMFS_HTTP_PROXY=DIRECT\nCVMFS_PUBLIC_KEY=%s/etc/%s.pub\n' \
    "${prefix%/}" "${prefix%/}" "$FQRN" > "$root/etc/client.conf"
  (cd "$src" && find . | sed "s#^\.#/cvmfs/$FQRN#" | LC_ALL=C sort) > "$root/expected/find"
  sha256sum < "$src/data/big.bin" | cut -d' ' -f1 > "$root/expected/big.sha256"
  # Modes: those `perch run --mode` offers, else the one default mode.
  local modes
  modes=$("$bin" run --help | awk '/--mode/ { m = 1 } m && /Possible values:/ { p = 1; next }
    p && /^ *- / { sub(/^ *- /, ""); sub(/:.*/, ""); printf "%s ", $0; next } p && NF { exit }')
  echo "${modes:-default}" > "$root/etc/modes"
  cat > "$root/checks.sh" <<'EOF'
#!/bin/sh
# Runs as the user under test: $1 = label, $2 = where the test tree is. Prints CHECK lines.
# MODES (optional) replaces the modes perch offers; AUTO_PICKS (optional) is the mode auto mode
# must choose here (checked as mode-choice).
user=$1 T=${2%/} kver=$(uname -r) fq=$(basename "$T"/etc/*.pub .pub)
for mode in ${MODES:-$(cat "$T/etc/modes")}; do
  cache=/tmp/cache-$user-$mode
  mkdir -p "$cache"
  set -- perch run --config-dir /nonexistent --config "$T/etc/client.conf" --cache "$cache" -r "$fq"
  [ "$mode" = default ] || set -- "$@" --mode "$mode"
  line() { echo "CHECK $kver $mode $user $1 $2"; }
  out=$("$@" -- true 2>&1); rc=$?
  if [ "$mode" = auto ]; then
    # The last mode line names the mode that ran ("ptrace mode: notify mode unavailable: ...").
    choice=$("$@" -d mode -- true 2>&1 | grep -o 'perch\[mode\].*' | tail -n 1)
    line mode-choice "NOTE $choice"
    if [ -n "${AUTO_PICKS:-}" ]; then
      case "$choice" in
        "perch[mode]: $AUTO_PICKS mode"*) line picks-"$AUTO_PICKS" OK ;;
        *) line picks-"$AUTO_PICKS" "FAIL auto mode chose otherwise: $choice" ;;
      esac
    fi
  fi
  if [ $rc -ne 0 ]; then
    if [ $rc -eq 206 ]; then line start "REFUSED $out"; else line start "FAIL rc=$rc $out"; fi
    continue
  fi
  check() { # name expected-output command...
    name=$1 want=$2; shift 2
    got=$("$@" 2>/tmp/err-$user); rc=$?
    if [ $rc -eq 0 ] && [ "$got" = "$want" ]; then line "$name" OK
    else line "$name" "FAIL rc=$rc got=[$(echo "$got" | head -c 300)] want=[$want] err=[$(head -c 300 /tmp/err-$user)]"; fi
  }
  R="$*"
  check list "bin
data" $R -- ls /cvmfs/$fq
  check stat "$(( ${#fq} + 12 )) 644 regular file" $R -- stat -c '%s %a %F' /cvmfs/$fq/data/hello.txt
  check read "hello from $fq" $R -- cat /cvmfs/$fq/data/hello.txt
  check read-big "$(cat "$T/expected/big.sha256")" $R -- sh -c "sha256sum < /cvmfs/$fq/data/big.bin | cut -d' ' -f1"
  check symlink "hello from $fq" $R -- cat /cvmfs/$fq/bin/link.txt
  check exec-script "script ok /cvmfs/$fq/bin/hello.sh a b" $R -- /cvmfs/$fq/bin/hello.sh a b
  check exec-static "static ok" $R -- /cvmfs/$fq/bin/busybox echo static ok
  check cd "/cvmfs/$fq/data/sub
deep" $R -- sh -c "cd /cvmfs/$fq/data/sub && pwd && cat deep.txt"
  check erofs "Read-only file system" $R -- sh -c "touch /cvmfs/$fq/data/new 2>&1 | grep -o 'Read-only file system'"
  check find "$(cat "$T/expected/find")" $R -- sh -c "find /cvmfs/$fq | LC_ALL=C sort"
  if command -v python3 >/dev/null 2>&1; then
    check python "['bin', 'data'] hello from $fq" $R -- python3 -c "import os; print(sorted(os.listdir('/cvmfs/$fq')), open('/cvmfs/$fq/data/hello.txt').read().strip())"
  fi
done
EOF
  chmod 755 "$root/checks.sh"
}

# guest_report FILE ACCEPT: prints the CHECK lines of FILE, counts them in PASSED and NFAILED.
# ACCEPT (an extended regex, may be empty) matches the refusals (exit 206) that are right in this
# guest: notify mode's "too old" on a kernel before 5.14, "fuse mode unavailable" in a container.
guest_report() {
  local file=$1 accept=$2 k mode user name verdict
  while read -r _ k mode user name verdict; do
    case "$verdict" in
      OK*) echo "  $k $mode $user $name OK"; PASSED=$((PASSED + 1)) ;;
      NOTE*) echo "  $k $mode $user $name: ${verdict#NOTE }" ;;
      REFUSED*)
        if [ -n "$accept" ] && grep -Eq "$accept" <<<"$verdict"; then
          echo "  $k $mode $user REFUSED as it should be here: ${verdict#REFUSED }"
          PASSED=$((PASSED + 1))
        else echo "  $k $mode $user $name FAIL: $verdict"; NFAILED=$((NFAILED + 1)); fi ;;
      *) echo "  $k $mode $user $name $verdict"; NFAILED=$((NFAILED + 1)) ;;
    esac
  done < <(grep '^CHECK ' "$file")
}
