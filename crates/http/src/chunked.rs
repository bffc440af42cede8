//! Incremental decoder for chunked request bodies (RFC 9112 section 7.1).

use crate::request::{Error, Status};

/// Hex digits in a chunk size, leading zeros included: 16 covers any u64, and
/// bounds the framing bytes a client can send per chunk.
const SIZE_DIGITS_MAX: u32 = 16;
/// Bytes of chunk extensions per size line (ignored, but bounded: every chunk
/// carries at least one data byte, so framing stays proportional to the body).
const EXTENSION_BYTES_MAX: usize = 256;
/// Bytes of the whole trailer section (skipped, never stored).
const TRAILER_BYTES_MAX: usize = 8192;

/// Where the decoder is in `chunk-size [ext] CRLF data CRLF ... 0 CRLF trailers CRLF`.
/// Every state consumes input byte by byte except `Data`, which copies in bulk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading hex digits. Next: `Size` (digit), `Extension` (SP, HTAB, `;`), `SizeLf` (CR).
    Size { size: u64, digits: u32 },
    /// Skipping to the end of the size line. Next: `SizeLf` (CR).
    Extension { size: u64, bytes: usize },
    /// Saw CR after the size line. Next: `Data`, or `TrailerLineStart` for size 0.
    SizeLf { size: u64 },
    /// Copying this many more data bytes. Next: `DataCr`.
    Data { remaining: u64 },
    /// Next: `DataLf`.
    DataCr,
    /// Next: `Size` of the next chunk.
    DataLf,
    /// At the start of a trailer line or of the final empty line.
    /// Next: `EndLf` (CR), `TrailerLine` (anything else).
    TrailerLineStart,
    /// Next: `TrailerLf` (CR).
    TrailerLine,
    /// Next: `TrailerLineStart`.
    TrailerLf,
    /// Saw the CR of the final empty line. Next: `Done`.
    EndLf,
    /// The body ended; `feed` consumes nothing more.
    Done,
    /// `feed` returned an error; the connection is to be closed.
    Failed,
}

/// Decodes a chunked body as it arrives, keeping its place between calls, so a
/// body trickling in one byte at a time costs O(n) in total.
///
/// Chunk extensions are ignored, trailer fields skipped. Line endings must be
/// CRLF (a bare LF is 400: no guessing about framing). A decoded size over
/// `body_bytes_max` is 413, noticed from the chunk size before its data arrives.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    body_bytes_max: usize,
    decoded_bytes: usize,
    trailer_bytes: usize,
}

impl ChunkedDecoder {
    pub fn new(body_bytes_max: usize) -> Self {
        ChunkedDecoder {
            state: State::Size { size: 0, digits: 0 },
            body_bytes_max,
            decoded_bytes: 0,
            trailer_bytes: 0,
        }
    }

    /// True once the last chunk and the trailer section were consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decoded bytes so far.
    pub fn decoded_bytes(&self) -> usize {
        self.decoded_bytes
    }

