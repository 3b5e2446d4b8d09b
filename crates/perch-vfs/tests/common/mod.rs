//! Shared fixtures: two in-memory repositories under a temp cache root.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use perch_vfs::mem::{MemMounter, MemRepo};
use perch_vfs::{Errno, Kind, Lookup, Namespace, Resolved};

pub const A: &str = "a.example.org";
pub const B: &str = "b.example.org";

pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub a: Arc<MemRepo>,
    pub b: Arc<MemRepo>,
    pub mounter: Arc<MemMounter>,
    pub ns: Namespace,
}

pub fn repo_a(objects: &Path) -> Arc<MemRepo> {
    let mut b = MemRepo::builder(A, objects)
        .file("/dir/file.txt", b"hello world\n", 0o644)
        .file("/dir/sub/deep.txt", b"deep\n", 0o644)
        .dir("/dir/sub/subsub")
        .file("/bin/tool", b"#!/bin/sh\necho tool\n", 0o755)
        .file("/bin/noexec", b"data", 0o644)
        .file("/empty_file", b"", 0o644)
        .file("/big", &vec![7u8; 100_000], 0o644)
        .dir("/empty")
        .symlink("/link_rel", b"dir/file.txt")
        .symlink("/link_dir", b"dir")
        .symlink("/link_dir_slash", b"dir/")
        .symlink("/link_abs", b"/cvmfs/a.example.org/dir/file.txt")
        .symlink("/link_cross", b"/cvmfs/b.example.org/data")
        .symlink("/link_host", b"/etc")
        .symlink("/link_mp", b"/cvmfs")
        .symlink("/link_up", b"../..")
        .symlink("/dangling", b"nothere")
        .symlink("/dangling_deep", b"nodir/nothere")
        .symlink("/empty_link", b"")
        .symlink("/loop1", b"loop2")
        .symlink("/loop2", b"loop1")
        .symlink("/self_loop", b"self_loop")
        .symlink("/dir/up", b"..")
        .symlink("/dir/sub/to_top", b"../../dir/file.txt")
        .special("/fifo", Kind::Fifo, 0)
        .special("/sock", Kind::Socket, 0)
        .special("/chr", Kind::CharDev, libc::makedev(1, 3))
        .dir("/secret")
        .edit("/secret", |e| {
            e.mode = libc::S_IFDIR | 0o700;
            e.uid = 1000;
            e.gid = 1000;
        })
        .file("/secret/f", b"s", 0o600)
        .edit("/secret/f", |e| {
            e.uid = 1000;
            e.gid = 1000;
        })
        .file("/bad_file", b"x", 0o644)
        .fail("/bad", Errno::EIO)
        .dir("/bad")
        .xattr("/dir/file.txt", "user.color", b"blue");
    // chain0 -> chain1 -> ... -> chain40 -> dir/file.txt: chain0 needs 41 links.
    for i in 0..=40 {
        let target = if i == 40 {
            "dir/file.txt".to_owned()
        } else {
            format!("chain{}", i + 1)
        };
        b = b.symlink(&format!("/chain{i}"), target.as_bytes());
    }
    b.build()
}

pub fn repo_b(objects: &Path) -> Arc<MemRepo> {
    MemRepo::builder(B, objects)
        .file("/data", b"B data\n", 0o644)
        .symlink("/back", b"/cvmfs/a.example.org/dir")
        .build()
}

pub fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let objects = tmp.path().join("data");
    let a = repo_a(&objects);
    let b = repo_b(&objects);
    let mounter = Arc::new(MemMounter::new(tmp.path(), vec![a.clone(), b.clone()]));
    let ns = Namespace::new(mounter.clone()).expect("namespace");
    Fixture {
        tmp,
        a,
        b,
        mounter,
        ns,
    }
}

impl Fixture {
    pub fn cache(&self) -> PathBuf {
        self.tmp.path().to_owned()
    }

    pub fn resolve(&self, path: &str, base: &str) -> Resolved {
        self.ns
            .resolve(&Lookup::new(path.as_bytes(), base.as_bytes()))
    }

    pub fn lresolve(&self, path: &str, base: &str) -> Resolved {
        self.ns
            .resolve(&Lookup::new(path.as_bytes(), base.as_bytes()).nofollow())
    }

    /// Another namespace on the same cache root (another process).
    pub fn another(&self) -> Namespace {
        Namespace::new(self.mounter.clone()).expect("namespace")
    }
}

/// (fqrn, path) of a virtual result; ("", "") for the mount point.
pub fn virt(r: &Resolved) -> Option<(String, String)> {
    match r {
        Resolved::Virtual { repo, path, .. } => Some((
            repo.as_ref()
                .map(|r| r.fqrn().to_owned())
                .unwrap_or_default(),
            String::from_utf8_lossy(path).into_owned(),
        )),
        _ => None,
    }
}

pub fn host(r: &Resolved) -> Option<(String, bool)> {
    match r {
        Resolved::Host { path, rewritten } => Some((path.display().to_string(), *rewritten)),
        _ => None,
    }
}

#[track_caller]
pub fn assert_virtual(r: &Resolved, fqrn: &str, path: &str) {
    assert_eq!(virt(r), Some((fqrn.to_owned(), path.to_owned())), "{r:?}");
}

#[track_caller]
pub fn assert_errno(r: &Resolved, errno: Errno) {
    assert_eq!(r.errno(), Some(errno), "{r:?}");
}
