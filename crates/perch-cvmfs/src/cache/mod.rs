//! The local (or alien) object cache: verified, decompressed objects.
//!
//! Layout follows the real client: `XX/<rest><suffix>` per object (no type
//! letter), `chunked/XX/...` for chunked files assembled whole, `txn/` for
//! downloads in progress, `cvmfschecksum.<fqrn>` breadcrumbs, `trust/` for each
//! user's index of verified files.
//!
//! One concern per file: this one stores and fetches objects; [`trust`] decides
//! whether a cached file may be served; `claim` coordinates processes and cleans
//! up after dead ones; `quota` evicts; `check` re-verifies the whole cache.
//!
//! **Crash safety.** An object becomes visible only by `rename` of a complete,
//! verified temp file, so a crash or a concurrent writer never exposes a partial
//! object. Inside one process, concurrent requests for the same object coalesce
//! into one download; across processes a claim (`claim`) avoids duplicates.
//!
//! **Modes** (DESIGN.md §4a). Objects and catalogs are mode 0555: no write bit
//! for anyone (the x bit because executables run from hard links to objects). A
//! local cache's directories are 0700. An alien cache's directories are 03770:
//! group members may add objects, the sticky bit stops them from renaming or
//! removing another user's, and set-group-ID keeps the directory's group (the
//! site's choice; see docs/site-admins.md). `txn/` has no sticky bit, so that the
//! leftovers of a dead user's process can be removed by anyone.
//!
//! **Trust on use.** A file found in the cache is served only when this user
//! verified it ([`trust::TrustIndex`]): its stamp matches the index, or its hash
//! matches the digest this user's download recorded (or its name, for an
//! uncompressed object). Otherwise perch downloads the object, verifies it, and
//! keeps the cached file if it is equal, else replaces it; a changed file it may
//! not replace (another user's, in a sticky directory) is never served.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use perch_format::compress::{buffer_len, Compression, Inflater};
use perch_format::hash::{Algorithm, ContentHash, ObjectKind};

use crate::fetch::{FetchError, Fetcher, Verdict};

mod check;
mod claim;
pub use claim::MAX_HELPS;
mod quota;
pub mod trust;

