//! Responses: stream heads, message framing, plain and error responses.
//!
//! Every function appends to the caller's `Vec<u8>`; nothing else is allocated.
//! A message fanned out to many connections is framed once and the bytes shared.

use crate::request::{Error, Status, Version};

/// Streaming response formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The 2008 seed's format: text/html; charset=utf-8, Transfer-Encoding: chunked,
    /// one chunk per message: `Recvd msg #N: '<msg>'<br/>`, the message
    /// HTML-escaped (`& < > " '`) so that it cannot inject markup.
    Chunked,
    /// Same text for an HTTP/1.0 client: no chunked encoding, body delimited by close.
    Raw,
    /// Server-Sent Events (text/event-stream), one chunk per event (see
    /// [`frame_event`](crate::frame_event)).
    Sse,
    /// Server-Sent Events for an HTTP/1.0 client: no chunked encoding.
    SseRaw,
    /// WebSocket: one text frame per event, JSON (see [`frame_event`](crate::frame_event)).
    Ws,
    /// Long-poll: one JSON response per poll (see [`poll_body`](crate::poll_body)).
    Poll,
}

impl Format {
    /// `sse`: the request was for `/events/...`.
    pub fn for_request(sse: bool, version: Version) -> Format {
        match (sse, version) {
            (false, Version::Http11) => Format::Chunked,
            (false, Version::Http10) => Format::Raw,
            (true, Version::Http11) => Format::Sse,
            (true, Version::Http10) => Format::SseRaw,
        }
    }

    /// Framed with chunked transfer coding (HTTP/1.1); otherwise delimited by close.
    pub fn is_chunked(self) -> bool {
        matches!(self, Format::Chunked | Format::Sse)
    }

    fn content_type(self) -> &'static [u8] {
        match self {
            Format::Chunked | Format::Raw => b"text/html; charset=utf-8",
            Format::Sse | Format::SseRaw => b"text/event-stream",
            Format::Ws | Format::Poll => unreachable!("no stream head for {self:?}"),
        }
    }
}

/// The head of a stream. Chunked formats: `HTTP/1.1 200 OK` with
/// `Transfer-Encoding: chunked`; raw formats: `HTTP/1.0 200 OK`. Both: `Connection: close`
/// (a stream is the last response on its connection: comet closes it after the stream's end,
/// and says so, RFC 9112 section 9.6), Content-Type, `Cache-Control: no-cache`,
/// `X-Accel-Buffering: no` (nginx must not buffer the stream),
/// `X-Content-Type-Options: nosniff`, and `Access-Control-Allow-Origin: allow_origin`
/// (with `Vary: Origin` unless it is `*`). For HEAD the caller sends only this head.
/// Not for [`Format::Ws`] (its head is the handshake) or [`Format::Poll`].
///
/// Panics if `allow_origin` contains CR or LF (header injection).
pub fn stream_head(out: &mut Vec<u8>, format: Format, allow_origin: &[u8]) {
    assert!(!allow_origin.contains(&b'\r') && !allow_origin.contains(&b'\n'));
    out.extend_from_slice(if format.is_chunked() {
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
    } else {
        b"HTTP/1.0 200 OK\r\nConnection: close\r\n"
    });
    out.extend_from_slice(b"Content-Type: ");
    out.extend_from_slice(format.content_type());
    out.extend_from_slice(
        b"\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n\
          X-Content-Type-Options: nosniff\r\n",
    );
    push_allow_origin(out, allow_origin);
    out.extend_from_slice(b"\r\n");
}

/// `Access-Control-Allow-Origin: <origin>\r\n`, and `Vary: Origin\r\n` when the value
/// depends on the request's origin (anything but `*`). Nothing for [`NO_CORS`].
pub(crate) fn push_allow_origin(out: &mut Vec<u8>, allow_origin: &[u8]) {
    assert!(!allow_origin.contains(&b'\r') && !allow_origin.contains(&b'\n'));
    if allow_origin == NO_CORS {
        return;
    }
    out.extend_from_slice(b"Access-Control-Allow-Origin: ");
    out.extend_from_slice(allow_origin);
    out.extend_from_slice(b"\r\n");
    if allow_origin != b"*" {
        out.extend_from_slice(b"Vary: Origin\r\n");
    }
}

