//! The x86_64 layouts of `struct stat` and `struct statx`, so a supervisor can answer a stat call
//! by writing the bytes the kernel would have written.

/// A timestamp: seconds and nanoseconds.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Timespec {
    /// Seconds since the epoch.
    pub sec: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nsec: u32,
}

/// What `stat(2)` reports about a file, in x86_64 `struct stat` terms.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct StatBuf {
    /// Device id of the file system.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Link count.
    pub nlink: u64,
    /// Type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device id for device files.
    pub rdev: u64,
    /// Size in bytes.
    pub size: i64,
    /// Preferred I/O block size.
    pub blksize: i64,
    /// Allocated 512-byte blocks.
    pub blocks: i64,
    /// Last access.
    pub atime: Timespec,
    /// Last modification.
    pub mtime: Timespec,
    /// Last status change.
    pub ctime: Timespec,
}

/// Size of x86_64 `struct stat`.
pub const STAT_SIZE: usize = 144;
/// Size of `struct statx`.
pub const STATX_SIZE: usize = 256;
/// `STATX_BASIC_STATS`: type, mode, nlink, uid, gid, times, ino, size, blocks.
pub const STATX_BASIC_STATS: u32 = 0x7ff;

fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
    buf[off..off + bytes.len()].copy_from_slice(bytes);
}

impl StatBuf {
    /// The bytes of x86_64 `struct stat`.
    pub fn to_bytes(&self) -> [u8; STAT_SIZE] {
        let mut b = [0u8; STAT_SIZE];
        put(&mut b, 0, &self.dev.to_ne_bytes());
        put(&mut b, 8, &self.ino.to_ne_bytes());
        put(&mut b, 16, &self.nlink.to_ne_bytes());
        put(&mut b, 24, &self.mode.to_ne_bytes());
        put(&mut b, 28, &self.uid.to_ne_bytes());
        put(&mut b, 32, &self.gid.to_ne_bytes());
        // 36: padding
        put(&mut b, 40, &self.rdev.to_ne_bytes());
        put(&mut b, 48, &self.size.to_ne_bytes());
        put(&mut b, 56, &self.blksize.to_ne_bytes());
        put(&mut b, 64, &self.blocks.to_ne_bytes());
        for (i, t) in [self.atime, self.mtime, self.ctime].iter().enumerate() {
            put(&mut b, 72 + 16 * i, &t.sec.to_ne_bytes());
            put(&mut b, 80 + 16 * i, &i64::from(t.nsec).to_ne_bytes());
        }
        b
    }

    /// The bytes of `struct statx` with `stx_mask = mask` (usually [`STATX_BASIC_STATS`]); the
    /// birth time is left out of the mask.
    pub fn to_statx_bytes(&self, mask: u32) -> [u8; STATX_SIZE] {
        let mut b = [0u8; STATX_SIZE];
        put(&mut b, 0x00, &(mask & STATX_BASIC_STATS).to_ne_bytes());
        put(
            &mut b,
            0x04,
            &u32::try_from(self.blksize).unwrap_or(4096).to_ne_bytes(),
        );
        // 0x08 stx_attributes = 0
        put(
            &mut b,
            0x10,
            &u32::try_from(self.nlink).unwrap_or(u32::MAX).to_ne_bytes(),
        );
        put(&mut b, 0x14, &self.uid.to_ne_bytes());
        put(&mut b, 0x18, &self.gid.to_ne_bytes());
        put(
            &mut b,
            0x1c,
            &u16::try_from(self.mode & 0xffff).unwrap_or(0).to_ne_bytes(),
        );
        put(&mut b, 0x20, &self.ino.to_ne_bytes());
        put(
            &mut b,
            0x28,
            &u64::try_from(self.size).unwrap_or(0).to_ne_bytes(),
        );
        put(
            &mut b,
            0x30,
            &u64::try_from(self.blocks).unwrap_or(0).to_ne_bytes(),
        );
        // 0x38 stx_attributes_mask = 0
        let ts = |b: &mut [u8], off: usize, t: Timespec| {
            put(b, off, &t.sec.to_ne_bytes());
            put(b, off + 8, &t.nsec.to_ne_bytes());
        };
        ts(&mut b, 0x40, self.atime);
        // 0x50 btime: not reported
        ts(&mut b, 0x60, self.ctime);
        ts(&mut b, 0x70, self.mtime);
        let (rmaj, rmin) = split_dev(self.rdev);
        let (dmaj, dmin) = split_dev(self.dev);
        put(&mut b, 0x80, &rmaj.to_ne_bytes());
        put(&mut b, 0x84, &rmin.to_ne_bytes());
        put(&mut b, 0x88, &dmaj.to_ne_bytes());
        put(&mut b, 0x8c, &dmin.to_ne_bytes());
        b
    }
}

/// Splits a glibc-encoded `dev_t` into `(major, minor)`.
pub fn split_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff);
    (
        u32::try_from(major).unwrap_or(0),
        u32::try_from(minor).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_layout_offsets() {
        let s = StatBuf {
            ino: 7,
            mode: 0o100644,
            size: 42,
            mtime: Timespec { sec: 5, nsec: 6 },
            ..Default::default()
        };
        let b = s.to_bytes();
        assert_eq!(&b[8..16], &7u64.to_ne_bytes());
        assert_eq!(&b[24..28], &0o100644u32.to_ne_bytes());
        assert_eq!(&b[48..56], &42i64.to_ne_bytes());
        assert_eq!(&b[88..96], &5i64.to_ne_bytes());
        assert_eq!(&b[96..104], &6i64.to_ne_bytes());
        let x = s.to_statx_bytes(STATX_BASIC_STATS);
        assert_eq!(&x[0x1c..0x1e], &0o100644u16.to_ne_bytes());
        assert_eq!(&x[0x28..0x30], &42u64.to_ne_bytes());
        assert_eq!(&x[0x70..0x78], &5i64.to_ne_bytes());
    }

    #[test]
    #[allow(clippy::identity_op)]
    fn dev_split_matches_glibc() {
        // makedev(8, 1) = 0x801
        assert_eq!(split_dev(0x801), (8, 1));
        // makedev(259, 65536)
        let dev = ((259u64 & 0xfffff000) << 32)
            | ((259u64 & 0xfff) << 8)
            | ((65536u64 & 0xffffff00) << 12)
            | (65536u64 & 0xff);
        assert_eq!(split_dev(dev), (259, 65536));
    }
}
