//! A mounted repository: verified root catalog, nested catalogs on demand,
//! file contents through the cache.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use perch_format::catalog::{expand_symlink, Catalog, CatalogError, DirEntry};
use perch_format::compress::{zlib_decompress, Compression};
use perch_format::crypto::{Certificate, PublicKey};
use perch_format::hash::{ContentHash, ObjectKind};
use perch_format::history::{History, Tag};
use perch_format::manifest::{ManifestError, SignedManifest};
use perch_format::whitelist::{Whitelist, WhitelistError};

use crate::cache::{Cache, CacheError, CacheOptions};
use crate::catalogs::{OpenCatalog, OpenCatalogs, MAX_OPEN_CATALOGS};
use crate::fetch::{FetchError, FetchOptions, Fetcher, Proxy};

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

/// Why and until when a mount does not use the network (spec §11.4).
#[derive(Debug)]
struct Offline {
    /// The failure that made (or kept) the mount offline, one line.
    reason: String,
    /// Downloads are not attempted before this instant.
    retry_at: Instant,
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

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn load_keys(paths: &[PathBuf]) -> Result<Vec<PublicKey>, RepoError> {
    if paths.is_empty() {
        return Err(RepoError::NoPublicKey);
    }
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).map_err(|e| RepoError::PublicKey {
                path: p.clone(),
                reason: e.to_string(),
            })?;
            PublicKey::from_pem(&text).map_err(|e| RepoError::PublicKey {
                path: p.clone(),
                reason: e.to_string(),
            })
        })
        .collect()
}

impl Repository {
    /// Mount: fetch and verify the whole trust chain, load the root catalog
    /// (or the tagged one). Falls back to the last verified revision in the
    /// cache when the network fails (offline mode).
    pub fn mount(opts: MountOptions) -> Result<Repository, RepoError> {
        let copts = CacheOptions {
            alien: opts.alien,
            quota_limit: opts.quota_limit,
            cleanup_ratio: None,
        };
        let cache = Arc::new(Cache::open_with(&opts.cache_dir, copts)?);
        Self::mount_with_cache(opts, cache)
    }

    /// As `mount`, sharing a cache object with other repositories.
    pub fn mount_with_cache(
        opts: MountOptions,
        cache: Arc<Cache>,
    ) -> Result<Repository, RepoError> {
        let keys = load_keys(&opts.public_keys)?;
        let fetcher = Fetcher::new(
            opts.servers.clone(),
            opts.proxies.clone(),
            opts.fetch.clone(),
        );
        let known = cache.read_breadcrumb(&opts.fqrn);
        let (manifest, offline) = match Self::fetch_manifest(
            &opts,
            &fetcher,
            &cache,
            &keys,
            known.as_ref(),
        ) {
            Ok(m) => (m, None),
            Err(e) => {
                // Offline mode: the last verified revision, if we have it all.
                let Some((root, _, _)) = known else {
                    return Err(e);
                };
                let Some(m) = Self::cached_manifest(&cache, &opts.fqrn) else {
                    return Err(e);
                };
                if m.manifest.root_catalog != root || cache.get(&root).is_none() {
                    return Err(e);
                }
                let reason = crate::error_chain(&e);
                tracing::warn!(target: "cvmfs", fqrn = %opts.fqrn, error = %reason, retry_in_s = opts.offline_retry.as_secs(), "network unavailable, serving the last verified revision (offline)");
                let retry_at = Instant::now() + opts.offline_retry;
                (m, Some(Offline { reason, retry_at }))
            }
        };
        let mut root_hash = manifest.manifest.root_catalog;
        let mut revision = manifest.manifest.revision;
        let mut tag_name = None;
        if opts.tag.is_some() || opts.date.is_some() {
            let t = Self::select_tag(&opts, &fetcher, &cache, &manifest)?;
            root_hash = t.hash;
            revision = t.revision;
            tag_name = Some(t.name);
        }
        let mut repo = Repository {
            fetcher,
            cache,
            root_hash,
            revision,
            tag: tag_name,
            manifest,
            ttl: Duration::ZERO,
            offline: Mutex::new(offline),
            keys,
            catalogs: OpenCatalogs::new(MAX_OPEN_CATALOGS),
            env: Box::new(|k| std::env::var(k).ok()),
            opts,
        };
        // Load the root catalog now: a mount that cannot read it fails here.
        let root = repo.catalog(&root_hash, None)?;
        // The client's TTL is the root catalog's (spec §11.5), not the manifest's `D`.
        let ttl = root.db().ttl().map_err(|source| RepoError::Catalog {
            hash: root_hash.to_string(),
            source,
        })?;
        let ttl = Duration::from_secs(ttl);
        repo.ttl = repo.opts.max_ttl.map_or(ttl, |cap| ttl.min(cap));
        Ok(repo)
    }

