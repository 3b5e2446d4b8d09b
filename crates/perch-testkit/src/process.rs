//! Server child processes: finding the binary, spawning in a process group, readiness polling
//! and stopping (SIGTERM to the group, then SIGKILL).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::{Error, Result};

/// How long a server gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Finds `binary`: `$env_var` if set, else `PATH`, then the sbin directories.
pub(crate) fn find_binary(
    binary: &'static str,
    env_var: &'static str,
    package: &'static str,
) -> Result<PathBuf> {
    let missing = Error::MissingBinary {
        binary,
        env_var,
        package,
    };
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(missing)
        };
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let sbin = ["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from);
    path_dirs
        .into_iter()
        .chain(sbin)
        .map(|dir| dir.join(binary))
        .find(|candidate| is_executable(candidate))
        .ok_or(missing)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A running server: the child leads its own process group.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    child: Child,
    stopped: bool,
}

impl ServerProcess {
    /// Spawns `command` with stdin closed and stdout/stderr appended to `output`.
    pub(crate) fn spawn(mut command: Command, binary: &Path, output: &Path) -> Result<Self> {
        use std::os::unix::process::CommandExt;
        let io_error = |source| Error::Io {
            action: "create",
            path: output.to_path_buf(),
            source,
        };
        let out = File::create(output).map_err(io_error)?;
        let err = out.try_clone().map_err(io_error)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Spawn {
                binary: binary.to_path_buf(),
                source,
            })?;
        Ok(ServerProcess {
            child,
            stopped: false,
        })
    }

    /// The exit status, if the process has exited.
    pub(crate) fn exit_status(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("cannot wait: {e}")),
        }
    }

    /// Polls until `ready()` holds, the process exits, or `timeout` passes.
    ///
    /// `log()` is called only on failure, for the error.
    pub(crate) fn wait_ready(
        &mut self,
        server: &'static str,
        port: u16,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
        log: impl Fn() -> String,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Err(Error::Exited {
                    server,
                    status,
                    log: log(),
                });
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(Error::NotReady {
                    server,
                    port,
                    timeout,
                    log: log(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM to the process group, wait up to [`STOP_GRACE`], then SIGKILL. Idempotent.
    pub(crate) fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let Ok(raw) = i32::try_from(self.child.id()) else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            return;
        };
        let group = Pid::from_raw(raw);
        // Signal the group only while its leader is unreaped: then the id is still ours.
        if self.exit_status().is_some() {
            return;
        }
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if self.exit_status().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_names_the_package() {
        let err = find_binary(
            "perch-testkit-no-such-binary",
            "PERCH_TESTKIT_NO_SUCH_VARIABLE",
            "some-package",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("some-package"), "{text}");
        assert!(text.contains("perch-testkit-no-such-binary"), "{text}");
    }

    #[test]
    fn finds_installed_servers() {
        find_binary("nginx", "PERCH_NGINX", "nginx-light (or nginx)").unwrap();
        find_binary("squid", "PERCH_SQUID", "squid").unwrap();
    }
}
