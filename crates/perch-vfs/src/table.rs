//! [`SYSCALLS`]: what perch does with every x86_64 syscall that takes a path, or an fd used for
//! path lookup or naming a virtual object — and the code that does it. Each row carries its
//! [`Code`]: the function every backend runs for it ([`crate::syscall`]), the exec/chdir
//! rewriting, or nothing (the kernel alone). The seccomp filter is generated from the rows'
//! [`Trap`]s ([`SyscallTable::routes`]: rows whose answer never depends on the path are
//! `SECCOMP_RET_ERRNO`/`SECCOMP_RET_ALLOW` in the filter, no round trip), and `perch syscalls`
//! prints the rows ([`SyscallTable`]'s `Display`). Numbers and names are perch-syscalls'.

use std::fmt;

use perch_syscalls::{SyscallSet, Sysno};

use crate::syscall::{self, AnswerFn};
use crate::Errno;

/// What perch does with a syscall when it touches a virtual path or fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// perch answers itself from the catalog (metadata, xattrs, readlink) or injects an fd.
    Emulated(&'static str),
    /// The kernel does the work on the shadow object (path rewritten, or the fd already is one).
    Supported(&'static str),
    /// A write on a virtual object: fails like on a read-only file system (`EROFS`, or the
    /// errno Linux gives first: `EEXIST`, `EXDEV`, `EISDIR`...). On host paths the call is
    /// made by perch on the object it resolved, `EACCES` in a cache directory
    /// (`syscall::guard`); without protected directories, host paths continue.
    Erofs,
    /// Fails with this errno on virtual objects only, and why; host paths continue.
    Unsupported(Errno, &'static str),
    /// Never trapped: the kernel's answer is already right (or the call needs privileges the
    /// program lacks anyway).
    Passthrough,
    /// Refused for every caller with this errno, and why.
    Refused(Errno, &'static str),
}

/// How the seccomp filter routes a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trap {
    /// `SECCOMP_RET_USER_NOTIF`: the supervisor runs the row's code (CONTINUE for host paths).
    Notify,
    /// `SECCOMP_RET_TRACE`: ptrace rewrites the path argument (execve, chdir).
    Trace,
    /// `SECCOMP_RET_ALLOW`: never leaves the kernel.
    Allow,
    /// `SECCOMP_RET_ERRNO` with the [`Treatment::Refused`] errno: never leaves the kernel.
    Errno,
}

/// The code a row carries.
#[derive(Clone, Copy)]
pub enum Code {
    /// This function computes the answer ([`crate::syscall::Calls::answer`]).
    Answer(AnswerFn),
    /// [`crate::syscall::Calls::rewrite`] gives the new path (and arguments) of the call.
    Rewrite,
    /// None: the filter alone answers (allow or a fixed errno).
    Kernel,
}

impl Code {
    /// The answering function, if the row has one.
    pub fn answer(self) -> Option<AnswerFn> {
        match self {
            Code::Answer(f) => Some(f),
            _ => None,
        }
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Code::Answer(_) => "Answer",
            Code::Rewrite => "Rewrite",
            Code::Kernel => "Kernel",
        })
    }
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct SyscallInfo {
    /// The syscall.
    pub sysno: Sysno,
    /// Name as in `<asm/unistd_64.h>`.
    pub name: &'static str,
    /// x86_64 number.
    pub nr: u32,
    /// What perch does.
    pub treatment: Treatment,
    /// How the filter routes it.
    pub trap: Trap,
    /// The code that does it.
    pub code: Code,
}

const fn row(sysno: Sysno, treatment: Treatment, trap: Trap, code: Code) -> SyscallInfo {
    SyscallInfo {
        sysno,
        name: sysno.name(),
        nr: sysno.nr(),
        treatment,
        trap,
        code,
    }
}

use Code::{Answer, Kernel, Rewrite};
use Trap::{Allow, Notify, Trace};
use Treatment::{Emulated, Erofs, Passthrough, Refused, Supported, Unsupported};

const STAT: &str = "stat from the catalog (st_dev per repository, st_ino from the client)";
const XATTR: &str = "catalog and cvmfs magic xattrs; ERANGE/ENODATA as the kernel";
const OPEN: &str = "regular file: fetched, hard-linked into the shadow tree, real fd injected \
                    (ADDFD|SEND, O_CLOEXEC honoured); directory: filled shadow dir fd; O_PATH: \
                    a read-only fd (ADDFD cannot pass O_PATH files), ELOOP for a symlink itself; \
                    a host open for writing: made by perch, EACCES in a cache directory";
const FD_PASS: &str = "fds of virtual objects are real shadow fds; read-only opens make the \
                       kernel's own EINVAL/EBADF right";
const WATCH: &str =
    "content never changes, a watch would never fire; tail -f falls back to polling";

/// The table, sorted by number.
pub const SYSCALLS: &[SyscallInfo] = &[
    row(Sysno::Open, Emulated(OPEN), Notify, Answer(syscall::open)),
    row(Sysno::Stat, Emulated(STAT), Notify, Answer(syscall::stat)),
    row(Sysno::Fstat, Emulated("fd → /proc/<pid>/fd/N → virtual path → catalog stat"), Notify, Answer(syscall::stat)),
    row(Sysno::Lstat, Emulated(STAT), Notify, Answer(syscall::stat)),
    row(Sysno::Access, Emulated("permission bits of the catalog; W_OK → EROFS"), Notify, Answer(syscall::access)),
    row(Sysno::Execve, Supported("path rewritten to the shadow file (+x ensured); PT_INTERP and #! under /cvmfs exec'd via their shadow path"), Trace, Rewrite),
    row(Sysno::Truncate, Erofs, Notify, Answer(syscall::modify)),
    row(Sysno::Ftruncate, Passthrough, Allow, Kernel),
    row(Sysno::Getdents, Supported("kernel lists the filled shadow directory"), Allow, Kernel),
    row(Sysno::Getcwd, Emulated("kernel's cwd translated from shadow to virtual path"), Notify, Answer(syscall::getcwd)),
    row(Sysno::Chdir, Supported("path rewritten to the filled shadow directory"), Trace, Rewrite),
    row(Sysno::Fchdir, Supported(FD_PASS), Allow, Kernel),
    row(Sysno::Rename, Erofs, Notify, Answer(syscall::pair)),
    row(Sysno::Mkdir, Erofs, Notify, Answer(syscall::create)),
    row(Sysno::Rmdir, Erofs, Notify, Answer(syscall::remove)),
    row(Sysno::Creat, Erofs, Notify, Answer(syscall::open)),
    row(Sysno::Link, Erofs, Notify, Answer(syscall::pair)),
    row(Sysno::Unlink, Erofs, Notify, Answer(syscall::remove)),
    row(Sysno::Symlink, Erofs, Notify, Answer(syscall::create)),
    row(Sysno::Readlink, Emulated("catalog target; /proc/*/fd|cwd|exe|root translated"), Notify, Answer(syscall::readlink)),
    row(Sysno::Chmod, Erofs, Notify, Answer(syscall::modify)),
    row(Sysno::Fchmod, Erofs, Notify, Answer(syscall::modify)),
    row(Sysno::Chown, Erofs, Notify, Answer(syscall::modify)),
    row(Sysno::Fchown, Erofs, Notify, Answer(syscall::modify)),
    row(Sysno::Lchown, Erofs, Notify, Answer(syscall::modify)),
    row(Sysno::Utime, Erofs, Notify, Answer(syscall::modify)),
    row(Sysno::Mknod, Erofs, Notify, Answer(syscall::create)),
    row(Sysno::Uselib, Refused(Errno::ENOSYS, "obsolete, not built in modern kernels"), Trap::Errno, Kernel),
    row(Sysno::Statfs, Emulated("FUSE magic, ST_RDONLY|ST_NOSUID|ST_NODEV; autofs for /cvmfs"), Notify, Answer(syscall::statfs)),
    row(Sysno::Fstatfs, Emulated("as statfs, via the fd's virtual path"), Notify, Answer(syscall::statfs)),
    row(Sysno::PivotRoot, Refused(Errno::EPERM, "would detach the program from perch's namespace"), Trap::Errno, Kernel),
    row(Sysno::Chroot, Refused(Errno::EPERM, "a chroot would hide /cvmfs from path classification"), Trap::Errno, Kernel),
    row(Sysno::Acct, Passthrough, Allow, Kernel),
    row(Sysno::Mount, Refused(Errno::EPERM, "mounts would change what paths mean behind perch's back"), Trap::Errno, Kernel),
    row(Sysno::Umount2, Refused(Errno::EPERM, "see mount"), Trap::Errno, Kernel),
    row(Sysno::Swapon, Passthrough, Allow, Kernel),
    row(Sysno::Swapoff, Passthrough, Allow, Kernel),
    row(Sysno::Quotactl, Passthrough, Allow, Kernel),
    row(Sysno::Setxattr, Erofs, Notify, Answer(syscall::modify)),
    row(Sysno::Lsetxattr, Erofs, Notify, Answer(syscall::modify)),
    row(Sysno::Fsetxattr, Erofs, Notify, Answer(syscall::modify)),
    row(Sysno::Getxattr, Emulated(XATTR), Notify, Answer(syscall::getxattr)),
    row(Sysno::Lgetxattr, Emulated(XATTR), Notify, Answer(syscall::getxattr)),
    row(Sysno::Fgetxattr, Emulated(XATTR), Notify, Answer(syscall::getxattr)),
    row(Sysno::Listxattr, Emulated(XATTR), Notify, Answer(syscall::listxattr)),
    row(Sysno::Llistxattr, Emulated(XATTR), Notify, Answer(syscall::listxattr)),
    row(Sysno::Flistxattr, Emulated(XATTR), Notify, Answer(syscall::listxattr)),
    row(Sysno::Removexattr, Erofs, Notify, Answer(syscall::modify)),
    row(Sysno::Lremovexattr, Erofs, Notify, Answer(syscall::modify)),
    row(Sysno::Fremovexattr, Erofs, Notify, Answer(syscall::modify)),
    row(Sysno::Getdents64, Supported("kernel lists the filled shadow directory"), Allow, Kernel),
    row(Sysno::Utimes, Erofs, Notify, Answer(syscall::modify)),
    row(Sysno::InotifyAddWatch, Unsupported(Errno::ENOSPC, WATCH), Notify, Answer(syscall::watch)),
    row(Sysno::Openat, Emulated(OPEN), Notify, Answer(syscall::open)),
    row(Sysno::Mkdirat, Erofs, Notify, Answer(syscall::create)),
    row(Sysno::Mknodat, Erofs, Notify, Answer(syscall::create)),
    row(Sysno::Fchownat, Erofs, Notify, Answer(syscall::modify)),
    row(Sysno::Futimesat, Erofs, Notify, Answer(syscall::modify)),
    row(Sysno::Newfstatat, Emulated(STAT), Notify, Answer(syscall::stat)),
    row(Sysno::Unlinkat, Erofs, Notify, Answer(syscall::remove)),
    row(Sysno::Renameat, Erofs, Notify, Answer(syscall::pair)),
    row(Sysno::Linkat, Erofs, Notify, Answer(syscall::pair)),
    row(Sysno::Symlinkat, Erofs, Notify, Answer(syscall::create)),
    row(Sysno::Readlinkat, Emulated("catalog target; /proc/*/fd|cwd|exe|root translated"), Notify, Answer(syscall::readlink)),
    row(Sysno::Fchmodat, Erofs, Notify, Answer(syscall::modify)),
    row(Sysno::Faccessat, Emulated("permission bits of the catalog; W_OK → EROFS"), Notify, Answer(syscall::access)),
    row(Sysno::Utimensat, Erofs, Notify, Answer(syscall::modify)),
    row(Sysno::FanotifyMark, Unsupported(Errno::ENOSPC, WATCH), Notify, Answer(syscall::watch)),
    row(Sysno::NameToHandleAt, Unsupported(Errno::EOPNOTSUPP, "no file handles, like a FUSE mount without export support"), Notify, Answer(syscall::name_to_handle)),
    row(Sysno::OpenByHandleAt, Passthrough, Allow, Kernel),
    row(Sysno::Renameat2, Erofs, Notify, Answer(syscall::pair)),
    row(Sysno::Execveat, Supported("as execve; dirfd-relative and AT_EMPTY_PATH paths via the fd's virtual path"), Trace, Rewrite),
    row(Sysno::Statx, Emulated("statx from the catalog, STATX_BASIC_STATS|STATX_MNT_ID, MOUNT_ROOT on repository roots"), Notify, Answer(syscall::stat)),
    row(Sysno::IoUringSetup, Refused(Errno::ENOSYS, "io_uring opens would bypass interception"), Trap::Errno, Kernel),
    row(Sysno::IoUringEnter, Refused(Errno::ENOSYS, "see io_uring_setup"), Trap::Errno, Kernel),
    row(Sysno::IoUringRegister, Refused(Errno::ENOSYS, "see io_uring_setup"), Trap::Errno, Kernel),
    row(Sysno::OpenTree, Refused(Errno::EPERM, "see mount"), Trap::Errno, Kernel),
    row(Sysno::MoveMount, Refused(Errno::EPERM, "see mount"), Trap::Errno, Kernel),
    row(Sysno::Fsopen, Refused(Errno::EPERM, "see mount"), Trap::Errno, Kernel),
    row(Sysno::Fsconfig, Refused(Errno::EPERM, "see mount"), Trap::Errno, Kernel),
    row(Sysno::Fsmount, Refused(Errno::EPERM, "see mount"), Trap::Errno, Kernel),
    row(Sysno::Fspick, Refused(Errno::EPERM, "see mount"), Trap::Errno, Kernel),
    row(Sysno::Openat2, Emulated("as openat; RESOLVE_* honoured by perch's resolver"), Notify, Answer(syscall::open)),
    row(Sysno::Faccessat2, Emulated("permission bits of the catalog; W_OK → EROFS; AT_EACCESS"), Notify, Answer(syscall::access)),
    row(Sysno::MountSetattr, Refused(Errno::EPERM, "see mount"), Trap::Errno, Kernel),
    row(Sysno::QuotactlFd, Passthrough, Allow, Kernel),
    row(Sysno::LandlockAddRule, Supported("rules on shadow fds apply to the shadow tree"), Allow, Kernel),
    row(Sysno::Fchmodat2, Erofs, Notify, Answer(syscall::modify)),
    row(Sysno::Setxattrat, Erofs, Notify, Answer(syscall::modify)),
    row(Sysno::Getxattrat, Emulated(XATTR), Notify, Answer(syscall::getxattr)),
    row(Sysno::Listxattrat, Emulated(XATTR), Notify, Answer(syscall::listxattr)),
    row(Sysno::Removexattrat, Erofs, Notify, Answer(syscall::modify)),
    row(Sysno::OpenTreeAttr, Refused(Errno::EPERM, "see mount"), Trap::Errno, Kernel),
    row(Sysno::FileGetattr, Unsupported(Errno::EOPNOTSUPP, "no file-system attributes on virtual objects"), Notify, Answer(syscall::file_getattr)),
    row(Sysno::FileSetattr, Erofs, Notify, Answer(syscall::modify)),
];

/// Where the rows send calls in the seccomp filter.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// `SECCOMP_RET_USER_NOTIF`.
    pub notify: SyscallSet,
    /// `SECCOMP_RET_TRACE`.
    pub trace: SyscallSet,
    /// `SECCOMP_RET_ERRNO` with each errno.
    pub errno: Vec<(u32, Errno)>,
}

