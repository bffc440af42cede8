//! `comet send <id> <msg>`: one `POST /send/<id>` to the publish API, sent again (bounded, with
//! backoff, honouring `Retry-After`) while the server answers 503 (a cluster on JetStream that
//! cannot store it now), with one `Idempotency-Key` for every try so that it is stored once.

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
    /// Tries at most while the server answers 503 (1 = no retry).
    #[arg(long, default_value_t = 5)]
    pub attempts_max: u32,
    /// The Idempotency-Key of this publish (default: drawn once for all its tries).
    #[arg(long)]
    pub key: Option<String>,
}

/// The wait before try `attempt + 1`: the server's Retry-After or 250 ms doubling per try, the
/// longer, at most 5 s; `None` once `attempts_max` tries were made.
fn retry_delay(attempt: u32, attempts_max: u32, retry_after_s: Option<u64>) -> Option<Duration> {
    if attempt >= attempts_max {
        return None;
    }
    let backoff = Duration::from_millis(250u64 << attempt.saturating_sub(1).min(8));
    let after = Duration::from_secs(retry_after_s.unwrap_or(0));
    Some(backoff.max(after).min(Duration::from_secs(5)))
}

/// Returns the process exit code: 0 when the server accepted the message.
pub fn run(args: &SendArgs) -> i32 {
    let key = args.key.clone().unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("send-{}-{nanos:x}", std::process::id())
    });
    let mut attempt = 1;
    let answer = loop {
        let answer = send(args, &key);
        let Ok((503, body, retry_after)) = &answer else {
            break answer;
        };
        let Some(delay) = retry_delay(attempt, args.attempts_max, *retry_after) else {
            break answer;
        };
        eprintln!("comet send: 503: {}; again in {delay:?}", body.trim_end());
        std::thread::sleep(delay);
        attempt += 1;
    };
    match answer.map(|(status, body, _)| (status, body)) {
        Ok((status, body)) if (200..300).contains(&status) => {
            match connections(&body) {
                Some(n) => println!(
                    "sent to {} ({n} connection{}{}){}",
                    args.id,
                    if n == 1 { "" } else { "s" },
                    match cluster(&body) {
                        None => "",
                        Some(true) => " on this node, and to the cluster",
                        Some(false) => {
                            " on this node; NOT sent to the cluster (link down or queue full)"
                        }
                    },
                    match answer_of(&body).and_then(|a| a.seq) {
                        Some(seq) => format!(", stored as seq {seq}"),
                        None => String::new(),
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

/// One try: the status, the body and `Retry-After` in seconds.
fn send(args: &SendArgs, key: &str) -> std::io::Result<(u16, String, Option<u64>)> {
    if key.contains(['\r', '\n']) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the key contains a line break",
        ));
    }
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
        "POST /send/{} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{auth}Idempotency-Key: {key}\r\nConnection: close\r\n\r\n",
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
        Ok(httparse::Status::Complete(len)) => {
            let retry_after = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("retry-after"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .and_then(|v| v.trim().parse().ok());
            Ok((
                response.code.unwrap_or(0),
                String::from_utf8_lossy(&answer[len..]).into_owned(),
                retry_after,
            ))
        }
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
    /// The stream's seq (a cluster on JetStream).
    seq: Option<u64>,
}

fn answer_of(body: &str) -> Option<Answer> {
    serde_json::from_str(body.trim()).ok()
}

/// The `"connections":N` of the server's JSON answer.
fn connections(body: &str) -> Option<u64> {
    answer_of(body).map(|a| a.connections)
}

/// The `"cluster":true|false` of the server's JSON answer (absent when the node runs alone).
fn cluster(body: &str) -> Option<bool> {
    answer_of(body).and_then(|a| a.cluster)
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
    fn retries_back_off_and_honour_retry_after() {
        use std::time::Duration;
        let d = |attempt, after| super::retry_delay(attempt, 5, after);
        assert_eq!(d(1, None), Some(Duration::from_millis(250)));
        assert_eq!(d(2, None), Some(Duration::from_millis(500)));
        assert_eq!(d(1, Some(1)), Some(Duration::from_secs(1)));
        assert_eq!(d(4, Some(60)), Some(Duration::from_secs(5)), "at most 5 s");
        assert_eq!(d(5, Some(1)), None, "bounded");
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
