//! Subscriber streams (`/test/`, `/events/`, `/ws/`): the position of each id of a stream with
//! several ids, the framing of each message, and the slow-consumer policy. A stream with one id
//! keeps nothing here: its id is in its slot and its position is the seq of the message being
//! framed.
//!
//! Reconnects: an SSE stream starts with a `retry:` field, and one comes again before its end
//! at shutdown; a WebSocket ends at shutdown with close code 1012 (service restart). The
//! `retry:` value is drawn per connection, uniform in `[RETRY_MIN_MS, RETRY_MIN_MS + N]` with
//! `N = clamp(connections / --resume-rate, RETRY_MIN_MS, RETRY_SPREAD_MAX_MS)` (in ms, the
//! node's connections estimated as this worker's times the worker count): the clients of a
//! server that stops, or crashes, come back spread over a window that grows with their number,
//! not all at once.

use std::sync::Arc;

use ahash::AHashMap;
use comet_http::{self as http, Pos};
use comet_router::Id;

use super::conns::{Conns, IDS};
use super::post::Ack;
use crate::config::{Config, SlowConsumer};
use crate::metrics::Stats;

/// The shortest reconnect delay an SSE client is told (`retry:`), in ms.
const RETRY_MIN_MS: u64 = 1_000;
/// Resumes per second the jitter window is sized for when `--resume-rate` is 0 (no limit).
const RESUMES_PER_S_UNLIMITED: u64 = 10_000;
/// The widest jitter window, ms (1M connections would otherwise wait up to 100 s).
const RETRY_SPREAD_MAX_MS: u64 = 60_000;

/// `N`, the width of the `retry:` jitter window in ms, for `connections` on the node that
/// resumes `resumes_per_s` a second (`--resume-rate`): they come back at about that rate.
fn retry_spread_ms(connections: u64, resumes_per_s: u64) -> u64 {
    (connections.saturating_mul(1_000) / resumes_per_s.max(1))
        .clamp(RETRY_MIN_MS, RETRY_SPREAD_MAX_MS)
}

/// Bytes counted per replayed message beside its payload, when a replay is fitted into a
/// connection's queue bounds (framing and position).
const REPLAY_FRAMING_BYTES: usize = 64;

/// The ids a connection was logged in as, to log out of.
pub enum Logins {
    One([(Id, u64); 1]),
    Many(Box<[(Id, u64)]>),
}

impl Logins {
    pub fn ids(&self) -> impl Iterator<Item = Id> + '_ {
        let entries: &[(Id, u64)] = match self {
            Logins::One(one) => one,
            Logins::Many(many) => many,
        };
        entries.iter().map(|e| e.0)
    }
}

pub struct Streams {
    /// Ids and the client's position in each, for connections with `IDS`.
    positions: AHashMap<u32, Box<[(Id, u64)]>>,
    pos_scratch: Vec<u64>,
    epoch: u32,
    queue_bytes_max: usize,
    queue_messages_max: usize,
    slow_consumer: SlowConsumer,
    /// Draws each connection's `retry:` value.
    rng: fastrand::Rng,
    workers: u64,
    /// The node's `--resume-rate` (or the figure used without one), for the jitter window.
    resumes_per_s: u64,
    /// An SSE stream's last bytes at shutdown (`retry:` and the end), for [`SHUTDOWN_ENDS`]
    /// retry values spread over the window, per format: made at the shutdown.
    shutdown_ends: Option<[Vec<&'static [u8]>; 2]>,
}

/// Distinct `retry:` values a shutdown's streams are sent from static memory (the window is
/// at most 60 s: 1024 values are 59 ms apart).
const SHUTDOWN_ENDS: usize = 1024;

impl Streams {
    pub fn new(cfg: &Config) -> Streams {
        Streams {
            positions: AHashMap::new(),
            pos_scratch: Vec::new(),
            epoch: cfg.epoch,
            queue_bytes_max: cfg.queue_bytes_max,
            queue_messages_max: cfg.queue_messages_max,
            slow_consumer: cfg.slow_consumer,
            rng: fastrand::Rng::new(),
            workers: cfg.workers as u64,
            resumes_per_s: match cfg.resume_rate_per_worker {
                0 => RESUMES_PER_S_UNLIMITED,
                per_worker => per_worker * cfg.workers as u64,
            },
            shutdown_ends: None,
        }
    }

