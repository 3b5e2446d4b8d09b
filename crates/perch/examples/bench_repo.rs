//! Reader and publisher benchmark (not a test): publish a generated 5 000-entry
//! tree, then time warm lookups 6 levels deep through 2 nested catalogs and
//! listings of a 2 000-entry directory. Run with `bench/repo.sh`.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::path::Path;
use std::time::Instant;

use perch_cvmfs::{MountOptions, Repository};

const FQRN: &str = "bench.perch.local";

fn write(p: &Path, data: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// 5 000+ entries: a 2 000-entry directory, 60 directories of 50 files with
/// varied sizes, and a chain a/b/c/d/e/f with `.cvmfscatalog` at a and a/b/c.
fn make_tree(root: &Path) -> u64 {
    let mut n = 0u64;
    let mut x: u64 = 12345;
    let mut rnd = |len: usize| {
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.truncate(len);
        v
    };
    for i in 0..2000 {
        write(
            &root.join(format!("big/f{i:04}")),
            format!("{i}\n").as_bytes(),
        );
        n += 1;
    }
    for d in 0..60 {
        for f in 0..50 {
            let len = [0, 10, 100, 1000, 10_000, 100_000][(d + f) % 6];
            write(&root.join(format!("d{d:02}/sub/file{f:02}.dat")), &rnd(len));
            n += 1;
        }
    }
    let deep = root.join("a/b/c/d/e/f");
    write(&deep.join("target.txt"), b"deep\n");
    write(&root.join("a/.cvmfscatalog"), b"");
    write(&root.join("a/b/c/.cvmfscatalog"), b"");
    n + 3
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let files = make_tree(&src);
    let bytes: u64 = walk_bytes(&src);
    let keys = tmp.path().join("keys");
    perch_publish::keygen(FQRN, &keys, 30).unwrap();
    let stratum = tmp.path().join("stratum");
    let mut o = perch_publish::PublishOptions::new(&src, FQRN, &keys, &stratum);
    o.progress = false;
    let t = Instant::now();
    let r = perch_publish::publish(&o).unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "publish: {} files + {} dirs, {:.1} MB in {:.2} s = {:.1} MB/s, {:.0} files/s ({} catalogs)",
        files,
        r.directories,
        bytes as f64 / 1e6,
        secs,
        bytes as f64 / 1e6 / secs,
        files as f64 / secs,
        r.catalogs.len()
    );

    let url = format!("file://{}", stratum.display());
    let opts = MountOptions::new(
        FQRN,
        &url,
        vec![keys.join(format!("{FQRN}.pub"))],
        tmp.path().join("cache"),
    );
    let repo = Repository::mount(opts).unwrap();
    let deep = b"/a/b/c/d/e/f/target.txt";
    assert!(repo.lookup(deep).unwrap().is_some());
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(repo.lookup(deep).unwrap());
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!("lookup 6 levels deep through 2 nested catalogs (warm): {us:.1} us");
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(repo.resolve(deep, true, b"/cvmfs").unwrap());
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!("resolve component by component, same path (warm): {us:.1} us");
    let m = 100;
    let t = Instant::now();
    for _ in 0..m {
        assert_eq!(repo.list(b"/big").unwrap().len(), 2000);
    }
    let ms = t.elapsed().as_secs_f64() * 1e3 / f64::from(m);
    println!("list a 2000-entry directory (warm): {ms:.2} ms");
}

fn walk_bytes(p: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(p).unwrap().flatten() {
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            walk_bytes(&e.path())
        } else {
            m.len()
        };
    }
    total
}
