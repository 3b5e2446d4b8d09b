//! x86_64 syscall vocabulary shared by perch's interceptor and namespace.
//!
//! This crate owns: the table of syscalls perch knows (numbers, names, [`Family`] — everything
//! that takes a path or an fd used for path resolution, plus the few that are refused or are plain
//! fd I/O), the typed decode of `(nr, [u64; 6])` into [`Call`] (total: unknown numbers become
//! [`Call::Other`], unknown flag bits print in hex), strace-like display, [`TraceeView`] (read a
//! tracee's memory), [`Errno`], [`Pid`], [`SyscallSet`], `PATH_MAX`, the one encoder of each of
//! `struct stat`, `struct statx` and `struct statfs` ([`stat`]), and the vocabulary a backend and
//! the syscall table share: [`Answer`] (what to do with a call), [`OpenHow`], [`ResolveFlags`].
//! It does no I/O and knows no policy: what perch does with a call is decided above (perch-vfs's
//! table).
//!
//! ```
//! use perch_syscalls::{Call, FakeMemory, Sysno};
//!
//! let mut mem = FakeMemory::new();
//! mem.map_cstr(0x1000, b"/cvmfs/x");
//! let call = Call::decode(257, [0xffff_ffff_ffff_ff9c, 0x1000, 0o2000000, 0, 0, 0]);
//! assert_eq!(call.sysno(), Some(Sysno::Openat));
//! assert_eq!(
//!     call.display(&mem).to_string(),
//!     r#"openat(AT_FDCWD, "/cvmfs/x", O_RDONLY|O_CLOEXEC)"#
//! );
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod answer;
pub mod args;
mod call;
mod errno;
mod set;
pub mod stat;
mod view;

pub use answer::{Answer, OpenHow, ResolveFlags};
pub use args::{
    AccessFlags, AccessMode, AtFlags, DirFd, Fd, Mode, OpenFlags, PathPtr, Ptr, Size, StrPtr,
    UnlinkFlags, AT_FDCWD, PATH_MAX,
};
pub use call::{Call, DisplayCall, Family, Sysno};
pub use errno::Errno;
pub use set::{SyscallSet, MAX_NR};
pub use stat::{Stat, StatFs, Statx, StatxTimestamp};
pub use view::{CallerCreds, FakeMemory, TraceeView};

/// A process or thread id as the kernel reports it. A handle for logging and `/proc` look-ups;
/// it may be reused once the process is gone.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid(pub i32);

impl std::fmt::Display for Pid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `AUDIT_ARCH_X86_64`, the `arch` of native x86_64 syscalls in `seccomp_data`.
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `__X32_SYSCALL_BIT`: set in the number of x32 syscalls.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Every syscall of the table that takes a path or an fd used for path resolution.
pub fn filesystem() -> SyscallSet {
    Sysno::ALL
        .iter()
        .copied()
        .filter(|s| s.family().is_filesystem())
        .collect()
}

