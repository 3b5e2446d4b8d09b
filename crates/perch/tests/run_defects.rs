//! Regressions of issue 14 (found by trying perch as a new user would), each checked under
//! `perch run` against a published repository: `O_PATH` opens of `/cvmfs` paths, futimens on a
//! `/cvmfs` fd, probes of names in `/cvmfs` that are no repository, and the one line that
//! tells a user about an unconfigured or misspelled repository.

mod run_common;

use std::process::Command;

use run_common::{Out, Repo, PERCH};

/// `open(path, O_PATH)` of a file, a directory and a symlink to a file (followed), with and
/// without `O_NOFOLLOW` where the object is no symlink: the fd works for fstat, `*at` and
/// `F_GETFD`/`F_SETFD` (CPython's `test_get_set_inheritable_o_path`), as natively.
#[test]
fn issue_14_o_path_opens_of_cvmfs_paths() {
    run_common::each_mode(|r| {
        r.same(
            "python3 -c '
import os, stat, sys
root = os.environ[\"ROOT\"]
for p, fl in [(\"include/hello.h\", 0), (\"include/hello.h\", os.O_NOFOLLOW), (\"sub\", 0),
              (\"sub\", os.O_NOFOLLOW | os.O_DIRECTORY), (\"sub/link.h\", 0), (\"sub/dirlink\", 0)]:
    fd = os.open(root + \"/\" + p, os.O_PATH | fl)
    st = os.fstat(fd)
    print(p, stat.filemode(st.st_mode), st.st_size if stat.S_ISREG(st.st_mode) else \"-\",
          os.get_inheritable(fd), end=\" \")
    os.set_inheritable(fd, True)
    print(os.get_inheritable(fd), end=\" \")
    if stat.S_ISDIR(st.st_mode):
        print(sorted(os.listdir(\"/proc/self/fd/%d\" % fd))[:2], end=\" \")
        print(os.stat(\".\", dir_fd=fd).st_mode & 0o170000 == 0o040000, end=\" \")
    os.close(fd)
    print()
'",
        );
    });
}

/// `futimens(fd, NULL)` (`utimensat(fd, NULL, NULL, 0)`) on an fd opened from `/cvmfs` fails
/// with `EROFS` like `fchmod`, and leaves the cached file alone.
#[test]
fn issue_14_futimens_on_a_cvmfs_fd_is_erofs() {
    run_common::each_mode(|r| {
        let o = r.perch(
            "python3 -c '
import os
fd = os.open(os.environ[\"ROOT\"] + \"/include/hello.h\", os.O_RDONLY)
before = os.fstat(fd).st_mtime_ns
for f in (lambda: os.utime(fd), lambda: os.utime(fd, (1, 1)), lambda: os.fchmod(fd, 0o600)):
    try:
        f()
        print(\"changed\")
    except OSError as e:
        print(e.strerror)
print(os.fstat(fd).st_mtime_ns == before)
'",
        );
        o.ok();
        assert_eq!(
            o.stdout, "Read-only file system\nRead-only file system\nRead-only file system\nTrue\n",
            "{o}"
        );
    });
}

/// Python looks for `pyvenv.cfg` beside and above its executable: for an interpreter in
/// `/cvmfs/<repo>` that is `/cvmfs/pyvenv.cfg`, which is no repository. It is `ENOENT`,
/// without a mount attempt and without a word from perch.
#[test]
fn issue_14_probes_of_non_repository_names_are_enoent_silently() {
    run_common::each_mode(|r| {
        let o = r.perch(
            "for p in /cvmfs/pyvenv.cfg /cvmfs/pyvenv.cfg/x /cvmfs/foo.py; do \
           test -e $p; echo \"$p $?\"; cat $p 2>&1 | sed 's/^cat: //'; done; \
         cat $ROOT/empty && echo still-fine",
        );
        o.ok();
        assert_eq!(
            o.stdout,
            "/cvmfs/pyvenv.cfg 1\n/cvmfs/pyvenv.cfg: No such file or directory\n\
         /cvmfs/pyvenv.cfg/x 1\n/cvmfs/pyvenv.cfg/x: No such file or directory\n\
         /cvmfs/foo.py 1\n/cvmfs/foo.py: No such file or directory\nstill-fine\n",
            "{o}"
        );
        assert_eq!(o.stderr, "", "{o}");
    });
}

/// A repository without a server (misspelled, or its configuration missing) is `ENOENT` for the
/// program, and perch says once per run which repository and what to set.
#[test]
fn issue_14_an_unconfigured_repository_is_named_once() {
    let r = Repo::standard();
    let d = r.dir.path();
    // The server only for test.example.org (config.d), none for other names.
    std::fs::create_dir_all(d.join("etc/config.d")).unwrap();
    std::fs::copy(
        d.join("client.conf"),
        d.join("etc/config.d/test.example.org.conf"),
    )
    .unwrap();
    let o: Out = Command::new(PERCH)
        .arg("run")
        .arg("--config-dir")
        .arg(d.join("etc"))
        .arg("--cache")
        .arg(d.join("cache"))
        .args(["-r", "test.example.org", "--", "sh", "-c"])
        .arg(
            "ls /cvmfs/test.example.orgg 2>&1; ls /cvmfs/test.example.orgg/bin 2>&1; \
             test -e /cvmfs/test.example.orgg; echo $?; cat /cvmfs/test.example.org/empty \
             && echo fine",
        )
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LC_ALL", "C")
        .current_dir(r.work())
        .output()
        .unwrap()
        .into();
    o.ok();
    assert_eq!(
        o.stdout,
        "ls: cannot access '/cvmfs/test.example.orgg': No such file or directory\n\
         ls: cannot access '/cvmfs/test.example.orgg/bin': No such file or directory\n1\nfine\n",
        "{o}"
    );
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{o}");
    assert!(
        lines[0].contains("test.example.orgg") && lines[0].contains("CVMFS_SERVER_URL"),
        "{o}"
    );
}
