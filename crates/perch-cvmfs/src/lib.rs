//! perch-cvmfs (work in progress).
