//! Incremental parser for one Server-Sent Events response: the status line and headers, the
//! body (chunked, or up to the close when not chunked), and the SSE blocks in it.
//!
//! Pure: bytes in, [`Item`]s out, however the bytes are split. Field handling follows the
//! EventSource rules that matter to a resuming client: a block is dispatched by a blank line,
//! so an `id:` counts as seen only once its block is complete (a connection cut inside a block
//! must resume from the previous id, as a browser does); `data:` lines join with `\n`; one space
//! after the colon is dropped; lines starting with `:` are comments (heartbeats). The head and
//! the chunked coding are read with `tools_common`; the SSE lines here.

use tools_common::chunked::{ChunkError, Dechunker, Piece};
use tools_common::response::Head;

/// What the parser reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// The header block is complete. On a status other than 200 the caller should stop.
    Head { status: u16 },
    /// One complete block with at least one field.
    Event(SseEvent),
    /// A comment line (`:` ...), what comet sends as a heartbeat.
    Comment,
    /// The terminating chunk arrived: the server ended the stream gracefully.
    End,
    /// A `retry:` field: the reconnection time in ms, as EventSource keeps it.
    Retry(u64),
}

/// One dispatched SSE block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The block's `id:` field (the last one if several); a position in comet's terms.
    pub id: Option<String>,
    /// The `event:` field; empty for an ordinary message.
    pub event: String,
    /// The `data:` lines joined with `\n`; None when the block had none (a position alone).
    pub data: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The header block is malformed or over [`HEAD_MAX`].
    BadHead,
    BadChunk,
    /// Bytes after the terminating chunk.
    AfterEnd,
}

impl From<ChunkError> for ParseError {
    fn from(e: ChunkError) -> Self {
        match e {
            ChunkError::BadSize | ChunkError::BadEnd => ParseError::BadChunk,
            ChunkError::AfterEnd => ParseError::AfterEnd,
        }
    }
}

/// Largest response head accepted.
pub const HEAD_MAX: usize = 16 * 1024;
/// Largest SSE line accepted (comet's messages are at most 64 KiB).
const LINE_MAX: usize = 1 << 20;

/// Head --complete head, 200--> Chunked or Identity; --other status--> Refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Head,
    /// Not chunked: every byte until the close is body.
    Identity,
    Chunked,
    /// The answer was not 200: the caller stops.
    Refused,
}

#[derive(Debug)]
pub struct Parser {
    state: State,
    /// The head so far, while it is incomplete.
    head: Vec<u8>,
    chunks: Dechunker,
    line: Vec<u8>,
    block: SseEvent,
    block_has_field: bool,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    pub fn new() -> Self {
        Parser {
            state: State::Head,
            head: Vec::new(),
            chunks: Dechunker::new(),
            line: Vec::new(),
            block: SseEvent::default(),
            block_has_field: false,
        }
    }

