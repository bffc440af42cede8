//! resumetest against the real `comet` binary (see `tools/testsupport/comet.rs`): 5 SSE
//! subscribers that drop and resume 20 times in all while 200 msg/s are published for 2 s.
//! With comet's history (on by default) every message must arrive exactly once, in order.

#[path = "../../testsupport/comet.rs"]
mod comet;
#[path = "../../testsupport/harness.rs"]
mod harness;

use comet::{comet_bin, start_comet};

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
