//! `perch run --mode fuse|auto`: perch's own FUSE server at `/cvmfs` inside a private user +
//! mount namespace, and the refusals that make `--mode auto` fall back to notify.
//!
//! The refusals are made by the test, not taken from the machine: a seccomp filter that fails
//! `unshare`/`clone` with `CLONE_NEWUSER` with `EPERM` (what Docker's default profile does), and
//! a private mount namespace whose `/dev/fuse` is a `0600 root:root` node while the job runs as
//! user 65534 (what a host without a world-usable `/dev/fuse` gives).

mod run_common;

use std::path::Path;
use std::process::Command;

use run_common::{is_root, nobody, Out, Repo, PERCH};

/// The standard tree, walked, stat'ed and read natively and in fuse mode: same output.
#[test]
fn fuse_mode_serves_a_published_tree_like_the_native_one() {
    let r = Repo::standard().in_mode("fuse");
    r.same("cd \"$ROOT\" && find . -mindepth 1 -printf '%M %n %s %T@ %U %G %P -> %l\\n' | sort");
    r.same("cd \"$ROOT\" && find . -type f | sort | xargs sha1sum");
    r.same("cd \"$ROOT\" && stat -c '%A %h %s %Y %F %N' sub/link.h sub/dirlink sub sub/deep/private empty");
    r.same(
        "cd \"$ROOT\" && readlink sub/link.h sub/dirlink && cat sub/link.h sub/dirlink/file.txt",
    );
    r.same("cd \"$ROOT\" && ls -la sub sub/deep | grep -v total");
    r.same("PYTHONPATH=\"$ROOT/lib/python\" python3 -c 'import pkg.mod; print(pkg.mod.f())'");
    r.same("cd \"$ROOT\" && ./bin/tool.sh a b && LD_LIBRARY_PATH=lib64 bin/app");
    // Interpreter and ELF loader named by their /cvmfs paths (no native counterpart).
    let o = r.perch("\"$ROOT/bin/via-mysh\" x y && \"$ROOT/bin/interp-app\"");
    assert_eq!(
        o.ok().stdout,
        format!(
            "via-mysh {}/bin/via-mysh x y\nhello from cvmfs 5\n",
            r.mount()
        ),
        "{o}"
    );
    r.same("cd \"$ROOT/sub/dirlink\" && pwd && pwd -P");
    r.same(
        "gcc -I\"$ROOT/include\" -o \"$WORK/prog\" \"$ROOT/src/main.c\" \"$ROOT/src/add.c\" && \"$WORK/prog\" && rm \"$WORK/prog\"",
    );
    // Read-only like the real client's mount.
    let o = r.perch("cd \"$ROOT/sub\" && touch x; mkdir y; rm link.h; true");
    assert_eq!(
        o.ok().stderr,
        "touch: cannot touch 'x': Read-only file system\n\
         mkdir: cannot create directory 'y': Read-only file system\n\
         rm: cannot remove 'link.h': Read-only file system\n",
        "{o}"
    );
    // Nothing is intercepted: the program may trace its children.
    let o = r.perch("strace -f -e trace=none -o /dev/null true && echo traced");
    assert_eq!(o.ok().stdout, "traced\n", "{o}");
    // perch's cache is read-only for the program (issue 9): no new file, no write to an
    // object or to the trust index, no chmod; the host's other files stay writable.
    let cache = r.dir.path().join("cache");
    let o = r.perch(&format!(
        "c='{}'; touch \"$c/x\" 2>&1; n=0; for f in $(find \"$c\" -type f); do \
           n=$((n+1)); (echo PWNED >>\"$f\") 2>/dev/null && echo \"wrote $f\"; \
           chmod u+w \"$f\" 2>/dev/null && echo \"chmod $f\"; done; \
         test $n -gt 3 && echo files; touch \"$WORK/host\" && echo host-ok",
        cache.display()
    ));
    assert_eq!(
        o.ok().stdout,
        format!(
            "touch: cannot touch '{}/x': Read-only file system\nfiles\nhost-ok\n",
            cache.display()
        ),
        "{o}"
    );
}

