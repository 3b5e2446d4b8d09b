//! Claims on downloads in flight, shared by the processes of one cache directory, and the
//! removal of what dead processes left in `txn/`.
//!
//! A claim is an exclusive byte-range lock (`fcntl` `F_OFD_SETLK`, one byte at an offset
//! derived from the object's name) on this user's claims file in the cache directory,
//! `lock_claims.<uid>` (mode 0600), which every process of the user keeps open. Taking and
//! releasing a claim is one `fcntl` each: no file is created or removed per object (on ext4
//! and on cluster file systems, creating a file costs far more than downloading a small
//! object). The kernel releases the lock when its owner exits, however it dies, so a killed
//! downloader delays the others by one poll ([`CLAIM_POLL`]), never by a timeout. Two names
//! that map to the same byte only make one wait for the other; within a process, the cache
//! runs one download per name at a time.
//!
//! One file per user, because a lock needs only an open descriptor: with one file for the
//! group of an alien cache, any user of the group could lock all of it (one `fcntl` with
//! `l_len = 0`) and make every other user's jobs wait [`STALE_CLAIM`] for each object. Other
//! users cannot open this user's file, so the worst they can do is create it first (then it
//! is not this user's and is not used: this user's jobs download without claims). The cost:
//! two users who need the same object at the same moment both download it (once each).
//!
//! Claims only save duplicate downloads; correctness never depends on them: an object
//! appears only by the rename of a complete, verified temporary file. On a cluster file
//! system, `fcntl` locks are either cluster-wide (NFS, GPFS, CephFS, Lustre mounted with
//! `-o flock`; the server drops the locks of a dead client when its lease ends) or fail
//! (Lustre without `flock`): then no claim is taken and every process downloads for itself.
//! A claim held by a process on another host that hangs is waited for at most
//! [`STALE_CLAIM`], after which the waiter downloads without it.
//!
//! A waiter sleeps until the object's directory gets a new entry or this user's trust index
//! grows (what the holder does when it commits: inotify, this host only), or at most
//! [`CLAIM_POLL`] (a holder that died or failed, or one on another host).
//!
//! Temporary files are `txn/fetch.<host>.<pid>.<random>`; at start, those of processes that
//! are gone on this host, and anything in `txn/` older than an hour, are removed (with the
//! `txn/claim.*` files of perch versions that claimed with one file per object).

use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use nix::fcntl::{fcntl, FcntlArg, Flock, FlockArg};

/// A claim held this long without its object appearing is ignored (its holder is on
/// another host and hangs).
pub const STALE_CLAIM: Duration = Duration::from_secs(120);
/// Temp files older than this are removed even if their owner may live (another host).
const STALE_TXN: Duration = Duration::from_secs(3600);
/// The longest a process waiting for another's download sleeps between looks.
pub const CLAIM_POLL: Duration = Duration::from_millis(5);
/// How many objects one wait for another process's download may fetch meanwhile (see
/// [`Claims::claimed`]): enough to keep a few downloads going beside the awaited one, few
/// enough that a job reading one file of a large directory fetches little it never reads.
pub const MAX_HELPS: usize = 4;
/// The files claims are locks on, in the cache directory: `lock_claims.<uid>`, one per user.
pub const CLAIMS_FILE: &str = "lock_claims";

/// This user's claims file name.
fn claims_file() -> String {
    format!("{CLAIMS_FILE}.{}", nix::unistd::getuid().as_raw())
}

/// This host's name (temp files and trust indexes are per host); read once per process.
pub fn hostname() -> String {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "localhost".into())
    })
    .clone()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// What a waiter watches (inotify) for a sign that the object may be there now.
pub(super) struct Watch<'a> {
    /// The object's directory: the holder renames the object into it.
    pub dir: &'a Path,
    /// This user's trust index: the holder appends the object's record to it after the rename.
    pub index: Option<&'a Path>,
}

