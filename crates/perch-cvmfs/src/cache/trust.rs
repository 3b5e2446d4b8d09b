//! Trust on use (DESIGN.md §4a): which cache files this user has verified.
//!
//! A cache is written by processes perch does not trust: other users of an alien cache, and
//! programs under `perch run` (same uid). An object is therefore served only when this user
//! verified it: hashed while downloading it, or hashed again and found equal to the digest
//! this user recorded when it downloaded it. The index remembers, per verified file, what any
//! change of the file changes: (device, inode) → (size, ctime). A write, truncate, chmod,
//! chown, rename or link changes ctime, so a mismatch means "hash again" — never "trust".
//!
//! Two maps, one append-only file:
//! * `digests`: object name (`ab/cdef…`, `chunked/ab/…`) → SHA-1 and size of the decompressed
//!   content, learnt only from a download this user verified against the object's name;
//! * `stamps`: (device, inode) → (size, ctime, object name) of a file hashed equal to that digest.
//!
//! The file is `<cache>/trust/<uid>@<host>` (device numbers are per host), mode 0644 in a
//! directory whose sticky bit stops other users from replacing it; a file there not owned by
//! this user, or writable by others, is ignored (and the index kept in memory only). Programs
//! under `perch run` run with the user's uid, so they could append forged lines: in fuse mode
//! the program sees every cache directory read-only (this file included); in notify and ptrace
//! modes perch answers every call that could write there itself and refuses it
//! (perch-vfs `syscall::guard`).
//! Lines are appended with one `write` each
//! (`O_APPEND`), so a killed process leaves at most one torn line, which does not parse or
//! does not match any file. Another process of the same user may have verified a file since
//! this one loaded the index: a miss first reads what was appended since.
//!
//! Every record of a file is a line, and a file is recorded again whenever its stamp changes
//! for a harmless reason (a link, a rename, its LRU time refreshed), so the file only grows.
//! A process that opens an index with many more lines than live records rewrites it
//! ([`COMPACT_SLACK`]): one line per file still at its place in the cache, written to a new
//! file renamed over the old one. Others notice the new file at their next miss and read it
//! from the start; a record appended to the old file meanwhile is lost, which costs a hash,
//! never trust.
//!
//! A site may name trusted fillers (`CVMFS_PERCH_TRUSTED_UIDS`: the uid that runs `perch cache
//! preload` into an alien cache): their indexes are read (never written) as if they were this
//! user's own, so objects they verified are served without a download of this user's, offline
//! too. Their records are checked the same way: a file changed since the filler hashed it is
//! hashed again and compared with the filler's digest.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use perch_format::compress::buffer_len;
use perch_format::hash::{Algorithm, ContentHash};

/// What any change of a file changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// ctime seconds.
    pub ctime: i64,
    /// ctime nanoseconds.
    pub ctime_ns: i64,
}

impl Stamp {
    /// The stamp of an open file (`fstat`).
    pub fn of(file: &fs::File) -> std::io::Result<Stamp> {
        Ok(Stamp::from_meta(&file.metadata()?))
    }

    /// The stamp from metadata.
    pub fn from_meta(m: &fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            ctime: m.ctime(),
            ctime_ns: m.ctime_nsec(),
        }
    }
}

/// The content digest of an object as this user's verified download found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// SHA-1 of the decompressed content.
    pub sha1: ContentHash,
    /// Decompressed size.
    pub size: u64,
}

/// An index with more lines than twice its live records and this many more is compacted
/// when a process opens it.
pub const COMPACT_SLACK: u64 = 4096;

#[derive(Debug, Default)]
struct Maps {
    digests: HashMap<String, Digest>,
    stamps: HashMap<(u64, u64), (Stamp, String)>,
    /// Bytes of the file read so far.
    read: u64,
    /// Lines of the file read so far.
    lines: u64,
}

