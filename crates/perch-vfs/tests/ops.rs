//! Operations on resolved paths: open, stat, access, readlink, xattrs, statfs, write family.

mod common;

use std::os::fd::AsFd;

use common::*;
use perch_vfs::{
    CreateOp, Cred, Errno, Lookup, ModifyOp, Outcome, PairOutcome, RemoveOp, XattrReply,
};

const RA: &str = "/cvmfs/a.example.org";

fn open(f: &Fixture, path: &str, flags: i32) -> perch_vfs::OpenOutcome {
    let r =
        f.ns.resolve(&Lookup::for_open(path.as_bytes(), RA.as_bytes(), flags));
    f.ns.open(&r, flags, None)
}

fn open_err(f: &Fixture, path: &str, flags: i32) -> Option<Errno> {
    open(f, path, flags).errno()
}

fn read_fd(fd: &std::os::fd::OwnedFd) -> Vec<u8> {
    use std::io::Read;
    let mut file = std::fs::File::from(fd.try_clone().unwrap());
    let mut v = Vec::new();
    file.read_to_end(&mut v).unwrap();
    v
}

#[test]
fn open_gives_a_real_fd_with_the_object_content() {
    let f = fixture();
    let Outcome::Value(o) = open(&f, "dir/file.txt", libc::O_RDONLY | libc::O_CLOEXEC) else {
        panic!()
    };
    assert!(o.cloexec);
    assert_eq!(read_fd(&o.fd), b"hello world\n");
    let st = rustix::fs::fstat(o.fd.as_fd()).unwrap();
    assert_eq!(st.st_size, 12);
    // The fd is read-only and close-on-exec in the supervisor.
    let fl = rustix::fs::fcntl_getfl(o.fd.as_fd()).unwrap();
    assert_eq!(fl & rustix::fs::OFlags::RWMODE, rustix::fs::OFlags::RDONLY);
    let Outcome::Value(o2) = open(&f, "link_rel", libc::O_RDONLY | libc::O_NONBLOCK) else {
        panic!()
    };
    assert!(!o2.cloexec);
    assert!(rustix::fs::fcntl_getfl(o2.fd.as_fd())
        .unwrap()
        .contains(rustix::fs::OFlags::NONBLOCK));
    assert_eq!(read_fd(&o2.fd), b"hello world\n");
    // Second open: already linked, no second fetch.
    assert_eq!(f.a.fetches(), 1);
    let Outcome::Value(big) = open(&f, "big", libc::O_RDONLY) else {
        panic!()
    };
    assert_eq!(read_fd(&big.fd), vec![7u8; 100_000]);
    // Empty files need no fetch at all.
    let Outcome::Value(e) = open(&f, "empty_file", libc::O_RDONLY) else {
        panic!()
    };
    assert!(read_fd(&e.fd).is_empty());
    assert_eq!(f.a.fetches(), 2);
}

#[test]
fn open_directories_gives_filled_shadow_directories() {
    let f = fixture();
    let Outcome::Value(o) = open(&f, "dir", libc::O_RDONLY | libc::O_DIRECTORY) else {
        panic!()
    };
    let st = rustix::fs::fstat(o.fd.as_fd()).unwrap();
    assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFDIR);
    let mut names: Vec<String> = std::fs::read_dir(&o.shadow)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["file.txt", "sub", "up"]);
    // getdents64 on the fd itself (through /proc/self/fd) sees the same.
    use std::os::fd::AsRawFd;
    let via_fd = std::fs::read_dir(format!("/proc/self/fd/{}", o.fd.as_raw_fd()))
        .unwrap()
        .count();
    assert_eq!(via_fd, 3);
    // The mount point: one directory per configured repository.
    let r = f.ns.resolve(&Lookup::new(b"/cvmfs", b"/"));
    let Outcome::Value(root) = f.ns.open(&r, libc::O_RDONLY | libc::O_DIRECTORY, None) else {
        panic!()
    };
    let mut names: Vec<String> = std::fs::read_dir(&root.shadow)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [A, B]);
    assert_eq!(
        f.ns.virtual_path(&root.shadow).unwrap().to_str(),
        Some("/cvmfs")
    );
}

