//! The node table: FUSE node id → what it names, with the kernel's lookup counts.
//!
//! Ids are derived, not allocated, so a name looked up again after the kernel forgot it gets
//! the same id (and `st_ino`) back.

use std::collections::{BTreeMap, HashMap};
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

/// A name, inline when short (most are): no allocation per node.
enum Name {
    Short { len: u8, bytes: [u8; 14] },
    Long(Box<Box<[u8]>>),
}

impl Name {
    fn new(b: &[u8]) -> Name {
        match u8::try_from(b.len()) {
            Ok(len) if b.len() <= 14 => {
                let mut bytes = [0u8; 14];
                bytes[..b.len()].copy_from_slice(b);
                Name::Short { len, bytes }
            }
            _ => Name::Long(Box::new(b.into())),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Name::Short { len, bytes } => &bytes[..usize::from(*len)],
            Name::Long(b) => b,
        }
    }
}

/// One entry node, about 32 bytes: its parent's id, its name, its repository, the kernel's
/// lookup count. The path is rebuilt from the parents when it is needed (the kernel keeps a
/// directory referenced while it holds any of its children).
struct Slot {
    parent: u64,
    name: Name,
    repo: u16,
    count: u32,
}

#[derive(Default)]
struct Table {
    /// Entry nodes. A B-tree: no doubling of a hash table's buckets when `find` has made
    /// the kernel hold a million.
    entries: BTreeMap<u64, Slot>,
    /// Repository roots (`/cvmfs/<fqrn>`), and the lookup counts.
    roots: HashMap<u64, (String, u64)>,
    /// The repositories entries belong to, by index.
    repos: Vec<Arc<dyn Repository>>,
}

/// Nodes the kernel holds references to.
#[derive(Default)]
pub(crate) struct Nodes {
    table: Mutex<Table>,
}

impl Nodes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node `id`, if the kernel may still use it.
    pub(crate) fn get(&self, id: u64) -> Option<Node> {
        if id == ROOT {
            return Some(Node::Root);
        }
        let t = self.lock();
        if let Some((fqrn, _)) = t.roots.get(&id) {
            return Some(Node::RepoRoot(fqrn.clone()));
        }
        let slot = t.entries.get(&id)?;
        let repo = t.repos.get(usize::from(slot.repo))?.clone();
        let top = repo_root_id(repo.fqrn());
        let mut names = vec![slot.name.bytes()];
        let mut up = slot.parent;
        while up != top {
            let s = t.entries.get(&up)?;
            names.push(s.name.bytes());
            up = s.parent;
            if names.len() > 4096 {
                return None;
            }
        }
        let mut path = Vec::new();
        for n in names.iter().rev() {
            path.push(b'/');
            path.extend_from_slice(n);
        }
        Some(Node::Entry {
            repo,
            path: path.into_boxed_slice(),
        })
    }

    /// Records one more kernel reference to `id` (a lookup or a readdirplus entry answered),
    /// found in the directory `parent`.
    pub(crate) fn remember(&self, id: u64, node: &Node, parent: u64) {
        let mut t = self.lock();
        match node {
            Node::Root => {}
            Node::RepoRoot(fqrn) => {
                t.roots.entry(id).or_insert_with(|| (fqrn.clone(), 0)).1 += 1;
            }
            Node::Entry { repo, path } => {
                if let Some(slot) = t.entries.get_mut(&id) {
                    slot.count = slot.count.saturating_add(1);
                    // A hard link seen in another directory: either parent leads to it.
                    slot.parent = parent;
                    return;
                }
                let r = match t.repos.iter().position(|r| r.fqrn() == repo.fqrn()) {
                    Some(i) => i,
                    None => {
                        t.repos.push(repo.clone());
                        t.repos.len() - 1
                    }
                };
                let name = &path[path.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1)..];
                let slot = Slot {
                    parent,
                    name: Name::new(name),
                    repo: u16::try_from(r).unwrap_or(u16::MAX),
                    count: 1,
                };
                t.entries.insert(id, slot);
            }
        }
    }

    /// The kernel dropped `n` references to `id`.
    pub(crate) fn forget(&self, id: u64, n: u64) {
        let mut t = self.lock();
        if let Some(slot) = t.entries.get_mut(&id) {
            slot.count = slot
                .count
                .saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
            if slot.count == 0 {
                t.entries.remove(&id);
            }
        } else if let Some(slot) = t.roots.get_mut(&id) {
            slot.1 = slot.1.saturating_sub(n);
            if slot.1 == 0 {
                t.roots.remove(&id);
            }
        }
    }

    /// Nodes currently referenced (tests, debugging).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let t = self.lock();
        t.entries.len() + t.roots.len()
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
    fn entry_paths_are_rebuilt_from_their_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let repo: Arc<dyn Repository> = perch_vfs::mem::MemRepo::builder("a.org", tmp.path())
            .file("/dir/a-name-longer-than-fourteen-bytes/x", b"x", 0o644)
            .build();
        let n = Nodes::default();
        let top = repo_root_id("a.org");
        let node = |p: &str| Node::Entry {
            repo: repo.clone(),
            path: p.as_bytes().into(),
        };
        let path = |id: u64| match n.get(id) {
            Some(Node::Entry { path, .. }) => Some(String::from_utf8(path.to_vec()).unwrap()),
            _ => None,
        };
        n.remember(top, &Node::RepoRoot("a.org".into()), ROOT);
        n.remember(10, &node("/dir"), top);
        n.remember(11, &node("/dir/a-name-longer-than-fourteen-bytes"), 10);
        n.remember(12, &node("/dir/a-name-longer-than-fourteen-bytes/x"), 11);
        assert_eq!(
            path(12).as_deref(),
            Some("/dir/a-name-longer-than-fourteen-bytes/x")
        );
        assert_eq!(path(10).as_deref(), Some("/dir"));
        assert!(matches!(n.get(top), Some(Node::RepoRoot(f)) if f == "a.org"));
        // A node whose parent is gone cannot be named (the kernel never does this).
        n.forget(11, 1);
        assert_eq!(path(12), None);
        assert_eq!(n.len(), 3);
        // Slots stay small: no allocation per short name.
        assert!(
            std::mem::size_of::<Slot>() <= 32,
            "{}",
            std::mem::size_of::<Slot>()
        );
    }

    #[test]
    fn forget_drops_a_node_after_its_last_reference() {
        let n = Nodes::default();
        n.remember(5, &Node::RepoRoot("a.org".into()), ROOT);
        n.remember(5, &Node::RepoRoot("a.org".into()), ROOT);
        n.forget(5, 1);
        assert!(n.get(5).is_some());
        n.forget(5, 1);
        assert!(n.get(5).is_none());
        assert_eq!(n.len(), 0);
        assert!(matches!(n.get(ROOT), Some(Node::Root)));
    }
}
