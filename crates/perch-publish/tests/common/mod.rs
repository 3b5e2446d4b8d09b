//! Helpers shared by the publisher's integration tests: a generated source
//! tree with every entry kind, mounting with the real reader, comparing a
//! mounted repository with its source, recomputing catalog statistics.
#![allow(
    dead_code,
    clippy::print_stderr,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use perch_cvmfs::{MountOptions, Repository};
use perch_format::compress::zlib_decompress;
use perch_format::hash::{Algorithm, ContentHash, ObjectKind};
use rand::{Rng, RngCore, SeedableRng};

pub const FQRN: &str = "test.example.org";

/// Keys for `FQRN` made once per test in `dir/keys`.
pub fn keys(dir: &Path) -> PathBuf {
    let k = dir.join("keys");
    perch_publish::keygen(FQRN, &k, 30).unwrap();
    k
}

pub fn mount(stratum_url: &str, keydir: &Path, cache: &Path, tag: Option<&str>) -> Repository {
    let mut o = MountOptions::new(
        FQRN,
        stratum_url,
        vec![keydir.join(format!("{FQRN}.pub"))],
        cache.to_path_buf(),
    );
    o.tag = tag.map(str::to_string);
    Repository::mount(o)
        .unwrap_or_else(|e| panic!("mount {stratum_url}: {}", perch_cvmfs::error_chain(&e)))
}

pub fn file_url(stratum: &Path) -> String {
    format!("file://{}", stratum.canonicalize().unwrap().display())
}

