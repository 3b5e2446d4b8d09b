//! The table: x86_64 numbers, names, families and typed arguments of every syscall perch knows,
//! and `Call`, the typed decode of `(nr, [u64; 6])`.

use std::fmt;

use crate::args::*;
use crate::view::TraceeView;

/// What a syscall does, for policy tables and filters.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Plain fd I/O; never needs a path (read, write, close, getdents).
    Io,
    /// Opens a path (open, openat, openat2, open_by_handle_at, uselib).
    Open,
    /// Reports metadata (stat family, statfs, name_to_handle_at).
    Stat,
    /// Checks permissions (access family).
    Access,
    /// Reads a symlink.
    Readlink,
    /// Reads extended attributes.
    Xattr,
    /// Working directory and root (getcwd, chdir, fchdir, chroot).
    Cwd,
    /// Executes a program.
    Exec,
    /// Modifies the file system (mkdir, unlink, rename, chmod, setxattr, …): `EROFS` on a
    /// read-only tree.
    Modify,
    /// Watches paths (inotify, fanotify).
    Watch,
    /// Mount administration and other privileged path calls.
    Admin,
    /// Refused inside perch (io_uring, ptrace).
    Refused,
}

impl Family {
    /// Whether the family takes a path or an fd used for path resolution.
    pub fn is_filesystem(self) -> bool {
        !matches!(self, Family::Io | Family::Refused)
    }
}

macro_rules! table {
    ($( $variant:ident = $nr:literal, $name:literal, $family:ident { $($field:ident : $ty:ident),* } ;)*) => {
        /// An x86_64 syscall perch knows by name.
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[allow(missing_docs)]
        pub enum Sysno { $($variant = $nr,)* }

        impl Sysno {
            /// Every syscall in the table.
            pub const ALL: &'static [Sysno] = &[$(Sysno::$variant,)*];

            /// The x86_64 number.
            pub const fn nr(self) -> u32 {
                self as u32
            }

            /// The name, as in strace.
            pub const fn name(self) -> &'static str {
                match self { $(Sysno::$variant => $name,)* }
            }

            /// The family.
            pub const fn family(self) -> Family {
                match self { $(Sysno::$variant => Family::$family,)* }
            }

            /// Looks a number up.
            pub const fn from_nr(nr: u32) -> Option<Sysno> {
                match nr { $($nr => Some(Sysno::$variant),)* _ => None }
            }

            /// Looks a name up.
            pub fn from_name(name: &str) -> Option<Sysno> {
                match name { $($name => Some(Sysno::$variant),)* _ => None }
            }
        }

        /// A decoded syscall with typed arguments. Pointers stay pointers: strings are read through
        /// a [`TraceeView`] when needed.
        #[derive(Copy, Clone, Debug, PartialEq, Eq)]
        #[allow(missing_docs)]
        pub enum Call {
            $($variant { $($field: $ty),* },)*
            /// A syscall outside the table.
            Other { nr: u64, args: [u64; 6] },
        }

        impl Call {
            /// Decodes `(nr, args)`. Total: unknown numbers become [`Call::Other`].
            pub fn decode(nr: u64, args: [u64; 6]) -> Call {
                let Some(sysno) = u32::try_from(nr).ok().and_then(Sysno::from_nr) else {
                    return Call::Other { nr, args };
                };
                #[allow(unused_mut, unused_variables)]
                let mut it = args.into_iter();
                match sysno {
                    $(Sysno::$variant => Call::$variant {
                        $($field: <$ty as Arg>::from_raw(it.next().unwrap_or(0)),)*
                    },)*
                }
            }

            /// The syscall, or `None` for [`Call::Other`].
            pub fn sysno(&self) -> Option<Sysno> {
                match self {
                    $(Call::$variant { .. } => Some(Sysno::$variant),)*
                    Call::Other { .. } => None,
                }
            }

            /// Every path argument with the directory it is resolved against (`AT_FDCWD` for
            /// the non-`*at` calls), in argument order.
            pub fn paths(&self) -> Vec<(DirFd, PathPtr)> {
                #[allow(unused_mut)]
                let mut out = Vec::new();
                match self {
                    $(Call::$variant { $($field),* } => {
                        #[allow(unused_mut, unused_variables)]
                        let mut dir = DirFd(AT_FDCWD);
                        $(
                            let any: &dyn std::any::Any = $field;
                            if let Some(d) = any.downcast_ref::<DirFd>() {
                                dir = *d;
                            }
                            if let Some(p) = any.downcast_ref::<PathPtr>() {
                                out.push((dir, *p));
                            }
                        )*
                    })*
                    Call::Other { .. } => {}
                }
                out
            }

            /// The argument index (0..6) of the first path argument, so a tracer can rewrite
            /// its register.
            #[allow(unused_assignments, unused_mut, unused_variables)]
            pub fn path_arg_index(&self) -> Option<usize> {
                match self {
                    $(Call::$variant { $($field),* } => {
                        let mut i = 0usize;
                        $(
                            let any: &dyn std::any::Any = $field;
                            if any.is::<PathPtr>() {
                                return Some(i);
                            }
                            i += 1;
                        )*
                        None
                    })*
                    Call::Other { .. } => None,
                }
            }

            /// Every fd argument that is not a `*at` directory (fstat's fd, fchdir's fd, …).
            pub fn fds(&self) -> Vec<Fd> {
                #[allow(unused_mut)]
                let mut out = Vec::new();
                match self {
                    $(Call::$variant { $($field),* } => {
                        $(
                            let any: &dyn std::any::Any = $field;
                            if let Some(d) = any.downcast_ref::<Fd>() {
                                out.push(*d);
                            }
                        )*
                    })*
                    Call::Other { .. } => {}
                }
                out
            }

            #[allow(unused_assignments)]
            fn fmt_args(&self, f: &mut fmt::Formatter<'_>, view: Option<&dyn TraceeView>) -> fmt::Result {
                match self {
                    $(Call::$variant { $($field),* } => {
                        #[allow(unused_mut, unused_variables)]
                        let mut first = true;
                        $(
                            if !first {
                                f.write_str(", ")?;
                            }
                            first = false;
                            $field.fmt_arg(f, view)?;
                        )*
                        Ok(())
                    })*
                    Call::Other { args, .. } => {
                        for (i, a) in args.iter().enumerate() {
                            if i > 0 {
                                f.write_str(", ")?;
                            }
                            write!(f, "{a:#x}")?;
                        }
                        Ok(())
                    }
                }
            }
        }
    };
}

