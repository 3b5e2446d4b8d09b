//! The local (or alien) object cache: verified, decompressed objects.
//!
//! Layout follows the real client: `XX/<rest><suffix>` per object (no type
//! letter), `chunked/XX/...` for chunked files assembled whole, `txn/` for
//! downloads in progress, `cvmfschecksum.<fqrn>` breadcrumbs.
//!
//! **Crash safety.** An object becomes visible only by `rename` of a complete,
//! verified temp file, so a crash or a concurrent writer never exposes a partial
//! object. Temp files are named `fetch.<host>.<pid>.<random>`; at start, those of
//! dead processes on this host (and any older than an hour) are removed.
//!
//! **Many processes, one directory** (alien cache, `CVMFS_SHARED_CACHE`): no lock
//! is held while downloading. Before downloading, a process creates
//! `txn/claim.<name>` with `O_EXCL`; others that find the claim wait for the
//! object to appear (polling), and take over when the claimer died (same host)
//! or the claim is older than [`STALE_CLAIM`]. A process that finds the object
//! complete never downloads it. Inside one process, concurrent requests for the
//! same object coalesce into one download.
//!
//! **Quota** (`CVMFS_QUOTA_LIMIT`, managed caches only): LRU on last use (the
//! object's mtime, refreshed on use at most once a minute), cleanup down to
//! `limit × cleanup_ratio` (default 1/2, as the real client) when an insert
//! crosses the limit, pinned objects (catalogs of mounted revisions) kept; an
//! object larger than `limit/2` is refused with ENOSPC. The cleanup holds an
//! `flock` on `lock_quota` so that two processes do not both evict.
//!
//! **Checking.** Objects are stored decompressed, so their name (the hash of the
//! compressed bytes) cannot be re-derived from the content (recompression is not
//! byte-identical across zlib implementations). At insert time the SHA-1 of the
//! decompressed content is appended to `checksums` (one `<object> <sha1> <size>`
//! line, one `write` on an `O_APPEND` file, before the rename); [`Cache::check`]
//! re-hashes every object against that record. The alien cache keeps no record
//! (`O_APPEND` is not atomic on NFS); its check only verifies uncompressed
//! objects, whose name is their content hash.

use std::collections::{HashMap, HashSet};
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
    /// Bytes received (stored form).
    pub bytes_in: AtomicU64,
    /// Objects evicted by the quota.
    pub evicted: AtomicU64,
}

/// How a cache is managed.
#[derive(Debug, Clone, Default)]
pub struct CacheOptions {
    /// Alien cache: group-writable modes, no quota, no checksum record.
    pub alien: bool,
    /// Quota limit in bytes (`None` = unmanaged).
    pub quota_limit: Option<u64>,
    /// Fraction of the limit a cleanup shrinks to (default 0.5).
    pub cleanup_ratio: Option<f64>,
}

/// A download in progress: done flag and its waiters.
type Slot = (Mutex<bool>, Condvar);

/// A cache directory.
#[derive(Debug)]
pub struct Cache {
    root: PathBuf,
    opts: CacheOptions,
    /// File mode for objects (0700 local, 0770 alien: executables are run
    /// from hard links to objects, so objects keep the owner's x bit).
    object_mode: u32,
    dir_mode: u32,
    inflight: Mutex<HashMap<String, Arc<Slot>>>,
    pinned: Mutex<HashSet<PathBuf>>,
    /// Bytes of objects (as of the last scan plus inserts since).
    usage: AtomicU64,
    /// Counters.
    pub stats: CacheStats,
}

/// Temp files and claims older than this are stale even if their owner may live
/// (another host of an alien cache).
const STALE_TXN: Duration = Duration::from_secs(3600);
/// A claim not completed in this time is taken over.
pub const STALE_CLAIM: Duration = Duration::from_secs(120);
/// Use refreshes an object's LRU time at most this often.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Name of the checksum record.
pub const CHECKSUMS: &str = "checksums";

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The longest a process waiting for another's download sleeps between looks.
const CLAIM_POLL: Duration = Duration::from_millis(5);

