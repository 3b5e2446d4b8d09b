//! `perch run --mode fuse`: the program runs in a private user + mount namespace where
//! `/cvmfs` is perch's own FUSE file system; nothing is intercepted.
//!
//! Who runs where: the FUSE server stays in perch's process, outside the namespaces, so the
//! program cannot ptrace it (it has no capability in perch's user namespace) and perch reads
//! the cache by its host paths; only the program and its descendants live in the namespace.
//! The user namespace maps the caller's uid and gid to themselves (root maps every id), so
//! files keep their owners and `id` prints the same uid and gid as natively. A non-root user
//! can map nothing else without a setuid helper: inside, other users' files and the caller's
//! supplementary groups show as 65534 (`nobody`/`nogroup`), as under cvmfsexec.
//!
//! Where the host has no mount directory (`/cvmfs`), the program gets a new root: a read-only
//! tmpfs with a recursive bind mount of every top-level host entry, plus `/cvmfs`. The working
//! directory (by path), the environment and open descriptors are kept.
//!
//! Start-up, in order: the repositories the command line names are mounted in a thread
//! ([`perch_vfs::Namespace::mount_ahead`]); the child sets up the namespaces and sends the
//! `/dev/fuse` descriptor, then execs the program at once; perch answers `INIT` and starts the
//! server threads meanwhile (the kernel holds the program's first request until `INIT` is
//! answered). A failure before the descriptor arrives falls back to notify mode in auto mode;
//! one after it ([`FuseFailure::Broken`]) kills the program and is reported, never retried.
//!
//! Signals, as with notify mode: the program is perch's child in perch's process group, so a
//! terminal's Ctrl-C, Ctrl-Z and `fg` reach both; perch ignores `SIGINT`/`SIGQUIT` while the
//! program runs (a handler, so the program does not inherit an ignored signal), passes
//! `SIGTERM`/`SIGHUP` sent to perch on to the program, and exits with the program's status
//! (128+N for signal N). Processes the program leaves running when it exits are killed
//! (`SIGKILL`) and reaped, as in notify mode: perch is their subreaper.
//!
//! Not supported in fuse mode (auto mode picks notify for them): `-M` remapping and
//! `--record`, both of which need to see the program's calls.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use perch_intercept::exec_candidates;
use perch_sys::ns::{self, IdMaps, LateError, MountPlace, RootEntry};
use perch_vfs::Namespace;

use super::mode::{explain, Unavailable};
use super::RunArgs;

/// Directories the new root's tmpfs may be built on (any existing one will do).
const BASES: &[&str] = &["/tmp", "/mnt", "/var/tmp", "/opt", "/srv", "/home", "/dev"];

/// Why a fuse run did not happen or ended without the program's status.
#[derive(Debug)]
pub enum FuseFailure {
    /// Fuse mode cannot work here; nothing ran (auto mode falls back to notify).
    Unavailable(Unavailable),
    /// The command line names no runnable program (exit 126/127, message printed).
    Exec(ExitCode),
    /// The FUSE server failed after the program had started (it was killed): too late to
    /// fall back to notify mode.
    Broken(String),
}

impl From<Unavailable> for FuseFailure {
    fn from(u: Unavailable) -> FuseFailure {
        FuseFailure::Unavailable(u)
    }
}

/// Whether `dir` is already perch's FUSE mount (`fuse.perch` in `/proc/self/mountinfo`): the
/// caller is a program inside a fuse-mode job, where `/cvmfs` is served and perch's caches are
/// read-only. A `perch run` there runs its program directly on that `/cvmfs`.
pub fn inside_fuse_job(dir: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let dir = dir.as_os_str().as_bytes();
    info.lines().any(|l| {
        // "id parent major:minor root mountpoint options [optional...] - fstype source super"
        let mut f = l.split(' ');
        let point = f.nth(4).unwrap_or("");
        let fstype = l.split(" - ").nth(1).and_then(|t| t.split(' ').next());
        fstype == Some(perch_fuse::FS_TYPE) && unescape(point) == dir
    })
}

/// mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn unavailable(msg: impl Into<String>) -> FuseFailure {
    FuseFailure::Unavailable(Unavailable(msg.into()))
}

/// Options fuse mode cannot honour; `Some(reason)` when one is given.
pub fn unsupported_options(args: &RunArgs) -> Option<Unavailable> {
    if !args.remap.is_empty() {
        return Some(Unavailable("-M remapping needs notify mode".into()));
    }
    if args.record.is_some() {
        return Some(Unavailable("--record needs notify mode".into()));
    }
    None
}

/// Where the FUSE file system goes for mount directory `dir`.
fn mount_place(dir: &Path) -> Result<MountPlace, FuseFailure> {
    match ns::needs_new_root(dir) {
        Ok(false) => Ok(MountPlace::Existing(dir.as_os_str().as_bytes().to_vec())),
        Ok(true) => {
            let name = match dir.strip_prefix("/") {
                Ok(rest) if rest.components().count() == 1 => rest.as_os_str().as_bytes().to_vec(),
                _ => {
                    return Err(unavailable(format!(
                        "{} does not exist and only a top-level mount directory can be made",
                        dir.display()
                    )))
                }
            };
            let entries = root_entries(&name)
                .map_err(|e| unavailable(format!("cannot list / for the new root: {e}")))?;
            let base = BASES
                .iter()
                .find(|b| Path::new(b).is_dir())
                .ok_or_else(|| unavailable("no directory to build the new root on"))?;
            Ok(MountPlace::NewRoot {
                name,
                entries,
                base: base.as_bytes().to_vec(),
            })
        }
        Err(e) => Err(unavailable(format!(
            "mount directory {}: {e}",
            dir.display()
        ))),
    }
}

/// The host's top-level entries, but `skip` (the mount directory).
fn root_entries(skip: &[u8]) -> std::io::Result<Vec<RootEntry>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/")? {
        let e = e?;
        let name = e.file_name().into_vec();
        if name == skip || name == b".perch-oldroot" {
            continue;
        }
        let t = e.file_type()?;
        out.push(if t.is_symlink() {
            let target = std::fs::read_link(e.path())?;
            RootEntry::Symlink(name, target.into_os_string().into_vec())
        } else if t.is_dir() {
            RootEntry::Dir(name)
        } else {
            RootEntry::File(name)
        });
    }
    out.sort_by(|a, b| entry_name(a).cmp(entry_name(b)));
    Ok(out)
}

