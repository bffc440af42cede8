//! `parse_id` and `parse_id_list` (comet-router): the ids of `/test/<ids>`, `/send/<id>` and
//! the batch lines. Properties:
//!
//! 1. Round trip: ids written in decimal with any leading zeros, comma-separated, come back
//!    once each in first-appearance order, or `TooMany` with the exact distinct count.
//! 2. Over arbitrary text: an id is accepted exactly when the text is non-empty ASCII digits
//!    whose value fits in a u64 (`str::parse` agrees); a list is accepted exactly when every
//!    element is, with at least one and at most `max` distinct ids, none repeated; otherwise
//!    the first bad element's error. An error's text is one printable line, bounded.
#![no_main]

use arbitrary::Arbitrary;
use comet_http_fuzz::one_printable_line;
use comet_router::{parse_id, parse_id_list, IdError};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    Built {
        ids: Vec<u64>,
        zeros: Vec<u8>,
        max: u8,
    },
    Text {
        text: Vec<u8>,
        max: u8,
    },
}

/// "id '" + 32 bytes shown (each at most `\u{10ffff}`, 10 bytes) + "...' is larger than" ...
const ERROR_BYTES_MAX: usize = 64 + 32 * 10;

fuzz_target!(|input: Input| match input {
    Input::Built { ids, zeros, max } => {
        let max = usize::from(max % 64);
        let mut text = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                text.push(b',');
            }
            let zeros = zeros.get(i % zeros.len().max(1)).copied().unwrap_or(0) % 4;
            let number = "0".repeat(usize::from(zeros)) + &id.to_string();
            assert_eq!(parse_id(number.as_bytes()), Ok(*id));
            text.extend_from_slice(number.as_bytes());
        }
        let mut distinct: Vec<u64> = Vec::new();
        for id in &ids {
            if !distinct.contains(id) {
                distinct.push(*id);
            }
        }
        let want = if ids.is_empty() {
            Err(IdError::Empty)
        } else if distinct.len() > max {
            Err(IdError::TooMany {
                count: distinct.len(),
                max,
            })
        } else {
            Ok(distinct)
        };
        assert_eq!(parse_id_list(&text, max), want);
    }
    Input::Text { text, max } => {
        let max = usize::from(max % 64);
        let one = parse_id(&text);
        let digits = !text.is_empty() && text.iter().all(u8::is_ascii_digit);
        let std = std::str::from_utf8(&text)
            .ok()
            .filter(|_| digits)
            .and_then(|t| t.parse::<u64>().ok());
        assert_eq!(one.as_ref().ok().copied(), std);
        match &one {
            Ok(_) => {}
            Err(IdError::Empty) => assert!(text.is_empty()),
            Err(IdError::NotANumber(_)) => assert!(!digits),
            Err(IdError::TooLarge(_)) => assert!(digits),
            Err(e @ IdError::TooMany { .. }) => panic!("{e}"),
        }
        if let Err(e) = &one {
            let shown = e.to_string();
            assert!(
                one_printable_line(&shown) && shown.len() <= ERROR_BYTES_MAX,
                "{shown}"
            );
        }

        let list = parse_id_list(&text, max);
        let elements: Result<Vec<u64>, IdError> =
            text.split(|&b| b == b',').map(parse_id).collect();
        match (&list, elements) {
            (Ok(ids), Ok(all)) => {
                assert!(!ids.is_empty() && ids.len() <= max);
                let mut kept = Vec::new();
                for id in all {
                    if !kept.contains(&id) {
                        kept.push(id);
                    }
                }
                assert_eq!(ids, &kept);
            }
            (Err(IdError::TooMany { count, max: m }), Ok(all)) => {
                let mut distinct = all.clone();
                distinct.sort_unstable();
                distinct.dedup();
                assert_eq!((*count, *m), (distinct.len(), max));
                assert!(*count > max);
            }
            (Err(e), Err(first)) => assert_eq!(e, &first),
            (list, elements) => panic!("{list:?} but the elements: {elements:?}"),
        }
    }
});
