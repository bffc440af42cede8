//! JetStream mode: one stream over `<prefix>.user.*` is the cluster's ordered, bounded
//! history.
//!
//! - **The stream** ([`join`]): named after the prefix ([`stream_name`]), file storage, per
//!   subject the last `--history-messages` messages, none older than `--history-age-ms`,
//!   discard old, direct gets allowed, replicas as asked. Created if missing, updated if its
//!   limits differ (every node applies its own flags: give them all the same). In a stream
//!   that starts empty a marker (`<prefix>.user.start`, skipped by consumers) takes seq 1, so
//!   that its first message is seq 2: positions 0 and 1 keep meaning "from the beginning" (the
//!   position parser reads 0 as 1).
//! - **Positions**: a message's seq is its stream sequence; the epoch is drawn from the
//!   stream's name and creation time ([`stream_epoch`]), so every node of the cluster writes
//!   the same epoch, and a stream deleted and created again starts a new one (old positions
//!   are then a gap, as they must be).
//! - **In**: one ordered consumer per node (nothing per id), filtered to `<prefix>.user.*`,
//!   starting after the stream's last seq at join. Every message comes this way, the node's own
//!   publishes too, in stream order, with its seq; a plain `nats pub <prefix>.user.42 hi` is
//!   captured by the stream and delivered alike. The ordered consumer recreates itself after a
//!   gap in its sequence or missed heartbeats (a NATS restart, or the loss of the server of a
//!   NATS cluster that held it: within 5 s, see [`CONSUMER_EXPIRES`]), starting after the last
//!   message it handed over: nothing is skipped or repeated. Chosen over core NATS plus the
//!   stream's sequence because a core subscriber does not learn the seq of a message that
//!   another client published, and misses what was published while its link was down.
//! - **Out**: a publish goes to the stream with its `Nats-Msg-Id` when the publisher gave an
//!   `Idempotency-Key` ([`msg_id`]); its acknowledgement (or failure) goes back to the worker
//!   that holds the publish connection ([`Inbound::stored`]). Publishes leave in the order the
//!   workers handed them over; acks are awaited concurrently.
//! - **Fetch**: a resume that the node's memory cannot answer asks the stream, by direct gets
//!   by subject, for the id's messages after the client's position ([`Inbound::fetched`]), and
//!   whether any may have been removed ([`stream_gap`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream::DirectGetErrorKind};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, Semaphore};

use crate::{subject_id, Inbound, Options, OutMsg, Outbox, Stats, Stored, Ticket};

/// Requests to JetStream (stream info, direct gets) and publish acks time out after this: a
/// publish is answered 503 past it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Messages handed over between doorbell flushes.
const BATCH_MAX: usize = 256;
/// Fetches in flight at most; the others wait their turn in the bridge. Unbounded, a mass
/// resume on a node that had just started asked thousands at once, and two thirds failed their
/// 2 s timeout in nats-server's queue (results/rolling/2026-11-30-30k-gap-causes: 2,447 of
/// 3,766 fetches, 326 resumes answered with a gap).
const FETCHES_MAX: usize = 64;
/// The consumer's pull requests expire after this; its idle heartbeat is half of it (1 s) and
/// async-nats sets it up again after two missed heartbeat windows of 2 heartbeats each. With
/// [`CONSUMER_POLL`], a consumer lost with its server (an ordered consumer is one replica, in
/// memory, on one server of a NATS cluster) is noticed within 2 s + 1 s + 2 s = 5 s of its last
/// heartbeat, and set up again [`REQUEST_TIMEOUT`] later (async-nats first deletes the lost one,
/// which nothing answers) once JetStream has a leader. A pull request every 2 s and a heartbeat
/// every second per node cost nothing.
const CONSUMER_EXPIRES: Duration = Duration::from_secs(2);
/// The bridge polls the consumer this often. async-nats 0.51's ordered consumer, after a first
/// missed heartbeat window, returns pending with no timer armed: its second window starts only
/// when something polls it again, which left alone is its next pull request (the expiry + 5 s
/// later), so a lost consumer was noticed three expiries after its last heartbeat (15 s with the
/// 5 s expiry comet had before).
const CONSUMER_POLL: Duration = Duration::from_secs(1);
/// Wait between attempts to set the consumer up again after it failed for good.
const CONSUMER_RETRY: Duration = Duration::from_millis(250);
/// The stream's duplicate window at most (JetStream's default), never longer than its age.
pub const DUPLICATE_WINDOW_MAX: Duration = Duration::from_secs(120);
/// The subject token of the marker that takes seq 1 of a new stream (`<prefix>.user.start`:
/// not an id, so consumers skip it).
const MARKER_TOKEN: &str = "start";
const MARKER_PAYLOAD: &[u8] = b"comet: seq 1 taken, so that positions 0 and 1 mean the beginning";
/// The longest `Idempotency-Key` taken, in bytes.
pub const KEY_BYTES_MAX: usize = 128;

