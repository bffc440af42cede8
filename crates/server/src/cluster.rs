//! `--cluster*` flags, and the bridge's way into the workers: [`Mailer`] puts each message from
//! the cluster in its owner worker's mailbox and rings that worker's doorbell from the bridge
//! thread's own small ring, following the doorbell protocol of `worker/post.rs`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use comet_router::shard_of;

use crate::user_data::{pack, Op};
use crate::worker::post::{Boxes, Mail, Wake};

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
}

impl ClusterArgs {
    /// The bridge's options, or `None` when the node runs alone.
    pub fn options(&self) -> Result<Option<comet_cluster::Options>, String> {
        if self.cluster.is_empty() {
            return Ok(None);
        }
        comet_cluster::check_prefix(&self.cluster_prefix)?;
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

impl comet_cluster::Inbound for Mailer {
    fn message(&mut self, id: u64, msg: &[u8]) {
        let owner = shard_of(id, self.boxes.workers());
        let msg = Arc::from(msg);
        self.boxes.put(owner, Mail::Remote { id, msg });
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
