//! The interceptor against a fake namespace, with real programs on the real kernel.

mod common;

use std::sync::atomic::Ordering;

use common::{assert_ok, run, Fixture};
use perch_intercept::{Error, ExitStatus, Interceptor};

fn python() -> &'static str {
    for p in ["/usr/bin/python3", "/usr/local/bin/python3"] {
        if std::path::Path::new(p).exists() {
            return p;
        }
    }
    panic!("python3 is required (Debian package python3)");
}

#[test]
fn cat_a_virtual_file() {
    let f = Fixture::new();
    let o = run(&f.fs, &["cat", "/fakefs/a.txt", "/fakefs/sub/c.txt"]);
    assert_ok(&o);
    assert_eq!(o.stdout, "hello\ndeep\n");
    assert!(f.fs.injected.load(Ordering::Relaxed) >= 2);
    assert!(o.stats.notifications() > 2);
}

#[test]
fn missing_virtual_file_is_enoent() {
    let f = Fixture::new();
    let o = run(&f.fs, &["cat", "/fakefs/nope"]);
    assert_eq!(o.status, ExitStatus::Exited(1));
    assert!(
        o.stderr.contains("No such file or directory"),
        "{}",
        o.stderr
    );
}

#[test]
fn ls_la_lists_the_injected_directory() {
    let f = Fixture::new();
    let o = run(&f.fs, &["ls", "-la", "/fakefs"]);
    assert_ok(&o);
    for name in ["a.txt", "b.txt", "sub", "script.sh", "bin", "link -> a.txt"] {
        assert!(o.stdout.contains(name), "{name} missing in\n{}", o.stdout);
    }
    // a.txt is 6 bytes: the size came from the stat answer.
    assert!(
        o.stdout
            .lines()
            .any(|l| l.ends_with(" a.txt") && l.contains(" 6 ")),
        "{}",
        o.stdout
    );
    assert!(f.fs.stats.load(Ordering::Relaxed) > 0);
}

#[test]
fn stat_and_readlink_answers() {
    let f = Fixture::new();
    let o = run(
        &f.fs,
        &["sh", "-c", "stat -c '%s %F' /fakefs/a.txt /fakefs/sub && readlink /fakefs/link && test -e /fakefs/b.txt && echo exists"],
    );
    assert_ok(&o);
    assert_eq!(o.stdout, "6 regular file\n4096 directory\na.txt\nexists\n");
}

#[test]
fn cd_into_virtual_directory() {
    let f = Fixture::new();
    let o = run(
        &f.fs,
        &[
            "bash",
            "-c",
            "cd /fakefs && cat a.txt && cd sub && cat c.txt",
        ],
    );
    assert_ok(&o);
    assert_eq!(o.stdout, "hello\ndeep\n");
    assert!(f.fs.rewritten.load(Ordering::Relaxed) >= 1);
}

#[test]
fn sh_runs_a_virtual_script() {
    let f = Fixture::new();
    let o = run(&f.fs, &["sh", "/fakefs/script.sh", "x", "y"]);
    assert_ok(&o);
    assert_eq!(o.stdout, "script-ran x y\n");
}

#[test]
fn exec_a_virtual_script_directly() {
    let f = Fixture::new();
    let o = run(&f.fs, &["/fakefs/script.sh", "z"]);
    assert_ok(&o);
    assert_eq!(o.stdout, "script-ran z\n");
}

#[test]
fn exec_a_virtual_binary() {
    let f = Fixture::new();
    let o = run(&f.fs, &["sh", "-c", "/fakefs/bin/true && echo ran"]);
    assert_ok(&o);
    assert_eq!(o.stdout, "ran\n");
    assert!(f.fs.rewritten.load(Ordering::Relaxed) >= 1);
    // As the main program itself (its very first exec is traced too).
    let status = Interceptor::new()
        .run(&["/fakefs/bin/true".into()], &common::env(), f.fs.clone())
        .unwrap();
    assert_eq!(status, ExitStatus::Exited(0));
}

#[test]
fn writes_are_read_only_file_system() {
    let f = Fixture::new();
    let o = run(&f.fs, &["touch", "/fakefs/new"]);
    assert_eq!(o.status, ExitStatus::Exited(1));
    assert!(o.stderr.contains("Read-only file system"), "{}", o.stderr);
    let o = run(&f.fs, &["mkdir", "/fakefs/d"]);
    assert_eq!(o.status, ExitStatus::Exited(1));
    assert!(o.stderr.contains("Read-only file system"), "{}", o.stderr);
    let o = run(&f.fs, &["rm", "-f", "/fakefs/a.txt"]);
    assert_ne!(o.status, ExitStatus::Exited(0));
    assert!(o.stderr.contains("Read-only file system"), "{}", o.stderr);
    assert!(f.root().join("a.txt").exists());
    assert!(!f.root().join("new").exists());
}

