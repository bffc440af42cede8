//! Subscriber and publisher authentication (README: "Auth and origins"). Pure: no I/O, no clock.
//!
//! - Subscribers present a JWT (HS256, signed with `--auth-secret`) in `Authorization: Bearer
//!   <jwt>` or `?token=<jwt>`; [`token_from`] picks it, [`Auth::check`] checks it against the ids
//!   of the path at a time the caller supplies.
//! - Publishers present `Authorization: Bearer <secret>`; [`bearer_matches`] compares it with
//!   `--publish-secret` in constant time.
//!
//! Claims: `exp` (required, seconds since the epoch, no leeway: the token is expired from the
//! second `exp` on), `sub` (one id) and `ids` (an array of ids); an id is a JSON number or a
//! decimal string. Other claims (`aud`, `iss`, `nbf`, ...) are ignored.

use std::fmt;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use subtle::ConstantTimeEq;

/// Checks subscribers' JWTs: HS256 only, `exp` required, no leeway, no `aud`/`iss` checks.
#[derive(Clone)]
pub struct Auth {
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for Auth {
    // Never print the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

/// Why a subscribe was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No token in the header or the query.
    Missing,
    /// Malformed, bad signature, other algorithm, bad or missing claims: a short reason, which
    /// never holds the token or the secret.
    Invalid(String),
    /// `exp` is not after the current time.
    Expired,
    /// The token is valid but does not allow this id (the first id of the path it does not
    /// allow).
    Forbidden(u64),
}

impl AuthError {
    /// The answer: status, reason, and the `WWW-Authenticate` challenge where there is one.
    pub fn http_error(&self) -> comet_http::Error {
        let error = comet_http::Error::new(comet_http::Status(self.status()), self.reason());
        match self.www_authenticate() {
            Some(challenge) => error.with_header("WWW-Authenticate", challenge),
            None => error,
        }
    }

    /// The HTTP status: `401` for a missing, invalid or expired token, `403` for a forbidden id.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Missing | AuthError::Invalid(_) | AuthError::Expired => 401,
            AuthError::Forbidden(_) => 403,
        }
    }

    /// One line for the answer's body, e.g. `invalid token: bad signature`.
    pub fn reason(&self) -> String {
        match self {
            AuthError::Missing => "missing token".to_owned(),
            AuthError::Invalid(why) => format!("invalid token: {why}"),
            AuthError::Expired => "token expired".to_owned(),
            AuthError::Forbidden(id) => format!("token does not allow id {id}"),
        }
    }

    /// The value of the `WWW-Authenticate` header to send, if any (a `401` always has one).
    pub fn www_authenticate(&self) -> Option<&'static str> {
        match self {
            AuthError::Missing | AuthError::Invalid(_) => Some("Bearer"),
            AuthError::Expired => {
                Some(r#"Bearer error="invalid_token", error_description="token expired""#)
            }
            AuthError::Forbidden(_) => None,
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason())
    }
}

impl std::error::Error for AuthError {}

/// A subscriber token's claims (unknown claims are ignored).
#[derive(Deserialize)]
struct Claims {
    /// Any JSON here; jsonwebtoken's required-claim check has already insisted on an unsigned
    /// integer by the time we read it.
    #[serde(default)]
    exp: Option<serde_json::Value>,
    #[serde(default)]
    sub: Option<Id>,
    #[serde(default)]
    ids: Option<Vec<Id>>,
}

/// An id in a claim: a JSON unsigned integer or a decimal string of one (digits only).
struct Id(u64);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Id, D::Error> {
        struct IdVisitor;

        impl Visitor<'_> for IdVisitor {
            type Value = Id;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an id: a non-negative integer or a decimal string")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id, E> {
                Ok(Id(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id, E> {
                u64::try_from(v)
                    .map(Id)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                let digits = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
                match v.parse::<u64>() {
                    Ok(id) if digits => Ok(Id(id)),
                    _ => Err(E::invalid_value(de::Unexpected::Other("a string"), &self)),
                }
            }
        }

        deserializer.deserialize_any(IdVisitor)
    }
}

