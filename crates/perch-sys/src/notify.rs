//! Seccomp user notification: `SECCOMP_IOCTL_NOTIF_RECV/SEND/ID_VALID/ADDFD`.

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::{check, check_int, Errno, Pid};

/// `SECCOMP_IOCTL_NOTIF_RECV` = `_IOWR('!', 0, struct seccomp_notif)`.
const IOCTL_RECV: libc::c_ulong = 0xc050_2100;
/// `SECCOMP_IOCTL_NOTIF_SEND` = `_IOWR('!', 1, struct seccomp_notif_resp)`.
const IOCTL_SEND: libc::c_ulong = 0xc018_2101;
/// `SECCOMP_IOCTL_NOTIF_ID_VALID` = `_IOW('!', 2, __u64)`.
const IOCTL_ID_VALID: libc::c_ulong = 0x4008_2102;
/// `SECCOMP_IOCTL_NOTIF_ADDFD` = `_IOW('!', 3, struct seccomp_notif_addfd)`.
const IOCTL_ADDFD: libc::c_ulong = 0x4018_2103;

/// `SECCOMP_IOCTL_NOTIF_SET_FLAGS` = `_IOW('!', 4, __u64)` (Linux 6.6).
const IOCTL_SET_FLAGS: libc::c_ulong = 0x4008_2104;
/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`.
const FD_SYNC_WAKE_UP: libc::c_ulong = 1;

/// `SECCOMP_GET_NOTIF_SIZES`.
const SECCOMP_GET_NOTIF_SIZES: libc::c_ulong = 3;

/// `SECCOMP_USER_NOTIF_FLAG_CONTINUE`: let the kernel run the syscall.
pub const FLAG_CONTINUE: u32 = 1;
/// `SECCOMP_ADDFD_FLAG_SEND`: install the fd and answer with its number, atomically.
pub const ADDFD_FLAG_SEND: u32 = 2;

/// The id of one notification.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct NotifId(pub u64);

#[repr(C)]
#[derive(Copy, Clone, Default)]
struct SeccompData {
    nr: i32,
    arch: u32,
    instruction_pointer: u64,
    args: [u64; 6],
}

#[repr(C)]
#[derive(Copy, Clone, Default)]
struct SeccompNotifRaw {
    id: u64,
    pid: u32,
    flags: u32,
    data: SeccompData,
}

#[repr(C)]
#[derive(Copy, Clone, Default)]
struct SeccompNotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

#[repr(C)]
#[derive(Copy, Clone, Default)]
struct SeccompNotifAddfd {
    id: u64,
    flags: u32,
    srcfd: u32,
    newfd: u32,
    newfd_flags: u32,
}

#[repr(C)]
#[derive(Copy, Clone, Default, Debug)]
struct NotifSizes {
    notif: u16,
    resp: u16,
    data: u16,
}

/// One received notification: who called what.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Notif {
    /// The notification id, for the answer.
    pub id: NotifId,
    /// The calling thread, in the supervisor's pid namespace.
    pub pid: Pid,
    /// Syscall number.
    pub nr: i32,
    /// `AUDIT_ARCH_*`.
    pub arch: u32,
    /// Instruction pointer.
    pub ip: u64,
    /// Raw arguments.
    pub args: [u64; 6],
}

/// Bytes reserved for a received notification: the kernel may know a larger struct than ours.
const RECV_BUF_WORDS: usize = 64;

/// Checks that the kernel's notification structs fit the buffers used here.
pub fn check_sizes() -> Result<(), Errno> {
    let mut sizes = NotifSizes::default();
    // SAFETY: `sizes` is a writable `struct seccomp_notif_sizes` that outlives the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_GET_NOTIF_SIZES,
            0,
            &mut sizes as *mut NotifSizes,
        )
    })?;
    let ok = usize::from(sizes.notif) <= RECV_BUF_WORDS * 8
        && usize::from(sizes.resp) <= std::mem::size_of::<SeccompNotifResp>()
        && usize::from(sizes.notif) >= std::mem::size_of::<SeccompNotifRaw>();
    if ok {
        Ok(())
    } else {
        Err(Errno::EOVERFLOW)
    }
}

/// `SECCOMP_IOCTL_NOTIF_RECV`: blocks until a notification arrives. `ENOENT` means the caller
/// was killed before it could be received (try again); `EINTR` likewise.
pub fn recv(listener: BorrowedFd<'_>) -> Result<Notif, Errno> {
    // The kernel requires the buffer to be zeroed and writes `sizes.notif` bytes.
    let mut buf = [0u64; RECV_BUF_WORDS];
    // SAFETY: `buf` is 512 zeroed, 8-aligned, writable bytes that outlive the call, at least
    // as large as the kernel's `struct seccomp_notif` (checked by `check_sizes`; today 80).
    check_int(unsafe { libc::ioctl(listener.as_raw_fd(), IOCTL_RECV, buf.as_mut_ptr()) })?;
    // SAFETY: `buf` is at least `size_of::<SeccompNotifRaw>()` bytes and 8-aligned, and the
    // struct is plain integers, so any bytes are a valid value.
    let raw: SeccompNotifRaw = unsafe { std::ptr::read(buf.as_ptr().cast()) };
    Ok(Notif {
        id: NotifId(raw.id),
        pid: Pid(i32::try_from(raw.pid).unwrap_or(0)),
        nr: raw.data.nr,
        arch: raw.data.arch,
        ip: raw.data.instruction_pointer,
        args: raw.data.args,
    })
}

/// `SECCOMP_IOCTL_NOTIF_SEND`: answers `id` with `val` (`error == 0`), `-error`, or
/// [`FLAG_CONTINUE`]. `ENOENT`: the caller is gone or was already answered.
pub fn send(
    listener: BorrowedFd<'_>,
    id: NotifId,
    val: i64,
    error: i32,
    flags: u32,
) -> Result<(), Errno> {
    let mut resp = SeccompNotifResp {
        id: id.0,
        val,
        error,
        flags,
    };
    // SAFETY: `resp` is a valid `struct seccomp_notif_resp` that outlives the call.
    check_int(unsafe { libc::ioctl(listener.as_raw_fd(), IOCTL_SEND, &mut resp as *mut _) })
        .map(drop)
}

/// `SECCOMP_IOCTL_NOTIF_ID_VALID`: `Ok` while the caller still waits for this answer (so its pid
/// still names it), `ENOENT` otherwise.
pub fn id_valid(listener: BorrowedFd<'_>, id: NotifId) -> Result<(), Errno> {
    let mut raw = id.0;
    // SAFETY: `raw` is a readable u64 that outlives the call.
    check_int(unsafe { libc::ioctl(listener.as_raw_fd(), IOCTL_ID_VALID, &mut raw as *mut u64) })
        .map(drop)
}

/// `SECCOMP_IOCTL_NOTIF_ADDFD`: installs a duplicate of `fd` in the caller with `newfd_flags`
/// (`O_CLOEXEC` or 0); with [`ADDFD_FLAG_SEND`] this also answers the notification with the new
/// fd number. Returns the new fd number.
pub fn addfd(
    listener: BorrowedFd<'_>,
    id: NotifId,
    fd: BorrowedFd<'_>,
    newfd_flags: u32,
    flags: u32,
) -> Result<i32, Errno> {
    let mut req = SeccompNotifAddfd {
        id: id.0,
        flags,
        srcfd: u32::try_from(fd.as_raw_fd()).map_err(|_| Errno::EBADF)?,
        newfd: 0,
        newfd_flags,
    };
    // SAFETY: `req` is a valid `struct seccomp_notif_addfd` that outlives the call; `fd` is a
    // valid borrowed fd for its duration.
    check_int(unsafe { libc::ioctl(listener.as_raw_fd(), IOCTL_ADDFD, &mut req as *mut _) })
}

/// `SECCOMP_IOCTL_NOTIF_SET_FLAGS(SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)` (Linux 6.6): the caller
/// and the supervisor hand over on the same CPU, which cuts a notification's round trip when one
/// side always waits for the other. `EINVAL`/`ENOTTY` on older kernels.
pub fn set_sync_wakeup(listener: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: this ioctl takes its argument by value; no memory is passed.
    check_int(unsafe { libc::ioctl(listener.as_raw_fd(), IOCTL_SET_FLAGS, FD_SYNC_WAKE_UP) })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_match_the_uapi() {
        assert_eq!(std::mem::size_of::<SeccompData>(), 64);
        assert_eq!(std::mem::size_of::<SeccompNotifRaw>(), 80);
        assert_eq!(std::mem::size_of::<SeccompNotifResp>(), 24);
        assert_eq!(std::mem::size_of::<SeccompNotifAddfd>(), 24);
        check_sizes().unwrap();
    }
}
