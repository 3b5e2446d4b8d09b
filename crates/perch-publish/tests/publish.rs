//! Publishing and reading back with the real reader (`perch_cvmfs::Repository`).
#![allow(
    clippy::print_stderr,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use perch_format::hash::{Algorithm, ObjectKind};
use perch_publish::{keygen, publish, serve, ChunkSizes, PublishError, PublishOptions};
use perch_testkit::{http_get, http_request, tempdir};
use rand::{RngCore, SeedableRng};

fn small_chunks() -> Option<ChunkSizes> {
    Some(ChunkSizes::new(16 << 10, 32 << 10, 64 << 10).unwrap())
}

fn options(src: &Path, keys: &Path, stratum: &Path) -> PublishOptions {
    let mut o = PublishOptions::new(src, FQRN, keys, stratum);
    o.chunking = small_chunks();
    o
}

#[test]
fn round_trip_of_every_entry_kind() {
    let tmp = tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let entries = build_tree(&src);
    assert!(entries >= 5000, "{entries} entries");
    let keys = keys(tmp.path());
    let stratum = tmp.path().join("stratum0");
    let mut o = options(&src, &keys, &stratum);
    o.tag = Some("v1".into());
    let report = publish(&o).unwrap();
    eprintln!("{report}");
    eprintln!(
        "throughput: {:.1} MB/s, {:.0} entries/s",
        report.bytes as f64 / 1e6 / report.elapsed.as_secs_f64(),
        entries as f64 / report.elapsed.as_secs_f64()
    );
    assert_eq!(report.revision, 1);
    assert_eq!(report.skipped, 1, "the FIFO");
    assert_eq!(
        report.catalogs.len(),
        4,
        "root, nested1, nested1/nested2, nested-sibling"
    );
    assert_eq!(report.catalogs[0].path, b"");

    let repo = mount(&file_url(&stratum), &keys, &tmp.path().join("cache"), None);
    assert_eq!(repo.revision(), 1);
    assert_eq!(compare_tree(&repo, &src), entries);
    assert_eq!(repo.loaded_catalogs(), 4);

    // Chunked files: chunk objects tile the file; exactly-one-chunk files are plain.
    let s500 = repo.lookup(b"/sizes/s500k").unwrap().unwrap();
    assert!(s500.entry.is_chunked() && s500.entry.hash.is_none());
    assert!(repo.chunks(&s500).unwrap().len() >= 8);
    for c in repo.chunks(&s500).unwrap() {
        assert!(stratum
            .join(c.hash.object_path(ObjectKind::Chunk))
            .is_file());
    }
    for small in ["/sizes/s10k", "/sizes/s16k", "/hello.txt", "/empty"] {
        let n = repo.lookup(small.as_bytes()).unwrap().unwrap();
        assert!(!n.entry.is_chunked(), "{small}");
        assert!(stratum
            .join(n.entry.hash.unwrap().object_path(ObjectKind::File))
            .is_file());
    }
    // The empty file has the well-known zlib object.
    let empty = repo.lookup(b"/empty").unwrap().unwrap();
    assert_eq!(
        empty.entry.hash.unwrap().to_string(),
        "e8ec3d88b62ebf526e4e5a4ff6162a3aa48a6b78"
    );
    // Tags, manifest and properties.
    let tags: Vec<String> = repo.tags().unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(tags, ["trunk", "v1"]);
    let m = &repo.manifest().manifest;
    assert_eq!((m.ttl, m.revision, m.fqrn.as_deref()), (240, 1, Some(FQRN)));
    assert!(m.reflog.is_some() && m.history.is_some() && m.certificate.is_some());
    assert_eq!(
        Algorithm::Sha1.digest(&std::fs::read(stratum.join(".cvmfsreflog")).unwrap()),
        m.reflog.unwrap()
    );
    assert!(stratum.join(".cvmfs_master_replica").is_file());
    assert_eq!(
        std::fs::read_dir(stratum.join("data/txn")).unwrap().count(),
        0,
        "no temporary files left"
    );

    // Statistics of every catalog, recomputed from the rows.
    let dbs = tmp.path().join("dbs");
    std::fs::create_dir(&dbs).unwrap();
    let (checked, _) = check_statistics(&stratum, &report.root_hash, &dbs);
    assert_eq!(checked, 4);
    // Catalog properties and transition rows.
    let root = open_catalog_db(&stratum, &report.root_hash, &dbs);
    let prop = |db: &rusqlite::Connection, k: &str| -> Option<String> {
        db.query_row("SELECT value FROM properties WHERE key = ?1", [k], |r| {
            r.get(0)
        })
        .ok()
    };
    assert_eq!(prop(&root, "schema").as_deref(), Some("2.5"));
    assert_eq!(prop(&root, "schema_revision").as_deref(), Some("7"));
    assert_eq!(prop(&root, "revision").as_deref(), Some("1"));
    assert_eq!(prop(&root, "TTL").as_deref(), Some("240"));
    assert_eq!(prop(&root, "previous_revision"), Some("0".repeat(40)));
    assert_eq!(prop(&root, "root_prefix"), None);
    let flags: i64 = root
        .query_row(
            "SELECT flags FROM catalog WHERE name = 'nested1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(flags, 3);
    let n1 = report
        .catalogs
        .iter()
        .find(|c| c.path == b"/nested1")
        .unwrap();
    let (nested_hash, nested_size): (String, i64) = root
        .query_row(
            "SELECT sha1, size FROM nested_catalogs WHERE path = '/nested1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (nested_hash, nested_size as u64),
        (n1.hash.to_string(), n1.size)
    );
    let child = open_catalog_db(&stratum, &n1.hash, &dbs);
    assert_eq!(prop(&child, "root_prefix").as_deref(), Some("/nested1"));
    assert_eq!(prop(&child, "TTL"), None);
    let root_flags: i64 = child
        .query_row(
            "SELECT flags FROM catalog WHERE name = 'nested1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(root_flags, 33);
    let below: i64 = root
        .query_row(
            "SELECT COUNT(*) FROM catalog WHERE name IN ('x.txt', 'nested2', '.cvmfscatalog')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(below, 0, "nothing below a mountpoint in the parent");
}

#[test]
fn large_file_with_default_chunk_sizes_is_streamed_in_chunks() {
    let tmp = tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let mut data = vec![0u8; 30 << 20];
    rand::rngs::StdRng::seed_from_u64(30).fill_bytes(&mut data);
    std::fs::write(src.join("big.bin"), &data).unwrap();
    let keys = keys(tmp.path());
    let stratum = tmp.path().join("s0");
    let report = publish(&PublishOptions::new(&src, FQRN, &keys, &stratum)).unwrap();
    eprintln!("{report}");
    let repo = mount(&file_url(&stratum), &keys, &tmp.path().join("cache"), None);
    let n = repo.lookup(b"/big.bin").unwrap().unwrap();
    let chunks = repo.chunks(&n).unwrap();
    assert!(chunks.len() >= 2);
    for c in &chunks {
        assert!(c.size <= 16 << 20);
        assert!(
            c.offset + c.size == 30 << 20 || c.size >= 4 << 20,
            "only the last chunk may be shorter than min"
        );
    }
    // Same cut points as the in-memory cutter.
    let expect: Vec<(u64, u64)> = ChunkSizes::DEFAULT
        .split(&data)
        .into_iter()
        .map(|(o, l)| (o as u64, l as u64))
        .collect();
    assert_eq!(
        chunks
            .iter()
            .map(|c| (c.offset, c.size))
            .collect::<Vec<_>>(),
        expect
    );
    assert_eq!(
        Algorithm::Sha1.digest(&repo.read(&n).unwrap()),
        Algorithm::Sha1.digest(&data)
    );
    assert_eq!(
        report.new_objects as usize,
        chunks.len() + 3,
        "chunks, catalog, history, certificate"
    );
}

#[test]
fn second_publish_uploads_only_what_changed_and_tags_stay_readable() {
    let tmp = tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    build_tree(&src);
    let keys = keys(tmp.path());
    let stratum = tmp.path().join("stratum0");
    let mut o = options(&src, &keys, &stratum);
    o.tag = Some("v1".into());
    let first = publish(&o).unwrap();
    let old_hello = std::fs::read(src.join("hello.txt")).unwrap();

    // Change 10 files, in the root and in both levels of nested catalogs, to new unique content.
    let changed = [
        "hello.txt",
        "big/f0001",
        "big/f1999",
        "many/d05/g005",
        "modes/f644",
        "nested1/x.txt",
        "nested1/nested2/z.txt",
        "nested1/nested2/deep/deeper/w.bin",
        "nested-sibling/s.txt",
        "sizes/s10k",
    ];
    for (i, p) in changed.iter().enumerate() {
        let path = src.join(p);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(
            &path,
            format!("changed content number {i} for the second revision\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    o.tag = Some("v2".into());
    let second = publish(&o).unwrap();
    eprintln!("{second}");
    assert_eq!(second.revision, 2);
    // Exactly: 10 new file objects, 4 rewritten catalogs (every catalog gets a
    // new revision property), 1 history database. The certificate is reused.
    assert_eq!(second.catalogs.len(), 4);
    assert_eq!(second.new_objects, 10 + 4 + 1, "{second}");
    assert_ne!(second.root_hash, first.root_hash);

    // Catalog revisions and back links.
    let dbs = tmp.path().join("dbs");
    std::fs::create_dir(&dbs).unwrap();
    for c in &second.catalogs {
        let db = open_catalog_db(&stratum, &c.hash, &dbs);
        let prev = first.catalogs.iter().find(|p| p.path == c.path).unwrap();
        let (rev, back): (String, String) = db
            .query_row(
                "SELECT (SELECT value FROM properties WHERE key='revision'), (SELECT value FROM properties WHERE key='previous_revision')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((rev.as_str(), back), ("2", prev.hash.to_string()));
    }
    check_statistics(&stratum, &second.root_hash, &dbs);

    let head = mount(&file_url(&stratum), &keys, &tmp.path().join("c-head"), None);
    assert_eq!(head.revision(), 2);
    compare_tree(&head, &src);
    // The root entry keeps its mtime (the repository's creation).
    let r1 = mount(
        &file_url(&stratum),
        &keys,
        &tmp.path().join("c-v1"),
        Some("v1"),
    );
    assert_eq!(r1.revision(), 1);
    assert_eq!(
        r1.lookup(b"").unwrap().unwrap().entry.mtime,
        head.lookup(b"").unwrap().unwrap().entry.mtime
    );
    let hello = r1.lookup(b"/hello.txt").unwrap().unwrap();
    assert_eq!(r1.read(&hello).unwrap(), old_hello);
    let z = r1.lookup(b"/nested1/nested2/z.txt").unwrap().unwrap();
    assert_eq!(r1.read(&z).unwrap(), b"in nested2\n");
    let prev = mount(
        &file_url(&stratum),
        &keys,
        &tmp.path().join("c-prev"),
        Some("trunk-previous"),
    );
    assert_eq!(prev.root_hash(), &first.root_hash);
    let v2 = mount(
        &file_url(&stratum),
        &keys,
        &tmp.path().join("c-v2"),
        Some("v2"),
    );
    assert_eq!(v2.root_hash(), &second.root_hash);
    let mut tags: Vec<(String, u64)> = head
        .tags()
        .unwrap()
        .into_iter()
        .map(|t| (t.name, t.revision))
        .collect();
    tags.sort();
    assert_eq!(
        tags,
        [
            ("trunk".into(), 2),
            ("trunk-previous".into(), 1),
            ("v1".into(), 1),
            ("v2".into(), 2)
        ]
    );

    // The reflog lists both root catalogs, the certificate and both histories.
    let reflog = rusqlite::Connection::open(stratum.join(".cvmfsreflog")).unwrap();
    let count = |t: i64| -> i64 {
        reflog
            .query_row("SELECT COUNT(*) FROM refs WHERE type = ?1", [t], |r| {
                r.get(0)
            })
            .unwrap()
    };
    assert_eq!((count(0), count(1), count(2)), (2, 1, 2));

    // Re-using a tag name is refused before anything is written.
    let e = publish(&o).unwrap_err();
    assert!(
        matches!(e, PublishError::TagExists(ref t) if t == "v2"),
        "{e}"
    );
    // Publishing the unchanged tree again writes only catalogs and history.
    o.tag = None;
    let third = publish(&o).unwrap();
    assert_eq!(third.new_objects, 4 + 1);
}

#[test]
fn shake128_uncompressed_repository_reads_back() {
    let tmp = tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("n")).unwrap();
    std::fs::write(src.join("n/.cvmfscatalog"), b"").unwrap();
    std::fs::write(src.join("n/a"), b"a\n").unwrap();
    let mut data = vec![0u8; 300_000];
    rand::rngs::StdRng::seed_from_u64(1).fill_bytes(&mut data);
    std::fs::write(src.join("n/chunky"), &data).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    let keys = keys(tmp.path());
    let stratum = tmp.path().join("s0");
    let mut o = options(&src, &keys, &stratum);
    o.hash = Algorithm::Shake128;
    o.compression = perch_publish::Compression::None;
    let r = publish(&o).unwrap();
    assert_eq!(r.root_hash.algo, Algorithm::Shake128);
    let repo = mount(&file_url(&stratum), &keys, &tmp.path().join("cache"), None);
    compare_tree(&repo, &src);
    let empty = repo.lookup(b"/empty").unwrap().unwrap();
    assert_eq!(
        empty.entry.hash.unwrap().to_string(),
        "7f9c2ba4e88f827d616045507605853ed73b8093-shake128"
    );
    assert_eq!(empty.entry.flags, 4 | 512 | 2048);
    let dbs = tmp.path().join("dbs");
    std::fs::create_dir(&dbs).unwrap();
    check_statistics(&stratum, &r.root_hash, &dbs);
}

#[test]
fn serve_answers_clients() {
    let tmp = tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("hello.txt"), b"over http\n").unwrap();
    let keys = keys(tmp.path());
    let stratum = tmp.path().join("s0");
    publish(&options(&src, &keys, &stratum)).unwrap();
    let server = serve(&stratum, "127.0.0.1:0".parse().unwrap()).unwrap();
    assert_ne!(server.port(), 0);
    let repo = mount(
        &format!("{}/cvmfs/{FQRN}", server.url()),
        &keys,
        &tmp.path().join("cache"),
        None,
    );
    let n = repo.lookup(b"/hello.txt").unwrap().unwrap();
    assert_eq!(repo.read(&n).unwrap(), b"over http\n");
    // Also at the top level.
    let repo2 = mount(&server.url(), &keys, &tmp.path().join("cache2"), None);
    assert_eq!(repo2.root_hash(), repo.root_hash());

    let port = server.port();
    let r = http_get(port, "/.cvmfspublished").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("max-age=61"));
    assert_eq!(
        r.body,
        std::fs::read(stratum.join(".cvmfspublished")).unwrap()
    );
    let obj = format!(
        "/cvmfs/{FQRN}/{}",
        n.entry.hash.unwrap().object_path(ObjectKind::File)
    );
    let r = http_get(port, &obj).unwrap();
    assert_eq!(
        (r.status, r.header("cache-control")),
        (200, Some("max-age=259200"))
    );
    let head = http_request(
        port,
        format!("HEAD {obj} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    for missing in [
        "/nope",
        "/data/",
        "/data",
        "/",
        "/cvmfs/x/../../etc/passwd",
        "/../etc/passwd",
        "/data/txn/../../.cvmfspublished",
    ] {
        assert_eq!(http_get(port, missing).unwrap().status, 404, "{missing}");
    }
    let post = http_request(port, b"POST /.cvmfspublished HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(post.status, 405);
    server.stop();
    assert!(http_get(port, "/.cvmfspublished").is_err(), "stopped");
}

#[test]
fn foreign_keys_are_refused() {
    let tmp = tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), b"a").unwrap();
    let keys = keys(tmp.path());
    let stratum = tmp.path().join("s0");
    publish(&options(&src, &keys, &stratum)).unwrap();
    let manifest_before = std::fs::read(stratum.join(".cvmfspublished")).unwrap();

    let other = tmp.path().join("other-keys");
    keygen(FQRN, &other, 30).unwrap();
    let e = publish(&options(&src, &other, &stratum)).unwrap_err();
    assert!(matches!(e, PublishError::ForeignManifest { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("was not signed by the certificate key in the keys directory"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(stratum.join(".cvmfspublished")).unwrap(),
        manifest_before,
        "nothing replaced"
    );

    // Keys of another repository.
    let k2 = tmp.path().join("k2");
    keygen("other.example.org", &k2, 30).unwrap();
    let mut o = options(&src, &k2, &stratum);
    o.fqrn = "other.example.org".into();
    let e = publish(&o).unwrap_err();
    assert!(matches!(e, PublishError::WrongRepository { .. }), "{e:?}");
}

#[test]
fn missing_keys_and_bad_options_are_clear_errors() {
    let tmp = tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let stratum = tmp.path().join("s0");
    let e = publish(&options(&src, &tmp.path().join("no-such-dir"), &stratum)).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "keys directory {} does not exist",
            tmp.path().join("no-such-dir").display()
        )
    );
    assert!(!stratum.exists(), "nothing created");
    let empty = tmp.path().join("empty-keys");
    std::fs::create_dir(&empty).unwrap();
    let e = publish(&options(&src, &empty, &stratum)).unwrap_err();
    assert!(
        matches!(e, PublishError::MissingKey(ref p) if p.ends_with(format!("{FQRN}.masterkey"))),
        "{e}"
    );

    let keys = keys(tmp.path());
    let e = keygen(FQRN, &keys, 30).unwrap_err();
    assert!(matches!(e, PublishError::KeyExists(_)), "{e}");
    // Key files have the modes cvmfs_server uses.
    for (ext, mode) in [
        ("masterkey", 0o600),
        ("key", 0o600),
        ("pub", 0o644),
        ("crt", 0o644),
    ] {
        let md = std::fs::metadata(keys.join(format!("{FQRN}.{ext}"))).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, mode, "{ext}");
    }
    let loaded = perch_publish::KeySet::load(FQRN, &keys).unwrap();
    assert_eq!(
        loaded.certificate.public_key(),
        &loaded.certificate_key.public()
    );

    let e = publish(&options(&tmp.path().join("nope"), &keys, &stratum)).unwrap_err();
    assert!(matches!(e, PublishError::NotADirectory(_)), "{e}");
    let mut o = options(&src, &keys, &stratum);
    o.tag = Some("trunk".into());
    assert!(matches!(publish(&o).unwrap_err(), PublishError::BadTag(_)));
    assert!(ChunkSizes::new(1, 2, 3).is_err());
    assert!(matches!(
        keygen("bad name", &tmp.path().join("k3"), 1).unwrap_err(),
        PublishError::BadName(_)
    ));
}
