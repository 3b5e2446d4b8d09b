//! The Makeflow recipe (`examples/makeflow/perch.jx`) for real: 200 tasks on local Work Queue
//! workers, each running a script from /cvmfs under the perch binary (shipped as an input
//! file) with one shared alien cache, against a repository served by a real nginx: each
//! object is downloaded once. The workflow runs again in a fresh directory (no download), then
//! once more with the stratum stopped, from the alien cache alone.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use perch_testkit::{Makeflow, Nginx, TempDir};

const FQRN: &str = "batch.example.org";
const TASKS: usize = 200;
const PARTS: usize = 20;
const WORKERS: usize = 4;
/// Per workflow run; a cold run takes about a minute on a loaded 2-core machine.
const RUN_TIMEOUT: Duration = Duration::from_secs(150);

const TASK_SH: &str = r#"#!/bin/sh
# A task of the batch tests: reads one of the parts and a helper from the repository.
n=$1
repo=/cvmfs/batch.example.org
. "$repo/lib/square.sh"
part=$((n % 20))
file="$repo/share/part-$part.txt"
printf 'task %s part %s: %s, %s bytes, square %s\n' "$n" "$part" "$(head -n 1 "$file")" "$(wc -c < "$file")" "$(square "$n")"
"#;

const SQUARE_SH: &str = "square() { echo $(($1 * $1)); }\n";

/// The binary the tasks carry: the static release build when test.sh made one
/// (`PERCH_BATCH_BIN`), as a batch system would ship it; else the test build.
fn perch() -> String {
    std::env::var("PERCH_BATCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_perch").to_string())
}

fn part_text(part: usize) -> String {
    let mut text = format!("part {part} of the batch test repository\n");
    // A few kB each, different per part, so every part is its own object.
    for line in 0..(100 + 10 * part) {
        text.push_str(&format!(
            "{part:02} {line:04} some data for the tasks to read\n"
        ));
    }
    text
}

fn expected_output(task: usize) -> String {
    let part = task % PARTS;
    format!(
        "task {task} part {part}: part {part} of the batch test repository, {} bytes, square {}\n",
        part_text(part).len(),
        task * task
    )
}

fn run_ok(command: &mut Command) -> String {
    let output = command.output().expect("cannot run perch");
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The published repository: keys, the stratum under `<www>/cvmfs/batch.example.org`, nginx.
struct Stratum {
    nginx: Nginx,
    keys: PathBuf,
    stratum: PathBuf,
}

fn publish(base: &Path) -> Stratum {
    let tree = base.join("tree");
    for dir in ["bin", "lib", "share"] {
        fs::create_dir_all(tree.join(dir)).unwrap();
    }
    fs::write(tree.join("bin/task.sh"), TASK_SH).unwrap();
    fs::write(tree.join("lib/square.sh"), SQUARE_SH).unwrap();
    for part in 0..PARTS {
        fs::write(tree.join(format!("share/part-{part}.txt")), part_text(part)).unwrap();
    }
    let keys = base.join("keys");
    run_ok(Command::new(perch()).args(["keygen", FQRN]).arg(&keys));
    let www = base.join("www");
    let stratum = www.join("cvmfs").join(FQRN);
    run_ok(
        Command::new(perch())
            .arg("publish")
            .arg(&tree)
            .args(["--fqrn", FQRN, "--keys"])
            .arg(&keys)
            .arg("--stratum")
            .arg(&stratum),
    );
    let nginx = Nginx::start(&www).unwrap();
    Stratum {
        nginx,
        keys,
        stratum,
    }
}

/// URIs of the objects the tasks need: every object in the stratum but the tag history
/// (catalog, certificate and file contents), as nginx logs them.
fn needed_object_uris(stratum: &Path) -> BTreeSet<String> {
    let data = stratum.join("data");
    let mut uris = BTreeSet::new();
    for prefix in fs::read_dir(&data).unwrap() {
        let prefix = prefix.unwrap();
        for object in fs::read_dir(prefix.path()).unwrap() {
            let name = object.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with('H') {
                continue;
            }
            uris.insert(format!(
                "/cvmfs/{FQRN}/data/{}/{name}",
                prefix.file_name().to_string_lossy()
            ));
        }
    }
    uris
}

/// A fresh makeflow directory as a user would prepare it: the recipe, perch, the client
/// configuration, the public key and the site settings (`--jx-args`).
fn workflow_dir(base: &Path, name: &str, stratum: &Stratum, alien: &Path) -> PathBuf {
    let dir = base.join(name);
    fs::create_dir(&dir).unwrap();
    let recipe = perch_testkit::workspace_root().join("examples/makeflow/perch.jx");
    fs::copy(&recipe, dir.join("perch.jx")).unwrap();
    fs::copy(perch(), dir.join("perch")).unwrap();
    fs::copy(
        stratum.keys.join(format!("{FQRN}.pub")),
        dir.join(format!("{FQRN}.pub")),
    )
    .unwrap();
    fs::write(
        dir.join("client.conf"),
        format!(
            "CVMFS_SERVER_URL={}/cvmfs/@fqrn@\nCVMFS_PUBLIC_KEY={FQRN}.pub\nCVMFS_HTTP_PROXY=DIRECT\n",
            stratum.nginx.url()
        ),
    )
    .unwrap();
    fs::write(
        dir.join("site.json"),
        format!(
            r#"{{
    "TASKS": {TASKS},
    "ALIEN": "{alien}",
    "PROXY": "DIRECT",
    "CONFIG": "client.conf",
    "EXTRA_INPUTS": ["{FQRN}.pub"],
    "PROGRAM": "sh /cvmfs/{FQRN}/bin/task.sh"
}}
"#,
            alien = alien.display()
        ),
    )
    .unwrap();
    dir
}

