//! Calls perch does itself on a host path, when the program's own path would not reach it (a
//! repository symlink leading out of `/cvmfs`, or `-M` remapping): `CONTINUE` makes the kernel
//! re-read the program's path, so the right object can only be reached by perch.
//!
//! perch runs with the same user and groups as the program (no_new_privs: nothing setuid), so
//! permission checks come out the same.

use std::os::fd::OwnedFd;
use std::path::Path;

use crate::Errno;
use perch_syscalls::Stat;
use rustix::fs::{Mode, OFlags};

fn rerr(e: rustix::io::Errno) -> Errno {
    Errno::new(e.raw_os_error())
}

/// `Ok(())` or the errno of an I/O error.
pub(crate) fn res(r: std::io::Result<()>) -> Result<(), Errno> {
    r.map_err(|e| Errno::from_io(&e))
}

/// `open(path, flags, mode)`; the fd is perch's with `O_CLOEXEC` (the program's own
/// `O_CLOEXEC` is given to `ADDFD`).
pub(crate) fn open(path: &Path, flags: i32, mode: u32) -> Result<OwnedFd, Errno> {
    let flags = u32::from_ne_bytes((flags | libc::O_CLOEXEC).to_ne_bytes());
    rustix::fs::open(
        path,
        OFlags::from_bits_retain(flags),
        Mode::from_bits_truncate(mode),
    )
    .map_err(rerr)
}

/// `stat`/`lstat` of a host path.
pub(crate) fn stat(path: &Path, follow: bool) -> Result<Stat, Errno> {
    let md = if follow {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    }
    .map_err(|e| Errno::from_io(&e))?;
    Ok(Stat::from(&md))
}

/// `access(path, mode)`.
pub(crate) fn access(path: &Path, mode: i32) -> Result<(), Errno> {
    let bits = rustix::fs::Access::from_bits_truncate(mode.unsigned_abs());
    rustix::fs::access(path, bits).map_err(rerr)
}

/// `symlink(target, path)`.
pub(crate) fn symlink(target: &[u8], path: &Path) -> Result<(), Errno> {
    use std::os::unix::ffi::OsStrExt;
    res(std::os::unix::fs::symlink(
        std::ffi::OsStr::from_bytes(target),
        path,
    ))
}

/// `statfs(path)`.
pub(crate) fn statfs(path: &Path) -> Result<crate::StatFs, Errno> {
    let v = rustix::fs::statfs(path).map_err(rerr)?;
    let i = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
    #[allow(clippy::useless_conversion)]
    Ok(crate::StatFs {
        f_type: i64::from(v.f_type),
        f_bsize: i64::from(v.f_bsize),
        f_blocks: v.f_blocks,
        f_bfree: v.f_bfree,
        f_bavail: v.f_bavail,
        f_files: v.f_files,
        f_ffree: v.f_ffree,
        f_fsid: [0, 0],
        f_namelen: i64::from(v.f_namelen),
        f_frsize: i64::from(v.f_frsize),
        f_flags: i(u64::try_from(v.f_flags).unwrap_or(0)),
    })
}
