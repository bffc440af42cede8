//! What to do with a request on the public (subscriber) listener: pure, tested without sockets.

use comet_http::{self as http, Body, Endpoint, Format, Listener, Method, Parsed};
use comet_router::{parse_id_list, Id};

use crate::config::Config;

/// A subscribe request, checked: ids, auth, origin, position.
#[derive(Debug, PartialEq, Eq)]
pub struct Subscribe {
    pub ids: Vec<Id>,
    pub format: Format,
    /// The client's position, one per id (`?since=` or `Last-Event-ID`).
    pub since: Option<Vec<u64>>,
    /// `Access-Control-Allow-Origin` for the answer.
    pub allow_origin: Box<[u8]>,
    /// The WebSocket handshake's `Sec-WebSocket-Key`.
    pub ws_key: Option<Box<[u8]>>,
    /// Long-poll: the connection stays open for the next poll.
    pub keep_alive: bool,
    /// The token's `exp` (seconds since the epoch) with `--auth-secret`: the subscription ends
    /// then.
    pub exp_s: Option<u64>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// The head is not complete yet.
    NeedMore,
    /// A stream or a long-poll: log in and stream.
    Subscribe(Box<Subscribe>),
    /// `HEAD` of a stream: the head only, then close.
    Head {
        format: Format,
        allow_origin: Box<[u8]>,
    },
    /// `OPTIONS`: the CORS preflight answer, then close.
    Preflight { allow_origin: Box<[u8]> },
    /// `GET /` with `--demo`.
    Demo { head_only: bool },
    /// `/healthz` with `--public-health`: `200 ok`, then close.
    Health { head_only: bool },
    /// `/readyz` with `--public-health`: the worker's readiness, then close.
    Ready { head_only: bool },
    /// Answer the error and close.
    Reject {
        error: http::Error,
        head_only: bool,
        allow_origin: Box<[u8]>,
    },
}

