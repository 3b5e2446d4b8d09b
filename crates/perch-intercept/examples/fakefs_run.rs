//! Runs a command with `/fakefs` mapped to a real directory, like the integration tests do.
//!
//! ```text
//! cargo run --release -p perch-intercept --example fakefs_run -- DIR CMD [ARGS...]
//! ```
//! Prints the counters (notifications, traced stops, injected fds, time) on stderr at exit and
//! exits with the command's status (128+N for signal N). With `FAKEFS_NOTIFY=none` nothing is
//! notified (only exec/chdir are traced): the cost of ptrace alone. `FAKEFS_WORKERS=N` sets the
//! number of supervisor threads; `FAKEFS_PASSTHROUGH=1` continues every call unread.
#![allow(clippy::print_stderr)]

#[path = "../tests/common/fakefs.rs"]
mod fakefs;

use std::ffi::OsString;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use perch_intercept::{Interceptor, SyscallSet};

/// Continues every call without looking at it: the cost of the round trip alone.
struct Passthrough;

impl perch_intercept::Handler for Passthrough {
    fn on_syscall(&self, n: perch_intercept::Notification<'_>) {
        n.continue_unchecked();
    }
}

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), argv) = (args.next(), args.collect::<Vec<OsString>>()) else {
        eprintln!("usage: fakefs_run DIR CMD [ARGS...]");
        std::process::exit(2);
    };
    let fs = Arc::new(fakefs::FakeFs::new(std::path::Path::new(&dir)));
    let mut interceptor = Interceptor::new();
    if std::env::var_os("FAKEFS_NOTIFY").is_some_and(|v| v == "none") {
        interceptor = interceptor.notify(SyscallSet::new());
    }
    if let Some(n) = std::env::var("FAKEFS_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        interceptor = interceptor.workers(n);
    }
    let stats = interceptor.stats();
    let handler: Arc<dyn perch_intercept::Handler> =
        if std::env::var_os("FAKEFS_PASSTHROUGH").is_some() {
            Arc::new(Passthrough)
        } else {
            fs.clone()
        };
    let env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let start = Instant::now();
    let result = interceptor.run(&argv, &env, handler);
    let elapsed = start.elapsed();
    eprintln!(
        "fakefs_run: {:.3} s, {} notifications, {} traced stops, {} fds injected, {} stats answered, {} panics",
        elapsed.as_secs_f64(),
        stats.notifications(),
        stats.traced(),
        fs.injected.load(Ordering::Relaxed),
        fs.stats.load(Ordering::Relaxed),
        stats.panics(),
    );
    match result {
        Ok(status) => std::process::exit(status.code()),
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("fakefs_run: {msg}");
            std::process::exit(200);
        }
    }
}
