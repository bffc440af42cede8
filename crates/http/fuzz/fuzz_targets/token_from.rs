//! `bearer` / `token_from`: a subscriber's JWT from `Authorization` or `?token=`. Properties:
//!
//! 1. Round trip: `Bearer <token>` written as a client may (any case, spaces and tabs around
//!    and between) gives the token back, and the header wins over the query's token.
//! 2. Over arbitrary values: a token borrows the header, is not empty, has no whitespace at
//!    either end, and the header's scheme is `bearer`; with no bearer token the query's token
//!    is used unless empty.
#![no_main]

use arbitrary::Arbitrary;
use comet_http::{bearer, token_from};
use comet_http_fuzz::within;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    Built {
        token: Vec<u8>,
        /// Bit i: letter i of `bearer` in upper case.
        case: u8,
        /// Whitespace before the scheme, between scheme and token, after the token (the
        /// middle one never empty).
        before: Vec<Space>,
        between: Vec<Space>,
        after: Vec<Space>,
        query: Option<Vec<u8>>,
    },
    Values {
        authorization: Option<Vec<u8>>,
        query: Option<Vec<u8>>,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Space {
    Sp,
    Tab,
}

fn spaces(list: &[Space]) -> impl Iterator<Item = u8> + '_ {
    list.iter().map(|s| match s {
        Space::Sp => b' ',
        Space::Tab => b'\t',
    })
}

fuzz_target!(|input: Input| match input {
    Input::Built {
        token,
        case,
        before,
        between,
        after,
        query,
    } => {
        let token = token.trim_ascii();
        if token.is_empty() {
            return;
        }
        let mut header: Vec<u8> = spaces(&before).collect();
        for (i, letter) in b"bearer".iter().enumerate() {
            let upper = case & (1 << i) != 0;
            header.push(if upper {
                letter.to_ascii_uppercase()
            } else {
                *letter
            });
        }
        header.push(b' ');
        header.extend(spaces(&between));
        header.extend_from_slice(token);
        header.extend(spaces(&after));
        assert_eq!(bearer(&header), Some(token));
        assert_eq!(token_from(Some(&header), query.as_deref()), Some(token));
    }
    Input::Values {
        authorization,
        query,
    } => {
        let authorization = authorization.as_deref();
        let from_header = authorization.and_then(bearer);
        if let (Some(t), Some(value)) = (from_header, authorization) {
            assert!(within(t, value));
            assert!(!t.is_empty() && t.trim_ascii() == t);
            let value = value.trim_ascii();
            assert!(value.len() > 7 && value[..6].eq_ignore_ascii_case(b"bearer"));
            assert!(matches!(value[6], b' ' | b'\t'));
            assert!(value.ends_with(t));
        }
        let picked = token_from(authorization, query.as_deref());
        let want = from_header.or(query.as_deref().filter(|q| !q.is_empty()));
        assert_eq!(picked, want);
    }
});
