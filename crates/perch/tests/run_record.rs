//! `perch run --record FILE`: the repository paths a job touched, in the format of
//! `perch cache preload --list FILE`, so that a preloaded fresh cache runs the job offline.

mod run_common;

use std::path::Path;
use std::process::Command;

use run_common::{Fixtures, Out, PERCH};

const SCRIPT: &str = "cat /cvmfs/tiny.example.org/hello.txt && ls /cvmfs/tiny.example.org/dir";

/// `perch <sub…> --config-dir … --config CONF --cache CACHE [extra…]`.
fn perch(fx: &Fixtures, sub: &[&str], conf: &Path, cache: &Path, extra: &[&str]) -> Out {
    let d = fx.dir.path();
    Command::new(PERCH)
        .args(sub)
        .arg("--config-dir")
        .arg(d.join("etc"))
        .arg("--config")
        .arg(conf)
        .arg("--cache")
        .arg(cache)
        .args(extra)
        .env("LC_ALL", "C")
        .current_dir(d)
        .output()
        .unwrap()
        .into()
}

#[test]
fn recorded_paths_preload_a_cache_that_runs_the_job_offline() {
    let fx = Fixtures::new();
    let d = fx.dir.path();
    let record = d.join("touched.list");
    let o = fx.run(
        &["--record", record.to_str().unwrap()],
        &["sh", "-c", SCRIPT],
    );
    assert_eq!(o.ok().stdout, "hello tiny\na.txt\nb.txt\n");
    assert!(!d.join("touched.list.tmp").exists());
    let text = std::fs::read_to_string(&record).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for want in [
        "/cvmfs/tiny.example.org/hello.txt",
        "/cvmfs/tiny.example.org/dir",
    ] {
        assert!(lines.contains(&want), "{want} missing:\n{text}");
    }
    let mut sorted = lines.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(lines, sorted, "not sorted and deduplicated:\n{text}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("/cvmfs/tiny.example.org/")),
        "{text}"
    );

    // Preload a fresh cache from the record.
    let conf = d.join("client.conf");
    let fresh = d.join("fresh-cache");
    let o = perch(
        &fx,
        &["cache", "preload"],
        &conf,
        &fresh,
        &["--list", record.to_str().unwrap()],
    );
    o.ok();

    // Offline: the servers do not exist; only the preloaded cache is there.
    let offline = d.join("offline.conf");
    let online = std::fs::read_to_string(&conf).unwrap();
    let conf_text: String = online
        .lines()
        .map(|l| {
            if l.starts_with("CVMFS_SERVER_URL=") {
                format!(
                    "CVMFS_SERVER_URL=file://{}/@fqrn@\n",
                    d.join("no-such-server").display()
                )
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&offline, conf_text).unwrap();
    let o = perch(&fx, &["run"], &offline, &fresh, &["--", "sh", "-c", SCRIPT]);
    assert_eq!(o.ok().stdout, "hello tiny\na.txt\nb.txt\n");

    // The same offline run on an empty cache fails: the preload is what made it work.
    let empty = d.join("empty-cache");
    let o = perch(&fx, &["run"], &offline, &empty, &["--", "sh", "-c", SCRIPT]);
    assert_ne!(o.code, Some(0), "{o}");
}
