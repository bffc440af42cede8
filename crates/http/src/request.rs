//! Request heads: status codes, errors, limits and [`parse_request`].

use std::fmt;

/// An HTTP status code. Only the codes comet sends have constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status(pub u16);

impl Status {
    pub const OK: Status = Status(200);
    pub const BAD_REQUEST: Status = Status(400);
    pub const UNAUTHORIZED: Status = Status(401);
    pub const FORBIDDEN: Status = Status(403);
    pub const NO_CONTENT: Status = Status(204);
    pub const UPGRADE_REQUIRED: Status = Status(426);
    pub const NOT_FOUND: Status = Status(404);
    pub const METHOD_NOT_ALLOWED: Status = Status(405);
    pub const REQUEST_TIMEOUT: Status = Status(408);
    pub const PAYLOAD_TOO_LARGE: Status = Status(413);
    pub const URI_TOO_LONG: Status = Status(414);
    pub const HEADERS_TOO_LARGE: Status = Status(431);
    pub const NOT_IMPLEMENTED: Status = Status(501);
    pub const SERVICE_UNAVAILABLE: Status = Status(503);

    /// The reason phrase for the status line; empty for codes comet never sends
    /// (the grammar allows an empty reason phrase).
    pub fn reason(self) -> &'static str {
        match self.0 {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            204 => "No Content",
            426 => "Upgrade Required",
            408 => "Request Timeout",
            413 => "Payload Too Large",
            414 => "URI Too Long",
            431 => "Request Header Fields Too Large",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            _ => "",
        }
    }
}

/// A request the server refuses: status + one-line reason for the text/plain body.
///
/// `allow` is set only for 405: the value of the `Allow` header that
/// [`error_response`](crate::error_response) then writes (e.g. `"GET, HEAD"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub status: Status,
    /// One line, no CR or LF: it becomes the body.
    pub reason: String,
    /// The `Allow` header value for a 405; `None` otherwise.
    pub allow: Option<&'static str>,
    /// Another header the answer carries: `WWW-Authenticate` for a 401,
    /// `Sec-WebSocket-Version` for a 426.
    pub header: Option<(&'static str, &'static str)>,
}

impl Error {
    /// An error without an `Allow` header.
    pub fn new(status: Status, reason: impl Into<String>) -> Error {
        let reason = reason.into();
        debug_assert!(!reason.contains(['\r', '\n']), "reason must be one line");
        Error {
            status,
            reason,
            allow: None,
            header: None,
        }
    }

    /// The error with another header (`WWW-Authenticate`, `Sec-WebSocket-Version`).
    pub fn with_header(self, name: &'static str, value: &'static str) -> Error {
        Error {
            header: Some((name, value)),
            ..self
        }
    }

    /// A 405 naming the methods the endpoint takes; `allow` is the header value.
    pub fn method_not_allowed(allow: &'static str, reason: impl Into<String>) -> Error {
        Error {
            allow: Some(allow),
            ..Error::new(Status::METHOD_NOT_ALLOWED, reason)
        }
    }

    fn bad(reason: &str) -> Error {
        Error::new(Status::BAD_REQUEST, reason)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status.0, self.reason)
    }
}

impl std::error::Error for Error {}

/// Size limits on what a client may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Request line + headers + final CRLF CRLF.
    pub header_bytes_max: usize,
    /// Header fields per request; values above [`HEADER_SLOTS`] count as [`HEADER_SLOTS`].
    pub headers_count_max: usize,
    /// Decoded request body (Content-Length or the sum of the chunks).
    pub body_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_bytes_max: 8192,
            headers_count_max: 64,
            body_bytes_max: 65536,
        }
    }
}

/// The header array httparse fills lives on the stack: 128 x 32 bytes = 4 KiB.
pub const HEADER_SLOTS: usize = 128;

/// Longest request target (path + query) accepted; longer is 414.
pub const URI_BYTES_MAX: usize = 2048;

