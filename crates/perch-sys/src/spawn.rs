//! The fork-to-exec child: `PR_SET_NO_NEW_PRIVS`, install the seccomp filter with a listener,
//! hand the listener to the parent over the socket pair (`SCM_RIGHTS`), wait for the parent's
//! go (it seizes us with ptrace meanwhile), then exec.
//!
//! The listener travels as ancillary data rather than being taken with `pidfd_getfd`, which
//! container seccomp profiles (Docker's and containerd's defaults) allow only with
//! `CAP_SYS_PTRACE`; `sendmsg`/`recvmsg` on a socket pair are allowed everywhere.
//!
//! Everything the child needs is prepared before `fork` ([`SpawnPlan`]); between `fork` and
//! `execve` the child only makes async-signal-safe calls and never allocates, so spawning from a
//! multi-threaded supervisor is safe.

use std::ffi::{CString, OsStr};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;

use crate::{misc, Errno, Pid};

/// The fixed-size messages of the handshake: kind and two integers.
const MSG_LEN: usize = 12;

/// One decoded handshake message: kind and two integers.
type Msg = (u32, i32, i32);

/// One BPF instruction, laid out like `struct sock_filter`.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SockFilter {
    /// Opcode.
    pub code: u16,
    /// Jump if true.
    pub jt: u8,
    /// Jump if false.
    pub jf: u8,
    /// Constant.
    pub k: u32,
}

/// `SECCOMP_SET_MODE_FILTER`.
const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
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
    sock: UnixStream,
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
    let (parent, child) = UnixStream::pair().map_err(|e| Errno::from_io(&e))?;
    // SAFETY: the child branch only runs `child_main`, which makes async-signal-safe calls on
    // memory prepared before the fork and never returns.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(crate::last_errno()),
        0 => child_main(plan, child.as_raw_fd(), parent.as_raw_fd()),
        pid => Ok(Child {
            pid: Pid(pid),
            sock: parent,
        }),
    }
}

fn errno_now() -> i32 {
    // SAFETY: `__errno_location` returns the calling thread's errno slot, always valid.
    unsafe { *libc::__errno_location() }
}

fn encode(kind: u32, a: i32, b: i32) -> [u8; MSG_LEN] {
    let mut msg = [0u8; MSG_LEN];
    msg[0..4].copy_from_slice(&kind.to_ne_bytes());
    msg[4..8].copy_from_slice(&a.to_ne_bytes());
    msg[8..12].copy_from_slice(&b.to_ne_bytes());
    msg
}

fn report(sock: RawFd, kind: u32, a: i32, b: i32) {
    let msg = encode(kind, a, b);
    // SAFETY: `msg` is 12 readable bytes that outlive the call. A failed write only means the
    // parent is gone; the child exits next anyway.
    unsafe { libc::write(sock, msg.as_ptr().cast(), msg.len()) };
}

/// Room for one `cmsghdr` carrying one fd, 8-aligned like `struct cmsghdr`.
type CmsgBuf = [u64; 4];

/// Sends the listener message with `fd` attached (`SCM_RIGHTS`): the parent receives its own
/// duplicate. Async-signal-safe, no allocation. Whether all 12 bytes went out.
fn send_listener(sock: RawFd, fd: RawFd, killable: i32) -> bool {
    let mut msg = encode(MSG_LISTENER, fd, killable);
    let mut control: CmsgBuf = [0; 4];
    let mut iov = libc::iovec {
        iov_base: msg.as_mut_ptr().cast(),
        iov_len: msg.len(),
    };
    // SAFETY: `msghdr` is plain old data; all-zero is a valid empty header.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    let space = unsafe { libc::CMSG_SPACE(4) };
    hdr.msg_controllen = space as usize;
    // SAFETY: `hdr.msg_control` points at `control`, 32 bytes ≥ CMSG_SPACE(4) = 24 and
    // 8-aligned, so the first header and its 4 data bytes lie inside it; CMSG_FIRSTHDR is not
    // null because msg_controllen ≥ sizeof(cmsghdr). `msg`, `iov` and `control` outlive the
    // sendmsg, which only reads them.
    let sent = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&hdr);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(4) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        libc::sendmsg(sock, &hdr, libc::MSG_NOSIGNAL)
    };
    usize::try_from(sent) == Ok(MSG_LEN)
}

