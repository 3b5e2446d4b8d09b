//! perch-sys (work in progress).
