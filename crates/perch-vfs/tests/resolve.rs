//! Path resolution: Linux's walk over the host with /cvmfs grafted in.

mod common;

use common::*;
use perch_vfs::{Cred, Errno, Kind, Lookup, MagicLinks, ResolveFlags, Resolved};

const RA: &str = "/cvmfs/a.example.org";

#[test]
fn absolute_and_relative_paths_reach_the_same_entry() {
    let f = fixture();
    assert_virtual(
        &f.resolve("/cvmfs/a.example.org/dir/file.txt", "/"),
        A,
        "/dir/file.txt",
    );
    assert_virtual(
        &f.resolve("file.txt", "/cvmfs/a.example.org/dir"),
        A,
        "/dir/file.txt",
    );
    assert_virtual(
        &f.resolve("../dir/./file.txt", "/cvmfs/a.example.org/dir"),
        A,
        "/dir/file.txt",
    );
    assert_virtual(
        &f.resolve("sub/../file.txt", "/cvmfs/a.example.org/dir"),
        A,
        "/dir/file.txt",
    );
    assert_virtual(&f.resolve("//cvmfs///a.example.org//dir/", "/"), A, "/dir");
    assert_virtual(&f.resolve("cvmfs/a.example.org", "/"), A, "");
    assert_virtual(
        &f.resolve("../../cvmfs/b.example.org/data", "/home/user"),
        B,
        "/data",
    );
}

#[test]
fn dotdot_climbs_out_of_repositories_and_the_mount_point() {
    let f = fixture();
    assert_virtual(&f.resolve("/cvmfs/a.example.org/..", "/"), "", "");
    assert_virtual(&f.resolve("..", RA), "", "");
    assert_virtual(
        &f.resolve("/cvmfs/a.example.org/../b.example.org/data", "/"),
        B,
        "/data",
    );
    assert_eq!(host(&f.resolve("/cvmfs/..", "/")), Some(("/".into(), true)));
    assert_eq!(
        host(&f.resolve("../../etc/passwd", RA)),
        Some(("/etc/passwd".into(), true))
    );
    assert_eq!(
        host(&f.resolve("/cvmfs/../../..", "/")),
        Some(("/".into(), true))
    );
    // The root's parent is the root.
    assert_virtual(&f.resolve("/../../cvmfs/a.example.org", "/"), A, "");
}

#[test]
fn mount_point_itself_and_unknown_repositories() {
    let f = fixture();
    let r = f.resolve("/cvmfs", "/");
    assert_virtual(&r, "", "");
    let e = r.entry().unwrap();
    assert_eq!(e.kind, Kind::Dir);
    assert_eq!(e.nlink, 4);
    assert_virtual(&f.resolve("/cvmfs/", "/"), "", "");
    let r = f.resolve("/cvmfs/unknown.org", "/");
    assert!(
        matches!(
            r,
            Resolved::Missing {
                errno: Errno::ENOENT,
                in_virtual_dir: true
            }
        ),
        "{r:?}"
    );
    let r = f.resolve("/cvmfs/unknown.org/x", "/");
    assert!(
        matches!(
            r,
            Resolved::Missing {
                errno: Errno::ENOENT,
                in_virtual_dir: false
            }
        ),
        "{r:?}"
    );
}

#[test]
fn host_paths_are_left_to_the_kernel_unchanged() {
    let f = fixture();
    assert_eq!(
        host(&f.resolve("/etc/passwd", "/")),
        Some(("/etc/passwd".into(), false))
    );
    assert_eq!(
        host(&f.resolve("x/../y", "/home/u")),
        Some(("/home/u/x/../y".into(), false))
    );
    assert_eq!(
        host(&f.resolve("/etc/", "/")),
        Some(("/etc/".into(), false))
    );
    assert_eq!(
        host(&f.resolve("/cvmfsx/a", "/")),
        Some(("/cvmfsx/a".into(), false))
    );
    assert_eq!(host(&f.resolve("/", "/")), Some(("/".into(), false)));
    assert_eq!(
        host(&f.resolve(".", "/tmp")),
        Some(("/tmp/.".into(), false))
    );
}