    fn cached_manifest(cache: &Cache, fqrn: &str) -> Option<SignedManifest> {
        let raw = std::fs::read(cache.root().join(format!("manifest.{fqrn}"))).ok()?;
        SignedManifest::parse(&raw).ok()
    }

    fn fetch_manifest(
        opts: &MountOptions,
        fetcher: &Fetcher,
        cache: &Cache,
        keys: &[PublicKey],
        known: Option<&(ContentHash, u64, u64)>,
    ) -> Result<SignedManifest, RepoError> {
        let raw = fetcher
            .fetch_bytes(".cvmfspublished", 1 << 20)
            .map_err(RepoError::ManifestFetch)?;
        let m = SignedManifest::parse(&raw).map_err(RepoError::Manifest)?;
        if let Some(n) = &m.manifest.fqrn {
            if n != &opts.fqrn {
                return Err(RepoError::WrongRepository { found: n.clone() });
            }
        }
        if let Some((_, t, r)) = known {
            if m.manifest.timestamp.unwrap_or(u64::MAX) < *t {
                return Err(RepoError::Outdated {
                    found: m.manifest.revision,
                    known: *r,
                });
            }
        }
        let x = m.manifest.certificate.ok_or(RepoError::NoCertificate)?;
        let cert_path = cache.fetch_object(
            fetcher,
            &x,
            ObjectKind::Certificate,
            Compression::Zlib,
            None,
        )?;
        let cert_bytes = std::fs::read(&cert_path).map_err(|e| CacheError::Io {
            path: cert_path.clone(),
            source: e,
        })?;
        let cert = Certificate::parse(&cert_bytes).map_err(|e| RepoError::Certificate {
            hash: x.to_string(),
            reason: e.to_string(),
        })?;
        m.verify(&cert).map_err(RepoError::Manifest)?;
        let wl_raw = fetcher
            .fetch_bytes(".cvmfswhitelist", 1 << 20)
            .map_err(RepoError::WhitelistFetch)?;
        let wl = Whitelist::parse(&wl_raw).map_err(RepoError::Whitelist)?;
        wl.verify(&opts.fqrn, now(), keys, &cert)
            .map_err(RepoError::Whitelist)?;
        // Verified: remember it for offline use.
        if let Ok(mut tmp) = cache.temp_file() {
            use std::io::Write;
            if tmp.write_all(&raw).is_ok() {
                let _ = tmp.persist(cache.root().join(format!("manifest.{}", opts.fqrn)));
            }
        }
        let mm = &m.manifest;
        let _ = cache.write_breadcrumb(
            &opts.fqrn,
            &mm.root_catalog,
            mm.timestamp.unwrap_or(0),
            mm.revision,
        );
        Ok(m)
    }

    fn select_tag(
        opts: &MountOptions,
        fetcher: &Fetcher,
        cache: &Cache,
        m: &SignedManifest,
    ) -> Result<Tag, RepoError> {
        let h = m.manifest.history.ok_or_else(|| {
            RepoError::History("the repository has no history database (manifest has no H)".into())
        })?;
        let p = cache.fetch_object(fetcher, &h, ObjectKind::History, Compression::Zlib, None)?;
        let hist = History::open(&p).map_err(|source| RepoError::Catalog {
            hash: h.to_string(),
            source,
        })?;
        let found = if let Some(t) = &opts.tag {
            hist.tag(t).map_err(|source| RepoError::Catalog {
                hash: h.to_string(),
                source,
            })?
        } else {
            hist.tag_at(opts.date.unwrap_or(0))
                .map_err(|source| RepoError::Catalog {
                    hash: h.to_string(),
                    source,
                })?
        };
        found.ok_or_else(|| match &opts.tag {
            Some(t) => RepoError::History(format!("tag {t:?} not found")),
            None => {
                RepoError::History("no revision published at or before the requested date".into())
            }
        })
    }

    /// Open (download if needed) a catalog by hash.
    fn catalog(&self, h: &ContentHash, size: Option<u64>) -> Result<Arc<OpenCatalog>, RepoError> {
        if let Some(c) = self.catalogs.get(h) {
            return Ok(c);
        }
        // Catalogs of the mounted revision survive quota cleanups.
        self.cache.pin(h);
        let path = self.download(
            || self.cache.get(h).is_some(),
            h,
            ObjectKind::Catalog,
            || {
                self.cache.fetch_object(
                    &self.fetcher,
                    h,
                    ObjectKind::Catalog,
                    Compression::Zlib,
                    size.filter(|&s| s > 0),
                )
            },
        )?;
        let bad = |source| RepoError::Catalog {
            hash: h.to_string(),
            source,
        };
        let db = Catalog::open(&path).map_err(bad)?;
        // Read once: every lookup walks them from the root down.
        let nested = db.nested().map_err(bad)?;
        Ok(self
            .catalogs
            .insert(Arc::new(OpenCatalog::new(*h, db, nested))))
    }