#[test]
fn cloexec_is_honoured() {
    let f = Fixture::new();
    // The shell opens fd 3 without O_CLOEXEC: the child sees it. Python opens with O_CLOEXEC:
    // its exec'd child does not.
    let script = r#"
import os, subprocess, sys
fd = os.open("/fakefs/a.txt", os.O_RDONLY | os.O_CLOEXEC)
assert os.get_inheritable(fd) is False
fd2 = os.open("/fakefs/b.txt", os.O_RDONLY)
os.set_inheritable(fd2, True)
r = subprocess.run(["/bin/sh", "-c", "ls /proc/self/fd/%d >/dev/null 2>&1 && echo open1 || echo closed1; cat <&%d" % (fd, fd2)],
                   close_fds=False, capture_output=True, text=True)
print(r.stdout, end="")
"#;
    let o = run(&f.fs, &[python(), "-c", script]);
    assert_ok(&o);
    assert_eq!(o.stdout, "closed1\nworld\n");
}

#[test]
fn python_threads_read_virtual_files() {
    let f = Fixture::new();
    let script = r#"
import threading
errors = []
def work(i):
    try:
        for _ in range(50):
            with open("/fakefs/a.txt") as f:
                assert f.read() == "hello\n"
            with open("/fakefs/sub/c.txt") as f:
                assert f.read() == "deep\n"
    except Exception as e:
        errors.append(e)
ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
for t in ts: t.start()
for t in ts: t.join()
print("errors", errors)
"#;
    let o = run(&f.fs, &[python(), "-c", script]);
    assert_ok(&o);
    assert_eq!(o.stdout, "errors []\n");
    assert!(f.fs.injected.load(Ordering::Relaxed) >= 400);
}

#[test]
fn fork_exec_loop() {
    let f = Fixture::new();
    let o = run(
        &f.fs,
        &[
            "bash",
            "-c",
            "for i in $(seq 100); do /bin/true; done; echo done",
        ],
    );
    assert_ok(&o);
    assert_eq!(o.stdout, "done\n");
}

#[test]
fn exit_codes_and_signal_deaths() {
    let f = Fixture::new();
    let o = run(&f.fs, &["sh", "-c", "exit 42"]);
    assert_eq!(o.status, ExitStatus::Exited(42));
    let o = run(&f.fs, &["sh", "-c", "kill -9 $$"]);
    assert_eq!(
        o.status,
        ExitStatus::Signaled {
            signal: 9,
            core_dumped: false
        }
    );
    assert_eq!(o.status.code(), 137);
    let o = run(&f.fs, &["sh", "-c", "kill -TERM $$"]);
    assert_eq!(o.status.code(), 128 + 15);
}

#[test]
fn stopped_and_continued_child() {
    let f = Fixture::new();
    let script = r#"
import os, signal
pid = os.fork()
if pid == 0:
    os.kill(os.getpid(), signal.SIGSTOP)
    os._exit(7)
_, st = os.waitpid(pid, os.WUNTRACED)
print("stopped", os.WIFSTOPPED(st), os.WSTOPSIG(st) == signal.SIGSTOP)
os.kill(pid, signal.SIGCONT)
_, st = os.waitpid(pid, 0)
print("exited", os.WEXITSTATUS(st))
"#;
    let o = run(&f.fs, &[python(), "-c", script]);
    assert_ok(&o);
    assert_eq!(o.stdout, "stopped True True\nexited 7\n");
    // The shell way: a child stops itself, the parent waits until it is stopped, continues it.
    let o = run(
        &f.fs,
        &[
            "bash",
            "-c",
            r#"sh -c 'kill -STOP $$; echo resumed' & p=$!
               until grep -q '^State:.*[tT]' /proc/$p/status; do :; done
               kill -CONT $p; wait $p; echo status $?"#,
        ],
    );
    assert_ok(&o);
    assert_eq!(o.stdout, "resumed\nstatus 0\n");
}

