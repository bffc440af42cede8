//! `ws::decode` over arbitrary client bytes. Properties:
//!
//! 1. Bounds: a frame consumes at least its 2-byte header and at most what it was given and
//!    14 + 125 bytes; `NeedMore` never asks the caller to hold more than that; a failure is
//!    1002, 1003, 1007 or 1009 with a reason that fits a close frame.
//! 2. Split consistency: a prefix of the bytes decodes to `NeedMore` or to what the whole
//!    does; exactly `consumed` bytes decode to the same frame, one byte fewer to `NeedMore`.
//! 3. Decoding frame after frame from the same buffer never goes past its end.
#![no_main]

use comet_http::ws::{
    decode, ClientEvent, Decoded, CLOSE_REASON_MAX, CONTROL_PAYLOAD_MAX, HEADER_MAX,
};
use comet_http_fuzz::one_printable_line;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // Header: frame limit (1 byte: 0 is the server's 4096), split point; then the bytes.
    let [max, split, data @ ..] = input else {
        return;
    };
    let max_frame = match max {
        0 => 4096,
        255 => usize::MAX,
        n => usize::from(*n),
    };
    let whole = decode(data, max_frame);
    match whole {
        Decoded::NeedMore => assert!(data.len() < HEADER_MAX + CONTROL_PAYLOAD_MAX),
        Decoded::Frame { consumed, event } => {
            assert!(consumed >= 2 && consumed <= data.len());
            assert!(consumed <= HEADER_MAX + CONTROL_PAYLOAD_MAX);
            if let ClientEvent::Ping(payload) = event {
                assert!(payload.as_bytes().len() <= CONTROL_PAYLOAD_MAX);
            }
            assert_eq!(decode(&data[..consumed], max_frame), whole);
            assert_eq!(decode(&data[..consumed - 1], max_frame), Decoded::NeedMore);
        }
        Decoded::Fail { code, reason } => {
            assert!(matches!(code, 1002 | 1003 | 1007 | 1009), "{code}");
            assert!(!reason.is_empty() && reason.len() <= CLOSE_REASON_MAX);
            assert!(one_printable_line(reason));
        }
    }
    let prefix = &data[..usize::from(*split).min(data.len())];
    let part = decode(prefix, max_frame);
    assert!(
        part == Decoded::NeedMore || part == whole,
        "prefix of {}: {part:?}, whole: {whole:?}",
        prefix.len()
    );

    let mut rest = data;
    while let Decoded::Frame { consumed, .. } = decode(rest, max_frame) {
        rest = &rest[consumed..];
    }
});
