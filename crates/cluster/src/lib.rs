//! comet's cluster backplane: nodes joined through NATS.
//!
//! Layout: here [`Options`] (what the `--cluster*` flags give), [`Stats`] (the
//! `comet_cluster_*` counters, read as a [`Snapshot`] that the server's /metrics writes),
//! [`channel`] (the workers' non-blocking way out: a [`Publisher`] per worker, one [`Outbox`]
//! for the bridge), [`Cluster`] (the bridge thread: a current-thread tokio runtime running one
//! async-nats client) and the core-NATS bridge, [`subject_id`] (the subject format, pure);
//! `stream.rs` the JetStream mode (the default): the stream, the consumer, stored publishes and
//! fetches, and its pure rules (stream name, epoch, the gap rule of a fetch, message ids).
//!
//! Two modes. **JetStream** (default): one stream over `<prefix>.user.*` is the cluster's
//! ordered, bounded history; a message's seq is its stream sequence, the same on every node; a
//! publish is answered once the stream stored it; every node (the publishing one too) gets
//! every message from one ordered consumer. See `stream.rs`. **Core NATS** (`--cluster-core`):
//! what follows, at most once across an outage.
//!
//! Subjects: a message for `id` is published on `<prefix>.user.<id>` with the message as the
//! payload, by comet nodes and by any NATS client. Each node holds ONE wildcard subscription,
//! `<prefix>.user.*`, and filters locally: an id nobody holds here costs one table lookup at its
//! owner worker, and nothing is kept per id on the backplane (NATS or client), whatever the
//! number of ids. Per-id interest could be added later behind an option without changing the
//! subjects publishers use.
//!
//! Exactly once per connection: a node connects with `no_echo`, so NATS never hands a node what
//! it published itself. A publish on a node is routed to its own connections by the node and
//! published once to NATS for the other nodes; a publish straight to NATS reaches every node.
//!
//! Neither direction blocks a worker:
//! - out: a worker offers the message to a bounded queue ([`Publisher::offer`]); when the queue
//!   is full or the link is down the copy for the other nodes is dropped and counted
//!   (`comet_cluster_publish_failed_total`); the local subscribers have it already.
//! - in: the bridge hands each message to the server's [`Inbound`], which puts it in the owner
//!   worker's unbounded mailbox and rings its doorbell, never waiting on the worker. So a slow
//!   worker grows its mailbox rather than making the node a NATS slow consumer. If the bridge
//!   itself falls behind NATS, async-nats drops messages past its subscription buffer
//!   (`SUBSCRIPTION_CAPACITY`) and reports a slow consumer (`comet_cluster_slow_consumer_total`).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{ConnectOptions, Event, ServerAddr};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};

mod stream;
pub use stream::{msg_id, stream_epoch, stream_gap, stream_name, Fetched, StreamOptions, Unstored};
use tokio::sync::{mpsc, oneshot};

/// Messages waiting for the bridge to publish them, at most: 16,384 is ~160 ms at 100k msg/s.
/// Past it the cluster copy is dropped and counted, so a worker never waits for NATS.
pub const OUT_QUEUE_LEN: usize = 16_384;
/// Messages async-nats buffers for our subscription before it drops and reports a slow consumer
/// (its default, 65,536: ~0.6 s at 100k msg/s; the bridge only moves them into mailboxes).
const SUBSCRIPTION_CAPACITY: usize = 65_536;
/// Messages handled between doorbell flushes, so that a burst costs one wake per worker.
const BATCH_MAX: usize = 256;
/// Longest wait between reconnect attempts: short, so that routing resumes soon after a
/// restart (async-nats's default backs off to 4 s).
const RECONNECT_DELAY_MAX_MS: u64 = 250;

/// How to join the cluster (the `--cluster*` flags).
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// NATS server URLs (`nats://host:4222`, `tls://...`); more than one for failover.
    pub servers: Vec<String>,
    /// Subject prefix: messages are published on `<prefix>.user.<id>`.
    pub prefix: String,
    pub token: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// A NATS `.creds` file (JWT and nkey seed).
    pub credentials: Option<PathBuf>,
    /// PEM root certificates to trust for the servers' TLS certificates.
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate and key, for servers that verify clients.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub require_tls: bool,
    /// The client name the servers show (`connz`).
    pub name: String,
    /// JetStream mode (the default) and its stream's limits; `None`: core NATS.
    pub stream: Option<StreamOptions>,
}

