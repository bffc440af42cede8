//! `parse_request` over arbitrary bytes and limits. Properties:
//!
//! 1. Limits: a `Complete` head is never longer than `header_bytes_max` nor than the input;
//!    its body length is within `body_bytes_max`, its target within `URI_BYTES_MAX`, its header
//!    fields within `headers_count_max`; `Partial` only while the input fits the limit.
//! 2. `head_len` is exact: re-parsing exactly `head_len` bytes gives the same request, and every
//!    shorter prefix is `Partial`; what the request borrows lies inside the head.
//! 3. Split consistency (the server calls again with every byte so far): a prefix never gets a
//!    verdict the whole input does not: `Complete` on a prefix is the same `Complete` on the
//!    whole, `Invalid` on a prefix is `Invalid` on the whole, `Partial` on the whole is
//!    `Partial` on every prefix.
//! 4. A refusal is one printable line with a status comet sends for a head.
#![no_main]

use comet_http::request::HEADER_SLOTS;
use comet_http::{parse_request, Body, Limits, Parsed, Request, Version, URI_BYTES_MAX};
use comet_http_fuzz::{one_printable_line, within};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // Header: limits selector, split point (2 bytes); then the bytes a client sent.
    let [select, split_hi, split_lo, data @ ..] = input else {
        return;
    };
    let limits = limits(*select, data);
    let split = usize::from(u16::from_be_bytes([*split_hi, *split_lo]));
    let whole = parse_request(data, &limits);

    match &whole {
        Parsed::Complete(request) => check_complete(request, data, &limits),
        Parsed::Partial => assert!(data.len() <= limits.header_bytes_max),
        Parsed::Invalid(error) => {
            assert!(
                matches!(error.status.0, 400 | 413 | 414 | 431 | 501),
                "{error}"
            );
            assert!(one_printable_line(&error.reason), "{error}");
        }
    }

    let prefix = &data[..split.min(data.len())];
    match (parse_request(prefix, &limits), &whole) {
        (Parsed::Partial, _) => {}
        (Parsed::Complete(a), Parsed::Complete(b)) => assert_eq!(&a, b),
        (Parsed::Invalid(_), Parsed::Invalid(_)) => {}
        (p, w) => panic!(
            "prefix of {} bytes: {}, whole: {}",
            prefix.len(),
            name(&p),
            name(w)
        ),
    }
});

fn check_complete(request: &Request<'_>, data: &[u8], limits: &Limits) {
    let head_len = request.head_len;
    assert!(head_len <= data.len());
    assert!(head_len <= limits.header_bytes_max);
    let head = &data[..head_len];
    assert!(head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n"));

    match request.body {
        Body::None | Body::Chunked => {}
        Body::Length(n) => assert!(n > 0 && n <= limits.body_bytes_max),
    }
    if request.version == Version::Http11 {
        assert!(request.host.is_some());
    }
    let target_len = request.path.len() + request.query.map_or(0, |q| q.len() + 1);
    assert!(target_len <= URI_BYTES_MAX);
    for field in [
        Some(request.path),
        request.query,
        request.host,
        request.origin,
        request.last_event_id,
        request.authorization,
        request.websocket_key,
        request.websocket_version,
    ]
    .into_iter()
    .flatten()
    {
        // `/` is what an absolute-form target without a path becomes: a constant.
        assert!(within(field, head) || field == b"/", "{field:?}");
    }
    assert!(header_fields(head) <= limits.headers_count_max.min(HEADER_SLOTS));

    match parse_request(head, limits) {
        Parsed::Complete(again) => assert_eq!(&again, request),
        other => panic!("the head alone: {}", name(&other)),
    }
    if head_len > 0 {
        let shorter = &head[..head_len - 1];
        assert!(
            matches!(parse_request(shorter, limits), Parsed::Partial),
            "a head shorter by one byte is not Partial"
        );
    }
}

/// Header fields of a complete head: its lines after the request line, less the final empty
/// one (no folding: httparse refuses obsolete line folding).
fn header_fields(head: &[u8]) -> usize {
    let start = head
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(head.len());
    let lines = head[start..].iter().filter(|&&b| b == b'\n').count();
    lines.saturating_sub(2)
}

/// Mostly the server's defaults; sometimes small limits, so that every limit is reached.
fn limits(select: u8, data: &[u8]) -> Limits {
    if select < 128 {
        return Limits::default();
    }
    let byte = |i: usize| usize::from(data.get(i).copied().unwrap_or(0));
    Limits {
        header_bytes_max: (usize::from(select & 0x3f) << 4) + byte(0) % 16,
        headers_count_max: byte(1) % 8,
        body_bytes_max: byte(2) * 3,
    }
}

fn name(parsed: &Parsed<'_>) -> String {
    match parsed {
        Parsed::Partial => "Partial".into(),
        Parsed::Complete(r) => format!("Complete({r:?})"),
        Parsed::Invalid(e) => format!("Invalid({e})"),
    }
}
