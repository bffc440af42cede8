//! Round trip: a body chunk-encoded as any client may (chunk sizes, hex case, leading zeros,
//! extensions, trailer fields, all within the decoder's bounds) decodes back to the body,
//! however the encoded bytes are cut into reads; the bytes after the body (the next request)
//! are not consumed. With a limit one byte below the body it is refused with 413.
#![no_main]

use arbitrary::Arbitrary;
use comet_http::ChunkedDecoder;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    body: Vec<u8>,
    /// Chunk sizes in turn (each 1..=256; the last one repeats until the body is used up).
    chunks: Vec<Chunk>,
    trailers: Vec<Vec<u8>>,
    /// Read sizes in turn (each 1..=256; the last one repeats).
    reads: Vec<u8>,
    /// Zeros in front of the last chunk's size.
    last_zeros: u8,
    next: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
struct Chunk {
    size: u8,
    zeros: u8,
    upper: bool,
    /// Written after `;` (or a space or a tab before it, see `lead`); made printable.
    extension: Vec<u8>,
    lead: u8,
}

/// The decoder's bounds (crates/http/src/chunked.rs), kept to here.
const SIZE_DIGITS_MAX: usize = 16;
const EXTENSION_BYTES_MAX: usize = 256;
const TRAILER_BYTES_MAX: usize = 8192;

fuzz_target!(|input: Input| {
    let mut encoded = Vec::new();
    let mut rest = &input.body[..];
    let mut chunk_index = 0;
    while !rest.is_empty() {
        let chunk = input.chunks.get(chunk_index).or(input.chunks.last());
        chunk_index += 1;
        let size = chunk.map_or(rest.len(), |c| usize::from(c.size) + 1);
        let (piece, after) = rest.split_at(size.min(rest.len()));
        rest = after;
        match chunk {
            Some(c) => size_line(&mut encoded, piece.len(), c),
            None => encoded.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes()),
        }
        encoded.extend_from_slice(piece);
        encoded.extend_from_slice(b"\r\n");
    }
    let zeros = usize::from(input.last_zeros) % SIZE_DIGITS_MAX;
    encoded.extend(std::iter::repeat_n(b'0', zeros + 1));
    encoded.extend_from_slice(b"\r\n");
    let mut trailer_bytes = 2; // the final CRLF
    for field in &input.trailers {
        let line: Vec<u8> = field
            .iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b'x' } else { b })
            .collect();
        if line.is_empty() || trailer_bytes + line.len() + 2 > TRAILER_BYTES_MAX {
            continue;
        }
        trailer_bytes += line.len() + 2;
        encoded.extend_from_slice(&line);
        encoded.extend_from_slice(b"\r\n");
    }
    encoded.extend_from_slice(b"\r\n");
    let body_end = encoded.len();
    encoded.extend_from_slice(&input.next);

    let (consumed, out) = decode(&encoded, &input.reads, input.body.len()).expect("valid");
    assert_eq!(consumed, body_end);
    assert_eq!(out, input.body);

    if !input.body.is_empty() {
        let refused = decode(&encoded, &input.reads, input.body.len() - 1);
        assert_eq!(refused.expect_err("over the limit").0, 413);
    }
});

fn size_line(out: &mut Vec<u8>, size: usize, chunk: &Chunk) {
    let digits = if chunk.upper {
        format!("{size:X}")
    } else {
        format!("{size:x}")
    };
    let zeros = usize::from(chunk.zeros) % (SIZE_DIGITS_MAX - digits.len() + 1);
    out.extend(std::iter::repeat_n(b'0', zeros));
    out.extend_from_slice(digits.as_bytes());
    if !chunk.extension.is_empty() {
        out.extend_from_slice(match chunk.lead % 4 {
            0 => &b" ;"[..],
            1 => b"\t;",
            _ => b";",
        });
        let room = EXTENSION_BYTES_MAX - 2;
        out.extend(chunk.extension.iter().take(room).map(|&b| match b {
            b'\t' | 0x20..=0x7e | 0x80..=0xff => b,
            _ => b'e',
        }));
    }
    out.extend_from_slice(b"\r\n");
}

/// Decodes `encoded` in reads of the sizes `reads` gives; `Ok((consumed, body))` once done,
/// `Err((status, reason))` on a refusal.
fn decode(encoded: &[u8], reads: &[u8], max: usize) -> Result<(usize, Vec<u8>), (u16, String)> {
    let mut decoder = ChunkedDecoder::new(max);
    let mut out = Vec::new();
    let mut start = 0;
    let mut read_index = 0;
    loop {
        let read = reads
            .get(read_index)
            .or(reads.last())
            .copied()
            .unwrap_or(255);
        read_index += 1;
        let end = (start + usize::from(read) + 1).min(encoded.len());
        let (consumed, done) = decoder
            .feed(&encoded[start..end], &mut out)
            .map_err(|e| (e.status.0, e.reason))?;
        start += consumed;
        if done {
            return Ok((start, out));
        }
        assert_eq!(start, end, "a read not consumed whole");
        assert!(start < encoded.len(), "never done");
    }
}
