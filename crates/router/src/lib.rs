//! Subscriber tables and routing rules for comet: who is logged in as which id, which worker
//! owns an id, and how ids are read from a URL path. No I/O, no threads, no clocks.
//!
//! # Layout
//!
//! - [`conn`]: [`ConnRef`], a connection anywhere in the process packed into one `u64`
//!   (generation, worker, slot), so a reused slot is told apart from its previous tenant.
//! - [`shard`]: [`shard_of`], the fixed mixing function that names the worker owning an id's
//!   table entry. It must give the same answer in every process and version, so it is written
//!   out here and pinned by test vectors rather than borrowed from a keyed hasher.
//! - [`subscribers`]: [`Subscribers`], one worker's shard of the table: id -> bag of
//!   connections, with set semantics per (id, conn). An id whose last connection logs out is
//!   removed, so the table ends empty.
//! - [`history`]: [`History`], one worker's recent messages per id for resume: sequence
//!   numbers, bounded retention (count, age, bytes) and the gap rule that tells a resuming
//!   client when messages may have been lost.
//! - [`id`]: [`parse_id`] and [`parse_id_list`] for `/test/123` and `/send/1,2,3`, with
//!   [`IdError`] whose `Display` is the HTTP 400 body.
//!
//! How the server composes them: worker `w` owns `Subscribers` for every id with
//! `shard_of(id, workers) == w`; login, logout and send for an id go to that owner. Each
//! connection keeps the list of ids it logged in as, and on close logs out of each one on its
//! owner. `tests/router_props.rs` models exactly this.
#![forbid(unsafe_code)]

pub mod conn;
pub mod history;
pub mod id;
pub mod shard;
pub mod subscribers;

pub use conn::ConnRef;
pub use history::{History, HistoryConfig, Saved, SavedEntry, SEQ_UNKNOWN};
pub use id::{parse_id, parse_id_list, IdError};
pub use shard::shard_of;
pub use subscribers::Subscribers;

/// A subscriber id as it appears in `/test/<id>`: an unsigned 64-bit integer.
pub type Id = u64;
