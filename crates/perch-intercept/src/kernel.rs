//! The kernel calls the supervisor and the ptrace loop make, behind a trait so their order can
//! be tested without processes.

use std::os::fd::BorrowedFd;

use perch_sys::notify::{self, Notif, NotifId};
pub use perch_sys::ptrace::{Regs, WaitStatus};
use perch_syscalls::{Errno, Pid};

/// The kernel interface used to receive and answer notifications, to drive tracees with ptrace
/// and to touch tracee memory. Ptrace methods are only called from the thread that seized the
/// tracees.
pub trait Kernel: Send + Sync {
    /// `SECCOMP_IOCTL_NOTIF_RECV`.
    fn recv(&self, listener: BorrowedFd<'_>) -> Result<Notif, Errno>;
    /// `SECCOMP_IOCTL_NOTIF_SEND`.
    fn send(
        &self,
        listener: BorrowedFd<'_>,
        id: NotifId,
        val: i64,
        error: i32,
        flags: u32,
    ) -> Result<(), Errno>;
    /// `SECCOMP_IOCTL_NOTIF_ID_VALID`.
    fn id_valid(&self, listener: BorrowedFd<'_>, id: NotifId) -> Result<(), Errno>;
    /// `SECCOMP_IOCTL_NOTIF_ADDFD`.
    fn addfd(
        &self,
        listener: BorrowedFd<'_>,
        id: NotifId,
        fd: BorrowedFd<'_>,
        newfd_flags: u32,
        flags: u32,
    ) -> Result<i32, Errno>;
    /// Reads tracee memory (short reads at the end of a mapping).
    fn read_memory(&self, pid: Pid, addr: u64, buf: &mut [u8]) -> Result<usize, Errno>;
    /// Writes all of `data` into tracee memory.
    fn write_memory(&self, pid: Pid, addr: u64, data: &[u8]) -> Result<(), Errno>;
    /// The next event of a tracee of the calling thread (`waitpid(-1, __WALL|__WNOTHREAD)`).
    fn wait(&self) -> Result<WaitStatus, Errno>;
    /// Like [`Kernel::wait`] without blocking: `Ok(None)` when nothing is pending.
    fn try_wait(&self) -> Result<Option<WaitStatus>, Errno> {
        Ok(None)
    }
    /// `PTRACE_CONT` delivering `signal` (0: none).
    fn cont(&self, pid: Pid, signal: i32) -> Result<(), Errno>;
    /// `PTRACE_LISTEN`.
    fn listen(&self, pid: Pid) -> Result<(), Errno>;
    /// `PTRACE_GETEVENTMSG`.
    fn geteventmsg(&self, pid: Pid) -> Result<u64, Errno>;
    /// `PTRACE_GETREGS`.
    fn getregs(&self, pid: Pid) -> Result<Regs, Errno>;
    /// `PTRACE_SETREGS`.
    fn setregs(&self, pid: Pid, regs: &Regs) -> Result<(), Errno>;
    /// `kill(pid, signal)`.
    fn kill(&self, pid: Pid, signal: i32) -> Result<(), Errno>;
}

/// The real kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxKernel;

impl Kernel for LinuxKernel {
    fn recv(&self, listener: BorrowedFd<'_>) -> Result<Notif, Errno> {
        notify::recv(listener)
    }
    fn send(
        &self,
        listener: BorrowedFd<'_>,
        id: NotifId,
        val: i64,
        error: i32,
        flags: u32,
    ) -> Result<(), Errno> {
        notify::send(listener, id, val, error, flags)
    }
    fn id_valid(&self, listener: BorrowedFd<'_>, id: NotifId) -> Result<(), Errno> {
        notify::id_valid(listener, id)
    }
    fn addfd(
        &self,
        listener: BorrowedFd<'_>,
        id: NotifId,
        fd: BorrowedFd<'_>,
        newfd_flags: u32,
        flags: u32,
    ) -> Result<i32, Errno> {
        notify::addfd(listener, id, fd, newfd_flags, flags)
    }
    fn read_memory(&self, pid: Pid, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        perch_sys::mem::read_memory(pid, addr, buf)
    }
    fn write_memory(&self, pid: Pid, addr: u64, data: &[u8]) -> Result<(), Errno> {
        perch_sys::mem::write_all(pid, addr, data)
    }
    fn wait(&self) -> Result<WaitStatus, Errno> {
        perch_sys::ptrace::wait_own()
    }
    fn try_wait(&self) -> Result<Option<WaitStatus>, Errno> {
        perch_sys::ptrace::try_wait_own()
    }
    fn cont(&self, pid: Pid, signal: i32) -> Result<(), Errno> {
        perch_sys::ptrace::cont(pid, signal)
    }
    fn listen(&self, pid: Pid) -> Result<(), Errno> {
        perch_sys::ptrace::listen(pid)
    }
    fn geteventmsg(&self, pid: Pid) -> Result<u64, Errno> {
        perch_sys::ptrace::geteventmsg(pid)
    }
    fn getregs(&self, pid: Pid) -> Result<Regs, Errno> {
        perch_sys::ptrace::getregs(pid)
    }
    fn setregs(&self, pid: Pid, regs: &Regs) -> Result<(), Errno> {
        perch_sys::ptrace::setregs(pid, regs)
    }
    fn kill(&self, pid: Pid, signal: i32) -> Result<(), Errno> {
        perch_sys::misc::kill(pid, signal)
    }
}

/// A [`Kernel`] double: logs every call and answers from a script.
#[cfg(any(test, feature = "test-util"))]
pub mod recording {
    use super::*;
    use perch_syscalls::{FakeMemory, TraceeView};
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// One logged call.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Op {
        /// `recv`.
        Recv,
        /// `send(id, val, error, flags)`.
        Send(u64, i64, i32, u32),
        /// `id_valid(id)`.
        IdValid(u64),
        /// `addfd(id, newfd_flags, flags)`.
        AddFd(u64, u32, u32),
        /// `read_memory(pid, addr, len)`.
        Read(i32, u64, usize),
        /// `write_memory(pid, addr, bytes)`.
        Write(i32, u64, Vec<u8>),
        /// `wait()`.
        Wait,
        /// `cont(pid, signal)`.
        Cont(i32, i32),
        /// `listen(pid)`.
        Listen(i32),
        /// `geteventmsg(pid)`.
        GetEventMsg(i32),
        /// `getregs(pid)`.
        GetRegs(i32),
        /// `setregs(pid, [orig_rax, rax, rdi, rsi, rdx])`.
        SetRegs(i32, [u64; 5]),
        /// `kill(pid, signal)`.
        Kill(i32, i32),
    }

    /// Logs calls; reads come from `memory`; `id_valid` answers `valid`; `addfd` returns
    /// `addfd_result`.
    #[derive(Debug)]
    pub struct RecordingKernel {
        /// Calls so far.
        pub log: Mutex<Vec<Op>>,
        /// The tracee's memory.
        pub memory: FakeMemory,
        /// What `id_valid` returns.
        pub valid: Result<(), Errno>,
        /// What `addfd` returns.
        pub addfd_result: Result<i32, Errno>,
        /// What successive `wait` calls return; `ECHILD` once empty.
        pub waits: Mutex<VecDeque<Result<WaitStatus, Errno>>>,
        /// What `getregs` returns.
        pub regs: Regs,
        /// What `geteventmsg` returns.
        pub eventmsg: u64,
    }

    impl RecordingKernel {
        /// A kernel whose tracee has `memory` and is still waiting.
        pub fn new(memory: FakeMemory) -> Self {
            RecordingKernel {
                log: Mutex::new(Vec::new()),
                memory,
                valid: Ok(()),
                addfd_result: Ok(3),
                waits: Mutex::new(VecDeque::new()),
                regs: zero_regs(),
                eventmsg: 0,
            }
        }

        /// Queues `wait` results.
        pub fn script_waits(&self, list: impl IntoIterator<Item = WaitStatus>) {
            if let Ok(mut w) = self.waits.lock() {
                w.extend(list.into_iter().map(Ok));
            }
        }

        /// The calls so far.
        pub fn ops(&self) -> Vec<Op> {
            self.log.lock().map(|l| l.clone()).unwrap_or_default()
        }

        fn push(&self, op: Op) {
            if let Ok(mut l) = self.log.lock() {
                l.push(op);
            }
        }
    }

    impl Kernel for RecordingKernel {
        fn recv(&self, _: BorrowedFd<'_>) -> Result<Notif, Errno> {
            self.push(Op::Recv);
            Err(Errno::ENOENT)
        }
        fn send(
            &self,
            _: BorrowedFd<'_>,
            id: NotifId,
            val: i64,
            error: i32,
            flags: u32,
        ) -> Result<(), Errno> {
            self.push(Op::Send(id.0, val, error, flags));
            Ok(())
        }
        fn id_valid(&self, _: BorrowedFd<'_>, id: NotifId) -> Result<(), Errno> {
            self.push(Op::IdValid(id.0));
            self.valid
        }
        fn addfd(
            &self,
            _: BorrowedFd<'_>,
            id: NotifId,
            _: BorrowedFd<'_>,
            newfd_flags: u32,
            flags: u32,
        ) -> Result<i32, Errno> {
            self.push(Op::AddFd(id.0, newfd_flags, flags));
            self.addfd_result
        }
        fn read_memory(&self, pid: Pid, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
            self.push(Op::Read(pid.0, addr, buf.len()));
            self.memory.read_memory(addr, buf)
        }
        fn write_memory(&self, pid: Pid, addr: u64, data: &[u8]) -> Result<(), Errno> {
            self.push(Op::Write(pid.0, addr, data.to_vec()));
            Ok(())
        }
        fn wait(&self) -> Result<WaitStatus, Errno> {
            self.push(Op::Wait);
            self.waits
                .lock()
                .ok()
                .and_then(|mut w| w.pop_front())
                .unwrap_or(Err(Errno::ECHILD))
        }
        fn try_wait(&self) -> Result<Option<WaitStatus>, Errno> {
            self.wait().map(Some)
        }
        fn cont(&self, pid: Pid, signal: i32) -> Result<(), Errno> {
            self.push(Op::Cont(pid.0, signal));
            Ok(())
        }
        fn listen(&self, pid: Pid) -> Result<(), Errno> {
            self.push(Op::Listen(pid.0));
            Ok(())
        }
        fn geteventmsg(&self, pid: Pid) -> Result<u64, Errno> {
            self.push(Op::GetEventMsg(pid.0));
            Ok(self.eventmsg)
        }
        fn getregs(&self, pid: Pid) -> Result<Regs, Errno> {
            self.push(Op::GetRegs(pid.0));
            Ok(self.regs)
        }
        fn setregs(&self, pid: Pid, regs: &Regs) -> Result<(), Errno> {
            self.push(Op::SetRegs(
                pid.0,
                [regs.orig_rax, regs.rax, regs.rdi, regs.rsi, regs.rdx],
            ));
            Ok(())
        }
        fn kill(&self, pid: Pid, signal: i32) -> Result<(), Errno> {
            self.push(Op::Kill(pid.0, signal));
            Ok(())
        }
    }

    /// All-zero registers.
    pub fn zero_regs() -> Regs {
        Regs {
            r15: 0,
            r14: 0,
            r13: 0,
            r12: 0,
            rbp: 0,
            rbx: 0,
            r11: 0,
            r10: 0,
            r9: 0,
            r8: 0,
            rax: 0,
            rcx: 0,
            rdx: 0,
            rsi: 0,
            rdi: 0,
            orig_rax: 0,
            rip: 0,
            cs: 0,
            eflags: 0,
            rsp: 0,
            ss: 0,
            fs_base: 0,
            gs_base: 0,
            ds: 0,
            es: 0,
            fs: 0,
            gs: 0,
        }
    }
}
