//! The fd relay: a process that shares perch's descriptor table and does nothing else, so that
//! a traced program can open one of perch's files through `/proc/<relay>/fd/N` while perch
//! itself stays non-dumpable (ptrace mode's answers are reopened by the program that way).
//!
//! Why a separate process: the kernel lets a process open another's `/proc/<pid>/fd/N` only
//! when it may read that process (same user and dumpable). A dumpable perch would also let the
//! program write perch's memory (`/proc/<perch>/mem`, `process_vm_writev`) or take its
//! descriptors (`pidfd_getfd`), and so write the cache through perch. The relay is dumpable
//! instead, but holds nothing a program could use:
//! - its memory is its own (a copy made at the clone, before any program runs);
//! - it runs under a seccomp filter that lets it only wait (`pause`) and exit, so a program
//!   that writes its memory to take it over can make no other call; every other call kills it;
//! - all signals but `SIGKILL` and `SIGSTOP` are blocked, so a terminal's Ctrl-C, sent to the
//!   whole process group, does not end it;
//! - it dies with the thread that started it (`PR_SET_PDEATHSIG`) and with [`FdRelay`]'s drop.
//!
//! What it still allows: a read-only open of any of perch's files through its `/proc` fd
//! directory (files of the same user), which the caller restricts as it does any magic link;
//! and `pidfd_getfd` on it, which the caller must refuse to programs.

use std::time::{Duration, Instant};

use crate::spawn::SockFilter;
use crate::{check, last_errno, Errno, Pid};

/// `AUDIT_ARCH_X86_64`.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `SECCOMP_RET_ALLOW`.
const RET_ALLOW: u32 = 0x7fff_0000;
/// `SECCOMP_RET_KILL_PROCESS`.
const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// `SECCOMP_SET_MODE_FILTER`.
const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
/// `BPF_LD | BPF_W | BPF_ABS`.
const LD_W_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
const JEQ_K: u16 = 0x15;
/// `BPF_RET | BPF_K`.
const RET_K: u16 = 0x06;
/// How long [`FdRelay::start`] waits for the relay to reach its wait.
const READY_WITHIN: Duration = Duration::from_secs(2);

/// The relay process; killed and reaped on drop.
#[derive(Debug)]
pub struct FdRelay {
    pid: Pid,
}

/// The relay's filter: `pause`, signal return, restart and exit; anything else kills it.
fn filter() -> Vec<SockFilter> {
    let nr = |n: libc::c_long| u32::try_from(n).unwrap_or(u32::MAX);
    let allowed = [
        nr(libc::SYS_pause),
        nr(libc::SYS_rt_sigreturn),
        nr(libc::SYS_restart_syscall),
        nr(libc::SYS_exit),
        nr(libc::SYS_exit_group),
    ];
    let ld = |k: u32| SockFilter {
        code: LD_W_ABS,
        jt: 0,
        jf: 0,
        k,
    };
    let ret = |k: u32| SockFilter {
        code: RET_K,
        jt: 0,
        jf: 0,
        k,
    };
    // seccomp_data: nr at offset 0, arch at offset 4.
    let mut f = vec![
        ld(4),
        SockFilter {
            code: JEQ_K,
            jt: 1,
            jf: 0,
            k: AUDIT_ARCH_X86_64,
        },
        ret(RET_KILL_PROCESS),
        ld(0),
    ];
    let n = allowed.len();
    for (i, &k) in allowed.iter().enumerate() {
        // Jump to the final ALLOW, which comes after the remaining tests and the KILL.
        let jt = u8::try_from(n - i).unwrap_or(0);
        f.push(SockFilter {
            code: JEQ_K,
            jt,
            jf: 0,
            k,
        });
    }
    f.push(ret(RET_KILL_PROCESS));
    f.push(ret(RET_ALLOW));
    f
}

/// The relay's body: block signals, die with the parent, become dumpable, filter, wait.
/// Runs in a copy of a multi-threaded process: system calls on prepared memory only.
fn relay_main(prog: &libc::sock_fprog, parent: libc::pid_t) -> ! {
    // SAFETY: each call takes integers or pointers to initialised locals and to `prog`, which
    // lives in this process's copy of the parent's memory; none allocates or takes a lock.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
        let ok = libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == 0
            // The parent may have died before the line above: then nothing would kill us.
            && libc::getppid() == parent
            && libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) == 0
            && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                0 as libc::c_ulong,
                prog as *const libc::sock_fprog,
            ) == 0;
        if !ok {
            libc::_exit(1);
        }
        loop {
            libc::syscall(libc::SYS_pause);
        }
    }
}

