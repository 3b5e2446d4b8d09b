//! The supervisor threads: a pool receiving notifications concurrently and running the handler
//! on each. This is the pool for kernels without `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (before
//! Linux 6.6); from 6.6 threads wait in `NOTIF_RECV` itself ([`crate::receivers`]).
//!
//! Every thread waits in its own epoll instance on the listener (with `EPOLLEXCLUSIVE`) and on
//! the wake-up eventfd. A pending notification wakes one thread that is waiting (the kernel
//! skips instances whose thread is busy in a handler), which receives it and runs the handler;
//! two pending notifications wake two threads, and so on up to the pool size. So every thread
//! of the pool can be answering a notification at once: the threads of a program no longer
//! queue behind each other, and a slow handler (a download) never holds up the rest. A thread
//! done with its handler goes back to waiting.
//!
//! Why this shape:
//! - Idle threads cost nothing (blocked in `epoll_wait`), and a notification costs one thread
//!   wake-up, as with a single receiver: no hand-off between threads (a leader/follower pool,
//!   tried first, paid a futex wake and a second context switch on every notification, which
//!   on a 2-CPU machine cost more than the concurrency gained; see bench/stat_threads.sh).
//! - `NOTIF_RECV` is entered by one thread at a time (the receive lock), and only after a
//!   zero-timeout `poll` under that lock saw a pending notification, so it never blocks: before
//!   Linux 6.6 a blocked `NOTIF_RECV` could not be woken at shutdown (and `O_NONBLOCK` does not
//!   apply to it). A pending notification whose caller was killed meanwhile makes `NOTIF_RECV`
//!   fail with `ENOENT` rather than block, because the kernel's count of pending requests is
//!   not lowered for it. The section under the lock never blocks, so waiting for it is short.
//! - Shutdown is one eventfd write that is never read: every thread's epoll reports it.
//! - Answers (`SEND`, `ADDFD` with `SECCOMP_ADDFD_FLAG_SEND`) need no lock: the kernel matches
//!   them to the notification by id, and one handler owns each notification.

use std::os::fd::{AsFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use perch_sys::misc;
use perch_sys::notify::Notif;
use perch_syscalls::Errno;

use crate::kernel::Kernel;
use crate::procfd::ProcFds;
use crate::{Handler, Notification, Stats};

pub(crate) struct Shared {
    pub listener: OwnedFd,
    pub wake: OwnedFd,
    pub handler: Arc<dyn Handler>,
    pub stats: Arc<Stats>,
    pub kernel: Arc<dyn Kernel>,
    /// Held around the zero-timeout `poll` and `NOTIF_RECV`.
    pub recv_lock: Mutex<()>,
    /// Kept-open `/proc/<tid>/fd` directories for [`Notification::fd_path`].
    pub procfs: ProcFds,
}

/// The body of every supervisor thread of this pool.
pub(crate) fn worker(shared: &Shared) {
    guarded(|| serve(shared));
}

/// Runs a supervisor thread's loop. A panic outside the handler aborts the process.
pub(crate) fn guarded(body: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(body)).is_err() {
        tracing::error!("perch supervisor loop panicked; aborting");
        std::process::abort();
    }
}

/// What a thread's receive step came back with.
pub(crate) enum Next {
    Notif(Notif),
    Nothing,
    Shutdown,
}

/// What the listener reports.
pub(crate) enum Ready {
    /// A notification is pending.
    Notification,
    /// Nothing yet (a signal, or another thread took it).
    Nothing,
    /// The pool is stopping, or every task using the filter is gone, or waiting failed.
    Shutdown,
}

impl Ready {
    /// `receive()` when a notification is pending, else what this says.
    pub(crate) fn then(self, receive: impl FnOnce() -> Next) -> Next {
        match self {
            Ready::Notification => receive(),
            Ready::Nothing => Next::Nothing,
            Ready::Shutdown => Next::Shutdown,
        }
    }
}

/// The receive lock, held around the zero-timeout `poll` and `NOTIF_RECV`.
pub(crate) fn lock(shared: &Shared) -> MutexGuard<'_, ()> {
    shared
        .recv_lock
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Makes every other thread leave too (the eventfd is never read, so it stays readable).
fn stop_all(shared: &Shared) {
    let _ = misc::eventfd_signal(shared.wake.as_fd());
}

