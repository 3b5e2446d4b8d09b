//! The supervisor pool on kernels with `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (Linux 6.6):
//! receivers blocked in `NOTIF_RECV` itself, and spares that receive only while handlers wait.
//!
//! Why blocked in `NOTIF_RECV` rather than in epoll: with the sync wake-up flag the kernel
//! wakes a thread waiting in `NOTIF_RECV` on the CPU of the program thread that just blocked
//! in its call, so the answer runs at once, where the program ran, with no cross-CPU wake-up
//! (an inter-processor interrupt, and a VM exit in a virtual machine). A wake-up through epoll
//! loses that: it is an ordinary wake-up of the epoll waiter, on its own CPU. Measured on a
//! 2-CPU VM (bench/stat_threads.sh, native-path stat, one program thread): about 70 000 calls/s
//! with one blocked receiver against 45 000 with the epoll pool; `find /usr/lib` 1.39 s
//! against 1.95 s.
//!
//! The shape:
//! - **Receivers**, one per two CPUs the job may use (an answered call keeps two threads busy,
//!   the caller and its receiver): each loops receive, handle. `NOTIF_RECV` wakes every
//!   thread waiting in it for each notification (one gets it), so more receivers than can run
//!   at once cost wake-ups: two receivers on 2 CPUs answered one program thread 20% slower.
//! - **Spares**, the rest of the pool, wait on a condition variable. A handler about to wait
//!   (a download, another process's claim: [`crate::blocking`]) calls one in; it receives
//!   until no handler waits any more. So quick answers do not queue behind downloads, and an
//!   idle spare costs no wake-up. A backlog calls one in too: a receiver that finds another
//!   notification pending behind the one it just received (several program threads or
//!   processes calling at once; one `poll` per notification) adds a spare, and a spare that
//!   finds nothing pending behind its own takes one away. Called-in spares wait in epoll, so
//!   they are woken on their own CPUs and spread a backlog over the machine.
//! - **Stopping:** before Linux 6.6 nothing ended a `NOTIF_RECV` whose filter still had users;
//!   from 6.6 it returns when the last user is gone, which is the usual end (the tracer has
//!   reaped the tree). For a process that escaped the tracer, [`Pool::stop`] interrupts every
//!   thread waiting in `NOTIF_RECV` with a signal whose handler does nothing (`EINTR`), again
//!   every few milliseconds until all are gone (a signal landing just before the call would be
//!   lost). A thread running a handler is never interrupted: it sees the stop afterwards.

use std::cell::RefCell;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use perch_sys::misc;
use perch_sys::notify::Notif;
use perch_syscalls::Errno;

use crate::supervisor::{handle, Shared};

/// How often [`Pool::stop`] interrupts the threads still waiting in `NOTIF_RECV`.
const STOP_RETRY: Duration = Duration::from_millis(2);

/// One pool thread, as seen by [`Pool::stop`].
#[derive(Default)]
struct Slot {
    /// The thread's id while it runs; 0 once it has left (changed under `Pool::exit_lock`).
    tid: AtomicI32,
    /// The thread is in (or about to enter) `NOTIF_RECV`.
    in_recv: AtomicBool,
}

/// Handlers waiting in [`crate::blocking`], spares wanted for a backlog, and spares receiving
/// for them.
#[derive(Default)]
struct Need {
    /// Handlers inside [`crate::blocking`].
    waiting: usize,
    /// Spares wanted because notifications queued behind long handlers.
    backlog: usize,
    /// Spares receiving now.
    active: usize,
    stopping: bool,
}

impl Need {
    fn wanted(&self) -> usize {
        self.waiting + self.backlog
    }
}

/// The spares' side of the pool, reachable from a handler through a thread-local.
#[derive(Default)]
pub(crate) struct Spares {
    need: Mutex<Need>,
    call: Condvar,
}

impl Spares {
    fn lock(&self) -> MutexGuard<'_, Need> {
        self.need.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enter(&self) {
        let mut need = self.lock();
        need.waiting += 1;
        if need.active < need.wanted() {
            self.call.notify_one();
        }
    }

    /// Notifications are queued behind long handlers: one more spare, up to `spares`.
    fn backlog(&self, spares: usize) {
        let mut need = self.lock();
        if need.backlog < spares {
            need.backlog += 1;
            if need.active < need.wanted() {
                self.call.notify_one();
            }
        }
    }

    fn leave(&self) {
        let mut need = self.lock();
        need.waiting = need.waiting.saturating_sub(1);
    }
}

thread_local! {
    /// The spares of the pool whose thread this is (none outside a pool).
    static SPARES: RefCell<Option<Arc<Spares>>> = const { RefCell::new(None) };
}