#[test]
fn open_errno_order_on_a_read_only_file_system() {
    let f = fixture();
    use libc::{
        O_APPEND, O_CREAT, O_DIRECTORY, O_EXCL, O_NOFOLLOW, O_RDONLY, O_RDWR, O_TMPFILE, O_TRUNC,
        O_WRONLY,
    };
    assert_eq!(open_err(&f, "dir/file.txt", O_WRONLY), Some(Errno::EROFS));
    assert_eq!(open_err(&f, "dir/file.txt", O_RDWR), Some(Errno::EROFS));
    assert_eq!(
        open_err(&f, "dir/file.txt", O_RDONLY | O_TRUNC),
        Some(Errno::EROFS)
    );
    assert_eq!(
        open_err(&f, "dir/file.txt", O_WRONLY | O_APPEND),
        Some(Errno::EROFS)
    );
    assert_eq!(open_err(&f, "dir/file.txt", O_RDONLY | O_CREAT), None);
    assert_eq!(
        open_err(&f, "dir/file.txt", O_WRONLY | O_CREAT | O_EXCL),
        Some(Errno::EEXIST)
    );
    // O_EXCL does not follow: an existing dangling symlink is EEXIST, not EROFS.
    assert_eq!(
        open_err(&f, "dangling", O_WRONLY | O_CREAT | O_EXCL),
        Some(Errno::EEXIST)
    );
    assert_eq!(
        open_err(&f, "dangling", O_WRONLY | O_CREAT),
        Some(Errno::EROFS)
    );
    assert_eq!(open_err(&f, "new", O_WRONLY | O_CREAT), Some(Errno::EROFS));
    assert_eq!(open_err(&f, "new", O_RDONLY), Some(Errno::ENOENT));
    assert_eq!(
        open_err(&f, "nodir/new", O_WRONLY | O_CREAT),
        Some(Errno::ENOENT)
    );
    assert_eq!(
        open_err(&f, "dir/file.txt", O_RDONLY | O_DIRECTORY),
        Some(Errno::ENOTDIR)
    );
    assert_eq!(
        open_err(&f, "link_rel", O_RDONLY | O_NOFOLLOW),
        Some(Errno::ELOOP)
    );
    assert_eq!(open_err(&f, "dir", O_WRONLY), Some(Errno::EISDIR));
    assert_eq!(open_err(&f, "dir", O_RDONLY | O_TRUNC), Some(Errno::EISDIR));
    assert_eq!(open_err(&f, "dir", O_RDONLY | O_CREAT), Some(Errno::EISDIR));
    assert_eq!(open_err(&f, "dir", O_RDWR | O_TMPFILE), Some(Errno::EROFS));
    assert_eq!(
        open_err(&f, "dir", O_RDONLY | O_TMPFILE),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        open_err(&f, "dir/file.txt", O_RDWR | O_TMPFILE),
        Some(Errno::ENOTDIR)
    );
    assert_eq!(open_err(&f, "fifo", O_RDONLY), Some(Errno::EACCES));
    assert_eq!(open_err(&f, "sock", O_RDONLY), Some(Errno::ENXIO));
    assert_eq!(open_err(&f, "chr", O_RDWR), Some(Errno::EACCES));
    assert_eq!(open_err(&f, "bad", O_RDONLY), Some(Errno::EIO));
    assert_eq!(
        open_err(&f, "/cvmfs/new", O_WRONLY | O_CREAT),
        Some(Errno::EROFS)
    );
}

#[test]
fn open_o_path_works_on_everything() {
    let f = fixture();
    use libc::{O_CREAT, O_DIRECTORY, O_NOFOLLOW, O_PATH, S_IFLNK, S_IFMT};
    let Outcome::Value(o) = open(&f, "link_rel", O_PATH | O_NOFOLLOW) else {
        panic!()
    };
    let st = rustix::fs::fstat(o.fd.as_fd()).unwrap();
    assert_eq!(st.st_mode & S_IFMT, S_IFLNK);
    // O_PATH ignores O_CREAT/O_WRONLY-like bits.
    assert!(matches!(
        open(&f, "dir/file.txt", O_PATH | O_CREAT),
        Outcome::Value(_)
    ));
    assert!(matches!(open(&f, "fifo", O_PATH), Outcome::Value(_)));
    assert!(matches!(
        open(&f, "dir", O_PATH | O_DIRECTORY),
        Outcome::Value(_)
    ));
    assert_eq!(
        open_err(&f, "dir/file.txt", O_PATH | O_DIRECTORY),
        Some(Errno::ENOTDIR)
    );
}

