//! The fork-to-exec child: `PR_SET_NO_NEW_PRIVS`, install the seccomp filter with a listener,
//! hand the listener to the parent over the socket pair (`SCM_RIGHTS`), wait for the parent's
//! go (it seizes us with ptrace meanwhile), then exec.
//!
//! The listener travels as ancillary data ([`crate::handshake`]) rather than being taken with
//! `pidfd_getfd`, which container seccomp profiles (Docker's and containerd's defaults) allow
//! only with `CAP_SYS_PTRACE`.
//!
//! Everything the child needs is prepared before `fork` ([`SpawnPlan`]); between `fork` and
//! `execve` the child only makes async-signal-safe calls and never allocates, so spawning from a
//! multi-threaded supervisor is safe.

use std::ffi::{CString, OsStr};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use crate::handshake::{self, errno_now, exit as child_exit, report, Channel};
use crate::{misc, Errno, Pid};

/// One BPF instruction as `seccomp(2)` takes it: perch-bpf's `Insn` is `repr(C)` with the fields
/// of `struct sock_filter`, in its order.
pub use perch_bpf::Insn as SockFilter;

// The casts to `*mut libc::sock_filter` below rely on this.
const _: () = {
    assert!(std::mem::size_of::<SockFilter>() == std::mem::size_of::<libc::sock_filter>());
    assert!(std::mem::align_of::<SockFilter>() == std::mem::align_of::<libc::sock_filter>());
    assert!(std::mem::offset_of!(SockFilter, jt) == std::mem::offset_of!(libc::sock_filter, jt));
    assert!(std::mem::offset_of!(SockFilter, jf) == std::mem::offset_of!(libc::sock_filter, jf));
    assert!(std::mem::offset_of!(SockFilter, k) == std::mem::offset_of!(libc::sock_filter, k));
};

