//! Quota (`CVMFS_QUOTA_LIMIT`, managed caches only) and `perch cache gc`.
//!
//! LRU on last use (the object's mtime, refreshed on use at most once an hour: each refresh
//! changes the object's ctime, so its trust record is written again), cleanup
//! down to `limit × cleanup_ratio` (default 1/2, as the real client) when an insert crosses
//! the limit, pinned objects (catalogs of mounted revisions) kept; an object larger than
//! `limit/2` is refused with ENOSPC. The cleanup holds an `flock` on `lock_quota` so that two
//! processes do not both evict.
//!
//! The bytes in use are kept in `quota_usage` (20 decimal digits), shared by every process of
//! the cache: an insert adds its size under an `flock` of `lock_usage` (a file a program cannot
//! open, see `open_lock_file`), a cleanup stores the exact
//! sum it scanned. Opening a cache reads it and scans the objects only when it is missing or
//! unreadable, so a job's start does not grow with the cache (a scan `stat`s every object).
//! Inserts racing with a cleanup's scan, or a process killed between its rename and its
//! update, make it drift by those objects; the next cleanup corrects it.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use nix::fcntl::FlockArg;
use perch_format::hash::ContentHash;

use super::{lock, Cache, CacheError};

/// Use refreshes an object's LRU time at most this often.
const TOUCH_EVERY: Duration = Duration::from_secs(3600);

/// The shared count of bytes in use, in the cache directory.
pub(super) const USAGE_FILE: &str = "quota_usage";

/// Digits of the count: `u64::MAX` fits, and every write is the same length.
const USAGE_DIGITS: usize = 20;

/// The lock-only file of `quota_usage`: a program can open the count itself for reading
/// (it is a file of its own user), so locks are taken on this one, which it cannot open.
const USAGE_LOCK_FILE: &str = "lock_usage";

/// `quota_usage` of one cache, open for reading and writing, and its lock file.
#[derive(Debug)]
pub(super) struct UsageFile {
    file: fs::File,
    lock: fs::File,
}

impl UsageFile {
    /// Opens (creates, owner only) the count of the cache at `root`.
    pub(super) fn open(root: &Path) -> std::io::Result<UsageFile> {
        let file = super::open_own_file(&root.join(USAGE_FILE), 0o600, 0)?;
        let lock = super::open_lock_file(&root.join(USAGE_LOCK_FILE), 0)?;
        Ok(UsageFile { file, lock })
    }

    /// Runs `f` on the stored count (`None`: empty or unreadable) while holding the lock,
    /// and stores what it returns.
    fn update(&self, f: impl FnOnce(Option<u64>) -> u64) -> std::io::Result<u64> {
        // On a duplicate of the descriptor (same open file, same lock), unlocked when dropped.
        let _held = nix::fcntl::Flock::lock(self.lock.try_clone()?, FlockArg::LockExclusive)
            .map_err(|(_, e)| std::io::Error::from(e))?;
        let mut buf = [0u8; USAGE_DIGITS];
        let n = self.file.read_at(&mut buf, 0)?;
        let old = (n == USAGE_DIGITS)
            .then(|| std::str::from_utf8(&buf).ok()?.parse::<u64>().ok())
            .flatten();
        let new = f(old);
        self.file
            .write_at(format!("{new:0w$}", w = USAGE_DIGITS).as_bytes(), 0)?;
        Ok(new)
    }
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

/// One object file of the cache.
pub(super) struct ObjectFile {
    pub(super) path: PathBuf,
    pub(super) size: u64,
    pub(super) used: SystemTime,
}

impl Cache {
    /// The bytes in use when the cache is opened: the shared count, or a scan of the objects
    /// (stored for the next process) when there is none.
    pub(super) fn load_usage(&self) {
        let Some(file) = &self.usage_file else {
            return;
        };
        let scan = || self.objects().iter().map(|o| o.size).sum::<u64>();
        match file.update(|old| old.unwrap_or_else(scan)) {
            Ok(n) => self.usage.store(n, Ordering::Relaxed),
            Err(e) => {
                tracing::debug!(target: "cache", "{USAGE_FILE}: {e}; counting the objects");
                self.usage.store(scan(), Ordering::Relaxed);
            }
        }
    }

    /// Account for an inserted object and clean up if over the quota.
    pub(super) fn inserted(&self, size: u64) {
        let Some(limit) = self.opts.quota_limit else {
            return;
        };
        let shared = self.usage_file.as_ref().and_then(|file| {
            // A count damaged since this process opened the cache starts again from this
            // insert; the next cleanup's scan makes it exact.
            file.update(|old| old.unwrap_or(0).saturating_add(size))
                .ok()
        });
        let now = match shared {
            Some(n) => {
                self.usage.store(n, Ordering::Relaxed);
                n
            }
            None => self.usage.fetch_add(size, Ordering::Relaxed) + size,
        };
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

    pub(super) fn refuse_if_too_big(
        &self,
        h: &ContentHash,
        size: Option<u64>,
    ) -> Result<(), CacheError> {
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

    /// Refresh the LRU time of a used object (managed caches only); true if it did. Objects
    /// have no write bit, so the time is set as the owner (`futimens` with explicit times).
    pub(super) fn touch(&self, f: &fs::File) -> bool {
        if self.opts.quota_limit.is_none() {
            return false;
        }
        let Ok(m) = f.metadata() else { return false };
        let old = m
            .modified()
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|d| d > TOUCH_EVERY);
        if !old {
            return false;
        }
        let now = nix::sys::time::TimeSpec::from(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        nix::sys::stat::futimens(
            std::os::fd::AsRawFd::as_raw_fd(f),
            &nix::sys::time::TimeSpec::UTIME_OMIT,
            &now,
        )
        .is_ok()
    }

    /// Every object file: path, size, last use.
    pub(super) fn objects(&self) -> Vec<ObjectFile> {
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
        let f = super::open_lock_file(&lock_path, 0).map_err(|e| CacheError::io(&lock_path, e))?;
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
        if let Some(file) = &self.usage_file {
            if let Err(e) = file.update(|_| usage) {
                tracing::debug!(target: "cache", "{USAGE_FILE}: {e}");
            }
        }
        report.usage = usage;
        tracing::info!(target: "cache", removed = report.removed, freed = report.freed, usage, "quota cleanup");
        Ok(report)
    }

    /// `perch cache gc`: clean up to the target of the quota (or remove everything
    /// unpinned when `all`).
    pub fn gc(&self, all: bool) -> Result<GcReport, CacheError> {
        let target = if all {
            0
        } else {
            self.opts.quota_limit.map_or(u64::MAX, |_| self.target())
        };
        self.cleanup(target)
    }
}