/// Checks a subject prefix: one or more `.`-separated tokens, none empty, no wildcards or
/// whitespace (NATS subject rules).
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    let ok = !prefix.is_empty()
        && prefix.split('.').all(|token| {
            !token.is_empty()
                && !token
                    .chars()
                    .any(|c| c.is_whitespace() || c == '*' || c == '>')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--cluster-prefix '{prefix}': expected dot-separated tokens without spaces, '*' or '>'"
        ))
    }
}

/// The id of a subject `<prefix>.user.<id>`, given `head` = `<prefix>.user.`; `None` when the
/// subject is anything else.
pub fn subject_id(head: &str, subject: &str) -> Option<u64> {
    let id = subject.strip_prefix(head)?;
    comet_router::parse_id(id.as_bytes()).ok()
}

/// The counters /metrics shows. Written by the bridge, its event callback and (on failure)
/// the workers, so read-modify-write atomics.
#[derive(Default)]
pub struct Stats {
    /// 1 while the link is up and our subscription is in place.
    connected: AtomicU64,
    connects: AtomicU64,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    publish_failed: AtomicU64,
    slow_consumer: AtomicU64,
    bad_subjects: AtomicU64,
    /// True once the first subscription reached the server: from then on a `Connected` event
    /// means routing works (async-nats replays the subscription before anything else).
    subscribed: AtomicBool,
    /// JetStream: the stream seq of the last message handed to the workers' mailboxes
    /// (stored after the mail is put: a worker that reads it, then drains its mailbox, has
    /// seen every message up to it).
    head: AtomicU64,
    /// JetStream: publishes answered once stored, and fetches from the stream for a resume.
    stored: AtomicU64,
    duplicates: AtomicU64,
    fetches: AtomicU64,
    fetch_failed: AtomicU64,
    /// Told on every (re)connection: the JetStream bridge sets its consumer up again at once
    /// rather than waiting for missed heartbeats (the server may have restarted).
    relinked: tokio::sync::Notify,
}

impl Stats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed) == 1
    }

    /// The counters now, for the server's /metrics (the server writes the text: one writer).
    pub fn snapshot(&self) -> Snapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Snapshot {
            connected: get(&self.connected) == 1,
            reconnects: get(&self.connects).saturating_sub(1),
            messages_in: get(&self.messages_in),
            messages_out: get(&self.messages_out),
            publish_failed: get(&self.publish_failed),
            slow_consumer: get(&self.slow_consumer),
            bad_subjects: get(&self.bad_subjects),
            head: get(&self.head),
            stored: get(&self.stored),
            duplicates: get(&self.duplicates),
            fetches: get(&self.fetches),
            fetch_failed: get(&self.fetch_failed),
        }
    }

    /// JetStream: the stream seq of the last message handed to the workers (see `head`).
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }
}

/// The bridge's counters as /metrics shows them (each read on its own, not at one instant).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The link is up and our subscription in place.
    pub connected: bool,
    /// Connections to NATS after the first.
    pub reconnects: u64,
    /// Messages received from NATS and handed to a worker.
    pub messages_in: u64,
    /// Messages published to NATS for the other nodes.
    pub messages_out: u64,
    /// Messages delivered locally but not sent to the cluster (link down or queue full).
    pub publish_failed: u64,
    /// Times NATS reported that the bridge fell behind and messages were dropped.
    pub slow_consumer: u64,
    /// Messages on a subject that is not `<prefix>.user.<id>`.
    pub bad_subjects: u64,
    /// JetStream: the stream seq of the last message handed to the workers.
    pub head: u64,
    /// JetStream: publishes stored (acknowledged by the stream), duplicates among them.
    pub stored: u64,
    pub duplicates: u64,
    /// JetStream: resumes that asked the stream for what this node's memory did not hold,
    /// and the tries that could not be asked or answered (the resume waits for the link).
    pub fetches: u64,
    pub fetch_failed: u64,
}

