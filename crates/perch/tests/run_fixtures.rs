//! `perch run` on the fixture repositories made by the real CernVM-FS tools, and the command's
//! own interface: exit status, `/cvmfs` listing, `-d syscall -o LOG`, `perch syscalls`, refused
//! syscalls. Tests that do not depend on how `/cvmfs` is given run in every mode
//! ([`run_common::MODES`]); `-d syscall` and the refused syscalls are notify mode's own (fuse
//! mode intercepts nothing: a program may use ptrace and io_uring there).

mod run_common;

use std::process::Command;

use run_common::{Fixtures, Out, MODES, PERCH};

fn manifest_check(fqrn: &str) {
    for mode in MODES {
        manifest_check_in(fqrn, mode);
    }
}

fn manifest_check_in(fqrn: &str, mode: &'static str) {
    let fx = Fixtures::in_mode(mode);
    let f = perch_testkit::fixtures_dir();
    let tool = f.join("tools/manifest.py");
    let manifest = f.join(format!("{fqrn}/MANIFEST.txt"));
    let o = fx.run(
        &[],
        &[
            "python3",
            tool.to_str().unwrap(),
            "check",
            manifest.to_str().unwrap(),
            &format!("/cvmfs/{fqrn}"),
        ],
    );
    o.ok();
    let last = o.stdout.lines().last().unwrap_or_default();
    assert!(
        last.contains(" passed, 0 failed") && !last.starts_with("0 passed"),
        "{mode}: {o}"
    );
}

#[test]
fn manifest_check_tiny_passes_under_perch_run() {
    manifest_check("tiny.example.org");
}

#[test]
fn manifest_check_alt_passes_under_perch_run() {
    manifest_check("alt.example.org");
}

#[test]
fn ls_cvmfs_lists_the_configured_repositories() {
    for mode in MODES {
        ls_cvmfs_in(mode);
    }
}

fn ls_cvmfs_in(mode: &'static str) {
    let fx = Fixtures::in_mode(mode);
    let o = fx.run(&["-r", "extra.example.org"], &["ls", "/cvmfs"]);
    assert_eq!(
        o.ok().stdout,
        "alt.example.org\nextra.example.org\ntiny.example.org\n",
        "{mode}"
    );
    // A repository no server has (no manifest anywhere) does not exist, as
    // with the real client's autofs mount point: ENOENT, not an I/O error.
    let o = fx.run(&[], &["ls", "/cvmfs/nope.example.org"]);
    assert_eq!(o.code, Some(2), "{mode}: {o}");
    assert!(
        o.stderr
            .contains("ls: cannot access '/cvmfs/nope.example.org': No such file or directory"),
        "{o}"
    );
}

#[test]
fn exit_status_is_the_programs() {
    for mode in MODES {
        exit_status_in(mode);
    }
    // A usage error is perch's own code, not clap's 2.
    let o: Out = Command::new(PERCH).args(["run"]).output().unwrap().into();
    assert_eq!(o.code, Some(200), "{o}");
    let o: Out = Command::new(PERCH)
        .args(["run", "--mode", "fast", "--", "true"])
        .output()
        .unwrap()
        .into();
    assert_eq!(o.code, Some(200), "{o}");
}

fn exit_status_in(mode: &'static str) {
    let fx = Fixtures::in_mode(mode);
    assert_eq!(fx.run(&[], &["sh", "-c", "exit 3"]).code, Some(3), "{mode}");
    assert_eq!(
        fx.run(&[], &["sh", "-c", "kill -TERM $$"]).code,
        Some(128 + 15)
    );
    let o = fx.run(&[], &["/nonexistent/program"]);
    assert_eq!(o.code, Some(127), "{mode}: {o}");
    assert!(
        o.stderr
            .starts_with("perch: cannot execute /nonexistent/program"),
        "{mode}: {o}"
    );
}

#[test]
fn debug_syscall_log_goes_to_the_log_file() {
    let fx = Fixtures::in_mode("notify");
    let log = fx.dir.path().join("perch.log");
    let o = fx.run(
        &["-d", "syscall", "-o", log.to_str().unwrap()],
        &["cat", "/cvmfs/tiny.example.org/hello.txt"],
    );
    assert_eq!(o.ok().stdout, "hello tiny\n");
    assert_eq!(o.stderr, "", "nothing on stderr with -o");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(
            "openat(AT_FDCWD, \"/cvmfs/tiny.example.org/hello.txt\", O_RDONLY) = fd (injected)"
        ),
        "{text}"
    );
    assert!(text.contains("execve(\"/usr/bin/cat\""), "{text}");
}

#[test]
fn perch_syscalls_prints_the_table() {
    let o: Out = Command::new(PERCH).arg("syscalls").output().unwrap().into();
    o.ok();
    for name in ["openat", "newfstatat", "execve", "mkdir", "io_uring_setup"] {
        assert!(o.stdout.contains(name), "{name} missing:\n{}", o.stdout);
    }
}

#[test]
fn ptrace_and_io_uring_are_refused_with_documented_errnos() {
    let fx = Fixtures::in_mode("notify");
    let script = "import ctypes, os\n\
                  libc = ctypes.CDLL(None, use_errno=True)\n\
                  libc.syscall.restype = ctypes.c_long\n\
                  buf = ctypes.create_string_buffer(120)\n\
                  r = libc.syscall(425, 1, buf); print('io_uring_setup', r, os.strerror(ctypes.get_errno()))\n\
                  r = libc.syscall(101, 16, os.getppid(), 0, 0); print('ptrace', r, os.strerror(ctypes.get_errno()))\n";
    let o = fx.run(&[], &["python3", "-c", script]);
    assert_eq!(
        o.ok().stdout,
        "io_uring_setup -1 Function not implemented\nptrace -1 Operation not permitted\n"
    );
}

#[test]
fn xattrs_and_statfs_of_a_repository() {
    for mode in MODES {
        xattrs_and_statfs_in(mode);
    }
}

fn xattrs_and_statfs_in(mode: &'static str) {
    let fx = Fixtures::in_mode(mode);
    let o = fx.run(
        &[],
        &[
            "python3",
            "-c",
            "import os; p='/cvmfs/tiny.example.org/hello.txt'; \
             print(os.getxattr(p, 'user.fqrn').decode(), 'user.root_hash' in os.listxattr('/cvmfs/tiny.example.org'), \
             os.statvfs(p).f_flag & 1)",
        ],
    );
    assert_eq!(o.ok().stdout, "tiny.example.org True 1\n", "{mode}");
}
