//! A catalog [`Entry`] as the FUSE attributes the kernel caches.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};
use perch_vfs::{layout, Entry, Kind};

/// The FUSE file type of a catalog kind.
pub(crate) fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
    }
}

fn time(secs: i64, nanos: u32) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(nanos.min(999_999_999)));
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs()) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + nanos
    }
}

/// The attributes of `entry` under node id `ino`: times all the catalog's mtime, blocks as
/// the cvmfs client counts them, a device number in the kernel's FUSE encoding.
pub(crate) fn file_attr(ino: u64, entry: &Entry) -> FileAttr {
    let t = time(entry.mtime, entry.mtime_ns);
    let size = layout::shown_size(entry);
    let (major, minor) = layout::dev_split(entry.rdev);
    // FUSE carries rdev as the kernel's 32-bit "new" encoding (new_decode_dev).
    let rdev = (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12);
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: layout::blocks(size),
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind: file_type(entry.kind),
        perm: u16::try_from(entry.mode & 0o7777).unwrap_or(0o755),
        nlink: entry.nlink,
        uid: entry.uid,
        gid: entry.gid,
        rdev,
        blksize: 4096,
        flags: 0,
    }
}

/// A directory placeholder for a configured repository that is not mounted yet (shown with a
/// zero lifetime, so the first real use mounts it and gets its true attributes).
pub(crate) fn placeholder_dir(ino: u64) -> FileAttr {
    file_attr(ino, &Entry::dir(ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_use_the_fuse_encoding() {
        let mut e = Entry::dir(5);
        e.kind = Kind::CharDev;
        e.rdev = layout::dev_make(1, 3);
        assert_eq!(file_attr(9, &e).rdev, (1 << 8) | 3);
        e.rdev = layout::dev_make(259, 0x12345);
        let r = file_attr(9, &e).rdev;
        assert_eq!((r >> 8) & 0xfff, 259);
        assert_eq!((r & 0xff) | ((r >> 12) & !0xff), 0x12345);
    }

    #[test]
    fn times_before_the_epoch() {
        let mut e = Entry::dir(5);
        e.mtime = -10;
        e.mtime_ns = 5;
        let a = file_attr(9, &e);
        assert_eq!(
            UNIX_EPOCH.duration_since(a.mtime).unwrap(),
            Duration::new(9, 999_999_995)
        );
    }
}
