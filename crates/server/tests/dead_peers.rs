//! Peers that vanish without a FIN (README: "Dead peers"): a subscriber whose packets stop
//! arriving (a phone off the network, a NAT entry dropped) is freed once a heartbeat stays
//! unacknowledged for `--unacked-timeout-ms` (TCP_USER_TIMEOUT on the listeners, inherited by
//! every accepted socket), while the other subscribers are served as before.
//!
//! The vanishing is real: an nftables rule drops every packet the server sends to the
//! subscriber's port, so the server's heartbeats are never acknowledged and nothing (no FIN, no
//! RST) reaches it. Needs root and `nft` (`tools/test.sh` installs nftables).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{closed, metrics, publish, require, subscribe, total, Server};

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
    // once; here only its head) and the unacknowledged timeout, and the kernel's retransmission
    // timer (which fires the abort on its next tick: up to its RTO, 200 ms at least on
    // loopback); the connection is closed for a socket error.
    let bound = Duration::from_millis(2 * HEARTBEAT_MS + UNACKED_MS) + Duration::from_secs(2);
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
