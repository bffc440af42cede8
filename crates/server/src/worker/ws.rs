//! WebSocket input: the frames a client sends on its one-way stream (pings, pongs, a close),
//! read only when the connection's watch sees it readable. Pings are answered, a close is
//! echoed and ends the stream, anything else closes with a code (see `http::ws::decode`).
//! The only per-connection state is a frame split over reads (at most `WS_FRAME_MAX` bytes).

use ahash::AHashMap;
use comet_http as http;

use super::conns::Conns;

/// Largest client frame: only control frames are read, so this bounds what a WebSocket
/// connection may hold of unread input.
const WS_FRAME_MAX: usize = 4096;

/// What a client's frames did to its stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// Still open (pings answered, pongs ignored).
    Open,
    /// The client closed: the close is echoed; the stream ends.
    Closed,
    /// A bad frame: a close with its code is written; the stream ends.
    ProtocolError,
}

#[derive(Default)]
pub struct WsInput {
    partial: AHashMap<u32, Vec<u8>>,
    /// The worker's scratch buffer, not one per read: a pong every heartbeat period from every
    /// WebSocket client would otherwise allocate each time.
    input: Vec<u8>,
}

impl WsInput {
    /// Takes the bytes of one read from `slot` (the caller hands the read buffer back after).
    pub fn feed(&mut self, slot: u32, data: &[u8]) {
        self.input.clear();
        if let Some(head) = self.partial.remove(&slot) {
            self.input.extend_from_slice(&head);
        }
        self.input.extend_from_slice(data);
    }

    /// Decodes what [`WsInput::feed`] took and writes the answers.
    pub fn process(&mut self, conns: &mut Conns, slot: u32) -> Input {
        let mut used = 0;
        loop {
            match http::ws::decode(&self.input[used..], WS_FRAME_MAX) {
                http::ws::Decoded::NeedMore => break,
                http::ws::Decoded::Frame { consumed, event } => {
                    used += consumed;
                    match event {
                        http::ws::ClientEvent::Ping(payload) => {
                            conns.write(slot, |out| http::ws::pong(out, payload.as_bytes()));
                        }
                        http::ws::ClientEvent::Pong => {}
                        http::ws::ClientEvent::Close { code } => {
                            conns.write(slot, |out| http::ws::close_reply(out, code));
                            return Input::Closed;
                        }
                    }
                }
                http::ws::Decoded::Fail { code, reason } => {
                    conns.write(slot, |out| http::ws::close(out, code, reason));
                    return Input::ProtocolError;
                }
            }
        }
        if used < self.input.len() {
            // A frame split over reads: at most a control frame's header and payload.
            self.partial.insert(slot, self.input[used..].to_vec());
        }
        Input::Open
    }

    pub fn forget(&mut self, slot: u32) {
        self.partial.remove(&slot);
    }
}
