//! Incremental parser for one streaming response: status line and headers, then the chunked
//! body, and inside it either one message per chunk (`/test/<id>`, the seed's HTML stream) or
//! Server-Sent Events (`/events/<id>`).
//!
//! The parser owns no buffer: every byte is consumed as it arrives, so a connection costs only
//! this struct (32 bytes, pinned by a test) however its bytes are split across reads. The
//! chunked coding is `tools_common`'s decoder; the status line, the end of the head and the
//! message framing inside the body are read here. Events are reported to the caller through a
//! closure; time is never read here.

use tools_common::chunked::{ChunkError, Dechunker, Piece};

/// What the parser tells its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The header block is complete; the stream is established when `status` is 200.
    Headers { status: u16 },
    /// A chunk with a non-empty payload started.
    Chunk,
    /// One message is complete; `ts_us` is the `ts=<epoch us>` stamp found in it, if any.
    Message { ts_us: Option<u64> },
    /// The terminating `0\r\n\r\n` chunk (and any trailers) arrived: a graceful end.
    End,
}

/// Why a stream could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    BadStatusLine,
    BadChunkSize,
    BadChunkEnd,
    /// Bytes after the terminating chunk.
    AfterEnd,
}

/// Body framing inside the chunked transfer encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// One message per chunk (`Recvd msg #N: '...'<br/>`).
    ChunkPerMessage,
    /// Server-Sent Events: a message is an event with at least one `data:` line, ended by a
    /// blank line. Lines end with LF (a CR before the LF is ignored).
    Sse,
}

impl From<ChunkError> for ParseError {
    fn from(e: ChunkError) -> Self {
        match e {
            ChunkError::BadSize => ParseError::BadChunkSize,
            ChunkError::BadEnd => ParseError::BadChunkEnd,
            ChunkError::AfterEnd => ParseError::AfterEnd,
        }
    }
}

/// Parser state. Transitions, one byte at a time:
/// StatusVersion --' '--> StatusCode --non-digit--> Headers --"\r\n\r\n"--> Body.
/// In Body the chunked decoder takes every byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    StatusVersion,
    StatusCode,
    Headers,
    Body,
}

/// SSE line state inside the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SseLine {
    Start,
    /// Matched this many bytes of `data:`.
    Prefix(u8),
    /// After `data:`, before the optional single space.
    DataSpace,
    Data,
    Other,
}

const HEADER_END: &[u8; 4] = b"\r\n\r\n";
const SSE_DATA: &[u8; 5] = b"data:";
const TS_PREFIX: &[u8; 3] = b"ts=";

/// Finds the first `ts=<digits>` in a message, one byte at a time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TsScan {
    /// 0..=2: bytes of `ts=` matched; 3: after `=`, no digit yet; 4: in digits; 5: done.
    step: u8,
    value: u64,
}

impl TsScan {
    const AFTER_EQ: u8 = 3;
    const DIGITS: u8 = 4;
    const DONE: u8 = 5;

    pub fn is_done(&self) -> bool {
        self.step == Self::DONE
    }

    pub fn byte(&mut self, b: u8) {
        match self.step {
            0..=2 => {
                if b == TS_PREFIX[self.step as usize] {
                    self.step += 1;
                } else {
                    // No proper prefix of "ts=" is also a suffix, so a mismatch restarts.
                    self.step = u8::from(b == b't');
                }
            }
            Self::AFTER_EQ | Self::DIGITS => {
                if b.is_ascii_digit() {
                    self.value = self
                        .value
                        .saturating_mul(10)
                        .saturating_add(u64::from(b - b'0'));
                    self.step = Self::DIGITS;
                } else if self.step == Self::DIGITS {
                    self.step = Self::DONE;
                } else {
                    self.value = 0;
                    self.step = u8::from(b == b't');
                }
            }
            _ => {}
        }
    }

    /// The message ended: the stamp, if one was found; resets for the next message.
    pub fn finish(&mut self) -> Option<u64> {
        let found = matches!(self.step, Self::DIGITS | Self::DONE).then_some(self.value);
        *self = TsScan::default();
        found
    }
}

/// Extracts the `ts=` stamp from a whole message.
#[cfg(test)]
pub fn find_ts(message: &[u8]) -> Option<u64> {
    let mut scan = TsScan::default();
    for &b in message {
        scan.byte(b);
        if scan.is_done() {
            break;
        }
    }
    scan.finish()
}

#[derive(Clone, Copy, Debug)]
pub struct StreamParser {
    state: State,
    sse_line: SseLine,
    sse: bool,
    sse_has_data: bool,
    header_matched: u8,
    status: u16,
    body: Dechunker,
    ts: TsScan,
}

impl StreamParser {
    pub fn new(framing: Framing) -> Self {
        StreamParser {
            state: State::StatusVersion,
            sse_line: SseLine::Start,
            sse: framing == Framing::Sse,
            sse_has_data: false,
            header_matched: 0,
            status: 0,
            body: Dechunker::new(),
            ts: TsScan::default(),
        }
    }

