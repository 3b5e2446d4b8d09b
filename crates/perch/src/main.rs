//! perch command-line tool.
fn main() {}