/// The table as a value with lookups and a documentation `Display`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyscallTable;

impl SyscallTable {
    /// All rows, sorted by number.
    pub fn rows(&self) -> &'static [SyscallInfo] {
        SYSCALLS
    }

    /// The row of syscall number `nr`.
    pub fn by_nr(&self, nr: u32) -> Option<&'static SyscallInfo> {
        SYSCALLS
            .binary_search_by_key(&nr, |r| r.nr)
            .ok()
            .map(|i| &SYSCALLS[i])
    }

    /// The filter routes of the rows (syscalls without a row are allowed).
    pub fn routes(&self) -> Routes {
        let mut r = Routes::default();
        for row in SYSCALLS {
            match (row.trap, row.treatment) {
                (Trap::Notify, _) => r.notify.insert_nr(row.nr),
                (Trap::Trace, _) => r.trace.insert_nr(row.nr),
                (Trap::Errno, Treatment::Refused(e, _)) => r.errno.push((row.nr, e)),
                _ => {}
            }
        }
        r
    }

    /// The row of syscall `name`.
    pub fn by_name(&self, name: &str) -> Option<&'static SyscallInfo> {
        SYSCALLS.iter().find(|r| r.name == name)
    }
}

impl fmt::Display for Treatment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Treatment::Emulated(n) => write!(f, "emulated: {n}"),
            Treatment::Supported(n) => write!(f, "supported: {n}"),
            Treatment::Erofs => f.write_str(
                "EROFS on virtual paths (Linux's read-only errno order); on host paths \
                     made by perch, EACCES in a cache directory",
            ),
            Treatment::Unsupported(e, why) => {
                write!(f, "{e:?} on virtual objects: {why}; host paths continue")
            }
            Treatment::Passthrough => f.write_str("passthrough (never trapped)"),
            Treatment::Refused(e, why) => write!(f, "refused with {e:?}: {why}"),
        }
    }
}

