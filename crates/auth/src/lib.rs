//! Subscriber and publisher authentication (README: "Auth and origins"). Pure: no I/O, no clock
//! (the caller passes the time), so that the fuzz targets in `crates/http/fuzz` can reach it.
//!
//! # Layout
//!
//! - [`jwt`]: subscribers' tokens. [`Auth::verify`] decodes a compact JWS (HS256, signed with
//!   `--auth-secret`), checks its signature and `exp` against the caller's time and gives the
//!   ids it allows ([`Grant`]); [`Auth::check`] also matches them against the ids of the path.
//!   Tokens longer than [`TOKEN_BYTES_MAX`] are refused before any decoding.
//! - [`secret`]: publishers' `Authorization: Bearer <secret>`: [`bearer_matches`] compares it
//!   with `--publish-secret` in constant time.
//! - [`AuthError`] (here): why a subscribe was refused, and the HTTP answer for it.
//!
//! Where a token is found (`Authorization: Bearer` or `?token=`) is `comet_http::token_from`'s
//! business; the server (`crates/server/src/auth.rs`) joins the two.
#![forbid(unsafe_code)]

pub mod jwt;
pub mod secret;

use std::fmt;

pub use jwt::{Auth, Grant, TOKEN_BYTES_MAX};
pub use secret::bearer_matches;

/// Why a subscribe was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No token in the header or the query.
    Missing,
    /// Too long, malformed, bad signature, other algorithm, bad or missing claims: a short
    /// reason, which never holds the token or the secret.
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
