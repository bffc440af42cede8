//! Peers that vanish without a FIN (README: "Dead peers"): a subscriber whose packets stop
//! arriving (a phone off the network, a NAT entry dropped) is freed once a heartbeat stays
//! unacknowledged for `--unacked-timeout-ms` (TCP_USER_TIMEOUT on the listeners, inherited by
//! every accepted socket), while the other subscribers are served as before.
//!
//! A peer that stopped reading is on the kernel's zero-window probe timer instead; the same
//! limit applies (the kernel clamps that timer to the user timeout), and is checked here too.
//!
//! The vanishing is real: an nftables rule drops every packet the server sends to the
//! subscriber's port, so the server's heartbeats are never acknowledged and nothing (no FIN, no
//! RST) reaches it. Needs root and `nft` (`tools/test.sh` installs nftables).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{closed, metrics, publish, require, subscribe, total, Publisher, Server};

/// An nftables table of this test's own, deleted when dropped (even when the test fails).
struct Blackhole {
    nft: std::path::PathBuf,
    table: String,
}

impl Blackhole {
    /// Drops every TCP packet to local port `port` (the server's output to one client).
    fn port(port: u16) -> Blackhole {
        let nft = require("nft", "nftables");
        let table = format!("comet_dead_peers_{}", std::process::id());
        let rules = format!(
            "table inet {table} {{\n\
               chain out {{\n\
                 type filter hook output priority 0;\n\
                 tcp dport {port} drop\n\
               }}\n\
             }}\n"
        );
        let out = Command::new(&nft)
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(rules.as_bytes())?;
                child.wait_with_output()
            })
            .expect("run nft");
        assert!(
            out.status.success(),
            "nft refused the rule (this test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Blackhole { nft, table }
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        let _ = Command::new(&self.nft)
            .args(["delete", "table", "inet", &self.table])
            .status();
    }
}

#[test]
#[ignore = "needs root and nft (tools/test.sh installs nftables)"]
fn a_peer_that_vanishes_without_a_fin_is_freed_after_the_unacked_timeout() {
    const HEARTBEAT_MS: u64 = 300;
    const UNACKED_MS: u64 = 1000;
    let server = Server::start(&[
        "--workers",
        "1",
        "--heartbeat-ms",
        &HEARTBEAT_MS.to_string(),
        "--unacked-timeout-ms",
        &UNACKED_MS.to_string(),
    ]);
    let mut alive = subscribe(server.public, "/events/1");
    let gone = subscribe(server.public, "/events/2");
    let gone_port = gone.local_addr().port();
    // Open connections, the metrics request's own included.
    assert_eq!(total(&metrics(&server), "comet_connections"), 3);

    let _hole = Blackhole::port(gone_port);
    let vanished = Instant::now();
    // Freed within two heartbeat periods (a stream sent something in its last period is skipped
    // once; here only its head), the first retransmission timeout (capped at a quarter of the
    // unacked timeout, 1 s at least) and the unacknowledged timeout: README, Dead peers; plus
    // a second of slack. The connection is closed for a socket error.
    const RTO_CAP_MS: u64 = 1000;
    let bound =
        Duration::from_millis(2 * HEARTBEAT_MS + RTO_CAP_MS + UNACKED_MS) + Duration::from_secs(1);
    loop {
        let m = metrics(&server);
        if total(&m, "comet_connections") == 2 {
            assert_eq!(closed(&m, "error"), 1, "closed for a socket error:\n{m}");
            break;
        }
        assert!(
            vanished.elapsed() < bound,
            "the vanished peer still holds its slot after {:?} (bound {bound:?})",
            vanished.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let freed = vanished.elapsed();
    assert!(
        freed >= Duration::from_millis(UNACKED_MS),
        "freed after {freed:?}, before the unacked timeout: something else closed it"
    );
    // The one still reading is served: its heartbeats kept it open, and a message reaches it.
    assert_eq!(publish(&server, 1, "still here"), 1);
    loop {
        let event = alive.next_event().expect("the live stream goes on");
        if event.data.as_deref() == Some("still here") {
            break;
        }
    }
}

/// A live peer that stops reading (its receive window stays shut) is cut once the kernel's
/// zero-window probes have gone on for `--unacked-timeout-ms` (README: "Dead peers"), even with
/// a policy that never cuts it for its queue. A question the 1M run raised: the probe timer
/// backs off, but Linux clamps it to what is left of the user timeout, so the cut comes on
/// time; this guards that (and the option being inherited by accepted sockets).
#[test]
fn a_peer_that_stops_reading_is_cut_after_the_unacked_timeout() {
    const UNACKED_MS: u64 = 3000;
    const ID: u64 = 7;
    let server = Server::start(&[
        "--workers",
        "1",
        "--unacked-timeout-ms",
        &UNACKED_MS.to_string(),
        // The queue bound never cuts it: its oldest messages are dropped instead.
        "--slow-consumer",
        "drop-oldest",
        "--queue-bytes-max",
        "4096",
    ]);
    let mut stopped = subscribe(server.public, &format!("/events/{ID}"));
    let mut reader = subscribe(server.public, &format!("/events/{ID}"));
    let flood = Instant::now();
    // Until the stopped stream's queue overflows: its socket's buffers are full, and the
    // receive window shut.
    let mut publisher = Publisher::connect(&server);
    let msg = "x".repeat(3000);
    for i in 1.. {
        assert_eq!(publisher.send(ID, &msg), 2);
        let event = reader.next_event().expect("the reader's stream goes on");
        assert_eq!(event.data.as_deref(), Some(msg.as_str()));
        if i % 16 == 0 && total(&metrics(&server), "comet_messages_dropped_oldest_total") > 0 {
            break;
        }
        assert!(
            i < 8000,
            "no drop after {i} messages:\n{}",
            metrics(&server)
        );
    }
    let full = Instant::now();
    // Shut from before `full`: cut within the timeout and a margin for the probe timer.
    let bound = Duration::from_millis(UNACKED_MS) + Duration::from_secs(2);
    let m = loop {
        let m = metrics(&server);
        if closed(&m, "error") == 1 {
            break m;
        }
        assert!(
            full.elapsed() < bound,
            "the stream that stopped reading is still open after {:?} (bound {bound:?}):\n{m}",
            full.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let freed = flood.elapsed();
    assert!(
        freed >= Duration::from_millis(UNACKED_MS),
        "cut after {freed:?}, before its window could have been shut that long"
    );
    assert_eq!(closed(&m, "slow_consumer"), 0, "{m}");
    // Its connection is closed; the reader is served.
    stopped.read_to_end();
    assert_eq!(publisher.send(ID, "after"), 1);
    loop {
        let event = reader.next_event().expect("the reader's stream goes on");
        if event.data.as_deref() == Some("after") {
            break;
        }
    }
}