/// The `allow_origin` of an answer that carries no CORS header at all: the publish listener's,
/// which no web page may read.
pub const NO_CORS: &[u8] = b"";

const HTML_PREFIX: &[u8] = b"Recvd msg #";
const HTML_MIDDLE: &[u8] = b": '";
const HTML_SUFFIX: &[u8] = b"'<br/>";

/// Append message number `n` in the seed's format ([`Format::Chunked`] or
/// [`Format::Raw`]; the other formats carry positions: [`frame_event`](crate::frame_event)).
/// Chunk sizes are computed up front from the escaped length, so the bytes are written once.
pub fn frame_message(out: &mut Vec<u8>, format: Format, n: u64, msg: &[u8]) {
    assert!(
        matches!(format, Format::Chunked | Format::Raw),
        "{format:?}"
    );
    let payload_len = HTML_PREFIX.len()
        + decimal_len(n)
        + HTML_MIDDLE.len()
        + html_escaped_len(msg)
        + HTML_SUFFIX.len();
    if format.is_chunked() {
        push_hex(out, payload_len);
        out.extend_from_slice(b"\r\n");
    }
    let payload_start = out.len();
    out.extend_from_slice(HTML_PREFIX);
    push_decimal(out, n);
    out.extend_from_slice(HTML_MIDDLE);
    push_html_escaped(out, msg);
    out.extend_from_slice(HTML_SUFFIX);
    assert_eq!(out.len() - payload_start, payload_len, "framed length");
    if format.is_chunked() {
        out.extend_from_slice(b"\r\n");
    }
}

/// Append the end of a stream: `0\r\n\r\n` for chunked formats, nothing for raw
/// ones (the caller closes the connection).
pub fn stream_end(out: &mut Vec<u8>, format: Format) {
    if format.is_chunked() {
        out.extend_from_slice(STREAM_END);
    }
}

/// The end of a chunked stream: the last (empty) chunk.
pub const STREAM_END: &[u8] = b"0\r\n\r\n";

/// A complete non-streaming HTTP/1.1 response with Content-Length: status line,
/// Content-Type, Content-Length, `Connection: close` if `close`,
/// `Access-Control-Allow-Origin: *`, `X-Content-Type-Options: nosniff`, then the
/// body unless `head_only` (Content-Length is still the body's length).
/// For a 405 use [`error_response`], which adds `Allow`.
pub fn response(
    out: &mut Vec<u8>,
    status: Status,
    content_type: &str,
    body: &[u8],
    close: bool,
    head_only: bool,
) {
    response_for(out, status, content_type, body, close, head_only, b"*");
}

