//! Nodes joined through a real `nats-server` (started here on free ports) in core NATS mode
//! (`--cluster-core`): routing between nodes, exactly one copy per connection, publishes
//! straight to NATS, a NATS restart, a dead node, and a three-server NATS cluster. JetStream
//! mode (the default) is `jetstream.rs`.
//!
//! Every test is `#[ignore = "needs nats-server"]`: a plain `cargo test` lists them as ignored;
//! `bash tools/test.sh` installs nats-server and runs them (`-- --include-ignored`), and without
//! nats-server they fail saying how to install it.

mod common;

use std::time::{Duration, Instant};

use common::nats::{free_port, gauge, nats_pub, wait_connected, Nats};
use common::{
    eventually, json_number, metrics, post_send, seed_msg, subscribe, Client, Server, TIMEOUT,
};

/// A clustered node on `urls` (comma-separated), once its subscription is in place.
fn node(urls: &str) -> Server {
    let server = Server::start(&["--workers", "2", "--cluster", urls, "--cluster-core"]);
    wait_connected(&server, 1);
    server
}

/// Publishes on `server`'s API; returns (local connections, the answer's `cluster` field).
fn send(server: &Server, id: u64, msg: &str) -> (u64, bool) {
    let mut client = Client::connect(server.publish);
    client.write(&post_send(&id.to_string(), msg.as_bytes()));
    let response = client.read_response();
    assert_eq!(response.status(), 200, "{response:?}");
    let text = response.text();
    let connections = json_number(&text, "connections");
    let cluster = if text.contains("\"cluster\":true") {
        true
    } else {
        assert!(text.contains("\"cluster\":false"), "{text}");
        false
    };
    assert_eq!(
        text,
        format!("{{\"id\":{id},\"connections\":{connections},\"cluster\":{cluster}}}\n")
    );
    (connections, cluster)
}

#[test]
#[ignore = "needs nats-server"]
fn a_subscriber_on_one_node_gets_a_publish_on_another() {
    let nats = Nats::start(&[]);
    let a = node(&nats.url());
    let b = node(&nats.url());
    let mut stream = subscribe(a.public, "/test/5");
    assert_eq!(send(&b, 5, "hello"), (0, true));
    stream.expect_chunk(&seed_msg(1, "hello"));
    assert_eq!(gauge(&b, "comet_cluster_messages_out_total"), 1);
    assert_eq!(gauge(&a, "comet_cluster_messages_in_total"), 1);
    // A node alone says nothing about a cluster.
    let alone = Server::start(&["--workers", "1"]);
    let text = metrics(&alone);
    assert!(!text.contains("comet_cluster"), "{text}");
}

/// The same id on two nodes: each connection gets each message once, whichever node (or NATS
/// itself) it was published on. Each next chunk is the next message, so no duplicate slipped
/// in between; a last marker straight from NATS shows none came after. (Messages from
/// different publishers have no order between them, so each is awaited before the next.)
#[test]
#[ignore = "needs nats-server"]
fn the_same_id_on_two_nodes_gets_one_copy_each() {
    let nats = Nats::start(&[]);
    let a = node(&nats.url());
    let b = node(&nats.url());
    let mut on_a = subscribe(a.public, "/test/7");
    let mut on_b = subscribe(b.public, "/test/7");
    for (n, (from, msg)) in [(&a, "one"), (&b, "two"), (&a, "three")]
        .into_iter()
        .enumerate()
    {
        assert_eq!(send(from, 7, msg), (1, true));
        on_a.expect_chunk(&seed_msg(n as u64 + 1, msg));
        on_b.expect_chunk(&seed_msg(n as u64 + 1, msg));
    }
    nats_pub(&nats, "comet.user.7", "end");
    on_a.expect_chunk(&seed_msg(4, "end"));
    on_b.expect_chunk(&seed_msg(4, "end"));
    // no_echo: a node never gets back what it published.
    assert_eq!(gauge(&a, "comet_cluster_messages_in_total"), 2);
    assert_eq!(gauge(&b, "comet_cluster_messages_in_total"), 3);
    assert_eq!(gauge(&a, "comet_cluster_messages_out_total"), 2);
}

