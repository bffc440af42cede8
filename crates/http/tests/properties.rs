//! Property tests over the public API: decode(encode(x)) == x for chunked bodies,
//! unframe(frame(msg)) == msg for every stream format, decode(encode(x)) == x for query
//! values, and no panics on hostile bytes.

use comet_http::{
    batch_lines, frame_event, frame_message, parse_request, query_param, stream_end, Body,
    ChunkedDecoder, Format, Limits, Parsed, Pos,
};
use percent_encoding::{percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC};
use proptest::prelude::*;

/// The least a query value must escape: the escape character and the pair separator.
const QUERY_VALUE_MIN: &AsciiSet = &CONTROLS.add(b'%').add(b'&');

/// `v=<value percent-encoded with set>`, the escapes' hex digits lowercased when `lower`.
fn query_of(value: &[u8], set: &'static AsciiSet, lower: bool) -> Vec<u8> {
    let mut query = b"v=".to_vec();
    query.extend(percent_encode(value, set).flat_map(str::bytes));
    if lower {
        for at in 0..query.len() {
            if query[at] == b'%' {
                query[at + 1..at + 3].make_ascii_lowercase();
            }
        }
    }
    query
}

/// Chunk-encode `data` in pieces of the given sizes (cycled), with optional
/// extensions, uppercase hex, leading zeros and a trailer section.
fn chunk_encode(data: &[u8], sizes: &[usize], style: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).clamp(1, rest.len());
        let size = match style % 3 {
            0 => format!("{n:x}"),
            1 => format!("{n:X}"),
            _ => format!("00{n:x}"),
        };
        out.extend_from_slice(size.as_bytes());
        if style & 4 != 0 {
            out.extend_from_slice(b" ;name=\"v a l\";x");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(b"0\r\n");
    if style & 8 != 0 {
        out.extend_from_slice(b"X-Checksum: 1\r\nX-Other: two\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Feed `input` to a fresh decoder in pieces cut at `cuts`; returns
/// (decoded, consumed) once done.
fn decode_in_pieces(input: &[u8], cuts: &[usize], max: usize) -> (Vec<u8>, usize) {
    let mut decoder = ChunkedDecoder::new(max);
    let mut out = Vec::new();
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c % (input.len() + 1)).collect();
    cuts.push(input.len());
    cuts.sort_unstable();
    let mut start = 0;
    for cut in cuts {
        let (consumed, done) = decoder
            .feed(&input[start..cut], &mut out)
            .expect("valid body");
        if done {
            return (out, start + consumed);
        }
        assert_eq!(consumed, cut - start, "everything consumed until done");
        start = cut;
    }
    panic!("body never finished");
}

/// The test's own reader of a chunked stream: the payload of every chunk, in
/// order, up to the last chunk; panics on anything malformed.
fn dechunk(mut stream: &[u8]) -> Vec<&[u8]> {
    let mut chunks = Vec::new();
    loop {
        let line_end = stream
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("size line");
        let size = usize::from_str_radix(std::str::from_utf8(&stream[..line_end]).unwrap(), 16)
            .expect("hex size");
        stream = &stream[line_end + 2..];
        if size == 0 {
            assert_eq!(stream, b"\r\n", "final CRLF and nothing after");
            return chunks;
        }
        chunks.push(&stream[..size]);
        assert_eq!(&stream[size..size + 2], b"\r\n");
        stream = &stream[size + 2..];
    }
}

/// `Recvd msg #N: '<escaped>'<br/>` -> (N, message).
fn unframe_html(payload: &[u8]) -> (u64, Vec<u8>) {
    let rest = payload.strip_prefix(b"Recvd msg #").expect("prefix");
    let colon = rest.iter().position(|&b| b == b':').unwrap();
    let n = std::str::from_utf8(&rest[..colon])
        .unwrap()
        .parse()
        .unwrap();
    let escaped = rest[colon..]
        .strip_prefix(b": '")
        .and_then(|r| r.strip_suffix(b"'<br/>"))
        .expect("quotes");
    assert!(
        !escaped.iter().any(|b| b"<>\"'".contains(b)),
        "raw markup byte"
    );
    let mut msg = Vec::new();
    let mut i = 0;
    while i < escaped.len() {
        if escaped[i] == b'&' {
            let semi = i + escaped[i..].iter().position(|&b| b == b';').unwrap();
            msg.push(match &escaped[i..=semi] {
                b"&amp;" => b'&',
                b"&lt;" => b'<',
                b"&gt;" => b'>',
                b"&quot;" => b'"',
                b"&#39;" => b'\'',
                other => panic!("entity {other:?}"),
            });
            i = semi + 1;
        } else {
            msg.push(escaped[i]);
            i += 1;
        }
    }
    (n, msg)
}

/// One SSE event `id: N\n(data: x\n)+\n` -> (N, data lines joined by LF), as
/// an EventSource would deliver it.
fn unframe_sse(event: &[u8]) -> (u64, Vec<u8>) {
    let body = event.strip_suffix(b"\n\n").expect("blank line");
    let mut lines = body.split(|&b| b == b'\n');
    let id = lines
        .next()
        .unwrap()
        .strip_prefix(b"id: 0000002a:")
        .expect("id");
    let n = std::str::from_utf8(id).unwrap().parse().unwrap();
    let mut data = Vec::new();
    for (index, line) in lines.enumerate() {
        if index > 0 {
            data.push(b'\n');
        }
        let value = line.strip_prefix(b"data: ").expect("data field");
        assert!(!value.contains(&b'\r'));
        data.extend_from_slice(value);
    }
    (n, data)
}

fn normalize_line_ends(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < msg.len() {
        match msg[i] {
            b'\r' => {
                out.push(b'\n');
                if msg.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    out
}

fn message() -> impl Strategy<Value = Vec<u8>> {
    // Biased towards the bytes the formats treat specially.
    proptest::collection::vec(
        prop_oneof![
            3 => any::<u8>(),
            2 => proptest::sample::select(b"&<>\"'\r\n :#a".to_vec()),
        ],
        0..200,
    )
}

proptest! {
    #[test]
    fn chunked_round_trip(
        data in proptest::collection::vec(any::<u8>(), 0..2000),
        sizes in proptest::collection::vec(1usize..400, 1..8),
        style in any::<u8>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
        next in proptest::collection::vec(any::<u8>(), 0..20),
    ) {
        let encoded = chunk_encode(&data, &sizes, style);
        let mut input = encoded.clone();
        input.extend_from_slice(&next);
        let (decoded, consumed) = decode_in_pieces(&input, &cuts, data.len());
        prop_assert_eq!(decoded, data);
        prop_assert_eq!(consumed, encoded.len());
    }

    #[test]
    fn chunked_byte_at_a_time(
        data in proptest::collection::vec(any::<u8>(), 0..300),
        sizes in proptest::collection::vec(1usize..50, 1..4),
        style in any::<u8>(),
    ) {
        let encoded = chunk_encode(&data, &sizes, style);
        let cuts: Vec<usize> = (0..encoded.len()).collect();
        let (decoded, consumed) = decode_in_pieces(&encoded, &cuts, data.len());
        prop_assert_eq!(decoded, data);
        prop_assert_eq!(consumed, encoded.len());
    }

    #[test]
    fn chunked_limit_is_exact(
        data in proptest::collection::vec(any::<u8>(), 1..500),
        sizes in proptest::collection::vec(1usize..100, 1..4),
    ) {
        let encoded = chunk_encode(&data, &sizes, 0);
        let mut decoder = ChunkedDecoder::new(data.len() - 1);
        let err = decoder.feed(&encoded, &mut Vec::new()).unwrap_err();
        prop_assert_eq!(err.status.0, 413);
    }

    #[test]
    fn chunked_decoder_never_panics(
        input in proptest::collection::vec(
            prop_oneof![any::<u8>(), proptest::sample::select(b"0123456789abcdefABCDEF;\r\n \t".to_vec())],
            0..300,
        ),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let mut decoder = ChunkedDecoder::new(100);
        let mut out = Vec::new();
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| c % (input.len() + 1)).collect();
        cuts.push(input.len());
        cuts.sort_unstable();
        let mut start = 0;
        for cut in cuts {
            match decoder.feed(&input[start..cut], &mut out) {
                Ok((consumed, done)) => {
                    prop_assert!(consumed <= cut - start);
                    if done { break; }
                }
                Err(err) => {
                    prop_assert!(matches!(err.status.0, 400 | 413 | 431));
                    break;
                }
            }
            start = cut;
        }
        prop_assert!(out.len() <= 100);
    }

    #[test]
    fn parse_request_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
        let limits = Limits { header_bytes_max: 256, headers_count_max: 4, body_bytes_max: 10 };
        match parse_request(&buf, &limits) {
            Parsed::Partial => prop_assert!(buf.len() <= 256),
            Parsed::Complete(request) => {
                prop_assert!(request.head_len <= buf.len().min(256));
                if let Body::Length(n) = request.body { prop_assert!(n > 0 && n <= 10); }
            }
            Parsed::Invalid(err) => {
                prop_assert!(matches!(err.status.0, 400 | 413 | 414 | 431 | 501));
                prop_assert!(!err.reason.contains(['\r', '\n']));
            }
        }
    }

    #[test]
    fn parse_request_never_panics_near_valid(
        headers in proptest::collection::vec(
            (
                proptest::sample::select(vec!["Host", "Content-Length", "Transfer-Encoding", "Connection",
                    "Origin", "Last-Event-ID", "Authorization", "Expect", "X"]),
                proptest::sample::select(vec!["", "0", "12", "1, 1", "1,2", "chunked", "gzip, chunked",
                    "close", "keep-alive", "100-continue", "  x  ", "99999999999999999999999"]),
            ),
            0..6,
        ),
        method in proptest::sample::select(vec!["GET", "HEAD", "POST", "PUT", ""]),
        target in "[/a-z0-9?=&%]{0,20}",
        version in proptest::sample::select(vec!["HTTP/1.1", "HTTP/1.0", "HTTP/2", "http/1.1"]),
        flip in any::<(usize, u8)>(),
        tail in proptest::collection::vec(any::<u8>(), 0..10),
    ) {
        let mut buf = format!("{method} {target} {version}\r\n").into_bytes();
        for (name, value) in headers {
            buf.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
        let head_len = buf.len();
        buf.extend_from_slice(&tail);
        let whole = parse_request(&buf, &Limits::default());
        if let Parsed::Complete(request) = &whole {
            prop_assert_eq!(request.head_len, head_len);
        }
        // Every prefix of a complete head is partial; every prefix of any
        // buffer that is invalid early stays invalid or partial.
        for end in 0..head_len {
            let prefix = parse_request(&buf[..end], &Limits::default());
            if matches!(whole, Parsed::Complete(_)) {
                prop_assert!(matches!(prefix, Parsed::Partial), "prefix {}", end);
            }
        }
        let index = flip.0 % buf.len();
        buf[index] ^= flip.1;
        let _ = parse_request(&buf, &Limits::default());
    }

    #[test]
    fn html_frame_round_trip(msg in message(), n in any::<u64>()) {
        let mut out = Vec::new();
        frame_message(&mut out, Format::Chunked, n, &msg);
        let chunks = {
            let mut stream = out.clone();
            stream_end(&mut stream, Format::Chunked);
            dechunk(&stream).into_iter().map(<[u8]>::to_vec).collect::<Vec<_>>()
        };
        prop_assert_eq!(chunks.len(), 1);
        prop_assert_eq!(unframe_html(&chunks[0]), (n, msg.clone()));

        let mut raw = Vec::new();
        frame_message(&mut raw, Format::Raw, n, &msg);
        prop_assert_eq!(&raw, &chunks[0]);
    }

    #[test]
    fn sse_frame_round_trip(msg in message(), n in any::<u64>()) {
        let mut raw = Vec::new();
        frame_event(&mut raw, Format::SseRaw, 1, n, Pos { epoch: 42, seqs: &[n] }, &msg);
        prop_assert_eq!(unframe_sse(&raw), (n, normalize_line_ends(&msg)));

        let mut stream = Vec::new();
        frame_event(&mut stream, Format::Sse, 1, n, Pos { epoch: 42, seqs: &[n] }, &msg);
        stream_end(&mut stream, Format::Sse);
        prop_assert_eq!(dechunk(&stream), vec![&raw[..]]);
    }

    #[test]
    fn stream_of_messages_round_trip(msgs in proptest::collection::vec(message(), 0..8)) {
        let mut stream = Vec::new();
        for (n, msg) in msgs.iter().enumerate() {
            frame_message(&mut stream, Format::Chunked, n as u64, msg);
        }
        stream_end(&mut stream, Format::Chunked);
        let back: Vec<(u64, Vec<u8>)> = dechunk(&stream).into_iter().map(unframe_html).collect();
        let expected: Vec<(u64, Vec<u8>)> =
            msgs.iter().enumerate().map(|(n, m)| (n as u64, m.clone())).collect();
        prop_assert_eq!(back, expected);
    }

    #[test]
    fn batch_round_trip(
        items in proptest::collection::vec(("[0-9]{1,6}", "[^\r\n]{0,20}"), 0..10),
        crlf in any::<bool>(),
        final_newline in any::<bool>(),
    ) {
        let ending = if crlf { "\r\n" } else { "\n" };
        let mut body = String::new();
        for (index, (id, msg)) in items.iter().enumerate() {
            if index > 0 { body.push_str(ending); }
            body.push_str(&format!("{id} {msg}"));
        }
        if final_newline { body.push_str(ending); }
        let parsed: Vec<_> = batch_lines(body.as_bytes()).collect();
        prop_assert_eq!(parsed.len(), items.len());
        for (index, (item, (id, msg))) in parsed.into_iter().zip(&items).enumerate() {
            let (line, got_id, got_msg) = item.unwrap();
            prop_assert_eq!(line, index + 1);
            prop_assert_eq!(got_id, id.as_bytes());
            prop_assert_eq!(got_msg, msg.as_bytes());
        }
    }

    #[test]
    fn query_value_round_trip(
        value in proptest::collection::vec(any::<u8>(), 0..64),
        lower in any::<bool>(),
    ) {
        // Every byte but letters and digits escaped, or only what must be: raw bytes (`+`,
        // spaces, UTF-8, `=`) come back as they went in.
        let query = query_of(&value, NON_ALPHANUMERIC, lower);
        let decoded = query_param(Some(&query), b"v");
        prop_assert_eq!(decoded.as_deref(), Some(&value[..]));
        let query = query_of(&value, QUERY_VALUE_MIN, false);
        let decoded = query_param(Some(&query), b"v");
        prop_assert_eq!(decoded.as_deref(), Some(&value[..]));
    }

    #[test]
    fn query_value_with_a_broken_escape_is_none(
        value in proptest::collection::vec(any::<u8>(), 0..64),
        at in any::<usize>(),
        after in any::<u8>().prop_filter("not a hex digit", |b| !b.is_ascii_hexdigit()),
    ) {
        // A `%` then a non-hex byte, anywhere (even inside another escape), breaks the value.
        let mut query = query_of(&value, NON_ALPHANUMERIC, false);
        let at = 2 + at % (query.len() - 1);
        query.splice(at..at, [b'%', after]);
        prop_assert_eq!(query_param(Some(&query), b"v"), None);
    }
}