    /// A `retry:` value for one connection: uniform in `[RETRY_MIN_MS, RETRY_MIN_MS + N]`,
    /// `N` growing with the node's connections (see the module doc).
    fn retry_ms(&mut self, conns: &Conns) -> u64 {
        let connections = conns.live() as u64 * self.workers;
        RETRY_MIN_MS
            + self
                .rng
                .u64(0..=retry_spread_ms(connections, self.resumes_per_s))
    }

    /// A stream for `ids` on `slot`, after its head. With several ids, each id's position is
    /// kept: the client's, or `start` until its owner answers. An SSE stream gets its `retry:`.
    pub fn begin(
        &mut self,
        conns: &mut Conns,
        slot: u32,
        ids: &[Id],
        since: Option<&[u64]>,
        start: u64,
    ) {
        let format = conns.get(slot).format;
        if matches!(format, http::Format::Sse | http::Format::SseRaw) {
            let retry_ms = self.retry_ms(conns);
            conns.write(slot, |out| http::frame_retry(out, format, retry_ms));
        }
        let conn = conns.get_mut(slot);
        conn.id = ids[0];
        if ids.len() > 1 {
            conn.flags |= IDS;
            let entries = ids
                .iter()
                .enumerate()
                .map(|(i, &id)| (id, since.map_or(start, |s| s[i])))
                .collect();
            self.positions.insert(slot, entries);
        }
    }

    /// The ids of a stream that ends; it is forgotten here.
    pub fn end(&mut self, slot: u32, flags: u8, id: Id) -> Logins {
        if flags & IDS != 0 {
            Logins::Many(self.positions.remove(&slot).expect("positions"))
        } else {
            Logins::One([(id, 0)])
        }
    }

    /// The owner of `id` logged the stream in: writes the gap, the replay and the position.
    /// `false` when the replay cut the connection as a slow consumer (the caller closes it).
    pub fn login_ack(
        &mut self,
        conns: &mut Conns,
        slot: u32,
        id: Id,
        ack: Ack,
        stats: &Stats,
    ) -> bool {
        let Ack {
            pos,
            mut gap,
            mut replay,
        } = ack;
        let format = conns.get(slot).format;
        if matches!(format, http::Format::Chunked | http::Format::Raw) {
            return true; // the seed's format has no positions (and never resumes)
        }
        // A replay counts against the connection's queue bounds like live messages: if it does
        // not fit, its oldest part is left out and the client is told (a gap).
        let (bytes, messages) = conns.queued(slot);
        let bytes_max = self.queue_bytes_max.saturating_sub(bytes);
        let messages_max = self.queue_messages_max.saturating_sub(messages);
        let mut bytes = 0;
        let mut keep = 0;
        for (_, msg) in replay.iter().rev() {
            bytes += msg.len() + REPLAY_FRAMING_BYTES;
            if bytes > bytes_max || keep + 1 > messages_max {
                break;
            }
            keep += 1;
        }
        if keep < replay.len() {
            gap = true;
            replay.drain(..replay.len() - keep);
        }
        if gap {
            stats.resume_gaps.add(1);
            conns.write(slot, |out| http::frame_gap(out, format, &[id]));
        }
        for (seq, msg) in &replay {
            if !self.deliver(conns, slot, (id, *seq, msg), None, stats) {
                return false;
            }
        }
        self.set_position(conns, slot, id, pos);
        let mut seqs = std::mem::take(&mut self.pos_scratch);
        self.position_list(conns, slot, pos, &mut seqs);
        let epoch = self.epoch;
        conns.write(slot, |out| {
            http::frame_position(out, format, Pos { epoch, seqs: &seqs })
        });
        self.pos_scratch = seqs;
        true
    }

    /// Records the owner's position for `id` after its answer: everything of `id` up to it
    /// was replayed, told as a gap, or routed before the login; every later message comes
    /// live.
    fn set_position(&mut self, conns: &Conns, slot: u32, id: Id, pos: u64) {
        if conns.get(slot).flags & IDS != 0 {
            let entries = self.positions.get_mut(&slot).expect("positions");
            if let Some(entry) = entries.iter_mut().find(|e| e.0 == id) {
                entry.1 = pos;
            }
        }
    }