/// The stream's limits: the history's, kept by JetStream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamOptions {
    /// Messages kept per id (`--history-messages`; at least 1).
    pub messages_per_subject: u64,
    /// Age limit (`--history-age-ms`).
    pub max_age: Duration,
    /// Replicas of the stream in a NATS cluster (`--cluster-replicas`).
    pub replicas: usize,
}

impl StreamOptions {
    /// The duplicate window: JetStream's default, or the age limit if shorter (JetStream
    /// refuses a window longer than the age).
    pub fn duplicate_window(&self) -> Duration {
        DUPLICATE_WINDOW_MAX.min(self.max_age)
    }
}

/// Why a publish was not stored: the publisher should send it again later (503).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unstored {
    /// The node's link to NATS is down.
    LinkDown,
    /// The bridge's queue is full.
    Busy,
    /// The stream did not acknowledge it (timeout, no JetStream, refused).
    Failed(String),
}

impl std::fmt::Display for Unstored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unstored::LinkDown => write!(f, "the link to NATS is down"),
            Unstored::Busy => write!(f, "the cluster bridge is busy"),
            Unstored::Failed(e) => write!(f, "JetStream did not store it: {e}"),
        }
    }
}

/// What the stream holds of an id after a position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The id's messages with `since < seq <= upto`, oldest first.
    pub messages: Vec<(u64, Arc<[u8]>)>,
    /// Messages of the id after `since` may have been removed from the stream.
    pub gap: bool,
}

