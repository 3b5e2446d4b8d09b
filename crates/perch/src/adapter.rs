//! The two adapters the binary holds: the CVMFS client seen as perch-vfs's
//! `Repository`/`Mounter`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hashlink::LruCache;
use perch_cvmfs::{Node, RepoError as CvmfsError, Repository};
use perch_vfs::{Entry, Errno, Kind, RepoError};

use crate::mounts::Client;

/// Most entries cached per repository, least recently used dropped first (a mounted
/// revision never changes, so cached lookups never go stale; the bound keeps memory
/// independent of the repository's size: ~0.5 KiB an entry). The ancestors every
/// resolution walks through stay; a miss costs one catalog query (a few µs).
pub(crate) const LOOKUP_CACHE_MAX: usize = 16_384;

/// A mounted CVMFS repository as perch-vfs sees it.
pub struct VfsRepo {
    repo: Arc<Repository>,
    id: String,
    /// path -> node (None = ENOENT). perch-vfs resolves component by
    /// component, so every prefix of every path is looked up again and again.
    lookups: Mutex<LruCache<Vec<u8>, Option<Node>>>,
}

impl VfsRepo {
    /// Wrap a mounted repository.
    pub fn new(repo: Arc<Repository>) -> VfsRepo {
        let id = repo.root_hash().to_string();
        VfsRepo {
            repo,
            id,
            lookups: Mutex::new(LruCache::new(LOOKUP_CACHE_MAX)),
        }
    }

    fn cached_lookup(&self, path: &[u8]) -> Result<Option<Node>, RepoError> {
        if let Some(n) = self
            .lookups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
        {
            return Ok(n.clone());
        }
        let n = self
            .repo
            .lookup(path)
            .map_err(|e| io_error(&self.repo, path, &e))?;
        self.remember(path.to_vec(), n.clone());
        Ok(n)
    }

    fn remember(&self, path: Vec<u8>, n: Option<Node>) {
        let mut m = self.lookups.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(path, n);
    }

    fn node(&self, path: &[u8]) -> Result<Node, RepoError> {
        self.cached_lookup(path)?.ok_or_else(|| {
            RepoError::new(
                Errno::ENOENT,
                format!("{}: not found", String::from_utf8_lossy(path)),
            )
        })
    }
}

fn io_error(repo: &Repository, path: &[u8], e: &CvmfsError) -> RepoError {
    let msg = format!(
        "{}{}: {}",
        repo.fqrn(),
        String::from_utf8_lossy(path),
        perch_cvmfs::error_chain(e)
    );
    tracing::warn!(target: "cvmfs", "{msg}");
    RepoError::io(msg)
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
            .map_err(|e| io_error(&self.repo, path, &e))?;
        let out = nodes
            .iter()
            .map(|n| (n.entry.name.clone(), entry(&self.repo, n)))
            .collect();
        for n in nodes {
            self.remember(n.path.clone(), Some(n));
        }
        Ok(out)
    }

    fn fetch(&self, path: &[u8], _entry: &Entry) -> Result<PathBuf, RepoError> {
        let n = self.node(path)?;
        self.repo
            .fetch(&n)
            .map_err(|e| io_error(&self.repo, path, &e))
    }

    fn getxattr(
        &self,
        path: &[u8],
        _entry: &Entry,
        name: &[u8],
    ) -> Result<Option<Vec<u8>>, RepoError> {
        let n = self.node(path)?;
        let name = String::from_utf8_lossy(name);
        self.repo
            .xattr(&n, &name)
            .map_err(|e| io_error(&self.repo, path, &e))
    }

    fn listxattr(&self, path: &[u8], _entry: &Entry) -> Result<Vec<Vec<u8>>, RepoError> {
        let n = self.node(path)?;
        Ok(self
            .repo
            .list_xattrs(&n)
            .into_iter()
            .map(String::into_bytes)
            .collect())
    }
}

/// Mounts repositories lazily from the configuration.
pub struct VfsMounter {
    client: Mutex<Client>,
    configured: Vec<String>,
    cache_root: PathBuf,
}

impl VfsMounter {
    /// A mounter over `client`; `cache_root` holds the shadow tree and must be
    /// on the file system of the cache objects (hard links).
    pub fn new(mut client: Client, cache_root: PathBuf) -> VfsMounter {
        let mut configured = client.configured();
        configured.extend(client.extra_repositories());
        configured.sort();
        configured.dedup();
        VfsMounter {
            client: Mutex::new(client),
            configured,
            cache_root,
        }
    }
}

impl perch_vfs::Mounter for VfsMounter {
    fn configured(&self) -> Vec<String> {
        self.configured.clone()
    }

    fn mount(&self, fqrn: &str) -> Result<Option<Arc<dyn perch_vfs::Repository>>, RepoError> {
        if fqrn.is_empty() || fqrn.starts_with('.') || !fqrn.contains('.') {
            return Ok(None);
        }
        let mut c = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if !c.has_server(fqrn) {
            return Ok(None);
        }
        match c.mount_or_absent(fqrn) {
            Ok(Some(r)) => Ok(Some(Arc::new(VfsRepo::new(r)))),
            Ok(None) => Ok(None),
            Err(f) => {
                let msg = format!("{:#}", f.error);
                tracing::warn!(target: "cvmfs", "{msg}");
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
        let memo = || vfs.lookups.lock().unwrap().len();
        let file = vfs.lookup(b"/dir/file").unwrap().unwrap();
        assert_eq!(vfs.list(b"/dir").unwrap().len(), 1);
        for i in 0..LOOKUP_CACHE_MAX + 100 {
            let missing = format!("/dir/missing{i}");
            assert!(vfs.lookup(missing.as_bytes()).unwrap().is_none());
            // The ancestors a resolution walks through stay warm.
            assert!(vfs.lookup(b"/dir").unwrap().is_some());
        }
        assert_eq!(memo(), LOOKUP_CACHE_MAX);
        assert!(vfs.lookups.lock().unwrap().contains_key(b"/dir".as_slice()));
        let again = vfs.lookup(b"/dir/file").unwrap().unwrap();
        assert_eq!((again.inode, again.size), (file.inode, file.size));
        assert_eq!(memo(), LOOKUP_CACHE_MAX);
    }
}