/// [`response`] with `Access-Control-Allow-Origin: allow_origin` (and `Vary: Origin`
/// unless it is `*`; no CORS header for [`NO_CORS`]).
pub fn response_for(
    out: &mut Vec<u8>,
    status: Status,
    content_type: &str,
    body: &[u8],
    close: bool,
    head_only: bool,
    allow_origin: &[u8],
) {
    push_head(
        out,
        status,
        content_type,
        body.len(),
        close,
        None,
        allow_origin,
    );
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// `503 Service Unavailable` with `Retry-After: <retry_after_s>` and `reason` as text/plain:
/// a request the server could not carry out now, to be sent again later. Keeps the connection
/// unless `close`.
pub fn unavailable_response(out: &mut Vec<u8>, reason: &str, retry_after_s: &str, close: bool) {
    push_head(
        out,
        Status::SERVICE_UNAVAILABLE,
        "text/plain; charset=utf-8",
        reason.len() + 1,
        close,
        Some(("Retry-After", retry_after_s)),
        NO_CORS,
    );
    out.extend_from_slice(reason.as_bytes());
    out.push(b'\n');
}

/// The error as a text/plain response: body = reason + `\n`, `Connection: close`
/// (the server closes after errors), and `Allow: <err.allow>` when set (405), and
/// the error's extra header when set (`WWW-Authenticate`, `Sec-WebSocket-Version`).
pub fn error_response(out: &mut Vec<u8>, err: &Error, head_only: bool) {
    error_response_for(out, err, head_only, b"*");
}

/// [`error_response`] with `Access-Control-Allow-Origin: allow_origin`, so that a page
/// on another origin can read the status (no CORS header for [`NO_CORS`]).
pub fn error_response_for(out: &mut Vec<u8>, err: &Error, head_only: bool, allow_origin: &[u8]) {
    let body_len = err.reason.len() + 1;
    let allow = err.allow.map(|value| ("Allow", value));
    push_head(
        out,
        err.status,
        "text/plain; charset=utf-8",
        body_len,
        true,
        allow.or(err.header),
        allow_origin,
    );
    if !head_only {
        out.extend_from_slice(err.reason.as_bytes());
        out.push(b'\n');
    }
}

/// The answer to a CORS preflight (`OPTIONS`): 204, the methods and request headers a
/// subscriber may use, cached for 10 minutes; then close.
pub fn preflight_response(out: &mut Vec<u8>, allow_origin: &[u8]) {
    out.extend_from_slice(
        b"HTTP/1.1 204 No Content\r\nAccess-Control-Allow-Methods: GET\r\n\
          Access-Control-Allow-Headers: Authorization, Last-Event-ID\r\n\
          Access-Control-Max-Age: 600\r\nConnection: close\r\n",
    );
    push_allow_origin(out, allow_origin);
    out.extend_from_slice(b"\r\n");
}

fn push_head(
    out: &mut Vec<u8>,
    status: Status,
    content_type: &str,
    content_len: usize,
    close: bool,
    header: Option<(&str, &str)>,
    allow_origin: &[u8],
) {
    let no_line_break = |s: &str| !s.contains(['\r', '\n']);
    assert!(
        no_line_break(content_type)
            && header.is_none_or(|(name, value)| no_line_break(name) && no_line_break(value))
    );
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status.0));
    out.push(b' ');
    out.extend_from_slice(status.reason().as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    push_decimal(out, content_len as u64);
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    if let Some((name, value)) = header {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    push_allow_origin(out, allow_origin);
    out.extend_from_slice(b"X-Content-Type-Options: nosniff\r\n\r\n");
}

/// The replacement for a byte HTML must not see raw, if any.
fn html_entity(byte: u8) -> Option<&'static [u8]> {
    match byte {
        b'&' => Some(b"&amp;"),
        b'<' => Some(b"&lt;"),
        b'>' => Some(b"&gt;"),
        b'"' => Some(b"&quot;"),
        b'\'' => Some(b"&#39;"),
        _ => None,
    }
}

fn html_escaped_len(msg: &[u8]) -> usize {
    msg.iter()
        .map(|&b| html_entity(b).map_or(1, <[u8]>::len))
        .sum()
}

fn push_html_escaped(out: &mut Vec<u8>, msg: &[u8]) {
    let mut plain_start = 0;
    for (index, &byte) in msg.iter().enumerate() {
        if let Some(entity) = html_entity(byte) {
            out.extend_from_slice(&msg[plain_start..index]);
            out.extend_from_slice(entity);
            plain_start = index + 1;
        }
    }
    out.extend_from_slice(&msg[plain_start..]);
}

/// The lines of a message for SSE `data:` fields: split on CRLF, LF or CR
/// (the three line ends an SSE parser accepts); at least one line.
pub(crate) fn sse_lines(msg: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(msg);
    std::iter::from_fn(move || {
        let text = rest?;
        match memchr::memchr2(b'\r', b'\n', text) {
            None => {
                rest = None;
                Some(text)
            }
            Some(end) => {
                let skip = if text[end..].starts_with(b"\r\n") {
                    2
                } else {
                    1
                };
                rest = Some(&text[end + skip..]);
                Some(&text[..end])
            }
        }
    })
}

