//! `Notification`: one notified syscall, answered exactly once.

use std::cell::Cell;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use perch_sys::notify::{Notif, NotifId, ADDFD_FLAG_SEND, FLAG_CONTINUE};
use perch_syscalls::{Call, DirFd, Errno, PathPtr, Pid, TraceeView, PATH_MAX};

use crate::kernel::Kernel;
use crate::procfd::ProcFds;
use crate::Stats;

/// One syscall of a tracee waiting for an answer.
///
/// Read its arguments with [`call`](Self::call) and [`read_path`](Self::read_path) (which checks
/// that the caller is still waiting, so the memory read was really its), then answer with one of
/// the methods taking `self`. Dropping it unanswered answers `EIO` and logs an error: a tracee
/// never waits forever.
pub struct Notification<'a> {
    kernel: &'a dyn Kernel,
    listener: BorrowedFd<'a>,
    notif: Notif,
    call: Call,
    stats: &'a Stats,
    procfs: &'a ProcFds,
    answered: bool,
    /// When the caller was last seen waiting, if nothing of it was read since: a write
    /// just after such a check needs no second one ([`write_memory`](Self::write_memory)).
    checked: Cell<Option<Instant>>,
}

/// How long a validity check covers a following write. A check right before the write leaves
/// the same kind of window (the caller could go between the two), so this only has to be
/// short beside the time a pid takes to be reused; a handler that waited (a download) checks
/// again.
const CHECK_COVERS: Duration = Duration::from_micros(200);

impl<'a> Notification<'a> {
    pub(crate) fn new(
        kernel: &'a dyn Kernel,
        listener: BorrowedFd<'a>,
        notif: Notif,
        stats: &'a Stats,
        procfs: &'a ProcFds,
    ) -> Self {
        let nr = u64::from(u32::from_ne_bytes(notif.nr.to_ne_bytes()));
        Notification {
            kernel,
            listener,
            call: Call::decode(nr, notif.args),
            notif,
            stats,
            procfs,
            answered: false,
            checked: Cell::new(None),
        }
    }

    /// The calling thread (in perch's pid namespace). For logging and `/proc/<pid>/…` look-ups
    /// only while the notification is pending: pids are reused.
    pub fn pid(&self) -> Pid {
        self.notif.pid
    }

    /// The decoded call.
    pub fn call(&self) -> &Call {
        &self.call
    }

    /// The raw arguments (prefer [`call`](Self::call)).
    pub fn raw_args(&self) -> [u64; 6] {
        self.notif.args
    }

    /// Whether the caller is still waiting for this answer.
    pub fn is_valid(&self) -> bool {
        self.kernel.id_valid(self.listener, self.notif.id).is_ok()
    }

    fn check_valid(&self) -> Result<(), Errno> {
        self.kernel
            .id_valid(self.listener, self.notif.id)
            .map_err(|_| {
                self.checked.set(None);
                Errno::ENOENT
            })?;
        self.checked.set(Some(Instant::now()));
        Ok(())
    }

    /// Marks that something of the caller is about to be read, so the last validity check no
    /// longer covers a write ([`write_memory`](Self::write_memory)). This type's own reads
    /// call it; a handler that reads the caller by another route (its `/proc/<pid>/…` files)
    /// must call it too.
    pub fn reading(&self) {
        self.checked.set(None);
    }

    /// Checks that the caller still waits for this answer (`ENOENT` if not), so that what was
    /// read with the `_unverified` methods was really its memory and its fds: pids are reused.
    pub fn verify(&self) -> Result<(), Errno> {
        self.check_valid()
    }

    /// Reads a path argument (at most `PATH_MAX` bytes, without the NUL), then checks the caller
    /// is still waiting: `ENOENT` if it is gone, `EFAULT`/`ENAMETOOLONG` like the kernel.
    pub fn read_path(&self, path: PathPtr) -> Result<Vec<u8>, Errno> {
        let bytes = self.read_cstr(path.0, PATH_MAX);
        self.check_valid()?;
        bytes
    }

    /// The call's first path argument, read (see [`read_path`](Self::read_path)), with the
    /// directory it is resolved against; `None` when the call takes no path.
    pub fn path(&self) -> Option<Result<(DirFd, Vec<u8>), Errno>> {
        let (dir, ptr) = self.call.path()?;
        Some(self.read_path(ptr).map(|p| (dir, p)))
    }

