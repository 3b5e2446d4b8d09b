//! A real single-node Slurm cluster on loopback: `munged`, `slurmctld` and `slurmd` from
//! Debian's `munge`, `slurmctld` and `slurmd` packages, with every file in a temp dir.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::batch::{run, BatchError, BatchResult};
use crate::process::{find_binary, ServerProcess};
use crate::{free_port, read_lossy, write_file, Error, TempDir};

/// Deadline for munged to create its socket.
const MUNGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for the node to be idle in `sinfo` after the daemons start.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts with new ports when a daemon could not bind.
const BIND_ATTEMPTS: usize = 3;

/// A single-node Slurm cluster (`munged`, `slurmctld`, `slurmd`) running on `127.0.0.1`.
///
/// The daemons run in the foreground as children of the test, with the munge key, socket,
/// `slurm.conf`, state, spool, pid and log files in a temp dir; clients made by
/// [`SlurmCluster::command`] find the cluster through `SLURM_CONF` (and the munge socket
/// through `AuthInfo` in `slurm.conf`). Jobs run as the user of the test; slurmd needs root
/// to start them for real (CI runs as root). Queued jobs are cancelled and the daemons
/// stopped on drop.
#[derive(Debug)]
pub struct SlurmCluster {
    // Field order: slurmd, then slurmctld, then munged stop; the directory goes last.
    slurmd: ServerProcess,
    slurmctld: ServerProcess,
    munged: ServerProcess,
    conf: PathBuf,
    node: String,
    dir: TempDir,
}

/// One job (or one array task) as `scontrol show job` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmJob {
    /// `JobId`.
    pub job_id: u32,
    /// `ArrayTaskId` of an array task.
    pub array_task: Option<u32>,
    /// `JobState`: `COMPLETED`, `FAILED`, `PENDING`...
    pub state: String,
    /// `ExitCode`: `status:signal`, `0:0` on success.
    pub exit_code: String,
}