    /// Consume from `input`, append decoded data to `out`.
    ///
    /// `Ok((consumed, done))`: until `done`, all of `input` is consumed (the
    /// decoder keeps its place; the caller can drop those bytes). Once done,
    /// `consumed` stops right after the final CRLF: `input[consumed..]` is the
    /// next pipelined request. After `done`, `feed` returns `Ok((0, true))`.
    /// After an error, every call returns an error.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), Error> {
        if self.state == State::Done {
            return Ok((0, true));
        }
        let mut index = 0;
        while index < input.len() {
            if let State::Data { remaining } = self.state {
                let available = input.len() - index;
                let n = usize::try_from(remaining).map_or(available, |r| r.min(available));
                out.extend_from_slice(&input[index..index + n]);
                index += n;
                self.decoded_bytes += n;
                let remaining = remaining - n as u64;
                self.state = if remaining == 0 {
                    State::DataCr
                } else {
                    State::Data { remaining }
                };
                continue;
            }
            let byte = input[index];
            index += 1;
            self.state = match self.step(byte) {
                Ok(state) => state,
                Err(err) => {
                    self.state = State::Failed;
                    return Err(err);
                }
            };
            if self.state == State::Done {
                return Ok((index, true));
            }
        }
        match self.state {
            State::Done => Ok((0, true)),
            State::Failed => Err(bad("chunked body already refused")),
            _ => Ok((index, false)),
        }
    }

    /// The state after `byte`, for every state but `Data`.
    fn step(&mut self, byte: u8) -> Result<State, Error> {
        if matches!(
            self.state,
            State::TrailerLineStart | State::TrailerLine | State::TrailerLf | State::EndLf
        ) {
            self.trailer_bytes += 1;
            if self.trailer_bytes > TRAILER_BYTES_MAX {
                return Err(Error::new(
                    Status::HEADERS_TOO_LARGE,
                    format!("trailer section larger than {TRAILER_BYTES_MAX} bytes"),
                ));
            }
        }
        Ok(match self.state {
            State::Size { size, digits } => match hex_value(byte) {
                Some(value) => {
                    if digits == SIZE_DIGITS_MAX {
                        return Err(bad("chunk size too long"));
                    }
                    State::Size {
                        size: size << 4 | u64::from(value),
                        digits: digits + 1,
                    }
                }
                None if digits == 0 => return Err(bad("invalid chunk size")),
                None => match byte {
                    b'\r' => State::SizeLf { size },
                    b' ' | b'\t' | b';' => State::Extension { size, bytes: 1 },
                    _ => return Err(bad("invalid chunk size")),
                },
            },
            State::Extension { size, bytes } => match byte {
                b'\r' => State::SizeLf { size },
                b'\n' => return Err(bad("bare LF in chunk size line")),
                _ if is_control(byte) => return Err(bad("invalid chunk extension")),
                _ if bytes == EXTENSION_BYTES_MAX => return Err(bad("chunk extension too long")),
                _ => State::Extension {
                    size,
                    bytes: bytes + 1,
                },
            },
            State::SizeLf { size } => {
                if byte != b'\n' {
                    return Err(bad("expected LF after chunk size"));
                }
                if size == 0 {
                    State::TrailerLineStart
                } else if size > (self.body_bytes_max - self.decoded_bytes) as u64 {
                    return Err(Error::new(
                        Status::PAYLOAD_TOO_LARGE,
                        format!("request body larger than {} bytes", self.body_bytes_max),
                    ));
                } else {
                    State::Data { remaining: size }
                }
            }
            State::DataCr => match byte {
                b'\r' => State::DataLf,
                _ => return Err(bad("expected CRLF after chunk data")),
            },
            State::DataLf => match byte {
                b'\n' => State::Size { size: 0, digits: 0 },
                _ => return Err(bad("expected CRLF after chunk data")),
            },
            State::TrailerLineStart | State::TrailerLine => match (self.state, byte) {
                (State::TrailerLineStart, b'\r') => State::EndLf,
                (_, b'\r') => State::TrailerLf,
                (_, b'\n') => return Err(bad("bare LF in trailer section")),
                _ => State::TrailerLine,
            },
            State::TrailerLf => match byte {
                b'\n' => State::TrailerLineStart,
                _ => return Err(bad("expected LF in trailer section")),
            },
            State::EndLf => match byte {
                b'\n' => State::Done,
                _ => return Err(bad("expected LF at end of chunked body")),
            },
            State::Failed => return Err(bad("chunked body already refused")),
            State::Data { .. } | State::Done => unreachable!("handled by feed"),
        })
    }
}

