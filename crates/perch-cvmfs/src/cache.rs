//! The local (or alien) object cache: verified, decompressed objects.
//!
//! Layout follows the real client: `XX/<rest><suffix>` per object (no type
//! letter), `txn/` for downloads in progress, `cvmfschecksum.<fqrn>` breadcrumbs.
//! An object becomes visible only by `rename` of a complete, verified temp file,
//! so a crash or a concurrent writer never exposes a partial object, and many
//! processes (or hosts, for an alien cache) may fill the same directory.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use perch_format::compress::{Compression, Inflater};
use perch_format::hash::{Algorithm, ContentHash, ObjectKind};

use crate::fetch::{FetchError, Fetcher, Verdict};

/// Errors of the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A local file operation failed.
    #[error("cache {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The download failed.
    #[error("cannot fetch object {hash}")]
    Fetch {
        /// Object hash.
        hash: String,
        /// Why.
        #[source]
        source: FetchError,
    },
}

impl CacheError {
    fn io(path: &Path, source: std::io::Error) -> CacheError {
        CacheError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Counters for `perch cache stats` and the demo.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Objects found complete in the cache.
    pub hits: AtomicU64,
    /// Objects downloaded.
    pub downloads: AtomicU64,
    /// Bytes received (stored form).
    pub bytes_in: AtomicU64,
}

/// A download in progress: done flag and its waiters.
type Slot = (Mutex<bool>, Condvar);

/// A cache directory.
#[derive(Debug)]
pub struct Cache {
    root: PathBuf,
    /// File mode for objects (0700 local, 0770 alien: executables are run
    /// from hard links to objects, so objects keep the owner's x bit).
    object_mode: u32,
    inflight: Mutex<HashMap<String, Arc<Slot>>>,
    /// Counters.
    pub stats: CacheStats,
}

/// Stale temp files older than this are removed at start (another process may
/// still be writing younger ones into a shared cache).
const STALE_TXN: Duration = Duration::from_secs(3600);

impl Cache {
    /// Open (create) a cache at `root`; `shared` selects alien-cache modes.
    pub fn open(root: &Path, shared: bool) -> Result<Cache, CacheError> {
        let dir_mode = if shared { 0o770 } else { 0o700 };
        for d in [root.to_path_buf(), root.join("txn")] {
            fs::create_dir_all(&d).map_err(|e| CacheError::io(&d, e))?;
            let _ = fs::set_permissions(&d, fs::Permissions::from_mode(dir_mode));
        }
        let cache = Cache {
            root: root.to_path_buf(),
            object_mode: if shared { 0o770 } else { 0o700 },
            inflight: Mutex::new(HashMap::new()),
            stats: CacheStats::default(),
        };
        cache.clean_txn();
        Ok(cache)
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn clean_txn(&self) {
        let Ok(rd) = fs::read_dir(self.root.join("txn")) else {
            return;
        };
        let now = SystemTime::now();
        for e in rd.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default() > STALE_TXN)
                .unwrap_or(false);
            if old {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// Where object `h` lives (whether or not it is there).
    pub fn object_path(&self, h: &ContentHash) -> PathBuf {
        self.root.join(h.cache_path())
    }

    /// Path of a complete object, if cached.
    pub fn get(&self, h: &ContentHash) -> Option<PathBuf> {
        let p = self.object_path(h);
        p.exists().then_some(p)
    }

    /// Create a temp file in `txn/`.
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile, CacheError> {
        let txn = self.root.join("txn");
        tempfile::Builder::new()
            .prefix("fetch")
            .tempfile_in(&txn)
            .map_err(|e| CacheError::io(&txn, e))
    }

    /// Move a complete temp file into place as `dest` (atomic).
    pub fn commit(&self, tmp: tempfile::NamedTempFile, dest: &Path) -> Result<(), CacheError> {
        let _ = fs::set_permissions(tmp.path(), fs::Permissions::from_mode(self.object_mode));
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).map_err(|e| CacheError::io(dir, e))?;
        }
        tmp.persist(dest)
            .map_err(|e| CacheError::io(dest, e.error))?;
        Ok(())
    }

