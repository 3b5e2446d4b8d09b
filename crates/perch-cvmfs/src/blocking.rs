//! A hook around the parts of the client that may wait long: a download, or another
//! process's claim on an object. `perch run` installs one that lets its other supervisor
//! threads answer the program meanwhile (perch-intercept's `blocking`); without a hook the
//! work just runs.

use std::sync::OnceLock;

/// Runs the closure it is given, once, however it likes.
pub type Hook = fn(&mut dyn FnMut());

static HOOK: OnceLock<Hook> = OnceLock::new();

/// Installs `hook` for the whole process. The first one installed stays.
pub fn set_hook(hook: Hook) {
    let _ = HOOK.set(hook);
}

/// Runs `f` through the hook, if one is installed.
pub(crate) fn around<T>(f: impl FnOnce() -> T) -> T {
    let Some(hook) = HOOK.get() else {
        return f();
    };
    let mut f = Some(f);
    let mut out = None;
    hook(&mut || {
        if let Some(f) = f.take() {
            out = Some(f());
        }
    });
    match (out, f) {
        (Some(v), _) => v,
        // A hook that did not run it: run it here.
        (None, Some(f)) => f(),
        (None, None) => unreachable!("the closure ran but left no value"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn the_hook_runs_the_work_once_and_its_value_comes_back() {
        set_hook(|f| {
            CALLS.fetch_add(1, Ordering::SeqCst);
            f();
        });
        assert_eq!(around(|| 41 + 1), 42);
        assert_eq!(CALLS.load(Ordering::SeqCst), 1);
    }
}