fn child_exit(code: i32) -> ! {
    // SAFETY: `_exit` is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// The child between fork and exec: async-signal-safe calls only, no allocation.
fn child_main(plan: &SpawnPlan, sock: RawFd, parent_end: RawFd) -> ! {
    // SAFETY: closing the parent's end of the socket pair, a valid fd in this fresh process.
    unsafe { libc::close(parent_end) };
    // Undo what the supervisor's runtime changed: an empty signal mask, default SIGPIPE.
    // SAFETY: `set` and `sa` are valid, initialised local structs that outlive the calls;
    // sigemptyset/sigprocmask/sigaction are async-signal-safe.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGPIPE, &sa, std::ptr::null_mut());
    }
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
        wait_for_go(sock);
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
    if !send_listener(sock, fd, killable) {
        report(sock, MSG_SETUP_ERROR, Stage::Handshake.code(), errno_now());
        child_exit(126);
    }
    wait_for_go(sock);
    // SAFETY: `fd` is the listener this process owns; the parent holds its own duplicate.
    unsafe { libc::close(fd) };
    let err = exec_first(&plan.candidates, &plan.argv, &plan.envp);
    report(sock, MSG_EXEC_ERROR, 0, err);
    child_exit(127)
}

/// In the fork child: blocks until the parent's go byte (it seizes us meanwhile); exits if the
/// parent is gone.
fn wait_for_go(sock: RawFd) {
    let mut go = 0u8;
    // SAFETY: `go` is one writable byte that outlives the call.
    let n = unsafe { libc::read(sock, (&mut go as *mut u8).cast(), 1) };
    if n != 1 {
        child_exit(126);
    }
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

    fn read_msg(&self) -> Result<Option<Msg>, Errno> {
        let mut buf = [0u8; MSG_LEN];
        self.read_rest(&mut buf, 0)
    }

    /// Fills `buf[got..]` from the socket; `None` at end of stream.
    fn read_rest(&self, buf: &mut [u8; MSG_LEN], mut got: usize) -> Result<Option<Msg>, Errno> {
        while got < buf.len() {
            match (&self.sock).read(&mut buf[got..]) {
                Ok(0) => return Ok(None),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Errno::from_io(&e)),
            }
        }
        let word = |i: usize| [buf[i], buf[i + 1], buf[i + 2], buf[i + 3]];
        Ok(Some((
            u32::from_ne_bytes(word(0)),
            i32::from_ne_bytes(word(4)),
            i32::from_ne_bytes(word(8)),
        )))
    }

    /// Reads one message and the fd sent with it, if any (received close-on-exec).
    fn read_msg_with_fd(&self) -> Result<(Option<Msg>, Option<OwnedFd>), Errno> {
        let mut buf = [0u8; MSG_LEN];
        let mut control: CmsgBuf = [0; 4];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: `msghdr` is plain old data; all-zero is a valid empty header.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = control.as_mut_ptr().cast();
        hdr.msg_controllen = std::mem::size_of::<CmsgBuf>();
        let n = loop {
            // SAFETY: `hdr` points at `iov` (describing `buf`) and `control`, all writable,
            // alive across the call and of the lengths given.
            let n =
                unsafe { libc::recvmsg(self.sock.as_raw_fd(), &mut hdr, libc::MSG_CMSG_CLOEXEC) };
            match crate::check(n as libc::c_long) {
                Err(e) if e == Errno::EINTR => continue,
                r => break usize::try_from(r?).map_err(|_| Errno::EIO)?,
            }
        };
        let mut fd = None;
        // SAFETY: the kernel filled `control` up to `hdr.msg_controllen` bytes; the CMSG
        // macros stay within that length, and an SCM_RIGHTS header of CMSG_LEN(4) carries
        // one fd that now belongs to this process (and nothing else owns).
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&hdr);
            if !cmsg.is_null()
                && (*cmsg).cmsg_level == libc::SOL_SOCKET
                && (*cmsg).cmsg_type == libc::SCM_RIGHTS
                && (*cmsg).cmsg_len >= libc::CMSG_LEN(4) as usize
            {
                let raw = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
                fd = Some(OwnedFd::from_raw_fd(raw));
            }
        }
        if n == 0 {
            return Ok((None, fd));
        }
        Ok((self.read_rest(&mut buf, n)?, fd))
    }

    /// Waits for the child to install its filter and receives the listener it sends along
    /// (`SCM_RIGHTS`).
    pub fn listener(&self) -> Result<Listener, SetupError> {
        let handshake = |errno| SetupError {
            stage: Stage::Handshake,
            errno,
        };
        let (msg, fd) = self.read_msg_with_fd().map_err(handshake)?;
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
        match self.read_msg().map_err(handshake)? {
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
        (&self.sock).write_all(&[1]).map_err(|e| Errno::from_io(&e))
    }

    /// After the child has exited: the errno of its failed exec, if that is why it exited.
    pub fn exec_error(&self) -> Option<Errno> {
        self.sock.set_nonblocking(true).ok()?;
        match self.read_msg() {
            Ok(Some((MSG_EXEC_ERROR, _, errno))) => Some(Errno::new(errno)),
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
