//! [`SYSCALLS`]: what perch does with every x86_64 syscall that takes a path, or an fd used for
//! path lookup or naming a virtual object. The seccomp filter is derived from it (via
//! [`Trap`]) and `perch syscalls` prints it ([`SyscallTable`]'s `Display`).
//!
//! The numbers duplicate perch-syscalls' (this crate must not depend on the interception
//! layer's vocabulary for now); a test checks them against `libc::SYS_*`.

use std::fmt;

use crate::Errno;

/// What perch does with a syscall when it touches a virtual path or fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// perch answers itself from the catalog (metadata, xattrs, readlink) or injects an fd.
    Emulated(&'static str),
    /// The kernel does the work on the shadow object (path rewritten, or the fd already is one).
    Supported(&'static str),
    /// A write on a virtual object: fails like on a read-only file system (`EROFS`, or the
    /// errno Linux gives first: `EEXIST`, `EXDEV`, `EISDIR`...). Host paths continue.
    Erofs,
    /// Never trapped: the kernel's answer is already right (or the call needs privileges the
    /// program lacks anyway).
    Passthrough,
    /// Refused for every caller with this errno, and why.
    Refused(Errno, &'static str),
}

/// How the seccomp filter routes a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trap {
    /// `SECCOMP_RET_USER_NOTIF`: the supervisor decides (CONTINUE for host paths).
    Notify,
    /// `SECCOMP_RET_TRACE`: ptrace rewrites the path argument (execve, chdir).
    Trace,
    /// `SECCOMP_RET_ALLOW`.
    Allow,
    /// `SECCOMP_RET_ERRNO` with the [`Treatment::Refused`] errno.
    Errno,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyscallInfo {
    /// Name as in `<asm/unistd_64.h>`.
    pub name: &'static str,
    /// x86_64 number.
    pub nr: u32,
    /// What perch does.
    pub treatment: Treatment,
    /// How the filter routes it.
    pub trap: Trap,
}

const fn row(name: &'static str, nr: u32, treatment: Treatment, trap: Trap) -> SyscallInfo {
    SyscallInfo {
        name,
        nr,
        treatment,
        trap,
    }
}

use Trap::{Allow, Notify, Trace};
use Treatment::{Emulated, Erofs, Passthrough, Refused, Supported};

const STAT: &str = "stat from the catalog (st_dev per repository, st_ino from the client)";
const XATTR: &str = "catalog and cvmfs magic xattrs; ERANGE/ENODATA as the kernel";
const OPEN: &str = "regular file: fetched, hard-linked into the shadow tree, real fd injected \
                    (ADDFD|SEND, O_CLOEXEC honoured); directory: filled shadow dir fd";
const FD_PASS: &str = "fds of virtual objects are real shadow fds; read-only opens make the \
                       kernel's own EINVAL/EBADF right";

/// The table, sorted by number.
pub const SYSCALLS: &[SyscallInfo] = &[
    row("open", 2, Emulated(OPEN), Notify),
    row("stat", 4, Emulated(STAT), Notify),
    row("fstat", 5, Emulated("fd → /proc/<pid>/fd/N → virtual path → catalog stat"), Notify),
    row("lstat", 6, Emulated(STAT), Notify),
    row("access", 21, Emulated("permission bits of the catalog; W_OK → EROFS"), Notify),
    row("execve", 59, Supported("path rewritten to the shadow file (+x ensured); PT_INTERP and #! under /cvmfs exec'd via their shadow path"), Trace),
    row("truncate", 76, Erofs, Notify),
    row("ftruncate", 77, Passthrough, Allow),
    row("getdents", 78, Supported("kernel lists the filled shadow directory"), Allow),
    row("getcwd", 79, Emulated("kernel's cwd translated from shadow to virtual path"), Notify),
    row("chdir", 80, Supported("path rewritten to the filled shadow directory"), Trace),
    row("fchdir", 81, Supported(FD_PASS), Allow),
    row("rename", 82, Erofs, Notify),
    row("mkdir", 83, Erofs, Notify),
    row("rmdir", 84, Erofs, Notify),
    row("creat", 85, Erofs, Notify),
    row("link", 86, Erofs, Notify),
    row("unlink", 87, Erofs, Notify),
    row("symlink", 88, Erofs, Notify),
    row("readlink", 89, Emulated("catalog target; /proc/*/fd|cwd|exe|root translated"), Notify),
    row("chmod", 90, Erofs, Notify),
    row("fchmod", 91, Erofs, Notify),
    row("chown", 92, Erofs, Notify),
    row("fchown", 93, Erofs, Notify),
    row("lchown", 94, Erofs, Notify),
    row("utime", 132, Erofs, Notify),
    row("mknod", 133, Erofs, Notify),
    row("uselib", 134, Refused(Errno::ENOSYS, "obsolete, not built in modern kernels"), Trap::Errno),
    row("statfs", 137, Emulated("FUSE magic, ST_RDONLY|ST_NOSUID|ST_NODEV; autofs for /cvmfs"), Notify),
    row("fstatfs", 138, Emulated("as statfs, via the fd's virtual path"), Notify),
    row("pivot_root", 155, Refused(Errno::EPERM, "would detach the program from perch's namespace"), Trap::Errno),
    row("chroot", 161, Refused(Errno::EPERM, "a chroot would hide /cvmfs from path classification"), Trap::Errno),
    row("acct", 163, Passthrough, Allow),
    row("mount", 165, Refused(Errno::EPERM, "mounts would change what paths mean behind perch's back"), Trap::Errno),
    row("umount2", 166, Refused(Errno::EPERM, "see mount"), Trap::Errno),
    row("swapon", 167, Passthrough, Allow),
    row("swapoff", 168, Passthrough, Allow),
    row("quotactl", 179, Passthrough, Allow),
    row("setxattr", 188, Erofs, Notify),
    row("lsetxattr", 189, Erofs, Notify),
    row("fsetxattr", 190, Erofs, Notify),
    row("getxattr", 191, Emulated(XATTR), Notify),
    row("lgetxattr", 192, Emulated(XATTR), Notify),
    row("fgetxattr", 193, Emulated(XATTR), Notify),
    row("listxattr", 194, Emulated(XATTR), Notify),
    row("llistxattr", 195, Emulated(XATTR), Notify),
    row("flistxattr", 196, Emulated(XATTR), Notify),
    row("removexattr", 197, Erofs, Notify),
    row("lremovexattr", 198, Erofs, Notify),
    row("fremovexattr", 199, Erofs, Notify),
    row("getdents64", 217, Supported("kernel lists the filled shadow directory"), Allow),
    row("utimes", 235, Erofs, Notify),
    row("inotify_add_watch", 254, Emulated("watch added on the shadow object through the program's inotify fd (pidfd_getfd); no events, content is immutable"), Notify),
    row("openat", 257, Emulated(OPEN), Notify),
    row("mkdirat", 258, Erofs, Notify),
    row("mknodat", 259, Erofs, Notify),
    row("fchownat", 260, Erofs, Notify),
    row("futimesat", 261, Erofs, Notify),
    row("newfstatat", 262, Emulated(STAT), Notify),
    row("unlinkat", 263, Erofs, Notify),
    row("renameat", 264, Erofs, Notify),
    row("linkat", 265, Erofs, Notify),
    row("symlinkat", 266, Erofs, Notify),
    row("readlinkat", 267, Emulated("catalog target; /proc/*/fd|cwd|exe|root translated"), Notify),
    row("fchmodat", 268, Erofs, Notify),
    row("faccessat", 269, Emulated("permission bits of the catalog; W_OK → EROFS"), Notify),
    row("utimensat", 280, Erofs, Notify),
    row("fanotify_mark", 301, Emulated("mark placed on the shadow object through the program's fanotify fd (pidfd_getfd)"), Notify),
    row("name_to_handle_at", 303, Emulated("EOPNOTSUPP on virtual objects, like a FUSE mount without export support"), Notify),
    row("open_by_handle_at", 304, Passthrough, Allow),
    row("renameat2", 316, Erofs, Notify),
    row("execveat", 322, Supported("as execve; dirfd-relative and AT_EMPTY_PATH paths via the fd's virtual path"), Trace),
    row("statx", 332, Emulated("statx from the catalog, STATX_BASIC_STATS|STATX_MNT_ID, MOUNT_ROOT on repository roots"), Notify),
    row("io_uring_setup", 425, Refused(Errno::ENOSYS, "io_uring opens would bypass interception"), Trap::Errno),
    row("io_uring_enter", 426, Refused(Errno::ENOSYS, "see io_uring_setup"), Trap::Errno),
    row("io_uring_register", 427, Refused(Errno::ENOSYS, "see io_uring_setup"), Trap::Errno),
    row("open_tree", 428, Refused(Errno::EPERM, "see mount"), Trap::Errno),
    row("move_mount", 429, Refused(Errno::EPERM, "see mount"), Trap::Errno),
    row("fsopen", 430, Refused(Errno::EPERM, "see mount"), Trap::Errno),
    row("fsconfig", 431, Refused(Errno::EPERM, "see mount"), Trap::Errno),
    row("fsmount", 432, Refused(Errno::EPERM, "see mount"), Trap::Errno),
    row("fspick", 433, Refused(Errno::EPERM, "see mount"), Trap::Errno),
    row("openat2", 437, Emulated("as openat; RESOLVE_* honoured by perch's resolver"), Notify),
    row("faccessat2", 439, Emulated("permission bits of the catalog; W_OK → EROFS; AT_EACCESS"), Notify),
    row("mount_setattr", 442, Refused(Errno::EPERM, "see mount"), Trap::Errno),
    row("quotactl_fd", 443, Passthrough, Allow),
    row("landlock_add_rule", 445, Supported("rules on shadow fds apply to the shadow tree"), Allow),
    row("fchmodat2", 452, Erofs, Notify),
    row("setxattrat", 463, Erofs, Notify),
    row("getxattrat", 464, Emulated(XATTR), Notify),
    row("listxattrat", 465, Emulated(XATTR), Notify),
    row("removexattrat", 466, Erofs, Notify),
    row("open_tree_attr", 467, Refused(Errno::EPERM, "see mount"), Trap::Errno),
    row("file_getattr", 468, Emulated("no fs attributes on virtual objects: zeroed fsxattr"), Notify),
    row("file_setattr", 469, Erofs, Notify),
];

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
            Treatment::Erofs => {
                f.write_str("EROFS on virtual paths (Linux's read-only errno order)")
            }
            Treatment::Passthrough => f.write_str("passthrough (never trapped)"),
            Treatment::Refused(e, why) => write!(f, "refused with {}: {why}", e.name()),
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
                Treatment::Erofs | Treatment::Emulated(_) => {
                    assert_eq!(r.trap, Trap::Notify, "{}", r.name)
                }
                Treatment::Supported(_) => {}
            }
        }
        assert_eq!(SyscallTable.by_nr(257).map(|r| r.name), Some("openat"));
        assert_eq!(SyscallTable.by_name("statx").map(|r| r.nr), Some(332));
        assert!(SyscallTable.by_nr(0).is_none());
    }

    #[test]
    fn numbers_match_libc() {
        macro_rules! check {
            ($($name:ident),* $(,)?) => {
                $(
                    let row = SyscallTable.by_name(stringify!($name))
                        .unwrap_or_else(|| panic!("{} missing", stringify!($name)));
                    let nr = paste_sys!($name);
                    assert_eq!(i64::from(row.nr), nr as i64, "{}", stringify!($name));
                )*
            };
        }
        macro_rules! paste_sys {
            (open) => {
                libc::SYS_open
            };
            (stat) => {
                libc::SYS_stat
            };
            (fstat) => {
                libc::SYS_fstat
            };
            (lstat) => {
                libc::SYS_lstat
            };
            (access) => {
                libc::SYS_access
            };
            (execve) => {
                libc::SYS_execve
            };
            (truncate) => {
                libc::SYS_truncate
            };
            (ftruncate) => {
                libc::SYS_ftruncate
            };
            (getdents) => {
                libc::SYS_getdents
            };
            (getcwd) => {
                libc::SYS_getcwd
            };
            (chdir) => {
                libc::SYS_chdir
            };
            (fchdir) => {
                libc::SYS_fchdir
            };
            (rename) => {
                libc::SYS_rename
            };
            (mkdir) => {
                libc::SYS_mkdir
            };
            (rmdir) => {
                libc::SYS_rmdir
            };
            (creat) => {
                libc::SYS_creat
            };
            (link) => {
                libc::SYS_link
            };
            (unlink) => {
                libc::SYS_unlink
            };
            (symlink) => {
                libc::SYS_symlink
            };
            (readlink) => {
                libc::SYS_readlink
            };
            (chmod) => {
                libc::SYS_chmod
            };
            (fchmod) => {
                libc::SYS_fchmod
            };
            (chown) => {
                libc::SYS_chown
            };
            (fchown) => {
                libc::SYS_fchown
            };
            (lchown) => {
                libc::SYS_lchown
            };
            (utime) => {
                libc::SYS_utime
            };
            (mknod) => {
                libc::SYS_mknod
            };
            (uselib) => {
                libc::SYS_uselib
            };
            (statfs) => {
                libc::SYS_statfs
            };
            (fstatfs) => {
                libc::SYS_fstatfs
            };
            (pivot_root) => {
                libc::SYS_pivot_root
            };
            (chroot) => {
                libc::SYS_chroot
            };
            (acct) => {
                libc::SYS_acct
            };
            (mount) => {
                libc::SYS_mount
            };
            (umount2) => {
                libc::SYS_umount2
            };
            (swapon) => {
                libc::SYS_swapon
            };
            (swapoff) => {
                libc::SYS_swapoff
            };
            (quotactl) => {
                libc::SYS_quotactl
            };
            (setxattr) => {
                libc::SYS_setxattr
            };
            (lsetxattr) => {
                libc::SYS_lsetxattr
            };
            (fsetxattr) => {
                libc::SYS_fsetxattr
            };
            (getxattr) => {
                libc::SYS_getxattr
            };
            (lgetxattr) => {
                libc::SYS_lgetxattr
            };
            (fgetxattr) => {
                libc::SYS_fgetxattr
            };
            (listxattr) => {
                libc::SYS_listxattr
            };
            (llistxattr) => {
                libc::SYS_llistxattr
            };
            (flistxattr) => {
                libc::SYS_flistxattr
            };
            (removexattr) => {
                libc::SYS_removexattr
            };
            (lremovexattr) => {
                libc::SYS_lremovexattr
            };
            (fremovexattr) => {
                libc::SYS_fremovexattr
            };
            (getdents64) => {
                libc::SYS_getdents64
            };
            (utimes) => {
                libc::SYS_utimes
            };
            (inotify_add_watch) => {
                libc::SYS_inotify_add_watch
            };
            (openat) => {
                libc::SYS_openat
            };
            (mkdirat) => {
                libc::SYS_mkdirat
            };
            (mknodat) => {
                libc::SYS_mknodat
            };
            (fchownat) => {
                libc::SYS_fchownat
            };
            (futimesat) => {
                libc::SYS_futimesat
            };
            (newfstatat) => {
                libc::SYS_newfstatat
            };
            (unlinkat) => {
                libc::SYS_unlinkat
            };
            (renameat) => {
                libc::SYS_renameat
            };
            (linkat) => {
                libc::SYS_linkat
            };
            (symlinkat) => {
                libc::SYS_symlinkat
            };
            (readlinkat) => {
                libc::SYS_readlinkat
            };
            (fchmodat) => {
                libc::SYS_fchmodat
            };
            (faccessat) => {
                libc::SYS_faccessat
            };
            (utimensat) => {
                libc::SYS_utimensat
            };
            (fanotify_mark) => {
                libc::SYS_fanotify_mark
            };
            (name_to_handle_at) => {
                libc::SYS_name_to_handle_at
            };
            (open_by_handle_at) => {
                libc::SYS_open_by_handle_at
            };
            (renameat2) => {
                libc::SYS_renameat2
            };
            (execveat) => {
                libc::SYS_execveat
            };
            (statx) => {
                libc::SYS_statx
            };
            (io_uring_setup) => {
                libc::SYS_io_uring_setup
            };
            (io_uring_enter) => {
                libc::SYS_io_uring_enter
            };
            (io_uring_register) => {
                libc::SYS_io_uring_register
            };
            (open_tree) => {
                libc::SYS_open_tree
            };
            (move_mount) => {
                libc::SYS_move_mount
            };
            (fsopen) => {
                libc::SYS_fsopen
            };
            (fsconfig) => {
                libc::SYS_fsconfig
            };
            (fsmount) => {
                libc::SYS_fsmount
            };
            (fspick) => {
                libc::SYS_fspick
            };
            (openat2) => {
                libc::SYS_openat2
            };
            (faccessat2) => {
                libc::SYS_faccessat2
            };
            (mount_setattr) => {
                libc::SYS_mount_setattr
            };
            (quotactl_fd) => {
                libc::SYS_quotactl_fd
            };
            (landlock_add_rule) => {
                libc::SYS_landlock_add_rule
            };
            (fchmodat2) => {
                libc::SYS_fchmodat2
            };
        }
        check!(
            open,
            stat,
            fstat,
            lstat,
            access,
            execve,
            truncate,
            ftruncate,
            getdents,
            getcwd,
            chdir,
            fchdir,
            rename,
            mkdir,
            rmdir,
            creat,
            link,
            unlink,
            symlink,
            readlink,
            chmod,
            fchmod,
            chown,
            fchown,
            lchown,
            utime,
            mknod,
            uselib,
            statfs,
            fstatfs,
            pivot_root,
            chroot,
            acct,
            mount,
            umount2,
            swapon,
            swapoff,
            quotactl,
            setxattr,
            lsetxattr,
            fsetxattr,
            getxattr,
            lgetxattr,
            fgetxattr,
            listxattr,
            llistxattr,
            flistxattr,
            removexattr,
            lremovexattr,
            fremovexattr,
            getdents64,
            utimes,
            inotify_add_watch,
            openat,
            mkdirat,
            mknodat,
            fchownat,
            futimesat,
            newfstatat,
            unlinkat,
            renameat,
            linkat,
            symlinkat,
            readlinkat,
            fchmodat,
            faccessat,
            utimensat,
            fanotify_mark,
            name_to_handle_at,
            open_by_handle_at,
            renameat2,
            execveat,
            statx,
            io_uring_setup,
            io_uring_enter,
            io_uring_register,
            open_tree,
            move_mount,
            fsopen,
            fsconfig,
            fsmount,
            fspick,
            openat2,
            faccessat2,
            mount_setattr,
            quotactl_fd,
            landlock_add_rule,
            fchmodat2,
        );
        // 463..469 (Linux 6.13–6.17) are newer than libc's table: checked by hand against
        // arch/x86/entry/syscalls/syscall_64.tbl.
        assert_eq!(SyscallTable.by_name("setxattrat").map(|r| r.nr), Some(463));
        assert_eq!(
            SyscallTable.by_name("file_setattr").map(|r| r.nr),
            Some(469)
        );
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
