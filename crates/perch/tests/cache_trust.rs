//! Issue 9: a shared cache that no job and no other user can poison, and that survives killed
//! jobs. Jobs run as uid 65534 (and two users of one group) when the tests run as root.

mod run_common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use run_common::{is_root, Out, Repo, PERCH};

const FQRN: &str = "trust.example.org";

/// `hello.txt`, a text `data.txt` of 64 kB, and 40 files of 8–200 kB for the kill storm.
fn repo() -> Repo {
    Repo::publish(FQRN, |src| {
        std::fs::write(src.join("hello.txt"), "hello\n").unwrap();
        let line = "0123456789abcdef data line of trust.example.org\n";
        std::fs::write(src.join("data.txt"), line.repeat(65536 / line.len())).unwrap();
        let dir = src.join("many");
        std::fs::create_dir(&dir).unwrap();
        for i in 0..40u32 {
            let size = 8_000 + (i as usize * 48_611) % 192_000;
            let mut x = 0x2545_f491u32 ^ i;
            let body: Vec<u8> = (0..size)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    b'a' + u8::try_from(x % 26).unwrap()
                })
                .collect();
            std::fs::write(dir.join(format!("f{i:02}")), body).unwrap();
        }
    })
}

/// `setpriv` to `uid`/`gid` with no supplementary groups and no capabilities.
fn as_user(uid: u32, gid: u32, program: &str) -> Command {
    let mut c = Command::new("/usr/bin/setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args(["--clear-groups", "--inh-caps=-all", program]);
    c
}

fn env(c: &mut Command, r: &Repo, home: &Path) {
    c.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home)
        .env("LC_ALL", "C")
        .env("ROOT", r.mount())
        .env("WORK", r.work())
        .current_dir(r.work());
}

/// An alien cache that the users of `group` share (`root:group`, 3770), beside a working
/// directory they may all write.
fn shared_alien(r: &Repo, group: u32) -> PathBuf {
    let alien = r.dir.path().join("alien");
    std::fs::create_dir(&alien).unwrap();
    std::os::unix::fs::chown(&alien, Some(0), Some(group)).unwrap();
    std::fs::set_permissions(&alien, std::fs::Permissions::from_mode(0o3770)).unwrap();
    std::os::unix::fs::chown(r.work(), Some(0), Some(group)).unwrap();
    std::fs::set_permissions(r.work(), std::fs::Permissions::from_mode(0o777)).unwrap();
    alien
}

/// `perch run [extra] -- cat /cvmfs/<repo>/<path>` as `uid` on the alien cache, with a home
/// of its own.
fn cat_as(r: &Repo, alien: &Path, uid: u32, group: u32, path: &str, extra: &[&str]) -> Command {
    let home = r.dir.path().join(format!("home-{uid}"));
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(uid), Some(group)).unwrap();
    let mut c = as_user(uid, group, PERCH);
    c.args(client(
        r,
        "run",
        &["--alien-cache", alien.to_str().unwrap()],
    ))
    .args(extra)
    .args(["-r", FQRN, "--", "cat"])
    .arg(format!("/cvmfs/{FQRN}/{path}"));
    env(&mut c, r, &home);
    c
}

/// Arguments of `perch SUB` with this repository's configuration and a cache option.
fn client(r: &Repo, sub: &str, cache: &[&str]) -> Vec<String> {
    let d = r.dir.path().display();
    let mut a = vec![
        sub.to_string(),
        "--config-dir".into(),
        format!("{d}/etc"),
        "--config".into(),
        format!("{d}/client.conf"),
    ];
    a.extend(cache.iter().map(|s| s.to_string()));
    a
}

fn cache_opt(r: &Repo) -> Vec<String> {
    vec![
        "--cache".into(),
        r.dir.path().join("cache").display().to_string(),
    ]
}

/// Every regular file below `dir` whose content is `bytes`.
fn files_holding(dir: &Path, bytes: &[u8]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file()
                && m.len() == bytes.len() as u64
                && std::fs::read(e.path()).unwrap() == bytes
            {
                out.push(e.path());
            }
        }
    }
    out
}

