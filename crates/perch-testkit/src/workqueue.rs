//! Makeflow on local Work Queue workers (Debian's `coop-computing-tools`), everything on
//! 127.0.0.1.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::batch::{BatchError, BatchResult, GroupChild};
use crate::process::find_binary;
use crate::{read_lossy, Error};

/// Deadline for makeflow to parse the workflow and listen for workers.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of each log kept in an error.
const LOG_TAIL: usize = 60;
/// Debian's makeflow is linked with Open MPI and initialises it at start; without this, a
/// singleton MPI start needs `orted` (openmpi-bin) and makeflow aborts.
const MPI_SINGLETON: (&str, &str) = ("OMPI_MCA_ess_singleton_isolated", "1");
/// Where cctools would advertise or look up managers: kept on loopback (nothing here asks it,
/// since no project name is given, but a stray lookup must not leave the machine).
const CATALOG: (&str, &str) = ("CATALOG_HOST", "127.0.0.1");

/// A workflow run by [`Makeflow::run`].
#[derive(Debug)]
pub struct MakeflowRun {
    /// From the start of makeflow until it exited.
    pub wall: Duration,
    /// What makeflow printed.
    pub output: String,
}

/// `makeflow -T wq` with local `work_queue_worker`s.
#[derive(Debug, Clone)]
pub struct Makeflow {
    workers: usize,
    cores_per_worker: u32,
    timeout: Duration,
    env: Vec<(String, String)>,
}

impl Makeflow {
    /// `workers` workers of one core each; the whole run must end within `timeout`.
    pub fn new(workers: usize, timeout: Duration) -> Makeflow {
        Makeflow {
            workers,
            cores_per_worker: 1,
            timeout,
            env: Vec::new(),
        }
    }

    /// Sets `key=value` in the environment of makeflow and of the workers (so of every task).
    pub fn env(mut self, key: &str, value: &str) -> Makeflow {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Runs `makeflow -T wq -Z PORTFILE ARGS...` in `workdir` (where the workflow, its
    /// inputs and its log live), starts the workers once makeflow listens (on the port it
    /// picked and wrote to PORTFILE: no port race), and waits until makeflow exits.
    ///
    /// Ok only if makeflow exits 0 (every rule succeeded). A missing binary is an error
    /// naming the Debian package; a failure or timeout carries makeflow's and the workers'
    /// logs. Every process is killed when this returns.
    pub fn run(&self, workdir: &Path, args: &[&str]) -> BatchResult<MakeflowRun> {
        let makeflow = find_binary("makeflow", "PERCH_MAKEFLOW", "coop-computing-tools")?;
        let worker_bin = find_binary(
            "work_queue_worker",
            "PERCH_WORK_QUEUE_WORKER",
            "coop-computing-tools",
        )?;
        // Declared first, dropped last: the processes below stop before it is removed.
        let dir = crate::tempdir().map_err(|source| Error::Io {
            action: "create a temp dir in",
            path: std::env::temp_dir(),
            source,
        })?;
        let port_file = dir.path().join("port");
        let logs = || logs(dir.path());

        let started = Instant::now();
        let deadline = started + self.timeout;
        let mut command = Command::new(&makeflow);
        command
            .current_dir(workdir)
            .envs([MPI_SINGLETON, CATALOG])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(["-T", "wq", "-Z"])
            .arg(&port_file)
            .args(args);
        let mut manager = GroupChild::spawn(command, &dir.path().join("makeflow.out"))?;

        let listen_deadline = Instant::now() + LISTEN_TIMEOUT;
        let port = loop {
            if let Ok(port) = read_lossy(&port_file).trim().parse::<u16>() {
                break port;
            }
            if let Some(status) = manager.try_wait() {
                return Err(BatchError::Failed {
                    what: "makeflow exited before it listened for workers".to_string(),
                    status: status.to_string(),
                    log: logs(),
                });
            }
            if Instant::now() >= listen_deadline {
                return Err(BatchError::Timeout {
                    what: "makeflow did not listen for workers".to_string(),
                    timeout: LISTEN_TIMEOUT,
                    log: logs(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        };

        let mut workers = Vec::with_capacity(self.workers);
        for n in 0..self.workers {
            let sandbox = dir.path().join(format!("worker-{n}"));
            std::fs::create_dir(&sandbox).map_err(|source| Error::Io {
                action: "create",
                path: sandbox.clone(),
                source,
            })?;
            let mut command = Command::new(&worker_bin);
            command
                .envs([CATALOG])
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .arg("--single-shot")
                .arg("--timeout=120")
                .arg(format!("--cores={}", self.cores_per_worker))
                .arg("--workdir")
                .arg(&sandbox)
                .arg("127.0.0.1")
                .arg(port.to_string());
            workers.push(GroupChild::spawn(
                command,
                &dir.path().join(format!("worker-{n}.out")),
            )?);
        }

        let Some(status) = manager.wait_until(deadline) else {
            manager.kill();
            return Err(BatchError::Timeout {
                what: "makeflow did not finish".to_string(),
                timeout: self.timeout,
                log: logs(),
            });
        };
        let wall = started.elapsed();
        if !status.success() {
            return Err(BatchError::Failed {
                what: "makeflow failed".to_string(),
                status: status.to_string(),
                log: logs(),
            });
        }
        drop(workers);
        Ok(MakeflowRun {
            wall,
            output: read_lossy(&dir.path().join("makeflow.out")),
        })
    }
}

/// The tails of makeflow's and the workers' output.
fn logs(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".out"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .map(|name| {
            let text = read_lossy(&dir.join(name));
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n");
            format!("--- {name} (last {LOG_TAIL} lines)\n{tail}\n")
        })
        .collect()
}
