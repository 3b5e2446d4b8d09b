//! Run a process tree under interception: seccomp user notification for the syscalls that must
//! be seen, ptrace for the few that notify cannot do (exec and chdir path rewriting) — or, with
//! [`Backend::Ptrace`], ptrace alone: the same calls trapped with `SECCOMP_RET_TRACE` and
//! answered at the seccomp stop ([`Handler::on_trace_call`]), for kernels before 5.14 and
//! places where a seccomp listener is refused.
//!
//! This crate owns the process tree: the filter (from [`Interceptor`]'s syscall sets, built with
//! perch-bpf), the fork-to-exec child (perch-sys), a pool of supervisor threads answering
//! notifications ([`Notification`]) and one ptrace thread that follows fork/vfork/clone/exec,
//! rewrites traced paths ([`Handler::on_trace_path`]), passes signals and group-stops through
//! unchanged, and returns the main child's [`ExitStatus`]. It knows nothing about CVMFS or what a
//! path means: that is the [`Handler`]'s job.
//!
//! Decisions and limits, documented:
//! - `io_uring_setup/enter/register` fail with `ENOSYS` (their opens would bypass the filter);
//!   `ptrace` fails with `EPERM` (perch is the tracer; a nested tracer cannot attach anyway);
//!   with the ptrace backend `pidfd_getfd` too (the fd relay, `perch_sys::relay`, shares
//!   perch's descriptor table so that tracees can reopen perch's files while perch stays
//!   non-dumpable).
//! - The run ends when the main child exits; processes it left behind are killed (SIGKILL) and
//!   reaped, because nothing would answer their notifications afterwards.
//! - A handler panic answers `EIO` for that call and is counted in [`Stats`]; a panic in the
//!   receive loop or the ptrace loop aborts perch (killed loudly beats hung).
//! - The notify backend needs Linux ≥ 5.14 on x86_64, the ptrace backend Linux ≥ 4.8
//!   ([`Error::KernelTooOld`]). Uses
//!   `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` (5.19) and `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`
//!   (6.6) when the kernel has them.
//! - Threads: one ptrace thread (it forks the child and alone makes ptrace calls) and a pool of
//!   supervisor threads that receive and answer notifications concurrently (see
//!   [`Interceptor::workers`]). From Linux 6.6 one thread per two CPUs waits in `NOTIF_RECV`
//!   itself, woken on the caller's CPU, and the others are spares that receive while a handler
//!   waits inside [`blocking`]; before 6.6 every thread waits in epoll (`EPOLLEXCLUSIVE`,
//!   Linux 4.5) and a notification wakes one idle thread. So a handler runs on any of them,
//!   several at once: handlers share state through `&self` and must not assume an order
//!   between calls of different threads of the program. A handler that may wait long (on the
//!   network, on another process) runs that part inside [`blocking`].
//! - perch cannot run under perch: a filter chain has one listener, the inner run fails with
//!   [`Error::Seccomp`] (`EBUSY`).
//! - Without `CAP_SYS_PTRACE`, the memory and fds of a non-dumpable tracee cannot be read:
//!   [`Notification::read_path`] fails with `EPERM` and the handler must decide (usually:
//!   continue). So in that case `prctl(PR_SET_DUMPABLE, 0)` (ssh-agent, gpg-agent) returns 0
//!   without effect ([`Interceptor::keep_dumpable`]); `PR_GET_DUMPABLE` then still says 1.
//!   A program that loses dumpability otherwise (exec of an unreadable binary) stays blind.
//! - A signal that ends a notified call's wait before perch received it (`-ERESTARTSYS`)
//!   would be `EINTR` for a handler without `SA_RESTART`, where natively a `stat` or an open
//!   of a regular file cannot be interrupted: the ptrace thread turns it into
//!   `-ERESTARTNOINTR` (the call is made again after the handler), except for an open that
//!   may block natively (a FIFO or character device without `O_NONBLOCK`, or a path it cannot
//!   read), which keeps its `EINTR`.
//! - The caller should treat terminal signals like a shell waiting for a job does (while the tree
//!   runs, catch `SIGINT`/`SIGQUIT` with a no-op handler — not `SIG_IGN`, which the program
//!   would inherit — and forward `SIGTERM`/`SIGHUP`): if perch dies, `PTRACE_O_EXITKILL` kills
//!   the whole tree. The child starts with an empty signal mask and `SIGPIPE` at its default.
//! - A handler still running when the tree has exited (a download for a killed process) is
//!   waited for before [`Interceptor::run`] returns.
//!
//! ```no_run
//! use std::sync::Arc;
//! use perch_intercept::{Handler, Interceptor, Notification};
//!
//! struct Passthrough;
//! impl Handler for Passthrough {
//!     fn on_syscall(&self, n: Notification<'_>) {
//!         n.continue_unchecked();
//!     }
//! }
//!
//! let status = Interceptor::new()
//!     .run(&["true".into()], &[], Arc::new(Passthrough))
//!     .unwrap();
//! assert_eq!(status.code(), 0);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod kernel;
mod notification;
mod procfd;
mod receivers;
mod spin;
mod supervisor;
mod tracer;

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

