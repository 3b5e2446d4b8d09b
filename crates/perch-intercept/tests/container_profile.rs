//! perch under a container's seccomp profile: Docker's and containerd's defaults refuse
//! `pidfd_getfd`, `process_vm_readv` and `process_vm_writev` to a process without
//! `CAP_SYS_PTRACE` (`EPERM`). The same refusals are made here with a filter on the thread
//! that runs the interceptor (its ptrace and supervisor threads and the program inherit it).
//!
//! One test in this binary: which calls are refused is remembered per process.

mod common;

use common::{assert_ok, run, Fixture};
use perch_bpf::{Action, Policy};

fn sysno(nr: libc::c_long) -> u32 {
    u32::try_from(nr).unwrap()
}

/// Installs, on the calling thread, a filter making the calls a default container profile
/// refuses without `CAP_SYS_PTRACE` fail with `EPERM`.
fn refuse_like_docker() {
    let mut policy = Policy::new(Action::Allow);
    for nr in [
        libc::SYS_pidfd_getfd,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
    ] {
        policy.set(sysno(nr), Action::Errno(1));
    }
    let program = policy.compile().unwrap();
    perch_sys::misc::install_thread_filter(program.insns()).unwrap();
}

#[test]
fn runs_where_pidfd_getfd_and_process_vm_are_refused() {
    let f = Fixture::new();
    let fs = f.fs.clone();
    assert_eq!(perch_intercept::memory_call_refusals(), (0, 0));
    let out = std::thread::spawn(move || {
        refuse_like_docker();
        // The listener reaches perch over the socket pair (SCM_RIGHTS): with pidfd_getfd
        // refused, taking it from the child would fail the run with EPERM before it starts.
        run(
            &fs,
            &[
                "sh",
                "-c",
                "cat /fakefs/a.txt; for i in 1 2 3 4 5 6 7 8; do stat -c %s /fakefs/b.txt; done; \
                 readlink /fakefs/link; ls /fakefs/sub",
            ],
        )
    })
    .join()
    .unwrap();
    assert_ok(&out);
    assert_eq!(out.stdout, "hello\n6\n6\n6\n6\n6\n6\n6\n6\na.txt\nc.txt\n");
    // Dozens of tracee memory reads (paths) and writes (stat buffers, the readlink answer)…
    assert!(out.stats.notifications() > 30, "{:?}", out.stats);
    // …but each refused call was tried once, then /proc/<pid>/mem was used directly.
    assert_eq!(perch_intercept::memory_call_refusals(), (1, 1));
}