/// An epoll instance on the listener (`EPOLLEXCLUSIVE`) and the wake-up eventfd; `None`
/// (logged) when it cannot be made.
pub(crate) fn listener_epoll(shared: &Shared) -> Option<OwnedFd> {
    misc::epoll_pair(shared.listener.as_fd(), shared.wake.as_fd())
        .map_err(|e| tracing::error!(errno = ?e, "cannot wait on the seccomp listener (epoll)"))
        .ok()
}

/// Waits in `ep` (from [`listener_epoll`]) until the listener or the eventfd reports.
pub(crate) fn wait(ep: &OwnedFd) -> Ready {
    classify(
        misc::epoll_wait_pair(ep.as_fd(), -1),
        "waiting on the seccomp listener failed",
    )
}

/// Looks, without waiting (a zero-timeout `poll`), whether a notification is pending.
pub(crate) fn look(shared: &Shared) -> Ready {
    let r = misc::poll2(shared.listener.as_fd(), shared.wake.as_fd(), 0);
    classify(r, "poll on the seccomp listener failed")
}

/// What the listener (`a`) and the eventfd (`b`) reported; `failed` is logged on an error.
fn classify(r: Result<misc::Ready, Errno>, failed: &str) -> Ready {
    match r {
        Ok(r) if r.b => Ready::Shutdown,
        Ok(r) if r.a_in => Ready::Notification,
        // Every task using the filter is gone: nothing can be notified any more.
        Ok(r) if r.a_hup => Ready::Shutdown,
        Ok(_) => Ready::Nothing,
        Err(e) if e == Errno::EINTR => Ready::Nothing,
        Err(e) => {
            tracing::error!(errno = ?e, "{failed}");
            Ready::Shutdown
        }
    }
}

fn serve(shared: &Shared) {
    let Some(ep) = listener_epoll(shared) else {
        return stop_all(shared);
    };
    loop {
        let next = wait(&ep).then(|| {
            let _guard = lock(shared);
            take(shared)
        });
        match next {
            Next::Notif(n) => handle(shared, n),
            Next::Nothing => {}
            Next::Shutdown => {
                stop_all(shared);
                return;
            }
        }
    }
}

/// With the receive lock held: receives a notification if one is pending, without blocking.
fn take(shared: &Shared) -> Next {
    look(shared).then(|| match shared.kernel.recv(shared.listener.as_fd()) {
        Ok(n) => Next::Notif(n),
        // The caller was killed between poll and receive, or a signal came.
        Err(e) if e == Errno::ENOENT || e == Errno::EINTR => Next::Nothing,
        Err(e) => {
            tracing::error!(errno = ?e, "receiving a seccomp notification failed");
            Next::Shutdown
        }
    })
}

pub(crate) fn handle(shared: &Shared, notif: Notif) {
    shared.stats.notifications.fetch_add(1, Ordering::Relaxed);
    let n = Notification::new(
        shared.kernel.as_ref(),
        shared.listener.as_fd(),
        notif,
        &shared.stats,
        &shared.procfs,
    );
    if tracing::enabled!(target: "perch::syscall", tracing::Level::DEBUG) {
        tracing::debug!(target: "perch::syscall", pid = n.pid().0, "{}", n.display());
    }
    let handler = &shared.handler;
    if catch_unwind(AssertUnwindSafe(move || handler.on_syscall(n))).is_err() {
        shared.stats.panics.fetch_add(1, Ordering::Relaxed);
    }
}

/// The default pool size: one thread per CPU the job may use (`sched_getaffinity`, lowered by
/// a cgroup CPU quota: what `available_parallelism` reports), at least [`MIN_WORKERS`] so that
/// a few handlers blocked on downloads do not stop quick answers on a small machine, at most
/// [`MAX_WORKERS`] (the kernel hands notifications out one at a time under its own lock, so
/// more threads than that only cost stacks).
pub(crate) fn default_workers(cpus: Option<usize>) -> usize {
    cpus.unwrap_or(MIN_WORKERS).clamp(MIN_WORKERS, MAX_WORKERS)
}

/// Fewest threads of the default pool.
pub(crate) const MIN_WORKERS: usize = 4;
/// Most threads of the default pool.
pub(crate) const MAX_WORKERS: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_size_follows_the_cpus_within_bounds() {
        assert_eq!(default_workers(Some(1)), MIN_WORKERS);
        assert_eq!(default_workers(None), MIN_WORKERS);
        assert_eq!(default_workers(Some(8)), 8);
        assert_eq!(default_workers(Some(256)), MAX_WORKERS);
    }
}
