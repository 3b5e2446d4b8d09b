//! Memory does not grow with the repository: at most `MAX_OPEN_CATALOGS` catalogs stay open
//! however many nested catalogs a walk goes through, and what was closed reads back the same
//! when it is needed again (rows, hard links, chunk lists, nested catalogs deeper down).

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;

use perch_cvmfs::{MountOptions, Repository, MAX_OPEN_CATALOGS};
use perch_publish::{keygen, publish, ChunkSizes, PublishOptions};
use perch_testkit::tempdir;

const FQRN: &str = "nest.example.org";
/// The first directories also have a catalog one level deeper.
const DEEPER: usize = 4;

/// Every path of the repository with what a program would see of it.
fn walk(repo: &Repository) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![Vec::new()];
    while let Some(dir) = stack.pop() {
        for n in repo.list(&dir).unwrap() {
            let e = &n.entry;
            let looked = repo.lookup(&n.path).unwrap().unwrap();
            // (A nested catalog's mountpoint row and root row differ only in flags.)
            let seen =
                |e: &perch_format::catalog::DirEntry| (e.name.clone(), e.mode, e.size, e.hash);
            assert_eq!(seen(&looked.entry), seen(e), "lookup and listing agree");
            assert_eq!(looked.inode, n.inode);
            let what = if e.is_dir() {
                stack.push(n.path.clone());
                "dir".to_string()
            } else if e.is_symlink() {
                format!("-> {}", String::from_utf8_lossy(&repo.readlink(&n)))
            } else {
                let chunks = repo.chunks(&n).unwrap().len();
                format!(
                    "{} bytes, {} chunks, inode {}, {} links",
                    e.size, chunks, n.inode, e.linkcount
                )
            };
            out.insert(n.path.clone(), what);
        }
    }
    out
}

#[test]
fn a_walk_through_more_nested_catalogs_than_the_bound_keeps_the_bound() {
    let n = MAX_OPEN_CATALOGS + 8;
    let tmp = tempdir().unwrap();
    let src = tmp.path().join("src");
    for i in 0..n {
        let d = src.join(format!("n{i:02}"));
        std::fs::create_dir_all(d.join("deeper")).unwrap();
        std::fs::write(d.join(".cvmfscatalog"), b"").unwrap();
        std::fs::write(d.join("f"), format!("file {i}\n")).unwrap();
        std::fs::hard_link(d.join("f"), d.join("f-link")).unwrap();
        symlink("f", d.join("l")).unwrap();
        if i < DEEPER {
            std::fs::write(d.join("deeper/.cvmfscatalog"), b"").unwrap();
        }
        std::fs::write(d.join("deeper/g"), format!("deeper {i}\n")).unwrap();
    }
    // One chunked file in the first nested catalog, the first one closed by the walk.
    let big: Vec<u8> = (0..200_000u32).flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(src.join("n00/big"), &big).unwrap();
    let keys = tmp.path().join("keys");
    keygen(FQRN, &keys, 30).unwrap();
    let mut o = PublishOptions::new(&src, FQRN, &keys, tmp.path().join("stratum0"));
    o.chunking = Some(ChunkSizes::new(16 << 10, 32 << 10, 64 << 10).unwrap());
    let report = publish(&o).unwrap();
    assert_eq!(report.catalogs.len(), 1 + n + DEEPER);

    let url = format!("file://{}", tmp.path().join("stratum0").display());
    let key = keys.join(format!("{FQRN}.pub"));
    let repo = Repository::mount(MountOptions::new(
        FQRN,
        &url,
        vec![key],
        tmp.path().join("cache"),
    ))
    .unwrap();
    let first = walk(&repo);
    assert!(
        repo.loaded_catalogs() <= MAX_OPEN_CATALOGS,
        "{} catalogs open after walking {} catalogs",
        repo.loaded_catalogs(),
        1 + n + DEEPER
    );
    assert_eq!(
        first.len(),
        n * 7 + DEEPER + 1,
        "nX, f, f-link, l, deeper, deeper/g, the .cvmfscatalog markers; big"
    );
    // Everything reads back the same after the early catalogs were closed.
    assert_eq!(walk(&repo), first);
    assert!(repo.loaded_catalogs() <= MAX_OPEN_CATALOGS);

    // Hard links: one inode and link count 2 within each directory, different across them.
    let f0 = repo.lookup(b"/n00/f").unwrap().unwrap();
    let l0 = repo.lookup(b"/n00/f-link").unwrap().unwrap();
    let f1 = repo.lookup(b"/n01/f").unwrap().unwrap();
    assert_eq!((f0.inode, f0.entry.linkcount), (l0.inode, 2));
    assert_ne!(f0.inode, f1.inode);
    // Contents, the chunked file assembled from its chunk list (its catalog reopened).
    assert_eq!(repo.read(&f0).unwrap(), b"file 0\n");
    let b = repo.lookup(b"/n00/big").unwrap().unwrap();
    assert!(b.entry.is_chunked());
    assert!(repo.chunks(&b).unwrap().len() >= 2);
    assert_eq!(repo.read(&b).unwrap(), big);
    let g = repo
        .lookup(format!("/n{:02}/deeper/g", DEEPER - 1).as_bytes())
        .unwrap()
        .unwrap();
    assert_eq!(
        repo.read(&g).unwrap(),
        format!("deeper {}\n", DEEPER - 1).as_bytes()
    );
    assert_eq!(
        repo.xattr(&repo.lookup(b"").unwrap().unwrap(), "user.nclg")
            .unwrap()
            .unwrap(),
        repo.loaded_catalogs().to_string().into_bytes()
    );
}
