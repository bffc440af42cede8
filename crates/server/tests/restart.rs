//! `--state-dir`: a single node keeps its positions across a graceful restart (README,
//! "Sequence numbers and positions"). SSE and long-poll clients resume after a SIGTERM and a
//! restart with no gap, getting exactly what they missed; a crash (SIGKILL) still gives an
//! honest gap; a state file that fails its checks stops the start with a message that says
//! which file, what is wrong and how to start without it.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::{eventually, get, refused_start, state_dir, subscribe, Client, Publisher, Server};
use serde_json::{json, Value};

const STATE_FILE: &str = "comet.state";

fn start(dir: &Path, workers: &str) -> Server {
    let dir = dir.to_str().expect("a UTF-8 temp path");
    Server::start(&[
        "--workers",
        workers,
        "--state-dir",
        dir,
        "--poll-timeout-ms",
        "300",
    ])
}

/// The next SSE event must be message `data`; returns its position (`<epoch>:<seq>`).
fn expect_message(client: &mut Client, data: &str) -> String {
    let event = client.next_event().expect("an event, not the stream's end");
    assert_eq!(
        (event.event.as_deref(), event.data.as_deref()),
        (None, Some(data)),
        "{event:?}"
    );
    event.id.expect("a position")
}

/// One long-poll on a fresh connection: its JSON body.
fn poll(server: &Server, path: &str) -> Value {
    let mut client = Client::connect(server.public);
    client.write(&get(path));
    let response = client.read_response();
    assert_eq!(response.status(), 200, "{response:?}");
    serde_json::from_slice(&response.body).expect("a JSON body")
}

fn poll_messages(body: &Value) -> Vec<&str> {
    body["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {body}"))
        .iter()
        .map(|m| m["data"].as_str().expect("data"))
        .collect()
}

fn epoch(pos: &str) -> &str {
    pos.split_once(':').expect("<epoch>:<seqs>").0
}

