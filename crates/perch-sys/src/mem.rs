//! Tracee memory: `process_vm_readv/writev`, falling back to `/proc/<pid>/mem`.
//!
//! Container seccomp profiles (Docker's and containerd's defaults) refuse `process_vm_readv`
//! and `process_vm_writev` without `CAP_SYS_PTRACE` (`EPERM`), and kernels built without
//! `CONFIG_CROSS_MEMORY_ATTACH` lack them (`ENOSYS`). The first such refusal is confirmed on
//! perch's own memory (a tracee may refuse for its own reasons, e.g. it is not dumpable) and
//! then remembered for the life of the process: every later access goes straight to
//! `/proc/<pid>/mem`, the call is not tried again. [`refused_attempts`] counts the tries that
//! were refused.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::{check, Errno, Pid};

/// One of the two cross-memory calls and what is known about it.
struct VmCall {
    refused: AtomicBool,
    attempts_refused: AtomicU64,
}

static READV: VmCall = VmCall {
    refused: AtomicBool::new(false),
    attempts_refused: AtomicU64::new(0),
};
static WRITEV: VmCall = VmCall {
    refused: AtomicBool::new(false),
    attempts_refused: AtomicU64::new(0),
};

/// How often `process_vm_readv` and `process_vm_writev` were tried and refused by policy or
/// missing in this process (`EPERM` or `ENOSYS` even on the caller's own memory): at most about
/// once each, however many accesses follow.
pub fn refused_attempts() -> (u64, u64) {
    (
        READV.attempts_refused.load(Ordering::Relaxed),
        WRITEV.attempts_refused.load(Ordering::Relaxed),
    )
}

/// Whether `process_vm_readv` and `process_vm_writev` are known to be refused here.
pub fn refused() -> (bool, bool) {
    (
        READV.refused.load(Ordering::Relaxed),
        WRITEV.refused.load(Ordering::Relaxed),
    )
}

impl VmCall {
    fn skip(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }

    /// After `e` from a call on a tracee: whether to fall back to `/proc/<pid>/mem`, and if the
    /// call is refused for every target (confirmed on our own memory), remember it.
    fn failed(&self, e: Errno, write: bool) -> bool {
        if !wants_fallback(e) {
            return false;
        }
        if self_probe(write).is_err_and(wants_fallback) {
            self.attempts_refused.fetch_add(1, Ordering::Relaxed);
            self.refused.store(true, Ordering::Relaxed);
        }
        true
    }
}

/// One byte of our own memory through the call in question: refused only by policy or absence.
fn self_probe(write: bool) -> Result<(), Errno> {
    let me = Pid(i32::try_from(std::process::id()).map_err(|_| Errno::EINVAL)?);
    let mut byte = [0u8; 1];
    let addr = byte.as_mut_ptr() as u64;
    let r = if write {
        // Writes the zero that is already there.
        vm_writev(me, addr, &[0u8]).map(drop)
    } else {
        let mut out = [0u8; 1];
        vm_readv(me, addr, &mut out).map(drop)
    };
    std::hint::black_box(&mut byte);
    r
}

fn proc_mem(pid: Pid, write: bool) -> Result<std::fs::File, Errno> {
    OpenOptions::new()
        .read(!write)
        .write(write)
        .open(format!("/proc/{}/mem", pid.0))
        .map_err(|e| Errno::from_io(&e))
}

/// Whether an error from `process_vm_*` means "use `/proc/<pid>/mem` instead".
fn wants_fallback(e: Errno) -> bool {
    e == Errno::ENOSYS || e == Errno::EPERM
}

/// Reads up to `buf.len()` bytes at `addr` in `pid`; short at the end of a mapping, `EFAULT`
/// when nothing is mapped at `addr`.
pub fn read_memory(pid: Pid, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
    if buf.is_empty() {
        return Ok(0);
    }
    if !READV.skip() {
        match vm_readv(pid, addr, buf) {
            Err(e) if READV.failed(e, false) => {}
            r => return r,
        }
    }
    proc_mem(pid, false)?
        .read_at(buf, addr)
        .map_err(|e| Errno::from_io(&e))
}

fn vm_readv(pid: Pid, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: usize::try_from(addr).map_err(|_| Errno::EFAULT)? as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, which is writable for its length and outlives the call;
    // the remote iovec is only interpreted in the target's address space.
    let n = check(unsafe { libc::process_vm_readv(pid.0, &local, 1, &remote, 1, 0) } as i64)?;
    usize::try_from(n).map_err(|_| Errno::EIO)
}

/// Writes `data` at `addr` in `pid`; returns the bytes written (short at the end of a mapping).
pub fn write_memory(pid: Pid, addr: u64, data: &[u8]) -> Result<usize, Errno> {
    if data.is_empty() {
        return Ok(0);
    }
    if !WRITEV.skip() {
        match vm_writev(pid, addr, data) {
            Err(e) if WRITEV.failed(e, true) => {}
            r => return r,
        }
    }
    proc_mem(pid, true)?
        .write_at(data, addr)
        .map_err(|e| Errno::from_io(&e))
}

fn vm_writev(pid: Pid, addr: u64, data: &[u8]) -> Result<usize, Errno> {
    let local = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let remote = libc::iovec {
        iov_base: usize::try_from(addr).map_err(|_| Errno::EFAULT)? as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: `local` describes `data`, readable for its length and outliving the call (the
    // kernel only reads local memory for writev); the remote iovec is interpreted in the target.
    let n = check(unsafe { libc::process_vm_writev(pid.0, &local, 1, &remote, 1, 0) } as i64)?;
    usize::try_from(n).map_err(|_| Errno::EIO)
}

/// Writes all of `data` at `addr`, or fails with `EFAULT`.
pub fn write_all(pid: Pid, addr: u64, data: &[u8]) -> Result<(), Errno> {
    let mut done = 0usize;
    while done < data.len() {
        let n = write_memory(pid, addr + done as u64, &data[done..])?;
        if n == 0 {
            return Err(Errno::EFAULT);
        }
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_and_write_own_memory() {
        let me = Pid(i32::try_from(std::process::id()).unwrap());
        let src = *b"hello tracee";
        let mut out = [0u8; 12];
        let n = read_memory(me, src.as_ptr() as u64, &mut out).unwrap();
        assert_eq!(n, 12);
        assert_eq!(&out, b"hello tracee");
        let mut dst = [0u8; 5];
        write_all(me, dst.as_mut_ptr() as u64, b"abcde").unwrap();
        assert_eq!(std::hint::black_box(&dst), b"abcde");
        assert_eq!(read_memory(me, 8, &mut out), Err(Errno::EFAULT));
    }
}
