//! perch-intercept (work in progress).
