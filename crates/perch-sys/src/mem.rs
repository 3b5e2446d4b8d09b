//! Tracee memory: `process_vm_readv/writev`, falling back to `/proc/<pid>/mem`.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use crate::{check, Errno, Pid};

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
    let r = check(unsafe { libc::process_vm_readv(pid.0, &local, 1, &remote, 1, 0) } as i64);
    match r {
        Ok(n) => usize::try_from(n).map_err(|_| Errno::EIO),
        Err(e) if wants_fallback(e) => proc_mem(pid, false)?
            .read_at(buf, addr)
            .map_err(|e| Errno::from_io(&e)),
        Err(e) => Err(e),
    }
}

/// Writes `data` at `addr` in `pid`; returns the bytes written (short at the end of a mapping).
pub fn write_memory(pid: Pid, addr: u64, data: &[u8]) -> Result<usize, Errno> {
    if data.is_empty() {
        return Ok(0);
    }
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
    let r = check(unsafe { libc::process_vm_writev(pid.0, &local, 1, &remote, 1, 0) } as i64);
    match r {
        Ok(n) => usize::try_from(n).map_err(|_| Errno::EIO),
        Err(e) if wants_fallback(e) => proc_mem(pid, true)?
            .write_at(data, addr)
            .map_err(|e| Errno::from_io(&e)),
        Err(e) => Err(e),
    }
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
