//! The shadow tree on the real file system: layout, reverse translation, concurrency, fallbacks.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use perch_vfs::mem::{MemMounter, MemRepo};
use perch_vfs::{Lookup, Namespace, Outcome, Repository, Resolved, ShadowTree};

const RA: &str = "/cvmfs/a.example.org";

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn open_path(ns: &Namespace, path: &str) -> perch_vfs::OpenedFd {
    let r = ns.resolve(&Lookup::new(path.as_bytes(), b"/"));
    match ns.open(&r, libc::O_RDONLY, None) {
        Outcome::Value(o) => o,
        other => panic!("{path}: {other:?}"),
    }
}

#[test]
fn materialization_mirrors_the_catalog_lazily() {
    let f = fixture();
    let o = open_path(&f.ns, "/cvmfs/a.example.org/dir/file.txt");
    let tree = f.ns.shadow().repo_dir(f.a.as_ref());
    assert_eq!(
        tree.file_name().unwrap().to_str().unwrap(),
        format!("{A}@{}", f.a.revision_id())
    );
    // Root listing: every child, by kind.
    let mut want: Vec<String> =
        f.a.list(b"")
            .unwrap()
            .into_iter()
            .map(|(n, _)| String::from_utf8(n).unwrap())
            .collect();
    want.sort();
    assert_eq!(names(&tree), want);
    // Every symlink is a hard link to the tree's one symlink: listed as a symlink, no inode of
    // its own, a target that names nothing (perch answers readlink from the catalog).
    let shared = std::fs::symlink_metadata(f.ns.shadow().root().join(".symlink")).unwrap();
    // (A target Linux could not store, the empty one, is no exception.)
    for link in [
        tree.join("link_rel"),
        tree.join("dir/up"),
        tree.join("empty_link"),
    ] {
        let m = std::fs::symlink_metadata(&link).unwrap();
        assert!(m.file_type().is_symlink(), "{link:?}");
        assert_eq!((m.dev(), m.ino()), (shared.dev(), shared.ino()), "{link:?}");
        assert_eq!(
            std::fs::read_link(&link).unwrap().to_str(),
            Some(perch_vfs::shadow::SYMLINK_TARGET)
        );
        assert_eq!(
            std::fs::metadata(&link).unwrap_err().kind(),
            std::io::ErrorKind::NotFound,
            "followed by the kernel it leads nowhere"
        );
    }
    assert!(shared.nlink() >= 3);
    let l = Lookup::new(b"/cvmfs/a.example.org/link_rel", b"/").nofollow();
    match f.ns.readlink(&f.ns.resolve(&l)) {
        Outcome::Value(t) => assert_eq!(t, b"dir/file.txt"),
        other => panic!("readlink: {other:?}"),
    }
    let placeholder = std::fs::symlink_metadata(tree.join("bin")).unwrap();
    assert!(placeholder.is_dir());
    assert!(names(&tree.join("bin")).is_empty(), "not entered yet");
    let fifo = std::fs::symlink_metadata(tree.join("fifo")).unwrap();
    assert!(fifo.is_file() && fifo.len() == 0);
    let big = std::fs::symlink_metadata(tree.join("big")).unwrap();
    assert_eq!(big.len(), 0, "never opened: still a placeholder");
    // The opened file is the cache object itself.
    let obj =
        f.a.fetch(b"/dir/file.txt", &f.a.lookup_entry("/dir/file.txt"))
            .unwrap();
    let (m1, m2) = (
        std::fs::metadata(&o.shadow).unwrap(),
        std::fs::metadata(&obj).unwrap(),
    );
    assert_eq!((m1.dev(), m1.ino()), (m2.dev(), m2.ino()));
    assert_eq!(o.shadow, tree.join("dir/file.txt"));
    assert_eq!(names(&tree.join("dir")), ["file.txt", "sub", "up"]);
    // Nothing left in staging.
    assert!(names(&f.ns.shadow().root().join(".tmp")).is_empty());
}

