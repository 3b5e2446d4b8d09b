//! The supervisor pool on kernels with `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (Linux 6.6):
//! receivers blocked in `NOTIF_RECV` itself, and spares that receive only while handlers wait.
//!
//! Why blocked in `NOTIF_RECV` rather than in epoll: with the sync wake-up flag the kernel
//! wakes a thread waiting in `NOTIF_RECV` on the CPU of the program thread that just blocked
//! in its call, so the answer runs at once, where the program ran, with no cross-CPU wake-up
//! (an inter-processor interrupt, and a VM exit in a virtual machine). A wake-up through epoll
//! loses that: it is an ordinary wake-up of the epoll waiter, on its own CPU. Measured on a
//! 2-CPU VM, alternated with the epoll pool (bench/stat_threads.c on a native path, one
//! program thread): 57 000–68 000 calls/s against 46 000–51 000; `find /usr/lib` under
//! bench/run.sh 1.29 s against 1.56 s.
//!
//! The shape:
//! - **Receivers**, one per two CPUs the job may use (an answered call keeps two threads busy,
//!   the caller and its receiver): each loops receive, handle. `NOTIF_RECV` wakes every
//!   thread waiting in it for each notification (one gets it), so more receivers than can run
//!   at once cost wake-ups: two receivers on 2 CPUs answered one program thread 20% slower.
//! - **Spares**, the rest of the pool, wait on a condition variable. A handler about to wait
//!   (a download, another process's claim: [`crate::blocking`]) calls one in; it receives
//!   until no handler waits any more. So quick answers do not queue behind downloads, and an
//!   idle spare costs no wake-up.
//! - **Parallel mode.** Waking on the caller's CPU is right for one program thread, whose
//!   next call comes only after the answer; for several threads or processes calling at once
//!   (`make -j`, a threaded program) it piles receivers onto one CPU, and two `make -j2`
//!   compilers ran 10% slower than with the epoll pool. So before each handler a thread looks
//!   (`poll`) whether another notification already waits behind the one it received; if one
//!   does, the pool switches to parallel mode: every thread, receivers and spares, waits in
//!   epoll as the pool before 6.6 does (`EPOLLEXCLUSIVE`: one thread woken per notification,
//!   on its own CPU). [`CALM`] answers in a row with nothing waiting behind them switch it
//!   back.
//! - **Stopping:** before Linux 6.6 nothing ended a `NOTIF_RECV` whose filter still had users;
//!   from 6.6 it returns when the last user is gone, which is the usual end (the tracer has
//!   reaped the tree). For a process that escaped the tracer, [`Pool::stop`] interrupts every
//!   thread waiting in `NOTIF_RECV` with a signal whose handler does nothing (`EINTR`), again
//!   every few milliseconds until all are gone (a signal landing just before the call would be
//!   lost). A thread running a handler is never interrupted: it sees the stop afterwards.

use std::cell::RefCell;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use perch_sys::misc;
use perch_sys::notify::Notif;
use perch_syscalls::Errno;

use crate::supervisor::{self, handle, listener_epoll, Next, Ready, Shared};

/// How often [`Pool::stop`] interrupts the threads still waiting in `NOTIF_RECV`.
const STOP_RETRY: Duration = Duration::from_millis(2);
/// Answers in a row with no notification pending behind them that end parallel mode.
const CALM: u32 = 64;

/// One pool thread, as seen by [`Pool::stop`].
#[derive(Default)]
struct Slot {
    /// The thread's id while it runs; 0 once it has left (changed under `Pool::exit_lock`).
    tid: AtomicI32,
    /// The thread is in (or about to enter) `NOTIF_RECV`.
    in_recv: AtomicBool,
}

