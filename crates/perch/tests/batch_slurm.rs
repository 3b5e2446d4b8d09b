//! The Slurm recipe (`examples/slurm/perch-array.sbatch`) for real: a single-node Slurm
//! cluster (munged, slurmctld, slurmd on 127.0.0.1) runs a 50-task job array, each task
//! running a script from /cvmfs under the perch binary with one shared alien cache, against a
//! repository served by a real nginx.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use perch_testkit::{Nginx, SlurmCluster};

const FQRN: &str = "batch.example.org";
const TASKS: u32 = 50;
/// CPUs the node offers: concurrent array tasks (they mostly wait on I/O).
const NODE_CPUS: u32 = 4;
const JOB_TIMEOUT: Duration = Duration::from_secs(120);

const TASK_SH: &str = r#"#!/bin/sh
# A task of the batch tests: reads one of the parts and a helper from the repository.
n=$1
repo=/cvmfs/batch.example.org
. "$repo/lib/square.sh"
part=$((n % 10))
file="$repo/share/part-$part.txt"
printf 'task %s part %s: %s, %s bytes, square %s\n' "$n" "$part" "$(head -n 1 "$file")" "$(wc -c < "$file")" "$(square "$n")"
"#;

const SQUARE_SH: &str = "square() { echo $(($1 * $1)); }\n";

/// The binary the tasks carry: the static release build when test.sh made one
/// (`PERCH_BATCH_BIN`), as a batch system would ship it; else the test build.
fn perch() -> String {
    std::env::var("PERCH_BATCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_perch").to_string())
}

fn part_text(part: u32) -> String {
    let mut text = format!("part {part} of the slurm test repository\n");
    for line in 0..(100 + 10 * part) {
        text.push_str(&format!(
            "{part:02} {line:04} some data for the tasks to read\n"
        ));
    }
    text
}

fn expected_output(task: u32) -> String {
    let part = task % 10;
    format!(
        "task {task} part {part}: part {part} of the slurm test repository, {} bytes, square {}\n",
        part_text(part).len(),
        task * task
    )
}

fn run_ok(command: &mut Command) {
    let output = command.output().expect("cannot run perch");
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Publishes the test tree into `<base>/www/cvmfs/batch.example.org`; returns the key directory.
fn publish(base: &Path) -> std::path::PathBuf {
    let tree = base.join("tree");
    for dir in ["bin", "lib", "share"] {
        fs::create_dir_all(tree.join(dir)).unwrap();
    }
    fs::write(tree.join("bin/task.sh"), TASK_SH).unwrap();
    fs::write(tree.join("lib/square.sh"), SQUARE_SH).unwrap();
    for part in 0..10 {
        fs::write(tree.join(format!("share/part-{part}.txt")), part_text(part)).unwrap();
    }
    let keys = base.join("keys");
    run_ok(Command::new(perch()).args(["keygen", FQRN]).arg(&keys));
    run_ok(
        Command::new(perch())
            .arg("publish")
            .arg(&tree)
            .args(["--fqrn", FQRN, "--keys"])
            .arg(&keys)
            .arg("--stratum")
            .arg(base.join("www/cvmfs").join(FQRN)),
    );
    keys
}

// eprintln: the figures for the closing note (tests never assert on time).
#[allow(clippy::print_stderr)]
#[test]
fn slurm_array_of_50_tasks_shares_one_alien_cache() {
    let base = perch_testkit::tempdir().unwrap();
    let keys = publish(base.path());
    let nginx = Nginx::start(&base.path().join("www")).unwrap();
    let cluster = SlurmCluster::start(NODE_CPUS).unwrap_or_else(|e| panic!("{e}"));

    // The submit directory on the "shared file system": perch and the client configuration.
    let submit = base.path().join("submit");
    fs::create_dir(&submit).unwrap();
    fs::copy(perch(), submit.join("perch")).unwrap();
    let config = submit.join("client.conf");
    fs::write(
        &config,
        format!(
            "CVMFS_SERVER_URL={}/cvmfs/@fqrn@\nCVMFS_PUBLIC_KEY={}\nCVMFS_HTTP_PROXY=DIRECT\n",
            nginx.url(),
            keys.join(format!("{FQRN}.pub")).display()
        ),
    )
    .unwrap();
    let alien = base.path().join("alien");
    let xdg = base.path().join("xdg-cache");
    let recipe = perch_testkit::workspace_root().join("examples/slurm/perch-array.sbatch");

    let started = Instant::now();
    let job = cluster
        .sbatch(
            &recipe,
            &[&format!("--array=1-{TASKS}")],
            &submit,
            &[
                ("PERCH_ALIEN_CACHE", &alien.display().to_string()),
                ("PERCH_CONFIG", &config.display().to_string()),
                ("PERCH_PROGRAM", &format!("sh /cvmfs/{FQRN}/bin/task.sh")),
                ("CVMFS_HTTP_PROXY", "DIRECT"),
                ("XDG_CACHE_HOME", &xdg.display().to_string()),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    cluster
        .wait_job(job, JOB_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let wall = started.elapsed();

    let tasks = cluster.job(job).unwrap_or_else(|e| panic!("{e}"));
    let mut states: BTreeMap<u32, (String, String)> = BTreeMap::new();
    for task in tasks {
        if let Some(id) = task.array_task {
            states.insert(id, (task.state, task.exit_code));
        }
    }
    let failed: Vec<_> = states
        .iter()
        .filter(|(_, (state, code))| state != "COMPLETED" || code != "0:0")
        .collect();
    assert!(
        failed.is_empty(),
        "array tasks not completed with exit code 0:0: {failed:?}"
    );
    assert_eq!(
        states.keys().copied().collect::<Vec<_>>(),
        (1..=TASKS).collect::<Vec<_>>(),
        "array tasks scontrol knows"
    );

    let mut wrong = Vec::new();
    for task in 1..=TASKS {
        let out = submit.join(format!("perch-array_{job}_{task}.out"));
        let err = submit.join(format!("perch-array_{job}_{task}.err"));
        let stdout = fs::read_to_string(&out).unwrap_or_else(|e| format!("<{e}>"));
        let stderr = fs::read_to_string(&err).unwrap_or_else(|e| format!("<{e}>"));
        if stdout != expected_output(task) || !stderr.is_empty() {
            wrong.push(format!("task {task}: stdout {stdout:?}, stderr {stderr:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {TASKS} tasks wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    let mut downloads: BTreeMap<String, usize> = BTreeMap::new();
    for entry in nginx.requests() {
        if entry.uri.contains("/data/") {
            *downloads.entry(entry.uri).or_default() += 1;
        }
    }
    let repeated: Vec<_> = downloads.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "objects downloaded more than once: {repeated:?}"
    );
    eprintln!(
        "slurm, {TASKS} array tasks on one node ({NODE_CPUS} CPUs): {:.1} s from sbatch to \
         an empty queue, {} objects downloaded once each",
        wall.as_secs_f64(),
        downloads.len()
    );
}
