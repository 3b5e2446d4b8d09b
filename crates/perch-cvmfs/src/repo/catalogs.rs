//! Catalogs: the open catalogs of one mounted revision (a bounded LRU, so that memory does
//! not grow with the number of nested catalogs a program walks through), and the namespace
//! read from them: lookup, symlink-following resolution, listings, chunk lists.
//!
//! Rows are never copied out of SQLite to be kept: a lookup asks the catalog database each
//! time (a few µs warm). What an open catalog holds is its connection, whose page cache is
//! capped by perch-format (the file is in the OS page cache anyway), and its
//! `nested_catalogs` rows, read once because every lookup walks them from the root down. A
//! catalog pushed out of the LRU is opened again from the cache file when needed (its
//! object is pinned in the cache while the revision is mounted).

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, MutexGuard};

use hashlink::LruCache;
use perch_format::catalog::{expand_symlink, Catalog, CatalogError, DirEntry, NestedRef};
use perch_format::compress::Compression;
use perch_format::hash::{ContentHash, ObjectKind};

use super::{Node, RepoError, Repository, ResolveError, SymlinkEnv};

/// Most catalogs kept open per mounted revision. Enough for the chain from the root to any
/// path (nesting is rarely deeper than ten) plus siblings a walk comes back to; each costs
/// at most its page cache (`perch_format::catalog::PAGE_CACHE_KIB`) and a few statements.
pub const MAX_OPEN_CATALOGS: usize = 32;

/// Rows a listing reads from the catalog at a time (about 200 bytes each in memory).
pub const LIST_PAGE: usize = 4096;

/// A page of children with their cursors (catalog row ids) and the cursor after the page
/// (`None`: the listing is complete). See [`Repository::list_page_with_cursors`].
pub type CursorPage = (Vec<(i64, Node)>, Option<i64>);

/// One open catalog database.
pub(crate) struct OpenCatalog {
    /// Its content hash.
    pub hash: ContentHash,
    /// The connection (not `Sync`: one query at a time).
    db: Mutex<Catalog>,
    /// Its `nested_catalogs` rows (direct children only).
    pub nested: Vec<NestedRef>,
}

impl OpenCatalog {
    pub fn new(hash: ContentHash, db: Catalog, nested: Vec<NestedRef>) -> OpenCatalog {
        OpenCatalog {
            hash,
            db: Mutex::new(db),
            nested,
        }
    }

    /// The database, for one query.
    pub fn db(&self) -> MutexGuard<'_, Catalog> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The nested catalog below this one that `path` lies in (or is the root of).
    pub fn nested_for(&self, path: &[u8]) -> Option<&NestedRef> {
        self.nested.iter().find(|n| n.covers(path, true))
    }
}

/// The bounded set of open catalogs, most recently used kept.
pub(crate) struct OpenCatalogs {
    lru: Mutex<LruCache<ContentHash, Arc<OpenCatalog>>>,
}

