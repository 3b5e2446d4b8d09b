//! Hostile repositories: validly signed revisions (the fixtures' throw-away keys, re-signed by
//! perch's own signing code) whose catalogs a careless or malicious publisher wrote by hand.
//! Each is refused or contained with one clear message: no panic, no hang, bounded memory.
//!
//! The million-entry directory runs here with 100 000 entries; `bench/hostile.sh` runs it
//! with 1 000 000 and reports the peak RSS of a streamed and of a collected listing.

use std::io::Write;
use std::path::{Path, PathBuf};

use perch_cvmfs::{error_chain, MountOptions, Repository, ResolveError};
use perch_format::catalog::{FLAG_CHUNKED, FLAG_FILE, FLAG_LINK};
use perch_format::compress::{zlib_compress, zlib_decompress};
use perch_format::crypto::PrivateKey;
use perch_format::hash::{path_md5, Algorithm, ContentHash, ObjectKind};
use perch_format::manifest::{Manifest, SignedManifest};
use perch_testkit::{fixtures_dir, tempdir, TempDir};

/// A scratch copy of a fixture stratum, a cache dir, and the fixture's keys to re-sign with.
struct Scratch {
    fqrn: &'static str,
    algo: Algorithm,
    dir: TempDir,
}

impl Scratch {
    fn new(fqrn: &'static str) -> Scratch {
        let dir = tempdir().unwrap();
        copy_dir(
            &fixtures_dir().join(fqrn).join("stratum0"),
            &dir.path().join("stratum0"),
        );
        let s = Scratch {
            fqrn,
            algo: Algorithm::Sha1,
            dir,
        };
        let algo = s.manifest().root_catalog.algo;
        Scratch { algo, ..s }
    }
    fn tiny() -> Scratch {
        Scratch::new("tiny.example.org")
    }
    fn stratum(&self) -> PathBuf {
        self.dir.path().join("stratum0")
    }
    fn key(&self, ext: &str) -> PathBuf {
        fixtures_dir()
            .join(self.fqrn)
            .join("keys")
            .join(format!("{}.{ext}", self.fqrn))
    }
    fn options(&self) -> MountOptions {
        let url = format!("file://{}", self.stratum().display());
        MountOptions::new(
            self.fqrn,
            &url,
            vec![self.key("pub")],
            self.dir.path().join("cache"),
        )
    }
    fn mount(&self) -> Repository {
        Repository::mount(self.options()).unwrap_or_else(|e| panic!("{}", error_chain(&e)))
    }
    fn manifest(&self) -> Manifest {
        SignedManifest::parse(&std::fs::read(self.stratum().join(".cvmfspublished")).unwrap())
            .unwrap()
            .manifest
    }
    fn write_manifest(&self, m: &Manifest) {
        let key = PrivateKey::from_pem(&std::fs::read_to_string(self.key("key")).unwrap()).unwrap();
        std::fs::write(
            self.stratum().join(".cvmfspublished"),
            m.sign(self.algo, &key).unwrap(),
        )
        .unwrap();
    }
    fn object(&self, h: &ContentHash, kind: ObjectKind) -> PathBuf {
        self.stratum().join(h.object_path(kind))
    }
    /// Store bytes as a new object and return its hash.
    fn put(&self, stored: &[u8], kind: ObjectKind) -> ContentHash {
        let h = self.algo.digest(stored);
        let p = self.object(&h, kind);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, stored).unwrap();
        h
    }
    /// Apply `f` to a copy of catalog `h` and store the result; returns the new hash.
    fn patch_catalog(&self, h: &ContentHash, f: impl FnOnce(&rusqlite::Connection)) -> ContentHash {
        let raw =
            zlib_decompress(&std::fs::read(self.object(h, ObjectKind::Catalog)).unwrap()).unwrap();
        let db = self.dir.path().join(format!("patch-{h}.db"));
        std::fs::write(&db, raw).unwrap();
        let conn = rusqlite::Connection::open(&db).unwrap();
        f(&conn);
        conn.execute_batch("VACUUM;").unwrap();
        drop(conn);
        let h = self.put(
            &zlib_compress(&std::fs::read(&db).unwrap()),
            ObjectKind::Catalog,
        );
        std::fs::remove_file(&db).unwrap();
        h
    }
    /// Patch the root catalog and publish it as a new signed revision.
    fn patch_root(&self, f: impl FnOnce(&rusqlite::Connection)) {
        let mut m = self.manifest();
        m.root_catalog = self.patch_catalog(&m.root_catalog, f);
        m.root_catalog_size = None;
        m.revision += 1;
        self.write_manifest(&m);
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

/// Insert a row for `path` under the directory whose path is `parent`, as no honest publisher
/// would: nothing is checked.
#[allow(clippy::too_many_arguments)]
fn insert_row(
    conn: &rusqlite::Connection,
    path: &[u8],
    parent: &[u8],
    flags: u32,
    mode: u32,
    size: i64,
    hash: Option<&[u8]>,
    symlink: &[u8],
) {
    let (a, b) = path_md5(path);
    let (pa, pb) = path_md5(parent);
    let name = path.rsplit(|&c| c == b'/').next().unwrap();
    conn.prepare_cached(
        "INSERT INTO catalog (md5path_1, md5path_2, parent_1, parent_2, hardlinks, hash, size, mode, mtime, flags, name, symlink, uid, gid) VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7, 1700000000, ?8, ?9, ?10, 0, 0)",
    )
    .unwrap()
    .execute(rusqlite::params![
            a,
            b,
            pa,
            pb,
            hash,
            size,
            mode,
            flags,
            rusqlite::types::ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Text(name)),
            rusqlite::types::ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Text(symlink)),
        ],
    )
    .unwrap();
}

