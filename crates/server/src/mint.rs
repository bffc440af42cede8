//! `comet token <ids>`: mints a subscriber token (JWT HS256) for trying auth from a shell. A
//! real deployment mints tokens in its own back end with the same secret.

use clap::Args;

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The ids the token allows, comma-separated (`5` or `5,6,7`).
    pub ids: String,
    /// The secret `comet serve --auth-secret` was given.
    #[arg(long, env = "COMET_AUTH_SECRET", hide_env_values = true)]
    pub secret: String,
    /// How long the token is valid.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: std::time::Duration,
}

/// Prints the token; returns the process exit code.
pub fn run(args: &TokenArgs) -> i32 {
    let ids = match comet_router::parse_id_list(args.ids.as_bytes(), usize::MAX) {
        Ok(ids) => ids,
        Err(e) => {
            eprintln!("comet token: {e}");
            return 2;
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match mint(args.secret.as_bytes(), &ids, now + args.ttl.as_secs()) {
        Ok(token) => {
            println!("{token}");
            0
        }
        Err(e) => {
            eprintln!("comet token: {e}");
            1
        }
    }
}

/// A token allowing `ids` until `exp` (seconds since the epoch), signed with `secret`.
fn mint(secret: &[u8], ids: &[u64], exp: u64) -> Result<String, jsonwebtoken::errors::Error> {
    let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({ "ids": ids, "exp": exp }),
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Auth, AuthError};

    #[test]
    fn a_minted_token_passes_the_server_check() {
        let token = mint(b"s", &[5, 6], 2_000).unwrap();
        let auth = Auth::new(b"s");
        assert_eq!(
            auth.check(Some(token.as_bytes()), &[6, 5], 1_999),
            Ok(2_000)
        );
        assert_eq!(
            auth.check(Some(token.as_bytes()), &[7], 1_999),
            Err(AuthError::Forbidden(7))
        );
        assert_eq!(
            auth.check(Some(token.as_bytes()), &[5], 2_000),
            Err(AuthError::Expired)
        );
    }
}
