//! The ptrace thread: spawns the child, seizes it, follows the tree, handles traced syscalls,
//! passes signals and group-stops through, and reports the main child's exit.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use perch_sys::misc;
use perch_sys::ptrace::{self, event, options, Regs, WaitStatus};
use perch_sys::spawn::{self, SockFilter, SpawnPlan, Stage};
use perch_syscalls::{Answer, Call, DirFd, Errno, PathPtr, Pid, SyscallSet, TraceeView, PATH_MAX};

use crate::kernel::{Kernel, LinuxKernel};
use crate::procfd::ProcFds;
use crate::receivers::{self, Pool};
use crate::spin::Spin;
use crate::supervisor::{self, Shared};
use crate::{Backend, Error, ExitStatus, Handler, Stats};

/// Bytes left untouched below the tracee's stack pointer when a new path is written there:
/// well past the 128-byte red zone and any signal frame being built.
const STACK_GAP: u64 = 4096;

/// A traced syscall at its seccomp stop: the tracee is stopped, so its pid and memory are stable.
pub struct TracedCall {
    pid: Pid,
    call: Call,
    kernel: Arc<dyn Kernel>,
    procfs: Arc<ProcFds>,
}

impl std::fmt::Debug for TracedCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracedCall")
            .field("pid", &self.pid)
            .field("call", &self.call)
            .finish()
    }
}

impl TracedCall {
    /// The stopped thread.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The decoded call.
    pub fn call(&self) -> &Call {
        &self.call
    }

    /// Reads a path argument (without the NUL).
    pub fn read_path(&self, path: PathPtr) -> Result<Vec<u8>, Errno> {
        self.read_cstr(path.0, PATH_MAX)
    }

    /// The kernel's path of the stopped thread's fd, or of its cwd for `AT_FDCWD` (through
    /// kept-open `/proc/<tid>/fd` directories, as notifications do). `EBADF` for a closed fd.
    pub fn fd_path_unverified(&self, fd: DirFd) -> Result<Vec<u8>, Errno> {
        self.procfs.fd_path(self.pid.0, fd)
    }

    /// An `O_PATH` fd of perch's on the object the stopped thread's fd (cwd for `AT_FDCWD`)
    /// refers to, for a call perch makes itself relative to it.
    pub fn open_fd(&self, fd: DirFd) -> Result<std::os::fd::OwnedFd, Errno> {
        self.procfs.open_fd(self.pid.0, fd)
    }

    /// Its credentials as against perch's, and its umask (one read of its `/proc` status).
    pub fn creds(&self) -> perch_syscalls::CallerCreds {
        crate::procfd::ProcFds::creds(self.pid.0)
    }
}

impl TraceeView for TracedCall {
    fn read_memory(&self, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        self.kernel.read_memory(self.pid, addr, buf)
    }
}

/// What to do with a traced syscall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceAction {
    /// Run it unchanged.
    Continue,
    /// Run it with its (first) path argument replaced by these bytes (no NUL). The new path is
    /// written below the tracee's stack pointer; if the call fails the original path is still
    /// where it was, so nothing needs restoring.
    Rewrite(Vec<u8>),
    /// For `execve`/`execveat` only: run `path` instead, with the argument vector
    /// `prepend ++ argv[skip..]` (the original `argv` pointers are reused for the tail). This is
    /// how a `#!` script or an ELF whose interpreter is virtual is started through a real
    /// interpreter file while the program still sees its own arguments. The new strings and
    /// pointer array are written below the tracee's stack pointer; the original memory is left
    /// as it was.
    RewriteExec {
        /// The file to execute (no NUL).
        path: Vec<u8>,
        /// New leading arguments (no NUL).
        prepend: Vec<Vec<u8>>,
        /// How many of the original arguments to drop before appending the rest.
        skip: usize,
    },
    /// Do not run it; it fails with this errno.
    Fail(Errno),
}

pub(crate) struct Job {
    pub candidates: Vec<OsString>,
    pub argv: Vec<OsString>,
    pub env: Vec<OsString>,
    pub filter: Vec<SockFilter>,
    pub workers: usize,
    pub stats: Arc<Stats>,
    pub program: OsString,
    /// The syscalls the filter answers with `SECCOMP_RET_USER_NOTIF`.
    pub notified: SyscallSet,
    /// The traced syscalls answered by [`Handler::on_trace_call`] (ptrace backend).
    pub answered: SyscallSet,
    pub backend: Backend,
    /// The process whose `/proc/<pid>/fd/N` a tracee opens to get perch's fd N (ptrace
    /// backend): the fd relay, or perch itself where the relay could not start.
    pub reopen_via: Pid,
}

/// The body of the ptrace thread. A panic here aborts: tracees would hang otherwise.
pub(crate) fn run(job: Job, handler: Arc<dyn Handler>) -> Result<ExitStatus, Error> {
    match catch_unwind(AssertUnwindSafe(|| run_inner(job, handler))) {
        Ok(r) => r,
        Err(_) => {
            tracing::error!("perch ptrace loop panicked; aborting");
            std::process::abort();
        }
    }
}

/// Maps a child setup failure to the run's error.
fn setup_error(e: spawn::SetupError) -> Error {
    match e.stage {
        Stage::NoNewPrivs => Error::NoNewPrivs { errno: e.errno },
        Stage::Seccomp => Error::Seccomp { errno: e.errno },
        Stage::Handshake => Error::Spawn { errno: e.errno },
    }
}

