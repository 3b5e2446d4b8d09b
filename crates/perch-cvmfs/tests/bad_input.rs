//! Bad input is refused with an error naming what failed, and nothing is served.

use std::path::{Path, PathBuf};

use perch_cvmfs::{error_chain, MountOptions, Repository};
use perch_format::compress::{zlib_compress, zlib_decompress};
use perch_format::crypto::{Certificate, PrivateKey};
use perch_format::hash::{Algorithm, ContentHash, ObjectKind};
use perch_format::manifest::{Manifest, SignedManifest};
use perch_format::whitelist::Whitelist;
use perch_testkit::{fixtures_dir, tempdir, TempDir};

const FQRN: &str = "tiny.example.org";

/// A scratch copy of the tiny stratum plus a cache dir.
struct Scratch {
    dir: TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempdir().unwrap();
        copy_dir(
            &fixtures_dir().join(FQRN).join("stratum0"),
            &dir.path().join("stratum0"),
        );
        Scratch { dir }
    }
    fn stratum(&self) -> PathBuf {
        self.dir.path().join("stratum0")
    }
    fn key(&self, name: &str) -> PathBuf {
        fixtures_dir().join(FQRN).join("keys").join(name)
    }
    fn mount_with_key(&self, key: PathBuf) -> Result<Repository, String> {
        let url = format!("file://{}", self.stratum().display());
        let o = MountOptions::new(FQRN, &url, vec![key], self.dir.path().join("cache"));
        Repository::mount(o).map_err(|e| error_chain(&e))
    }
    fn mount(&self) -> Result<Repository, String> {
        self.mount_with_key(self.key(&format!("{FQRN}.pub")))
    }
    fn manifest(&self) -> Manifest {
        SignedManifest::parse(&std::fs::read(self.stratum().join(".cvmfspublished")).unwrap())
            .unwrap()
            .manifest
    }
    /// Re-sign a changed manifest with the fixture's certificate key.
    fn write_manifest(&self, m: &Manifest) {
        let key = PrivateKey::from_pem(
            &std::fs::read_to_string(self.key(&format!("{FQRN}.key"))).unwrap(),
        )
        .unwrap();
        std::fs::write(
            self.stratum().join(".cvmfspublished"),
            m.sign(Algorithm::Sha1, &key).unwrap(),
        )
        .unwrap();
    }
    fn master(&self) -> PrivateKey {
        PrivateKey::from_pem(
            &std::fs::read_to_string(self.key(&format!("{FQRN}.masterkey"))).unwrap(),
        )
        .unwrap()
    }
    fn cert(&self) -> Certificate {
        Certificate::parse(&std::fs::read(self.key(&format!("{FQRN}.crt"))).unwrap()).unwrap()
    }
    fn object(&self, h: &ContentHash, kind: ObjectKind) -> PathBuf {
        self.stratum().join(h.object_path(kind))
    }
    /// Store bytes as a new object and return its hash.
    fn put(&self, stored: &[u8], kind: ObjectKind) -> ContentHash {
        let h = Algorithm::Sha1.digest(stored);
        let p = self.object(&h, kind);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, stored).unwrap();
        h
    }
    fn cache_has_no_object_for(&self, content: &[u8]) -> bool {
        let mut stack = vec![self.dir.path().join("cache")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if std::fs::read(&p).map(|b| b == content).unwrap_or(false) {
                    return false;
                }
            }
        }
        true
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

fn assert_err_contains(r: Result<Repository, String>, want: &str) {
    match r {
        Ok(_) => panic!("mount succeeded, expected an error containing {want:?}"),
        Err(e) => assert!(e.contains(want), "error {e:?} does not contain {want:?}"),
    }
}

#[test]
fn wrong_public_key() {
    let s = Scratch::new();
    let other = fixtures_dir().join("alt.example.org/keys/alt.example.org.pub");
    assert_err_contains(
        s.mount_with_key(other),
        "whitelist signature does not verify",
    );
}

#[test]
fn expired_whitelist() {
    let s = Scratch::new();
    let wl =
        Whitelist::create_with_expiry(FQRN, 1_600_000_000, 1_600_086_400, &s.cert(), &s.master())
            .unwrap();
    std::fs::write(s.stratum().join(".cvmfswhitelist"), wl).unwrap();
    assert_err_contains(s.mount(), "whitelist expired at 20200914");
}

#[test]
fn whitelist_for_another_repository() {
    let s = Scratch::new();
    let wl = Whitelist::create(
        FQRN.replace("tiny", "other").as_str(),
        1_700_000_000,
        30_000,
        &s.cert(),
        &s.master(),
    )
    .unwrap();
    std::fs::write(s.stratum().join(".cvmfswhitelist"), wl).unwrap();
    assert_err_contains(
        s.mount(),
        "whitelist is for \"other.example.org\", not \"tiny.example.org\"",
    );
}

#[test]
fn certificate_not_on_the_whitelist() {
    let s = Scratch::new();
    let stranger = Certificate::self_signed(&PrivateKey::generate().unwrap(), FQRN, 30).unwrap();
    let wl = Whitelist::create(FQRN, 1_700_000_000, 30_000, &stranger, &s.master()).unwrap();
    std::fs::write(s.stratum().join(".cvmfswhitelist"), wl).unwrap();
    assert_err_contains(s.mount(), "is not on the whitelist");
}

#[test]
fn flipped_byte_in_manifest_text() {
    let s = Scratch::new();
    // Byte 3 is inside the root catalog hash on the first line.
    flip(&s.stratum().join(".cvmfspublished"), 3);
    let e = s.mount().expect_err("refused");
    assert!(e.contains("manifest"), "{e}");
}

