//! The interceptor as an unprivileged user: seccomp with NO_NEW_PRIVS and ptrace of one's own
//! children need no privilege. The test re-runs its own binary under
//! `setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all`.

#![allow(clippy::print_stdout)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::{assert_ok, run, FakeFs};

const ROOT_VAR: &str = "PERCH_UNPRIVILEGED_ROOT";

/// Inside: the real test, as user 65534.
fn inner(root: &str) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l[name.len()..].split_whitespace().collect::<Vec<_>>())
            .unwrap()
    };
    let uid = field("Uid:")[0].to_string();
    assert_ne!(uid, "0", "{status}");
    assert_eq!(field("CapEff:"), ["0000000000000000"], "{status}");
    let fs = std::sync::Arc::new(FakeFs::new(std::path::Path::new(root)));
    let o = run(
        &fs,
        &[
            "sh",
            "-c",
            "cat /fakefs/a.txt && cd /fakefs/sub && cat c.txt && /fakefs/bin/true && id -u",
        ],
    );
    assert_ok(&o);
    assert_eq!(o.stdout, format!("hello\ndeep\n{uid}\n"));
    println!("UNPRIVILEGED-OK uid={uid}");
}

#[test]
fn unprivileged_user_runs_programs_under_interception() {
    if let Ok(root) = std::env::var(ROOT_VAR) {
        return inner(&root);
    }
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("setpriv is required (Debian package util-linux)");
    let uid = std::fs::read_to_string("/proc/self/status").unwrap();
    let is_root = uid
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let fixture = common::Fixture::new();
    // Copy this test binary where user 65534 can run it.
    let bin_dir = tempfile::Builder::new()
        .prefix("perch-unpriv-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = bin_dir.path().join("test-bin");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = if is_root {
        let mut c = Command::new(setpriv);
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&exe);
        c
    } else {
        // Already unprivileged: run as is.
        Command::new(&exe)
    };
    let out = cmd
        .args([
            "--exact",
            "unprivileged_user_runs_programs_under_interception",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROOT_VAR, fixture.root())
        .env("TMPDIR", "/tmp")
        .current_dir("/")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success()
            && stdout.contains("UNPRIVILEGED-OK")
            && (!is_root || stdout.contains("uid=65534")),
        "status {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
}
