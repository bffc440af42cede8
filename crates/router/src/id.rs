//! Ids in URL paths: `/test/123` and `/send/1,2,3`.

use std::fmt;

use crate::Id;

/// Bytes of refused text kept in an [`IdError`]: the text is echoed back to the client, so it
/// is bounded and made printable.
const SHOWN_BYTES_MAX: usize = 32;

/// Why an id was refused. `Display` gives a one-line human reason, used as the HTTP 400 body.
///
/// The `String`s hold the refused text as shown to the client: at most its first 32 bytes
/// (then `...`), lossily decoded as UTF-8, with control characters escaped (`\n`, `\u{0}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdError {
    /// No digits: an empty path segment or an empty element of a list (`1,,2`).
    Empty,
    /// Something other than ASCII digits: a sign, a space, hex, letters.
    NotANumber(String),
    /// Only digits, but more than `u64::MAX`.
    TooLarge(String),
    /// More distinct ids than the caller allows.
    TooMany { count: usize, max: usize },
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::Empty => write!(f, "empty id"),
            IdError::NotANumber(text) => write!(f, "id '{text}' is not a number"),
            IdError::TooLarge(text) => write!(f, "id '{text}' is larger than {}", u64::MAX),
            IdError::TooMany { count, max } => write!(f, "too many ids: {count} (at most {max})"),
        }
    }
}

impl std::error::Error for IdError {}

/// Parses one id: an unsigned 64-bit decimal integer. ASCII digits only (no sign, no spaces, no
/// hex); leading zeros are accepted (`007` is 7).
pub fn parse_id(text: &[u8]) -> Result<Id, IdError> {
    if text.is_empty() {
        return Err(IdError::Empty);
    }
    if !text.iter().all(u8::is_ascii_digit) {
        return Err(IdError::NotANumber(shown(text)));
    }
    let mut id: Id = 0;
    for &digit in text {
        id = id
            .checked_mul(10)
            .and_then(|id| id.checked_add(Id::from(digit - b'0')))
            .ok_or_else(|| IdError::TooLarge(shown(text)))?;
    }
    Ok(id)
}

/// Parses a comma-separated list of ids: at least one, at most `max` distinct. Duplicates are
/// removed keeping first-appearance order. An empty element (`1,,2`, `1,`, `,1`, or an empty
/// `text`) is [`IdError::Empty`].
///
/// Elements are checked in order and the first bad one is reported; the count is checked once
/// all elements are known good, and `TooMany` reports the exact number of distinct ids.
/// Removing duplicates is a linear scan of at most `max` kept ids per element: `max` is meant
/// to be small (tens).
pub fn parse_id_list(text: &[u8], max: usize) -> Result<Vec<Id>, IdError> {
    let all = text
        .split(|&byte| byte == b',')
        .map(parse_id)
        .collect::<Result<Vec<Id>, IdError>>()?;
    let mut ids = Vec::with_capacity(all.len().min(max));
    for &id in &all {
        if ids.contains(&id) {
            continue;
        }
        if ids.len() == max {
            let mut distinct = all;
            distinct.sort_unstable();
            distinct.dedup();
            return Err(IdError::TooMany {
                count: distinct.len(),
                max,
            });
        }
        ids.push(id);
    }
    Ok(ids)
}

/// The refused text as echoed to the client: bounded, lossy UTF-8, control characters escaped.
fn shown(text: &[u8]) -> String {
    let head = &text[..text.len().min(SHOWN_BYTES_MAX)];
    let mut out = String::new();
    for c in String::from_utf8_lossy(head).chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if text.len() > SHOWN_BYTES_MAX {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids() {
        assert_eq!(parse_id(b"0"), Ok(0));
        assert_eq!(parse_id(b"123"), Ok(123));
        assert_eq!(parse_id(b"007"), Ok(7));
        assert_eq!(parse_id(b"18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_id(b"000000000000000000000000000001"), Ok(1));
    }

    #[test]
    fn refuses_ids() {
        assert_eq!(parse_id(b""), Err(IdError::Empty));
        for bad in ["abc", "+1", "-1", " 1", "1 ", "0x10", "1.0", "1e3", "١"] {
            assert_eq!(
                parse_id(bad.as_bytes()),
                Err(IdError::NotANumber(bad.to_string())),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_id(b"18446744073709551616"),
            Err(IdError::TooLarge("18446744073709551616".to_string()))
        );
        // Not a number wins over too large.
        assert!(matches!(
            parse_id(b"99999999999999999999999x"),
            Err(IdError::NotANumber(_))
        ));
    }

    #[test]
    fn messages() {
        let cases = [
            (parse_id(b""), "empty id"),
            (parse_id(b"abc"), "id 'abc' is not a number"),
            (
                parse_id(b"18446744073709551616"),
                "id '18446744073709551616' is larger than 18446744073709551615",
            ),
            (
                parse_id_list(&ids_text(1..=65), 64).map(|_| 0),
                "too many ids: 65 (at most 64)",
            ),
        ];
        for (result, message) in cases {
            assert_eq!(result.unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn shown_text_is_bounded_and_printable() {
        let long = "x".repeat(100);
        assert_eq!(
            parse_id(long.as_bytes()),
            Err(IdError::NotANumber(format!("{}...", "x".repeat(32))))
        );
        assert_eq!(
            parse_id(b"1\r\nX-Evil: 1\0"),
            Err(IdError::NotANumber("1\\r\\nX-Evil: 1\\u{0}".to_string()))
        );
        assert_eq!(
            parse_id(b"\xff1"),
            Err(IdError::NotANumber("\u{fffd}1".to_string()))
        );
        let message = parse_id(&[b'\n'; 100]).unwrap_err().to_string();
        assert!(!message.chars().any(char::is_control), "{message:?}");
    }

    #[test]
    fn parses_lists() {
        assert_eq!(parse_id_list(b"1", 64), Ok(vec![1]));
        assert_eq!(parse_id_list(b"1,2,3", 64), Ok(vec![1, 2, 3]));
        assert_eq!(parse_id_list(b"3,1,3,2,1", 64), Ok(vec![3, 1, 2]));
        // Duplicates do not count against max.
        assert_eq!(parse_id_list(b"5,5,5,5,5", 1), Ok(vec![5]));
        assert_eq!(parse_id_list(&ids_text(1..=64), 64).unwrap().len(), 64);
    }

    #[test]
    fn refuses_lists() {
        for bad in ["", ",", "1,,2", "1,", ",1"] {
            assert_eq!(
                parse_id_list(bad.as_bytes(), 64),
                Err(IdError::Empty),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_id_list(b"1,x,2", 64),
            Err(IdError::NotANumber("x".to_string()))
        );
        assert_eq!(
            parse_id_list(b"1,2,3,1", 2),
            Err(IdError::TooMany { count: 3, max: 2 })
        );
        assert_eq!(
            parse_id_list(b"1", 0),
            Err(IdError::TooMany { count: 1, max: 0 })
        );
        // A bad element is reported even after the count is exceeded.
        assert_eq!(parse_id_list(b"1,2,3,", 2), Err(IdError::Empty));
    }

    fn ids_text(ids: impl Iterator<Item = u64>) -> Vec<u8> {
        ids.map(|id| id.to_string())
            .collect::<Vec<_>>()
            .join(",")
            .into_bytes()
    }
}
