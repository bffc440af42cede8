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
mod tests {
    use super::*;

    fn parse(buf: &[u8]) -> Parsed<'_> {
        parse_request(buf, &Limits::default())
    }

    fn complete(buf: &[u8]) -> Request<'_> {
        match parse(buf) {
            Parsed::Complete(request) => request,
            Parsed::Partial => panic!("partial: {:?}", String::from_utf8_lossy(buf)),
            Parsed::Invalid(err) => panic!("invalid: {err}"),
        }
    }

    fn invalid(buf: &[u8]) -> Error {
        invalid_with(buf, &Limits::default())
    }

    fn invalid_with(buf: &[u8], limits: &Limits) -> Error {
        match parse_request(buf, limits) {
            Parsed::Invalid(err) => err,
            Parsed::Partial => panic!("partial"),
            Parsed::Complete(request) => panic!("complete: {request:?}"),
        }
    }

    #[test]
    fn status_reasons() {
        assert_eq!(Status::OK.reason(), "OK");
        assert_eq!(Status::HEADERS_TOO_LARGE.0, 431);
        assert_eq!(
            Status::HEADERS_TOO_LARGE.reason(),
            "Request Header Fields Too Large"
        );
        assert_eq!(Status::SERVICE_UNAVAILABLE.reason(), "Service Unavailable");
        assert_eq!(Status(299).reason(), "");
    }

    #[test]
    fn simple_get() {
        let buf = b"GET /test/42?x=1 HTTP/1.1\r\nHost: a\r\nOrigin: https://x.example\r\n\r\n";
        let request = complete(buf);
        assert_eq!(request.method, Method::Get);
        assert_eq!(request.path, b"/test/42");
        assert_eq!(request.query, Some(&b"x=1"[..]));
        assert_eq!(request.version, Version::Http11);
        assert!(request.keep_alive);
        assert_eq!(request.body, Body::None);
        assert_eq!(request.head_len, buf.len());
        assert_eq!(request.origin, Some(&b"https://x.example"[..]));
        assert_eq!(request.last_event_id, None);
        assert_eq!(request.authorization, None);
        assert!(!request.expect_continue);
    }

    #[test]
    fn methods() {
        let method =
            |m: &str| complete(format!("{m} / HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()).method;
        assert_eq!(method("GET"), Method::Get);
        assert_eq!(method("HEAD"), Method::Head);
        assert_eq!(method("POST"), Method::Post);
        assert_eq!(method("PUT"), Method::Other);
        assert_eq!(method("get"), Method::Other, "methods are case-sensitive");
    }

    #[test]
    fn empty_query_and_absolute_form() {
        let request = complete(b"GET /events/1? HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(request.path, b"/events/1");
        assert_eq!(request.query, Some(&b""[..]));
        let request = complete(b"GET http://h:8000/test/1?a HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(request.path, b"/test/1");
        assert_eq!(request.query, Some(&b"a"[..]));
        let request = complete(b"GET HTTP://h HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(request.path, b"/");
        let request = complete(b"GET https://h?q HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!((request.path, request.query), (&b"/"[..], None));
    }

    #[test]
    fn header_fields_exposed_and_trimmed() {
        let request = complete(
            b"GET /events/1 HTTP/1.1\r\nhost: a\r\nLAST-EVENT-ID:  17 \r\nAuthorization: Bearer t\r\n\r\n",
        );
        assert_eq!(request.last_event_id, Some(&b"17"[..]));
        assert_eq!(request.authorization, Some(&b"Bearer t"[..]));
    }

    #[test]
    fn keep_alive_http11() {
        assert!(complete(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").keep_alive);
        assert!(!complete(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(
            !complete(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, CLOSE\r\n\r\n")
                .keep_alive
        );
        assert!(
            complete(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n").keep_alive
        );
    }

    #[test]
    fn keep_alive_http10() {
        let request = complete(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(request.version, Version::Http10);
        assert!(
            !request.keep_alive,
            "1.0 closes by default; Host is optional"
        );
        assert!(complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(
            !complete(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n")
                .keep_alive
        );
    }

    #[test]
    fn host_rules() {
        let err = invalid(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(
            (err.status, err.reason.as_str()),
            (Status::BAD_REQUEST, "missing host header")
        );
        let err = invalid(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
        assert_eq!(err.reason, "duplicate host header");
        let request = complete(b"GET / HTTP/1.1\r\nhost:  127.0.0.1:8001 \r\n\r\n");
        assert_eq!(request.host, Some(&b"127.0.0.1:8001"[..]));
        assert_eq!(complete(b"GET / HTTP/1.0\r\n\r\n").host, None);
    }

    #[test]
    fn duplicate_singletons() {
        for name in ["Origin", "Last-Event-ID", "Authorization"] {
            let buf = format!("GET / HTTP/1.1\r\nHost: a\r\n{name}: 1\r\n{name}: 1\r\n\r\n");
            let err = invalid(buf.as_bytes());
            assert_eq!(err.status, Status::BAD_REQUEST);
            assert!(err.reason.starts_with("duplicate"), "{}", err.reason);
        }
    }

    #[test]
    fn partial_at_every_prefix() {
        let buf = b"POST /send/7 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
        let head_len = buf.len() - 5;
        for end in 0..head_len {
            assert!(
                matches!(parse(&buf[..end]), Parsed::Partial),
                "prefix {end}"
            );
        }
        for end in head_len..=buf.len() {
            let request = complete(&buf[..end]);
            assert_eq!(request.head_len, head_len);
            assert_eq!(request.body, Body::Length(5));
            assert_eq!(request.path, b"/send/7");
        }
    }

    #[test]
    fn pipelined_requests() {
        let buf = b"GET /test/1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /send/1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhiGET /metrics HTTP/1.1\r\nHost: a\r\n\r\n";
        let first = complete(buf);
        assert_eq!(first.path, b"/test/1");
        let rest = &buf[first.head_len..];
        let second = complete(rest);
        assert_eq!(second.path, b"/send/1");
        let Body::Length(n) = second.body else {
            panic!("body")
        };
        assert_eq!(&rest[second.head_len..second.head_len + n], b"hi");
        let third = complete(&rest[second.head_len + n..]);
        assert_eq!(third.path, b"/metrics");
        assert_eq!(third.head_len, rest.len() - second.head_len - n);
    }

    #[test]
    fn leading_empty_lines_allowed() {
        let buf = b"\r\n\r\nGET /test/1 HTTP/1.1\r\nHost: a\r\n\r\n";
        let request = complete(buf);
        assert_eq!(request.path, b"/test/1");
        assert_eq!(request.head_len, buf.len());
        assert!(matches!(parse(b"\r\n"), Parsed::Partial));
    }

    #[test]
    fn bare_lf_line_ends_accepted() {
        // RFC 9112 2.2: a recipient may recognise a lone LF as a line terminator.
        let request = complete(b"GET /test/1 HTTP/1.1\nHost: a\n\n");
        assert_eq!((request.path, request.head_len), (&b"/test/1"[..], 30));
    }

    #[test]
    fn malformed_is_400() {
        for (buf, reason) in [
            (&b"GET\r\n\r\n"[..], "malformed request line"),
            (b"GET /x\r\n\r\n", "malformed request line"),
            (
                b"GET  /x HTTP/1.1\r\nHost: a\r\n\r\n",
                "malformed request line",
            ),
            (
                b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
                "malformed request line",
            ),
            (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", "invalid header name"),
            (
                b"GET /x HTTP/2.0\r\nHost: a\r\n\r\n",
                "invalid HTTP version",
            ),
            (
                b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
                "invalid HTTP version",
            ),
            (
                b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
                "malformed request line",
            ),
            (b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n", "invalid header name"),
            (
                b"GET / HTTP/1.1\r\nHost: a\x01b\r\n\r\n",
                "invalid header value",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
                "invalid header name",
            ),
            (b"GET / HTTP/1.1\rHost: a\r\n\r\n", "malformed line ending"),
        ] {
            let err = invalid(buf);
            assert_eq!(
                err.status,
                Status::BAD_REQUEST,
                "{:?}",
                String::from_utf8_lossy(buf)
            );
            assert_eq!(err.reason, reason, "{:?}", String::from_utf8_lossy(buf));
        }
    }

    #[test]
    fn head_too_large_is_431() {
        let limits = Limits {
            header_bytes_max: 64,
            ..Limits::default()
        };
        let mut buf = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ".to_vec();
        buf.resize(64, b'p');
        assert!(matches!(parse_request(&buf, &limits), Parsed::Partial));
        buf.push(b'p');
        let err = invalid_with(&buf, &limits);
        assert_eq!(err.status, Status::HEADERS_TOO_LARGE);
        assert_eq!(err.reason, "request head larger than 64 bytes");
        // Complete, but the final CRLF CRLF lies past the limit.
        buf.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            invalid_with(&buf, &limits).status,
            Status::HEADERS_TOO_LARGE
        );
        // A head exactly at the limit is fine even with a body after it.
        let mut buf = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ".to_vec();
        buf.resize(60, b'p');
        buf.extend_from_slice(b"\r\n\r\nGET / HTTP/1.1\r\n");
        assert_eq!(complete_with(&buf, &limits).head_len, 64);
    }

    fn complete_with<'a>(buf: &'a [u8], limits: &Limits) -> Request<'a> {
        match parse_request(buf, limits) {
            Parsed::Complete(request) => request,
            _ => panic!("not complete"),
        }
    }

    #[test]
    fn too_many_headers_is_431() {
        let limits = Limits {
            headers_count_max: 3,
            ..Limits::default()
        };
        let ok = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
        assert!(matches!(parse_request(ok, &limits), Parsed::Complete(_)));
        let err = invalid_with(
            b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
            &limits,
        );
        assert_eq!(err.status, Status::HEADERS_TOO_LARGE);
        assert_eq!(err.reason, "more than 3 header fields");
        // Noticed before the head is complete.
        let err = invalid_with(
            b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n",
            &limits,
        );
        assert_eq!(err.status, Status::HEADERS_TOO_LARGE);
    }

    #[test]
    fn long_target_is_414() {
        let at_limit = format!(
            "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
            "a".repeat(URI_BYTES_MAX - 1)
        );
        assert!(matches!(parse(at_limit.as_bytes()), Parsed::Complete(_)));
        let over = format!(
            "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
            "a".repeat(URI_BYTES_MAX)
        );
        assert_eq!(invalid(over.as_bytes()).status, Status::URI_TOO_LONG);
        // Refused while the target is still arriving, before the head limit.
        let partial = format!("GET /{}", "a".repeat(URI_BYTES_MAX));
        assert_eq!(invalid(partial.as_bytes()).status, Status::URI_TOO_LONG);
        let partial = format!("GET /{}", "a".repeat(URI_BYTES_MAX - 1));
        assert!(matches!(parse(partial.as_bytes()), Parsed::Partial));
    }

    #[test]
    fn content_length_rules() {
        let head = |cl: &str| format!("POST /send/1 HTTP/1.1\r\nHost: a\r\n{cl}\r\n\r\n");
        let body = |cl: &str| complete(head(cl).as_bytes()).body;
        let err = |cl: &str| invalid(head(cl).as_bytes());
        assert_eq!(body("Content-Length: 10"), Body::Length(10));
        assert_eq!(body("Content-Length: 0"), Body::None);
        assert_eq!(body("Content-Length: 007"), Body::Length(7));
        assert_eq!(body("Content-Length: 5, 5"), Body::Length(5));
        assert_eq!(
            body("Content-Length: 5\r\nContent-Length: 5"),
            Body::Length(5)
        );
        assert_eq!(body("Content-Length: 65536"), Body::Length(65536));
        for bad in [
            "Content-Length: ",
            "Content-Length: -1",
            "Content-Length: 1x",
            "Content-Length: +5",
            "Content-Length: 0x10",
            "Content-Length: 99999999999999999999999",
            "Content-Length: 5,",
        ] {
            let e = err(bad);
            assert_eq!(
                (e.status, e.reason.as_str()),
                (Status::BAD_REQUEST, "invalid content-length"),
                "{bad}"
            );
        }
        for conflict in [
            "Content-Length: 5, 6",
            "Content-Length: 5\r\nContent-Length: 6",
        ] {
            let e = err(conflict);
            assert_eq!(
                (e.status, e.reason.as_str()),
                (Status::BAD_REQUEST, "conflicting content-length values")
            );
        }
        let e = err("Content-Length: 65537");
        assert_eq!(e.status, Status::PAYLOAD_TOO_LARGE);
        assert_eq!(e.reason, "request body larger than 65536 bytes");
    }

    #[test]
    fn transfer_encoding_rules() {
        let head = |v: &str, te: &str| format!("POST /send HTTP/{v}\r\nHost: a\r\n{te}\r\n\r\n");
        let body = |te: &str| complete(head("1.1", te).as_bytes()).body;
        let err = |v: &str, te: &str| invalid(head(v, te).as_bytes());
        assert_eq!(body("Transfer-Encoding: chunked"), Body::Chunked);
        assert_eq!(body("transfer-encoding: CHUNKED "), Body::Chunked);
        assert_eq!(body("Transfer-Encoding: , chunked"), Body::Chunked);
        let e = err("1.1", "Transfer-Encoding: gzip, chunked");
        assert_eq!(
            (e.status, e.reason.as_str()),
            (Status::NOT_IMPLEMENTED, "unsupported transfer-encoding")
        );
        assert_eq!(
            err("1.1", "Transfer-Encoding: identity").status,
            Status::NOT_IMPLEMENTED
        );
        assert_eq!(
            err(
                "1.1",
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip"
            )
            .status,
            Status::NOT_IMPLEMENTED
        );
        let e = err("1.1", "Transfer-Encoding: chunked, chunked");
        assert_eq!(
            (e.status, e.reason.as_str()),
            (Status::BAD_REQUEST, "invalid transfer-encoding")
        );
        assert_eq!(
            err("1.1", "Transfer-Encoding: ").reason,
            "invalid transfer-encoding"
        );
        let e = err("1.1", "Transfer-Encoding: chunked\r\nContent-Length: 3");
        assert_eq!(
            (e.status, e.reason.as_str()),
            (
                Status::BAD_REQUEST,
                "both transfer-encoding and content-length"
            )
        );
        let e = err("1.0", "Transfer-Encoding: chunked");
        assert_eq!(
            (e.status, e.reason.as_str()),
            (
                Status::BAD_REQUEST,
                "transfer-encoding in an HTTP/1.0 request"
            )
        );
    }

    #[test]
    fn get_and_head_may_carry_a_body() {
        let request = complete(b"GET /test/1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
        assert_eq!(request.body, Body::Length(3));
        let request =
            complete(b"HEAD /test/1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(request.body, Body::Chunked);
    }

    #[test]
    fn expect_continue() {
        let yes = complete(b"POST /send/1 HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 2000\r\n\r\n");
        assert!(yes.expect_continue);
        let no_body = complete(b"POST /send/1 HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n");
        assert!(!no_body.expect_continue);
        let http10 =
            complete(b"POST /send/1 HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(
            !http10.expect_continue,
            "RFC 9110 10.1.1: ignored in HTTP/1.0"
        );
        assert_eq!(CONTINUE, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn header_slots_cap_headers_count_max() {
        let limits = Limits {
            headers_count_max: 10_000,
            header_bytes_max: 1 << 20,
            ..Limits::default()
        };
        let mut buf = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..HEADER_SLOTS {
            buf.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
        assert_eq!(
            invalid_with(&buf, &limits).status,
            Status::HEADERS_TOO_LARGE
        );
    }

    #[test]
    fn error_display() {
        let err = Error::method_not_allowed("POST", "method not allowed: use POST");
        assert_eq!(err.to_string(), "405 method not allowed: use POST");
        assert_eq!(err.allow, Some("POST"));
        assert_eq!(Error::new(Status::FORBIDDEN, "x").allow, None);
    }
}