/// Opaque to the bridge: who waits for a stored publish or a fetch (the server packs a
/// connection and a request in it) and hands it back with the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket(pub u64, pub u64);

/// Where the bridge puts what arrives from the cluster. Implemented by the server: it mails
/// the owner worker and rings its doorbell. Called on the bridge thread only; must not block.
pub trait Inbound: Send + 'static {
    /// A message for `id` from another node or a NATS client (core NATS: `seq` is `None`), or
    /// from the stream (JetStream: `seq` is its stream sequence; every node gets every message,
    /// its own publishes too, in stream order).
    fn message(&mut self, id: u64, seq: Option<u64>, msg: &[u8]);
    /// JetStream: the publish of `ticket` (a message for `id`) is stored with its seq, or not.
    fn stored(&mut self, id: u64, ticket: Ticket, result: Result<Stored, Unstored>);
    /// JetStream: what the stream holds of `id` after a position, for `ticket`; `None` when
    /// the stream could not be asked.
    fn fetched(&mut self, id: u64, ticket: Ticket, result: Option<Fetched>);
    /// End of a batch: wake the workers the calls above mailed.
    fn flush(&mut self);
}

/// A publish the stream stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Its stream sequence.
    pub seq: u64,
    /// The stream had it already (the same `Idempotency-Key` within the duplicate window):
    /// stored once, delivered once.
    pub duplicate: bool,
}

/// What the workers ask of the bridge.
enum OutMsg {
    /// Core NATS: a copy for the other nodes.
    Copy(u64, Arc<[u8]>),
    /// JetStream: store a publish, answer [`Inbound::stored`].
    Store {
        id: u64,
        msg: Arc<[u8]>,
        msg_id: Option<String>,
        ticket: Ticket,
    },
    /// JetStream: fetch `id`'s messages after `since` up to `upto`, answer
    /// [`Inbound::fetched`].
    Fetch {
        id: u64,
        since: u64,
        upto: u64,
        ticket: Ticket,
    },
}

/// A worker's way into the bridge (cheap to clone, one per worker).
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::Sender<OutMsg>,
    stats: Arc<Stats>,
    stream: bool,
}

impl Publisher {
    /// Hands a message for the other nodes to the bridge without blocking. Returns false, and
    /// counts a failed publish, when the link is down or the queue is full: the other nodes
    /// will not get this message (at most once).
    pub fn offer(&self, id: u64, msg: &Arc<[u8]>) -> bool {
        let sent =
            self.stats.connected() && self.tx.try_send(OutMsg::Copy(id, msg.clone())).is_ok();
        if !sent {
            Stats::add(&self.stats.publish_failed, 1);
        }
        sent
    }

    /// JetStream: hands a publish to the bridge, which answers [`Inbound::stored`] once the
    /// stream acknowledged it (or could not). Fails at once, counted, while the link is down
    /// or the queue is full: the publisher is told to come back (503), nothing is dropped
    /// silently. `msg_id`: the stream's `Nats-Msg-Id` (deduplicated within its window).
    pub fn store(
        &self,
        id: u64,
        msg: &Arc<[u8]>,
        msg_id: Option<String>,
        ticket: Ticket,
    ) -> Result<(), Unstored> {
        if !self.stats.connected() {
            Stats::add(&self.stats.publish_failed, 1);
            return Err(Unstored::LinkDown);
        }
        let out = OutMsg::Store {
            id,
            msg: msg.clone(),
            msg_id,
            ticket,
        };
        self.tx.try_send(out).map_err(|_| {
            Stats::add(&self.stats.publish_failed, 1);
            Unstored::Busy
        })
    }