/// The stream's name for a subject prefix: `COMET_USER` for `comet`, dots as `_`
/// (`PROD_EU_COMET_USER` for `prod.eu.comet`).
pub fn stream_name(prefix: &str) -> String {
    let mut name: String = prefix
        .chars()
        .map(|c| match c {
            '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    name.push_str("_USER");
    name
}

/// The epoch of a stream: FNV-1a (32 bits) over its name and creation time in nanoseconds.
/// The same on every node; another stream, or the same name created again, gets another.
pub fn stream_epoch(name: &str, created_unix_ns: i128) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name
        .as_bytes()
        .iter()
        .chain(&[0])
        .chain(&created_unix_ns.to_le_bytes())
    {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Whether messages of a subject after `since` may have been removed from the stream, given
/// what a fetch saw: whether the subject still holds a message at or before `since`
/// (`kept_before`: the client's last message, or an older one of a quiet id), how many of the
/// subject's messages after `since` it holds (`after`), the per-subject limit and the stream's
/// first seq (when asked).
///
/// The stream removes a subject's messages oldest first (the per-subject limit takes the
/// subject's oldest, the age limit the stream's oldest), so what it holds of a subject is
/// everything after some seq:
/// - if a message at or before `since` is still there, nothing after `since` was removed: no
///   gap;
/// - a message after `since` removed by the per-subject limit left `max` newer ones, all after
///   `since`, that only the age limit can remove: `after < max` rules it out unless
/// - a message after `since` removed by age: then every message up to it is gone, so the
///   stream's first seq is above `since + 1`.
///
/// Anything unknown is a gap (needless perhaps, never missed).
pub fn stream_gap(
    since: u64,
    kept_before: bool,
    after: u64,
    per_subject_max: u64,
    first_seq: Option<u64>,
) -> bool {
    if kept_before {
        return false;
    }
    if after >= per_subject_max {
        return true;
    }
    first_seq.is_none_or(|first| since.saturating_add(1) < first)
}

/// The stream's `Nats-Msg-Id` for a publish with `Idempotency-Key: key`: the key itself, or
/// `key:<n>` for line `n` (from 1) of a batch. `Err` names what is wrong with the key: it must
/// be 1 to [`KEY_BYTES_MAX`] visible ASCII characters.
pub fn msg_id(key: &[u8], line: Option<usize>) -> Result<String, String> {
    if key.is_empty() || key.len() > KEY_BYTES_MAX {
        return Err(format!(
            "Idempotency-Key must be 1 to {KEY_BYTES_MAX} characters"
        ));
    }
    if !key.iter().all(|b| b.is_ascii_graphic()) {
        return Err("Idempotency-Key must be visible ASCII characters, no spaces".into());
    }
    let key = std::str::from_utf8(key).expect("ASCII");
    Ok(match line {
        Some(n) => format!("{key}:{n}"),
        None => key.to_string(),
    })
}

/// The stream as a node joined it.
pub(crate) struct JoinedStream {
    pub epoch: u32,
    pub last_seq: u64,
    context: jetstream::Context,
    stream: jetstream::stream::Stream,
    per_subject: u64,
}

enum Attempt {
    /// Worth trying again (no answer yet).
    Retry(String),
    /// Trying again will not help.
    Fatal(String),
}

/// Creates or checks the stream, waiting up to [`crate::JOIN_WAIT`] for NATS to answer.
pub(crate) async fn join(
    client: &async_nats::Client,
    options: &Options,
    stream_options: &StreamOptions,
) -> Result<JoinedStream, String> {
    let context = jetstream::ContextBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .build(client.clone());
    let name = stream_name(&options.prefix);
    let config = jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("{}.user.*", options.prefix)],
        storage: jetstream::stream::StorageType::File,
        max_messages_per_subject: stream_options.messages_per_subject.max(1) as i64,
        max_age: stream_options.max_age,
        discard: jetstream::stream::DiscardPolicy::Old,
        num_replicas: stream_options.replicas.max(1),
        duplicate_window: stream_options.duplicate_window(),
        allow_direct: true,
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + crate::JOIN_WAIT;
    loop {
        let error = match ensure(client, &context, &config).await {
            Ok(joined) => return Ok(joined),
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Retry(e)) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "cluster: no answer from NATS about the JetStream stream {name} within {:?} \
                 ({error}); is nats-server running, with -js?",
                crate::JOIN_WAIT
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `<prefix>` of a stream config whose one subject is `<prefix>.user.*`.
fn options_prefix(config: &jetstream::stream::Config) -> &str {
    config.subjects[0]
        .strip_suffix(".user.*")
        .expect("the subject comet sets")
}

async fn ensure(
    client: &async_nats::Client,
    context: &jetstream::Context,
    config: &jetstream::stream::Config,
) -> Result<JoinedStream, Attempt> {
    use async_nats::jetstream::context::GetStreamErrorKind;
    let connected = client.connection_state() == async_nats::connection::State::Connected;
    let classify = |what: &str, e: String| {
        // A server without JetStream answers its API with "no responders", which async-nats
        // reports as a resource that does not exist.
        if connected && (e.contains("no responders") || e.contains("does not exist")) {
            Attempt::Fatal(format!(
                "cluster: the NATS server has no JetStream ({what}: {e}): start nats-server \
                 with -js (and -sd DIR for its file storage), or run comet with --cluster-core \
                 for core NATS (at most once)"
            ))
        } else {
            Attempt::Retry(format!("{what}: {e}"))
        }
    };
    let mut stream = match context.get_stream(&config.name).await {
        Ok(stream) => stream,
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(js)
                if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                let stream = context
                    .create_stream(config.clone())
                    .await
                    .map_err(|e| classify("creating the stream", e.to_string()))?;
                tracing::info!(stream = config.name, "cluster: JetStream stream created");
                stream
            }
            _ => return Err(classify("looking up the stream", e.to_string())),
        },
    };
    let info = stream
        .info()
        .await
        .map_err(|e| classify("stream info", e.to_string()))?
        .clone();
    let have = &info.config;
    if have.storage != config.storage {
        return Err(Attempt::Fatal(format!(
            "cluster: the JetStream stream {} exists with {:?} storage; comet needs file \
             storage: delete it (nats stream rm {}) or use another --cluster-prefix",
            config.name, have.storage, config.name
        )));
    }
    let differs = have.subjects != config.subjects
        || have.max_messages_per_subject != config.max_messages_per_subject
        || have.max_age != config.max_age
        || have.discard != config.discard
        || have.num_replicas != config.num_replicas
        || have.duplicate_window != config.duplicate_window
        || !have.allow_direct;
    if differs {
        tracing::warn!(
            stream = config.name,
            "cluster: the stream's limits differ from this node's flags; updating them \
             (give every node the same --history-* and --cluster-replicas)"
        );
        context
            .update_stream(config.clone())
            .await
            .map_err(|e| Attempt::Fatal(format!("cluster: updating the stream: {e}")))?;
    }
    let mut last_seq = info.state.last_sequence;
    if last_seq == 0 {
        // A new, empty stream: a marker takes seq 1, so that the first message is seq 2 and
        // positions 0 and 1 keep meaning "from the beginning". Only into an empty stream
        // (expected last seq 0): a node that loses the race finds it taken already. (A purge up
        // to seq 2 would do it without a message, but leaves a replicated stream refusing
        // publishes on nats-server 2.9.)
        let marker = jetstream::message::PublishMessage::build()
            .payload(Bytes::from_static(MARKER_PAYLOAD))
            .expected_last_sequence(0);
        let subject = format!("{}.user.{MARKER_TOKEN}", options_prefix(config));
        match context.send_publish(subject, marker).await {
            Ok(ack) => {
                if let Err(e) = ack.await {
                    tracing::debug!("cluster: the stream's first marker: {e}");
                }
            }
            Err(e) => tracing::debug!("cluster: the stream's first marker: {e}"),
        }
        last_seq = stream
            .get_info()
            .await
            .map_err(|e| classify("stream info", e.to_string()))?
            .state
            .last_sequence;
        if last_seq == 0 {
            return Err(Attempt::Retry(
                "the new stream's first seq is not taken yet".into(),
            ));
        }
    }
    let epoch = stream_epoch(&config.name, info.created.unix_timestamp_nanos());
    tracing::info!(
        stream = config.name,
        epoch = format!("{epoch:08x}"),
        last_seq,
        "cluster: joined the JetStream stream"
    );
    Ok(JoinedStream {
        epoch,
        last_seq,
        context: context.clone(),
        stream,
        per_subject: config.max_messages_per_subject as u64,
    })
}

/// A stored publish or a fetch, done: back to the bridge loop, which owns the [`Inbound`].
enum Done {
    Stored {
        id: u64,
        ticket: Ticket,
        result: Result<Stored, crate::Unstored>,
    },
    Fetched {
        id: u64,
        ticket: Ticket,
        result: Option<Fetched>,
    },
}

type Messages = consumer::pull::Ordered;

async fn consume(
    stream: &jetstream::stream::Stream,
    filter: &str,
    start_sequence: u64,
) -> Result<Messages, String> {
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter.to_string(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence },
            // Pull requests of 2 s, so idle heartbeats every second: a stalled consumer is
            // noticed and set up again within seconds (the default is 30 s).
            max_expires: CONSUMER_EXPIRES,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    consumer.messages().await.map_err(|e| e.to_string())
}

/// The bridge in JetStream mode: the consumer into the mailboxes, publishes to the stream,
/// fetches; until the outbox closes (the caller stops it by dropping this future).
pub(crate) async fn run(
    client: async_nats::Client,
    joined: JoinedStream,
    options: Options,
    mut outbox: Outbox,
    mut inbound: Box<dyn Inbound>,
) {
    let stats = outbox.stats.clone();
    stats.head.store(joined.last_seq, Ordering::Release);
    let head = format!("{}.user.", options.prefix);
    let filter = format!("{head}*");
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let fetches = Arc::new(Semaphore::new(FETCHES_MAX));
    let mut messages: Option<Messages> = None;
    let mut retry_at = tokio::time::Instant::now();
    let mut last = joined.last_seq;
    // The connection made before the loop left a wake-up: the consumer is set up below anyway.
    let _ = stats.relinked.notified().now_or_never();
    let mut poll = tokio::time::interval(CONSUMER_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if messages.is_none() && tokio::time::Instant::now() >= retry_at {
            match consume(&joined.stream, &filter, last + 1).await {
                Ok(m) => messages = Some(m),
                Err(e) => {
                    tracing::debug!("cluster: setting up the consumer: {e}");
                    retry_at = tokio::time::Instant::now() + CONSUMER_RETRY;
                }
            }
        }
        let waiting = messages.is_none();
        let next = async {
            match messages.as_mut() {
                Some(m) => m.next().await,
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            done = done_rx.recv() => Event::Done(done),
            out = outbox.rx.recv() => Event::Out(out),
            item = next => Event::Message(item),
            () = tokio::time::sleep_until(retry_at), if waiting => Event::Retry,
            _ = poll.tick(), if !waiting => Event::Poll,
            () = stats.relinked.notified() => Event::Relinked,
        };
        match event {
            Event::Done(done) => {
                let mut next = done;
                let mut handled = 0;
                while let Some(done) = next.take() {
                    finish(&stats, inbound.as_mut(), done);
                    handled += 1;
                    if handled < BATCH_MAX {
                        next = done_rx.try_recv().ok();
                    }
                }
                inbound.flush();
            }
            Event::Out(None) => return,
            Event::Out(Some(out)) => {
                let asked = request(&client, &joined, &head, out, &done_tx, &fetches).await;
                if let Some(done) = asked {
                    finish(&stats, inbound.as_mut(), done);
                    inbound.flush();
                }
            }
            Event::Message(Some(Ok(message))) => {
                let mut next = Some(message);
                let mut handled = 0;
                while let Some(message) = next.take() {
                    match message.info().map(|info| info.stream_sequence) {
                        Ok(seq) if seq > last => {
                            last = seq;
                            let subject = message.subject.as_str();
                            match subject_id(&head, subject) {
                                Some(id) => {
                                    Stats::add(&stats.messages_in, 1);
                                    inbound.message(id, Some(seq), &message.payload);
                                }
                                None if subject.strip_prefix(head.as_str())
                                    == Some(MARKER_TOKEN) => {}
                                None => Stats::add(&stats.bad_subjects, 1),
                            }
                        }
                        Ok(_) => {} // a repeat: handed over already
                        Err(e) => tracing::warn!("cluster: a message without its seq: {e}"),
                    }
                    handled += 1;
                    if handled < BATCH_MAX {
                        next = match messages.as_mut().and_then(|m| m.next().now_or_never()) {
                            Some(Some(Ok(message))) => Some(message),
                            _ => None,
                        };
                    }
                }
                // After the mail: a worker that reads the head then drains has it all.
                stats.head.store(last, Ordering::Release);
                inbound.flush();
            }
            Event::Message(Some(Err(e))) => tracing::debug!("cluster: consumer: {e}"),
            Event::Message(None) => {
                tracing::warn!("cluster: the consumer ended; setting it up again");
                messages = None;
            }
            // The next turn polls the consumer, which re-arms its heartbeat timer.
            Event::Retry | Event::Poll => {}
            Event::Relinked => {
                // A new connection: the server may have restarted and lost the consumer.
                messages = None;
                retry_at = tokio::time::Instant::now();
            }
        }
    }
}

/// What woke the bridge loop: one value on its stack per iteration, so its size does not
/// matter (boxing the message would allocate once per message).
#[allow(clippy::large_enum_variant)]
enum Event {
    Done(Option<Done>),
    Out(Option<OutMsg>),
    Message(Option<Result<jetstream::Message, consumer::pull::OrderedError>>),
    Retry,
    /// Time to poll the consumer again ([`CONSUMER_POLL`]).
    Poll,
    Relinked,
}

fn finish(stats: &Stats, inbound: &mut dyn Inbound, done: Done) {
    match done {
        Done::Stored { id, ticket, result } => {
            match &result {
                Ok(stored) => {
                    Stats::add(&stats.stored, 1);
                    Stats::add(&stats.duplicates, u64::from(stored.duplicate));
                }
                Err(_) => Stats::add(&stats.publish_failed, 1),
            }
            inbound.stored(id, ticket, result);
        }
        Done::Fetched { id, ticket, result } => {
            Stats::add(&stats.fetches, 1);
            if result.is_none() {
                Stats::add(&stats.fetch_failed, 1);
            }
            inbound.fetched(id, ticket, result);
        }
    }
}

/// Carries out a worker's request: a publish is sent now (in order) and its ack awaited in a
/// task; a fetch runs in a task. Returns what is done at once (a publish that could not be
/// sent).
async fn request(
    client: &async_nats::Client,
    joined: &JoinedStream,
    head: &str,
    out: OutMsg,
    done: &mpsc::UnboundedSender<Done>,
    fetches: &Arc<Semaphore>,
) -> Option<Done> {
    match out {
        OutMsg::Copy(..) => unreachable!("JetStream mode: no core copies"),
        OutMsg::Store {
            id,
            msg,
            msg_id,
            ticket,
        } => {
            if client.connection_state() != async_nats::connection::State::Connected {
                let result = Err(crate::Unstored::LinkDown);
                return Some(Done::Stored { id, ticket, result });
            }
            let mut headers = async_nats::HeaderMap::new();
            if let Some(msg_id) = &msg_id {
                headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id.as_str());
            }
            let subject = format!("{head}{id}");
            let sent = joined
                .context
                .publish_with_headers(subject, headers, Bytes::from_owner(msg))
                .await;
            match sent {
                Ok(ack) => {
                    let done = done.clone();
                    tokio::spawn(async move {
                        let result = ack
                            .await
                            .map(|ack| Stored {
                                seq: ack.sequence,
                                duplicate: ack.duplicate,
                            })
                            .map_err(|e| crate::Unstored::Failed(e.to_string()));
                        let _ = done.send(Done::Stored { id, ticket, result });
                    });
                    None
                }
                Err(e) => {
                    let result = Err(crate::Unstored::Failed(e.to_string()));
                    Some(Done::Stored { id, ticket, result })
                }
            }
        }
        OutMsg::Fetch {
            id,
            since,
            upto,
            ticket,
        } => {
            let stream = joined.stream.clone();
            let subject = format!("{head}{id}");
            let per_subject = joined.per_subject;
            let done = done.clone();
            let fetches = fetches.clone();
            tokio::spawn(async move {
                // The semaphore is never closed.
                let _turn = fetches.acquire_owned().await;
                let result = fetch(&stream, subject, since, upto, per_subject).await;
                let _ = done.send(Done::Fetched { id, ticket, result });
            });
            None
        }
    }
}

/// The subject's messages after `since` (those up to `upto` kept), by direct gets, and
/// whether some may have been removed ([`stream_gap`]). `None` when the stream did not answer.
async fn fetch(
    stream: &jetstream::stream::Stream,
    subject: String,
    since: u64,
    upto: u64,
    per_subject: u64,
) -> Option<Fetched> {
    // The subject's first message, then the next ones: if the first is at or before `since`,
    // nothing of the subject after `since` was removed, and the fetch goes on from there.
    let mut next = None;
    let mut kept_before = false;
    let mut after = 0;
    let mut messages = Vec::new();
    while after < per_subject {
        match stream
            .direct_get_next_for_subject(subject.as_str(), next)
            .await
        {
            Ok(m) if m.sequence <= since => {
                kept_before = true;
                next = Some(since + 1);
            }
            Ok(m) => {
                after += 1;
                if m.sequence <= upto {
                    messages.push((m.sequence, Arc::from(&m.payload[..])));
                }
                next = Some(m.sequence + 1);
            }
            Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => break,
            Err(e) => {
                tracing::debug!("cluster: fetching {subject}: {e}");
                return None;
            }
        }
    }
    let first_seq = if kept_before || after >= per_subject {
        None
    } else {
        Some(stream.get_info().await.ok()?.state.first_sequence)
    };
    let gap = stream_gap(since, kept_before, after, per_subject, first_seq);
    Some(Fetched { messages, gap })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        assert_eq!(stream_name("comet"), "COMET_USER");
        assert_eq!(stream_name("prod.eu.comet"), "PROD_EU_COMET_USER");
    }

    #[test]
    fn the_epoch_names_one_stream() {
        let e = stream_epoch("COMET_USER", 1_700_000_000_000_000_000);
        assert_eq!(e, stream_epoch("COMET_USER", 1_700_000_000_000_000_000));
        assert_ne!(e, stream_epoch("COMET_USER", 1_700_000_000_000_000_001));
        assert_ne!(e, stream_epoch("BLUE_USER", 1_700_000_000_000_000_000));
    }

    #[test]
    fn a_fetch_says_gap_only_when_something_may_be_gone() {
        // The client's last message (or an older one of the id) is still there: nothing after
        // it went.
        assert!(!stream_gap(10, true, 32, 32, None));
        assert!(
            !stream_gap(10, true, 0, 32, Some(500)),
            "a quiet id, long after"
        );
        // Fewer than the per-subject limit after it, nothing removed by age (first <= 11).
        assert!(!stream_gap(10, false, 3, 32, Some(5)));
        assert!(!stream_gap(10, false, 0, 32, Some(11)));
        // The per-subject limit reached: one before them may have gone.
        assert!(stream_gap(10, false, 32, 32, Some(5)));
        // The age limit took messages after 10 (the stream starts at 12).
        assert!(stream_gap(10, false, 3, 32, Some(12)));
        // Unknown: a gap.
        assert!(stream_gap(10, false, 3, 32, None));
        // From the beginning (1) of a stream that still starts at 2.
        assert!(!stream_gap(1, false, 2, 32, Some(2)));
    }

    #[test]
    fn message_ids_from_keys() {
        assert_eq!(msg_id(b"order-17", None).unwrap(), "order-17");
        assert_eq!(msg_id(b"order-17", Some(3)).unwrap(), "order-17:3");
        assert!(msg_id(b"", None).is_err());
        assert!(msg_id(b"a b", None).is_err());
        assert!(msg_id(&[b'k'; KEY_BYTES_MAX + 1], None).is_err());
        assert!(msg_id(&[b'k'; KEY_BYTES_MAX], None).is_ok());
        assert!(msg_id("é".as_bytes(), None).is_err());
    }

    #[test]
    fn the_duplicate_window_fits_in_the_age() {
        let mut o = StreamOptions {
            messages_per_subject: 32,
            max_age: Duration::from_secs(600),
            replicas: 1,
        };
        assert_eq!(o.duplicate_window(), DUPLICATE_WINDOW_MAX);
        o.max_age = Duration::from_secs(10);
        assert_eq!(o.duplicate_window(), Duration::from_secs(10));
    }
}