/// What the server writes when [`Request::expect_continue`] is set and it wants the body.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    /// CORS preflight.
    Options,
    /// Any other method; routing answers 405 (known path) or 404.
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// How the request body is delimited (RFC 9112 section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// No body (also `Content-Length: 0`).
    None,
    /// Exactly this many bytes follow the head; always > 0 and <= `body_bytes_max`.
    Length(usize),
    /// Chunked: feed the bytes after the head to a [`ChunkedDecoder`](crate::ChunkedDecoder).
    Chunked,
}

/// A parsed request head. Byte fields borrow the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Method,
    /// The target before `?`, raw (no percent-decoding). An absolute-form target
    /// (`http://host/p`) is reduced to its path (`/p`).
    pub path: &'a [u8],
    /// The target after the first `?`, if there was one.
    pub query: Option<&'a [u8]>,
    pub version: Version,
    /// HTTP/1.1: true unless `Connection: close`; HTTP/1.0: only with `Connection: keep-alive`.
    pub keep_alive: bool,
    pub body: Body,
    /// Bytes of the head, including leading empty lines and the final CRLF CRLF:
    /// the body (or the next pipelined request) starts at `buf[head_len..]`.
    pub head_len: usize,
    /// The `Host` header's value, trimmed (required in HTTP/1.1, optional in HTTP/1.0).
    pub host: Option<&'a [u8]>,
    pub origin: Option<&'a [u8]>,
    pub last_event_id: Option<&'a [u8]>,
    pub authorization: Option<&'a [u8]>,
    /// `Idempotency-Key`: a publisher's name for one publish, so that a retried publish is
    /// delivered once (in a cluster on JetStream; ignored elsewhere).
    pub idempotency_key: Option<&'a [u8]>,
    /// True when an HTTP/1.1 client with a body sent `Expect: 100-continue`: it may
    /// wait (curl: 1 s) for [`CONTINUE`] before sending the body.
    pub expect_continue: bool,
    /// A WebSocket opening handshake (RFC 6455 4.2.1): `Upgrade: websocket` and a
    /// `Connection` list holding `upgrade`. The key and version are checked by the caller.
    pub websocket: bool,
    pub websocket_key: Option<&'a [u8]>,
    pub websocket_version: Option<&'a [u8]>,
}

pub enum Parsed<'a> {
    /// The head is not complete yet: read more and call again with all bytes so far.
    Partial,
    Complete(Request<'a>),
    /// Answer with [`error_response`](crate::error_response) and close.
    Invalid(Error),
}

/// Parse the head of one request from the bytes received so far.
///
/// The caller keeps the bytes of an incomplete head and calls again with more;
/// each call looks at no more than `limits.header_bytes_max` bytes, so a slow head
/// costs O(header_bytes_max) per read at most.
///
/// - `Partial` while the head is incomplete and `buf.len() <= header_bytes_max`.
/// - 431 when the head does not fit in `header_bytes_max` or has more than
///   `headers_count_max` fields; 414 when the target exceeds [`URI_BYTES_MAX`]
///   (noticed as soon as the partial target is longer).
/// - 400 for syntax errors, a missing or repeated `Host` in HTTP/1.1, repeated
///   `Origin` / `Last-Event-ID` / `Authorization`, and the body rules below.
/// - Body (RFC 9112 6.1-6.3): `Transfer-Encoding: chunked` is [`Body::Chunked`];
///   another coding is 501; TE together with Content-Length, TE in HTTP/1.0, or
///   `chunked` twice is 400. Content-Length must be digits, repeated values must
///   agree (`5, 5` is fine), larger than `body_bytes_max` is 413. GET and HEAD may
///   carry a body: the server skips it.
pub fn parse_request<'a>(buf: &'a [u8], limits: &Limits) -> Parsed<'a> {
    let mut headers = [httparse::EMPTY_HEADER; HEADER_SLOTS];
    let slots = limits.headers_count_max.min(HEADER_SLOTS);
    let window = &buf[..buf.len().min(limits.header_bytes_max)];
    let mut req = httparse::Request::new(&mut headers[..slots]);
    match req.parse(window) {
        Ok(httparse::Status::Complete(head_len)) => match build(&req, head_len, limits) {
            Ok(request) => Parsed::Complete(request),
            Err(err) => Parsed::Invalid(err),
        },
        Ok(httparse::Status::Partial) => {
            if partial_target_bytes(window) > URI_BYTES_MAX {
                Parsed::Invalid(uri_too_long())
            } else if buf.len() > limits.header_bytes_max {
                Parsed::Invalid(Error::new(
                    Status::HEADERS_TOO_LARGE,
                    format!("request head larger than {} bytes", limits.header_bytes_max),
                ))
            } else {
                Parsed::Partial
            }
        }
        Err(httparse::Error::TooManyHeaders) => Parsed::Invalid(Error::new(
            Status::HEADERS_TOO_LARGE,
            format!("more than {slots} header fields"),
        )),
        Err(err) => Parsed::Invalid(Error::bad(match err {
            httparse::Error::HeaderName => "invalid header name",
            httparse::Error::HeaderValue => "invalid header value",
            httparse::Error::Version => "invalid HTTP version",
            httparse::Error::NewLine => "malformed line ending",
            _ => "malformed request line",
        })),
    }
}

