//! Log setup: which `-d` flags exist, where the lines go, and how they look.
//!
//! Every line perch writes starts with `perch`: errors `perch: <sentence>` (printed by
//! `main`), warnings `perch: warning: <sentence> (key=value, …)`, debug lines
//! `perch[<flag>]: <sentence> (key=value, …)`. Lines go to stderr, or to `-o FILE`; never to
//! the program's stdout.

use std::fmt;
use std::path::Path;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::Visit;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The `-d` flags: name, the tracing targets it turns on, what it shows.
pub const DEBUG_FLAGS: &[(&str, &[&str], &str)] = &[
    (
        "cvmfs",
        &["cvmfs", "cache", "perch_cvmfs"],
        "mounts, catalog loads, cache hits and misses, offline decisions",
    ),
    (
        "fetch",
        &["fetch"],
        "every HTTP request: URL, proxy, status, bytes, time, retries and failover",
    ),
    (
        "cache",
        &["cache"],
        "cache cleanup and cross-process claims",
    ),
    ("vfs", &["vfs"], "the namespace: mounts and shadow files"),
    (
        "syscall",
        &["perch::syscall"],
        "every intercepted system call, strace style (perch run)",
    ),
    (
        "stats",
        &["perch::stats"],
        "counters at the end of perch run",
    ),
    (
        "mode",
        &["mode"],
        "which mode perch run uses (fuse, notify) and why the other is not used",
    ),
    ("all", &[], "all of the above"),
];

/// A `-d` value with an unknown flag.
#[derive(Debug, thiserror::Error)]
#[error("unknown debug flag {flag:?} (known: {known})")]
pub struct UnknownFlag {
    /// The flag as given.
    pub flag: String,
    /// The known flags, comma-separated.
    pub known: String,
}

/// The tracing targets a comma-separated `-d` value turns on; refuses unknown flags.
pub fn targets(flags: &str) -> Result<Vec<&'static str>, UnknownFlag> {
    let mut out = Vec::new();
    for flag in flags.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let Some((_, t, _)) = DEBUG_FLAGS.iter().find(|(n, _, _)| *n == flag) else {
            return Err(UnknownFlag {
                flag: flag.to_string(),
                known: DEBUG_FLAGS
                    .iter()
                    .map(|(n, _, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        if flag == "all" {
            for (_, t, _) in DEBUG_FLAGS {
                out.extend_from_slice(t);
            }
            // perch's own crates besides the named targets; never the HTTP library's lines
            // (they mask URLs and duplicate ours).
            out.extend_from_slice(&["perch", "perch_vfs", "perch_intercept", "perch_publish"]);
        } else {
            out.extend_from_slice(t);
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Sets the global subscriber up: warnings always, debug lines for `targets`, to `log` or
/// stderr.
pub fn init(targets: &[&str], log: Option<&Path>) {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    use tracing_subscriber::EnvFilter;
    // fuser logs an error for every reply to a request the kernel already dropped (the
    // caller was interrupted or killed): normal for a FUSE server, noise for the user.
    let mut filter = String::from("warn,fuser=off");
    for t in targets {
        filter.push_str(&format!(",{t}=debug"));
    }
    let writer = match log.map(std::fs::File::create) {
        Some(Ok(file)) => BoxMakeWriter::new(std::sync::Mutex::new(file)),
        Some(Err(e)) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "perch: warning: cannot write the log {}: {e}; logging to stderr",
                    log.map(|p| p.display().to_string()).unwrap_or_default()
                );
            }
            BoxMakeWriter::new(std::io::stderr)
        }
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(writer)
        .with_ansi(false)
        .event_format(Style)
        .try_init();
}

/// The `-d` flag a target belongs to, for the `perch[flag]:` prefix.
fn flag_of(target: &str) -> &str {
    match target {
        "perch::syscall" => "syscall",
        "perch::stats" => "stats",
        t if t.starts_with("perch_cvmfs") => "cvmfs",
        t => t.split("::").next().unwrap_or(t),
    }
}

/// perch's one line style.
struct Style;

impl<S, N> FormatEvent<S, N> for Style
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        match *meta.level() {
            Level::ERROR => write!(writer, "perch: error: ")?,
            Level::WARN => write!(writer, "perch: warning: ")?,
            _ => write!(writer, "perch[{}]: ", flag_of(meta.target()))?,
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        write!(writer, "{}", fields.message)?;
        if !fields.rest.is_empty() {
            if !fields.message.is_empty() {
                write!(writer, " ")?;
            }
            write!(writer, "({})", fields.rest.join(", "))?;
        }
        writeln!(writer)
    }
}

/// The message and the other fields of one event.
#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.rest.push(format!("{}={value}", field.name()));
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.rest.push(format!("{}={value:?}", field.name()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_flags_map_to_targets() {
        assert_eq!(targets("fetch").unwrap(), vec!["fetch"]);
        assert_eq!(
            targets("cvmfs, fetch").unwrap(),
            vec!["cache", "cvmfs", "fetch", "perch_cvmfs"]
        );
        assert!(targets("all").unwrap().contains(&"perch::syscall"));
        assert!(!targets("all").unwrap().contains(&"ureq"));
        assert_eq!(targets("").unwrap(), Vec::<&str>::new());
    }

    #[test]
    fn unknown_flag_is_refused_with_the_list() {
        let e = targets("fetch,bogus").unwrap_err();
        assert_eq!(e.flag, "bogus");
        assert!(e.to_string().contains("known: cvmfs, fetch"), "{e}");
    }
}
