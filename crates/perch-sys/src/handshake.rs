//! The socket pair between perch and its fork-to-exec children ([`crate::spawn`] for notify
//! mode, [`crate::ns`] for fuse mode): fixed 12-byte messages (a kind and two integers), one of
//! which may carry a descriptor (`SCM_RIGHTS`), and a one-byte "go" from the parent.
//!
//! Descriptors (the seccomp listener, the `/dev/fuse` descriptor) travel as ancillary data
//! rather than being taken with `pidfd_getfd`: that needs Linux 5.6, and container seccomp
//! profiles (Docker's and containerd's defaults) allow it only with `CAP_SYS_PTRACE`;
//! `sendmsg`/`recvmsg` on a socket pair work on every kernel and under every profile, and across
//! user namespaces.
//!
//! The child's half is async-signal-safe and never allocates (it runs between `fork` and
//! `execve` of a multi-threaded process); the parent's half is [`Channel`].

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use crate::{Errno, Pid};

/// The length of every message.
const MSG_LEN: usize = 12;

/// One decoded message: kind and two integers.
pub(crate) type Msg = (u32, i32, i32);

/// Room for one `cmsghdr` carrying one fd, 8-aligned like `struct cmsghdr`.
type CmsgBuf = [u64; 4];

/// Forks a child that runs `child_main(plan, sock)` (never returning) with its end of a new
/// socket pair; the parent gets the child's pid and its own end.
///
/// `child_main` must make only async-signal-safe calls on memory prepared before the fork.
pub(crate) fn fork_with_channel<P>(
    plan: &P,
    child_main: fn(&P, RawFd) -> !,
) -> Result<(Pid, Channel), Errno> {
    let (parent, child) = UnixStream::pair().map_err(|e| Errno::from_io(&e))?;
    // SAFETY: the child branch closes the parent's end and runs `child_main`, which by this
    // function's contract makes async-signal-safe calls only and never returns.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(crate::last_errno()),
        0 => {
            // SAFETY: the parent's end of the socket pair, a valid fd in this fresh process.
            unsafe { libc::close(parent.as_raw_fd()) };
            // perch may have made itself non-dumpable (`misc::set_dumpable`), which the child
            // inherits until exec; perch reads the child's memory and /proc before that.
            // SAFETY: prctl with integer arguments only (async-signal-safe system call).
            unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
            child_main(plan, child.as_raw_fd())
        }
        pid => Ok((Pid(pid), Channel(parent))),
    }
}

/// The calling thread's errno (async-signal-safe).
pub(crate) fn errno_now() -> i32 {
    // SAFETY: `__errno_location` returns the calling thread's errno slot, always valid.
    unsafe { *libc::__errno_location() }
}

/// In the child: undo what perch's runtime changed, an empty signal mask and default `SIGPIPE`.
pub(crate) fn reset_signals() {
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
}