#[cfg(feature = "test-util")]
pub use kernel::recording;
pub use kernel::{Kernel, LinuxKernel};
pub use notification::Notification;
pub use perch_syscalls::{Call, Errno, Pid, SyscallSet, Sysno};
pub use tracer::{TraceAction, TracedCall};

use perch_bpf::{Action, Policy};

/// What perch does with the syscalls of a tracee: implemented by the namespace (perch-vfs) or by
/// a test double.
pub trait Handler: Send + Sync + 'static {
    /// Called for each notified syscall of any thread of any process in the tree, on one of the
    /// supervisor threads. Answer `n` exactly once (dropping it answers `EIO`).
    fn on_syscall(&self, n: Notification<'_>);

    /// Called on the ptrace thread at the seccomp stop of a traced syscall (execve, execveat,
    /// chdir by default), while the tracee is stopped: rewrite its path
    /// ([`TraceAction::Rewrite`]), its program and arguments ([`TraceAction::RewriteExec`]),
    /// fail it, or let it run. Runs on the single ptrace thread: keep it short.
    fn on_trace_path(&self, call: &TracedCall) -> TraceAction {
        let _ = call;
        TraceAction::Continue
    }

    /// The ptrace backend's [`Handler::on_syscall`]: called on the ptrace thread at the
    /// seccomp stop of a syscall the notify backend would have notified, while the tracee is
    /// stopped. The answer is applied there: `Continue` runs the call, `Err`/`Ret`/`Write`
    /// skip it with that result, and `Fd` reopens perch's file in the tracee by rewriting
    /// the call's path (see [`Backend::Ptrace`]).
    fn on_trace_call(&self, call: &TracedCall) -> perch_syscalls::Answer {
        let _ = call;
        perch_syscalls::Answer::Continue
    }
}

/// How the calls the handler answers reach perch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// `SECCOMP_RET_USER_NOTIF`, answered by a pool of threads; ptrace only for exec and chdir
    /// (Linux ≥ 5.14).
    #[default]
    Notify,
    /// `SECCOMP_RET_TRACE` for every call the table traps, answered at the seccomp stop on the
    /// ptrace thread (Linux ≥ 4.8: the seccomp stop comes after the syscall-entry stop, and
    /// the tracer can skip a call by setting its number to -1). The kernel keeps the only fd
    /// table: an `Fd` answer becomes the call run on the path of perch's file
    /// (`/proc/self/fd/N`'s target, or perch's own `/proc/<pid>/fd/N` when that has no usable
    /// name), written below the tracee's stack pointer, with `O_CREAT|O_EXCL|O_TRUNC` removed
    /// (perch's open already did them) and `O_NOFOLLOW` too (the path is the object itself).
    /// Calls are answered one at a time.
    Ptrace,
}