#[test]
fn signals_pass_through_to_handlers() {
    let f = Fixture::new();
    let o = run(
        &f.fs,
        &[
            "bash",
            "-c",
            "trap 'echo got-usr1' USR1; kill -USR1 $$; echo after",
        ],
    );
    assert_ok(&o);
    assert_eq!(o.stdout, "got-usr1\nafter\n");
}

#[test]
fn ptrace_is_eperm_and_io_uring_is_enosys() {
    let f = Fixture::new();
    let script = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
r = libc.syscall(101, 0, 0, 0, 0)          # ptrace(PTRACE_TRACEME)
print("ptrace", r, os.strerror(ctypes.get_errno()))
params = ctypes.create_string_buffer(120)
r = libc.syscall(425, 4, params)           # io_uring_setup(4, &params)
print("io_uring_setup", r, os.strerror(ctypes.get_errno()))
"#;
    let o = run(&f.fs, &[python(), "-c", script]);
    assert_ok(&o);
    assert_eq!(
        o.stdout,
        "ptrace -1 Operation not permitted\nio_uring_setup -1 Function not implemented\n"
    );
}

#[test]
fn exec_failure_is_a_typed_error() {
    let f = Fixture::new();
    let e = Interceptor::new()
        .run(&["/nonexistent/prog".into()], &common::env(), f.fs.clone())
        .unwrap_err();
    assert!(
        matches!(e, Error::Exec { ref errno, .. } if *errno == perch_intercept::Errno::ENOENT),
        "{e:?}"
    );
    let e = Interceptor::new()
        .run(
            &["no-such-command-xyz".into()],
            &common::env(),
            f.fs.clone(),
        )
        .unwrap_err();
    assert!(matches!(e, Error::Exec { .. }), "{e:?}");
    assert!(matches!(
        Interceptor::new().run(&[], &[], f.fs.clone()),
        Err(Error::EmptyCommand)
    ));
}

#[test]
fn leftover_background_processes_are_killed() {
    let f = Fixture::new();
    let o = run(&f.fs, &["sh", "-c", "sleep 30 & echo $! ; exit 3"]);
    assert_eq!(o.status, ExitStatus::Exited(3));
    let pid: i32 = o.stdout.trim().parse().unwrap();
    // Killed and reaped by the interceptor: no such process, or at most a zombie of init.
    let state = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    assert!(state.is_empty() || state.contains("State:\tZ"), "{state}");
}

#[test]
fn handler_panic_is_eio_not_a_hang() {
    use perch_intercept::{Handler, Notification};
    struct Panicky;
    impl Handler for Panicky {
        fn on_syscall(&self, n: Notification<'_>) {
            if let Some((_, p)) = n.call().path() {
                if n.read_path(p).is_ok_and(|p| p == b"/panic") {
                    panic!("test panic");
                }
            }
            n.continue_unchecked();
        }
    }
    let script = "cat /panic 2>/dev/null; echo $? >/dev/null";
    let handler = std::sync::Arc::new(Panicky);
    let o = common::run_with(Interceptor::new(), handler, &["/bin/sh", "-c", script]);
    assert_eq!(o.status, ExitStatus::Exited(0));
    assert_eq!(o.stats.panics(), 1);
}

#[test]
fn a_blocked_handler_does_not_stop_other_calls() {
    use perch_intercept::{Handler, Notification};
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::Duration;

    /// Opening `/fakefs/slow.txt` waits until `/fakefs/b.txt` has been opened by another
    /// process (at most 20 s, then EIO): only works if another supervisor thread serves it.
    struct Slow {
        inner: Arc<common::FakeFs>,
        marker: std::path::PathBuf,
        fast_done: Mutex<bool>,
        cv: Condvar,
    }
    impl Handler for Slow {
        fn on_syscall(&self, n: Notification<'_>) {
            let path = n.call().path().and_then(|(_, p)| n.read_path(p).ok());
            match path.as_deref() {
                Some(b"/fakefs/slow.txt") => {
                    std::fs::write(&self.marker, "").unwrap();
                    // A handler that waits says so (as perch's downloads do).
                    let done = perch_intercept::blocking(|| {
                        let done = self.fast_done.lock().unwrap();
                        let (done, _) = self
                            .cv
                            .wait_timeout_while(done, Duration::from_secs(20), |d| !*d)
                            .unwrap();
                        *done
                    });
                    if !done {
                        return n.error(perch_intercept::Errno::EIO);
                    }
                }
                Some(b"/fakefs/b.txt") => {
                    *self.fast_done.lock().unwrap() = true;
                    self.cv.notify_all();
                }
                _ => {}
            }
            self.inner.on_syscall(n)
        }
        fn on_trace_path(
            &self,
            call: &perch_intercept::TracedCall,
        ) -> perch_intercept::TraceAction {
            self.inner.on_trace_path(call)
        }
    }

    let f = Fixture::new();
    std::fs::write(f.root().join("slow.txt"), "slow\n").unwrap();
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("slow-started");
    let slow = Arc::new(Slow {
        inner: f.fs.clone(),
        marker: marker.clone(),
        fast_done: Mutex::new(false),
        cv: Condvar::new(),
    });
    let out = marker_dir.path().join("out");
    let script = format!(
        "cat /fakefs/slow.txt > {out}.slow & while [ ! -e {m} ]; do :; done; cat /fakefs/b.txt; wait; cat {out}.slow",
        out = out.display(),
        m = marker.display()
    );
    let status = Interceptor::new()
        .workers(2)
        .run(
            &["/bin/sh".into(), "-c".into(), script.into()],
            &common::env(),
            slow,
        )
        .unwrap();
    assert_eq!(status, ExitStatus::Exited(0));
    assert_eq!(
        std::fs::read_to_string(format!("{}.slow", out.display())).unwrap(),
        "slow\n"
    );
}

