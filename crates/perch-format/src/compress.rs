//! Object compression: one zlib stream per object, or none.

use std::io::{Read, Write};

use flate2::write::ZlibEncoder;
use flate2::Compression as Level;

/// How an object's stored bytes relate to its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// One zlib stream (RFC 1950), the default.
    Zlib,
    /// Stored raw.
    None,
}

impl Compression {
    /// Catalog flag bits 11..13 (already shifted).
    pub fn flag_bits(self) -> u32 {
        match self {
            Compression::Zlib => 0,
            Compression::None => 1 << 11,
        }
    }

    /// From catalog flags; unknown values are `None` (refuse to read).
    pub fn from_flags(flags: u32) -> Option<Compression> {
        match (flags >> 11) & 0x7 {
            0 => Some(Compression::Zlib),
            1 => Some(Compression::None),
            _ => None,
        }
    }

    /// Name as in `user.compression`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zlib => "zlib",
            Compression::None => "none",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "zlib" => Ok(Compression::Zlib),
            "none" => Ok(Compression::None),
            _ => Err(format!("unknown compression {s:?} (zlib, none)")),
        }
    }
}

/// Compress a whole buffer with zlib level 6 (what the real tools use).
pub fn zlib_compress(data: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::with_capacity(data.len() / 2 + 64), Level::new(6));
    e.write_all(data).expect("writing to a Vec cannot fail");
    e.finish().expect("writing to a Vec cannot fail")
}

/// Decompress a whole zlib buffer; trailing garbage or a truncated stream is an error.
pub fn zlib_decompress(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut d = Inflater::new(Vec::with_capacity(data.len() * 3));
    d.write_all(data)?;
    d.finish()
}

/// Streaming decompressor: feed stored bytes with `write`, it writes content to `W`.
/// `finish` fails unless exactly one complete stream was seen (truncation and
/// trailing garbage are both errors: a damaged object must never be served).
pub struct Inflater<W: Write> {
    state: flate2::Decompress,
    out: W,
    buf: Vec<u8>,
    ended: bool,
    /// Most content bytes accepted (a declared size), and how many came so far.
    limit: u64,
    written: u64,
}

/// The length of a buffer for data of `size` bytes: at least a page, at most `most`. Most
/// objects are a few KiB; zeroing (and, past glibc's mmap threshold, mapping and faulting in)
/// buffers of the largest size for each was a visible part of cold reads of many small files.
pub fn buffer_len(size: u64, most: usize) -> usize {
    usize::try_from(size).map_or(most, |s| s.clamp(4096, most))
}

impl<W: Write> Inflater<W> {
    /// Decompress into `out`.
    pub fn new(out: W) -> Self {
        Self::with_buffer(out, u64::MAX, 64 * 1024)
    }

    fn with_buffer(out: W, limit: u64, len: usize) -> Self {
        Inflater {
            state: flate2::Decompress::new(true),
            out,
            buf: vec![0u8; len],
            ended: false,
            limit,
            written: 0,
        }
    }

    /// Decompress into `out`, failing (`InvalidData`) as soon as the content would exceed
    /// `limit` bytes: a stream that inflates past its declared size is stopped before it fills
    /// the disk, whatever its compressed size.
    pub fn with_limit(out: W, limit: u64) -> Self {
        let len = buffer_len(limit.saturating_add(1), 64 * 1024);
        Self::with_buffer(out, limit, len)
    }

    /// True once the content went past the limit of [`Inflater::with_limit`] (the error that
    /// stopped it is then that, not a corrupt stream).
    pub fn past_limit(&self) -> bool {
        self.written > self.limit
    }

    /// Finish: error if the stream was truncated.
    pub fn finish(self) -> std::io::Result<W> {
        if !self.ended {
            return Err(invalid("truncated zlib stream"));
        }
        Ok(self.out)
    }
}

impl<W: Write> Inflater<W> {
    /// Pass the first `made` bytes of `buf` on, within the limit.
    fn emit(&mut self, made: usize) -> std::io::Result<()> {
        self.written = self.written.saturating_add(made as u64);
        if self.written > self.limit {
            return Err(invalid("zlib stream inflates past its declared size"));
        }
        self.out.write_all(&self.buf[..made])
    }
}

