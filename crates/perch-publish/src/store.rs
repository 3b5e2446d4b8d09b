//! The stratum directory as a content-addressed object store.
//!
//! Objects are written to a temporary file in `data/txn/` and renamed into
//! `data/XX/...`, so a reader never sees a partial object. An object already
//! present is not written again (its name is its content hash).

use std::fs::{File, Permissions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use perch_format::compress::zlib_decompress;
use perch_format::hash::{Algorithm, ContentHash, ObjectKind};

use crate::error::{PublishError, Result};

/// Upload counters.
#[derive(Debug, Default)]
pub(crate) struct StoreStats {
    pub new_objects: AtomicU64,
    pub new_bytes: AtomicU64,
    pub reused_objects: AtomicU64,
}

/// A stratum directory (`.cvmfspublished`, `data/`, ...).
#[derive(Debug)]
pub(crate) struct Store {
    root: PathBuf,
    txn: PathBuf,
    pub stats: StoreStats,
}

impl Store {
    /// Open (and lay out) a stratum directory.
    pub fn open(root: &Path) -> Result<Store> {
        let data = root.join("data");
        let txn = data.join("txn");
        std::fs::create_dir_all(&txn).map_err(PublishError::io("create", &txn))?;
        for i in 0..=255u8 {
            let d = data.join(format!("{i:02x}"));
            if !d.is_dir() {
                std::fs::create_dir(&d).map_err(PublishError::io("create", &d))?;
            }
        }
        Ok(Store {
            root: root.to_path_buf(),
            txn,
            stats: StoreStats::default(),
        })
    }

    /// The stratum directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Full path of an object.
    pub fn object_path(&self, hash: &ContentHash, kind: ObjectKind) -> PathBuf {
        self.root.join(hash.object_path(kind))
    }

    /// A new temporary file in `data/txn/`, mode 0644, removed unless persisted.
    pub fn temp(&self) -> Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix("perch.")
            .permissions(Permissions::from_mode(0o644))
            .tempfile_in(&self.txn)
            .map_err(PublishError::io("create a temporary file in", &self.txn))
    }

    /// A temporary path in `data/txn/` for SQLite to create (removed on drop).
    pub fn temp_dir(&self) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix("perch.db.")
            .tempdir_in(&self.txn)
            .map_err(PublishError::io(
                "create a temporary directory in",
                &self.txn,
            ))
    }

    fn count_reused(&self) {
        self.stats.reused_objects.fetch_add(1, Ordering::Relaxed);
    }

    fn count_new(&self, bytes: u64) {
        self.stats.new_objects.fetch_add(1, Ordering::Relaxed);
        self.stats.new_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Store `stored` (already compressed as it should be served) under its
    /// hash in `algo`; returns the hash. Not written again if present.
    pub fn put(&self, algo: Algorithm, kind: ObjectKind, stored: &[u8]) -> Result<ContentHash> {
        let hash = algo.digest(stored);
        let dest = self.object_path(&hash, kind);
        if dest.exists() {
            self.count_reused();
            return Ok(hash);
        }
        let mut tmp = self.temp()?;
        tmp.write_all(stored)
            .map_err(PublishError::io("write", tmp.path()))?;
        self.commit(tmp, &dest)?;
        self.count_new(u64::try_from(stored.len()).unwrap_or(u64::MAX));
        Ok(hash)
    }

    /// Move a finished temporary object (written by the caller, hash known)
    /// into place, or drop it if the object exists already.
    pub fn put_temp(
        &self,
        tmp: tempfile::NamedTempFile,
        hash: &ContentHash,
        kind: ObjectKind,
        len: u64,
    ) -> Result<()> {
        let dest = self.object_path(hash, kind);
        if dest.exists() {
            self.count_reused();
            return Ok(());
        }
        self.commit(tmp, &dest)?;
        self.count_new(len);
        Ok(())
    }

    fn commit(&self, tmp: tempfile::NamedTempFile, dest: &Path) -> Result<()> {
        tmp.as_file()
            .sync_data()
            .map_err(PublishError::io("sync", tmp.path()))?;
        tmp.persist(dest).map_err(|e| PublishError::Io {
            op: "rename into",
            path: dest.to_path_buf(),
            source: e.error,
        })?;
        Ok(())
    }

    /// Read an object's stored bytes.
    pub fn read(&self, hash: &ContentHash, kind: ObjectKind) -> Result<Vec<u8>> {
        let p = self.object_path(hash, kind);
        std::fs::read(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => PublishError::MissingObject(hash.object_path(kind)),
            _ => PublishError::Io {
                op: "read",
                path: p,
                source: e,
            },
        })
    }

    /// Read and inflate a zlib object into a temporary file (for SQLite).
    pub fn inflate_to_temp(
        &self,
        hash: &ContentHash,
        kind: ObjectKind,
    ) -> Result<tempfile::NamedTempFile> {
        let stored = self.read(hash, kind)?;
        // The name is the hash of the stored bytes: check before trusting it.
        if hash.algo.digest(&stored) != *hash {
            return Err(PublishError::CorruptObject {
                path: self.object_path(hash, kind),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "content does not match its hash",
                ),
            });
        }
        let data = zlib_decompress(&stored).map_err(|source| PublishError::CorruptObject {
            path: self.object_path(hash, kind),
            source,
        })?;
        let mut tmp = self.temp()?;
        tmp.write_all(&data)
            .map_err(PublishError::io("write", tmp.path()))?;
        tmp.flush().map_err(PublishError::io("write", tmp.path()))?;
        Ok(tmp)
    }

    /// Replace a top-level file (`.cvmfspublished`, `.cvmfswhitelist`,
    /// `.cvmfsreflog`) atomically.
    pub fn replace_file(&self, name: &str, data: &[u8]) -> Result<()> {
        let mut tmp = self.temp()?;
        tmp.write_all(data)
            .map_err(PublishError::io("write", tmp.path()))?;
        self.commit(tmp, &self.root.join(name))
    }

    /// Make sure an (empty) top-level marker file exists.
    pub fn touch(&self, name: &str) -> Result<()> {
        let p = self.root.join(name);
        if !p.exists() {
            File::create(&p).map_err(PublishError::io("create", &p))?;
        }
        Ok(())
    }
}
