//! Which files a test's own code names: the test binary runs one of its tests again under
//! `strace -f -e trace=%file` (the child part of that test does the work), and the trace is
//! returned for the test to search.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// Runs test `test` of the current test binary again under `strace -f -qq -e trace=%file`,
/// alone, with `envs` set (how the test knows it is the traced child), logging to `log`;
/// panics when it fails. Returns the trace.
pub fn file_calls_of_test(test: &str, envs: &[(&str, &OsStr)], log: &Path) -> String {
    let out = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=%file", "-o"])
        .arg(log)
        .arg(std::env::current_exe().expect("the test binary's path"))
        .args(["--exact", test, "--test-threads=1"])
        .envs(envs.iter().map(|&(k, v)| (k, v)))
        .output()
        .expect("strace runs (test.sh installs it)");
    assert!(
        out.status.success(),
        "the traced test {test} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(log).expect("strace wrote its log")
}