/// Runs `f`, a part of a handler that may wait long (see [`crate::blocking`]).
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    let Some(spares) = SPARES.with(|s| s.borrow().clone()) else {
        return f();
    };
    struct Leave(Arc<Spares>);
    impl Drop for Leave {
        fn drop(&mut self) {
            self.0.leave();
        }
    }
    spares.enter();
    let _leave = Leave(spares);
    f()
}

/// The receivers and spares of one run.
pub(crate) struct Pool {
    receivers: usize,
    slots: Vec<Slot>,
    /// Threads still in [`Pool::serve`].
    alive: AtomicUsize,
    stopping: AtomicBool,
    /// Held while a thread clears its `tid` and while [`Pool::stop`] signals, so a signal
    /// never reaches a thread id that has been given up.
    exit_lock: Mutex<()>,
    spares: Arc<Spares>,
}

enum Next {
    Notif(Notif),
    Nothing,
    Shutdown,
}

impl Pool {
    /// A pool of `threads` threads, `receivers` of them receiving all the time (at least one).
    pub(crate) fn new(threads: usize, receivers: usize) -> Pool {
        let threads = threads.max(1);
        Pool {
            receivers: receivers.clamp(1, threads),
            slots: (0..threads).map(|_| Slot::default()).collect(),
            alive: AtomicUsize::new(threads),
            stopping: AtomicBool::new(false),
            exit_lock: Mutex::new(()),
            spares: Arc::default(),
        }
    }

    pub(crate) fn threads(&self) -> usize {
        self.slots.len()
    }

    /// Threads `from..` could not be started: [`Pool::stop`] must not wait for them.
    pub(crate) fn never_started(&self, from: usize) {
        let missing = self.slots.len().saturating_sub(from);
        self.alive.fetch_sub(missing, Ordering::SeqCst);
    }

    /// The body of pool thread `index` (< [`Pool::threads`]).
    pub(crate) fn serve(&self, shared: &Shared, index: usize) {
        let slot = &self.slots[index];
        slot.tid.store(misc::gettid(), Ordering::SeqCst);
        SPARES.with(|s| *s.borrow_mut() = Some(Arc::clone(&self.spares)));
        if index < self.receivers {
            self.receive(shared, slot);
        } else {
            self.stand_by(shared, slot);
        }
        SPARES.with(|s| *s.borrow_mut() = None);
        {
            let _g = self.exit_lock.lock().unwrap_or_else(|p| p.into_inner());
            slot.tid.store(0, Ordering::SeqCst);
        }
        self.alive.fetch_sub(1, Ordering::SeqCst);
    }

    fn receive(&self, shared: &Shared, slot: &Slot) {
        loop {
            match self.take(shared, slot) {
                Next::Notif(n) => {
                    if self.answer(shared, n) {
                        self.spares.backlog(self.slots.len() - self.receivers);
                    }
                }
                Next::Nothing => {}
                Next::Shutdown => return self.request_stop(shared),
            }
        }
    }

    /// Runs the handler on `n`; true when another notification was already waiting behind it
    /// (a backlog: several program threads or processes calling at once). One program thread
    /// never makes one: its next call comes only after this answer.
    fn answer(&self, shared: &Shared, n: Notif) -> bool {
        let queued = self.pending(shared);
        handle(shared, n);
        queued
    }

    /// A notification is waiting to be received.
    fn pending(&self, shared: &Shared) -> bool {
        matches!(misc::poll2(shared.listener.as_fd(), shared.wake.as_fd(), 0), Ok(r) if r.a_in)
    }

    /// A spare: waits until a handler waits, then receives until none does.
    fn stand_by(&self, shared: &Shared, slot: &Slot) {
        // Spares wait in epoll, not in NOTIF_RECV: woken on their own CPU, they spread a
        // backlog over the CPUs, where waking on the caller's CPU would pile them onto one.
        let ep = match misc::epoll_pair(shared.listener.as_fd(), shared.wake.as_fd()) {
            Ok(ep) => ep,
            Err(e) => {
                tracing::error!(errno = ?e, "cannot wait on the seccomp listener (epoll)");
                return;
            }
        };
        loop {
            {
                let mut need = self.spares.lock();
                while !need.stopping && need.active >= need.wanted() {
                    need = self
                        .spares
                        .call
                        .wait(need)
                        .unwrap_or_else(|p| p.into_inner());
                }
                if need.stopping {
                    return;
                }
                need.active += 1;
            }
            loop {
                // A receiver may take the notification first: then this spare waits in
                // NOTIF_RECV for the next one, which is still correct.
                let next = match misc::epoll_wait_pair(ep.as_fd(), -1) {
                    Ok(r) if r.b || r.a_hup => Next::Shutdown,
                    Ok(r) if r.a_in => self.take(shared, slot),
                    _ => Next::Nothing,
                };
                let mut queued = true;
                if let Next::Notif(n) = next {
                    queued = self.answer(shared, n);
                }
                let mut need = self.spares.lock();
                if !queued {
                    need.backlog = need.backlog.saturating_sub(1);
                }
                if matches!(next, Next::Shutdown) || need.stopping || need.active > need.wanted() {
                    need.active -= 1;
                    drop(need);
                    if matches!(next, Next::Shutdown) {
                        return self.request_stop(shared);
                    }
                    break;
                }
            }
        }
    }