fn run_inner(mut job: Job, handler: Arc<dyn Handler>) -> Result<ExitStatus, Error> {
    let filter = std::mem::take(&mut job.filter);
    let plan =
        SpawnPlan::new(&job.candidates, &job.argv, &job.env, filter).map_err(|_| Error::Nul)?;
    if job.backend == Backend::Ptrace {
        return run_ptrace(plan.without_listener(), job, handler);
    }
    let child = spawn::spawn(&plan).map_err(|errno| Error::Spawn { errno })?;
    let listener = match child.listener() {
        Ok(l) => l,
        Err(e) => {
            child.kill_and_reap();
            return Err(setup_error(e));
        }
    };
    if !listener.wait_killable {
        tracing::debug!("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV not available");
    }
    // With the sync wake-up (6.6), threads wait in NOTIF_RECV itself (crate::receivers).
    let pool = sync_wakeup()
        .then(|| perch_sys::notify::set_sync_wakeup(listener.fd.as_fd()))
        .and_then(|set| match set.and_then(|()| misc::interrupt_signal()) {
            Ok(_) => Some(Pool::new(
                job.workers,
                receivers::receivers(
                    std::thread::available_parallelism().ok().map(|n| n.get()),
                    job.workers,
                ),
            )),
            Err(e) => {
                tracing::debug!(errno = ?e, "SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP not available");
                None
            }
        });
    if let Err(errno) = ptrace::seize(child.pid(), options::PERCH) {
        child.kill_and_reap();
        return Err(Error::Ptrace { errno });
    }
    let wake = match misc::eventfd() {
        Ok(w) => w,
        Err(errno) => {
            child.kill_and_reap();
            return Err(Error::Spawn { errno });
        }
    };
    let kernel: Arc<dyn Kernel> = Arc::new(LinuxKernel);
    let shared = Shared {
        listener: listener.fd,
        wake,
        handler: Arc::clone(&handler),
        stats: Arc::clone(&job.stats),
        kernel: Arc::clone(&kernel),
        recv_lock: Mutex::new(()),
        procfs: Default::default(),
    };
    // Every way out of the scope stops the threads first (the scope then joins them).
    let stop = |shared: &Shared| match &pool {
        Some(pool) => pool.stop(shared),
        None => {
            let _ = misc::eventfd_signal(shared.wake.as_fd());
        }
    };
    let threads = pool.as_ref().map_or(job.workers, Pool::threads);
    let kind = match pool {
        Some(_) => Stats::POOL_RECEIVERS,
        None => Stats::POOL_EPOLL,
    };
    job.stats.pool.store(kind, Ordering::Relaxed);
    let status = std::thread::scope(|s| {
        for i in 0..threads {
            let shared = &shared;
            let pool = pool.as_ref();
            let spawned = std::thread::Builder::new()
                .name(format!("perch-notify-{i}"))
                .spawn_scoped(s, move || match pool {
                    Some(pool) => supervisor::guarded(|| pool.serve(shared, i)),
                    None => supervisor::worker(shared),
                });
            if let Err(e) = spawned {
                child.kill_and_reap();
                if let Some(pool) = &pool {
                    pool.never_started(i);
                }
                stop(shared);
                return Err(Error::Thread(e));
            }
        }
        if let Err(errno) = child.release() {
            child.kill_and_reap();
            stop(&shared);
            return Err(Error::Spawn { errno });
        }
        let mut tracer = Tracer::new(Arc::clone(&kernel), handler.as_ref(), &job, child.pid());
        let status = tracer.run();
        stop(&shared);
        Ok(status)
    })?;
    finish(&job, &child, status)
}

/// The ptrace backend: no listener, no supervisor threads; every trapped call stops at its
/// seccomp stop on this thread.
fn run_ptrace(plan: SpawnPlan, job: Job, handler: Arc<dyn Handler>) -> Result<ExitStatus, Error> {
    let child = spawn::spawn(&plan).map_err(|errno| Error::Spawn { errno })?;
    if let Err(e) = child.filtered() {
        child.kill_and_reap();
        return Err(setup_error(e));
    }
    if let Err(errno) = ptrace::seize(child.pid(), options::PERCH) {
        child.kill_and_reap();
        return Err(Error::Ptrace { errno });
    }
    if let Err(errno) = child.release() {
        child.kill_and_reap();
        return Err(Error::Spawn { errno });
    }
    let kernel: Arc<dyn Kernel> = Arc::new(LinuxKernel);
    let status = Tracer::new(kernel, handler.as_ref(), &job, child.pid()).run();
    finish(&job, &child, status)
}

/// The run's result once the tree has exited.
fn finish(job: &Job, child: &spawn::Child, status: ExitStatus) -> Result<ExitStatus, Error> {
    if let (true, _) | (_, true) = perch_sys::mem::refused() {
        tracing::debug!(
            "process_vm_readv/writev are refused here (a container's seccomp profile?): \
             tracee memory went through /proc/<pid>/mem"
        );
    }
    if status == ExitStatus::Exited(127) {
        if let Some(errno) = child.exec_error() {
            return Err(Error::Exec {
                program: job.program.clone(),
                errno,
            });
        }
    }
    Ok(status)
}

fn sync_wakeup() -> bool {
    std::env::var_os("PERCH_NO_SYNC_WAKEUP").is_none()
}

struct Tracer<'a> {
    kernel: Arc<dyn Kernel>,
    handler: &'a dyn Handler,
    stats: &'a Stats,
    main: Pid,
    tracees: HashSet<Pid>,
    main_status: Option<ExitStatus>,
    notified: SyscallSet,
    answered: SyscallSet,
    /// perch's files reopened by a tracee's rewritten open, kept until that tracee's next
    /// stop (its open has then completed).
    pending: HashMap<Pid, OwnedFd>,
    procfs: Arc<ProcFds>,
    reopen_via: Pid,
    /// How long to poll for the next stop before sleeping (the ptrace backend only).
    spin: Spin,
}

fn is_stop_signal(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
    )
}

impl<'a> Tracer<'a> {
    fn new(kernel: Arc<dyn Kernel>, handler: &'a dyn Handler, job: &'a Job, main: Pid) -> Self {
        Tracer {
            kernel,
            handler,
            stats: &job.stats,
            main,
            tracees: HashSet::from([main]),
            main_status: None,
            notified: job.notified,
            answered: job.answered,
            pending: HashMap::new(),
            procfs: Arc::default(),
            reopen_via: job.reopen_via,
            spin: match job.backend {
                Backend::Ptrace => {
                    Spin::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
                }
                _ => Spin::off(),
            },
        }
    }

