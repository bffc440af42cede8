//! `query_param`: a query parameter's value, percent-decoded. Properties:
//!
//! 1. Round trip: any value, percent-encoded as a client may (any byte escaped or not, hex in
//!    either case; `%` and `&` always escaped), between arbitrary other parameters, comes back
//!    as it was; the first of two parameters of the same name wins.
//! 2. Over arbitrary queries: a value is never longer than its text; a value with no `%` is
//!    borrowed as it is; re-encoding a value and reading it back gives it again.
#![no_main]

use std::borrow::Cow;

use arbitrary::Arbitrary;
use comet_http::query_param;
use comet_http_fuzz::within;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    Built {
        name: Name,
        value: Vec<u8>,
        /// Which bytes to escape (bit i % 8 of byte i / 8, cycled) and in which case.
        escape: Vec<u8>,
        upper: bool,
        before: Vec<Vec<u8>>,
        after: Vec<Vec<u8>>,
        second: Vec<u8>,
    },
    Query {
        name: Name,
        query: Vec<u8>,
    },
}

/// The names comet reads, and one that is a prefix of another.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Name {
    Since,
    Token,
    Tok,
}

impl Name {
    fn bytes(self) -> &'static [u8] {
        match self {
            Name::Since => b"since",
            Name::Token => b"token",
            Name::Tok => b"tok",
        }
    }
}

fuzz_target!(|input: Input| match input {
    Input::Built {
        name,
        value,
        escape,
        upper,
        before,
        after,
        second,
    } => {
        let name = name.bytes();
        let escaped = |i: usize| {
            let byte = escape.get((i / 8) % escape.len().max(1)).copied();
            byte.is_some_and(|b| b & (1 << (i % 8)) != 0)
        };
        let mut query = Vec::new();
        for pair in &before {
            let pair: Vec<u8> = pair.iter().filter(|&&b| b != b'&').copied().collect();
            if names(&pair, name) {
                continue;
            }
            query.extend_from_slice(&pair);
            query.push(b'&');
        }
        query.extend_from_slice(name);
        query.push(b'=');
        for (i, &b) in value.iter().enumerate() {
            if b == b'%' || b == b'&' || escaped(i) {
                push_escape(&mut query, b, upper);
            } else {
                query.push(b);
            }
        }
        for pair in &after {
            query.push(b'&');
            query.extend(pair.iter().filter(|&&b| b != b'&'));
        }
        query.push(b'&');
        query.extend_from_slice(name);
        query.push(b'=');
        query.extend(second.iter().filter(|&&b| b != b'&'));

        let got = query_param(Some(&query), name).expect("present and well formed");
        assert_eq!(&*got, &value[..], "{:?}", String::from_utf8_lossy(&query));
    }
    Input::Query { name, query } => {
        let name = name.bytes();
        let Some(value) = query_param(Some(&query), name) else {
            return;
        };
        if let Cow::Borrowed(v) = value {
            assert!(within(v, &query));
        }
        let text = query
            .split(|&b| b == b'&')
            .find(|p| names(p, name))
            .expect("the pair it came from");
        let text = text.get(name.len() + 1..).unwrap_or(&[]);
        assert!(value.len() <= text.len());
        if !text.contains(&b'%') {
            assert_eq!(value, Cow::Borrowed(text));
        }
        let mut again = [name, b"="].concat();
        for &b in value.iter() {
            push_escape(&mut again, b, false);
        }
        assert_eq!(query_param(Some(&again), name).as_deref(), Some(&*value));
    }
});

/// True when `pair` is the parameter `name` (`name=...` or `name` alone).
fn names(pair: &[u8], name: &[u8]) -> bool {
    pair.strip_prefix(name)
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'=')
}

fn push_escape(out: &mut Vec<u8>, byte: u8, upper: bool) {
    let hex = if upper {
        format!("%{byte:02X}")
    } else {
        format!("%{byte:02x}")
    };
    out.extend_from_slice(hex.as_bytes());
}