pub use check::CheckReport;
pub use claim::{CLAIMS_FILE, STALE_CLAIM};
pub use quota::GcReport;
use trust::{hash_fd, Digest, Stamp, TrustIndex};

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
    /// The object does not fit in the quota (larger than half the limit).
    #[error("object {hash} of {size} bytes exceeds half of the cache quota ({limit} bytes, CVMFS_QUOTA_LIMIT)")]
    NoSpace {
        /// Object hash.
        hash: String,
        /// Its decompressed size.
        size: u64,
        /// The quota limit in bytes.
        limit: u64,
    },
    /// A cached file is not what this user verified, and perch could not put a good copy there.
    #[error("cache object {path} is not served: {why}")]
    Untrusted {
        /// The object.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

impl CacheError {
    fn io(path: &Path, source: std::io::Error) -> CacheError {
        CacheError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// errno for a program whose read hit this error.
    pub fn errno(&self) -> i32 {
        match self {
            CacheError::NoSpace { .. } => libc::ENOSPC,
            CacheError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
                libc::ENOSPC
            }
            _ => libc::EIO,
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
    /// Of those, objects fetched on speculation while another process downloaded one this
    /// process waited for ([`Cache::prefetch_object`]).
    pub prefetched: AtomicU64,
    /// Bytes received (stored form).
    pub bytes_in: AtomicU64,
    /// Objects evicted by the quota.
    pub evicted: AtomicU64,
    /// Bytes of cached files hashed to verify them on use (not counting downloads).
    pub verified_bytes: AtomicU64,
}

/// How a cache is managed.
#[derive(Debug, Clone, Default)]
pub struct CacheOptions {
    /// Alien cache: group-writable sticky directories, no quota.
    pub alien: bool,
    /// Quota limit in bytes (`None` = unmanaged).
    pub quota_limit: Option<u64>,
    /// Fraction of the limit a cleanup shrinks to (default 0.5).
    pub cleanup_ratio: Option<f64>,
    /// Users whose trust indexes count as this user's own (`CVMFS_PERCH_TRUSTED_UIDS`).
    pub trusted_uids: Vec<u32>,
}

/// A download in progress: done flag and its waiters.
type Slot = (Mutex<bool>, Condvar);

/// This process's download of one object in flight; when it ends (dropped), the threads
/// that waited for it look at the cache again.
struct Leading<'a> {
    cache: &'a Cache,
    key: String,
    slot: Arc<Slot>,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        let (m, cv) = &*self.slot;
        *lock(m) = true;
        cv.notify_all();
        lock(&self.cache.inflight).remove(&self.key);
    }
}

/// Mode of committed objects and catalogs: no write bit for anyone.
pub const OBJECT_MODE: u32 = 0o555;
/// Mode of an alien cache's directories: group-writable, sticky, set-group-ID.
pub const ALIEN_DIR_MODE: u32 = 0o3770;

/// A cache directory.
#[derive(Debug)]
pub struct Cache {
    root: PathBuf,
    opts: CacheOptions,
    dir_mode: u32,
    inflight: Mutex<HashMap<String, Arc<Slot>>>,
    pinned: Mutex<HashSet<PathBuf>>,
    /// Bytes of objects (as of the last scan plus inserts since).
    usage: AtomicU64,
    /// The count shared with the other processes (managed caches only).
    usage_file: Option<quota::UsageFile>,
    trust: TrustIndex,
    /// Claims on downloads, shared with the other processes of this cache.
    claims: claim::Claims,
    /// The indexes of the site's trusted fillers (read only).
    fillers: Vec<TrustIndex>,
    /// Counters.
    pub stats: CacheStats,
}

/// What this user knows about the file at an object's place.
#[derive(Debug)]
pub enum Look {
    /// No file there.
    Absent,
    /// Verified by this user: may be served.
    Trusted,
    /// There, but this user has no digest to compare it with: a download will tell.
    Unknown,
    /// Not what this user verified.
    Bad(String),
}

/// Opens (creates with `mode`) a file of the cache that perch keeps for itself, for reading
/// and writing, not following a symlink; `flags` are added to the open. A file that is not a
/// regular file of this user (another user of an alien cache made it first) is an error; one
/// with permission bits beyond `mode` gets `mode`.
fn open_own_file(path: &Path, mode: u32, flags: libc::c_int) -> std::io::Result<fs::File> {
    open_own(path, mode, true, flags)
}

/// Opens (creates) a file of the cache used only to hold locks on: write-only, mode 0200, so
/// that a program of the same user (under `perch run`, which refuses it write opens and
/// `chmod` in the cache) cannot open it at all, and so cannot take a lock on it that would
/// stall perch's (the kernel lets any open descriptor hold an `flock` or a read lock).
/// Checked like [`open_own_file`].
fn open_lock_file(path: &Path, flags: libc::c_int) -> std::io::Result<fs::File> {
    open_own(path, LOCK_FILE_MODE, false, flags)
}

/// Mode of the files only locked ([`open_lock_file`]).
const LOCK_FILE_MODE: u32 = 0o200;

fn open_own(path: &Path, mode: u32, read: bool, flags: libc::c_int) -> std::io::Result<fs::File> {
    let f = fs::OpenOptions::new()
        .read(read)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | flags)
        .open(path)?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if m.uid() != nix::unistd::getuid().as_raw() {
        return Err(std::io::Error::other("owned by another user"));
    }
    if m.mode() & 0o777 & !mode != 0 {
        let _ = f.set_permissions(fs::Permissions::from_mode(mode));
    }
    Ok(f)
}

fn open_object(p: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(p)
}

impl Cache {
    /// Open (create) a cache at `root`; `shared` selects alien-cache modes.
    pub fn open(root: &Path, shared: bool) -> Result<Cache, CacheError> {
        Self::open_with(
            root,
            CacheOptions {
                alien: shared,
                ..CacheOptions::default()
            },
        )
    }