#[test]
fn calls_are_answered_concurrently_by_the_pool() {
    use perch_intercept::{Handler, Notification};
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::Duration;

    const AT_ONCE: usize = 4;
    /// An open of `/fakefs/a.txt` is answered only once AT_ONCE of them are being handled at
    /// the same time (EIO after 20 s): passes only if AT_ONCE supervisor threads answer at once.
    /// The handler waits inside `perch_intercept::blocking`, as perch's downloads do: on
    /// Linux ≥ 6.6 that is what brings the pool's spare threads in.
    struct Together {
        inner: Arc<common::FakeFs>,
        waiting: Mutex<usize>,
        cv: Condvar,
    }
    impl Handler for Together {
        fn on_syscall(&self, n: Notification<'_>) {
            let path = n.call().path().and_then(|(_, p)| n.read_path(p).ok());
            if path.as_deref() == Some(b"/fakefs/a.txt") {
                let all = perch_intercept::blocking(|| {
                    let mut waiting = self.waiting.lock().unwrap();
                    *waiting += 1;
                    self.cv.notify_all();
                    let (waiting, _) = self
                        .cv
                        .wait_timeout_while(waiting, Duration::from_secs(20), |w| *w < AT_ONCE)
                        .unwrap();
                    *waiting >= AT_ONCE
                });
                if !all {
                    return n.error(perch_intercept::Errno::EIO);
                }
            }
            self.inner.on_syscall(n)
        }
        fn on_trace_path(
            &self,
            call: &perch_intercept::TracedCall,
        ) -> perch_intercept::TraceAction {
            self.inner.on_trace_path(call)
        }
    }

    let f = Fixture::new();
    let together = Arc::new(Together {
        inner: f.fs.clone(),
        waiting: Mutex::new(0),
        cv: Condvar::new(),
    });
    let out = tempfile::tempdir().unwrap();
    let script = format!(
        "for i in 1 2 3 4; do cat /fakefs/a.txt > {o}/$i & done; wait; cat {o}/1 {o}/2 {o}/3 {o}/4",
        o = out.path().display()
    );
    let status = Interceptor::new()
        .workers(AT_ONCE + 1)
        .run(
            &["/bin/sh".into(), "-c".into(), script.into()],
            &common::env(),
            together,
        )
        .unwrap();
    assert_eq!(status, ExitStatus::Exited(0));
    for i in 1..=4 {
        let got = std::fs::read_to_string(out.path().join(i.to_string())).unwrap();
        assert_eq!(got, "hello\n", "cat {i}");
    }
}

#[test]
fn posix_spawn_vfork_of_a_virtual_binary() {
    let f = Fixture::new();
    // CPython uses vfork/posix_spawn (CLONE_VM|CLONE_VFORK) here: the exec path is rewritten in
    // memory shared with the suspended parent.
    let script = r#"
import os, subprocess
pid = os.posix_spawn("/fakefs/bin/true", ["true"], dict(os.environ))
_, st = os.waitpid(pid, 0)
r = subprocess.run(["/fakefs/script.sh", "v"], close_fds=False, capture_output=True, text=True)
print(os.waitstatus_to_exitcode(st), r.returncode, r.stdout, end="")
"#;
    let o = run(&f.fs, &[python(), "-c", script]);
    assert_ok(&o);
    assert_eq!(o.stdout, "0 0 script-ran v\n");
}

