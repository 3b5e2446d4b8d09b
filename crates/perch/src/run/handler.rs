//! The handler that joins perch-intercept to perch-vfs, wiring only: a notification is answered
//! by the code of its row in perch-vfs's syscall table ([`Calls::answer`]), a traced
//! `execve`/`execveat`/`chdir` by [`Calls::rewrite`]. What lives here: the two views of a
//! caller (a notification, a ptrace stop) as a [`Caller`], `-M` remapping, `--record`, the
//! counters, and turning answers into replies.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::guard;
use perch_intercept::{Errno, Handler, Notification, TraceAction, TracedCall};
use perch_syscalls::{Answer, Call, CallerCreds, DirFd, TraceeView};
use perch_vfs::syscall::guard::Protected;
use perch_vfs::syscall::rewrite::Rewrite;
use perch_vfs::{Caller, Calls, Cred, Hooks, Kind, Namespace, Resolved};

/// `-M /virtual=/real`: paths under `from` are looked up under `to` instead.
#[derive(Debug, Clone)]
pub struct Remap {
    /// The prefix the program uses.
    pub from: Vec<u8>,
    /// Where it really is (a host path or a path under the mount point).
    pub to: Vec<u8>,
}

/// Counters of what the handler did, reported with `-d stats`.
#[derive(Debug, Default)]
pub struct Counts {
    /// Answered with CONTINUE.
    pub continued: AtomicU64,
    /// Answered from the namespace (values, errors, fds).
    pub virtual_: AtomicU64,
    /// Virtual fds injected.
    pub injected: AtomicU64,
    /// Calls done by perch on a host path (repository symlink leading out, `-M`).
    pub host: AtomicU64,
    /// Exec/chdir rewritten.
    pub rewritten: AtomicU64,
}

/// What the binary adds around the table's code.
struct Wiring {
    mp: Vec<u8>,
    remaps: Vec<Remap>,
    /// `--record`: the `<mountpoint>/<fqrn>/path` of every repository object touched.
    record: Option<Mutex<BTreeSet<String>>>,
    counts: Counts,
}

/// The hooks of [`Calls`], shared with the handler that reads them.
struct SharedWiring(Arc<Wiring>);

impl Hooks for SharedWiring {
    fn remap(&self, path: &[u8]) -> Option<Vec<u8>> {
        for r in &self.0.remaps {
            if let Some(rest) = path.strip_prefix(r.from.as_slice()) {
                if rest.is_empty() || rest[0] == b'/' {
                    let mut out = r.to.clone();
                    out.extend_from_slice(rest);
                    return Some(out);
                }
            }
        }
        None
    }

    /// Records a regular file (any lookup: open, stat, exec...) or a directory that was opened
    /// (listed). The line is what `perch cache preload --list` reads: paths that are not
    /// UTF-8, hold a newline or begin/end with white space (trimmed there) are skipped.
    fn touched(&self, r: &Resolved, listed: bool) {
        let Some(set) = &self.0.record else {
            return;
        };
        let Resolved::Virtual {
            repo: Some(repo),
            path,
            entry,
        } = r
        else {
            return;
        };
        if !(entry.kind == Kind::File || (listed && entry.is_dir())) {
            return;
        }
        let Ok(inner) = std::str::from_utf8(path) else {
            return;
        };
        let mut line = String::from_utf8_lossy(&self.0.mp).into_owned();
        if !line.ends_with('/') {
            line.push('/');
        }
        line.push_str(repo.fqrn());
        line.push_str(inner);
        if line.contains('\n') || line.trim() != line {
            return;
        }
        set.lock().unwrap_or_else(|p| p.into_inner()).insert(line);
    }

    fn host_call(&self) {
        self.0.counts.host.fetch_add(1, Ordering::Relaxed);
    }

    fn injected(&self) {
        self.0.counts.injected.fetch_add(1, Ordering::Relaxed);
    }

    /// `/proc/<pid>/maps` (`smaps`, `numa_maps`) opened for reading: a translated copy that
    /// names `/cvmfs` paths where the kernel's names the shadow tree (guard.rs), as readlink of
    /// `/proc/<pid>/fd/N` already does. Absolute paths only; a relative open of `maps` from a
    /// `/proc/<pid>` directory fd sees the kernel's file.
    fn proc_open(&self, ns: &Namespace, c: &dyn Caller, path: &[u8], flags: i32) -> Option<Answer> {
        let real = guard::maps_file(&c.proc_real_path(path)?)?;
        let shadow_root = ns.shadow().root().as_os_str().as_bytes();
        let to_virtual = |p: &[u8]| {
            ns.virtual_path(std::path::Path::new(OsStr::from_bytes(p)))
                .map(|v| v.into_os_string().into_vec())
        };
        Some(match guard::translated(&real, shadow_root, &to_virtual) {
            Ok(fd) => Answer::Fd {
                fd,
                cloexec: flags & libc::O_CLOEXEC != 0,
            },
            Err(e) => Answer::Err(e),
        })
    }
}

