//! HS256 tokens for comet's subscriber auth (`comet serve --auth-secret`): what the tools'
//! `--jwt-secret` sends as `Authorization: Bearer <jwt>`.

use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

/// Lifetime of the tokens the tools sign. comet checks a token once, at subscribe time, so an
/// hour outlasts any connect phase.
pub const TOKEN_LIFETIME_S: u64 = 3600;

/// The claims comet's subscriber auth reads: `sub` (one id, a decimal string) or `ids`.
#[derive(Serialize)]
struct Claims<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    ids: &'a [&'a str],
    exp: u64,
}

/// Signs with one secret: built once per run, then a token per connection, never kept.
#[derive(Clone)]
pub struct Signer {
    key: EncodingKey,
}

impl Signer {
    pub fn new(secret: &str) -> Self {
        Signer {
            key: EncodingKey::from_secret(secret.as_bytes()),
        }
    }

    /// A token allowing exactly `ids` until `exp` (seconds since the epoch): `sub` for one id,
    /// `ids` for several.
    pub fn sign(&self, ids: &[&str], exp: u64) -> Result<String, String> {
        let claims = match ids {
            [one] => Claims {
                sub: Some(one),
                ids: &[],
                exp,
            },
            _ => Claims {
                sub: None,
                ids,
                exp,
            },
        };
        jsonwebtoken::encode(&Header::default(), &claims, &self.key)
            .map_err(|e| format!("sign token: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};

    fn decode(
        token: &str,
        secret: &[u8],
    ) -> Result<serde_json::Value, jsonwebtoken::errors::Error> {
        let mut v = Validation::new(Algorithm::HS256);
        v.required_spec_claims = ["exp".to_string()].into();
        jsonwebtoken::decode(token, &DecodingKey::from_secret(secret), &v).map(|t| t.claims)
    }

    #[test]
    fn tokens_name_the_ids() {
        let signer = Signer::new("s3cret");
        let exp = crate::clock::epoch_s() + TOKEN_LIFETIME_S;
        let one = signer.sign(&["42"], exp).unwrap();
        assert_eq!(
            decode(&one, b"s3cret").unwrap(),
            serde_json::json!({"sub": "42", "exp": exp})
        );
        let several = signer.sign(&["1", "2"], exp).unwrap();
        assert_eq!(
            decode(&several, b"s3cret").unwrap(),
            serde_json::json!({"ids": ["1", "2"], "exp": exp})
        );
        // HS256, in the header too, and only the secret verifies it.
        let header = jsonwebtoken::decode_header(&one).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
        assert!(decode(&one, b"other").is_err());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let token = Signer::new("s").sign(&["7"], 1).unwrap();
        let err = decode(&token, b"s").unwrap_err();
        assert_eq!(
            *err.kind(),
            jsonwebtoken::errors::ErrorKind::ExpiredSignature
        );
    }
}