table! {
    Read = 0, "read", Io { fd: Fd, buf: Ptr, count: Size };
    Write = 1, "write", Io { fd: Fd, buf: Ptr, count: Size };
    Open = 2, "open", Open { path: PathPtr, flags: OpenFlags, mode: Mode };
    Close = 3, "close", Io { fd: Fd };
    Stat = 4, "stat", Stat { path: PathPtr, buf: Ptr };
    Fstat = 5, "fstat", Stat { fd: Fd, buf: Ptr };
    Lstat = 6, "lstat", Stat { path: PathPtr, buf: Ptr };
    Access = 21, "access", Access { path: PathPtr, mode: AccessMode };
    Execve = 59, "execve", Exec { path: PathPtr, argv: Ptr, envp: Ptr };
    Truncate = 76, "truncate", Modify { path: PathPtr, length: Int };
    Ftruncate = 77, "ftruncate", Io { fd: Fd, length: Int };
    Getdents = 78, "getdents", Io { fd: Fd, dirp: Ptr, count: Size };
    Getcwd = 79, "getcwd", Cwd { buf: Ptr, size: Size };
    Chdir = 80, "chdir", Cwd { path: PathPtr };
    Fchdir = 81, "fchdir", Cwd { fd: Fd };
    Rename = 82, "rename", Modify { oldpath: PathPtr, newpath: PathPtr };
    Mkdir = 83, "mkdir", Modify { path: PathPtr, mode: Mode };
    Rmdir = 84, "rmdir", Modify { path: PathPtr };
    Creat = 85, "creat", Modify { path: PathPtr, mode: Mode };
    Link = 86, "link", Modify { oldpath: PathPtr, newpath: PathPtr };
    Unlink = 87, "unlink", Modify { path: PathPtr };
    Symlink = 88, "symlink", Modify { target: StrPtr, linkpath: PathPtr };
    Readlink = 89, "readlink", Readlink { path: PathPtr, buf: Ptr, size: Size };
    Chmod = 90, "chmod", Modify { path: PathPtr, mode: Mode };
    Fchmod = 91, "fchmod", Modify { fd: Fd, mode: Mode };
    Chown = 92, "chown", Modify { path: PathPtr, owner: Id, group: Id };
    Fchown = 93, "fchown", Modify { fd: Fd, owner: Id, group: Id };
    Lchown = 94, "lchown", Modify { path: PathPtr, owner: Id, group: Id };
    Ptrace = 101, "ptrace", Refused { request: Int, pid: Int32, addr: Ptr, data: Ptr };
    Utime = 132, "utime", Modify { path: PathPtr, times: Ptr };
    Mknod = 133, "mknod", Modify { path: PathPtr, mode: Mode, dev: Dev };
    Uselib = 134, "uselib", Open { path: PathPtr };
    Statfs = 137, "statfs", Stat { path: PathPtr, buf: Ptr };
    Fstatfs = 138, "fstatfs", Stat { fd: Fd, buf: Ptr };
    PivotRoot = 155, "pivot_root", Admin { new_root: PathPtr, put_old: PathPtr };
    Chroot = 161, "chroot", Cwd { path: PathPtr };
    Acct = 163, "acct", Admin { path: PathPtr };
    Mount = 165, "mount", Admin { source: StrPtr, target: PathPtr, fstype: StrPtr, flags: Hex, data: Ptr };
    Umount2 = 166, "umount2", Admin { target: PathPtr, flags: Hex };
    Swapon = 167, "swapon", Admin { path: PathPtr, flags: Hex };
    Swapoff = 168, "swapoff", Admin { path: PathPtr };
    Quotactl = 179, "quotactl", Admin { cmd: Int32, special: PathPtr, id: Int32, addr: Ptr };
    Setxattr = 188, "setxattr", Modify { path: PathPtr, name: StrPtr, value: Ptr, size: Size, flags: XattrFlags };
    Lsetxattr = 189, "lsetxattr", Modify { path: PathPtr, name: StrPtr, value: Ptr, size: Size, flags: XattrFlags };
    Fsetxattr = 190, "fsetxattr", Modify { fd: Fd, name: StrPtr, value: Ptr, size: Size, flags: XattrFlags };
    Getxattr = 191, "getxattr", Xattr { path: PathPtr, name: StrPtr, value: Ptr, size: Size };
    Lgetxattr = 192, "lgetxattr", Xattr { path: PathPtr, name: StrPtr, value: Ptr, size: Size };
    Fgetxattr = 193, "fgetxattr", Xattr { fd: Fd, name: StrPtr, value: Ptr, size: Size };
    Listxattr = 194, "listxattr", Xattr { path: PathPtr, list: Ptr, size: Size };
    Llistxattr = 195, "llistxattr", Xattr { path: PathPtr, list: Ptr, size: Size };
    Flistxattr = 196, "flistxattr", Xattr { fd: Fd, list: Ptr, size: Size };
    Removexattr = 197, "removexattr", Modify { path: PathPtr, name: StrPtr };
    Lremovexattr = 198, "lremovexattr", Modify { path: PathPtr, name: StrPtr };
    Fremovexattr = 199, "fremovexattr", Modify { fd: Fd, name: StrPtr };
    Getdents64 = 217, "getdents64", Io { fd: Fd, dirp: Ptr, count: Size };
    Utimes = 235, "utimes", Modify { path: PathPtr, times: Ptr };
    InotifyAddWatch = 254, "inotify_add_watch", Watch { fd: Fd, path: PathPtr, mask: Hex };
    Openat = 257, "openat", Open { dirfd: DirFd, path: PathPtr, flags: OpenFlags, mode: Mode };
    Mkdirat = 258, "mkdirat", Modify { dirfd: DirFd, path: PathPtr, mode: Mode };
    Mknodat = 259, "mknodat", Modify { dirfd: DirFd, path: PathPtr, mode: Mode, dev: Dev };
    Fchownat = 260, "fchownat", Modify { dirfd: DirFd, path: PathPtr, owner: Id, group: Id, flags: AtFlags };
    Futimesat = 261, "futimesat", Modify { dirfd: DirFd, path: PathPtr, times: Ptr };
    Newfstatat = 262, "newfstatat", Stat { dirfd: DirFd, path: PathPtr, buf: Ptr, flags: AtFlags };
    Unlinkat = 263, "unlinkat", Modify { dirfd: DirFd, path: PathPtr, flags: UnlinkFlags };
    Renameat = 264, "renameat", Modify { olddirfd: DirFd, oldpath: PathPtr, newdirfd: DirFd, newpath: PathPtr };
    Linkat = 265, "linkat", Modify { olddirfd: DirFd, oldpath: PathPtr, newdirfd: DirFd, newpath: PathPtr, flags: AtFlags };
    Symlinkat = 266, "symlinkat", Modify { target: StrPtr, newdirfd: DirFd, linkpath: PathPtr };
    Readlinkat = 267, "readlinkat", Readlink { dirfd: DirFd, path: PathPtr, buf: Ptr, size: Size };
    Fchmodat = 268, "fchmodat", Modify { dirfd: DirFd, path: PathPtr, mode: Mode };
    Faccessat = 269, "faccessat", Access { dirfd: DirFd, path: PathPtr, mode: AccessMode };
    Utimensat = 280, "utimensat", Modify { dirfd: DirFd, path: PathPtr, times: Ptr, flags: AtFlags };
    FanotifyMark = 301, "fanotify_mark", Watch { fanotify_fd: Fd, flags: Hex, mask: Hex, dirfd: DirFd, path: PathPtr };
    NameToHandleAt = 303, "name_to_handle_at", Stat { dirfd: DirFd, path: PathPtr, handle: Ptr, mount_id: Ptr, flags: AtFlags };
    OpenByHandleAt = 304, "open_by_handle_at", Open { mount_fd: Fd, handle: Ptr, flags: OpenFlags };
    Renameat2 = 316, "renameat2", Modify { olddirfd: DirFd, oldpath: PathPtr, newdirfd: DirFd, newpath: PathPtr, flags: RenameFlags };
    Execveat = 322, "execveat", Exec { dirfd: DirFd, path: PathPtr, argv: Ptr, envp: Ptr, flags: AtFlags };
    Statx = 332, "statx", Stat { dirfd: DirFd, path: PathPtr, flags: AtFlags, mask: StatxMask, buf: Ptr };
    IoUringSetup = 425, "io_uring_setup", Refused { entries: Size, params: Ptr };
    IoUringEnter = 426, "io_uring_enter", Refused { fd: Fd, to_submit: Size, min_complete: Size, flags: Hex, sig: Ptr, sigsz: Size };
    IoUringRegister = 427, "io_uring_register", Refused { fd: Fd, opcode: Size, arg: Ptr, nr_args: Size };
    OpenTree = 428, "open_tree", Admin { dirfd: DirFd, path: PathPtr, flags: Hex };
    MoveMount = 429, "move_mount", Admin { from_dirfd: DirFd, from_path: PathPtr, to_dirfd: DirFd, to_path: PathPtr, flags: Hex };
    Fsopen = 430, "fsopen", Admin { fsname: StrPtr, flags: Hex };
    Fsconfig = 431, "fsconfig", Admin { fd: Fd, cmd: Int32, key: StrPtr, value: Ptr, aux: Int32 };
    Fsmount = 432, "fsmount", Admin { fd: Fd, flags: Hex, attr_flags: Hex };
    Fspick = 433, "fspick", Admin { dirfd: DirFd, path: PathPtr, flags: Hex };
    Openat2 = 437, "openat2", Open { dirfd: DirFd, path: PathPtr, how: Ptr, size: Size };
    Faccessat2 = 439, "faccessat2", Access { dirfd: DirFd, path: PathPtr, mode: AccessMode, flags: AccessFlags };
    MountSetattr = 442, "mount_setattr", Admin { dirfd: DirFd, path: PathPtr, flags: Hex, attr: Ptr, size: Size };
    QuotactlFd = 443, "quotactl_fd", Admin { fd: Fd, cmd: Int32, id: Int32, addr: Ptr };
    LandlockAddRule = 445, "landlock_add_rule", Io { ruleset_fd: Fd, rule_type: Int32, rule_attr: Ptr, flags: Hex };
    Fchmodat2 = 452, "fchmodat2", Modify { dirfd: DirFd, path: PathPtr, mode: Mode, flags: AtFlags };
    Setxattrat = 463, "setxattrat", Modify { dirfd: DirFd, path: PathPtr, at_flags: AtFlags, name: StrPtr, args: Ptr, size: Size };
    Getxattrat = 464, "getxattrat", Xattr { dirfd: DirFd, path: PathPtr, at_flags: AtFlags, name: StrPtr, args: Ptr, size: Size };
    Listxattrat = 465, "listxattrat", Xattr { dirfd: DirFd, path: PathPtr, at_flags: AtFlags, list: Ptr, size: Size };
    Removexattrat = 466, "removexattrat", Modify { dirfd: DirFd, path: PathPtr, at_flags: AtFlags, name: StrPtr };
    OpenTreeAttr = 467, "open_tree_attr", Admin { dirfd: DirFd, path: PathPtr, flags: Hex, attr: Ptr, size: Size };
    FileGetattr = 468, "file_getattr", Stat { dirfd: DirFd, path: PathPtr, attr: Ptr, size: Size, at_flags: AtFlags };
    FileSetattr = 469, "file_setattr", Modify { dirfd: DirFd, path: PathPtr, attr: Ptr, size: Size, at_flags: AtFlags };
}

