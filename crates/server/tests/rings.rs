//! Many rings on one worker thread: with the test-only `COMET_RING_FILES=128` (and
//! `--backlog 16`), each ring admits 64 connections (128 - 64), so 300 subscribers on one
//! worker fill five rings, opened one after the other as each fills.
//!
//! 1. Open 300 subscribers on one worker, SSE and WebSocket alternately, on 50 ids (each id
//!    has three of each), each waiting for its head: `comet_connections` counts them (and the
//!    publisher, and the scrape), `comet_rings` is the rings they need (at least 5), and no
//!    accept failed.
//! 2. Publish one message to each id: every subscriber gets its id's message.
//! 3. Close every other subscriber: `comet_connections` drops by 150, `comet_rings` stays.
//! 4. Open 150 new subscribers: they fit in the freed slots, so no ring is added; publish again:
//!    every subscriber, old and new, gets its message.
//! 5. accepted = closed + open; SIGTERM ends every stream and the process exits 0 (the worker
//!    asserts accepted = closed as it stops).

mod common;

use common::{metrics, total, Client, Publisher, Server};

const RING_FILES: u32 = 128;
const BACKLOG: u32 = 16;
/// Connections a ring admits: its table less 64 slots of slack.
const RING_CAP: u64 = (RING_FILES - 64) as u64;
const SUBSCRIBERS: u64 = 300;
const IDS: u64 = 50;

enum Sub {
    Sse(Client),
    Ws(Client),
}

