//! The two adapters the binary holds: the CVMFS client seen as perch-vfs's
//! `Repository`/`Mounter`.
//!
//! Both are called from every supervisor thread at once. A mounted revision never changes,
//! so cached lookups never go stale: the lookup cache is a bounded LRU split in shards, each
//! behind its own lock, so threads looking up different paths touch different locks.

use std::borrow::Cow;
use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hashlink::LruCache;
use perch_cvmfs::{Node, RepoError as CvmfsError, Repository};
use perch_vfs::{Entry, Errno, Handle, Kind, RepoError};

use crate::mounts::Client;

/// Most entries cached per repository, least recently used dropped first (a mounted
/// revision never changes, so cached lookups never go stale; the bound keeps memory
/// independent of the repository's size: ~0.5 KiB an entry). The ancestors every
/// resolution walks through stay; a miss costs one catalog query (a few µs).
pub(crate) const LOOKUP_CACHE_MAX: usize = 16_384;

/// Shards of the lookup cache: more than the supervisor threads that can use it at once.
const SHARDS: usize = 32;

/// One shard: path -> node (None = ENOENT), least recently used dropped first.
type Shard = Mutex<LruCache<Vec<u8>, Option<Arc<Node>>>>;

/// path -> node, sharded by path (threads looking up different paths take different locks);
/// nodes are shared, not copied, on a hit. At most [`LOOKUP_CACHE_MAX`] entries in all.
struct LookupCache {
    hasher: RandomState,
    shards: Vec<Shard>,
}

impl LookupCache {
    fn new() -> LookupCache {
        LookupCache {
            hasher: RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(LOOKUP_CACHE_MAX / SHARDS)))
                .collect(),
        }
    }

    fn shard(
        &self,
        path: &[u8],
    ) -> std::sync::MutexGuard<'_, LruCache<Vec<u8>, Option<Arc<Node>>>> {
        let h = self.hasher.hash_one(path);
        // The remainder is below SHARDS, so it fits any usize.
        self.shards[usize::try_from(h % SHARDS as u64).unwrap_or(0)]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, path: &[u8]) -> Option<Option<Arc<Node>>> {
        self.shard(path).get(path).cloned()
    }

    fn insert(&self, path: Vec<u8>, n: Option<Arc<Node>>) {
        self.shard(&path).insert(path, n);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    #[cfg(test)]
    fn contains(&self, path: &[u8]) -> bool {
        self.shard(path).contains_key(path)
    }
}

/// A mounted CVMFS repository as perch-vfs sees it.
pub struct VfsRepo {
    repo: Arc<Repository>,
    id: String,
    /// path -> node (None = ENOENT). perch-vfs resolves component by
    /// component, so every prefix of every path is looked up again and again.
    lookups: LookupCache,
}

impl VfsRepo {
    /// Wrap a mounted repository.
    pub fn new(repo: Arc<Repository>) -> VfsRepo {
        let id = repo.root_hash().to_string();
        VfsRepo {
            repo,
            id,
            lookups: LookupCache::new(),
        }
    }

    fn cached_lookup(&self, path: &[u8]) -> Result<Option<Arc<Node>>, RepoError> {
        if let Some(n) = self.lookups.get(path) {
            return Ok(n);
        }
        let n = self
            .repo
            .lookup(path)
            .map_err(|e| {
                let e = io_error("cannot look up", e);
                log_lookup(&self.repo, path, &e);
                e
            })?
            .map(Arc::new);
        self.remember(path.to_vec(), n.clone());
        Ok(n)
    }

    fn remember(&self, path: Vec<u8>, n: Option<Arc<Node>>) {
        self.lookups.insert(path, n);
    }