/// `now_s`: seconds since the Unix epoch, for token expiry.
pub fn decide(buf: &[u8], cfg: &Config, now_s: u64) -> Action {
    let req = match http::parse_request(buf, &cfg.limits) {
        Parsed::Partial => return Action::NeedMore,
        Parsed::Invalid(error) => {
            return Action::Reject {
                error,
                head_only: false,
                allow_origin: Box::new(*b"*"),
            }
        }
        Parsed::Complete(req) => req,
    };
    let head_only = req.method == Method::Head;
    let Some(allow_origin) = cfg.origins.allow(req.origin) else {
        return Action::Reject {
            error: http::Error::new(http::Status::FORBIDDEN, "origin not allowed"),
            head_only,
            allow_origin: Box::new(*b"*"),
        };
    };
    let allow_origin: Box<[u8]> = allow_origin.into();
    let reject = |error: http::Error| Action::Reject {
        error,
        head_only,
        allow_origin: allow_origin.clone(),
    };
    let bad = |reason: String| reject(http::Error::new(http::Status::BAD_REQUEST, reason));
    let (ids, format) = match http::route(Listener::Public, req.method, req.path) {
        Ok(Endpoint::Test(ids)) => (ids, Format::for_request(false, req.version)),
        Ok(Endpoint::Events(ids)) => (ids, Format::for_request(true, req.version)),
        Ok(Endpoint::Ws(ids)) => (ids, Format::Ws),
        Ok(Endpoint::Poll(ids)) => (ids, Format::Poll),
        Ok(Endpoint::Preflight) => return Action::Preflight { allow_origin },
        Ok(Endpoint::Root) if cfg.demo => return Action::Demo { head_only },
        Ok(Endpoint::Root) => {
            return reject(http::Error::new(
                http::Status::NOT_FOUND,
                "no such endpoint: / (the demo page is served with --demo)",
            ))
        }
        Ok(Endpoint::Health) if cfg.public_health => return Action::Health { head_only },
        Ok(Endpoint::Ready) if cfg.public_health => return Action::Ready { head_only },
        Ok(Endpoint::Health | Endpoint::Ready) => {
            return reject(http::Error::new(
                http::Status::NOT_FOUND,
                format!(
                "no such endpoint: {} (served here with --public-health, and on the publish port)",
                String::from_utf8_lossy(req.path)
            ),
            ))
        }
        Ok(_) => unreachable!("the public listener routes no publish endpoints"),
        Err(error) => return reject(error),
    };
    let ids = match parse_id_list(ids, cfg.ids_per_connection_max) {
        Ok(ids) => ids,
        Err(e) => return bad(e.to_string()),
    };
    if !matches!(req.body, Body::None | Body::Length(0)) {
        return bad("a subscribe request has no body".into());
    }
    let ws_key = if format == Format::Ws {
        if !req.websocket || req.method != Method::Get || req.version != http::Version::Http11 {
            return bad(
                "/ws/ needs a WebSocket handshake (GET, Upgrade: websocket, Connection: Upgrade)"
                    .into(),
            );
        }
        if req.websocket_version != Some(&b"13"[..]) {
            return reject(
                http::Error::new(
                    http::Status::UPGRADE_REQUIRED,
                    "unsupported Sec-WebSocket-Version (comet speaks 13)",
                )
                .with_header("Sec-WebSocket-Version", "13"),
            );
        }
        match req.websocket_key {
            // 16 random bytes in base64 (RFC 6455 4.1).
            Some(key) if key.len() == 24 && key.ends_with(b"==") => Some(Box::from(key)),
            _ => return bad("missing or malformed Sec-WebSocket-Key".into()),
        }
    } else {
        None
    };
    let mut exp_s = None;
    if let Some(auth) = &cfg.auth {
        let query_token = http::query_param(req.query, b"token");
        let token = crate::auth::token_from(req.authorization, query_token.as_deref());
        match auth.check(token, &ids, now_s) {
            Ok(exp) => exp_s = Some(exp),
            Err(e) => return reject(e.http_error()),
        }
    }
    // The seed's format carries no positions.
    let since = if matches!(format, Format::Chunked | Format::Raw) {
        None
    } else {
        let query_since = http::query_param(req.query, b"since");
        match query_since.as_deref().or(req.last_event_id) {
            None => None,
            Some(text) => match http::parse_position(text, ids.len(), cfg.epoch) {
                Some(pos) => Some(pos),
                None => {
                    return bad(format!(
                        "bad position {:?}: one number, or one per id ({}), comma-separated",
                        String::from_utf8_lossy(&text[..text.len().min(64)]),
                        ids.len()
                    ))
                }
            },
        }
    };
    if head_only {
        if matches!(format, Format::Ws | Format::Poll) {
            return reject(http::Error::method_not_allowed(
                "GET",
                "method not allowed: use GET",
            ));
        }
        return Action::Head {
            format,
            allow_origin,
        };
    }
    Action::Subscribe(Box::new(Subscribe {
        ids,
        format,
        since,
        allow_origin,
        ws_key,
        keep_alive: req.keep_alive,
        exp_s,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn cfg_with(args: &[&str]) -> Config {
        let cli = Cli::parse_from(std::iter::once("comet").chain(args.iter().copied()));
        Config::new(&cli.serve, 20_000).unwrap()
    }

    fn cfg() -> Config {
        cfg_with(&[])
    }

    const NOW: u64 = 1_800_000_000;

    fn status(action: Action) -> u16 {
        match action {
            Action::Reject { error, .. } => error.status.0,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn subscribe(action: Action) -> Subscribe {
        match action {
            Action::Subscribe(sub) => *sub,
            other => panic!("expected a subscription, got {other:?}"),
        }
    }

    #[test]
    fn subscribe_to_one_and_several_ids() {
        let cfg = cfg();
        let sub = subscribe(decide(
            b"GET /test/123 HTTP/1.1\r\nHost: x\r\n\r\n",
            &cfg,
            NOW,
        ));
        assert_eq!((sub.ids, sub.format), (vec![123], Format::Chunked));
        let sub = subscribe(decide(
            b"GET /events/1,2,2,3 HTTP/1.1\r\nHost: x\r\n\r\n",
            &cfg,
            NOW,
        ));
        assert_eq!((sub.ids, sub.format), (vec![1, 2, 3], Format::Sse));
        assert_eq!(&*sub.allow_origin, b"*");
        let sub = subscribe(decide(b"GET /test/7 HTTP/1.0\r\n\r\n", &cfg, NOW));
        assert_eq!((sub.ids, sub.format), (vec![7], Format::Raw));
        let sub = subscribe(decide(
            b"GET /poll/7 HTTP/1.1\r\nHost: x\r\n\r\n",
            &cfg,
            NOW,
        ));
        assert_eq!((sub.format, sub.keep_alive), (Format::Poll, true));
    }

    #[test]
    fn positions_from_the_query_or_last_event_id() {
        let cfg = cfg();
        let sub = subscribe(decide(
            b"GET /events/1,2?since=5,6 HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 9\r\n\r\n",
            &cfg,
            NOW,
        ));
        assert_eq!(sub.since, Some(vec![5, 6]));
        let sub = subscribe(decide(
            b"GET /events/1,2 HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 9\r\n\r\n",
            &cfg,
            NOW,
        ));
        assert_eq!(sub.since, Some(vec![9, 9]));
        let sub = subscribe(decide(
            b"GET /test/1?since=5 HTTP/1.1\r\nHost: x\r\n\r\n",
            &cfg,
            NOW,
        ));
        assert_eq!(sub.since, None, "the seed's format has no positions");
        for bad in [
            &b"GET /events/1,2?since=1,2,3 HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET /poll/1?since=x HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert_eq!(status(decide(bad, &cfg, NOW)), 400);
        }
    }

    fn ws_request(version: &str, key: &str) -> Vec<u8> {
        format!(
            "GET /ws/4 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Version: {version}\r\nSec-WebSocket-Key: {key}\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn websocket_handshakes() {
        let cfg = cfg();
        let sub = subscribe(decide(
            &ws_request("13", "dGhlIHNhbXBsZSBub25jZQ=="),
            &cfg,
            NOW,
        ));
        assert_eq!(sub.format, Format::Ws);
        assert_eq!(
            sub.ws_key.as_deref(),
            Some(&b"dGhlIHNhbXBsZSBub25jZQ=="[..])
        );
        match decide(&ws_request("8", "dGhlIHNhbXBsZSBub25jZQ=="), &cfg, NOW) {
            Action::Reject { error, .. } => {
                assert_eq!(error.status.0, 426);
                assert_eq!(error.header, Some(("Sec-WebSocket-Version", "13")));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(status(decide(&ws_request("13", "short"), &cfg, NOW)), 400);
        assert_eq!(
            status(decide(b"GET /ws/4 HTTP/1.1\r\nHost: x\r\n\r\n", &cfg, NOW)),
            400
        );
    }

    fn token(secret: &str, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn auth_statuses() {
        let cfg = cfg_with(&["--auth-secret", "s3cret"]);
        let get = |path: &str, header: &str| {
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{header}\r\n");
            decide(req.as_bytes(), &cfg, NOW)
        };
        let good = token("s3cret", serde_json::json!({"sub": "5", "exp": NOW + 60}));
        let sub = subscribe(get(&format!("/events/5?token={good}"), ""));
        assert_eq!(sub.exp_s, Some(NOW + 60), "the stream ends at exp");
        let open = decide(
            b"GET /events/5 HTTP/1.1\r\nHost: x\r\n\r\n",
            &self::cfg(),
            NOW,
        );
        assert_eq!(subscribe(open).exp_s, None, "without auth, no end");
        assert!(matches!(
            get("/poll/5", &format!("Authorization: Bearer {good}\r\n")),
            Action::Subscribe(_)
        ));
        match get("/events/5", "") {
            Action::Reject { error, .. } => {
                assert_eq!(error.status.0, 401);
                assert_eq!(error.header, Some(("WWW-Authenticate", "Bearer")));
            }
            other => panic!("{other:?}"),
        }
        let expired = token("s3cret", serde_json::json!({"sub": "5", "exp": NOW - 1}));
        match get(&format!("/events/5?token={expired}"), "") {
            Action::Reject { error, .. } => {
                assert_eq!(error.status.0, 401);
                assert_eq!(error.reason, "token expired");
            }
            other => panic!("{other:?}"),
        }
        let wrong = token("other", serde_json::json!({"sub": "5", "exp": NOW + 60}));
        assert_eq!(status(get(&format!("/events/5?token={wrong}"), "")), 401);
        assert_eq!(status(get(&format!("/events/5,6?token={good}"), "")), 403);
        assert_eq!(status(get(&format!("/test/6?token={good}"), "")), 403);
    }

    #[test]
    fn origins_and_preflight() {
        let cfg = cfg_with(&["--allowed-origins", "https://app.example"]);
        let get = |origin: &str| {
            let req = format!("GET /events/1 HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n\r\n");
            decide(req.as_bytes(), &cfg, NOW)
        };
        assert_eq!(
            &*subscribe(get("https://app.example")).allow_origin,
            b"https://app.example"
        );
        assert_eq!(status(get("https://evil.example")), 403);
        assert!(matches!(
            decide(
                b"OPTIONS /events/1 HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\r\n",
                &cfg,
                NOW
            ),
            Action::Preflight { .. }
        ));
        assert_eq!(
            status(decide(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &cfg, NOW)),
            404
        );
        let demo = cfg_with(&["--demo"]);
        assert_eq!(
            decide(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &demo, NOW),
            Action::Demo { head_only: false }
        );
    }

    #[test]
    fn health_checks_only_with_public_health() {
        let req = |path: &str, extra: &str| {
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").into_bytes()
        };
        assert_eq!(status(decide(&req("/healthz", ""), &cfg(), NOW)), 404);
        assert_eq!(status(decide(&req("/readyz", ""), &cfg(), NOW)), 404);
        let cfg = cfg_with(&[
            "--public-health",
            "--auth-secret",
            "s",
            "--allowed-origins",
            "https://app.example",
        ]);
        // No token needed; the origin check still applies.
        assert_eq!(
            decide(&req("/healthz", ""), &cfg, NOW),
            Action::Health { head_only: false }
        );
        let head = b"HEAD /readyz HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(decide(head, &cfg, NOW), Action::Ready { head_only: true });
        let evil = req("/readyz", "Origin: https://evil.example\r\n");
        assert_eq!(status(decide(&evil, &cfg, NOW)), 403);
    }

    #[test]
    fn partial_head_needs_more() {
        assert_eq!(
            decide(b"GET /test/1 HTTP/1.1\r\nHost: x\r\nHo", &cfg(), NOW),
            Action::NeedMore
        );
    }

    #[test]
    fn head_gets_the_head_only() {
        assert!(matches!(
            decide(b"HEAD /test/1 HTTP/1.1\r\nHost: x\r\n\r\n", &cfg(), NOW),
            Action::Head {
                format: Format::Chunked,
                ..
            }
        ));
    }

    #[test]
    fn bad_requests() {
        let cfg = cfg();
        assert_eq!(
            status(decide(
                b"GET /test/abc HTTP/1.1\r\nHost: x\r\n\r\n",
                &cfg,
                NOW
            )),
            400
        );
        assert_eq!(
            status(decide(b"GET /test/ HTTP/1.1\r\nHost: x\r\n\r\n", &cfg, NOW)),
            400
        );
        assert_eq!(
            status(decide(
                b"GET /test/99999999999999999999 HTTP/1.1\r\nHost: x\r\n\r\n",
                &cfg,
                NOW
            )),
            400
        );
        assert_eq!(
            status(decide(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", &cfg, NOW)),
            404
        );
        assert_eq!(
            status(decide(
                b"POST /test/1 HTTP/1.1\r\nHost: x\r\n\r\n",
                &cfg,
                NOW
            )),
            405
        );
        assert_eq!(
            status(decide(
                b"POST /send/1 HTTP/1.1\r\nHost: x\r\n\r\n",
                &cfg,
                NOW
            )),
            404
        );
        assert_eq!(status(decide(b"GARBAGE\r\n\r\n", &cfg, NOW)), 400);
        assert_eq!(
            status(decide(
                b"GET /test/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
                &cfg,
                NOW
            )),
            400
        );
        let huge = format!(
            "GET /test/1 HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
            "a".repeat(9000)
        );
        assert_eq!(status(decide(huge.as_bytes(), &cfg, NOW)), 431);
        let many: String = (0..65).map(|i| format!("{i},")).collect();
        let many = format!(
            "GET /test/{} HTTP/1.1\r\nHost: x\r\n\r\n",
            many.trim_end_matches(',')
        );
        assert_eq!(status(decide(many.as_bytes(), &cfg, NOW)), 400);
    }
}
