//! Routing: which endpoint a request names, on which listener.

use std::borrow::Cow;

use percent_encoding::percent_decode;

use crate::request::{Error, Method, Status};

/// Which listener a request came in on: the public subscriber port or the
/// publish API (loopback by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Public,
    Publish,
}

/// An endpoint with the raw id part of its path (validated by the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// `GET|HEAD /test/<ids>` on Public: the seed's chunked HTML stream.
    Test(&'a [u8]),
    /// `GET|HEAD /events/<ids>` on Public: Server-Sent Events.
    Events(&'a [u8]),
    /// `GET /ws/<ids>` on Public: WebSocket.
    Ws(&'a [u8]),
    /// `GET|HEAD /poll/<ids>` on Public: long-poll.
    Poll(&'a [u8]),
    /// `GET|HEAD /` on Public: the demo page (served only with `--demo`).
    Root,
    /// `OPTIONS` of a Public stream path: a CORS preflight.
    Preflight,
    /// `POST /send/<id>` on Publish: the body is the message.
    Send(&'a [u8]),
    /// `POST /send` on Publish: the body is [`batch_lines`](crate::batch_lines).
    SendBatch,
    /// `POST /disconnect/<id>` on Publish: close every connection of the id.
    Disconnect(&'a [u8]),
    /// `GET|HEAD /metrics` on Publish.
    Metrics,
    /// `GET|HEAD /healthz` on either listener (Public: the server decides whether to serve it):
    /// the process is alive.
    Health,
    /// `GET|HEAD /readyz` on either listener: the server should get traffic.
    Ready,
}

type MakeEndpoint<'a> = fn(&'a [u8]) -> Endpoint<'a>;

/// Bytes of an unknown path echoed in a 404 reason.
const PATH_SHOWN_BYTES_MAX: usize = 64;

/// Route by listener + method + path. `/healthz` and `/readyz` are on both listeners.
///
/// - Unknown path: 404 `no such endpoint: /x` (path truncated to 64 bytes with
///   `...`, lossy UTF-8, control characters escaped as `\xNN` / `\u{NN}`).
///   Paths of the other listener are unknown here: publishing on Public is 404.
/// - Known path, wrong method: 405 with `allow` set (`"GET, HEAD"` or `"POST"`),
///   reason `method not allowed: use GET or HEAD` / `method not allowed: use POST`.
/// - The id part is everything after `/test/` (`/events/`, `/send/`), possibly
///   empty (`/test/` and `/test` give `Test(b"")`) or with a trailing slash
///   (`/test/1/` gives `Test(b"1/")`): the caller's id parser judges it.
pub fn route<'a>(
    listener: Listener,
    method: Method,
    path: &'a [u8],
) -> Result<Endpoint<'a>, Error> {
    if path == b"/healthz" {
        return get_or_head(method).map(|()| Endpoint::Health);
    }
    if path == b"/readyz" {
        return get_or_head(method).map(|()| Endpoint::Ready);
    }
    match listener {
        Listener::Public => {
            let streams: [(&[u8], MakeEndpoint<'a>); 4] = [
                (b"/test", Endpoint::Test),
                (b"/events", Endpoint::Events),
                (b"/ws", Endpoint::Ws),
                (b"/poll", Endpoint::Poll),
            ];
            for (base, make) in streams {
                if let Some(ids) = under(path, base) {
                    if method == Method::Options {
                        return Ok(Endpoint::Preflight);
                    }
                    return get_or_head(method).map(|()| make(ids));
                }
            }
            if path == b"/" {
                return get_or_head(method).map(|()| Endpoint::Root);
            }
        }
        Listener::Publish => {
            if path == b"/send" {
                return post(method).map(|()| Endpoint::SendBatch);
            }
            if let Some(id) = path.strip_prefix(b"/send/") {
                return post(method).map(|()| Endpoint::Send(id));
            }
            if let Some(id) = path.strip_prefix(b"/disconnect/") {
                return post(method).map(|()| Endpoint::Disconnect(id));
            }
            if path == b"/metrics" {
                return get_or_head(method).map(|()| Endpoint::Metrics);
            }
        }
    }
    Err(Error::new(
        Status::NOT_FOUND,
        format!("no such endpoint: {}", shown(path)),
    ))
}

/// The value of the first `name=value` pair of a query string, percent-decoded (`+` stays
/// `+`: the values comet reads are tokens and numbers). `None` when absent or when its
/// percent-encoding is broken (the caller answers 400 where the parameter matters).
pub fn query_param<'a>(query: Option<&'a [u8]>, name: &[u8]) -> Option<Cow<'a, [u8]>> {
    let value = query?.split(|&b| b == b'&').find_map(|pair| {
        let rest = pair.strip_prefix(name)?;
        rest.strip_prefix(b"=").or(rest.is_empty().then_some(rest))
    })?;
    // `percent_decode` passes a broken escape (`%zz`, `%2`, `%+5`) through as it is, so check
    // first, simply: every `%` must be followed by two hex digits. A hex digit is never a `%`,
    // so looking at each `%` on its own is the same as a scan from the left.
    let escapes_whole = value
        .split(|&b| b == b'%')
        .skip(1)
        .all(|after| after.len() >= 2 && after[..2].iter().all(u8::is_ascii_hexdigit));
    escapes_whole.then(|| percent_decode(value).into())
}

/// The part after `base/`, or empty for `base` itself.
fn under<'a>(path: &'a [u8], base: &[u8]) -> Option<&'a [u8]> {
    let rest = path.strip_prefix(base)?;
    if rest.is_empty() {
        Some(rest)
    } else {
        rest.strip_prefix(b"/")
    }
}