    /// The catalog responsible for `path` (descending nested catalogs); a
    /// mountpoint itself resolves to the nested catalog (its root row).
    fn catalog_for(&self, path: &[u8]) -> Result<Arc<OpenCatalog>, RepoError> {
        let mut cat = self.catalog(&self.root_hash, None)?;
        while let Some(n) = cat.nested_for(path) {
            let (h, size) = (n.hash, n.size);
            cat = self.catalog(&h, Some(size))?;
        }
        Ok(cat)
    }

    fn inode_for(path: &[u8], e: &DirEntry) -> u64 {
        let (a, b) = if e.hardlink_group > 0 {
            // Hard links live in one directory: group id within the parent.
            let mut key = perch_format::catalog::parent_path(path).to_vec();
            key.extend_from_slice(format!("\0hardlink\0{}", e.hardlink_group).as_bytes());
            perch_format::hash::path_md5(&key)
        } else {
            perch_format::hash::path_md5(path)
        };
        let v = u64::from_ne_bytes((a ^ b.rotate_left(17)).to_ne_bytes()) & 0x7fff_ffff_ffff_ffff;
        if v < 2 {
            v + 2
        } else {
            v
        }
    }

    /// Normalize a user path (`/a/b/`, `a/b`, `/`) to catalog form.
    pub fn normalize(path: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(path.len() + 1);
        for comp in path
            .split(|&c| c == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
        {
            out.push(b'/');
            out.extend_from_slice(comp);
        }
        out
    }

    /// Look up a path (catalog form: `""` or `/a/b`). Symlinks are not followed.
    pub fn lookup(&self, path: &[u8]) -> Result<Option<Node>, RepoError> {
        let cat = self.catalog_for(path)?;
        let e = cat.db().lookup(path).map_err(|source| RepoError::Catalog {
            hash: cat.hash.to_string(),
            source,
        })?;
        Ok(e.map(|entry| Node {
            inode: Self::inode_for(path, &entry),
            path: path.to_vec(),
            entry,
            catalog: cat.hash,
        }))
    }

    /// Resolve a path inside the repository following symlinks in every
    /// component (and in the last one when `follow_last`), like the kernel
    /// would below the mount point `mount_dir/<fqrn>`. `Ok(None)` = ENOENT.
    /// A symlink that leaves the repository is an error naming its target.
    pub fn resolve(
        &self,
        path: &[u8],
        follow_last: bool,
        mount_dir: &[u8],
    ) -> Result<Option<Node>, ResolveError> {
        let mut prefix = mount_dir.to_vec();
        prefix.push(b'/');
        prefix.extend_from_slice(self.opts.fqrn.as_bytes());
        let mut todo: Vec<Vec<u8>> = path
            .split(|&c| c == b'/')
            .filter(|c| !c.is_empty())
            .map(<[u8]>::to_vec)
            .rev()
            .collect();
        let mut cur: Vec<u8> = Vec::new();
        let mut links = 0;
        while let Some(comp) = todo.pop() {
            if comp == b"." {
                continue;
            }
            if comp == b".." {
                cur.truncate(cur.iter().rposition(|&c| c == b'/').unwrap_or(0));
                continue;
            }
            let mut next = cur.clone();
            next.push(b'/');
            next.extend_from_slice(&comp);
            let Some(node) = self.lookup(&next)? else {
                return Ok(None);
            };
            let last = todo.is_empty();
            if node.entry.is_symlink() && (!last || follow_last) {
                links += 1;
                if links > 40 {
                    return Err(ResolveError::Loop(
                        String::from_utf8_lossy(path).into_owned(),
                    ));
                }
                let target = self.readlink(&node);
                if target.starts_with(b"/") {
                    let Some(rest) = target
                        .strip_prefix(prefix.as_slice())
                        .filter(|r| r.is_empty() || r.starts_with(b"/"))
                    else {
                        return Err(ResolveError::Outside(
                            String::from_utf8_lossy(&target).into_owned(),
                        ));
                    };
                    cur.clear();
                    todo.extend(
                        rest.split(|&c| c == b'/')
                            .filter(|c| !c.is_empty())
                            .map(<[u8]>::to_vec)
                            .rev(),
                    );
                } else {
                    todo.extend(
                        target
                            .split(|&c| c == b'/')
                            .filter(|c| !c.is_empty())
                            .map(<[u8]>::to_vec)
                            .rev(),
                    );
                }
                continue;
            }
            if !last && !node.entry.is_dir() {
                return Err(ResolveError::NotDir(
                    String::from_utf8_lossy(&next).into_owned(),
                ));
            }
            cur = next;
        }
        if cur.is_empty() {
            return Ok(self.lookup(b"")?);
        }
        Ok(self.lookup(&cur)?)
    }

    /// List a directory (hidden entries removed), sorted by name.
    pub fn list(&self, path: &[u8]) -> Result<Vec<Node>, RepoError> {
        let cat = self.catalog_for(path)?;
        let h = cat.hash;
        let rows = cat.db().list(path).map_err(|source| RepoError::Catalog {
            hash: h.to_string(),
            source,
        })?;
        let mut out: Vec<Node> = rows
            .into_iter()
            .filter(|e| !e.is_hidden())
            .map(|entry| {
                let mut p = path.to_vec();
                p.push(b'/');
                p.extend_from_slice(&entry.name);
                Node {
                    inode: Self::inode_for(&p, &entry),
                    path: p,
                    entry,
                    catalog: h,
                }
            })
            .collect();
        out.sort_by(|a, b| a.entry.name.cmp(&b.entry.name));
        Ok(out)
    }

    /// Symlink target with `$(VAR)` expansion.
    pub fn readlink(&self, node: &Node) -> Vec<u8> {
        expand_symlink(&node.entry.symlink, &*self.env)
    }

    /// Replace the environment used for symlink expansion.
    pub fn set_symlink_env(&mut self, env: SymlinkEnv) {
        self.env = env;
    }

    /// Chunk list of a node (empty if not chunked).
    pub fn chunks(&self, node: &Node) -> Result<Vec<perch_format::catalog::Chunk>, RepoError> {
        if !node.entry.is_chunked() {
            return Ok(Vec::new());
        }
        let cat = self.catalog(&node.catalog, None)?;
        let chunks = cat.db().chunks(&node.path, &node.entry);
        chunks.map_err(|source| RepoError::Catalog {
            hash: node.catalog.to_string(),
            source,
        })
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
        self.download(
            || self.cache.get(&h).is_some(),
            &h,
            ObjectKind::File,
            || {
                self.cache.fetch_object(
                    &self.fetcher,
                    &h,
                    ObjectKind::File,
                    compression,
                    Some(e.size),
                )
            },
        )
    }

    /// Runs `op`, which downloads object `h` unless `cached()`. While offline, a download
    /// before the retry time fails at once (no failover, no timeouts); the first one after
    /// it retries the network (the manifest, verified as at mount) and, if that works, the
    /// mount is online again. The mounted revision never changes: a newer one is for new
    /// mounts (DESIGN.md §4).
    fn download(
        &self,
        cached: impl FnOnce() -> bool,
        h: &ContentHash,
        kind: ObjectKind,
        op: impl FnOnce() -> Result<PathBuf, CacheError>,
    ) -> Result<PathBuf, RepoError> {
        // Online (the usual case) `op` looks at the cache itself: no second stat here.
        if self.is_offline() && !cached() {
            self.network_ready(h, kind)?;
        }
        Ok(op()?)
    }

    /// `Ok` when downloads may use the network (online, or offline and a retry just worked).
    fn network_ready(&self, h: &ContentHash, kind: ObjectKind) -> Result<(), RepoError> {
        let mut state = self.offline.lock().unwrap_or_else(|p| p.into_inner());
        let Some(off) = state.as_mut() else {
            return Ok(());
        };
        let refused = |off: &Offline| RepoError::Offline {
            fqrn: self.opts.fqrn.clone(),
            what: format!(
                "{}/{}",
                self.fetcher.current_server().unwrap_or_default(),
                h.object_path(kind)
            ),
            reason: off.reason.clone(),
            retry_in: off.retry_at.saturating_duration_since(Instant::now()),
        };
        if Instant::now() < off.retry_at {
            return Err(refused(off));
        }
        let known = self.cache.read_breadcrumb(&self.opts.fqrn);
        match Self::fetch_manifest(
            &self.opts,
            &self.fetcher,
            &self.cache,
            &self.keys,
            known.as_ref(),
        ) {
            Ok(m) => {
                // Warn level like the offline notice, so the default log shows both ends.
                tracing::warn!(target: "cvmfs", fqrn = %self.opts.fqrn, mounted = self.revision, newest = m.manifest.revision, "network is back, downloading again (this process keeps its revision; new mounts get the newest)");
                *state = None;
                Ok(())
            }
            Err(e) => {
                off.reason = crate::error_chain(&e);
                off.retry_at = Instant::now() + self.opts.offline_retry;
                tracing::debug!(target: "cvmfs", fqrn = %self.opts.fqrn, error = %off.reason, "still offline");
                Err(refused(off))
            }
        }
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
    /// Serving the last known revision without downloads because the network failed
    /// (until a retry finds it back).
    pub fn is_offline(&self) -> bool {
        self.offline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
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

    /// Magic and stored extended attributes of a node, as `(name, value)`.
    pub fn xattr(&self, node: &Node, name: &str) -> Result<Option<Vec<u8>>, RepoError> {
        let e = &node.entry;
        let v: Option<String> = match name {
            "user.fqrn" => Some(self.opts.fqrn.clone()),
            "user.revision" => Some(self.revision.to_string()),
            "user.root_hash" => Some(self.root_hash.to_string()),
            "user.tag" => Some(self.tag.clone().unwrap_or_default()),
            "user.expires" => Some(if self.tag.is_some() {
                "never (fixed root catalog)".into()
            } else if let Some(off) = &*self.offline.lock().unwrap_or_else(|p| p.into_inner()) {
                // Offline, the next check is the network retry.
                (off.retry_at
                    .saturating_duration_since(Instant::now())
                    .as_secs()
                    / 60)
                    .to_string()
            } else {
                (self.ttl.as_secs() / 60).to_string()
            }),
            "user.hash" if e.is_regular() && !e.is_chunked() => e.hash.map(|h| h.to_string()),
            "user.lhash" if e.is_regular() && !e.is_chunked() => Some(match e.hash {
                Some(h) if self.cache.get(&h).is_some() => h.to_string(),
                _ => "Not in cache".into(),
            }),
            "user.chunks" if e.is_regular() => Some(if e.is_chunked() {
                self.chunks(node)?.len().to_string()
            } else {
                "1".into()
            }),
            "user.chunk_list" if e.is_regular() => Some(if e.is_chunked() {
                self.chunks(node)?
                    .iter()
                    .map(|c| format!("{},{},{}", c.hash, c.offset, c.size))
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                e.hash
                    .map(|h| format!("{h},0,{}", e.size))
                    .unwrap_or_default()
            }),
            "user.compression" if e.is_regular() => e.compression().map(|c| c.name().to_string()),
            "user.direct_io" if e.is_regular() => Some(
                if e.flags & perch_format::catalog::FLAG_DIRECT_IO != 0 {
                    "1"
                } else {
                    "0"
                }
                .into(),
            ),
            "user.external_file" if e.is_regular() => Some(
                if e.flags & perch_format::catalog::FLAG_EXTERNAL != 0 {
                    "1"
                } else {
                    "0"
                }
                .into(),
            ),
            "user.rawlink" | "xfsroot.rawlink" if e.is_symlink() => {
                Some(String::from_utf8_lossy(&e.symlink).into_owned())
            }
            "user.host" => self.fetcher.current_server().map(str::to_string),
            "user.host_list" => Some(self.fetcher.servers().join(";")),
            "user.nclg" => Some(self.loaded_catalogs().to_string()),
            "user.ndownload" => Some(
                self.cache
                    .stats
                    .downloads
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .to_string(),
            ),
            "user.pid" => Some(std::process::id().to_string()),
            "user.version" => Some(env!("CARGO_PKG_VERSION").to_string()),
            _ => None,
        };
        if let Some(v) = v {
            return Ok(Some(v.into_bytes()));
        }
        Ok(e.xattrs
            .iter()
            .find(|(k, _)| k.as_slice() == name.as_bytes())
            .map(|(_, v)| v.clone()))
    }

    /// Names for `listxattr`: stored ones, plus the magic ones on the root.
    pub fn list_xattrs(&self, node: &Node) -> Vec<String> {
        let mut names: Vec<String> = node
            .entry
            .xattrs
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect();
        if node.path.is_empty() {
            for n in MAGIC_XATTRS {
                names.push((*n).to_string());
            }
        }
        names
    }
}

/// Magic attribute names perch answers on every path.
pub const MAGIC_XATTRS: &[&str] = &[
    "user.fqrn",
    "user.revision",
    "user.root_hash",
    "user.tag",
    "user.expires",
    "user.host",
    "user.host_list",
    "user.nclg",
    "user.ndownload",
    "user.pid",
    "user.version",
];

/// Decompress helper for tests and tools.
pub fn inflate(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    zlib_decompress(bytes)
}
