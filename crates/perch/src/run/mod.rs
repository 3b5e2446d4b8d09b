//! `perch run`: a program and its descendants with `/cvmfs` visible, without privileges, and
//! `perch syscalls`: what perch does with each file-system syscall.
//!
//! Three modes ([`mode::Mode`]; `--mode auto`, the default, picks fuse where its setup
//! succeeds, else notify, else ptrace): **fuse** ([`fuse`]) runs the program in a private user +
//! mount namespace where `/cvmfs` is perch's FUSE server (perch-fuse) and intercepts nothing;
//! **notify**, described below, intercepts path syscalls; **ptrace** answers the same calls
//! from the same table at seccomp ptrace stops ([`perch_intercept::Backend::Ptrace`]). All
//! serve the same [`perch_vfs::Namespace`].
//!
//! The wiring of notify mode: configuration → [`crate::mounts::Client`] → [`crate::adapter::VfsMounter`]
//! (repositories mounted lazily) → [`perch_vfs::Namespace`] → [`handler::PerchHandler`] →
//! [`perch_intercept::Interceptor`], whose filter is generated from [`perch_vfs::SYSCALLS`]
//! ([`interceptor`]): rows routed `Notify` are notified and answered by their row's code, rows
//! routed `Trace` (execve, execveat, chdir) are traced and rewritten, rows routed `Errno` are
//! refused by the filter itself, the rest never leaves the kernel.
//!
//! Exit status: the program's (128+N when killed by signal N); perch's own failures are the
//! codes of [`crate::exit::Failure`] (206 when the kernel or a container policy forbids seccomp
//! user notification or ptrace). A program that cannot be executed at all gives 127 (not
//! found) or 126 (not executable), like `env(1)`, with one line on stderr.
//!
//! Exec from `/cvmfs`: the path is rewritten to the shadow file. A `#!` script is started as the
//! kernel would (`interpreter [arg] script args…`) but with the interpreter's real file and the
//! script's *own* path as argument, so `$0` and files found relative to it stay under `/cvmfs`
//! (the shadow tree's siblings are placeholders until opened through perch). Interpreters that
//! are scripts themselves are followed by perch, level by level like the kernel (five at most,
//! then `ELOOP`), so every interpreter of the chain may be in `/cvmfs`. An ELF whose
//! `PT_INTERP` loader is under `/cvmfs` runs as `loader --argv0 ARGV0 PROGRAM ARGS` from the
//! loader's shadow file (glibc ≥ 2.33 loaders); the loader opens PROGRAM through perch. The
//! same holds for the last interpreter of a `#!` chain.
//!
//! Limits of notify mode, documented:
//! - `/proc/self/exe` of a PT_INTERP program shows the loader; `AT_EXECFN` is the program path.
//! - Host symlinks into `/cvmfs` (`/opt/sw -> /cvmfs/sw.example.org`) are not followed into
//!   the repository (perch never stats host paths, see perch-vfs `resolve`).
//! - `inotify_add_watch`/`fanotify_mark` on virtual objects fail with `ENOSPC` (content never
//!   changes; `tail -f` falls back to polling); chmod/chown/utimes/truncate/xattr writes
//!   reached through a repository symlink leading to a host file fail with `EXDEV`.
//! - `open(O_PATH)` of a virtual file or directory gives a read-only fd of its shadow object
//!   (seccomp's ADDFD cannot pass `O_PATH` files): `F_GETFL` shows `O_RDONLY` and `read` works;
//!   `O_PATH|O_NOFOLLOW` of a symlink itself fails with `ELOOP`.
//! - Names in `/cvmfs` with fewer than two dots that are not configured repositories
//!   (`/cvmfs/pyvenv.cfg`) are `ENOENT` without a mount attempt; an unconfigured or unknown
//!   repository is `ENOENT` with one warning per run naming it and what to set.
//! - `-M /virtual=/real`: calls are done by perch on the real path; `getcwd` inside a remapped
//!   directory shows the real path.
//! - `ptrace` fails with `EPERM`, `io_uring_*` with `ENOSYS` (perch-intercept); in ptrace mode
//!   `pidfd_getfd` with `EPERM` too (the fd relay shares perch's descriptors).
//! - Without `CAP_SYS_PTRACE`, `prctl(PR_SET_DUMPABLE, 0)` returns 0 without effect
//!   (perch-intercept): the program stays dumpable, so perch can read its paths.
//! - perch does not forward signals sent to itself: a `SIGTERM` to perch kills the program
//!   (`PTRACE_O_EXITKILL`); send signals to the program's process group instead.

