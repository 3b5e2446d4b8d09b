//! File catalogs: SQLite schema 2.5, entries, chunks, nested catalogs, statistics.
//!
//! Catalogs are opened read-only and immutable from an uncompressed file; the
//! writer creates the exact tables the real server tool creates.

use std::path::Path;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::compress::Compression;
use crate::hash::{path_md5, Algorithm, ContentHash};

/// Entry flag: directory.
pub const FLAG_DIR: u32 = 1;
/// Entry flag: nested catalog mountpoint (row in the parent catalog).
pub const FLAG_NESTED_MOUNTPOINT: u32 = 2;
/// Entry flag: non-directory.
pub const FLAG_FILE: u32 = 4;
/// Entry flag: symbolic link (with `FLAG_FILE`).
pub const FLAG_LINK: u32 = 8;
/// Entry flag: special file (with `FLAG_FILE`).
pub const FLAG_SPECIAL: u32 = 16;
/// Entry flag: nested catalog root (row in the child catalog).
pub const FLAG_NESTED_ROOT: u32 = 32;
/// Entry flag: chunked file.
pub const FLAG_CHUNKED: u32 = 64;
/// Entry flag: external file.
pub const FLAG_EXTERNAL: u32 = 128;
/// Entry flag: bind mountpoint.
pub const FLAG_BIND_MOUNTPOINT: u32 = 0x4000;
/// Entry flag: hidden from listings.
pub const FLAG_HIDDEN: u32 = 0x8000;
/// Entry flag: direct I/O.
pub const FLAG_DIRECT_IO: u32 = 0x10000;

/// Page cache of one open catalog, in KiB (SQLite's default is 2 000). Catalog files are
/// immutable and sit in the OS page cache anyway, so a page missed here costs one `pread` of
/// a cached page; what stays here are the B-tree's upper levels, which every lookup visits.
/// A reader with many catalogs open keeps memory bounded by this times their number.
/// At most this; a catalog gets 1/64 of its size, at least [`PAGE_CACHE_MIN_KIB`] (a B-tree's
/// upper levels are a small fraction of it), so many small nested catalogs stay small.
pub const PAGE_CACHE_KIB: i64 = 512;

/// The page cache of a small catalog.
pub const PAGE_CACHE_MIN_KIB: i64 = 64;

/// Errors reading or writing catalogs.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// SQLite failed (not a database, I/O, constraint).
    #[error("catalog database error")]
    Sql(#[from] rusqlite::Error),
    /// The schema version is not one perch reads.
    #[error("unsupported catalog schema {0}")]
    Schema(String),
    /// A row is inconsistent (bad name, bad hash, bad chunk list).
    #[error("corrupt catalog row {path:?}: {reason}")]
    Corrupt {
        /// Path (or name) of the row.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// One catalog row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Last path component; empty for a (nested) catalog root.
    pub name: Vec<u8>,
    /// Flags (see `FLAG_*`).
    pub flags: u32,
    /// Full `st_mode` with type bits.
    pub mode: u32,
    /// Decompressed size (regular), 4096 (dirs), target length (symlinks), rdev (devices).
    pub size: u64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Nanosecond part of mtime, if stored.
    pub mtime_ns: Option<u32>,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Hard-link group (0 = none).
    pub hardlink_group: u32,
    /// Link count.
    pub linkcount: u32,
    /// Whole-file content hash.
    pub hash: Option<ContentHash>,
    /// Raw (unexpanded) symlink target; empty for non-links.
    pub symlink: Vec<u8>,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl DirEntry {
    /// Is a directory.
    pub fn is_dir(&self) -> bool {
        self.flags & FLAG_DIR != 0
    }
    /// Is a symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.flags & FLAG_LINK != 0
    }
    /// Is a special file (fifo, socket, device).
    pub fn is_special(&self) -> bool {
        self.flags & FLAG_SPECIAL != 0
    }
    /// Is a regular file.
    pub fn is_regular(&self) -> bool {
        self.flags & (FLAG_DIR | FLAG_LINK | FLAG_SPECIAL) == 0 && self.flags & FLAG_FILE != 0
    }
    /// Is chunked.
    pub fn is_chunked(&self) -> bool {
        self.flags & FLAG_CHUNKED != 0
    }
    /// Is a nested catalog mountpoint (in the parent).
    pub fn is_nested_mountpoint(&self) -> bool {
        self.flags & FLAG_NESTED_MOUNTPOINT != 0
    }
    /// Is a nested catalog root (in the child).
    pub fn is_nested_root(&self) -> bool {
        self.flags & FLAG_NESTED_ROOT != 0
    }
    /// Hidden from listings.
    pub fn is_hidden(&self) -> bool {
        self.flags & FLAG_HIDDEN != 0
    }
    /// Hash algorithm from the flags.
    pub fn algorithm(&self) -> Option<Algorithm> {
        Algorithm::from_flags(self.flags)
    }
    /// Compression of the file's objects.
    pub fn compression(&self) -> Option<Compression> {
        Compression::from_flags(self.flags)
    }
}

/// A chunk of a chunked file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Offset in the file.
    pub offset: u64,
    /// Decompressed size.
    pub size: u64,
    /// Object hash (stored with letter `P`).
    pub hash: ContentHash,
}

