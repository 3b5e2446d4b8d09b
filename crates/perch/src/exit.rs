//! perch's own exit codes. `perch run` otherwise exits with the program's
//! status (128+N for a signal N), so perch's codes start at 200.

use std::process::ExitCode;

/// A failure of perch itself, with the exit code a batch system can branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Failure {
    /// Command line not understood. Fix the arguments (`perch help`).
    Usage = 200,
    /// Configuration invalid (bad value, unreadable file, no server or key).
    /// The message names the file and line or the missing key.
    Config = 201,
    /// A repository could not be mounted: network, signature, whitelist,
    /// certificate or catalog problem. The message names the repository and reason.
    Mount = 202,
    /// A path does not exist in the repository.
    NotFound = 203,
    /// Reading a file or catalog failed after the mount (download, hash mismatch, cache I/O).
    Io = 204,
    /// Publishing failed (keys, source tree, stratum not writable, signature).
    Publish = 205,
    /// The kernel or the container forbids what `perch run` needs
    /// (seccomp user notification with ADDFD, Linux >= 5.14, or ptrace).
    Unsupported = 206,
    /// A bug: please report it with the message.
    Internal = 207,
    /// The cache directory cannot be created or written (every command that needs a cache).
    /// Choose a writable one with `--cache DIR`, or set `XDG_CACHE_HOME`.
    Cache = 208,
}

impl Failure {
    /// The process exit code.
    pub fn code(self) -> ExitCode {
        ExitCode::from(self as u8)
    }
}

/// An error together with the exit code it maps to.
#[derive(Debug)]
pub struct Fail {
    /// Which class.
    pub kind: Failure,
    /// Chain of causes.
    pub error: anyhow::Error,
}

/// What to do when the cache is unusable, appended to the message.
pub const CACHE_HINT: &str =
    "choose a writable cache directory with --cache DIR, or set XDG_CACHE_HOME";

impl Fail {
    /// An unusable cache: exit code 208, the message followed by [`CACHE_HINT`].
    pub fn cache(error: impl std::fmt::Display) -> Fail {
        Fail::new(Failure::Cache, anyhow::anyhow!("{error} ({CACHE_HINT})"))
    }

    /// Build.
    pub fn new(kind: Failure, error: impl Into<anyhow::Error>) -> Fail {
        Fail {
            kind,
            error: error.into(),
        }
    }
}

/// Attach a failure class to a `Result`.
pub trait Classify<T> {
    /// Mark the error with `kind`.
    fn or_fail(self, kind: Failure) -> Result<T, Fail>;
}

impl<T, E: Into<anyhow::Error>> Classify<T> for Result<T, E> {
    fn or_fail(self, kind: Failure) -> Result<T, Fail> {
        self.map_err(|e| Fail::new(kind, e))
    }
}
