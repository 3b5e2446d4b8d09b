//! perch-vfs (work in progress).
