//! A decoder for the chunked transfer coding (RFC 9112, section 7.1), sans I/O.
//!
//! It owns no buffer and copies nothing: [`Dechunker::decode`] takes the bytes received so far
//! and answers how many it used and the [`Piece`] they completed, payload as a slice of the
//! input. A stream costs only the decoder's 8 bytes however its bytes are split across reads
//! (floodtest holds one per connection, a million at a time).

/// What the decoder hands back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A chunk with a non-empty payload starts: its size line is complete.
    ChunkStart,
    /// Payload bytes of the current chunk: as many as the input holds, never past the chunk.
    Data(&'a [u8]),
    /// The current chunk's payload is complete. Reported as soon as its last byte is in, before
    /// the CRLF after it, so that a reader counts a message the moment it can.
    ChunkEnd,
    /// The last chunk (`0`) and its trailer section are complete: the body ended gracefully.
    End,
}

/// Why a body is not valid chunked coding. The decoder is unusable afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// A size line that is not hex digits, then optional extensions, then CRLF or LF; or a size
    /// over [`CHUNK_SIZE_MAX`].
    BadSize,
    /// A payload not followed by CRLF or LF; a trailer section not ended by CRLF or LF.
    BadEnd,
    /// Bytes after the end of the body.
    AfterEnd,
}

/// Largest chunk accepted: a push message is far smaller, and the bound keeps the size in a u32
/// (see the check in `framing_byte`).
pub const CHUNK_SIZE_MAX: u32 = 1 << 24; // 16 MiB

/// Decoder state. Transitions, one byte at a time unless noted:
/// SizeStart --hex--> Size --CR--> SizeLf --LF--> (size 0: TrailerLineStart; else Data);
///   Size --LF--> the same; Size --';' ' ' '\t'--> Extension --LF--> the same.
/// Data --payload, in bulk--> DataDone --no byte, reports ChunkEnd--> DataCr --CR--> DataLf
///   --LF--> SizeStart; DataCr --LF--> SizeStart.
/// TrailerLineStart --CR--> TrailerEndLf --LF--> Done; TrailerLineStart --LF--> Done;
///   any other byte: TrailerLine --LF--> TrailerLineStart (trailer fields are skipped).
/// Done: any byte is an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    SizeStart,
    Size,
    SizeLf,
    Extension,
    Data,
    DataDone,
    DataCr,
    DataLf,
    TrailerLineStart,
    TrailerLine,
    TrailerEndLf,
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dechunker {
    state: State,
    /// In `Size`: the size read so far; in `Data`: payload bytes still to come.
    left: u32,
}

impl Default for Dechunker {
    fn default() -> Self {
        Self::new()
    }
}

impl Dechunker {
    pub const fn new() -> Self {
        Dechunker {
            state: State::SizeStart,
            left: 0,
        }
    }

