//! The open catalogs of one mounted revision: a bounded LRU, so that memory does not grow
//! with the number of nested catalogs a program walks through.
//!
//! Rows are never copied out of SQLite to be kept: a lookup asks the catalog database each
//! time (a few µs warm). What an open catalog holds is its connection, whose page cache is
//! capped by perch-format (the file is in the OS page cache anyway), and its
//! `nested_catalogs` rows, read once because every lookup walks them from the root down. A
//! catalog pushed out of the LRU is opened again from the cache file when needed (its
//! object is pinned in the cache while the revision is mounted).

use std::sync::{Arc, Mutex, MutexGuard};

use hashlink::LruCache;
use perch_format::catalog::{Catalog, NestedRef};
use perch_format::hash::ContentHash;

/// Most catalogs kept open per mounted revision. Enough for the chain from the root to any
/// path (nesting is rarely deeper than ten) plus siblings a walk comes back to; each costs
/// at most its page cache (`perch_format::catalog::PAGE_CACHE_KIB`) and a few statements.
pub const MAX_OPEN_CATALOGS: usize = 32;

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
