//! The ptrace thread: spawns the child, seizes it, follows the tree, handles traced syscalls,
//! passes signals and group-stops through, and reports the main child's exit.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use perch_sys::ptrace::{self, event, options, Regs, WaitStatus};
use perch_sys::spawn::{self, SockFilter, SpawnPlan, Stage};
use perch_sys::{mem, misc};
use perch_syscalls::{Call, Errno, PathPtr, Pid, TraceeView, PATH_MAX};

use crate::kernel::LinuxKernel;
use crate::supervisor::{self, Shared};
use crate::{Error, ExitStatus, Handler, Stats};

/// Bytes left untouched below the tracee's stack pointer when a new path is written there:
/// well past the 128-byte red zone and any signal frame being built.
const STACK_GAP: u64 = 4096;

/// A traced syscall at its seccomp stop: the tracee is stopped, so its pid and memory are stable.
#[derive(Debug)]
pub struct TracedCall {
    pid: Pid,
    call: Call,
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
}

impl TraceeView for TracedCall {
    fn read_memory(&self, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        mem::read_memory(self.pid, addr, buf)
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

fn run_inner(job: Job, handler: Arc<dyn Handler>) -> Result<ExitStatus, Error> {
    let plan =
        SpawnPlan::new(&job.candidates, &job.argv, &job.env, job.filter).map_err(|_| Error::Nul)?;
    let child = spawn::spawn(&plan).map_err(|errno| Error::Spawn { errno })?;
    let listener = match child.listener() {
        Ok(l) => l,
        Err(e) => {
            child.kill_and_reap();
            return Err(match e.stage {
                Stage::NoNewPrivs => Error::NoNewPrivs { errno: e.errno },
                Stage::Seccomp => Error::Seccomp { errno: e.errno },
                Stage::Handshake => Error::Spawn { errno: e.errno },
            });
        }
    };
    if !listener.wait_killable {
        tracing::debug!("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV not available");
    }
    if sync_wakeup() {
        if let Err(e) = perch_sys::notify::set_sync_wakeup(listener.fd.as_fd()) {
            tracing::debug!(errno = ?e, "SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP not available");
        }
    }
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
    let shared = Shared {
        listener: listener.fd,
        wake,
        handler: Arc::clone(&handler),
        stats: Arc::clone(&job.stats),
        kernel: Box::new(LinuxKernel),
        recv_lock: Mutex::new(()),
        receiver_busy: AtomicBool::new(false),
    };
    let status = std::thread::scope(|s| {
        for i in 0..job.workers {
            let shared = &shared;
            let spawned = std::thread::Builder::new()
                .name(format!("perch-notify-{i}"))
                .spawn_scoped(s, move || supervisor::worker(shared, i));
            if let Err(e) = spawned {
                child.kill_and_reap();
                let _ = misc::eventfd_signal(shared.wake.as_fd());
                return Err(Error::Thread(e));
            }
        }
        if let Err(errno) = child.release() {
            child.kill_and_reap();
            let _ = misc::eventfd_signal(shared.wake.as_fd());
            return Err(Error::Spawn { errno });
        }
        let mut tracer = Tracer {
            handler: handler.as_ref(),
            stats: &job.stats,
            main: child.pid(),
            tracees: HashSet::from([child.pid()]),
            main_status: None,
        };
        let status = tracer.run();
        let _ = misc::eventfd_signal(shared.wake.as_fd());
        Ok(status)
    })?;
    if status == ExitStatus::Exited(127) {
        if let Some(errno) = child.exec_error() {
            return Err(Error::Exec {
                program: job.program,
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
    handler: &'a dyn Handler,
    stats: &'a Stats,
    main: Pid,
    tracees: HashSet<Pid>,
    main_status: Option<ExitStatus>,
}

fn is_stop_signal(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
    )
}

impl Tracer<'_> {
    fn run(&mut self) -> ExitStatus {
        while self.main_status.is_none() {
            match ptrace::wait_own() {
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

    fn on_wait(&mut self, ws: WaitStatus) {
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
                        resume(pid, 0);
                    }
                    event::FORK | event::VFORK | event::CLONE => {
                        if let Ok(new) = ptrace::geteventmsg(pid) {
                            if let Ok(new) = i32::try_from(new) {
                                self.tracees.insert(Pid(new));
                            }
                        }
                        resume(pid, 0);
                    }
                    event::EXEC => {
                        // A non-leader thread that execs takes the leader's pid; its old tid
                        // is gone without an exit report.
                        if let Ok(former) = ptrace::geteventmsg(pid) {
                            if let Ok(former) = i32::try_from(former) {
                                if former != pid.0 {
                                    self.tracees.remove(&Pid(former));
                                }
                            }
                        }
                        resume(pid, 0);
                    }
                    event::STOP if is_stop_signal(signal) => {
                        // Group-stop of a seized tracee: stay stopped, report SIGCONT.
                        if let Err(e) = ptrace::listen(pid) {
                            tracing::debug!(pid = pid.0, errno = ?e, "PTRACE_LISTEN failed");
                        }
                    }
                    _ => resume(pid, 0),
                }
            }
            WaitStatus::SyscallStop { pid } => resume(pid, 0),
            WaitStatus::Stopped { pid, signal } => {
                // Signal-delivery stop: deliver it unchanged.
                self.tracees.insert(pid);
                resume(pid, signal);
            }
            WaitStatus::Continued { .. } => {}
        }
    }

    fn gone(&mut self, pid: Pid, status: ExitStatus) {
        self.tracees.remove(&pid);
        if pid == self.main {
            self.main_status = Some(status);
        }
    }

    fn on_seccomp(&mut self, pid: Pid) {
        self.stats.traced.fetch_add(1, Ordering::Relaxed);
        let Ok(mut regs) = ptrace::getregs(pid) else {
            return; // killed meanwhile
        };
        let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
        let traced = TracedCall {
            pid,
            call: Call::decode(regs.orig_rax, args),
        };
        if tracing::enabled!(target: "perch::syscall", tracing::Level::DEBUG) {
            tracing::debug!(target: "perch::syscall", pid = pid.0, "{} (traced)", traced.call.display(&traced));
        }
        let handler = self.handler;
        let action = match catch_unwind(AssertUnwindSafe(|| handler.on_trace_path(&traced))) {
            Ok(a) => a,
            Err(_) => {
                self.stats.panics.fetch_add(1, Ordering::Relaxed);
                tracing::error!(pid = pid.0, call = %traced.call, "handler panicked; the call fails with EIO");
                TraceAction::Fail(Errno::EIO)
            }
        };
        let action = match action {
            TraceAction::Rewrite(path) => match rewrite(pid, &mut regs, &traced.call, path) {
                Ok(()) => return,
                Err(e) => TraceAction::Fail(e),
            },
            TraceAction::RewriteExec {
                path,
                prepend,
                skip,
            } => match rewrite_exec(pid, &mut regs, &traced, path, &prepend, skip) {
                Ok(()) => return,
                Err(e) => TraceAction::Fail(e),
            },
            other => other,
        };
        if let TraceAction::Fail(errno) = action {
            // orig_rax = -1 skips the syscall; rax is its result.
            regs.orig_rax = u64::MAX;
            regs.rax = u64::from_ne_bytes((-i64::from(errno.raw())).to_ne_bytes());
            if let Err(e) = ptrace::setregs(pid, &regs) {
                tracing::debug!(pid = pid.0, errno = ?e, "PTRACE_SETREGS failed");
            }
        }
    }

    /// Kills every tracee still alive and reaps them all.
    fn kill_rest(&mut self) {
        if self.tracees.is_empty() {
            return;
        }
        tracing::debug!(count = self.tracees.len(), "killing processes left behind");
        for &pid in &self.tracees {
            let _ = misc::kill(pid, libc::SIGKILL);
        }
        while !self.tracees.is_empty() {
            match ptrace::wait_own() {
                Ok(WaitStatus::Exited { pid, .. }) | Ok(WaitStatus::Signaled { pid, .. }) => {
                    self.tracees.remove(&pid);
                }
                Ok(WaitStatus::Event { pid, .. })
                | Ok(WaitStatus::Stopped { pid, .. })
                | Ok(WaitStatus::SyscallStop { pid }) => {
                    // A new child reported before its parent died: kill it too.
                    if self.tracees.insert(pid) {
                        let _ = misc::kill(pid, libc::SIGKILL);
                    }
                    resume(pid, 0);
                }
                Ok(WaitStatus::Continued { .. }) => {}
                Err(_) => break,
            }
        }
    }
}

fn resume(pid: Pid, signal: i32) {
    if let Err(e) = ptrace::cont(pid, signal) {
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
    mem::write_all(pid, base, &block)?;
    *arg_slot(regs, path_index) = str_base + offsets[0];
    *arg_slot(regs, argv_index) = base;
    ptrace::setregs(pid, regs)
}

/// Writes `path` below the stack pointer and points the path register at it.
fn rewrite(pid: Pid, regs: &mut Regs, call: &Call, mut path: Vec<u8>) -> Result<(), Errno> {
    let index = call.path_arg_index().ok_or(Errno::EINVAL)?;
    if path.len() >= PATH_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    path.push(0);
    let len = path.len() as u64;
    let addr = regs.rsp.checked_sub(STACK_GAP + len).ok_or(Errno::EFAULT)? & !15;
    mem::write_all(pid, addr, &path)?;
    let slot = match index {
        0 => &mut regs.rdi,
        1 => &mut regs.rsi,
        2 => &mut regs.rdx,
        3 => &mut regs.r10,
        4 => &mut regs.r8,
        _ => &mut regs.r9,
    };
    *slot = addr;
    ptrace::setregs(pid, regs)
}