/// Waits until `ready()` or for at most `limit`, waking as soon as an entry is renamed into
/// or removed from one of `dirs` on this host (inotify). Jobs started together read the same
/// files in the same order, so all but one wait on each object in turn: a fixed sleep per
/// object added up to most of a cold run of 16 jobs on one cache. Commits by other hosts of a
/// shared file system are not reported by inotify: for them the time limit is the poll.
fn wait_for_change(dirs: &[&Path], limit: Duration, ready: impl Fn() -> bool) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    use std::os::fd::AsFd;
    let watch = || -> Option<Inotify> {
        let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok()?;
        for d in dirs {
            ino.add_watch(*d, AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_DELETE)
                .ok()?;
        }
        Some(ino)
    };
    let Some(ino) = watch() else {
        std::thread::sleep(limit);
        return;
    };
    // Checked after the watches exist, so a change in between is not missed.
    if ready() {
        return;
    }
    let timeout = PollTimeout::try_from(limit).unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(ino.as_fd(), PollFlags::POLLIN)];
    let _ = poll(&mut fds, timeout);
}

/// A claim whose owner died (this host) or that is older than [`STALE_CLAIM`].
fn claim_is_stale(marker: &Path) -> bool {
    let Ok(m) = fs::metadata(marker) else {
        return false;
    };
    let age = m
        .modified()
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default();
    if age > STALE_CLAIM {
        return true;
    }
    let text = fs::read_to_string(marker).unwrap_or_default();
    match text.trim().split_once(' ') {
        Some((host, pid)) if host == hostname() => pid.parse().is_ok_and(|p| !pid_alive(p)),
        // Being written right now, or another host's: trust the age only.
        _ => false,
    }
}

/// `fetch.<host>.<pid>.<random>` owner, if this host's.
fn local_owner(name: &str, host: &str) -> Option<u32> {
    let rest = name.split_once('.')?.1;
    let rest = rest.strip_prefix(host)?.strip_prefix('.')?;
    rest.split('.').next()?.parse().ok()
}

/// Result of [`Cache::check`].
#[derive(Debug, Default, Clone)]
pub struct CheckReport {
    /// Objects whose content matched.
    pub good: u64,
    /// Objects with a wrong content (removed unless a dry run).
    pub bad: Vec<PathBuf>,
    /// Objects without a checksum record (removed unless a dry run: they can be fetched again).
    pub unverifiable: Vec<PathBuf>,
}