/// What a program that wants to hurt the next job tries (issue 9): the object's real path from
/// /proc/self/maps, a symlink to it, /proc/self/fd reopened for writing, chmod then write,
/// futimens, touch, a rename over it, a hard link to it, appending to the trust index, and
/// sqlite3 on the cached catalog (hello.txt becomes a symlink to /etc/passwd). Each route
/// prints one line: `done` if any attempt succeeded, else `refused`.
const ATTACK: &str = r#"
route() { if [ -n "$DONE" ]; then echo "$1: done"; else echo "$1: refused"; fi; DONE=; }
cat "$ROOT/hello.txt" >/dev/null
P=$(python3 -c '
import mmap, sys
f = open(sys.argv[1], "rb"); m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
for l in open("/proc/self/maps"):
    if l.rstrip().endswith("hello.txt"):
        print(l.split(None, 5)[5].strip())
' "$ROOT/hello.txt")
HELLO=$(grep -rlx --exclude-dir=trust hello "$CACHE")
[ -n "$P" ] && [ -n "$HELLO" ] || echo "no object found"
for f in $P $HELLO; do (printf 'PWNED\n' 1<>"$f") 2>/dev/null && DONE=1; done; route write
for f in $P $HELLO; do
    ln -sf "$f" "$WORK/link" && (printf 'PWNED\n' 1<>"$WORK/link") 2>/dev/null && DONE=1
done; route symlink
HELLO="$HELLO" python3 -c '
import os
fd = os.open(os.environ["ROOT"] + "/hello.txt", os.O_RDONLY)
try:
    w = os.open("/proc/self/fd/%d" % fd, os.O_RDWR); os.write(w, b"PWNED\n"); print("proc-fd: done")
except OSError: print("proc-fd: refused")
for f in os.environ["HELLO"].split():
    fd = os.open(f, os.O_RDONLY)
    try: os.utime(fd, (0, 0)); print("futimens: done"); break
    except OSError: pass
else: print("futimens: refused")
'
for f in $P $HELLO; do chmod u+w "$f" 2>/dev/null && DONE=1; (printf 'PWNED\n' >"$f") 2>/dev/null && DONE=1; done; route chmod
for f in $P $HELLO; do touch -d 2001-01-01 "$f" 2>/dev/null && DONE=1; done; route touch
for f in $P $HELLO; do ln "$f" "$WORK/hard" 2>/dev/null && DONE=1; done; route link
for f in $(grep -rl --exclude-dir=trust 'data line of trust' "$CACHE"); do
    head -c 65536 /dev/zero | tr '\0' 'X' >"$WORK/forged"
    mv -f "$WORK/forged" "$f" 2>/dev/null && DONE=1
done; route rename
for f in $(find "$CACHE" -path '*/trust/*' -type f); do (echo forged >>"$f") 2>/dev/null && DONE=1; done; route trust-index
for f in $(find "$CACHE" -path '*/trust/*' -type f); do
    python3 -c '
import os, sys, threading
fd = os.open(sys.argv[1], os.O_RDONLY)
for p in ("/proc/self/fd/%d" % fd, "/proc/self/task/%d/fd/%d" % (threading.get_native_id(), fd),
          "/proc/self/../self/fd/%d" % fd, "/proc/../proc/thread-self/fd/%d" % fd):
    try:
        w = os.open(p, os.O_WRONLY | os.O_APPEND); os.write(w, b"forged\n"); sys.exit(0)
    except OSError: pass
sys.exit(1)
' "$f" && DONE=1
done; route trust-index-proc-fd
for f in $(grep -rl --exclude-dir=trust 'SQLite format 3' "$CACHE"); do
    chmod u+w "$f" 2>/dev/null && DONE=1
    python3 -c '
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute("UPDATE catalog SET flags = 8, mode = 41471, symlink = ?, size = 11 WHERE name = ?", ("/etc/passwd", "hello.txt"))
c.commit()
' "$f" 2>/dev/null && DONE=1
done; route sqlite3
true
"#;

/// Every route of [`ATTACK`], refused.
const REFUSED: &str = "write: refused\nsymlink: refused\nproc-fd: refused\nfutimens: refused\n\
chmod: refused\ntouch: refused\nlink: refused\nrename: refused\ntrust-index: refused\n\
trust-index-proc-fd: refused\nsqlite3: refused\n";

#[test]
fn issue_9_no_write_route_to_a_served_object_reaches_the_next_job() {
    let mut r = repo();
    r.drop_privileges();
    // The intercepting modes (uid 65534 may not open this machine's /dev/fuse).
    for mode in ["notify", "ptrace"] {
        r.mode = Some(mode);
        attack_then_check(&r);
    }
}

/// The attack in `r`'s mode, then the next job in the same mode.
fn attack_then_check(r: &Repo) {
    let cache = r.dir.path().join("cache");
    let script = format!("CACHE={}; {ATTACK}", cache.display());
    let o = r.perch(&script);
    assert_eq!(o.code, Some(0), "{o}");
    assert_eq!(o.stdout, REFUSED, "mode {:?}: {o}", r.mode);
    // And the next job serves the original bytes.
    let o = r.perch(
        "cat \"$ROOT/hello.txt\"; sha1sum <\"$ROOT/data.txt\"; ls -l \"$ROOT/hello.txt\" | cut -c1",
    );
    let n = r.native(
        "cat \"$ROOT/hello.txt\"; sha1sum <\"$ROOT/data.txt\"; ls -l \"$ROOT/hello.txt\" | cut -c1",
    );
    assert_eq!(o.stdout, n.stdout, "perch run after the attack:\n{o}");
    assert_eq!(o.code, Some(0), "{o}");
    // And the cache holds the original bytes again (a good copy replaced each changed one).
    let mut c = Command::new(PERCH);
    c.args(client(r, "cat", &[]))
        .args(cache_opt(r))
        .arg(format!("/cvmfs/{FQRN}/hello.txt"));
    let o: Out = c.output().unwrap().into();
    assert_eq!(o.stdout, "hello\n", "{o}");
    assert!(files_holding(&cache, b"PWNED\n").is_empty());
}

/// perch writes the cache and reads the program's memory: a program of the same user must not
/// attach to perch with ptrace, open its memory or its fds through /proc, write its memory or
/// take its fds (perch is non-dumpable; the program, after exec, is dumpable as usual). In
/// ptrace mode the program reopens perch's files through the fd relay, which shares perch's
/// descriptor table: its cache files cannot be opened for writing there, and `pidfd_getfd`
/// is refused.
#[test]
fn issue_9_a_program_cannot_attach_to_perch() {
    let mut r = repo();
    r.drop_privileges();
    let cache = r.dir.path().join("cache");
    let script = format!(
        r#"cat "$ROOT/hello.txt" >/dev/null; python3 -c '
import ctypes, os, sys
perch, cache = int(sys.argv[1]), sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
r = libc.ptrace(16, perch, 0, 0)  # PTRACE_ATTACH
print("attach", r, ctypes.get_errno())
for name in ("mem", "fd/0"):
    try:
        open("/proc/%d/%s" % (perch, name), "rb").close()
        print(name, "opened")
    except OSError as e:
        print(name, e.errno)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
buf = ctypes.create_string_buffer(8)
start = int(open("/proc/self/maps").readline().split("-")[0], 16)
local, remote = iovec(ctypes.cast(buf, ctypes.c_void_p), 8), iovec(start, 8)
r = libc.process_vm_writev(perch, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
print("vm_writev", r, ctypes.get_errno())
# Every other process perch started (the fd relay in ptrace mode).
others = [int(p) for p in open("/proc/%d/task/%d/children" % (perch, perch)).read().split()
          if int(p) != os.getppid()]
getfd = 0
writable = []
for pid in [perch] + others:
    pidfd = libc.syscall(434, pid, 0)  # pidfd_open
    if libc.syscall(438, pidfd, 0, 0) >= 0:  # pidfd_getfd
        getfd += 1
    if pid == perch:
        continue
    for fd in os.listdir("/proc/%d/fd" % pid):
        path = "/proc/%d/fd/%s" % (pid, fd)
        try:
            if not os.readlink(path).startswith(cache):
                continue
            open(path, "r+b").close()
            writable.append(os.readlink(path))
        except OSError:
            pass
print("pidfd_getfd", getfd, "writable", writable)
print("self", open("/proc/self/status").read().count("TracerPid"))
' "$PPID" {cache}"#,
        cache = cache.display()
    );
    for mode in ["notify", "ptrace"] {
        r.mode = Some(mode);
        let o = r.perch(&script);
        assert_eq!(
            o.stdout,
            "attach -1 1\nmem 13\nfd/0 13\nvm_writev -1 1\npidfd_getfd 0 writable []\nself 1\n",
            "mode {mode}: {o}"
        );
        assert_eq!(o.code, Some(0), "mode {mode}: {o}");
    }
}

/// perch's own locks in the cache (claims, the quota count) are taken on files a program of
/// the same user cannot open (write-only, mode 0200; write opens and chmod in the cache are
/// refused to it): a program holding a lock on them would stall every later download of the
/// user's jobs. The count itself can be read, and locked, without effect.
#[test]
fn issue_9_a_program_cannot_hold_perchs_cache_locks() {
    let mut r = repo();
    r.drop_privileges();
    let cache = r.dir.path().join("cache").join(FQRN);
    let script = format!(
        r#"cat "$ROOT/hello.txt" >/dev/null
python3 -c '
import fcntl, os, sys, time
cache = sys.argv[1]
held = []
for name in ("lock_claims.%d" % os.getuid(), "lock_usage", "quota_usage"):
    try:
        f = open(os.path.join(cache, name), "rb")
    except OSError as e:
        print(name, e.errno)
        continue
    fcntl.flock(f, fcntl.LOCK_SH)
    fcntl.lockf(f, fcntl.LOCK_SH)
    held.append(f)
    print(name, "locked")
sys.stdout.flush()
time.sleep(12)
' {cache} &
sleep 2
timeout 8 cat "$ROOT/many/f05" | wc -c
kill $! 2>/dev/null; wait"#,
        cache = cache.display()
    );
    let size = std::fs::metadata(r.src().join("many/f05")).unwrap().len();
    let uid = if is_root() {
        65534
    } else {
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap())
    };
    for mode in ["notify", "ptrace"] {
        r.mode = Some(mode);
        let o = r.perch(&script);
        assert_eq!(
            o.stdout,
            format!("lock_claims.{uid} 13\nlock_usage 13\nquota_usage locked\n{size}\n"),
            "mode {mode}: {o}"
        );
        // The next run starts from an empty cache again.
        std::fs::remove_dir_all(&cache).unwrap();
    }
}

/// perch makes a program's writes itself (the cache guard) only for a program with perch's
/// credentials: one started as root that dropped them writes with its own, as it would
/// natively (a root-only directory stays closed to it).
#[test]
fn issue_9_a_program_that_dropped_roots_credentials_writes_with_its_own() {
    assert!(
        is_root(),
        "this test drops root's credentials inside the job: run it as root (CI does)"
    );
    let mut r = repo();
    let closed = r.work().join("root-only");
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    let script = format!(
        "setpriv --reuid=65534 --regid=65534 --clear-groups sh -c 'echo x >{0}/f; mkdir {0}/d' 2>/dev/null; \
         echo $?; ls {0}",
        closed.display()
    );
    for mode in ["notify", "ptrace"] {
        r.mode = Some(mode);
        let o = r.perch(&script);
        assert_eq!(o.stdout, "1\n", "mode {mode}: {o}");
    }
}

#[test]
fn issue_9_proc_maps_names_cvmfs_paths() {
    let mut r = repo();
    let script = r#"python3 -c '
import mmap, os, sys
f = open(os.environ["ROOT"] + "/data.txt", "rb")
m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
for name in ("maps", "smaps", "numa_maps"):
    lines = [l for l in open("/proc/self/" + name) if "data.txt" in l]
    print(name, len(lines), all(os.environ["ROOT"] + "/data.txt" in l for l in lines))
'"#;
    for mode in run_common::MODES {
        r.mode = Some(mode);
        let o = r.perch(script);
        assert_eq!(
            o.stdout, "maps 1 True\nsmaps 1 True\nnuma_maps 1 True\n",
            "mode {mode}: {o}"
        );
    }
}

#[test]
fn issue_9_an_object_changed_by_its_owner_is_not_served_to_another_user() {
    assert!(
        is_root(),
        "this test switches between two uids: run it as root (CI does)"
    );
    let r = repo();
    let (a, b, group) = (64001u32, 64002u32, 64000u32);
    let alien = shared_alien(&r, group);
    let run = |uid: u32, path: &str| -> Out {
        cat_as(&r, &alien, uid, group, path, &[])
            .output()
            .unwrap()
            .into()
    };
    let data = std::fs::read(r.src().join("data.txt")).unwrap();
    assert_eq!(run(a, "hello.txt").ok().stdout, "hello\n");
    assert_eq!(run(b, "hello.txt").ok().stdout, "hello\n");
    assert_eq!(run(a, "data.txt").ok().stdout.as_bytes(), data);
    // User a changes its objects outside perch (chmod, then write).
    let mut changed = Vec::new();
    for (old, new) in [
        (&b"hello\n"[..], &b"PWNED\n"[..]),
        (&data[..], &vec![b'X'; data.len()][..]),
    ] {
        for f in files_holding(&alien, old) {
            let m = std::fs::metadata(&f).unwrap();
            if std::os::unix::fs::MetadataExt::uid(&m) != a {
                continue;
            }
            let mut c = as_user(a, group, "/bin/sh");
            c.arg("-c")
                .arg("chmod u+w \"$1\" && cat >\"$1\"")
                .arg("sh")
                .arg(&f)
                .stdin(Stdio::piped());
            let mut child = c.spawn().unwrap();
            std::io::Write::write_all(&mut child.stdin.take().unwrap(), new).unwrap();
            assert!(child.wait().unwrap().success());
            changed.push(f);
        }
    }
    assert!(changed.len() >= 2, "{changed:?}");
    // User b's next jobs never serve the changed bytes: hello.txt, which b verified before,
    // and data.txt, which b never read (it is compared with a fresh download, found
    // different, and cannot be replaced: a's object in a sticky directory).
    let o = run(b, "hello.txt");
    assert!(!o.stdout.contains("PWNED"), "{o}");
    assert!(o.stdout == "hello\n" || o.code != Some(0), "{o}");
    let o = run(b, "data.txt");
    assert!(!o.stdout.contains('X'), "served the changed bytes:\n{o}");
    if o.code != Some(0) {
        assert!(o.stderr.contains("is not served"), "{o}");
        assert!(o.stderr.contains(&format!("uid {a}")), "{o}");
    }
}

#[test]
fn issue_9_cache_check_is_not_fooled_by_a_forged_checksum() {
    let r = repo();
    let cat = |path: &str| -> Out {
        let mut c = Command::new(PERCH);
        c.args(client(&r, "cat", &[]))
            .args(cache_opt(&r))
            .arg(format!("/cvmfs/{FQRN}/{path}"));
        c.output().unwrap().into()
    };
    assert_eq!(cat("hello.txt").ok().stdout, "hello\n");
    let cache = r.dir.path().join("cache").join(FQRN);
    let objects: Vec<PathBuf> = files_holding(&cache, b"hello\n")
        .into_iter()
        .filter(|p| !p.starts_with(r.dir.path().join("cache").join("shadow")))
        .collect();
    assert_eq!(objects.len(), 1, "{objects:?}");
    let obj = &objects[0];
    std::fs::set_permissions(obj, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(obj, "PWNED\n").unwrap();
    // The record the cache kept before issue 9: a line that makes the forged object good.
    let rel = obj.strip_prefix(&cache).unwrap().display().to_string();
    let sha1 = Command::new("sha1sum").arg(obj).output().unwrap().stdout;
    let sha1 = String::from_utf8_lossy(&sha1[..40]).into_owned();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(cache.join("checksums"))
        .unwrap();
    std::io::Write::write_all(&mut f, format!("{rel} {sha1} 6\n").as_bytes()).unwrap();
    let mut c = Command::new(PERCH);
    c.arg("cache")
        .args(client(&r, "check", &[]))
        .args(cache_opt(&r))
        .arg(FQRN);
    let o: Out = c.output().unwrap().into();
    assert!(o.stdout.contains("bad          1 (removed 1)"), "{o}");
    assert!(!obj.exists());
    assert_eq!(cat("hello.txt").ok().stdout, "hello\n");
}

#[test]
fn issue_9_a_claim_left_empty_by_a_killed_job_delays_nobody() {
    let r = repo();
    let cache = r.dir.path().join("cache").join(FQRN);
    let cat = |path: &str| -> Out {
        let mut c = Command::new(PERCH);
        c.args(client(&r, "cat", &[]))
            .args(cache_opt(&r))
            .arg(format!("/cvmfs/{FQRN}/{path}"));
        c.output().unwrap().into()
    };
    assert_eq!(cat("hello.txt").ok().stdout, "hello\n");
    // Find data.txt's object name from a first read, then start over with only its claim.
    assert!(cat("data.txt").ok().stdout.len() > 60000);
    let data = std::fs::read(r.src().join("data.txt")).unwrap();
    let obj = files_holding(&cache, &data)
        .into_iter()
        .find(|p| !p.to_string_lossy().contains("/shadow/"))
        .unwrap();
    let name = obj
        .strip_prefix(&cache)
        .unwrap()
        .display()
        .to_string()
        .replace('/', "_");
    std::fs::remove_file(&obj).unwrap();
    // What a job killed between creating its claim and writing to it left (issue 9: 120 s).
    std::fs::write(cache.join("txn").join(format!("claim.{name}")), "").unwrap();
    let t = Instant::now();
    assert_eq!(cat("data.txt").ok().stdout.as_bytes(), data);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "waited {:?} for a dead claim",
        t.elapsed()
    );
}

/// 8 jobs at a time on one cache, one `kill -9` every ~80 ms until 60 kills (at most `storm`),
/// restarting the killed ones; then: completed outputs correct, fresh jobs finish promptly, `perch cache
/// check` clean, nothing left in `txn/` or the shadow tree's staging area.
fn kill_storm(r: &Repo, cache: &[String], cache_dir: &Path, storm: Duration) {
    let files: Vec<String> = (0..40)
        .map(|i| format!("/cvmfs/{FQRN}/many/f{i:02}"))
        .collect();
    let mut want = Vec::new();
    for i in 0..40 {
        want.extend(std::fs::read(r.src().join(format!("many/f{i:02}"))).unwrap());
    }
    let log_path = r.dir.path().join("storm.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    // A job and the thread that drains its output.
    type Job = (Child, std::thread::JoinHandle<Vec<u8>>);
    let spawn = || -> Job {
        let mut c = Command::new(PERCH);
        c.args(client(r, "run", &[]))
            .args(cache)
            .args(["-r", FQRN, "--", "cat"])
            .args(&files)
            .stdout(Stdio::piped())
            .stderr(log.try_clone().unwrap());
        env(&mut c, r, &r.work());
        let mut child = c.spawn().unwrap();
        let mut out = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = std::io::Read::read_to_end(&mut out, &mut v);
            v
        });
        (child, reader)
    };
    let mut jobs: Vec<Job> = (0..8).map(|_| spawn()).collect();
    let start = Instant::now();
    let (mut kills, mut completed, mut x) = (0u32, 0u32, 0x9e37_79b9u32);
    while kills < 60 && start.elapsed() < storm {
        std::thread::sleep(Duration::from_millis(40 + u64::from(x % 80)));
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = jobs.len();
        let first = (x as usize) % n;
        if let Some(i) = (0..n)
            .map(|k| (first + k) % n)
            .find(|&i| jobs[i].0.try_wait().unwrap().is_none())
        {
            jobs[i].0.kill().unwrap(); // SIGKILL
            jobs[i].0.wait().unwrap();
            let (_, reader) = std::mem::replace(&mut jobs[i], spawn());
            reader.join().unwrap();
            kills += 1;
        }
        for j in jobs.iter_mut() {
            if let Some(st) = j.0.try_wait().unwrap() {
                let (_, reader) = std::mem::replace(j, spawn());
                let out = reader.join().unwrap();
                assert!(
                    st.success() && out == want,
                    "a completed job failed:\n{}",
                    log_text()
                );
                completed += 1;
            }
        }
    }
    for (mut child, reader) in jobs {
        assert!(child.wait().unwrap().success(), "{}", log_text());
        assert!(reader.join().unwrap() == want);
        completed += 1;
    }
    assert!(kills >= 50, "only {kills} kills");
    assert!(completed > 0, "{kills} kills and no completed job");
    // After the storm: 8 fresh jobs together, each done promptly (no dead claim to wait for).
    let t = Instant::now();
    let fresh: Vec<Job> = (0..8).map(|_| spawn()).collect();
    for (mut child, reader) in fresh {
        assert!(child.wait().unwrap().success(), "{}", log_text());
        assert!(reader.join().unwrap() == want);
    }
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "jobs after the storm took {:?}",
        t.elapsed()
    );
    let mut c = Command::new(PERCH);
    c.arg("cache")
        .args(client(r, "check", &[]))
        .args(cache)
        .arg(FQRN);
    let o: Out = c.output().unwrap().into();
    assert!(o.stdout.contains("bad          0"), "{o}");
    o.ok();
    let left = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let txn = left(&cache_dir.join("txn"));
    assert!(txn.is_empty(), "left in txn/: {txn:?}");
    let shadow_root = if cache_dir.join("shadow").is_dir() {
        cache_dir.join("shadow")
    } else {
        cache_dir.parent().unwrap().join("shadow")
    };
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        .unwrap();
    let staging = left(&shadow_root.join(uid).join(".tmp"));
    assert!(
        staging.is_empty(),
        "left in the shadow staging area: {staging:?}"
    );
}

