//! The history database (tags, object `H`) and the reflog (`.cvmfsreflog`).

use std::path::Path;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::catalog::CatalogError;
use crate::hash::ContentHash;

/// A named tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// Tag name.
    pub name: String,
    /// Root catalog hash.
    pub hash: ContentHash,
    /// Revision.
    pub revision: u64,
    /// Publish time (Unix seconds).
    pub timestamp: i64,
    /// Description.
    pub description: String,
    /// Uncompressed root catalog size.
    pub size: u64,
}

/// A read-only history database.
pub struct History {
    conn: Connection,
}

/// A `tags` row: name, hash, revision, timestamp, description, size.
type TagRow = (String, String, i64, i64, Option<String>, Option<i64>);

fn row_to_tag(r: &rusqlite::Row<'_>) -> rusqlite::Result<TagRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn to_tag(t: TagRow) -> Result<Tag, CatalogError> {
    let hash = t.1.parse().map_err(|_| CatalogError::Corrupt {
        path: t.0.clone(),
        reason: "tag hash is invalid",
    })?;
    Ok(Tag {
        name: t.0,
        hash,
        revision: u64::try_from(t.2).unwrap_or(0),
        timestamp: t.3,
        description: t.4.unwrap_or_default(),
        size: t.5.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
    })
}

const TAG_COLS: &str = "name, hash, revision, timestamp, description, size";

impl History {
    /// Open an uncompressed history database.
    pub fn open(path: &Path) -> Result<History, CatalogError> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(History { conn })
    }

    /// All tags, newest revision first.
    pub fn tags(&self) -> Result<Vec<Tag>, CatalogError> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {TAG_COLS} FROM tags ORDER BY revision DESC, name"
        ))?;
        let rows = st.query_map([], row_to_tag)?;
        rows.map(|r| to_tag(r?)).collect()
    }

    /// The tag called `name`.
    pub fn tag(&self, name: &str) -> Result<Option<Tag>, CatalogError> {
        let t = self
            .conn
            .query_row(
                &format!("SELECT {TAG_COLS} FROM tags WHERE name = ?1"),
                [name],
                row_to_tag,
            )
            .optional()?;
        t.map(to_tag).transpose()
    }

    /// The newest main-line tag published at or before `timestamp`.
    pub fn tag_at(&self, timestamp: i64) -> Result<Option<Tag>, CatalogError> {
        let t = self
            .conn
            .query_row(
                &format!("SELECT {TAG_COLS} FROM tags WHERE (branch = '' OR branch IS NULL) AND timestamp <= ?1 ORDER BY revision DESC LIMIT 1"),
                [timestamp],
                row_to_tag,
            )
            .optional()?;
        t.map(to_tag).transpose()
    }
}

/// Writes a history database.
pub struct HistoryWriter {
    conn: Connection,
}

impl HistoryWriter {
    /// Create a new history database, copying `previous` tags if given.
    pub fn create(
        path: &Path,
        fqrn: &str,
        previous_hash: Option<&ContentHash>,
        previous: Option<&History>,
    ) -> Result<HistoryWriter, CatalogError> {
        let conn = Connection::open(path)?;
        conn.execute_batch("PRAGMA page_size=4096; PRAGMA journal_mode=DELETE; BEGIN;")?;
        conn.execute_batch(
            "CREATE TABLE properties (key TEXT, value TEXT, CONSTRAINT pk_properties PRIMARY KEY (key));
             CREATE TABLE branches (branch TEXT, parent TEXT, initial_revision INTEGER,  CONSTRAINT pk_branch PRIMARY KEY (branch),   FOREIGN KEY (parent) REFERENCES branches (branch),   CHECK ((branch <> '') OR (parent IS NULL)),   CHECK ((branch = '') OR (parent IS NOT NULL)));
             CREATE TABLE tags (name TEXT, hash TEXT, revision INTEGER,   timestamp INTEGER, channel INTEGER, description TEXT, size INTEGER,   branch TEXT, CONSTRAINT pk_tags PRIMARY KEY (name),   FOREIGN KEY (branch) REFERENCES branches (branch));
             CREATE TABLE recycle_bin (hash TEXT, flags INTEGER,   CONSTRAINT pk_hash PRIMARY KEY (hash));
             INSERT INTO branches (branch, parent, initial_revision) VALUES ('', NULL, 0);",
        )?;
        let w = HistoryWriter { conn };
        for (k, v) in [
            ("schema", "1.0".to_string()),
            ("schema_revision", "3".to_string()),
            ("fqrn", fqrn.to_string()),
            (
                "previous_revision",
                previous_hash
                    .map(|h| h.to_string())
                    .unwrap_or_else(|| "0".repeat(40)),
            ),
        ] {
            w.conn.execute(
                "INSERT INTO properties (key, value) VALUES (?1, ?2)",
                params![k, v],
            )?;
        }
        if let Some(prev) = previous {
            for t in prev.tags()? {
                w.put(&t)?;
            }
        }
        Ok(w)
    }