    /// The node of an entry this repository gave out (its handle), else looked up by path.
    fn node_of<'e>(&self, path: &[u8], entry: &'e Entry) -> Result<Cow<'e, Node>, RepoError> {
        match entry.handle.as_ref().and_then(|h| h.get::<Node>()) {
            Some(n) => Ok(Cow::Borrowed(n)),
            None => self.node(path).map(|n| Cow::Owned(Node::clone(&n))),
        }
    }

    fn node(&self, path: &[u8]) -> Result<Arc<Node>, RepoError> {
        self.cached_lookup(path)?.ok_or_else(|| {
            RepoError::new(
                Errno::ENOENT,
                format!("{}: not found", String::from_utf8_lossy(path)),
            )
        })
    }
}

/// The cvmfs error as perch-vfs carries it: its errno (a full cache is `ENOSPC`) and the
/// error itself as the source. Not logged here: perch-vfs logs what it passes on
/// ([`log_lookup`] covers the calls it does not log).
fn io_error(op: &str, e: CvmfsError) -> RepoError {
    RepoError::new(Errno::new(e.errno()), op.to_string()).with_source(e)
}

/// Log a failed lookup or attribute read once per object per interval (perch-vfs turns
/// these into an errno without logging).
fn log_lookup(repo: &Repository, path: &[u8], e: &RepoError) {
    let key = format!("{}{}", repo.fqrn(), String::from_utf8_lossy(path));
    if let Some(held) = perch_vfs::limit::allow(&key) {
        let chain = perch_cvmfs::error_chain(e);
        if held > 0 {
            tracing::warn!(target: "cvmfs", "{key}: {chain} ({held} more like this held back)");
        } else {
            tracing::warn!(target: "cvmfs", "{key}: {chain}");
        }
    }
}

fn entry(repo: &Repository, n: &Node) -> Entry {
    let e = &n.entry;
    let kind = if e.is_dir() {
        Kind::Dir
    } else if e.is_symlink() {
        Kind::Symlink
    } else if e.is_special() {
        Kind::from_mode(e.mode).unwrap_or(Kind::Fifo)
    } else {
        Kind::File
    };
    let symlink = e.is_symlink().then(|| repo.readlink(n));
    let size = match kind {
        Kind::Symlink => symlink.as_ref().map(|s| s.len() as u64).unwrap_or(0),
        Kind::CharDev | Kind::BlockDev | Kind::Fifo | Kind::Socket => 0,
        _ => e.size,
    };
    Entry {
        kind,
        mode: (e.mode & 0o7777) | kind.type_bits(),
        size,
        mtime: e.mtime,
        mtime_ns: e.mtime_ns.unwrap_or(0),
        uid: e.uid,
        gid: e.gid,
        nlink: e.linkcount.max(1),
        inode: n.inode,
        rdev: if matches!(kind, Kind::CharDev | Kind::BlockDev) {
            e.size
        } else {
            0
        },
        symlink,
        handle: Some(Handle::new(n.clone())),
    }
}

impl perch_vfs::Repository for VfsRepo {
    fn fqrn(&self) -> &str {
        self.repo.fqrn()
    }

    fn revision_id(&self) -> String {
        self.id.clone()
    }

    fn lookup(&self, path: &[u8]) -> Result<Option<Entry>, RepoError> {
        Ok(self.cached_lookup(path)?.map(|n| entry(&self.repo, &n)))
    }

    fn list(&self, path: &[u8]) -> Result<Vec<(Vec<u8>, Entry)>, RepoError> {
        let nodes = self
            .repo
            .list(path)
            .map_err(|e| io_error("cannot list", e))?;
        let out = nodes
            .iter()
            .map(|n| (n.entry.name.clone(), entry(&self.repo, n)))
            .collect();
        for n in nodes {
            self.remember(n.path.clone(), Some(Arc::new(n)));
        }
        Ok(out)
    }

    fn for_each_child(
        &self,
        path: &[u8],
        f: &mut dyn FnMut(&[u8], Entry) -> std::ops::ControlFlow<()>,
    ) -> Result<(), RepoError> {
        // Streamed a catalog page at a time; the lookup memo keeps the most recent children
        // (it is a bounded LRU), as a listing is often followed by a stat of each.
        self.repo
            .for_each_child(path, |n| {
                let e = entry(&self.repo, &n);
                let flow = f(&n.entry.name, e);
                self.remember(n.path.clone(), Some(Arc::new(n)));
                flow
            })
            .map_err(|e| io_error("cannot list", e))
    }

