//! `perch demo` works offline, shows a program reading /cvmfs, and leaves nothing behind.

use std::process::Command;

#[test]
fn demo_runs_and_cleans_up() {
    let tmp = perch_testkit::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_perch"))
        .arg("demo")
        .env("TMPDIR", tmp.path())
        .env("HOME", tmp.path())
        .env_remove("XDG_CACHE_HOME")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "published revision 1",
        "hello perch, from /cvmfs/demo.perch.local",
        "cwd: /cvmfs/demo.perch.local",
        "events.bin 6291456 bytes",
        "Read-only file system",
        "sha1 of events.bin: ded602e050da24cff1db1355395ecde66c7e63c1",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("perch-demo-") || n == ".cache")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
