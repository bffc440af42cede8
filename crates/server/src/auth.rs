//! Subscriber and publisher authentication (README: "Auth and origins"): the server's names for
//! what `comet-auth` checks (JWT verification, the publish secret; pure, fuzzed in
//! `crates/http/fuzz`) and `comet-http` finds (where the token is).
//!
//! - Subscribers present a JWT (HS256, signed with `--auth-secret`) in `Authorization: Bearer
//!   <jwt>` or `?token=<jwt>`; [`token_from`] picks it, [`Auth::check`] checks it against the ids
//!   of the path at a time the caller supplies.
//! - Publishers present `Authorization: Bearer <secret>`; [`bearer_matches`] compares it with
//!   `--publish-secret` in constant time.

pub use comet_auth::{bearer_matches, Auth, AuthError};

/// Picks a subscriber's token: the `Authorization: Bearer <t>` header value wins over the
/// `token=` query parameter; see [`comet_http::token_from`] (with the other parsers of request
/// bytes, so that it is fuzzed with them).
pub fn token_from<'a>(
    authorization: Option<&'a [u8]>,
    query_token: Option<&'a [u8]>,
) -> Option<&'a [u8]> {
    comet_http::token_from(authorization, query_token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"s3cret-for-tests";
    const NOW: u64 = 1_732_600_000;

    fn token(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    #[test]
    fn token_from_is_http_s() {
        // The parsing is `comet_http::token_from` (tested and fuzzed there); this is its name here.
        let h = Some(&b"Bearer from-header"[..]);
        assert_eq!(token_from(h, Some(b"q")), Some(&b"from-header"[..]));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_trimmed() {
        for h in [
            &b"bearer abc"[..],
            b"BEARER abc",
            b"BeArEr abc",
            b"  Bearer    abc  ",
            b"Bearer\tabc\t",
        ] {
            assert_eq!(token_from(Some(h), None), Some(&b"abc"[..]), "{h:?}");
        }
        // The whole thing, end to end.
        let t = token(json!({"exp": NOW + 60, "sub": "3"}));
        let h = format!("bearer {t} ");
        let picked = token_from(Some(h.as_bytes()), Some(b"junk"));
        assert_eq!(Auth::new(SECRET).check(picked, &[3], NOW), Ok(NOW + 60));
    }
}