impl SlurmCluster {
    /// Starts munged, slurmctld and slurmd for one node offering `cpus` CPUs (any number:
    /// `SlurmdParameters=config_overrides` lets it exceed the hardware), and waits until
    /// `sinfo` shows the node idle.
    ///
    /// Fails if a binary is missing (naming the Debian package), a daemon exits, or the node
    /// is not idle in time; the error carries the daemons' logs.
    pub fn start(cpus: u32) -> BatchResult<SlurmCluster> {
        let mut attempt = 1;
        loop {
            match Self::try_start(cpus) {
                Err(BatchError::Testkit(Error::Exited { log, .. }))
                | Err(BatchError::Timeout { log, .. })
                    if attempt < BIND_ATTEMPTS && log.contains("Address already in use") =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn try_start(cpus: u32) -> BatchResult<SlurmCluster> {
        let munged_bin = find_binary("munged", "PERCH_MUNGED", "munge")?;
        let slurmctld_bin = find_binary("slurmctld", "PERCH_SLURMCTLD", "slurmctld")?;
        let slurmd_bin = find_binary("slurmd", "PERCH_SLURMD", "slurmd")?;
        find_binary("sinfo", "PERCH_SINFO", "slurm-client")?;

        let dir = crate::tempdir().map_err(|source| Error::Io {
            action: "create a temp dir in",
            path: std::env::temp_dir(),
            source,
        })?;
        let root = dir.path().to_path_buf();
        // munged insists that every directory above its socket is searchable by all.
        set_mode(&root, 0o755)?;
        for sub in ["state", "spool"] {
            let path = root.join(sub);
            std::fs::create_dir(&path).map_err(|source| Error::Io {
                action: "create",
                path: path.clone(),
                source,
            })?;
        }

        let key = root.join("munge.key");
        write_munge_key(&key)?;
        let socket = root.join("munge.socket");
        let mut munged_cmd = Command::new(&munged_bin);
        munged_cmd
            .arg("--foreground")
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--key-file={}", key.display()))
            .arg(format!("--pid-file={}", root.join("munged.pid").display()))
            .arg(format!("--log-file={}", root.join("munged.log").display()))
            .arg(format!(
                "--seed-file={}",
                root.join("munged.seed").display()
            ));
        let mut munged = ServerProcess::spawn(munged_cmd, &munged_bin, &root.join("munged.out"))?;
        munged.wait_ready(
            "munged",
            0,
            MUNGE_TIMEOUT,
            || socket.exists(),
            || daemon_logs(&root),
        )?;

        let node = short_hostname();
        let conf = root.join("slurm.conf");
        let ctld_port = free_port();
        let slurmd_port = free_port();
        write_file(
            &conf,
            &config(&root, &node, cpus, ctld_port, slurmd_port, &socket),
        )?;

        let mut ctld_cmd = Command::new(&slurmctld_bin);
        ctld_cmd.arg("-D").arg("-f").arg(&conf);
        let slurmctld =
            ServerProcess::spawn(ctld_cmd, &slurmctld_bin, &root.join("slurmctld.out"))?;
        let mut slurmd_cmd = Command::new(&slurmd_bin);
        slurmd_cmd
            .arg("-D")
            .arg("-f")
            .arg(&conf)
            .arg("-N")
            .arg(&node);
        let slurmd = ServerProcess::spawn(slurmd_cmd, &slurmd_bin, &root.join("slurmd.out"))?;

        let mut cluster = SlurmCluster {
            slurmd,
            slurmctld,
            munged,
            conf,
            node,
            dir,
        };
        cluster.wait_idle(ctld_port)?;
        Ok(cluster)
    }

    /// Polls `sinfo` until the node is `idle`, checking that the daemons still run.
    fn wait_idle(&mut self, port: u16) -> BatchResult<()> {
        let deadline = Instant::now() + IDLE_TIMEOUT;
        let mut last = String::new();
        loop {
            for (name, process) in [
                ("slurmctld", &mut self.slurmctld),
                ("slurmd", &mut self.slurmd),
                ("munged", &mut self.munged),
            ] {
                if let Some(status) = process.exit_status() {
                    return Err(Error::Exited {
                        server: name,
                        status,
                        log: daemon_logs(self.dir.path()),
                    }
                    .into());
                }
            }
            let output = self
                .command("sinfo")
                .args(["--noheader", "--Node", "--format=%t"])
                .output();
            if let Ok(output) = output {
                last = format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
                if output.status.success() && last.trim() == "idle" {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(BatchError::Timeout {
                    what: format!(
                        "node {} not idle (slurmctld on 127.0.0.1:{port}; last sinfo: {:?})",
                        self.node,
                        last.trim()
                    ),
                    timeout: IDLE_TIMEOUT,
                    log: daemon_logs(self.dir.path()),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A Slurm client command (`sbatch`, `squeue`, `scontrol`...) pointed at this cluster.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("SLURM_CONF", &self.conf);
        command
    }

    /// The `slurm.conf` of the cluster (what `SLURM_CONF` names).
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// The node's name (the short host name).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The temp dir holding configuration, state and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemons' logs so far.
    pub fn logs(&self) -> String {
        daemon_logs(self.dir.path())
    }

    /// Submits `script` with `sbatch --parsable [args]` from `workdir` (the job's submit
    /// directory, where relative output paths go) with `env` added to the environment the
    /// job inherits; returns the job id.
    pub fn sbatch(
        &self,
        script: &Path,
        args: &[&str],
        workdir: &Path,
        env: &[(&str, &str)],
    ) -> BatchResult<u32> {
        let mut command = self.command("sbatch");
        command
            .arg("--parsable")
            .args(args)
            .arg(script)
            .current_dir(workdir)
            .envs(env.iter().copied());
        let output = run(&mut command)?;
        let text = String::from_utf8_lossy(&output.stdout);
        // `--parsable` prints `jobid[;cluster]`.
        let id = text.trim().split(';').next().unwrap_or_default();
        id.parse().map_err(|_| BatchError::Command {
            command: crate::batch::command_line(&command),
            status: "no job id".to_string(),
            output: text.into_owned(),
        })
    }

    /// Polls `squeue` until job `job` (all its array tasks) has left the queue, or fails
    /// after `timeout` with the queue and the daemons' logs.
    pub fn wait_job(&self, job: u32, timeout: Duration) -> BatchResult<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let output = run(self
                .command("squeue")
                .args(["--noheader", "--array", "--format=%i %T %r"])
                .arg(format!("--jobs={job}")))
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            // squeue refuses a job id it no longer knows ("Invalid job id specified").
            let queued = match &output {
                Ok(text) => text.trim().to_string(),
                Err(BatchError::Command { output, .. }) if output.contains("Invalid job id") => {
                    String::new()
                }
                Err(_) => return output.map(|_| ()),
            };
            if queued.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = run(self.command("scancel").arg(job.to_string()));
                return Err(BatchError::Timeout {
                    what: format!("job {job} still queued:\n{queued}\n"),
                    timeout,
                    log: self.logs(),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// What `scontrol show job` knows of job `job`: one entry per array task (finished jobs
    /// stay known for `MinJobAge`, 10 minutes here).
    pub fn job(&self, job: u32) -> BatchResult<Vec<SlurmJob>> {
        let output = run(self
            .command("scontrol")
            .args(["--oneliner", "show", "job"])
            .arg(job.to_string()))?;
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(parse_job)
            .collect())
    }
}

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        // Cancel what is left so that no slurmstepd outlives the cluster.
        let uid = nix::unistd::getuid().to_string();
        let _ = self
            .command("scancel")
            .arg(format!("--user={uid}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn parse_job(line: &str) -> Option<SlurmJob> {
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
    };
    Some(SlurmJob {
        job_id: field("JobId")?.parse().ok()?,
        array_task: field("ArrayTaskId").and_then(|id| id.parse().ok()),
        state: field("JobState")?.to_string(),
        exit_code: field("ExitCode")?.to_string(),
    })
}

/// The short host name (what slurmd calls its node by default).
fn short_hostname() -> String {
    let name = read_lossy(Path::new("/proc/sys/kernel/hostname"));
    let name = name.trim().split('.').next().unwrap_or_default();
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name.to_string()
    }
}

fn set_mode(path: &Path, mode: u32) -> crate::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        Error::Io {
            action: "chmod",
            path: path.to_path_buf(),
            source,
        }
    })
}

/// 128 random bytes, mode 0600 (munged refuses a key others can read).
fn write_munge_key(path: &Path) -> crate::Result<()> {
    let mut key = [0u8; 128];
    let urandom = Path::new("/dev/urandom");
    std::fs::File::open(urandom)
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|source| Error::Io {
            action: "read",
            path: urandom.to_path_buf(),
            source,
        })?;
    std::fs::write(path, key).map_err(|source| Error::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })?;
    set_mode(path, 0o600)
}

fn daemon_logs(dir: &Path) -> String {
    [
        "munged.out",
        "slurmctld.out",
        "slurmctld.log",
        "slurmd.out",
        "slurmd.log",
    ]
    .iter()
    .map(|name| format!("--- {name}\n{}", read_lossy(&dir.join(name))))
    .collect()
}

fn config(
    dir: &Path,
    node: &str,
    cpus: u32,
    ctld_port: u16,
    slurmd_port: u16,
    munge_socket: &Path,
) -> String {
    let path = |name: &str| dir.join(name).display().to_string();
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map_or_else(|| "root".to_string(), |u| u.name);
    format!(
        "# written by perch-testkit: one node on 127.0.0.1, every file in {dir}
ClusterName=perchtest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
AuthInfo=socket={socket}
CredType=cred/munge
StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={ctld_pid}
SlurmdPidFile={slurmd_pid}
SlurmctldLogFile={ctld_log}
SlurmdLogFile={slurmd_log}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
SlurmdParameters=config_overrides
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
MinJobAge=600
MailProg=/bin/true
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=batch Nodes=ALL Default=YES MaxTime=INFINITE State=UP
",
        dir = dir.display(),
        socket = munge_socket.display(),
        state = path("state"),
        spool = path("spool"),
        ctld_pid = path("slurmctld.pid"),
        slurmd_pid = path("slurmd.pid"),
        ctld_log = path("slurmctld.log"),
        slurmd_log = path("slurmd.log"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scontrol_lines() {
        let line = "JobId=12 ArrayJobId=11 ArrayTaskId=2 JobName=a.sh UserId=root(0) \
                    JobState=COMPLETED Reason=None Dependency=(null) ExitCode=0:0 RunTime=00:00:01";
        let job = parse_job(line).unwrap();
        assert_eq!(job.job_id, 12);
        assert_eq!(job.array_task, Some(2));
        assert_eq!(job.state, "COMPLETED");
        assert_eq!(job.exit_code, "0:0");
        assert_eq!(parse_job("garbage").map(|j| j.job_id), None);
    }

    #[test]
    fn config_keeps_everything_in_the_temp_dir() {
        let text = config(
            Path::new("/t/d"),
            "node1",
            4,
            7001,
            7002,
            Path::new("/t/d/munge.socket"),
        );
        assert!(text.contains("AuthInfo=socket=/t/d/munge.socket\n"));
        assert!(text.contains("StateSaveLocation=/t/d/state\n"));
        assert!(text.contains("NodeName=node1 NodeAddr=127.0.0.1 CPUs=4 "));
        assert!(text.contains("SlurmctldPort=7001\nSlurmdPort=7002\n"));
    }
}
