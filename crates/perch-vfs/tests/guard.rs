//! The cache guard (issue 9): in the intercepting modes a program's calls that could change a
//! file or an entry in perch's cache are refused (`EACCES`), by every route (its real path, a
//! symlink made elsewhere, a dangling symlink, a rename, a hard link, an fd it opened), and its
//! calls elsewhere are done by perch as the kernel would (with the program's umask).

mod common;

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;
use perch_syscalls::{Answer, Call, CallerCreds, DirFd, Errno, FakeMemory, TraceeView};
use perch_vfs::syscall::guard::Protected;
use perch_vfs::syscall::NoHooks;
use perch_vfs::{Caller, Calls, Cred};

const P1: u64 = 0x1_0000;
const P2: u64 = 0x2_0000;

/// A program in `cwd` with umask 027, its memory scripted, its fds real (`fds`).
struct Program {
    mem: FakeMemory,
    cwd: PathBuf,
    fds: Vec<(i32, OwnedFd)>,
}

impl TraceeView for Program {
    fn read_memory(&self, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        self.mem.read_memory(addr, buf)
    }
}

impl Caller for Program {
    fn fd_path_unverified(&self, fd: DirFd) -> Result<Vec<u8>, Errno> {
        if fd.is_cwd() {
            return Ok(self.cwd.as_os_str().as_encoded_bytes().to_vec());
        }
        let (_, f) = self
            .fds
            .iter()
            .find(|(n, _)| *n == fd.0)
            .ok_or(Errno::EBADF)?;
        std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))
            .map(|p| p.into_os_string().into_encoded_bytes())
            .map_err(|e| Errno::from_io(&e))
    }

    fn verify(&self) -> Result<(), Errno> {
        Ok(())
    }

    fn proc_link(&self, _path: &[u8]) -> Option<Vec<u8>> {
        None
    }

    fn open_fd_unverified(&self, fd: DirFd) -> Result<OwnedFd, Errno> {
        let p = self.fd_path_unverified(fd)?;
        rustix::fs::open(
            Path::new(std::ffi::OsStr::from_bytes(&p)),
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| Errno::new(e.raw_os_error()))
    }

    fn creds(&self) -> CallerCreds {
        CallerCreds {
            same_as_perch: true,
            umask: Some(0o027),
        }
    }
}

use std::os::unix::ffi::OsStrExt;

struct Setup {
    _f: Fixture,
    calls: Calls,
    cache: PathBuf,
    work: tempfile::TempDir,
}

fn setup() -> Setup {
    let f = fixture();
    let cache = f.cache();
    let calls = Calls::new(f.another(), Cred::user(1000, 1000), Box::new(NoHooks))
        .protect(Protected::new(std::slice::from_ref(&cache)));
    let work = tempfile::tempdir().unwrap();
    let obj = cache.join("obj");
    std::fs::write(&obj, "good\n").unwrap();
    std::fs::set_permissions(&obj, std::fs::Permissions::from_mode(0o444)).unwrap();
    Setup {
        _f: f,
        calls,
        cache,
        work,
    }
}

