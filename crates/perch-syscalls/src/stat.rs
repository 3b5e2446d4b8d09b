//! The x86_64 byte layouts a supervisor writes for the program: `struct stat`, `struct statx`,
//! `struct statfs`, built field by field with `to_ne_bytes` at the kernel's offsets (no unsafe,
//! no transmute; the offsets are checked against `libc` in the tests). One encoder of each, used
//! by every answer perch writes (virtual objects and host paths alike).

/// x86_64 `struct stat` (144 bytes), as `stat`, `lstat`, `fstat`, `newfstatat` write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct Stat {
    pub st_dev: u64,
    pub st_ino: u64,
    pub st_nlink: u64,
    pub st_mode: u32,
    pub st_uid: u32,
    pub st_gid: u32,
    pub st_rdev: u64,
    pub st_size: i64,
    pub st_blksize: i64,
    pub st_blocks: i64,
    pub st_atime: i64,
    pub st_atime_nsec: i64,
    pub st_mtime: i64,
    pub st_mtime_nsec: i64,
    pub st_ctime: i64,
    pub st_ctime_nsec: i64,
}

/// Size of x86_64 `struct stat`.
pub const STAT_SIZE: usize = 144;
/// Size of `struct statx`.
pub const STATX_SIZE: usize = 256;
/// Size of x86_64 `struct statfs`.
pub const STATFS_SIZE: usize = 120;

fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
    buf[off..off + bytes.len()].copy_from_slice(bytes);
}

impl Stat {
    /// The bytes to write into the program's `struct stat`.
    pub fn to_bytes(&self) -> [u8; STAT_SIZE] {
        let mut b = [0u8; STAT_SIZE];
        put(&mut b, 0, &self.st_dev.to_ne_bytes());
        put(&mut b, 8, &self.st_ino.to_ne_bytes());
        put(&mut b, 16, &self.st_nlink.to_ne_bytes());
        put(&mut b, 24, &self.st_mode.to_ne_bytes());
        put(&mut b, 28, &self.st_uid.to_ne_bytes());
        put(&mut b, 32, &self.st_gid.to_ne_bytes());
        // 36: __pad0
        put(&mut b, 40, &self.st_rdev.to_ne_bytes());
        put(&mut b, 48, &self.st_size.to_ne_bytes());
        put(&mut b, 56, &self.st_blksize.to_ne_bytes());
        put(&mut b, 64, &self.st_blocks.to_ne_bytes());
        put(&mut b, 72, &self.st_atime.to_ne_bytes());
        put(&mut b, 80, &self.st_atime_nsec.to_ne_bytes());
        put(&mut b, 88, &self.st_mtime.to_ne_bytes());
        put(&mut b, 96, &self.st_mtime_nsec.to_ne_bytes());
        put(&mut b, 104, &self.st_ctime.to_ne_bytes());
        put(&mut b, 112, &self.st_ctime_nsec.to_ne_bytes());
        // 120..144: __unused[3]
        b
    }
}

/// `struct statx_timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatxTimestamp {
    /// Seconds.
    pub tv_sec: i64,
    /// Nanoseconds.
    pub tv_nsec: u32,
}

/// `struct statx` (256 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct Statx {
    pub stx_mask: u32,
    pub stx_blksize: u32,
    pub stx_attributes: u64,
    pub stx_nlink: u32,
    pub stx_uid: u32,
    pub stx_gid: u32,
    pub stx_mode: u16,
    pub stx_ino: u64,
    pub stx_size: u64,
    pub stx_blocks: u64,
    pub stx_attributes_mask: u64,
    pub stx_atime: StatxTimestamp,
    pub stx_btime: StatxTimestamp,
    pub stx_ctime: StatxTimestamp,
    pub stx_mtime: StatxTimestamp,
    pub stx_rdev_major: u32,
    pub stx_rdev_minor: u32,
    pub stx_dev_major: u32,
    pub stx_dev_minor: u32,
    pub stx_mnt_id: u64,
}