fn symlink_row(conn: &rusqlite::Connection, path: &str, target: &str) {
    let parent = &path[..path.rfind('/').unwrap()];
    insert_row(
        conn,
        path.as_bytes(),
        parent.as_bytes(),
        FLAG_FILE | FLAG_LINK,
        0o120777,
        target.len() as i64,
        None,
        target.as_bytes(),
    );
}

/// Start measuring the peak resident set size afresh (Linux resets VmHWM to the current RSS
/// when "5" is written to clear_refs); returns the current RSS in KiB.
fn reset_peak_rss_kib() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The peak resident set size of this process so far, in KiB.
fn peak_rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn name_of_4_kib_is_refused_with_a_short_message() {
    let s = Scratch::tiny();
    let long = format!("/{}", "x".repeat(4096));
    s.patch_root(|c| insert_row(c, long.as_bytes(), b"", FLAG_FILE, 0o100644, 0, None, b""));
    let repo = s.mount();
    let e = error_chain(&repo.list(b"").expect_err("the listing refuses the row"));
    assert!(e.contains("entry name is longer than 255 bytes"), "{e}");
    assert!(e.len() < 400, "one short line, not the 4 KiB name: {e}");
    let e = error_chain(&repo.lookup(long.as_bytes()).expect_err("lookup refuses it"));
    assert!(e.contains("longer than 255 bytes"), "{e}");
    // The rest of the repository still works.
    assert!(repo.lookup(b"/hello.txt").unwrap().is_some());
}

#[test]
fn symlink_chain_100_deep_stops_at_40_links() {
    let s = Scratch::tiny();
    s.patch_root(|c| {
        for i in 0..100 {
            symlink_row(c, &format!("/l{i}"), &format!("l{}", i + 1));
        }
        symlink_row(c, "/l100", "hello.txt");
    });
    let repo = s.mount();
    // l60 → … → l100 → hello.txt is 41 links: one too many, as for the kernel's MAXSYMLINKS.
    match repo.resolve(b"/l0", true, b"/cvmfs") {
        Err(e @ ResolveError::Loop(_)) => {
            assert_eq!(e.to_string(), "/l0: too many levels of symbolic links")
        }
        other => panic!("expected a loop error, got {other:?}"),
    }
    assert!(matches!(
        repo.resolve(b"/l60", true, b"/cvmfs"),
        Err(ResolveError::Loop(_))
    ));
    let n = repo.resolve(b"/l61", true, b"/cvmfs").unwrap().unwrap();
    assert_eq!(n.path, b"/hello.txt", "40 links are followed");
    // Not following the last one needs no walk at all.
    let n = repo.resolve(b"/l0", false, b"/cvmfs").unwrap().unwrap();
    assert!(n.entry.is_symlink());
}

