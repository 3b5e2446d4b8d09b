//! How long the ptrace thread polls for the next stop before it sleeps in `waitpid`.
//!
//! Why: each trapped call of the ptrace backend is two wake-ups across CPUs (the tracee's stop
//! wakes perch, perch's `PTRACE_CONT` wakes the tracee). Where waking an idle CPU is slow, as
//! in virtual machines (the CPU halts and the wake-up is an interrupt through the hypervisor),
//! those wake-ups are most of the cost: on a 2-CPU KVM guest `find` over 7 800 entries took
//! 103–114 ms traced against 40 ms with perch and the program on one CPU. Polling with
//! `WNOHANG` keeps perch's CPU awake so the stop needs no wake-up (65 ms with 100 µs).
//!
//! The window adapts as `cpuidle-haltpoll` does: it grows while stops arrive soon after
//! perch would have slept, and halves after each long sleep (the program is computing, not
//! calling), so a busy program loses at most a few short windows of one CPU. With one usable
//! CPU there is nothing to gain (perch would only delay the tracee), and it stays off.

use std::time::Duration;

/// The longest window.
const MAX: Duration = Duration::from_micros(100);
/// The window after a miss that shows polling would have paid off, when it was off.
const MIN: Duration = Duration::from_micros(10);
/// The first window.
const START: Duration = Duration::from_micros(50);

/// The adaptive polling window of one ptrace thread.
#[derive(Debug)]
pub(crate) struct Spin {
    window: Duration,
    enabled: bool,
}

impl Spin {
    /// Polling is used only when the thread can run beside the program: `cpus` > 1.
    pub(crate) fn new(cpus: usize) -> Spin {
        Spin {
            window: START,
            enabled: cpus > 1,
        }
    }

    /// A window that never polls (the notify backend's ptrace thread: its stops are rare).
    pub(crate) fn off() -> Spin {
        Spin::new(1)
    }

    /// How long to poll before sleeping.
    pub(crate) fn window(&self) -> Duration {
        if self.enabled {
            self.window
        } else {
            Duration::ZERO
        }
    }

    /// The thread slept `slept` after polling in vain (or not polling at all). An event that
    /// comes while polling leaves the window as it is.
    pub(crate) fn slept(&mut self, slept: Duration) {
        if !self.enabled {
            return;
        }
        if slept <= MAX {
            // A longer window would have caught it.
            self.window = (self.window * 2).clamp(MIN, MAX);
        } else {
            self.window /= 2;
            if self.window < MIN {
                self.window = Duration::ZERO;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cpu_never_polls() {
        let mut s = Spin::new(1);
        assert_eq!(s.window(), Duration::ZERO);
        s.slept(Duration::from_micros(5));
        assert_eq!(s.window(), Duration::ZERO);
        assert_eq!(Spin::off().window(), Duration::ZERO);
    }

    #[test]
    fn long_sleeps_turn_polling_off_and_short_ones_back_on() {
        let mut s = Spin::new(2);
        assert_eq!(s.window(), START);
        for _ in 0..4 {
            s.slept(Duration::from_millis(5));
        }
        assert_eq!(
            s.window(),
            Duration::ZERO,
            "a computing program is not polled for"
        );
        s.slept(Duration::from_micros(30));
        assert_eq!(
            s.window(),
            MIN,
            "a stop soon after sleeping turns polling back on"
        );
        for _ in 0..10 {
            s.slept(Duration::from_micros(30));
        }
        assert_eq!(s.window(), MAX, "the window never exceeds its bound");
    }
}