    /// Waits in `NOTIF_RECV` for the next notification.
    fn take(&self, shared: &Shared, slot: &Slot) -> Next {
        slot.in_recv.store(true, Ordering::SeqCst);
        if self.stopping.load(Ordering::SeqCst) {
            slot.in_recv.store(false, Ordering::SeqCst);
            return Next::Shutdown;
        }
        let got = shared.kernel.recv(shared.listener.as_fd());
        slot.in_recv.store(false, Ordering::SeqCst);
        match got {
            Ok(n) => Next::Notif(n),
            Err(e) if e == Errno::EINTR => {
                if self.stopping.load(Ordering::SeqCst) {
                    Next::Shutdown
                } else {
                    Next::Nothing
                }
            }
            // The caller was killed after the kernel counted its notification, or every task
            // using the filter is gone (from 6.6 the call then returns at once: the listener
            // reports hang-up).
            Err(e) if e == Errno::ENOENT => {
                match misc::poll2(shared.listener.as_fd(), shared.wake.as_fd(), 0) {
                    Ok(r) if r.a_hup || r.b => Next::Shutdown,
                    Ok(_) => Next::Nothing,
                    Err(e) if e == Errno::EINTR => Next::Nothing,
                    Err(_) => Next::Shutdown,
                }
            }
            Err(e) => {
                tracing::error!(errno = ?e, "receiving a seccomp notification failed");
                Next::Shutdown
            }
        }
    }

    /// Makes the other threads leave once they are not waiting in `NOTIF_RECV` (those that
    /// are leave when the filter loses its last user, or at [`Pool::stop`]).
    fn request_stop(&self, shared: &Shared) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = misc::eventfd_signal(shared.wake.as_fd());
        self.spares.lock().stopping = true;
        self.spares.call.notify_all();
    }

    /// Stops the pool and returns once every thread has left its loop (a handler still
    /// running is waited for).
    pub(crate) fn stop(&self, shared: &Shared) {
        self.request_stop(shared);
        while self.alive.load(Ordering::SeqCst) > 0 {
            {
                let _g = self.exit_lock.lock().unwrap_or_else(|p| p.into_inner());
                for slot in &self.slots {
                    let tid = slot.tid.load(Ordering::SeqCst);
                    if tid != 0 && slot.in_recv.load(Ordering::SeqCst) {
                        let _ = misc::interrupt_thread(tid);
                    }
                }
            }
            std::thread::sleep(STOP_RETRY);
        }
    }
}

/// How many threads receive all the time: one per two CPUs the job may use, at least one,
/// at most the pool.
pub(crate) fn receivers(cpus: Option<usize>, threads: usize) -> usize {
    (cpus.unwrap_or(1) / 2).clamp(1, threads.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_receiver_per_two_cpus_within_the_pool() {
        assert_eq!(receivers(None, 4), 1);
        assert_eq!(receivers(Some(1), 4), 1);
        assert_eq!(receivers(Some(2), 4), 1);
        assert_eq!(receivers(Some(3), 4), 1);
        assert_eq!(receivers(Some(8), 8), 4);
        assert_eq!(receivers(Some(64), 16), 16);
        assert_eq!(receivers(Some(8), 1), 1);
    }

    #[test]
    fn a_backlog_wants_at_most_every_spare() {
        let spares = Spares::default();
        spares.backlog(2);
        spares.backlog(2);
        spares.backlog(2);
        assert_eq!(spares.lock().wanted(), 2);
        spares.enter();
        assert_eq!(spares.lock().wanted(), 3);
        spares.leave();
        assert_eq!(spares.lock().wanted(), 2);
        // No spares in the pool: a backlog wants none.
        let none = Spares::default();
        none.backlog(0);
        assert_eq!(none.lock().wanted(), 0);
    }

    #[test]
    fn a_waiting_handler_calls_in_one_spare_and_none_is_called_without() {
        let spares = Arc::new(Spares::default());
        SPARES.with(|s| *s.borrow_mut() = Some(Arc::clone(&spares)));
        assert_eq!(blocking(|| spares.lock().waiting), 1);
        assert_eq!(spares.lock().waiting, 0);
        // Nested waits count twice; a panic inside still leaves.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            blocking(|| blocking(|| panic!("inside")))
        }));
        assert!(r.is_err());
        assert_eq!(spares.lock().waiting, 0);
        SPARES.with(|s| *s.borrow_mut() = None);
        // Outside a pool it just runs.
        assert_eq!(blocking(|| 7), 7);
    }
}