    fn list_page(
        &self,
        path: &[u8],
        after: Option<u64>,
        max: usize,
    ) -> Result<perch_vfs::ListPage, RepoError> {
        // Catalog row ids are the cursors (as u64, bit for bit).
        let cursor = |r: i64| u64::from_ne_bytes(r.to_ne_bytes());
        let (page, next) = self
            .repo
            .list_page_with_cursors(
                path,
                after.map(|a| i64::from_ne_bytes(a.to_ne_bytes())),
                max,
            )
            .map_err(|e| io_error("cannot list", e))?;
        let mut out = Vec::with_capacity(page.len());
        for (rowid, n) in page {
            out.push((cursor(rowid), n.entry.name.clone(), entry(&self.repo, &n)));
            self.remember(n.path.clone(), Some(Arc::new(n)));
        }
        Ok((out, next.map(cursor)))
    }

    fn fetch(&self, path: &[u8], entry: &Entry) -> Result<PathBuf, RepoError> {
        let n = self.node_of(path, entry)?;
        self.repo.fetch(&n).map_err(|e| io_error("cannot fetch", e))
    }

    fn verify(&self, path: &[u8], entry: &Entry, file: &std::fs::File) -> Result<(), RepoError> {
        let n = self.node_of(path, entry)?;
        self.repo
            .verify_open(&n, file)
            .map_err(|e| io_error("cannot verify", e))
    }

    fn relinked(&self, object: &std::path::Path, file: &std::fs::File) {
        self.repo.cache().relinked(object, file);
    }

    fn getxattr(
        &self,
        path: &[u8],
        entry: &Entry,
        name: &[u8],
    ) -> Result<Option<Vec<u8>>, RepoError> {
        let n = self.node_of(path, entry)?;
        let name = String::from_utf8_lossy(name);
        self.repo.xattr(&n, &name).map_err(|e| {
            let e = io_error("cannot read attribute", e);
            log_lookup(&self.repo, path, &e);
            e
        })
    }

    fn listxattr(&self, path: &[u8], entry: &Entry) -> Result<Vec<Vec<u8>>, RepoError> {
        let n = self.node_of(path, entry)?;
        Ok(self
            .repo
            .list_xattrs(&n)
            .into_iter()
            .map(String::into_bytes)
            .collect())
    }
}

/// Mounts repositories lazily from the configuration. perch-vfs serialises the mounts of one
/// name; different names mount in parallel (the client takes `&self`).
pub struct VfsMounter {
    client: Arc<Client>,
    configured: Vec<String>,
    cache_root: PathBuf,
    /// Names found not to be repositories in this run: not asked again, reported once.
    absent: Mutex<std::collections::HashSet<String>>,
}

/// Whether an unconfigured name under the mount point is worth a mount attempt: a repository
/// name has at least two dots (`<name>.<domain>.<tld>`), so file names that programs probe in
/// `/cvmfs` (`pyvenv.cfg`, `foo.py`) are plain `ENOENT` without a look at the network.
fn looks_like_fqrn(name: &str) -> bool {
    name.split('.').count() >= 3
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl VfsMounter {
    /// A mounter over `client`; `cache_root` holds the shadow tree and must be
    /// on the file system of the cache objects (hard links).
    pub fn new(client: Arc<Client>, cache_root: PathBuf) -> VfsMounter {
        let mut configured = client.configured();
        configured.extend(client.extra_repositories());
        configured.sort();
        configured.dedup();
        VfsMounter {
            client,
            configured,
            cache_root,
            absent: Mutex::default(),
        }
    }

    /// `fqrn` is no repository: remembered for the run, and said once on stderr (the program
    /// only sees `ENOENT`), with what to set.
    fn absent(&self, fqrn: &str, why: String) {
        let new = self
            .absent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fqrn.to_string());
        if new {
            tracing::warn!(target: "cvmfs", "{why}");
        }
    }
}

