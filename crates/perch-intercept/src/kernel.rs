//! The kernel calls a notification makes, behind a trait so their order can be tested.

use std::os::fd::BorrowedFd;

use perch_sys::notify::{self, Notif, NotifId};
use perch_syscalls::{Errno, Pid};

/// The kernel interface used to receive and answer notifications and to touch tracee memory.
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
}

/// A [`Kernel`] double: logs every call and answers from a script.
#[cfg(any(test, feature = "test-util"))]
pub mod recording {
    use super::*;
    use perch_syscalls::{FakeMemory, TraceeView};
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
    }

    impl RecordingKernel {
        /// A kernel whose tracee has `memory` and is still waiting.
        pub fn new(memory: FakeMemory) -> Self {
            RecordingKernel {
                log: Mutex::new(Vec::new()),
                memory,
                valid: Ok(()),
                addfd_result: Ok(3),
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
    }
}