impl Call {
    /// The syscall number.
    pub fn nr(&self) -> u64 {
        match (self, self.sysno()) {
            (Call::Other { nr, .. }, _) => *nr,
            (_, Some(s)) => u64::from(s.nr()),
            (_, None) => u64::MAX,
        }
    }

    /// The name (`"openat"`), or `"syscall_<nr>"` outside the table.
    pub fn name(&self) -> String {
        match self.sysno() {
            Some(s) => s.name().to_string(),
            None => format!("syscall_{}", self.nr()),
        }
    }

    /// The first path argument and its directory, if any.
    pub fn path(&self) -> Option<(DirFd, PathPtr)> {
        self.paths().into_iter().next()
    }

    /// Display like strace, reading strings through `view` (`openat(AT_FDCWD, "/x", O_RDONLY)`).
    pub fn display<'a>(&'a self, view: &'a dyn TraceeView) -> DisplayCall<'a> {
        DisplayCall {
            call: self,
            view: Some(view),
        }
    }
}

/// A [`Call`] printed like strace, see [`Call::display`].
pub struct DisplayCall<'a> {
    call: &'a Call,
    view: Option<&'a dyn TraceeView>,
}

impl fmt::Display for DisplayCall<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let view = self.view;
        f.write_str(&self.call.name())?;
        f.write_str("(")?;
        // open/openat pass a mode only when they may create, as strace prints them.
        match *self.call {
            Call::Open { path, flags, mode } => {
                path.fmt_arg(f, view)?;
                f.write_str(", ")?;
                flags.fmt_arg(f, view)?;
                if flags.creates() {
                    f.write_str(", ")?;
                    mode.fmt_arg(f, view)?;
                }
            }
            Call::Openat {
                dirfd,
                path,
                flags,
                mode,
            } => {
                dirfd.fmt_arg(f, view)?;
                f.write_str(", ")?;
                path.fmt_arg(f, view)?;
                f.write_str(", ")?;
                flags.fmt_arg(f, view)?;
                if flags.creates() {
                    f.write_str(", ")?;
                    mode.fmt_arg(f, view)?;
                }
            }
            _ => self.call.fmt_args(f, view)?,
        }
        f.write_str(")")
    }
}

/// Without a view, strings print as addresses.
impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        DisplayCall {
            call: self,
            view: None,
        }
        .fmt(f)
    }
}