impl Auth {
    /// Checks tokens signed (HS256) with `secret`.
    pub fn new(secret: &[u8]) -> Auth {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp"]);
        validation.leeway = 0;
        validation.reject_tokens_expiring_in_less_than = 0;
        // jsonwebtoken reads the clock itself; `check` compares `exp` with the caller's time.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.aud = None;
        validation.iss = None;
        validation.sub = None;
        Auth {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Checks `token` for subscribing to `ids` at `now_s` (seconds since the epoch). In order:
    /// missing, invalid (shape, header, algorithm, signature, claims), expired (`now_s >= exp`),
    /// then the first id of `ids` that neither `sub` nor `ids` allows. A valid token gives its
    /// `exp`: the subscription ends then.
    pub fn check(&self, token: Option<&[u8]>, ids: &[u64], now_s: u64) -> Result<u64, AuthError> {
        let token = match token {
            Some(t) if !t.is_empty() => t,
            _ => return Err(AuthError::Missing),
        };
        // Parse the header alone first, so that its errors (including `alg` values jsonwebtoken
        // does not know, such as `none`) read as such and not as bad claims.
        if let Err(e) = jsonwebtoken::decode_header(token) {
            let why = match e.kind() {
                ErrorKind::Json(_) => "bad header or unsupported algorithm",
                _ => "malformed",
            };
            return Err(AuthError::Invalid(why.to_owned()));
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::Invalid(invalid_reason(e.kind())))?
            .claims;

        let exp = claims.exp.as_ref().and_then(serde_json::Value::as_u64);
        let Some(exp) = exp else {
            return Err(AuthError::Invalid("missing or malformed exp".to_owned()));
        };
        if now_s >= exp {
            return Err(AuthError::Expired);
        }

        let sub = claims.sub.map(|id| id.0);
        let allowed = claims.ids.as_deref().unwrap_or(&[]);
        match ids
            .iter()
            .find(|&&id| sub != Some(id) && !allowed.iter().any(|a| a.0 == id))
        {
            Some(&id) => Err(AuthError::Forbidden(id)),
            None => Ok(exp),
        }
    }
}

/// A short reason for a failed decode, without the token's content.
fn invalid_reason(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidSignature => "bad signature".to_owned(),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "unsupported algorithm".to_owned()
        }
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            "malformed".to_owned()
        }
        ErrorKind::Json(_) => "bad claims".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
            format!("missing or malformed {claim}")
        }
        _ => "rejected".to_owned(),
    }
}

