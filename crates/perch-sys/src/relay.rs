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
//! - it runs under a seccomp filter the caller gives, which should let it only wait (`pause`)
//!   and exit and kill it on any other call, so that a program that writes its memory to take
//!   it over can make no call with perch's descriptors;
//! - all signals but `SIGKILL` and `SIGSTOP` are blocked, so a terminal's Ctrl-C, sent to the
//!   whole process group, does not end it;
//! - it dies with the thread that started it (`PR_SET_PDEATHSIG`) and with [`FdRelay`]'s drop.
//!
//! What it still allows: a read-only open of any of perch's files through its `/proc` fd
//! directory (files of the same user), which the caller restricts as it does any magic link;
//! and `pidfd_getfd` on it, which the caller must refuse to programs.

use std::time::{Duration, Instant};

use crate::spawn::{SockFilter, SECCOMP_SET_MODE_FILTER};
use crate::{check, last_errno, Errno, Pid};

/// How long [`FdRelay::start`] waits for the relay to reach its wait.
const READY_WITHIN: Duration = Duration::from_secs(2);

/// The relay process; killed and reaped on drop.
#[derive(Debug)]
pub struct FdRelay {
    pid: Pid,
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
    /// relay is needed) under `filter`, and waits until it runs under it. `filter` must allow
    /// `pause` (the relay's wait), `rt_sigreturn`, `restart_syscall`, `exit` and `exit_group`.
    pub fn start(filter: &[SockFilter]) -> Result<FdRelay, Errno> {
        let prog = libc::sock_fprog {
            len: u16::try_from(filter.len()).map_err(|_| Errno::EINVAL)?,
            filter: filter.as_ptr() as *mut libc::sock_filter,
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
    use perch_bpf::{Action, Policy};
    use std::os::fd::AsRawFd;

    fn status_field(pid: Pid, name: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/status", pid.0))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            .unwrap_or_default()
    }

    fn compiled(p: &Policy) -> Vec<SockFilter> {
        p.compile().unwrap().insns().to_vec()
    }

    #[test]
    fn the_relay_shares_the_fd_table_and_is_filtered_and_dumpable() {
        // Any filter will do here: perch-intercept's own (wait and exit only) is checked there.
        let relay = FdRelay::start(&compiled(&Policy::new(Action::Allow))).unwrap();
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

    /// A filter under which the relay cannot reach its wait: `start` fails, and no relay is
    /// left running unfiltered.
    #[test]
    fn a_relay_that_cannot_wait_under_its_filter_is_refused() {
        let mut p = Policy::new(Action::Allow);
        p.set(u32::try_from(libc::SYS_pause).unwrap(), Action::KillProcess);
        assert_eq!(FdRelay::start(&compiled(&p)).unwrap_err(), Errno::ECHILD);
    }

    fn tempfile_in_tmp() -> std::fs::File {
        let path = std::env::temp_dir().join(format!("perch-relay-test-{}", std::process::id()));
        let f = std::fs::File::create(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }
}
