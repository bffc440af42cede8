//! `comet_auth::Auth` (crates/auth/src/jwt.rs): subscribers' JWTs, against a reference encoder
//! written here (JSON text by hand, base64url without padding, HMAC-SHA256 from the `base64`,
//! `hmac` and `sha2` crates; not jsonwebtoken). Properties:
//!
//! 1. Round trip: a token signed with the secret from fuzz-chosen claims (`exp`; `sub` and `ids`
//!    as numbers, decimal strings, zero-padded or JSON-escaped strings, `null` or absent; ignored
//!    claims of any JSON type; any key order; JSON whitespace; a header with or without `typ`
//!    and `kid`) verifies to exactly those claims (`Grant`), and `check` answers as the model
//!    does: expired from the second `exp` on, else `Forbidden` for the first id of the path that
//!    is neither `sub` nor in `ids`, else `Ok(exp)`. The one documented exception: an `nbf` that
//!    is a non-empty object or array is `Invalid` (jsonwebtoken, see jwt.rs).
//! 2. Tampering: that token with one byte changed (header, payload, signature or a dot), cut
//!    short, extended, with whitespace before, after or inside, with `=` padding on a part, or
//!    signed with another secret (other than as an HMAC key: HMAC pads keys with zeros) is
//!    `Invalid`. Wrapped as `Authorization: Bearer <token>` with spaces and tabs around, it
//!    goes through `token_from` to the same answer as the bare token.
//! 3. Any header and payload bytes signed with the secret: an answer other than `Invalid` means
//!    the header is JSON with `"alg":"HS256"`, the payload a JSON object whose `exp` is an
//!    unsigned integer (the answer's, and after `now`), and the grant is `sub` and `ids` as
//!    the reference reads them.
//! 4. Any bytes: no panic; an answer other than `Invalid` only for a token whose third part is
//!    the reference's signature of the first two; `check` is `verify` plus the id rule.
//! 5. Length: a correctly signed token longer than `TOKEN_BYTES_MAX` is `Invalid("too long")`
//!    (decided before any decoding); one at most that long is judged as in 1.
//!
//! Every `Invalid` reason is one printable line.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use comet_auth::{Auth, AuthError, Grant, TOKEN_BYTES_MAX};
use comet_http_fuzz::one_printable_line;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

const SECRET: &[u8] = b"fuzz-secret";

#[derive(Debug)]
enum Input {
    /// Property 1 and 2.
    Claims {
        claims: Claims,
        header: HeaderForm,
        path: Vec<PathId>,
        /// `now` is `exp` plus this.
        now_delta: i16,
        tamper: Tamper,
        via_verify: bool,
    },
    /// Property 3.
    Signed {
        header: Option<Vec<u8>>,
        payload: Vec<u8>,
        path: Vec<u64>,
        now_s: u64,
        via_verify: bool,
    },
    /// Property 4.
    Raw {
        token: Vec<u8>,
        path: Vec<u64>,
        now_s: u64,
    },
    /// Property 5: a token of about `TOKEN_BYTES_MAX - 128 + length` bytes (fixed claims and
    /// a padding claim: the claims' variety is property 1's, and each variant of a long token
    /// kept in the corpus would cost a millisecond a run).
    Long { length: u8 },
}

impl<'a> Arbitrary<'a> for Input {
    /// One selector byte: `Long` for one value in 64 (its 64 KiB tokens cost a hundred times
    /// the others: 1 in 4, as a derived enum has it, ran 5 times slower), the others a third
    /// each.
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Input> {
        Ok(match u8::arbitrary(u)? % 64 {
            0 => Input::Long {
                length: u.arbitrary()?,
            },
            1..=21 => Input::Claims {
                claims: u.arbitrary()?,
                header: u.arbitrary()?,
                path: u.arbitrary()?,
                now_delta: u.arbitrary()?,
                tamper: u.arbitrary()?,
                via_verify: u.arbitrary()?,
            },
            22..=42 => Input::Signed {
                header: u.arbitrary()?,
                payload: u.arbitrary()?,
                path: u.arbitrary()?,
                now_s: u.arbitrary()?,
                via_verify: u.arbitrary()?,
            },
            _ => Input::Raw {
                token: u.arbitrary()?,
                path: u.arbitrary()?,
                now_s: u.arbitrary()?,
            },
        })
    }
}

