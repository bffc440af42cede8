//! A `nats-server` child process for the cluster tests (core NATS and JetStream), a raw
//! publisher speaking NATS's text protocol, and a node's view of its link.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually, metrics, request, samples, Server, TIMEOUT};

/// One `nats-server` child process, killed (by pid) on drop.
pub struct Nats {
    child: Child,
    port: u16,
    args: Vec<String>,
    /// JetStream's file storage (`-sd`), kept across restarts, removed on drop.
    store: Option<PathBuf>,
}

impl Nats {
    /// `nats-server -p <free port> -a 127.0.0.1 <extra>`, once its port accepts. Fails when
    /// nats-server is not installed.
    pub fn start(extra: &[String]) -> Nats {
        Nats::start_on(free_port(), extra)
    }

    /// A server with JetStream and file storage in a fresh folder (kept across
    /// [`Nats::restart`]).
    pub fn jetstream() -> Nats {
        Nats::jetstream_with(&[])
    }

    /// [`Nats::jetstream`] with more arguments (a NATS cluster's).
    pub fn jetstream_with(extra: &[String]) -> Nats {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let store = std::env::temp_dir().join(format!("comet-js-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&store);
        let mut args = vec![
            "-js".to_string(),
            "-sd".to_string(),
            store.display().to_string(),
        ];
        args.extend_from_slice(extra);
        let mut nats = Nats::start(&args);
        nats.store = Some(store);
        nats
    }

    pub fn start_on(port: u16, extra: &[String]) -> Nats {
        let program = super::require("nats-server", "nats-server");
        let mut args = vec![
            "-p".to_string(),
            port.to_string(),
            "-a".to_string(),
            "127.0.0.1".to_string(),
        ];
        args.extend_from_slice(extra);
        let child = Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn nats-server: {e}"));
        let nats = Nats {
            child,
            port,
            args,
            store: None,
        };
        nats.wait_ready();
        nats
    }

    pub fn wait_ready(&self) {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        eventually("nats-server accepts connections", || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freezes the server (SIGSTOP): its connections stay open, and nothing is answered until
    /// [`Nats::resume`].
    pub fn pause(&self) {
        self.signal("STOP");
    }

    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-s", signal, &pid]).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "kill -s {signal} nats-server"
        );
    }

    /// The same server again, on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Command::new("nats-server")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("restart nats-server");
        self.wait_ready();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
        if let Some(store) = &self.store {
            let _ = std::fs::remove_dir_all(store);
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .unwrap()
        .port()
}

/// Publishes `msg` on `<subject>` straight to NATS, speaking its text protocol, and returns
/// once the server has handled it (PING answered by PONG).
pub fn nats_pub(nats: &Nats, subject: &str, msg: &str) {
    let mut stream = TcpStream::connect(("127.0.0.1", nats.port)).expect("connect to NATS");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let request = format!(
        "CONNECT {{\"verbose\":false}}\r\nPUB {subject} {}\r\n{msg}\r\nPING\r\n",
        msg.len()
    );
    stream.write_all(request.as_bytes()).expect("write to NATS");
    let mut lines = BufReader::new(stream).lines();
    loop {
        let line = lines
            .next()
            .expect("NATS closed the connection")
            .expect("read from NATS");
        assert!(!line.starts_with("-ERR"), "NATS: {line}");
        if line == "PONG" {
            return;
        }
    }
}

/// The first sample of metric `name` on `server` (the node-wide `comet_cluster_*` ones).
pub fn gauge(server: &Server, name: &str) -> u64 {
    let text = metrics(server);
    samples(&text, name)
        .first()
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        .1
}

/// Waits until the node's link to NATS is `value` (1 linked, 0 not); `/readyz` then agrees
/// (200 linked, 503 not).
pub fn wait_connected(server: &Server, value: u64) {
    eventually(&format!("comet_cluster_connected {value}"), || {
        gauge(server, "comet_cluster_connected") == value
    });
    let ready = request(
        server.publish,
        b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let expected = if value == 1 { 200 } else { 503 };
    assert_eq!(ready.status(), expected, "{ready:?}");
}