#[test]
fn nested_catalog_that_lists_itself_again_is_refused() {
    let s = Scratch::tiny();
    let m = s.manifest();
    let root = m.root_catalog;
    // The nested catalog of /from-tar registers /from-tar once more, pointing at the original
    // root catalog (which mounts /from-tar again): a walk that goes round instead of down.
    let nested: ContentHash = "7ed0a66672c74e7f45a53fbdb5e514119da52a86".parse().unwrap();
    let looped = s.patch_catalog(&nested, |c| {
        c.execute(
            "INSERT INTO nested_catalogs (path, sha1, size) VALUES ('/from-tar', ?1, 0)",
            [root.to_string()],
        )
        .unwrap();
    });
    s.patch_root(|c| {
        c.execute(
            "UPDATE nested_catalogs SET sha1 = ?1 WHERE path = '/from-tar'",
            [looped.to_string()],
        )
        .unwrap();
    });
    let repo = s.mount();
    let e = error_chain(&repo.lookup(b"/from-tar/hello.txt").expect_err("refused"));
    assert!(
        e.contains("\"/from-tar\": nested catalog is not below the catalog that lists it"),
        "{e}"
    );
    assert!(e.contains(&looped.to_string()), "names the catalog: {e}");
    assert!(
        repo.lookup(b"/hello.txt").unwrap().is_some(),
        "the rest works"
    );
}

#[test]
fn nested_catalog_at_the_root_path_is_refused() {
    let s = Scratch::tiny();
    s.patch_root(|c| {
        c.execute("UPDATE nested_catalogs SET path = ''", [])
            .unwrap();
    });
    let repo = s.mount();
    let e = error_chain(&repo.lookup(b"/hello.txt").expect_err("refused"));
    assert!(e.contains("nested catalog is not below"), "{e}");
}

#[test]
fn chunk_lists_that_overlap_or_overrun_are_refused() {
    let cases: [(&str, &str); 3] = [
        (
            "UPDATE chunks SET offset = offset - 1 WHERE offset = (SELECT MAX(offset) FROM chunks)",
            "chunks do not tile the file",
        ),
        (
            "UPDATE chunks SET size = size + 4096 WHERE offset = (SELECT MAX(offset) FROM chunks)",
            "chunk sizes do not add up to the file size",
        ),
        (
            "UPDATE catalog SET size = size - 1 WHERE name = 'chunked.bin'",
            "chunk sizes do not add up to the file size",
        ),
    ];
    for (sql, want) in cases {
        let s = Scratch::new("alt.example.org");
        s.patch_root(|c| {
            assert_eq!(c.execute(sql, []).unwrap(), 1, "{sql}");
        });
        let repo = s.mount();
        let n = repo.lookup(b"/chunked.bin").unwrap().unwrap();
        assert_ne!(n.entry.flags & FLAG_CHUNKED, 0);
        let e = error_chain(&repo.read(&n).expect_err("read refused"));
        assert!(e.contains(want) && e.contains("/chunked.bin"), "{sql}: {e}");
    }
}

#[test]
fn file_declaring_2_pow_40_bytes() {
    let s = Scratch::tiny();
    s.patch_root(|c| {
        c.execute(
            "UPDATE catalog SET size = 1099511627776 WHERE name = 'hello.txt'",
            [],
        )
        .unwrap();
    });
    let repo = s.mount();
    let n = repo.lookup(b"/hello.txt").unwrap().unwrap();
    assert_eq!(n.entry.size, 1 << 40, "stat shows what the catalog says");
    let e = error_chain(
        &repo
            .read(&n)
            .expect_err("the 11 real bytes are not the file"),
    );
    assert!(
        e.contains("decompressed size 11 differs from the catalog's 1099511627776"),
        "{e}"
    );
    // With a quota (as on every managed cache) it is refused before any download.
    let mut o = s.options();
    o.cache_dir = s.dir.path().join("cache-quota");
    o.quota_limit = Some(1 << 30);
    let repo = Repository::mount(o).unwrap();
    let n = repo.lookup(b"/hello.txt").unwrap().unwrap();
    let before = repo
        .fetcher()
        .requests
        .load(std::sync::atomic::Ordering::Relaxed);
    let e = error_chain(&repo.read(&n).expect_err("refused"));
    assert!(e.contains("1099511627776"), "{e}");
    let after = repo
        .fetcher()
        .requests
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(before, after, "nothing downloaded");
}