#[test]
fn issue_9_kill_storm_on_an_alien_cache() {
    let r = repo();
    let alien = r.dir.path().join("alien");
    let opt = vec!["--alien-cache".to_string(), alien.display().to_string()];
    kill_storm(&r, &opt, &alien, Duration::from_secs(25));
}

#[test]
fn issue_9_kill_storm_on_a_local_cache() {
    let r = repo();
    let opt = cache_opt(&r);
    kill_storm(
        &r,
        &opt,
        &r.dir.path().join("cache").join(FQRN),
        Duration::from_secs(25),
    );
}

/// A site's filler of an alien cache (`CVMFS_PERCH_TRUSTED_UIDS`): objects it downloaded and
/// verified are served to other users without a download of theirs, offline too; without the
/// setting another user cannot use them offline; a filler's object changed afterwards is still
/// not served.
#[test]
fn issue_9_a_trusted_filler_lets_other_users_run_offline() {
    assert!(
        is_root(),
        "this test switches between two uids: run it as root (CI does)"
    );
    let r = repo();
    let (filler, user, group) = (64011u32, 64012u32, 64010u32);
    let alien = shared_alien(&r, group);
    let run = |uid: u32, trusted: bool, path: &str| -> Out {
        let mut c = cat_as(&r, &alien, uid, group, path, &["--mode", "notify"]);
        if trusted {
            c.env("CVMFS_PERCH_TRUSTED_UIDS", format!("1234, {filler}"));
        }
        c.output().unwrap().into()
    };
    let data = std::fs::read(r.src().join("data.txt")).unwrap();
    // The filler fills the cache while the stratum is there.
    assert_eq!(run(filler, false, "hello.txt").ok().stdout, "hello\n");
    assert_eq!(run(filler, false, "data.txt").ok().stdout.as_bytes(), data);
    // Then the server fails (its files cannot be read: for a file:// server what a network
    // failure is for http://; a missing file would say "no such repository" instead).
    let stratum = r.dir.path().join("stratum");
    std::fs::set_permissions(&stratum, std::fs::Permissions::from_mode(0o700)).unwrap();
    let o = run(user, false, "data.txt");
    assert_ne!(
        o.code,
        Some(0),
        "served another user's object offline, unverified:\n{o}"
    );
    let o = run(user, true, "data.txt");
    assert_eq!(o.ok().stdout.as_bytes(), data, "{o}");
    assert_eq!(run(user, true, "hello.txt").ok().stdout, "hello\n");
    // The filler changes an object afterwards: the trusting user does not serve it.
    let mut changed = 0;
    for f in files_holding(&alien, b"hello\n") {
        let m = std::fs::metadata(&f).unwrap();
        if std::os::unix::fs::MetadataExt::uid(&m) != filler {
            continue;
        }
        changed += 1;
        let mut c = as_user(filler, group, "/bin/sh");
        c.arg("-c")
            .arg("chmod u+w \"$1\" && printf 'PWNED\\n' >\"$1\"")
            .arg("sh")
            .arg(&f);
        assert!(c.status().unwrap().success());
    }
    assert!(changed > 0);
    let o = run(user, true, "hello.txt");
    assert!(
        !o.stdout.contains("PWNED"),
        "served the changed bytes:\n{o}"
    );
}
