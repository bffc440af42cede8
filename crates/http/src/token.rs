//! Where a request carries a token: `Authorization: Bearer <token>` or `?token=<token>`.
//!
//! Extraction only, over the bytes of the request head; checking the token (JWT signature,
//! claims, the publish secret) is `comet-auth`'s (`crates/auth`).

/// The token of an `Authorization` header value `Bearer <token>` (scheme case-insensitive,
/// ASCII whitespace around the value and around the token ignored; the scheme ends at the first
/// space or tab); `None` for another scheme or an empty token. The token borrows `authorization`
/// and keeps any whitespace inside it.
pub fn bearer(authorization: &[u8]) -> Option<&[u8]> {
    let value = authorization.trim_ascii();
    let scheme_end = value
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(value.len());
    let (scheme, rest) = value.split_at(scheme_end);
    let token = rest.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty()).then_some(token)
}

/// Picks a subscriber's token: the `Authorization: Bearer <t>` header value (see [`bearer`])
/// wins over the `token=` query parameter (passed as is, already percent-decoded if need be).
/// An `Authorization` header with another scheme or an empty token is ignored, and so is an
/// empty query token. `None` if neither gives a token.
pub fn token_from<'a>(
    authorization: Option<&'a [u8]>,
    query_token: Option<&'a [u8]>,
) -> Option<&'a [u8]> {
    authorization
        .and_then(bearer)
        .or(query_token.filter(|t| !t.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_wins_over_query() {
        let h = Some(&b"Bearer from-header"[..]);
        let q = Some(&b"from-query"[..]);
        assert_eq!(token_from(h, q), Some(&b"from-header"[..]));
        assert_eq!(token_from(None, q), Some(&b"from-query"[..]));
        assert_eq!(token_from(h, None), Some(&b"from-header"[..]));
        assert_eq!(token_from(None, None), None);
        assert_eq!(
            token_from(Some(b"Basic dXNlcjpw"), q),
            Some(&b"from-query"[..])
        );
        assert_eq!(token_from(Some(b"Bearer \t "), q), Some(&b"from-query"[..]));
        assert_eq!(token_from(None, Some(b"")), None);
    }

    #[test]
    fn scheme_and_whitespace() {
        for h in [
            &b"bearer abc"[..],
            b"BEARER abc",
            b" \tBeArEr \t abc \r\n",
            b"Bearer\tabc\t",
        ] {
            assert_eq!(bearer(h), Some(&b"abc"[..]), "{h:?}");
        }
        assert_eq!(bearer(b"Bearer a b"), Some(&b"a b"[..]));
        for h in [
            &b""[..],
            b"Bearer",
            b"Bearerxyz",
            b"Bearer\x0cabc",
            b"Bearer:abc",
            b"Bear abc",
        ] {
            assert_eq!(bearer(h), None, "{h:?}");
        }
    }
}
