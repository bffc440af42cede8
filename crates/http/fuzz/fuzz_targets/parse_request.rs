//! Property: parse_request never panics, and a complete head stays complete,
//! with the same length, when more bytes arrive after it.
#![no_main]

use comet_http::{parse_request, Limits, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let limits = Limits::default();
    if let Parsed::Complete(request) = parse_request(input, &limits) {
        let head_len = request.head_len;
        assert!(head_len <= input.len());
        match parse_request(&input[..head_len], &limits) {
            Parsed::Complete(again) => assert_eq!(again.head_len, head_len),
            _ => panic!("head alone did not parse"),
        }
    }
});
