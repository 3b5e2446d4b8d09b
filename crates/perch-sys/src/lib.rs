//! perch's only `unsafe` code: safe wrappers for the kernel interfaces the interceptor needs.
//!
//! This crate owns: seccomp filter installation with a user-notification listener
//! ([`spawn`], the one small async-signal-safe fork-to-exec child), the notify ioctls
//! (`SECCOMP_IOCTL_NOTIF_RECV/SEND/ID_VALID/ADDFD`, [`notify`]), ptrace and `waitpid`
//! ([`ptrace`]), tracee memory through `process_vm_readv/writev` with a `/proc/<pid>/mem`
//! fallback ([`mem`]), `poll`, `epoll` and `eventfd` ([`misc`]), fuse mode's namespaces
//! and mounts ([`ns`]), ptrace mode's fd relay ([`relay`]), and the socket pair both
//! fork-to-exec children talk to perch over, descriptors included (`handshake`). Every call takes typed values
//! (`BorrowedFd`, [`notify::NotifId`], [`Pid`]) and returns `Result<_, Errno>`. It knows no
//! policy and does no logging; each `unsafe` block states the invariant it relies on.
//!
//! ```
//! let (major, minor) = perch_sys::misc::kernel_version().unwrap();
//! assert!(major >= 3, "{major}.{minor}");
//! ```
#![deny(missing_docs)]

mod handshake;
pub mod mem;
pub mod misc;
pub mod notify;
pub mod ns;
pub mod ptrace;
pub mod relay;
pub mod spawn;

pub use perch_syscalls::{Errno, Pid};

/// The calling thread's `errno` after a failed call.
pub(crate) fn last_errno() -> Errno {
    Errno::new(
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    )
}

/// `Ok(ret)` when `ret >= 0`, else the thread's errno.
pub(crate) fn check(ret: libc::c_long) -> Result<libc::c_long, Errno> {
    if ret < 0 {
        Err(last_errno())
    } else {
        Ok(ret)
    }
}

/// [`check`] for calls returning `c_int`.
pub(crate) fn check_int(ret: libc::c_int) -> Result<libc::c_int, Errno> {
    if ret < 0 {
        Err(last_errno())
    } else {
        Ok(ret)
    }
}