/// The members of `family`.
pub fn family(family: Family) -> SyscallSet {
    Sysno::ALL
        .iter()
        .copied()
        .filter(|s| s.family() == family)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AT_FDCWD as the register holds it.
    const CWD: u64 = 0xffff_ffff_ffff_ff9c;

    fn mem() -> FakeMemory {
        let mut m = FakeMemory::new();
        m.map_cstr(0x1000, b"/cvmfs/x")
            .map_cstr(0x2000, b"a\"b\n\xff")
            .map_cstr(0x3000, b"user.name");
        m
    }

    #[test]
    fn numbers_and_names_match_the_kernel() {
        for (s, nr, name) in [
            (Sysno::Read, 0, "read"),
            (Sysno::Open, 2, "open"),
            (Sysno::Execve, 59, "execve"),
            (Sysno::Chdir, 80, "chdir"),
            (Sysno::Ptrace, 101, "ptrace"),
            (Sysno::Openat, 257, "openat"),
            (Sysno::Newfstatat, 262, "newfstatat"),
            (Sysno::Execveat, 322, "execveat"),
            (Sysno::Statx, 332, "statx"),
            (Sysno::IoUringSetup, 425, "io_uring_setup"),
            (Sysno::Openat2, 437, "openat2"),
            (Sysno::Faccessat2, 439, "faccessat2"),
        ] {
            assert_eq!(s.nr(), nr);
            assert_eq!(s.name(), name);
            assert_eq!(Sysno::from_nr(nr), Some(s));
            assert_eq!(Sysno::from_name(name), Some(s));
        }
    }

    #[test]
    fn numbers_match_libc() {
        for (s, nr) in [
            (Sysno::Read, libc::SYS_read),
            (Sysno::Write, libc::SYS_write),
            (Sysno::Open, libc::SYS_open),
            (Sysno::Close, libc::SYS_close),
            (Sysno::Stat, libc::SYS_stat),
            (Sysno::Fstat, libc::SYS_fstat),
            (Sysno::Lstat, libc::SYS_lstat),
            (Sysno::Access, libc::SYS_access),
            (Sysno::Execve, libc::SYS_execve),
            (Sysno::Truncate, libc::SYS_truncate),
            (Sysno::Ftruncate, libc::SYS_ftruncate),
            (Sysno::Getdents, libc::SYS_getdents),
            (Sysno::Getcwd, libc::SYS_getcwd),
            (Sysno::Chdir, libc::SYS_chdir),
            (Sysno::Fchdir, libc::SYS_fchdir),
            (Sysno::Rename, libc::SYS_rename),
            (Sysno::Mkdir, libc::SYS_mkdir),
            (Sysno::Rmdir, libc::SYS_rmdir),
            (Sysno::Creat, libc::SYS_creat),
            (Sysno::Link, libc::SYS_link),
            (Sysno::Unlink, libc::SYS_unlink),
            (Sysno::Symlink, libc::SYS_symlink),
            (Sysno::Readlink, libc::SYS_readlink),
            (Sysno::Chmod, libc::SYS_chmod),
            (Sysno::Fchmod, libc::SYS_fchmod),
            (Sysno::Chown, libc::SYS_chown),
            (Sysno::Fchown, libc::SYS_fchown),
            (Sysno::Lchown, libc::SYS_lchown),
            (Sysno::Ptrace, libc::SYS_ptrace),
            (Sysno::Utime, libc::SYS_utime),
            (Sysno::Mknod, libc::SYS_mknod),
            (Sysno::Uselib, libc::SYS_uselib),
            (Sysno::Statfs, libc::SYS_statfs),
            (Sysno::Fstatfs, libc::SYS_fstatfs),
            (Sysno::PivotRoot, libc::SYS_pivot_root),
            (Sysno::Chroot, libc::SYS_chroot),
            (Sysno::Acct, libc::SYS_acct),
            (Sysno::Mount, libc::SYS_mount),
            (Sysno::Umount2, libc::SYS_umount2),
            (Sysno::Swapon, libc::SYS_swapon),
            (Sysno::Swapoff, libc::SYS_swapoff),
            (Sysno::Quotactl, libc::SYS_quotactl),
            (Sysno::Setxattr, libc::SYS_setxattr),
            (Sysno::Lsetxattr, libc::SYS_lsetxattr),
            (Sysno::Fsetxattr, libc::SYS_fsetxattr),
            (Sysno::Getxattr, libc::SYS_getxattr),
            (Sysno::Lgetxattr, libc::SYS_lgetxattr),
            (Sysno::Fgetxattr, libc::SYS_fgetxattr),
            (Sysno::Listxattr, libc::SYS_listxattr),
            (Sysno::Llistxattr, libc::SYS_llistxattr),
            (Sysno::Flistxattr, libc::SYS_flistxattr),
            (Sysno::Removexattr, libc::SYS_removexattr),
            (Sysno::Lremovexattr, libc::SYS_lremovexattr),
            (Sysno::Fremovexattr, libc::SYS_fremovexattr),
            (Sysno::Getdents64, libc::SYS_getdents64),
            (Sysno::Utimes, libc::SYS_utimes),
            (Sysno::InotifyAddWatch, libc::SYS_inotify_add_watch),
            (Sysno::Openat, libc::SYS_openat),
            (Sysno::Mkdirat, libc::SYS_mkdirat),
            (Sysno::Mknodat, libc::SYS_mknodat),
            (Sysno::Fchownat, libc::SYS_fchownat),
            (Sysno::Futimesat, libc::SYS_futimesat),
            (Sysno::Newfstatat, libc::SYS_newfstatat),
            (Sysno::Unlinkat, libc::SYS_unlinkat),
            (Sysno::Renameat, libc::SYS_renameat),
            (Sysno::Linkat, libc::SYS_linkat),
            (Sysno::Symlinkat, libc::SYS_symlinkat),
            (Sysno::Readlinkat, libc::SYS_readlinkat),
            (Sysno::Fchmodat, libc::SYS_fchmodat),
            (Sysno::Faccessat, libc::SYS_faccessat),
            (Sysno::Utimensat, libc::SYS_utimensat),
            (Sysno::FanotifyMark, libc::SYS_fanotify_mark),
            (Sysno::NameToHandleAt, libc::SYS_name_to_handle_at),
            (Sysno::OpenByHandleAt, libc::SYS_open_by_handle_at),
            (Sysno::Renameat2, libc::SYS_renameat2),
            (Sysno::Execveat, libc::SYS_execveat),
            (Sysno::Statx, libc::SYS_statx),
            (Sysno::IoUringSetup, libc::SYS_io_uring_setup),
            (Sysno::IoUringEnter, libc::SYS_io_uring_enter),
            (Sysno::IoUringRegister, libc::SYS_io_uring_register),
            (Sysno::OpenTree, libc::SYS_open_tree),
            (Sysno::MoveMount, libc::SYS_move_mount),
            (Sysno::Fsopen, libc::SYS_fsopen),
            (Sysno::Fsconfig, libc::SYS_fsconfig),
            (Sysno::Fsmount, libc::SYS_fsmount),
            (Sysno::Fspick, libc::SYS_fspick),
            (Sysno::Openat2, libc::SYS_openat2),
            (Sysno::Faccessat2, libc::SYS_faccessat2),
            (Sysno::MountSetattr, libc::SYS_mount_setattr),
            (Sysno::QuotactlFd, libc::SYS_quotactl_fd),
            (Sysno::LandlockAddRule, libc::SYS_landlock_add_rule),
            (Sysno::Fchmodat2, libc::SYS_fchmodat2),
        ] {
            assert_eq!(i64::from(s.nr()), nr, "{}", s.name());
        }
        // 463..469 (Linux 6.13–6.17) are newer than libc's table: checked by hand against
        // arch/x86/entry/syscalls/syscall_64.tbl.
        for (s, nr) in [
            (Sysno::Setxattrat, 463),
            (Sysno::Getxattrat, 464),
            (Sysno::Listxattrat, 465),
            (Sysno::Removexattrat, 466),
            (Sysno::OpenTreeAttr, 467),
            (Sysno::FileGetattr, 468),
            (Sysno::FileSetattr, 469),
        ] {
            assert_eq!(s.nr(), nr, "{}", s.name());
        }
    }

    #[test]
    fn table_is_consistent() {
        let mut seen = std::collections::HashSet::new();
        for &s in Sysno::ALL {
            assert!(seen.insert(s.nr()), "duplicate {}", s.name());
            assert!(s.nr() < MAX_NR);
            assert_eq!(Sysno::from_nr(s.nr()), Some(s));
        }
        let fs = filesystem();
        assert!(fs.contains(Sysno::Openat));
        assert!(fs.contains(Sysno::Fchdir));
        assert!(!fs.contains(Sysno::Read));
        assert!(!fs.contains(Sysno::IoUringSetup));
    }

    #[test]
    fn display_like_strace() {
        let m = mem();
        let cases: &[(u64, [u64; 6], &str)] = &[
            (
                257,
                [CWD, 0x1000, 0o2000000, 0, 0, 0],
                r#"openat(AT_FDCWD, "/cvmfs/x", O_RDONLY|O_CLOEXEC)"#,
            ),
            (
                257,
                [3, 0x1000, 0o101 | 0o1000, 0o644, 0, 0],
                r#"openat(3, "/cvmfs/x", O_WRONLY|O_CREAT|O_TRUNC, 0644)"#,
            ),
            (2, [0x2000, 0o40000000 | 0o3, 0, 0, 0, 0], r#"open("a\"b\n\xff", 0x3|0x800000)"#),
            (
                262,
                [CWD, 0x1000, 0x7ff0, 0x100, 0, 0],
                r#"newfstatat(AT_FDCWD, "/cvmfs/x", 0x7ff0, AT_SYMLINK_NOFOLLOW)"#,
            ),
            (
                332,
                [5, 0, 0x1000 | 0x100, 0xfff, 0x10, 0],
                "statx(5, NULL, AT_SYMLINK_NOFOLLOW|AT_EMPTY_PATH, STATX_BASIC_STATS|STATX_BTIME, 0x10)",
            ),
            (21, [0x1000, 5, 0, 0, 0, 0], r#"access("/cvmfs/x", R_OK|X_OK)"#),
            (21, [0x1000, 0, 0, 0, 0, 0], r#"access("/cvmfs/x", F_OK)"#),
            (
                191,
                [0x1000, 0x3000, 0x10, 64, 0, 0],
                r#"getxattr("/cvmfs/x", "user.name", 0x10, 64)"#,
            ),
            (
                263,
                [CWD, 0x1000, 0x200, 0, 0, 0],
                r#"unlinkat(AT_FDCWD, "/cvmfs/x", AT_REMOVEDIR)"#,
            ),
            (83, [0x1000, 0o755, 0, 0, 0, 0], r#"mkdir("/cvmfs/x", 0755)"#),
            (92, [0x1000, u64::from(u32::MAX), 5, 0, 0, 0], r#"chown("/cvmfs/x", -1, 5)"#),
            (59, [0x9999, 0x10, 0x20, 0, 0, 0], "execve(0x9999, 0x10, 0x20)"),
            (1000, [1, 2, 3, 4, 5, 6], "syscall_1000(0x1, 0x2, 0x3, 0x4, 0x5, 0x6)"),
            (0, [1, 0, 10, 0, 0, 0], "read(1, NULL, 10)"),
        ];
        for (nr, args, want) in cases {
            let call = Call::decode(*nr, *args);
            assert_eq!(call.display(&m).to_string(), *want);
        }
    }

    #[test]
    fn paths_carry_their_directory() {
        let c = Call::decode(264, [3, 0x1000, CWD, 0x2000, 0, 0]);
        assert_eq!(
            c.paths(),
            vec![
                (DirFd(3), PathPtr(0x1000)),
                (DirFd(AT_FDCWD), PathPtr(0x2000))
            ]
        );
        let c = Call::decode(266, [0x3000, 7, 0x1000, 0, 0, 0]);
        assert_eq!(c.paths(), vec![(DirFd(7), PathPtr(0x1000))]);
        let c = Call::decode(4, [0x1000, 0, 0, 0, 0, 0]);
        assert_eq!(c.path(), Some((DirFd(AT_FDCWD), PathPtr(0x1000))));
        assert_eq!(Call::decode(59, [0; 6]).path_arg_index(), Some(0));
        assert_eq!(Call::decode(322, [0; 6]).path_arg_index(), Some(1));
        assert_eq!(Call::decode(266, [0; 6]).path_arg_index(), Some(2));
        assert_eq!(Call::decode(0, [0; 6]).path_arg_index(), None);
        let c = Call::decode(5, [9, 0, 0, 0, 0, 0]);
        assert_eq!(c.fds(), vec![Fd(9)]);
        assert!(c.path().is_none());
    }

    #[test]
    fn int_arguments_truncate_like_the_kernel() {
        // The upper half of an int register is ignored by the kernel.
        let c = Call::decode(257, [0xdead_beef_ffff_ff9c, 0x1000, 0, 0, 0, 0]);
        assert!(matches!(c, Call::Openat { dirfd, .. } if dirfd.is_cwd()));
    }

    #[test]
    fn read_cstr_across_pages_and_limits() {
        let mut m = FakeMemory::new();
        // A string that starts 3 bytes before a page boundary and ends after it.
        m.map(0x1ffd, b"abc".to_vec())
            .map(0x2000, b"def\0".to_vec());
        assert_eq!(m.read_cstr(0x1ffd, PATH_MAX).unwrap(), b"abcdef");
        assert_eq!(m.read_cstr(0, PATH_MAX), Err(Errno::EFAULT));
        assert_eq!(m.read_cstr(0x1ffd, 4), Err(Errno::ENAMETOOLONG));
        assert_eq!(m.read_cstr(0x5000, 4), Err(Errno::EFAULT));
    }

    proptest::proptest! {
        #[test]
        fn decode_is_total(nr in 0u64..600, args in proptest::array::uniform6(proptest::num::u64::ANY)) {
            let call = Call::decode(nr, args);
            let _ = call.to_string();
            let _ = call.display(&FakeMemory::new()).to_string();
            proptest::prop_assert_eq!(call.nr(), nr);
        }
    }
}