/// A host symlink into `/cvmfs` is an ordinary symlink in fuse mode: open, exec (also through
/// `execvp`/`posix_spawnp` in `PATH`) and `cd` follow it. (Notify mode cannot: see
/// run_programs::host_symlinks_into_cvmfs_are_not_followed.)
#[test]
fn host_symlinks_into_cvmfs_are_followed_in_fuse_mode() {
    let r = Repo::standard().in_mode("fuse");
    let m = r.mount();
    let w = r.work().display().to_string();
    let script = format!(
        "ln -sfn {m} \"$WORK/sw\" && ln -sfn {m}/bin \"$WORK/swbin\" && \
         cat \"$WORK/sw/include/hello.h\" && \"$WORK/swbin/tool.sh\" direct && \
         PATH=\"$WORK/swbin:$PATH\" tool.sh via-path && \
         PATH=\"$WORK/swbin:$PATH\" python3 -c 'import os; pid = os.posix_spawnp(\"tool.sh\", [\"tool.sh\", \"spawned\"], os.environ); print(os.waitpid(pid, 0)[1])' && \
         cd \"$WORK/sw/sub\" && pwd -P && ls && cat link.h | head -1"
    );
    let o = r.perch(&script);
    assert_eq!(
        o.ok().stdout.replace(&w, "$WORK"),
        format!(
            "#define GREETING \"hello from cvmfs\"\nint add(int, int);\n\
             tool direct\nmore\ntool via-path\nmore\ntool spawned\nmore\n0\n\
             {m}/sub\ndeep\ndirlink\nlink.h\n#define GREETING \"hello from cvmfs\"\n"
        ),
        "{o}"
    );
}

/// `/cvmfs` lists the configured repositories without mounting them, and an unknown name is
/// ENOENT, in fuse mode too; `id` shows the caller's ids.
#[test]
fn fuse_mode_lists_cvmfs_and_keeps_the_callers_ids() {
    let r = Repo::standard().in_mode("fuse");
    let o = r.perch("ls /cvmfs; ls /cvmfs/nope; id -u; id -g");
    let (uid, gid) = ids();
    assert_eq!(o.stdout, format!("{}\n{uid}\n{gid}\n", r.fqrn), "{o}");
    assert_eq!(
        o.stderr, "ls: cannot access '/cvmfs/nope': No such file or directory\n",
        "{o}"
    );
}