fn uri_too_long() -> Error {
    Error::new(
        Status::URI_TOO_LONG,
        format!("request target longer than {URI_BYTES_MAX} bytes"),
    )
}

/// Length of the request target seen so far in an incomplete head: from the first
/// space of the request line (after leading empty lines) to the next space or the
/// end of what arrived. Lets a huge target be refused as 414 rather than 431.
fn partial_target_bytes(window: &[u8]) -> usize {
    let start = window
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(window.len());
    let line = &window[start..];
    let line = &line[..memchr::memchr(b'\n', line).unwrap_or(line.len())];
    let Some(space) = memchr::memchr(b' ', line) else {
        return 0;
    };
    let target = &line[space + 1..];
    memchr::memchr(b' ', target).unwrap_or(target.len())
}

fn build<'a>(
    req: &httparse::Request<'_, 'a>,
    head_len: usize,
    limits: &Limits,
) -> Result<Request<'a>, Error> {
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("POST") => Method::Post,
        Some("OPTIONS") => Method::Options,
        _ => Method::Other,
    };
    let version = match req.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(Error::bad("invalid HTTP version")),
    };
    let target = req.path.unwrap_or("").as_bytes();
    if target.len() > URI_BYTES_MAX {
        return Err(uri_too_long());
    }
    let target = strip_scheme_and_authority(target);
    let (path, query) = match memchr::memchr(b'?', target) {
        Some(i) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    };

    let mut host_count = 0usize;
    let mut host = None;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut content_length: Option<usize> = None;
    let mut te_seen = false;
    let mut te_chunked_count = 0usize;
    let mut te_other = false;
    let mut expect_continue = false;
    let mut origin = None;
    let mut last_event_id = None;
    let mut authorization = None;
    let mut idempotency_key = None;
    let mut upgrade_websocket = false;
    let mut connection_upgrade = false;
    let mut websocket_key = None;
    let mut websocket_version = None;

    for header in req.headers.iter() {
        let name = header.name;
        let value = trim(header.value);
        if name.eq_ignore_ascii_case("host") {
            host_count += 1;
            host = Some(value);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in list(value) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
                connection_upgrade |= token.eq_ignore_ascii_case(b"upgrade");
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            for item in value.split(|&b| b == b',') {
                let length = parse_decimal(trim(item))
                    .ok_or_else(|| Error::bad("invalid content-length"))?;
                if content_length.is_some_and(|previous| previous != length) {
                    return Err(Error::bad("conflicting content-length values"));
                }
                content_length = Some(length);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            te_seen = true;
            for token in list(value) {
                if token.eq_ignore_ascii_case(b"chunked") {
                    te_chunked_count += 1;
                } else {
                    te_other = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("origin") {
            set_once(&mut origin, value, "duplicate origin header")?;
        } else if name.eq_ignore_ascii_case("last-event-id") {
            set_once(&mut last_event_id, value, "duplicate last-event-id header")?;
        } else if name.eq_ignore_ascii_case("authorization") {
            set_once(&mut authorization, value, "duplicate authorization header")?;
        } else if name.eq_ignore_ascii_case("idempotency-key") {
            set_once(
                &mut idempotency_key,
                value,
                "duplicate idempotency-key header",
            )?;
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade_websocket |= list(value).any(|t| t.eq_ignore_ascii_case(b"websocket"));
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            set_once(
                &mut websocket_key,
                value,
                "duplicate sec-websocket-key header",
            )?;
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            set_once(
                &mut websocket_version,
                value,
                "duplicate sec-websocket-version header",
            )?;
        }
    }

    if version == Version::Http11 && host_count == 0 {
        return Err(Error::bad("missing host header"));
    }
    if host_count > 1 {
        return Err(Error::bad("duplicate host header"));
    }

    let body = if te_seen {
        if version == Version::Http10 {
            return Err(Error::bad("transfer-encoding in an HTTP/1.0 request"));
        }
        if content_length.is_some() {
            return Err(Error::bad("both transfer-encoding and content-length"));
        }
        if te_other {
            return Err(Error::new(
                Status::NOT_IMPLEMENTED,
                "unsupported transfer-encoding",
            ));
        }
        if te_chunked_count != 1 {
            return Err(Error::bad("invalid transfer-encoding"));
        }
        Body::Chunked
    } else {
        match content_length {
            None | Some(0) => Body::None,
            Some(length) if length > limits.body_bytes_max => {
                return Err(Error::new(
                    Status::PAYLOAD_TOO_LARGE,
                    format!("request body larger than {} bytes", limits.body_bytes_max),
                ));
            }
            Some(length) => Body::Length(length),
        }
    };

    let keep_alive = match version {
        Version::Http11 => !close,
        Version::Http10 => keep_alive_token && !close,
    };

    Ok(Request {
        method,
        path,
        query,
        version,
        keep_alive,
        body,
        head_len,
        host,
        origin,
        last_event_id,
        authorization,
        idempotency_key,
        expect_continue: expect_continue && version == Version::Http11 && body != Body::None,
        websocket: upgrade_websocket && connection_upgrade,
        websocket_key,
        websocket_version,
    })
}

/// `http://host:8000/test/1?x` -> `/test/1?x`; `http://host` -> `/`; anything
/// else unchanged (RFC 9112 3.2.2: a server must accept the absolute form).
fn strip_scheme_and_authority(target: &[u8]) -> &[u8] {
    let rest = if starts_with_ignore_case(target, b"http://") {
        &target[7..]
    } else if starts_with_ignore_case(target, b"https://") {
        &target[8..]
    } else {
        return target;
    };
    match rest.iter().position(|&b| b == b'/' || b == b'?') {
        Some(i) if rest[i] == b'/' => &rest[i..],
        _ => b"/",
    }
}

fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes.len() >= prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn set_once<'a>(
    slot: &mut Option<&'a [u8]>,
    value: &'a [u8],
    duplicate: &str,
) -> Result<(), Error> {
    if slot.is_some() {
        return Err(Error::bad(duplicate));
    }
    *slot = Some(value);
    Ok(())
}

/// Strips optional whitespace (SP / HTAB) on both sides.
fn trim(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// The non-empty elements of a comma-separated header list, trimmed.
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|item| !item.is_empty())
}

/// 1*DIGIT without overflow; `None` for anything else.
fn parse_decimal(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0usize, |value, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        value.checked_mul(10)?.checked_add(usize::from(b - b'0'))
    })
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
