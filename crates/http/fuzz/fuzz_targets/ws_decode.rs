//! Property: the WebSocket client-frame decoder never panics, never consumes more than it was
//! given, and fails only with a close code comet documents.
#![no_main]

use comet_http::ws::{decode, Decoded};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let mut rest = input;
    loop {
        match decode(rest, 4096) {
            Decoded::NeedMore => break,
            Decoded::Frame { consumed, .. } => {
                assert!(consumed > 0 && consumed <= rest.len());
                rest = &rest[consumed..];
            }
            Decoded::Fail { code, .. } => {
                assert!(matches!(code, 1002 | 1003 | 1007 | 1009), "{code}");
                break;
            }
        }
    }
});
