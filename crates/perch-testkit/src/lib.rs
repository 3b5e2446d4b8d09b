//! Test helpers for perch (dev-dependency only, used from `tests/`).
//!
//! Owns: temp dirs, free loopback ports, real `nginx` and `squid` servers started on demand,
//! the location of the shared fixtures and a minimal HTTP/1.1 client. Knows nothing about
//! CVMFS. Servers run as child processes in their own process group with every file (config,
//! logs, pid file, temp paths) in a fresh temp dir; they are polled until they answer (with a
//! deadline, never a sleep) and killed on drop. A missing binary is an error naming the Debian
//! package, never a skipped test. Nothing is printed: server output goes to files.
//!
//! ```no_run
//! use perch_testkit::{http_get, Nginx, Squid};
//!
//! let root = perch_testkit::tempdir().unwrap();
//! std::fs::write(root.path().join("hello"), "hi").unwrap();
//! let nginx = Nginx::start(root.path()).unwrap();
//! assert_eq!(http_get(nginx.port(), "/hello").unwrap().body, b"hi");
//! let squid = Squid::start().unwrap();
//! let via_proxy = http_get(squid.port(), &format!("{}/hello", nginx.url())).unwrap();
//! assert_eq!(via_proxy.status, 200);
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod batch;
mod fault;
mod http;
mod nginx;
mod process;
mod slurm;
mod squid;
mod strace;
mod workqueue;

use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use batch::{BatchError, BatchResult};
pub use fault::{Fault, FaultServer};
pub use http::{http_get, http_request, HttpResponse};
pub use nginx::{Nginx, NginxLogEntry};
pub use slurm::{SlurmCluster, SlurmJob};
pub use squid::{CacheOutcome, Squid, SquidLogEntry};
pub use strace::file_calls_of_test;
pub use tempfile;
pub use tempfile::{tempdir, TempDir};
pub use workqueue::{Makeflow, MakeflowRun};

/// Errors of the test helpers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server binary is not installed.
    #[error("{binary} not found in PATH or /usr/sbin (set {env_var} or install the Debian package {package})")]
    MissingBinary {
        /// Binary name.
        binary: &'static str,
        /// Environment variable overriding the binary's path.
        env_var: &'static str,
        /// Debian package(s) providing it.
        package: &'static str,
    },
    /// A file or directory operation failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was attempted (`write`, `create`, ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The server process could not be started.
    #[error("cannot start {}", binary.display())]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The server exited before it answered.
    #[error("{server} exited ({status}) before it was ready; its log:\n{log}")]
    Exited {
        /// `nginx` or `squid`.
        server: &'static str,
        /// Its exit status.
        status: String,
        /// Its error log and stderr.
        log: String,
    },
    /// The server did not answer in time.
    #[error("{server} did not answer on 127.0.0.1:{port} within {timeout:?}; its log:\n{log}")]
    NotReady {
        /// `nginx` or `squid`.
        server: &'static str,
        /// The port it should listen on.
        port: u16,
        /// The deadline.
        timeout: Duration,
        /// Its error log and stderr.
        log: String,
    },
    /// No unprivileged user to run squid as (squid refuses to run as root).
    #[error("no user {name:?} to run squid as (squid refuses to run as root)")]
    NoUser {
        /// The user name looked up.
        name: &'static str,
    },
}

/// Result of the test helpers.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A TCP port that was free on 127.0.0.1 a moment ago (bind `:0`, read it, close).
///
/// Another process may take it before it is used; the servers here retry with a new port
/// when their bind fails.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("cannot bind an ephemeral port on 127.0.0.1")
}

/// The workspace root (the directory holding the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// The shared fixture repositories: `$PERCH_FIXTURES` if set, else the first `shared/fixtures`
/// found beside the workspace or one of its ancestors (normally `<workspace>/../shared/fixtures`).
pub fn fixtures_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PERCH_FIXTURES") {
        return PathBuf::from(dir);
    }
    let root = workspace_root();
    root.ancestors()
        .map(|dir| dir.join("shared").join("fixtures"))
        .find(|candidate| candidate.is_dir())
        .unwrap_or_else(|| root.join("..").join("shared").join("fixtures"))
}

/// Polls `condition` every 10 ms until it holds (true) or `timeout` passes (false).
///
/// For conditions that become true soon, e.g. a log line written after a response was sent.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Writes `contents` to `path`, naming the path on failure.
pub(crate) fn write_file(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(|source| Error::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

/// The text of `path`, or an empty string.
pub(crate) fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_bindable() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }

    #[test]
    fn fixtures_dir_exists() {
        let dir = fixtures_dir();
        assert!(dir.is_dir(), "{}", dir.display());
    }

    #[test]
    fn wait_until_deadline() {
        assert!(wait_until(Duration::from_millis(50), || true));
        assert!(!wait_until(Duration::from_millis(30), || false));
    }
}
