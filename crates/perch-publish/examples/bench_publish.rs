//! Publish the integration tests' 5 000-entry tree and print throughput:
//! `cargo run --release -p perch-publish --example bench_publish`.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::cast_precision_loss
)]

#[path = "../tests/common/mod.rs"]
mod common;

use perch_publish::{publish, ChunkSizes, PublishOptions};

fn main() {
    let tmp = perch_testkit::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let entries = common::build_tree(&src);
    let keys = common::keys(tmp.path());
    for (run, stratum) in [
        ("first publish", "s0"),
        ("unchanged republish", "s0"),
        ("fresh stratum", "s1"),
    ] {
        let mut o = PublishOptions::new(&src, common::FQRN, &keys, tmp.path().join(stratum));
        o.chunking = Some(ChunkSizes::new(16 << 10, 32 << 10, 64 << 10).unwrap());
        let r = publish(&o).unwrap();
        let s = r.elapsed.as_secs_f64();
        println!(
            "{run}: {entries} entries, {} bytes in {s:.2} s: {:.1} MB/s, {:.0} entries/s; {}",
            r.bytes,
            r.bytes as f64 / 1e6 / s,
            entries as f64 / s,
            r
        );
    }
    let big = tmp.path().join("big");
    std::fs::create_dir(&big).unwrap();
    let mut data = vec![0u8; 64 << 20];
    rand::RngCore::fill_bytes(
        &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1),
        &mut data,
    );
    std::fs::write(big.join("random.bin"), &data).unwrap();
    std::fs::write(
        big.join("text.bin"),
        b"0123456789 perch publishes text\n".repeat(2 << 20),
    )
    .unwrap();
    let r = publish(&PublishOptions::new(
        &big,
        common::FQRN,
        &keys,
        tmp.path().join("s2"),
    ))
    .unwrap();
    let s = r.elapsed.as_secs_f64();
    println!(
        "large files (default chunking): {} bytes in {s:.2} s: {:.1} MB/s",
        r.bytes,
        r.bytes as f64 / 1e6 / s
    );
}