fn check_outputs(dir: &Path) {
    let mut wrong = Vec::new();
    for task in 1..=TASKS {
        let path = dir.join(format!("out.{task}"));
        let got = fs::read_to_string(&path).unwrap_or_else(|e| format!("<{e}>"));
        if got != expected_output(task) {
            wrong.push(format!("{}: {got:?}", path.display()));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {TASKS} outputs wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

fn makeflow(base: &TempDir) -> Makeflow {
    // perch's own (non-alien) cache base, kept out of $HOME.
    let xdg = base.path().join("xdg-cache");
    Makeflow::new(WORKERS, RUN_TIMEOUT).env("XDG_CACHE_HOME", &xdg.display().to_string())
}

// eprintln: the figures for the closing note (tests never assert on time).
#[allow(clippy::print_stderr)]
#[test]
fn makeflow_200_tasks_share_one_alien_cache_then_run_offline() {
    let base = perch_testkit::tempdir().unwrap();
    let mut stratum = publish(base.path());
    let alien = base.path().join("alien");
    let needed = needed_object_uris(&stratum.stratum);
    let args = ["--jx", "--jx-args", "site.json", "perch.jx"];

    // Cold: the alien cache is empty, the stratum is up.
    let cold_dir = workflow_dir(base.path(), "cold", &stratum, &alien);
    let cold = makeflow(&base)
        .run(&cold_dir, &args)
        .unwrap_or_else(|e| panic!("{e}"));
    check_outputs(&cold_dir);

    let mut downloads: BTreeMap<String, usize> = BTreeMap::new();
    for entry in stratum.nginx.requests() {
        if entry.uri.contains("/data/") {
            assert_eq!(entry.status, 200, "{entry:?}");
            *downloads.entry(entry.uri).or_default() += 1;
        }
    }
    let repeated: Vec<_> = downloads.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "objects downloaded more than once: {repeated:?}"
    );
    let downloaded: BTreeSet<String> = downloads.keys().cloned().collect();
    assert_eq!(
        downloaded, needed,
        "objects downloaded vs. objects the tasks need"
    );
    let manifests = stratum.nginx.count_requests(".cvmfspublished");

    // Warm: a fresh workflow directory, the same alien cache, the stratum up: no object
    // is downloaded again (each task still checks the manifest).
    let warm_dir = workflow_dir(base.path(), "warm", &stratum, &alien);
    let warm = makeflow(&base)
        .run(&warm_dir, &args)
        .unwrap_or_else(|e| panic!("{e}"));
    check_outputs(&warm_dir);
    let objects_after_warm = stratum.nginx.count_requests("/data/");
    assert_eq!(
        objects_after_warm,
        downloaded.len(),
        "objects downloaded again with a warm alien cache"
    );

    // Offline: the stratum is stopped, a fresh workflow directory, the same alien cache.
    stratum.nginx.stop();
    let offline_dir = workflow_dir(base.path(), "offline", &stratum, &alien);
    let offline = makeflow(&base)
        .run(&offline_dir, &args)
        .unwrap_or_else(|e| panic!("{e}"));
    check_outputs(&offline_dir);

    eprintln!(
        "makeflow, {TASKS} tasks on {WORKERS} Work Queue workers: cold alien cache {:.1} s \
         ({} objects downloaded once each, {manifests} manifest requests), \
         warm alien cache {:.1} s, warm alien cache with the stratum stopped {:.1} s",
        cold.wall.as_secs_f64(),
        downloaded.len(),
        warm.wall.as_secs_f64(),
        offline.wall.as_secs_f64()
    );
}