#[test]
fn exec_from_a_non_leader_thread() {
    let f = Fixture::new();
    let script = r#"
import os, threading, time
threading.Thread(target=lambda: os.execv("/fakefs/script.sh", ["script.sh", "from-thread"])).start()
time.sleep(30)
print("not replaced")
"#;
    let o = run(&f.fs, &[python(), "-c", script]);
    assert_ok(&o);
    assert_eq!(o.stdout, "script-ran from-thread\n");
}

#[test]
fn nested_interception_is_a_typed_error() {
    if std::env::var_os("PERCH_NESTED_TEST").is_some() {
        // Inside an interceptor: only one seccomp listener per filter chain.
        let f = Fixture::new();
        let e = Interceptor::new()
            .run(&["/bin/true".into()], &common::env(), f.fs.clone())
            .unwrap_err();
        assert!(
            matches!(e, Error::Seccomp { errno } if errno == perch_intercept::Errno::EBUSY),
            "{e:?}"
        );
        std::fs::write(std::env::var_os("PERCH_NESTED_TEST").unwrap(), "nested-ok").unwrap();
        return;
    }
    let f = Fixture::new();
    let exe = std::env::current_exe().unwrap();
    let marker = tempfile::tempdir().unwrap();
    let ok = marker.path().join("ok");
    let cmd = format!(
        "PERCH_NESTED_TEST={} exec {} --exact nested_interception_is_a_typed_error --test-threads=1",
        ok.display(),
        exe.display()
    );
    let o = run(&f.fs, &["sh", "-c", &cmd]);
    assert_ok(&o);
    assert_eq!(std::fs::read_to_string(&ok).unwrap(), "nested-ok");
}

#[test]
fn dirfd_relative_calls_can_be_classified() {
    use perch_intercept::{Handler, Notification};
    use std::sync::{Arc, Mutex};

    /// Records what the directory of each relative `openat` is, then defers to the fake fs.
    struct Classify {
        inner: Arc<common::FakeFs>,
        seen: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
    }
    impl Handler for Classify {
        fn on_syscall(&self, n: Notification<'_>) {
            if let perch_intercept::Call::Openat { dirfd, .. } = *n.call() {
                if let Some(Ok((_, path))) = n.path() {
                    if path == b"c.txt" {
                        let dir = n.fd_path(dirfd).unwrap();
                        self.seen.lock().unwrap().push((dir, path));
                    }
                }
            }
            self.inner.on_syscall(n)
        }
        fn on_trace_path(
            &self,
            call: &perch_intercept::TracedCall,
        ) -> perch_intercept::TraceAction {
            self.inner.on_trace_path(call)
        }
    }

    let f = Fixture::new();
    let h = Arc::new(Classify {
        inner: f.fs.clone(),
        seen: Mutex::new(Vec::new()),
    });
    let script = r#"
import os
d = os.open("/fakefs/sub", os.O_RDONLY | os.O_DIRECTORY)
fd = os.open("c.txt", os.O_RDONLY, dir_fd=d)
assert os.read(fd, 100) == b"deep\n"
os.chdir("/fakefs/sub")
assert open("c.txt").read() == "deep\n"
"#;
    let status = Interceptor::new()
        .run(
            &[python().into(), "-c".into(), script.into()],
            &common::env(),
            h.clone(),
        )
        .unwrap();
    assert_eq!(status, ExitStatus::Exited(0));
    let real_sub = f.root().join("sub");
    let real_sub = real_sub.to_str().unwrap().as_bytes().to_vec();
    let seen = h.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            (real_sub.clone(), b"c.txt".to_vec()),
            (real_sub, b"c.txt".to_vec())
        ]
    );
}