    /// JetStream: asks the stream for `id`'s messages with `since < seq <= upto` (a resume
    /// the node's memory cannot answer); the answer comes to [`Inbound::fetched`]. False when
    /// it cannot be asked now (link down, queue full): the caller asks again later.
    pub fn fetch(&self, id: u64, since: u64, upto: u64, ticket: Ticket) -> bool {
        let asked = self.stats.connected()
            && self
                .tx
                .try_send(OutMsg::Fetch {
                    id,
                    since,
                    upto,
                    ticket,
                })
                .is_ok();
        if !asked {
            Stats::add(&self.stats.fetch_failed, 1);
        }
        asked
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// JetStream mode: publishes are stored ([`Publisher::store`]), not offered.
    pub fn on_stream(&self) -> bool {
        self.stream
    }
}

/// The bridge's end of the outbound queue.
pub struct Outbox {
    rx: mpsc::Receiver<OutMsg>,
    stats: Arc<Stats>,
}

/// The outbound queue: created before the workers (each gets a clone of the [`Publisher`]),
/// while the bridge routes once their rings exist. `stream`: JetStream mode.
pub fn channel(stream: bool) -> (Publisher, Outbox) {
    let (tx, rx) = mpsc::channel(OUT_QUEUE_LEN);
    let stats = Arc::new(Stats::default());
    (
        Publisher {
            tx,
            stats: stats.clone(),
            stream,
        },
        Outbox { rx, stats },
    )
}

/// What the node learnt on joining: in JetStream mode, the stream's identity and where it
/// stood.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Joined {
    /// JetStream: the epoch every node of the cluster writes in positions (from the stream's
    /// name and creation time); `None` in core NATS mode (each node draws its own).
    pub epoch: Option<u32>,
    /// JetStream: the stream's last seq when the node joined; the node gets every message
    /// after it from its consumer.
    pub last_seq: u64,
}

/// The running bridge thread.
pub struct Cluster {
    stop: Option<oneshot::Sender<()>>,
    inbound: Option<oneshot::Sender<Box<dyn Inbound>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How long a node in JetStream mode waits at start for NATS to answer about the stream.
const JOIN_WAIT: Duration = Duration::from_secs(15);

impl Cluster {
    /// Starts the bridge thread and returns once its client is set up: in core NATS mode at
    /// once (the connection is made in the background and retried forever: a node starts, and
    /// serves local sends, while NATS is unreachable); in JetStream mode once the stream is
    /// created or checked (an error when the server has no JetStream, or none answers within
    /// [`JOIN_WAIT`]). Nothing arrives before [`Cluster::run`].
    pub fn start(options: Options, outbox: Outbox) -> Result<(Cluster, Joined), String> {
        check_prefix(&options.prefix)?;
        if options.servers.is_empty() {
            return Err("--cluster needs at least one NATS URL".into());
        }
        let servers = options
            .servers
            .iter()
            .map(|s| {
                s.parse::<ServerAddr>()
                    .map_err(|e| format!("--cluster {s}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let (inbound_tx, inbound_rx) = oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("comet-cluster".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .build();
                match runtime {
                    Ok(runtime) => runtime.block_on(bridge(
                        options, servers, outbox, inbound_rx, stop_rx, ready_tx,
                    )),
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("cluster runtime: {e}")));
                    }
                }
            })
            .map_err(|e| format!("spawning the cluster bridge: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(joined)) => Ok((
                Cluster {
                    stop: Some(stop_tx),
                    inbound: Some(inbound_tx),
                    thread: Some(thread),
                },
                joined,
            )),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err("the cluster bridge died during set-up".into()),
        }
    }

    /// Starts routing: what arrives from the cluster goes to `inbound` from now on.
    pub fn run(&mut self, inbound: Box<dyn Inbound>) {
        if let Some(tx) = self.inbound.take() {
            let _ = tx.send(inbound);
        }
    }

    /// Stops the bridge: flushes what it has published (briefly), closes the link and joins
    /// the thread. After this, [`Inbound`] is no longer called.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.inbound.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shut();
    }
}

