//! Incremental parser for one Server-Sent Events response: the status line and headers, the
//! body (chunked, or up to the close when not chunked), and the SSE blocks in it.
//!
//! Pure: bytes in, [`Item`]s out, however the bytes are split. Field handling follows the
//! EventSource rules that matter to a resuming client: a block is dispatched by a blank line,
//! so an `id:` counts as seen only once its block is complete (a connection cut inside a block
//! must resume from the previous id, as a browser does); `data:` lines join with `\n`; one space
//! after the colon is dropped; lines starting with `:` are comments (heartbeats).

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

/// Largest response head accepted.
pub const HEAD_MAX: usize = 16 * 1024;
/// Largest SSE line accepted (comet's messages are at most 64 KiB).
const LINE_MAX: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Head,
    /// Not chunked: every byte until the close is body.
    Identity,
    ChunkSize,
    ChunkExt,
    ChunkData,
    /// After the data: the CRLF (CR optional).
    ChunkDataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailer,
    End,
}

#[derive(Debug)]
pub struct Parser {
    state: State,
    head: Vec<u8>,
    chunk_left: u64,
    size_digits: u32,
    /// Bytes of the current trailer line (0 at its start).
    trailer_len: usize,
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
            chunk_left: 0,
            size_digits: 0,
            trailer_len: 0,
            line: Vec::new(),
            block: SseEvent::default(),
            block_has_field: false,
        }
    }

    /// Consumes `input`, appending what it completes to `out`. After an error the parser is
    /// unusable (the caller drops the connection).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<Item>) -> Result<(), ParseError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Head => {
                    // Look for the blank line across the boundary with what came before.
                    let from = self.head.len().saturating_sub(3);
                    self.head.extend_from_slice(&input[i..]);
                    let Some(at) = find(&self.head[from..], b"\r\n\r\n") else {
                        if self.head.len() > HEAD_MAX {
                            return Err(ParseError::BadHead);
                        }
                        return Ok(());
                    };
                    let head_len = from + at + 4;
                    let taken = head_len - (self.head.len() - (input.len() - i));
                    i += taken;
                    self.head.truncate(head_len);
                    let (status, chunked) = parse_head(&self.head)?;
                    self.head = Vec::new();
                    out.push(Item::Head { status });
                    if status != 200 {
                        self.state = State::End;
                        return Ok(());
                    }
                    self.state = if chunked {
                        State::ChunkSize
                    } else {
                        State::Identity
                    };
                }
                State::Identity => {
                    self.body(&input[i..], out)?;
                    i = input.len();
                }
                State::ChunkData => {
                    let n = (self.chunk_left.min((input.len() - i) as u64)) as usize;
                    self.body(&input[i..i + n], out)?;
                    i += n;
                    self.chunk_left -= n as u64;
                    if self.chunk_left == 0 {
                        self.state = State::ChunkDataEnd;
                    }
                }
                State::ChunkSize => {
                    let b = input[i];
                    i += 1;
                    match (b as char).to_digit(16) {
                        Some(d) => {
                            self.size_digits += 1;
                            if self.size_digits > 8 {
                                return Err(ParseError::BadChunk);
                            }
                            self.chunk_left = self.chunk_left * 16 + u64::from(d);
                        }
                        None if self.size_digits == 0 => return Err(ParseError::BadChunk),
                        None => match b {
                            b'\n' => self.chunk_size_done(),
                            b'\r' | b';' | b' ' | b'\t' => self.state = State::ChunkExt,
                            _ => return Err(ParseError::BadChunk),
                        },
                    }
                }
                State::ChunkExt => {
                    if input[i] == b'\n' {
                        self.chunk_size_done();
                    }
                    i += 1;
                }
                State::ChunkDataEnd => {
                    match input[i] {
                        b'\r' => {}
                        b'\n' => self.state = State::ChunkSize,
                        _ => return Err(ParseError::BadChunk),
                    }
                    i += 1;
                }
                State::Trailer => {
                    match input[i] {
                        b'\r' => {}
                        b'\n' if self.trailer_len == 0 => {
                            self.state = State::End;
                            out.push(Item::End);
                        }
                        b'\n' => self.trailer_len = 0,
                        _ => self.trailer_len += 1,
                    }
                    i += 1;
                }
                State::End => return Err(ParseError::AfterEnd),
            }
        }
        Ok(())
    }

    fn chunk_size_done(&mut self) {
        self.size_digits = 0;
        if self.chunk_left == 0 {
            self.state = State::Trailer;
            self.trailer_len = 0;
        } else {
            self.state = State::ChunkData;
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
            _ => return, // retry and unknown fields: ignored, as EventSource does
        }
        self.block_has_field = true;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Status and whether the body is chunked, from a complete head.
fn parse_head(head: &[u8]) -> Result<(u16, bool), ParseError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(ParseError::BadHead),
    }
    let chunked = response.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("chunked")
    });
    Ok((response.code.ok_or(ParseError::BadHead)?, chunked))
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
        // two-line message with CRLF line ends and no space after the colon, the final chunk.
        let stream = format!(
            "{HEAD}{}{}{}{}{}{}{}0\r\n\r\n",
            chunk("id: 1732600000000001\n\n"),
            chunk("id: 1732600000000002\nda"),
            chunk("ta: 7:1\n\n"),
            chunk(":\n\n"),
            chunk("event: gap\ndata: {\"gap\":[7]}\n\n"),
            chunk("id:1732600000000009\r\ndata:7:5\r\ndata: second\r\n\r\n"),
            chunk("retry: 10\n\n"),
        );
        let expected = [
            Item::Head { status: 200 },
            event(Some("1732600000000001"), "", None),
            event(Some("1732600000000002"), "", Some("7:1")),
            Item::Comment,
            event(None, "gap", Some("{\"gap\":[7]}")),
            event(Some("1732600000000009"), "", Some("7:5\nsecond")),
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