fn invalid(msg: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

impl<W: Write> Write for Inflater<W> {
    fn write(&mut self, mut input: &[u8]) -> std::io::Result<usize> {
        let total = input.len();
        while !input.is_empty() {
            if self.ended {
                return Err(invalid("data after the end of the zlib stream"));
            }
            let before_in = self.state.total_in();
            let before_out = self.state.total_out();
            let status = self
                .state
                .decompress(input, &mut self.buf, flate2::FlushDecompress::None)
                .map_err(|_| invalid("corrupt zlib stream"))?;
            let used = usize::try_from(self.state.total_in() - before_in).unwrap_or(usize::MAX);
            let made = usize::try_from(self.state.total_out() - before_out).unwrap_or(usize::MAX);
            self.emit(made)?;
            input = &input[used.min(input.len())..];
            match status {
                flate2::Status::StreamEnd => self.ended = true,
                flate2::Status::Ok => {}
                flate2::Status::BufError => {
                    if used == 0 && made == 0 {
                        return Err(invalid("corrupt zlib stream"));
                    }
                }
            }
        }
        // Drain output still buffered inside the decompressor.
        while !self.ended {
            let before_out = self.state.total_out();
            let status = self
                .state
                .decompress(&[], &mut self.buf, flate2::FlushDecompress::None)
                .map_err(|_| invalid("corrupt zlib stream"))?;
            let made = usize::try_from(self.state.total_out() - before_out).unwrap_or(usize::MAX);
            self.emit(made)?;
            if status == flate2::Status::StreamEnd {
                self.ended = true;
            }
            if made == 0 {
                break;
            }
        }
        Ok(total)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Read a zlib stream from `r` fully into a Vec.
pub fn zlib_decompress_reader<R: Read>(r: R) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(r).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let z = zlib_compress(&data);
        assert_eq!(zlib_decompress(&z).unwrap(), data);
        assert!(zlib_decompress(&z[..z.len() - 1]).is_err());
        let mut extra = z.clone();
        extra.push(0);
        assert!(zlib_decompress(&extra).is_err());
        let mut flipped = z.clone();
        flipped[z.len() / 2] ^= 0x40;
        assert!(zlib_decompress(&flipped).is_err());
        assert_eq!(zlib_compress(b""), [0x78, 0x9c, 0x03, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn small_writes() {
        let data = b"hello hello hello hello".repeat(1000);
        let z = zlib_compress(&data);
        let mut inf = Inflater::new(Vec::new());
        for c in z.chunks(7) {
            inf.write_all(c).unwrap();
        }
        assert_eq!(inf.finish().unwrap(), data);
    }

    #[test]
    fn declared_size_stops_a_bomb() {
        // 64 MiB of zeros compress to ~64 KiB; declared as 1 MiB it is refused after writing
        // at most the declared size.
        let z = zlib_compress(&vec![0u8; 64 << 20]);
        let mut inf = Inflater::with_limit(Vec::new(), 1 << 20);
        let e = inf.write_all(&z).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("declared size"), "{e}");
        // Exactly the declared size is fine.
        let data = b"exactly".repeat(1000);
        let mut inf = Inflater::with_limit(Vec::new(), data.len() as u64);
        inf.write_all(&zlib_compress(&data)).unwrap();
        assert_eq!(inf.finish().unwrap(), data);
    }

    /// Found by fuzzing (fuzz/ target `zlib`): a stream whose back-reference reaches before
    /// its start. The streaming and one-shot decoders disagreed only in the fuzzing build,
    /// where miniz_oxide skips its Adler-32 check; a normal build refuses it either way.
    #[test]
    fn far_back_distance_is_refused() {
        let z = [
            0x78, 0x9c, 0x4b, 0xe2, 0x4a, 0x1a, 0x85, 0xa3, 0x47, 0x87, 0x51, 0x38, 0x0a, 0xe1,
            0x00, 0x10, 0xda, 0x3f, 0xa5, 0x21,
        ];
        assert!(zlib_decompress(&z).is_err());
        let mut inf = Inflater::with_limit(Vec::new(), 2000);
        let fed = z.chunks(8).try_for_each(|c| inf.write_all(c));
        assert!(fed.is_err() || inf.finish().is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(v in proptest::collection::vec(proptest::num::u8::ANY, 0..2000)) {
            let _ = zlib_decompress(&v);
        }
    }
}
