//! A mounted repository: verified root catalog, nested catalogs on demand,
//! file contents through the cache. One concern a file: `trust` (mounting: the
//! signature chain), `catalogs` (open catalogs, lookups, listings), `offline`,
//! `xattrs` (stored and magic attributes); this file has the types and file contents.

mod catalogs;
mod magic;
mod offline;
mod prefetch;
mod trust;

pub use catalogs::MAX_OPEN_CATALOGS;
pub use magic::MAGIC_XATTRS;
pub use prefetch::PREFETCH_MAX_SIZE;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use perch_format::catalog::{CatalogError, DirEntry};
use perch_format::compress::Compression;
use perch_format::crypto::PublicKey;
use perch_format::hash::{ContentHash, ObjectKind};
use perch_format::history::{History, Tag};
use perch_format::manifest::{ManifestError, SignedManifest};
use perch_format::whitelist::WhitelistError;

use crate::cache::{Cache, CacheError};
use crate::fetch::{FetchError, FetchOptions, Fetcher, Proxy};
use catalogs::OpenCatalogs;
use offline::Offline;

/// Environment lookup for `$(VAR)` in symlinks.
pub type SymlinkEnv = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What to mount and how.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Repository name.
    pub fqrn: String,
    /// Stratum URLs (`http://host/cvmfs/<fqrn>` or `file:///path`).
    pub servers: Vec<String>,
    /// Proxy groups (`;` groups of `|` members; empty = direct).
    pub proxies: Vec<Vec<Proxy>>,
    /// Master public key files.
    pub public_keys: Vec<PathBuf>,
    /// Cache directory.
    pub cache_dir: PathBuf,
    /// The cache is an alien (shared) cache.
    pub alien: bool,
    /// Mount this tag instead of the newest revision.
    pub tag: Option<String>,
    /// Mount the newest revision published at or before this time (Unix s).
    pub date: Option<i64>,
    /// Timeouts, retries, back-off, reset intervals.
    pub fetch: FetchOptions,
    /// Cache quota in bytes (`CVMFS_QUOTA_LIMIT`; `None` = unmanaged; ignored for an alien cache).
    pub quota_limit: Option<u64>,
    /// `CVMFS_MAX_TTL`: cap on the catalog TTL (`None` = no cap).
    pub max_ttl: Option<Duration>,
    /// How long an offline mount waits before trying the network again (`CVMFS_OFFLINE_RETRY`,
    /// 180 s like the real client); cache misses in between fail at once.
    pub offline_retry: Duration,
    /// `CVMFS_PERCH_TRUSTED_UIDS`: users whose verified objects this user serves as its own.
    pub trusted_uids: Vec<u32>,
}

impl MountOptions {
    /// Options with defaults for `fqrn`, one server, keys and a cache.
    pub fn new(
        fqrn: &str,
        server: &str,
        public_keys: Vec<PathBuf>,
        cache_dir: PathBuf,
    ) -> MountOptions {
        MountOptions {
            fqrn: fqrn.to_string(),
            servers: vec![server.to_string()],
            proxies: Vec::new(),
            public_keys,
            cache_dir,
            alien: false,
            tag: None,
            date: None,
            fetch: FetchOptions::default(),
            quota_limit: None,
            max_ttl: None,
            offline_retry: Duration::from_secs(crate::config::DEFAULT_OFFLINE_RETRY_SECS),
            trusted_uids: Vec::new(),
        }
    }
}

