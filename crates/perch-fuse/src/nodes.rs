//! The node table: FUSE node id → what it names, with the kernel's lookup counts.
//!
//! Ids are derived, not allocated, so a name looked up again after the kernel forgot it gets
//! the same id (and `st_ino`) back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use perch_vfs::Repository;

/// FUSE's root node: the mount point (`/cvmfs`).
pub(crate) const ROOT: u64 = 1;

/// What a node id names.
#[derive(Clone)]
pub(crate) enum Node {
    /// The mount point.
    Root,
    /// `/cvmfs/<fqrn>`, mounted on first use (it may be listed before that).
    RepoRoot(String),
    /// An entry inside a mounted repository (`path` as `/a/b`). Its metadata is looked up
    /// again when needed (the kernel caches attributes for good, so rarely): the kernel may
    /// hold a reference to every entry a `find` passed, and a node must stay small.
    Entry {
        repo: Arc<dyn Repository>,
        path: Box<[u8]>,
    },
}

fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// splitmix64's finalizer: spreads the bits so that ids of different repositories differ.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn not_reserved(id: u64) -> u64 {
    // 0 means "no node" to the kernel, 1 is the root.
    if id <= ROOT {
        id + 2
    } else {
        id
    }
}

/// The id of `/cvmfs/<fqrn>`.
pub(crate) fn repo_root_id(fqrn: &str) -> u64 {
    not_reserved(mix(fnv64(fqrn.as_bytes())))
}

/// The id of an entry of `fqrn` whose client inode is `inode` (hard links share it).
pub(crate) fn entry_id(fqrn: &str, inode: u64) -> u64 {
    not_reserved(mix(fnv64(fqrn.as_bytes()) ^ inode.rotate_left(23)))
}

/// Nodes the kernel holds references to.
#[derive(Default)]
pub(crate) struct Nodes {
    map: Mutex<HashMap<u64, (Node, u64)>>,
}

impl Nodes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Node, u64)>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node `id`, if the kernel may still use it.
    pub(crate) fn get(&self, id: u64) -> Option<Node> {
        if id == ROOT {
            return Some(Node::Root);
        }
        self.lock().get(&id).map(|(n, _)| n.clone())
    }

    /// Records one more kernel reference to `id` (a lookup or a readdirplus entry answered).
    pub(crate) fn remember(&self, id: u64, node: Node) {
        if id == ROOT {
            return;
        }
        let mut m = self.lock();
        let slot = m.entry(id).or_insert((node, 0));
        slot.1 += 1;
    }

    /// The kernel dropped `n` references to `id`.
    pub(crate) fn forget(&self, id: u64, n: u64) {
        let mut m = self.lock();
        if let Some(slot) = m.get_mut(&id) {
            slot.1 = slot.1.saturating_sub(n);
            if slot.1 == 0 {
                m.remove(&id);
            }
        }
    }

    /// Nodes currently referenced (tests, debugging).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_differ_between_repositories() {
        assert_eq!(entry_id("a.org", 77), entry_id("a.org", 77));
        assert_ne!(entry_id("a.org", 77), entry_id("b.org", 77));
        assert_ne!(entry_id("a.org", 77), entry_id("a.org", 78));
        assert_ne!(repo_root_id("a.org"), repo_root_id("b.org"));
        assert!(repo_root_id("a.org") > ROOT);
    }

    #[test]
    fn forget_drops_a_node_after_its_last_reference() {
        let n = Nodes::default();
        n.remember(5, Node::RepoRoot("a.org".into()));
        n.remember(5, Node::RepoRoot("a.org".into()));
        n.forget(5, 1);
        assert!(n.get(5).is_some());
        n.forget(5, 1);
        assert!(n.get(5).is_none());
        assert_eq!(n.len(), 0);
        assert!(matches!(n.get(ROOT), Some(Node::Root)));
    }
}
