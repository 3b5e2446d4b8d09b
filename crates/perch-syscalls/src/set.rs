//! `SyscallSet`: a set of syscall numbers.

use crate::Sysno;

/// Highest syscall number (exclusive) a set can hold; x86_64 numbers are below 512.
pub const MAX_NR: u32 = 512;

/// A set of x86_64 syscall numbers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SyscallSet {
    bits: [u64; (MAX_NR / 64) as usize],
}

impl SyscallSet {
    /// The empty set.
    pub const fn new() -> Self {
        SyscallSet {
            bits: [0; (MAX_NR / 64) as usize],
        }
    }

    /// A set of the given syscalls.
    pub fn of(list: &[Sysno]) -> Self {
        let mut s = SyscallSet::new();
        for &n in list {
            s.insert(n);
        }
        s
    }

    /// Adds a syscall.
    pub fn insert(&mut self, s: Sysno) {
        self.insert_nr(s.nr());
    }

    /// Adds a syscall by number; numbers `>= MAX_NR` are ignored.
    pub fn insert_nr(&mut self, nr: u32) {
        if nr < MAX_NR {
            self.bits[(nr / 64) as usize] |= 1 << (nr % 64);
        }
    }

    /// Removes a syscall.
    pub fn remove(&mut self, s: Sysno) {
        let nr = s.nr();
        self.bits[(nr / 64) as usize] &= !(1 << (nr % 64));
    }

    /// Whether `nr` is in the set.
    pub fn contains_nr(&self, nr: u32) -> bool {
        nr < MAX_NR && self.bits[(nr / 64) as usize] & (1 << (nr % 64)) != 0
    }

    /// Whether `s` is in the set.
    pub fn contains(&self, s: Sysno) -> bool {
        self.contains_nr(s.nr())
    }

    /// The union of two sets.
    pub fn union(&self, other: &SyscallSet) -> SyscallSet {
        let mut out = *self;
        for (a, b) in out.bits.iter_mut().zip(other.bits.iter()) {
            *a |= b;
        }
        out
    }

    /// The members of `self` not in `other`.
    pub fn difference(&self, other: &SyscallSet) -> SyscallSet {
        let mut out = *self;
        for (a, b) in out.bits.iter_mut().zip(other.bits.iter()) {
            *a &= !b;
        }
        out
    }

    /// The numbers in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..MAX_NR).filter(move |&n| self.contains_nr(n))
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|&b| b == 0)
    }
}

impl std::fmt::Debug for SyscallSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries(self.iter().map(|nr| match Sysno::from_nr(nr) {
                Some(s) => s.name().to_string(),
                None => nr.to_string(),
            }))
            .finish()
    }
}

impl FromIterator<Sysno> for SyscallSet {
    fn from_iter<I: IntoIterator<Item = Sysno>>(iter: I) -> Self {
        let mut s = SyscallSet::new();
        for n in iter {
            s.insert(n);
        }
        s
    }
}