fn put_ts(buf: &mut [u8], off: usize, ts: &StatxTimestamp) {
    put(buf, off, &ts.tv_sec.to_ne_bytes());
    put(buf, off + 8, &ts.tv_nsec.to_ne_bytes());
}

impl Statx {
    /// The bytes to write into the program's `struct statx`.
    pub fn to_bytes(&self) -> [u8; STATX_SIZE] {
        let mut b = [0u8; STATX_SIZE];
        put(&mut b, 0, &self.stx_mask.to_ne_bytes());
        put(&mut b, 4, &self.stx_blksize.to_ne_bytes());
        put(&mut b, 8, &self.stx_attributes.to_ne_bytes());
        put(&mut b, 16, &self.stx_nlink.to_ne_bytes());
        put(&mut b, 20, &self.stx_uid.to_ne_bytes());
        put(&mut b, 24, &self.stx_gid.to_ne_bytes());
        put(&mut b, 28, &self.stx_mode.to_ne_bytes());
        put(&mut b, 32, &self.stx_ino.to_ne_bytes());
        put(&mut b, 40, &self.stx_size.to_ne_bytes());
        put(&mut b, 48, &self.stx_blocks.to_ne_bytes());
        put(&mut b, 56, &self.stx_attributes_mask.to_ne_bytes());
        put_ts(&mut b, 64, &self.stx_atime);
        put_ts(&mut b, 80, &self.stx_btime);
        put_ts(&mut b, 96, &self.stx_ctime);
        put_ts(&mut b, 112, &self.stx_mtime);
        put(&mut b, 128, &self.stx_rdev_major.to_ne_bytes());
        put(&mut b, 132, &self.stx_rdev_minor.to_ne_bytes());
        put(&mut b, 136, &self.stx_dev_major.to_ne_bytes());
        put(&mut b, 140, &self.stx_dev_minor.to_ne_bytes());
        put(&mut b, 144, &self.stx_mnt_id.to_ne_bytes());
        b
    }
}

/// x86_64 `struct statfs` (120 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct StatFs {
    pub f_type: i64,
    pub f_bsize: i64,
    pub f_blocks: u64,
    pub f_bfree: u64,
    pub f_bavail: u64,
    pub f_files: u64,
    pub f_ffree: u64,
    pub f_fsid: [i32; 2],
    pub f_namelen: i64,
    pub f_frsize: i64,
    pub f_flags: i64,
}

impl StatFs {
    /// The bytes to write into the program's `struct statfs`.
    pub fn to_bytes(&self) -> [u8; STATFS_SIZE] {
        let mut b = [0u8; STATFS_SIZE];
        put(&mut b, 0, &self.f_type.to_ne_bytes());
        put(&mut b, 8, &self.f_bsize.to_ne_bytes());
        put(&mut b, 16, &self.f_blocks.to_ne_bytes());
        put(&mut b, 24, &self.f_bfree.to_ne_bytes());
        put(&mut b, 32, &self.f_bavail.to_ne_bytes());
        put(&mut b, 40, &self.f_files.to_ne_bytes());
        put(&mut b, 48, &self.f_ffree.to_ne_bytes());
        put(&mut b, 56, &self.f_fsid[0].to_ne_bytes());
        put(&mut b, 60, &self.f_fsid[1].to_ne_bytes());
        put(&mut b, 64, &self.f_namelen.to_ne_bytes());
        put(&mut b, 72, &self.f_frsize.to_ne_bytes());
        put(&mut b, 80, &self.f_flags.to_ne_bytes());
        // 88..120: f_spare[4]
        b
    }
}

impl From<&std::fs::Metadata> for Stat {
    /// What the kernel reported for a host file, as the program's `struct stat`.
    fn from(md: &std::fs::Metadata) -> Stat {
        use std::os::unix::fs::MetadataExt;
        Stat {
            st_dev: md.dev(),
            st_ino: md.ino(),
            st_nlink: md.nlink(),
            st_mode: md.mode(),
            st_uid: md.uid(),
            st_gid: md.gid(),
            st_rdev: md.rdev(),
            st_size: i64::try_from(md.size()).unwrap_or(i64::MAX),
            st_blksize: i64::try_from(md.blksize()).unwrap_or(4096),
            st_blocks: i64::try_from(md.blocks()).unwrap_or(0),
            st_atime: md.atime(),
            st_atime_nsec: md.atime_nsec(),
            st_mtime: md.mtime(),
            st_mtime_nsec: md.mtime_nsec(),
            st_ctime: md.ctime(),
            st_ctime_nsec: md.ctime_nsec(),
        }
    }
}