    /// Open (create) a cache with options; removes leftovers of dead processes.
    pub fn open_with(root: &Path, opts: CacheOptions) -> Result<Cache, CacheError> {
        let alien = opts.alien;
        let dir_mode = if alien { ALIEN_DIR_MODE } else { 0o700 };
        // txn/ is not sticky: anyone may remove what a dead process left there.
        for (d, mode) in [
            (root.to_path_buf(), dir_mode),
            (root.join("txn"), dir_mode & !0o1000),
        ] {
            if !d.is_dir() {
                fs::create_dir_all(&d).map_err(|e| CacheError::io(&d, e))?;
                let _ = fs::set_permissions(&d, fs::Permissions::from_mode(mode));
            }
        }
        if alien {
            if let Ok(m) = fs::metadata(root) {
                if m.mode() & 0o022 != 0 && m.mode() & 0o1000 == 0 {
                    tracing::warn!(target: "cache", dir = %root.display(),
                        "the alien cache is writable by other users but has no sticky bit: they can replace this user's objects (chmod +t; see docs/site-admins.md)");
                }
            }
        }
        let opts = if alien {
            CacheOptions {
                quota_limit: None,
                ..opts
            }
        } else {
            opts
        };
        let fillers = opts
            .trusted_uids
            .iter()
            .filter(|&&u| u != nix::unistd::getuid().as_raw())
            .filter_map(|&u| TrustIndex::open_filler(root, u))
            .collect();
        let mut cache = Cache {
            root: root.to_path_buf(),
            opts,
            dir_mode,
            inflight: Mutex::new(HashMap::new()),
            pinned: Mutex::new(HashSet::new()),
            usage: AtomicU64::new(0),
            usage_file: None,
            trust: TrustIndex::open(root, dir_mode),
            claims: claim::Claims::open(root),
            fillers,
            stats: CacheStats::default(),
        };
        claim::clean_txn(&cache.root.join("txn"));
        if cache.opts.quota_limit.is_some() {
            cache.usage_file = quota::UsageFile::open(root)
                .map_err(|e| tracing::debug!(target: "cache", "{}: {e}", quota::USAGE_FILE))
                .ok();
            cache.load_usage();
        }
        Ok(cache)
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether this is an alien (shared) cache.
    pub fn is_alien(&self) -> bool {
        self.opts.alien
    }

    /// The quota limit in bytes, if managed.
    pub fn quota_limit(&self) -> Option<u64> {
        self.opts.quota_limit
    }

    /// Bytes in objects: the count shared by the cache's processes as of this process's last
    /// insert (exact after a cleanup).
    pub fn usage(&self) -> u64 {
        self.usage.load(Ordering::Relaxed)
    }

    /// This user's index of verified files.
    pub fn trust(&self) -> &TrustIndex {
        &self.trust
    }

    /// Where object `h` lives (whether or not it is there).
    pub fn object_path(&self, h: &ContentHash) -> PathBuf {
        self.root.join(h.cache_path())
    }

    /// Where the assembled file of a chunked file named `key` lives (whether or not it is there).
    pub fn chunked_path(&self, key: &ContentHash) -> PathBuf {
        self.root.join("chunked").join(key.cache_path())
    }

    /// The name of an object in the trust index: its path below the cache root.
    fn name_of(&self, dest: &Path) -> String {
        dest.strip_prefix(&self.root)
            .unwrap_or(dest)
            .to_string_lossy()
            .into_owned()
    }

    /// Path of a cached object, if there (verified or not: use [`Cache::fetch_object`] to
    /// get one that may be served).
    pub fn get(&self, h: &ContentHash) -> Option<PathBuf> {
        let p = self.object_path(h);
        p.exists().then_some(p)
    }

    /// Keep object `h` through quota cleanups (catalogs of mounted revisions).
    pub fn pin(&self, h: &ContentHash) {
        lock(&self.pinned).insert(self.object_path(h));
    }

    /// Release a pin.
    pub fn unpin(&self, h: &ContentHash) {
        lock(&self.pinned).remove(&self.object_path(h));
    }

    /// Create a temp file in `txn/`.
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile, CacheError> {
        let txn = self.root.join("txn");
        tempfile::Builder::new()
            .prefix(&format!(
                "fetch.{}.{}.",
                claim::hostname(),
                std::process::id()
            ))
            .tempfile_in(&txn)
            .map_err(|e| CacheError::io(&txn, e))
    }

    /// Is `file`, which should hold object `dest`, what this user verified? `by_name`: the
    /// object's hash when it is stored as downloaded (uncompressed), so that its name verifies it.
    pub fn verify_file(&self, dest: &Path, file: &fs::File, by_name: Option<&ContentHash>) -> Look {
        let name = self.name_of(dest);
        let Ok(stamp) = Stamp::of(file) else {
            return Look::Unknown;
        };
        if self.trust.verified(&name, &stamp) {
            return Look::Trusted;
        }
        // A trusted filler verified this very file: adopt its record.
        for f in &self.fillers {
            if f.verified(&name, &stamp) {
                if let Some(d) = f.digest(&name) {
                    self.trust.record(&name, &d, &stamp);
                }
                return Look::Trusted;
            }
        }
        let want = self
            .trust
            .digest(&name)
            .or_else(|| self.fillers.iter().find_map(|f| f.digest(&name)));
        if let Some(d) = &want {
            if d.size != stamp.size {
                return Look::Bad(format!(
                    "{} bytes where this user's verified download had {}",
                    stamp.size, d.size
                ));
            }
        }
        let algo = by_name.map_or(Algorithm::Sha1, |h| h.algo);
        if want.is_none() && by_name.is_none() {
            return Look::Unknown;
        }
        // Other processes link and rename the file (which changes its ctime) while we hash:
        // a few attempts until nothing changed during one.
        let mut tries = 0;
        let (got, after, stable) = loop {
            tries += 1;
            let Ok((got, before, after)) = hash_fd(file, algo) else {
                return Look::Unknown;
            };
            self.stats
                .verified_bytes
                .fetch_add(after.size, Ordering::Relaxed);
            if before == after || tries == 3 {
                break (got, after, before == after);
            }
        };
        let sha1 = match (want, by_name) {
            (Some(d), _) if d.sha1 == got => d.sha1,
            (Some(_), _) => {
                return Look::Bad("content differs from this user's verified download".into())
            }
            (None, Some(h)) if got == *h && algo == Algorithm::Sha1 => got,
            (None, Some(h)) if got == *h => match hash_fd(file, Algorithm::Sha1) {
                Ok((s, _, _)) => s,
                Err(_) => return Look::Unknown,
            },
            _ => return Look::Bad("content does not hash to the object's name".into()),
        };
        // The content read was the verified one; remember the stamp only if it held throughout.
        if stable {
            self.trust.record(
                &name,
                &Digest {
                    sha1,
                    size: after.size,
                },
                &after,
            );
        }
        Look::Trusted
    }

    /// [`Cache::verify_file`] on the file now at `dest`, and that file.
    pub fn look(&self, dest: &Path, by_name: Option<&ContentHash>) -> (Look, Option<fs::File>) {
        match open_object(dest) {
            Ok(f) => (self.verify_file(dest, &f, by_name), Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Look::Absent, None),
            Err(_) => (Look::Unknown, None),
        }
    }

    /// `file` held object `dest` as this user verified it and has only been linked or renamed
    /// since (which changes its ctime): remember its new stamp.
    pub fn relinked(&self, dest: &Path, file: &fs::File) {
        let name = self.name_of(dest);
        if let (Some(d), Ok(s)) = (self.trust.digest(&name), Stamp::of(file)) {
            if d.size == s.size {
                self.trust.record(&name, &d, &s);
            }
        }
    }

    /// A verified, servable object at `dest`, if there (refreshing its LRU time).
    fn trusted_now(&self, dest: &Path, by_name: Option<&ContentHash>) -> bool {
        match self.look(dest, by_name) {
            (Look::Trusted, Some(f)) => {
                if self.touch(&f) {
                    self.relinked(dest, &f);
                }
                true
            }
            (Look::Trusted, None) => true,
            (Look::Bad(why), _) => {
                tracing::debug!(target: "cache", object = %dest.display(), %why, "not trusted");
                false
            }
            (Look::Absent | Look::Unknown, _) => false,
        }
    }

    /// Put a downloaded, verified temp file in place as `dest`, unless the file already
    /// there has the same content (another process's download: keep it, so that links to
    /// it stay and nobody hashes a new inode again). A different file there is replaced;
    /// if that is not allowed (another user's object in a sticky directory), it is an error.
    fn adopt(
        &self,
        tmp: tempfile::NamedTempFile,
        dest: &Path,
        digest: &Digest,
    ) -> Result<(), CacheError> {
        let name = self.name_of(dest);
        let mut owner = None;
        if let Ok(f) = open_object(dest) {
            if let Ok((got, before, after)) = hash_fd(&f, Algorithm::Sha1) {
                self.stats
                    .verified_bytes
                    .fetch_add(after.size, Ordering::Relaxed);
                if before == after && got == digest.sha1 && after.size == digest.size {
                    self.trust.record(&name, digest, &after);
                    return Ok(());
                }
            }
            owner = f.metadata().ok().map(|m| m.uid());
            tracing::warn!(target: "cache", object = %dest.display(),
                "cached object differs from a verified download: replacing it");
        }
        self.commit(tmp, dest, digest).map_err(|e| match (e, owner) {
            (CacheError::Io { source, .. }, Some(uid))
                if matches!(source.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) =>
            {
                CacheError::Untrusted {
                    path: dest.to_path_buf(),
                    why: format!("it was changed after it was stored, and it belongs to uid {uid}, so this user cannot replace it (its owner or the cache's administrator must remove it)"),
                }
            }
            (e, _) => e,
        })
    }

    /// The directory object `dest` goes in, made if missing (a failure to make it shows when
    /// the object is committed there).
    fn object_dir<'a>(&'a self, dest: &'a Path) -> &'a Path {
        let dir = dest.parent().unwrap_or(&self.root);
        if !dir.is_dir() {
            let _ = self.make_object_dir(dir);
        }
        dir
    }

    /// Make an object directory (`XX/`, or `chunked/XX/`) with the cache's directory mode.
    fn make_object_dir(&self, dir: &Path) -> std::io::Result<()> {
        fs::create_dir_all(dir)?;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(self.dir_mode));
        if let Some(up) = dir.parent().filter(|u| *u != self.root) {
            let _ = fs::set_permissions(up, fs::Permissions::from_mode(self.dir_mode));
        }
        Ok(())
    }