    /// Run `work` once per `key` inside this process: concurrent callers wait
    /// for the first one and then re-check the cache themselves.
    fn coalesce<T>(
        &self,
        key: &str,
        work: impl FnOnce() -> Result<T, CacheError>,
    ) -> Result<T, CacheError>
    where
        T: Clone,
    {
        let (slot, leader) = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(key) {
                Some(s) => (s.clone(), false),
                None => {
                    let s = Arc::new((Mutex::new(false), Condvar::new()));
                    map.insert(key.to_string(), s.clone());
                    (s, true)
                }
            }
        };
        if !leader {
            let (m, cv) = &*slot;
            let mut done = m.lock().unwrap_or_else(|p| p.into_inner());
            while !*done {
                done = cv.wait(done).unwrap_or_else(|p| p.into_inner());
            }
            drop(done);
            return work();
        }
        let r = work();
        {
            let (m, cv) = &*slot;
            *m.lock().unwrap_or_else(|p| p.into_inner()) = true;
            cv.notify_all();
        }
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        r
    }

    /// Make sure object `h` (stored as `kind` with `compression`) is in the
    /// cache, downloading and verifying it if needed; returns its path.
    /// `expected_size` is the decompressed size the catalog promises.
    pub fn fetch_object(
        &self,
        fetcher: &Fetcher,
        h: &ContentHash,
        kind: ObjectKind,
        compression: Compression,
        expected_size: Option<u64>,
    ) -> Result<PathBuf, CacheError> {
        let dest = self.object_path(h);
        if dest.exists() {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(dest);
        }
        self.coalesce(&h.to_string(), || {
            if dest.exists() {
                return Ok(dest.clone());
            }
            let tmp = self.download(fetcher, h, kind, compression, expected_size)?;
            self.commit(tmp, &dest)?;
            Ok(dest.clone())
        })
    }

    /// Download and verify into a temp file (not yet visible).
    fn download(
        &self,
        fetcher: &Fetcher,
        h: &ContentHash,
        kind: ObjectKind,
        compression: Compression,
        expected_size: Option<u64>,
    ) -> Result<tempfile::NamedTempFile, CacheError> {
        let rel = h.object_path(kind);
        let mut io_err: Option<CacheError> = None;
        let res = fetcher.fetch(&rel, &mut |body| {
            let tmp = match self.temp_file() {
                Ok(t) => t,
                Err(e) => {
                    let msg = e.to_string();
                    io_err = Some(e);
                    return Ok(Verdict::Abort(msg));
                }
            };
            let path = tmp.path().to_path_buf();
            match stream_verified(body, tmp, h, compression, expected_size) {
                Ok(Ok((tmp, stored))) => {
                    self.stats.bytes_in.fetch_add(stored, Ordering::Relaxed);
                    Ok(Verdict::Good(tmp))
                }
                Ok(Err(reason)) => Ok(Verdict::Bad(reason)),
                Err(StreamError::Read(e)) => Err(e),
                Err(StreamError::Write(e)) => {
                    let msg = e.to_string();
                    io_err = Some(CacheError::io(&path, e));
                    Ok(Verdict::Abort(msg))
                }
            }
        });
        if let Some(e) = io_err {
            return Err(e);
        }
        let tmp = res.map_err(|source| CacheError::Fetch {
            hash: h.to_string(),
            source,
        })?;
        self.stats.downloads.fetch_add(1, Ordering::Relaxed);
        Ok(tmp)
    }

    /// Assemble a chunked file into one whole-file object named by `key`
    /// (the chunks are verified one by one as they stream in).
    pub fn fetch_chunked(
        &self,
        fetcher: &Fetcher,
        key: &ContentHash,
        chunks: &[perch_format::catalog::Chunk],
        compression: Compression,
    ) -> Result<PathBuf, CacheError> {
        let dest = self.root.join("chunked").join(key.cache_path());
        if dest.exists() {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(dest);
        }
        self.coalesce(&format!("chunked:{key}"), || {
            if dest.exists() {
                return Ok(dest.clone());
            }
            let mut whole = self.temp_file()?;
            for c in chunks {
                let part = self.download(
                    fetcher,
                    &c.hash,
                    ObjectKind::Chunk,
                    compression,
                    Some(c.size),
                )?;
                let mut f = part.reopen().map_err(|e| CacheError::io(part.path(), e))?;
                std::io::copy(&mut f, whole.as_file_mut())
                    .map_err(|e| CacheError::io(whole.path(), e))?;
            }
            self.commit(whole, &dest)?;
            Ok(dest.clone())
        })
    }