#[derive(Arbitrary, Debug)]
struct Claims {
    exp: u64,
    sub: Field<IdForm>,
    ids: Field<Vec<IdForm>>,
    extra: Vec<(Name, Value)>,
    /// The first claim written (the others follow in turn).
    first: u8,
    /// Spaces around `:` and `,`.
    spaced: bool,
}

#[derive(Arbitrary, Debug)]
enum Field<T> {
    Absent,
    Null,
    Present(T),
}

#[derive(Arbitrary, Debug)]
enum IdForm {
    Number(u64),
    Decimal(u64),
    /// Leading zeros (0 to 3) in the string.
    ZeroPadded(u64, u8),
    /// Every digit as `\u003N`.
    Escaped(u64),
}

#[derive(Arbitrary, Debug, PartialEq, Clone, Copy)]
enum Name {
    Nbf,
    Iss,
    Aud,
    Iat,
    Jti,
    Other(u8),
}

#[derive(Arbitrary, Debug)]
enum Value {
    Null,
    Bool(bool),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Text(String),
    EmptyArray,
    EmptyObject,
    Array(Vec<u64>),
    Object(String, u64),
}

#[derive(Arbitrary, Debug)]
struct HeaderForm {
    typ: bool,
    kid: Option<String>,
    alg_last: bool,
}

#[derive(Arbitrary, Debug)]
enum Tamper {
    None,
    Flip {
        at: u16,
        xor: u8,
    },
    Truncate(u16),
    Append(Vec<u8>),
    Space {
        at: Where,
        byte: u8,
    },
    /// `=` (1 or 2 of them) after part 0, 1 or 2.
    Pad {
        part: u8,
        two: bool,
    },
    OtherSecret(Vec<u8>),
    Bearer {
        before: u8,
        between: u8,
        after: u8,
    },
}

#[derive(Arbitrary, Debug)]
enum Where {
    Before,
    After,
    AfterDot(bool),
}

fn auth() -> &'static Auth {
    static AUTH: OnceLock<Auth> = OnceLock::new();
    AUTH.get_or_init(|| Auth::new(SECRET))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn mac(secret: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// The reference encoder: `b64(header).b64(payload).b64(HMAC(secret, the two))`.
fn sign(secret: &[u8], header: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut token = format!("{}.{}", b64(header), b64(payload));
    let signature = b64(&mac(secret, token.as_bytes()));
    token.push('.');
    token.push_str(&signature);
    token.into_bytes()
}

/// The reference's check: three parts, the third the signature of the first two.
fn correctly_signed(token: &[u8]) -> bool {
    let parts: Vec<&[u8]> = token.split(|&b| b == b'.').collect();
    if parts.len() != 3 {
        return false;
    }
    let message = &token[..parts[0].len() + 1 + parts[1].len()];
    parts[2] == b64(&mac(SECRET, message)).as_bytes()
}

/// HMAC's view of a key: longer than a SHA-256 block (64 bytes) is hashed, then zero-padded.
fn hmac_key(secret: &[u8]) -> Vec<u8> {
    let mut key = if secret.len() > 64 {
        Sha256::digest(secret).to_vec()
    } else {
        secret.to_vec()
    };
    key.resize(64, 0);
    key
}

impl IdForm {
    fn id(&self) -> u64 {
        match *self {
            IdForm::Number(n)
            | IdForm::Decimal(n)
            | IdForm::ZeroPadded(n, _)
            | IdForm::Escaped(n) => n,
        }
    }

    fn json(&self) -> String {
        match *self {
            IdForm::Number(n) => n.to_string(),
            IdForm::Decimal(n) => format!("\"{n}\""),
            IdForm::ZeroPadded(n, zeros) => {
                format!("\"{}{n}\"", "0".repeat(usize::from(zeros % 4)))
            }
            IdForm::Escaped(n) => {
                let digits: String = n
                    .to_string()
                    .chars()
                    .map(|c| format!("\\u003{c}"))
                    .collect();
                format!("\"{digits}\"")
            }
        }
    }
}

impl Name {
    fn text(self) -> String {
        match self {
            Name::Nbf => "nbf".into(),
            Name::Iss => "iss".into(),
            Name::Aud => "aud".into(),
            Name::Iat => "iat".into(),
            Name::Jti => "jti".into(),
            Name::Other(n) => format!("x{n}"),
        }
    }
}

impl Value {
    fn json(&self) -> String {
        let value = match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Unsigned(n) => (*n).into(),
            Value::Signed(n) => (*n).into(),
            Value::Float(f) => (*f).into(), // NaN and infinities: null
            Value::Text(s) => s.as_str().into(),
            Value::EmptyArray => serde_json::json!([]),
            Value::EmptyObject => serde_json::json!({}),
            Value::Array(list) => list.clone().into(),
            Value::Object(key, n) => serde_json::json!({ key.as_str(): n }),
        };
        value.to_string()
    }

    /// A value jsonwebtoken's reader of `nbf` stops in the middle of (jwt.rs).
    fn breaks_nbf(&self) -> bool {
        matches!(self, Value::Array(list) if !list.is_empty()) || matches!(self, Value::Object(..))
    }
}

