//! What the batch-system helpers ([`crate::SlurmCluster`], [`crate::Makeflow`]) share: their
//! error type, running a client command, and a child process (its own process group) that is
//! waited for with a deadline and killed on drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::Error;

/// Errors of the batch-system helpers.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// A binary is missing, a daemon did not start, a file could not be written...
    #[error(transparent)]
    Testkit(#[from] Error),
    /// A client command (`sbatch`, `scontrol`, ...) failed.
    #[error("`{command}` failed ({status}):\n{output}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its stdout and stderr.
        output: String,
    },
    /// Something did not happen within its deadline.
    #[error("{what} within {timeout:?}; logs:\n{log}")]
    Timeout {
        /// What was waited for, as a sentence start (`job 3 still queued`).
        what: String,
        /// The deadline.
        timeout: Duration,
        /// The logs of the processes involved.
        log: String,
    },
    /// A workflow or job finished unsuccessfully.
    #[error("{what} ({status}); logs:\n{log}")]
    Failed {
        /// What failed (`makeflow`, ...).
        what: String,
        /// Its exit status.
        status: String,
        /// The logs of the processes involved.
        log: String,
    },
}

/// Result of the batch-system helpers.
pub type BatchResult<T> = std::result::Result<T, BatchError>;

/// Runs `command` to completion; an error (with its output) unless it exits 0.
pub(crate) fn run(command: &mut Command) -> BatchResult<Output> {
    let line = command_line(command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            binary: PathBuf::from(command.get_program()),
            source,
        })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(BatchError::Command {
            command: line,
            status: output.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}

/// `program arg1 arg2 ...` for messages.
pub(crate) fn command_line(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A child leading its own process group, with stdout/stderr in a file; the group is killed
/// (SIGTERM, then SIGKILL) on drop unless the child was reaped.
#[derive(Debug)]
pub(crate) struct GroupChild {
    child: Child,
    reaped: Option<ExitStatus>,
}

impl GroupChild {
    /// Spawns `command` with stdin closed and its output in `output`.
    pub(crate) fn spawn(mut command: Command, output: &Path) -> BatchResult<GroupChild> {
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
                binary: PathBuf::from(command.get_program()),
                source,
            })?;
        Ok(GroupChild {
            child,
            reaped: None,
        })
    }

    /// The exit status, if the child has exited.
    pub(crate) fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.reaped.is_none() {
            self.reaped = self.child.try_wait().ok().flatten();
        }
        self.reaped
    }

    /// Waits until the child exits or `deadline` passes (then `None`).
    pub(crate) fn wait_until(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM to the group, up to 5 s grace, then SIGKILL. Nothing if already reaped.
    pub(crate) fn kill(&mut self) {
        if self.try_wait().is_some() {
            return;
        }
        let Ok(raw) = i32::try_from(self.child.id()) else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            return;
        };
        // The leader is unreaped, so the group id is still ours.
        let group = Pid::from_raw(raw);
        let _ = killpg(group, Signal::SIGTERM);
        if self
            .wait_until(Instant::now() + Duration::from_secs(5))
            .is_none()
        {
            let _ = killpg(group, Signal::SIGKILL);
            self.reaped = self.child.wait().ok();
        }
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        self.kill();
    }
}