/// This user's index of verified cache files (see the module docs).
#[derive(Debug)]
pub struct TrustIndex {
    /// The append-only file, `None` when the index is kept in memory only.
    file: Option<Mutex<fs::File>>,
    path: PathBuf,
    maps: Mutex<Maps>,
    /// This user's own index (records are appended); a trusted filler's is only read.
    append: bool,
    /// The user whose index it is: a replacement owned by anyone else is not read.
    owner: u32,
}

fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

fn format_line(name: &str, digest: &Digest, stamp: &Stamp) -> String {
    format!(
        "{name} {} {} {} {} {} {} .\n",
        digest.sha1.hex(),
        digest.size,
        stamp.dev,
        stamp.ino,
        stamp.ctime,
        stamp.ctime_ns
    )
}

/// Whether an index file may be read as `owner`'s: a regular file of that user that nobody
/// else can write.
fn owned_by(m: &fs::Metadata, owner: u32) -> bool {
    m.uid() == owner && m.mode() & 0o022 == 0 && m.is_file()
}

/// One line of an index, without its newline (bytes: a job may read thousands at its start).
fn parse_line(line: &[u8]) -> Option<(String, Digest, Stamp)> {
    fn num<T: std::str::FromStr>(b: &[u8]) -> Option<T> {
        std::str::from_utf8(b).ok()?.parse().ok()
    }
    let mut f = line.split(|&b| b == b' ');
    let mut next = || f.next();
    let name = std::str::from_utf8(next()?).ok()?;
    let hex = next()?;
    let mut bytes = [0u8; 20];
    // Lower-case only, as written: anything else is not a line of ours.
    if hex.len() != 40 || !hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    hex::decode_to_slice(hex, &mut bytes).ok()?;
    let size = num(next()?)?;
    let stamp = Stamp {
        dev: num(next()?)?,
        ino: num(next()?)?,
        size,
        ctime: num(next()?)?,
        ctime_ns: num(next()?)?,
    };
    if next()? != b"." || next().is_some() {
        return None;
    }
    let sha1 = ContentHash {
        algo: Algorithm::Sha1,
        bytes,
    };
    Some((name.to_owned(), Digest { sha1, size }, stamp))
}