pub mod fuse;
pub mod guard;
pub mod handler;
pub mod mode;

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::anyhow;
use perch_intercept::{Backend, Interceptor};
use perch_vfs::syscall::guard::Protected;
use perch_vfs::{Namespace, SyscallTable};

use crate::adapter::VfsMounter;
use crate::exit::{Classify, Fail, Failure};
use crate::mounts::{Client, ClientArgs};
use handler::{PerchHandler, Remap};

/// `perch run` options.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Also list this repository in /cvmfs (repeatable); CVMFS_REPOSITORIES is listed too.
    #[arg(short = 'r', long = "repository", value_name = "FQRN")]
    pub repositories: Vec<String>,
    /// Write the -d output to this file instead of stderr.
    #[arg(short = 'o', long = "log", value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Make /VIRTUAL show what is at /REAL (a host path or a path under /cvmfs), as parrot_run -M.
    #[arg(short = 'M', long = "mount", value_name = "/VIRTUAL=/REAL")]
    pub remap: Vec<String>,
    /// Record every repository file the program opened, stat'ed or executed and every
    /// directory it listed, as sorted, deduplicated `/cvmfs/<fqrn>/path` lines written to FILE
    /// when the run ends (the format of `perch cache preload --list FILE`; a listed directory
    /// is preloaded with everything below it).
    #[arg(long = "record", value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// How /cvmfs is given to the program: notify (intercept path syscalls with seccomp
    /// notification), fuse (perch's FUSE server in a private user + mount namespace, nothing
    /// intercepted), ptrace (intercept path syscalls at ptrace stops: older kernels, or where
    /// notification is refused), or auto (fuse where it works, else notify, else ptrace;
    /// `-d mode` says why).
    #[arg(long = "mode", value_enum, default_value_t = mode::Mode::default(), value_name = "MODE")]
    pub mode: mode::Mode,
    /// Supervisor threads in notify mode: at most this many calls are answered at once
    /// (default: one per CPU the job may use, 4 to 16; one per two CPUs receive all the time,
    /// the others only while a handler waits for a download).
    #[arg(long = "workers", value_name = "N")]
    pub workers: Option<usize>,
    /// The program and its arguments (`--` before CMD when CMD starts with `-`; an unknown
    /// option before CMD is a usage error, not the program).
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// The interceptor with the filter generated from perch-vfs's table: rows routed `Notify` are
/// notified, `Trace` traced, `Errno` refused by the filter itself (`SECCOMP_RET_ERRNO`, no round
/// trip), the rest never leaves the kernel.
pub fn interceptor() -> Interceptor {
    // Downloads and claim waits inside a handler call in a spare supervisor thread.
    perch_cvmfs::blocking::set_hook(|f| perch_intercept::blocking(f));
    let routes = SyscallTable.routes();
    let mut i = Interceptor::new().notify(routes.notify).trace(routes.trace);
    for (nr, errno) in routes.errno {
        i = i.refuse(nr, errno);
    }
    i
}

fn parse_remap(s: &str) -> Result<Remap, Fail> {
    let (from, to) = s
        .split_once('=')
        .filter(|(a, b)| a.starts_with('/') && b.starts_with('/'))
        .ok_or_else(|| Fail::new(Failure::Usage, anyhow!("-M {s}: expected /VIRTUAL=/REAL")))?;
    let trim = |p: &str| {
        let t = p.trim_end_matches('/');
        if t.is_empty() {
            "/".to_string()
        } else {
            t.to_string()
        }
    };
    Ok(Remap {
        from: trim(from).into_bytes(),
        to: trim(to).into_bytes(),
    })
}

/// The client of `perch run`: configuration and the repositories named with `-r`.
fn client(args: &RunArgs) -> Client {
    let mut client = Client::new(args.client.clone());
    client.add_repositories(&args.repositories);
    client
}

/// The namespace every mode serves: configuration, cache directory, lazy mounter.
fn namespace(client: Arc<Client>) -> Result<Namespace, Fail> {
    let mount_dir = client.mount_dir().as_os_str().as_bytes().to_vec();
    let cache_root = client.cache_root().or_fail(Failure::Config)?;
    crate::mounts::usable_cache(&cache_root)?;
    let mounter = Arc::new(VfsMounter::new(client, cache_root));
    Namespace::with_mountpoint(mounter, &mount_dir).or_fail(Failure::Config)
}