    /// Read the breadcrumb of `fqrn`: (root hash, publish time, revision).
    pub fn read_breadcrumb(&self, fqrn: &str) -> Option<(ContentHash, u64, u64)> {
        let s = fs::read_to_string(self.root.join(format!("cvmfschecksum.{fqrn}"))).ok()?;
        let (h, rest) = s.trim().split_once('T')?;
        let (t, r) = rest.split_once('R')?;
        Some((h.parse().ok()?, t.parse().ok()?, r.parse().ok()?))
    }

    /// Write the breadcrumb atomically.
    pub fn write_breadcrumb(
        &self,
        fqrn: &str,
        root: &ContentHash,
        timestamp: u64,
        revision: u64,
    ) -> Result<(), CacheError> {
        let dest = self.root.join(format!("cvmfschecksum.{fqrn}"));
        let mut tmp = self.temp_file()?;
        write!(tmp, "{root}T{timestamp}R{revision}").map_err(|e| CacheError::io(tmp.path(), e))?;
        let _ = fs::set_permissions(
            tmp.path(),
            fs::Permissions::from_mode(self.object_mode & 0o660),
        );
        tmp.persist(&dest)
            .map_err(|e| CacheError::io(&dest, e.error))?;
        Ok(())
    }
}

/// Where streaming an object failed: reading the reply (a transfer error) or
/// writing the temp file (a local error that stops the download).
enum StreamError {
    Read(std::io::Error),
    Write(std::io::Error),
}

/// Stream `body` into `tmp`, hashing the stored bytes and decompressing.
/// The inner `Err` is a bad-data reason.
fn stream_verified(
    body: &mut dyn Read,
    tmp: tempfile::NamedTempFile,
    h: &ContentHash,
    compression: Compression,
    expected_size: Option<u64>,
) -> Result<Result<(tempfile::NamedTempFile, u64), String>, StreamError> {
    let mut hasher = Algorithm::hasher(h.algo);
    let mut buf = vec![0u8; 128 * 1024];
    let mut stored = 0u64;
    let out = std::io::BufWriter::with_capacity(256 * 1024, tmp);
    enum Sink<W: Write> {
        Zlib(Inflater<W>),
        Raw(W),
    }
    let mut sink = match compression {
        Compression::Zlib => Sink::Zlib(Inflater::new(out)),
        Compression::None => Sink::Raw(out),
    };
    loop {
        let n = body.read(&mut buf).map_err(StreamError::Read)?;
        if n == 0 {
            break;
        }
        stored += n as u64;
        hasher.update(&buf[..n]);
        let w = match &mut sink {
            Sink::Zlib(z) => z.write_all(&buf[..n]),
            Sink::Raw(w) => w.write_all(&buf[..n]),
        };
        if let Err(e) = w {
            if e.kind() == std::io::ErrorKind::InvalidData {
                return Ok(Err(format!("corrupt object: {e}")));
            }
            return Err(StreamError::Write(e));
        }
        if let Some(want) = expected_size {
            if matches!(compression, Compression::None) && stored > want {
                return Ok(Err(format!(
                    "object larger than the catalog's {want} bytes"
                )));
            }
        }
    }
    let got = hasher.finish();
    if got != *h {
        return Ok(Err(format!("hash mismatch: content hashes to {got}")));
    }
    let out = match sink {
        Sink::Zlib(z) => match z.finish() {
            Ok(w) => w,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Ok(Err(format!("corrupt object: {e}")))
            }
            Err(e) => return Err(StreamError::Write(e)),
        },
        Sink::Raw(w) => w,
    };
    let tmp = out
        .into_inner()
        .map_err(|e| StreamError::Write(e.into_error()))?;
    if let Some(want) = expected_size {
        let have = tmp.as_file().metadata().map_err(StreamError::Write)?.len();
        if have != want {
            return Ok(Err(format!(
                "decompressed size {have} differs from the catalog's {want}"
            )));
        }
    }
    Ok(Ok((tmp, stored)))
}