#[test]
fn shadow_paths_translate_back_to_virtual_paths() {
    let f = fixture();
    let tree = f.ns.shadow().repo_dir(f.a.as_ref());
    let root = f.ns.shadow().root().to_owned();
    let v = |p: &Path| f.ns.virtual_path(p).map(|p| p.display().to_string());
    assert_eq!(v(&tree).as_deref(), Some(RA));
    assert_eq!(
        v(&tree.join("dir/file.txt")).as_deref(),
        Some("/cvmfs/a.example.org/dir/file.txt")
    );
    assert_eq!(
        v(&root.join(".root-0123456789abcdef")).as_deref(),
        Some("/cvmfs")
    );
    assert_eq!(
        v(&root.join(".root-0123456789abcdef/b.example.org")).as_deref(),
        Some("/cvmfs/b.example.org")
    );
    assert_eq!(v(&root.join(".tmp/1.2.3")), None);
    assert_eq!(v(&root), None);
    assert_eq!(v(Path::new("/etc/passwd")), None);
    assert_eq!(v(&PathBuf::from(format!("{}x/y", root.display()))), None);
    let out =
        f.ns.translate_out(format!("{}/dir (deleted)", tree.display()).as_bytes());
    assert_eq!(out, b"/cvmfs/a.example.org/dir (deleted)");
    assert_eq!(f.ns.translate_out(b"/home/u"), b"/home/u");
    assert_eq!(f.ns.translate_out(b"pipe:[1234]"), b"pipe:[1234]");
    // Round trip through a real dir fd.
    let o = open_path(&f.ns, "/cvmfs/b.example.org/");
    use std::os::fd::AsRawFd;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", o.fd.as_raw_fd())).unwrap();
    assert_eq!(
        f.ns.virtual_path(&link).unwrap().to_str(),
        Some("/cvmfs/b.example.org")
    );
}

#[test]
fn a_second_process_reuses_the_tree() {
    let f = fixture();
    open_path(&f.ns, "/cvmfs/a.example.org/dir/sub/deep.txt");
    let (lists, fetches) = (f.a.lists(), f.a.fetches());
    let other = f.another();
    let o = open_path(&other, "/cvmfs/a.example.org/dir/sub/deep.txt");
    assert_eq!(std::fs::read(&o.shadow).unwrap(), b"deep\n");
    assert_eq!(
        f.a.lists(),
        lists,
        "complete directories are not listed again"
    );
    assert_eq!(f.a.fetches(), fetches, "linked files are not fetched again");
}

#[test]
fn revisions_get_separate_trees() {
    let tmp = tempfile::tempdir().unwrap();
    let r1 = MemRepo::builder("r.org", &tmp.path().join("o"))
        .revision("aaaa")
        .file("/f", b"1", 0o644)
        .build();
    let r2 = MemRepo::builder("r.org", &tmp.path().join("o2"))
        .revision("bbbb")
        .file("/f", b"22", 0o644)
        .build();
    let ns1 = Namespace::new(Arc::new(MemMounter::new(tmp.path(), vec![r1]))).unwrap();
    let ns2 = Namespace::new(Arc::new(MemMounter::new(tmp.path(), vec![r2]))).unwrap();
    let a = open_path(&ns1, "/cvmfs/r.org/f");
    let b = open_path(&ns2, "/cvmfs/r.org/f");
    assert_ne!(a.shadow, b.shadow);
    assert_eq!(std::fs::read(&a.shadow).unwrap(), b"1");
    assert_eq!(std::fs::read(&b.shadow).unwrap(), b"22");
    assert_eq!(
        ns1.virtual_path(&b.shadow).unwrap().to_str(),
        Some("/cvmfs/r.org/f")
    );
}

#[test]
fn objects_on_another_file_system_are_copied() {
    // /dev/shm is a tmpfs: hard links from the temp dir fail with EXDEV there.
    let objects =
        tempfile::tempdir_in("/dev/shm").expect("/dev/shm (tmpfs) is needed for this test");
    let cache = tempfile::tempdir().unwrap();
    let repo = MemRepo::builder("x.org", objects.path())
        .file("/f", b"copied", 0o755)
        .build();
    let ns = Namespace::new(Arc::new(MemMounter::new(cache.path(), vec![repo.clone()]))).unwrap();
    let o = open_path(&ns, "/cvmfs/x.org/f");
    assert_eq!(std::fs::read(&o.shadow).unwrap(), b"copied");
    let obj = repo.fetch(b"/f", &repo.lookup_entry("/f")).unwrap();
    let (m1, m2) = (
        std::fs::metadata(&o.shadow).unwrap(),
        std::fs::metadata(&obj).unwrap(),
    );
    if m1.dev() != m2.dev() {
        assert_ne!(m1.ino(), 0);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            m1.permissions().mode() & 0o777,
            0o555,
            "copy keeps the exec bits"
        );
    }
    assert!(names(&ns.shadow().root().join(".tmp")).is_empty());
}

