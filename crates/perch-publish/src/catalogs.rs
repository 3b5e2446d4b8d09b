//! Writing the file catalogs of one revision (spec §7, §14).

use std::collections::HashMap;

use perch_format::catalog::{
    CatalogWriter, DirEntry, NestedRef, FLAG_CHUNKED, FLAG_DIR, FLAG_FILE, FLAG_LINK,
    FLAG_NESTED_MOUNTPOINT, FLAG_NESTED_ROOT,
};
use perch_format::compress::zlib_compress;
use perch_format::hash::{ContentHash, ObjectKind};

use crate::content::{Content, Encoding};
use crate::error::{PublishError, Result};
use crate::store::Store;
use crate::tree::{Kind, Node};

/// The 12 statistics counters of §7.11 (stored as `self_X` and `subtree_X`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Regular files, including chunked ones and `.cvmfscatalog`.
    pub regular: i64,
    /// Symbolic links.
    pub symlink: i64,
    /// Special files.
    pub special: i64,
    /// Directories, including the catalog's root entry and nested mountpoints.
    pub dir: i64,
    /// Nested catalogs (direct children).
    pub nested: i64,
    /// Chunked files.
    pub chunked: i64,
    /// Chunk rows.
    pub chunks: i64,
    /// Bytes of chunked files.
    pub chunked_size: i64,
    /// Bytes of all regular files.
    pub file_size: i64,
    /// Rows with extended attributes.
    pub xattr: i64,
    /// External files.
    pub external: i64,
    /// Bytes of external files.
    pub external_file_size: i64,
}