/// Waits until `ready()` or for at most `limit`, waking as soon as something in `watch`
/// changes on this host (inotify). Jobs started together read the same files in the same
/// order, so all but one wait on each object in turn: a fixed sleep per object added up to
/// most of a cold run of 16 jobs on one cache. Commits by other hosts of a shared file system
/// are not reported by inotify: for them the time limit is the poll.
///
/// Each wait makes and closes its own inotify instance; the close waits for an SRCU grace
/// period (0.1-0.7 ms on Linux 6.18). Measured and not kept: reusing instances and waking
/// only for this object's name made 16 cold jobs on one cache slower (11.3-13.7 s against
/// 9.9-11.6 s), because waiters woken sooner stay in step with the downloader and wait
/// for every object (103 000 waits against 5 000 in one run).
fn wait_for_change(watch: &Watch<'_>, limit: Duration, ready: impl Fn() -> bool) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    use std::os::fd::AsFd;
    let setup = || -> Option<Inotify> {
        let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok()?;
        ino.add_watch(
            watch.dir,
            AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CREATE,
        )
        .ok()?;
        if let Some(i) = watch.index {
            ino.add_watch(i, AddWatchFlags::IN_MODIFY).ok()?;
        }
        Some(ino)
    };
    let Some(ino) = setup() else {
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

/// This user's claims in one cache directory: locks on its `lock_claims.<uid>`.
#[derive(Debug)]
pub(super) struct Claims {
    /// `None`: no claims here (the file cannot be opened for writing, e.g. a read-only cache).
    file: Option<fs::File>,
}

/// A claim held; released when dropped (or when the process dies).
pub(super) struct Held<'a> {
    file: &'a fs::File,
    offset: i64,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let _ = fcntl(
            self.file.as_raw_fd(),
            FcntlArg::F_OFD_SETLK(&range(libc::F_UNLCK, self.offset)),
        );
    }
}

enum Claim<'a> {
    Held(Held<'a>),
    Busy,
    /// No claim possible here (no claims file, no `fcntl` locks on this file system).
    Unsupported,
}

/// One byte at `offset`, for `F_OFD_*` (which want `l_pid` 0).
fn range(kind: libc::c_int, offset: i64) -> libc::flock {
    #[allow(clippy::cast_possible_truncation)]
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: offset,
        l_len: 1,
        l_pid: 0,
    }
}

/// Where the claim of object `name` lives in the claims file: a stable hash (FNV-1a, 64 bit;
/// the same in every process and perch version on the cluster), as a non-negative offset.
fn offset_of(name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::try_from(h >> 2).unwrap_or(0)
}

impl Claims {
    /// Open (create) this user's claims file of the cache at `root` (mode 0200, write-only:
    /// see `open_lock_file`).
    pub(super) fn open(root: &Path) -> Claims {
        let path = root.join(claims_file());
        // Another user's file of that name could be locked whole by that user: not used.
        match super::open_lock_file(&path, libc::O_NONBLOCK) {
            Ok(f) => Claims { file: Some(f) },
            Err(e) => {
                tracing::debug!(target: "cache", file = %path.display(), error = %e,
                    "no claims file: downloading without claims");
                Claims { file: None }
            }
        }
    }

    /// Claims kept nowhere (tests).
    #[cfg(test)]
    pub(super) fn none() -> Claims {
        Claims { file: None }
    }

    fn try_claim(&self, name: &str) -> Claim<'_> {
        let Some(file) = &self.file else {
            return Claim::Unsupported;
        };
        let offset = offset_of(name);
        match fcntl(
            file.as_raw_fd(),
            FcntlArg::F_OFD_SETLK(&range(libc::F_WRLCK, offset)),
        ) {
            Ok(_) => Claim::Held(Held { file, offset }),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => Claim::Busy,
            Err(e) => {
                tracing::debug!(target: "cache", error = %e,
                    "no fcntl locks here: downloading without a claim");
                Claim::Unsupported
            }
        }
    }

    /// Whether nobody holds the claim of `name` now (without taking it).
    fn free(&self, name: &str) -> bool {
        let Some(file) = &self.file else { return true };
        let mut l = range(libc::F_WRLCK, offset_of(name));
        match fcntl(file.as_raw_fd(), FcntlArg::F_OFD_GETLK(&mut l)) {
            Ok(_) => i32::from(l.l_type) == libc::F_UNLCK,
            Err(_) => true,
        }
    }

    /// Across processes: run `work` (which downloads and commits the object `name`) unless
    /// `done()`, or another process is doing it, in which case wait for it and look again.
    /// The caller has looked (`done()`) just before.
    ///
    /// While another process holds the claim, `help()` runs before each wait (at most
    /// [`MAX_HELPS`] times): it may fetch an object the caller will probably need next (it
    /// says `true` if it did), so that jobs reading the same files in step download in
    /// parallel instead of one object at a time.
    pub(super) fn claimed<T>(
        &self,
        watch: &Watch<'_>,
        name: &str,
        done: impl Fn() -> Option<T>,
        work: impl FnOnce() -> Result<T, super::CacheError>,
        help: &mut dyn FnMut() -> bool,
    ) -> Result<T, super::CacheError> {
        let start = Instant::now();
        let mut helps = 0;
        loop {
            match self.try_claim(name) {
                Claim::Held(held) => return under(held, done, work),
                Claim::Busy if start.elapsed() < STALE_CLAIM => {
                    if helps < MAX_HELPS && help() {
                        helps += 1;
                    } else {
                        helps = MAX_HELPS;
                        wait_for_change(watch, CLAIM_POLL, || self.free(name));
                    }
                }
                Claim::Busy => {
                    tracing::debug!(target: "cache", object = name,
                        "claim held too long (another host?): downloading anyway");
                    return work();
                }
                Claim::Unsupported => return work(),
            }
            if let Some(v) = done() {
                return Ok(v);
            }
        }
    }

    /// Like [`Claims::claimed`], but never waits: `Ok(None)` when another process holds the
    /// claim, or when no claim can be taken here (nothing then stops two processes from
    /// downloading the same object, so nothing is fetched on speculation).
    pub(super) fn try_claimed<T>(
        &self,
        name: &str,
        done: impl Fn() -> Option<T>,
        work: impl FnOnce() -> Result<T, super::CacheError>,
    ) -> Result<Option<T>, super::CacheError> {
        match self.try_claim(name) {
            Claim::Held(held) => under(held, done, work).map(Some),
            Claim::Busy | Claim::Unsupported => Ok(None),
        }
    }
}