/// The namespace as a [`Handler`].
pub struct PerchHandler {
    calls: Calls,
    wiring: Arc<Wiring>,
    log: bool,
}

/// `/proc/self/...`, `/proc/thread-self/...` → `/proc/<tid>/...`, `/dev/fd/N` → `/proc/<tid>/fd/N`.
fn proc_path(path: &[u8], tid: i32) -> Option<PathBuf> {
    let rest = if let Some(r) = path.strip_prefix(b"/dev/fd/") {
        let mut v = b"self/fd/".to_vec();
        v.extend_from_slice(r);
        v
    } else {
        path.strip_prefix(b"/proc/")?.to_vec()
    };
    let (first, tail) = match rest.iter().position(|&b| b == b'/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (&rest[..], &b""[..]),
    };
    let mut out = b"/proc/".to_vec();
    match first {
        b"self" | b"thread-self" => out.extend_from_slice(tid.to_string().as_bytes()),
        d if !d.is_empty() && d.iter().all(u8::is_ascii_digit) => out.extend_from_slice(d),
        _ => return None,
    }
    out.extend_from_slice(tail);
    Some(PathBuf::from(OsStr::from_bytes(&out)))
}

fn proc_link(path: &[u8], tid: i32) -> Option<Vec<u8>> {
    let real = proc_path(path, tid)?;
    std::fs::read_link(real)
        .ok()
        .map(|t| t.into_os_string().into_vec())
}

/// A notification as the table's code sees its caller.
struct NotifiedCaller<'a, 'n>(&'a Notification<'n>);

impl TraceeView for NotifiedCaller<'_, '_> {
    fn read_memory(&self, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        self.0.read_memory(addr, buf)
    }
}

impl Caller for NotifiedCaller<'_, '_> {
    fn fd_path_unverified(&self, fd: DirFd) -> Result<Vec<u8>, Errno> {
        self.0.fd_path_unverified(fd)
    }

    fn verify(&self) -> Result<(), Errno> {
        self.0.verify()
    }

    fn proc_link(&self, path: &[u8]) -> Option<Vec<u8>> {
        self.0.reading();
        proc_link(path, self.0.pid().0)
    }

    fn proc_real_path(&self, path: &[u8]) -> Option<PathBuf> {
        // The path is read from (or followed) by the caller of this.
        self.0.reading();
        proc_path(path, self.0.pid().0)
    }

    fn open_fd_unverified(&self, fd: DirFd) -> Result<OwnedFd, Errno> {
        self.0.open_fd_unverified(fd)
    }

    fn creds(&self) -> CallerCreds {
        self.0.creds()
    }
}

/// A stopped tracee as the table's code sees it: it cannot go away while stopped.
struct TracedCaller<'a>(&'a TracedCall);

impl TraceeView for TracedCaller<'_> {
    fn read_memory(&self, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        self.0.read_memory(addr, buf)
    }
}

impl Caller for TracedCaller<'_> {
    fn fd_path_unverified(&self, fd: DirFd) -> Result<Vec<u8>, Errno> {
        self.0.fd_path_unverified(fd)
    }

    fn verify(&self) -> Result<(), Errno> {
        Ok(())
    }

    fn proc_link(&self, path: &[u8]) -> Option<Vec<u8>> {
        proc_link(path, self.0.pid().0)
    }

    fn proc_real_path(&self, path: &[u8]) -> Option<PathBuf> {
        proc_path(path, self.0.pid().0)
    }

    fn open_fd_unverified(&self, fd: DirFd) -> Result<OwnedFd, Errno> {
        self.0.open_fd(fd)
    }

    fn creds(&self) -> CallerCreds {
        self.0.creds()
    }
}

/// Reads the credentials perch runs with: tracees have the same (no_new_privs: no setuid).
pub fn own_cred() -> Cred {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> Vec<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let uid = field("Uid:").get(1).copied().unwrap_or(u64::from(u32::MAX));
    let gid = field("Gid:").get(1).copied().unwrap_or(u64::from(u32::MAX));
    let groups = field("Groups:");
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_DAC_OVERRIDE: u64 = 1 << 1;
    let to32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    Cred {
        uid: to32(uid),
        gid: to32(gid),
        groups: groups.into_iter().map(to32).collect(),
        privileged: cap_eff & CAP_DAC_OVERRIDE != 0,
    }
}

