//! HTTP responses as the tools read them: a response's head ([`Head`]), and the publish API's
//! answers ([`Answer`]): `{"id":..,"connections":N}` for `POST /send/<id>`,
//! `{"messages":K,"connections":D}` for `POST /send`. Pure: bytes in, no I/O.

use serde::Deserialize;

/// Headers read at most; comet sends fewer than ten.
const HEADERS_MAX: usize = 32;

/// The head of a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// Bytes of the head, its blank line included: where the body starts.
    pub len: usize,
    /// `Content-Length`; None when absent (the body is chunked, or runs to the close).
    pub content_length: Option<usize>,
    /// `Transfer-Encoding` names `chunked`.
    pub chunked: bool,
    /// `Retry-After` in seconds (comet's 503 while its cluster cannot store a publish).
    pub retry_after_s: Option<u64>,
}

impl Head {
    /// Parses the head at the front of `input`; `Ok(None)` until it is complete.
    pub fn parse(input: &[u8]) -> Result<Option<Head>, String> {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut response = httparse::Response::new(&mut headers);
        let len = match response.parse(input) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(format!("bad response: {e}")),
        };
        let mut head = Head {
            // httparse sets the code of every complete head.
            status: response.code.unwrap_or(0),
            len,
            content_length: None,
            chunked: false,
            retry_after_s: None,
        };
        for h in response.headers.iter() {
            if h.name.eq_ignore_ascii_case("retry-after") {
                head.retry_after_s = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok());
            }
            if h.name.eq_ignore_ascii_case("content-length") {
                let length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or("bad content-length")?;
                head.content_length = Some(length);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                head.chunked = String::from_utf8_lossy(h.value)
                    .to_ascii_lowercase()
                    .contains("chunked");
            }
        }
        Ok(Some(head))
    }
}

/// One answer of the publish API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// `connections` from the JSON body: the deliveries the server promised; 0 when the body
    /// has none (an error answer).
    pub connections: u64,
    /// Bytes of the input the answer used.
    pub consumed: usize,
    /// `Retry-After` in seconds, if given (a 503).
    pub retry_after_s: Option<u64>,
}

/// The one field of an answer's body the tools count; `id` and `messages` are ignored.
#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    connections: u64,
}

impl Answer {
    /// Parses one complete answer from the front of `input`; `Ok(None)` while more bytes are
    /// needed. Answers are pipelined, so what follows `consumed` is the next one.
    pub fn parse(input: &[u8]) -> Result<Option<Answer>, String> {
        let Some(head) = Head::parse(input)? else {
            return Ok(None);
        };
        // comet answers with Content-Length; a chunked answer would desynchronise the pipeline.
        if head.chunked {
            return Err("chunked answers are not supported".into());
        }
        let end = head.len + head.content_length.unwrap_or(0);
        let Some(body) = input.get(head.len..end) else {
            return Ok(None);
        };
        Ok(Some(Answer {
            status: head.status,
            connections: serde_json::from_slice::<Body>(body).map_or(0, |b| b.connections),
            consumed: end,
            retry_after_s: head.retry_after_s,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 26\r\n\r\n{\"id\":123,\"connections\":2}";

    #[test]
    fn pipelined_answers() {
        let mut two = ONE.to_vec();
        two.extend_from_slice(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad");
        let a = Answer::parse(&two).unwrap().unwrap();
        assert_eq!(
            a,
            Answer {
                status: 200,
                connections: 2,
                consumed: ONE.len(),
                retry_after_s: None,
            }
        );
        let b = Answer::parse(&two[a.consumed..]).unwrap().unwrap();
        assert_eq!(
            (b.status, b.connections, b.consumed),
            (400, 0, two.len() - ONE.len())
        );
        for cut in 0..ONE.len() {
            assert_eq!(Answer::parse(&ONE[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn single_and_batch_bodies() {
        let answer = |body: &str| {
            let text = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            Answer::parse(text.as_bytes()).unwrap().unwrap().connections
        };
        assert_eq!(answer(r#"{"messages":10, "connections" : 77}"#), 77);
        assert_eq!(answer(r#"{"id":3,"connections":0}"#), 0);
        assert_eq!(answer(r#"{"messages":10}"#), 0);
        assert_eq!(answer("not json"), 0);
        // No Content-Length: an empty body.
        let bare = Answer::parse(b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1").unwrap();
        assert_eq!(bare.map(|a| (a.status, a.consumed)), Some((204, 27)));
    }

    #[test]
    fn a_503_says_when_to_come_back() {
        let text =
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\nRetry-After: 1\r\n\r\nno";
        let a = Answer::parse(text).unwrap().unwrap();
        assert_eq!((a.status, a.retry_after_s), (503, Some(1)));
    }

    #[test]
    fn bad_answers() {
        assert!(Answer::parse(b"NOT HTTP\r\n\r\n").is_err());
        assert!(Answer::parse(b"junk\r\n\r\n").is_err());
        assert!(Answer::parse(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert!(Answer::parse(chunked).is_err());
    }

    #[test]
    fn heads() {
        let sse = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: Chunked\r\n\r\nid: 1\n";
        let head = Head::parse(sse).unwrap().unwrap();
        assert_eq!(
            head,
            Head {
                status: 200,
                len: sse.len() - 6,
                content_length: None,
                chunked: true,
                retry_after_s: None,
            }
        );
        let plain = Head::parse(b"HTTP/1.0 401 Unauthorized\r\nContent-Length: 4\r\n\r\n").unwrap();
        assert_eq!(
            plain.map(|h| (h.status, h.content_length, h.chunked)),
            Some((401, Some(4), false))
        );
        assert_eq!(Head::parse(b"HTTP/1.1 200 OK\r\nA: b\r\n"), Ok(None));
    }
}