    /// The connection's position as written to the client: each id's position, or `single`
    /// for a connection with one id.
    fn position_list(&self, conns: &Conns, slot: u32, single: u64, out: &mut Vec<u64>) {
        out.clear();
        if conns.get(slot).flags & IDS != 0 {
            out.extend(self.positions[&slot].iter().map(|e| e.1));
        } else {
            out.push(single);
        }
    }

    /// Frames message `seq` of `id` for a stream, applying the slow-consumer policy when its
    /// queue is full. `live`: when a live message was published and now, for the
    /// publish-to-write histogram (`None` for a replay). `false` when the connection is cut as
    /// a slow consumer (the caller closes it).
    pub fn deliver(
        &mut self,
        conns: &mut Conns,
        slot: u32,
        (id, seq, msg): (Id, u64, &Arc<[u8]>),
        live: Option<(u64, u64)>,
        stats: &Stats,
    ) -> bool {
        let conn = *conns.get(slot);
        debug_assert!(conn.state.subscribed());
        if conn.flags & IDS != 0 {
            // Never twice on one connection (a replay and a live message may overlap).
            let entries = self.positions.get_mut(&slot).expect("positions");
            let Some(entry) = entries.iter_mut().find(|e| e.0 == id) else {
                stats.stale.add(1);
                return true;
            };
            if seq <= entry.1 {
                stats.stale.add(1);
                return true;
            }
            entry.1 = seq;
        }
        match self.make_room(conns, slot, msg.len(), stats) {
            Room::Made => {}
            Room::DropNew => return true,
            Room::Cut => return false,
        }
        let seed_format = matches!(conn.format, http::Format::Chunked | http::Format::Raw);
        let mut seqs = std::mem::take(&mut self.pos_scratch);
        if !seed_format {
            self.position_list(conns, slot, seq, &mut seqs);
        }
        let epoch = self.epoch;
        conns.write_message(slot, |conn, out| match conn.format {
            http::Format::Chunked | http::Format::Raw => {
                // Each connection numbers its messages, so the bytes differ per connection:
                // the message is framed (copied) per connection, which costs far less than
                // the send.
                conn.msg_count += 1;
                http::frame_message(out, conn.format, u64::from(conn.msg_count), msg);
            }
            format => {
                let pos = Pos { epoch, seqs: &seqs };
                http::frame_event(out, format, id, seq, pos, msg)
            }
        });
        self.pos_scratch = seqs;
        match live {
            Some((published_us, now_us)) => stats.delivered(Some(published_us), now_us),
            None => stats.replayed(1),
        }
        true
    }

    /// Makes room for one more message of `len` bytes by the slow-consumer policy.
    fn make_room(&self, conns: &mut Conns, slot: u32, len: usize, stats: &Stats) -> Room {
        let fits = |(bytes, messages): (usize, usize)| {
            bytes + len <= self.queue_bytes_max && messages < self.queue_messages_max
        };
        if fits(conns.queued(slot)) {
            return Room::Made;
        }
        match self.slow_consumer {
            SlowConsumer::Disconnect => {
                // The client resumes from the history: nothing inside its window is lost.
                stats.dropped.add(1);
                Room::Cut
            }
            SlowConsumer::DropOldest => {
                // Drop the oldest queued (not in flight) messages, half the queue at a time
                // so that the copying is paid once per many messages.
                loop {
                    let dropped = conns.drop_oldest(slot);
                    if dropped == 0 {
                        break;
                    }
                    stats.dropped_oldest.add(dropped as u64);
                    if fits(conns.queued(slot)) {
                        return Room::Made;
                    }
                }
                // What is in flight alone fills the queue: the new message is the one dropped.
                stats.dropped_oldest.add(1);
                Room::DropNew
            }
        }
    }

