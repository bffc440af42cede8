//! `ChunkedDecoder` over arbitrary bytes, as one read and cut into reads at arbitrary points.
//! Properties:
//!
//! 1. Split consistency: however the bytes are cut, the decoder ends the same way (done after
//!    the same byte, still waiting, or the same error), with the same decoded output.
//! 2. Until done, every read is consumed whole; once done, `consumed` stops right after the
//!    final CRLF (the rest is the next request's), and re-decoding exactly those bytes gives
//!    the same body. After done a feed consumes nothing; after an error every feed fails.
//! 3. Bounds: the output never exceeds `body_bytes_max`; `decoded_bytes` counts it.
#![no_main]

use comet_http::{ChunkedDecoder, Error};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
enum End {
    Done { consumed: usize },
    Waiting,
    Failed { status: u16, reason: String },
}

fuzz_target!(|input: &[u8]| {
    // Header: body limit (1 byte, 0 = the server's default), three cut points; then the body.
    let Some((&[max, cuts @ ..], data)) = input.split_first_chunk::<4>() else {
        return;
    };
    let body_bytes_max = match max {
        0 => 65536,
        n => usize::from(n) * 4,
    };

    let (whole, whole_out) = decode(data, &[], body_bytes_max);
    let mut cuts: Vec<usize> = cuts
        .iter()
        .map(|&c| usize::from(c) * data.len() / 256)
        .collect();
    cuts.sort_unstable();
    let (split, split_out) = decode(data, &cuts, body_bytes_max);
    assert_eq!(whole, split, "cut at {cuts:?}");
    assert_eq!(whole_out, split_out, "cut at {cuts:?}");
    assert!(whole_out.len() <= body_bytes_max);

    if let End::Done { consumed } = whole {
        let body = &data[..consumed];
        assert!(body.ends_with(b"\r\n\r\n"));
        let (again, again_out) = decode(body, &[], body_bytes_max);
        assert_eq!(again, End::Done { consumed });
        assert_eq!(again_out, whole_out);
    }
});

/// Feeds `data` cut at `cuts` (sorted offsets), as the server does: the unconsumed rest of a
/// read is never fed again (all of it is consumed until done).
fn decode(data: &[u8], cuts: &[usize], body_bytes_max: usize) -> (End, Vec<u8>) {
    let mut decoder = ChunkedDecoder::new(body_bytes_max);
    let mut out = Vec::new();
    let mut start = 0;
    for end in cuts.iter().copied().chain([data.len()]) {
        let piece = &data[start..end.max(start)];
        match decoder.feed(piece, &mut out) {
            Ok((consumed, true)) => {
                assert!(consumed <= piece.len());
                assert!(decoder.is_done());
                assert_eq!(decoder.feed(b"next", &mut out).ok(), Some((0, true)));
                return (
                    End::Done {
                        consumed: start + consumed,
                    },
                    checked(out, &decoder, body_bytes_max),
                );
            }
            Ok((consumed, false)) => assert_eq!(consumed, piece.len()),
            Err(Error { status, reason, .. }) => {
                assert!(matches!(status.0, 400 | 413 | 431), "{status:?}");
                assert!(decoder.feed(b"0\r\n\r\n", &mut out).is_err(), "not sticky");
                let out = checked(out, &decoder, body_bytes_max);
                return (
                    End::Failed {
                        status: status.0,
                        reason,
                    },
                    out,
                );
            }
        }
        start = end.max(start);
    }
    (End::Waiting, checked(out, &decoder, body_bytes_max))
}

fn checked(out: Vec<u8>, decoder: &ChunkedDecoder, body_bytes_max: usize) -> Vec<u8> {
    assert_eq!(decoder.decoded_bytes(), out.len());
    assert!(out.len() <= body_bytes_max);
    out
}