impl Sub {
    /// Subscriber `i`: SSE when even, WebSocket when odd, to id `i % IDS`; returns once its
    /// head and its first position came.
    fn open(server: &Server, i: u64) -> Sub {
        let id = i % IDS;
        if i.is_multiple_of(2) {
            let mut c = common::subscribe(server.public, &format!("/events/{id}"));
            c.expect_position();
            Sub::Sse(c)
        } else {
            let mut c = Client::connect(server.public);
            let request = format!(
                "GET /ws/{id} HTTP/1.1\r\nHost: comet.test\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            );
            c.write(request.as_bytes());
            assert_eq!(c.read_head().status, 101);
            assert!(ws_text(&mut c).starts_with("{\"since\":"), "a position");
            Sub::Ws(c)
        }
    }

    /// The next message's data must be `msg`.
    fn expect(&mut self, msg: &str) {
        match self {
            Sub::Sse(c) => {
                let event = c.next_event().expect("an event");
                assert_eq!(event.data.as_deref(), Some(msg));
            }
            Sub::Ws(c) => {
                let text = ws_text(c);
                assert!(text.contains(&format!("\"data\":\"{msg}\"")), "{text}");
            }
        }
    }
}

/// The next server frame's payload (unmasked text, under 126 bytes: what this test publishes).
fn ws_text(client: &mut Client) -> String {
    let header = client.read_exact(2);
    assert_eq!(header[0], 0x81, "a final text frame");
    assert!(header[1] < 126, "a short frame");
    String::from_utf8(client.read_exact(usize::from(header[1]))).unwrap()
}

/// Publishes `msg-<id>` to every id; each must reach the subscribers of `subs` on its id.
fn publish_all(publisher: &mut Publisher, msg: &str, subs: &[(u64, Sub)]) {
    for id in 0..IDS {
        let on_id = subs.iter().filter(|(i, _)| i % IDS == id).count() as u64;
        assert_eq!(publisher.send(id, &format!("{msg}-{id}")), on_id, "id {id}");
    }
}

#[test]
fn subscribers_over_many_rings_of_one_worker() {
    let (files, backlog) = (RING_FILES.to_string(), BACKLOG.to_string());
    let mut server = Server::start_env(
        &["--workers", "1", "--backlog", &backlog],
        &[("COMET_RING_FILES", &files)],
    );

    // 1.
    let mut subs: Vec<(u64, Sub)> = (0..SUBSCRIBERS)
        .map(|i| (i, Sub::open(&server, i)))
        .collect();
    let mut publisher = Publisher::connect(&server);
    // The subscribers, the publisher and the scrape's own connection.
    let open = SUBSCRIBERS + 2;
    let text = metrics(&server);
    assert_eq!(total(&text, "comet_connections"), open, "{text}");
    let rings = total(&text, "comet_rings");
    assert!(
        rings >= 5 && rings * RING_CAP >= open && rings <= open.div_ceil(RING_CAP) + 1,
        "{rings} rings for {open} connections at {RING_CAP} a ring"
    );
    assert_eq!(total(&text, "comet_accept_errors_total"), 0);

    // 2.
    publish_all(&mut publisher, "a", &subs);
    for (i, sub) in &mut subs {
        sub.expect(&format!("a-{}", *i % IDS));
    }

    // 3. Half of each id's subscribers leave (every other one: SSE and WebSocket alike).
    let mut kept = Vec::new();
    for (n, sub) in subs.into_iter().enumerate() {
        if n % 4 < 2 {
            kept.push(sub);
        }
    }
    let left = SUBSCRIBERS - kept.len() as u64;
    assert_eq!(left, SUBSCRIBERS / 2);
    common::eventually("the closed subscribers are counted out", || {
        total(&metrics(&server), "comet_connections") == open - left
    });
    assert_eq!(total(&metrics(&server), "comet_rings"), rings);

    // 4. As many come back: the freed slots take them, no ring is added.
    let mut subs = kept;
    subs.extend((SUBSCRIBERS..SUBSCRIBERS + left).map(|i| (i, Sub::open(&server, i))));
    let text = metrics(&server);
    assert_eq!(total(&text, "comet_connections"), open, "{text}");
    assert_eq!(total(&text, "comet_rings"), rings, "rings reused");
    assert_eq!(total(&text, "comet_accept_errors_total"), 0);
    publish_all(&mut publisher, "b", &subs);
    for (i, sub) in &mut subs {
        sub.expect(&format!("b-{}", *i % IDS));
    }

    // 5.
    let text = metrics(&server);
    let accepted = total(&text, "comet_connections_accepted_total");
    let closed = total(&text, "comet_connections_closed_total");
    assert_eq!(accepted, closed + open, "{text}");
    drop(publisher);
    let status = server.stop("TERM");
    assert!(status.success(), "{status}: {}", server.log());
}

/// A connect storm into small rings (256 files, backlog 128: 192 connections a ring, all taken
/// by one-shot accepts): 8 threads open 800 subscribers as fast as they can, each sending its
/// request at once. The accepts must stop at each ring's room, whatever the pace: a ring whose
/// table fills makes the kernel close the connection it took (ENFILE). Every subscriber gets
/// its head, and no accept failed.
#[test]
fn a_connect_storm_into_small_rings_drops_nothing() {
    const THREADS: u64 = 8;
    const EACH: u64 = 100;
    let (files, backlog) = ("256", "128");
    let mut server = Server::start_env(
        &["--workers", "1", "--backlog", backlog],
        &[("COMET_RING_FILES", files)],
    );
    let public = server.public;
    let storm: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                let mut clients: Vec<Client> = (0..EACH)
                    .map(|i| {
                        let mut c = Client::connect(public);
                        c.write(&common::get(&format!("/events/{}", t * EACH + i)));
                        c
                    })
                    .collect();
                for c in &mut clients {
                    assert_eq!(c.read_head().status, 200);
                }
                clients
            })
        })
        .collect();
    let clients: Vec<Client> = storm
        .into_iter()
        .flat_map(|t| t.join().expect("every subscriber got its head"))
        .collect();
    let text = metrics(&server);
    assert_eq!(total(&text, "comet_accept_errors_total"), 0, "{text}");
    assert_eq!(
        total(&text, "comet_connections"),
        THREADS * EACH + 1,
        "{text}"
    );
    drop(clients);
    let status = server.stop("TERM");
    assert!(status.success(), "{status}: {}", server.log());
}