/// A `nested_catalogs` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NestedRef {
    /// Mount path, e.g. `/from-tar`.
    pub path: Vec<u8>,
    /// Catalog hash.
    pub hash: ContentHash,
    /// Uncompressed size (0 if unknown).
    pub size: u64,
}

impl NestedRef {
    /// Whether `path` lies below this catalog's mount path (or is it, with
    /// `include_self`: the nested root row, not the parent's mountpoint row).
    pub fn covers(&self, path: &[u8], include_self: bool) -> bool {
        path.starts_with(&self.path)
            && match path.get(self.path.len()) {
                None => include_self,
                Some(&c) => c == b'/',
            }
    }
}

/// Parse an xattr blob (version 1). Malformed blobs give no attributes.
pub fn parse_xattrs(blob: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    fn inner(blob: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
        if *blob.first()? != 1 {
            return None;
        }
        let n = usize::from(*blob.get(1)?);
        let mut pos = 2;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let kl = usize::from(*blob.get(pos)?);
            let vl = usize::from(*blob.get(pos + 1)?);
            pos += 2;
            let k = blob.get(pos..pos + kl)?.to_vec();
            pos += kl;
            let v = blob.get(pos..pos + vl)?.to_vec();
            pos += vl;
            if k.is_empty() || k.contains(&0) {
                return None;
            }
            out.push((k, v));
        }
        Some(out)
    }
    inner(blob).unwrap_or_default()
}

/// Encode xattrs as a version-1 blob (sorted by key). `None` if any name or
/// value is too long or there are too many.
pub fn encode_xattrs(attrs: &[(Vec<u8>, Vec<u8>)]) -> Option<Vec<u8>> {
    if attrs.len() > 255 {
        return None;
    }
    let mut sorted: Vec<_> = attrs.to_vec();
    sorted.sort();
    let mut out = vec![1u8, u8::try_from(sorted.len()).ok()?];
    for (k, v) in &sorted {
        if k.is_empty() || k.contains(&0) {
            return None;
        }
        out.push(u8::try_from(k.len()).ok()?);
        out.push(u8::try_from(v.len()).ok()?);
        out.extend_from_slice(k);
        out.extend_from_slice(v);
    }
    Some(out)
}

