//! Storing one regular file: whole-file object or content-defined chunks.

use std::borrow::Cow;
use std::fs::File;
use std::io::{Read, Write};

use perch_format::catalog::Chunk;
use perch_format::compress::{zlib_compress, Compression};
use perch_format::hash::{Algorithm, ContentHash, Hasher, ObjectKind};

use crate::chunker::ChunkSizes;
use crate::error::{PublishError, Result};
use crate::store::Store;
use crate::tree::FileJob;

/// Files up to this size are read into memory whole when not chunked.
const IN_MEMORY_LIMIT: u64 = 16 << 20;

/// The stored form of a file's content.
#[derive(Debug, Clone)]
pub(crate) enum Content {
    /// One object (letter none), `size` decompressed bytes.
    Whole { hash: ContentHash, size: u64 },
    /// Two or more `P` objects tiling `size` bytes.
    Chunked { size: u64, chunks: Vec<Chunk> },
}

impl Content {
    pub fn size(&self) -> u64 {
        match self {
            Content::Whole { size, .. } | Content::Chunked { size, .. } => *size,
        }
    }
}

/// How objects are made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Encoding {
    pub algo: Algorithm,
    pub compression: Compression,
    pub chunking: Option<ChunkSizes>,
}

impl Encoding {
    fn encode<'a>(&self, data: &'a [u8]) -> Cow<'a, [u8]> {
        match self.compression {
            Compression::Zlib => Cow::Owned(zlib_compress(data)),
            Compression::None => Cow::Borrowed(data),
        }
    }
}

fn len64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Read into `buf` until it holds `want` bytes or the file ends; true at EOF.
fn fill(f: &mut File, buf: &mut Vec<u8>, want: usize, job: &FileJob) -> Result<bool> {
    while buf.len() < want {
        let old = buf.len();
        let step = (want - old).min(1 << 20);
        buf.resize(old + step, 0);
        let n = loop {
            match f.read(&mut buf[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(PublishError::Io {
                        op: "read",
                        path: job.path.clone(),
                        source: e,
                    })
                }
            }
        };
        buf.truncate(old + n);
        if n == 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Store `job`'s content; `progress` is called with the number of bytes read.
pub(crate) fn store_file(
    store: &Store,
    job: &FileJob,
    enc: &Encoding,
    progress: &dyn Fn(u64),
) -> Result<Content> {
    let mut f = File::open(&job.path).map_err(PublishError::io("open", &job.path))?;
    match enc.chunking {
        Some(sizes) if job.size > len64(sizes.min) => {
            store_chunked(store, job, enc, sizes, &mut f, progress)
        }
        _ if job.size <= IN_MEMORY_LIMIT => {
            let mut data = Vec::with_capacity(usize::try_from(job.size).unwrap_or(0));
            f.read_to_end(&mut data)
                .map_err(PublishError::io("read", &job.path))?;
            progress(len64(data.len()));
            let hash = store.put(enc.algo, ObjectKind::File, &enc.encode(&data))?;
            Ok(Content::Whole {
                hash,
                size: len64(data.len()),
            })
        }
        _ => store_streamed(store, job, enc, &mut f, progress),
    }
}

fn store_chunked(
    store: &Store,
    job: &FileJob,
    enc: &Encoding,
    sizes: ChunkSizes,
    f: &mut File,
    progress: &dyn Fn(u64),
) -> Result<Content> {
    let mut window: Vec<u8> = Vec::with_capacity(sizes.max);
    let mut eof = false;
    let mut offset = 0u64;
    let mut chunks = Vec::new();
    loop {
        if !eof {
            let before = window.len();
            eof = fill(f, &mut window, sizes.max, job)?;
            progress(len64(window.len() - before));
        }
        if window.is_empty() && (eof || !chunks.is_empty()) {
            break;
        }
        let cut = sizes.next_cut(&window, eof);
        if chunks.is_empty() && eof && cut == window.len() {
            // Exactly one chunk: store the file unchunked.
            let hash = store.put(enc.algo, ObjectKind::File, &enc.encode(&window))?;
            return Ok(Content::Whole {
                hash,
                size: len64(window.len()),
            });
        }
        let hash = store.put(enc.algo, ObjectKind::Chunk, &enc.encode(&window[..cut]))?;
        chunks.push(Chunk {
            offset,
            size: len64(cut),
            hash,
        });
        offset += len64(cut);
        window.drain(..cut);
    }
    Ok(Content::Chunked {
        size: offset,
        chunks,
    })
}

/// Hashes and counts what passes through to the temporary object file.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Hasher,
    len: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += len64(n);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Large unchunked file: compress and hash on the fly into a temporary object.
fn store_streamed(
    store: &Store,
    job: &FileJob,
    enc: &Encoding,
    f: &mut File,
    progress: &dyn Fn(u64),
) -> Result<Content> {
    let tmp = store.temp()?;
    let tmp_path = tmp.path().to_path_buf();
    let file = tmp
        .as_file()
        .try_clone()
        .map_err(PublishError::io("open", &tmp_path))?;
    let out = HashingWriter {
        inner: std::io::BufWriter::with_capacity(1 << 20, file),
        hasher: enc.algo.hasher(),
        len: 0,
    };
    let wio = PublishError::io("write", &tmp_path);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    let mut pump = |w: &mut dyn Write| -> Result<()> {
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(PublishError::Io {
                        op: "read",
                        path: job.path.clone(),
                        source: e,
                    })
                }
            };
            w.write_all(&buf[..n])
                .map_err(PublishError::io("write", &tmp_path))?;
            size += len64(n);
            progress(len64(n));
        }
    };
    let mut out = match enc.compression {
        Compression::Zlib => {
            let mut z = flate2::write::ZlibEncoder::new(out, flate2::Compression::new(6));
            pump(&mut z)?;
            z.finish().map_err(wio)?
        }
        Compression::None => {
            let mut out = out;
            pump(&mut out)?;
            out
        }
    };
    out.flush().map_err(PublishError::io("write", &tmp_path))?;
    let HashingWriter { inner, hasher, len } = out;
    drop(inner);
    let hash = hasher.finish();
    store.put_temp(tmp, &hash, ObjectKind::File, len)?;
    Ok(Content::Whole { hash, size })
}