    /// Consumes `input`, appending what it completes to `out`. After an error the parser is
    /// unusable (the caller drops the connection).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<Item>) -> Result<(), ParseError> {
        let mut rest = input;
        if self.state == State::Head {
            let before = self.head.len();
            self.head.extend_from_slice(input);
            let head = match Head::parse(&self.head) {
                Ok(Some(head)) => head,
                Ok(None) if self.head.len() <= HEAD_MAX => return Ok(()),
                _ => return Err(ParseError::BadHead),
            };
            rest = &input[head.len - before..];
            self.head = Vec::new();
            out.push(Item::Head {
                status: head.status,
            });
            self.state = match head.status {
                200 if head.chunked => State::Chunked,
                200 => State::Identity,
                _ => State::Refused,
            };
        }
        match self.state {
            State::Head | State::Refused => Ok(()),
            State::Identity => self.body(rest, out),
            State::Chunked => loop {
                let (used, piece) = self.chunks.decode(rest)?;
                rest = &rest[used..];
                match piece {
                    None => return Ok(()),
                    Some(Piece::Data(data)) => self.body(data, out)?,
                    Some(Piece::End) => out.push(Item::End),
                    Some(Piece::ChunkStart | Piece::ChunkEnd) => {}
                }
            },
        }
    }

    /// Body bytes: SSE lines.
    fn body(&mut self, data: &[u8], out: &mut Vec<Item>) -> Result<(), ParseError> {
        let mut rest = data;
        while let Some(at) = rest.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&rest[..at]);
            rest = &rest[at + 1..];
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.sse_line(&line, out);
            line.clear();
            self.line = line;
        }
        self.line.extend_from_slice(rest);
        if self.line.len() > LINE_MAX {
            return Err(ParseError::BadChunk);
        }
        Ok(())
    }

    fn sse_line(&mut self, line: &[u8], out: &mut Vec<Item>) {
        if line.is_empty() {
            if std::mem::take(&mut self.block_has_field) {
                out.push(Item::Event(std::mem::take(&mut self.block)));
            }
            return;
        }
        if line[0] == b':' {
            out.push(Item::Comment);
            return;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match name {
            b"id" if !value.contains('\0') => self.block.id = Some(value.into_owned()),
            b"event" => self.block.event = value.into_owned(),
            b"data" => match &mut self.block.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(&value);
                }
                None => self.block.data = Some(value.into_owned()),
            },
            // EventSource takes a value of ASCII digits only; it dispatches nothing.
            b"retry" => {
                if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                    if let Ok(ms) = value.parse() {
                        out.push(Item::Retry(ms));
                    }
                }
                return;
            }
            _ => return, // unknown fields: ignored, as EventSource does
        }
        self.block_has_field = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nCache-Control: no-cache\r\n\r\n";

    fn chunk(data: &str) -> String {
        format!("{:x}\r\n{}\r\n", data.len(), data)
    }

    fn run(parts: &[&[u8]]) -> (Vec<Item>, Result<(), ParseError>) {
        let mut p = Parser::new();
        let mut items = Vec::new();
        for part in parts {
            if let Err(e) = p.feed(part, &mut items) {
                return (items, Err(e));
            }
        }
        (items, Ok(()))
    }

    fn event(id: Option<&str>, event: &str, data: Option<&str>) -> Item {
        Item::Event(SseEvent {
            id: id.map(str::to_string),
            event: event.to_string(),
            data: data.map(str::to_string),
        })
    }

    /// The same items whole, split in two at every byte, in three at every pair of bytes, and
    /// one byte at a time.
    fn check_all_splits(stream: &[u8], expected: &[Item]) {
        let (whole, r) = run(&[stream]);
        assert_eq!(r, Ok(()));
        assert_eq!(whole, expected);
        for i in 0..=stream.len() {
            let (items, r) = run(&[&stream[..i], &stream[i..]]);
            assert_eq!(r, Ok(()), "split at {i}");
            assert_eq!(items, expected, "split at {i}");
        }
        for i in (0..=stream.len()).step_by(3) {
            for j in i..=stream.len() {
                let (items, r) = run(&[&stream[..i], &stream[i..j], &stream[j..]]);
                assert_eq!(r, Ok(()), "split at {i},{j}");
                assert_eq!(items, expected, "split at {i},{j}");
            }
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(run(&bytes), (expected.to_vec(), Ok(())));
    }

    #[test]
    fn comet_stream_at_every_split() {
        // The position line, a message split across chunks, a heartbeat, a gap notice, a
        // two-line message with CRLF line ends and no space after the colon, `retry:` fields,
        // the final chunk.
        let stream = format!(
            "{HEAD}{}{}{}{}{}{}{}0\r\n\r\n",
            chunk("id: 1732600000000001\n\n"),
            chunk("id: 1732600000000002\nda"),
            chunk("ta: 7:1\n\n"),
            chunk(":\n\n"),
            chunk("event: gap\ndata: {\"gap\":[7]}\n\n"),
            chunk("id:1732600000000009\r\ndata:7:5\r\ndata: second\r\n\r\n"),
            chunk("retry: 10\n\nretry: 5s\n\n"),
        );
        let expected = [
            Item::Head { status: 200 },
            event(Some("1732600000000001"), "", None),
            event(Some("1732600000000002"), "", Some("7:1")),
            Item::Comment,
            event(None, "gap", Some("{\"gap\":[7]}")),
            event(Some("1732600000000009"), "", Some("7:5\nsecond")),
            // A reconnection time; one that is not all digits is ignored, as EventSource does.
            Item::Retry(10),
            Item::End,
        ];
        check_all_splits(stream.as_bytes(), &expected);
    }

    #[test]
    fn not_chunked_and_chunk_extensions() {
        let plain = "HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\nid: 5\ndata: x\n\n";
        check_all_splits(
            plain.as_bytes(),
            &[Item::Head { status: 200 }, event(Some("5"), "", Some("x"))],
        );
        // Upper-case hex, an extension, a field with no colon, a trailer.
        let body = "id: 9\ndata\n\n";
        assert_eq!(body.len(), 0xC);
        let ext = format!("{HEAD}C;name=v\r\n{body}\r\n0\r\nX-Trailer: 1\r\n\r\n");
        check_all_splits(
            ext.as_bytes(),
            &[
                Item::Head { status: 200 },
                event(Some("9"), "", Some("")),
                Item::End,
            ],
        );
    }

    #[test]
    fn incomplete_block_is_not_dispatched() {
        // A connection cut after `id:` but before the blank line: no event, so the client
        // resumes from the previous id.
        let stream = format!("{HEAD}{}", chunk("id: 1\ndata: 1:1\n\nid: 2\ndata: 1:2\n"));
        let (items, r) = run(&[stream.as_bytes()]);
        assert_eq!(r, Ok(()));
        assert_eq!(
            items,
            [
                Item::Head { status: 200 },
                event(Some("1"), "", Some("1:1"))
            ]
        );
    }

    #[test]
    fn errors_and_other_statuses() {
        let (items, r) = run(&[b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Length: 4\r\n\r\nno\r\n"]);
        assert_eq!(r, Ok(()));
        assert_eq!(items, [Item::Head { status: 401 }]);
        assert_eq!(run(&[b"garbage\r\n\r\n"]).1, Err(ParseError::BadHead));
        let bad = format!("{HEAD}zz\r\n");
        assert_eq!(run(&[bad.as_bytes()]).1, Err(ParseError::BadChunk));
        let huge = format!("{HEAD}fffffffff\r\n");
        assert_eq!(run(&[huge.as_bytes()]).1, Err(ParseError::BadChunk));
        let after = format!("{HEAD}0\r\n\r\nx");
        assert_eq!(run(&[after.as_bytes()]).1, Err(ParseError::AfterEnd));
        let long_head = vec![b'x'; HEAD_MAX + 10];
        assert_eq!(run(&[&long_head]).1, Err(ParseError::BadHead));
    }
}
