//! Typed syscall arguments: each converts from a raw register value the way the kernel does and
//! prints itself like strace.

use std::fmt;

use crate::view::TraceeView;

/// Longest path perch reads from a tracee (the kernel's `PATH_MAX`, including the NUL).
pub const PATH_MAX: usize = 4096;

/// The low 32 bits of a register, as the kernel reads an `int`/`unsigned int` argument.
pub fn low_u32(v: u64) -> u32 {
    u32::try_from(v & 0xffff_ffff).unwrap_or(u32::MAX)
}

/// The low 32 bits of a register as a signed `int` (two's complement, like the kernel).
pub fn low_i32(v: u64) -> i32 {
    i32::from_ne_bytes(low_u32(v).to_ne_bytes())
}

/// A register as a signed 64-bit value (`long`, `off_t`).
pub fn as_i64(v: u64) -> i64 {
    i64::from_ne_bytes(v.to_ne_bytes())
}

/// Converts a raw register value into a typed argument and prints it.
pub trait Arg: Sized + Copy + fmt::Debug {
    /// Converts like the kernel converts the C type of this argument.
    fn from_raw(raw: u64) -> Self;
    /// Prints like strace; strings are read through `view` when there is one.
    fn fmt_arg(&self, f: &mut fmt::Formatter<'_>, view: Option<&dyn TraceeView>) -> fmt::Result;
}

/// `AT_FDCWD`.
pub const AT_FDCWD: i32 = -100;

macro_rules! newtype {
    ($(#[$m:meta])* $name:ident($inner:ty)) => {
        $(#[$m])*
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
        pub struct $name(pub $inner);
    };
}

newtype!(
    /// A file descriptor argument (`int fd`).
    Fd(i32)
);
newtype!(
    /// A directory fd for `*at` resolution (`AT_FDCWD` or an fd).
    DirFd(i32)
);
newtype!(
    /// A pointer to a NUL-terminated path in tracee memory.
    PathPtr(u64)
);
newtype!(
    /// A pointer to a NUL-terminated string that is not resolved as a path (xattr name, symlink target).
    StrPtr(u64)
);
newtype!(
    /// Any other pointer (buffers, structs, arrays).
    Ptr(u64)
);
newtype!(
    /// A size or count (`size_t`).
    Size(u64)
);
newtype!(
    /// A signed integer (`long`, `off_t`).
    Int(i64)
);
newtype!(
    /// A signed `int` argument.
    Int32(i32)
);
newtype!(
    /// `open(2)` flags.
    OpenFlags(u32)
);
newtype!(
    /// A file mode (`mode_t`), printed in octal.
    Mode(u32)
);
newtype!(
    /// `AT_*` flags of the stat/link/chown/utimensat family.
    AtFlags(u32)
);
newtype!(
    /// `unlinkat` flags (`AT_REMOVEDIR`).
    UnlinkFlags(u32)
);
newtype!(
    /// `faccessat2` flags (`AT_EACCESS`, `AT_SYMLINK_NOFOLLOW`, `AT_EMPTY_PATH`).
    AccessFlags(u32)
);
newtype!(
    /// `access(2)` mode (`F_OK` or `R_OK|W_OK|X_OK`).
    AccessMode(u32)
);
newtype!(
    /// `renameat2` flags.
    RenameFlags(u32)
);
newtype!(
    /// `setxattr` flags.
    XattrFlags(u32)
);
newtype!(
    /// A `statx` mask.
    StatxMask(u32)
);
newtype!(
    /// A user or group id (`-1` means unchanged).
    Id(u32)
);
newtype!(
    /// A device number.
    Dev(u64)
);
newtype!(
    /// A flag word printed in hex (masks whose names perch does not need).
    Hex(u64)
);

impl Arg for Fd {
    fn from_raw(raw: u64) -> Self {
        Fd(low_i32(raw))
    }
    fn fmt_arg(&self, f: &mut fmt::Formatter<'_>, _: Option<&dyn TraceeView>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Arg for DirFd {
    fn from_raw(raw: u64) -> Self {
        DirFd(low_i32(raw))
    }
    fn fmt_arg(&self, f: &mut fmt::Formatter<'_>, _: Option<&dyn TraceeView>) -> fmt::Result {
        if self.0 == AT_FDCWD {
            f.write_str("AT_FDCWD")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl DirFd {
    /// Whether this is `AT_FDCWD`.
    pub fn is_cwd(self) -> bool {
        self.0 == AT_FDCWD
    }
}

/// Writes bytes as a C string literal the way strace does.
pub fn fmt_c_string(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    f.write_str("\"")?;
    for &b in bytes {
        match b {
            b'"' => f.write_str("\\\"")?,
            b'\\' => f.write_str("\\\\")?,
            b'\n' => f.write_str("\\n")?,
            b'\t' => f.write_str("\\t")?,
            0x20..=0x7e => write!(f, "{}", char::from(b))?,
            _ => write!(f, "\\x{b:02x}")?,
        }
    }
    f.write_str("\"")
}

fn fmt_string_at(
    f: &mut fmt::Formatter<'_>,
    addr: u64,
    view: Option<&dyn TraceeView>,
) -> fmt::Result {
    if addr == 0 {
        return f.write_str("NULL");
    }
    match view.map(|v| v.read_cstr(addr, PATH_MAX)) {
        Some(Ok(bytes)) => fmt_c_string(f, &bytes),
        _ => write!(f, "{addr:#x}"),
    }
}

impl Arg for PathPtr {
    fn from_raw(raw: u64) -> Self {
        PathPtr(raw)
    }
    fn fmt_arg(&self, f: &mut fmt::Formatter<'_>, view: Option<&dyn TraceeView>) -> fmt::Result {
        fmt_string_at(f, self.0, view)
    }
}

impl Arg for StrPtr {
    fn from_raw(raw: u64) -> Self {
        StrPtr(raw)
    }
    fn fmt_arg(&self, f: &mut fmt::Formatter<'_>, view: Option<&dyn TraceeView>) -> fmt::Result {
        fmt_string_at(f, self.0, view)
    }
}

impl Arg for Ptr {
    fn from_raw(raw: u64) -> Self {
        Ptr(raw)
    }
    fn fmt_arg(&self, f: &mut fmt::Formatter<'_>, _: Option<&dyn TraceeView>) -> fmt::Result {
        if self.0 == 0 {
            f.write_str("NULL")
        } else {
            write!(f, "{:#x}", self.0)
        }
    }
}

impl Arg for Size {
    fn from_raw(raw: u64) -> Self {
        Size(raw)
    }
    fn fmt_arg(&self, f: &mut fmt::Formatter<'_>, _: Option<&dyn TraceeView>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Arg for Int {
    fn from_raw(raw: u64) -> Self {
        Int(as_i64(raw))
    }
    fn fmt_arg(&self, f: &mut fmt::Formatter<'_>, _: Option<&dyn TraceeView>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Arg for Int32 {
    fn from_raw(raw: u64) -> Self {
        Int32(low_i32(raw))
    }
    fn fmt_arg(&self, f: &mut fmt::Formatter<'_>, _: Option<&dyn TraceeView>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Arg for Dev {
    fn from_raw(raw: u64) -> Self {
        Dev(raw)
    }
    fn fmt_arg(&self, f: &mut fmt::Formatter<'_>, _: Option<&dyn TraceeView>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl Arg for Hex {
    fn from_raw(raw: u64) -> Self {
        Hex(raw)
    }
    fn fmt_arg(&self, f: &mut fmt::Formatter<'_>, _: Option<&dyn TraceeView>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl Arg for Id {
    fn from_raw(raw: u64) -> Self {
        Id(low_u32(raw))
    }
    fn fmt_arg(&self, f: &mut fmt::Formatter<'_>, _: Option<&dyn TraceeView>) -> fmt::Result {
        if self.0 == u32::MAX {
            f.write_str("-1")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl Arg for Mode {
    fn from_raw(raw: u64) -> Self {
        Mode(low_u32(raw))
    }
    fn fmt_arg(&self, f: &mut fmt::Formatter<'_>, _: Option<&dyn TraceeView>) -> fmt::Result {
        write!(f, "0{:03o}", self.0)
    }
}

/// Prints `bits` as `A|B|0x..` using `names` (each name's bits must all be set); `zero` when 0.
fn fmt_flags(
    f: &mut fmt::Formatter<'_>,
    bits: u32,
    names: &[(u32, &str)],
    zero: &str,
) -> fmt::Result {
    if bits == 0 {
        return f.write_str(zero);
    }
    let mut rest = bits;
    let mut first = true;
    for &(bit, name) in names {
        if bit != 0 && rest & bit == bit {
            if !first {
                f.write_str("|")?;
            }
            f.write_str(name)?;
            first = false;
            rest &= !bit;
        }
    }
    if rest != 0 {
        if !first {
            f.write_str("|")?;
        }
        write!(f, "{rest:#x}")?;
    }
    Ok(())
}

/// `open(2)` flag bits.
#[allow(missing_docs)]
pub mod o {
    pub const O_ACCMODE: u32 = 0o3;
    pub const O_RDONLY: u32 = 0;
    pub const O_WRONLY: u32 = 0o1;
    pub const O_RDWR: u32 = 0o2;
    pub const O_CREAT: u32 = 0o100;
    pub const O_EXCL: u32 = 0o200;
    pub const O_NOCTTY: u32 = 0o400;
    pub const O_TRUNC: u32 = 0o1000;
    pub const O_APPEND: u32 = 0o2000;
    pub const O_NONBLOCK: u32 = 0o4000;
    pub const O_DSYNC: u32 = 0o10000;
    pub const O_ASYNC: u32 = 0o20000;
    pub const O_DIRECT: u32 = 0o40000;
    pub const O_LARGEFILE: u32 = 0o100000;
    pub const O_DIRECTORY: u32 = 0o200000;
    pub const O_NOFOLLOW: u32 = 0o400000;
    pub const O_NOATIME: u32 = 0o1000000;
    pub const O_CLOEXEC: u32 = 0o2000000;
    pub const O_SYNC: u32 = 0o4010000;
    pub const O_PATH: u32 = 0o10000000;
    pub const O_TMPFILE: u32 = 0o20200000;
}

const OPEN_FLAG_NAMES: &[(u32, &str)] = &[
    (o::O_TMPFILE, "O_TMPFILE"),
    (o::O_SYNC, "O_SYNC"),
    (o::O_CREAT, "O_CREAT"),
    (o::O_EXCL, "O_EXCL"),
    (o::O_NOCTTY, "O_NOCTTY"),
    (o::O_TRUNC, "O_TRUNC"),
    (o::O_APPEND, "O_APPEND"),
    (o::O_NONBLOCK, "O_NONBLOCK"),
    (o::O_DSYNC, "O_DSYNC"),
    (o::O_ASYNC, "O_ASYNC"),
    (o::O_DIRECT, "O_DIRECT"),
    (o::O_LARGEFILE, "O_LARGEFILE"),
    (o::O_DIRECTORY, "O_DIRECTORY"),
    (o::O_NOFOLLOW, "O_NOFOLLOW"),
    (o::O_NOATIME, "O_NOATIME"),
    (o::O_CLOEXEC, "O_CLOEXEC"),
    (o::O_PATH, "O_PATH"),
];

impl OpenFlags {
    /// Whether the call may create a file (`O_CREAT` or `O_TMPFILE`), so a mode is passed.
    pub fn creates(self) -> bool {
        self.0 & o::O_CREAT != 0 || self.0 & o::O_TMPFILE == o::O_TMPFILE
    }
    /// Whether the call may modify the file system: write access, create, truncate or `O_TMPFILE`.
    pub fn writes(self) -> bool {
        self.0 & o::O_ACCMODE != o::O_RDONLY || self.creates() || self.0 & o::O_TRUNC != 0
    }
    /// Whether `O_CLOEXEC` is set.
    pub fn cloexec(self) -> bool {
        self.0 & o::O_CLOEXEC != 0
    }
}

impl Arg for OpenFlags {
    fn from_raw(raw: u64) -> Self {
        OpenFlags(low_u32(raw))
    }
    fn fmt_arg(&self, f: &mut fmt::Formatter<'_>, _: Option<&dyn TraceeView>) -> fmt::Result {
        match self.0 & o::O_ACCMODE {
            o::O_RDONLY => f.write_str("O_RDONLY")?,
            o::O_WRONLY => f.write_str("O_WRONLY")?,
            o::O_RDWR => f.write_str("O_RDWR")?,
            other => write!(f, "{other:#x}")?,
        }
        let rest = self.0 & !o::O_ACCMODE;
        if rest != 0 {
            f.write_str("|")?;
            fmt_flags(f, rest, OPEN_FLAG_NAMES, "0")?;
        }
        Ok(())
    }
}

/// `AT_*` flag bits.
#[allow(missing_docs)]
pub mod at {
    pub const AT_SYMLINK_NOFOLLOW: u32 = 0x100;
    pub const AT_REMOVEDIR: u32 = 0x200;
    pub const AT_EACCESS: u32 = 0x200;
    pub const AT_SYMLINK_FOLLOW: u32 = 0x400;
    pub const AT_NO_AUTOMOUNT: u32 = 0x800;
    pub const AT_EMPTY_PATH: u32 = 0x1000;
    pub const AT_STATX_FORCE_SYNC: u32 = 0x2000;
    pub const AT_STATX_DONT_SYNC: u32 = 0x4000;
    pub const AT_RECURSIVE: u32 = 0x8000;
}

const AT_FLAG_NAMES: &[(u32, &str)] = &[
    (at::AT_SYMLINK_NOFOLLOW, "AT_SYMLINK_NOFOLLOW"),
    (at::AT_SYMLINK_FOLLOW, "AT_SYMLINK_FOLLOW"),
    (at::AT_NO_AUTOMOUNT, "AT_NO_AUTOMOUNT"),
    (at::AT_EMPTY_PATH, "AT_EMPTY_PATH"),
    (at::AT_STATX_FORCE_SYNC, "AT_STATX_FORCE_SYNC"),
    (at::AT_STATX_DONT_SYNC, "AT_STATX_DONT_SYNC"),
    (at::AT_RECURSIVE, "AT_RECURSIVE"),
];

impl AtFlags {
    /// Whether `AT_SYMLINK_NOFOLLOW` is set.
    pub fn nofollow(self) -> bool {
        self.0 & at::AT_SYMLINK_NOFOLLOW != 0
    }
    /// Whether `AT_EMPTY_PATH` is set.
    pub fn empty_path(self) -> bool {
        self.0 & at::AT_EMPTY_PATH != 0
    }
}

impl Arg for AtFlags {
    fn from_raw(raw: u64) -> Self {
        AtFlags(low_u32(raw))
    }
    fn fmt_arg(&self, f: &mut fmt::Formatter<'_>, _: Option<&dyn TraceeView>) -> fmt::Result {
        fmt_flags(f, self.0, AT_FLAG_NAMES, "0")
    }
}

impl Arg for UnlinkFlags {
    fn from_raw(raw: u64) -> Self {
        UnlinkFlags(low_u32(raw))
    }
    fn fmt_arg(&self, f: &mut fmt::Formatter<'_>, _: Option<&dyn TraceeView>) -> fmt::Result {
        fmt_flags(f, self.0, &[(at::AT_REMOVEDIR, "AT_REMOVEDIR")], "0")
    }
}

impl Arg for AccessFlags {
    fn from_raw(raw: u64) -> Self {
        AccessFlags(low_u32(raw))
    }
    fn fmt_arg(&self, f: &mut fmt::Formatter<'_>, _: Option<&dyn TraceeView>) -> fmt::Result {
        fmt_flags(
            f,
            self.0,
            &[
                (at::AT_EACCESS, "AT_EACCESS"),
                (at::AT_SYMLINK_NOFOLLOW, "AT_SYMLINK_NOFOLLOW"),
                (at::AT_EMPTY_PATH, "AT_EMPTY_PATH"),
            ],
            "0",
        )
    }
}

impl Arg for AccessMode {
    fn from_raw(raw: u64) -> Self {
        AccessMode(low_u32(raw))
    }
    fn fmt_arg(&self, f: &mut fmt::Formatter<'_>, _: Option<&dyn TraceeView>) -> fmt::Result {
        fmt_flags(f, self.0, &[(4, "R_OK"), (2, "W_OK"), (1, "X_OK")], "F_OK")
    }
}

impl AccessMode {
    /// Whether write access is asked (`W_OK`).
    pub fn wants_write(self) -> bool {
        self.0 & 2 != 0
    }
}

impl Arg for RenameFlags {
    fn from_raw(raw: u64) -> Self {
        RenameFlags(low_u32(raw))
    }
    fn fmt_arg(&self, f: &mut fmt::Formatter<'_>, _: Option<&dyn TraceeView>) -> fmt::Result {
        fmt_flags(
            f,
            self.0,
            &[
                (1, "RENAME_NOREPLACE"),
                (2, "RENAME_EXCHANGE"),
                (4, "RENAME_WHITEOUT"),
            ],
            "0",
        )
    }
}

impl Arg for XattrFlags {
    fn from_raw(raw: u64) -> Self {
        XattrFlags(low_u32(raw))
    }
    fn fmt_arg(&self, f: &mut fmt::Formatter<'_>, _: Option<&dyn TraceeView>) -> fmt::Result {
        fmt_flags(f, self.0, &[(1, "XATTR_CREATE"), (2, "XATTR_REPLACE")], "0")
    }
}

impl Arg for StatxMask {
    fn from_raw(raw: u64) -> Self {
        StatxMask(low_u32(raw))
    }
    fn fmt_arg(&self, f: &mut fmt::Formatter<'_>, _: Option<&dyn TraceeView>) -> fmt::Result {
        fmt_flags(
            f,
            self.0,
            &[
                (0x7ff, "STATX_BASIC_STATS"),
                (0x1, "STATX_TYPE"),
                (0x2, "STATX_MODE"),
                (0x4, "STATX_NLINK"),
                (0x8, "STATX_UID"),
                (0x10, "STATX_GID"),
                (0x20, "STATX_ATIME"),
                (0x40, "STATX_MTIME"),
                (0x80, "STATX_CTIME"),
                (0x100, "STATX_INO"),
                (0x200, "STATX_SIZE"),
                (0x400, "STATX_BLOCKS"),
                (0x800, "STATX_BTIME"),
                (0x1000, "STATX_MNT_ID"),
            ],
            "0",
        )
    }
}
