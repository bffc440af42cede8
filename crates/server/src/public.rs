//! What to do with a request on the public (subscriber) listener: pure, tested without sockets.

use comet_http::{self as http, Body, Endpoint, Format, Listener, Method, Parsed};
use comet_router::{parse_id_list, Id};

use crate::config::Config;

#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// The head is not complete yet.
    NeedMore,
    /// `GET /test/<ids>` or `GET /events/<ids>`: log in and stream.
    Subscribe { ids: Vec<Id>, format: Format },
    /// `HEAD` of a stream: the head only, then close.
    Head { format: Format },
    /// Answer the error and close.
    Reject { error: http::Error, head_only: bool },
}

pub fn decide(buf: &[u8], cfg: &Config) -> Action {
    let req = match http::parse_request(buf, &cfg.limits) {
        Parsed::Partial => return Action::NeedMore,
        Parsed::Invalid(error) => {
            return Action::Reject {
                error,
                head_only: false,
            }
        }
        Parsed::Complete(req) => req,
    };
    let head_only = req.method == Method::Head;
    let reject = |status, reason: String| Action::Reject {
        error: http::Error::new(status, reason),
        head_only,
    };
    let (ids, sse) = match http::route(Listener::Public, req.method, req.path) {
        Ok(Endpoint::Test(ids)) => (ids, false),
        Ok(Endpoint::Events(ids)) => (ids, true),
        Ok(_) => unreachable!("the public listener routes only stream endpoints"),
        Err(error) => return Action::Reject { error, head_only },
    };
    let ids = match parse_id_list(ids, cfg.ids_per_connection_max) {
        Ok(ids) => ids,
        Err(e) => return reject(http::Status::BAD_REQUEST, e.to_string()),
    };
    if !matches!(req.body, Body::None | Body::Length(0)) {
        return reject(
            http::Status::BAD_REQUEST,
            "a subscribe request has no body".into(),
        );
    }
    let format = Format::for_request(sse, req.version);
    if head_only {
        Action::Head { format }
    } else {
        Action::Subscribe { ids, format }
    }
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

    fn cfg() -> Config {
        let cli = Cli::parse_from(["comet"]);
        Config::new(&cli.serve, 20_000).unwrap()
    }

    fn status(action: Action) -> u16 {
        match action {
            Action::Reject { error, .. } => error.status.0,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn subscribe_to_one_and_several_ids() {
        let cfg = cfg();
        assert_eq!(
            decide(b"GET /test/123 HTTP/1.1\r\nHost: x\r\n\r\n", &cfg),
            Action::Subscribe {
                ids: vec![123],
                format: Format::Chunked
            }
        );
        assert_eq!(
            decide(b"GET /events/1,2,2,3 HTTP/1.1\r\nHost: x\r\n\r\n", &cfg),
            Action::Subscribe {
                ids: vec![1, 2, 3],
                format: Format::Sse
            }
        );
        assert_eq!(
            decide(b"GET /test/7 HTTP/1.0\r\n\r\n", &cfg),
            Action::Subscribe {
                ids: vec![7],
                format: Format::Raw
            }
        );
    }

    #[test]
    fn partial_head_needs_more() {
        assert_eq!(
            decide(b"GET /test/1 HTTP/1.1\r\nHost: x\r\nHo", &cfg()),
            Action::NeedMore
        );
    }

    #[test]
    fn head_gets_the_head_only() {
        assert_eq!(
            decide(b"HEAD /test/1 HTTP/1.1\r\nHost: x\r\n\r\n", &cfg()),
            Action::Head {
                format: Format::Chunked
            }
        );
    }

    #[test]
    fn bad_requests() {
        let cfg = cfg();
        assert_eq!(
            status(decide(b"GET /test/abc HTTP/1.1\r\nHost: x\r\n\r\n", &cfg)),
            400
        );
        assert_eq!(
            status(decide(b"GET /test/ HTTP/1.1\r\nHost: x\r\n\r\n", &cfg)),
            400
        );
        assert_eq!(
            status(decide(
                b"GET /test/99999999999999999999 HTTP/1.1\r\nHost: x\r\n\r\n",
                &cfg
            )),
            400
        );
        assert_eq!(
            status(decide(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", &cfg)),
            404
        );
        assert_eq!(
            status(decide(b"POST /test/1 HTTP/1.1\r\nHost: x\r\n\r\n", &cfg)),
            405
        );
        assert_eq!(
            status(decide(b"POST /send/1 HTTP/1.1\r\nHost: x\r\n\r\n", &cfg)),
            404
        );
        assert_eq!(status(decide(b"GARBAGE\r\n\r\n", &cfg)), 400);
        assert_eq!(
            status(decide(
                b"GET /test/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
                &cfg
            )),
            400
        );
        let huge = format!(
            "GET /test/1 HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
            "a".repeat(9000)
        );
        assert_eq!(status(decide(huge.as_bytes(), &cfg)), 431);
        let many: String = (0..65).map(|i| format!("{i},")).collect();
        let many = format!(
            "GET /test/{} HTTP/1.1\r\nHost: x\r\n\r\n",
            many.trim_end_matches(',')
        );
        assert_eq!(status(decide(many.as_bytes(), &cfg)), 400);
    }
}