impl OpenCatalogs {
    pub fn new(capacity: usize) -> OpenCatalogs {
        OpenCatalogs {
            lru: Mutex::new(LruCache::new(capacity.max(1))),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LruCache<ContentHash, Arc<OpenCatalog>>> {
        self.lru.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The open catalog `h`, marked as just used.
    pub fn get(&self, h: &ContentHash) -> Option<Arc<OpenCatalog>> {
        self.lock().get(h).cloned()
    }

    /// Keep `c` open, closing the least recently used one if full (a caller still holding
    /// the closed one finishes its query first: the `Arc` keeps it alive).
    pub fn insert(&self, c: Arc<OpenCatalog>) -> Arc<OpenCatalog> {
        let mut lru = self.lock();
        // Two threads may open the same catalog at once: the first one kept wins.
        if let Some(have) = lru.get(&c.hash) {
            return have.clone();
        }
        lru.insert(c.hash, c.clone());
        c
    }

    /// Catalogs open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Repository {
    /// Open (download if needed) a catalog by hash.
    pub(super) fn catalog(
        &self,
        h: &ContentHash,
        size: Option<u64>,
    ) -> Result<Arc<OpenCatalog>, RepoError> {
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
        tracing::debug!(target: "cvmfs", fqrn = %self.opts.fqrn, catalog = %h, "catalog loaded");
        // Read once: every lookup walks them from the root down.
        let nested = db.nested().map_err(bad)?;
        Ok(self
            .catalogs
            .insert(Arc::new(OpenCatalog::new(*h, db, nested))))
    }

    /// The catalog responsible for `path` (descending nested catalogs); a
    /// mountpoint itself resolves to the nested catalog (its root row).
    pub(super) fn catalog_for(&self, path: &[u8]) -> Result<Arc<OpenCatalog>, RepoError> {
        let mut cat = self.catalog(&self.root_hash, None)?;
        // Length of the current catalog's mount path: each step must go deeper, so a nested
        // catalog registered at or above its parent (itself, an ancestor) ends the walk.
        let mut depth = 0;
        while let Some(n) = cat.nested_for(path) {
            if n.path.len() <= depth {
                return Err(RepoError::Catalog {
                    hash: cat.hash.to_string(),
                    source: CatalogError::Corrupt {
                        path: String::from_utf8_lossy(&n.path).into_owned(),
                        reason: "nested catalog is not below the catalog that lists it",
                    },
                });
            }
            depth = n.path.len();
            let (h, size) = (n.hash, n.size);
            cat = self.catalog(&h, Some(size))?;
        }
        Ok(cat)
    }

    pub(super) fn inode_for(path: &[u8], e: &DirEntry) -> u64 {
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

    /// List a directory (hidden entries removed), sorted by name. This holds the whole
    /// directory in memory (about 200 bytes an entry): for a directory of any size, use
    /// [`Repository::for_each_child`].
    pub fn list(&self, path: &[u8]) -> Result<Vec<Node>, RepoError> {
        let mut out = Vec::new();
        self.for_each_child(path, |n| {
            out.push(n);
            ControlFlow::Continue(())
        })?;
        out.sort_by(|a, b| a.entry.name.cmp(&b.entry.name));
        Ok(out)
    }

    /// The children of a directory (hidden entries left out), in catalog order (not sorted),
    /// handed to `f` one at a time until it says `Break`. They are read [`LIST_PAGE`] at a
    /// time, so memory does not grow with the directory, and the catalog is not locked while
    /// `f` runs (it may use this repository). A corrupt row ends the listing with an error
    /// after `f` saw the rows before it.
    pub fn for_each_child(
        &self,
        path: &[u8],
        mut f: impl FnMut(Node) -> ControlFlow<()>,
    ) -> Result<(), RepoError> {
        let mut after = None;
        loop {
            let (page, next) = self.list_page(path, after, LIST_PAGE)?;
            for node in page {
                if f(node).is_break() {
                    return Ok(());
                }
            }
            match next {
                Some(n) => after = Some(n),
                None => return Ok(()),
            }
        }
    }

    /// Up to `max` children of a directory (hidden entries left out) after the cursor `after`
    /// (`None`: from the first), in catalog order, each with the cursor that resumes after it,
    /// and the cursor after the page (`None` at the end). Cursors are row ids of the
    /// directory's catalog: stable for the mounted revision, so a reader (a FUSE `readdir`)
    /// can resume anywhere without holding the listing.
    pub fn list_page_with_cursors(
        &self,
        path: &[u8],
        after: Option<i64>,
        max: usize,
    ) -> Result<CursorPage, RepoError> {
        let cat = self.catalog_for(path)?;
        let h = cat.hash;
        let page = cat
            .db()
            .list_page(path, after.unwrap_or(i64::MIN), max.max(1))
            .map_err(|source| RepoError::Catalog {
                hash: h.to_string(),
                source,
            })?;
        let next = match page.last() {
            Some((last, _)) if page.len() >= max.max(1) => Some(*last),
            _ => None,
        };
        let mut out = Vec::with_capacity(page.len());
        for (rowid, entry) in page {
            if entry.is_hidden() {
                continue;
            }
            let mut p = path.to_vec();
            p.push(b'/');
            p.extend_from_slice(&entry.name);
            out.push((
                rowid,
                Node {
                    inode: Self::inode_for(&p, &entry),
                    path: p,
                    entry,
                    catalog: h,
                },
            ));
        }
        Ok((out, next))
    }

    /// Up to `max` entries that follow `node` in its directory's listing, in catalog order:
    /// the order a FUSE `readdir` shows them, and so the order `tar` or `cp -r` reads them.
    pub fn siblings_after(&self, node: &Node, max: usize) -> Result<Vec<Node>, RepoError> {
        let parent = perch_format::catalog::parent_path(&node.path);
        let cat = self.catalog_for(parent)?;
        let at = cat
            .db()
            .rowid(&node.path)
            .map_err(|source| RepoError::Catalog {
                hash: cat.hash.to_string(),
                source,
            })?;
        let Some(at) = at else {
            return Ok(Vec::new());
        };
        let (page, _) = self.list_page_with_cursors(parent, Some(at), max)?;
        Ok(page.into_iter().map(|(_, n)| n).collect())
    }

    /// [`Repository::list_page_with_cursors`] without the per-entry cursors.
    pub fn list_page(
        &self,
        path: &[u8],
        after: Option<i64>,
        max: usize,
    ) -> Result<(Vec<Node>, Option<i64>), RepoError> {
        let (page, next) = self.list_page_with_cursors(path, after, max)?;
        Ok((page.into_iter().map(|(_, n)| n).collect(), next))
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
}