/// 1. Two workers, `--state-dir`: an SSE client of id 7 reads "a", "b" (its position is b's);
///    a long-poll of id 8 takes its position; a client of ids 7 and 8 reads "a".
/// 2. "c", "d" to 7 and "x" to 8 are published, which these clients do not read.
/// 3. SIGTERM: exit 0 and a state file. Restart with three workers (ids move between shards):
///    the file is loaded and moved aside.
/// 4. Each client resumes with its old position: no gap, exactly what it missed, in order,
///    under the same epoch; then a live message arrives once.
#[test]
fn a_graceful_restart_resumes_without_a_gap() {
    let dir = state_dir("restart-graceful");
    let mut server = start(&dir, "2");
    let mut publisher = Publisher::connect(&server);
    let mut sse = subscribe(server.public, "/events/7");
    let mut both = subscribe(server.public, "/events/7,8");
    let first = poll(&server, "/poll/8");
    let poll_pos = first["since"].as_str().expect("since").to_owned();
    publisher.send(7, "a");
    publisher.send(7, "b");
    expect_message(&mut sse, "a");
    let pos_b = expect_message(&mut sse, "b");
    let both_pos = expect_message(&mut both, "a");
    publisher.send(7, "c");
    publisher.send(7, "d");
    publisher.send(8, "x");
    drop(publisher);

    assert!(server.stop("TERM").success());
    assert!(
        dir.join(STATE_FILE).is_file(),
        "no state file after SIGTERM"
    );
    drop((sse, both));
    let server = start(&dir, "3");
    assert!(
        !dir.join(STATE_FILE).exists(),
        "the state file stays after loading"
    );
    assert!(dir.join("comet.state.loaded").is_file());
    eventually("the restore logged", || {
        server.log().contains("state restored")
    });

    let mut sse = subscribe(server.public, &format!("/events/7?since={pos_b}"));
    let c = expect_message(&mut sse, "c");
    let d = expect_message(&mut sse, "d");
    assert_eq!(epoch(&c), epoch(&pos_b), "the epoch is kept");
    let seq = |pos: &str| common::position_seq(pos);
    // The position is the owner's last seq: d's, or a later one of another id.
    assert!(seq(&sse.expect_position()) >= seq(&d));
    let mut both = subscribe(server.public, &format!("/events/7,8?since={both_pos}"));
    let mut seen = Vec::new();
    for _ in 0..4 {
        let event = both.next_event().expect("a replayed message");
        assert_eq!(event.event, None, "no gap: {event:?}");
        seen.push(event.data.expect("data"));
    }
    seen.sort();
    assert_eq!(seen, ["b", "c", "d", "x"]);
    let body = poll(&server, &format!("/poll/8?since={poll_pos}"));
    assert_eq!(body["gap"], json!([]), "{body}");
    assert_eq!(poll_messages(&body), ["x"]);
    assert_eq!(epoch(body["since"].as_str().unwrap()), epoch(&poll_pos));

    // Live after the replay, once; numbered after every restored message.
    let mut publisher = Publisher::connect(&server);
    publisher.send(7, "e");
    let e = expect_message(&mut sse, "e");
    assert!(seq(&e) > seq(&d), "{e} after {d}");
    let body = poll(
        &server,
        &format!("/poll/8?since={}", body["since"].as_str().unwrap()),
    );
    assert_eq!(body["messages"], json!([]), "nothing twice: {body}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// 1. A graceful restart, as above (the folder from `COMET_STATE_DIR`): positions resume.
/// 2. SIGKILL (a crash): no state file is written, and the one loaded was moved aside.
/// 3. The next start draws a new epoch: the old position gets a gap notice and what the
///    history holds (nothing).
#[test]
fn a_crash_after_a_restore_gives_an_honest_gap() {
    let dir = state_dir("restart-crash");
    let mut server = start(&dir, "1");
    let mut sse = subscribe(server.public, "/events/7");
    Publisher::connect(&server).send(7, "a");
    let pos = expect_message(&mut sse, "a");
    assert!(server.stop("TERM").success());
    // The same folder from the environment.
    let dir_text = dir.to_str().unwrap();
    let mut server = Server::start_env(&["--workers", "1"], &[("COMET_STATE_DIR", dir_text)]);
    Publisher::connect(&server).send(7, "b");
    let mut resumed = subscribe(server.public, &format!("/events/7?since={pos}"));
    expect_message(&mut resumed, "b");
    server.kill();
    assert!(!dir.join(STATE_FILE).exists());

    let server = start(&dir, "1");
    let mut sse = subscribe(server.public, &format!("/events/7?since={pos}"));
    let event = sse.next_event().expect("a gap notice");
    assert_eq!(event.event.as_deref(), Some("gap"), "{event:?}");
    let now = sse.expect_position();
    assert_ne!(epoch(&now), epoch(&pos), "a new epoch after a crash");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `comet serve --state-dir <dir>` that must refuse to start: exit 1, and stderr.
fn refused(dir: &Path) -> String {
    refused_start(&[OsStr::new("--state-dir"), dir.as_os_str()])
}

/// A state file flipped, truncated or of another version is refused, naming the file, what
/// is wrong and how to start without it, and is left where it was; moved away, the start works
/// as without it. A file that passes is loaded (the control).
#[test]
fn a_corrupt_state_file_is_refused() {
    let dir = state_dir("restart-corrupt");
    let mut server = start(&dir, "1");
    Publisher::connect(&server).send(7, "a message to have some content");
    assert!(server.stop("TERM").success());
    let path: PathBuf = dir.join(STATE_FILE);
    let good = std::fs::read(&path).expect("the state file");
    let mut flipped = good.clone();
    let last = flipped.len() - 3;
    flipped[last] ^= 0x01;
    let mut version = good.clone();
    version[8..12].copy_from_slice(&2u32.to_le_bytes());
    let cases: [(&str, Vec<u8>); 4] = [
        ("checksum mismatch", flipped),
        ("truncated", good[..good.len() - 5].to_vec()),
        ("truncated", good[..10].to_vec()),
        ("format version 2", version),
    ];
    for (why, bytes) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let stderr = refused(&dir);
        let shown = path.display().to_string();
        assert!(
            stderr.contains(&shown) && stderr.contains(why) && stderr.contains("move it away"),
            "{why}: {stderr}"
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "the file is left as it was"
        );
    }
    // Moved away: a start as without it.
    std::fs::rename(&path, dir.join("comet.state.bad")).unwrap();
    let server = start(&dir, "1");
    drop(server);
    assert!(!dir.join("comet.state.loaded").exists(), "nothing to load");
    // The good file loads.
    std::fs::write(&path, &good).unwrap();
    let server = start(&dir, "1");
    assert!(dir.join("comet.state.loaded").is_file(), "loaded");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--state-dir` with `--cluster` is refused: messages published elsewhere while this node is
/// down would be missed without a gap notice.
#[test]
fn state_dir_is_for_a_single_node() {
    let dir = state_dir("restart-cluster");
    let stderr = refused_start(&[
        OsStr::new("--cluster"),
        OsStr::new("nats://127.0.0.1:1"),
        OsStr::new("--state-dir"),
        dir.as_os_str(),
    ]);
    assert!(
        stderr.contains("--state-dir") && stderr.contains("--cluster"),
        "{stderr}"
    );
}