impl PerchHandler {
    /// A handler over `ns`, checking permissions for `cred`; `record`: remember the repository
    /// paths the program touches (`perch run --record`).
    pub fn new(
        ns: Namespace,
        cred: Cred,
        remaps: Vec<Remap>,
        record: bool,
        protected: Protected,
    ) -> PerchHandler {
        let wiring = Arc::new(Wiring {
            mp: ns.mountpoint().to_vec(),
            remaps,
            record: record.then(Mutex::default),
            counts: Counts::default(),
        });
        let log = tracing::enabled!(target: "perch::syscall", tracing::Level::DEBUG);
        PerchHandler {
            calls: Calls::new(ns, cred, Box::new(SharedWiring(Arc::clone(&wiring))))
                .protect(protected),
            wiring,
            log,
        }
    }

    /// What happened.
    pub fn counts(&self) -> &Counts {
        &self.wiring.counts
    }

    /// The recorded paths, sorted (empty without `record`).
    pub fn recorded(&self) -> Vec<String> {
        self.wiring.record.as_ref().map_or_else(Vec::new, |m| {
            m.lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect()
        })
    }

    /// The answer of the table's code for one call, counted.
    fn answer(&self, c: &dyn Caller, call: &Call) -> Answer {
        let answer = self.calls.answer(c, call);
        let counts = &self.wiring.counts;
        let counter = match answer {
            Answer::Continue => &counts.continued,
            _ => &counts.virtual_,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        answer
    }

    fn reply(&self, n: Notification<'_>, answer: Answer) {
        match answer {
            Answer::Continue => n.continue_unchecked(),
            Answer::Err(e) => n.error(e),
            Answer::Ret(v) => n.ret(v),
            Answer::Write { addr, data, ret } => match n.write_memory(addr, &data) {
                Ok(()) => n.ret(ret),
                Err(e) => n.error(e),
            },
            Answer::Fd { fd, cloexec } => n.inject_fd(fd, cloexec),
        }
    }
}

impl Handler for PerchHandler {
    fn on_syscall(&self, n: Notification<'_>) {
        let answer = self.answer(&NotifiedCaller(&n), n.call());
        if self.log {
            tracing::debug!(target: "perch::syscall", pid = n.pid().0, "{} = {answer}", n.display());
        }
        self.reply(n, answer);
    }

    fn on_trace_call(&self, t: &TracedCall) -> Answer {
        let answer = self.answer(&TracedCaller(t), t.call());
        if self.log {
            tracing::debug!(target: "perch::syscall", pid = t.pid().0, "{} = {answer} (ptrace)", t.call().display(t));
        }
        answer
    }

    fn on_trace_path(&self, t: &TracedCall) -> TraceAction {
        let action = match self.calls.rewrite(&TracedCaller(t), t.call()) {
            Rewrite::Continue => TraceAction::Continue,
            Rewrite::Fail(e) => TraceAction::Fail(e),
            Rewrite::Path(p) => TraceAction::Rewrite(p),
            Rewrite::Exec {
                path,
                prepend,
                skip,
            } => TraceAction::RewriteExec {
                path,
                prepend,
                skip,
            },
        };
        if !matches!(action, TraceAction::Continue | TraceAction::Fail(_)) {
            self.wiring.counts.rewritten.fetch_add(1, Ordering::Relaxed);
        }
        if self.log && action != TraceAction::Continue {
            tracing::debug!(target: "perch::syscall", pid = t.pid().0, "{} => {}", t.call().display(t), show_action(&action));
        }
        action
    }
}

fn show_action(a: &TraceAction) -> String {
    match a {
        TraceAction::Continue => "continue".into(),
        TraceAction::Rewrite(p) => format!("rewritten to {:?}", String::from_utf8_lossy(p)),
        TraceAction::RewriteExec {
            path,
            prepend,
            skip,
        } => format!(
            "exec {:?} argv {:?} + argv[{skip}..]",
            String::from_utf8_lossy(path),
            prepend
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
        ),
        TraceAction::Fail(e) => format!("-1 {}", e.name().unwrap_or("E?")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_paths_name_the_caller() {
        assert_eq!(
            proc_path(b"/proc/self/fd/3", 42),
            Some(PathBuf::from("/proc/42/fd/3"))
        );
        assert_eq!(
            proc_path(b"/dev/fd/0", 7),
            Some(PathBuf::from("/proc/7/fd/0"))
        );
        assert_eq!(
            proc_path(b"/proc/thread-self/cwd", 9),
            Some(PathBuf::from("/proc/9/cwd"))
        );
        assert_eq!(
            proc_path(b"/proc/123/exe", 9),
            Some(PathBuf::from("/proc/123/exe"))
        );
        assert_eq!(proc_path(b"/proc/cpuinfo", 9), None);
        assert_eq!(proc_path(b"/etc/passwd", 9), None);
    }
}