/// The ids of the test process (`id -u`, `id -g` natively).
fn ids() -> (String, String) {
    let id = |flag: &str| {
        let o = Command::new("id").arg(flag).output().unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    (id("-u"), id("-g"))
}

/// `-d mode` says which mode runs; auto picks fuse where it works.
#[test]
fn auto_mode_picks_fuse_where_it_works() {
    let r = Repo::standard().in_mode("auto");
    let mut c = Command::new(PERCH);
    c.arg("-d")
        .arg("mode")
        .args(r.perch_args())
        .args(["--", "cat"])
        .arg(format!("{}/include/hello.h", r.mount()));
    let o: Out = c.output().unwrap().into();
    assert!(o.ok().stdout.starts_with("#define GREETING"), "{o}");
    assert!(
        o.stderr.contains("fuse mode: /cvmfs is perch's FUSE mount"),
        "{o}"
    );
}

/// A python3 program that installs the BPF `prog` built by `filter` (python statements using
/// `stmt`/`jump`) on itself, then execs its arguments. With `HOLD_LISTENER` set in its
/// environment the filter is installed with `SECCOMP_FILTER_FLAG_NEW_LISTENER` and the listener
/// kept open across the exec: the chain then has a listener, as under a runtime that
/// intercepts syscalls itself.
fn filter_installer(filter: &str) -> String {
    let head = r#"import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
def stmt(code, k): return struct.pack("HBBI", code, 0, 0, k)
def jump(code, k, jt, jf): return struct.pack("HBBI", code, jt, jf, k)
"#;
    let tail = r#"n = len(prog) // 8
buf = ctypes.create_string_buffer(prog)
fprog = struct.pack("HxxxxxxQ", n, ctypes.addressof(buf))
fbuf = ctypes.create_string_buffer(fprog)
assert libc.prctl(38, 1, 0, 0, 0) == 0                      # PR_SET_NO_NEW_PRIVS
if os.environ.get("HOLD_LISTENER"):
    # seccomp(SET_MODE_FILTER, NEW_LISTENER): the chain now has a listener, as under a
    # runtime that intercepts syscalls itself; kept open across exec (closing it frees it).
    libc.syscall.restype = ctypes.c_long
    L = ctypes.c_long
    fd = libc.syscall(L(317), L(1), L(8), ctypes.c_void_p(ctypes.addressof(fbuf)))
    assert fd >= 0, ctypes.get_errno()
    os.dup2(fd, 50, inheritable=True)
else:
    assert libc.prctl(22, 2, ctypes.addressof(fbuf), 0, 0) == 0   # PR_SET_SECCOMP, FILTER
os.execv(sys.argv[1], sys.argv[1:])
"#;
    format!("{head}{filter}{tail}")
}

/// The filter Docker's default profile amounts to for perch: `unshare` and `clone` with
/// `CLONE_NEWUSER` fail with `EPERM`, `clone3` with `ENOSYS` (so that libc falls back to
/// `clone`, whose flags a filter can see). Installed with [`filter_installer`].
const DENY_USERNS: &str = r#"
LD, JEQ, JSET, RET = 0x20, 0x15, 0x45, 0x06
ALLOW, EPERM, ENOSYS = 0x7fff0000, 0x00050000 | 1, 0x00050000 | 38
CLONE_NEWUSER = 0x10000000
prog = b"".join([
    stmt(LD, 0),                      # nr
    jump(JEQ, 272, 3, 0),             # unshare -> check flags
    jump(JEQ, 56, 2, 0),              # clone -> check flags
    jump(JEQ, 435, 4, 0),             # clone3 -> ENOSYS
    stmt(RET, ALLOW),
    stmt(LD, 16),                     # args[0], low 32 bits
    jump(JSET, CLONE_NEWUSER, 0, 1),
    stmt(RET, EPERM),
    stmt(RET, ALLOW),
    stmt(RET, ENOSYS),
])
"#;

fn under_deny_userns(r: &Repo, mode: &str, argv: &[&str]) -> Out {
    Command::new("python3")
        .args(["-c", &filter_installer(DENY_USERNS), PERCH, "-d", "mode"])
        .args(r.perch_args())
        .args(["--mode", mode, "--"])
        .args(argv)
        .current_dir(r.work())
        .output()
        .unwrap()
        .into()
}

#[test]
fn auto_falls_back_to_notify_when_seccomp_refuses_user_namespaces() {
    let r = Repo::standard();
    // The filter works: unshare -U is refused under it.
    let o: Out = Command::new("python3")
        .args([
            "-c",
            &filter_installer(DENY_USERNS),
            "/usr/bin/unshare",
            "-U",
            "true",
        ])
        .output()
        .unwrap()
        .into();
    assert_ne!(o.code, Some(0), "{o}");
    let hello = format!("{}/include/hello.h", r.mount());
    let o = under_deny_userns(&r, "auto", &["cat", &hello]);
    assert!(o.ok().stdout.starts_with("#define GREETING"), "{o}");
    assert!(
        o.stderr.contains(
            "notify mode: fuse mode unavailable: unshare(CLONE_NEWUSER|CLONE_NEWNS) failed (EPERM"
        ) && o.stderr.contains("seccomp filter"),
        "{o}"
    );
    let o = under_deny_userns(&r, "fuse", &["cat", &hello]);
    assert_eq!(o.code, Some(206), "{o}");
    assert_eq!(o.stdout, "", "{o}");
    let line = o.stderr.lines().last().unwrap_or_default();
    assert!(
        line.starts_with(
            "perch: fuse mode unavailable: unshare(CLONE_NEWUSER|CLONE_NEWNS) failed (EPERM"
        ),
        "{o}"
    );
}

/// As user 65534 with `/dev/fuse` a `0600 root:root` node (bound over the real one in a
/// private mount namespace of the test): auto runs the job in notify mode, fuse refuses with
/// one line naming the device. Needs root to set the scene.
#[test]
fn auto_falls_back_to_notify_when_dev_fuse_cannot_be_opened() {
    assert!(
        is_root(),
        "this test sets up a mount namespace and must run as root (as CI does)"
    );
    let mut r = Repo::standard();
    r.drop_privileges();
    let node = r.dir.path().join("fuse-0600");
    let hello = format!("{}/include/hello.h", r.mount());
    let run = |mode: &str| -> Out {
        // unshare -m: a private mount namespace for this one command, gone when it exits.
        let script = format!(
            "rm -f {node} && mknod -m 0600 {node} c 10 229 && mount --bind {node} /dev/fuse && exec \"$@\"",
            node = node.display()
        );
        let mut inner = nobody(PERCH);
        inner
            .arg("-d")
            .arg("mode")
            .args(r.perch_args())
            .args(["--mode", mode, "--", "cat", &hello]);
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"])
            .arg(inner.get_program())
            .args(inner.get_args())
            .current_dir(r.work());
        let o: Out = c.output().unwrap().into();
        o
    };
    let o = run("auto");
    assert!(o.ok().stdout.starts_with("#define GREETING"), "{o}");
    assert!(
        o.stderr.contains(
            "notify mode: fuse mode unavailable: cannot open /dev/fuse (mode 600, owner uid 0) as uid 65534: EACCES"
        ),
        "{o}"
    );
    let o = run("fuse");
    assert_eq!(o.code, Some(206), "{o}");
    assert!(
        o.stderr.lines().last().unwrap_or_default().starts_with(
            "perch: fuse mode unavailable: cannot open /dev/fuse (mode 600, owner uid 0) as uid 65534"
        ),
        "{o}"
    );
    assert!(Path::new("/dev/fuse").exists());
}

/// Drives `perch run -- bash -i` on a terminal (python3's pty): the seed's commands, then a
/// Ctrl-C that interrupts a foreground `sleep` (bash reports 130) and an `exit 7` that is
/// perch's status. Each step waits for its output (no fixed delays).
const INTERACTIVE: &str = r#"
import os, pty, re, select, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
buf = b""
def until(marker, timeout=60):
    global buf
    end = time.time() + timeout
    while marker not in buf:
        left = end - time.time()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            sys.exit("timeout waiting for %r in %r" % (marker, buf))
        try:
            data = os.read(fd, 4096)
        except OSError:
            sys.exit("eof waiting for %r in %r" % (marker, buf))
        buf += data
def send(line): os.write(fd, line.encode() + b"\n")
send("PS1='$ '; echo ready")
until(b"ready\r\n")
send("ls -lad " + os.environ["T_DIR"] + " && cp " + os.environ["T_FILE"] + " . && echo copied")
until(b"copied\r\n")
# The marker comes from the foreground job itself: bash has made it the terminal's foreground
# process group before it runs, so the Ctrl-C cannot arrive while bash is still the target.
send("sh -c 'echo sleeping; exec sleep 30'")
until(b"sleeping\r\n")
os.write(fd, b"\x03")
send("echo status=$?")
until(b"status=130\r\n")
send("exit 7")
_, st = os.waitpid(pid, 0)
out = buf.decode(errors="replace")
print("ls-ok" if " 4096 " in out else "ls-missing")
print("status=" + ",".join(re.findall(r"status=(\d+)", out)))
print("exit", os.WEXITSTATUS(st))
"#;

#[test]
fn the_seeds_interactive_bash_in_each_mode() {
    let r = Repo::standard();
    let dir = format!("{}/sub", r.mount());
    let readme = format!("{}/include/hello.h", r.mount());
    for mode in run_common::MODES {
        let _ = std::fs::remove_file(r.work().join("hello.h"));
        let o: Out = Command::new("python3")
            .args(["-c", INTERACTIVE, PERCH])
            .args(r.perch_args())
            .args(["--mode", mode, "--", "bash", "--norc", "-i"])
            .env("T_DIR", &dir)
            .env("T_FILE", &readme)
            .current_dir(r.work())
            .env("TERM", "dumb")
            .output()
            .unwrap()
            .into();
        assert_eq!(o.ok().stdout, "ls-ok\nstatus=130\nexit 7\n", "{mode}: {o}");
        assert!(r.work().join("hello.h").exists(), "{mode}");
    }
}

/// Fuse mode as user 65534 without capabilities, where `/dev/fuse` is usable by everyone (as on
/// Debian and EL hosts; here a `0666` node bound over it in a private mount namespace of the
/// test): the job runs in fuse mode, keeps its uid, and root's files show as 65534 (the one id
/// an unprivileged user namespace can map is the user's own).
#[test]
fn unprivileged_fuse_mode_with_a_usable_dev_fuse() {
    assert!(
        is_root(),
        "this test sets up a mount namespace and must run as root (as CI does)"
    );
    let mut r = Repo::standard().in_mode("fuse");
    r.drop_privileges();
    let node = r.dir.path().join("fuse-0666");
    let script = format!(
        "rm -f {node} && mknod -m 0666 {node} c 10 229 && mount --bind {node} /dev/fuse && exec \"$@\"",
        node = node.display()
    );
    let mut inner = nobody(PERCH);
    inner.args(r.perch_args()).args([
        "--",
        "sh",
        "-c",
        "id -u; grep CapEff /proc/self/status; cat \"$0\"/sub/dirlink/file.txt; \
         stat -c '%u %a %n' \"$0\"/include/hello.h /usr; cat \"$0\"/sub/deep/private",
        &r.mount(),
    ]);
    let o: Out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"])
        .arg(inner.get_program())
        .args(inner.get_args())
        .current_dir(r.work())
        .output()
        .unwrap()
        .into();
    assert_eq!(o.code, Some(1), "{o}");
    assert_eq!(
        o.stdout,
        format!(
            "65534\nCapEff:\t0000000000000000\ndeeper\n65534 644 {m}/include/hello.h\n65534 755 /usr\n",
            m = r.mount()
        ),
        "{o}"
    );
    assert!(o.stderr.ends_with("Permission denied\n"), "{o}");
}

/// Processes the program leaves behind (daemonized with `setsid`, or orphaned) are killed when
/// it exits, as in notify mode.
#[test]
fn leftover_processes_are_killed_in_fuse_mode() {
    let r = Repo::standard().in_mode("fuse");
    let o = r.perch("setsid sleep 1000 & echo $!; (sleep 1001 & echo $!) ; true");
    let pids: Vec<String> = o.ok().stdout.lines().map(str::to_string).collect();
    assert_eq!(pids.len(), 2, "{o}");
    for p in pids {
        let cmd = std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default();
        assert!(!cmd.starts_with("sleep"), "{p} still runs: {cmd}");
    }
}

/// What Linux 4.18 (the first kernel that allows FUSE mounts in a user namespace) offers
/// perch's process tree, as far as a seccomp filter can say it: every x86_64 system call added
/// after 4.18 (numbers above 334, `rseq`: `pidfd_open`, `pidfd_getfd`, `clone3`, `close_range`,
/// `openat2`, `faccessat2`, `epoll_pwait2`, `mount_setattr`, ...) fails with `ENOSYS`, as an
/// old kernel answers, and `getrandom` with a flag newer than 4.18 (`GRND_INSECURE`) fails
/// with `EINVAL`. It cannot make an old kernel's FUSE protocol or missing flags of older calls.
/// Installed by python3 on itself, then exec.
#[cfg(target_arch = "x86_64")]
const LINUX_4_18: &str = r#"
LD, JEQ, JGT, JSET, RET = 0x20, 0x15, 0x25, 0x45, 0x06
ALLOW, EINVAL, ENOSYS = 0x7fff0000, 0x00050000 | 22, 0x00050000 | 38
prog = b"".join([
    stmt(LD, 4),                      # arch
    jump(JEQ, 0xc000003e, 1, 0),      # AUDIT_ARCH_X86_64
    stmt(RET, ENOSYS),
    stmt(LD, 0),                      # nr
    jump(JGT, 334, 4, 0),             # newer than rseq -> ENOSYS
    jump(JEQ, 318, 0, 2),             # getrandom -> check flags
    stmt(LD, 32),                     # args[2], low 32 bits
    jump(JSET, 4, 2, 0),              # GRND_INSECURE (5.6) -> EINVAL
    stmt(RET, ALLOW),
    stmt(RET, ENOSYS),
    stmt(RET, EINVAL),
])
"#;

/// Fuse mode under [`LINUX_4_18`]: it still mounts, serves the tree (walk, stat, read, exec, a
/// threaded python) with the same output as natively, and nothing the program sees differs.
/// Before the `/dev/fuse` descriptor travelled over the socket pair, `pidfd_getfd` made this
/// fail.
#[cfg(target_arch = "x86_64")]
#[test]
fn fuse_mode_needs_no_system_call_newer_than_linux_4_18() {
    let r = Repo::standard();
    // The filter works: pidfd_open, pidfd_getfd and clone3 are gone under it, and getrandom
    // refuses GRND_INSECURE.
    let probe = "import ctypes, errno, os\n\
                 libc = ctypes.CDLL(None, use_errno=True)\n\
                 for nr, a, b, c in ((434, os.getpid(), 0, 0), (438, -1, 0, 0), (435, 0, 0, 0), (318, 0, 0, 4)):\n\
                 \x20   r = libc.syscall(nr, a, b, c)\n\
                 \x20   print(nr, errno.errorcode.get(ctypes.get_errno(), r) if r < 0 else 'present')\n";
    let o: Out = Command::new("python3")
        .args([
            "-c",
            &filter_installer(LINUX_4_18),
            "/usr/bin/python3",
            "-c",
            probe,
        ])
        .output()
        .unwrap()
        .into();
    assert_eq!(
        o.ok().stdout,
        "434 ENOSYS\n438 ENOSYS\n435 ENOSYS\n318 EINVAL\n",
        "{o}"
    );
    let script = "cd \"$ROOT\" && find . -mindepth 1 -printf '%M %n %s %P -> %l\\n' | sort && \
                  find . -type f | sort | xargs sha1sum && ./bin/tool.sh a && \
                  PYTHONPATH=\"$ROOT/lib/python\" python3 -c 'import pkg.mod; print(pkg.mod.f())' && \
                  python3 -c 'import concurrent.futures as c, os; \
                  print(sorted(c.ThreadPoolExecutor(8).map(lambda p: os.stat(p).st_size, sorted(os.listdir(\".\")))))'";
    let native = r.native(script);
    native.ok();
    let o: Out = Command::new("python3")
        .args(["-c", &filter_installer(LINUX_4_18), PERCH, "-d", "mode"])
        .args(r.perch_args())
        .args(["--mode", "fuse", "--", "sh", "-c", script])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", r.work())
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("ROOT", r.mount())
        .env("WORK", r.work())
        .current_dir(r.work())
        .output()
        .unwrap()
        .into();
    assert_eq!(o.ok().stdout, native.stdout, "{o}");
    assert!(
        o.stderr.contains("fuse mode: /cvmfs is perch's FUSE mount"),
        "{o}"
    );
}

/// A working directory inside the mount directory (a host that has it, as with a real
/// `/cvmfs`): the program starts there. The child enters it only after handing perch the
/// `/dev/fuse` descriptor (entering it needs the server; before, this hung), and the
/// repository it names is mounted while the program starts. A directory of a repository that
/// cannot be mounted is a one-line error after the program's start, not a hang or a rerun in
/// notify mode.
#[test]
fn the_working_directory_may_be_inside_the_mount_directory() {
    let r = Repo::standard();
    let mnt = r.dir.path().join("mnt");
    let cwd = mnt.join(&r.fqrn).join("sub");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::create_dir_all(mnt.join("down.example.org")).unwrap();
    let run = |mode: &str, dir: &Path| -> Out {
        Command::new("timeout")
            .args(["60", PERCH, "-d", "mode"])
            .args(r.perch_args())
            .arg("--mount-dir")
            .arg(&mnt)
            .args(["--mode", mode, "--", "sh", "-c", "pwd && head -n 1 link.h"])
            .current_dir(dir)
            .output()
            .unwrap()
            .into()
    };
    let o = run("fuse", &cwd);
    assert_eq!(
        o.ok().stdout,
        format!("{}\n#define GREETING \"hello from cvmfs\"\n", cwd.display()),
        "{o}"
    );
    let o = run("auto", &mnt.join("down.example.org"));
    assert_eq!(o.code, Some(206), "{o}");
    assert_eq!(o.stdout, "", "{o}");
    assert!(
        o.stderr.lines().last().unwrap_or_default().starts_with(
            "perch: fuse mode failed after the program started: cannot enter the working directory"
        ),
        "{o}"
    );
}

/// `perch run` inside a fuse-mode job (a workflow script that calls it again) runs its program
/// directly on the job's `/cvmfs`: perch's caches are read-only there, and nothing needs doing.
#[test]
fn perch_run_inside_a_fuse_mode_job_runs_the_program_directly() {
    let r = Repo::standard().in_mode("fuse");
    let inner = r.perch_args().join(" ");
    let o = r.perch(&format!(
        "{PERCH} -d mode {inner} -- cat \"$ROOT/include/hello.h\" | head -n 1; \
         {PERCH} {inner} -- no-such-program-here; echo \"rc=$?\""
    ));
    let o = o.ok();
    assert!(o.stdout.starts_with("#define GREETING"), "{o}");
    assert!(o.stdout.ends_with("rc=127\n"), "{o}");
    assert!(
        o.stderr
            .contains("already inside a fuse-mode job: /cvmfs is perch's FUSE mount"),
        "{o}"
    );
}

/// Where the filter chain already has a seccomp listener (a container runtime or sandbox that
/// intercepts syscalls itself) and user namespaces are refused, notify mode's own listener is
/// refused with `EBUSY`: auto mode runs the job in ptrace mode, and it succeeds.
#[test]
fn auto_falls_back_to_ptrace_when_a_listener_is_already_installed() {
    let r = Repo::standard();
    let hello = format!("{}/include/hello.h", r.mount());
    let o: Out = Command::new("python3")
        .args(["-c", &filter_installer(DENY_USERNS), PERCH, "-d", "mode"])
        .args(r.perch_args())
        .args(["--", "cat", &hello])
        .env("HOLD_LISTENER", "1")
        .current_dir(r.work())
        .output()
        .unwrap()
        .into();
    assert!(o.ok().stdout.starts_with("#define GREETING"), "{o}");
    assert!(
        o.stderr.contains("notify mode: fuse mode unavailable")
            && o.stderr.contains(
                "ptrace mode: notify mode unavailable: cannot install the seccomp filter \
                 with a notification listener: EBUSY"
            ),
        "{o}"
    );
    // Forced notify mode says why it cannot run, with perch's exit code for it.
    let o: Out = Command::new("python3")
        .args(["-c", &filter_installer(DENY_USERNS), PERCH])
        .args(r.perch_args())
        .args(["--mode", "notify", "--", "cat", &hello])
        .env("HOLD_LISTENER", "1")
        .current_dir(r.work())
        .output()
        .unwrap()
        .into();
    assert_eq!(o.code, Some(206), "{o}");
}

/// A directory larger than many `readdir` and `readdirplus` replies (its children are read from
/// the catalog a page at a time, never held whole): listed exactly as natively, in every mode,
/// and a listing resumed from `telldir` continues where it stopped.
#[test]
fn a_large_directory_is_listed_whole_and_resumable() {
    let mut r = Repo::publish("big.example.org", |src| {
        let d = src.join("many");
        std::fs::create_dir(&d).unwrap();
        for i in 0..3000 {
            std::fs::write(d.join(format!("file-{i:05}")), format!("{i}\n")).unwrap();
        }
    });
    let resume = r#"perl -e '
        opendir(my $d, "$ENV{ROOT}/many") or die "$!";
        my @first = map { scalar readdir($d) } 1 .. 1500;
        my $at = telldir($d);
        my @rest1 = readdir($d);
        seekdir($d, $at);
        my @rest2 = readdir($d);
        print scalar(@first) + scalar(@rest1), " ", (join(",", @rest1) eq join(",", @rest2) ? "same" : "differ"), "\n";
    '"#;
    for mode in run_common::MODES {
        r.mode = Some(mode);
        r.same("ls -f \"$ROOT/many\" | sort | md5sum; ls -l \"$ROOT/many\" | wc -l; find \"$ROOT/many\" -type f | wc -l");
        r.same(resume);
    }
}

/// The program starts before perch has answered the kernel's `INIT`, so it may be gone (a
/// failed exec, an instant exit) before perch reads that request: the mount is then already
/// gone, and perch reports the program's status, not a failed handshake. perch runs under
/// `strace` (its own calls only, not the program's), which slows it enough that the program
/// usually wins that race (before the fix, about one run in three ended with 206).
#[test]
fn programs_that_end_at_once_keep_their_status() {
    let r = Repo::standard().in_mode("fuse");
    for i in 0..20 {
        let traced = |argv: &[&str]| -> Out {
            Command::new("strace")
                .args(["-o", "/dev/null", PERCH])
                .args(r.perch_args())
                .arg("--")
                .args(argv)
                .current_dir(r.work())
                .output()
                .unwrap()
                .into()
        };
        let o = traced(&["/nonexistent/program"]);
        assert_eq!(o.code, Some(127), "{o}");
        assert!(
            o.stderr
                .starts_with("perch: cannot execute /nonexistent/program"),
            "{o}"
        );
        let code = i % 4;
        let o = traced(&["sh", "-c", &format!("exit {code}")]);
        assert_eq!((o.code, o.stderr.as_str()), (Some(code), ""), "{o}");
    }
}