    /// Insert or replace a tag.
    pub fn put(&self, t: &Tag) -> Result<(), CatalogError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO tags (name, hash, revision, timestamp, channel, description, size, branch) VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, '')",
            params![
                t.name,
                t.hash.to_string(),
                i64::try_from(t.revision).unwrap_or(i64::MAX),
                t.timestamp,
                t.description,
                i64::try_from(t.size).unwrap_or(i64::MAX)
            ],
        )?;
        Ok(())
    }

    /// Look up a tag written so far.
    pub fn get(&self, name: &str) -> Result<Option<Tag>, CatalogError> {
        let t = self
            .conn
            .query_row(
                &format!("SELECT {TAG_COLS} FROM tags WHERE name = ?1"),
                [name],
                row_to_tag,
            )
            .optional()?;
        t.map(to_tag).transpose()
    }

    /// Commit, compact and close.
    pub fn finish(self) -> Result<(), CatalogError> {
        self.conn.execute_batch("COMMIT; VACUUM;")?;
        self.conn.close().map_err(|(_, e)| CatalogError::Sql(e))
    }
}

/// Reflog reference types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefType {
    /// Root or nested catalog.
    Catalog = 0,
    /// Certificate.
    Certificate = 1,
    /// History database.
    History = 2,
    /// Metainfo.
    Metainfo = 3,
}

/// The reflog: a plain SQLite file listing every root object ever published.
pub struct Reflog {
    conn: Connection,
}

impl Reflog {
    /// Open an existing reflog for update, or create a new one.
    pub fn open_or_create(path: &Path, fqrn: &str) -> Result<Reflog, CatalogError> {
        let exists = path.exists();
        let conn = Connection::open(path)?;
        conn.execute_batch("PRAGMA journal_mode=DELETE;")?;
        if !exists {
            conn.execute_batch(
                "CREATE TABLE properties (key TEXT, value TEXT, CONSTRAINT pk_properties PRIMARY KEY (key));
                 CREATE TABLE refs (hash TEXT, type INTEGER, timestamp INTEGER, CONSTRAINT pk_refs PRIMARY KEY (hash));
                 INSERT INTO properties VALUES ('schema', '1.0');
                 INSERT INTO properties VALUES ('schema_revision', '0');",
            )?;
            conn.execute("INSERT INTO properties VALUES ('fqrn', ?1)", [fqrn])?;
        }
        Ok(Reflog { conn })
    }

    /// Record a reference (no-op if already present).
    pub fn add(
        &self,
        hash: &ContentHash,
        kind: RefType,
        timestamp: i64,
    ) -> Result<(), CatalogError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO refs (hash, type, timestamp) VALUES (?1, ?2, ?3)",
            params![hash.to_string(), kind as i64, timestamp],
        )?;
        Ok(())
    }

    /// All references of `kind`.
    pub fn list(&self, kind: RefType) -> Result<Vec<ContentHash>, CatalogError> {
        let mut st = self
            .conn
            .prepare("SELECT hash FROM refs WHERE type = ?1 ORDER BY timestamp")?;
        let rows = st.query_map([kind as i64], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for r in rows {
            let s = r?;
            out.push(s.parse().map_err(|_| CatalogError::Corrupt {
                path: s.clone(),
                reason: "reflog hash is invalid",
            })?);
        }
        Ok(out)
    }

    /// Close the file.
    pub fn close(self) -> Result<(), CatalogError> {
        self.conn.close().map_err(|(_, e)| CatalogError::Sql(e))
    }
}