#[test]
#[ignore = "needs nats-server"]
fn a_publish_straight_to_nats_reaches_every_node() {
    let nats = Nats::start(&[]);
    let a = node(&nats.url());
    let b = node(&nats.url());
    let mut on_a = subscribe(a.public, "/test/5,6");
    let mut on_b = subscribe(b.public, "/events/6");
    // An SSE stream starts with its reconnect delay and the client's position.
    on_b.expect_retry();
    let position = String::from_utf8(on_b.read_chunk().expect("a position")).unwrap();
    assert!(position.starts_with("id: "), "{position:?}");
    nats_pub(&nats, "comet.user.5", "hi");
    on_a.expect_chunk(&seed_msg(1, "hi"));
    nats_pub(&nats, "comet.user.6", "there");
    on_a.expect_chunk(&seed_msg(2, "there"));
    let event = String::from_utf8(on_b.read_chunk().expect("an event")).unwrap();
    assert!(event.contains("data: there"), "{event:?}");
    // Subjects that are not <prefix>.user.<id> are counted and dropped; other prefixes never
    // reach the node.
    nats_pub(&nats, "comet.user.abc", "x");
    nats_pub(&nats, "other.user.5", "x");
    eventually("a bad subject counted", || {
        gauge(&a, "comet_cluster_bad_subjects_total") == 1
    });
    nats_pub(&nats, "comet.user.5", "after");
    on_a.expect_chunk(&seed_msg(3, "after"));
}

#[test]
#[ignore = "needs nats-server"]
fn the_prefix_separates_deployments() {
    let nats = Nats::start(&[]);
    let url = nats.url();
    let blue = Server::start(&[
        "--workers",
        "1",
        "--cluster",
        &url,
        "--cluster-prefix",
        "blue.comet",
        "--cluster-core",
    ]);
    let green = node(&url);
    wait_connected(&blue, 1);
    let mut on_blue = subscribe(blue.public, "/test/1");
    let mut on_green = subscribe(green.public, "/test/1");
    nats_pub(&nats, "comet.user.1", "green");
    nats_pub(&nats, "blue.comet.user.1", "blue");
    on_blue.expect_chunk(&seed_msg(1, "blue"));
    on_green.expect_chunk(&seed_msg(1, "green"));
    assert_eq!(send(&green, 1, "green2"), (1, true));
    assert_eq!(send(&blue, 1, "blue2"), (1, true));
    on_blue.expect_chunk(&seed_msg(2, "blue2"));
    on_green.expect_chunk(&seed_msg(2, "green2"));
}

