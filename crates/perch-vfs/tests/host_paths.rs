//! perch itself never touches a host path a repository names: symlinks out of /cvmfs
//! (absolute, climbing with `..`, through `/cvmfs/<repo>/../..`) are answered as host paths for
//! the kernel to walk in the program, never looked at by perch. Checked with strace on a child
//! process that resolves, stats, opens and lists them through the namespace, shadow tree
//! included: no system call names such a target (the shadow tree's symlinks are hard links
//! to its one symlink, whose target names nothing).

use std::path::Path;
use std::sync::Arc;

use perch_vfs::mem::{MemMounter, MemRepo};
use perch_vfs::{Lookup, Namespace, Resolved};

/// Every target below names it; no file of this name exists anywhere.
const PROBE: &str = "perch-vfs-host-probe";
const FQRN: &str = "hostile.example.org";
const CHILD: &str = "PERCH_HOST_PATHS_CACHE";

fn walk(cache: &Path) {
    let objects = cache.join("objects");
    let repo = MemRepo::builder(FQRN, &objects)
        .symlink("/abs", format!("/etc/{PROBE}").as_bytes())
        .symlink("/up", format!("../../../../../tmp/{PROBE}").as_bytes())
        .symlink(
            "/dots",
            format!("/cvmfs/{FQRN}/../../etc/{PROBE}").as_bytes(),
        )
        .symlink(
            "/d/deep",
            format!("../../../../../../etc/{PROBE}/x").as_bytes(),
        )
        .symlink("/d/to_abs", b"../abs")
        .file("/d/f", b"x\n", 0o644)
        .build();
    let mounter = Arc::new(MemMounter::new(cache, vec![repo]));
    let ns = Namespace::new(mounter).expect("namespace");
    for name in ["abs", "up", "dots", "d/deep", "d/to_abs", "d", ""] {
        for tail in ["", "/", "/x", "/.."] {
            let path = format!("/cvmfs/{FQRN}/{name}{tail}");
            for lookup in [
                Lookup::new(path.as_bytes(), b"/"),
                Lookup::new(path.as_bytes(), b"/").nofollow(),
                Lookup::for_open(path.as_bytes(), b"/", libc::O_RDONLY),
            ] {
                let r = ns.resolve(&lookup);
                let _ = ns.stat(&r);
                let _ = ns.open(&r, libc::O_RDONLY, None);
                let _ = ns.open(&r, libc::O_RDONLY | libc::O_DIRECTORY, None);
                if let Resolved::Host { path, .. } = &r {
                    assert!(
                        path.to_string_lossy().contains(PROBE),
                        "{name}{tail} leaves to {}",
                        path.display()
                    );
                }
            }
        }
    }
}

#[test]
fn no_host_path_a_repository_names_is_touched() {
    if let Some(cache) = std::env::var_os(CHILD) {
        walk(Path::new(&cache));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    let log = tmp.path().join("strace.log");
    let trace = perch_testkit::file_calls_of_test(
        "no_host_path_a_repository_names_is_touched",
        &[(CHILD, cache.as_os_str())],
        &log,
    );
    let shadow = format!("{}/shadow/", cache.display());
    assert!(trace.contains(&shadow), "strace did not see the walk");
    let touched: Vec<&str> = trace.lines().filter(|l| l.contains(PROBE)).collect();
    assert!(
        touched.is_empty(),
        "system calls naming a path from the repository: {touched:#?}"
    );
    // The links were mirrored into the shadow tree (so the walk went through them).
    let links: Vec<&str> = trace
        .lines()
        .filter(|l| l.contains("link") && l.contains("/.symlink") && l.trim_end().ends_with("= 0"))
        .collect();
    assert!(links.len() >= 3, "{links:#?}");
}