#[test]
fn script_with_a_virtual_interpreter() {
    let f = Fixture::new();
    std::fs::copy("/bin/sh", f.root().join("bin/sh")).unwrap();
    std::fs::write(
        f.root().join("vscript.sh"),
        "#!/fakefs/bin/sh -e\necho \"vscript $0 $*\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        f.root().join("vscript.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let o = run(&f.fs, &["/fakefs/vscript.sh", "a", "b c"]);
    assert_ok(&o);
    assert_eq!(o.stdout, "vscript /fakefs/vscript.sh a b c\n");
    // Through the shell's own exec too, from a child process.
    let o = run(&f.fs, &["sh", "-c", "/fakefs/vscript.sh x; echo $?"]);
    assert_ok(&o);
    assert_eq!(o.stdout, "vscript /fakefs/vscript.sh x\n0\n");
}

#[test]
fn the_run_ends_while_an_untraced_process_still_holds_the_filter() {
    // A process made with CLONE_UNTRACED is not traced, so it is not killed when the main
    // program exits, and it keeps the seccomp filter: supervisor threads waiting in
    // NOTIF_RECV are not woken by the kernel then (the filter has a user left). The run must
    // still end at once, not when that process exits.
    let f = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
CLONE_UNTRACED, SIGCHLD, SYS_clone = 0x00800000, 17, 56
pid = libc.syscall(SYS_clone, CLONE_UNTRACED | SIGCHLD, 0, 0, 0, 0)
if pid == 0:
    time.sleep(60)
    os._exit(0)
assert pid > 0, ctypes.get_errno()
with open(sys.argv[1], "w") as f:
    f.write(str(pid))
"#;
    let started = std::time::Instant::now();
    let o = run(&f.fs, &[python(), "-c", script, pidfile.to_str().unwrap()]);
    let took = started.elapsed();
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
    // Not a child of this test: kill it by pid.
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    assert_ok(&o);
    assert!(alive, "the untraced process should have outlived the run");
    assert!(
        took < std::time::Duration::from_secs(30),
        "the run waited for the untraced process: {took:?}"
    );
}

/// Checks that the notify pool that ran is the one this kernel should run: the epoll pool
/// when `PERCH_NO_SYNC_WAKEUP` asks for it, threads waiting in `NOTIF_RECV` from Linux 6.6
/// (sync wake-up); before 6.6 either (a distribution kernel may have the flag backported).
fn assert_expected_pool(pool: &str) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    if std::env::var_os("PERCH_NO_SYNC_WAKEUP").is_some() {
        assert_eq!(pool, "epoll");
    } else if (major, minor) >= (6, 6) {
        assert_eq!(pool, "receivers", "Linux {major}.{minor}");
    } else {
        assert!(pool == "epoll" || pool == "receivers", "{pool}");
    }
}

#[test]
fn one_program_thread_never_switches_the_pool_to_parallel() {
    // A single thread's next call comes only after the answer to its last one, so no
    // notification ever waits behind another: the answers stay on the caller's CPU.
    let f = Fixture::new();
    let script = "import os\nfor i in range(500): os.stat('/fakefs/a.txt')\n";
    let o = run(&f.fs, &[python(), "-c", script]);
    assert_ok(&o);
    assert!(o.stats.notifications() >= 500);
    assert_expected_pool(o.stats.pool());
    assert_eq!(o.stats.parallel(), 0, "switched to parallel mode");
}

#[test]
fn calls_waiting_behind_another_switch_the_pool_to_parallel() {
    use perch_intercept::{Handler, Notification};
    use std::sync::Arc;
    use std::time::Duration;

    /// Every open of /fakefs/a.txt is answered after a second, outside `blocking`: the one
    /// receiver of a one-thread pool is busy, and the other programs' calls queue behind it.
    struct Slow(Arc<common::FakeFs>);
    impl Handler for Slow {
        fn on_syscall(&self, n: Notification<'_>) {
            let path = n.call().path().and_then(|(_, p)| n.read_path(p).ok());
            if path.as_deref() == Some(b"/fakefs/a.txt") {
                std::thread::sleep(Duration::from_secs(1));
            }
            self.0.on_syscall(n)
        }
        fn on_trace_path(
            &self,
            call: &perch_intercept::TracedCall,
        ) -> perch_intercept::TraceAction {
            self.0.on_trace_path(call)
        }
    }

    let f = Fixture::new();
    let script = "for i in 1 2 3; do cat /fakefs/a.txt >/dev/null & done; wait";
    let slow = Arc::new(Slow(f.fs.clone()));
    let o = common::run_with(
        Interceptor::new().workers(1),
        slow,
        &["/bin/sh", "-c", script],
    );
    assert_ok(&o);
    let stats = &o.stats;
    assert_expected_pool(stats.pool());
    if stats.pool() == "receivers" {
        assert!(stats.parallel() >= 1, "never switched to parallel mode");
    } else {
        assert_eq!(stats.parallel(), 0, "the epoll pool has no modes");
    }
}
