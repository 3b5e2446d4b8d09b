//! Compatibility with the real publisher: the chunker cuts alt.example.org's
//! chunked.bin exactly where cvmfs_server did, and publishing tiny.example.org's
//! content again gives the same file objects (zlib level 6, SHA-1).
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use perch_cvmfs::{MountOptions, Repository};
use perch_format::catalog::Catalog;
use perch_format::compress::zlib_decompress;
use perch_format::hash::{Algorithm, ContentHash, ObjectKind};
use perch_format::manifest::SignedManifest;
use perch_publish::{keygen, publish, ChunkSizes, Compression, PublishOptions};
use perch_testkit::{fixtures_dir, tempdir};

fn open_catalog(stratum: &Path, h: &ContentHash, dir: &Path) -> Catalog {
    let stored = std::fs::read(stratum.join(h.object_path(ObjectKind::Catalog))).unwrap();
    let p = dir.join(format!("{}.db", h.hex()));
    std::fs::write(&p, zlib_decompress(&stored).unwrap()).unwrap();
    Catalog::open(&p).unwrap()
}

#[test]
fn chunker_reproduces_alt_boundaries() {
    let stratum = fixtures_dir().join("alt.example.org/stratum0");
    let m =
        SignedManifest::parse(&std::fs::read(stratum.join(".cvmfspublished")).unwrap()).unwrap();
    let tmp = tempdir().unwrap();
    let cat = open_catalog(&stratum, &m.manifest.root_catalog, tmp.path());
    let e = cat.lookup(b"/chunked.bin").unwrap().unwrap();
    let chunks = cat.chunks(b"/chunked.bin", &e).unwrap();
    let offsets: Vec<u64> = chunks.iter().map(|c| c.offset).collect();
    assert_eq!(
        offsets,
        [0, 102826, 251771, 348431, 451721, 543456, 646086],
        "spec §8"
    );
    // The chunk objects are raw (-Z none): their concatenation is the file.
    let mut content = Vec::new();
    for c in &chunks {
        content.extend(std::fs::read(stratum.join(c.hash.object_path(ObjectKind::Chunk))).unwrap());
    }
    assert_eq!(content.len(), 700_000);
    assert_eq!(
        Algorithm::Sha1.digest(&content).hex(),
        "9bfc7c1819547e31f699338fa33523a3d4205295"
    );

    let sizes = ChunkSizes::new(65536, 131072, 262144).unwrap();
    let ours: Vec<(usize, usize)> = sizes.split(&content);
    let theirs: Vec<(usize, usize)> = chunks
        .iter()
        .map(|c| (c.offset as usize, c.size as usize))
        .collect();
    assert_eq!(ours, theirs);

    // And the whole publisher, streaming from a file, makes the same chunk objects.
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("chunked.bin"), &content).unwrap();
    let keys = tmp.path().join("keys");
    keygen("alt.example.org", &keys, 30).unwrap();
    let mut o = PublishOptions::new(&src, "alt.example.org", &keys, tmp.path().join("s0"));
    o.hash = Algorithm::Shake128;
    o.compression = Compression::None;
    o.chunking = Some(sizes);
    let r = publish(&o).unwrap();
    let ours = open_catalog(&tmp.path().join("s0"), &r.root_hash, tmp.path());
    let e2 = ours.lookup(b"/chunked.bin").unwrap().unwrap();
    assert_eq!(e2.flags, e.flags, "flags 2628 as in alt");
    assert_eq!(ours.chunks(b"/chunked.bin", &e2).unwrap(), chunks);
}

/// Recreate a directory tree from a mounted repository (content, modes, mtimes, symlinks).
fn materialize(repo: &Repository, path: &[u8], dest: &Path) {
    for n in repo.list(path).unwrap() {
        let name = std::str::from_utf8(&n.entry.name).unwrap();
        let p = dest.join(name);
        if n.entry.is_dir() {
            std::fs::create_dir(&p).unwrap();
            materialize(repo, &n.path, &p);
        } else if n.entry.is_symlink() {
            std::os::unix::fs::symlink(std::str::from_utf8(&n.entry.symlink).unwrap(), &p).unwrap();
        } else {
            std::fs::write(&p, repo.read(&n).unwrap()).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(n.entry.mode & 0o7777))
                .unwrap();
        }
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(n.entry.mtime as u64);
        if n.entry.is_symlink() {
            let ok = std::process::Command::new("touch")
                .arg("-h")
                .arg("-d")
                .arg(format!("@{}", n.entry.mtime))
                .arg(&p)
                .status()
                .unwrap();
            assert!(ok.success());
        } else {
            std::fs::File::options()
                .write(!n.entry.is_dir())
                .read(true)
                .open(&p)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
    }
}

#[test]
fn tiny_content_gives_the_same_file_objects() {
    let fx = fixtures_dir().join("tiny.example.org");
    let tmp = tempdir().unwrap();
    let url = format!(
        "file://{}",
        fx.join("stratum0").canonicalize().unwrap().display()
    );
    let o = MountOptions::new(
        "tiny.example.org",
        &url,
        vec![fx.join("keys/tiny.example.org.pub")],
        tmp.path().join("cache"),
    );
    let fixture = Repository::mount(o).unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    materialize(&fixture, b"", &src);
    assert!(src.join("from-tar/.cvmfscatalog").is_file());

    let keys = tmp.path().join("keys");
    keygen("tiny.example.org", &keys, 30).unwrap();
    let mut opts = PublishOptions::new(&src, "tiny.example.org", &keys, tmp.path().join("s0"));
    opts.chunking = None;
    let report = publish(&opts).unwrap();
    assert_eq!(report.catalogs.len(), 2);

    let url = format!("file://{}", tmp.path().join("s0").display());
    let o = MountOptions::new(
        "tiny.example.org",
        &url,
        vec![keys.join("tiny.example.org.pub")],
        tmp.path().join("cache2"),
    );
    let ours = Repository::mount(o).unwrap();
    let mut compared = 0;
    let mut stack = vec![Vec::new()];
    while let Some(dir) = stack.pop() {
        for n in fixture.list(&dir).unwrap() {
            let mine = ours
                .lookup(&n.path)
                .unwrap()
                .unwrap_or_else(|| panic!("{:?} missing", String::from_utf8_lossy(&n.path)));
            if n.entry.is_dir() {
                stack.push(n.path.clone());
                assert_eq!(mine.entry.linkcount, n.entry.linkcount);
                assert_eq!(mine.entry.flags & 1, n.entry.flags & 1);
            } else {
                assert_eq!(
                    mine.entry.hash,
                    n.entry.hash,
                    "{}",
                    String::from_utf8_lossy(&n.path)
                );
                assert_eq!(
                    (
                        mine.entry.size,
                        mine.entry.mode,
                        mine.entry.flags,
                        &mine.entry.symlink
                    ),
                    (
                        n.entry.size.max(if n.entry.is_symlink() {
                            n.entry.symlink.len() as u64
                        } else {
                            0
                        }),
                        n.entry.mode,
                        n.entry.flags,
                        &n.entry.symlink
                    )
                );
                if n.entry.name != b".cvmfscatalog" {
                    assert_eq!(mine.entry.mtime, n.entry.mtime);
                }
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 13);
}