/// Result of [`Cache::gc`].
#[derive(Debug, Default, Clone, Copy)]
pub struct GcReport {
    /// Objects removed.
    pub removed: u64,
    /// Bytes freed.
    pub freed: u64,
    /// Bytes in use afterwards.
    pub usage: u64,
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
        let dir_mode = if alien { 0o770 } else { 0o700 };
        for d in [root.to_path_buf(), root.join("txn")] {
            if !d.is_dir() {
                fs::create_dir_all(&d).map_err(|e| CacheError::io(&d, e))?;
                let _ = fs::set_permissions(&d, fs::Permissions::from_mode(dir_mode));
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
        let cache = Cache {
            root: root.to_path_buf(),
            opts,
            object_mode: if alien { 0o770 } else { 0o700 },
            dir_mode,
            inflight: Mutex::new(HashMap::new()),
            pinned: Mutex::new(HashSet::new()),
            usage: AtomicU64::new(0),
            stats: CacheStats::default(),
        };
        cache.clean_txn();
        if cache.opts.quota_limit.is_some() {
            let used: u64 = cache.objects().iter().map(|o| o.size).sum();
            cache.usage.store(used, Ordering::Relaxed);
        }
        Ok(cache)
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The quota limit in bytes, if managed.
    pub fn quota_limit(&self) -> Option<u64> {
        self.opts.quota_limit
    }

    /// Bytes in objects (exact after open and cleanups; inserts of other processes
    /// are counted at the next cleanup).
    pub fn usage(&self) -> u64 {
        self.usage.load(Ordering::Relaxed)
    }

    /// Remove temp files and claims of dead processes (this host) and stale ones.
    fn clean_txn(&self) {
        let Ok(rd) = fs::read_dir(self.root.join("txn")) else {
            return;
        };
        let now = SystemTime::now();
        let host = hostname();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let dead = if name.starts_with("claim.") {
                claim_is_stale(&e.path())
            } else {
                local_owner(&name, &host).is_some_and(|pid| !pid_alive(pid))
            };
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default() > STALE_TXN)
                .unwrap_or(false);
            if dead || old {
                tracing::debug!(target: "cache", file = %name, "removing leftover");
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// Where object `h` lives (whether or not it is there).
    pub fn object_path(&self, h: &ContentHash) -> PathBuf {
        self.root.join(h.cache_path())
    }

    /// Where the assembled file of a chunked file named `key` lives (whether or not it is there).
    pub fn chunked_path(&self, key: &ContentHash) -> PathBuf {
        self.root.join("chunked").join(key.cache_path())
    }

    /// Path of a complete object, if cached.
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
            .prefix(&format!("fetch.{}.{}.", hostname(), std::process::id()))
            .tempfile_in(&txn)
            .map_err(|e| CacheError::io(&txn, e))
    }

    /// Move a complete temp file into place as `dest` (atomic).
    pub fn commit(&self, tmp: tempfile::NamedTempFile, dest: &Path) -> Result<(), CacheError> {
        let _ = fs::set_permissions(tmp.path(), fs::Permissions::from_mode(self.object_mode));
        if let Some(dir) = dest.parent() {
            if !dir.is_dir() {
                fs::create_dir_all(dir).map_err(|e| CacheError::io(dir, e))?;
                let _ = fs::set_permissions(dir, fs::Permissions::from_mode(self.dir_mode));
                if let Some(up) = dir.parent().filter(|u| *u != self.root) {
                    let _ = fs::set_permissions(up, fs::Permissions::from_mode(self.dir_mode));
                }
            }
        }
        tmp.persist(dest)
            .map_err(|e| CacheError::io(dest, e.error))?;
        Ok(())
    }

    /// Record the content digest of an object about to be committed.
    fn record(&self, dest: &Path, digest: &ContentHash, size: u64) -> Result<(), CacheError> {
        if self.opts.alien {
            return Ok(());
        }
        let rel = dest.strip_prefix(&self.root).unwrap_or(dest);
        let line = format!("{} {} {size}\n", rel.display(), digest.hex());
        let path = self.root.join(CHECKSUMS);
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| CacheError::io(&path, e))?;
        f.write_all(line.as_bytes())
            .map_err(|e| CacheError::io(&path, e))
    }

    /// Account for an inserted object and clean up if over the quota.
    fn inserted(&self, size: u64) {
        let Some(limit) = self.opts.quota_limit else {
            return;
        };
        let now = self.usage.fetch_add(size, Ordering::Relaxed) + size;
        if now > limit {
            if let Err(e) = self.cleanup(self.target()) {
                tracing::warn!(target: "cache", error = %crate::error_chain(&e), "quota cleanup failed");
            }
        }
    }

    fn target(&self) -> u64 {
        let limit = self.opts.quota_limit.unwrap_or(u64::MAX);
        let ratio = self.opts.cleanup_ratio.unwrap_or(0.5).clamp(0.0, 1.0);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let t = (limit as f64 * ratio) as u64;
        t
    }

    fn refuse_if_too_big(&self, h: &ContentHash, size: Option<u64>) -> Result<(), CacheError> {
        if let (Some(limit), Some(size)) = (self.opts.quota_limit, size) {
            if size > limit / 2 {
                return Err(CacheError::NoSpace {
                    hash: h.to_string(),
                    size,
                    limit,
                });
            }
        }
        Ok(())
    }

    /// Refresh the LRU time of a used object (managed caches only).
    fn touch(&self, p: &Path) {
        if self.opts.quota_limit.is_none() {
            return;
        }
        let Ok(m) = fs::metadata(p) else { return };
        let old = m
            .modified()
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|d| d > TOUCH_EVERY);
        if old {
            if let Ok(f) = fs::File::options().write(true).open(p) {
                let _ = f.set_modified(SystemTime::now());
            }
        }
    }

