//! `route`: listener + method + path to an endpoint. Properties:
//!
//! 1. Round trip: the path of an endpoint built from arbitrary id bytes routes back to that
//!    endpoint with exactly those bytes, on its listener, for each method it takes.
//! 2. Over arbitrary paths: the id part an endpoint carries is the path's tail after the
//!    endpoint's prefix (borrowed, not copied); GET and HEAD always route alike; a refusal is
//!    404 or a 405 naming the allowed methods, with a bounded one-line reason.
#![no_main]

use arbitrary::Arbitrary;
use comet_http::{route, Endpoint, Listener, Method};
use comet_http_fuzz::{one_printable_line, within};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    /// An endpoint kind (index into `KINDS`), with the id part.
    Built { kind: u8, ids: Vec<u8>, head: bool },
    Path {
        public: bool,
        method: u8,
        path: Vec<u8>,
    },
}

/// Endpoints with an id part: listener, path prefix, method, and how to take the id back out.
type Kind = (
    Listener,
    &'static [u8],
    Method,
    fn(Endpoint<'_>) -> Option<&[u8]>,
);

const KINDS: [Kind; 6] = [
    (Listener::Public, b"/test/", Method::Get, |e| match e {
        Endpoint::Test(ids) => Some(ids),
        _ => None,
    }),
    (Listener::Public, b"/events/", Method::Get, |e| match e {
        Endpoint::Events(ids) => Some(ids),
        _ => None,
    }),
    (Listener::Public, b"/ws/", Method::Get, |e| match e {
        Endpoint::Ws(ids) => Some(ids),
        _ => None,
    }),
    (Listener::Public, b"/poll/", Method::Get, |e| match e {
        Endpoint::Poll(ids) => Some(ids),
        _ => None,
    }),
    (Listener::Publish, b"/send/", Method::Post, |e| match e {
        Endpoint::Send(id) => Some(id),
        _ => None,
    }),
    (
        Listener::Publish,
        b"/disconnect/",
        Method::Post,
        |e| match e {
            Endpoint::Disconnect(id) => Some(id),
            _ => None,
        },
    ),
];

/// "no such endpoint: " + 64 bytes of path, each shown as at most 4 bytes (`\xNN`, or 3 bytes
/// of U+FFFD; a 2-byte C1 control is 6: `\u{85}`) + "...".
const REASON_BYTES_MAX: usize = 18 + 64 * 4 + 3;

fuzz_target!(|input: Input| match input {
    Input::Built { kind, ids, head } => {
        let (listener, prefix, method, take) = KINDS[usize::from(kind) % KINDS.len()];
        let method = if head && method == Method::Get {
            Method::Head
        } else {
            method
        };
        let path = [prefix, &ids].concat();
        let endpoint = route(listener, method, &path).expect("routed");
        assert_eq!(take(endpoint), Some(&ids[..]), "{endpoint:?}");
    }
    Input::Path {
        public,
        method,
        path,
    } => {
        let listener = if public {
            Listener::Public
        } else {
            Listener::Publish
        };
        let method = [
            Method::Get,
            Method::Head,
            Method::Post,
            Method::Options,
            Method::Other,
        ][usize::from(method) % 5];
        let routed = route(listener, method, &path);
        match routed {
            Ok(endpoint) => {
                for (kind_listener, prefix, _, take) in KINDS {
                    if let Some(ids) = take(endpoint) {
                        assert_eq!(kind_listener, listener);
                        assert!(within(ids, &path));
                        let base = &prefix[..prefix.len() - 1];
                        assert!(
                            path == [prefix, ids].concat() || (path == base && ids.is_empty()),
                            "{endpoint:?}"
                        );
                    }
                }
            }
            Err(ref error) => {
                match error.status.0 {
                    404 => assert_eq!(error.allow, None),
                    405 => assert!(matches!(error.allow, Some("GET, HEAD" | "POST"))),
                    other => panic!("status {other}"),
                }
                assert!(one_printable_line(&error.reason), "{error}");
                assert!(error.reason.len() <= REASON_BYTES_MAX, "{error}");
            }
        }
        if matches!(method, Method::Get | Method::Head) {
            let other = if method == Method::Get {
                Method::Head
            } else {
                Method::Get
            };
            assert_eq!(route(listener, other, &path), routed);
        }
    }
});