impl TrustIndex {
    /// The index of a site's trusted filler `uid` on this host (`CVMFS_PERCH_TRUSTED_UIDS`),
    /// read-only: its records count as this user's own. `None` when it does not exist, is
    /// not that user's, is writable by anyone else, or cannot be read (it must be readable by
    /// the users who trust it: perch creates indexes 0644).
    pub fn open_filler(cache_root: &Path, uid: u32) -> Option<TrustIndex> {
        let path = cache_root
            .join("trust")
            .join(format!("{uid}@{}", super::claim::hostname()));
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path);
        let f = match f {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(target: "cache", index = %path.display(), error = %e,
                    "no trust index of the trusted filler");
                return None;
            }
        };
        match f.metadata() {
            Ok(m) if owned_by(&m, uid) => {}
            Ok(m) => {
                tracing::warn!(target: "cache", index = %path.display(), owner = m.uid(),
                    mode = format_args!("{:o}", m.mode() & 0o7777),
                    "trust index of a trusted filler not owned by it or writable by others: ignored");
                return None;
            }
            Err(_) => return None,
        }
        let idx = TrustIndex {
            file: Some(Mutex::new(f)),
            path,
            maps: Mutex::new(Maps::default()),
            append: false,
            owner: uid,
        };
        idx.read_new();
        Some(idx)
    }

    /// Open (create) the index of this user and host in `<cache_root>/trust/`.
    pub fn open(cache_root: &Path, dir_mode: u32) -> TrustIndex {
        let dir = cache_root.join("trust");
        if !dir.is_dir() && fs::create_dir(&dir).is_ok() {
            let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(dir_mode));
        }
        let path = dir.join(format!("{}@{}", uid(), super::claim::hostname()));
        let file = fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path);
        let file = match file {
            Ok(f) => match f.metadata() {
                Ok(m) if owned_by(&m, uid()) => Some(f),
                Ok(m) => {
                    tracing::warn!(target: "cache", index = %path.display(), owner = m.uid(),
                        mode = format_args!("{:o}", m.mode() & 0o7777),
                        "trust index not owned by this user or writable by others: ignored (objects are hashed on every first use)");
                    None
                }
                Err(_) => None,
            },
            Err(e) => {
                tracing::debug!(target: "cache", index = %path.display(), error = %e,
                    "no trust index file: kept in memory");
                None
            }
        };
        let idx = TrustIndex {
            file: file.map(Mutex::new),
            path,
            maps: Mutex::new(Maps::default()),
            append: true,
            owner: uid(),
        };
        idx.read_new();
        idx.compact_if_long();
        idx
    }

    /// An index kept in memory only (tests, caches where no file can be written).
    pub fn in_memory() -> TrustIndex {
        TrustIndex {
            file: None,
            path: PathBuf::new(),
            maps: Mutex::new(Maps::default()),
            append: true,
            owner: uid(),
        }
    }

    /// Where the index lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file this user's records are appended to, if any (what a process waiting for
    /// another's download watches).
    pub fn file_path(&self) -> Option<&Path> {
        (self.file.is_some() && self.append).then_some(self.path.as_path())
    }

    /// Read what other processes of this user appended since the last read.
    fn read_new(&self) {
        let Some(file) = &self.file else { return };
        let mut maps = lock(&self.maps);
        let mut f = lock(file);
        if let Some(newer) = self.replaced(&f) {
            *f = newer;
            maps.read = 0;
            maps.lines = 0;
        }
        let mut text = Vec::new();
        if f.seek(SeekFrom::Start(maps.read)).is_err() || f.read_to_end(&mut text).is_err() {
            return;
        }
        // Only whole lines; a torn tail is read again once completed (or never, if its writer died).
        let end = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        maps.read += end as u64;
        for line in text[..end].split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            maps.lines += 1;
            if let Some((name, digest, stamp)) = parse_line(line) {
                maps.digests.insert(name.clone(), digest);
                maps.stamps.insert((stamp.dev, stamp.ino), (stamp, name));
            }
        }
    }

    fn open_options(&self) -> fs::OpenOptions {
        let mut o = fs::OpenOptions::new();
        o.read(true)
            .append(self.append)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
        o
    }

    /// The index file now at our path, if it is no longer the one `f` reads (another process
    /// compacted it) and may be read.
    fn replaced(&self, f: &fs::File) -> Option<fs::File> {
        let now = fs::symlink_metadata(&self.path).ok()?;
        let ours = f.metadata().ok()?;
        if (now.dev(), now.ino()) == (ours.dev(), ours.ino()) {
            return None;
        }
        let g = self.open_options().open(&self.path).ok()?;
        owned_by(&g.metadata().ok()?, self.owner).then_some(g)
    }

    /// Rewrites this user's index when most of its lines are dead: one line per file still
    /// at its place in the cache, in a new file renamed over the old one.
    fn compact_if_long(&self) {
        let Some(file) = self.file.as_ref().filter(|_| self.append) else {
            return;
        };
        let mut maps = lock(&self.maps);
        if maps.lines <= 2 * maps.stamps.len() as u64 + COMPACT_SLACK {
            return;
        }
        let (Some(dir), Some(root)) = (
            self.path.parent(),
            self.path.parent().and_then(Path::parent),
        ) else {
            return;
        };
        let mut text = String::new();
        let mut kept = 0u64;
        maps.stamps.retain(|_, (stamp, name)| {
            fs::symlink_metadata(root.join(&*name))
                .is_ok_and(|m| (m.dev(), m.ino()) == (stamp.dev, stamp.ino))
        });
        for (stamp, name) in maps.stamps.values() {
            if let Some(d) = maps.digests.get(name) {
                text.push_str(&format_line(name, d, stamp));
                kept += 1;
            }
        }
        let written = tempfile::Builder::new()
            .prefix(".compact.")
            .permissions(fs::Permissions::from_mode(0o644))
            .tempfile_in(dir)
            .and_then(|mut tmp| {
                tmp.write_all(text.as_bytes())?;
                let ino = tmp.as_file().metadata()?.ino();
                tmp.persist(&self.path).map_err(|e| e.error)?;
                Ok(ino)
            });
        let from = maps.lines;
        match written.and_then(|ino| {
            let g = self.open_options().open(&self.path)?;
            // Ours, unless another process compacted at the same moment (then read theirs).
            Ok((g.metadata()?.ino() == ino).then_some(g))
        }) {
            Ok(Some(g)) => {
                *lock(file) = g;
                maps.read = text.len() as u64;
                maps.lines = kept;
                tracing::debug!(target: "cache", index = %self.path.display(), from, to = kept,
                    "trust index compacted");
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(target: "cache", index = %self.path.display(),
                error = %e, "cannot compact the trust index"),
        }
    }

    fn matches(&self, name: &str, stamp: &Stamp) -> bool {
        lock(&self.maps)
            .stamps
            .get(&(stamp.dev, stamp.ino))
            .is_some_and(|(s, n)| s == stamp && n == name)
    }

    /// Is the file with `stamp` object `name` as this user verified it? (No hashing.)
    pub fn verified(&self, name: &str, stamp: &Stamp) -> bool {
        if self.matches(name, stamp) {
            return true;
        }
        self.read_new();
        self.matches(name, stamp)
    }

    /// The digest this user's verified download of `name` found, if any.
    pub fn digest(&self, name: &str) -> Option<Digest> {
        if let Some(d) = lock(&self.maps).digests.get(name) {
            return Some(d.clone());
        }
        self.read_new();
        lock(&self.maps).digests.get(name).cloned()
    }

    /// Remember that the file with `stamp` holds `digest`, the verified content of `name`.
    pub fn record(&self, name: &str, digest: &Digest, stamp: &Stamp) {
        {
            let mut maps = lock(&self.maps);
            maps.digests.insert(name.to_string(), digest.clone());
            maps.stamps
                .insert((stamp.dev, stamp.ino), (*stamp, name.to_string()));
        }
        let Some(file) = self.file.as_ref().filter(|_| self.append) else {
            return;
        };
        let line = format_line(name, digest, stamp);
        // One write on an O_APPEND file: whole or not at all, even if this process is killed.
        if let Err(e) = lock(file).write_all(line.as_bytes()) {
            tracing::debug!(target: "cache", index = %self.path.display(), error = %e,
                "cannot append to the trust index");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hash an open file from offset 0 with `algo` (the fd's position is not moved), returning the
/// digest and the stamps before and after: equal stamps mean nothing changed while hashing.
pub fn hash_fd(file: &fs::File, algo: Algorithm) -> std::io::Result<(ContentHash, Stamp, Stamp)> {
    let before = Stamp::of(file)?;
    let mut hasher = algo.hasher();
    let mut buf = vec![0u8; buffer_len(before.size, 1 << 18)];
    let mut off = 0u64;
    loop {
        let n = file.read_at(&mut buf, off)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        off += n as u64;
    }
    let after = Stamp::of(file)?;
    Ok((hasher.finish(), before, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(b: &[u8]) -> Digest {
        Digest {
            sha1: Algorithm::Sha1.digest(b),
            size: b.len() as u64,
        }
    }

    #[test]
    fn a_change_of_the_file_is_a_miss_and_other_processes_records_are_seen() {
        let tmp = tempfile::tempdir().unwrap();
        let obj = tmp.path().join("obj");
        fs::write(&obj, b"hello").unwrap();
        let f = fs::File::open(&obj).unwrap();
        let a = TrustIndex::open(tmp.path(), 0o700);
        let b = TrustIndex::open(tmp.path(), 0o700);
        let s = Stamp::of(&f).unwrap();
        assert!(!a.verified("ab/cd", &s));
        a.record("ab/cd", &digest(b"hello"), &s);
        assert!(a.verified("ab/cd", &s));
        assert!(
            !a.verified("ab/other", &s),
            "the stamp belongs to another name"
        );
        assert!(
            b.verified("ab/cd", &s),
            "appended by another index on the same file"
        );
        assert_eq!(b.digest("ab/cd"), Some(digest(b"hello")));
        // chmod changes ctime: no longer verified.
        std::thread::sleep(std::time::Duration::from_millis(5));
        fs::set_permissions(&obj, fs::Permissions::from_mode(0o444)).unwrap();
        assert!(!a.verified("ab/cd", &Stamp::of(&f).unwrap()));
    }

    #[test]
    fn a_torn_or_forged_line_does_not_verify_anything() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("trust")).unwrap();
        let idx = TrustIndex::open(tmp.path(), 0o700);
        let obj = tmp.path().join("obj");
        fs::write(&obj, b"x").unwrap();
        let s = Stamp::of(&fs::File::open(&obj).unwrap()).unwrap();
        let torn = format!(
            "ab/cd {} 1 {} {} {}",
            Algorithm::Sha1.digest(b"x").hex(),
            s.dev,
            s.ino,
            s.ctime
        );
        fs::OpenOptions::new()
            .append(true)
            .open(idx.path())
            .unwrap()
            .write_all(torn.as_bytes())
            .unwrap();
        assert!(!idx.verified("ab/cd", &s));
    }

    #[test]
    fn a_long_index_is_compacted_to_the_files_still_there_and_others_follow_the_new_file() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("ab")).unwrap();
        let put = |name: &str, body: &[u8]| {
            let p = tmp.path().join(name);
            fs::write(&p, body).unwrap();
            Stamp::of(&fs::File::open(&p).unwrap()).unwrap()
        };
        let kept = put("ab/kept", b"kept");
        let gone = put("ab/gone", b"gone");
        let before = TrustIndex::open(tmp.path(), 0o700);
        before.record("ab/gone", &digest(b"gone"), &gone);
        // The same file recorded again and again (a refreshed LRU time changes its ctime).
        for ns in 0..(COMPACT_SLACK as i64 + 100) {
            let s = Stamp {
                ctime_ns: ns,
                ..kept
            };
            before.record("ab/kept", &digest(b"kept"), &s);
        }
        before.record("ab/kept", &digest(b"kept"), &kept);
        fs::remove_file(tmp.path().join("ab/gone")).unwrap();
        let lines = |p: &Path| fs::read_to_string(p).unwrap().lines().count();
        assert!(lines(before.path()) as u64 > COMPACT_SLACK);

        let after = TrustIndex::open(tmp.path(), 0o700);
        assert_eq!(lines(after.path()), 1, "one line per file still there");
        assert!(after.verified("ab/kept", &kept));
        assert!(!after.verified("ab/gone", &gone), "its file is gone");
        let mode = fs::metadata(after.path()).unwrap().mode() & 0o777;
        assert_eq!(mode & 0o022, 0, "{mode:o}");
        // An index opened before follows the new file: it sees what is appended there.
        let new = put("ab/new", b"new");
        after.record("ab/new", &digest(b"new"), &new);
        assert!(before.verified("ab/new", &new));
        // And its own records go to the new file.
        let more = put("ab/more", b"more");
        before.record("ab/more", &digest(b"more"), &more);
        assert!(TrustIndex::open(tmp.path(), 0o700).verified("ab/more", &more));
    }

    #[test]
    fn an_index_file_writable_by_others_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let idx = TrustIndex::open(tmp.path(), 0o700);
        let obj = tmp.path().join("obj");
        fs::write(&obj, b"x").unwrap();
        let s = Stamp::of(&fs::File::open(&obj).unwrap()).unwrap();
        idx.record("ab/cd", &digest(b"x"), &s);
        fs::set_permissions(idx.path(), fs::Permissions::from_mode(0o666)).unwrap();
        let again = TrustIndex::open(tmp.path(), 0o700);
        assert!(!again.verified("ab/cd", &s));
    }
}
