//! Small kernel helpers: kernel version, signals, eventfd, poll and epoll, a thread's seccomp
//! filter.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::spawn::SockFilter;

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

/// `prctl(PR_SET_DUMPABLE)` for perch itself. Off, processes of the same user (a program under
/// `perch run` among them) can neither attach to perch with ptrace nor open its
/// `/proc/<pid>/mem` or `fd/`: perch writes the cache the program must not (DESIGN.md §4a).
/// A forked child is made dumpable again at once ([`crate::handshake`]), and exec resets it.
pub fn set_dumpable(on: bool) -> Result<(), Errno> {
    // SAFETY: prctl with integer arguments only.
    check_int(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, libc::c_ulong::from(on), 0, 0, 0) })
        .map(drop)
}

/// `kill(pid, sig)`.
pub fn kill(pid: Pid, sig: i32) -> Result<(), Errno> {
    // SAFETY: kill takes no pointers; any pid/signal values are checked by the kernel.
    check_int(unsafe { libc::kill(pid.0, sig) }).map(drop)
}

/// Installs `filter` on the calling thread (and the threads and processes it creates later),
/// after `PR_SET_NO_NEW_PRIVS`, without a listener. For tests that run perch under a container's
/// seccomp profile; perch's own filter is installed by the spawned child ([`crate::spawn`]).
pub fn install_thread_filter(filter: &[SockFilter]) -> Result<(), Errno> {
    if filter.is_empty() {
        return Err(Errno::EINVAL);
    }
    let prog = libc::sock_fprog {
        len: u16::try_from(filter.len()).map_err(|_| Errno::EINVAL)?,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with integer arguments only.
    check_int(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
    // SAFETY: `prog` points at `filter`, alive for the whole call, which the kernel copies;
    // `SockFilter` has the layout of `struct sock_filter`.
    check(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            crate::spawn::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    })
    .map(drop)
}

/// Makes glibc's `malloc` serve every allocation of `bytes` or more with its own `mmap`
/// (`mallopt(M_MMAP_THRESHOLD)`), and keeps it from raising that threshold after such a block is
/// freed (which it does by default, up to 32 MiB). A fresh mapping is already zero, so `calloc`
/// (`vec![0; n]`) of a large buffer then touches no page until it is used. Without it, fuse
/// mode's four FUSE worker threads each zeroed a 16 MiB request buffer at start-up (after the
/// handshake's buffer, freed, had raised the threshold), page by page. Does nothing where the C
/// library is not glibc.
pub fn mmap_large_allocations(bytes: usize) {
    #[cfg(target_env = "gnu")]
    {
        let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt takes integers only; an unaccepted value is refused (returns 0).
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) };
    }
    #[cfg(not(target_env = "gnu"))]
    let _ = bytes;
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

/// epoll data of the first fd given to [`epoll_pair`].
const EP_A: u64 = 0;
/// epoll data of the second fd.
const EP_B: u64 = 1;

/// A new epoll instance (close-on-exec) watching `a` for input with `EPOLLEXCLUSIVE` and `b`
/// for input. When several instances watch `a` exclusively, an event on `a` wakes one of the
/// threads waiting in [`epoll_wait_pair`] on them (another if the first instance has no waiter)
/// instead of all; an event on `b` wakes every waiter. `EPOLLEXCLUSIVE` is Linux 4.5.
pub fn epoll_pair(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    // SAFETY: epoll_create1 takes no pointers.
    let ep = check_int(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    let add = |fd: BorrowedFd<'_>, events: u32, data: u64| {
        let mut ev = libc::epoll_event { events, u64: data };
        // SAFETY: `ev` is a valid epoll_event that outlives the call; both fds are valid.
        check_int(unsafe {
            libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut ev)
        })
    };
    let exclusive = u32::try_from(libc::EPOLLIN | libc::EPOLLEXCLUSIVE).unwrap_or(0);
    let input = u32::try_from(libc::EPOLLIN).unwrap_or(0);
    add(a, exclusive, EP_A)?;
    add(b, input, EP_B)?;
    Ok(ep)
}