/// 1. Two nodes route through NATS; NATS is killed.
/// 2. Both notice (connected 0) and keep serving local sends; the answer says the cluster copy
///    was dropped, and /metrics counts it.
/// 3. NATS comes back on the same port: both reconnect (counted) and routing resumes; the
///    test retries at most every 100 ms and reports how long it took.
#[test]
#[ignore = "needs nats-server"]
fn routing_resumes_after_a_nats_restart() {
    let mut nats = Nats::start(&[]);
    let a = node(&nats.url());
    let b = node(&nats.url());
    let mut on_a = subscribe(a.public, "/test/9");
    let mut on_b = subscribe(b.public, "/test/9");
    assert_eq!(send(&b, 9, "before"), (1, true));
    on_a.expect_chunk(&seed_msg(1, "before"));
    on_b.expect_chunk(&seed_msg(1, "before"));

    nats.kill();
    wait_connected(&a, 0);
    wait_connected(&b, 0);
    assert_eq!(send(&b, 9, "local"), (1, false));
    on_b.expect_chunk(&seed_msg(2, "local"));
    assert!(gauge(&b, "comet_cluster_publish_failed_total") >= 1);

    nats.restart();
    let restarted = Instant::now();
    let in_before = gauge(&a, "comet_cluster_messages_in_total");
    let mut attempt = 0;
    let resumed = loop {
        attempt += 1;
        assert!(
            restarted.elapsed() < Duration::from_secs(30),
            "routing not back 30 s after the restart"
        );
        let msg = format!("retry{attempt}");
        let (local, _) = send(&b, 9, &msg);
        assert_eq!(local, 1);
        on_b.expect_chunk(&seed_msg(2 + attempt, &msg));
        // A copy that left B arrives at A within milliseconds, or never (at most once).
        let deadline = Instant::now() + Duration::from_millis(100);
        let arrived = loop {
            if gauge(&a, "comet_cluster_messages_in_total") > in_before {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if arrived {
            break msg;
        }
    };
    eprintln!(
        "routing resumed {:?} after the NATS restart ({attempt} attempts)",
        restarted.elapsed()
    );
    on_a.expect_chunk(&seed_msg(2, &resumed));
    assert_eq!(send(&a, 9, "after"), (1, true));
    on_a.expect_chunk(&seed_msg(3, "after"));
    on_b.expect_chunk(&seed_msg(3 + attempt, "after"));
    for node in [&a, &b] {
        wait_connected(node, 1);
        assert!(gauge(node, "comet_cluster_reconnects_total") >= 1);
    }
}

/// A node dies: the others keep serving, through NATS too, and its clients can subscribe on
/// another node.
#[test]
#[ignore = "needs nats-server"]
fn a_dead_node_leaves_the_others_serving() {
    let nats = Nats::start(&[]);
    let mut a = node(&nats.url());
    let b = node(&nats.url());
    let c = node(&nats.url());
    let mut on_b = subscribe(b.public, "/test/3");
    let _on_a = subscribe(a.public, "/test/3");
    assert_eq!(send(&c, 3, "one"), (0, true));
    on_b.expect_chunk(&seed_msg(1, "one"));

    a.signal("KILL");
    a.wait(TIMEOUT).expect("comet exits on SIGKILL");
    // A's client comes back on B.
    let mut moved = subscribe(b.public, "/test/3");
    assert_eq!(send(&c, 3, "two"), (0, true));
    on_b.expect_chunk(&seed_msg(2, "two"));
    moved.expect_chunk(&seed_msg(1, "two"));
    nats_pub(&nats, "comet.user.3", "three");
    on_b.expect_chunk(&seed_msg(3, "three"));
    moved.expect_chunk(&seed_msg(2, "three"));
    assert_eq!(send(&b, 3, "four"), (2, true));
    on_b.expect_chunk(&seed_msg(4, "four"));
    moved.expect_chunk(&seed_msg(3, "four"));
}

/// Three NATS servers joined by routes, a node on each (each knowing only its own server):
/// a message published on any node or server reaches the subscribers on all three, once.
#[test]
#[ignore = "needs nats-server"]
fn three_nats_servers_with_a_node_on_each() {
    let cluster_ports = [free_port(), free_port(), free_port()];
    let routes = cluster_ports
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let servers: Vec<Nats> = cluster_ports
        .iter()
        .map(|&p| {
            Nats::start(&[
                "--cluster_name".into(),
                "comet-test".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{p}"),
                "--routes".into(),
                routes.clone(),
            ])
        })
        .collect();
    let nodes: Vec<Server> = servers.iter().map(|s| node(&s.url())).collect();

    // Routes form and interest spreads between servers in the background: publish on each
    // node to an id nobody holds until both other nodes have seen it (bounded by `eventually`).
    for (i, from) in nodes.iter().enumerate() {
        let others: Vec<&Server> = nodes
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, n)| n)
            .collect();
        let before: Vec<u64> = others
            .iter()
            .map(|n| gauge(n, "comet_cluster_messages_in_total"))
            .collect();
        eventually(&format!("node {i} reaches the other two"), || {
            send(from, 1_000_000, "warm-up");
            std::thread::sleep(Duration::from_millis(50));
            others
                .iter()
                .zip(&before)
                .all(|(n, &b)| gauge(n, "comet_cluster_messages_in_total") > b)
        });
    }

    let mut streams: Vec<Client> = nodes
        .iter()
        .map(|n| subscribe(n.public, "/test/21"))
        .collect();
    for (i, node) in nodes.iter().enumerate() {
        let msg = format!("from-node-{i}");
        assert_eq!(send(node, 21, &msg), (1, true));
        for stream in &mut streams {
            stream.expect_chunk(&seed_msg(i as u64 + 1, &msg));
        }
    }
    nats_pub(&servers[1], "comet.user.21", "from-nats");
    for stream in &mut streams {
        stream.expect_chunk(&seed_msg(4, "from-nats"));
    }
    nats_pub(&servers[2], "comet.user.21", "end");
    for stream in &mut streams {
        stream.expect_chunk(&seed_msg(5, "end"));
    }
}