/// Handlers waiting in [`crate::blocking`] and spares receiving for them.
#[derive(Default)]
struct Need {
    /// Handlers inside [`crate::blocking`].
    waiting: usize,
    /// Spares receiving now.
    active: usize,
    stopping: bool,
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
        if need.active < need.waiting {
            self.call.notify_one();
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
    /// Every thread receives through epoll, as the pool before 6.6 does (a backlog was seen).
    parallel: AtomicBool,
    /// Answers in a row with nothing pending behind them, in parallel mode.
    calm: AtomicU32,
    /// Held while a thread clears its `tid` and while [`Pool::stop`] signals, so a signal
    /// never reaches a thread id that has been given up.
    exit_lock: Mutex<()>,
    /// Signalled (under `exit_lock`) when a thread leaves: [`Pool::stop`] waits on it.
    left: Condvar,
    spares: Arc<Spares>,
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
            parallel: AtomicBool::new(false),
            calm: AtomicU32::new(0),
            exit_lock: Mutex::new(()),
            left: Condvar::new(),
            spares: Arc::default(),
        }
    }

    pub(crate) fn threads(&self) -> usize {
        self.slots.len()
    }

    /// Threads `from..` could not be started: [`Pool::stop`] must not wait for them.
    pub(crate) fn never_started(&self, from: usize) {
        let missing = self.slots.len().saturating_sub(from);
        let _g = self.exit_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.alive.fetch_sub(missing, Ordering::SeqCst);
        self.left.notify_all();
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
        let _g = self.exit_lock.lock().unwrap_or_else(|p| p.into_inner());
        slot.tid.store(0, Ordering::SeqCst);
        self.alive.fetch_sub(1, Ordering::SeqCst);
        self.left.notify_all();
    }

    fn receive(&self, shared: &Shared, slot: &Slot) {
        let Some(ep) = listener_epoll(shared) else {
            return self.request_stop(shared);
        };
        loop {
            let next = if self.parallel.load(Ordering::Relaxed) {
                self.take_polled(shared, &ep, slot)
            } else {
                self.take(shared, slot)
            };
            match next {
                Next::Notif(n) => self.answer(shared, n),
                Next::Nothing => {}
                Next::Shutdown => return self.request_stop(shared),
            }
        }
    }

    /// Runs the handler on `n`, after looking whether another notification waits behind it:
    /// a backlog (several program threads or processes calling at once; one program thread
    /// never makes one, its next call comes only after this answer) switches the pool to
    /// parallel mode, and [`CALM`] answers in a row without one switch it back.
    fn answer(&self, shared: &Shared, n: Notif) {
        let queued = self.pending(shared);
        handle(shared, n);
        if queued {
            self.calm.store(0, Ordering::Relaxed);
            if !self.parallel.swap(true, Ordering::SeqCst) {
                shared.stats.parallel.fetch_add(1, Ordering::Relaxed);
                let _need = self.spares.lock();
                self.spares.call.notify_all();
            }
        } else if self.parallel.load(Ordering::Relaxed)
            && self.calm.fetch_add(1, Ordering::Relaxed) + 1 >= CALM
        {
            self.parallel.store(false, Ordering::SeqCst);
        }
    }

    /// A notification is waiting to be received.
    fn pending(&self, shared: &Shared) -> bool {
        matches!(supervisor::look(shared), Ready::Notification)
    }

    /// A spare: waits until a handler waits or the pool is in parallel mode, then receives
    /// until neither holds.
    fn stand_by(&self, shared: &Shared, slot: &Slot) {
        let Some(ep) = listener_epoll(shared) else {
            return;
        };
        loop {
            {
                let mut need = self.spares.lock();
                while !need.stopping
                    && !self.parallel.load(Ordering::SeqCst)
                    && need.active >= need.waiting
                {
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
                let next = self.take_polled(shared, &ep, slot);
                if let Next::Notif(n) = next {
                    self.answer(shared, n);
                }
                let mut need = self.spares.lock();
                let shutdown = matches!(next, Next::Shutdown);
                if shutdown
                    || need.stopping
                    || (!self.parallel.load(Ordering::SeqCst) && need.active > need.waiting)
                {
                    need.active -= 1;
                    drop(need);
                    if shutdown {
                        return self.request_stop(shared);
                    }
                    break;
                }
            }
        }
    }

    /// Receives through epoll, as the pool before 6.6 does: woken on its own CPU, one waiting
    /// thread per notification (`EPOLLEXCLUSIVE`), `NOTIF_RECV` entered under the receive lock
    /// once `poll` saw a notification. (A receiver in serial mode may take it first; then this
    /// thread waits in `NOTIF_RECV` for the next one, which is still correct.)
    fn take_polled(&self, shared: &Shared, ep: &OwnedFd, slot: &Slot) -> Next {
        supervisor::wait(ep).then(|| {
            let _g = supervisor::lock(shared);
            supervisor::look(shared).then(|| self.take(shared, slot))
        })
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
            Err(e) if e == Errno::ENOENT => match supervisor::look(shared) {
                Ready::Shutdown => Next::Shutdown,
                Ready::Notification | Ready::Nothing => Next::Nothing,
            },
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
    /// running is waited for). Returns as soon as the last one leaves: the end of every run
    /// waits here (a fixed sleep cost 2 ms per `perch run`).
    pub(crate) fn stop(&self, shared: &Shared) {
        self.request_stop(shared);
        let mut g = self.exit_lock.lock().unwrap_or_else(|p| p.into_inner());
        while self.alive.load(Ordering::SeqCst) > 0 {
            for slot in &self.slots {
                let tid = slot.tid.load(Ordering::SeqCst);
                if tid != 0 && slot.in_recv.load(Ordering::SeqCst) {
                    let _ = misc::interrupt_thread(tid);
                }
            }
            g = match self.left.wait_timeout(g, STOP_RETRY) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
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