impl Statx {
    /// The `statx` of a file known only by its `struct stat` (a host path perch stats for the
    /// program): `mask` limited to `STATX_BASIC_STATS`, no birth time, no attributes.
    pub fn from_stat(st: &Stat, mask: u32) -> Statx {
        let ts = |sec: i64, nsec: i64| StatxTimestamp {
            tv_sec: sec,
            tv_nsec: u32::try_from(nsec).unwrap_or(0),
        };
        let (rdev_major, rdev_minor) = dev_split(st.st_rdev);
        let (dev_major, dev_minor) = dev_split(st.st_dev);
        Statx {
            stx_mask: mask & STATX_BASIC_STATS,
            stx_blksize: u32::try_from(st.st_blksize).unwrap_or(4096),
            stx_nlink: u32::try_from(st.st_nlink).unwrap_or(u32::MAX),
            stx_uid: st.st_uid,
            stx_gid: st.st_gid,
            stx_mode: u16::try_from(st.st_mode & 0xffff).unwrap_or(0),
            stx_ino: st.st_ino,
            stx_size: u64::try_from(st.st_size).unwrap_or(0),
            stx_blocks: u64::try_from(st.st_blocks).unwrap_or(0),
            stx_atime: ts(st.st_atime, st.st_atime_nsec),
            stx_ctime: ts(st.st_ctime, st.st_ctime_nsec),
            stx_mtime: ts(st.st_mtime, st.st_mtime_nsec),
            stx_rdev_major: rdev_major,
            stx_rdev_minor: rdev_minor,
            stx_dev_major: dev_major,
            stx_dev_minor: dev_minor,
            ..Statx::default()
        }
    }
}

/// `STATX_BASIC_STATS`: type, mode, nlink, uid, gid, times, ino, size, blocks.
pub const STATX_BASIC_STATS: u32 = 0x7ff;

/// Split a Linux `dev_t` into (major, minor).
pub fn dev_split(dev: u64) -> (u32, u32) {
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff);
    (
        u32::try_from(major).unwrap_or(u32::MAX),
        u32::try_from(minor).unwrap_or(u32::MAX),
    )
}

