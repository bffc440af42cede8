//! Unit tests of `request.rs`: request heads parsed without sockets.

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
    let method = |m: &str| complete(format!("{m} / HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()).method;
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
        b"GET /events/1 HTTP/1.1\r\nhost: a\r\nLAST-EVENT-ID:  17 \r\nAuthorization: Bearer t\r\nidempotency-key: k-1 \r\n\r\n",
    );
    assert_eq!(request.last_event_id, Some(&b"17"[..]));
    assert_eq!(request.authorization, Some(&b"Bearer t"[..]));
    assert_eq!(request.idempotency_key, Some(&b"k-1"[..]));
    let twice = invalid(
        b"POST /send/1 HTTP/1.1\r\nHost: a\r\nIdempotency-Key: a\r\nIdempotency-Key: b\r\n\r\n",
    );
    assert_eq!(twice.status, Status::BAD_REQUEST);
}

#[test]
fn keep_alive_http11() {
    assert!(complete(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").keep_alive);
    assert!(!complete(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
    assert!(
        !complete(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, CLOSE\r\n\r\n").keep_alive
    );
    assert!(complete(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n").keep_alive);
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
    let yes = complete(
        b"POST /send/1 HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 2000\r\n\r\n",
    );
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