    /// Consumes `input` entirely (or up to an error), calling `on_event` for each event.
    /// After `Headers` with a status other than 200 the caller should stop feeding.
    pub fn feed(
        &mut self,
        input: &[u8],
        on_event: &mut impl FnMut(Event),
    ) -> Result<(), ParseError> {
        let mut i = 0;
        while self.state != State::Body {
            let Some(&b) = input.get(i) else {
                return Ok(());
            };
            i += 1;
            self.head_byte(b, on_event)?;
        }
        let mut rest = &input[i..];
        loop {
            let (used, piece) = self.body.decode(rest)?;
            rest = &rest[used..];
            match piece {
                None => return Ok(()),
                Some(Piece::ChunkStart) => on_event(Event::Chunk),
                Some(Piece::Data(data)) => self.payload(data, on_event),
                Some(Piece::ChunkEnd) => {
                    if !self.sse {
                        let ts_us = self.ts.finish();
                        on_event(Event::Message { ts_us });
                    }
                }
                Some(Piece::End) => on_event(Event::End),
            }
        }
    }

    /// One byte of the status line or the headers.
    fn head_byte(&mut self, b: u8, on_event: &mut impl FnMut(Event)) -> Result<(), ParseError> {
        match self.state {
            State::StatusVersion => match b {
                b' ' => self.state = State::StatusCode,
                b'\r' | b'\n' => return Err(ParseError::BadStatusLine),
                _ => {}
            },
            State::StatusCode => {
                if b.is_ascii_digit() && self.status < 100 {
                    self.status = self.status * 10 + u16::from(b - b'0');
                } else if self.status >= 100 {
                    self.state = State::Headers;
                    self.header_byte(b, on_event);
                } else {
                    return Err(ParseError::BadStatusLine);
                }
            }
            State::Headers => self.header_byte(b, on_event),
            State::Body => unreachable!("body bytes go to the chunked decoder"),
        }
        Ok(())
    }

    fn header_byte(&mut self, b: u8, on_event: &mut impl FnMut(Event)) {
        let m = self.header_matched as usize;
        if b == HEADER_END[m] {
            self.header_matched += 1;
        } else {
            self.header_matched = u8::from(b == b'\r');
        }
        if self.header_matched as usize == HEADER_END.len() {
            self.state = State::Body;
            on_event(Event::Headers {
                status: self.status,
            });
        }
    }

    /// Chunk payload bytes.
    fn payload(&mut self, data: &[u8], on_event: &mut impl FnMut(Event)) {
        if !self.sse {
            if !self.ts.is_done() {
                for &b in data {
                    self.ts.byte(b);
                    if self.ts.is_done() {
                        break;
                    }
                }
            }
            return;
        }
        for &b in data {
            self.sse_byte(b, on_event);
        }
    }

