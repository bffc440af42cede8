//! msggen against the real `comet` binary (see `tools/testsupport/comet.rs`): single and
//! batch publishing with no subscribers must be accepted in full and reach 0 connections.

#[path = "../../testsupport/comet.rs"]
mod comet;
#[path = "../../testsupport/harness.rs"]
mod harness;

use comet::{comet_bin, start_comet};

fn msggen(args: &[&str]) -> serde_json::Value {
    harness::run_json(env!("CARGO_BIN_EXE_msggen"), args)
}

#[test]
fn real_comet_accepts_single_and_batch() {
    let bin = comet_bin();
    let server = start_comet(&bin);
    let publish = server.publish.clone();
    let single = msggen(&[
        "--target",
        &publish,
        "--generators",
        "10",
        "--interval-ms",
        "10",
        "--count",
        "30",
        "--duration",
        "30s",
    ]);
    assert_eq!(single["sent"], 300, "{single}");
    assert_eq!(single["accepted"], 300, "{single}");
    assert_eq!(single["connections"], 0, "{single}");
    let batch = msggen(&[
        "--target",
        &publish,
        "--rate",
        "5000",
        "--batch",
        "50",
        "--duration",
        "1s",
    ]);
    let sent = batch["sent"].as_u64().unwrap();
    assert!(sent > 2000, "{batch}");
    assert_eq!(batch["accepted"], sent, "{batch}");
    assert_eq!(batch["failed"], 0, "{batch}");
}
