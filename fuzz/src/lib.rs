//! Helpers shared by the fuzz targets: the fixture keys, a scratch directory, and the text
//! form of a catalog that the `catalog` target turns into a real SQLite file.
//!
//! Nothing here is a parser under test; the targets call perch's own code.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use perch_format::crypto::{Certificate, PublicKey};

/// The reference repositories (`shared/fixtures`): `$PERCH_FIXTURES`, else the first
/// `shared/fixtures` above this crate, like perch-testkit.
pub fn fixtures_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PERCH_FIXTURES") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|d| d.join("shared").join("fixtures"))
        .find(|d| d.is_dir())
        .expect("shared/fixtures not found above the fuzz crate; set PERCH_FIXTURES")
}

/// The signing certificate and master key of the `tiny.example.org` fixture, so that seeds
/// taken from it start with valid signatures.
pub fn tiny_keys() -> &'static (Certificate, PublicKey) {
    static K: OnceLock<(Certificate, PublicKey)> = OnceLock::new();
    K.get_or_init(|| {
        let keys = fixtures_dir().join("tiny.example.org").join("keys");
        let cert =
            Certificate::parse(&std::fs::read(keys.join("tiny.example.org.crt")).unwrap()).unwrap();
        let master = PublicKey::from_pem(
            &std::fs::read_to_string(keys.join("tiny.example.org.pub")).unwrap(),
        )
        .unwrap();
        (cert, master)
    })
}

/// A directory private to this fuzzing process (under `$TMPDIR`, which `bench/fuzz.sh` points
/// at a directory it removes afterwards).
pub fn scratch() -> &'static Path {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("perch-fuzz-")
            .tempdir()
            .unwrap()
            .keep()
    })
}

/// Decode `%XX` escapes (anything else is taken literally), so that a field of the text
/// catalog can hold any byte, `/`, NUL and blanks included.
pub fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let Ok(b) = u8::from_str_radix(&String::from_utf8_lossy(&s[i + 1..i + 3]), 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

fn num(f: Option<&&[u8]>) -> i64 {
    f.and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn hexbytes(f: Option<&&[u8]>) -> Option<Vec<u8>> {
    let f = f?;
    if *f == b"-" {
        return None;
    }
    Some(hex::decode(f).unwrap_or_else(|_| f.to_vec()))
}

/// Bind bytes as TEXT without UTF-8 conversion, as the real tool stores names.
fn raw(b: &[u8]) -> rusqlite::types::ToSqlOutput<'_> {
    rusqlite::types::ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Text(b))
}

/// Write the catalog described by `text` to `db` (which must not exist) with the real
/// schema and no consistency checks at all: rows may name parents that do not exist, carry a
/// name that does not match their path, overlapping chunks, any flags.
///
/// One record per line, fields separated by one space, byte fields `%XX`-escaped:
/// - `S <schema>`: `properties.schema` (default `2.5`); `P <key> <value>`: another property;
/// - `E <path> <flags> <mode> <size> <hardlinks> <hash-hex|-> <symlink> [<parent-path> [<name> [<xattr-hex>]]]`:
///   a row; `md5path` is the hash of `<path>`, the parent defaults to `<path>` without its last
///   component and the name to its last component;
/// - `C <path> <offset> <size> <hash-hex>`: a chunk of `<path>`;
/// - `N <path> <hash-text> <size>`: a `nested_catalogs` row.
///
/// Returns the paths of the `E` rows (the target looks each of them up).
pub fn write_catalog(text: &[u8], db: &Path) -> rusqlite::Result<Vec<Vec<u8>>> {
    use perch_format::catalog::{parent_path, SCHEMA_SQL};
    use perch_format::hash::path_md5;
    use rusqlite::params;
    let conn = rusqlite::Connection::open(db)?;
    conn.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; BEGIN;")?;
    conn.execute_batch(SCHEMA_SQL)?;
    let mut schema = b"2.5".to_vec();
    let mut paths = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let f: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let field = |i: usize| f.get(i).map(|b| unescape(b)).unwrap_or_default();
        match f[0] {
            b"S" => schema = field(1),
            b"P" => {
                conn.execute(
                    "INSERT OR REPLACE INTO properties (key, value) VALUES (?1, ?2)",
                    params![raw(&field(1)), raw(&field(2))],
                )?;
            }
            b"E" => {
                let path = field(1);
                let (a, b) = path_md5(&path);
                let parent = match f.get(8) {
                    Some(p) if *p != b"." => unescape(p),
                    _ => parent_path(&path).to_vec(),
                };
                let (pa, pb) = if path.is_empty() {
                    (0, 0)
                } else {
                    path_md5(&parent)
                };
                let name = match f.get(9) {
                    Some(n) => unescape(n),
                    None => path
                        .rsplit(|&c| c == b'/')
                        .next()
                        .unwrap_or_default()
                        .to_vec(),
                };
                conn.execute(
                    "INSERT OR REPLACE INTO catalog (md5path_1, md5path_2, parent_1, parent_2, hardlinks, hash, size, mode, mtime, mtimens, flags, name, symlink, uid, gid, xattr) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1700000000, 0, ?9, ?10, ?11, 0, 0, ?12)",
                    params![
                        a,
                        b,
                        pa,
                        pb,
                        num(f.get(5)),
                        hexbytes(f.get(6)),
                        num(f.get(4)),
                        num(f.get(3)),
                        num(f.get(2)),
                        raw(&name),
                        raw(&field(7)),
                        hexbytes(f.get(10)),
                    ],
                )?;
                paths.push(path);
            }
            b"C" => {
                let (a, b) = path_md5(&field(1));
                conn.execute(
                    "INSERT OR REPLACE INTO chunks (md5path_1, md5path_2, offset, size, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![a, b, num(f.get(2)), num(f.get(3)), hexbytes(f.get(4))],
                )?;
            }
            b"N" => {
                conn.execute(
                    "INSERT OR REPLACE INTO nested_catalogs (path, sha1, size) VALUES (?1, ?2, ?3)",
                    params![raw(&field(1)), raw(&field(2)), num(f.get(3))],
                )?;
            }
            _ => {}
        }
    }
    conn.execute(
        "INSERT OR REPLACE INTO properties (key, value) VALUES ('schema', ?1)",
        params![raw(&schema)],
    )?;
    conn.execute_batch("COMMIT;")?;
    Ok(paths)
}