impl Claims {
    /// The payload's JSON text, and what `verify` owes it when not expired.
    fn encode(&self, pad: usize) -> (String, Result<Grant, ()>) {
        let mut entries = vec![("exp".to_owned(), self.exp.to_string())];
        let sub = match &self.sub {
            Field::Absent => None,
            Field::Null => {
                entries.push(("sub".into(), "null".into()));
                None
            }
            Field::Present(id) => {
                entries.push(("sub".into(), id.json()));
                Some(id.id())
            }
        };
        let ids = match &self.ids {
            Field::Absent => vec![],
            Field::Null => {
                entries.push(("ids".into(), "null".into()));
                vec![]
            }
            Field::Present(list) => {
                let texts: Vec<String> = list.iter().map(IdForm::json).collect();
                entries.push(("ids".into(), format!("[{}]", texts.join(","))));
                list.iter().map(IdForm::id).collect()
            }
        };
        let mut seen = Vec::new();
        let mut broken = false;
        for (name, value) in &self.extra {
            if seen.contains(name) {
                continue; // one of each name: duplicates are not the subject here
            }
            seen.push(*name);
            broken |= *name == Name::Nbf && value.breaks_nbf();
            entries.push((name.text(), value.json()));
        }
        if pad > 0 {
            entries.push(("pad".into(), format!("\"{}\"", "x".repeat(pad))));
        }
        let first = usize::from(self.first) % entries.len();
        entries.rotate_left(first);
        let (colon, comma) = if self.spaced {
            (" : ", " , ")
        } else {
            (":", ",")
        };
        let body: Vec<String> = entries
            .iter()
            .map(|(k, v)| format!("\"{k}\"{colon}{v}"))
            .collect();
        let text = format!("{{{}}}", body.join(comma));
        let grant = Grant {
            exp_s: self.exp,
            sub,
            ids,
        };
        (text, if broken { Err(()) } else { Ok(grant) })
    }
}