fn setup(args: &RunArgs) -> Result<PerchHandler, Fail> {
    let remaps = args
        .remap
        .iter()
        .map(|s| parse_remap(s))
        .collect::<Result<Vec<_>, _>>()?;
    let client = Arc::new(client(args));
    let ns = namespace(Arc::clone(&client))?;
    // After the namespace: it creates the cache root.
    let protected = Protected::new(&client.configured_cache_dirs());
    Ok(PerchHandler::new(
        ns,
        handler::own_cred(),
        remaps,
        args.record.is_some(),
        protected,
    ))
}

fn interceptor_for(args: &RunArgs, backend: Backend) -> Interceptor {
    let mut interceptor = interceptor().backend(backend);
    if let Some(n) = args.workers {
        interceptor = interceptor.workers(n);
    }
    interceptor
}

/// `--record FILE`: the lines to FILE.tmp, then renamed to FILE.
fn write_record(file: &std::path::Path, lines: &[String]) -> Result<(), Fail> {
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut text = String::new();
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, file))
        .map_err(|e| anyhow!("cannot write the record {}: {e}", file.display()))
        .or_fail(Failure::Io)
}

/// Runs `perch run` in the mode asked for; returns the program's status.
pub fn command(args: RunArgs) -> Result<ExitCode, Fail> {
    use fuse::FuseFailure;
    use mode::Mode;
    if fuse::inside_fuse_job(&args.client.mount_dir) {
        tracing::debug!(
            target: "mode",
            "already inside a fuse-mode job: {} is perch's FUSE mount, running the program directly",
            args.client.mount_dir.display()
        );
        return direct_exec(&args.command);
    }
    // A program of this user must not attach to perch or open its memory: perch writes the
    // cache. (ptrace mode's programs reopen perch's files through the fd relay instead.)
    if let Err(e) = perch_sys::misc::set_dumpable(false) {
        tracing::warn!("cannot make perch non-dumpable (PR_SET_DUMPABLE): {e}");
    }
    match args.mode {
        Mode::Notify => {
            tracing::debug!(target: "mode", "notify mode: asked for with --mode notify");
            return intercepted(args, Backend::Notify, false);
        }
        Mode::Ptrace => {
            tracing::debug!(target: "mode", "ptrace mode: asked for with --mode ptrace");
            return intercepted(args, Backend::Ptrace, false);
        }
        Mode::Auto | Mode::Fuse => {}
    }
    // Configuration errors are the same in both modes: report them, do not fall back.
    let client = Arc::new(client(&args));
    let ns = Arc::new(namespace(Arc::clone(&client))?);
    // After the namespace: it creates the cache directory these include.
    let caches = client.cache_dirs();
    match fuse::run(&args, ns, &caches) {
        Ok(code) => Ok(code),
        Err(FuseFailure::Exec(code)) => Ok(code),
        Err(FuseFailure::Broken(why)) => Err(Fail::new(
            Failure::Unsupported,
            anyhow!("fuse mode failed after the program started: {why}"),
        )),
        Err(FuseFailure::Unavailable(why)) if args.mode == Mode::Auto => {
            tracing::debug!(target: "mode", "notify mode: fuse mode unavailable: {why}");
            intercepted(args, Backend::Notify, true)
        }
        Err(FuseFailure::Unavailable(why)) => Err(Fail::new(
            Failure::Unsupported,
            anyhow!("fuse mode unavailable: {why}"),
        )),
    }
}

/// Replaces perch with the program (inside a fuse-mode job, where `/cvmfs` is already served);
/// 127 or 126 with one line when it cannot be executed, like `env(1)`.
fn direct_exec(command: &[OsString]) -> Result<ExitCode, Fail> {
    use std::os::unix::process::CommandExt;
    let Some((program, rest)) = command.split_first() else {
        return Err(Fail::new(Failure::Usage, anyhow!("no program given")));
    };
    let e = std::process::Command::new(program).args(rest).exec();
    #[allow(clippy::print_stderr)]
    {
        eprintln!("perch: cannot execute {}: {e}", program.to_string_lossy());
    }
    Ok(ExitCode::from(
        if e.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        },
    ))
}