fn get_or_head(method: Method) -> Result<(), Error> {
    match method {
        Method::Get | Method::Head => Ok(()),
        _ => Err(Error::method_not_allowed(
            "GET, HEAD",
            "method not allowed: use GET or HEAD",
        )),
    }
}

fn post(method: Method) -> Result<(), Error> {
    match method {
        Method::Post => Ok(()),
        _ => Err(Error::method_not_allowed(
            "POST",
            "method not allowed: use POST",
        )),
    }
}

/// A path made safe for a one-line reason: truncated, lossy UTF-8, no controls.
fn shown(path: &[u8]) -> String {
    let truncated = path.len() > PATH_SHOWN_BYTES_MAX;
    let head = &path[..path.len().min(PATH_SHOWN_BYTES_MAX)];
    let mut text = String::with_capacity(head.len() + 3);
    for c in String::from_utf8_lossy(head).chars() {
        match u32::from(c) {
            code @ 0..=0x7f if c.is_control() => text.push_str(&format!("\\x{code:02x}")),
            code if c.is_control() => text.push_str(&format!("\\u{{{code:x}}}")),
            _ => text.push(c),
        }
    }
    if truncated {
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use Listener::{Public, Publish};
    use Method::{Get, Head, Other, Post};

    #[test]
    fn public_endpoints() {
        assert_eq!(route(Public, Get, b"/test/1,2"), Ok(Endpoint::Test(b"1,2")));
        assert_eq!(route(Public, Head, b"/test/7"), Ok(Endpoint::Test(b"7")));
        assert_eq!(route(Public, Get, b"/events/9"), Ok(Endpoint::Events(b"9")));
        assert_eq!(
            route(Public, Head, b"/events/9"),
            Ok(Endpoint::Events(b"9"))
        );
    }

    #[test]
    fn real_client_endpoints() {
        assert_eq!(route(Public, Get, b"/ws/3"), Ok(Endpoint::Ws(b"3")));
        assert_eq!(route(Public, Get, b"/poll/3,4"), Ok(Endpoint::Poll(b"3,4")));
        assert_eq!(route(Public, Get, b"/"), Ok(Endpoint::Root));
        for path in [&b"/test/1"[..], b"/events/1", b"/ws/1", b"/poll/1"] {
            assert_eq!(
                route(Public, Method::Options, path),
                Ok(Endpoint::Preflight)
            );
        }
        assert_eq!(
            route(Public, Method::Options, b"/x").unwrap_err().status,
            Status::NOT_FOUND
        );
        assert_eq!(
            route(Publish, Post, b"/disconnect/8"),
            Ok(Endpoint::Disconnect(b"8"))
        );
        assert_eq!(
            route(Publish, Get, b"/disconnect/8").unwrap_err().status,
            Status::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn query_parameters() {
        let q = Some(&b"since=12%2C13&token=a.b.c&flag&x="[..]);
        assert_eq!(query_param(q, b"since").as_deref(), Some(&b"12,13"[..]));
        assert_eq!(query_param(q, b"token").as_deref(), Some(&b"a.b.c"[..]));
        assert_eq!(query_param(q, b"flag").as_deref(), Some(&b""[..]));
        assert_eq!(query_param(q, b"x").as_deref(), Some(&b""[..]));
        assert_eq!(query_param(q, b"tok"), None);
        assert_eq!(query_param(q, b"missing"), None);
        assert_eq!(query_param(None, b"since"), None);
        assert_eq!(query_param(Some(b"since=%zz"), b"since"), None);
        assert_eq!(query_param(Some(b"since=%2"), b"since"), None);
        assert_eq!(
            query_param(Some(b"a=1&since=5&since=6"), b"since").as_deref(),
            Some(&b"5"[..])
        );
    }

    #[test]
    fn query_parameter_escapes() {
        let decoded = |value: &[u8]| {
            let query = [b"v=", value].concat();
            query_param(Some(&query), b"v").map(Cow::into_owned)
        };
        // Broken escapes, including signs and spaces that a radix parse might take.
        for broken in [
            &b"%+5"[..],
            b"%-1",
            b"% 1",
            b"%1 ",
            b"%zz",
            b"%2",
            b"%",
            b"1%",
            b"%%41",
            b"%41%",
            b"%4g",
            b"%\xc3\xa9",
        ] {
            assert_eq!(
                decoded(broken),
                None,
                "{:?}",
                String::from_utf8_lossy(broken)
            );
        }
        // Hex digits in either case; `+` and unescaped bytes stay as they are.
        assert_eq!(decoded(b"%2c%2C"), Some(b",,".to_vec()));
        assert_eq!(decoded(b"%aF%Af"), Some(b"\xaf\xaf".to_vec()));
        assert_eq!(decoded(b"a+b%2Bc"), Some(b"a+b+c".to_vec()));
        assert_eq!(decoded(b"%2541"), Some(b"%41".to_vec()));
        // Multi-byte UTF-8, escaped and raw.
        assert_eq!(decoded(b"%C3%A9%e2%82%ac"), Some("é€".as_bytes().to_vec()));
        assert_eq!(decoded("é".as_bytes()), Some("é".as_bytes().to_vec()));
        // Nothing to decode: borrowed, no copy.
        let q = Some(&b"v=a+b"[..]);
        assert!(matches!(query_param(q, b"v"), Some(Cow::Borrowed(b"a+b"))));
    }

    #[test]
    fn empty_and_trailing_ids_are_for_the_caller() {
        assert_eq!(route(Public, Get, b"/test/"), Ok(Endpoint::Test(b"")));
        assert_eq!(route(Public, Get, b"/test"), Ok(Endpoint::Test(b"")));
        assert_eq!(route(Public, Get, b"/test/1/"), Ok(Endpoint::Test(b"1/")));
        assert_eq!(route(Public, Get, b"/events/"), Ok(Endpoint::Events(b"")));
        assert_eq!(route(Publish, Post, b"/send/"), Ok(Endpoint::Send(b"")));
    }

    #[test]
    fn publish_endpoints() {
        assert_eq!(route(Publish, Post, b"/send/5"), Ok(Endpoint::Send(b"5")));
        assert_eq!(route(Publish, Post, b"/send"), Ok(Endpoint::SendBatch));
        assert_eq!(route(Publish, Get, b"/metrics"), Ok(Endpoint::Metrics));
        assert_eq!(route(Publish, Head, b"/metrics"), Ok(Endpoint::Metrics));
    }

    #[test]
    fn health_endpoints_on_both_listeners() {
        for listener in [Public, Publish] {
            for method in [Get, Head] {
                assert_eq!(route(listener, method, b"/healthz"), Ok(Endpoint::Health));
                assert_eq!(route(listener, method, b"/readyz"), Ok(Endpoint::Ready));
            }
            let err = route(listener, Post, b"/readyz").unwrap_err();
            assert_eq!(err.allow, Some("GET, HEAD"));
            for path in [&b"/healthz/"[..], b"/readyz/x", b"/health"] {
                let err = route(listener, Get, path).unwrap_err();
                assert_eq!(err.status, Status::NOT_FOUND);
            }
        }
    }

    #[test]
    fn wrong_method_is_405_with_allow() {
        for (listener, method, path, allow) in [
            (Public, Post, &b"/test/1"[..], "GET, HEAD"),
            (Public, Other, b"/events/1", "GET, HEAD"),
            (Publish, Get, b"/send/1", "POST"),
            (Publish, Head, b"/send", "POST"),
            (Publish, Post, b"/metrics", "GET, HEAD"),
        ] {
            let err = route(listener, method, path).unwrap_err();
            assert_eq!(err.status, Status::METHOD_NOT_ALLOWED);
            assert_eq!(err.allow, Some(allow));
        }
        let err = route(Public, Post, b"/test/1").unwrap_err();
        assert_eq!(err.reason, "method not allowed: use GET or HEAD");
        let err = route(Publish, Get, b"/send").unwrap_err();
        assert_eq!(err.reason, "method not allowed: use POST");
    }

    #[test]
    fn other_listener_paths_are_404() {
        for (listener, method, path) in [
            (Public, Post, &b"/send/1"[..]),
            (Public, Post, b"/send"),
            (Public, Get, b"/metrics"),
            (Publish, Get, b"/test/1"),
            (Publish, Get, b"/events/1"),
        ] {
            let err = route(listener, method, path).unwrap_err();
            assert_eq!(err.status, Status::NOT_FOUND);
            assert_eq!(err.allow, None);
        }
    }

    #[test]
    fn unknown_paths_are_404() {
        assert_eq!(
            route(Publish, Post, b"/").unwrap_err().status,
            Status::NOT_FOUND
        );
        for path in [
            &b"/x"[..],
            b"/testing",
            b"/tests/1",
            b"/sendx",
            b"/metrics/",
            b"*",
            b"",
        ] {
            assert_eq!(
                route(Public, Get, path).unwrap_err().status,
                Status::NOT_FOUND
            );
            assert_eq!(
                route(Publish, Post, path).unwrap_err().status,
                Status::NOT_FOUND
            );
        }
        let err = route(Public, Get, b"/x").unwrap_err();
        assert_eq!(err.reason, "no such endpoint: /x");
    }

    #[test]
    fn shown_path_is_safe() {
        let long = [b'a'; 100];
        let err = route(Public, Get, &long).unwrap_err();
        assert_eq!(
            err.reason,
            format!("no such endpoint: {}...", "a".repeat(64))
        );
        let err = route(Public, Get, b"/a\x1b[31m\x7f\xff\xc2\x85").unwrap_err();
        assert_eq!(
            err.reason,
            "no such endpoint: /a\\x1b[31m\\x7f\u{fffd}\\u{85}"
        );
        assert!(!err.reason.contains(['\r', '\n']));
        let err = route(Public, Get, "/é".as_bytes()).unwrap_err();
        assert_eq!(err.reason, "no such endpoint: /é");
    }
}
