//! The syscall table is the code: every row is driven through the code it carries, against the
//! in-memory repository, on a virtual object and on a host path, and the outcome must be the
//! row's documented treatment. A row whose text and code disagree fails here.

mod common;

use std::collections::HashMap;

use common::*;
use perch_syscalls::{Answer, Call, DirFd, Errno, FakeMemory, Family, TraceeView, AT_FDCWD};
use perch_vfs::syscall::rewrite::Rewrite;
use perch_vfs::syscall::NoHooks;
use perch_vfs::{Caller, Calls, Code, Cred, Namespace, Trap, Treatment, SYSCALLS};

/// A fd of a virtual object (the shadow file of `/dir/file.txt`) and of a host file.
const VFD: i32 = 7;
const HFD: i32 = 8;
const PATH1: u64 = 0x1_0000;
const PATH2: u64 = 0x2_0000;
const NAME: u64 = 0x3_0000;
const HOW: u64 = 0x4_0000;

/// A caller with scripted memory and descriptors.
struct FakeCaller {
    mem: FakeMemory,
    fds: HashMap<i32, Vec<u8>>,
    cwd: Vec<u8>,
}

impl TraceeView for FakeCaller {
    fn read_memory(&self, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        self.mem.read_memory(addr, buf)
    }
}

impl Caller for FakeCaller {
    fn fd_path_unverified(&self, fd: DirFd) -> Result<Vec<u8>, Errno> {
        if fd.is_cwd() {
            return Ok(self.cwd.clone());
        }
        self.fds.get(&fd.0).cloned().ok_or(Errno::EBADF)
    }

    fn verify(&self) -> Result<(), Errno> {
        Ok(())
    }