/// `perch run` in notify or ptrace mode; `fallback`: when notify mode cannot start here
/// (kernel too old, no seccomp notification, a listener refused), run in ptrace mode instead.
fn intercepted(args: RunArgs, backend: Backend, fallback: bool) -> Result<ExitCode, Fail> {
    let handler = Arc::new(setup(&args)?);
    let env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let mut interceptor = interceptor_for(&args, backend);
    let mut stats = interceptor.stats();
    let mut result = interceptor.run(&args.command, &env, handler.clone());
    if let Err(e) = &result {
        if backend == Backend::Notify && fallback && e.notify_unavailable() {
            let why = match std::error::Error::source(e) {
                Some(src) => format!("{e}: {src}"),
                None => e.to_string(),
            };
            tracing::debug!(target: "mode", "ptrace mode: notify mode unavailable: {why}");
            interceptor = interceptor_for(&args, Backend::Ptrace);
            stats = interceptor.stats();
            result = interceptor.run(&args.command, &env, handler.clone());
        }
    }
    if let Some(file) = &args.record {
        write_record(file, &handler.recorded())?;
    }
    let c = handler.counts();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    tracing::debug!(
        target: "perch::stats",
        notifications = stats.notifications(),
        traced = stats.traced(),
        pool = stats.pool(),
        parallel = stats.parallel(),
        continued = load(&c.continued),
        answered = load(&c.virtual_),
        injected = load(&c.injected),
        host = load(&c.host),
        rewritten = load(&c.rewritten),
        "run finished"
    );
    if stats.panics() > 0 {
        tracing::warn!(
            "{} notifications failed with EIO after a perch bug (handler panic)",
            stats.panics()
        );
    }
    use perch_intercept::Error as E;
    match result {
        Ok(status) => Ok(ExitCode::from(u8::try_from(status.code()).unwrap_or(255))),
        Err(E::Exec { program, errno }) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "perch: cannot execute {}: {}",
                    program.to_string_lossy(),
                    errno.message().unwrap_or("error")
                );
            }
            Ok(ExitCode::from(if errno == perch_intercept::Errno::ENOENT {
                127
            } else {
                126
            }))
        }
        Err(
            e @ (E::KernelTooOld { .. }
            | E::SeccompUnavailable { .. }
            | E::NoNewPrivs { .. }
            | E::Seccomp { .. }
            | E::Ptrace { .. }),
        ) => Err(Fail::new(Failure::Unsupported, e)),
        Err(e @ (E::EmptyCommand | E::Nul)) => Err(Fail::new(Failure::Usage, e)),
        Err(e) => Err(Fail::new(Failure::Internal, e)),
    }
}

/// `perch syscalls`: the table, as documentation.
pub fn syscalls() -> ExitCode {
    use std::io::Write;
    let mut text = SyscallTable.to_string();
    text.push_str(
        "\nOne exception by argument: prctl(PR_SET_DUMPABLE, 0) returns 0 without effect \
         when perch lacks CAP_SYS_PTRACE (it could not read a non-dumpable program's paths); \
         PR_GET_DUMPABLE still says 1.\n\
         In ptrace mode pidfd_getfd fails with EPERM: the program reopens perch's files \
         through a relay process that shares perch's descriptors, and pidfd_getfd on it \
         would hand them over.\n",
    );
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use perch_bpf::{Action, SeccompData, AUDIT_ARCH_X86_64};
    use perch_vfs::{SyscallTable, Trap, Treatment};

    /// The BPF program `perch run` loads routes every syscall number as the table says (swept
    /// through the user-space interpreter): notified and traced rows, rows refused by the
    /// filter itself with their errno, everything else allowed; ptrace is perch-intercept's own
    /// refusal.
    #[test]
    fn the_filter_is_generated_from_the_table() {
        let prog = super::interceptor().policy().compile().unwrap();
        let ptrace = u32::try_from(libc::SYS_ptrace).unwrap();
        for nr in 0..perch_syscalls::MAX_NR {
            let got = prog
                .action(&SeccompData::new(nr, AUDIT_ARCH_X86_64))
                .unwrap();
            let want = match SyscallTable.by_nr(nr).map(|r| (r.trap, r.treatment)) {
                Some((Trap::Notify, _)) => Action::Notify,
                Some((Trap::Trace, _)) => Action::Trace(0),
                Some((Trap::Errno, Treatment::Refused(e, _))) => {
                    Action::Errno(u16::try_from(e.raw()).unwrap())
                }
                Some((Trap::Allow, _)) => Action::Allow,
                Some(other) => panic!("{nr}: {other:?}"),
                None if nr == ptrace => Action::Errno(1),
                None => Action::Allow,
            };
            assert_eq!(got, want, "syscall {nr}");
        }
    }
}
