//! resumetest against the real `comet` binary (see `tools/testsupport/comet.rs`): 5 SSE
//! subscribers that drop and resume 20 times in all while 200 msg/s are published for 2 s.
//! With comet's history (on by default) every message must arrive exactly once, in order.

use std::process::Command;

#[path = "../../testsupport/comet.rs"]
mod comet;

use comet::{comet_bin, start_comet};

#[test]
fn real_comet_resumes_without_loss() {
    let Some(bin) = comet_bin() else {
        return;
    };
    let server = start_comet(&bin);
    let out = Command::new(env!("CARGO_BIN_EXE_resumetest"))
        .args(["--target", &server.public, "--publish", &server.publish])
        .args(["--subscribers", "5", "--rate", "200", "--duration", "2s"])
        .args(["--reconnects", "20", "--drain", "10s"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let s: serde_json::Value = serde_json::from_str(
        stdout
            .lines()
            .last()
            .unwrap_or_else(|| panic!("no output: {stderr}")),
    )
    .unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(s["published"], 400, "{s}");
    assert_eq!(s["received"], 400, "{s}");
    for zero in [
        "lost",
        "duplicated",
        "reordered",
        "gaps",
        "unfinished",
        "publish_failed",
        "status_errors",
        "framing_errors",
        "no_initial_position",
        "resumed_without_id",
    ] {
        assert_eq!(s[zero], 0, "{zero}: {s}");
    }
    assert_eq!(s["reconnects"], 20, "{s}");
}
