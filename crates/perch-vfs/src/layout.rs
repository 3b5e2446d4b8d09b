//! The stat layouts are perch-syscalls' ([`perch_syscalls::stat`]); what perch-vfs adds is how
//! a catalog entry shows in them.

use crate::Entry;

pub use perch_syscalls::stat::{
    dev_make, dev_split, Stat, StatFs, Statx, StatxTimestamp, STATFS_SIZE, STATX_SIZE, STAT_SIZE,
};

/// `st_blocks` as the cvmfs client reports it (spec §7.4): `1 + size / 512`.
pub fn blocks(size: u64) -> u64 {
    1 + size / 512
}

/// The size `stat` shows: symlinks the length of the expanded target, devices 0.
pub fn shown_size(entry: &Entry) -> u64 {
    match entry.kind {
        crate::Kind::Symlink => entry
            .symlink
            .as_ref()
            .map_or(entry.size, |t| t.len() as u64),
        crate::Kind::CharDev | crate::Kind::BlockDev => 0,
        _ => entry.size,
    }
}