#[test]
fn symlinks_inside_a_repository() {
    let f = fixture();
    assert_virtual(&f.resolve("link_rel", RA), A, "/dir/file.txt");
    let l = f.lresolve("link_rel", RA);
    assert_virtual(&l, A, "/link_rel");
    assert_eq!(l.entry().unwrap().kind, Kind::Symlink);
    assert_virtual(&f.resolve("link_dir/file.txt", RA), A, "/dir/file.txt");
    // A trailing slash follows even with nofollow.
    assert_virtual(&f.lresolve("link_dir/", RA), A, "/dir");
    assert_virtual(&f.lresolve("link_dir_slash", RA), A, "/link_dir_slash");
    assert_virtual(&f.resolve("link_dir_slash", RA), A, "/dir");
    assert_virtual(&f.resolve("link_abs", RA), A, "/dir/file.txt");
    assert_virtual(
        &f.resolve("/cvmfs/a.example.org/dir/up/dir/up/link_rel", "/"),
        A,
        "/dir/file.txt",
    );
    assert_virtual(&f.resolve("dir/sub/to_top", RA), A, "/dir/file.txt");
    assert_virtual(&f.resolve("link_mp/b.example.org/data", RA), B, "/data");
}

#[test]
fn symlinks_across_repositories_and_to_the_host() {
    let f = fixture();
    assert_virtual(&f.resolve("link_cross", RA), B, "/data");
    assert_virtual(
        &f.resolve("/cvmfs/b.example.org/back/file.txt", "/"),
        A,
        "/dir/file.txt",
    );
    assert_eq!(
        host(&f.resolve("link_host", RA)),
        Some(("/etc".into(), true))
    );
    assert_eq!(
        host(&f.resolve("link_host/passwd", RA)),
        Some(("/etc/passwd".into(), true))
    );
    // Host components after the link are passed verbatim, for the kernel to resolve.
    assert_eq!(
        host(&f.resolve("link_host/x/../passwd", RA)),
        Some(("/etc/x/../passwd".into(), true))
    );
    assert_eq!(
        host(&f.resolve("link_host/", RA)),
        Some(("/etc/".into(), true))
    );
    assert_eq!(host(&f.resolve("link_up", RA)), Some(("/".into(), true)));
    // ... but a lexical return under the mount point is classified as virtual again.
    assert_virtual(
        &f.resolve("link_host/../cvmfs/b.example.org/data", RA),
        B,
        "/data",
    );
    // A relative host path from a virtual cwd is rewritten.
    assert_eq!(
        host(&f.resolve("../../../tmp", "/cvmfs/a.example.org/dir")),
        Some(("/tmp".into(), true))
    );
}

#[test]
fn dangling_and_empty_symlinks() {
    let f = fixture();
    let r = f.resolve("dangling", RA);
    assert!(
        matches!(
            r,
            Resolved::Missing {
                errno: Errno::ENOENT,
                in_virtual_dir: true
            }
        ),
        "{r:?}"
    );
    let r = f.resolve("dangling_deep", RA);
    assert!(
        matches!(
            r,
            Resolved::Missing {
                errno: Errno::ENOENT,
                in_virtual_dir: false
            }
        ),
        "{r:?}"
    );
    assert_virtual(&f.lresolve("dangling", RA), A, "/dangling");
    assert_errno(&f.resolve("empty_link", RA), Errno::ENOENT);
}

#[test]
fn forty_links_resolve_and_the_forty_first_is_eloop() {
    let f = fixture();
    assert_virtual(&f.resolve("chain1", RA), A, "/dir/file.txt");
    assert_errno(&f.resolve("chain0", RA), Errno::ELOOP);
    assert_errno(&f.resolve("loop1", RA), Errno::ELOOP);
    assert_errno(&f.resolve("self_loop/x", RA), Errno::ELOOP);
    assert_virtual(&f.lresolve("loop1", RA), A, "/loop1");
}

#[test]
fn enotdir_for_files_used_as_directories() {
    let f = fixture();
    for p in [
        "dir/file.txt/x",
        "dir/file.txt/",
        "dir/file.txt/.",
        "dir/file.txt/..",
        "link_rel/",
    ] {
        assert_errno(&f.resolve(p, RA), Errno::ENOTDIR);
    }
    let r =
        f.ns.resolve(&Lookup::new(b"dir/file.txt", RA.as_bytes()).directory());
    assert_errno(&r, Errno::ENOTDIR);
    // O_DIRECTORY|O_NOFOLLOW on a symlink to a directory: ENOTDIR (do_open order).
    let r = f.ns.resolve(
        &Lookup::new(b"link_dir", RA.as_bytes())
            .nofollow()
            .directory(),
    );
    assert_errno(&r, Errno::ENOTDIR);
    assert_errno(&f.resolve("nodir/x", RA), Errno::ENOENT);
}