impl HeaderForm {
    fn json(&self) -> String {
        let mut entries = vec![r#""alg":"HS256""#.to_owned()];
        if self.typ {
            entries.push(r#""typ":"JWT""#.into());
        }
        if let Some(kid) = &self.kid {
            entries.push(format!(
                r#""kid":{}"#,
                serde_json::Value::from(kid.as_str())
            ));
        }
        if self.alg_last {
            entries.rotate_left(1);
        }
        format!("{{{}}}", entries.join(","))
    }
}

/// What `check` owes a token that `verify` answers `verified` for.
fn model(verified: Result<Grant, ()>, path: &[u64], now_s: u64) -> Result<u64, AuthError> {
    let Ok(grant) = verified else {
        return Err(AuthError::Invalid("bad claims".into()));
    };
    if now_s >= grant.exp_s {
        return Err(AuthError::Expired);
    }
    match path
        .iter()
        .find(|&&id| grant.sub != Some(id) && !grant.ids.contains(&id))
    {
        Some(&id) => Err(AuthError::Forbidden(id)),
        None => Ok(grant.exp_s),
    }
}

/// `Auth::check`, or (`via_verify`) `Auth::verify` and the id rule `check` applies after it:
/// `check` is `verify` plus that rule, so each input takes one of the two and pays for one
/// decoding (the Raw inputs take both and compare). Then the properties every answer has: an
/// `Invalid` reason is one printable line, and only an empty token is `Missing`. Gives
/// `verify`'s grant when it was asked and gave one.
fn check(
    token: &[u8],
    path: &[u64],
    now_s: u64,
    via_verify: bool,
) -> (Result<u64, AuthError>, Option<Grant>) {
    let (answer, grant) = if via_verify && !token.is_empty() {
        match auth().verify(token, now_s) {
            Ok(grant) => {
                let answer = match path.iter().find(|&&id| !grant.allows(id)) {
                    Some(&id) => Err(AuthError::Forbidden(id)),
                    None => Ok(grant.exp_s),
                };
                (answer, Some(grant))
            }
            Err(e) => (Err(e), None),
        }
    } else {
        (auth().check(Some(token), path, now_s), None)
    };
    if let Err(AuthError::Invalid(why)) = &answer {
        assert!(one_printable_line(why) && !why.is_empty(), "{why:?}");
    }
    assert_eq!(token.is_empty(), answer == Err(AuthError::Missing));
    (answer, grant)
}

fn is_invalid(answer: &Result<u64, AuthError>) -> bool {
    matches!(answer, Err(AuthError::Invalid(_)))
}

/// The ids of the path: some the token grants, some it may not.
#[derive(Arbitrary, Debug)]
enum PathId {
    Granted(u8),
    Any(u64),
}

fn path_ids(path: &[PathId], grant: &Result<Grant, ()>) -> Vec<u64> {
    let granted: Vec<u64> = match grant {
        Ok(g) => g.sub.iter().chain(&g.ids).copied().collect(),
        Err(()) => vec![],
    };
    path.iter()
        .map(|p| match *p {
            PathId::Granted(i) if !granted.is_empty() => granted[usize::from(i) % granted.len()],
            PathId::Granted(i) => u64::from(i),
            PathId::Any(id) => id,
        })
        .collect()
}

fuzz_target!(|input: Input| match input {
    Input::Claims {
        claims,
        header,
        path,
        now_delta,
        tamper,
        via_verify,
    } => {
        let (payload, grant) = claims.encode(0);
        let path = path_ids(&path, &grant);
        let now_s = claims.exp.saturating_add_signed(i64::from(now_delta));
        let header = header.json();
        let token = sign(SECRET, header.as_bytes(), payload.as_bytes());
        let want = model(grant.clone(), &path, now_s);
        let (answer, verified) = check(&token, &path, now_s, via_verify);
        match (&want, &answer) {
            // The reason is jsonwebtoken's; the model only knows it is not readable.
            (Err(AuthError::Invalid(_)), Err(AuthError::Invalid(why))) => {
                assert_eq!(why, "bad claims")
            }
            _ => assert_eq!(answer, want, "{payload}"),
        }
        if let (Ok(grant), true, false) = (&grant, via_verify, now_s >= claims.exp) {
            assert_eq!(verified.as_ref(), Some(grant));
        }
        tampered(&token, &tamper, &header, &payload, &path, now_s, &answer);
    }
    Input::Signed {
        header,
        payload,
        path,
        now_s,
        via_verify,
    } => {
        let header = header.unwrap_or_else(|| br#"{"alg":"HS256","typ":"JWT"}"#.to_vec());
        let token = sign(SECRET, &header, &payload);
        let (answer, verified) = check(&token, &path, now_s, via_verify);
        if is_invalid(&answer) {
            return;
        }
        let header: serde_json::Value = serde_json::from_slice(&header).expect("header is JSON");
        assert_eq!(header["alg"], "HS256");
        let claims: serde_json::Value = serde_json::from_slice(&payload).expect("payload is JSON");
        assert!(claims.is_object());
        let exp = claims["exp"].as_u64().expect("exp is an unsigned integer");
        if answer == Err(AuthError::Expired) {
            assert!(now_s >= exp);
            return;
        }
        assert!(now_s < exp);
        if let Ok(answer_exp) = answer {
            assert_eq!(answer_exp, exp);
        }
        let Some(grant) = verified else {
            return; // `check`'s answer: the grant is `verify`'s
        };
        assert_eq!(grant.exp_s, exp);
        let id = |v: &serde_json::Value| match v {
            serde_json::Value::String(s)
                if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) =>
            {
                s.parse::<u64>().ok()
            }
            v => v.as_u64(),
        };
        let sub = match &claims["sub"] {
            serde_json::Value::Null => None,
            v => Some(id(v).expect("sub is an id")),
        };
        let ids: Vec<u64> = match &claims["ids"] {
            serde_json::Value::Null => vec![],
            v => v
                .as_array()
                .expect("ids is an array")
                .iter()
                .map(|v| id(v).expect("an id"))
                .collect(),
        };
        assert_eq!((grant.sub, grant.ids), (sub, ids));
    }
    Input::Raw { token, path, now_s } => {
        let (answer, _) = check(&token, &path, now_s, false);
        assert_eq!(check(&token, &path, now_s, true).0, answer);
        if !token.is_empty() && !is_invalid(&answer) {
            assert!(
                correctly_signed(&token),
                "{answer:?} for a token the reference did not sign"
            );
        }
    }
    Input::Long { length } => {
        let target = TOKEN_BYTES_MAX - 128 + usize::from(length);
        let claims = Claims {
            exp: 2_000_000_000,
            sub: Field::Present(IdForm::Decimal(1)),
            ids: Field::Present(vec![IdForm::Number(2)]),
            extra: vec![],
            first: 0,
            spaced: false,
        };
        let header = br#"{"alg":"HS256","typ":"JWT"}"#;
        let (short, _) = claims.encode(0);
        let short_token = sign(SECRET, header, short.as_bytes()).len();
        // Each 3 bytes of JSON are 4 of base64; `,"pad":""` is 9 bytes of JSON.
        let pad = ((target.saturating_sub(short_token)) * 3 / 4).saturating_sub(9);
        let (payload, grant) = claims.encode(pad);
        let token = sign(SECRET, header, payload.as_bytes());
        assert!(
            token.len().abs_diff(target) <= 16,
            "{} for {target}",
            token.len()
        );
        // `check` alone: the token is big, and `check` is `verify` plus the id rule above.
        let answer = auth().check(Some(&token), &[1, 2], claims.exp - 1);
        if token.len() > TOKEN_BYTES_MAX {
            assert_eq!(answer, Err(AuthError::Invalid("too long".into())));
        } else {
            assert_eq!(
                grant,
                Ok(Grant {
                    exp_s: claims.exp,
                    sub: Some(1),
                    ids: vec![2]
                })
            );
            assert_eq!(answer, Ok(claims.exp));
        }
    }
});

/// Property 2 on `token`, whose answer untampered is `answer`.
fn tampered(
    token: &[u8],
    tamper: &Tamper,
    header: &str,
    payload: &str,
    path: &[u64],
    now_s: u64,
    answer: &Result<u64, AuthError>,
) {
    let bad = match tamper {
        Tamper::None => return,
        Tamper::Flip { at, xor } => {
            let mut t = token.to_vec();
            t[usize::from(*at) % token.len()] ^= (*xor).max(1);
            t
        }
        Tamper::Truncate(n) => token[..1 + usize::from(*n) % (token.len() - 1)].to_vec(),
        Tamper::Append(more) if more.is_empty() => return,
        Tamper::Append(more) => [token, more].concat(),
        Tamper::Space { at, byte } => {
            let space = [b' ', b'\t', b'\n', b'\r'][usize::from(*byte % 4)];
            let mut t = token.to_vec();
            match at {
                Where::Before => t.insert(0, space),
                Where::After => t.push(space),
                Where::AfterDot(second) => {
                    let dots: Vec<usize> = (0..t.len()).filter(|&i| t[i] == b'.').collect();
                    t.insert(dots[usize::from(*second)] + 1, space);
                }
            }
            t
        }
        Tamper::Pad { part, two } => {
            let padding: &[u8] = if *two { b"==" } else { b"=" };
            let mut t = token.to_vec();
            let ends: Vec<usize> = (0..t.len())
                .filter(|&i| t[i] == b'.')
                .chain([t.len()])
                .collect();
            let end = ends[usize::from(*part % 3)];
            t.splice(end..end, padding.iter().copied());
            t
        }
        Tamper::OtherSecret(secret) => {
            if hmac_key(secret) == hmac_key(SECRET) {
                // The same HMAC key (e.g. the secret and a zero byte): the same signature.
                assert_eq!(sign(secret, header.as_bytes(), payload.as_bytes()), token);
                return;
            }
            sign(secret, header.as_bytes(), payload.as_bytes())
        }
        Tamper::Bearer {
            before,
            between,
            after,
        } => {
            let spaces = |n: u8| -> Vec<u8> {
                (0..n % 4)
                    .map(|i| if (n >> (i + 2)) & 1 == 1 { b'\t' } else { b' ' })
                    .collect()
            };
            let value = [
                spaces(*before),
                b"Bearer ".to_vec(),
                spaces(*between),
                token.to_vec(),
                spaces(*after),
            ]
            .concat();
            let picked = comet_http::token_from(Some(&value), Some(b"junk"));
            assert_eq!(picked, Some(token));
            assert_eq!(&auth().check(picked, path, now_s), answer);
            return;
        }
    };
    assert_ne!(bad, token);
    let (got, _) = check(&bad, path, now_s, false);
    assert!(is_invalid(&got), "{tamper:?} gave {got:?}");
}