/// The repositories the command line and working directory name by path
/// (`<mount_dir>/<fqrn>/...`, also inside an argument such as `-I/cvmfs/<fqrn>/include` or
/// `PATH=/cvmfs/<fqrn>/bin`): the program will most likely look there first. At most 4.
fn named_repositories(mount_dir: &[u8], args: &[OsString], cwd: &Path) -> Vec<String> {
    let mut prefix = mount_dir.to_vec();
    prefix.push(b'/');
    let mut out: Vec<String> = Vec::new();
    for text in args
        .iter()
        .map(|a| a.as_bytes())
        .chain(std::iter::once(cwd.as_os_str().as_bytes()))
    {
        let mut at = 0;
        while let Some(i) = find(&text[at..], &prefix).map(|i| i + at) {
            at = i + prefix.len();
            // Only where a path starts: the beginning, or after `=`, `:`, `,` or a space.
            if i > 0 && !matches!(text[i - 1], b'=' | b':' | b',' | b' ') {
                continue;
            }
            let name: &[u8] = text[at..].split(|&b| b == b'/').next().unwrap_or_default();
            let name = name
                .split(|&b| matches!(b, b':' | b',' | b' '))
                .next()
                .unwrap_or_default();
            let valid = name.contains(&b'.')
                && name
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
            if let (true, Ok(name)) = (valid, std::str::from_utf8(name)) {
                if !out.iter().any(|n| n == name) && out.len() < 4 {
                    out.push(name.to_string());
                }
            }
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn entry_name(e: &RootEntry) -> &[u8] {
    match e {
        RootEntry::Dir(n) | RootEntry::File(n) | RootEntry::Symlink(n, _) => n,
    }
}

/// Runs the program in fuse mode; `Unavailable` when that cannot work here (before anything
/// ran), which auto mode answers with notify.
pub fn run(
    args: &RunArgs,
    ns: Arc<Namespace>,
    caches: &[std::path::PathBuf],
) -> Result<ExitCode, FuseFailure> {
    if let Some(u) = unsupported_options(args) {
        return Err(u.into());
    }
    // No kernel version check: every call on this path exists in Linux 4.18, the first kernel
    // that allows FUSE mounts in a user namespace (docs/site-admins.md lists them); an older one
    // refuses the mount, which `explain` reports.
    let place = mount_place(&args.client.mount_dir)?;
    let env: Vec<OsString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut s = k;
            s.push("=");
            s.push(v);
            s
        })
        .collect();
    let program = args.command.first().cloned().unwrap_or_default();
    let candidates = exec_candidates(&program, std::env::var_os("PATH").as_deref());
    let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
    // Root maps every id (files of other users keep their owners); anyone else only their own.
    let ids = if rustix::process::getuid().is_root() {
        IdMaps::All
    } else {
        IdMaps::Own
    };
    let plan = ns::NsPlan::new(
        &candidates,
        &args.command,
        &env,
        cwd.as_os_str(),
        &place,
        ids,
        perch_fuse::MOUNT_OPTIONS,
    )
    .and_then(|p| p.read_only(caches))
    .map_err(|_| unavailable("an argument or environment string contains a NUL byte"))?;
    // The repositories the command line names are mounted while the namespace is set up and
    // the program starts, instead of on its first access (the access waits for this mount;
    // a failure is reported to it, as without this).
    let ahead = named_repositories(ns.mountpoint(), &args.command, &cwd);
    if !ahead.is_empty() {
        let ns = ns.clone();
        let started = std::thread::Builder::new()
            .name("perch-mount-ahead".into())
            .spawn(move || {
                for fqrn in ahead {
                    ns.mount_ahead(&fqrn);
                }
            });
        if let Err(e) = started {
            tracing::debug!(target: "mode", "repositories mounted on first access: {e}");
        }
    }
    // Orphans of the program come to perch, which kills them when the program has exited (as
    // notify mode does: nothing would serve their /cvmfs afterwards).
    if let Err(e) = ns::become_subreaper() {
        tracing::warn!("cannot become the subreaper of the job: {e}");
    }
    let child = ns::spawn(&plan).map_err(|e| unavailable(format!("fork failed: {e}")))?;
    // Once the child has sent the descriptor it execs the program (the kernel holds the
    // program's first /cvmfs request until the server has answered INIT): from then on a
    // failure cannot fall back to notify mode.
    let started = |child: &ns::NsChild, why: String| {
        child.kill_and_reap();
        ns::kill_remaining_children();
        FuseFailure::Broken(why)
    };
    let fd = match child.fuse_fd() {
        Ok(Ok(fd)) => fd,
        Ok(Err(e)) => {
            return Err(started(
                &child,
                format!("the /dev/fuse descriptor was lost: {e}"),
            ))
        }
        Err(e) => {
            child.kill_and_reap();
            return Err(explain(&e).into());
        }
    };
    match child.read_only_result() {
        None => tracing::debug!(
            target: "mode",
            "fuse mode: the program sees perch's caches read-only: {}",
            caches
                .iter()
                .map(|c| c.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some((n, errno)) => tracing::warn!(
            "{n} of perch's cache directories could not be made read-only for the program \
             ({errno}); their objects are still verified before they are served"
        ),
    }
    if let Err(e) = ns::forward_signals(child.pid()) {
        tracing::warn!("cannot install signal handlers: {e}");
    }
    let threads = args.workers.unwrap_or(4);
    // fuser gives each worker thread a zeroed 16 MiB request buffer: mapped fresh, those cost
    // nothing until a request fills them (instead of zeroing 64 MiB at start-up).
    perch_sys::misc::mmap_large_allocations(4 << 20);
    let session = match perch_fuse::serve(fd, ns, threads) {
        Ok(s) => Some(s),
        // The mount is already gone: the program has ended (quickly, or its exec failed) and
        // its mount namespace with it. Nothing is left to serve; its status follows.
        Err(e) if e.kind() == std::io::ErrorKind::NotConnected => None,
        Err(e) => return Err(started(&child, format!("FUSE handshake failed: {e}"))),
    };
    tracing::debug!(
        target: "mode",
        pid = child.pid().0,
        "fuse mode: {} is perch's FUSE mount in a private user+mount namespace \
         (notify mode not needed)",
        args.client.mount_dir.display()
    );
    let status = child
        .wait()
        .map_err(|e| started(&child, format!("waitpid failed: {e}")))?;
    // Processes the program left behind are killed and reaped; the session thread then ends
    // with the mount namespace (it is not waited for).
    ns::kill_remaining_children();
    drop(session);
    match status {
        Ok(127) | Ok(126) => {
            match child.late_error() {
                Some(LateError::Exec(errno)) => {
                    #[allow(clippy::print_stderr)]
                    {
                        eprintln!(
                            "perch: cannot execute {}: {}",
                            program.to_string_lossy(),
                            errno.message().unwrap_or("error")
                        );
                    }
                    let code = if errno == perch_sys::Errno::ENOENT {
                        127
                    } else {
                        126
                    };
                    return Err(FuseFailure::Exec(ExitCode::from(code)));
                }
                Some(LateError::Chdir(errno)) => {
                    return Err(FuseFailure::Broken(format!(
                        "cannot enter the working directory {}: {errno}",
                        cwd.display()
                    )))
                }
                None => {}
            }
            Ok(ExitCode::from(
                u8::try_from(status.unwrap_or(0)).unwrap_or(255),
            ))
        }
        Ok(code) => Ok(ExitCode::from(u8::try_from(code).unwrap_or(255))),
        Err(signal) => Ok(ExitCode::from(u8::try_from(128 + signal).unwrap_or(255))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_named_on_the_command_line() {
        let args: Vec<OsString> = [
            "/cvmfs/a.example.org/bin/tool",
            "-I/cvmfs/nope.example.org/include",
            "--path=/cvmfs/b.example.org/lib:/cvmfs/c.example.org",
            "/cvmfs/a.example.org/again",
            "/cvmfsx/d.example.org",
            "/cvmfs/noDot",
            "text /cvmfs/e.example.org,/cvmfs/f.example.org",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        assert_eq!(
            named_repositories(b"/cvmfs", &args, Path::new("/cvmfs/z.example.org/sub")),
            [
                "a.example.org",
                "b.example.org",
                "c.example.org",
                "e.example.org"
            ]
        );
        assert_eq!(
            named_repositories(b"/cvmfs", &[], Path::new("/cvmfs/z.example.org/sub")),
            ["z.example.org"]
        );
        assert!(named_repositories(b"/cvmfs", &[], Path::new("/home/u")).is_empty());
    }

    #[test]
    fn only_top_level_mount_directories_are_made() {
        let e = mount_place(Path::new("/no/such/perch/dir")).unwrap_err();
        assert!(matches!(e, FuseFailure::Unavailable(u) if u.0.contains("top-level")));
        assert!(matches!(
            mount_place(Path::new("/")),
            Ok(MountPlace::Existing(_))
        ));
    }
}
