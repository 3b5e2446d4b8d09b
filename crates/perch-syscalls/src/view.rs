//! `TraceeView`: read access to a tracee's memory, as a trait so decoding and display work on a
//! live process or on a fake one in tests.

use crate::Errno;

/// Bytes read per step when looking for a string's NUL: one page, so a string ending just before
/// an unmapped page is still read.
const PAGE: u64 = 4096;
const PAGE_BYTES: usize = 4096;
/// Bytes read first when looking for a NUL.
const FIRST_READ: usize = 256;

/// What a call perch makes on a tracee's behalf depends on (its `/proc/<tid>/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallerCreds {
    /// The tracee has perch's uids, gids, groups and effective capabilities, so perch's call
    /// is the one it would have made.
    pub same_as_perch: bool,
    /// Its umask, for the files perch creates for it.
    pub umask: Option<u32>,
}

/// Reads a tracee's memory.
pub trait TraceeView {
    /// Reads up to `buf.len()` bytes at `addr`; returns how many were read (short at the end of a
    /// mapping). An address that is not mapped at all is `EFAULT`.
    fn read_memory(&self, addr: u64, buf: &mut [u8]) -> Result<usize, Errno>;

    /// Reads the NUL-terminated string at `addr`, without the NUL. `EFAULT` for NULL or unmapped
    /// memory, `ENAMETOOLONG` when no NUL is found within `max` bytes.
    fn read_cstr(&self, addr: u64, max: usize) -> Result<Vec<u8>, Errno> {
        if addr == 0 {
            return Err(Errno::EFAULT);
        }
        let mut out = Vec::new();
        let mut at = addr;
        let mut chunk = [0u8; PAGE_BYTES];
        // Most paths are short: read a small first piece, then whole pages.
        let mut step = FIRST_READ;
        while out.len() < max {
            let to_page_end = PAGE - (at % PAGE);
            let want = usize::try_from(to_page_end)
                .unwrap_or(chunk.len())
                .min(step)
                .min(max - out.len());
            step = PAGE_BYTES;
            let n = self.read_memory(at, &mut chunk[..want])?;
            if n == 0 {
                return Err(Errno::EFAULT);
            }
            if let Some(nul) = chunk[..n].iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..nul]);
                return Ok(out);
            }
            out.extend_from_slice(&chunk[..n]);
            at = at.checked_add(n as u64).ok_or(Errno::EFAULT)?;
        }
        Err(Errno::ENAMETOOLONG)
    }
}

/// A fake tracee memory for tests: a list of `(address, bytes)` regions.
#[derive(Default, Debug, Clone)]
pub struct FakeMemory {
    regions: Vec<(u64, Vec<u8>)>,
}

impl FakeMemory {
    /// An empty memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `bytes` at `addr`.
    pub fn map(&mut self, addr: u64, bytes: impl Into<Vec<u8>>) -> &mut Self {
        self.regions.push((addr, bytes.into()));
        self
    }

    /// Maps a NUL-terminated copy of `s` at `addr`.
    pub fn map_cstr(&mut self, addr: u64, s: &[u8]) -> &mut Self {
        let mut v = s.to_vec();
        v.push(0);
        self.map(addr, v)
    }
}

impl TraceeView for FakeMemory {
    fn read_memory(&self, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        for (start, bytes) in &self.regions {
            let end = start + bytes.len() as u64;
            if addr >= *start && addr < end {
                let off = usize::try_from(addr - start).map_err(|_| Errno::EFAULT)?;
                let n = buf.len().min(bytes.len() - off);
                buf[..n].copy_from_slice(&bytes[off..off + n]);
                return Ok(n);
            }
        }
        Err(Errno::EFAULT)
    }
}
