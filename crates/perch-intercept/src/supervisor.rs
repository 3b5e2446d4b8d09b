//! The supervisor threads: receive notifications and run the handler on each.
//!
//! Thread 0, the receiver, polls the listener and the wake-up eventfd, receives a notification
//! and runs the handler inline: the common case costs no thread hand-off at all. The other
//! threads stand by: while the receiver is busy in a handler (waiting for a download, say) they
//! look every [`STANDBY_MIN_MS`] whether a notification is pending and, if so, receive and handle
//! notifications until none is pending; while the receiver is idle they back off to one look
//! every [`STANDBY_MAX_MS`], so an idle run costs a few wake-ups per second. A receive lock makes sure `NOTIF_RECV` is only entered
//! after `poll` saw a pending notification, by one thread at a time, so it never blocks (a
//! blocked `NOTIF_RECV` could not be woken at shutdown before Linux 6.6).

use std::os::fd::{AsFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use perch_sys::misc;
use perch_sys::notify::Notif;
use perch_syscalls::Errno;

use crate::kernel::Kernel;
use crate::procfd::ProcFds;
use crate::{Handler, Notification, Stats};

/// How often a standby thread checks for pending notifications while the receiver is busy.
pub(crate) const STANDBY_MIN_MS: i32 = 2;
/// The longest a standby thread sleeps while everything is idle.
pub(crate) const STANDBY_MAX_MS: i32 = 128;

pub(crate) struct Shared {
    pub listener: OwnedFd,
    pub wake: OwnedFd,
    pub handler: Arc<dyn Handler>,
    pub stats: Arc<Stats>,
    pub kernel: Arc<dyn Kernel>,
    pub recv_lock: Mutex<()>,
    /// Kept-open `/proc/<tid>/fd` directories for [`Notification::fd_path`].
    pub procfs: ProcFds,
    /// The receiver is running a handler.
    pub receiver_busy: AtomicBool,
}

/// The body of supervisor thread `index`. A panic outside the handler aborts the process.
pub(crate) fn worker(shared: &Shared, index: usize) {
    let body = || {
        if index == 0 {
            receiver(shared)
        } else {
            standby(shared)
        }
    };
    if catch_unwind(AssertUnwindSafe(body)).is_err() {
        tracing::error!("perch supervisor loop panicked; aborting");
        std::process::abort();
    }
}

enum Next {
    Notif(Notif),
    Idle,
    Shutdown,
}

fn lock(shared: &Shared) -> MutexGuard<'_, ()> {
    shared
        .recv_lock
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn receiver(shared: &Shared) {
    loop {
        let next = {
            let _guard = lock(shared);
            next(shared, -1)
        };
        match next {
            Next::Notif(n) => {
                shared.receiver_busy.store(true, Ordering::Relaxed);
                handle(shared, n);
                shared.receiver_busy.store(false, Ordering::Relaxed);
            }
            Next::Idle => continue,
            Next::Shutdown => return,
        }
    }
}

fn standby(shared: &Shared) {
    let mut interval = STANDBY_MIN_MS;
    loop {
        match misc::poll_in(shared.wake.as_fd(), interval) {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) if e == Errno::EINTR => {}
            Err(_) => return,
        }
        let busy = shared.receiver_busy.load(Ordering::Relaxed);
        let mut worked = false;
        // Help while there is work nobody is taking.
        loop {
            let guard = match shared.recv_lock.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => break, // someone is receiving
            };
            let next = next(shared, 0);
            drop(guard);
            match next {
                Next::Notif(n) => {
                    worked = true;
                    handle(shared, n);
                }
                Next::Idle => break,
                Next::Shutdown => return,
            }
        }
        interval = if busy || worked {
            STANDBY_MIN_MS
        } else {
            (interval * 2).min(STANDBY_MAX_MS)
        };
    }
}

/// With the receive lock held: waits up to `timeout_ms` for a notification and receives it.
fn next(shared: &Shared, timeout_ms: i32) -> Next {
    loop {
        match misc::poll2(shared.listener.as_fd(), shared.wake.as_fd(), timeout_ms) {
            Ok(r) if r.b => return Next::Shutdown,
            Ok(r) if r.a_in => {}
            // Every task using the filter is gone: nothing can be notified any more.
            Ok(r) if r.a_hup => return Next::Shutdown,
            Ok(_) if timeout_ms >= 0 => return Next::Idle,
            Ok(_) => continue,
            Err(e) if e == Errno::EINTR => continue,
            Err(e) => {
                tracing::error!(errno = ?e, "poll on the seccomp listener failed");
                return Next::Shutdown;
            }
        }
        match shared.kernel.recv(shared.listener.as_fd()) {
            Ok(n) => return Next::Notif(n),
            // The caller was killed between poll and receive, or a signal came.
            Err(e) if e == Errno::ENOENT || e == Errno::EINTR => {
                if timeout_ms >= 0 {
                    return Next::Idle;
                }
            }
            Err(e) => {
                tracing::error!(errno = ?e, "receiving a seccomp notification failed");
                return Next::Shutdown;
            }
        }
    }
}

fn handle(shared: &Shared, notif: Notif) {
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
