//! `batch_lines`, the `POST /send` batch body. Properties:
//!
//! 1. Round trip: lines `<id> <msg>` built from arbitrary ids and messages (with LF or CRLF
//!    endings, empty lines between them, the last line with or without its ending) come back
//!    as they were, numbered as written.
//! 2. Over arbitrary bytes: every item borrows the body; an id holds no space and no LF, a
//!    message no LF; line numbers rise and stay within the body's lines; putting each item's
//!    line back together gives the body's line of that number.
#![no_main]

use arbitrary::Arbitrary;
use comet_http::batch_lines;
use comet_http_fuzz::within;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    Lines(Vec<Line>, bool),
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Line {
    Message {
        id: Vec<u8>,
        msg: Vec<u8>,
        crlf: bool,
    },
    Empty {
        crlf: bool,
    },
}

type Item<'a> = Result<(usize, &'a [u8], &'a [u8]), usize>;

fuzz_target!(|input: Input| match input {
    Input::Lines(lines, last_ended) => round_trip(&lines, last_ended),
    Input::Bytes(body) => properties(&body),
});

fn round_trip(lines: &[Line], last_ended: bool) {
    let mut body = Vec::new();
    let mut expected: Vec<(usize, Vec<u8>, Vec<u8>)> = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let last = index + 1 == lines.len();
        match line {
            Line::Message { id, msg, crlf } => {
                let id: Vec<u8> = id.iter().map(|&b| clean(b, b" \n")).collect();
                let msg: Vec<u8> = msg.iter().map(|&b| clean(b, b"\n")).collect();
                body.extend_from_slice(&id);
                body.push(b' ');
                body.extend_from_slice(&msg);
                // A message ending in CR keeps it only when another CR precedes the LF.
                let crlf = *crlf || msg.last() == Some(&b'\r');
                if !last || last_ended || crlf {
                    body.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                }
                expected.push((index + 1, id, msg));
            }
            Line::Empty { crlf } => body.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" }),
        }
    }
    let got: Vec<(usize, Vec<u8>, Vec<u8>)> = batch_lines(&body)
        .map(|item| {
            let (n, id, msg) = item.expect("every line has a space");
            (n, id.to_vec(), msg.to_vec())
        })
        .collect();
    assert_eq!(got, expected);
}

fn clean(byte: u8, banned: &[u8]) -> u8 {
    if banned.contains(&byte) {
        b'_'
    } else {
        byte
    }
}

fn properties(body: &[u8]) {
    let items: Vec<Item<'_>> = batch_lines(body).collect();
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    // A body ending in LF has no line after it.
    let line_count = lines.len() - usize::from(body.last() == Some(&b'\n'));
    let mut previous = 0;
    for item in &items {
        let n = match *item {
            Ok((n, id, msg)) => {
                assert!(within(id, body) && within(msg, body));
                assert!(!id.contains(&b' ') && !id.contains(&b'\n'));
                assert!(!msg.contains(&b'\n'));
                let line = lines[n - 1];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                assert_eq!(line, [id, b" ", msg].concat());
                n
            }
            Err(n) => {
                let line = lines[n - 1];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                assert!(!line.is_empty() && !line.contains(&b' '));
                n
            }
        };
        assert!(n > previous && n <= line_count);
        previous = n;
    }
    // Every line that is not empty gives an item.
    let non_empty = lines[..line_count]
        .iter()
        .filter(|l| !l.is_empty() && **l != b"\r")
        .count();
    assert_eq!(items.len(), non_empty);
}