/// Waits on an instance made by [`epoll_pair`] (`timeout_ms < 0`: forever). `EINTR` is
/// returned to the caller.
pub fn epoll_wait_pair(ep: BorrowedFd<'_>, timeout_ms: i32) -> Result<Ready, Errno> {
    let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 2];
    // SAFETY: `evs` is an array of 2 writable epoll_event structs that outlives the call.
    let n =
        check_int(unsafe { libc::epoll_wait(ep.as_raw_fd(), evs.as_mut_ptr(), 2, timeout_ms) })?;
    let bad = u32::try_from(libc::EPOLLHUP | libc::EPOLLERR).unwrap_or(0);
    let input = u32::try_from(libc::EPOLLIN).unwrap_or(0);
    let mut r = Ready::default();
    for ev in evs.iter().take(usize::try_from(n).unwrap_or(0)) {
        let (events, data) = (ev.events, ev.u64);
        if data == EP_A {
            r.a_in |= events & input != 0;
            r.a_hup |= events & bad != 0;
        } else if data == EP_B {
            r.b = true;
        }
    }
    Ok(r)
}

/// The calling thread's id (`gettid(2)`).
pub fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::gettid() }
}

extern "C" fn interrupted(_sig: libc::c_int) {}

/// The signal [`interrupt_thread`] sends: a real-time signal whose handler does nothing and is
/// installed without `SA_RESTART`, so that a thread of this process blocked in a call the
/// kernel cannot otherwise end (a seccomp `NOTIF_RECV` while the filter still has users) returns
/// `EINTR`. Installed once; other signals keep their handlers.
pub fn interrupt_signal() -> Result<i32, Errno> {
    static SIGNAL: std::sync::OnceLock<Result<i32, Errno>> = std::sync::OnceLock::new();
    *SIGNAL.get_or_init(|| {
        // The C library keeps the first real-time signals for itself; SIGRTMIN() is the first
        // one it leaves to programs. Nothing else in perch uses real-time signals.
        let sig = libc::SIGRTMIN() + 1;
        // SAFETY: `sa` is a valid, initialised sigaction that outlives the call; the handler
        // does nothing.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = interrupted as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = 0;
            libc::sigemptyset(&mut sa.sa_mask);
            check_int(libc::sigaction(sig, &sa, std::ptr::null_mut()))?;
        }
        Ok(sig)
    })
}

/// Sends [`interrupt_signal`] to thread `tid` of this process (`tgkill(2)`): its blocking call
/// returns `EINTR`. The caller must know `tid` is still one of its threads.
pub fn interrupt_thread(tid: i32) -> Result<(), Errno> {
    let sig = interrupt_signal()?;
    // SAFETY: tgkill takes no pointers; the kernel checks the ids.
    check(unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, sig) }).map(drop)
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
    fn an_interrupted_thread_returns_eintr_from_its_wait() {
        let a = eventfd().unwrap();
        let b = eventfd().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            tx.send(gettid()).unwrap();
            // Nothing ever makes either fd readable.
            poll2(a.as_fd(), b.as_fd(), -1)
        });
        let tid = rx.recv().unwrap();
        // Until it is in poll, a signal is lost on the way (the handler does nothing).
        while !waiter.is_finished() {
            interrupt_thread(tid).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(waiter.join().unwrap(), Err(Errno::EINTR));
        // The signal has a handler, not SA_RESTART, and the same number each time.
        assert_eq!(interrupt_signal(), interrupt_signal());
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

    #[test]
    fn epoll_pair_reports_each_fd() {
        let a = eventfd().unwrap();
        let b = eventfd().unwrap();
        let ep = epoll_pair(a.as_fd(), b.as_fd()).unwrap();
        assert_eq!(epoll_wait_pair(ep.as_fd(), 0).unwrap(), Ready::default());
        eventfd_signal(a.as_fd()).unwrap();
        let r = epoll_wait_pair(ep.as_fd(), 1000).unwrap();
        assert!(r.a_in && !r.b && !r.a_hup, "{r:?}");
        eventfd_signal(b.as_fd()).unwrap();
        let r = epoll_wait_pair(ep.as_fd(), 1000).unwrap();
        assert!(r.a_in && r.b, "{r:?}");
    }
}
