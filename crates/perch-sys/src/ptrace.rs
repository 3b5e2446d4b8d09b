//! ptrace and `waitpid`: seize, continue, listen, registers, event messages.
//!
//! All requests for a tracee must come from the thread that seized it.

use crate::{check, check_int, Errno, Pid};

/// `PTRACE_O_*` options perch uses.
pub mod options {
    /// `PTRACE_O_TRACESYSGOOD`.
    pub const TRACESYSGOOD: u32 = 0x01;
    /// `PTRACE_O_TRACEFORK`.
    pub const TRACEFORK: u32 = 0x02;
    /// `PTRACE_O_TRACEVFORK`.
    pub const TRACEVFORK: u32 = 0x04;
    /// `PTRACE_O_TRACECLONE`.
    pub const TRACECLONE: u32 = 0x08;
    /// `PTRACE_O_TRACEEXEC`.
    pub const TRACEEXEC: u32 = 0x10;
    /// `PTRACE_O_TRACESECCOMP`.
    pub const TRACESECCOMP: u32 = 0x80;
    /// `PTRACE_O_EXITKILL`.
    pub const EXITKILL: u32 = 0x10_0000;
    /// Everything perch sets.
    pub const PERCH: u32 =
        TRACESYSGOOD | TRACEFORK | TRACEVFORK | TRACECLONE | TRACEEXEC | TRACESECCOMP | EXITKILL;
}

/// `PTRACE_EVENT_*` numbers (`status >> 16`).
pub mod event {
    /// fork
    pub const FORK: u32 = 1;
    /// vfork
    pub const VFORK: u32 = 2;
    /// clone
    pub const CLONE: u32 = 3;
    /// exec
    pub const EXEC: u32 = 4;
    /// vfork done
    pub const VFORK_DONE: u32 = 5;
    /// exit
    pub const EXIT: u32 = 6;
    /// seccomp `SECCOMP_RET_TRACE`
    pub const SECCOMP: u32 = 7;
    /// group-stop or `PTRACE_INTERRUPT` stop of a seized tracee
    pub const STOP: u32 = 128;
}

/// The registers of a stopped tracee (`struct user_regs_struct`).
pub type Regs = libc::user_regs_struct;

fn req(request: libc::c_uint, pid: Pid, addr: usize, data: usize) -> Result<libc::c_long, Errno> {
    // SAFETY: only requests whose addr/data are integers or pointers to live, correctly sized
    // buffers are passed (see the callers); the kernel validates pid and request.
    check(unsafe { libc::ptrace(request, pid.0, addr, data) })
}

/// `PTRACE_SEIZE` with `options`.
pub fn seize(pid: Pid, options: u32) -> Result<(), Errno> {
    req(libc::PTRACE_SEIZE, pid, 0, options as usize).map(drop)
}

/// `PTRACE_CONT`, delivering `signal` (0 for none).
pub fn cont(pid: Pid, signal: i32) -> Result<(), Errno> {
    req(
        libc::PTRACE_CONT,
        pid,
        0,
        usize::try_from(signal).unwrap_or(0),
    )
    .map(drop)
}

/// `PTRACE_LISTEN`: leave a seized tracee in its group-stop but let it report `SIGCONT`.
pub fn listen(pid: Pid) -> Result<(), Errno> {
    req(libc::PTRACE_LISTEN, pid, 0, 0).map(drop)
}

/// `PTRACE_INTERRUPT`.
pub fn interrupt(pid: Pid) -> Result<(), Errno> {
    req(libc::PTRACE_INTERRUPT, pid, 0, 0).map(drop)
}

/// `PTRACE_GETEVENTMSG`.
pub fn geteventmsg(pid: Pid) -> Result<u64, Errno> {
    let mut msg: libc::c_ulong = 0;
    // SAFETY: `msg` is a writable c_ulong that outlives the call, as GETEVENTMSG requires.
    check(unsafe { libc::ptrace(libc::PTRACE_GETEVENTMSG, pid.0, 0usize, &mut msg as *mut _) })?;
    Ok(msg)
}

/// `PTRACE_GETREGS`.
pub fn getregs(pid: Pid) -> Result<Regs, Errno> {
    // SAFETY: `user_regs_struct` is plain integers; all-zero is a valid value.
    let mut regs: Regs = unsafe { std::mem::zeroed() };
    // SAFETY: `regs` is a writable `user_regs_struct` that outlives the call.
    check(unsafe { libc::ptrace(libc::PTRACE_GETREGS, pid.0, 0usize, &mut regs as *mut Regs) })?;
    Ok(regs)
}