    /// As [`path`](Self::path) without the validity check: for deciding to `CONTINUE`, where a
    /// wrong answer is harmless (the kernel re-reads the arguments, and a gone caller gets
    /// nothing). Call [`verify`](Self::verify) before acting on it otherwise. Saves an ioctl on
    /// the hot path.
    pub fn path_unverified(&self) -> Option<Result<(DirFd, Vec<u8>), Errno>> {
        let (dir, ptr) = self.call.path()?;
        Some(self.read_cstr(ptr.0, PATH_MAX).map(|p| (dir, p)))
    }

    /// What a directory fd of the caller refers to: `/proc/<pid>/cwd` for `AT_FDCWD`, else
    /// `/proc/<pid>/fd/<fd>` (the kernel's path of the open file, so an fd injected for a virtual
    /// object shows its real path). Checked against the notification afterwards, so the answer
    /// is the caller's. `ENOENT` if the caller is gone, `EBADF` for a closed fd.
    pub fn fd_path(&self, fd: DirFd) -> Result<Vec<u8>, Errno> {
        let target = self.fd_path_unverified(fd);
        self.check_valid()?;
        target
    }

    /// As [`fd_path`](Self::fd_path) without the validity check (see
    /// [`path_unverified`](Self::path_unverified)).
    pub fn fd_path_unverified(&self, fd: DirFd) -> Result<Vec<u8>, Errno> {
        self.reading();
        self.procfs.fd_path(self.notif.pid.0, fd)
    }

    /// An `O_PATH` fd of perch's on the object the caller's fd (cwd for `AT_FDCWD`) refers to,
    /// for a call perch makes itself relative to it. Unverified, like
    /// [`fd_path_unverified`](Self::fd_path_unverified).
    pub fn open_fd_unverified(&self, fd: DirFd) -> Result<std::os::fd::OwnedFd, Errno> {
        self.reading();
        self.procfs.open_fd(self.notif.pid.0, fd)
    }

    /// Its credentials as against perch's, and its umask (one read of its `/proc` status).
    pub fn creds(&self) -> perch_syscalls::CallerCreds {
        self.reading();
        crate::procfd::ProcFds::creds(self.notif.pid.0)
    }

    /// Reads `len` bytes at `addr` (short at the end of a mapping), then checks validity.
    pub fn read_bytes(&self, addr: u64, len: usize) -> Result<Vec<u8>, Errno> {
        let mut buf = vec![0u8; len];
        self.reading();
        let n = self.kernel.read_memory(self.notif.pid, addr, &mut buf);
        self.check_valid()?;
        buf.truncate(n?);
        Ok(buf)
    }

    /// Writes `data` at `addr` in the caller (a stat buffer, a readlink result…) before the
    /// answer. Checks first that the caller still waits, so the pid still names it, unless a
    /// check with nothing read after it was made just now (within [`CHECK_COVERS`]).
    pub fn write_memory(&self, addr: u64, data: &[u8]) -> Result<(), Errno> {
        let fresh = self
            .checked
            .get()
            .is_some_and(|t| t.elapsed() < CHECK_COVERS);
        if !fresh {
            self.check_valid()?;
        }
        self.kernel.write_memory(self.notif.pid, addr, data)
    }

    /// The call printed like strace, strings read from the caller.
    pub fn display(&self) -> String {
        self.call.display(self).to_string()
    }

    fn send(mut self, val: i64, error: i32, flags: u32) {
        self.answered = true;
        self.send_raw(val, error, flags);
    }

    fn send_raw(&self, val: i64, error: i32, flags: u32) {
        if let Err(e) = self
            .kernel
            .send(self.listener, self.notif.id, val, error, flags)
        {
            // ENOENT: the caller was killed meanwhile; nothing is waiting.
            self.stats.answer_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(pid = self.notif.pid.0, errno = ?e, "answer not delivered");
        }
    }

    /// Lets the kernel run the syscall itself (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`). The kernel
    /// re-reads the arguments, which the caller may have changed meanwhile: use this only when
    /// the answer would not matter for a virtual object.
    pub fn continue_unchecked(self) {
        self.send(0, 0, FLAG_CONTINUE);
    }

    /// Fails the call with `errno`.
    pub fn error(self, errno: Errno) {
        self.send(0, -errno.raw(), 0);
    }

    /// Makes the call return `value` (must not be a negative errno value; use [`error`](Self::error)).
    pub fn ret(self, value: i64) {
        self.send(value, 0, 0);
    }

