//! Routing: which endpoint a request names, on which listener.

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
    /// `POST /send/<id>` on Publish: the body is the message.
    Send(&'a [u8]),
    /// `POST /send` on Publish: the body is [`batch_lines`](crate::batch_lines).
    SendBatch,
    /// `GET|HEAD /metrics` on Publish.
    Metrics,
}

/// Bytes of an unknown path echoed in a 404 reason.
const PATH_SHOWN_BYTES_MAX: usize = 64;

/// Route by listener + method + path.
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
    match listener {
        Listener::Public => {
            if let Some(ids) = under(path, b"/test") {
                return get_or_head(method).map(|()| Endpoint::Test(ids));
            }
            if let Some(ids) = under(path, b"/events") {
                return get_or_head(method).map(|()| Endpoint::Events(ids));
            }
        }
        Listener::Publish => {
            if path == b"/send" {
                return post(method).map(|()| Endpoint::SendBatch);
            }
            if let Some(id) = path.strip_prefix(b"/send/") {
                return post(method).map(|()| Endpoint::Send(id));
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
        for path in [
            &b"/"[..],
            b"/x",
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