impl Counters {
    /// `(name, value)` pairs, names as in `perch_format::catalog::COUNTERS`.
    pub fn pairs(&self) -> [(&'static str, i64); 12] {
        [
            ("chunked", self.chunked),
            ("chunked_size", self.chunked_size),
            ("chunks", self.chunks),
            ("dir", self.dir),
            ("external", self.external),
            ("external_file_size", self.external_file_size),
            ("file_size", self.file_size),
            ("nested", self.nested),
            ("regular", self.regular),
            ("special", self.special),
            ("symlink", self.symlink),
            ("xattr", self.xattr),
        ]
    }

    fn add(&mut self, o: &Counters) {
        self.regular += o.regular;
        self.symlink += o.symlink;
        self.special += o.special;
        self.dir += o.dir;
        self.nested += o.nested;
        self.chunked += o.chunked;
        self.chunks += o.chunks;
        self.chunked_size += o.chunked_size;
        self.file_size += o.file_size;
        self.xattr += o.xattr;
        self.external += o.external;
        self.external_file_size += o.external_file_size;
    }
}

/// A catalog of the previous revision.
#[derive(Debug, Clone)]
pub(crate) struct PrevCatalog {
    pub hash: ContentHash,
    pub revision: u64,
}

/// A catalog written by this publish.
#[derive(Debug, Clone)]
pub struct WrittenCatalog {
    /// Mount path (`""` for the root catalog).
    pub path: Vec<u8>,
    /// Object hash (`data/…C`).
    pub hash: ContentHash,
    /// Uncompressed size in bytes.
    pub size: u64,
    /// Catalog `revision` property.
    pub revision: u64,
}

struct CatState {
    own: Counters,
    subtree: Counters,
    next_group: u32,
}

pub(crate) struct CatalogBuilder<'a> {
    pub store: &'a Store,
    pub enc: Encoding,
    pub contents: &'a [Content],
    pub previous: &'a HashMap<Vec<u8>, PrevCatalog>,
    pub now: i64,
    pub ttl: u64,
    pub root_revision: u64,
    pub written: Vec<WrittenCatalog>,
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn join(path: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(path.len() + 1 + name.len());
    p.extend_from_slice(path);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

/// The directory row of `node` (flags 1, size 4096, linkcount 2 + subdirectories).
pub(crate) fn dir_row(node: &Node) -> DirEntry {
    let subdirs = match &node.kind {
        Kind::Dir { children, .. } => children
            .iter()
            .filter(|c| matches!(c.kind, Kind::Dir { .. }))
            .count(),
        _ => 0,
    };
    DirEntry {
        name: node.name.clone(),
        flags: FLAG_DIR,
        mode: node.meta.mode,
        size: 4096,
        mtime: node.meta.mtime,
        mtime_ns: node.meta.mtime_ns,
        uid: node.meta.uid,
        gid: node.meta.gid,
        hardlink_group: 0,
        linkcount: u32::try_from(2 + subdirs).unwrap_or(u32::MAX),
        hash: None,
        symlink: Vec::new(),
        xattrs: node.meta.xattrs.clone(),
    }
}

impl CatalogBuilder<'_> {
    /// Write the catalog rooted at directory `node` (repository path `path`)
    /// whose root row is `root_row`, after all catalogs nested below it.
    /// Returns the catalog and its own and subtree counters.
    pub fn write_catalog(
        &mut self,
        node: &Node,
        path: &[u8],
        root_row: &DirEntry,
    ) -> Result<(WrittenCatalog, Counters, Counters)> {
        let shown = String::from_utf8_lossy(if path.is_empty() { b"/" } else { path }).into_owned();
        let dir = self.store.temp_dir()?;
        let db = dir.path().join("catalog.db");
        let w = CatalogWriter::create(&db).map_err(PublishError::db(format!("catalog {shown}")))?;
        let mut st = CatState {
            own: Counters::default(),
            subtree: Counters::default(),
            next_group: 1,
        };
        self.insert(&w, path, root_row, &mut st, &shown)?;
        st.own.dir += 1;
        self.emit_children(&w, node, path, &mut st)?;

        let (revision, previous) = if path.is_empty() {
            let prev = self.previous.get(path).map(|p| p.hash.to_string());
            (self.root_revision, prev)
        } else {
            match self.previous.get(path) {
                Some(p) => (p.revision + 1, Some(p.hash.to_string())),
                None => (1, None),
            }
        };
        let dbe = PublishError::db(format!("catalog {shown}"));
        let props = || -> std::result::Result<(), perch_format::catalog::CatalogError> {
            w.set_property("schema", "2.5")?;
            w.set_property("schema_revision", "7")?;
            w.set_property("revision", &revision.to_string())?;
            w.set_property(
                "previous_revision",
                &previous.clone().unwrap_or_else(|| "0".repeat(40)),
            )?;
            w.set_property("last_modified", &self.now.to_string())?;
            if path.is_empty() {
                w.set_property("TTL", &self.ttl.to_string())?;
            } else {
                w.set_property_bytes("root_prefix", path)?;
            }
            for (name, v) in st.own.pairs() {
                w.set_counter(&format!("self_{name}"), v)?;
            }
            for (name, v) in st.subtree.pairs() {
                w.set_counter(&format!("subtree_{name}"), v)?;
            }
            Ok(())
        };
        props().map_err(dbe)?;
        w.finish()
            .map_err(PublishError::db(format!("catalog {shown}")))?;
        let bytes = std::fs::read(&db).map_err(PublishError::io("read", &db))?;
        let hash = self
            .store
            .put(self.enc.algo, ObjectKind::Catalog, &zlib_compress(&bytes))?;
        let written = WrittenCatalog {
            path: path.to_vec(),
            hash,
            size: u64::try_from(bytes.len()).unwrap_or(u64::MAX),
            revision,
        };
        tracing::debug!(catalog = %shown, %hash, revision, "catalog written");
        self.written.push(written.clone());
        Ok((written, st.own, st.subtree))
    }

    fn insert(
        &self,
        w: &CatalogWriter,
        path: &[u8],
        e: &DirEntry,
        st: &mut CatState,
        shown: &str,
    ) -> Result<()> {
        if !e.xattrs.is_empty() {
            st.own.xattr += 1;
        }
        w.insert(path, e)
            .map_err(PublishError::db(format!("catalog {shown}")))
    }

    fn emit_children(
        &mut self,
        w: &CatalogWriter,
        dir: &Node,
        path: &[u8],
        st: &mut CatState,
    ) -> Result<()> {
        let Kind::Dir { children, .. } = &dir.kind else {
            return Ok(());
        };
        let shown = || String::from_utf8_lossy(path).into_owned();
        // Hard links are grouped per directory: members of one inode inside
        // this directory share a group; links in other directories are
        // separate files (spec §7.7, what cvmfs_server does).
        let mut members: HashMap<(u64, u64), u32> = HashMap::new();
        for c in children {
            if let Kind::File {
                dev, ino, nlink, ..
            } = c.kind
            {
                if nlink > 1 {
                    *members.entry((dev, ino)).or_default() += 1;
                }
            }
        }
        let mut groups: HashMap<(u64, u64), u32> = HashMap::new();
        for c in children {
            if let Kind::File { dev, ino, .. } = c.kind {
                if members.get(&(dev, ino)).copied().unwrap_or(0) > 1
                    && !groups.contains_key(&(dev, ino))
                {
                    groups.insert((dev, ino), st.next_group);
                    st.next_group += 1;
                }
            }
        }
        for c in children {
            let cpath = join(path, &c.name);
            match &c.kind {
                Kind::Dir { nested, .. } => {
                    let mut row = dir_row(c);
                    if *nested {
                        let mut child_root = row.clone();
                        child_root.flags = FLAG_DIR | FLAG_NESTED_ROOT;
                        let (cat, own, sub) = self.write_catalog(c, &cpath, &child_root)?;
                        row.flags = FLAG_DIR | FLAG_NESTED_MOUNTPOINT;
                        self.insert(w, &cpath, &row, st, &shown())?;
                        st.own.dir += 1;
                        w.insert_nested(&NestedRef {
                            path: cpath.clone(),
                            hash: cat.hash,
                            size: cat.size,
                        })
                        .map_err(PublishError::db(format!("catalog {}", shown())))?;
                        st.own.nested += 1;
                        st.subtree.add(&own);
                        st.subtree.add(&sub);
                    } else {
                        self.insert(w, &cpath, &row, st, &shown())?;
                        st.own.dir += 1;
                        self.emit_children(w, c, &cpath, st)?;
                    }
                }
                Kind::File {
                    dev, ino, index, ..
                } => {
                    let content = &self.contents[*index];
                    let (group, linkcount) = match groups.get(&(*dev, *ino)) {
                        Some(&g) => (g, members[&(*dev, *ino)]),
                        None => (0, 1),
                    };
                    let mut flags =
                        FLAG_FILE | self.enc.algo.flag_bits() | self.enc.compression.flag_bits();
                    let hash = match content {
                        Content::Whole { hash, .. } => Some(*hash),
                        Content::Chunked { .. } => {
                            flags |= FLAG_CHUNKED;
                            None
                        }
                    };
                    let size = content.size();
                    let row = DirEntry {
                        name: c.name.clone(),
                        flags,
                        mode: c.meta.mode,
                        size,
                        mtime: c.meta.mtime,
                        mtime_ns: c.meta.mtime_ns,
                        uid: c.meta.uid,
                        gid: c.meta.gid,
                        hardlink_group: group,
                        linkcount,
                        hash,
                        symlink: Vec::new(),
                        xattrs: c.meta.xattrs.clone(),
                    };
                    self.insert(w, &cpath, &row, st, &shown())?;
                    st.own.regular += 1;
                    st.own.file_size += i64_of(size);
                    if let Content::Chunked { chunks, .. } = content {
                        for ch in chunks {
                            w.insert_chunk(&cpath, ch)
                                .map_err(PublishError::db(format!("catalog {}", shown())))?;
                        }
                        st.own.chunked += 1;
                        st.own.chunked_size += i64_of(size);
                        st.own.chunks += i64::try_from(chunks.len()).unwrap_or(i64::MAX);
                    }
                }
                Kind::Symlink { target } => {
                    let row = DirEntry {
                        name: c.name.clone(),
                        flags: FLAG_FILE | FLAG_LINK,
                        mode: c.meta.mode,
                        size: u64::try_from(target.len()).unwrap_or(u64::MAX),
                        mtime: c.meta.mtime,
                        mtime_ns: c.meta.mtime_ns,
                        uid: c.meta.uid,
                        gid: c.meta.gid,
                        hardlink_group: 0,
                        linkcount: 1,
                        hash: None,
                        symlink: target.clone(),
                        xattrs: c.meta.xattrs.clone(),
                    };
                    self.insert(w, &cpath, &row, st, &shown())?;
                    st.own.symlink += 1;
                }
            }
        }
        Ok(())
    }
}