impl FdRelay {
    /// Starts the relay as a child of the calling thread (which should live as long as the
    /// relay is needed) and waits until it runs under its filter.
    pub fn start() -> Result<FdRelay, Errno> {
        let insns = filter();
        let prog = libc::sock_fprog {
            len: u16::try_from(insns.len()).unwrap_or(0),
            filter: insns.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: getpid takes no arguments.
        let me = unsafe { libc::getpid() };
        // SAFETY: clone without CLONE_VM is a fork that shares the descriptor table; the child
        // branch runs `relay_main`, which makes system calls only on memory prepared above and
        // never returns.
        let pid = check(unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::c_ulong::try_from(libc::CLONE_FILES | libc::SIGCHLD).unwrap_or(0),
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        })?;
        if pid == 0 {
            relay_main(&prog, me);
        }
        let relay = FdRelay {
            pid: Pid(libc::pid_t::try_from(pid).map_err(|_| Errno::EINVAL)?),
        };
        relay.wait_ready()?;
        Ok(relay)
    }

    /// The relay's pid: a program opens perch's fd N as `/proc/<pid>/fd/N`.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Waits until the relay waits in `pause`, that is, runs under its filter; fails when it
    /// exited (a step of its setup failed) or takes too long.
    fn wait_ready(&self) -> Result<(), Errno> {
        let syscall_file = format!("/proc/{}/syscall", self.pid.0);
        let pause = format!("{} ", libc::SYS_pause);
        let start = Instant::now();
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: `status` is a writable c_int that outlives the call.
            let r = unsafe { libc::waitpid(self.pid.0, &mut status, libc::WNOHANG) };
            if r == self.pid.0 {
                return Err(Errno::ECHILD);
            }
            if r < 0 {
                return Err(last_errno());
            }
            if std::fs::read_to_string(&syscall_file).is_ok_and(|s| s.starts_with(&pause)) {
                return Ok(());
            }
            if start.elapsed() > READY_WITHIN {
                return Err(Errno::new(libc::ETIMEDOUT));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

impl Drop for FdRelay {
    fn drop(&mut self) {
        // SAFETY: kill and waitpid on our own child; `status` outlives the call.
        unsafe {
            libc::kill(self.pid.0, libc::SIGKILL);
            let mut status: libc::c_int = 0;
            libc::waitpid(self.pid.0, &mut status, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn status_field(pid: Pid, name: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/status", pid.0))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            .unwrap_or_default()
    }

    #[test]
    fn the_relay_shares_the_fd_table_and_is_filtered_and_dumpable() {
        let relay = FdRelay::start().unwrap();
        let pid = relay.pid();
        // A file opened after the relay started is reachable through the relay's fd table.
        let f = tempfile_in_tmp();
        let link = std::fs::read_link(format!("/proc/{}/fd/{}", pid.0, f.as_raw_fd())).unwrap();
        assert_eq!(
            link,
            std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap()
        );
        assert_eq!(status_field(pid, "Seccomp:"), "2");
        assert_eq!(status_field(pid, "NoNewPrivs:"), "1");
        // The terminal's and the job's signals are blocked.
        let blocked = u64::from_str_radix(&status_field(pid, "SigBlk:"), 16).unwrap();
        for sig in [
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGTSTP,
        ] {
            assert_ne!(
                blocked & (1 << (sig - 1)),
                0,
                "signal {sig} not blocked: {blocked:x}"
            );
        }
        // Dumpable: its own user may read its /proc fd links (the read_link above) and mem.
        assert!(std::fs::File::open(format!("/proc/{}/mem", pid.0)).is_ok());
        drop(relay);
        assert!(!std::path::Path::new(&format!("/proc/{}/fd", pid.0)).exists());
    }

    /// A child under the relay's filter: `exit_group(7)` exits with 7, `getpid` kills it.
    #[test]
    fn the_filter_allows_exiting_and_kills_any_other_call() {
        let insns = filter();
        let prog = libc::sock_fprog {
            len: u16::try_from(insns.len()).unwrap(),
            filter: insns.as_ptr() as *mut libc::sock_filter,
        };
        for (call, expect_signal) in [(libc::SYS_exit_group, false), (libc::SYS_getpid, true)] {
            // SAFETY: the child makes system calls only, on memory prepared before the fork.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0);
            if pid == 0 {
                // SAFETY: as above.
                unsafe {
                    libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                    let p = &prog as *const libc::sock_fprog;
                    if libc::syscall(libc::SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, p) != 0 {
                        libc::_exit(3);
                    }
                    libc::syscall(call, 7);
                    libc::_exit(0);
                }
            }
            let mut status = 0;
            // SAFETY: our own child; `status` outlives the call.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            if expect_signal {
                assert!(libc::WIFSIGNALED(status), "{status:x}");
                assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);
            } else {
                assert!(libc::WIFEXITED(status), "{status:x}");
                assert_eq!(libc::WEXITSTATUS(status), 7);
            }
        }
    }

    fn tempfile_in_tmp() -> std::fs::File {
        let path = std::env::temp_dir().join(format!("perch-relay-test-{}", std::process::id()));
        let f = std::fs::File::create(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }
}