#[test]
fn object_inflating_past_its_declared_size_is_stopped() {
    // A signed row promising 11 bytes whose object inflates to 256 MiB of zeros: the download
    // stops within a little of the declared size (nothing near 256 MiB is written).
    let s = Scratch::tiny();
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        z.write_all(&zeros).unwrap();
    }
    let h = s.put(&z.finish().unwrap(), ObjectKind::File);
    s.patch_root(|c| {
        c.execute(
            "UPDATE catalog SET hash = ?1 WHERE name = 'hello.txt'",
            [h.bytes.to_vec()],
        )
        .unwrap();
    });
    let repo = s.mount();
    let n = repo.lookup(b"/hello.txt").unwrap().unwrap();
    let e = error_chain(&repo.read(&n).expect_err("refused"));
    // Cut off by whichever check the first read trips: its stored form is already longer
    // than 11 bytes can take, or what it inflates to is.
    assert!(
        e.contains("for an object the catalog declares as 11 bytes")
            || e.contains("inflates past its declared size"),
        "{e}"
    );
    let mut stack = vec![s.dir.path().join("cache")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                assert!(
                    m.len() < 1 << 20,
                    "{} is {} bytes",
                    e.path().display(),
                    m.len()
                );
            }
        }
    }
    let txn = s.dir.path().join("cache/txn");
    assert_eq!(
        std::fs::read_dir(txn).unwrap().count(),
        0,
        "no temp file left"
    );
}

#[test]
fn row_whose_parent_does_not_exist_is_unreachable() {
    let s = Scratch::tiny();
    let hello: ContentHash = "8415eecb60c637cbe5324dc8f614be6fe516816b".parse().unwrap();
    s.patch_root(|c| {
        insert_row(
            c,
            b"/ghost/file",
            b"/ghost",
            FLAG_FILE,
            0o100644,
            11,
            Some(&hello.bytes),
            b"",
        );
    });
    let repo = s.mount();
    let names: Vec<Vec<u8>> = repo
        .list(b"")
        .unwrap()
        .into_iter()
        .map(|n| n.entry.name)
        .collect();
    assert!(!names.contains(&b"ghost".to_vec()), "not listed");
    assert!(repo.lookup(b"/ghost").unwrap().is_none());
    assert!(
        repo.resolve(b"/ghost/file", true, b"/cvmfs")
            .unwrap()
            .is_none(),
        "a path walk stops at the missing directory (ENOENT)"
    );
}