/// How the main child ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited with this code.
    Exited(i32),
    /// Killed by a signal.
    Signaled {
        /// The signal number.
        signal: i32,
        /// Whether a core was dumped.
        core_dumped: bool,
    },
}

impl ExitStatus {
    /// The shell's view: the code, or 128 + signal.
    pub fn code(&self) -> i32 {
        match *self {
            ExitStatus::Exited(c) => c,
            ExitStatus::Signaled { signal, .. } => 128 + signal,
        }
    }

    /// Exited with 0.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Exited(0)
    }
}

/// Counters of one run, readable while it runs.
#[derive(Debug, Default)]
pub struct Stats {
    /// Notifications received.
    pub notifications: AtomicU64,
    /// Seccomp ptrace stops handled.
    pub traced: AtomicU64,
    /// Handler panics (each answered `EIO`).
    pub panics: AtomicU64,
    /// Notifications dropped without an answer, panics included (each answered `EIO`).
    pub unanswered: AtomicU64,
    /// Answers the kernel refused (usually: the caller was killed meanwhile).
    pub answer_failures: AtomicU64,
    /// Which pool answered: one of the `POOL_*` values.
    pub pool: AtomicU8,
    /// Times that pool switched to parallel mode (a notification waiting behind another).
    pub parallel: AtomicU64,
}

impl Stats {
    /// Notifications received so far.
    pub fn notifications(&self) -> u64 {
        self.notifications.load(Ordering::Relaxed)
    }
    /// Handler panics so far.
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }
    /// Traced stops so far.
    pub fn traced(&self) -> u64 {
        self.traced.load(Ordering::Relaxed)
    }
    /// The pool that answered: `"receivers"` (Linux ≥ 6.6), `"epoll"`, or `"none"` (ptrace
    /// mode, or no run yet).
    pub fn pool(&self) -> &'static str {
        match self.pool.load(Ordering::Relaxed) {
            Stats::POOL_RECEIVERS => "receivers",
            Stats::POOL_EPOLL => "epoll",
            _ => "none",
        }
    }
    /// [`Stats::pool`]: no notify pool ran.
    pub const POOL_NONE: u8 = 0;
    /// [`Stats::pool`]: the pool before Linux 6.6, every thread waiting in epoll.
    pub const POOL_EPOLL: u8 = 1;
    /// [`Stats::pool`]: threads waiting in `NOTIF_RECV` itself (Linux ≥ 6.6).
    pub const POOL_RECEIVERS: u8 = 2;
    /// Times the pool switched to parallel mode so far.
    pub fn parallel(&self) -> u64 {
        self.parallel.load(Ordering::Relaxed)
    }
}

/// Runs `f`, a part of a handler that may wait long: a download, or another process's claim
/// on an object. In notify mode on Linux ≥ 6.6, where only a few supervisor threads receive
/// notifications, this calls in a spare thread for as long as `f` runs, so the program's other
/// calls are answered meanwhile. Anywhere else (another thread, another backend) it just
/// runs `f`.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    receivers::blocking(f)
}

/// How often this process tried `process_vm_readv` and `process_vm_writev` and found them
/// refused for every target (a container's seccomp profile without `CAP_SYS_PTRACE`, or a
/// kernel without them). After the first refusal perch reads and writes tracee memory through
/// `/proc/<pid>/mem` directly, so each count stays at 1 (a few more only if several threads
/// met the refusal at the same moment).
pub fn memory_call_refusals() -> (u64, u64) {
    perch_sys::mem::refused_attempts()
}