#[test]
fn flipped_byte_in_manifest_signature() {
    let s = Scratch::new();
    let p = s.stratum().join(".cvmfspublished");
    let n = usize::try_from(std::fs::metadata(&p).unwrap().len()).unwrap();
    flip(&p, n - 7);
    assert_err_contains(
        s.mount(),
        "manifest signature does not verify with the certificate",
    );
}

#[test]
fn flipped_byte_in_root_catalog() {
    let s = Scratch::new();
    let c = s.manifest().root_catalog;
    flip(&s.object(&c, ObjectKind::Catalog), 100);
    let e = s.mount().expect_err("refused");
    assert!(e.contains(&format!("cannot fetch object {c}")), "{e}");
    assert!(
        e.contains("hash mismatch") || e.contains("corrupt object"),
        "{e}"
    );
}

#[test]
fn catalog_that_is_not_sqlite() {
    let s = Scratch::new();
    let mut m = s.manifest();
    m.root_catalog = s.put(
        &zlib_compress(b"this is not an SQLite database, just text padding it out"),
        ObjectKind::Catalog,
    );
    s.write_manifest(&m);
    let e = s.mount().expect_err("refused");
    assert!(e.contains(&format!("catalog {}", m.root_catalog)), "{e}");
    assert!(e.contains("database"), "{e}");
}

/// Rewrite the root catalog with `sql` applied and re-sign the manifest.
fn patched_root(s: &Scratch, sql: &str) {
    let mut m = s.manifest();
    let raw =
        zlib_decompress(&std::fs::read(s.object(&m.root_catalog, ObjectKind::Catalog)).unwrap())
            .unwrap();
    let db = s.dir.path().join("patch.db");
    std::fs::write(&db, raw).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(sql).unwrap();
    drop(conn);
    m.root_catalog = s.put(
        &zlib_compress(&std::fs::read(&db).unwrap()),
        ObjectKind::Catalog,
    );
    s.write_manifest(&m);
}

#[test]
fn catalog_rows_with_bad_names() {
    for bad in ["'a/b'", "'..'", "'x' || char(0) || 'y'", "'.'"] {
        let s = Scratch::new();
        patched_root(
            &s,
            &format!("UPDATE catalog SET name = {bad} WHERE name = 'hello.txt';"),
        );
        let repo = s.mount().expect("the root entry is fine");
        let e = repo.list(b"").expect_err("listing refuses the row");
        let msg = error_chain(&e);
        assert!(msg.contains("corrupt catalog row"), "{bad}: {msg}");
        assert!(
            repo.lookup(b"/hello.txt").is_err(),
            "{bad}: lookup refuses it too"
        );
    }
}

fn read_fails(s: &Scratch, path: &[u8]) -> String {
    let repo = s.mount().unwrap();
    let n = repo.lookup(path).unwrap().unwrap();
    let e = repo.read(&n).expect_err("read must fail");
    error_chain(&e)
}

#[test]
fn flipped_byte_in_data_object() {
    let s = Scratch::new();
    let h: ContentHash = "8415eecb60c637cbe5324dc8f614be6fe516816b".parse().unwrap();
    flip(&s.object(&h, ObjectKind::File), 4);
    let e = read_fails(&s, b"/hello.txt");
    assert!(
        e.contains("8415eecb60c637cbe5324dc8f614be6fe516816b"),
        "{e}"
    );
    assert!(e.contains("hash mismatch") || e.contains("corrupt"), "{e}");
    assert!(
        s.cache_has_no_object_for(b"hello tiny\n"),
        "nothing was cached"
    );
}

#[test]
fn truncated_data_object() {
    let s = Scratch::new();
    let h: ContentHash = "a0cb9b6b19330445a5da9ff5b5bf9a42a0cf1270".parse().unwrap();
    let p = s.object(&h, ObjectKind::File);
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() / 2]).unwrap();
    let e = read_fails(&s, b"/dir/b.txt");
    assert!(e.contains("hash mismatch"), "{e}");
    let txn = s.dir.path().join("cache/txn");
    assert_eq!(
        std::fs::read_dir(txn).unwrap().count(),
        0,
        "no temp file left behind"
    );
}

#[test]
fn missing_data_object() {
    let s = Scratch::new();
    let h: ContentHash = "5de1ff656a5bfbd69e1e1f27f0b86accf9b3ccf1".parse().unwrap();
    std::fs::remove_file(s.object(&h, ObjectKind::File)).unwrap();
    let e = read_fails(&s, b"/tool.sh");
    assert!(
        e.contains("not found") && e.contains("5de1ff656a5bfbd69e1e1f27f0b86accf9b3ccf1"),
        "{e}"
    );
}

#[test]
fn missing_nested_catalog_fails_only_below_it() {
    let s = Scratch::new();
    let h: ContentHash = "7ed0a66672c74e7f45a53fbdb5e514119da52a86".parse().unwrap();
    std::fs::remove_file(s.object(&h, ObjectKind::Catalog)).unwrap();
    let repo = s.mount().unwrap();
    assert!(repo.lookup(b"/hello.txt").unwrap().is_some());
    let e = error_chain(&repo.lookup(b"/from-tar/hello.txt").unwrap_err());
    assert!(
        e.contains("7ed0a66672c74e7f45a53fbdb5e514119da52a86") && e.contains("not found"),
        "{e}"
    );
}