fn big_repo(objects: &Path) -> Arc<MemRepo> {
    let mut b = MemRepo::builder("big.org", objects);
    for d in 0..6 {
        for s in 0..4 {
            for i in 0..8 {
                let content = format!("{d}/{s}/{i}").repeat(i + 1);
                b = b.file(&format!("/d{d}/s{s}/f{i}"), content.as_bytes(), 0o644);
            }
            b = b.symlink(&format!("/d{d}/s{s}/up"), b"../..");
        }
        b = b.dir(&format!("/d{d}/empty"));
    }
    b.build()
}

#[test]
fn concurrent_population_gives_one_consistent_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = big_repo(&tmp.path().join("objects"));
    let mounter = Arc::new(MemMounter::new(tmp.path(), vec![repo.clone()]));
    let mut paths = Vec::new();
    for d in 0..6 {
        paths.push(format!("/cvmfs/big.org/d{d}/empty"));
        for s in 0..4 {
            for i in 0..8 {
                paths.push(format!("/cvmfs/big.org/d{d}/s{s}/f{i}"));
            }
            paths.push(format!("/cvmfs/big.org/d{d}/s{s}/up/d{d}/s{s}"));
        }
    }
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let mounter = mounter.clone();
            let repo = repo.clone();
            let mut paths = paths.clone();
            let n = paths.len();
            paths.rotate_left(t * 17 % n);
            if t % 2 == 1 {
                paths.reverse();
            }
            std::thread::spawn(move || {
                // Each thread is "another process": its own namespace on the shared cache root.
                let ns = Namespace::new(mounter).unwrap();
                for p in &paths {
                    let o = open_path(&ns, p);
                    let r = ns.resolve(&Lookup::new(p.as_bytes(), b"/"));
                    if let Resolved::Virtual { path, entry, .. } = &r {
                        if !entry.is_dir() {
                            let got = std::fs::read(&o.shadow).unwrap();
                            assert_eq!(Some(got.as_slice()), repo.content(path), "{p}");
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread panicked");
    }
    // One consistent tree: every directory complete, every file linked with its content.
    let ns = Namespace::new(mounter).unwrap();
    let tree = ns.shadow().repo_dir(repo.as_ref());
    fn check(repo: &MemRepo, tree: &Path, path: &str) {
        let mut want: Vec<String> = repo
            .list(path.as_bytes())
            .unwrap()
            .into_iter()
            .map(|(n, _)| String::from_utf8(n).unwrap())
            .collect();
        want.sort();
        let dir = tree.join(path.trim_start_matches('/'));
        assert_eq!(names(&dir), want, "{path}");
        for (name, e) in repo.list(path.as_bytes()).unwrap() {
            let child = format!("{path}/{}", String::from_utf8(name).unwrap());
            match e.kind {
                perch_vfs::Kind::Dir => check(repo, tree, &child),
                perch_vfs::Kind::File => {
                    let got = std::fs::read(tree.join(child.trim_start_matches('/'))).unwrap();
                    assert_eq!(
                        Some(got.as_slice()),
                        repo.content(child.as_bytes()),
                        "{child}"
                    );
                }
                _ => {}
            }
        }
    }
    check(&repo, &tree, "");
    assert!(
        names(&ns.shadow().root().join(".tmp")).is_empty(),
        "staging leftovers"
    );
}

#[test]
fn remembered_directories_are_bounded() {
    // Memory must not grow with the number of directories a job walks: the set of directories
    // known complete is an LRU. Past the limit, a dropped directory is checked again (an empty
    // one is listed again), and the tree stays right.
    let tmp = tempfile::tempdir().unwrap();
    let mut b = MemRepo::builder("many.org", &tmp.path().join("objects"));
    for d in 0..40 {
        b = b.file(&format!("/d{d:02}/f"), b"x", 0o644);
        b = b.dir(&format!("/e{d:02}"));
    }
    let repo = b.build();
    let shadow = ShadowTree::with_complete_limit(tmp.path(), 8).unwrap();
    for d in 0..40 {
        let dir = shadow
            .ensure_dir(repo.as_ref(), format!("/d{d:02}").as_bytes())
            .unwrap();
        assert_eq!(names(&dir), ["f"]);
        shadow
            .ensure_dir(repo.as_ref(), format!("/e{d:02}").as_bytes())
            .unwrap();
        assert!(shadow.remembered_complete() <= 8, "after /d{d:02}");
    }
    let lists = repo.lists();
    // The root and recent directories are still known: no listing at all.
    shadow.ensure_dir(repo.as_ref(), b"/e39").unwrap();
    assert_eq!(repo.lists(), lists);
    // An early empty directory dropped out: listed once more, then known again.
    let e00 = shadow.ensure_dir(repo.as_ref(), b"/e00").unwrap();
    assert!(names(&e00).is_empty());
    assert_eq!(repo.lists(), lists + 1);
    shadow.ensure_dir(repo.as_ref(), b"/e00").unwrap();
    assert_eq!(repo.lists(), lists + 1);
    // A dropped non-empty directory costs a read_dir, not a listing.
    let d00 = shadow.ensure_dir(repo.as_ref(), b"/d00").unwrap();
    assert_eq!(names(&d00), ["f"]);
    assert_eq!(repo.lists(), lists + 1);
    assert!(shadow.remembered_complete() <= 8);
}

#[test]
fn a_listing_that_fails_midway_publishes_nothing_and_leaves_nothing() {
    // Children are created as the listing streams them; when it fails after some, the
    // half-filled staging directory is removed and the shadow directory stays empty (not
    // complete), so the next use lists it again.
    let tmp = tempfile::tempdir().unwrap();
    let mut b = MemRepo::builder("broken.org", &tmp.path().join("objects"));
    for i in 0..10 {
        b = b.file(&format!("/d/f{i}"), b"x", 0o644);
    }
    let repo = b.fail_listing_after("/d", 4).build();
    let shadow = ShadowTree::new(tmp.path()).unwrap();
    let e = shadow
        .ensure_dir(repo.as_ref(), b"/d")
        .expect_err("the listing fails");
    assert!(e.to_string().contains("broken.org"), "{e}");
    let dir = shadow.repo_dir(repo.as_ref()).join("d");
    assert!(names(&dir).is_empty(), "nothing published");
    assert!(
        names(&shadow.root().join(".tmp")).is_empty(),
        "no staging leftovers"
    );
    let lists = repo.lists();
    assert!(shadow.ensure_dir(repo.as_ref(), b"/d").is_err());
    assert_eq!(
        repo.lists(),
        lists + 1,
        "listed again, not taken as complete"
    );
}

#[test]
fn placeholders_are_links_to_one_empty_file_and_a_changed_one_is_not_served() {
    let f = fixture();
    let shadow = f.ns.shadow();
    let tree = shadow.repo_dir(f.a.as_ref());
    let _ = open_path(&f.ns, "/cvmfs/a.example.org/dir/file.txt");
    // Files not opened yet and a special file: one inode, no inode each.
    let empty = std::fs::symlink_metadata(shadow.root().join(".empty")).unwrap();
    for name in ["big", "fifo", "empty_file"] {
        let m = std::fs::symlink_metadata(tree.join(name)).unwrap();
        assert!(m.is_file() && m.len() == 0, "{name}");
        assert_eq!((m.dev(), m.ino()), (empty.dev(), empty.ino()), "{name}");
    }
    assert!(empty.nlink() >= 5);
    assert_eq!(
        shadow.to_virtual(
            shadow.root().join(".empty").as_os_str().as_encoded_bytes(),
            b"/cvmfs"
        ),
        None,
        "not a /cvmfs path"
    );
    // Someone writes into the shared inode (outside perch: it is the user's own file).
    let obj = shadow.root().join(".empty");
    std::fs::set_permissions(&obj, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&obj, b"PWNED").unwrap();
    // An empty file opened now is empty, and no longer shares that inode.
    let o = open_path(&f.ns, "/cvmfs/a.example.org/empty_file");
    let m = std::fs::metadata(&o.shadow).unwrap();
    assert_eq!(m.len(), 0);
    assert_eq!(std::fs::read(&o.shadow).unwrap(), b"");
    let bad = std::fs::metadata(tree.join("fifo")).unwrap();
    assert_ne!(m.ino(), bad.ino());
}
