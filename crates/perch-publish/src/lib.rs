//! perch-publish (work in progress).
