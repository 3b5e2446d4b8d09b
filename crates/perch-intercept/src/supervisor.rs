//! The supervisor threads: receive notifications and run the handler on each.
//!
//! One thread at a time holds the receive lock, polls the listener and the wake-up eventfd, and
//! receives one notification; it then releases the lock and runs the handler, so handlers run in
//! parallel while `NOTIF_RECV` is never entered without a pending notification (a blocked
//! `NOTIF_RECV` could not be woken at shutdown).

use std::os::fd::{AsFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use perch_syscalls::Errno;

use crate::kernel::Kernel;
use crate::{Handler, Notification, Stats};

pub(crate) struct Shared {
    pub listener: OwnedFd,
    pub wake: OwnedFd,
    pub handler: Arc<dyn Handler>,
    pub stats: Arc<Stats>,
    pub kernel: Box<dyn Kernel>,
    pub recv_lock: Mutex<()>,
}

/// The body of one supervisor thread. A panic outside the handler aborts the process.
pub(crate) fn worker(shared: &Shared) {
    if catch_unwind(AssertUnwindSafe(|| worker_loop(shared))).is_err() {
        tracing::error!("perch supervisor loop panicked; aborting");
        std::process::abort();
    }
}

fn worker_loop(shared: &Shared) {
    while let Some(notif) = next(shared) {
        shared.stats.notifications.fetch_add(1, Ordering::Relaxed);
        let n = Notification::new(
            shared.kernel.as_ref(),
            shared.listener.as_fd(),
            notif,
            &shared.stats,
        );
        if tracing::enabled!(target: "perch::syscall", tracing::Level::DEBUG) {
            tracing::debug!(target: "perch::syscall", pid = n.pid().0, "{}", n.display());
        }
        let handler = &shared.handler;
        if catch_unwind(AssertUnwindSafe(move || handler.on_syscall(n))).is_err() {
            shared.stats.panics.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The next notification, or `None` at shutdown.
fn next(shared: &Shared) -> Option<perch_sys::notify::Notif> {
    let _guard = shared
        .recv_lock
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        match perch_sys::misc::poll2(shared.listener.as_fd(), shared.wake.as_fd(), -1) {
            Ok(r) if r.b => return None,
            Ok(r) if r.a_in => {}
            // Every task using the filter is gone: nothing can be notified any more.
            Ok(r) if r.a_hup => return None,
            Ok(_) => continue,
            Err(e) if e == Errno::EINTR => continue,
            Err(e) => {
                tracing::error!(errno = ?e, "poll on the seccomp listener failed");
                return None;
            }
        }
        match shared.kernel.recv(shared.listener.as_fd()) {
            Ok(n) => return Some(n),
            // The caller was killed between poll and receive, or a signal came: poll again.
            Err(e) if e == Errno::ENOENT || e == Errno::EINTR => continue,
            Err(e) => {
                tracing::error!(errno = ?e, "receiving a seccomp notification failed");
                return None;
            }
        }
    }
}
