//! Linux is the spec: the same tree as a real directory and as repositories under a mount
//! point at the same place; every lookup must give the same object or the same errno.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use perch_vfs::mem::{MemMounter, MemRepo};
use perch_vfs::{Lookup, Namespace, Resolved};
use rustix::fs::{Mode, OFlags, CWD};

enum Node {
    Dir(&'static str),
    File(&'static str, &'static [u8]),
    Link(&'static str, String),
}

fn spec(mp: &str) -> Vec<(&'static str, Vec<Node>)> {
    use Node::*;
    let mut a = vec![
        Dir("/dir"),
        Dir("/dir/sub"),
        Dir("/empty"),
        File("/dir/file.txt", b"hello\n"),
        File("/dir/sub/deep.txt", b"deep\n"),
        Link("/link_rel", "dir/file.txt".into()),
        Link("/link_dir", "dir".into()),
        Link("/link_dir_slash", "dir/".into()),
        Link("/dir/up", "..".into()),
        Link("/dir/sub/to_top", "../../dir/file.txt".into()),
        Link("/dangling", "nothere".into()),
        Link("/loop1", "loop2".into()),
        Link("/loop2", "loop1".into()),
        Link("/self", "self".into()),
        Link("/link_abs", format!("{mp}/a.example.org/dir/file.txt")),
        Link("/link_cross", format!("{mp}/b.example.org/data")),
        Link("/link_up", "../..".into()),
        Link("/link_mp", mp.to_owned()),
        Link("/link_file_slash", "dir/file.txt/".into()),
    ];
    for i in 0..=40 {
        let t = if i == 40 {
            "dir/file.txt".to_owned()
        } else {
            format!("chain{}", i + 1)
        };
        a.push(Link(Box::leak(format!("/chain{i}").into_boxed_str()), t));
    }
    let b = vec![
        File("/data", b"B\n"),
        Link("/back", format!("{mp}/a.example.org/dir")),
    ];
    vec![("a.example.org", a), ("b.example.org", b)]
}

fn build(tmp: &Path, mp: &str) -> Namespace {
    let mut repos = Vec::new();
    for (fqrn, nodes) in spec(mp) {
        let root = Path::new(mp).join(fqrn);
        std::fs::create_dir_all(&root).unwrap();
        let mut b = MemRepo::builder(fqrn, &tmp.join("objects"));
        for n in nodes {
            match n {
                Node::Dir(p) => {
                    std::fs::create_dir_all(root.join(&p[1..])).unwrap();
                    b = b.dir(p);
                }
                Node::File(p, c) => {
                    std::fs::write(root.join(&p[1..]), c).unwrap();
                    b = b.file(p, c, 0o644);
                }
                Node::Link(p, t) => {
                    std::os::unix::fs::symlink(&t, root.join(&p[1..])).unwrap();
                    b = b.symlink(p, t.as_bytes());
                }
            }
        }
        repos.push(b.build());
    }
    let cache = tmp.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    Namespace::with_mountpoint(Arc::new(MemMounter::new(&cache, repos)), mp.as_bytes()).unwrap()
}

/// The kernel's answer: the canonical path of what `openat(O_PATH)` finds, or the errno.
fn native(base: &Path, path: &[u8], follow: bool, directory: bool) -> Result<String, i32> {
    let mut flags = OFlags::PATH | OFlags::CLOEXEC;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    if directory {
        flags |= OFlags::DIRECTORY;
    }
    let dir = rustix::fs::open(
        base,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| e.raw_os_error())?;
    let fd = rustix::fs::openat(dir.as_fd(), OsStr::from_bytes(path), flags, Mode::empty())
        .map_err(|e| e.raw_os_error())?;
    fd_path(fd.as_fd())
}

fn fd_path(fd: std::os::fd::BorrowedFd<'_>) -> Result<String, i32> {
    use std::os::fd::AsRawFd;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
    Ok(link.display().to_string())
}

fn ours(
    ns: &Namespace,
    mp: &str,
    base: &str,
    path: &[u8],
    follow: bool,
    directory: bool,
) -> Result<String, i32> {
    let mut l = Lookup::new(path, base.as_bytes()).follow(follow);
    if directory {
        l = l.directory();
    }
    match ns.resolve(&l) {
        Resolved::Virtual { repo: None, .. } => Ok(mp.to_owned()),
        Resolved::Virtual {
            repo: Some(r),
            path,
            ..
        } => Ok(format!(
            "{mp}/{}{}",
            r.fqrn(),
            String::from_utf8_lossy(&path)
        )),
        Resolved::Missing { errno, .. } => Err(errno.raw()),
        Resolved::Host { path: p, .. } => {
            // Let the kernel finish it, as the supervisor would.
            let mut flags = OFlags::PATH | OFlags::CLOEXEC;
            if !follow {
                flags |= OFlags::NOFOLLOW;
            }
            if directory {
                flags |= OFlags::DIRECTORY;
            }
            let fd =
                rustix::fs::openat(CWD, &p, flags, Mode::empty()).map_err(|e| e.raw_os_error())?;
            fd_path(fd.as_fd())
        }
    }
}

#[test]
fn resolution_matches_the_kernel_on_the_same_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp_path = std::fs::canonicalize(tmp.path()).unwrap();
    let mp = tmp_path.join("m").display().to_string();
    let ns = build(&tmp_path, &mp);
    let long = "n".repeat(256);
    let paths: Vec<&[u8]> = vec![
        b"",
        b".",
        b"..",
        b"../..",
        b"a.example.org",
        b"a.example.org/",
        b"b.example.org/data",
        b"dir",
        b"dir/",
        b"dir/file.txt",
        b"dir/file.txt/",
        b"dir/file.txt/.",
        b"dir/file.txt/..",
        b"dir/file.txt/x",
        b"link_rel",
        b"link_rel/",
        b"link_dir",
        b"link_dir/",
        b"link_dir/file.txt",
        b"link_dir_slash",
        b"link_dir_slash/",
        b"link_file_slash",
        b"dir/up/dir/up",
        b"dir/up/",
        b"dir/sub/to_top",
        b"dangling",
        b"dangling/",
        b"loop1",
        b"loop1/",
        b"self/x",
        b"link_abs",
        b"link_cross",
        b"link_up",
        b"link_up/m/a.example.org",
        b"link_mp/a.example.org/dir",
        b"chain0",
        b"chain1",
        b"nothere",
        b"nothere/x",
        b"empty/..",
        b"empty/./..",
        b"b.example.org/back/file.txt",
        b"../b.example.org/back/../data",
        b"dir/./sub/../file.txt",
        b"dir//file.txt",
        b"//dir",
        long.as_bytes(),
        b"sub/deep.txt",
        b"up",
        b"up/up/up/link_rel",
        b"../a.example.org/link_dir_slash/sub/",
        b"back/../../a.example.org",
    ];
    let bases = [
        mp.clone(),
        format!("{mp}/a.example.org"),
        format!("{mp}/a.example.org/dir"),
        format!("{mp}/b.example.org"),
    ];
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for base in &bases {
        for path in &paths {
            for follow in [true, false] {
                for directory in [false, true] {
                    let want = native(Path::new(base), path, follow, directory);
                    let got = ours(&ns, &mp, base, path, follow, directory);
                    checked += 1;
                    seen.insert(want.clone().err().unwrap_or(0));
                    if want != got {
                        failures.push(format!(
                            "base={base} path={:?} follow={follow} dir={directory}: kernel {want:?}, perch {got:?}",
                            String::from_utf8_lossy(&path[..path.len().min(40)])
                        ));
                    }
                }
            }
        }
    }
    // The cases cover success and every errno of the walk.
    for e in [
        0,
        libc::ENOENT,
        libc::ENOTDIR,
        libc::ELOOP,
        libc::ENAMETOOLONG,
    ] {
        assert!(seen.contains(&e), "no case gives {e}");
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