pub(crate) fn decimal_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

pub(crate) fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20]; // u64::MAX has 20 digits
    let mut start = digits.len();
    let mut rest = n;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Lowercase hex without leading zeros, as chunk sizes are usually written.
pub(crate) fn push_hex(out: &mut Vec<u8>, n: usize) {
    let mut digits = [0u8; 16]; // usize::MAX on 64 bits has 16 hex digits
    let mut start = digits.len();
    let mut rest = n;
    loop {
        start -= 1;
        digits[start] = b"0123456789abcdef"[rest % 16];
        rest /= 16;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(format: Format, n: u64, msg: &[u8]) -> String {
        let mut out = Vec::new();
        frame_message(&mut out, format, n, msg);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn for_request() {
        assert_eq!(Format::for_request(false, Version::Http11), Format::Chunked);
        assert_eq!(Format::for_request(false, Version::Http10), Format::Raw);
        assert_eq!(Format::for_request(true, Version::Http11), Format::Sse);
        assert_eq!(Format::for_request(true, Version::Http10), Format::SseRaw);
    }

    #[test]
    fn chunked_message_bytes() {
        // "Recvd msg #1: 'Hello World'<br/>" is 11 + 1 + 3 + 11 + 6 = 32 = 0x20 bytes.
        assert_eq!(
            framed(Format::Chunked, 1, b"Hello World"),
            "20\r\nRecvd msg #1: 'Hello World'<br/>\r\n"
        );
        assert_eq!(
            framed(Format::Chunked, 0, b""),
            "15\r\nRecvd msg #0: ''<br/>\r\n"
        );
        assert_eq!(
            framed(Format::Raw, 1, b"Hello World"),
            "Recvd msg #1: 'Hello World'<br/>"
        );
        let long = framed(Format::Chunked, u64::MAX, &[b'x'; 300]);
        // 11 + 20 + 3 + 300 + 6 = 340 = 0x154
        assert!(long.starts_with("154\r\nRecvd msg #18446744073709551615: 'xxx"));
        assert!(long.ends_with("xxx'<br/>\r\n"));
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            framed(Format::Raw, 7, b"<script>alert(\"x\" & 'y')</script>"),
            "Recvd msg #7: '&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;'<br/>"
        );
        let chunk = framed(Format::Chunked, 7, b"a<b");
        // 11 + 1 + 3 + 6 + 6 = 27 = 0x1b
        assert_eq!(chunk, "1b\r\nRecvd msg #7: 'a&lt;b'<br/>\r\n");
    }

    #[test]
    fn stream_heads() {
        let head = |format| {
            let mut out = Vec::new();
            stream_head(&mut out, format, b"*");
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            head(Format::Chunked),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\
             Content-Type: text/html; charset=utf-8\r\nCache-Control: no-cache\r\n\
             X-Accel-Buffering: no\r\nX-Content-Type-Options: nosniff\r\n\
             Access-Control-Allow-Origin: *\r\n\r\n"
        );
        assert_eq!(
            head(Format::SseRaw),
            "HTTP/1.0 200 OK\r\nConnection: close\r\n\
             Content-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
             X-Accel-Buffering: no\r\nX-Content-Type-Options: nosniff\r\n\
             Access-Control-Allow-Origin: *\r\n\r\n"
        );
        assert!(head(Format::Sse).starts_with("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"));
        assert!(head(Format::Sse).contains("\r\nContent-Type: text/event-stream\r\n"));
        assert!(head(Format::Raw).starts_with("HTTP/1.0 200 OK\r\nConnection: close\r\n"));
        let mut out = Vec::new();
        stream_head(&mut out, Format::Sse, b"https://app.example");
        assert!(out.ends_with(
            b"Access-Control-Allow-Origin: https://app.example\r\nVary: Origin\r\n\r\n"
        ));
    }

    #[test]
    #[should_panic]
    fn stream_head_refuses_header_injection() {
        stream_head(&mut Vec::new(), Format::Sse, b"*\r\nSet-Cookie: x");
    }

    #[test]
    fn stream_ends() {
        for (format, end) in [
            (Format::Chunked, &b"0\r\n\r\n"[..]),
            (Format::Sse, b"0\r\n\r\n"),
            (Format::Raw, b""),
            (Format::SseRaw, b""),
        ] {
            let mut out = b"x".to_vec();
            stream_end(&mut out, format);
            assert_eq!(&out[1..], end);
        }
    }

    #[test]
    fn plain_response() {
        let mut out = Vec::new();
        response(
            &mut out,
            Status::OK,
            "text/plain; version=0.0.4",
            b"up 1\n",
            false,
            false,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: 5\r\n\
              Access-Control-Allow-Origin: *\r\nX-Content-Type-Options: nosniff\r\n\r\nup 1\n"
        );
        let mut out = Vec::new();
        response(&mut out, Status::OK, "text/plain", b"up 1\n", true, true);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\
              Connection: close\r\nAccess-Control-Allow-Origin: *\r\n\
              X-Content-Type-Options: nosniff\r\n\r\n"
        );
    }

    #[test]
    fn error_responses() {
        let mut out = Vec::new();
        error_response(
            &mut out,
            &Error::new(Status::NOT_FOUND, "no such endpoint: /x"),
            false,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n\
              Content-Length: 21\r\nConnection: close\r\nAccess-Control-Allow-Origin: *\r\n\
              X-Content-Type-Options: nosniff\r\n\r\nno such endpoint: /x\n"
        );
        let err = Error::method_not_allowed("GET, HEAD", "method not allowed: use GET or HEAD");
        let mut out = Vec::new();
        error_response(&mut out, &err, true);
        assert_eq!(
            out,
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\n\
              Content-Length: 36\r\nConnection: close\r\nAllow: GET, HEAD\r\n\
              Access-Control-Allow-Origin: *\r\nX-Content-Type-Options: nosniff\r\n\r\n"
        );
    }

    #[test]
    fn no_cors_answers_carry_no_cors_header() {
        let mut out = Vec::new();
        response_for(
            &mut out,
            Status::OK,
            "text/plain",
            b"ok\n",
            true,
            false,
            NO_CORS,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\
              Connection: close\r\nX-Content-Type-Options: nosniff\r\n\r\nok\n"
        );
        let mut out = Vec::new();
        let err = Error::new(Status::FORBIDDEN, "no").with_header("WWW-Authenticate", "Bearer");
        error_response_for(&mut out, &err, false, NO_CORS);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{text}");
        assert!(text.contains("\r\nWWW-Authenticate: Bearer\r\n"), "{text}");
        assert!(
            !text.contains("Access-Control") && !text.contains("Vary"),
            "{text}"
        );
    }

    #[test]
    fn every_status_has_a_status_line() {
        for status in [
            Status::BAD_REQUEST,
            Status::UNAUTHORIZED,
            Status::FORBIDDEN,
            Status::REQUEST_TIMEOUT,
            Status::PAYLOAD_TOO_LARGE,
            Status::URI_TOO_LONG,
            Status::HEADERS_TOO_LARGE,
            Status::NOT_IMPLEMENTED,
            Status::SERVICE_UNAVAILABLE,
        ] {
            let mut out = Vec::new();
            error_response(&mut out, &Error::new(status, "r"), false);
            let line = format!("HTTP/1.1 {} {}\r\n", status.0, status.reason());
            assert!(out.starts_with(line.as_bytes()));
            assert!(!status.reason().is_empty());
            assert!(out.ends_with(b"\r\n\r\nr\n"));
        }
    }

    #[test]
    fn number_helpers() {
        for n in [0u64, 9, 10, 99, 100, 12345, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
            assert_eq!(decimal_len(n), out.len());
        }
        for n in [0usize, 15, 16, 255, 0x1234, usize::MAX] {
            let mut out = Vec::new();
            push_hex(&mut out, n);
            assert_eq!(out, format!("{n:x}").as_bytes());
        }
    }
}