/// Why a run could not start. Once the program runs, its own failures are its exit status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel lacks what the backend needs: seccomp user notification with
    /// `SECCOMP_ADDFD_FLAG_SEND` (notify, 5.14) or the seccomp stop after syscall entry
    /// (ptrace, 4.8).
    #[error("kernel {release} is too old: perch needs Linux {}.{} or later ({what})", needs.0, needs.1)]
    KernelTooOld {
        /// `uname -r`.
        release: String,
        /// The lowest version that works.
        needs: (u32, u32),
        /// The feature missing.
        what: &'static str,
    },
    /// seccomp user notification is missing or forbidden (kernel without
    /// `CONFIG_SECCOMP_FILTER`, or perch itself runs under a filter that refuses `seccomp`).
    #[error("seccomp user notification is not available")]
    SeccompUnavailable {
        /// Why.
        #[source]
        errno: Errno,
    },
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed in the child.
    #[error("cannot set no_new_privs in the child")]
    NoNewPrivs {
        /// Why.
        #[source]
        errno: Errno,
    },
    /// Installing the filter failed in the child.
    #[error("cannot install the seccomp filter with a notification listener")]
    Seccomp {
        /// Why.
        #[source]
        errno: Errno,
    },
    /// `PTRACE_SEIZE` of the child failed: ptrace is forbidden (`kernel.yama.ptrace_scope` = 3,
    /// a container's seccomp profile) or perch itself is being traced.
    #[error("cannot trace the program with ptrace (forbidden by kernel.yama.ptrace_scope or a container policy?)")]
    Ptrace {
        /// Why.
        #[source]
        errno: Errno,
    },
    /// Creating the child or talking to it failed.
    #[error("cannot start the program")]
    Spawn {
        /// Why.
        #[source]
        errno: Errno,
    },
    /// The program could not be executed (not found, not executable…).
    #[error("cannot execute {}", program.to_string_lossy())]
    Exec {
        /// `argv[0]`.
        program: OsString,
        /// Why.
        #[source]
        errno: Errno,
    },
    /// `argv` is empty.
    #[error("no program given")]
    EmptyCommand,
    /// An argument or environment string contains a NUL byte.
    #[error("an argument or environment variable contains a NUL byte")]
    Nul,
    /// The filter could not be compiled.
    #[error("cannot build the seccomp filter")]
    Filter(#[from] perch_bpf::Error),
    /// A supervisor thread could not be started.
    #[error("cannot start a supervisor thread")]
    Thread(#[source] std::io::Error),
}

/// Lowest kernel version the notify backend supports.
pub const MIN_KERNEL: (u32, u32) = (5, 14);

/// Lowest kernel version the ptrace backend supports.
pub const MIN_KERNEL_PTRACE: (u32, u32) = (4, 8);

impl Error {
    /// Whether the notify backend cannot work here while the ptrace backend may: the kernel
    /// is too old for it, has no seccomp notification, or refuses a second listener (`EBUSY`:
    /// a container runtime or sandbox already uses one) or the flags (`EINVAL`).
    pub fn notify_unavailable(&self) -> bool {
        match self {
            Error::KernelTooOld { needs, .. } => *needs == MIN_KERNEL,
            Error::SeccompUnavailable { .. } => true,
            Error::Seccomp { errno } => {
                *errno == Errno::EBUSY || *errno == Errno::EINVAL || *errno == Errno::ENOSYS
            }
            _ => false,
        }
    }
}

/// Runs a process tree under interception. Configure, then [`run`](Self::run).
#[derive(Debug, Clone)]
pub struct Interceptor {
    notify: SyscallSet,
    trace: SyscallSet,
    enosys: SyscallSet,
    eperm: SyscallSet,
    refused: Vec<(u32, Errno)>,
    keep_dumpable: bool,
    workers: usize,
    stats: Arc<Stats>,
    backend: Backend,
}

impl Default for Interceptor {
    fn default() -> Self {
        Self::new()
    }
}

impl Interceptor {
    /// Notifies every file-system syscall of perch-syscalls' table, traces execve, execveat and
    /// chdir, refuses io_uring (`ENOSYS`) and ptrace (`EPERM`); one supervisor thread per CPU
    /// the job may use, 4 to 16 (see [`workers`](Self::workers)).
    pub fn new() -> Self {
        let trace = SyscallSet::of(&[Sysno::Execve, Sysno::Execveat, Sysno::Chdir]);
        let workers =
            supervisor::default_workers(std::thread::available_parallelism().ok().map(|n| n.get()));
        Interceptor {
            notify: perch_syscalls::filesystem(),
            trace,
            enosys: SyscallSet::of(&[
                Sysno::IoUringSetup,
                Sysno::IoUringEnter,
                Sysno::IoUringRegister,
            ]),
            eperm: SyscallSet::of(&[Sysno::Ptrace]),
            refused: Vec::new(),
            keep_dumpable: !has_cap_sys_ptrace(),
            workers,
            stats: Arc::new(Stats::default()),
            backend: Backend::Notify,
        }
    }

    /// The backend ([`Backend::Notify`] by default).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// The syscalls answered by [`Handler::on_syscall`] (each costs a round trip of ~9 µs:
    /// notify only what must be seen).
    pub fn notify(mut self, set: SyscallSet) -> Self {
        self.notify = set;
        self
    }

    /// The syscalls stopped for [`Handler::on_trace_path`]; they take precedence over `notify`.
    pub fn trace(mut self, set: SyscallSet) -> Self {
        self.trace = set;
        self
    }

    /// Refuse syscall `nr` in the filter itself with `errno` (`SECCOMP_RET_ERRNO`: the call
    /// never reaches perch); takes precedence over `notify` and `trace`.
    pub fn refuse(mut self, nr: u32, errno: Errno) -> Self {
        self.refused.push((nr, errno));
        self
    }

    /// Number of supervisor threads (at least 1): at most this many notified calls are
    /// answered at once. The default is one per CPU this process may run on (its
    /// `sched_getaffinity` mask, lowered by a cgroup CPU quota), at least 4 and at most 16.
    /// From Linux 6.6, one per two of those CPUs receives all the time and the rest only
    /// while handlers wait inside [`blocking`]. Threads beyond the first cost nothing while
    /// idle.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// The counters of this interceptor's run; grab them before [`run`](Self::run).
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// The policy the filter is compiled from. With [`Backend::Ptrace`] the notified set is
    /// traced instead.
    pub fn policy(&self) -> Policy {
        let mut p = Policy::new(Action::Allow);
        let answered = match self.backend {
            Backend::Notify => Action::Notify,
            Backend::Ptrace => Action::Trace(0),
        };
        for nr in self.notify.iter() {
            p.set(nr, answered);
        }
        for nr in self.trace.iter() {
            p.set(nr, Action::Trace(0));
        }
        for nr in self.enosys.iter() {
            p.set(nr, Action::Errno(38));
        }
        for nr in self.eperm.iter() {
            p.set(nr, Action::Errno(1));
        }
        for &(nr, errno) in &self.refused {
            p.set(
                nr,
                Action::Errno(u16::try_from(errno.raw()).unwrap_or(u16::MAX)),
            );
        }
        if self.backend == Backend::Ptrace {
            // The fd relay shares perch's descriptor table and is dumpable: `pidfd_getfd` on
            // it would hand the program perch's own fds (the cache's, writable).
            p.set(
                u32::try_from(libc::SYS_pidfd_getfd).unwrap_or(u32::MAX),
                Action::Errno(1),
            );
        }
        if self.keep_dumpable {
            // `prctl(PR_SET_DUMPABLE, 0)` succeeds without effect (`SECCOMP_RET_ERRNO` with
            // errno 0 returns 0): an unprivileged tracer cannot read a non-dumpable
            // tracee's memory or fds, which would hide /cvmfs from it.
            let prctl = u32::try_from(libc::SYS_prctl).unwrap_or(u32::MAX);
            let set_dumpable = u64::try_from(libc::PR_SET_DUMPABLE).unwrap_or(u64::MAX);
            p.set_when(prctl, &[(0, set_dumpable), (1, 0)], Action::Errno(0));
        }
        p
    }

    /// Whether `prctl(PR_SET_DUMPABLE, 0)` is made a no-op (the default without
    /// `CAP_SYS_PTRACE`; with it perch reads non-dumpable tracees anyway).
    pub fn keep_dumpable(mut self, on: bool) -> Self {
        self.keep_dumpable = on;
        self
    }

    /// Runs `argv` (searched in `PATH` like `execvp` when `argv[0]` has no `/`) with exactly
    /// the environment `env`, under interception, until it exits. Processes still running
    /// then are killed. Returns the main child's status.
    pub fn run(
        self,
        argv: &[OsString],
        env: &[(OsString, OsString)],
        handler: Arc<dyn Handler>,
    ) -> Result<ExitStatus, Error> {
        let program = argv.first().ok_or(Error::EmptyCommand)?.clone();
        check_kernel(self.backend)?;
        let policy = self.policy();
        let filter = policy.compile()?;
        // The calls the handler answers: notified, or (ptrace) traced at the seccomp stop
        // because the notify backend would have notified them.
        let answered = {
            let notify_policy = self.clone().backend(Backend::Notify).policy();
            let mut set = SyscallSet::default();
            for nr in 0..perch_syscalls::MAX_NR {
                if notify_policy.action_for(nr) == Action::Notify {
                    set.insert_nr(nr);
                }
            }
            set
        };
        let (notified, answered) = match self.backend {
            Backend::Notify => (answered, SyscallSet::default()),
            Backend::Ptrace => (SyscallSet::default(), answered),
        };
        let env_strings: Vec<OsString> = env
            .iter()
            .map(|(k, v)| {
                let mut s = k.clone();
                s.push("=");
                s.push(v);
                s
            })
            .collect();
        let path_var = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var_os("PATH"));
        let candidates = exec_candidates(&program, path_var.as_deref());
        // Started on this thread, which outlives the ptrace thread: the relay dies with it.
        let relay = match self.backend {
            Backend::Ptrace => fd_relay(),
            Backend::Notify => None,
        };
        let job = tracer::Job {
            candidates,
            argv: argv.to_vec(),
            env: env_strings,
            filter: filter.insns().to_vec(),
            workers: self.workers,
            stats: Arc::clone(&self.stats),
            program,
            notified,
            answered,
            backend: self.backend,
            reopen_via: relay
                .as_ref()
                .map_or_else(own_pid, perch_sys::relay::FdRelay::pid),
        };
        let t = std::thread::Builder::new()
            .name("perch-ptrace".into())
            .spawn(move || tracer::run(job, handler))
            .map_err(Error::Thread)?;
        match t.join() {
            Ok(r) => r,
            // The tracer thread aborts on panic; reaching here is impossible but harmless.
            Err(_) => std::process::abort(),
        }
    }
}