    fn proc_link(&self, _path: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

/// Which object a row is tried on.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    Virtual,
    Host,
}

fn calls(f: &Fixture) -> (Calls, Vec<u8>, Vec<u8>) {
    let ns = Namespace::new(f.mounter.clone()).unwrap();
    let a: &dyn perch_vfs::Repository = f.a.as_ref();
    let file = ns.shadow().object_path(a, b"/dir/file.txt");
    let dir = ns.shadow().object_path(a, b"/dir");
    let to = |p: std::path::PathBuf| p.into_os_string().into_encoded_bytes();
    (
        Calls::new(ns, Cred::user(1000, 1000), Box::new(NoHooks)),
        to(file),
        to(dir),
    )
}

/// The arguments of `row` on `side`: path arguments name an existing file (a missing name in
/// an existing directory for calls that create one, and for the second path of rename/link),
/// fd arguments an fd of it, `*at` directories `AT_FDCWD`, everything else zero except what
/// the call needs to reach its answer (buffer sizes, an xattr name, `struct open_how`).
fn build(
    row: &perch_vfs::SyscallInfo,
    side: Side,
    shadow_file: &[u8],
    shadow_dir: &[u8],
) -> (Call, FakeCaller) {
    // Decode once with each argument numbered, to find where the paths and fds are.
    let probe = Call::decode(
        u64::from(row.nr),
        std::array::from_fn(|i| 0x1000 + 0x100 * i as u64),
    );
    let index = |v: u64| usize::try_from((v - 0x1000) / 0x100).unwrap();
    let mut args = [0u64; 6];
    for (n, (dir, p)) in probe.paths().into_iter().enumerate() {
        args[index(p.0)] = if n == 0 { PATH1 } else { PATH2 };
        if !dir.is_cwd() {
            args[index(u64::try_from(dir.0).unwrap())] =
                u64::from_ne_bytes(i64::from(AT_FDCWD).to_ne_bytes());
        }
    }
    for fd in probe.fds() {
        args[index(u64::try_from(fd.0).unwrap())] = match side {
            Side::Virtual => u64::try_from(VFD).unwrap(),
            Side::Host => u64::try_from(HFD).unwrap(),
        };
    }
    let creates = matches!(
        row.name,
        "mkdir" | "mkdirat" | "mknod" | "mknodat" | "symlink" | "symlinkat"
    );
    let existing: &[u8] = match (side, row.name) {
        (Side::Host, _) => b"/etc/passwd",
        (_, "readlink" | "readlinkat") => b"/cvmfs/a.example.org/link_rel",
        (_, "execve" | "execveat") => b"/cvmfs/a.example.org/bin/tool",
        (_, "chdir") => b"/cvmfs/a.example.org/dir",
        _ if creates => b"/cvmfs/a.example.org/dir/new",
        _ => b"/cvmfs/a.example.org/dir/file.txt",
    };
    let second: &[u8] = match side {
        Side::Host => b"/tmp/perch-table-test-new",
        Side::Virtual => b"/cvmfs/a.example.org/dir/new",
    };
    let mut mem = FakeMemory::new();
    mem.map_cstr(PATH1, existing)
        .map_cstr(PATH2, second)
        .map_cstr(NAME, b"user.color")
        .map(HOW, vec![0u8; 24]);
    // What the calls need beyond paths and fds.
    match row.name {
        "readlink" | "getcwd" => args[2 - usize::from(row.name == "getcwd")] = 4096,
        "readlinkat" => args[3] = 4096,
        "getxattr" | "lgetxattr" | "fgetxattr" => args[1] = NAME,
        "getxattrat" => {
            args[3] = NAME;
            args[4] = HOW; // struct xattr_args, zeroed: size 0 asks for the length
            args[5] = 16;
        }
        "openat2" => {
            args[2] = HOW;
            args[3] = 24;
        }
        _ => {}
    }
    let mut fds = HashMap::new();
    fds.insert(VFD, shadow_file.to_vec());
    fds.insert(HFD, b"/etc/passwd".to_vec());
    let cwd = match side {
        Side::Virtual => shadow_dir.to_vec(),
        Side::Host => b"/".to_vec(),
    };
    let caller = FakeCaller { mem, fds, cwd };
    (Call::decode(u64::from(row.nr), args), caller)
}

/// What the row's treatment says the code must give on a virtual object.
fn check_virtual(row: &perch_vfs::SyscallInfo, a: &Answer) -> Result<(), String> {
    let ok = match row.treatment {
        Treatment::Emulated(_) => {
            matches!(a, Answer::Ret(_) | Answer::Write { .. } | Answer::Fd { .. })
        }
        Treatment::Erofs => matches!(a, Answer::Err(e) if *e == Errno::EROFS),
        Treatment::Unsupported(e, _) => matches!(a, Answer::Err(x) if *x == e),
        t => return Err(format!("a notified row with treatment {t:?}")),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{:?} on a virtual object gave {a}", row.treatment))
    }
}

#[test]
fn every_row_does_what_it_says() {
    let f = fixture();
    let (calls, shadow_file, shadow_dir) = calls(&f);
    let routes = perch_vfs::SyscallTable.routes();
    let mut failures = Vec::new();
    for row in SYSCALLS {
        let mut fail = |what: String| failures.push(format!("{}: {what}", row.name));
        // The filter generated from the table routes the row as it says.
        let (n, t) = (
            routes.notify.contains_nr(row.nr),
            routes.trace.contains_nr(row.nr),
        );
        let errno = routes
            .errno
            .iter()
            .find(|(nr, _)| *nr == row.nr)
            .map(|x| x.1);
        let routed = match row.trap {
            Trap::Notify => n && !t && errno.is_none(),
            Trap::Trace => t && !n && errno.is_none(),
            Trap::Allow => !n && !t && errno.is_none(),
            Trap::Errno => !n && !t && errno.is_some(),
        };
        if !routed {
            fail(format!("{:?} row routed otherwise by the filter", row.trap));
        }
        match (row.treatment, row.code) {
            (Treatment::Refused(e, _), Code::Kernel) => {
                if errno != Some(e) {
                    fail(format!("refused with {e:?} but the filter says {errno:?}"));
                }
            }
            (Treatment::Passthrough, Code::Kernel) => {}
            (Treatment::Supported(_), Code::Kernel) => {
                // The kernel works on the shadow object: only fd or fd-like arguments.
                let call = Call::decode(u64::from(row.nr), [0; 6]);
                if !call.paths().is_empty() && call.sysno().map(|s| s.family()) != Some(Family::Io)
                {
                    fail("supported by the kernel alone, but takes a path".into());
                }
            }
            (Treatment::Supported(_), Code::Rewrite) => {
                let (call, c) = build(row, Side::Virtual, &shadow_file, &shadow_dir);
                match calls.rewrite(&c, &call) {
                    Rewrite::Path(_) | Rewrite::Exec { .. } => {}
                    r => fail(format!("supported by rewriting, but gave {r:?}")),
                }
                let (call, c) = build(row, Side::Host, &shadow_file, &shadow_dir);
                let r = calls.rewrite(&c, &call);
                if r != Rewrite::Continue {
                    fail(format!("host path rewritten: {r:?}"));
                }
            }
            (_, Code::Answer(code)) => {
                let (call, c) = build(row, Side::Virtual, &shadow_file, &shadow_dir);
                match code(&calls, &c, &call) {
                    Ok(a) => {
                        if let Err(e) = check_virtual(row, &a) {
                            fail(e);
                        }
                        // The table's dispatch runs the same code.
                        let again = calls.answer(&c, &call);
                        if again.to_string() != a.to_string() {
                            fail(format!("dispatch gave {again}, the row's code {a}"));
                        }
                    }
                    Err(e) => fail(format!("caller error {e:?}")),
                }
                let (call, c) = build(row, Side::Host, &shadow_file, &shadow_dir);
                match calls.answer(&c, &call) {
                    Answer::Continue => {}
                    a => fail(format!("host path answered {a}")),
                }
            }
            (t, code) => fail(format!("treatment {t:?} carried by {code:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "rows disagreeing with their code:\n{}",
        failures.join("\n")
    );
}