    /// The last chunk and its trailer section arrived.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the front of `input`: the bytes used and the piece they completed. `None`
    /// for the piece means every byte was used and none completed: wait for more. Call again
    /// with the rest while it answers a piece; a `ChunkEnd` uses no byte.
    pub fn decode<'a>(
        &mut self,
        input: &'a [u8],
    ) -> Result<(usize, Option<Piece<'a>>), ChunkError> {
        let mut used = 0;
        loop {
            match self.state {
                State::Data => {
                    let n = (self.left as usize).min(input.len() - used);
                    if n == 0 {
                        return Ok((used, None));
                    }
                    self.left -= n as u32;
                    if self.left == 0 {
                        self.state = State::DataDone;
                    }
                    return Ok((used + n, Some(Piece::Data(&input[used..used + n]))));
                }
                State::DataDone => {
                    self.state = State::DataCr;
                    return Ok((used, Some(Piece::ChunkEnd)));
                }
                _ => {}
            }
            let Some(&b) = input.get(used) else {
                return Ok((used, None));
            };
            used += 1;
            if let Some(piece) = self.framing_byte(b)? {
                return Ok((used, Some(piece)));
            }
        }
    }

    /// One byte of a size line, a payload's line end or the trailer section.
    fn framing_byte(&mut self, b: u8) -> Result<Option<Piece<'static>>, ChunkError> {
        match self.state {
            State::SizeStart | State::Size => match hex_value(b) {
                Some(d) => {
                    // `left` is at most CHUNK_SIZE_MAX here, so `left * 16 + 15` fits a u32.
                    self.left = self.left * 16 + u32::from(d);
                    if self.left > CHUNK_SIZE_MAX {
                        return Err(ChunkError::BadSize);
                    }
                    self.state = State::Size;
                }
                None if self.state == State::SizeStart => return Err(ChunkError::BadSize),
                None => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' => return Ok(self.size_done()),
                    b';' | b' ' | b'\t' => self.state = State::Extension,
                    _ => return Err(ChunkError::BadSize),
                },
            },
            State::SizeLf => {
                if b != b'\n' {
                    return Err(ChunkError::BadSize);
                }
                return Ok(self.size_done());
            }
            State::Extension => {
                if b == b'\n' {
                    return Ok(self.size_done());
                }
            }
            State::DataCr => match b {
                b'\r' => self.state = State::DataLf,
                b'\n' => self.state = State::SizeStart,
                _ => return Err(ChunkError::BadEnd),
            },
            State::DataLf => {
                if b != b'\n' {
                    return Err(ChunkError::BadEnd);
                }
                self.state = State::SizeStart;
            }
            State::TrailerLineStart => match b {
                b'\r' => self.state = State::TrailerEndLf,
                b'\n' => return Ok(Some(self.done())),
                _ => self.state = State::TrailerLine,
            },
            State::TrailerLine => {
                if b == b'\n' {
                    self.state = State::TrailerLineStart;
                }
            }
            State::TrailerEndLf => {
                if b != b'\n' {
                    return Err(ChunkError::BadEnd);
                }
                return Ok(Some(self.done()));
            }
            State::Done => return Err(ChunkError::AfterEnd),
            State::Data | State::DataDone => unreachable!("payload is handled by decode"),
        }
        Ok(None)
    }

    fn size_done(&mut self) -> Option<Piece<'static>> {
        if self.left == 0 {
            self.state = State::TrailerLineStart;
            None
        } else {
            self.state = State::Data;
            Some(Piece::ChunkStart)
        }
    }

    fn done(&mut self) -> Piece<'static> {
        self.state = State::Done;
        Piece::End
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A piece that owns its payload, so pieces from different feeds compare.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Owned {
        ChunkStart,
        Data(Vec<u8>),
        ChunkEnd,
        End,
    }

    /// Feeds `parts` one after the other, as reads would deliver them; joins the payload pieces
    /// of one chunk, since how they are cut depends on the reads.
    fn decode_parts(parts: &[&[u8]]) -> Result<Vec<Owned>, ChunkError> {
        let mut d = Dechunker::new();
        let mut out = Vec::new();
        for part in parts {
            let mut rest = *part;
            loop {
                let (used, piece) = d.decode(rest)?;
                rest = &rest[used..];
                let Some(piece) = piece else {
                    assert!(rest.is_empty(), "None before the input is used up");
                    break;
                };
                match (piece, out.last_mut()) {
                    (Piece::Data(bytes), Some(Owned::Data(prev))) => prev.extend_from_slice(bytes),
                    (Piece::Data(bytes), _) => out.push(Owned::Data(bytes.to_vec())),
                    (Piece::ChunkStart, _) => out.push(Owned::ChunkStart),
                    (Piece::ChunkEnd, _) => out.push(Owned::ChunkEnd),
                    (Piece::End, _) => out.push(Owned::End),
                }
            }
        }
        Ok(out)
    }

    fn expected(chunks: &[&[u8]]) -> Vec<Owned> {
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend([
                Owned::ChunkStart,
                Owned::Data(chunk.to_vec()),
                Owned::ChunkEnd,
            ]);
        }
        out.push(Owned::End);
        out
    }

    /// The same pieces whole, split in two at every byte, in three at every pair of bytes, and
    /// one byte at a time.
    fn check_all_splits(body: &[u8], want: &[Owned]) {
        assert_eq!(decode_parts(&[body]).as_deref(), Ok(want));
        for i in 0..=body.len() {
            let got = decode_parts(&[&body[..i], &body[i..]]);
            assert_eq!(got.as_deref(), Ok(want), "split at {i}");
            for j in i..=body.len() {
                let got = decode_parts(&[&body[..i], &body[i..j], &body[j..]]);
                assert_eq!(got.as_deref(), Ok(want), "split at {i},{j}");
            }
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(decode_parts(&bytes).as_deref(), Ok(want), "byte by byte");
    }

    #[test]
    fn decoder_is_small() {
        assert!(std::mem::size_of::<Dechunker>() <= 8);
    }

    #[test]
    fn chunks_at_every_split() {
        // A payload may hold CRLF and digits: only the size says where it ends.
        let message = "Recvd msg #2: 'ts=42 \r\n0\r\n'<br/>";
        let body = format!(
            "5\r\nhello\r\n{:x}\r\n{message}\r\n0\r\n\r\n",
            message.len()
        );
        check_all_splits(body.as_bytes(), &expected(&[b"hello", message.as_bytes()]));
    }

    #[test]
    fn extensions_upper_case_bare_lf_and_trailers() {
        let body = b"A;name=v\r\n0123456789\r\n3 ; x\nabc\n0\r\nX-Trailer: 1\r\nY: 2\n\r\n";
        check_all_splits(body, &expected(&[b"0123456789", b"abc"]));
        check_all_splits(b"0\n\n", &expected(&[]));
    }

    #[test]
    fn chunk_end_comes_with_the_last_payload_byte() {
        // No CRLF yet: the payload is complete all the same.
        assert_eq!(
            decode_parts(&[b"3\r\nabc"]),
            Ok(vec![
                Owned::ChunkStart,
                Owned::Data(b"abc".to_vec()),
                Owned::ChunkEnd
            ])
        );
        let mut d = Dechunker::new();
        assert_eq!(d.decode(b"3\r\nab"), Ok((3, Some(Piece::ChunkStart))));
        assert_eq!(d.decode(b"ab"), Ok((2, Some(Piece::Data(b"ab")))));
        assert_eq!(d.decode(b""), Ok((0, None)));
        assert_eq!(d.decode(b"c"), Ok((1, Some(Piece::Data(b"c")))));
        assert_eq!(d.decode(b""), Ok((0, Some(Piece::ChunkEnd))));
        assert!(!d.is_done());
        assert_eq!(d.decode(b"\r\n0\r\n\r\n"), Ok((7, Some(Piece::End))));
        assert!(d.is_done());
    }

    #[test]
    fn malformed_bodies() {
        let err = |body: &[u8]| decode_parts(&[body]).unwrap_err();
        assert_eq!(err(b"zz\r\n"), ChunkError::BadSize);
        assert_eq!(err(b"\r\n"), ChunkError::BadSize);
        assert_eq!(err(b"5\rX"), ChunkError::BadSize);
        assert_eq!(err(b"5x\r\n"), ChunkError::BadSize);
        assert_eq!(err(b"2\r\nabXY"), ChunkError::BadEnd);
        assert_eq!(err(b"2\r\nab\rX"), ChunkError::BadEnd);
        assert_eq!(err(b"0\r\n\rX"), ChunkError::BadEnd);
        assert_eq!(err(b"0\r\n\r\nx"), ChunkError::AfterEnd);
        // The largest size passes; one more, or a size that would overflow, does not.
        let max = format!("{CHUNK_SIZE_MAX:x}\r\n");
        assert_eq!(decode_parts(&[max.as_bytes()]), Ok(vec![Owned::ChunkStart]));
        let over = format!("{:x}\r\n", CHUNK_SIZE_MAX + 1);
        assert_eq!(err(over.as_bytes()), ChunkError::BadSize);
        assert_eq!(err(b"ffffffffff\r\n"), ChunkError::BadSize);
        // Leading zeros do not count against the size.
        assert_eq!(
            decode_parts(&[b"000000000001\r\nx\r\n0\r\n\r\n"]),
            Ok(expected(&[b"x"]))
        );
    }

    proptest! {
        /// decode(encode(chunks)) == chunks, however the encoded body is cut into reads.
        #[test]
        fn decodes_what_was_encoded(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 0..6),
            upper in any::<bool>(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut body = Vec::new();
            for chunk in &chunks {
                let size = if upper { format!("{:X}", chunk.len()) } else { format!("{:x}", chunk.len()) };
                body.extend_from_slice(size.as_bytes());
                body.extend_from_slice(b"\r\n");
                body.extend_from_slice(chunk);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(body.len() + 1)).collect();
            at.sort_unstable();
            let mut parts = Vec::new();
            let mut from = 0;
            for to in at.into_iter().chain([body.len()]) {
                parts.push(&body[from..to]);
                from = to;
            }
            let want: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(decode_parts(&parts), Ok(expected(&want)));
        }
    }
}
