//! zlib streams with a declared size, the way object downloads decompress them: the first 4
//! bytes are the declared size (little endian), the rest arrives in pieces whose sizes come
//! from the data. The streaming inflater accepts what flate2's one-shot decoder accepts, with
//! the same content, and never writes more than the declared size.
#![no_main]
use std::io::Write;

use libfuzzer_sys::fuzz_target;
use perch_format::compress::Inflater;

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let declared = u64::from(u32::from_le_bytes(data[..4].try_into().unwrap()) % (1 << 20));
    let step = usize::from(data[4] % 64) + 1;
    let stream = &data[5..];

    // Reference: flate2's one-shot decoder; one complete stream, nothing after it, at most
    // the declared size.
    let mut d = flate2::Decompress::new(true);
    let mut out = Vec::with_capacity(usize::try_from(declared).unwrap() + 1);
    let reference = match d.decompress_vec(stream, &mut out, flate2::FlushDecompress::Finish) {
        Ok(flate2::Status::StreamEnd)
            if d.total_in() == stream.len() as u64 && out.len() as u64 <= declared =>
        {
            Some(out)
        }
        _ => None,
    };

    let mut inf = Inflater::with_limit(Vec::new(), declared);
    let mut failed = false;
    for piece in stream.chunks(step) {
        if inf.write_all(piece).is_err() {
            failed = true;
            break;
        }
    }
    let got = if failed { None } else { inf.finish().ok() };
    if let Some(g) = &got {
        assert!(g.len() as u64 <= declared, "wrote past the declared size");
    }
    // A stream the one-shot decoder accepts must be accepted with the same content. Not the
    // converse here: under `cfg(fuzzing)` miniz_oxide skips its Adler-32 check, so a damaged
    // stream may slip through either decoder (the normal build refuses it; see
    // `compress::tests::far_back_distance_is_refused`).
    if reference.is_some() {
        assert_eq!(got, reference, "streaming and one-shot decoders disagree");
    }
});
