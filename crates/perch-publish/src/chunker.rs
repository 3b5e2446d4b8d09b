//! The content-defined chunk cutter of the real publisher (spec §8).
//!
//! It is a pure function of the bytes from the current chunk start, so the
//! caller can stream a file through a window of at most `max` bytes.

use crate::error::{PublishError, Result};

/// Chunk size parameters in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSizes {
    /// Minimum chunk size; files of at most this size are never chunked.
    pub min: usize,
    /// Average chunk size (sets the cut probability).
    pub avg: usize,
    /// Maximum chunk size.
    pub max: usize,
}

const MAGIC: u32 = 0x7FFF_FFFF;

impl ChunkSizes {
    /// `cvmfs_server`'s defaults: 4 MiB / 8 MiB / 16 MiB.
    pub const DEFAULT: ChunkSizes = ChunkSizes {
        min: 4 << 20,
        avg: 8 << 20,
        max: 16 << 20,
    };

    /// Checked constructor: `32 <= min < avg < max`.
    pub fn new(min: usize, avg: usize, max: usize) -> Result<ChunkSizes> {
        if min < 32 || min >= avg || avg >= max {
            let w = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
            return Err(PublishError::BadChunking {
                min: w(min),
                avg: w(avg),
                max: w(max),
            });
        }
        Ok(ChunkSizes { min, avg, max })
    }

    fn threshold(&self) -> i32 {
        let avg = u32::try_from(self.avg).unwrap_or(u32::MAX);
        // avg > min >= 32, so the quotient is below 2^27 and fits.
        i32::try_from(u32::MAX / avg).unwrap_or(i32::MAX)
    }

    /// Length of the next chunk, given `window` = the bytes from the chunk start
    /// on. `window` must hold at least `max` bytes unless it reaches the end of
    /// the file (`eof`); the returned length is then `<= window.len()`.
    ///
    /// This is upstream's `Xor32Detector`: a rolling `x = (x << 1) ^ byte`
    /// warmed up on the 32 bytes before `min`, cutting before byte `i` (i.e.
    /// at length `i`) when `|x - 0x7FFFFFFF| < floor(0xFFFFFFFF / avg)` in
    /// 32-bit signed arithmetic.
    pub fn next_cut(&self, window: &[u8], eof: bool) -> usize {
        debug_assert!(eof || window.len() >= self.max);
        let n = window.len();
        if n <= self.min {
            return n;
        }
        let threshold = self.threshold();
        let mut x: u32 = 0;
        for &b in &window[self.min - 32..self.min] {
            x = (x << 1) ^ u32::from(b);
        }
        let end = n.min(self.max);
        for (i, &b) in window.iter().enumerate().take(end).skip(self.min) {
            x = (x << 1) ^ u32::from(b);
            let d = i32::from_ne_bytes(x.wrapping_sub(MAGIC).to_ne_bytes());
            // wrapping_abs(i32::MIN) stays negative: upstream cuts at x = 0xFFFFFFFF too.
            if d.wrapping_abs() < threshold {
                return i;
            }
        }
        end
    }

    /// All cut points of an in-memory buffer, as `(offset, len)` (one element
    /// = store unchunked).
    pub fn split(&self, data: &[u8]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut start = 0;
        while start < data.len() {
            let window = &data[start..data.len().min(start + self.max)];
            let eof = start + window.len() == data.len();
            let len = self.next_cut(window, eof);
            out.push((start, len));
            start += len;
        }
        if out.is_empty() {
            out.push((0, 0));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(ChunkSizes::new(16, 32, 64).is_err());
        assert!(ChunkSizes::new(64, 64, 128).is_err());
        assert!(ChunkSizes::new(64, 128, 128).is_err());
        assert!(ChunkSizes::new(65536, 131072, 262144).is_ok());
        assert_eq!(
            ChunkSizes::new(65536, 131072, 262144).unwrap().threshold(),
            32767
        );
    }

    #[test]
    fn small_and_tiling() {
        let s = ChunkSizes::new(64, 128, 256).unwrap();
        assert_eq!(s.split(b""), vec![(0, 0)]);
        assert_eq!(s.split(&[1u8; 64]), vec![(0, 64)]);
        let data: Vec<u8> = (0..100_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13).to_le_bytes()[0])
            .collect();
        let parts = s.split(&data);
        assert!(parts.len() > 100);
        let mut next = 0;
        for (i, &(off, len)) in parts.iter().enumerate() {
            assert_eq!(off, next);
            assert!(len <= 256);
            if i + 1 < parts.len() {
                assert!(len >= 64, "chunk {i} is {len} bytes");
            }
            next += len;
        }
        assert_eq!(next, data.len());
        // Constant input never matches the magic: every chunk is `max`.
        assert!(s
            .split(&[0u8; 1000])
            .iter()
            .rev()
            .skip(1)
            .all(|&(_, l)| l == 256));
    }
}