fn b(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

impl Setup {
    fn program(&self, p1: &Path, p2: Option<&Path>) -> Program {
        let mut mem = FakeMemory::new();
        mem.map_cstr(P1, &b(p1));
        if let Some(p2) = p2 {
            mem.map_cstr(P2, &b(p2));
        }
        Program {
            mem,
            cwd: self.work.path().to_path_buf(),
            fds: Vec::new(),
        }
    }

    /// `nr(args)` with the first path argument `p1` (and a second `p2`) at P1 (P2).
    fn call(&self, nr: i64, p1: &Path, p2: Option<&Path>, args: [u64; 6]) -> Answer {
        let c = self.program(p1, p2);
        let call = Call::decode(u64::try_from(nr).unwrap(), args);
        self.calls.answer(&c, &call)
    }

    fn w(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }
}

fn flags(f: i32) -> u64 {
    u64::from(f.unsigned_abs())
}

fn eacces(a: &Answer, what: &str) {
    assert!(
        matches!(a, Answer::Err(e) if *e == Errno::EACCES),
        "{what}: {a:?}"
    );
}

#[track_caller]
fn ok(a: Answer) {
    assert!(matches!(a, Answer::Ret(0)), "{a:?}");
}

const AT: u64 = u64::from_ne_bytes((-100i64).to_ne_bytes());

#[test]
fn every_write_route_into_the_cache_is_refused() {
    let s = setup();
    let obj = s.cache.join("obj");
    std::os::unix::fs::symlink(&obj, s.w("link")).unwrap();
    std::os::unix::fs::symlink(s.cache.join("new"), s.w("dangling")).unwrap();
    let wr = flags(libc::O_WRONLY);
    let creat = flags(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC);
    let sys = |n: i64| n;
    eacces(
        &s.call(sys(libc::SYS_open), &obj, None, [P1, wr, 0, 0, 0, 0]),
        "open",
    );
    eacces(
        &s.call(
            sys(libc::SYS_open),
            &s.w("link"),
            None,
            [P1, wr, 0, 0, 0, 0],
        ),
        "symlink",
    );
    eacces(
        &s.call(
            sys(libc::SYS_openat),
            Path::new("link"),
            None,
            [AT, P1, creat, 0o644, 0, 0],
        ),
        "relative symlink",
    );
    eacces(
        &s.call(
            sys(libc::SYS_open),
            &s.w("dangling"),
            None,
            [P1, creat, 0o644, 0, 0, 0],
        ),
        "dangling",
    );
    eacces(
        &s.call(sys(libc::SYS_chmod), &obj, None, [P1, 0o644, 0, 0, 0, 0]),
        "chmod",
    );
    eacces(
        &s.call(
            sys(libc::SYS_chmod),
            &s.w("link"),
            None,
            [P1, 0o644, 0, 0, 0, 0],
        ),
        "chmod link",
    );
    eacces(
        &s.call(sys(libc::SYS_truncate), &obj, None, [P1, 0, 0, 0, 0, 0]),
        "truncate",
    );
    eacces(
        &s.call(sys(libc::SYS_unlink), &obj, None, [P1, 0, 0, 0, 0, 0]),
        "unlink",
    );
    eacces(
        &s.call(
            sys(libc::SYS_mkdir),
            &s.cache.join("d"),
            None,
            [P1, 0o755, 0, 0, 0, 0],
        ),
        "mkdir",
    );
    std::fs::write(s.w("forged"), "bad\n").unwrap();
    eacces(
        &s.call(
            sys(libc::SYS_rename),
            &s.w("forged"),
            Some(&obj),
            [P1, P2, 0, 0, 0, 0],
        ),
        "rename over",
    );
    eacces(
        &s.call(
            sys(libc::SYS_link),
            &obj,
            Some(&s.w("hard")),
            [P1, P2, 0, 0, 0, 0],
        ),
        "link",
    );
    eacces(
        &s.call(
            sys(libc::SYS_linkat),
            &s.w("link"),
            Some(&s.w("hard")),
            [AT, P1, AT, P2, flags(libc::AT_SYMLINK_FOLLOW), 0],
        ),
        "link through symlink",
    );
    // The cache directory itself, moved away (a forged one could be put in its place).
    eacces(
        &s.call(
            sys(libc::SYS_rename),
            &s.cache,
            Some(&s.w("moved")),
            [P1, P2, 0, 0, 0, 0],
        ),
        "rename cache",
    );
    // An fd the program opened read-only on the object: fchmod, futimens.
    let mut c = s.program(Path::new("/"), None);
    c.fds.push((9, std::fs::File::open(&obj).unwrap().into()));
    let a = s.calls.answer(
        &c,
        &Call::decode(
            u64::try_from(libc::SYS_fchmod).unwrap(),
            [9, 0o644, 0, 0, 0, 0],
        ),
    );
    eacces(&a, "fchmod");
    let a = s.calls.answer(
        &c,
        &Call::decode(
            u64::try_from(libc::SYS_utimensat).unwrap(),
            [9, 0, 0, 0, 0, 0],
        ),
    );
    eacces(&a, "futimens");
    assert_eq!(std::fs::read_to_string(&obj).unwrap(), "good\n");
    assert!(!s.cache.join("new").exists() && !s.cache.join("d").exists());
    assert_eq!(std::fs::metadata(&obj).unwrap().mode() & 0o777, 0o444);
}

#[test]
fn writes_elsewhere_are_done_as_the_kernel_would() {
    let s = setup();
    let creat = flags(libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL);
    // A new file, with the program's umask (027).
    let a = s.call(
        libc::SYS_openat,
        Path::new("new"),
        None,
        [AT, P1, creat, 0o666, 0, 0],
    );
    let Answer::Fd { fd, .. } = a else {
        panic!("{a:?}")
    };
    rustix::io::write(&fd, b"made\n").unwrap();
    assert_eq!(std::fs::read_to_string(s.w("new")).unwrap(), "made\n");
    assert_eq!(std::fs::metadata(s.w("new")).unwrap().mode() & 0o777, 0o640);
    // O_EXCL on an existing file; a dangling symlink created through (not into the cache).
    let a = s.call(
        libc::SYS_openat,
        Path::new("new"),
        None,
        [AT, P1, creat, 0o666, 0, 0],
    );
    assert!(matches!(a, Answer::Err(e) if e == Errno::EEXIST), "{a:?}");
    std::os::unix::fs::symlink(s.w("target"), s.w("dangling")).unwrap();
    let a = s.call(
        libc::SYS_open,
        &s.w("dangling"),
        None,
        [P1, flags(libc::O_WRONLY | libc::O_CREAT), 0o600, 0, 0, 0],
    );
    assert!(matches!(a, Answer::Fd { .. }), "{a:?}");
    assert!(s.w("target").is_file());
    // chmod, rename, link, unlink, mkdir, symlink of the program's own files.
    ok(s.call(libc::SYS_chmod, &s.w("new"), None, [P1, 0o600, 0, 0, 0, 0]));
    assert_eq!(std::fs::metadata(s.w("new")).unwrap().mode() & 0o777, 0o600);
    ok(s.call(
        libc::SYS_rename,
        &s.w("new"),
        Some(&s.w("renamed")),
        [P1, P2, 0, 0, 0, 0],
    ));
    ok(s.call(
        libc::SYS_link,
        &s.w("renamed"),
        Some(&s.w("hard")),
        [P1, P2, 0, 0, 0, 0],
    ));
    assert_eq!(std::fs::read_to_string(s.w("hard")).unwrap(), "made\n");
    ok(s.call(libc::SYS_unlink, &s.w("renamed"), None, [P1, 0, 0, 0, 0, 0]));
    ok(s.call(libc::SYS_mkdir, &s.w("d"), None, [P1, 0o777, 0, 0, 0, 0]));
    assert_eq!(std::fs::metadata(s.w("d")).unwrap().mode() & 0o777, 0o750);
    ok(s.call(libc::SYS_truncate, &s.w("hard"), None, [P1, 2, 0, 0, 0, 0]));
    assert_eq!(std::fs::read_to_string(s.w("hard")).unwrap(), "ma");
    // The kernel's errors: a missing directory, a file where a directory is needed.
    let a = s.call(
        libc::SYS_open,
        &s.w("no/such"),
        None,
        [P1, creat, 0o666, 0, 0, 0],
    );
    assert!(matches!(a, Answer::Err(e) if e == Errno::ENOENT), "{a:?}");
    let a = s.call(
        libc::SYS_open,
        &s.w("hard/x"),
        None,
        [P1, creat, 0o666, 0, 0, 0],
    );
    assert!(matches!(a, Answer::Err(e) if e == Errno::ENOTDIR), "{a:?}");
    // Reads are the kernel's.
    let a = s.call(
        libc::SYS_open,
        &s.cache.join("obj"),
        None,
        [P1, 0, 0, 0, 0, 0],
    );
    assert!(matches!(a, Answer::Continue), "{a:?}");
}