async fn connect_options(options: &Options, stats: Arc<Stats>) -> Result<ConnectOptions, String> {
    let mut connect = ConnectOptions::new();
    if let Some(path) = &options.credentials {
        connect = connect
            .credentials_file(path)
            .await
            .map_err(|e| format!("--cluster-credentials {}: {e}", path.display()))?;
    }
    if let Some(token) = &options.token {
        connect = connect.token(token.clone());
    }
    match (&options.user, &options.password) {
        (Some(user), Some(password)) => {
            connect = connect.user_and_password(user.clone(), password.clone())
        }
        (None, None) => {}
        _ => return Err("--cluster-user and --cluster-password go together".into()),
    }
    if let Some(ca) = &options.tls_ca {
        connect = connect.add_root_certificates(ca.clone());
    }
    match (&options.tls_cert, &options.tls_key) {
        (Some(cert), Some(key)) => {
            connect = connect.add_client_certificate(cert.clone(), key.clone())
        }
        (None, None) => {}
        _ => return Err("--cluster-tls-cert and --cluster-tls-key go together".into()),
    }
    let events = stats.clone();
    Ok(connect
        .require_tls(options.require_tls)
        .name(options.name.clone())
        .no_echo()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .reconnect_delay_callback(|attempts| {
            // 0, 1, 2, 4, ... ms, then every RECONNECT_DELAY_MAX_MS.
            let exp = attempts.saturating_sub(1).min(16) as u32;
            let ms = if attempts <= 1 { 0 } else { 1u64 << exp };
            Duration::from_millis(ms.min(RECONNECT_DELAY_MAX_MS))
        })
        .event_callback(move |event| {
            let stats = events.clone();
            async move { on_event(&stats, event) }
        }))
}

fn on_event(stats: &Stats, event: Event) {
    match event {
        Event::Connected => {
            Stats::add(&stats.connects, 1);
            stats.relinked.notify_one();
            if stats.subscribed.load(Ordering::SeqCst) {
                stats.connected.store(1, Ordering::Relaxed);
            }
            tracing::info!("cluster: connected to NATS");
        }
        Event::Disconnected => {
            stats.connected.store(0, Ordering::Relaxed);
            tracing::warn!("cluster: NATS link down; local sends only until it is back");
        }
        Event::SlowConsumer(_) => {
            Stats::add(&stats.slow_consumer, 1);
            tracing::warn!("cluster: the bridge fell behind NATS; messages were dropped");
        }
        Event::Closed => stats.connected.store(0, Ordering::Relaxed),
        other => tracing::warn!("cluster: {other}"),
    }
}