/// The fd relay's filter: it may wait (`pause`) and exit; any other call kills it, so a
/// program that takes it over (it is dumpable) can make no call with perch's descriptors.
fn relay_policy() -> Policy {
    let mut p = Policy::new(Action::KillProcess);
    for nr in [
        libc::SYS_pause,
        libc::SYS_rt_sigreturn,
        libc::SYS_restart_syscall,
        libc::SYS_exit,
        libc::SYS_exit_group,
    ] {
        p.set(u32::try_from(nr).unwrap_or(u32::MAX), Action::Allow);
    }
    p
}

/// The fd relay for the ptrace backend (`perch_sys::relay`): tracees reopen perch's files
/// through it. Where it cannot start, perch makes itself dumpable and they reopen them through
/// perch's own `/proc/<pid>/fd`, which also lets a program of this user write perch's memory.
fn fd_relay() -> Option<perch_sys::relay::FdRelay> {
    let started = relay_policy()
        .compile()
        .map_err(|_| Errno::EINVAL)
        .and_then(|p| perch_sys::relay::FdRelay::start(p.insns()));
    match started {
        Ok(r) => Some(r),
        Err(errno) => {
            tracing::warn!(
                ?errno,
                "cannot start the fd relay: perch stays dumpable, so the program could write \
                 perch's memory"
            );
            if let Err(e) = perch_sys::misc::set_dumpable(true) {
                tracing::warn!("cannot make perch dumpable (PR_SET_DUMPABLE): {e}");
            }
            None
        }
    }
}