/// Build a Linux `dev_t` from (major, minor).
pub fn dev_make(major: u32, minor: u32) -> u64 {
    let (ma, mi) = (u64::from(major), u64::from(minor));
    ((ma & 0xffff_f000) << 32) | ((ma & 0xfff) << 8) | ((mi & 0xffff_ff00) << 12) | (mi & 0xff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn stat_offsets_match_libc() {
        assert_eq!(size_of::<libc::stat>(), STAT_SIZE);
        assert_eq!(offset_of!(libc::stat, st_ino), 8);
        assert_eq!(offset_of!(libc::stat, st_nlink), 16);
        assert_eq!(offset_of!(libc::stat, st_mode), 24);
        assert_eq!(offset_of!(libc::stat, st_uid), 28);
        assert_eq!(offset_of!(libc::stat, st_gid), 32);
        assert_eq!(offset_of!(libc::stat, st_rdev), 40);
        assert_eq!(offset_of!(libc::stat, st_size), 48);
        assert_eq!(offset_of!(libc::stat, st_blksize), 56);
        assert_eq!(offset_of!(libc::stat, st_blocks), 64);
        assert_eq!(offset_of!(libc::stat, st_atime), 72);
        assert_eq!(offset_of!(libc::stat, st_atime_nsec), 80);
        assert_eq!(offset_of!(libc::stat, st_mtime), 88);
        assert_eq!(offset_of!(libc::stat, st_mtime_nsec), 96);
        assert_eq!(offset_of!(libc::stat, st_ctime), 104);
        assert_eq!(offset_of!(libc::stat, st_ctime_nsec), 112);
    }

    #[test]
    fn statx_offsets_match_libc() {
        assert_eq!(size_of::<libc::statx>(), STATX_SIZE);
        assert_eq!(offset_of!(libc::statx, stx_blksize), 4);
        assert_eq!(offset_of!(libc::statx, stx_attributes), 8);
        assert_eq!(offset_of!(libc::statx, stx_nlink), 16);
        assert_eq!(offset_of!(libc::statx, stx_uid), 20);
        assert_eq!(offset_of!(libc::statx, stx_gid), 24);
        assert_eq!(offset_of!(libc::statx, stx_mode), 28);
        assert_eq!(offset_of!(libc::statx, stx_ino), 32);
        assert_eq!(offset_of!(libc::statx, stx_size), 40);
        assert_eq!(offset_of!(libc::statx, stx_blocks), 48);
        assert_eq!(offset_of!(libc::statx, stx_attributes_mask), 56);
        assert_eq!(offset_of!(libc::statx, stx_atime), 64);
        assert_eq!(offset_of!(libc::statx, stx_btime), 80);
        assert_eq!(offset_of!(libc::statx, stx_ctime), 96);
        assert_eq!(offset_of!(libc::statx, stx_mtime), 112);
        assert_eq!(offset_of!(libc::statx, stx_rdev_major), 128);
        assert_eq!(offset_of!(libc::statx, stx_rdev_minor), 132);
        assert_eq!(offset_of!(libc::statx, stx_dev_major), 136);
        assert_eq!(offset_of!(libc::statx, stx_dev_minor), 140);
        assert_eq!(offset_of!(libc::statx, stx_mnt_id), 144);
        assert_eq!(offset_of!(libc::statx_timestamp, tv_nsec), 8);
    }

    #[test]
    fn statfs_offsets_match_libc() {
        assert_eq!(size_of::<libc::statfs>(), STATFS_SIZE);
        assert_eq!(offset_of!(libc::statfs, f_bsize), 8);
        assert_eq!(offset_of!(libc::statfs, f_blocks), 16);
        assert_eq!(offset_of!(libc::statfs, f_bfree), 24);
        assert_eq!(offset_of!(libc::statfs, f_bavail), 32);
        assert_eq!(offset_of!(libc::statfs, f_files), 40);
        assert_eq!(offset_of!(libc::statfs, f_ffree), 48);
        assert_eq!(offset_of!(libc::statfs, f_fsid), 56);
        assert_eq!(offset_of!(libc::statfs, f_namelen), 64);
        assert_eq!(offset_of!(libc::statfs, f_frsize), 72);
    }

    #[test]
    fn stat_bytes_roundtrip_fields() {
        let s = Stat {
            st_dev: 0x0102,
            st_ino: 77,
            st_mode: 0o100644,
            st_size: 12345,
            st_mtime: 1_700_000_000,
            st_mtime_nsec: 5,
            ..Stat::default()
        };
        let b = s.to_bytes();
        assert_eq!(u64::from_ne_bytes(b[8..16].try_into().unwrap()), 77);
        assert_eq!(u32::from_ne_bytes(b[24..28].try_into().unwrap()), 0o100644);
        assert_eq!(i64::from_ne_bytes(b[48..56].try_into().unwrap()), 12345);
        assert_eq!(
            i64::from_ne_bytes(b[88..96].try_into().unwrap()),
            1_700_000_000
        );
        assert_eq!(i64::from_ne_bytes(b[96..104].try_into().unwrap()), 5);
    }

    #[test]
    fn dev_numbers_split_like_glibc() {
        for (ma, mi) in [(0, 0), (8, 1), (0, 0x80001), (259, 0xfffff), (0xfff, 0xff)] {
            assert_eq!(dev_split(dev_make(ma, mi)), (ma, mi));
            assert_eq!(dev_make(ma, mi), libc::makedev(ma, mi));
        }
    }
}
