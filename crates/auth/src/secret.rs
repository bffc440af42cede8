//! Publishers' `Authorization: Bearer <secret>` (`--publish-secret`).

use subtle::ConstantTimeEq;

/// Whether a publish request's `Authorization: Bearer <secret>` holds `secret`, compared in
/// constant time (the time shows only whether the lengths are equal: see `constant_time_eq`).
/// An empty `secret` never matches.
pub fn bearer_matches(authorization: Option<&[u8]>, secret: &[u8]) -> bool {
    let Some(given) = authorization.and_then(comet_http::bearer) else {
        return false;
    };
    !secret.is_empty() && constant_time_eq(given, secret)
}

/// `a == b` in a time that does not depend on the bytes when the lengths are equal.
///
/// `subtle` answers at once when the lengths differ, so the time tells a caller whether they
/// guessed the secret's length, never any of its bytes. That leak does not matter: the length
/// of a random secret says nothing of its content, and its strength is the bytes it has (use
/// 32 or more from a good source). Padding to a fixed length would hide it, at the cost of a
/// maximum length nobody asked for.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_matches_secret() {
        let s = b"publish-secret";
        assert!(bearer_matches(Some(b"Bearer publish-secret"), s));
        assert!(bearer_matches(Some(b"bearer  publish-secret "), s));
        assert!(!bearer_matches(Some(b"Bearer publish-secreT"), s));
        assert!(!bearer_matches(Some(b"Bearer xublish-secret"), s));
        assert!(!bearer_matches(None, s));
        assert!(!bearer_matches(Some(b""), s));
        assert!(!bearer_matches(Some(b"Bearer"), s));
        assert!(!bearer_matches(Some(b"publish-secret"), s));
        assert!(!bearer_matches(Some(b"Basic publish-secret"), s));
        // Wrong lengths, including a prefix and an extension of the secret.
        assert!(!bearer_matches(Some(b"Bearer publish-secre"), s));
        assert!(!bearer_matches(Some(b"Bearer publish-secret2"), s));
        assert!(!bearer_matches(Some(b"Bearer p"), s));
        // An empty secret matches nothing.
        assert!(!bearer_matches(Some(b"Bearer x"), b""));
        assert!(!bearer_matches(Some(b"Bearer "), b""));
    }

    #[test]
    fn constant_time_eq_is_eq() {
        for (a, b) in [
            (&b""[..], &b""[..]),
            (b"a", b"a"),
            (b"a", b"b"),
            (b"ab", b"a"),
            (b"a", b"ab"),
            (b"\0", b""),
            (b"", b"\0"),
        ] {
            assert_eq!(constant_time_eq(a, b), a == b, "{a:?} {b:?}");
        }
    }

    #[test]
    fn secrets_of_equal_length_that_differ() {
        let s = b"publish-secret";
        // Same length, one byte off at the start, the middle, the end, and every byte off.
        for given in [
            &b"Bearer Publish-secret"[..],
            b"Bearer publish_secret",
            b"Bearer publish-secrez",
            b"Bearer xxxxxxxxxxxxxx",
        ] {
            assert!(!bearer_matches(Some(given), s), "{given:?}");
        }
        assert!(!constant_time_eq(b"publish-secret", b"publish-secreu"));
        assert!(!constant_time_eq(b"\0\0", b"\0\x01"));
        assert!(constant_time_eq(b"publish-secret", b"publish-secret"));
    }

    #[test]
    fn secrets_of_different_length() {
        let s = b"publish-secret";
        // Shorter or longer, with or without the secret as a prefix, and with zero bytes (a
        // compare that pads the shorter side with zeros would take them for equal).
        for given in [
            &b"Bearer publish-secretpublish-secret"[..],
            b"Bearer publish-secret\0",
            b"Bearer \0publish-secret",
            b"Bearer ublish-secret",
            b"Bearer s",
        ] {
            assert!(!bearer_matches(Some(given), s), "{given:?}");
        }
        assert!(!constant_time_eq(b"ab", b"ab\0"));
        assert!(!constant_time_eq(b"ab\0", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