/// Entries of the huge directory: `PERCH_HOSTILE_ENTRIES` (bench/hostile.sh sets 1 000 000).
fn huge_entries() -> usize {
    std::env::var("PERCH_HOSTILE_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

#[test]
#[allow(clippy::print_stderr)] // the figures bench/hostile.sh reports
fn directory_with_very_many_entries() {
    let n = huge_entries();
    let s = Scratch::tiny();
    let hello: ContentHash = "8415eecb60c637cbe5324dc8f614be6fe516816b".parse().unwrap();
    let t = std::time::Instant::now();
    s.patch_root(|c| {
        c.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; BEGIN;")
            .unwrap();
        insert_row(c, b"/big", b"", 1, 0o040755, 4096, None, b"");
        for i in 0..n {
            insert_row(
                c,
                format!("/big/f{i:07}").as_bytes(),
                b"/big",
                FLAG_FILE,
                0o100644,
                11,
                Some(&hello.bytes),
                b"",
            );
        }
        c.execute_batch("COMMIT;").unwrap();
    });
    let built = t.elapsed();
    let repo = s.mount();
    // Streamed, as the shadow tree fills a directory: memory must not grow with it.
    let base = reset_peak_rss_kib();
    let t = std::time::Instant::now();
    let (mut seen, mut middle) = (0usize, false);
    let wanted = format!("f{:07}", n / 2).into_bytes();
    repo.for_each_child(b"/big", |node| {
        seen += 1;
        middle |= node.entry.name == wanted;
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    let streamed = t.elapsed();
    let streamed_peak = peak_rss_kib();
    assert_eq!(seen, n);
    assert!(middle, "every entry is handed out");
    // Collected and sorted (`Repository::list`, what `perch ls` prints).
    let collect_base = reset_peak_rss_kib();
    let t = std::time::Instant::now();
    let list = repo.list(b"/big").unwrap();
    let listed = t.elapsed();
    assert_eq!(list.len(), n);
    assert_eq!(
        list[n - 1].entry.name,
        format!("f{:07}", n - 1).into_bytes()
    );
    let one = repo
        .lookup(format!("/big/f{:07}", n / 2).as_bytes())
        .unwrap();
    assert!(one.is_some());
    drop(list);
    let collected_peak = peak_rss_kib();
    eprintln!(
        "directory of {n} entries: catalog built in {built:?}; streamed in {streamed:?}, peak RSS {streamed_peak} KiB from {base} KiB; collected and sorted in {listed:?}, peak RSS {collected_peak} KiB from {collect_base} KiB"
    );
    // A page of rows, not the directory: the bound holds at any size.
    assert!(
        streamed_peak < base + 32 * 1024,
        "streaming {n} entries took the peak RSS from {base} KiB to {streamed_peak} KiB"
    );
}

/// The name every hostile target below carries: no file of this name exists anywhere, so a
/// system call naming it can only come from perch following what the repository says.
const PROBE: &str = "perch-hostile-probe";

/// What a job does with a hostile revision, run in a child process under strace by
/// [`no_host_path_named_by_the_repository_is_touched`]: mount, list, look up, resolve and
/// read everything the rows name.
fn walk_hostile(opts: MountOptions) {
    let repo = Repository::mount(opts).unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let _ = repo.list(b"");
    for path in ["/abs", "/up", "/deep/up", "/dots", "/deep", "/.."] {
        let _ = repo.lookup(path.as_bytes());
        for follow in [false, true] {
            let _ = repo.resolve(path.as_bytes(), follow, b"/cvmfs");
            let _ = repo.resolve(format!("{path}/x").as_bytes(), follow, b"/cvmfs");
        }
        if let Ok(Some(n)) = repo.lookup(path.as_bytes()) {
            let _ = repo.readlink(&n);
            let _ = repo.read(&n);
        }
    }
    let _ = repo.list(b"/deep");
}

#[test]
fn no_host_path_named_by_the_repository_is_touched() {
    // The child: the walk only (the parent traces it).
    if let (Some(stratum), Some(cache)) = (
        std::env::var_os("PERCH_HOSTILE_STRATUM"),
        std::env::var_os("PERCH_HOSTILE_CACHE"),
    ) {
        let fqrn = "tiny.example.org";
        let key = fixtures_dir()
            .join(fqrn)
            .join("keys")
            .join(format!("{fqrn}.pub"));
        let url = format!("file://{}", Path::new(&stratum).display());
        walk_hostile(MountOptions::new(fqrn, &url, vec![key], cache.into()));
        return;
    }
    let s = Scratch::tiny();
    s.patch_root(|c| {
        // Absolute and climbing symlinks out of the repository, a row named `..` and one
        // whose name holds a `/`, all pointing at or naming the probe.
        symlink_row(c, "/abs", &format!("/etc/{PROBE}"));
        symlink_row(c, "/up", &format!("../../../../../../tmp/{PROBE}"));
        insert_row(c, b"/deep", b"", 1, 0o040755, 4096, None, b"");
        symlink_row(c, "/deep/up", &format!("../../../../../../etc/{PROBE}"));
        symlink_row(
            c,
            "/dots",
            &format!("/cvmfs/tiny.example.org/../../etc/{PROBE}"),
        );
        insert_row(
            c,
            b"/..",
            b"",
            FLAG_FILE | FLAG_LINK,
            0o120777,
            10,
            None,
            PROBE.as_bytes(),
        );
        insert_row(
            c,
            format!("/x/{PROBE}").as_bytes(),
            b"",
            FLAG_FILE | FLAG_LINK,
            0o120777,
            10,
            None,
            format!("/{PROBE}").as_bytes(),
        );
    });
    let log = s.dir.path().join("strace.log");
    let cache = s.dir.path().join("cache");
    let trace = perch_testkit::file_calls_of_test(
        "no_host_path_named_by_the_repository_is_touched",
        &[
            ("PERCH_HOSTILE_STRATUM", s.stratum().as_os_str()),
            ("PERCH_HOSTILE_CACHE", cache.as_os_str()),
        ],
        &log,
    );
    // The trace saw the walk: the cache and the stratum were opened.
    let seen = |p: &Path| trace.contains(&*p.to_string_lossy());
    assert!(
        seen(&cache) && seen(&s.stratum()),
        "strace did not see the walk"
    );
    let touched: Vec<&str> = trace.lines().filter(|l| l.contains(PROBE)).collect();
    assert!(
        touched.is_empty(),
        "system calls naming a path from the repository: {touched:#?}"
    );
}