/// Why a mount or a lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// A public key file could not be read or parsed.
    #[error("cannot load public key {path}: {reason}")]
    PublicKey {
        /// Key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No public key configured.
    #[error("no public key configured (CVMFS_PUBLIC_KEY or CVMFS_KEYS_DIR)")]
    NoPublicKey,
    /// Manifest download failed.
    #[error("cannot download the manifest")]
    ManifestFetch(#[source] FetchError),
    /// Manifest invalid.
    #[error("invalid manifest")]
    Manifest(#[source] ManifestError),
    /// Manifest names another repository.
    #[error("manifest is for repository {found:?}")]
    WrongRepository {
        /// Name in the manifest.
        found: String,
    },
    /// Manifest older than what this cache has seen.
    #[error("manifest revision {found} is older than the known revision {known}")]
    Outdated {
        /// Offered.
        found: u64,
        /// Known.
        known: u64,
    },
    /// No certificate in the manifest.
    #[error("manifest names no certificate")]
    NoCertificate,
    /// Certificate problems.
    #[error("invalid certificate {hash}: {reason}")]
    Certificate {
        /// Object.
        hash: String,
        /// Why.
        reason: String,
    },
    /// Whitelist download failed.
    #[error("cannot download the whitelist")]
    WhitelistFetch(#[source] FetchError),
    /// Whitelist refused.
    #[error("whitelist verification failed")]
    Whitelist(#[source] WhitelistError),
    /// A cache or download error.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A catalog problem.
    #[error("catalog {hash}")]
    Catalog {
        /// Catalog hash.
        hash: String,
        /// Why.
        #[source]
        source: CatalogError,
    },
    /// Tag or date not found.
    #[error("{0}")]
    History(String),
    /// The mount is offline and the network is not due for a retry yet: an object that is
    /// not in the cache fails at once instead of waiting for every server to time out again.
    #[error("{what}: not in the cache, and {fqrn} is offline (next network retry in {} s; last failure: {reason})", retry_in.as_secs())]
    Offline {
        /// Repository.
        fqrn: String,
        /// The object's URL on the current server.
        what: String,
        /// Why the network was given up (the last failure, one line).
        reason: String,
        /// Time left before the next retry.
        retry_in: Duration,
    },
    /// A file's catalog row is unusable.
    #[error("{path}: {reason}")]
    BadEntry {
        /// Repository path.
        path: String,
        /// Why.
        reason: String,
    },
}

impl RepoError {
    /// errno for a program that hit this error on a path.
    pub fn errno(&self) -> i32 {
        match self {
            RepoError::Cache(e) => e.errno(),
            _ => libc::EIO,
        }
    }
}

/// Why a path could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Too many symlinks.
    #[error("{0}: too many levels of symbolic links")]
    Loop(String),
    /// A symlink leads out of the repository.
    #[error("symbolic link to {0} leaves the repository")]
    Outside(String),
    /// A path component is not a directory.
    #[error("{0}: not a directory")]
    NotDir(String),
    /// The repository failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// Result of a lookup.
#[derive(Debug, Clone)]
pub struct Node {
    /// Repository path (`""` root).
    pub path: Vec<u8>,
    /// The catalog row.
    pub entry: DirEntry,
    /// Catalog the row came from (for chunk lists).
    catalog: ContentHash,
    /// Stable inode number.
    pub inode: u64,
}

/// A mounted repository revision.
pub struct Repository {
    opts: MountOptions,
    fetcher: Fetcher,
    cache: Arc<Cache>,
    root_hash: ContentHash,
    revision: u64,
    tag: Option<String>,
    manifest: SignedManifest,
    /// Root catalog TTL capped by `CVMFS_MAX_TTL`.
    ttl: Duration,
    /// `Some` while offline. Held during a retry, so one thread probes and the others wait
    /// for its outcome instead of each probing the network.
    offline: Mutex<Option<Offline>>,
    /// Master keys, kept to verify the manifest again when the network comes back.
    keys: Vec<PublicKey>,
    /// Open catalogs, a bounded LRU (rows stay in SQLite, see `catalogs.rs`).
    catalogs: OpenCatalogs,
    env: SymlinkEnv,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("fqrn", &self.opts.fqrn)
            .field("root", &self.root_hash)
            .field("revision", &self.revision)
            .finish()
    }
}

impl Repository {
    /// Check that `file`, opened to serve `node` (a link to or copy of its cache object),
    /// holds what this user verified (DESIGN.md §4a): `Err` (EIO) if not. An object not yet
    /// verified is fetched or compared with a fresh download first.
    pub fn verify_open(&self, node: &Node, file: &std::fs::File) -> Result<(), RepoError> {
        let e = &node.entry;
        let by_name = match (e.is_chunked(), e.compression(), e.hash) {
            (false, Some(Compression::None), Some(h)) => Some(h),
            _ => None,
        };
        let place = match (e.is_chunked(), e.hash) {
            (false, Some(h)) => self.cache.object_path(&h),
            _ => self.fetch(node)?,
        };
        let look = match self.cache.verify_file(&place, file, by_name.as_ref()) {
            crate::cache::Look::Unknown => {
                self.fetch(node)?;
                self.cache.verify_file(&place, file, by_name.as_ref())
            }
            l => l,
        };
        match look {
            crate::cache::Look::Trusted => Ok(()),
            crate::cache::Look::Bad(why) => Err(CacheError::Untrusted { path: place, why }.into()),
            crate::cache::Look::Absent | crate::cache::Look::Unknown => {
                Err(CacheError::Untrusted {
                    path: place,
                    why: "it cannot be verified".into(),
                }
                .into())
            }
        }
    }

    /// Make sure the whole decompressed content of a regular file is cached; return its path.
    pub fn fetch(&self, node: &Node) -> Result<PathBuf, RepoError> {
        let e = &node.entry;
        let shown = || String::from_utf8_lossy(&node.path).into_owned();
        if !e.is_regular() {
            return Err(RepoError::BadEntry {
                path: shown(),
                reason: "not a regular file".into(),
            });
        }
        if e.flags & perch_format::catalog::FLAG_EXTERNAL != 0 {
            return Err(RepoError::BadEntry {
                path: shown(),
                reason: "external files are not supported".into(),
            });
        }
        let compression = e.compression().ok_or_else(|| RepoError::BadEntry {
            path: shown(),
            reason: "unknown compression".into(),
        })?;
        if e.is_chunked() {
            let chunks = self.chunks(node)?;
            // Name the assembled file by the hash of its chunk list.
            let algo = e.algorithm().unwrap_or(perch_format::hash::Algorithm::Sha1);
            let mut hasher = algo.hasher();
            for c in &chunks {
                hasher.update(format!("{},{},{};", c.hash, c.offset, c.size).as_bytes());
            }
            let key = hasher.finish();
            let first = chunks.first().map_or(key, |c| c.hash);
            let cached = || self.cache.chunked_path(&key).exists();
            return self.download(cached, &first, ObjectKind::Chunk, || {
                self.cache
                    .fetch_chunked(&self.fetcher, &key, &chunks, compression)
            });
        }
        let h = e.hash.ok_or_else(|| RepoError::BadEntry {
            path: shown(),
            reason: "regular file without content hash".into(),
        })?;
        let mut ahead = prefetch::Prefetch::new(self, node);
        self.download(
            || self.cache.get(&h).is_some(),
            &h,
            ObjectKind::File,
            || {
                self.cache.fetch_object_helping(
                    &self.fetcher,
                    &h,
                    ObjectKind::File,
                    compression,
                    Some(e.size),
                    &mut || ahead.one(),
                )
            },
        )
    }

    /// Read a whole file (small files, tests).
    pub fn read(&self, node: &Node) -> Result<Vec<u8>, RepoError> {
        let p = self.fetch(node)?;
        std::fs::read(&p).map_err(|e| RepoError::Cache(CacheError::Io { path: p, source: e }))
    }

    /// Repository name.
    pub fn fqrn(&self) -> &str {
        &self.opts.fqrn
    }
    /// Mounted root catalog.
    pub fn root_hash(&self) -> &ContentHash {
        &self.root_hash
    }
    /// Mounted revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }
    /// Tag mounted, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    /// The verified manifest.
    pub fn manifest(&self) -> &SignedManifest {
        &self.manifest
    }
    /// The catalog TTL: the root catalog's `TTL` capped by `CVMFS_MAX_TTL` (spec §11.5).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
    /// The cache.
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }
    /// The fetcher.
    pub fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }
    /// Number of catalogs open now (at most [`MAX_OPEN_CATALOGS`]; the least recently used
    /// are closed beyond that and opened again when needed).
    pub fn loaded_catalogs(&self) -> usize {
        self.catalogs.len()
    }

    /// Tags of the repository (from the history database).
    pub fn tags(&self) -> Result<Vec<Tag>, RepoError> {
        let Some(h) = self.manifest.manifest.history else {
            return Ok(Vec::new());
        };
        let p = self.download(
            || self.cache.get(&h).is_some(),
            &h,
            ObjectKind::History,
            || {
                self.cache.fetch_object(
                    &self.fetcher,
                    &h,
                    ObjectKind::History,
                    Compression::Zlib,
                    None,
                )
            },
        )?;
        let hist = History::open(&p).map_err(|source| RepoError::Catalog {
            hash: h.to_string(),
            source,
        })?;
        hist.tags().map_err(|source| RepoError::Catalog {
            hash: h.to_string(),
            source,
        })
    }
}
