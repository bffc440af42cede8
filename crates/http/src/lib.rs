//! HTTP/1.x bytes for comet: request heads in, stream framing out.
//!
//! # Layout
//!
//! Everything here is a pure function over byte slices: no I/O, no clocks, no
//! allocation besides the `Vec<u8>` / `String` the caller hands in or gets back.
//! The server owns every buffer and decides when to read, write and close.
//!
//! - [`request`]: [`parse_request`] turns the bytes received so far into
//!   `Partial`, `Complete(Request)` or `Invalid(Error)` (httparse underneath,
//!   plus the RFC 9112 body-length rules); [`Status`], [`Error`], [`Limits`].
//! - [`chunked`]: [`ChunkedDecoder`], an incremental decoder for chunked
//!   request bodies whose state survives between reads.
//! - [`route`](mod@route): [`route()`] maps listener + method + path to an [`Endpoint`].
//! - [`response`](mod@response): the streaming formats ([`Format`]: the seed's
//!   chunked HTML and Server-Sent Events), plain responses and error responses.
//! - [`events`]: messages with sequence numbers and positions, gaps and heartbeats for
//!   SSE, WebSocket and long-poll.
//! - [`batch`]: [`batch_lines`] splits a `POST /send` batch body into messages.
//! - [`ws`]: WebSocket handshake answer, server frames, client frame decoder.
//! - [`token`]: where a subscriber's token is ([`token_from`]: `Authorization: Bearer` or
//!   `?token=`); checking it is `comet-auth`'s.
//!
//! Every function here that reads bytes from the network has a fuzz target in `fuzz/`
//! (`just fuzz`) asserting its properties: round trips, the same answer however the bytes
//! are split, limits.
#![forbid(unsafe_code)]

pub mod batch;
pub mod chunked;
pub mod events;
pub mod request;
pub mod response;
pub mod route;
pub mod token;
pub mod ws;

pub use batch::{batch_lines, BatchLines};
pub use chunked::ChunkedDecoder;
pub use events::{
    frame_event, frame_expired, frame_gap, frame_position, frame_retry, heartbeat, parse_position,
    poll_body, poll_item, Pos, SEQ_UNKNOWN,
};
pub use request::{
    parse_request, Body, Error, Limits, Method, Parsed, Request, Status, Version, CONTINUE,
    URI_BYTES_MAX,
};
pub use response::{
    error_response, error_response_for, frame_message, preflight_response, response, response_for,
    stream_end, stream_head, unavailable_response, Format, NO_CORS, STREAM_END,
};
pub use route::{query_param, route, Endpoint, Listener};
pub use token::{bearer, token_from};
