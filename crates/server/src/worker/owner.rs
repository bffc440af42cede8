//! The worker as owner of a shard of ids: logins and logouts, routing a message to every
//! connection logged in as its id, wherever that connection is held. It owns the [`Shard`]
//! (tables, history) and the [`Post`] (mail to the other workers): a target held by another
//! worker gets mail; one held here is handed back to the loop, which holds the sockets.

use std::sync::Arc;

use comet_router::{shard_of, ConnRef, Id};

use super::post::{Ack, Mail, Post, ReplyTo};
use super::shard::Shard;

pub struct Owner {
    index: usize,
    workers: usize,
    shard: Shard,
    post: Post,
}

impl Owner {
    pub fn new(index: usize, workers: usize, shard: Shard, post: Post) -> Owner {
        Owner {
            index,
            workers,
            shard,
            post,
        }
    }

    fn owns(&self, id: Id) -> bool {
        shard_of(id, self.workers) == self.index
    }

    /// Logs `conn` in as each of `ids` that another worker owns (by mail; each answers
    /// `Mail::LoginAck`); returns how many answers to wait for.
    pub fn login_elsewhere(&mut self, ids: &[Id], since: Option<&[u64]>, conn: ConnRef) -> u16 {
        let mut mailed = 0;
        for (i, &id) in ids.iter().enumerate() {
            if !self.owns(id) {
                let since = since.map(|s| s[i]);
                let owner = shard_of(id, self.workers);
                self.post.send(owner, Mail::Login { id, conn, since });
                mailed += 1;
            }
        }
        mailed
    }

    /// Logs `conn` in as `id` if this worker owns it: the owner's answer.
    pub fn login_here(&mut self, id: Id, conn: ConnRef, since: Option<u64>) -> Option<Ack> {
        self.owns(id).then(|| self.shard.login(id, conn, since))
    }

    pub fn logout(&mut self, id: Id, conn: ConnRef) {
        if self.owns(id) {
            self.shard.logout(id, conn);
        } else {
            let owner = shard_of(id, self.workers);
            self.post.send(owner, Mail::Logout { id, conn });
        }
    }

    /// Routes a message for `id`, owned here, published at `published_us`: numbers it, keeps
    /// it in the history, mails it to the targets held by other workers and appends those held
    /// here to `here`. Returns its seq and how many connections it went to.
    pub fn route(
        &mut self,
        id: Id,
        msg: &Arc<[u8]>,
        (now_us, published_us): (u64, u64),
        here: &mut Vec<ConnRef>,
    ) -> (u64, u32) {
        debug_assert!(self.owns(id));
        let (seq, targets) = self.shard.route(id, msg, now_us);
        for &conn in targets {
            if conn.worker() == self.index {
                here.push(conn);
            } else {
                let msg = msg.clone();
                let mail = Mail::Deliver {
                    conn,
                    id,
                    seq,
                    msg,
                    published_us,
                };
                self.post.send(conn.worker(), mail);
            }
        }
        (seq, targets.len() as u32)
    }

    /// `POST /disconnect/<id>`, owned here: mails the connections held by other workers,
    /// appends those held here to `here`, and returns how many there were.
    pub fn disconnect(&mut self, id: Id, here: &mut Vec<ConnRef>) -> u32 {
        let targets = self.shard.logged_in(id);
        for &conn in targets {
            if conn.worker() == self.index {
                here.push(conn);
            } else {
                self.post.send(conn.worker(), Mail::DisconnectConn { conn });
            }
        }
        targets.len() as u32
    }

    /// A publish (`msg`) or a disconnect (`None`) for an id another worker owns goes there;
    /// false when this worker owns it (the caller routes it).
    /// `published_us`: when the publish reached comet.
    pub fn forward(
        &mut self,
        id: Id,
        msg: Option<&Arc<[u8]>>,
        reply: ReplyTo,
        published_us: u64,
    ) -> bool {
        if self.owns(id) {
            return false;
        }
        let owner = shard_of(id, self.workers);
        let mail = match msg {
            Some(msg) => Mail::Publish {
                id,
                msg: msg.clone(),
                reply,
                published_us,
            },
            None => Mail::Disconnect { id, reply },
        };
        self.post.send(owner, mail);
        true
    }

    /// The count for a publish or a disconnect that came by mail.
    pub fn reply(&mut self, to: ReplyTo, connections: u32) {
        self.post
            .send(to.conn.worker(), Mail::Reply { to, connections });
    }

    /// The next mail that needs the loop; logins and logouts for ids owned here are handled
    /// on the way.
    pub fn next_mail(&mut self) -> Option<Mail> {
        loop {
            match self.post.recv()? {
                Mail::Login { id, conn, since } => {
                    let ack = self.shard.login(id, conn, since);
                    self.post
                        .send(conn.worker(), Mail::LoginAck { conn, id, ack });
                }
                Mail::Logout { id, conn } => self.shard.logout(id, conn),
                mail => return Some(mail),
            }
        }
    }

    pub fn post(&mut self) -> &mut Post {
        &mut self.post
    }

    pub fn shard(&self) -> &Shard {
        &self.shard
    }

    pub fn expire(&mut self, now_us: u64) {
        self.shard.expire(now_us);
    }
}