    /// Move a complete, verified temp file into place as `dest` (atomic) with no write bit,
    /// and record it in the trust index.
    fn commit(
        &self,
        tmp: tempfile::NamedTempFile,
        dest: &Path,
        digest: &Digest,
    ) -> Result<(), CacheError> {
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(OBJECT_MODE))
            .map_err(|e| CacheError::io(tmp.path(), e))?;
        // [`Cache::ensure`] made the object's directory before claiming the object; made again
        // only if it went missing since (not looked for before every object).
        let f = match tmp.persist(dest) {
            Ok(f) => f,
            Err(e) if e.error.kind() == std::io::ErrorKind::NotFound => {
                let dir = dest.parent().unwrap_or(&self.root);
                self.make_object_dir(dir)
                    .map_err(|e| CacheError::io(dir, e))?;
                e.file
                    .persist(dest)
                    .map_err(|e| CacheError::io(dest, e.error))?
            }
            Err(e) => return Err(CacheError::io(dest, e.error)),
        };
        // The stamp after the rename (which changed ctime), from our own descriptor.
        let stamp = Stamp::of(&f).map_err(|e| CacheError::io(dest, e))?;
        self.trust.record(&self.name_of(dest), digest, &stamp);
        self.inserted(digest.size);
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
        let _leading = match self.lead(key) {
            Ok(l) => l,
            Err(slot) => {
                let (m, cv) = &*slot;
                let mut done = lock(m);
                while !*done {
                    done = cv.wait(done).unwrap_or_else(|p| p.into_inner());
                }
                drop(done);
                return work();
            }
        };
        work()
    }

    /// Become this process's downloader of `key`, unless another thread is (its slot).
    fn lead(&self, key: &str) -> Result<Leading<'_>, Arc<Slot>> {
        let mut map = lock(&self.inflight);
        if let Some(s) = map.get(key) {
            return Err(s.clone());
        }
        let slot = Arc::new((Mutex::new(false), Condvar::new()));
        map.insert(key.to_string(), slot.clone());
        Ok(Leading {
            cache: self,
            key: key.to_string(),
            slot,
        })
    }

    /// Make sure object `dest` is in the cache and verified by this user, running `download`
    /// (which returns a verified temp file and its digest) when it is not.
    fn ensure(
        &self,
        dest: &Path,
        by_name: Option<&ContentHash>,
        download: impl FnOnce() -> Result<(tempfile::NamedTempFile, Digest), CacheError>,
        help: &mut dyn FnMut() -> bool,
    ) -> Result<PathBuf, CacheError> {
        if self.trusted_now(dest, by_name) {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(dest.to_path_buf());
        }
        let name = self.name_of(dest);
        let dir = self.object_dir(dest);
        let watch = claim::Watch {
            dir,
            index: self.trust.file_path(),
        };
        // A miss: waiting for another job's download, hashing on first use, or downloading.
        crate::blocking::around(|| {
            self.coalesce(&name, || {
                self.claims.claimed(
                    &watch,
                    &name,
                    || self.trusted_now(dest, by_name).then(|| dest.to_path_buf()),
                    || {
                        let (tmp, digest) = download()?;
                        self.adopt(tmp, dest, &digest)?;
                        Ok(dest.to_path_buf())
                    },
                    help,
                )
            })
        })
    }

    /// Download object `h` if no one has it or is at it: not in the cache verified, not
    /// being downloaded by this process, and its claim free. Never waits; `Ok(true)` if it
    /// downloaded. What a waiting job fetches on speculation (see [`Cache::fetch_object_helping`]).
    pub fn prefetch_object(
        &self,
        fetcher: &Fetcher,
        h: &ContentHash,
        kind: ObjectKind,
        compression: Compression,
        expected_size: Option<u64>,
    ) -> Result<bool, CacheError> {
        let dest = self.object_path(h);
        let by_name = matches!(compression, Compression::None).then_some(h);
        let name = self.name_of(&dest);
        // Not when another thread of this process is at it (it holds the claim too).
        let Ok(_leading) = self.lead(&name) else {
            return Ok(false);
        };
        if self.trusted_now(&dest, by_name) {
            return Ok(false);
        }
        self.object_dir(&dest);
        let got = self.claims.try_claimed(
            &name,
            || self.trusted_now(&dest, by_name).then_some(false),
            || {
                let (tmp, digest) =
                    self.download_within_quota(fetcher, h, kind, compression, expected_size)?;
                self.adopt(tmp, &dest, &digest)?;
                Ok(true)
            },
        )?;
        if got == Some(true) {
            self.stats.prefetched.fetch_add(1, Ordering::Relaxed);
        }
        Ok(got == Some(true))
    }

    /// Make sure object `h` (stored as `kind` with `compression`) is in the
    /// cache, verified by this user, downloading it if needed; returns its path.
    /// `expected_size` is the decompressed size the catalog promises.
    pub fn fetch_object(
        &self,
        fetcher: &Fetcher,
        h: &ContentHash,
        kind: ObjectKind,
        compression: Compression,
        expected_size: Option<u64>,
    ) -> Result<PathBuf, CacheError> {
        self.fetch_object_helping(fetcher, h, kind, compression, expected_size, &mut || false)
    }

    /// [`Cache::fetch_object`], running `help` while another process downloads `h` (at most
    /// [`claim::MAX_HELPS`] times a wait; it says whether it fetched something): jobs that
    /// read the same files in the same order then download the next objects in parallel
    /// (with [`Cache::prefetch_object`]) instead of all waiting for one at a time.
    pub fn fetch_object_helping(
        &self,
        fetcher: &Fetcher,
        h: &ContentHash,
        kind: ObjectKind,
        compression: Compression,
        expected_size: Option<u64>,
        help: &mut dyn FnMut() -> bool,
    ) -> Result<PathBuf, CacheError> {
        let dest = self.object_path(h);
        let by_name = matches!(compression, Compression::None).then_some(h);
        self.ensure(
            &dest,
            by_name,
            || self.download_within_quota(fetcher, h, kind, compression, expected_size),
            help,
        )
    }

    /// [`Cache::download`] of an object the quota can hold (refused before and after).
    fn download_within_quota(
        &self,
        fetcher: &Fetcher,
        h: &ContentHash,
        kind: ObjectKind,
        compression: Compression,
        expected_size: Option<u64>,
    ) -> Result<(tempfile::NamedTempFile, Digest), CacheError> {
        self.refuse_if_too_big(h, expected_size)?;
        let (tmp, sha1, size) = self.download(fetcher, h, kind, compression, expected_size)?;
        self.refuse_if_too_big(h, Some(size))?;
        Ok((tmp, Digest { sha1, size }))
    }

    /// Download and verify into a temp file (not yet visible); returns the temp
    /// file, the SHA-1 of the decompressed content and its size. Without an expected size
    /// the reply is cut off at [`crate::limits::undeclared`]; the temp file is removed.
    fn download(
        &self,
        fetcher: &Fetcher,
        h: &ContentHash,
        kind: ObjectKind,
        compression: Compression,
        expected_size: Option<u64>,
    ) -> Result<(tempfile::NamedTempFile, ContentHash, u64), CacheError> {
        let rel = h.object_path(kind);
        let bound = match expected_size {
            Some(size) => Bound::Declared(size),
            None => Bound::AtMost(crate::limits::undeclared(kind, self.opts.quota_limit)),
        };
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
            match stream_verified(body, tmp, h, compression, &bound) {
                Ok(Ok(v)) => {
                    self.stats.bytes_in.fetch_add(v.stored, Ordering::Relaxed);
                    Ok(Verdict::Good((v.tmp, v.digest, v.size)))
                }
                Ok(Err(Refused::Bad(reason))) => Ok(Verdict::Bad(reason)),
                Ok(Err(Refused::TooLarge(l))) => Ok(Verdict::TooLarge {
                    limit: l.bytes,
                    what: l.what,
                }),
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
        let got = res.map_err(|source| CacheError::Fetch {
            hash: h.to_string(),
            source,
        })?;
        self.stats.downloads.fetch_add(1, Ordering::Relaxed);
        Ok(got)
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
        let dest = self.chunked_path(key);
        let total: u64 = chunks.iter().map(|c| c.size).sum();
        self.refuse_if_too_big(key, Some(total))?;
        let mut no_help = || false;
        self.ensure(
            &dest,
            None,
            || {
                let whole = self.temp_file()?;
                let mut out =
                    HashingWriter::new(std::io::BufWriter::with_capacity(256 * 1024, whole));
                for c in chunks {
                    let (part, _, _) = self.download(
                        fetcher,
                        &c.hash,
                        ObjectKind::Chunk,
                        compression,
                        Some(c.size),
                    )?;
                    let mut f = part.reopen().map_err(|e| CacheError::io(part.path(), e))?;
                    std::io::copy(&mut f, &mut out).map_err(|e| CacheError::io(part.path(), e))?;
                }
                let (w, sha1, size) = out.finish();
                let whole = w
                    .into_inner()
                    .map_err(|e| CacheError::io(&dest, e.into_error()))?;
                Ok((whole, Digest { sha1, size }))
            },
            &mut no_help,
        )
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
        let _ = fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o444));
        tmp.persist(&dest)
            .map_err(|e| CacheError::io(&dest, e.error))?;
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hashes (SHA-1) and counts what passes through.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: perch_format::hash::Hasher,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Algorithm::hasher(Algorithm::Sha1),
            size: 0,
        }
    }
    fn finish(self) -> (W, ContentHash, u64) {
        (self.inner, self.hasher.finish(), self.size)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Where streaming an object failed: reading the reply (a transfer error) or
/// writing the temp file (a local error that stops the download).
enum StreamError {
    Read(std::io::Error),
    Write(std::io::Error),
}

struct Streamed {
    tmp: tempfile::NamedTempFile,
    /// SHA-1 of the decompressed content.
    digest: ContentHash,
    /// Decompressed size.
    size: u64,
    /// Bytes received.
    stored: u64,
}

/// How large an object may be.
enum Bound {
    /// Exactly this many content bytes, as a verified catalog row says.
    Declared(u64),
    /// Nothing declares its size: at most this.
    AtMost(crate::limits::Limit),
}

/// Why a reply was refused (bad data: another copy is tried).
enum Refused {
    /// Hash mismatch, corrupt zlib, not the declared size.
    Bad(String),
    /// Past the limit of an object of undeclared size.
    TooLarge(crate::limits::Limit),
}

/// Stream `body` into `tmp`, hashing the stored bytes and decompressing, never going past
/// `bound`: at most one read buffer beyond it is taken from the reply, and the temp file
/// holds at most the limit.
fn stream_verified(
    body: &mut dyn Read,
    tmp: tempfile::NamedTempFile,
    h: &ContentHash,
    compression: Compression,
    bound: &Bound,
) -> Result<Result<Streamed, Refused>, StreamError> {
    let mut hasher = Algorithm::hasher(h.algo);
    // Buffers no larger than a declared object needs.
    let fits = |most: usize| match bound {
        Bound::Declared(size) => buffer_len(*size, most),
        Bound::AtMost(_) => most,
    };
    let mut buf = vec![0u8; fits(128 * 1024)];
    let mut stored = 0u64;
    let out = HashingWriter::new(std::io::BufWriter::with_capacity(fits(256 * 1024), tmp));
    enum Sink<W: Write> {
        Zlib(Inflater<W>),
        Raw(W),
    }
    let zlib = matches!(compression, Compression::Zlib);
    // The most content and stored bytes: what a hostile server can make us write before the
    // hash check.
    let (content_max, stored_max) = match bound {
        Bound::Declared(size) => {
            let l = crate::limits::Limit {
                bytes: *size,
                what: String::new(),
            };
            (*size, l.stored(zlib))
        }
        Bound::AtMost(l) => (l.bytes, l.stored(zlib)),
    };
    let too_large = || {
        match bound {
        Bound::Declared(want) => {
            Refused::Bad(format!("reply of more than {stored_max} bytes for an object the catalog declares as {want} bytes"))
        }
        Bound::AtMost(l) => Refused::TooLarge(l.clone()),
    }
    };
    let mut sink = if zlib {
        Sink::Zlib(Inflater::with_limit(out, content_max))
    } else {
        Sink::Raw(out)
    };
    loop {
        let n = body.read(&mut buf).map_err(StreamError::Read)?;
        if n == 0 {
            break;
        }
        stored += n as u64;
        if stored > stored_max {
            return Ok(Err(too_large()));
        }
        hasher.update(&buf[..n]);
        let w = match &mut sink {
            Sink::Zlib(z) => z.write_all(&buf[..n]),
            Sink::Raw(w) => w.write_all(&buf[..n]),
        };
        if let Err(e) = w {
            if e.kind() == std::io::ErrorKind::InvalidData {
                if let (Sink::Zlib(z), Bound::AtMost(l)) = (&sink, bound) {
                    if z.past_limit() {
                        return Ok(Err(Refused::TooLarge(l.clone())));
                    }
                }
                return Ok(Err(Refused::Bad(format!("corrupt object: {e}"))));
            }
            return Err(StreamError::Write(e));
        }
    }
    let got = hasher.finish();
    if got != *h {
        return Ok(Err(Refused::Bad(format!(
            "hash mismatch: content hashes to {got}"
        ))));
    }
    let out = match sink {
        Sink::Zlib(z) => match z.finish() {
            Ok(w) => w,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Ok(Err(Refused::Bad(format!("corrupt object: {e}"))))
            }
            Err(e) => return Err(StreamError::Write(e)),
        },
        Sink::Raw(w) => w,
    };
    let (w, digest, size) = out.finish();
    let tmp = w
        .into_inner()
        .map_err(|e| StreamError::Write(e.into_error()))?;
    if let Bound::Declared(want) = bound {
        if size != *want {
            return Ok(Err(Refused::Bad(format!(
                "decompressed size {size} differs from the catalog's {want}"
            ))));
        }
    }
    Ok(Ok(Streamed {
        tmp,
        digest,
        size,
        stored,
    }))
}
