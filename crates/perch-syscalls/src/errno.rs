//! `Errno`: a Linux error number, as the tracee sees it.

use std::fmt;

/// A Linux error number (positive, as in `errno`).
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct Errno(i32);

macro_rules! errnos {
    ($($name:ident = $val:literal, $msg:literal;)*) => {
        impl Errno {
            $(
                #[doc = $msg]
                pub const $name: Errno = Errno($val);
            )*

            /// The symbolic name (`"ENOENT"`), if known.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($val => Some(stringify!($name)),)*
                    _ => None,
                }
            }

            /// The C library's message for this error, if known.
            pub const fn message(self) -> Option<&'static str> {
                match self.0 {
                    $($val => Some($msg),)*
                    _ => None,
                }
            }
        }
    };
}

errnos! {
    EPERM = 1, "Operation not permitted";
    ENOENT = 2, "No such file or directory";
    ESRCH = 3, "No such process";
    EINTR = 4, "Interrupted system call";
    EIO = 5, "Input/output error";
    ENXIO = 6, "No such device or address";
    E2BIG = 7, "Argument list too long";
    ENOEXEC = 8, "Exec format error";
    EBADF = 9, "Bad file descriptor";
    ECHILD = 10, "No child processes";
    EAGAIN = 11, "Resource temporarily unavailable";
    ENOMEM = 12, "Cannot allocate memory";
    EACCES = 13, "Permission denied";
    EFAULT = 14, "Bad address";
    EBUSY = 16, "Device or resource busy";
    EEXIST = 17, "File exists";
    EXDEV = 18, "Invalid cross-device link";
    ENODEV = 19, "No such device";
    ENOTDIR = 20, "Not a directory";
    EISDIR = 21, "Is a directory";
    EINVAL = 22, "Invalid argument";
    ENFILE = 23, "Too many open files in system";
    EMFILE = 24, "Too many open files";
    ENOTTY = 25, "Inappropriate ioctl for device";
    ETXTBSY = 26, "Text file busy";
    EFBIG = 27, "File too large";
    ENOSPC = 28, "No space left on device";
    ESPIPE = 29, "Illegal seek";
    EROFS = 30, "Read-only file system";
    EMLINK = 31, "Too many links";
    EPIPE = 32, "Broken pipe";
    ERANGE = 34, "Numerical result out of range";
    EDEADLK = 35, "Resource deadlock avoided";
    ENAMETOOLONG = 36, "File name too long";
    ENOSYS = 38, "Function not implemented";
    ENOTEMPTY = 39, "Directory not empty";
    ELOOP = 40, "Too many levels of symbolic links";
    ENODATA = 61, "No data available";
    EOVERFLOW = 75, "Value too large for defined data type";
    ENOTSUP = 95, "Operation not supported";
    ESTALE = 116, "Stale file handle";
    EDQUOT = 122, "Disk quota exceeded";
}

impl Errno {
    /// `EOPNOTSUPP`: the same number as `ENOTSUP` on Linux.
    pub const EOPNOTSUPP: Errno = Errno::ENOTSUP;

    /// Wraps a raw positive error number.
    pub const fn new(raw: i32) -> Errno {
        Errno(raw)
    }

    /// The raw positive error number.
    pub const fn raw(self) -> i32 {
        self.0
    }

    /// The value a syscall returns for this error (`-errno`).
    pub fn as_return(self) -> i64 {
        -i64::from(self.0)
    }

    /// From an `io::Error`; errors without an OS code become `EIO`.
    pub fn from_io(e: &std::io::Error) -> Errno {
        e.raw_os_error().map_or(Errno::EIO, Errno)
    }
}

impl From<Errno> for std::io::Error {
    fn from(e: Errno) -> Self {
        std::io::Error::from_raw_os_error(e.0)
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "Errno({})", self.0),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.name(), self.message()) {
            (Some(n), Some(m)) => write!(f, "{n} ({m})"),
            _ => write!(f, "errno {}", self.0),
        }
    }
}

impl std::error::Error for Errno {}