/// With the claim `held`: `work` unless `done()` (the object may have been committed between
/// the caller's look and the claim); the claim is released after.
fn under<T>(
    held: Held<'_>,
    done: impl Fn() -> Option<T>,
    work: impl FnOnce() -> Result<T, super::CacheError>,
) -> Result<T, super::CacheError> {
    let r = match done() {
        Some(v) => Ok(v),
        None => work(),
    };
    drop(held);
    r
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
            // A claim file of an older perch, locked by nobody: its owner is gone (an older
            // perch between its open and its lock sees that the name is gone and starts over).
            if let Ok(f) = fs::File::open(e.path()) {
                if let Ok(held) = Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                    let _ = fs::remove_file(e.path());
                    drop(held);
                }
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
    use std::io::BufRead;
    use std::os::unix::fs::MetadataExt;
    use std::process::{Command, Stdio};

    fn watch(dir: &Path) -> Watch<'_> {
        Watch { dir, index: None }
    }

    /// The child of `a_claim_dies_with_its_owner`: takes the claim of `CLAIM_NAME` in the cache
    /// directory `CLAIM_ROOT`, says so, and waits to be killed.
    #[test]
    #[ignore = "run by a_claim_dies_with_its_owner"]
    fn claim_holder_child() {
        let (Ok(root), Ok(name)) = (std::env::var("CLAIM_ROOT"), std::env::var("CLAIM_NAME"))
        else {
            return;
        };
        let claims = Claims::open(Path::new(&root));
        let Claim::Held(_held) = claims.try_claim(&name) else {
            panic!("cannot claim");
        };
        // The parent waits for this line on the child's stdout.
        let mut out = std::io::stdout().lock();
        std::io::Write::write_all(&mut out, b"held\n").unwrap();
        std::io::Write::flush(&mut out).unwrap();
        std::thread::sleep(Duration::from_secs(60));
    }

    #[test]
    fn a_claim_dies_with_its_owner() {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "cache::claim::tests::claim_holder_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--quiet",
            ])
            .env("CLAIM_ROOT", tmp.path())
            .env("CLAIM_NAME", "ab/cd")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .lines()
            .find(|l| l.as_ref().is_ok_and(|l| l.contains("held")))
            .expect("the child took no claim")
            .unwrap()
            .clone_into(&mut line);
        let claims = Claims::open(tmp.path());
        assert!(matches!(claims.try_claim("ab/cd"), Claim::Busy));
        assert!(!claims.free("ab/cd"));
        assert!(
            matches!(claims.try_claim("ab/ce"), Claim::Held(_)),
            "another object's claim is free"
        );
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            child.kill().unwrap(); // SIGKILL
            let at = Instant::now();
            child.wait().unwrap();
            at
        });
        let r = claims.claimed(&watch(tmp.path()), "ab/cd", || None, || Ok(7), &mut || {
            false
        });
        let done = Instant::now();
        let killed = killer.join().unwrap();
        assert_eq!(r.unwrap(), 7, "the work ran once the claim was free");
        assert!(
            done >= killed - Duration::from_millis(50),
            "did not wait for the live holder"
        );
        assert!(
            done.duration_since(killed) < Duration::from_secs(1),
            "waited {:?} after the holder died",
            done.duration_since(killed)
        );
        // No file per object: the claims file is all there is.
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, [claims_file().as_str()]);
    }

    #[test]
    fn a_held_claim_is_waited_for_and_its_result_used() {
        let tmp = tempfile::tempdir().unwrap();
        let obj = tmp.path().join("obj");
        let holder_claims = Claims::open(tmp.path());
        let claims = Claims::open(tmp.path());
        let o2 = obj.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            let Claim::Held(held) = holder_claims.try_claim("obj") else {
                panic!("cannot claim");
            };
            tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            fs::write(&o2, b"x").unwrap();
            drop(held);
        });
        rx.recv().unwrap();
        let t = Instant::now();
        let r = claims.claimed(
            &watch(tmp.path()),
            "obj",
            || obj.exists().then_some(1),
            || Ok(2),
            &mut || false,
        );
        holder.join().unwrap();
        assert_eq!(
            r.unwrap(),
            1,
            "waited for the holder instead of downloading"
        );
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    /// While another process downloads, the waiter fetches what it may need next (at most
    /// `MAX_HELPS` objects a wait); a speculative fetch never waits for a claim.
    #[test]
    fn a_waiter_helps_meanwhile_and_a_speculative_fetch_never_waits() {
        let tmp = tempfile::tempdir().unwrap();
        let obj = tmp.path().join("obj");
        let holder_claims = Claims::open(tmp.path());
        let claims = Claims::open(tmp.path());
        let Claim::Held(held) = holder_claims.try_claim("obj") else {
            panic!("cannot claim");
        };
        let t = Instant::now();
        let busy = claims.try_claimed(
            "obj",
            || None::<u8>,
            || panic!("downloaded a claimed object"),
        );
        assert_eq!(busy.unwrap(), None);
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(
            claims.try_claimed("free", || None, || Ok(2)).unwrap(),
            Some(2)
        );
        assert_eq!(
            Claims::none()
                .try_claimed("free", || None, || Ok(2))
                .unwrap(),
            None
        );
        let mut helped = 0;
        let r = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                fs::write(&obj, b"x").unwrap();
                drop(held);
            });
            claims.claimed(
                &watch(tmp.path()),
                "obj",
                || obj.exists().then_some(1),
                || Ok(2),
                &mut || {
                    helped += 1;
                    true
                },
            )
        });
        assert_eq!(r.unwrap(), 1, "waited for the holder");
        assert_eq!(helped, MAX_HELPS);
    }

    #[test]
    fn locks_on_other_users_claims_files_hold_up_nobody() {
        let tmp = tempfile::tempdir().unwrap();
        // What another user of an alien cache can lock: the one group-writable file earlier
        // versions shared, and its own claims file, each whole (l_len 0).
        let other = format!("{CLAIMS_FILE}.{}", nix::unistd::getuid().as_raw() + 1);
        let mut held = Vec::new();
        for name in [CLAIMS_FILE, other.as_str()] {
            let f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(tmp.path().join(name))
                .unwrap();
            let mut all = range(libc::F_WRLCK, 0);
            all.l_len = 0;
            fcntl(f.as_raw_fd(), FcntlArg::F_OFD_SETLK(&all)).unwrap();
            held.push(f);
        }
        let claims = Claims::open(tmp.path());
        let t = Instant::now();
        let r = claims.claimed(&watch(tmp.path()), "ab/cd", || None, || Ok(5), &mut || {
            false
        });
        assert_eq!(r.unwrap(), 5);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        let mode = fs::metadata(tmp.path().join(claims_file())).unwrap().mode();
        assert_eq!(
            mode & 0o777,
            0o200,
            "{mode:o}: nobody else can open it, nor can programs"
        );
    }

    #[test]
    fn without_a_claims_file_everyone_downloads() {
        let tmp = tempfile::tempdir().unwrap();
        let r = Claims::none().claimed(&watch(tmp.path()), "ab/cd", || None, || Ok(3), &mut || {
            false
        });
        assert_eq!(r.unwrap(), 3);
    }

    #[test]
    fn an_old_claim_file_left_by_a_dead_process_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let txn = tmp.path().join("txn");
        fs::create_dir(&txn).unwrap();
        fs::write(txn.join("claim.ab_cd"), b"").unwrap();
        clean_txn(&txn);
        assert!(!txn.join("claim.ab_cd").exists());
    }
}