    fn run(&mut self) -> ExitStatus {
        while self.main_status.is_none() {
            match self.next_event() {
                Ok(ws) => self.on_wait(ws),
                Err(e) => {
                    // ECHILD: the main child is gone without us seeing it exit (cannot happen
                    // for our own child, but never loop forever).
                    tracing::error!(errno = ?e, "waitpid failed in the ptrace loop");
                    break;
                }
            }
        }
        self.kill_rest();
        self.main_status.unwrap_or(ExitStatus::Signaled {
            signal: libc::SIGKILL,
            core_dumped: false,
        })
    }

    /// The next stop or exit: polled for a while first when that pays off ([`Spin`]).
    fn next_event(&mut self) -> Result<WaitStatus, Errno> {
        let window = self.spin.window();
        if !window.is_zero() {
            let start = Instant::now();
            loop {
                if let Some(ws) = self.kernel.try_wait()? {
                    return Ok(ws);
                }
                if start.elapsed() >= window {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        let slept = Instant::now();
        let ws = self.kernel.wait();
        self.spin.slept(slept.elapsed());
        ws
    }

    fn on_wait(&mut self, ws: WaitStatus) {
        if !self.pending.is_empty() {
            self.pending.remove(&ws.pid());
        }
        match ws {
            WaitStatus::Exited { pid, code } => self.gone(pid, ExitStatus::Exited(code)),
            WaitStatus::Signaled { pid, signal, core } => self.gone(
                pid,
                ExitStatus::Signaled {
                    signal,
                    core_dumped: core,
                },
            ),
            WaitStatus::Event { pid, event, signal } => {
                self.tracees.insert(pid);
                match event {
                    event::SECCOMP => {
                        self.on_seccomp(pid);
                        resume(self.kernel.as_ref(), pid, 0);
                    }
                    event::FORK | event::VFORK | event::CLONE => {
                        if let Ok(new) = self.kernel.geteventmsg(pid) {
                            if let Ok(new) = i32::try_from(new) {
                                self.tracees.insert(Pid(new));
                            }
                        }
                        resume(self.kernel.as_ref(), pid, 0);
                    }
                    event::EXEC => {
                        // A non-leader thread that execs takes the leader's pid; its old tid
                        // is gone without an exit report.
                        if let Ok(former) = self.kernel.geteventmsg(pid) {
                            if let Ok(former) = i32::try_from(former) {
                                if former != pid.0 {
                                    self.tracees.remove(&Pid(former));
                                }
                            }
                        }
                        resume(self.kernel.as_ref(), pid, 0);
                    }
                    event::STOP if is_stop_signal(signal) => {
                        // Group-stop of a seized tracee: stay stopped, report SIGCONT.
                        if let Err(e) = self.kernel.listen(pid) {
                            tracing::debug!(pid = pid.0, errno = ?e, "PTRACE_LISTEN failed");
                        }
                    }
                    _ => resume(self.kernel.as_ref(), pid, 0),
                }
            }
            WaitStatus::SyscallStop { pid } => resume(self.kernel.as_ref(), pid, 0),
            WaitStatus::Stopped { pid, signal } => {
                // Signal-delivery stop: deliver it unchanged.
                self.tracees.insert(pid);
                self.restart_interrupted_notification(pid);
                resume(self.kernel.as_ref(), pid, signal);
            }
            WaitStatus::Continued { .. } => {}
        }
    }

    /// A signal that arrives while a notified call waits for perch (before perch received
    /// it) ends the wait with `-ERESTARTSYS`, which becomes `EINTR` for a handler without
    /// `SA_RESTART`, where natively the call (a `stat`, an `open` in `/cvmfs`) could not have
    /// been interrupted. Turned into `-ERESTARTNOINTR`, the call is made again after the
    /// handler. Left alone: a call that ran and can block natively (an `open` of a FIFO or a
    /// character device, continued by perch), whose `EINTR` is the program's to see.
    fn restart_interrupted_notification(&self, pid: Pid) {
        const ERESTARTSYS: i64 = 512;
        const ERESTARTNOINTR: i64 = 513;
        if self.notified.is_empty() {
            return;
        }
        let Ok(mut regs) = self.kernel.getregs(pid) else {
            return;
        };
        let nr = regs.orig_rax;
        if i64::from_ne_bytes(regs.rax.to_ne_bytes()) != -ERESTARTSYS
            || !u32::try_from(nr).is_ok_and(|n| self.notified.contains_nr(n))
        {
            return;
        }
        if self.may_block_natively(pid, &regs) {
            return;
        }
        regs.rax = u64::from_ne_bytes((-ERESTARTNOINTR).to_ne_bytes());
        if let Err(e) = self.kernel.setregs(pid, &regs) {
            tracing::debug!(pid = pid.0, errno = ?e, "restarting an interrupted call failed");
        }
    }

    /// Whether an interrupted open could have been waiting in the kernel (a FIFO or character
    /// device opened without `O_NONBLOCK`); unknown counts as yes.
    fn may_block_natively(&self, pid: Pid, regs: &Regs) -> bool {
        let (dirfd, path, flags) = match regs.orig_rax {
            2 => (None, regs.rdi, regs.rsi),             // open
            85 => (None, regs.rdi, 0),                   // creat
            257 => (Some(regs.rdi), regs.rsi, regs.rdx), // openat
            437 => {
                // openat2: flags are the first field of struct open_how.
                let mut b = [0u8; 8];
                match self.kernel.read_memory(pid, regs.rdx, &mut b) {
                    Ok(8) => (Some(regs.rdi), regs.rsi, u64::from_ne_bytes(b)),
                    _ => return true,
                }
            }
            _ => return false,
        };
        if flags & u64::try_from(libc::O_NONBLOCK).unwrap_or(0) != 0 {
            return false;
        }
        let view = TracedCall {
            pid,
            call: Call::decode(
                regs.orig_rax,
                [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9],
            ),
            kernel: Arc::clone(&self.kernel),
            procfs: Arc::clone(&self.procfs),
        };
        let Ok(p) = view.read_cstr(path, PATH_MAX) else {
            return true;
        };
        use std::os::unix::ffi::OsStrExt;
        let mut host = std::path::PathBuf::new();
        if p.first() != Some(&b'/') {
            // The dirfd is an int: the low 32 bits of the register (AT_FDCWD is negative).
            let low = u32::try_from(dirfd.unwrap_or(0) & 0xffff_ffff).unwrap_or(0);
            let at = i32::from_ne_bytes(low.to_ne_bytes());
            host.push(match dirfd {
                Some(_) if at != libc::AT_FDCWD => format!("/proc/{}/fd/{at}", pid.0),
                _ => format!("/proc/{}/cwd", pid.0),
            });
        }
        host.push(std::ffi::OsStr::from_bytes(&p));
        use std::os::unix::fs::FileTypeExt;
        // A path the host does not have (one in /cvmfs) never blocks.
        std::fs::metadata(&host)
            .is_ok_and(|m| m.file_type().is_fifo() || m.file_type().is_char_device())
    }

    fn gone(&mut self, pid: Pid, status: ExitStatus) {
        self.tracees.remove(&pid);
        if pid == self.main {
            self.main_status = Some(status);
        }
    }

    fn on_seccomp(&mut self, pid: Pid) {
        self.stats.traced.fetch_add(1, Ordering::Relaxed);
        let Ok(mut regs) = self.kernel.getregs(pid) else {
            return; // killed meanwhile
        };
        let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
        let traced = TracedCall {
            kernel: Arc::clone(&self.kernel),
            procfs: Arc::clone(&self.procfs),
            pid,
            call: Call::decode(regs.orig_rax, args),
        };
        let handler = self.handler;
        if u32::try_from(regs.orig_rax).is_ok_and(|nr| self.answered.contains_nr(nr)) {
            let answer = self.guarded(&traced, Answer::Err(Errno::EIO), || {
                handler.on_trace_call(&traced)
            });
            self.apply(pid, &mut regs, &traced.call, answer);
            return;
        }
        if tracing::enabled!(target: "perch::syscall", tracing::Level::DEBUG) {
            tracing::debug!(target: "perch::syscall", pid = pid.0, "{} (traced)", traced.call.display(&traced));
        }
        let action = self.guarded(&traced, TraceAction::Fail(Errno::EIO), || {
            handler.on_trace_path(&traced)
        });
        let action = match action {
            TraceAction::Rewrite(path) => {
                match rewrite(self.kernel.as_ref(), pid, &mut regs, &traced.call, path) {
                    Ok(()) => return,
                    Err(e) => TraceAction::Fail(e),
                }
            }
            TraceAction::RewriteExec {
                path,
                prepend,
                skip,
            } => match rewrite_exec(
                self.kernel.as_ref(),
                pid,
                &mut regs,
                &traced,
                path,
                &prepend,
                skip,
            ) {
                Ok(()) => return,
                Err(e) => TraceAction::Fail(e),
            },
            other => other,
        };
        if let TraceAction::Fail(errno) = action {
            self.skip(pid, &mut regs, -i64::from(errno.raw()));
        }
    }

    /// The handler's answer to `traced`, or `on_panic` (counted and logged) if it panicked.
    fn guarded<T>(&self, traced: &TracedCall, on_panic: T, f: impl FnOnce() -> T) -> T {
        catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
            self.stats.panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!(pid = traced.pid.0, call = %traced.call, "handler panicked; the call fails with EIO");
            on_panic
        })
    }

    /// Skips the stopped call with `result` (a value, or `-errno`): `orig_rax = -1` skips the
    /// syscall and `rax` is its result.
    fn skip(&self, pid: Pid, regs: &mut Regs, result: i64) {
        regs.orig_rax = u64::MAX;
        regs.rax = u64::from_ne_bytes(result.to_ne_bytes());
        if let Err(e) = self.kernel.setregs(pid, regs) {
            tracing::debug!(pid = pid.0, errno = ?e, "PTRACE_SETREGS failed");
        }
    }

    /// Applies the handler's answer at the seccomp stop (ptrace backend).
    fn apply(&mut self, pid: Pid, regs: &mut Regs, call: &Call, answer: Answer) {
        let result = match answer {
            Answer::Continue => return,
            Answer::Err(e) => -i64::from(e.raw()),
            Answer::Ret(v) => v,
            Answer::Write { addr, data, ret } => match self.kernel.write_memory(pid, addr, &data) {
                Ok(()) => ret,
                Err(e) => -i64::from(e.raw()),
            },
            Answer::Fd { fd, .. } => match reopen(
                self.kernel.as_ref(),
                pid,
                regs,
                call,
                reopen_path(self.reopen_via, &fd),
            ) {
                Ok(()) => {
                    self.pending.insert(pid, fd);
                    return;
                }
                Err(e) => -i64::from(e.raw()),
            },
        };
        self.skip(pid, regs, result);
    }

    /// Kills every tracee still alive and reaps them all.
    fn kill_rest(&mut self) {
        if self.tracees.is_empty() {
            return;
        }
        tracing::debug!(count = self.tracees.len(), "killing processes left behind");
        for &pid in &self.tracees {
            let _ = self.kernel.kill(pid, libc::SIGKILL);
        }
        while !self.tracees.is_empty() {
            match self.kernel.wait() {
                Ok(WaitStatus::Exited { pid, .. }) | Ok(WaitStatus::Signaled { pid, .. }) => {
                    self.tracees.remove(&pid);
                }
                Ok(WaitStatus::Event { pid, .. })
                | Ok(WaitStatus::Stopped { pid, .. })
                | Ok(WaitStatus::SyscallStop { pid }) => {
                    // A new child reported before its parent died: kill it too.
                    if self.tracees.insert(pid) {
                        let _ = self.kernel.kill(pid, libc::SIGKILL);
                    }
                    resume(self.kernel.as_ref(), pid, 0);
                }
                Ok(WaitStatus::Continued { .. }) => {}
                Err(_) => break,
            }
        }
    }
}

fn resume(kernel: &dyn Kernel, pid: Pid, signal: i32) {
    if let Err(e) = kernel.cont(pid, signal) {
        // ESRCH: killed meanwhile.
        tracing::debug!(pid = pid.0, errno = ?e, "PTRACE_CONT failed");
    }
}

/// Most argument pointers read from a tracee's `argv` (the kernel's own limit is lower).
const MAX_ARGS: usize = 0x7fff_ffff / 8;

fn arg_slot(regs: &mut Regs, index: usize) -> &mut u64 {
    match index {
        0 => &mut regs.rdi,
        1 => &mut regs.rsi,
        2 => &mut regs.rdx,
        3 => &mut regs.r10,
        4 => &mut regs.r8,
        _ => &mut regs.r9,
    }
}

/// Writes `path`, the `prepend` strings and a new argv array (`prepend ++ argv[skip..]`)
/// below the stack pointer, and points the path and argv registers at them.
fn rewrite_exec(
    kernel: &dyn Kernel,
    pid: Pid,
    regs: &mut Regs,
    traced: &TracedCall,
    path: Vec<u8>,
    prepend: &[Vec<u8>],
    skip: usize,
) -> Result<(), Errno> {
    let (path_index, argv_index, argv) = match *traced.call() {
        Call::Execve { argv, .. } => (0, 1, argv.0),
        Call::Execveat { argv, .. } => (1, 2, argv.0),
        _ => return Err(Errno::EINVAL),
    };
    // The original argv pointers (the kernel fails a bad array with EFAULT: so do we).
    let mut tail = Vec::new();
    if argv != 0 {
        let mut i = 0u64;
        loop {
            let mut b = [0u8; 8];
            if traced.read_memory(argv + 8 * i, &mut b)? != 8 {
                return Err(Errno::EFAULT);
            }
            let p = u64::from_ne_bytes(b);
            if p == 0 {
                break;
            }
            if usize::try_from(i).map_or(true, |i| i >= skip) {
                tail.push(p);
            }
            i += 1;
            if tail.len() > MAX_ARGS {
                return Err(Errno::E2BIG);
            }
        }
    }
    if path.len() >= PATH_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    // Layout, from low to high: pointer array, then the strings.
    let mut strings = Vec::new();
    let mut offsets = Vec::new();
    for s in std::iter::once(&path).chain(prepend.iter()) {
        offsets.push(strings.len() as u64);
        strings.extend_from_slice(s);
        strings.push(0);
    }
    let nptr = (prepend.len() + tail.len() + 1) as u64;
    let total = nptr * 8 + strings.len() as u64;
    let base = regs
        .rsp
        .checked_sub(STACK_GAP + total)
        .ok_or(Errno::EFAULT)?
        & !15;
    let str_base = base + nptr * 8;
    let mut block = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for off in &offsets[1..] {
        block.extend_from_slice(&(str_base + off).to_ne_bytes());
    }
    for p in &tail {
        block.extend_from_slice(&p.to_ne_bytes());
    }
    block.extend_from_slice(&0u64.to_ne_bytes());
    block.extend_from_slice(&strings);
    kernel.write_memory(pid, base, &block)?;
    *arg_slot(regs, path_index) = str_base + offsets[0];
    *arg_slot(regs, argv_index) = base;
    kernel.setregs(pid, regs)
}

/// The flags an open no longer needs once perch has opened the file: the create, exclusive
/// and truncate steps are done, and the new path is the object itself (no symlink to refuse;
/// a `/proc/<pid>/fd/N` path would be refused with `O_NOFOLLOW`). `__O_TMPFILE` with its
/// `O_DIRECTORY` goes too: the reopened file is the regular file perch made.
fn reopen_flags(flags: u64) -> u64 {
    const O_TMPFILE_ONLY: u64 = 0o20_000_000;
    let bits = |f: i32| u64::from(f.unsigned_abs());
    let mut strip =
        bits(libc::O_CREAT) | bits(libc::O_EXCL) | bits(libc::O_TRUNC) | bits(libc::O_NOFOLLOW);
    if flags & O_TMPFILE_ONLY != 0 {
        strip |= O_TMPFILE_ONLY | bits(libc::O_DIRECTORY);
    }
    flags & !strip
}

/// The path a tracee can open to get perch's file `fd` again: `/proc/<via>/fd/N`, `via` being
/// the fd relay that shares perch's descriptor table (perch itself is not dumpable; see
/// `perch_sys::relay`), or perch where the relay could not start. A magic link,
/// so the tracee reaches the very file perch opened and checked, never what a name leads to
/// by then (another thread of the program may have swapped a symlink in it).
fn reopen_path(via: Pid, fd: &OwnedFd) -> Vec<u8> {
    format!("/proc/{}/fd/{}", via.0, fd.as_raw_fd()).into_bytes()
}

/// An `Fd` answer in the ptrace backend: the tracee's open runs on the path of perch's file
/// (written below its stack pointer with, for `openat2`, a new `struct open_how`), with
/// [`reopen_flags`]; `creat` becomes `open(path, O_WRONLY)`.
fn reopen(
    kernel: &dyn Kernel,
    pid: Pid,
    regs: &mut Regs,
    call: &Call,
    mut path: Vec<u8>,
) -> Result<(), Errno> {
    if path.len() >= PATH_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    path.push(0);
    match *call {
        Call::Open { .. } => {
            let addr = stage_below_stack(kernel, pid, regs.rsp, &path)?;
            regs.rdi = addr;
            regs.rsi = reopen_flags(regs.rsi);
        }
        Call::Openat { .. } => {
            let addr = stage_below_stack(kernel, pid, regs.rsp, &path)?;
            regs.rsi = addr;
            regs.rdx = reopen_flags(regs.rdx);
        }
        Call::Creat { .. } => {
            let addr = stage_below_stack(kernel, pid, regs.rsp, &path)?;
            regs.orig_rax = u64::try_from(libc::SYS_open).unwrap_or(2);
            regs.rdi = addr;
            regs.rsi = u64::try_from(libc::O_WRONLY).unwrap_or(1);
            regs.rdx = 0;
        }
        Call::Openat2 { how, .. } => {
            let mut b = [0u8; 8];
            if kernel.read_memory(pid, how.0, &mut b)? != 8 {
                return Err(Errno::EFAULT);
            }
            // struct open_how { flags, mode, resolve }: mode must be 0 without O_CREAT, and
            // the resolve restrictions were perch's to apply (the new path is absolute).
            let mut block = Vec::with_capacity(24 + path.len());
            block.extend_from_slice(&reopen_flags(u64::from_ne_bytes(b)).to_ne_bytes());
            block.extend_from_slice(&[0u8; 16]);
            block.extend_from_slice(&path);
            let addr = stage_below_stack(kernel, pid, regs.rsp, &block)?;
            regs.rsi = addr + 24;
            regs.rdx = addr;
            regs.r10 = 24;
        }
        _ => return Err(Errno::EINVAL),
    }
    kernel.setregs(pid, regs)
}

/// Writes `data` below the stack pointer `rsp` (past [`STACK_GAP`], 16-aligned); returns
/// its address.
fn stage_below_stack(kernel: &dyn Kernel, pid: Pid, rsp: u64, data: &[u8]) -> Result<u64, Errno> {
    let len = data.len() as u64;
    let addr = rsp.checked_sub(STACK_GAP + len).ok_or(Errno::EFAULT)? & !15;
    kernel.write_memory(pid, addr, data)?;
    Ok(addr)
}

/// Writes `path` below the stack pointer and points the path register at it.
fn rewrite(
    kernel: &dyn Kernel,
    pid: Pid,
    regs: &mut Regs,
    call: &Call,
    mut path: Vec<u8>,
) -> Result<(), Errno> {
    let index = call.path_arg_index().ok_or(Errno::EINVAL)?;
    if path.len() >= PATH_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    path.push(0);
    let addr = stage_below_stack(kernel, pid, regs.rsp, &path)?;
    *arg_slot(regs, index) = addr;
    kernel.setregs(pid, regs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::recording::{Op, RecordingKernel};
    use perch_syscalls::FakeMemory;

    const MAIN: Pid = Pid(100);
    const RSP: u64 = 0x7fff_0000;

    /// Rewrites `/v/...` to `/real/...`, fails `/fail`, continues anything else.
    struct H;
    impl Handler for H {
        fn on_syscall(&self, n: crate::Notification<'_>) {
            n.continue_unchecked();
        }
        fn on_trace_path(&self, call: &TracedCall) -> TraceAction {
            let Some((_, p)) = call.call().path() else {
                return TraceAction::Continue;
            };
            match call.read_path(p).unwrap().as_slice() {
                b"/fail" => TraceAction::Fail(Errno::ENOENT),
                b"/panic" => panic!("handler bug"),
                p if p.starts_with(b"/v/") => {
                    let mut out = b"/real/".to_vec();
                    out.extend_from_slice(&p[3..]);
                    TraceAction::Rewrite(out)
                }
                _ => TraceAction::Continue,
            }
        }
        /// `/err` fails, `/write` writes "xy" at 0x2000 and returns 7, `/fd` is perch's
        /// `/dev/null`; anything else continues.
        fn on_trace_call(&self, call: &TracedCall) -> Answer {
            let Some((_, p)) = call.call().path() else {
                return Answer::Continue;
            };
            match call.read_path(p).unwrap().as_slice() {
                b"/err" => Answer::Err(Errno::ENOENT),
                b"/write" => Answer::Write {
                    addr: 0x2000,
                    data: b"xy".to_vec(),
                    ret: 7,
                },
                b"/fd" => Answer::Fd {
                    fd: std::fs::File::open("/dev/null").unwrap().into(),
                    cloexec: false,
                },
                _ => Answer::Continue,
            }
        }
    }

    fn kernel(nr: u64, path: &[u8]) -> RecordingKernel {
        let mut mem = FakeMemory::new();
        mem.map_cstr(0x1000, path);
        let mut k = RecordingKernel::new(mem);
        k.regs.orig_rax = nr;
        k.regs.rdi = 0x1000;
        k.regs.rsp = RSP;
        k.regs.rax = u64::from_ne_bytes((-38i64).to_ne_bytes());
        k
    }

    fn trace(k: RecordingKernel, waits: Vec<WaitStatus>) -> (ExitStatus, Vec<Op>, Stats) {
        trace_as(k, MAIN, SyscallSet::default(), waits)
    }

    /// The fd relay's pid in these tests.
    const RELAY: Pid = Pid(4242);

    /// As [`trace`], with `main` as the main tracee and `notified` as the notified set.
    fn trace_as(
        k: RecordingKernel,
        main: Pid,
        notified: SyscallSet,
        waits: Vec<WaitStatus>,
    ) -> (ExitStatus, Vec<Op>, Stats) {
        k.script_waits(waits);
        let k = Arc::new(k);
        let stats = Stats::default();
        let status = Tracer {
            kernel: k.clone(),
            handler: &H,
            stats: &stats,
            main,
            tracees: HashSet::from([main]),
            main_status: None,
            answered: if notified.is_empty() {
                SyscallSet::of(&[perch_syscalls::Sysno::Open, perch_syscalls::Sysno::Openat])
            } else {
                SyscallSet::default()
            },
            notified,
            pending: HashMap::new(),
            procfs: Arc::default(),
            reopen_via: RELAY,
            // The ptrace backend's tests poll (the scripted events come from `try_wait`),
            // the notify backend's sleep in `wait`: both paths run.
            spin: if notified.is_empty() {
                Spin::new(2)
            } else {
                Spin::off()
            },
        }
        .run();
        (status, k.ops(), stats)
    }

    fn neg(v: i64) -> u64 {
        u64::from_ne_bytes(v.to_ne_bytes())
    }

    #[test]
    fn ptrace_answers_skip_the_call_with_their_result() {
        // open("/err") → -ENOENT, open("/write") → memory written, 7; both skipped.
        let (_, ops, _) = trace(kernel(2, b"/err"), vec![seccomp_stop(), exit0()]);
        assert!(
            ops.contains(&Op::SetRegs(100, [u64::MAX, neg(-2), 0x1000, 0, 0])),
            "{ops:?}"
        );
        let (_, ops, _) = trace(kernel(2, b"/write"), vec![seccomp_stop(), exit0()]);
        let w = ops
            .iter()
            .position(|o| *o == Op::Write(100, 0x2000, b"xy".to_vec()));
        let r = ops
            .iter()
            .position(|o| *o == Op::SetRegs(100, [u64::MAX, 7, 0x1000, 0, 0]));
        assert!(w.is_some() && r > w, "{ops:?}");
        // Anything else runs unchanged.
        let (_, ops, _) = trace(kernel(2, b"/etc/passwd"), vec![seccomp_stop(), exit0()]);
        assert!(!ops
            .iter()
            .any(|o| matches!(o, Op::SetRegs(..) | Op::Write(..))));
    }

    #[test]
    fn ptrace_fd_answers_reopen_perchs_file_through_its_magic_link() {
        let flags = |f: i32| u64::from(f.unsigned_abs());
        // open("/fd", O_RDWR|O_CREAT|O_EXCL|O_TRUNC|O_NOFOLLOW|O_CLOEXEC) runs as
        // open("/proc/<relay>/fd/N", O_RDWR|O_CLOEXEC) with the path below the stack, N being
        // perch's fd of /dev/null (the relay shares perch's descriptor table).
        let mut k = kernel(2, b"/fd");
        let asked = flags(libc::O_RDWR)
            | flags(libc::O_CREAT)
            | flags(libc::O_EXCL)
            | flags(libc::O_TRUNC)
            | flags(libc::O_NOFOLLOW)
            | flags(libc::O_CLOEXEC);
        k.regs.rsi = asked;
        let (_, ops, _) = trace(k, vec![seccomp_stop(), exit0()]);
        let prefix = format!("/proc/{}/fd/", RELAY.0).into_bytes();
        let path = ops
            .iter()
            .find_map(|o| match o {
                Op::Write(100, _, p) if p.starts_with(&prefix) && p.ends_with(b"\0") => {
                    Some(p.clone())
                }
                _ => None,
            })
            .expect("a /proc/<relay>/fd/N path written");
        let addr = (RSP - STACK_GAP - path.len() as u64) & !15;
        let rax = neg(-38);
        let want = flags(libc::O_RDWR) | flags(libc::O_CLOEXEC);
        assert!(ops.contains(&Op::Write(100, addr, path)), "{ops:?}");
        assert!(
            ops.contains(&Op::SetRegs(100, [2, rax, addr, want, 0])),
            "{ops:?}"
        );
        // openat(AT_FDCWD, "/fd", flags): the path is the second argument, flags the third.
        let mut k = kernel(257, b"/fd");
        k.regs.rdi = neg(i64::from(libc::AT_FDCWD));
        k.regs.rsi = 0x1000;
        k.regs.rdx = flags(libc::O_RDONLY) | flags(libc::O_NOFOLLOW);
        let (_, ops, _) = trace(k, vec![seccomp_stop(), exit0()]);
        assert!(
            ops.contains(&Op::SetRegs(
                100,
                [257, rax, neg(i64::from(libc::AT_FDCWD)), addr, 0]
            )),
            "{ops:?}"
        );
    }

    #[test]
    fn reopen_flags_keep_access_mode_and_cloexec() {
        let f = |v: i32| u64::from(v.unsigned_abs());
        assert_eq!(reopen_flags(f(libc::O_RDONLY)), 0);
        assert_eq!(
            reopen_flags(f(libc::O_WRONLY) | f(libc::O_CREAT) | f(libc::O_APPEND)),
            f(libc::O_WRONLY) | f(libc::O_APPEND)
        );
        assert_eq!(
            reopen_flags(f(libc::O_PATH) | f(libc::O_DIRECTORY) | f(libc::O_NOFOLLOW)),
            f(libc::O_PATH) | f(libc::O_DIRECTORY)
        );
        assert_eq!(
            reopen_flags(f(libc::O_TMPFILE) | f(libc::O_RDWR)),
            f(libc::O_RDWR)
        );
    }

    /// The ops of a run where `main` gets a signal-delivery stop (SIGALRM), then exits.
    fn signal_stop(k: RecordingKernel, main: Pid, notified: SyscallSet) -> Vec<Op> {
        let waits = vec![
            WaitStatus::Stopped {
                pid: main,
                signal: libc::SIGALRM,
            },
            WaitStatus::Exited { pid: main, code: 0 },
        ];
        trace_as(k, main, notified, waits).1
    }

    fn seccomp_stop() -> WaitStatus {
        WaitStatus::Event {
            pid: MAIN,
            event: event::SECCOMP,
            signal: libc::SIGTRAP,
        }
    }

    fn exit0() -> WaitStatus {
        WaitStatus::Exited { pid: MAIN, code: 0 }
    }

    #[test]
    fn exec_path_is_written_below_the_stack_and_the_register_set() {
        let (status, ops, stats) = trace(kernel(59, b"/v/bin/x"), vec![seccomp_stop(), exit0()]);
        assert_eq!(status, ExitStatus::Exited(0));
        assert_eq!(stats.traced(), 1);
        let new = b"/real/bin/x\0".to_vec();
        let addr = (RSP - STACK_GAP - new.len() as u64) & !15;
        assert!(addr + new.len() as u64 <= RSP - STACK_GAP);
        let rax = u64::from_ne_bytes((-38i64).to_ne_bytes());
        let want_tail = [
            Op::Write(100, addr, new),
            Op::SetRegs(100, [59, rax, addr, 0, 0]),
            Op::Cont(100, 0),
            Op::Wait,
        ];
        assert_eq!(ops[0], Op::Wait);
        assert_eq!(ops[1], Op::GetRegs(100));
        assert!(matches!(ops[2], Op::Read(100, 0x1000, _)), "{ops:?}");
        assert_eq!(ops[ops.len() - 4..], want_tail[..], "{ops:?}");
    }

    #[test]
    fn failed_call_is_skipped_with_its_errno() {
        let (_, ops, _) = trace(kernel(80, b"/fail"), vec![seccomp_stop(), exit0()]);
        let enoent = u64::from_ne_bytes((-2i64).to_ne_bytes());
        assert!(
            ops.contains(&Op::SetRegs(100, [u64::MAX, enoent, 0x1000, 0, 0])),
            "{ops:?}"
        );
        assert!(!ops.iter().any(|o| matches!(o, Op::Write(..))));
    }

    #[test]
    fn untouched_call_just_continues() {
        let (_, ops, _) = trace(kernel(59, b"/bin/true"), vec![seccomp_stop(), exit0()]);
        assert!(!ops
            .iter()
            .any(|o| matches!(o, Op::SetRegs(..) | Op::Write(..))));
        assert!(ops.contains(&Op::Cont(100, 0)));
    }

    #[test]
    fn handler_panic_fails_the_call_with_eio() {
        let (status, ops, stats) = trace(kernel(59, b"/panic"), vec![seccomp_stop(), exit0()]);
        assert_eq!(status, ExitStatus::Exited(0));
        assert_eq!(stats.panics(), 1);
        let eio = u64::from_ne_bytes((-5i64).to_ne_bytes());
        assert!(ops.contains(&Op::SetRegs(100, [u64::MAX, eio, 0x1000, 0, 0])));
    }

    #[test]
    fn interrupted_notification_waits_are_restarted() {
        let neg = |v: i64| u64::from_ne_bytes(v.to_ne_bytes());
        let mut notified = SyscallSet::default();
        for nr in [2, 4, 257] {
            notified.insert_nr(nr);
        }
        // (syscall, path, rax at the signal stop, restarted?)
        let cases: [(u64, &[u8], i64, bool); 6] = [
            (4, b"/cvmfs/r/x", -512, true), // stat: only the wait can be interrupted
            (2, b"/nonexistent/perch", -512, true), // open of a path the host lacks
            (2, b"/dev/null", -512, false), // a character device may block natively
            (2, b"/dev/null", -4, false),   // already EINTR: not ours
            (0, b"", -512, false),          // read: not notified
            (4, b"/cvmfs/r/x", 0, false),   // not interrupted
        ];
        for (nr, path, rax, restarted) in cases {
            let mut k = kernel(nr, path);
            k.regs.rax = neg(rax);
            let ops = signal_stop(k, MAIN, notified);
            let set: Vec<Op> = ops
                .iter()
                .filter(|o| matches!(o, Op::SetRegs(..)))
                .cloned()
                .collect();
            let want = if restarted {
                vec![Op::SetRegs(100, [nr, neg(-513), 0x1000, 0, 0])]
            } else {
                vec![]
            };
            assert_eq!(
                set,
                want,
                "nr {nr} {:?} rax {rax}",
                String::from_utf8_lossy(path)
            );
            assert!(ops.contains(&Op::Cont(100, libc::SIGALRM)));
        }
    }

    #[test]
    fn interrupted_openat_is_judged_relative_to_the_callers_cwd() {
        // The caller is this test process: its cwd is real, so relative paths resolve.
        let me = Pid(i32::try_from(std::process::id()).unwrap());
        let neg = |v: i64| u64::from_ne_bytes(v.to_ne_bytes());
        let mut notified = SyscallSet::default();
        notified.insert_nr(257);
        let deep_null = "../".repeat(40) + "dev/null";
        for (path, restarted) in [
            (deep_null.as_bytes(), false),
            (&b"no-such-file-here"[..], true),
        ] {
            let mut k = kernel(257, path);
            k.regs.rdi = neg(i64::from(libc::AT_FDCWD));
            k.regs.rsi = 0x1000;
            k.regs.rax = neg(-512);
            let ops = signal_stop(k, me, notified);
            let set = ops.iter().any(|o| matches!(o, Op::SetRegs(..)));
            assert_eq!(set, restarted, "{:?}", String::from_utf8_lossy(path));
        }
    }

    #[test]
    fn signals_and_group_stops_pass_through() {
        let mut k = kernel(59, b"/x");
        k.eventmsg = 101; // the forked child
        let waits = vec![
            WaitStatus::Stopped {
                pid: MAIN,
                signal: libc::SIGUSR1,
            },
            WaitStatus::Event {
                pid: MAIN,
                event: event::FORK,
                signal: libc::SIGTRAP,
            },
            // The new child's first stop, then it stops itself and is continued.
            WaitStatus::Event {
                pid: Pid(101),
                event: event::STOP,
                signal: libc::SIGTRAP,
            },
            WaitStatus::Stopped {
                pid: Pid(101),
                signal: libc::SIGSTOP,
            },
            WaitStatus::Event {
                pid: Pid(101),
                event: event::STOP,
                signal: libc::SIGSTOP,
            },
            WaitStatus::Event {
                pid: Pid(101),
                event: event::STOP,
                signal: libc::SIGTRAP,
            },
            WaitStatus::Stopped {
                pid: Pid(101),
                signal: libc::SIGCONT,
            },
            WaitStatus::Signaled {
                pid: MAIN,
                signal: libc::SIGKILL,
                core: false,
            },
            // Left behind: killed and reaped.
            WaitStatus::Signaled {
                pid: Pid(101),
                signal: libc::SIGKILL,
                core: false,
            },
        ];
        let (status, ops, _) = trace(k, waits);
        assert_eq!(
            status,
            ExitStatus::Signaled {
                signal: 9,
                core_dumped: false
            }
        );
        let relevant: Vec<Op> = ops.into_iter().filter(|o| *o != Op::Wait).collect();
        assert_eq!(
            relevant,
            vec![
                Op::Cont(100, libc::SIGUSR1),
                Op::GetEventMsg(100),
                Op::Cont(100, 0),
                Op::Cont(101, 0),
                Op::Cont(101, libc::SIGSTOP),
                Op::Listen(101),
                Op::Cont(101, 0),
                Op::Cont(101, libc::SIGCONT),
                Op::Kill(101, libc::SIGKILL),
            ]
        );
    }

    #[test]
    fn exec_by_a_thread_forgets_its_old_tid() {
        let mut k = kernel(59, b"/x");
        k.eventmsg = 102; // the thread that called execve
        let waits = vec![
            WaitStatus::Event {
                pid: MAIN,
                event: event::CLONE,
                signal: libc::SIGTRAP,
            },
            WaitStatus::Event {
                pid: MAIN,
                event: event::EXEC,
                signal: libc::SIGTRAP,
            },
            exit0(),
        ];
        let (status, ops, _) = trace(k, waits);
        assert_eq!(status, ExitStatus::Exited(0));
        // Nothing is left to kill: tid 102 became the leader.
        assert!(!ops.iter().any(|o| matches!(o, Op::Kill(..))), "{ops:?}");
    }
}