    /// Installs `file` as a new fd in the caller and makes it the call's result, atomically
    /// (`SECCOMP_IOCTL_NOTIF_ADDFD` with `SECCOMP_ADDFD_FLAG_SEND`), with `O_CLOEXEC` when
    /// `cloexec`. If that fails (say `EMFILE`), the call fails with the same errno.
    pub fn inject_fd(mut self, file: OwnedFd, cloexec: bool) {
        let newfd_flags = if cloexec {
            u32::try_from(libc::O_CLOEXEC).unwrap_or(0)
        } else {
            0
        };
        match self.kernel.addfd(
            self.listener,
            self.notif.id,
            file.as_fd(),
            newfd_flags,
            ADDFD_FLAG_SEND,
        ) {
            Ok(_) => self.answered = true,
            Err(e) if e == Errno::ENOENT => self.answered = true,
            Err(e) => self.send(0, -e.raw(), 0),
        }
    }

    /// The notification id (for logs).
    pub fn id(&self) -> NotifId {
        self.notif.id
    }
}

impl TraceeView for Notification<'_> {
    fn read_memory(&self, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        self.reading();
        self.kernel.read_memory(self.notif.pid, addr, buf)
    }
}

impl Drop for Notification<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        self.answered = true;
        let count = self.stats.unanswered.fetch_add(1, Ordering::Relaxed) + 1;
        // A tracee can hit a buggy path in a loop: log the first few, then rarely.
        if count > 8 && !count.is_power_of_two() {
            // Counted in Stats::unanswered; reported by the caller at exit.
        } else if std::thread::panicking() {
            tracing::error!(
                pid = self.notif.pid.0,
                call = %self.call,
                count,
                "handler panicked; the call fails with EIO"
            );
        } else {
            tracing::error!(
                pid = self.notif.pid.0,
                call = %self.call,
                count,
                "handler dropped a notification without answering; the call fails with EIO"
            );
        }
        self.send_raw(0, -Errno::EIO.raw(), 0);
    }
}

