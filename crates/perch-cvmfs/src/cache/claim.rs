//! Claims on downloads in flight, shared by the processes of one cache directory, and the
//! removal of what dead processes left in `txn/`.
//!
//! A claim is `txn/claim.<object>` held with an exclusive `flock`: the kernel releases it
//! when its owner exits, however it dies, so a killed downloader delays the others by one
//! poll (a few ms), never by a timeout. The holder removes the file before releasing it; a
//! process that locks a file which no longer has that name (it locked a finished claim
//! after its removal) starts over.
//!
//! Claims only save duplicate downloads; correctness never depends on them: an object
//! appears only by the rename of a complete, verified temporary file. On a cluster file
//! system `flock` is either cluster-wide (NFSv4, GPFS, Lustre mounted with `-o flock`; the
//! server drops the lock of a dead client when its lease ends) or fails (Lustre without
//! `flock`, some NFSv3 setups): then no claim is taken and every process downloads for
//! itself. A claim held by a process on another host that hangs is waited for at most
//! [`STALE_CLAIM`], after which the waiter downloads without it.
//!
//! Temporary files are `txn/fetch.<host>.<pid>.<random>`; at start, those of processes that
//! are gone on this host, and anything in `txn/` older than an hour, are removed.

use std::fs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use nix::fcntl::{Flock, FlockArg};

/// A claim held this long without its object appearing is ignored (its holder is on
/// another host and hangs).
pub const STALE_CLAIM: Duration = Duration::from_secs(120);
/// Temp files older than this are removed even if their owner may live (another host).
const STALE_TXN: Duration = Duration::from_secs(3600);
/// The longest a process waiting for another's download sleeps between looks.
const CLAIM_POLL: Duration = Duration::from_millis(5);

/// This host's name (temp files and trust indexes are per host).
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits until `ready()` or for at most `limit`, waking as soon as an entry is renamed into
/// or removed from one of `dirs` on this host (inotify). Jobs started together read the same
/// files in the same order, so all but one wait on each object in turn: a fixed sleep per
/// object added up to most of a cold run of 16 jobs on one cache. Commits by other hosts of a
/// shared file system are not reported by inotify: for them the time limit is the poll.
fn wait_for_change(dirs: &[&Path], limit: Duration, ready: impl Fn() -> bool) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    use std::os::fd::AsFd;
    let watch = || -> Option<Inotify> {
        let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok()?;
        for d in dirs {
            ino.add_watch(*d, AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_DELETE)
                .ok()?;
        }
        Some(ino)
    };
    let Some(ino) = watch() else {
        std::thread::sleep(limit);
        return;
    };
    // Checked after the watches exist, so a change in between is not missed.
    if ready() {
        return;
    }
    let timeout = PollTimeout::try_from(limit).unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(ino.as_fd(), PollFlags::POLLIN)];
    let _ = poll(&mut fds, timeout);
}

enum Claim {
    Held(Flock<fs::File>),
    Busy,
    /// No claim possible here (read-only `txn/`, no `flock` on this file system).
    Unsupported,
}

fn try_claim(marker: &Path) -> Claim {
    loop {
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o660)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(marker)
            // Another user's claim file: a read-only descriptor can hold a flock too.
            .or_else(|_| fs::File::open(marker));
        let Ok(f) = f else {
            return Claim::Unsupported;
        };
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(held) => {
                // The file may have been finished and removed between our open and our lock.
                let same = match (fs::symlink_metadata(marker), held.metadata()) {
                    (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                    _ => false,
                };
                if same {
                    return Claim::Held(held);
                }
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Claim::Busy,
            Err((_, e)) => {
                tracing::debug!(target: "cache", claim = %marker.display(), error = %e,
                    "no flock here: downloading without a claim");
                return Claim::Unsupported;
            }
        }
    }
}

/// Across processes: run `work` (which downloads and commits the object in `dir`) unless
/// `done()`, or another process is doing it, in which case wait for it and look again.
pub(super) fn claimed<T>(
    txn: &Path,
    dir: &Path,
    name: &str,
    done: impl Fn() -> Option<T>,
    work: impl FnOnce() -> Result<T, super::CacheError>,
) -> Result<T, super::CacheError> {
    let marker = txn.join(format!("claim.{}", name.replace('/', "_")));
    let start = Instant::now();
    loop {
        if let Some(v) = done() {
            return Ok(v);
        }
        match try_claim(&marker) {
            Claim::Held(held) => {
                // The object may have been committed between our look and the claim.
                let r = match done() {
                    Some(v) => Ok(v),
                    None => work(),
                };
                // Removed before released: a waiter that locks it then sees a stale name.
                let _ = fs::remove_file(&marker);
                drop(held);
                return r;
            }
            Claim::Busy if start.elapsed() < STALE_CLAIM => {
                wait_for_change(&[dir, txn], CLAIM_POLL, || !marker.exists());
            }
            Claim::Busy => {
                tracing::debug!(target: "cache", claim = %marker.display(),
                    "claim held too long (another host?): downloading anyway");
                return work();
            }
            Claim::Unsupported => return work(),
        }
    }
}

/// `fetch.<host>.<pid>.<random>` owner, if this host's.
fn local_owner(name: &str, host: &str) -> Option<u32> {
    let rest = name.split_once('.')?.1;
    let rest = rest.strip_prefix(host)?.strip_prefix('.')?;
    rest.split('.').next()?.parse().ok()
}

/// Remove temp files of dead processes (this host), claims nobody holds, and anything older
/// than an hour.
pub(super) fn clean_txn(txn: &Path) {
    let Ok(rd) = fs::read_dir(txn) else {
        return;
    };
    let now = SystemTime::now();
    let host = hostname();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("claim.") {
            // Locked by nobody: its owner is gone (or it is between open and lock, and will
            // see that the name is gone and start over).
            if let Claim::Held(held) = try_claim(&e.path()) {
                let _ = fs::remove_file(e.path());
                drop(held);
            }
            continue;
        }
        let dead = local_owner(&name, &host).is_some_and(|pid| !pid_alive(pid));
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .map(|t| now.duration_since(t).unwrap_or_default() > STALE_TXN)
            .unwrap_or(false);
        if dead || old {
            tracing::debug!(target: "cache", file = %name, "removing leftover");
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_left_by_a_dead_process_costs_no_wait() {
        let tmp = tempfile::tempdir().unwrap();
        let txn = tmp.path().join("txn");
        fs::create_dir(&txn).unwrap();
        // What a process killed between creating its claim and writing to it leaves.
        fs::write(txn.join("claim.ab_cd"), b"").unwrap();
        let t = Instant::now();
        let r = claimed(&txn, tmp.path(), "ab/cd", || None, || Ok(7)).unwrap();
        assert_eq!(r, 7);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert!(!txn.join("claim.ab_cd").exists());
    }

    #[test]
    fn a_held_claim_is_waited_for_and_its_result_used() {
        let tmp = tempfile::tempdir().unwrap();
        let txn = tmp.path().join("txn");
        fs::create_dir(&txn).unwrap();
        let obj = tmp.path().join("obj");
        let Claim::Held(held) = try_claim(&txn.join("claim.obj")) else {
            panic!("cannot claim");
        };
        let o2 = obj.clone();
        let holder = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            fs::write(&o2, b"x").unwrap();
            drop(held);
        });
        let r = claimed(
            &txn,
            tmp.path(),
            "obj",
            || obj.exists().then_some(1),
            || Ok(2),
        );
        holder.join().unwrap();
        assert_eq!(
            r.unwrap(),
            1,
            "waited for the holder instead of downloading"
        );
    }
}