    /// Writes the end of a stream: the last chunk, or a WebSocket close (a raw stream ends with
    /// the close itself); for an expired token, the `expired` event or close code before it;
    /// at shutdown, the reconnect hint (SSE `retry:`, WebSocket 1012).
    pub fn write_end(&mut self, conns: &mut Conns, slot: u32, why: End) {
        let format = conns.get(slot).format;
        // At shutdown a stream with nothing queued ends from static memory.
        let last = match (format, why) {
            (http::Format::Sse | http::Format::SseRaw, End::Shutdown) => {
                Some(self.shutdown_end(conns, format))
            }
            (http::Format::Chunked, End::Shutdown) => Some(http::STREAM_END),
            (http::Format::Ws, End::Shutdown) => Some(ws_restart()),
            _ => None,
        };
        if last.is_some_and(|bytes| conns.send_last_static(slot, bytes)) {
            return;
        }
        match (format, why) {
            (http::Format::Ws | http::Format::Sse | http::Format::SseRaw, End::Expired) => {
                conns.write(slot, |out| http::frame_expired(out, format))
            }
            (http::Format::Sse | http::Format::SseRaw, End::Shutdown) => {
                let retry_ms = self.retry_ms(conns);
                conns.write(slot, |out| http::frame_retry(out, format, retry_ms))
            }
            (http::Format::Ws, End::Shutdown) => conns.write(slot, |out| {
                let code = http::ws::code::SERVICE_RESTART;
                http::ws::close(out, code, "service restart")
            }),
            (http::Format::Ws, End::Disconnected) => conns.write(slot, |out| {
                http::ws::close(out, http::ws::code::NORMAL, "disconnected by the server")
            }),
            _ => {}
        }
        if format.is_chunked() {
            conns.write(slot, |out| http::stream_end(out, format));
        }
    }
}

impl Streams {
    /// The last bytes of an SSE stream at shutdown, a `retry:` drawn as [`Streams::retry_ms`]
    /// draws it (one of [`SHUTDOWN_ENDS`] values over the window) and the end. Made once, at
    /// the shutdown, and leaked: the kernel sends from them while the process ends.
    fn shutdown_end(&mut self, conns: &Conns, format: http::Format) -> &'static [u8] {
        let ends = self.shutdown_ends.get_or_insert_with(|| {
            let connections = conns.live() as u64 * self.workers;
            let spread = retry_spread_ms(connections, self.resumes_per_s);
            let make = |format| -> Vec<&'static [u8]> {
                (0..SHUTDOWN_ENDS as u64)
                    .map(|i| {
                        let retry_ms = RETRY_MIN_MS + spread * i / (SHUTDOWN_ENDS as u64 - 1);
                        let mut out = Vec::new();
                        http::frame_retry(&mut out, format, retry_ms);
                        http::stream_end(&mut out, format);
                        &*Box::leak(out.into_boxed_slice())
                    })
                    .collect()
            };
            [make(http::Format::Sse), make(http::Format::SseRaw)]
        });
        let table = &ends[usize::from(format == http::Format::SseRaw)];
        table[self.rng.usize(..table.len())]
    }
}

/// A WebSocket's close frame at shutdown (1012, service restart): the same bytes for every
/// connection, made once.
fn ws_restart() -> &'static [u8] {
    static FRAME: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    FRAME.get_or_init(|| {
        let mut out = Vec::new();
        http::ws::close(&mut out, http::ws::code::SERVICE_RESTART, "service restart");
        out
    })
}

/// Why a stream ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// SIGINT/SIGTERM (SSE: a jittered `retry:`; WebSocket: 1012 service restart).
    Shutdown,
    /// `POST /disconnect/<id>` (WebSocket: 1000).
    Disconnected,
    /// The subscriber's token expired (SSE: `event: expired`; WebSocket: 4001).
    Expired,
}

enum Room {
    Made,
    /// The new message is dropped (drop-oldest, with only in-flight bytes queued).
    DropNew,
    /// The connection is cut (disconnect).
    Cut,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_window_grows_with_the_connections() {
        assert_eq!(retry_spread_ms(0, 10_000), RETRY_MIN_MS);
        assert_eq!(retry_spread_ms(10_000, 10_000), 1_000);
        assert_eq!(retry_spread_ms(100_000, 10_000), 10_000);
        assert_eq!(retry_spread_ms(1_000_000, 10_000), RETRY_SPREAD_MAX_MS);
        assert_eq!(retry_spread_ms(u64::MAX, 10_000), RETRY_SPREAD_MAX_MS);
        // A node that resumes 2,000 a second: its 10,000 clients come back over 5 s.
        assert_eq!(retry_spread_ms(10_000, 2_000), 5_000);
        assert_eq!(retry_spread_ms(10_000, 0), RETRY_SPREAD_MAX_MS);
    }
}