    /// Every object file: path, size, last use.
    fn objects(&self) -> Vec<ObjectFile> {
        let mut out = Vec::new();
        for base in [self.root.clone(), self.root.join("chunked")] {
            let Ok(rd) = fs::read_dir(&base) else {
                continue;
            };
            for d in rd.flatten() {
                let name = d.file_name();
                let n = name.to_string_lossy();
                if n.len() != 2 || !n.bytes().all(|b| b.is_ascii_hexdigit()) {
                    continue;
                }
                let Ok(files) = fs::read_dir(d.path()) else {
                    continue;
                };
                for f in files.flatten() {
                    if let Ok(m) = f.metadata() {
                        if m.is_file() {
                            out.push(ObjectFile {
                                path: f.path(),
                                size: m.len(),
                                used: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                            });
                        }
                    }
                }
            }
        }
        out
    }

    /// Evict least recently used, unpinned objects until at most `target` bytes remain.
    pub fn cleanup(&self, target: u64) -> Result<GcReport, CacheError> {
        let lock_path = self.root.join("lock_quota");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| CacheError::io(&lock_path, e))?;
        let _guard = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| CacheError::io(&lock_path, std::io::Error::from(e)))?;
        let mut objs = self.objects();
        let mut usage: u64 = objs.iter().map(|o| o.size).sum();
        objs.sort_by_key(|o| o.used);
        let pinned = lock(&self.pinned).clone();
        let mut report = GcReport::default();
        for o in objs {
            if usage <= target {
                break;
            }
            if pinned.contains(&o.path) {
                continue;
            }
            if fs::remove_file(&o.path).is_ok() {
                usage = usage.saturating_sub(o.size);
                report.removed += 1;
                report.freed += o.size;
            }
        }
        self.stats
            .evicted
            .fetch_add(report.removed, Ordering::Relaxed);
        self.usage.store(usage, Ordering::Relaxed);
        report.usage = usage;
        tracing::info!(target: "cache", removed = report.removed, freed = report.freed, usage, "quota cleanup");
        Ok(report)
    }

    /// `perch cache gc`: clean up to the target of the quota (or remove everything
    /// unpinned when `all`), and compact the checksum record.
    pub fn gc(&self, all: bool) -> Result<GcReport, CacheError> {
        let target = if all {
            0
        } else {
            self.opts.quota_limit.map_or(u64::MAX, |_| self.target())
        };
        let r = self.cleanup(target)?;
        self.compact_checksums()?;
        Ok(r)
    }

    fn read_checksums(&self) -> HashMap<PathBuf, (String, u64)> {
        let text = fs::read_to_string(self.root.join(CHECKSUMS)).unwrap_or_default();
        let mut map = HashMap::new();
        for line in text.lines() {
            let mut f = line.split(' ');
            if let (Some(p), Some(h), Some(s)) = (f.next(), f.next(), f.next()) {
                if let Ok(s) = s.parse() {
                    map.insert(self.root.join(p), (h.to_string(), s));
                }
            }
        }
        map
    }

    fn compact_checksums(&self) -> Result<(), CacheError> {
        if self.opts.alien {
            return Ok(());
        }
        let map = self.read_checksums();
        let mut tmp = self.temp_file()?;
        for o in self.objects() {
            if let Some((h, s)) = map.get(&o.path) {
                let rel = o.path.strip_prefix(&self.root).unwrap_or(&o.path);
                writeln!(tmp, "{} {h} {s}", rel.display())
                    .map_err(|e| CacheError::io(tmp.path(), e))?;
            }
        }
        let dest = self.root.join(CHECKSUMS);
        tmp.persist(&dest)
            .map_err(|e| CacheError::io(&dest, e.error))?;
        Ok(())
    }

    /// `perch cache check`: re-hash every object against its recorded content
    /// digest; bad and unverifiable objects are removed unless `dry_run`.
    pub fn check(
        &self,
        dry_run: bool,
        mut progress: impl FnMut(u64),
    ) -> Result<CheckReport, CacheError> {
        let map = self.read_checksums();
        let mut r = CheckReport::default();
        for o in self.objects() {
            progress(o.size);
            let verdict = match map.get(&o.path) {
                Some((want, size)) => {
                    let got = sha1_file(&o.path).map_err(|e| CacheError::io(&o.path, e))?;
                    Some(got == *want && *size == o.size)
                }
                None => self.check_by_name(&o.path),
            };
            match verdict {
                Some(true) => r.good += 1,
                Some(false) => r.bad.push(o.path.clone()),
                None => r.unverifiable.push(o.path.clone()),
            }
        }
        if !dry_run {
            // An alien cache keeps no record: unverifiable objects there are expected and kept.
            let unverifiable: &[PathBuf] = if self.opts.alien {
                &[]
            } else {
                &r.unverifiable
            };
            for p in r.bad.iter().chain(unverifiable) {
                let _ = fs::remove_file(p);
            }
        }
        Ok(r)
    }

    /// An uncompressed object's name is its content hash.
    fn check_by_name(&self, p: &Path) -> Option<bool> {
        let dir = p.parent()?.file_name()?.to_str()?;
        let name = p.file_name()?.to_str()?;
        let h: ContentHash = format!("{dir}{name}").parse().ok()?;
        let mut hasher = Algorithm::hasher(h.algo);
        let mut f = fs::File::open(p).ok()?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        (hasher.finish() == h).then_some(true)
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
            let mut map = lock(&self.inflight);
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
            let mut done = lock(m);
            while !*done {
                done = cv.wait(done).unwrap_or_else(|p| p.into_inner());
            }
            drop(done);
            return work();
        }
        let r = work();
        {
            let (m, cv) = &*slot;
            *lock(m) = true;
            cv.notify_all();
        }
        lock(&self.inflight).remove(key);
        r
    }

    /// Across processes: run `work` (which downloads and commits `dest`) unless
    /// another process is doing it, in which case wait for `dest` to appear.
    fn claimed(
        &self,
        dest: &Path,
        work: impl FnOnce() -> Result<(), CacheError>,
    ) -> Result<(), CacheError> {
        let name = dest
            .strip_prefix(&self.root)
            .unwrap_or(dest)
            .to_string_lossy()
            .replace('/', "_");
        let marker = self.root.join("txn").join(format!("claim.{name}"));
        let mut work = Some(work);
        loop {
            if dest.exists() {
                return Ok(());
            }
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&marker)
            {
                Ok(mut f) => {
                    let _ = write!(f, "{} {}", hostname(), std::process::id());
                    drop(f);
                    // The object may have been committed between our check and the claim.
                    let r = if dest.exists() {
                        Ok(())
                    } else {
                        work.take().map_or(Ok(()), |w| w())
                    };
                    let _ = fs::remove_file(&marker);
                    return r;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if claim_is_stale(&marker) {
                        tracing::debug!(target: "cache", claim = %marker.display(), "taking over a stale claim");
                        let _ = fs::remove_file(&marker);
                        continue;
                    }
                    let txn = self.root.join("txn");
                    let dir = dest.parent().unwrap_or(&self.root);
                    wait_for_change(&[dir, &txn], CLAIM_POLL, || {
                        dest.exists() || !marker.exists()
                    });
                }
                // No claims possible (e.g. read-only txn/): just download.
                Err(_) => return work.take().map_or(Ok(()), |w| w()),
            }
        }
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
            self.touch(&dest);
            return Ok(dest);
        }
        self.refuse_if_too_big(h, expected_size)?;
        self.coalesce(&h.to_string(), || {
            self.claimed(&dest, || {
                let (tmp, digest, size) =
                    self.download(fetcher, h, kind, compression, expected_size)?;
                self.refuse_if_too_big(h, Some(size))?;
                self.record(&dest, &digest, size)?;
                self.commit(tmp, &dest)?;
                self.inserted(size);
                Ok(())
            })?;
            Ok(dest.clone())
        })
    }

    /// Download and verify into a temp file (not yet visible); returns the temp
    /// file, the SHA-1 of the decompressed content and its size.
    fn download(
        &self,
        fetcher: &Fetcher,
        h: &ContentHash,
        kind: ObjectKind,
        compression: Compression,
        expected_size: Option<u64>,
    ) -> Result<(tempfile::NamedTempFile, ContentHash, u64), CacheError> {
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
                Ok(Ok(v)) => {
                    self.stats.bytes_in.fetch_add(v.stored, Ordering::Relaxed);
                    Ok(Verdict::Good((v.tmp, v.digest, v.size)))
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
        if dest.exists() {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            self.touch(&dest);
            return Ok(dest);
        }
        let total: u64 = chunks.iter().map(|c| c.size).sum();
        self.refuse_if_too_big(key, Some(total))?;
        self.coalesce(&format!("chunked:{key}"), || {
            self.claimed(&dest, || {
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
                let (w, digest, size) = out.finish();
                let whole = w.into_inner().map_err(|e| {
                    let e = e.into_error();
                    CacheError::io(&dest, e)
                })?;
                self.record(&dest, &digest, size)?;
                self.commit(whole, &dest)?;
                self.inserted(size);
                Ok(())
            })?;
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct ObjectFile {
    path: PathBuf,
    size: u64,
    used: SystemTime,
}

fn sha1_file(p: &Path) -> std::io::Result<String> {
    let mut hasher = Algorithm::hasher(Algorithm::Sha1);
    let mut f = fs::File::open(p)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish().hex())
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

/// Stream `body` into `tmp`, hashing the stored bytes and decompressing.
/// The inner `Err` is a bad-data reason.
fn stream_verified(
    body: &mut dyn Read,
    tmp: tempfile::NamedTempFile,
    h: &ContentHash,
    compression: Compression,
    expected_size: Option<u64>,
) -> Result<Result<Streamed, String>, StreamError> {
    let mut hasher = Algorithm::hasher(h.algo);
    let mut buf = vec![0u8; 128 * 1024];
    let mut stored = 0u64;
    let out = HashingWriter::new(std::io::BufWriter::with_capacity(256 * 1024, tmp));
    enum Sink<W: Write> {
        Zlib(Inflater<W>),
        Raw(W),
    }
    let mut sink = match compression {
        // A declared size bounds what a hostile server can make us write before the hash check.
        Compression::Zlib => {
            Sink::Zlib(Inflater::with_limit(out, expected_size.unwrap_or(u64::MAX)))
        }
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
    let (w, digest, size) = out.finish();
    let tmp = w
        .into_inner()
        .map_err(|e| StreamError::Write(e.into_error()))?;
    if let Some(want) = expected_size {
        if size != want {
            return Ok(Err(format!(
                "decompressed size {size} differs from the catalog's {want}"
            )));
        }
    }
    Ok(Ok(Streamed {
        tmp,
        digest,
        size,
        stored,
    }))
}
