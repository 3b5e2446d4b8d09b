//! Small kernel helpers: kernel version, signals, pidfds, eventfd, poll.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::{check, check_int, Errno, Pid};

/// The running kernel's `(major, minor)` version, from `uname(2)`.
pub fn kernel_version() -> Result<(u32, u32), Errno> {
    let release = kernel_release()?;
    parse_version(&release).ok_or(Errno::EINVAL)
}

/// The running kernel's release string (`uname -r`).
pub fn kernel_release() -> Result<String, Errno> {
    // SAFETY: `utsname` is plain old data; all-zero bytes are a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable `utsname` that outlives the call.
    check_int(unsafe { libc::uname(&mut uts) })?;
    let bytes: Vec<u8> = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| u8::from_ne_bytes(c.to_ne_bytes()))
        .collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Parses `"6.18.44-foo"` into `(6, 18)`.
pub fn parse_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// `kill(pid, sig)`.
pub fn kill(pid: Pid, sig: i32) -> Result<(), Errno> {
    // SAFETY: kill takes no pointers; any pid/signal values are checked by the kernel.
    check_int(unsafe { libc::kill(pid.0, sig) }).map(drop)
}

/// `pidfd_open(pid, 0)`.
pub fn pidfd_open(pid: Pid) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes no pointers.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid.0, 0) })?;
    let fd = RawFd::try_from(fd).map_err(|_| Errno::EBADF)?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pidfd_getfd(pidfd, targetfd, 0)`: a duplicate of another process's fd.
pub fn pidfd_getfd(pidfd: BorrowedFd<'_>, target: RawFd) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_getfd takes no pointers; `pidfd` is a valid borrowed fd.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) })?;
    let fd = RawFd::try_from(fd).map_err(|_| Errno::EBADF)?;
    // SAFETY: the kernel just returned this fd (with O_CLOEXEC) to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A close-on-exec, non-blocking `eventfd` used to wake pollers.
pub fn eventfd() -> Result<OwnedFd, Errno> {
    // SAFETY: eventfd takes no pointers.
    let fd = check_int(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds 1 to an eventfd, making it readable.
pub fn eventfd_signal(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    let one: u64 = 1;
    // SAFETY: `one` is 8 readable bytes that outlive the call; `fd` is a valid borrowed fd.
    let n = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    check(n as libc::c_long).map(drop)
}

/// Readiness of the two fds given to [`poll2`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// The first fd is readable.
    pub a_in: bool,
    /// The first fd reported hang-up or error.
    pub a_hup: bool,
    /// The second fd is readable (or hung up).
    pub b: bool,
}

/// Waits until `a` or `b` is readable (or hangs up). `timeout_ms < 0` waits forever. `EINTR`
/// is returned to the caller.
pub fn poll2(a: BorrowedFd<'_>, b: BorrowedFd<'_>, timeout_ms: i32) -> Result<Ready, Errno> {
    let mut fds = [
        libc::pollfd {
            fd: a.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: b.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: `fds` is an array of 2 valid pollfd structs that outlives the call.
    check_int(unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) })?;
    let bad = libc::POLLHUP | libc::POLLERR | libc::POLLNVAL;
    Ok(Ready {
        a_in: fds[0].revents & libc::POLLIN != 0,
        a_hup: fds[0].revents & bad != 0,
        b: fds[1].revents & (libc::POLLIN | bad) != 0,
    })
}

/// Waits until `fd` is readable (or hangs up), at most `timeout_ms` (`< 0`: forever). Returns
/// whether it is. `EINTR` is returned to the caller.
pub fn poll_in(fd: BorrowedFd<'_>, timeout_ms: i32) -> Result<bool, Errno> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd struct that outlives the call.
    check_int(unsafe { libc::poll(&mut pfd, 1, timeout_ms) })?;
    Ok(pfd.revents != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("6.18.44-fc-v782"), Some((6, 18)));
        assert_eq!(parse_version("5.14.0-362.el9.x86_64"), Some((5, 14)));
        assert_eq!(parse_version("3.10.0"), Some((3, 10)));
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn eventfd_wakes_poll() {
        let a = eventfd().unwrap();
        let b = eventfd().unwrap();
        let r = poll2(a.as_fd(), b.as_fd(), 0).unwrap();
        assert_eq!(r, Ready::default());
        eventfd_signal(b.as_fd()).unwrap();
        let r = poll2(a.as_fd(), b.as_fd(), 1000).unwrap();
        assert!(r.b && !r.a_in);
    }
}
