//! The request framing follower over arbitrary client bytes: it never
//! panics, and it decides the same however the bytes are split into
//! reads (whole, at a point the input chooses, byte by byte).

#![no_main]

use cutover::http1::FrameScan;
use libfuzzer_sys::fuzz_target;

/// Heads this large are flagged oversized: small enough to be reached.
const LIMIT: usize = 4096;

/// What a scan decided: heads and messages completed, whether it still
/// follows, whether a head was too large, and the first flag.
fn decide<'a>(
    reads: impl IntoIterator<Item = &'a [u8]>,
) -> (
    u64,
    u64,
    bool,
    bool,
    Option<(u64, cutover::http1::scan::Flag)>,
) {
    let mut scan = FrameScan::new(LIMIT);
    let mut first = None;
    for read in reads {
        first = first.or(scan.feed(read));
    }
    (
        scan.heads(),
        scan.messages(),
        scan.following(),
        scan.oversized(),
        first,
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let whole = decide([bytes]);
    let at = usize::from(cut) * bytes.len() / 256;
    let (a, b) = bytes.split_at(at);
    assert_eq!(whole, decide([a, b]), "split at {at}");
    assert_eq!(whole, decide(bytes.chunks(1)), "byte by byte");
});
