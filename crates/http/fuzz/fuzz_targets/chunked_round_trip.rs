//! Property: decoding a chunk-encoded body gives back the body, however the
//! encoded bytes are cut into reads; the bytes after the body are not consumed.
#![no_main]

use comet_http::ChunkedDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // First byte: chunk size (1..=256); second: read size (1..=256); rest: body.
    let [chunk, read, body @ ..] = input else {
        return;
    };
    let chunk_bytes = usize::from(*chunk) + 1;
    let read_bytes = usize::from(*read) + 1;

    let mut encoded = Vec::new();
    for piece in body.chunks(chunk_bytes) {
        encoded.extend_from_slice(format!("{:x};ext=1\r\n", piece.len()).as_bytes());
        encoded.extend_from_slice(piece);
        encoded.extend_from_slice(b"\r\n");
    }
    encoded.extend_from_slice(b"0\r\nTrailer: x\r\n\r\n");
    let body_end = encoded.len();
    encoded.extend_from_slice(b"GET / HTTP/1.1\r\n");

    let mut decoder = ChunkedDecoder::new(body.len());
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + read_bytes).min(encoded.len());
        let (consumed, done) = decoder.feed(&encoded[start..end], &mut out).expect("valid");
        start += consumed;
        if done {
            break;
        }
        assert_eq!(start, end);
        assert!(start < encoded.len(), "never done");
    }
    assert_eq!(start, body_end);
    assert_eq!(out, body);
});