/// `SECCOMP_SET_MODE_FILTER`.
pub(crate) const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`.
const FLAG_NEW_LISTENER: libc::c_ulong = 1 << 3;
/// `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` (Linux 5.19).
const FLAG_WAIT_KILLABLE_RECV: libc::c_ulong = 1 << 5;

const MSG_LISTENER: u32 = 1;
const MSG_SETUP_ERROR: u32 = 2;
const MSG_EXEC_ERROR: u32 = 3;
/// The filter is installed without a listener (ptrace backend).
const MSG_FILTERED: u32 = 4;

/// Where the child failed before running the program.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    /// `prctl(PR_SET_NO_NEW_PRIVS)`.
    NoNewPrivs,
    /// `seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER)`.
    Seccomp,
    /// Talking to the parent.
    Handshake,
}

impl Stage {
    fn code(self) -> i32 {
        match self {
            Stage::NoNewPrivs => 1,
            Stage::Seccomp => 2,
            Stage::Handshake => 3,
        }
    }
    fn from_code(c: i32) -> Stage {
        match c {
            1 => Stage::NoNewPrivs,
            2 => Stage::Seccomp,
            _ => Stage::Handshake,
        }
    }
}

/// The child's failure before exec.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SetupError {
    /// What failed.
    pub stage: Stage,
    /// Why.
    pub errno: Errno,
}

/// Everything the child needs, prepared before `fork`.
pub struct SpawnPlan {
    _strings: Vec<CString>,
    candidates: Vec<*const libc::c_char>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    filter: Vec<SockFilter>,
    listener: bool,
}

fn cstring(s: &OsStr) -> Result<CString, Errno> {
    CString::new(s.as_bytes()).map_err(|_| Errno::EINVAL)
}

impl SpawnPlan {
    /// `candidates` are the paths tried in order with `execve` (like `execvp` over `PATH`; the
    /// search goes on after `ENOENT`, `ENOTDIR` and `EACCES`); `env` is `KEY=VALUE` strings.
    /// `EINVAL` when a string contains a NUL byte, or when there is no candidate, no argv, or an
    /// empty or too long filter.
    pub fn new<S: AsRef<OsStr>>(
        candidates: &[S],
        argv: &[S],
        env: &[S],
        filter: Vec<SockFilter>,
    ) -> Result<SpawnPlan, Errno> {
        if candidates.is_empty() || argv.is_empty() || filter.is_empty() || filter.len() > 4096 {
            return Err(Errno::EINVAL);
        }
        let mut strings = Vec::new();
        let mut ptrs = |list: &[S]| -> Result<Vec<*const libc::c_char>, Errno> {
            let mut out = Vec::with_capacity(list.len() + 1);
            for s in list {
                let c = cstring(s.as_ref())?;
                // The CString's heap buffer does not move when the CString is moved.
                out.push(c.as_ptr());
                strings.push(c);
            }
            out.push(std::ptr::null());
            Ok(out)
        };
        let candidates = ptrs(candidates)?;
        let argv = ptrs(argv)?;
        let envp = ptrs(env)?;
        Ok(SpawnPlan {
            _strings: strings,
            candidates,
            argv,
            envp,
            filter,
            listener: true,
        })
    }

    /// Installs the filter without `SECCOMP_FILTER_FLAG_NEW_LISTENER` (a filter of
    /// `SECCOMP_RET_TRACE`/`ERRNO`/`ALLOW` only, for kernels or containers without seccomp
    /// notification); the parent waits with [`Child::filtered`] instead of [`Child::listener`].
    pub fn without_listener(mut self) -> SpawnPlan {
        self.listener = false;
        self
    }
}

/// The spawned child, before and after exec.
#[derive(Debug)]
pub struct Child {
    pid: Pid,
    sock: Channel,
}

/// The listener the child installed.
#[derive(Debug)]
pub struct Listener {
    /// The seccomp notification fd (close-on-exec).
    pub fd: OwnedFd,
    /// Whether `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` was accepted.
    pub wait_killable: bool,
}

/// Forks the child described by `plan`. The child stops before exec until [`Child::release`].
pub fn spawn(plan: &SpawnPlan) -> Result<Child, Errno> {
    // `child_main` makes async-signal-safe calls only, on memory prepared before the fork.
    let (pid, sock) = handshake::fork_with_channel(plan, child_main)?;
    Ok(Child { pid, sock })
}

/// The child between fork and exec: async-signal-safe calls only, no allocation.
fn child_main(plan: &SpawnPlan, sock: RawFd) -> ! {
    handshake::reset_signals();
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        report(sock, MSG_SETUP_ERROR, Stage::NoNewPrivs.code(), errno_now());
        child_exit(126);
    }
    let prog = libc::sock_fprog {
        len: u16::try_from(plan.filter.len()).unwrap_or(0),
        filter: plan.filter.as_ptr() as *mut libc::sock_filter,
    };
    if !plan.listener {
        // SAFETY: `prog` points at `plan.filter`, which lives for the whole call; `SockFilter`
        // has the layout of `struct sock_filter`.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                0 as libc::c_ulong,
                &prog as *const libc::sock_fprog,
            )
        };
        if r != 0 {
            report(sock, MSG_SETUP_ERROR, Stage::Seccomp.code(), errno_now());
            child_exit(126);
        }
        report(sock, MSG_FILTERED, 0, 0);
        if !handshake::wait_go(sock) {
            child_exit(126);
        }
        let err = exec_first(&plan.candidates, &plan.argv, &plan.envp);
        report(sock, MSG_EXEC_ERROR, 0, err);
        child_exit(127)
    }
    let mut killable = 1;
    // SAFETY: `prog` points at `plan.filter`, which lives for the whole call; `SockFilter` has the
    // layout of `struct sock_filter`.
    let mut fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            FLAG_NEW_LISTENER | FLAG_WAIT_KILLABLE_RECV,
            &prog as *const libc::sock_fprog,
        )
    };
    if fd < 0 && errno_now() == libc::EINVAL {
        killable = 0;
        // SAFETY: as above, without the flag older kernels refuse.
        fd = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                FLAG_NEW_LISTENER,
                &prog as *const libc::sock_fprog,
            )
        };
    }
    let Ok(fd) = i32::try_from(fd) else {
        report(sock, MSG_SETUP_ERROR, Stage::Seccomp.code(), errno_now());
        child_exit(126);
    };
    if fd < 0 {
        report(sock, MSG_SETUP_ERROR, Stage::Seccomp.code(), errno_now());
        child_exit(126);
    }
    if !handshake::send_with_fd(sock, MSG_LISTENER, fd, killable, fd) {
        report(sock, MSG_SETUP_ERROR, Stage::Handshake.code(), errno_now());
        child_exit(126);
    }
    if !handshake::wait_go(sock) {
        child_exit(126);
    }
    // SAFETY: `fd` is the listener this process owns; the parent holds its own duplicate.
    unsafe { libc::close(fd) };
    let err = exec_first(&plan.candidates, &plan.argv, &plan.envp);
    report(sock, MSG_EXEC_ERROR, 0, err);
    child_exit(127)
}

/// In a fork child: `execve` each of `candidates` (NULL-terminated) in turn as `execvp` does
/// (`ENOENT`/`ENOTDIR` try the next, `EACCES` is kept for the end, any other error stops);
/// returns the errno to report when none could be executed. Async-signal-safe.
pub(crate) fn exec_first(
    candidates: &[*const libc::c_char],
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> i32 {
    let mut err = libc::ENOENT;
    let mut saw_eacces = false;
    for &path in candidates {
        if path.is_null() {
            break;
        }
        // SAFETY: the callers pass NUL-terminated strings and NULL-terminated arrays that they
        // own and keep alive until exec replaces this process.
        unsafe { libc::execve(path, argv.as_ptr(), envp.as_ptr()) };
        match errno_now() {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => saw_eacces = true,
            e => {
                err = e;
                saw_eacces = false;
                break;
            }
        }
    }
    if saw_eacces {
        err = libc::EACCES;
    }
    err
}

impl Child {
    /// The child's pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Waits for the child to install its filter and receives the listener it sends along
    /// (`SCM_RIGHTS`).
    pub fn listener(&self) -> Result<Listener, SetupError> {
        let handshake = |errno| SetupError {
            stage: Stage::Handshake,
            errno,
        };
        let (msg, fd) = self.sock.read_msg_with_fd().map_err(handshake)?;
        match msg {
            Some((MSG_LISTENER, _, killable)) => Ok(Listener {
                fd: fd.ok_or(handshake(Errno::new(libc::EPROTO)))?,
                wait_killable: killable != 0,
            }),
            Some((MSG_SETUP_ERROR, stage, errno)) => Err(SetupError {
                stage: Stage::from_code(stage),
                errno: Errno::new(errno),
            }),
            _ => Err(handshake(Errno::EPIPE)),
        }
    }

    /// Waits for the child to install a filter planned [`SpawnPlan::without_listener`].
    pub fn filtered(&self) -> Result<(), SetupError> {
        let handshake = |errno| SetupError {
            stage: Stage::Handshake,
            errno,
        };
        match self.sock.read_msg().map_err(handshake)? {
            Some((MSG_FILTERED, _, _)) => Ok(()),
            Some((MSG_SETUP_ERROR, stage, errno)) => Err(SetupError {
                stage: Stage::from_code(stage),
                errno: Errno::new(errno),
            }),
            _ => Err(handshake(Errno::EPIPE)),
        }
    }

    /// Lets the child go on to exec.
    pub fn release(&self) -> Result<(), Errno> {
        self.sock.go()
    }

    /// After the child has exited: the errno of its failed exec, if that is why it exited.
    pub fn exec_error(&self) -> Option<Errno> {
        match self.sock.leftover() {
            Some((MSG_EXEC_ERROR, _, errno)) => Some(Errno::new(errno)),
            _ => None,
        }
    }

    /// Kills the child and reaps it (for failures before the supervisor takes over).
    pub fn kill_and_reap(&self) {
        let _ = misc::kill(self.pid, libc::SIGKILL);
        let mut status = 0;
        // SAFETY: `status` is a writable c_int that outlives the call.
        unsafe { libc::waitpid(self.pid.0, &mut status, libc::__WALL) };
    }
}