/// Expand `$(NAME)` and `$(NAME:-default)` in a symlink target with `lookup`
/// (the client's environment). Unset without default expands to empty; a `$(`
/// without `)` stays literal.
pub fn expand_symlink(raw: &[u8], lookup: &dyn Fn(&str) -> Option<String>) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i..].starts_with(b"$(") {
            if let Some(close) = raw[i + 2..].iter().position(|&b| b == b')') {
                let inner = &raw[i + 2..i + 2 + close];
                let (name, default) = match inner.windows(2).position(|w| w == b":-") {
                    Some(p) => (&inner[..p], Some(&inner[p + 2..])),
                    None => (inner, None),
                };
                // A default is bytes like the rest of the target; a name that is not UTF-8
                // names no variable.
                let value = std::str::from_utf8(name).ok().and_then(lookup);
                match (value, default) {
                    (Some(v), _) => out.extend_from_slice(v.as_bytes()),
                    (None, Some(d)) => out.extend_from_slice(d),
                    (None, None) => {}
                }
                i += 2 + close + 1;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

/// Parent of a repository path (`/a/b` → `/a`, `/a` → ``).
pub fn parent_path(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

/// A path for an error message: a hostile one is cut to its first 200 bytes, so that the
/// message stays one readable line.
fn shown_path(path: &[u8]) -> String {
    const MAX: usize = 200;
    if path.len() <= MAX {
        return String::from_utf8_lossy(path).into_owned();
    }
    format!(
        "{}... ({} bytes)",
        String::from_utf8_lossy(&path[..MAX]),
        path.len()
    )
}

fn i64_to_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

fn i64_to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A read-only catalog.
pub struct Catalog {
    conn: Connection,
    has_mtimens: bool,
    has_xattr: bool,
    root_prefix: Vec<u8>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("root_prefix", &String::from_utf8_lossy(&self.root_prefix))
            .finish()
    }
}

impl Catalog {
    /// Open an uncompressed catalog file read-only.
    pub fn open(path: &Path) -> Result<Catalog, CatalogError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // The file is content-addressed and never changes.
        conn.pragma_update(None, "query_only", true)?;
        // So the shared lock taken by the first read is kept: no lock, unlock, journal and
        // WAL probe and change-counter read around every query (about 30 system calls per
        // lookup). Nobody ever writes a catalog, so nobody waits for this lock.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        let len = std::fs::metadata(path).map_or(0, |m| m.len());
        let kib = i64::try_from(len / 1024 / 64).unwrap_or(PAGE_CACHE_KIB);
        conn.pragma_update(
            None,
            "cache_size",
            -kib.clamp(PAGE_CACHE_MIN_KIB, PAGE_CACHE_KIB),
        )?;
        let schema: Option<String> = conn
            .query_row("SELECT value FROM properties WHERE key='schema'", [], |r| {
                r.get(0)
            })
            .optional()?;
        let schema = schema.unwrap_or_else(|| "1.0".into());
        let ver: f64 = schema.parse().unwrap_or(0.0);
        if !(2.4..2.6).contains(&ver) {
            return Err(CatalogError::Schema(schema));
        }
        let mut cols = Vec::new();
        {
            let mut st = conn.prepare("PRAGMA table_info(catalog)")?;
            let rows = st.query_map([], |r| r.get::<_, String>(1))?;
            for c in rows {
                cols.push(c?);
            }
        }
        for need in [
            "md5path_1",
            "hardlinks",
            "hash",
            "size",
            "mode",
            "mtime",
            "flags",
            "name",
            "symlink",
            "uid",
            "gid",
        ] {
            if !cols.iter().any(|c| c == need) {
                return Err(CatalogError::Schema(format!(
                    "{schema} without column {need}"
                )));
            }
        }
        let root_prefix: Option<Vec<u8>> = conn
            .query_row(
                "SELECT value FROM properties WHERE key='root_prefix'",
                [],
                |r| {
                    Ok(match r.get_ref(0)? {
                        rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                            t.to_vec()
                        }
                        _ => Vec::new(),
                    })
                },
            )
            .optional()?;
        Ok(Catalog {
            has_mtimens: cols.iter().any(|c| c == "mtimens"),
            has_xattr: cols.iter().any(|c| c == "xattr"),
            root_prefix: root_prefix.unwrap_or_default(),
            conn,
        })
    }

    /// The catalog's mount path (`""` for a root catalog).
    pub fn root_prefix(&self) -> &[u8] {
        &self.root_prefix
    }

    fn select(&self) -> String {
        format!(
            "SELECT hardlinks, hash, size, mode, mtime, {}, flags, name, symlink, uid, gid, {} FROM catalog",
            if self.has_mtimens { "mtimens" } else { "NULL" },
            if self.has_xattr { "xattr" } else { "NULL" }
        )
    }

    /// [`Catalog::select`] with the row id as column 12.
    fn select_with_rowid(&self) -> String {
        self.select()
            .replacen(" FROM catalog", ", rowid FROM catalog", 1)
    }

    fn row_to_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<(DirEntry, Option<Vec<u8>>)> {
        let hardlinks: i64 = r.get::<_, Option<i64>>(0)?.unwrap_or(0);
        let hash: Option<Vec<u8>> = r.get(1)?;
        let flags = i64_to_u32(r.get::<_, Option<i64>>(6)?.unwrap_or(0));
        let name = match r.get_ref(7)? {
            rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => t.to_vec(),
            _ => Vec::new(),
        };
        let symlink = match r.get_ref(8)? {
            rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => t.to_vec(),
            _ => Vec::new(),
        };
        let xattr: Option<Vec<u8>> = r.get(11)?;
        let hl = u64::from_ne_bytes(hardlinks.to_ne_bytes());
        let e = DirEntry {
            name,
            flags,
            mode: i64_to_u32(r.get::<_, Option<i64>>(3)?.unwrap_or(0)),
            size: i64_to_u64(r.get::<_, Option<i64>>(2)?.unwrap_or(0)),
            mtime: r.get::<_, Option<i64>>(4)?.unwrap_or(0),
            mtime_ns: r
                .get::<_, Option<i64>>(5)?
                .map(|v| i64_to_u32(v).min(999_999_999)),
            uid: i64_to_u32(r.get::<_, Option<i64>>(9)?.unwrap_or(0)),
            gid: i64_to_u32(r.get::<_, Option<i64>>(10)?.unwrap_or(0)),
            hardlink_group: u32::try_from(hl >> 32).unwrap_or(0),
            linkcount: u32::try_from(hl & 0xffff_ffff).unwrap_or(1),
            hash: None,
            symlink,
            xattrs: xattr.as_deref().map(parse_xattrs).unwrap_or_default(),
        };
        Ok((e, hash))
    }

    fn finish_entry(
        path: &[u8],
        mut e: DirEntry,
        hash: Option<Vec<u8>>,
        root: bool,
    ) -> Result<DirEntry, CatalogError> {
        let shown = || shown_path(path);
        if root {
            if e.name.contains(&b'/') || e.name.contains(&0) {
                return Err(CatalogError::Corrupt {
                    path: shown(),
                    reason: "invalid root entry name",
                });
            }
        } else if e.name.is_empty()
            || e.name == b"."
            || e.name == b".."
            || e.name.contains(&b'/')
            || e.name.contains(&0)
        {
            return Err(CatalogError::Corrupt {
                path: shown(),
                reason: "entry name is empty, '.', '..' or contains '/' or NUL",
            });
        }
        // No Linux file system holds a longer name, so no publisher can have made it (NAME_MAX).
        if e.name.len() > 255 {
            return Err(CatalogError::Corrupt {
                path: shown(),
                reason: "entry name is longer than 255 bytes",
            });
        }
        if let Some(h) = hash {
            let algo = e.algorithm().ok_or(CatalogError::Corrupt {
                path: shown(),
                reason: "unknown hash algorithm",
            })?;
            e.hash = Some(
                ContentHash::from_raw(algo, &h).ok_or(CatalogError::Corrupt {
                    path: shown(),
                    reason: "hash is not 20 bytes",
                })?,
            );
        }
        if e.linkcount == 0 {
            e.linkcount = 1;
        }
        Ok(e)
    }

    /// Look up the entry at `path` (`""` = root, else `/a/b`).
    pub fn lookup(&self, path: &[u8]) -> Result<Option<DirEntry>, CatalogError> {
        let (a, b) = path_md5(path);
        let sql = format!("{} WHERE md5path_1 = ?1 AND md5path_2 = ?2", self.select());
        let mut st = self.conn.prepare_cached(&sql)?;
        let row = st.query_row(params![a, b], Self::row_to_entry).optional()?;
        match row {
            None => Ok(None),
            Some((e, h)) => {
                let is_root = path == self.root_prefix.as_slice();
                let e = Self::finish_entry(path, e, h, is_root)?;
                if !is_root && Some(e.name.as_slice()) != path.rsplit(|&c| c == b'/').next() {
                    return Err(CatalogError::Corrupt {
                        path: shown_path(path),
                        reason: "row name does not match its path hash",
                    });
                }
                Ok(Some(e))
            }
        }
    }

    /// The row id of the entry at `path`, which places it in its directory's listing
    /// ([`Catalog::list_page`] order); `None` if there is no such entry.
    pub fn rowid(&self, path: &[u8]) -> Result<Option<i64>, CatalogError> {
        let (a, b) = path_md5(path);
        let mut st = self
            .conn
            .prepare_cached("SELECT rowid FROM catalog WHERE md5path_1 = ?1 AND md5path_2 = ?2")?;
        Ok(st.query_row(params![a, b], |r| r.get(0)).optional()?)
    }

    /// Children of directory `path` (including hidden ones; callers filter).
    pub fn list(&self, path: &[u8]) -> Result<Vec<DirEntry>, CatalogError> {
        let mut out = Vec::new();
        let mut after = i64::MIN;
        loop {
            let page = self.list_page(path, after, 4096)?;
            let Some((last, _)) = page.last() else {
                return Ok(out);
            };
            after = *last;
            out.extend(page.into_iter().map(|(_, e)| e));
        }
    }

    /// At most `max` children of directory `path` whose row id is above `after`, in row id
    /// order, each with its row id: pass the last one as `after` for the next page (`i64::MIN`
    /// for the first). A directory of any size is read this way in pages of bounded memory.
    /// Each page is one range scan, of the parent index where the catalog has it, else of
    /// the table from `after` on, so the pages of one listing cost one scan in all.
    pub fn list_page(
        &self,
        path: &[u8],
        after: i64,
        max: usize,
    ) -> Result<Vec<(i64, DirEntry)>, CatalogError> {
        let (a, b) = path_md5(path);
        let sql = format!(
            "{} WHERE parent_1 = ?1 AND parent_2 = ?2 AND rowid > ?3 ORDER BY rowid LIMIT ?4",
            self.select_with_rowid()
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = st.query_map(params![a, b, after, max], |r| {
            Ok((r.get::<_, i64>(12)?, Self::row_to_entry(r)?))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (rowid, (e, h)) = r?;
            let mut p = path.to_vec();
            p.push(b'/');
            p.extend_from_slice(&e.name);
            out.push((rowid, Self::finish_entry(&p, e, h, false)?));
        }
        Ok(out)
    }

    /// Chunk list of a chunked file, sorted by offset and checked to tile `size`.
    pub fn chunks(&self, path: &[u8], entry: &DirEntry) -> Result<Vec<Chunk>, CatalogError> {
        let shown = || shown_path(path);
        let algo = entry.algorithm().ok_or(CatalogError::Corrupt {
            path: shown(),
            reason: "unknown hash algorithm",
        })?;
        let (a, b) = path_md5(path);
        let mut st = self
            .conn
            .prepare_cached("SELECT offset, size, hash FROM chunks WHERE md5path_1 = ?1 AND md5path_2 = ?2 ORDER BY offset")?;
        let rows = st.query_map(params![a, b], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        let mut next = 0u64;
        for r in rows {
            let (off, size, h) = r?;
            let (off, size) = (i64_to_u64(off), i64_to_u64(size));
            if off != next {
                return Err(CatalogError::Corrupt {
                    path: shown(),
                    reason: "chunks do not tile the file",
                });
            }
            let hash = ContentHash::from_raw(algo, &h).ok_or(CatalogError::Corrupt {
                path: shown(),
                reason: "chunk hash is not 20 bytes",
            })?;
            next = off + size;
            out.push(Chunk {
                offset: off,
                size,
                hash,
            });
        }
        if out.is_empty() {
            return Err(CatalogError::Corrupt {
                path: shown(),
                reason: "chunked file without chunks",
            });
        }
        if next != entry.size {
            return Err(CatalogError::Corrupt {
                path: shown(),
                reason: "chunk sizes do not add up to the file size",
            });
        }
        Ok(out)
    }

    /// All `nested_catalogs` rows (direct children).
    pub fn nested(&self) -> Result<Vec<NestedRef>, CatalogError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT path, sha1, size FROM nested_catalogs")?;
        let rows = st.query_map([], |r| {
            let path = match r.get_ref(0)? {
                rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                    t.to_vec()
                }
                _ => Vec::new(),
            };
            Ok((path, r.get::<_, String>(1)?, r.get::<_, Option<i64>>(2)?))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (path, sha1, size) = r?;
            let hash = sha1.parse().map_err(|_| CatalogError::Corrupt {
                path: String::from_utf8_lossy(&path).into_owned(),
                reason: "nested catalog hash is invalid",
            })?;
            out.push(NestedRef {
                path,
                hash,
                size: size.map(i64_to_u64).unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// The nested catalog that `path` lies in or below (not counting `path`
    /// itself when `include_self` is false, i.e. a mountpoint row is looked
    /// up in the parent).
    pub fn nested_for(
        &self,
        path: &[u8],
        include_self: bool,
    ) -> Result<Option<NestedRef>, CatalogError> {
        Ok(self
            .nested()?
            .into_iter()
            .find(|n| n.covers(path, include_self)))
    }

    /// A property value.
    pub fn property(&self, key: &str) -> Result<Option<String>, CatalogError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM properties WHERE key = ?1", [key], |r| {
                let v: rusqlite::types::Value = r.get(0)?;
                Ok(match v {
                    rusqlite::types::Value::Text(t) => t,
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Real(f) => f.to_string(),
                    _ => String::new(),
                })
            })
            .optional()?)
    }

    /// Revision counter of this catalog.
    pub fn revision(&self) -> Result<u64, CatalogError> {
        Ok(self
            .property("revision")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// TTL in seconds (root catalogs; default 240).
    pub fn ttl(&self) -> Result<u64, CatalogError> {
        Ok(self
            .property("TTL")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(240))
    }

    /// All statistics counters.
    pub fn statistics(&self) -> Result<Vec<(String, i64)>, CatalogError> {
        let mut st = self
            .conn
            .prepare("SELECT counter, value FROM statistics ORDER BY counter")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// The statements that create an empty schema 2.5 catalog, as the real tool writes them.
pub const SCHEMA_SQL: &str = "
CREATE TABLE properties (key TEXT, value TEXT, CONSTRAINT pk_properties PRIMARY KEY (key));
CREATE TABLE catalog (md5path_1 INTEGER, md5path_2 INTEGER, parent_1 INTEGER, parent_2 INTEGER, hardlinks INTEGER, hash BLOB, size INTEGER, mode INTEGER, mtime INTEGER, mtimens INTEGER, flags INTEGER, name TEXT, symlink TEXT, uid INTEGER, gid INTEGER, xattr BLOB,  CONSTRAINT pk_catalog PRIMARY KEY (md5path_1, md5path_2));
CREATE INDEX idx_catalog_parent ON catalog (parent_1, parent_2);
CREATE TABLE chunks (md5path_1 INTEGER, md5path_2 INTEGER, offset INTEGER, size INTEGER,  hash BLOB,  CONSTRAINT pk_chunks PRIMARY KEY (md5path_1, md5path_2, offset, size),  FOREIGN KEY (md5path_1, md5path_2) REFERENCES    catalog(md5path_1, md5path_2));
CREATE TABLE nested_catalogs (path TEXT, sha1 TEXT, size INTEGER, CONSTRAINT pk_nested_catalogs PRIMARY KEY (path));
CREATE TABLE bind_mountpoints (path TEXT, sha1 TEXT, size INTEGER, CONSTRAINT pk_bind_mountpoints PRIMARY KEY (path));
CREATE TABLE statistics (counter TEXT, value INTEGER, CONSTRAINT pk_statistics PRIMARY KEY (counter));
";

/// The 12 statistics counter kinds, each stored as `self_X` and `subtree_X`.
pub const COUNTERS: [&str; 12] = [
    "chunked",
    "chunked_size",
    "chunks",
    "dir",
    "external",
    "external_file_size",
    "file_size",
    "nested",
    "regular",
    "special",
    "symlink",
    "xattr",
];

/// Bind raw bytes as a TEXT value without any UTF-8 conversion, so that
/// names that are not valid UTF-8 round-trip (catalog `name`, `symlink` and
/// `nested_catalogs.path` hold the file system's raw bytes, like the real tool).
fn raw_text(bytes: &[u8]) -> rusqlite::types::ToSqlOutput<'_> {
    rusqlite::types::ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Text(bytes))
}

/// Writes a new catalog file.
pub struct CatalogWriter {
    conn: Connection,
}

impl CatalogWriter {
    /// Create an empty catalog at `path` (which must not exist).
    pub fn create(path: &Path) -> Result<CatalogWriter, CatalogError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA page_size=4096; PRAGMA journal_mode=DELETE; PRAGMA synchronous=OFF; PRAGMA locking_mode=EXCLUSIVE;",
        )?;
        conn.execute_batch("BEGIN;")?;
        conn.execute_batch(SCHEMA_SQL)?;
        Ok(CatalogWriter { conn })
    }

    /// Insert an entry for full repository path `path`.
    pub fn insert(&self, path: &[u8], e: &DirEntry) -> Result<(), CatalogError> {
        let (a, b) = path_md5(path);
        let (pa, pb) = if path.is_empty() {
            (0, 0)
        } else {
            path_md5(parent_path(path))
        };
        let hardlinks = (u64::from(e.hardlink_group) << 32) | u64::from(e.linkcount);
        let hardlinks = i64::from_ne_bytes(hardlinks.to_ne_bytes());
        let xattr = if e.xattrs.is_empty() {
            None
        } else {
            encode_xattrs(&e.xattrs)
        };
        self.conn
            .prepare_cached(
                "INSERT INTO catalog (md5path_1, md5path_2, parent_1, parent_2, hardlinks, hash, size, mode, mtime, mtimens, flags, name, symlink, uid, gid, xattr) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )?
            .execute(params![
                a,
                b,
                pa,
                pb,
                hardlinks,
                e.hash.map(|h| h.bytes.to_vec()),
                i64::try_from(e.size).unwrap_or(i64::MAX),
                i64::from(e.mode),
                e.mtime,
                e.mtime_ns.map(i64::from),
                i64::from(e.flags),
                raw_text(&e.name),
                raw_text(&e.symlink),
                i64::from(e.uid),
                i64::from(e.gid),
                xattr,
            ])?;
        Ok(())
    }

    /// Insert a chunk row for `path`.
    pub fn insert_chunk(&self, path: &[u8], c: &Chunk) -> Result<(), CatalogError> {
        let (a, b) = path_md5(path);
        self.conn
            .prepare_cached("INSERT INTO chunks (md5path_1, md5path_2, offset, size, hash) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![
                a,
                b,
                i64::try_from(c.offset).unwrap_or(i64::MAX),
                i64::try_from(c.size).unwrap_or(i64::MAX),
                c.hash.bytes.to_vec()
            ])?;
        Ok(())
    }

    /// Register a nested catalog.
    pub fn insert_nested(&self, n: &NestedRef) -> Result<(), CatalogError> {
        self.conn
            .prepare_cached("INSERT INTO nested_catalogs (path, sha1, size) VALUES (?1, ?2, ?3)")?
            .execute(params![
                raw_text(&n.path),
                n.hash.to_string(),
                i64::try_from(n.size).unwrap_or(i64::MAX)
            ])?;
        Ok(())
    }

    /// Set a property (stored as TEXT, like the real tool).
    pub fn set_property(&self, key: &str, value: &str) -> Result<(), CatalogError> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO properties (key, value) VALUES (?1, ?2)")?
            .execute(params![key, value])?;
        Ok(())
    }

    /// Set a property whose value is raw bytes stored as TEXT (`root_prefix`
    /// of a nested catalog whose path is not valid UTF-8).
    pub fn set_property_bytes(&self, key: &str, value: &[u8]) -> Result<(), CatalogError> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO properties (key, value) VALUES (?1, ?2)")?
            .execute(params![key, raw_text(value)])?;
        Ok(())
    }

    /// Set a statistics counter.
    pub fn set_counter(&self, counter: &str, value: i64) -> Result<(), CatalogError> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO statistics (counter, value) VALUES (?1, ?2)")?
            .execute(params![counter, value])?;
        Ok(())
    }

    /// Commit, compact and close.
    pub fn finish(self) -> Result<(), CatalogError> {
        self.conn.execute_batch("COMMIT; VACUUM;")?;
        self.conn.close().map_err(|(_, e)| CatalogError::Sql(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_expansion() {
        let env = |k: &str| match k {
            "ARCH" => Some("x86_64".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(expand_symlink(b"/sw/$(ARCH)/bin", &env), b"/sw/x86_64/bin");
        assert_eq!(expand_symlink(b"$(NOPE:-gen)/x", &env), b"gen/x");
        assert_eq!(expand_symlink(b"$(EMPTY:-gen)/x", &env), b"/x");
        assert_eq!(expand_symlink(b"$(NOPE)/x", &env), b"/x");
        assert_eq!(expand_symlink(b"a$(ARCH", &env), b"a$(ARCH");
        // Defaults keep their bytes (they were turned into U+FFFD).
        assert_eq!(expand_symlink(b"$(NOPE:-\xff\xfe)/x", &env), b"\xff\xfe/x");
        assert_eq!(expand_symlink(b"$(\xff:-d)", &|_| Some("v".into())), b"d");
    }

    #[test]
    fn non_utf8_names_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.db");
        let w = CatalogWriter::create(&p).unwrap();
        w.set_property("schema", "2.5").unwrap();
        w.set_property_bytes("root_prefix", b"/n\xff").unwrap();
        let name = b"bad\xfe\x80name".to_vec();
        let e = DirEntry {
            name: name.clone(),
            flags: FLAG_FILE | FLAG_LINK,
            mode: 0o120777,
            size: 2,
            mtime: 1,
            mtime_ns: None,
            uid: 0,
            gid: 0,
            hardlink_group: 0,
            linkcount: 1,
            hash: None,
            symlink: b"\xff\x00x".to_vec(),
            xattrs: Vec::new(),
        };
        let mut path = b"/n\xff/".to_vec();
        path.extend_from_slice(&name);
        w.insert(&path, &e).unwrap();
        let h = ContentHash::from_raw(Algorithm::Sha1, &[7; 20]).unwrap();
        w.insert_nested(&NestedRef {
            path: b"/n\xff/d\xfe".to_vec(),
            hash: h,
            size: 1,
        })
        .unwrap();
        w.finish().unwrap();
        let c = Catalog::open(&p).unwrap();
        assert_eq!(c.root_prefix(), b"/n\xff");
        assert_eq!(c.lookup(&path).unwrap().unwrap(), e);
        assert_eq!(c.list(b"/n\xff").unwrap(), vec![e]);
        assert_eq!(c.nested().unwrap()[0].path, b"/n\xff/d\xfe");
    }

    #[test]
    fn pages_of_a_listing_hand_out_every_child_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.db");
        let w = CatalogWriter::create(&p).unwrap();
        w.set_property("schema", "2.5").unwrap();
        let file = |name: &str| DirEntry {
            name: name.as_bytes().to_vec(),
            flags: FLAG_FILE,
            mode: 0o100644,
            size: 0,
            mtime: 1,
            mtime_ns: None,
            uid: 0,
            gid: 0,
            hardlink_group: 0,
            linkcount: 1,
            hash: None,
            symlink: Vec::new(),
            xattrs: Vec::new(),
        };
        for i in 0..10 {
            w.insert(format!("/d/f{i}").as_bytes(), &file(&format!("f{i}")))
                .unwrap();
            // Rows of another directory in between: skipped, not counted in a page.
            w.insert(format!("/e/g{i}").as_bytes(), &file(&format!("g{i}")))
                .unwrap();
        }
        w.finish().unwrap();
        let c = Catalog::open(&p).unwrap();
        let (mut seen, mut after, mut pages) = (Vec::new(), i64::MIN, 0);
        loop {
            let page = c.list_page(b"/d", after, 3).unwrap();
            let Some((last, _)) = page.last() else { break };
            assert!(page.len() <= 3);
            after = *last;
            pages += 1;
            seen.extend(page.into_iter().map(|(_, e)| e.name));
        }
        assert_eq!(pages, 4);
        let want: Vec<Vec<u8>> = (0..10).map(|i| format!("f{i}").into_bytes()).collect();
        assert_eq!(seen, want);
        assert_eq!(c.list(b"/d").unwrap().len(), 10);
        // An entry's row id resumes the listing right after it.
        let at = c.rowid(b"/d/f6").unwrap().unwrap();
        let rest: Vec<_> = c
            .list_page(b"/d", at, 10)
            .unwrap()
            .into_iter()
            .map(|(_, e)| e.name)
            .collect();
        assert_eq!(rest, [b"f7".to_vec(), b"f8".to_vec(), b"f9".to_vec()]);
        assert_eq!(c.rowid(b"/d/nothing").unwrap(), None);
    }

    #[test]
    fn xattr_round_trip() {
        let a = vec![
            (b"user.b".to_vec(), b"2".to_vec()),
            (b"user.a".to_vec(), b"1".to_vec()),
        ];
        let blob = encode_xattrs(&a).unwrap();
        let back = parse_xattrs(&blob);
        assert_eq!(back[0].0, b"user.a");
        assert_eq!(back.len(), 2);
        assert!(parse_xattrs(&[1, 3, 1]).is_empty());
    }

    proptest::proptest! {
        #[test]
        fn xattr_parse_never_panics(v in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse_xattrs(&v);
        }
        #[test]
        fn expand_never_panics(v in proptest::collection::vec(proptest::num::u8::ANY, 0..100)) {
            let _ = expand_symlink(&v, &|_| Some("x".into()));
        }
    }
}