impl std::fmt::Debug for Notification<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notification")
            .field("id", &self.notif.id)
            .field("pid", &self.notif.pid)
            .field("call", &self.call)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::recording::{Op, RecordingKernel};
    use perch_syscalls::FakeMemory;
    use std::os::fd::AsFd;

    const CWD: u64 = 0xffff_ffff_ffff_ff9c;

    fn notif(nr: i32, args: [u64; 6]) -> Notif {
        Notif {
            id: NotifId(42),
            pid: Pid(1234),
            nr,
            arch: perch_syscalls::AUDIT_ARCH_X86_64,
            ip: 0,
            args,
        }
    }

    fn procfs() -> &'static ProcFds {
        static P: std::sync::LazyLock<ProcFds> = std::sync::LazyLock::new(ProcFds::default);
        &P
    }

    fn some_fd() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    #[test]
    fn id_valid_after_reading_the_path_before_addfd() {
        let mut mem = FakeMemory::new();
        mem.map_cstr(0x1000, b"/fakefs/a");
        let k = RecordingKernel::new(mem);
        let stats = Stats::default();
        let listener = some_fd();
        let n = Notification::new(
            &k,
            listener.as_fd(),
            notif(257, [CWD, 0x1000, 0, 0, 0, 0]),
            &stats,
            procfs(),
        );
        let Call::Openat { path, .. } = *n.call() else {
            panic!("not openat: {:?}", n.call())
        };
        assert_eq!(n.read_path(path).unwrap(), b"/fakefs/a");
        n.inject_fd(some_fd(), true);
        let ops = k.ops();
        let read = ops
            .iter()
            .position(|o| matches!(o, Op::Read(1234, 0x1000, _)))
            .unwrap();
        let valid = ops.iter().position(|o| *o == Op::IdValid(42)).unwrap();
        let addfd = ops
            .iter()
            .position(|o| *o == Op::AddFd(42, 0o2000000, ADDFD_FLAG_SEND))
            .unwrap();
        assert!(read < valid && valid < addfd, "{ops:?}");
        assert!(!ops.iter().any(|o| matches!(o, Op::Send(..))), "{ops:?}");
    }

    #[test]
    fn gone_caller_makes_read_path_fail() {
        let mut mem = FakeMemory::new();
        mem.map_cstr(0x1000, b"/x");
        let mut k = RecordingKernel::new(mem);
        k.valid = Err(Errno::ENOENT);
        let stats = Stats::default();
        let listener = some_fd();
        let n = Notification::new(
            &k,
            listener.as_fd(),
            notif(2, [0x1000, 0, 0, 0, 0, 0]),
            &stats,
            procfs(),
        );
        assert_eq!(n.read_path(PathPtr(0x1000)), Err(Errno::ENOENT));
        n.error(Errno::ENOENT);
    }

    /// The kernel operations but reads, in order, of: read the path of a `stat` (if
    /// `read_path`), `between` (reads, waits), then write the stat buffer.
    fn checks_around_a_write(read_path: bool, between: impl Fn(&Notification<'_>)) -> Vec<Op> {
        let mut mem = FakeMemory::new();
        mem.map_cstr(0x1000, b"/fakefs/a");
        let k = RecordingKernel::new(mem);
        let stats = Stats::default();
        let listener = some_fd();
        let n = Notification::new(
            &k,
            listener.as_fd(),
            notif(4, [0x1000, 0x2000, 0, 0, 0, 0]),
            &stats,
            procfs(),
        );
        if read_path {
            n.read_path(PathPtr(0x1000)).unwrap();
        }
        between(&n);
        n.write_memory(0x2000, b"abc").unwrap();
        n.ret(0);
        k.ops()
            .into_iter()
            .filter(|o| !matches!(o, Op::Read(..)))
            .collect()
    }

    #[test]
    fn a_read_or_a_wait_after_the_check_makes_the_write_check_again() {
        let twice = vec![
            Op::IdValid(42),
            Op::IdValid(42),
            Op::Write(1234, 0x2000, b"abc".to_vec()),
            Op::Send(42, 0, 0, 0),
        ];
        let read_again = |n: &Notification<'_>| {
            let mut buf = [0u8; 4];
            let _ = n.read_memory(0x1000, &mut buf);
        };
        assert_eq!(checks_around_a_write(true, read_again), twice);
        // Its /proc status, read for its credentials, is something of it too.
        let creds = |n: &Notification<'_>| {
            let _ = n.creds();
        };
        assert_eq!(checks_around_a_write(true, creds), twice);
        let wait = |_: &Notification<'_>| std::thread::sleep(CHECK_COVERS * 2);
        assert_eq!(checks_around_a_write(true, wait), twice);
    }

    #[test]
    fn write_memory_checks_validity_first_unless_a_check_was_just_made() {
        let once = vec![
            Op::IdValid(42),
            Op::Write(1234, 0x2000, b"abc".to_vec()),
            Op::Send(42, 0, 0, 0),
        ];
        assert_eq!(checks_around_a_write(false, |_| {}), once);
        // The write must come within CHECK_COVERS of the check: a test thread preempted for
        // longer gets a second check, which is right too, so one try in twenty must do.
        let tries: Vec<_> = (0..20)
            .map(|_| checks_around_a_write(true, |_| {}))
            .collect();
        assert!(tries.contains(&once), "{tries:?}");
    }

    #[test]
    fn failed_addfd_answers_its_errno() {
        let mut k = RecordingKernel::new(FakeMemory::new());
        k.addfd_result = Err(Errno::EMFILE);
        let stats = Stats::default();
        let listener = some_fd();
        let n = Notification::new(&k, listener.as_fd(), notif(2, [0; 6]), &stats, procfs());
        n.inject_fd(some_fd(), false);
        assert_eq!(
            k.ops(),
            vec![
                Op::AddFd(42, 0, ADDFD_FLAG_SEND),
                Op::Send(42, 0, -Errno::EMFILE.raw(), 0)
            ]
        );
    }

    #[test]
    fn answers_continue_error_ret() {
        let k = RecordingKernel::new(FakeMemory::new());
        let stats = Stats::default();
        let listener = some_fd();
        let mk = || Notification::new(&k, listener.as_fd(), notif(2, [0; 6]), &stats, procfs());
        mk().continue_unchecked();
        mk().error(Errno::EROFS);
        mk().ret(7);
        assert_eq!(
            k.ops(),
            vec![
                Op::Send(42, 0, 0, FLAG_CONTINUE),
                Op::Send(42, 0, -30, 0),
                Op::Send(42, 7, 0, 0)
            ]
        );
    }

    #[test]
    fn drop_without_answer_is_eio() {
        let k = RecordingKernel::new(FakeMemory::new());
        let stats = Stats::default();
        let listener = some_fd();
        drop(Notification::new(
            &k,
            listener.as_fd(),
            notif(2, [0; 6]),
            &stats,
            procfs(),
        ));
        assert_eq!(k.ops(), vec![Op::Send(42, 0, -5, 0)]);
        assert_eq!(stats.unanswered.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn panic_in_handler_answers_eio() {
        let k = RecordingKernel::new(FakeMemory::new());
        let stats = Stats::default();
        let listener = some_fd();
        let n = Notification::new(&k, listener.as_fd(), notif(2, [0; 6]), &stats, procfs());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _n = n;
            panic!("handler bug");
        }));
        assert!(r.is_err());
        assert_eq!(k.ops(), vec![Op::Send(42, 0, -5, 0)]);
    }
}