/// In the child: `_exit(code)`.
pub(crate) fn exit(code: i32) -> ! {
    // SAFETY: `_exit` is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

fn encode(kind: u32, a: i32, b: i32) -> [u8; MSG_LEN] {
    let mut msg = [0u8; MSG_LEN];
    msg[0..4].copy_from_slice(&kind.to_ne_bytes());
    msg[4..8].copy_from_slice(&a.to_ne_bytes());
    msg[8..12].copy_from_slice(&b.to_ne_bytes());
    msg
}

/// In the child: sends one message. A failed write only means the parent is gone; the child
/// exits next anyway.
pub(crate) fn report(sock: RawFd, kind: u32, a: i32, b: i32) {
    let msg = encode(kind, a, b);
    // SAFETY: `msg` is 12 readable bytes that outlive the call.
    unsafe { libc::write(sock, msg.as_ptr().cast(), msg.len()) };
}

/// A header for one message in `msg` with ancillary data in `control` (`control_len` bytes of
/// it). The header points at `iov`, which points at `msg`: all three must outlive its use.
fn header(iov: &mut libc::iovec, control: &mut CmsgBuf, control_len: usize) -> libc::msghdr {
    // SAFETY: `msghdr` is plain old data; all-zero is a valid empty header.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = control_len.min(std::mem::size_of::<CmsgBuf>());
    hdr
}

/// In the child: sends one message with `fd` attached (`SCM_RIGHTS`); the parent receives its
/// own duplicate. Whether all 12 bytes went out.
pub(crate) fn send_with_fd(sock: RawFd, kind: u32, a: i32, b: i32, fd: RawFd) -> bool {
    let mut msg = encode(kind, a, b);
    let mut control: CmsgBuf = [0; 4];
    let mut iov = libc::iovec {
        iov_base: msg.as_mut_ptr().cast(),
        iov_len: msg.len(),
    };
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    let space = unsafe { libc::CMSG_SPACE(4) };
    let hdr = header(&mut iov, &mut control, space as usize);
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

/// In the child: waits for the parent's go; `false` when the parent closed the socket or sent
/// something else.
pub(crate) fn wait_go(sock: RawFd) -> bool {
    let mut go = 0u8;
    // SAFETY: `go` is one writable byte that outlives the call.
    let n = unsafe { libc::read(sock, (&mut go as *mut u8).cast(), 1) };
    n == 1 && go == 1
}

/// The parent's end of the socket pair.
#[derive(Debug)]
pub(crate) struct Channel(UnixStream);

impl Channel {
    /// Reads one message; `None` at end of stream.
    pub(crate) fn read_msg(&self) -> Result<Option<Msg>, Errno> {
        let mut buf = [0u8; MSG_LEN];
        self.read_rest(&mut buf, 0)
    }

    /// Fills `buf[got..]` from the socket; `None` at end of stream.
    fn read_rest(&self, buf: &mut [u8; MSG_LEN], mut got: usize) -> Result<Option<Msg>, Errno> {
        while got < buf.len() {
            match (&self.0).read(&mut buf[got..]) {
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
    pub(crate) fn read_msg_with_fd(&self) -> Result<(Option<Msg>, Option<OwnedFd>), Errno> {
        let mut buf = [0u8; MSG_LEN];
        let mut control: CmsgBuf = [0; 4];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut hdr = header(&mut iov, &mut control, std::mem::size_of::<CmsgBuf>());
        let n = loop {
            // SAFETY: `hdr` points at `iov` (describing `buf`) and `control`, all writable,
            // alive across the call and of the lengths given.
            let n = unsafe { libc::recvmsg(self.0.as_raw_fd(), &mut hdr, libc::MSG_CMSG_CLOEXEC) };
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

    /// Sends the child its go.
    pub(crate) fn go(&self) -> Result<(), Errno> {
        (&self.0).write_all(&[1]).map_err(|e| Errno::from_io(&e))
    }

    /// After the child has exited: the message it left unread, if any (without blocking).
    pub(crate) fn leftover(&self) -> Option<Msg> {
        self.0.set_nonblocking(true).ok()?;
        self.read_msg().ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child_sends(fd: &RawFd, sock: RawFd) -> ! {
        report(sock, 7, 1, 2);
        if !wait_go(sock) {
            exit(3);
        }
        let ok = send_with_fd(sock, 8, *fd, -5, *fd);
        exit(if ok { 0 } else { 4 })
    }

    #[test]
    fn a_descriptor_crosses_the_socket_pair() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::fs::File::open("/").unwrap();
        let raw = dir.as_raw_fd();
        let (pid, ch) = fork_with_channel(&raw, child_sends).unwrap();
        assert_eq!(ch.read_msg().unwrap(), Some((7, 1, 2)));
        ch.go().unwrap();
        let (msg, fd) = ch.read_msg_with_fd().unwrap();
        assert_eq!(msg, Some((8, raw, -5)));
        let fd = fd.expect("an fd came along");
        assert_ne!(
            fd.as_raw_fd(),
            raw,
            "a new descriptor, not the child's number"
        );
        let ours = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        let theirs = std::fs::metadata("/").unwrap();
        assert_eq!((ours.dev(), ours.ino()), (theirs.dev(), theirs.ino()));
        let mut status = 0;
        // SAFETY: `status` is a writable c_int that outlives the call.
        assert_eq!(unsafe { libc::waitpid(pid.0, &mut status, 0) }, pid.0);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert_eq!(ch.leftover(), None);
    }
}
