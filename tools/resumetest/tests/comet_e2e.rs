//! resumetest against the real `comet` binary (see `tools/testsupport/comet.rs`): 5 SSE
//! subscribers that drop and resume 20 times in all while 200 msg/s are published for 2 s.
//! With comet's history (on by default) every message must arrive exactly once, in order.

#[path = "../../testsupport/comet.rs"]
mod comet;
#[path = "../../testsupport/harness.rs"]
mod harness;

use comet::{comet_bin, start_comet, start_comet_with};

#[test]
fn real_comet_resumes_without_loss() {
    let bin = comet_bin();
    let server = start_comet(&bin);
    let s = harness::run_json(
        env!("CARGO_BIN_EXE_resumetest"),
        &[
            "--target",
            &server.public,
            "--publish",
            &server.publish,
            "--subscribers",
            "5",
            "--rate",
            "200",
            "--duration",
            "2s",
            "--reconnects",
            "20",
            "--drain",
            "10s",
        ],
    );
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

/// The soak's set-up in small: auth (a token per subscriber), history and heartbeats on, and
/// churn (each of 20 subscribers drops every 2 s: 3000 % a minute) for 4 s at 40 msg/s.
#[test]
fn real_comet_churn_with_tokens_and_heartbeats() {
    let bin = comet_bin();
    let secret = "e2e-soak-secret";
    let server = start_comet_with(&bin, &["--auth-secret", secret, "--heartbeat-ms", "200"]);
    let s = harness::run_json(
        env!("CARGO_BIN_EXE_resumetest"),
        &[
            "--target",
            &server.public,
            "--publish",
            &server.publish,
            "--subscribers",
            "20",
            "--rate",
            "40",
            "--duration",
            "4s",
            "--churn",
            "3000",
            "--jwt-secret",
            secret,
            "--stats-interval",
            "1s",
            "--drain",
            "10s",
        ],
    );
    assert_eq!(s["published"], 160, "{s}");
    assert_eq!(s["received"], 160, "{s}");
    for zero in [
        "lost",
        "duplicated",
        "reordered",
        "gaps",
        "gaps_unexplained",
        "unfinished",
        "publish_failed",
        "status_errors",
        "resumed_without_id",
    ] {
        assert_eq!(s[zero], 0, "{zero}: {s}");
    }
    // Every subscriber drops once or twice in 4 s (phases spread over the 2 s period).
    let reconnects = s["reconnects"].as_u64().unwrap();
    assert!((20..=40).contains(&reconnects), "{s}");
    assert!(
        s["resume_ms"]["count"].as_u64().unwrap() >= reconnects,
        "{s}"
    );
    assert!(s["heartbeats"].as_u64().unwrap() > 0, "{s}");
}