/// `PTRACE_SETREGS`.
pub fn setregs(pid: Pid, regs: &Regs) -> Result<(), Errno> {
    // SAFETY: `regs` is a readable `user_regs_struct` that outlives the call.
    check(unsafe { libc::ptrace(libc::PTRACE_SETREGS, pid.0, 0usize, regs as *const Regs) })
        .map(drop)
}

/// What `waitpid` reported.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum WaitStatus {
    /// Exited with `code`.
    Exited {
        /// Who.
        pid: Pid,
        /// Exit code.
        code: i32,
    },
    /// Killed by `signal`.
    Signaled {
        /// Who.
        pid: Pid,
        /// Signal.
        signal: i32,
        /// A core was dumped.
        core: bool,
    },
    /// A ptrace event stop (`status >> 16 != 0`): fork, clone, exec, seccomp, group-stop…
    Event {
        /// Who.
        pid: Pid,
        /// `PTRACE_EVENT_*`.
        event: u32,
        /// `WSTOPSIG`.
        signal: i32,
    },
    /// A syscall stop (`SIGTRAP | 0x80`).
    SyscallStop {
        /// Who.
        pid: Pid,
    },
    /// A signal-delivery stop.
    Stopped {
        /// Who.
        pid: Pid,
        /// The signal about to be delivered.
        signal: i32,
    },
    /// Continued (only with `WCONTINUED`).
    Continued {
        /// Who.
        pid: Pid,
    },
}

impl WaitStatus {
    /// The thread the status is about.
    pub fn pid(&self) -> Pid {
        match *self {
            WaitStatus::Exited { pid, .. }
            | WaitStatus::Signaled { pid, .. }
            | WaitStatus::Event { pid, .. }
            | WaitStatus::SyscallStop { pid }
            | WaitStatus::Stopped { pid, .. }
            | WaitStatus::Continued { pid } => pid,
        }
    }
}

/// Decodes a raw wait status.
pub fn decode_status(pid: Pid, status: i32) -> WaitStatus {
    if libc::WIFEXITED(status) {
        WaitStatus::Exited {
            pid,
            code: libc::WEXITSTATUS(status),
        }
    } else if libc::WIFSIGNALED(status) {
        WaitStatus::Signaled {
            pid,
            signal: libc::WTERMSIG(status),
            core: libc::WCOREDUMP(status),
        }
    } else if libc::WIFSTOPPED(status) {
        let signal = libc::WSTOPSIG(status);
        let event = u32::try_from((status >> 16) & 0xffff).unwrap_or(0);
        if event != 0 {
            WaitStatus::Event { pid, event, signal }
        } else if signal == (libc::SIGTRAP | 0x80) {
            WaitStatus::SyscallStop { pid }
        } else {
            WaitStatus::Stopped { pid, signal }
        }
    } else {
        WaitStatus::Continued { pid }
    }
}

/// `waitpid(-1, __WALL | __WNOTHREAD)`: the next event of a child or tracee of the calling
/// thread only (so concurrent supervisors in one process do not steal each other's events).
/// `ECHILD` when there is none left.
pub fn wait_own() -> Result<WaitStatus, Errno> {
    wait_flags(-1, 0)
}

/// Like [`wait_own`] without blocking: `Ok(None)` when no tracee has an event pending.
pub fn try_wait_own() -> Result<Option<WaitStatus>, Errno> {
    try_wait_pid(Pid(-1))
}

/// Like [`wait_own`] for one pid, without blocking: `Ok(None)` when nothing is pending.
pub fn try_wait_pid(pid: Pid) -> Result<Option<WaitStatus>, Errno> {
    match wait_flags(pid.0, libc::WNOHANG) {
        Ok(WaitStatus::Exited { pid: Pid(0), .. }) => Ok(None),
        other => other.map(Some),
    }
}

fn wait_flags(pid: i32, extra: i32) -> Result<WaitStatus, Errno> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a writable c_int that outlives the call.
        let r =
            unsafe { libc::waitpid(pid, &mut status, libc::__WALL | libc::__WNOTHREAD | extra) };
        match check_int(r) {
            Ok(0) => {
                return Ok(WaitStatus::Exited {
                    pid: Pid(0),
                    code: 0,
                })
            }
            Ok(p) => return Ok(decode_status(Pid(p), status)),
            Err(e) if e == Errno::EINTR => continue,
            Err(e) => return Err(e),
        }
    }
}