fn own_pid() -> Pid {
    Pid(i32::try_from(std::process::id()).unwrap_or(i32::MAX))
}

/// `CAP_SYS_PTRACE` in perch's effective set (`/proc/self/status`, no syscall needed).
fn has_cap_sys_ptrace() -> bool {
    const CAP_SYS_PTRACE: u32 = 19;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_PTRACE) != 0)
}

/// Fails with a typed error when the kernel cannot run `backend`.
fn check_kernel(backend: Backend) -> Result<(), Error> {
    let release = perch_sys::misc::kernel_release().unwrap_or_default();
    check_release(&release, backend)?;
    match backend {
        Backend::Notify => {
            perch_sys::notify::check_sizes().map_err(|errno| Error::SeccompUnavailable { errno })
        }
        Backend::Ptrace => Ok(()),
    }
}

/// `KernelTooOld` unless `release` (`uname -r`) is at least what `backend` needs.
fn check_release(release: &str, backend: Backend) -> Result<(), Error> {
    let (needs, what) = match backend {
        Backend::Notify => (MIN_KERNEL, "seccomp user notification with ADDFD_FLAG_SEND"),
        Backend::Ptrace => (
            MIN_KERNEL_PTRACE,
            "the seccomp ptrace stop after syscall entry",
        ),
    };
    match perch_sys::misc::parse_version(release) {
        Some(v) if v >= needs => Ok(()),
        _ => Err(Error::KernelTooOld {
            release: release.to_string(),
            needs,
            what,
        }),
    }
}

