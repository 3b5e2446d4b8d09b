//! [`Answer`]: what a backend does with one intercepted call, as decided by the syscall table.

use std::fmt;
use std::os::fd::OwnedFd;

use crate::Errno;

/// The answer to one call on behalf of the program.
#[derive(Debug)]
pub enum Answer {
    /// Not perch's business: the kernel runs the call as the program made it.
    Continue,
    /// Fail with this errno.
    Err(Errno),
    /// Return this value.
    Ret(i64),
    /// Write `data` at `addr` in the program's memory, then return `ret`.
    Write {
        /// Where (the program's buffer argument).
        addr: u64,
        /// The bytes (a `struct stat`, a path, an xattr value...).
        data: Vec<u8>,
        /// The call's result.
        ret: i64,
    },
    /// Install `fd` in the program as the call's result.
    Fd {
        /// perch's fd of the object (the program gets its own copy).
        fd: OwnedFd,
        /// The program asked for `O_CLOEXEC`.
        cloexec: bool,
    },
}

impl Answer {
    /// Writes `data` and returns 0 (the stat family).
    pub fn write(addr: u64, data: &[u8]) -> Answer {
        Answer::Write {
            addr,
            data: data.to_vec(),
            ret: 0,
        }
    }

    /// `Ok(())` → returns 0, an errno → fails with it.
    pub fn unit(r: Result<(), Errno>) -> Answer {
        match r {
            Ok(()) => Answer::Ret(0),
            Err(e) => Answer::Err(e),
        }
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Continue => f.write_str("CONTINUE"),
            Answer::Err(e) => write!(f, "-1 {e:?}"),
            Answer::Ret(v) | Answer::Write { ret: v, .. } => write!(f, "{v}"),
            Answer::Fd { .. } => f.write_str("fd (injected)"),
        }
    }
}

/// `struct open_how` of `openat2` (the first 24 bytes; larger structs are zero-extended by
/// the kernel's `copy_struct_from_user`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenHow {
    /// `O_*` flags (64 bits wide; bits above 32 are `EINVAL`).
    pub flags: u64,
    /// Creation mode.
    pub mode: u64,
    /// `RESOLVE_*` flags.
    pub resolve: u64,
}

impl OpenHow {
    /// Size of the version-0 struct.
    pub const SIZE: usize = 24;

    /// Decodes the first [`OpenHow::SIZE`] bytes, `None` if fewer.
    pub fn decode(b: &[u8]) -> Option<OpenHow> {
        let word = |i: usize| -> Option<u64> {
            Some(u64::from_ne_bytes(
                b.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        Some(OpenHow {
            flags: word(0)?,
            mode: word(1)?,
            resolve: word(2)?,
        })
    }
}

/// `openat2` `RESOLVE_*` flags (same bit values as the kernel's `struct open_how.resolve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResolveFlags(pub u64);

impl ResolveFlags {
    /// `RESOLVE_NO_XDEV`
    pub const NO_XDEV: ResolveFlags = ResolveFlags(0x01);
    /// `RESOLVE_NO_MAGICLINKS`
    pub const NO_MAGICLINKS: ResolveFlags = ResolveFlags(0x02);
    /// `RESOLVE_NO_SYMLINKS`
    pub const NO_SYMLINKS: ResolveFlags = ResolveFlags(0x04);
    /// `RESOLVE_BENEATH`
    pub const BENEATH: ResolveFlags = ResolveFlags(0x08);
    /// `RESOLVE_IN_ROOT`
    pub const IN_ROOT: ResolveFlags = ResolveFlags(0x10);
    /// `RESOLVE_CACHED`
    pub const CACHED: ResolveFlags = ResolveFlags(0x20);

    /// True if every bit of `other` is set.
    pub fn contains(self, other: ResolveFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for ResolveFlags {
    type Output = ResolveFlags;
    fn bitor(self, rhs: ResolveFlags) -> ResolveFlags {
        ResolveFlags(self.0 | rhs.0)
    }
}