fn bad(reason: &str) -> Error {
    Error::new(Status::BAD_REQUEST, reason)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// CTLs other than HTAB (which chunk extensions may contain as whitespace).
fn is_control(byte: u8) -> bool {
    (byte < 0x20 && byte != b'\t') || byte == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] =
        b"5\r\nhello\r\n1;name=value\r\n \r\nA \t;x\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nGET /next";
    const BODY_LEN: usize = BODY.len() - b"GET /next".len();
    const DECODED: &[u8] = b"hello 0123456789";

    fn decode_all(input: &[u8], max: usize) -> Result<(usize, Vec<u8>), Error> {
        let mut decoder = ChunkedDecoder::new(max);
        let mut out = Vec::new();
        let (consumed, done) = decoder.feed(input, &mut out)?;
        assert!(done, "not done");
        Ok((consumed, out))
    }

    fn error(input: &[u8]) -> Error {
        let mut decoder = ChunkedDecoder::new(1 << 20);
        decoder.feed(input, &mut Vec::new()).expect_err("accepted")
    }

    #[test]
    fn decodes_and_stops_at_the_next_request() {
        let (consumed, out) = decode_all(BODY, 1 << 20).unwrap();
        assert_eq!(out, DECODED);
        assert_eq!(consumed, BODY_LEN);
    }

    #[test]
    fn every_split_point_gives_the_same_output() {
        for split in 0..=BODY.len() {
            let mut decoder = ChunkedDecoder::new(1 << 20);
            let mut out = Vec::new();
            let (first, done) = decoder.feed(&BODY[..split], &mut out).unwrap();
            let consumed = if done {
                first
            } else {
                assert_eq!(first, split);
                let (second, done) = decoder.feed(&BODY[split..], &mut out).unwrap();
                assert!(done);
                first + second
            };
            assert_eq!(consumed, BODY_LEN, "split {split}");
            assert_eq!(out, DECODED, "split {split}");
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let mut decoder = ChunkedDecoder::new(1 << 20);
        let mut out = Vec::new();
        let mut consumed = 0;
        for (i, byte) in BODY.iter().enumerate() {
            let (n, done) = decoder.feed(std::slice::from_ref(byte), &mut out).unwrap();
            consumed += n;
            if done {
                assert_eq!(i + 1, BODY_LEN);
                break;
            }
            assert_eq!(n, 1);
        }
        assert!(decoder.is_done());
        assert_eq!(consumed, BODY_LEN);
        assert_eq!(out, DECODED);
        assert_eq!(decoder.decoded_bytes(), DECODED.len());
        assert_eq!(decoder.feed(b"more", &mut out).unwrap(), (0, true));
    }

    #[test]
    fn empty_body() {
        assert_eq!(decode_all(b"0\r\n\r\n", 0).unwrap(), (5, Vec::new()));
        let mut decoder = ChunkedDecoder::new(0);
        assert_eq!(decoder.feed(b"", &mut Vec::new()).unwrap(), (0, false));
    }

    #[test]
    fn uppercase_hex_and_leading_zeros() {
        let input = b"000A\r\n0123456789\r\n00\r\n\r\n";
        assert_eq!(decode_all(input, 10).unwrap().1, b"0123456789");
    }

    #[test]
    fn body_limit_is_413() {
        assert!(decode_all(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", 5).is_ok());
        let mut decoder = ChunkedDecoder::new(4);
        let err = decoder
            .feed(b"3\r\nabc\r\n2\r\n", &mut Vec::new())
            .unwrap_err();
        assert_eq!(err.status, Status::PAYLOAD_TOO_LARGE);
        assert_eq!(err.reason, "request body larger than 4 bytes");
        let err = ChunkedDecoder::new(4).feed(b"ffffffffffffffff\r\n", &mut Vec::new());
        assert_eq!(err.unwrap_err().status, Status::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn size_overflow_is_400() {
        let err = error(b"10000000000000000\r\n");
        assert_eq!(
            (err.status, err.reason.as_str()),
            (Status::BAD_REQUEST, "chunk size too long")
        );
        assert_eq!(
            error(b"00000000000000001\r\n").reason,
            "chunk size too long"
        );
    }

    #[test]
    fn malformed_is_400() {
        for (input, reason) in [
            (&b"\r\n"[..], "invalid chunk size"),
            (b"x\r\n", "invalid chunk size"),
            (b"-1\r\n", "invalid chunk size"),
            (b"5x\r\n", "invalid chunk size"),
            (b"0x5\r\n", "invalid chunk size"),
            (b"5\n", "invalid chunk size"),
            (b"5;\n", "bare LF in chunk size line"),
            (b"5;a\x00\r\n", "invalid chunk extension"),
            (b"5\rX", "expected LF after chunk size"),
            (b"3\r\nabcd", "expected CRLF after chunk data"),
            (b"3\r\nabc\rX", "expected CRLF after chunk data"),
            (b"3\r\nabc\n", "expected CRLF after chunk data"),
            (b"0\r\nX: 1\n", "bare LF in trailer section"),
            (b"0\r\n\n", "bare LF in trailer section"),
            (b"0\r\nX: 1\rY", "expected LF in trailer section"),
            (b"0\r\n\rX", "expected LF at end of chunked body"),
        ] {
            let err = error(input);
            assert_eq!(
                err.status,
                Status::BAD_REQUEST,
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(err.reason, reason, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn extension_and_trailer_bounds() {
        let mut input = b"1;".to_vec();
        input.resize(1 + EXTENSION_BYTES_MAX, b'e');
        input.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(decode_all(&input, 10).unwrap().1, b"x");
        input.insert(2, b'e');
        assert_eq!(error(&input).reason, "chunk extension too long");

        let mut input = b"0\r\n".to_vec();
        input.resize(3 + TRAILER_BYTES_MAX - 2, b't');
        input.extend_from_slice(b"\r\n");
        let mut decoder = ChunkedDecoder::new(10);
        assert_eq!(
            decoder.feed(&input, &mut Vec::new()).unwrap(),
            (input.len(), false)
        );
        let err = decoder.feed(b"\r\n", &mut Vec::new()).unwrap_err();
        assert_eq!(err.status, Status::HEADERS_TOO_LARGE);
    }

    #[test]
    fn errors_are_sticky() {
        let mut decoder = ChunkedDecoder::new(10);
        assert!(decoder.feed(b"z", &mut Vec::new()).is_err());
        assert!(decoder.feed(b"0\r\n\r\n", &mut Vec::new()).is_err());
        assert!(decoder.feed(b"", &mut Vec::new()).is_err());
    }
}