/// The paths `execvp` would try for `program` with search path `path` (`$PATH`; unset: the
/// default `/usr/local/bin:/usr/bin:/bin`). Shared with perch's fuse mode.
pub fn exec_candidates(program: &OsStr, path: Option<&OsStr>) -> Vec<OsString> {
    if program.as_bytes().contains(&b'/') || program.is_empty() {
        return vec![program.to_os_string()];
    }
    let path = path.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    let mut out: Vec<OsString> = path
        .as_bytes()
        .split(|&b| b == b':')
        .map(|dir| {
            let dir = if dir.is_empty() { b".".as_slice() } else { dir };
            let mut p = OsStr::from_bytes(dir).to_os_string();
            p.push("/");
            p.push(program);
            p
        })
        .collect();
    if out.is_empty() {
        out.push(program.to_os_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use perch_bpf::{SeccompData, AUDIT_ARCH_X86_64};

    #[test]
    fn candidates_follow_execvp() {
        let c = exec_candidates(OsStr::new("ls"), Some(OsStr::new("/a::/b")));
        assert_eq!(
            c,
            vec![OsString::from("/a/ls"), "./ls".into(), "/b/ls".into()]
        );
        let c = exec_candidates(OsStr::new("./x"), Some(OsStr::new("/a")));
        assert_eq!(c, vec![OsString::from("./x")]);
    }

    /// The relay's program, swept through the interpreter: the five calls it may make run,
    /// every other number, x32 and foreign architectures kill it; pidfd_getfd is refused to
    /// the traced programs.
    #[test]
    fn the_relay_may_only_wait_and_exit() {
        let prog = relay_policy().compile().unwrap();
        let allowed = [
            libc::SYS_pause,
            libc::SYS_rt_sigreturn,
            libc::SYS_restart_syscall,
            libc::SYS_exit,
            libc::SYS_exit_group,
        ]
        .map(|n| u32::try_from(n).unwrap());
        for nr in 0..perch_syscalls::MAX_NR {
            let want = if allowed.contains(&nr) {
                Action::Allow
            } else {
                Action::KillProcess
            };
            let got = prog
                .action(&SeccompData::new(nr, AUDIT_ARCH_X86_64))
                .unwrap();
            assert_eq!(got, want, "nr {nr}");
        }
        let pause = u32::try_from(libc::SYS_pause).unwrap();
        let x32 = prog.action(&SeccompData::new(pause | 0x4000_0000, AUDIT_ARCH_X86_64));
        assert_eq!(x32.unwrap(), Action::KillProcess);
        let i386 = prog.action(&SeccompData::new(pause, 0x4000_0003));
        assert_eq!(i386.unwrap(), Action::KillProcess);
        let traced = Interceptor::new()
            .backend(Backend::Ptrace)
            .policy()
            .compile()
            .unwrap();
        let getfd = u32::try_from(libc::SYS_pidfd_getfd).unwrap();
        let got = traced.action(&SeccompData::new(getfd, AUDIT_ARCH_X86_64));
        assert_eq!(got.unwrap(), Action::Errno(1));
    }

    #[test]
    fn default_policy() {
        let prog = Interceptor::new().policy().compile().unwrap();
        let act = |s: Sysno| {
            prog.action(&SeccompData::new(s.nr(), AUDIT_ARCH_X86_64))
                .unwrap()
        };
        assert_eq!(act(Sysno::Openat), Action::Notify);
        assert_eq!(act(Sysno::Execve), Action::Trace(0));
        assert_eq!(act(Sysno::Chdir), Action::Trace(0));
        assert_eq!(act(Sysno::IoUringSetup), Action::Errno(38));
        assert_eq!(act(Sysno::Ptrace), Action::Errno(1));
        assert_eq!(act(Sysno::Read), Action::Allow);
        // The ptrace backend traps the same calls with SECCOMP_RET_TRACE.
        let prog = Interceptor::new()
            .backend(Backend::Ptrace)
            .policy()
            .compile()
            .unwrap();
        let act = |s: Sysno| {
            prog.action(&SeccompData::new(s.nr(), AUDIT_ARCH_X86_64))
                .unwrap()
        };
        assert_eq!(act(Sysno::Openat), Action::Trace(0));
        assert_eq!(act(Sysno::Execve), Action::Trace(0));
        assert_eq!(act(Sysno::IoUringSetup), Action::Errno(38));
        assert_eq!(act(Sysno::Read), Action::Allow);
    }

    #[test]
    fn old_kernels_are_refused_by_name() {
        for old in [
            "3.10.0-1160.el7.x86_64",
            "4.18.0-513.el8.x86_64",
            "5.13.19",
            "",
        ] {
            let e = check_release(old, Backend::Notify).unwrap_err();
            assert!(matches!(e, Error::KernelTooOld { .. }));
            assert!(e.notify_unavailable());
            assert!(e.to_string().contains("needs Linux 5.14"), "{e}");
        }
        for ok in ["5.14.0-362.el9.x86_64", "6.18.44-fc-v782", "10.0.1"] {
            check_release(ok, Backend::Notify).unwrap();
        }
        check_kernel(Backend::Notify).unwrap();
        // The ptrace backend runs on RHEL 8's 4.18, not on 4.4.
        check_release("4.18.0-513.el8.x86_64", Backend::Ptrace).unwrap();
        let e = check_release("4.4.0-210-generic", Backend::Ptrace).unwrap_err();
        assert!(e.to_string().contains("needs Linux 4.8"), "{e}");
        assert!(!e.notify_unavailable());
        check_kernel(Backend::Ptrace).unwrap();
    }

    #[test]
    fn exit_codes() {
        assert_eq!(ExitStatus::Exited(3).code(), 3);
        assert_eq!(
            ExitStatus::Signaled {
                signal: 9,
                core_dumped: false
            }
            .code(),
            137
        );
    }
}