    fn sse_byte(&mut self, b: u8, on_event: &mut impl FnMut(Event)) {
        if b == b'\r' {
            return;
        }
        match self.sse_line {
            SseLine::Start => match b {
                b'\n' => {
                    if self.sse_has_data {
                        self.sse_has_data = false;
                        let ts_us = self.ts.finish();
                        on_event(Event::Message { ts_us });
                    }
                }
                b'd' => self.sse_line = SseLine::Prefix(1),
                _ => self.sse_line = SseLine::Other,
            },
            SseLine::Prefix(k) => {
                if b == SSE_DATA[k as usize] {
                    self.sse_line = if k as usize + 1 == SSE_DATA.len() {
                        self.sse_has_data = true;
                        SseLine::DataSpace
                    } else {
                        SseLine::Prefix(k + 1)
                    };
                } else if b == b'\n' {
                    self.sse_line = SseLine::Start;
                } else {
                    self.sse_line = SseLine::Other;
                }
            }
            SseLine::DataSpace | SseLine::Data => {
                if b == b'\n' {
                    // A line break ends any digits in progress, as in the message text.
                    self.ts.byte(b'\n');
                    self.sse_line = SseLine::Start;
                } else if self.sse_line == SseLine::DataSpace && b == b' ' {
                    self.sse_line = SseLine::Data;
                } else {
                    self.sse_line = SseLine::Data;
                    self.ts.byte(b);
                }
            }
            SseLine::Other => {
                if b == b'\n' {
                    self.sse_line = SseLine::Start;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n";

    fn chunk(data: &str) -> String {
        format!("{:x}\r\n{}\r\n", data.len(), data)
    }

    fn run(framing: Framing, parts: &[&[u8]]) -> (Vec<Event>, Result<(), ParseError>) {
        let mut p = StreamParser::new(framing);
        let mut events = Vec::new();
        for part in parts {
            let r = p.feed(part, &mut |e| events.push(e));
            if r.is_err() {
                return (events, r);
            }
        }
        (events, Ok(()))
    }

    /// Feeds `stream` whole, then split at every byte boundary, then split into three at every
    /// pair of boundaries, and asserts the same events each time.
    fn check_all_splits(framing: Framing, stream: &[u8], expected: &[Event]) {
        let (whole, r) = run(framing, &[stream]);
        assert_eq!(r, Ok(()));
        assert_eq!(whole, expected);
        for i in 0..=stream.len() {
            let (events, r) = run(framing, &[&stream[..i], &stream[i..]]);
            assert_eq!(r, Ok(()), "split at {i}");
            assert_eq!(events, expected, "split at {i}");
        }
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let (events, r) = run(framing, &[&stream[..i], &stream[i..j], &stream[j..]]);
                assert_eq!(r, Ok(()));
                assert_eq!(events, expected, "split at {i},{j}");
            }
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(run(framing, &bytes).0, expected);
    }

    #[test]
    fn parser_is_small() {
        assert!(std::mem::size_of::<StreamParser>() <= 32);
    }

    #[test]
    fn html_chunks_at_every_split() {
        let stream = format!(
            "{HEAD}{}{}{}0\r\n\r\n",
            chunk("Recvd msg #1: 'ts=1764151234567890 xxxx'<br/>"),
            chunk("Recvd msg #2: 'hello &amp; no stamp'<br/>"),
            chunk("Recvd msg #3: 'ts=42'<br/>"),
        );
        let expected = [
            Event::Headers { status: 200 },
            Event::Chunk,
            Event::Message {
                ts_us: Some(1764151234567890),
            },
            Event::Chunk,
            Event::Message { ts_us: None },
            Event::Chunk,
            Event::Message { ts_us: Some(42) },
            Event::End,
        ];
        check_all_splits(Framing::ChunkPerMessage, stream.as_bytes(), &expected);
    }

    #[test]
    fn stamp_at_chunk_end_and_chunk_extensions() {
        // Digits running into the end of the chunk, upper-case hex, an extension, a trailer.
        let stream = format!("{HEAD}1B;x=y\r\nabcdefghijklmnopq ts=123456\r\n0\r\nX-T: 1\r\n\r\n");
        let expected = [
            Event::Headers { status: 200 },
            Event::Chunk,
            Event::Message {
                ts_us: Some(123456),
            },
            Event::End,
        ];
        check_all_splits(Framing::ChunkPerMessage, stream.as_bytes(), &expected);
    }

    #[test]
    fn sse_events_at_every_split() {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
        // Event 1 in one chunk; event 2 split over two chunks with two data lines; a comment;
        // event 3 has only an id (no data: not a message); event 4 uses CRLF line ends.
        let stream = format!(
            "{head}{}{}{}{}{}{}0\r\n\r\n",
            chunk("id: 1\ndata: ts=1000 xx\n\n"),
            chunk("id: 2\ndata: line one ts=20"),
            chunk("00\ndata:two\n\n"),
            chunk(": keepalive\n\n"),
            chunk("id: 3\n\n"),
            chunk("id: 4\r\ndata: ts=7\r\n\r\n"),
        );
        let expected = [
            Event::Headers { status: 200 },
            Event::Chunk,
            Event::Message { ts_us: Some(1000) },
            Event::Chunk,
            Event::Chunk,
            Event::Message { ts_us: Some(2000) },
            Event::Chunk,
            Event::Chunk,
            Event::Chunk,
            Event::Message { ts_us: Some(7) },
            Event::End,
        ];
        check_all_splits(Framing::Sse, stream.as_bytes(), &expected);
    }

    #[test]
    fn non_200_is_reported() {
        let (events, r) = run(
            Framing::ChunkPerMessage,
            &[b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"],
        );
        assert_eq!(r, Ok(()));
        assert_eq!(events, [Event::Headers { status: 404 }]);
    }

    #[test]
    fn malformed_streams_are_errors() {
        let bad_size = format!("{HEAD}zz\r\n");
        assert_eq!(
            run(Framing::ChunkPerMessage, &[bad_size.as_bytes()]).1,
            Err(ParseError::BadChunkSize)
        );
        let bad_end = format!("{HEAD}2\r\nabXY");
        assert_eq!(
            run(Framing::ChunkPerMessage, &[bad_end.as_bytes()]).1,
            Err(ParseError::BadChunkEnd)
        );
        let huge = format!("{HEAD}ffffffffff\r\n");
        assert_eq!(
            run(Framing::ChunkPerMessage, &[huge.as_bytes()]).1,
            Err(ParseError::BadChunkSize)
        );
        assert_eq!(
            run(Framing::ChunkPerMessage, &[b"garbage\r\n"]).1,
            Err(ParseError::BadStatusLine)
        );
    }

    #[test]
    fn latency_stamp_extraction() {
        assert_eq!(
            find_ts(b"ts=1764151234567890 xxxxx"),
            Some(1764151234567890)
        );
        assert_eq!(find_ts(b"Recvd msg #9: 'ts=5'<br/>"), Some(5));
        assert_eq!(find_ts(b"tts=12"), Some(12));
        assert_eq!(find_ts(b"ts=x ts=9"), Some(9));
        assert_eq!(find_ts(b"ts= 1"), None);
        assert_eq!(find_ts(b"no stamp"), None);
        assert_eq!(find_ts(b"ts="), None);
        assert_eq!(find_ts(b"ts=99999999999999999999999"), Some(u64::MAX));
    }
}