#[test]
fn open_checks_read_permission_for_the_caller() {
    let f = fixture();
    let l = Lookup::for_open(b"f", b"/cvmfs/a.example.org/secret", libc::O_RDONLY);
    let r = f.ns.resolve(&l);
    assert_eq!(
        f.ns.open(&r, libc::O_RDONLY, Some(&Cred::user(1001, 1001)))
            .errno(),
        Some(Errno::EACCES)
    );
    assert!(matches!(
        f.ns.open(&r, libc::O_RDONLY, Some(&Cred::user(1000, 5))),
        Outcome::Value(_)
    ));
}

#[test]
fn open_of_host_paths() {
    let f = fixture();
    assert!(matches!(
        open(&f, "/etc/passwd", libc::O_RDONLY),
        Outcome::Continue
    ));
    match open(&f, "link_host/passwd", libc::O_RDONLY) {
        Outcome::Host(p) => assert_eq!(p.to_str(), Some("/etc/passwd")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn stat_fields_come_from_the_catalog() {
    let f = fixture();
    let st = f.ns.stat(&f.resolve("dir/file.txt", RA)).value().unwrap();
    let e = f.a.lookup_entry("/dir/file.txt");
    assert_eq!(st.st_ino, e.inode);
    assert_eq!(st.st_mode, libc::S_IFREG | 0o644);
    assert_eq!(st.st_size, 12);
    assert_eq!(st.st_blocks, 1);
    assert_eq!(st.st_blksize, 4096);
    assert_eq!(st.st_nlink, 1);
    assert_eq!((st.st_atime, st.st_ctime), (st.st_mtime, st.st_mtime));
    assert_eq!(st.st_mtime, 1_700_000_000);
    let big = f.ns.stat(&f.resolve("big", RA)).value().unwrap();
    assert_eq!(big.st_blocks, 1 + 100_000 / 512);
    // Same device within a repository, another one for each repository and the mount point.
    let d = f.ns.stat(&f.resolve("dir", RA)).value().unwrap();
    assert_eq!(d.st_dev, st.st_dev);
    assert_eq!(d.st_nlink, 3); // dir has one subdirectory
    let b =
        f.ns.stat(&f.resolve("/cvmfs/b.example.org/data", "/"))
            .value()
            .unwrap();
    let root = f.ns.stat(&f.resolve("/cvmfs", "/")).value().unwrap();
    assert_ne!(b.st_dev, st.st_dev);
    assert_ne!(root.st_dev, st.st_dev);
    assert_eq!(root.st_mode, libc::S_IFDIR | 0o755);
    // lstat of a symlink: size = target length.
    let l = f.ns.stat(&f.lresolve("link_rel", RA)).value().unwrap();
    assert_eq!(l.st_mode & libc::S_IFMT, libc::S_IFLNK);
    assert_eq!(l.st_size, 12);
    let c = f.ns.stat(&f.resolve("chr", RA)).value().unwrap();
    assert_eq!(c.st_rdev, libc::makedev(1, 3));
    assert_eq!(c.st_size, 0);
    // Bytes as the kernel lays them out.
    let bytes = st.to_bytes();
    assert_eq!(
        u64::from_ne_bytes(bytes[8..16].try_into().unwrap()),
        e.inode
    );
    assert!(matches!(
        f.ns.stat(&f.resolve("/etc", "/")),
        Outcome::Continue
    ));
    assert_eq!(
        f.ns.stat(&f.resolve("nothere", RA)).errno(),
        Some(Errno::ENOENT)
    );
}

#[test]
fn statx_marks_mount_roots() {
    let f = fixture();
    let x = f.ns.statx(&f.resolve("dir/file.txt", RA)).value().unwrap();
    assert_eq!(x.stx_mask, perch_vfs::STATX_MASK);
    assert_eq!(x.stx_size, 12);
    assert_eq!(x.stx_mode, u16::try_from(libc::S_IFREG | 0o644).unwrap());
    assert_eq!(x.stx_attributes & 0x2000, 0);
    let st = f.ns.stat(&f.resolve("dir/file.txt", RA)).value().unwrap();
    assert_eq!(libc::makedev(x.stx_dev_major, x.stx_dev_minor), st.st_dev);
    let r = f.ns.statx(&f.resolve(RA, "/")).value().unwrap();
    assert_eq!(r.stx_attributes & 0x2000, 0x2000);
    assert_eq!(x.to_bytes().len(), 256);
}

#[test]
fn access_follows_kernel_order() {
    let f = fixture();
    let user = Cred::user(1001, 1001);
    let root = Cred::user(0, 0);
    let acc = |p: &str, mode, c: &Cred| f.ns.access(&f.resolve(p, RA), mode, c).errno();
    assert_eq!(acc("dir/file.txt", libc::R_OK, &user), None);
    assert_eq!(acc("dir/file.txt", libc::F_OK, &user), None);
    assert_eq!(acc("dir/file.txt", libc::W_OK, &user), Some(Errno::EROFS));
    assert_eq!(acc("dir/file.txt", libc::W_OK, &root), Some(Errno::EROFS));
    assert_eq!(
        acc("dir", libc::W_OK | libc::X_OK, &user),
        Some(Errno::EROFS)
    );
    assert_eq!(acc("bin/noexec", libc::X_OK, &user), Some(Errno::EACCES));
    assert_eq!(acc("bin/noexec", libc::X_OK, &root), Some(Errno::EACCES));
    assert_eq!(acc("bin/tool", libc::X_OK | libc::R_OK, &user), None);
    assert_eq!(acc("secret", libc::R_OK, &user), Some(Errno::EACCES));
    assert_eq!(acc("secret", libc::R_OK, &root), None);
    assert_eq!(acc("nothere", libc::F_OK, &user), Some(Errno::ENOENT));
    assert_eq!(acc("dir/file.txt", 8, &user), Some(Errno::EINVAL));
    // Devices are writable on a read-only mount as far as EROFS goes.
    assert_eq!(acc("chr", libc::W_OK, &user), Some(Errno::EACCES));
}

#[test]
fn readlink_gives_the_expanded_target() {
    let f = fixture();
    assert_eq!(
        f.ns.readlink(&f.lresolve("link_rel", RA)).value(),
        Some(b"dir/file.txt".to_vec())
    );
    assert_eq!(
        f.ns.readlink(&f.lresolve("dir/file.txt", RA)).errno(),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        f.ns.readlink(&f.lresolve("/cvmfs", "/")).errno(),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        f.ns.readlink(&f.lresolve("nothere", RA)).errno(),
        Some(Errno::ENOENT)
    );
}

#[test]
fn xattrs_size_protocol_and_errors() {
    let f = fixture();
    let file = f.resolve("dir/file.txt", RA);
    let get = |r, n: &str, size| f.ns.getxattr(r, n.as_bytes(), size, None);
    assert_eq!(
        get(&file, "user.color", 0).value(),
        Some(XattrReply::Size(4))
    );
    assert_eq!(get(&file, "user.color", 3).errno(), Some(Errno::ERANGE));
    assert_eq!(
        get(&file, "user.color", 4).value(),
        Some(XattrReply::Data(b"blue".to_vec()))
    );
    assert_eq!(
        get(&file, "user.fqrn", 100).value(),
        Some(XattrReply::Data(A.as_bytes().to_vec()))
    );
    assert_eq!(
        get(&file, "user.nothing", 100).errno(),
        Some(Errno::ENODATA)
    );
    assert_eq!(get(&file, "", 100).errno(), Some(Errno::ERANGE));
    assert_eq!(
        get(&file, &"u".repeat(256), 100).errno(),
        Some(Errno::ERANGE)
    );
    assert_eq!(get(&file, "trusted.x", 100).errno(), Some(Errno::ENODATA));
    // user.* on a symlink: the kernel says ENODATA before asking the file system.
    let link = f.lresolve("link_rel", RA);
    assert_eq!(
        get(&link, "user.rawlink", 100).errno(),
        Some(Errno::ENODATA)
    );
    assert_eq!(
        get(&link, "xfsroot.rawlink", 100).value(),
        Some(XattrReply::Data(b"dir/file.txt".to_vec()))
    );
    let mp = f.resolve("/cvmfs", "/");
    assert_eq!(get(&mp, "user.fqrn", 100).errno(), Some(Errno::EOPNOTSUPP));
    let secret = f.resolve("secret", RA);
    let user = Cred::user(1001, 1001);
    assert_eq!(
        f.ns.getxattr(&secret, b"user.fqrn", 100, Some(&user))
            .errno(),
        Some(Errno::EACCES)
    );

    let root = f.resolve(RA, "/");
    let list = b"user.fqrn\0user.revision\0user.root_hash\0".to_vec();
    assert_eq!(
        f.ns.listxattr(&root, 0).value(),
        Some(XattrReply::Size(list.len()))
    );
    assert_eq!(f.ns.listxattr(&root, 5).errno(), Some(Errno::ERANGE));
    assert_eq!(
        f.ns.listxattr(&root, 1000).value(),
        Some(XattrReply::Data(list))
    );
    assert_eq!(f.ns.listxattr(&mp, 0).value(), Some(XattrReply::Size(0)));
    assert_eq!(
        f.ns.listxattr(&file, 100).value(),
        Some(XattrReply::Data(b"user.color\0".to_vec()))
    );
}

#[test]
fn statfs_is_a_read_only_fuse_mount() {
    let f = fixture();
    let s = f.ns.statfs(&f.resolve("dir", RA)).value().unwrap();
    assert_eq!(s.f_type, perch_vfs::FUSE_SUPER_MAGIC);
    assert_eq!(s.f_flags & 1, 1);
    assert_eq!(s.f_namelen, 255);
    let r = f.ns.statfs(&f.resolve("/cvmfs", "/")).value().unwrap();
    assert_eq!(r.f_type, perch_vfs::AUTOFS_SUPER_MAGIC);
    assert_eq!(s.to_bytes().len(), 120);
    assert!(matches!(
        f.ns.statfs(&f.resolve("/", "/")),
        Outcome::Continue
    ));
}

#[test]
fn every_write_op_on_virtual_paths_is_erofs() {
    let f = fixture();
    let l = |p: &'static str| Lookup::new(p.as_bytes(), RA.as_bytes());
    for op in [CreateOp::Mkdir, CreateOp::Mknod, CreateOp::Symlink] {
        assert_eq!(
            f.ns.create(&l("newname"), op).errno(),
            Some(Errno::EROFS),
            "{op:?}"
        );
        assert_eq!(
            f.ns.create(&l("dir"), op).errno(),
            Some(Errno::EEXIST),
            "{op:?}"
        );
        assert_eq!(
            f.ns.create(&l("dangling"), op).errno(),
            Some(Errno::EEXIST),
            "{op:?}"
        );
        assert_eq!(
            f.ns.create(&l("dir/."), op).errno(),
            Some(Errno::EEXIST),
            "{op:?}"
        );
        assert_eq!(
            f.ns.create(&l("nodir/x"), op).errno(),
            Some(Errno::ENOENT),
            "{op:?}"
        );
        assert_eq!(
            f.ns.create(&l("dir/file.txt/x"), op).errno(),
            Some(Errno::ENOTDIR),
            "{op:?}"
        );
        assert_eq!(
            f.ns.create(&l("/cvmfs"), op).errno(),
            Some(Errno::EEXIST),
            "{op:?}"
        );
        assert_eq!(
            f.ns.create(&l("/cvmfs/b.example.org"), op).errno(),
            Some(Errno::EEXIST),
            "{op:?}"
        );
        assert_eq!(
            f.ns.create(&l("/cvmfs/new.org"), op).errno(),
            Some(Errno::EROFS),
            "{op:?}"
        );
    }
    assert_eq!(
        f.ns.create(&l("newdir/"), CreateOp::Mkdir).errno(),
        Some(Errno::EROFS)
    );
    assert_eq!(
        f.ns.create(&l("newfile/"), CreateOp::Mknod).errno(),
        Some(Errno::ENOENT)
    );
    assert!(matches!(
        f.ns.create(&l("/tmp/x"), CreateOp::Mkdir),
        Outcome::Continue
    ));
    match f.ns.create(&l("link_host/x"), CreateOp::Mkdir) {
        Outcome::Host(p) => assert_eq!(p.to_str(), Some("/etc/x")),
        other => panic!("{other:?}"),
    }

    for op in [RemoveOp::Unlink, RemoveOp::Rmdir] {
        assert_eq!(
            f.ns.remove(&l("dir/file.txt"), op).errno(),
            Some(Errno::EROFS)
        );
        // The kernel takes write access before looking the name up.
        assert_eq!(f.ns.remove(&l("nothere"), op).errno(), Some(Errno::EROFS));
        assert_eq!(f.ns.remove(&l("nodir/x"), op).errno(), Some(Errno::ENOENT));
    }
    assert_eq!(
        f.ns.remove(&l("dir/."), RemoveOp::Rmdir).errno(),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        f.ns.remove(&l("dir/.."), RemoveOp::Rmdir).errno(),
        Some(Errno::ENOTEMPTY)
    );
    assert_eq!(
        f.ns.remove(&l("dir/."), RemoveOp::Unlink).errno(),
        Some(Errno::EISDIR)
    );
    assert_eq!(
        f.ns.remove(&l("/cvmfs"), RemoveOp::Rmdir).errno(),
        Some(Errno::EBUSY)
    );
    assert_eq!(
        f.ns.remove(&l("/cvmfs/a.example.org"), RemoveOp::Rmdir)
            .errno(),
        Some(Errno::EROFS)
    );

    for op in [
        ModifyOp::Chmod,
        ModifyOp::Chown,
        ModifyOp::Utimes,
        ModifyOp::SetXattr,
        ModifyOp::RemoveXattr,
    ] {
        assert_eq!(
            f.ns.modify(&f.resolve("dir/file.txt", RA), op).errno(),
            Some(Errno::EROFS)
        );
        assert_eq!(
            f.ns.modify(&f.resolve("dir", RA), op).errno(),
            Some(Errno::EROFS)
        );
        assert_eq!(
            f.ns.modify(&f.resolve("/cvmfs", "/"), op).errno(),
            Some(Errno::EROFS)
        );
        assert_eq!(
            f.ns.modify(&f.resolve("nothere", RA), op).errno(),
            Some(Errno::ENOENT)
        );
    }
    assert_eq!(
        f.ns.modify(&f.resolve("dir", RA), ModifyOp::Truncate)
            .errno(),
        Some(Errno::EISDIR)
    );
    assert_eq!(
        f.ns.modify(&f.resolve("fifo", RA), ModifyOp::Truncate)
            .errno(),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        f.ns.modify(&f.resolve("link_rel", RA), ModifyOp::Truncate)
            .errno(),
        Some(Errno::EROFS)
    );
}

#[test]
fn rename_and_link_across_mounts() {
    let f = fixture();
    let l = |p: &'static str| Lookup::new(p.as_bytes(), RA.as_bytes());
    assert_eq!(
        f.ns.rename(&l("dir/file.txt"), &l("dir/other"), 0),
        PairOutcome::Err(Errno::EROFS)
    );
    assert_eq!(
        f.ns.rename(&l("nothere"), &l("dir/other"), 0),
        PairOutcome::Err(Errno::EROFS)
    );
    assert_eq!(
        f.ns.rename(&l("dir/file.txt"), &l("/cvmfs/b.example.org/x"), 0),
        PairOutcome::Err(Errno::EXDEV)
    );
    assert_eq!(
        f.ns.rename(&l("dir/file.txt"), &l("/tmp/x"), 0),
        PairOutcome::Err(Errno::EXDEV)
    );
    assert_eq!(
        f.ns.rename(&l("/tmp/x"), &l("dir/x"), 0),
        PairOutcome::Err(Errno::EXDEV)
    );
    assert_eq!(
        f.ns.rename(&l("dir/.."), &l("x"), 0),
        PairOutcome::Err(Errno::EBUSY)
    );
    assert_eq!(
        f.ns.rename(&l("x"), &l("dir/.."), libc::RENAME_NOREPLACE),
        PairOutcome::Err(Errno::EEXIST)
    );
    assert_eq!(
        f.ns.rename(&l("nodir/x"), &l("y"), 0),
        PairOutcome::Err(Errno::ENOENT)
    );
    assert_eq!(
        f.ns.rename(&l("/cvmfs"), &l("/tmp/y"), 0),
        PairOutcome::Err(Errno::EBUSY)
    );
    assert_eq!(
        f.ns.rename(&l("/tmp/a"), &l("/tmp/b"), 0),
        PairOutcome::Continue
    );
    assert!(matches!(
        f.ns.rename(&l("link_host/a"), &l("/tmp/b"), 0),
        PairOutcome::Host(..)
    ));

    assert_eq!(
        f.ns.link(&l("dir/file.txt"), &l("dir/new")),
        PairOutcome::Err(Errno::EROFS)
    );
    assert_eq!(
        f.ns.link(&l("dir/file.txt"), &l("link_rel")),
        PairOutcome::Err(Errno::EEXIST)
    );
    assert_eq!(
        f.ns.link(&l("dir/file.txt"), &l("/tmp/new")),
        PairOutcome::Err(Errno::EXDEV)
    );
    assert_eq!(
        f.ns.link(&l("/etc/passwd"), &l("dir/new")),
        PairOutcome::Err(Errno::EROFS)
    );
    assert_eq!(
        f.ns.link(&l("nothere"), &l("dir/new")),
        PairOutcome::Err(Errno::ENOENT)
    );
    assert_eq!(
        f.ns.link(&l("/etc/passwd"), &l("/tmp/new")),
        PairOutcome::Continue
    );
}

#[test]
fn exec_and_chdir_paths() {
    let f = fixture();
    let user = Cred::user(1001, 1001);
    let Outcome::Value(p) = f.ns.exec_path(&f.resolve("bin/tool", RA), Some(&user)) else {
        panic!()
    };
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&p).unwrap();
    assert_eq!(meta.permissions().mode() & 0o111, 0o111);
    assert_eq!(std::fs::read(&p).unwrap(), b"#!/bin/sh\necho tool\n");
    assert_eq!(
        f.ns.virtual_path(&p).unwrap().to_str(),
        Some("/cvmfs/a.example.org/bin/tool")
    );
    assert_eq!(
        f.ns.exec_path(&f.resolve("bin/noexec", RA), Some(&user))
            .errno(),
        Some(Errno::EACCES)
    );
    assert_eq!(
        f.ns.exec_path(&f.resolve("bin/noexec", RA), None).errno(),
        Some(Errno::EACCES)
    );
    assert_eq!(
        f.ns.exec_path(&f.resolve("dir", RA), None).errno(),
        Some(Errno::EACCES)
    );
    assert_eq!(
        f.ns.exec_path(&f.resolve("nothere", RA), None).errno(),
        Some(Errno::ENOENT)
    );
    assert!(matches!(
        f.ns.exec_path(&f.resolve("/bin/sh", "/"), None),
        Outcome::Continue
    ));

    let Outcome::Value(d) = f.ns.chdir_path(&f.resolve("dir/sub", RA), Some(&user)) else {
        panic!()
    };
    assert!(d.is_dir());
    assert_eq!(
        f.ns.virtual_path(&d).unwrap().to_str(),
        Some("/cvmfs/a.example.org/dir/sub")
    );
    assert_eq!(
        f.ns.chdir_path(&f.resolve("dir/file.txt", RA), None)
            .errno(),
        Some(Errno::ENOTDIR)
    );
    assert_eq!(
        f.ns.chdir_path(&f.resolve("secret", RA), Some(&user))
            .errno(),
        Some(Errno::EACCES)
    );
}

/// Issue 14: a catalog may hold a name longer than `NAME_MAX`; the shadow directory cannot.
/// That entry alone is unreachable (`ENAMETOOLONG` when named, absent from the listing); its
/// directory and siblings work.
#[test]
fn issue_14_a_name_longer_than_name_max_is_left_out() {
    use std::sync::Arc;

    use perch_vfs::mem::{MemMounter, MemRepo};
    use perch_vfs::Namespace;

    let tmp = tempfile::tempdir().unwrap();
    let long = format!("/d/{}", "n".repeat(256));
    let repo = MemRepo::builder(A, &tmp.path().join("data"))
        .dir("/d")
        .file("/d/ok", b"ok\n", 0o644)
        .file(&long, b"x", 0o644)
        .build();
    let ns = Namespace::new(Arc::new(MemMounter::new(tmp.path(), vec![repo]))).unwrap();
    let at = |p: &str, flags: i32| {
        let r = ns.resolve(&Lookup::for_open(p.as_bytes(), RA.as_bytes(), flags));
        ns.open(&r, flags, None)
    };
    let Outcome::Value(ok) = at("d/ok", libc::O_RDONLY) else {
        panic!("sibling of a long name")
    };
    assert_eq!(std::fs::read(&ok.shadow).unwrap(), b"ok\n");
    let Outcome::Value(dir) = at("d", libc::O_RDONLY | libc::O_DIRECTORY) else {
        panic!("directory holding a long name")
    };
    let names: Vec<_> = std::fs::read_dir(&dir.shadow)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["ok"]);
    assert_eq!(
        at(&long[1..], libc::O_RDONLY).errno(),
        Some(Errno::ENAMETOOLONG)
    );
}
