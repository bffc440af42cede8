//! Where `comet serve` takes its settings from (README, "Configuration"): a flag wins over its
//! `COMET_*` variable, which wins over the config file, which wins over the default; a bad key
//! or value in the file stops the start with a message naming it. Also the start-time refusal
//! of a publish listener beyond loopback without a secret, and the log formats.

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{get, post_send, request, Server, TIMEOUT};

/// A config file with `text` in a fresh temporary directory, removed on drop.
struct ConfigFile {
    dir: PathBuf,
    path: PathBuf,
}

impl ConfigFile {
    fn new(name: &str, text: &str) -> ConfigFile {
        let dir =
            std::env::temp_dir().join(format!("comet-settings-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("comet.toml");
        std::fs::write(&path, text).expect("write config");
        ConfigFile { dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `comet serve <args>` that must refuse to start: its exit code and stderr. A server
/// that starts instead is killed and fails the test.
fn refused(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_comet"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn comet");
    // std has no wait with a timeout: poll the exit with a deadline.
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("comet serve {args:?} did not refuse to start");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    (status.code().expect("an exit code, not a signal"), stderr)
}

#[test]
fn a_flag_beats_its_variable_which_beats_the_file_which_beats_the_default() {
    let file = ConfigFile::new("precedence", "workers = 3\ndemo = true\n");
    let config = ["--config", file.path()];

    // The file over the default (one worker per CPU).
    let server = Server::start(&config);
    assert_eq!(server.workers, 3);
    // `demo = true`: the page is served.
    let page = request(server.public, &get("/"));
    assert_eq!(page.status(), 200, "{page:?}");
    drop(server);

    // The variable over the file, for a number and for a switch.
    let server = Server::start_env(&config, &[("COMET_WORKERS", "4"), ("COMET_DEMO", "false")]);
    assert_eq!(server.workers, 4);
    assert_eq!(request(server.public, &get("/")).status(), 404);
    drop(server);

    // The flag over the variable.
    let server = Server::start_env(
        &["--config", file.path(), "--workers", "1"],
        &[("COMET_WORKERS", "4")],
    );
    assert_eq!(server.workers, 1);
    drop(server);

    // COMET_CONFIG names the file.
    let server = Server::start_env(&[], &[("COMET_CONFIG", file.path())]);
    assert_eq!(server.workers, 3);
}

/// Secrets come from the environment too (so they stay out of `ps`).
#[test]
fn secrets_from_the_environment() {
    let server = Server::start_env(&[], &[("COMET_PUBLISH_SECRET", "hush")]);
    assert_eq!(
        request(server.publish, &post_send("1", b"x")).status(),
        401,
        "COMET_PUBLISH_SECRET must be required"
    );
    drop(server);

    // The NATS user needs its password: read from the environment, both satisfy the rule.
    let (code, stderr) = refused(&[], &[("COMET_CLUSTER_USER", "u")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--cluster-password"), "{stderr}");
    Server::start_env(
        &[],
        &[("COMET_CLUSTER_USER", "u"), ("COMET_CLUSTER_PASSWORD", "p")],
    );
    // And a secret's value never shows in --help.
    let help = Command::new(env!("CARGO_BIN_EXE_comet"))
        .args(["serve", "--help"])
        .env("COMET_AUTH_SECRET", "do-not-print")
        .output()
        .expect("comet serve --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("COMET_AUTH_SECRET"), "{help}");
    assert!(!help.contains("do-not-print"), "{help}");
}

#[test]
fn a_bad_file_stops_the_start_naming_the_key() {
    for (name, text, expected) in [
        (
            "typo",
            "histroy-messages = 3\n",
            "unknown key \"histroy-messages\"",
        ),
        (
            "snake",
            "history_messages = 3\n",
            "did you mean \"history-messages\"",
        ),
        (
            "value",
            "history-messages = \"lots\"\n",
            "'--history-messages",
        ),
        ("switch", "demo = \"yes\"\n", "demo is a switch"),
        ("syntax", "workers = \n", "line 1"),
    ] {
        let file = ConfigFile::new(name, text);
        let (code, stderr) = refused(&["--config", file.path()], &[]);
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(stderr.contains(file.path()), "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
    let (code, stderr) = refused(&["--config", "/nonexistent/comet.toml"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("/nonexistent/comet.toml"), "{stderr}");
    // A bad value in a variable is refused as well.
    let (code, stderr) = refused(&[], &[("COMET_HEARTBEAT_MS", "soon")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--heartbeat-ms"), "{stderr}");
}

#[test]
fn a_publish_listener_beyond_loopback_needs_a_secret() {
    let (code, stderr) = refused(&["--publish-listen", "0.0.0.0:0"], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("not a loopback address")
            && stderr.contains("--publish-secret")
            && stderr.contains("--insecure-publish"),
        "{stderr}"
    );
    // From the file, the same.
    let file = ConfigFile::new("publish", "publish-listen = \"0.0.0.0:0\"\n");
    let (code, _) = refused(&["--config", file.path()], &[]);
    assert_eq!(code, 1);
    // With a secret, or said to be insecure on purpose, it starts.
    let server = Server::start_env(
        &["--publish-listen", "0.0.0.0:0"],
        &[("COMET_PUBLISH_SECRET", "s")],
    );
    assert!(server.publish.ip().is_unspecified());
    drop(server);
    Server::start(&["--publish-listen", "0.0.0.0:0", "--insecure-publish"]);
}

#[test]
fn log_lines_as_json_or_plain_text() {
    let mut server = Server::start(&["--log-format", "json"]);
    assert!(server.stop("TERM").success());
    let log = server.log();
    let mut messages = Vec::new();
    for line in log.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        assert!(
            value["timestamp"].is_string() && value["level"].is_string(),
            "{line}"
        );
        messages.push(value["fields"]["message"].as_str().unwrap_or("").to_owned());
    }
    assert!(messages.iter().any(|m| m == "comet started"), "{log}");
    assert!(messages.iter().any(|m| m == "stopped"), "{log}");

    // Text into a pipe: no colour codes. (NO_COLOR, which the helper sets, is unset here.)
    let mut child = common::serve_command()
        .env_remove("NO_COLOR")
        .env("COMET_LOG_FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn comet");
    // The ready line comes after the "comet started" log line.
    let mut stdout = child.stdout.take().unwrap();
    let mut ready = [0u8; 16];
    stdout.read_exact(&mut ready).expect("the ready line");
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-s", "TERM", &pid]).status();
    assert!(killed.expect("kill").success());
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(log.contains("comet started"), "{log}");
    assert!(!log.contains('\x1b'), "colour codes in a pipe: {log:?}");
}
