//! Shared test fixtures.
#![allow(dead_code)]

pub mod fakefs;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use perch_intercept::{ExitStatus, Interceptor, Stats};

pub use fakefs::FakeFs;

/// A temp directory served as `/fakefs`: `a.txt`, `b.txt`, `sub/c.txt`, `script.sh`,
/// `bin/true` (a copy of /bin/true) and `link -> a.txt`.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub fs: Arc<FakeFs>,
}

/// Aborts the whole test binary if it runs for more than 5 minutes (they take seconds): a hung
/// tracee must fail CI, not stall it. Tracees die with it (PTRACE_O_EXITKILL).
fn watchdog() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::thread::spawn(|| {
            std::thread::sleep(std::time::Duration::from_secs(300));
            #[allow(clippy::print_stderr)]
            {
                eprintln!("perch-intercept tests: still running after 300 s, aborting (hang?)");
            }
            std::process::abort();
        });
    });
}

impl Fixture {
    pub fn new() -> Fixture {
        watchdog();
        let dir = tempfile::Builder::new()
            .prefix("perch-intercept-")
            .tempdir()
            .unwrap();
        let root = dir.path();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(root.join("a.txt"), "hello\n").unwrap();
        std::fs::write(root.join("b.txt"), "world\n").unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/c.txt"), "deep\n").unwrap();
        std::fs::write(
            root.join("script.sh"),
            "#!/bin/sh\necho script-ran \"$@\"\n",
        )
        .unwrap();
        std::fs::set_permissions(
            root.join("script.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::create_dir(root.join("bin")).unwrap();
        std::fs::copy("/bin/true", root.join("bin/true")).unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
        let fs = Arc::new(FakeFs::new(root));
        Fixture { dir, fs }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}

/// What a run printed and how it ended.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub stats: Arc<Stats>,
}

/// A small fixed environment.
pub fn env() -> Vec<(OsString, OsString)> {
    vec![
        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ("HOME".into(), "/".into()),
        ("LC_ALL".into(), "C".into()),
    ]
}

/// Runs `argv` under interception with `fs` as handler; stdout and stderr go to files (through
/// `sh -c 'exec "$@" >out 2>err'`, itself under interception) and are returned.
pub fn run(fs: &Arc<FakeFs>, argv: &[&str]) -> Output {
    run_with(Interceptor::new(), fs.clone(), argv)
}

/// As [`run`], with this interceptor and any handler.
pub fn run_with(
    interceptor: Interceptor,
    handler: Arc<dyn perch_intercept::Handler>,
    argv: &[&str],
) -> Output {
    let out = tempfile::Builder::new()
        .prefix("perch-out-")
        .tempdir()
        .unwrap();
    let stdout_path: PathBuf = out.path().join("stdout");
    let stderr_path: PathBuf = out.path().join("stderr");
    let mut full: Vec<OsString> = vec![
        "/bin/sh".into(),
        "-c".into(),
        "exec \"$@\" >\"$PERCH_TEST_OUT\" 2>\"$PERCH_TEST_ERR\"".into(),
        "sh".into(),
    ];
    full.extend(argv.iter().map(OsString::from));
    let mut env = env();
    env.push(("PERCH_TEST_OUT".into(), stdout_path.clone().into()));
    env.push(("PERCH_TEST_ERR".into(), stderr_path.clone().into()));
    let stats = interceptor.stats();
    let status = interceptor.run(&full, &env, handler).unwrap();
    Output {
        status,
        stdout: std::fs::read_to_string(&stdout_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
        stats,
    }
}

/// Panics with both streams when the run did not exit 0.
#[track_caller]
pub fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        o.stdout,
        o.stderr
    );
}