#[test]
fn name_and_path_length_limits() {
    let f = fixture();
    let long = "x".repeat(4096);
    assert_errno(&f.resolve(&long, "/"), Errno::ENAMETOOLONG);
    assert_errno(&f.resolve(&long, RA), Errno::ENAMETOOLONG);
    let ok_len = "y".repeat(4095);
    assert!(host(&f.resolve(&ok_len, "/")).is_some());
    assert_errno(&f.resolve(&"n".repeat(256), RA), Errno::ENAMETOOLONG);
    assert_errno(&f.resolve(&"n".repeat(255), RA), Errno::ENOENT);
    assert_errno(
        &f.resolve(&format!("/cvmfs/{}", "r".repeat(256)), "/"),
        Errno::ENAMETOOLONG,
    );
}

#[test]
fn empty_path_needs_at_empty_path() {
    let f = fixture();
    assert_errno(&f.resolve("", RA), Errno::ENOENT);
    let r =
        f.ns.resolve(&Lookup::new(b"", b"/cvmfs/a.example.org/dir").empty_path());
    assert_virtual(&r, A, "/dir");
}

#[test]
fn repository_errors_become_their_errno() {
    let f = fixture();
    assert_errno(&f.resolve("bad", RA), Errno::EIO);
    assert_errno(&f.resolve("bad/x", RA), Errno::EIO);
}

#[test]
fn search_permission_is_checked_for_the_caller() {
    let f = fixture();
    let other = Cred::user(1001, 1001);
    let owner = Cred::user(1000, 1000);
    let root = Cred::user(0, 0);
    let l = |c| Lookup::new(b"secret/f", RA.as_bytes()).cred(c);
    assert_errno(&f.ns.resolve(&l(&other)), Errno::EACCES);
    assert_virtual(&f.ns.resolve(&l(&owner)), A, "/secret/f");
    assert_virtual(&f.ns.resolve(&l(&root)), A, "/secret/f");
    // The directory itself can be named without search permission.
    assert_virtual(
        &f.ns
            .resolve(&Lookup::new(b"secret", RA.as_bytes()).cred(&other)),
        A,
        "/secret",
    );
}

#[test]
fn resolve_no_symlinks_and_no_magiclinks() {
    let f = fixture();
    let l = |p: &'static str| {
        Lookup::new(p.as_bytes(), RA.as_bytes()).resolve(ResolveFlags::NO_SYMLINKS)
    };
    assert_errno(&f.ns.resolve(&l("link_rel")), Errno::ELOOP);
    assert_errno(&f.ns.resolve(&l("link_dir/file.txt")), Errno::ELOOP);
    assert_virtual(&f.ns.resolve(&l("link_rel").nofollow()), A, "/link_rel");
    assert_virtual(&f.ns.resolve(&l("dir/file.txt")), A, "/dir/file.txt");
}

#[test]
fn resolve_beneath_and_in_root() {
    let f = fixture();
    let base = "/cvmfs/a.example.org/dir";
    let beneath =
        |p: &'static str| Lookup::new(p.as_bytes(), base.as_bytes()).resolve(ResolveFlags::BENEATH);
    assert_virtual(
        &f.ns.resolve(&beneath("sub/deep.txt")),
        A,
        "/dir/sub/deep.txt",
    );
    assert_virtual(
        &f.ns.resolve(&beneath("sub/../file.txt")),
        A,
        "/dir/file.txt",
    );
    assert_errno(&f.ns.resolve(&beneath("../link_rel")), Errno::EXDEV);
    assert_errno(&f.ns.resolve(&beneath("/etc")), Errno::EXDEV);
    assert_errno(&f.ns.resolve(&beneath("up/dir")), Errno::EXDEV);
    let in_root =
        |p: &'static str| Lookup::new(p.as_bytes(), RA.as_bytes()).resolve(ResolveFlags::IN_ROOT);
    assert_virtual(&f.ns.resolve(&in_root("/dir/file.txt")), A, "/dir/file.txt");
    assert_virtual(
        &f.ns.resolve(&in_root("../../../dir/file.txt")),
        A,
        "/dir/file.txt",
    );
    assert_virtual(&f.ns.resolve(&in_root("link_up")), A, "");
    // An absolute link is relative to the root: /cvmfs/a.example.org/cvmfs/... does not exist.
    assert_errno(&f.ns.resolve(&in_root("link_abs")), Errno::ENOENT);
}

#[test]
fn resolve_no_xdev_and_cached() {
    let f = fixture();
    let nx = |p: &'static str, base: &'static str| {
        Lookup::new(p.as_bytes(), base.as_bytes()).resolve(ResolveFlags::NO_XDEV)
    };
    assert_virtual(&f.ns.resolve(&nx("dir/file.txt", RA)), A, "/dir/file.txt");
    assert_errno(&f.ns.resolve(&nx("link_cross", RA)), Errno::EXDEV);
    assert_errno(&f.ns.resolve(&nx("..", RA)), Errno::EXDEV);
    assert_errno(&f.ns.resolve(&nx("cvmfs", "/")), Errno::EXDEV);
    assert!(host(&f.ns.resolve(&nx("etc/passwd", "/"))).is_some());
    let cached = |p: &'static str| Lookup::new(p.as_bytes(), b"/").resolve(ResolveFlags::CACHED);
    assert_errno(
        &f.ns.resolve(&cached("cvmfs/a.example.org/dir")),
        Errno::EAGAIN,
    );
    assert!(host(&f.ns.resolve(&cached("etc"))).is_some());
}

