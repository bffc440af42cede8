//! Starting the real `comet` binary from the tools' end-to-end tests. Each test crate includes
//! this file with `#[path]` and uses what it needs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// `$COMET_BIN`, else `target/debug/comet` (what this test run built), else
/// `target/release/comet`, under the workspace root. Fails the test when there is none (a test
/// that cannot run must not pass): `cargo test --workspace` always builds target/debug/comet.
pub fn comet_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("COMET_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    ["debug", "release"]
        .iter()
        .map(|profile| root.join("target").join(profile).join("comet"))
        .find(|p| p.exists())
        .expect(
            "no comet binary: run `cargo build -p comet` first, set COMET_BIN, or test the \
             whole workspace (`bash tools/test.sh`), which builds it",
        )
}

/// A running `comet serve`, killed on drop.
pub struct Server {
    child: Child,
    pub public: String,
    pub publish: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts comet with 2 workers on ports the kernel picks, and reads its addresses from its
/// `comet: listening public=... publish=...` line.
pub fn start_comet(bin: &PathBuf) -> Server {
    start_comet_with(bin, &[])
}

/// [`start_comet`] with more `comet serve` arguments (e.g. `--auth-secret`).
pub fn start_comet_with(bin: &PathBuf, args: &[&str]) -> Server {
    let mut child = Command::new(bin)
        .args(["serve", "--workers", "2"])
        .args(["--listen", "127.0.0.1:0", "--publish-listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start comet");
    let stdout = child.stdout.take().expect("comet's stdout");
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("comet: listening"))
        .expect("comet did not start");
    let field = |name: &str| {
        ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .expect("an address in the listening line")
            .to_string()
    };
    Server {
        public: field("public="),
        publish: field("publish="),
        child,
    }
}
