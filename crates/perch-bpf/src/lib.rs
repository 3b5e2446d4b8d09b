//! perch-bpf (work in progress).
