//! `comet send <id> <msg>`: one `POST /send/<id>` to the publish API.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use clap::Args;

#[derive(Args, Debug)]
pub struct SendArgs {
    /// The publish API's address.
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub to: SocketAddr,
    /// The user id (an unsigned 64-bit integer).
    pub id: String,
    /// The message.
    pub msg: String,
    /// The publish API's secret (`comet serve --publish-secret`), sent as a bearer token.
    #[arg(long, env = "COMET_PUBLISH_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
}

/// Returns the process exit code: 0 when the server accepted the message.
pub fn run(args: &SendArgs) -> i32 {
    match send(args) {
        Ok((status, body)) if (200..300).contains(&status) => {
            match connections(&body) {
                Some(n) => println!(
                    "sent to {} ({n} connection{}{})",
                    args.id,
                    if n == 1 { "" } else { "s" },
                    match cluster(&body) {
                        None => "",
                        Some(true) => " on this node, and to the cluster",
                        Some(false) => {
                            " on this node; NOT sent to the cluster (link down or queue full)"
                        }
                    }
                ),
                None => println!("{}", body.trim_end()),
            }
            0
        }
        Ok((status, body)) => {
            eprintln!("comet send: {status}: {}", body.trim_end());
            1
        }
        Err(e) => {
            eprintln!("comet send: {}: {e}", args.to);
            1
        }
    }
}

fn send(args: &SendArgs) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&args.to, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = match &args.secret {
        Some(secret) if secret.contains(['\r', '\n']) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the secret contains a line break",
            ))
        }
        Some(secret) => format!("Authorization: Bearer {secret}\r\n"),
        None => String::new(),
    };
    let head = format!(
        "POST /send/{} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{auth}Connection: close\r\n\r\n",
        args.id,
        args.to,
        args.msg.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(args.msg.as_bytes())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(&answer) {
        Ok(httparse::Status::Complete(len)) => Ok((
            response.code.unwrap_or(0),
            String::from_utf8_lossy(&answer[len..]).into_owned(),
        )),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "malformed answer",
        )),
    }
}

/// The server's JSON answer to a publish: `{"id":..,"connections":N[,"cluster":bool]}`.
#[derive(serde::Deserialize)]
struct Answer {
    connections: u64,
    /// Absent when the node runs alone.
    cluster: Option<bool>,
}

fn answer(body: &str) -> Option<Answer> {
    serde_json::from_str(body.trim()).ok()
}

/// The `"connections":N` of the server's JSON answer.
fn connections(body: &str) -> Option<u64> {
    answer(body).map(|a| a.connections)
}

/// The `"cluster":true|false` of the server's JSON answer (absent when the node runs alone).
fn cluster(body: &str) -> Option<bool> {
    answer(body).and_then(|a| a.cluster)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_cluster_field() {
        assert_eq!(super::cluster("{\"id\":1,\"connections\":2}\n"), None);
        assert_eq!(
            super::cluster("{\"id\":1,\"connections\":2,\"cluster\":true}\n"),
            Some(true)
        );
        assert_eq!(
            super::cluster("{\"id\":1,\"connections\":0,\"cluster\":false}\n"),
            Some(false)
        );
    }

    #[test]
    fn reads_the_connection_count() {
        assert_eq!(
            super::connections("{\"id\":1,\"connections\":12}\n"),
            Some(12)
        );
        assert_eq!(super::connections("nothing"), None);
    }
}
