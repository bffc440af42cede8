//! Requests on the subscriber listener, read until their head is complete: what they ask is
//! decided by `crate::public::decide` (pure). The only per-connection state is the bytes of a
//! head split over several reads, bounded by `--header-bytes-max` (beyond it `decide` answers
//! 431); a head that arrives in one read keeps nothing.

use ahash::AHashMap;
use comet_http as http;

use crate::config::Config;
use crate::public::{decide, Action};

#[derive(Default)]
pub struct Requests {
    partial: AHashMap<u32, Vec<u8>>,
}

impl Requests {
    /// Bytes `data` arrived on `slot`: what its request asks, once the head is complete.
    /// `now_s`: seconds since the Unix epoch (token expiry).
    pub fn feed(&mut self, slot: u32, data: &[u8], cfg: &Config, now_s: u64) -> Action {
        let mut stored = self.partial.remove(&slot);
        let action = match stored.as_mut() {
            Some(head) => {
                head.extend_from_slice(data);
                decide(head, cfg, now_s)
            }
            None => decide(data, cfg, now_s),
        };
        if let Action::NeedMore = action {
            self.partial
                .insert(slot, stored.unwrap_or_else(|| data.to_vec()));
        }
        action
    }

    /// Part of a request has arrived on `slot`.
    pub fn started(&self, slot: u32) -> bool {
        self.partial.contains_key(&slot)
    }

    pub fn forget(&mut self, slot: u32) {
        self.partial.remove(&slot);
    }
}

/// The content type of health checks.
const TEXT: &str = "text/plain; charset=utf-8";

/// Writes the one answer of a request that is not a subscribe (then the connection closes):
/// a stream's head alone, the CORS preflight, the demo page, health checks (`ready` is the
/// `/readyz` answer), or the error.
pub fn answer(out: &mut Vec<u8>, action: Action, ready: (http::Status, &[u8])) {
    match action {
        Action::Head {
            format,
            allow_origin,
        } => http::stream_head(out, format, &allow_origin),
        Action::Preflight { allow_origin } => http::preflight_response(out, &allow_origin),
        Action::Demo { head_only } => {
            let page = crate::demo::PAGE.as_bytes();
            let html = "text/html; charset=utf-8";
            http::response(out, http::Status::OK, html, page, true, head_only)
        }
        Action::Health { head_only } => {
            http::response(out, http::Status::OK, TEXT, b"ok\n", true, head_only)
        }
        Action::Ready { head_only } => http::response(out, ready.0, TEXT, ready.1, true, head_only),
        Action::Reject {
            error,
            head_only,
            allow_origin,
        } => http::error_response_for(out, &error, head_only, &allow_origin),
        Action::NeedMore | Action::Subscribe(_) => unreachable!("not a one-shot answer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_split_over_reads_is_kept_until_complete_then_forgotten() {
        let cfg = Config::for_tests();
        let mut r = Requests::default();
        let head = b"GET /test/42 HTTP/1.1\r\nHost: x\r\n\r\n";
        for split in 1..head.len() {
            assert_eq!(r.feed(3, &head[..split], &cfg, 0), Action::NeedMore);
            assert!(r.started(3));
            match r.feed(3, &head[split..], &cfg, 0) {
                Action::Subscribe(sub) => assert_eq!(sub.ids, [42]),
                other => panic!("split at {split}: {other:?}"),
            }
            assert!(!r.started(3), "nothing kept once the head is complete");
        }
    }

    #[test]
    fn a_forgotten_connection_starts_afresh() {
        let cfg = Config::for_tests();
        let mut r = Requests::default();
        assert_eq!(r.feed(1, b"GET /test/1 HT", &cfg, 0), Action::NeedMore);
        r.forget(1);
        assert!(!r.started(1));
        assert!(matches!(
            r.feed(1, b"TP/1.1\r\nHost: x\r\n\r\n", &cfg, 0),
            Action::Reject { .. }
        ));
    }
}