struct Proc;
impl MagicLinks for Proc {
    fn magic_link(&self, path: &[u8]) -> Option<Vec<u8>> {
        match path {
            b"/proc/self/fd/7" => Some(b"/cvmfs/a.example.org/dir".to_vec()),
            b"/proc/self/cwd" => Some(b"/cvmfs/b.example.org".to_vec()),
            b"/proc/1234/task/1235/fd/3" => Some(b"/cvmfs/a.example.org/link_rel".to_vec()),
            _ => None,
        }
    }
}

#[test]
fn proc_magic_links_into_the_repository() {
    let f = fixture();
    let l = |p: &'static str| Lookup::new(p.as_bytes(), b"/").magic(&Proc);
    assert_virtual(
        &f.ns.resolve(&l("/proc/self/fd/7/file.txt")),
        A,
        "/dir/file.txt",
    );
    assert_virtual(&f.ns.resolve(&l("/proc/self/fd/7")), A, "/dir");
    assert_virtual(&f.ns.resolve(&l("/proc/self/cwd/data")), B, "/data");
    assert_virtual(
        &f.ns.resolve(&l("/proc/1234/task/1235/fd/3")),
        A,
        "/dir/file.txt",
    );
    // lstat of the magic link itself, and links the caller does not know, go to the kernel.
    assert_eq!(
        host(&f.ns.resolve(&l("/proc/self/fd/7").nofollow())),
        Some(("/proc/self/fd/7".into(), false))
    );
    assert_eq!(
        host(&f.ns.resolve(&l("/proc/self/fd/8/x"))),
        Some(("/proc/self/fd/8/x".into(), false))
    );
    assert_errno(
        &f.ns
            .resolve(&l("/proc/self/fd/7/x").resolve(ResolveFlags::NO_MAGICLINKS)),
        Errno::ELOOP,
    );
}

#[test]
fn another_mount_point() {
    let f = fixture();
    let ns = perch_vfs::Namespace::with_mountpoint(f.mounter.clone(), b"/opt/sw/").unwrap();
    assert_eq!(ns.mountpoint(), b"/opt/sw");
    let r = ns.resolve(&Lookup::new(b"/opt/sw/b.example.org/data", b"/"));
    assert_virtual(&r, B, "/data");
    let r = ns.resolve(&Lookup::new(b"sw/b.example.org/../..", b"/opt"));
    assert_eq!(host(&r), Some(("/opt".into(), true)));
    assert!(host(&ns.resolve(&Lookup::new(b"/cvmfs/a.example.org", b"/"))).is_some());
    for bad in [&b"/"[..], b"relative", b"/a/../b", b""] {
        assert!(perch_vfs::Namespace::with_mountpoint(f.mounter.clone(), bad).is_err());
    }
}

#[test]
fn parent_resolution_for_the_write_family() {
    use perch_vfs::{Last, ParentResolved};
    let f = fixture();
    match f
        .ns
        .resolve_parent(&Lookup::new(b"link_dir/new", RA.as_bytes()))
    {
        ParentResolved::Virtual {
            parent,
            last,
            trailing_slash,
        } => {
            assert_virtual(&parent, A, "/dir");
            assert_eq!(last, Last::Name(b"new".to_vec()));
            assert!(!trailing_slash);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        f.ns.resolve_parent(&Lookup::new(b"/cvmfs", b"/")),
        ParentResolved::MountPoint
    ));
    assert!(matches!(
        f.ns.resolve_parent(&Lookup::new(b"/cvmfs/a.example.org/dir/..", b"/")),
        ParentResolved::Virtual {
            last: Last::DotDot,
            ..
        }
    ));
    assert!(matches!(
        f.ns.resolve_parent(&Lookup::new(b"nodir/x", RA.as_bytes())),
        ParentResolved::Err(Errno::ENOENT)
    ));
    match f
        .ns
        .resolve_parent(&Lookup::new(b"link_host/new/", RA.as_bytes()))
    {
        ParentResolved::Host { path, rewritten } => {
            assert_eq!(path.to_str(), Some("/etc/new/"));
            assert!(rewritten);
        }
        other => panic!("{other:?}"),
    }
}