impl perch_vfs::Mounter for VfsMounter {
    fn configured(&self) -> Vec<String> {
        self.configured.clone()
    }

    fn mount(&self, fqrn: &str) -> Result<Option<Arc<dyn perch_vfs::Repository>>, RepoError> {
        let configured = self
            .configured
            .binary_search_by(|c| c.as_str().cmp(fqrn))
            .is_ok();
        if !configured && !looks_like_fqrn(fqrn) {
            return Ok(None);
        }
        if self
            .absent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(fqrn)
        {
            return Ok(None);
        }
        let c = &self.client;
        if !c.has_server(fqrn) {
            self.absent(
                fqrn,
                format!(
                    "{fqrn}: no such repository: no server configured for it (set \
                     CVMFS_SERVER_URL, e.g. with --config FILE, or check the name)"
                ),
            );
            return Ok(None);
        }
        // Fetches and verifies the manifest and root catalog: may wait on the network.
        match perch_intercept::blocking(|| c.mount_or_absent(fqrn)) {
            Ok(Some(r)) => Ok(Some(Arc::new(VfsRepo::new(r)))),
            Ok(None) => {
                self.absent(
                    fqrn,
                    format!(
                        "{fqrn}: no such repository on its servers (check the name and \
                         CVMFS_SERVER_URL)"
                    ),
                );
                Ok(None)
            }
            Err(f) => {
                // Retried on the next access: one line per repository per interval.
                let msg = format!("{:#}", f.error);
                if let Some(held) = perch_vfs::limit::allow(&format!("mount {fqrn}")) {
                    if held > 0 {
                        tracing::warn!(target: "cvmfs", "{msg} ({held} more like this held back)");
                    } else {
                        tracing::warn!(target: "cvmfs", "{msg}");
                    }
                }
                Err(RepoError::io(msg))
            }
        }
    }

    fn cache_root(&self) -> PathBuf {
        self.cache_root.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use perch_vfs::Repository as _;

    #[test]
    fn the_lookup_memo_is_bounded() {
        // A job that touches more paths than the memo holds must not grow it: the least
        // recently used entries go, and what is looked up again is still right.
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("dir")).unwrap();
        std::fs::write(src.join("dir/file"), b"content\n").unwrap();
        let fqrn = "memo.example.org";
        let keys = tmp.path().join("keys");
        perch_publish::keygen(fqrn, &keys, 30).unwrap();
        let stratum = tmp.path().join("stratum");
        perch_publish::publish(&perch_publish::PublishOptions::new(
            &src, fqrn, &keys, &stratum,
        ))
        .unwrap();
        let opts = perch_cvmfs::MountOptions::new(
            fqrn,
            &format!("file://{}", stratum.display()),
            vec![keys.join(format!("{fqrn}.pub"))],
            tmp.path().join("cache"),
        );
        let vfs = VfsRepo::new(Arc::new(Repository::mount(opts).unwrap()));
        let memo = || vfs.lookups.len();
        let file = vfs.lookup(b"/dir/file").unwrap().unwrap();
        assert_eq!(vfs.list(b"/dir").unwrap().len(), 1);
        // Twice the bound: every shard sees more than its share.
        for i in 0..2 * LOOKUP_CACHE_MAX {
            let missing = format!("/dir/missing{i}");
            assert!(vfs.lookup(missing.as_bytes()).unwrap().is_none());
            // The ancestors a resolution walks through stay warm.
            assert!(vfs.lookup(b"/dir").unwrap().is_some());
        }
        assert_eq!(memo(), LOOKUP_CACHE_MAX);
        assert!(vfs.lookups.contains(b"/dir"));
        let again = vfs.lookup(b"/dir/file").unwrap().unwrap();
        assert_eq!((again.inode, again.size), (file.inode, file.size));
        assert_eq!(memo(), LOOKUP_CACHE_MAX);
    }
}