fn write(p: &Path, data: &[u8], mode: u32) {
    std::fs::write(p, data).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn random(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    v
}

/// Build the round-trip tree below `root` (which must exist). Returns the
/// number of entries below the root (the FIFO excluded).
pub fn build_tree(root: &Path) -> usize {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let d = |p: &str| {
        let p = root.join(p);
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    write(&root.join("empty"), b"", 0o644);
    write(&root.join("hello.txt"), b"hello perch\n", 0o644);
    write(&root.join("with space.txt"), b"spaces\n", 0o644);
    write(&root.join("ünïcödé-名前.txt"), "ünï\n".as_bytes(), 0o644);
    write(
        &root.join(OsStr::from_bytes(b"raw-\xff\xfe-name")),
        b"not utf-8\n",
        0o644,
    );
    let modes = d("modes");
    for m in [0o755, 0o644, 0o600, 0o444] {
        write(
            &modes.join(format!("f{m:o}")),
            format!("mode {m:o}\n").as_bytes(),
            m,
        );
    }
    let private = d("modes/private");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    write(&private.join("secret"), b"s\n", 0o600);
    let sizes = d("sizes");
    for (name, n) in [
        ("s10k", 10_000),
        ("s16k", 16_384),
        ("s20k", 20_000),
        ("s100k", 100_000),
        ("s500k", 500_000),
        ("s1m", 1_000_000),
    ] {
        write(&sizes.join(name), &random(&mut rng, n), 0o644);
    }
    // Compressible and above the chunk threshold.
    write(
        &sizes.join("text300k"),
        &b"perch publishes cvmfs repositories\n".repeat(9000),
        0o644,
    );
    let links = d("links");
    write(&links.join("target"), b"target\n", 0o644);
    std::os::unix::fs::symlink("/etc/hostname", links.join("abs")).unwrap();
    std::os::unix::fs::symlink("../hello.txt", links.join("rel")).unwrap();
    std::os::unix::fs::symlink("nowhere/missing", links.join("dangling")).unwrap();
    std::os::unix::fs::symlink("../sizes", links.join("dirlink")).unwrap();
    std::os::unix::fs::symlink("$(ARCH:-x86_64)/lib", links.join("variant")).unwrap();
    let hard = d("hard");
    write(&hard.join("a"), b"group a\n", 0o644);
    std::fs::hard_link(hard.join("a"), hard.join("a2")).unwrap();
    std::fs::hard_link(hard.join("a"), hard.join("a3")).unwrap();
    write(&hard.join("b"), &random(&mut rng, 40_000), 0o755);
    std::fs::hard_link(hard.join("b"), hard.join("b2")).unwrap();
    write(&hard.join("c"), b"single\n", 0o644);
    let other = d("other");
    std::fs::hard_link(hard.join("a"), other.join("a_cross")).unwrap();
    let big = d("big");
    for i in 0..2000 {
        write(
            &big.join(format!("f{i:04}")),
            format!("big file {i}\n").as_bytes(),
            0o644,
        );
    }
    let n1 = d("nested1");
    write(&n1.join(".cvmfscatalog"), b"", 0o644);
    write(&n1.join("x.txt"), b"in nested1\n", 0o644);
    write(
        &d("nested1/sub").join("y.txt"),
        &random(&mut rng, 70_000),
        0o644,
    );
    let n2 = d("nested1/nested2");
    write(&n2.join(".cvmfscatalog"), b"", 0o664);
    write(&n2.join("z.txt"), b"in nested2\n", 0o644);
    write(
        &d("nested1/nested2/deep/deeper").join("w.bin"),
        &random(&mut rng, 200_000),
        0o644,
    );
    std::fs::hard_link(n2.join("z.txt"), n2.join("z-link.txt")).unwrap();
    std::os::unix::fs::symlink("../x.txt", n2.join("up")).unwrap();
    let sibling = d("nested-sibling");
    write(&sibling.join(".cvmfscatalog"), b"", 0o644);
    write(&sibling.join("s.txt"), b"sibling\n", 0o644);
    for i in 0..30 {
        let dir = d(&format!("many/d{i:02}"));
        for j in 0..100 {
            write(
                &dir.join(format!("g{j:03}")),
                format!("many {i} {j}\n").as_bytes(),
                0o644,
            );
        }
    }
    // User extended attributes.
    xattr::set(root.join("hello.txt"), "user.color", b"blue").unwrap();
    xattr::set(modes.join("f644"), "user.a", b"1").unwrap();
    xattr::set(modes.join("f644"), "user.b", b"two").unwrap();
    xattr::set(&modes, "user.dir", b"yes").unwrap();
    xattr::set(n2.join("z.txt"), "user.nested", b"z").unwrap();
    // A FIFO is skipped with a warning.
    let st = std::process::Command::new("mkfifo")
        .arg(root.join("fifo"))
        .status()
        .unwrap();
    assert!(st.success());
    set_random_mtimes(root, &mut rng)
}

/// Give every entry (contents first) a random mtime with nanoseconds.
fn set_random_mtimes(root: &Path, rng: &mut rand::rngs::StdRng) -> usize {
    let mut n = 0;
    let mut symlinks = Vec::new();
    for e in walkdir::WalkDir::new(root)
        .contents_first(true)
        .min_depth(1)
    {
        let e = e.unwrap();
        let secs = rng.gen_range(1_000_000_000u64..1_700_000_000);
        let ns = if rng.gen_bool(0.8) {
            rng.gen_range(1..1_000_000_000u32)
        } else {
            0
        };
        let t = UNIX_EPOCH + Duration::new(secs, ns);
        let ft = e.file_type();
        if ft.is_symlink() {
            symlinks.push((e.path().to_path_buf(), format!("@{secs}.{ns:09}")));
        } else if ft.is_fifo_like() {
            continue;
        } else {
            std::fs::File::options()
                .read(true)
                .open(e.path())
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        n += 1;
    }
    for (p, stamp) in symlinks {
        let st = std::process::Command::new("touch")
            .arg("-h")
            .arg("-d")
            .arg(stamp)
            .arg(&p)
            .status()
            .unwrap();
        assert!(st.success());
    }
    n
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for std::fs::FileType {
    fn is_fifo_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_fifo() || self.is_socket() || self.is_block_device() || self.is_char_device()
    }
}

fn user_xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut v: Vec<(Vec<u8>, Vec<u8>)> = xattr::list(p)
        .unwrap()
        .filter(|n| n.as_bytes().starts_with(b"user."))
        .map(|n| (n.as_bytes().to_vec(), xattr::get(p, &n).unwrap().unwrap()))
        .collect();
    v.sort();
    v
}

/// Compare the mounted repository with the source tree, entry by entry.
/// Returns the number of entries compared (root excluded).
pub fn compare_tree(repo: &Repository, src: &Path) -> usize {
    compare_dir(repo, src, b"")
}

fn compare_dir(repo: &Repository, dir: &Path, path: &[u8]) -> usize {
    let mut names: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_type().unwrap().is_fifo_like())
        .map(|e| e.file_name().as_bytes().to_vec())
        .filter(|n| !(path.is_empty() && n == b".cvmfscatalog"))
        .collect();
    names.sort();
    let listed: Vec<Vec<u8>> = repo
        .list(path)
        .unwrap()
        .into_iter()
        .map(|n| n.entry.name)
        .collect();
    assert_eq!(
        listed,
        names,
        "listing of {:?}",
        String::from_utf8_lossy(path)
    );
    // Hard-link members per inode in this directory.
    let mut members: BTreeMap<u64, u32> = BTreeMap::new();
    for n in &names {
        let md = std::fs::symlink_metadata(dir.join(OsStr::from_bytes(n))).unwrap();
        if md.is_file() && md.nlink() > 1 {
            *members.entry(md.ino()).or_default() += 1;
        }
    }
    let mut count = 0;
    for n in &names {
        let p = dir.join(OsStr::from_bytes(n));
        let mut rpath = path.to_vec();
        rpath.push(b'/');
        rpath.extend_from_slice(n);
        let shown = String::from_utf8_lossy(&rpath).into_owned();
        let md = std::fs::symlink_metadata(&p).unwrap();
        let node = repo
            .lookup(&rpath)
            .unwrap()
            .unwrap_or_else(|| panic!("{shown} missing"));
        let e = &node.entry;
        assert_eq!(e.mode, md.mode(), "{shown}: mode");
        assert_eq!((e.uid, e.gid), (md.uid(), md.gid()), "{shown}: owner");
        assert_eq!(e.mtime, md.mtime(), "{shown}: mtime");
        let ns = md.mtime_nsec() as u32;
        assert_eq!(e.mtime_ns, (ns != 0).then_some(ns), "{shown}: mtimens");
        assert_eq!(
            e.xattrs,
            if md.file_type().is_symlink() {
                vec![]
            } else {
                user_xattrs(&p)
            },
            "{shown}: xattrs"
        );
        count += 1;
        if md.is_dir() {
            assert!(e.is_dir(), "{shown}: type");
            let subdirs = std::fs::read_dir(&p)
                .unwrap()
                .filter(|c| c.as_ref().unwrap().file_type().unwrap().is_dir())
                .count();
            assert_eq!(
                e.linkcount as usize,
                2 + subdirs,
                "{shown}: directory linkcount"
            );
            count += compare_dir(repo, &p, &rpath);
        } else if md.file_type().is_symlink() {
            assert!(e.is_symlink(), "{shown}: type");
            let target = std::fs::read_link(&p).unwrap();
            assert_eq!(e.symlink, target.as_os_str().as_bytes(), "{shown}: target");
            assert_eq!(e.size, e.symlink.len() as u64, "{shown}: size");
            assert_eq!(
                repo.xattr(&node, "user.rawlink").unwrap().unwrap(),
                target.as_os_str().as_bytes()
            );
        } else {
            assert!(e.is_regular(), "{shown}: type");
            assert_eq!(e.size, md.len(), "{shown}: size");
            let want = Algorithm::Sha1.digest(&std::fs::read(&p).unwrap());
            let got = Algorithm::Sha1.digest(&repo.read(&node).unwrap());
            assert_eq!(got, want, "{shown}: content");
            let expect_links = members
                .get(&md.ino())
                .copied()
                .filter(|&m| m > 1)
                .unwrap_or(1);
            assert_eq!(e.linkcount, expect_links, "{shown}: linkcount");
            assert_eq!(
                e.hardlink_group > 0,
                expect_links > 1,
                "{shown}: hard-link group"
            );
        }
    }
    count
}

/// Decompress a catalog object of `stratum` into `dir` and open it with SQLite.
pub fn open_catalog_db(stratum: &Path, h: &ContentHash, dir: &Path) -> rusqlite::Connection {
    let stored = std::fs::read(stratum.join(h.object_path(ObjectKind::Catalog))).unwrap();
    assert_eq!(
        h.algo.digest(&stored),
        *h,
        "catalog object named by its hash"
    );
    let p = dir.join(format!("{}.sqlite", h.hex()));
    std::fs::write(&p, zlib_decompress(&stored).unwrap()).unwrap();
    rusqlite::Connection::open(&p).unwrap()
}

type Stats = BTreeMap<String, i64>;

/// Recompute `self_*` from the rows of the catalog `h` (and `subtree_*` from
/// its children), compare with its statistics table, recursively. Returns
/// (catalogs checked, own + subtree counters of `h`).
pub fn check_statistics(stratum: &Path, h: &ContentHash, dir: &Path) -> (usize, Stats) {
    let db = open_catalog_db(stratum, h, dir);
    let q = |sql: &str| -> i64 {
        db.query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
            .unwrap()
            .unwrap_or(0)
    };
    let mut own = Stats::new();
    own.insert(
        "dir".into(),
        q("SELECT COUNT(*) FROM catalog WHERE flags & 1"),
    );
    own.insert(
        "regular".into(),
        q("SELECT COUNT(*) FROM catalog WHERE flags & 4 AND NOT flags & 24"),
    );
    own.insert(
        "symlink".into(),
        q("SELECT COUNT(*) FROM catalog WHERE flags & 8"),
    );
    own.insert(
        "special".into(),
        q("SELECT COUNT(*) FROM catalog WHERE flags & 16"),
    );
    own.insert(
        "chunked".into(),
        q("SELECT COUNT(*) FROM catalog WHERE flags & 64"),
    );
    own.insert(
        "chunked_size".into(),
        q("SELECT SUM(size) FROM catalog WHERE flags & 64"),
    );
    own.insert("chunks".into(), q("SELECT COUNT(*) FROM chunks"));
    own.insert(
        "file_size".into(),
        q("SELECT SUM(size) FROM catalog WHERE flags & 4 AND NOT flags & 24"),
    );
    own.insert(
        "xattr".into(),
        q("SELECT COUNT(*) FROM catalog WHERE xattr IS NOT NULL"),
    );
    own.insert(
        "external".into(),
        q("SELECT COUNT(*) FROM catalog WHERE flags & 128"),
    );
    own.insert(
        "external_file_size".into(),
        q("SELECT SUM(size) FROM catalog WHERE flags & 128"),
    );
    own.insert("nested".into(), q("SELECT COUNT(*) FROM nested_catalogs"));
    let mut subtree: Stats = own.keys().map(|k| (k.clone(), 0)).collect();
    let children: Vec<String> = db
        .prepare("SELECT sha1 FROM nested_catalogs")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let mut checked = 1;
    for c in children {
        let (n, child_total) = check_statistics(stratum, &c.parse().unwrap(), dir);
        checked += n;
        for (k, v) in child_total {
            *subtree.get_mut(&k).unwrap() += v;
        }
    }
    let mut table = Stats::new();
    let mut st = db.prepare("SELECT counter, value FROM statistics").unwrap();
    for r in st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .unwrap()
    {
        let (k, v) = r.unwrap();
        table.insert(k, v);
    }
    let mut want = Stats::new();
    for (k, v) in &own {
        want.insert(format!("self_{k}"), *v);
    }
    for (k, v) in &subtree {
        want.insert(format!("subtree_{k}"), *v);
    }
    assert_eq!(table.len(), 24, "24 statistics rows in {h}");
    assert_eq!(table, want, "statistics of catalog {h}");
    let total = own
        .iter()
        .map(|(k, v)| (k.clone(), v + subtree[k]))
        .collect();
    (checked, total)
}
