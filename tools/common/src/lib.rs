//! What comet's load tools (floodtest, msggen, memlog, resumetest) share.
//!
//! # Layout
//!
//! - [`chunked`]: the chunked transfer decoder, sans I/O and without a buffer (floodtest holds
//!   one per connection, a million at a time; resumetest one per stream).
//! - [`response`]: response heads and the publish API's answers (msggen, resumetest, memlog).
//! - [`jwt`]: HS256 subscriber tokens for `--jwt-secret` (floodtest, resumetest).
//! - [`latency`]: latency histograms and their percentiles (floodtest, resumetest).
//! - [`clock`]: wall-clock stamps and the evenly spaced sending schedule (every tool).
//! - [`retry`]: when to send a publish again after a 503 (msggen, resumetest).
//! - [`sock`]: source addresses for many connections on loopback (floodtest, resumetest) and
//!   receive times from the kernel (resumetest).
//!
//! All of it is pure but the wall-clock reads in [`clock`] and [`sock`]'s socket calls
//! (its `unsafe` blocks). Random numbers come from `fastrand`
//! in the tools themselves. Nothing here depends on comet's own crates: a tool that shared the
//! server's parser would share its bugs, and its tests would pass anyway.
#![deny(unsafe_code)]

pub mod chunked;
pub mod clock;
pub mod jwt;
pub mod latency;
pub mod response;
pub mod retry;
#[allow(unsafe_code)] // setsockopt and recvmsg with what socket2 does not have
pub mod sock;
