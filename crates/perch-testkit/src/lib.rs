//! perch-testkit (work in progress).
