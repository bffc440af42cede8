//! `--cluster*` flags, and the bridge's way into the workers: [`Mailer`] puts each message from
//! the cluster in its owner worker's mailbox (and each stored publish's answer in the mailbox of
//! the worker holding its publish connection, each fetch for a resume in the id's owner's) and
//! rings that worker's doorbell from the bridge thread's own small ring, following the doorbell
//! protocol of `worker/post.rs`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use comet_router::{shard_of, ConnRef, HistoryConfig};

use crate::user_data::{pack, Op};
use crate::worker::post::{Boxes, Mail, ReplyTo, Wake};

#[derive(Args, Clone, Debug, Default)]
pub struct ClusterArgs {
    /// Join a cluster through NATS: comma-separated server URLs (nats://host:4222, tls://...).
    /// Without it the node runs alone and nothing NATS-related starts.
    #[arg(long, value_delimiter = ',', value_name = "URLS")]
    pub cluster: Vec<String>,
    /// Subject prefix: messages travel on `<prefix>.user.<id>`. Deployments sharing one NATS
    /// use different prefixes.
    #[arg(long, default_value = "comet")]
    pub cluster_prefix: String,
    /// NATS authentication token.
    #[arg(long)]
    pub cluster_token: Option<String>,
    /// NATS user and password.
    #[arg(long, requires = "cluster_password")]
    pub cluster_user: Option<String>,
    #[arg(long, requires = "cluster_user")]
    pub cluster_password: Option<String>,
    /// NATS credentials file (.creds: JWT and nkey seed).
    #[arg(long, value_name = "FILE")]
    pub cluster_credentials: Option<PathBuf>,
    /// PEM root certificates for the NATS servers' TLS certificates.
    #[arg(long, value_name = "FILE")]
    pub cluster_tls_ca: Option<PathBuf>,
    /// PEM client certificate and key, for NATS servers that verify clients.
    #[arg(long, value_name = "FILE", requires = "cluster_tls_key")]
    pub cluster_tls_cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "cluster_tls_cert")]
    pub cluster_tls_key: Option<PathBuf>,
    /// Refuse a NATS connection without TLS.
    #[arg(long)]
    pub cluster_require_tls: bool,
    /// Core NATS instead of JetStream: no stream, publishes answered without waiting for NATS,
    /// delivery at most once across an outage, positions per node.
    #[arg(long)]
    pub cluster_core: bool,
    /// Replicas of the JetStream stream (a NATS cluster of at least that many servers).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub cluster_replicas: usize,
}

impl ClusterArgs {
    /// The bridge's options, or `None` when the node runs alone.
    /// `history`: the stream's limits mirror the history's.
    pub fn options(
        &self,
        history: &HistoryConfig,
    ) -> Result<Option<comet_cluster::Options>, String> {
        if self.cluster.is_empty() {
            return Ok(None);
        }
        comet_cluster::check_prefix(&self.cluster_prefix)?;
        if !(1..=5).contains(&self.cluster_replicas) {
            return Err("--cluster-replicas: 1 to 5 (JetStream's limit)".into());
        }
        let stream = (!self.cluster_core).then(|| comet_cluster::StreamOptions {
            messages_per_subject: history.messages_max.max(1) as u64,
            max_age: std::time::Duration::from_micros(history.age_us),
            replicas: self.cluster_replicas,
        });
        Ok(Some(comet_cluster::Options {
            servers: self.cluster.clone(),
            prefix: self.cluster_prefix.clone(),
            token: self.cluster_token.clone(),
            user: self.cluster_user.clone(),
            password: self.cluster_password.clone(),
            credentials: self.cluster_credentials.clone(),
            tls_ca: self.cluster_tls_ca.clone(),
            tls_cert: self.cluster_tls_cert.clone(),
            tls_key: self.cluster_tls_key.clone(),
            require_tls: self.cluster_require_tls,
            name: format!("comet-{}", std::process::id()),
            stream,
        }))
    }
}

/// Hands cluster messages to their owner workers. Never waits on a worker: mailboxes are
/// unbounded, and a doorbell is one MSG_RING (which completes inline).
pub struct Mailer {
    boxes: Arc<Boxes>,
    bell: comet_ring::Bell,
    /// Workers mailed since the last flush, to ring once each.
    wake: Wake,
}

impl Mailer {
    pub fn new(boxes: Arc<Boxes>) -> std::io::Result<Mailer> {
        let wake = Wake::new(boxes.workers());
        Ok(Mailer {
            boxes,
            bell: comet_ring::Bell::new()?,
            wake,
        })
    }
}

/// A stored publish's ticket: the publish connection and the request's place in its queue.
pub fn publish_ticket(to: ReplyTo) -> comet_cluster::Ticket {
    comet_cluster::Ticket(to.conn.raw(), u64::from(to.seq))
}

/// A fetch's ticket: the subscriber waiting for it.
pub fn fetch_ticket(conn: ConnRef) -> comet_cluster::Ticket {
    comet_cluster::Ticket(conn.raw(), 0)
}

impl comet_cluster::Inbound for Mailer {
    fn message(&mut self, id: u64, seq: Option<u64>, msg: &[u8]) {
        let owner = shard_of(id, self.boxes.workers());
        let msg = Arc::from(msg);
        self.boxes.put(owner, Mail::Remote { id, msg, seq });
        self.wake.mark(owner);
    }

    fn stored(
        &mut self,
        id: u64,
        ticket: comet_cluster::Ticket,
        result: Result<comet_cluster::Stored, comet_cluster::Unstored>,
    ) {
        let to = ReplyTo {
            conn: ConnRef::from_raw(ticket.0),
            seq: ticket.1 as u32,
        };
        let worker = to.conn.worker();
        self.boxes.put(worker, Mail::Stored { to, id, result });
        self.wake.mark(worker);
    }

    fn fetched(
        &mut self,
        id: u64,
        ticket: comet_cluster::Ticket,
        result: Option<comet_cluster::Fetched>,
    ) {
        let conn = ConnRef::from_raw(ticket.0);
        let owner = shard_of(id, self.boxes.workers());
        self.boxes.put(owner, Mail::Fetched { id, conn, result });
        self.wake.mark(owner);
    }

    fn flush(&mut self) {
        let bell = &mut self.bell;
        self.wake.flush(&self.boxes, |fd, target| {
            match bell.ring(fd, pack(Op::Doorbell, 0, 0)) {
                Ok(()) => true,
                Err(e) => {
                    // The mail stays in the mailbox: the worker reads it at its next wake-up
                    // (its timer ticks every 250 ms).
                    tracing::warn!(target, "cluster: MSG_RING failed: {e}");
                    false
                }
            }
        });
    }
}