/// Picks a subscriber's token: the `Authorization: Bearer <t>` header value wins over the
/// `token=` query parameter; see [`comet_http::token_from`] (with the other parsers of request
/// bytes, so that it is fuzzed with them).
pub fn token_from<'a>(
    authorization: Option<&'a [u8]>,
    query_token: Option<&'a [u8]>,
) -> Option<&'a [u8]> {
    comet_http::token_from(authorization, query_token)
}

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
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"s3cret-for-tests";
    const NOW: u64 = 1_732_600_000;

    fn token_alg(alg: Algorithm, secret: &[u8], claims: serde_json::Value) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn token(claims: serde_json::Value) -> String {
        token_alg(Algorithm::HS256, SECRET, claims)
    }

    fn check(token: &str, ids: &[u64]) -> Result<(), AuthError> {
        Auth::new(SECRET)
            .check(Some(token.as_bytes()), ids, NOW)
            .map(drop)
    }

    fn invalid(r: Result<(), AuthError>) -> String {
        match r {
            Err(AuthError::Invalid(why)) => why,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn valid_for_sub() {
        let t = token(json!({"exp": NOW + 60, "sub": "42"}));
        assert_eq!(check(&t, &[42]), Ok(()));
        // A number is accepted too.
        let t = token(json!({"exp": NOW + 60, "sub": 42}));
        assert_eq!(check(&t, &[42]), Ok(()));
        assert_eq!(check(&t, &[43]), Err(AuthError::Forbidden(43)));
    }

    #[test]
    fn valid_for_ids_numbers_and_strings() {
        let t = token(json!({"exp": NOW + 60, "ids": [1, "2", 3, "18446744073709551615"]}));
        assert_eq!(check(&t, &[1, 2, 3]), Ok(()));
        assert_eq!(check(&t, &[3, 1]), Ok(()));
        assert_eq!(check(&t, &[u64::MAX]), Ok(()));
        assert_eq!(check(&t, &[]), Ok(()));
    }

    #[test]
    fn sub_and_ids_are_united() {
        let t = token(json!({"exp": NOW + 60, "sub": "7", "ids": [8]}));
        assert_eq!(check(&t, &[7, 8]), Ok(()));
        assert_eq!(check(&t, &[8, 7, 9]), Err(AuthError::Forbidden(9)));
    }

    #[test]
    fn subset_and_superset_of_path_ids() {
        let t = token(json!({"exp": NOW + 60, "ids": [1, 2, 3, 4]}));
        // The token allows more than the path asks: fine.
        assert_eq!(check(&t, &[2, 4]), Ok(()));
        // The path asks for more than the token allows: the first missing id.
        let e = check(&t, &[1, 5, 2, 6]).unwrap_err();
        assert_eq!(e, AuthError::Forbidden(5));
        assert_eq!(e.status(), 403);
        assert_eq!(e.reason(), "token does not allow id 5");
        assert_eq!(e.www_authenticate(), None);
    }

    #[test]
    fn token_allowing_nothing_is_forbidden() {
        let t = token(json!({"exp": NOW + 60}));
        assert_eq!(check(&t, &[9, 10]), Err(AuthError::Forbidden(9)));
        let t = token(json!({"exp": NOW + 60, "ids": [], "sub": null}));
        assert_eq!(check(&t, &[9]), Err(AuthError::Forbidden(9)));
    }

    #[test]
    fn unknown_claims_are_ignored() {
        let t = token(json!({
            "exp": NOW + 60, "sub": "1", "aud": "somebody", "iss": "someone",
            "nbf": NOW + 1000, "role": {"admin": true},
        }));
        assert_eq!(check(&t, &[1]), Ok(()));
    }

    #[test]
    fn expired() {
        let t = token(json!({"exp": NOW - 1, "sub": "1"}));
        let e = check(&t, &[1]).unwrap_err();
        assert_eq!(e, AuthError::Expired);
        assert_eq!(e.status(), 401);
        assert_eq!(e.reason(), "token expired");
        assert_eq!(
            e.www_authenticate(),
            Some(r#"Bearer error="invalid_token", error_description="token expired""#)
        );
        // No leeway: expired from the second `exp` on; expiry comes before the id check.
        let t = token(json!({"exp": NOW, "sub": "1"}));
        assert_eq!(check(&t, &[2]), Err(AuthError::Expired));
        let t = token(json!({"exp": NOW + 1, "sub": "1"}));
        assert_eq!(check(&t, &[1]), Ok(()));
        // The caller's time is what counts, not the clock; a valid token gives its `exp`.
        let t = token(json!({"exp": 1000, "sub": "1"}));
        assert_eq!(
            Auth::new(SECRET).check(Some(t.as_bytes()), &[1], 999),
            Ok(1000)
        );
    }

    #[test]
    fn exp_missing_or_malformed_is_invalid() {
        let why = invalid(check(&token(json!({"sub": "1"})), &[1]));
        assert_eq!(why, "missing or malformed exp");
        for exp in [json!("1999999999"), json!(-5), json!(1.5e9), json!(null)] {
            let t = token(json!({"exp": exp, "sub": "1"}));
            assert_eq!(
                invalid(check(&t, &[1])),
                "missing or malformed exp",
                "{exp}"
            );
        }
    }

    #[test]
    fn wrong_secret_is_invalid() {
        let t = token_alg(
            Algorithm::HS256,
            b"another secret",
            json!({"exp": NOW + 60, "sub": "1"}),
        );
        let e = check(&t, &[1]).unwrap_err();
        assert_eq!(e, AuthError::Invalid("bad signature".to_owned()));
        assert_eq!(e.status(), 401);
        assert_eq!(e.reason(), "invalid token: bad signature");
        assert_eq!(e.www_authenticate(), Some("Bearer"));
        assert!(!e.reason().contains(&t));
    }

    #[test]
    fn other_algorithms_are_invalid() {
        let claims = json!({"exp": NOW + 60, "sub": "1"});
        let t = token_alg(Algorithm::HS512, SECRET, claims.clone());
        assert_eq!(invalid(check(&t, &[1])), "unsupported algorithm");
        let t = token_alg(Algorithm::HS384, SECRET, claims.clone());
        assert_eq!(invalid(check(&t, &[1])), "unsupported algorithm");

        // `alg: none`, with and without a signature, on a payload that is otherwise fine.
        let good = token(claims);
        let mut parts = good.split('.');
        let (_, payload, sig) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
        for t in [
            format!("{none}.{payload}."),
            format!("{none}.{payload}.{sig}"),
        ] {
            assert_eq!(
                invalid(check(&t, &[1])),
                "bad header or unsupported algorithm"
            );
        }
        // RS256 in the header with an HMAC signature (key confusion).
        let rs = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9"; // {"alg":"RS256","typ":"JWT"}
        let t = format!("{rs}.{payload}.{sig}");
        assert_eq!(invalid(check(&t, &[1])), "unsupported algorithm");
    }

    #[test]
    fn garbage_is_invalid() {
        for t in [
            "x",
            "a.b",
            "a.b.c",
            "....",
            "not a jwt at all",
            "\u{e9}.\u{e9}.\u{e9}",
        ] {
            let e = check(t, &[1]).unwrap_err();
            assert!(matches!(e, AuthError::Invalid(_)), "{t}: {e:?}");
            assert_eq!(e.status(), 401);
        }
        let t = [0xffu8, b'.', 0xfe, b'.', 0xfd];
        let r = Auth::new(SECRET).check(Some(&t), &[1], NOW);
        assert!(matches!(r, Err(AuthError::Invalid(_))), "{r:?}");
        // A valid header over a payload that is not JSON (with a signature that cannot match).
        let hs = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";
        let t = format!("{hs}.bm90IGpzb24.AAAA"); // "not json"
        assert!(matches!(check(&t, &[1]), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn bad_ids_are_invalid() {
        let bad = [
            json!({"ids": [-1]}),
            json!({"ids": ["-1"]}),
            json!({"ids": ["+1"]}),
            json!({"ids": [" 1"]}),
            json!({"ids": [""]}),
            json!({"ids": ["abc"]}),
            json!({"ids": [1.5]}),
            json!({"ids": ["18446744073709551616"]}),
            json!({"ids": [true]}),
            json!({"ids": "1"}),
            json!({"sub": "alice"}),
            json!({"sub": -3}),
            json!({"sub": ["1"]}),
        ];
        for extra in bad {
            let mut claims = extra.clone();
            claims["exp"] = json!(NOW + 60);
            let t = token(claims);
            assert_eq!(invalid(check(&t, &[1])), "bad claims", "{extra}");
        }
    }

    #[test]
    fn missing_token() {
        let auth = Auth::new(SECRET);
        for t in [None, Some(&b""[..])] {
            let e = auth.check(t, &[1], NOW).unwrap_err();
            assert_eq!(e, AuthError::Missing);
            assert_eq!(e.status(), 401);
            assert_eq!(e.reason(), "missing token");
            assert_eq!(e.www_authenticate(), Some("Bearer"));
        }
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

    #[test]
    fn debug_hides_the_key() {
        let s = format!("{:?}", Auth::new(SECRET));
        assert!(!s.contains("s3cret"), "{s}");
    }
}