impl fmt::Display for Trap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Trap::Notify => "notify",
            Trap::Trace => "trace",
            Trap::Allow => "allow",
            Trap::Errno => "errno",
        })
    }
}

impl fmt::Display for SyscallTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:>4}  {:<20} {:<7} treatment", "nr", "syscall", "trap")?;
        for r in SYSCALLS {
            writeln!(
                f,
                "{:>4}  {:<20} {:<7} {}",
                r.nr,
                r.name,
                r.trap.to_string(),
                r.treatment
            )?;
        }
        write!(
            f,
            "Other syscalls are never trapped. Host paths are answered with CONTINUE at once."
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_unique_and_consistent() {
        for w in SYSCALLS.windows(2) {
            assert!(w[0].nr < w[1].nr, "{} / {}", w[0].name, w[1].name);
        }
        for r in SYSCALLS {
            match r.treatment {
                Treatment::Refused(..) => assert_eq!(r.trap, Trap::Errno, "{}", r.name),
                Treatment::Passthrough => assert_eq!(r.trap, Trap::Allow, "{}", r.name),
                Treatment::Erofs | Treatment::Emulated(_) | Treatment::Unsupported(..) => {
                    assert_eq!(r.trap, Trap::Notify, "{}", r.name)
                }
                Treatment::Supported(_) => {}
            }
            // The code matches the route: notified rows answer, traced rows rewrite, the
            // others never leave the kernel.
            match (r.trap, r.code) {
                (Trap::Notify, Code::Answer(_))
                | (Trap::Trace, Code::Rewrite)
                | (Trap::Allow | Trap::Errno, Code::Kernel) => {}
                (t, c) => panic!("{}: {t:?} with {c:?}", r.name),
            }
        }
        assert_eq!(SyscallTable.by_nr(257).map(|r| r.name), Some("openat"));
        assert_eq!(SyscallTable.by_name("statx").map(|r| r.nr), Some(332));
        assert!(SyscallTable.by_nr(0).is_none());
        let routes = SyscallTable.routes();
        assert!(routes.notify.contains(Sysno::Openat));
        assert!(routes.trace.contains(Sysno::Chdir));
        assert!(routes.errno.contains(&(Sysno::Mount.nr(), Errno::EPERM)));
        assert!(!routes.notify.contains(Sysno::Mount));
        assert!(!routes.notify.contains(Sysno::Getdents64));
    }

    #[test]
    fn display_lists_every_row() {
        let text = SyscallTable.to_string();
        for r in SYSCALLS {
            assert!(text.contains(r.name), "{}", r.name);
        }
        assert!(text.contains("refused with ENOSYS"));
    }
}