async fn bridge(
    options: Options,
    servers: Vec<ServerAddr>,
    outbox: Outbox,
    inbound: oneshot::Receiver<Box<dyn Inbound>>,
    mut stop: oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<Result<Joined, String>>,
) {
    let stats = outbox.stats.clone();
    let connect = match connect_options(&options, stats.clone()).await {
        Ok(connect) => connect,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let client = match connect.connect(servers).await {
        Ok(client) => client,
        Err(e) => {
            let _ = ready.send(Err(format!("cluster: {e}")));
            return;
        }
    };
    if let Some(stream_options) = options.stream.clone() {
        let joined = tokio::select! {
            joined = stream::join(&client, &options, &stream_options) => joined,
            _ = &mut stop => return,
        };
        let joined = match joined {
            Ok(joined) => joined,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(Joined {
            epoch: Some(joined.epoch),
            last_seq: joined.last_seq,
        }));
        let inbound = tokio::select! {
            inbound = inbound => inbound,
            _ = &mut stop => return,
        };
        let Ok(inbound) = inbound else { return };
        stats.subscribed.store(true, Ordering::SeqCst);
        if client.connection_state() == async_nats::connection::State::Connected {
            stats.connected.store(1, Ordering::Relaxed);
        }
        tokio::select! {
            () = stream::run(client.clone(), joined, options, outbox, inbound) => {}
            _ = &mut stop => {}
        }
        stats.connected.store(0, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
        return;
    }
    let _ = ready.send(Ok(Joined {
        epoch: None,
        last_seq: 0,
    }));
    let inbound = tokio::select! {
        inbound = inbound => inbound,
        _ = &mut stop => return,
    };
    let Ok(inbound) = inbound else { return };
    let head = format!("{}.user.", options.prefix);
    let subscriber = match client.subscribe(format!("{head}*")).await {
        Ok(subscriber) => subscriber,
        Err(e) => {
            tracing::error!("cluster: subscribing: {e}");
            return;
        }
    };

    // The subscription is in place once a flush round-trips (the server answers PING after
    // handling the SUB before it): only then does the node say it is connected.
    let first = client.clone();
    let flushed = stats.clone();
    let subscribed = tokio::spawn(async move {
        if first.flush().await.is_ok() {
            flushed.subscribed.store(true, Ordering::SeqCst);
            flushed.connected.store(1, Ordering::Relaxed);
        }
    });
    let receiving = tokio::spawn(receive(subscriber, inbound, stats.clone(), head.clone()));
    let sending = tokio::spawn(send(client.clone(), outbox, head));
    let _ = stop.await;
    receiving.abort();
    sending.abort();
    subscribed.abort();
    stats.connected.store(0, Ordering::Relaxed);
    // What was handed to the client is sent if the link is up; a stuck link does not hold up
    // the shutdown.
    let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
}

/// NATS -> mailboxes, in batches of what is already buffered, one doorbell flush per batch.
async fn receive(
    mut subscriber: async_nats::Subscriber,
    mut inbound: Box<dyn Inbound>,
    stats: Arc<Stats>,
    head: String,
) {
    while let Some(message) = subscriber.next().await {
        let mut next = Some(message);
        let mut handled = 0;
        while let Some(message) = next.take() {
            match subject_id(&head, message.subject.as_str()) {
                Some(id) => {
                    Stats::add(&stats.messages_in, 1);
                    inbound.message(id, None, &message.payload);
                }
                None => Stats::add(&stats.bad_subjects, 1),
            }
            handled += 1;
            if handled < BATCH_MAX {
                next = subscriber.next().now_or_never().flatten();
            }
        }
        inbound.flush();
    }
}

/// Outbound queue -> NATS. A message taken while the link is down is dropped and counted:
/// async-nats would otherwise hold it and send it after the reconnect, out of order with what
/// the node published meanwhile.
async fn send(client: async_nats::Client, mut outbox: Outbox, head: String) {
    while let Some(out) = outbox.rx.recv().await {
        let OutMsg::Copy(id, msg) = out else {
            unreachable!("core NATS mode: copies only")
        };
        if client.connection_state() != async_nats::connection::State::Connected {
            Stats::add(&outbox.stats.publish_failed, 1);
            continue;
        }
        let subject = format!("{head}{id}");
        match client.publish(subject, Bytes::from_owner(msg)).await {
            Ok(()) => Stats::add(&outbox.stats.messages_out, 1),
            Err(e) => {
                Stats::add(&outbox.stats.publish_failed, 1);
                tracing::debug!("cluster: publish failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        let head = "comet.user.";
        assert_eq!(subject_id(head, "comet.user.5"), Some(5));
        assert_eq!(subject_id(head, "comet.user.007"), Some(7));
        assert_eq!(
            subject_id(head, "comet.user.18446744073709551615"),
            Some(u64::MAX)
        );
        assert_eq!(subject_id(head, "comet.user.18446744073709551616"), None);
        assert_eq!(subject_id(head, "comet.user.abc"), None);
        assert_eq!(subject_id(head, "comet.user."), None);
        assert_eq!(subject_id(head, "comet.user.-1"), None);
        assert_eq!(subject_id(head, "other.user.5"), None);
        assert_eq!(subject_id("a.b.user.", "a.b.user.9"), Some(9));
    }

    #[test]
    fn prefixes() {
        assert!(check_prefix("comet").is_ok());
        assert!(check_prefix("prod.eu.comet").is_ok());
        for bad in ["", ".", "a..b", "a.", "a b", "a.*", ">", "a\tb"] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn offers_fail_while_disconnected() {
        let (publisher, _outbox) = channel(false);
        let msg: Arc<[u8]> = Arc::from(&b"hi"[..]);
        assert!(!publisher.offer(1, &msg));
        publisher.stats.connected.store(1, Ordering::Relaxed);
        assert!(publisher.offer(1, &msg));
        let snapshot = publisher.stats.snapshot();
        assert_eq!(snapshot.publish_failed, 1, "{snapshot:?}");
        assert!(snapshot.connected, "{snapshot:?}");
    }

    #[test]
    fn a_full_queue_fails_the_offer() {
        let (publisher, _outbox) = channel(false);
        publisher.stats.connected.store(1, Ordering::Relaxed);
        let msg: Arc<[u8]> = Arc::from(&b"x"[..]);
        for _ in 0..OUT_QUEUE_LEN {
            assert!(publisher.offer(1, &msg));
        }
        assert!(!publisher.offer(1, &msg));
    }
}
