//! WebSocket (RFC 6455) bytes for a push-only server: the `101` handshake
//! answer, server→client frames, and a decoder for what a client may send.
//!
//! Like the rest of the crate this is pure: no I/O, no clocks, no state kept
//! between calls. Writers append to the caller's `Vec<u8>`; [`decode`] looks at
//! the unconsumed bytes the caller holds and says how many it may drop.
//!
//! # What comes from tungstenite, and what does not
//!
//! - [`tungstenite::handshake::derive_accept_key`] computes
//!   `Sec-WebSocket-Accept` (SHA-1 + base64, once per handshake).
//! - [`FrameHeader::format`] / [`FrameHeader::len`] write and size the headers of
//!   server frames: a `FrameHeader` is a plain value (no allocation), and
//!   writing into a `Vec<u8>` cannot fail.
//! - [`FrameHeader::parse`] reads client frame headers from a
//!   `Cursor<&[u8]>`: stateless, no allocation, `Ok(None)` until the header
//!   (up to 14 bytes) is complete, and an error for reserved opcodes. Every
//!   other rule (mask, RSV bits, control frame limits, size, push-only) is
//!   checked here, as tungstenite checks them in its stateful `WebSocket`.
//! - Unmasking and close-payload checks are written by hand: tungstenite's
//!   `apply_mask` is private, and its `Frame`/`into_close` path needs an owned
//!   `Bytes` payload per frame. Here payloads are unmasked into a stack array
//!   (control payloads are at most 125 bytes), so [`decode`] never allocates.
//!   The close-code rule is ours too: tungstenite's `CloseCode::is_allowed`
//!   also accepts 1012 and 1013, comet takes exactly 1000-1003, 1007-1011 and
//!   3000-4999.

use std::io::Cursor;

use tungstenite::error::{Error as WsError, ProtocolError};
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// The largest payload of a control frame (close, ping, pong).
pub const CONTROL_PAYLOAD_MAX: usize = 125;

/// The largest close reason: a close payload is a 2-byte code plus the reason.
pub const CLOSE_REASON_MAX: usize = CONTROL_PAYLOAD_MAX - 2;

/// The longest frame header there is (client frame, 64-bit length, mask).
pub const HEADER_MAX: usize = 14;

/// Close codes comet sends.
pub mod code {
    /// 1000: normal closure (`POST /disconnect/<id>`).
    pub const NORMAL: u16 = 1000;
    /// 1001: going away (a page leaving; comet sends 1012 at shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// 1002: protocol error (malformed client frame).
    pub const PROTOCOL: u16 = 1002;
    /// 1003: unsupported data (comet takes no messages from clients).
    pub const UNSUPPORTED: u16 = 1003;
    /// 1007: invalid payload data (close reason not UTF-8).
    pub const INVALID_DATA: u16 = 1007;
    /// 1009: message too big.
    pub const TOO_BIG: u16 = 1009;
    /// 1012: service restart (shutdown): the client should reconnect, after a pause.
    pub const SERVICE_RESTART: u16 = 1012;
    /// 4001 (private use): the subscriber's token expired; it reconnects with a new one.
    pub const TOKEN_EXPIRED: u16 = 4001;
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (surrounding ASCII
/// whitespace ignored): base64(SHA-1(key + the RFC 6455 GUID)).
pub fn accept_key(sec_websocket_key: &[u8]) -> String {
    derive_accept_key(sec_websocket_key.trim_ascii())
}

/// Appends the `101 Switching Protocols` answer to a valid handshake for
/// `key` (the `Sec-WebSocket-Key` value), with
/// `Access-Control-Allow-Origin: <allow_origin>` and, if `vary_origin`,
/// `Vary: Origin`, then the blank line. No subprotocol, no extension.
///
/// # Panics
///
/// If `allow_origin` holds CR or LF (it would split the header).
pub fn handshake_response(out: &mut Vec<u8>, key: &[u8], allow_origin: &[u8], vary_origin: bool) {
    assert!(
        !allow_origin.iter().any(|&b| b == b'\r' || b == b'\n'),
        "Access-Control-Allow-Origin value holds CR or LF"
    );
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\n\
          Upgrade: websocket\r\n\
          Connection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept_key(key).as_bytes());
    out.extend_from_slice(b"\r\nAccess-Control-Allow-Origin: ");
    out.extend_from_slice(allow_origin);
    out.extend_from_slice(b"\r\n");
    if vary_origin {
        out.extend_from_slice(b"Vary: Origin\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A server frame header: FIN set, no RSV bits, unmasked.
const fn server_header(opcode: OpCode) -> FrameHeader {
    FrameHeader {
        is_final: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: None,
    }
}

fn write_header(out: &mut Vec<u8>, opcode: OpCode, payload_len: usize) {
    server_header(opcode)
        .format(payload_len as u64, out)
        .expect("writing to a Vec<u8> cannot fail");
}

/// Bytes of the header of a server frame (unmasked) with `payload_len` bytes
/// of payload: 2, 4 (126..=65535) or 10.
#[cfg(test)]
fn header_len(payload_len: usize) -> usize {
    server_header(OpCode::Data(Data::Text)).len(payload_len as u64)
}

/// Appends the header of a final, unmasked text frame of `payload_len`
/// bytes; the caller appends exactly that many bytes of UTF-8 next.
pub fn text_frame(out: &mut Vec<u8>, payload_len: usize) {
    write_header(out, OpCode::Data(Data::Text), payload_len);
}

/// Appends a ping with an empty payload (the heartbeat).
pub fn ping(out: &mut Vec<u8>) {
    write_header(out, OpCode::Control(Control::Ping), 0);
}

/// Appends a pong echoing `payload` (the payload of the ping it answers).
///
/// # Panics
///
/// If `payload` is over 125 bytes ([`decode`] never yields such a ping).
pub fn pong(out: &mut Vec<u8>, payload: &[u8]) {
    assert!(
        payload.len() <= CONTROL_PAYLOAD_MAX,
        "control frame payload over 125 bytes"
    );
    write_header(out, OpCode::Control(Control::Pong), payload.len());
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and `reason`, the reason cut to at most
/// 123 bytes at a char boundary.
pub fn close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(CLOSE_REASON_MAX);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    write_header(out, OpCode::Control(Control::Close), 2 + reason.len());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
}

/// Appends the answer to a client's close frame: a close carrying the same
/// code, or an empty close if the client's had none.
pub fn close_reply(out: &mut Vec<u8>, code: Option<u16>) {
    match code {
        Some(code) => close(out, code, ""),
        None => write_header(out, OpCode::Control(Control::Close), 0),
    }
}

/// The unmasked payload of a control frame (at most 125 bytes), kept inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ControlPayload {
    len: u8,
    bytes: [u8; CONTROL_PAYLOAD_MAX],
}

impl ControlPayload {
    /// The payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for ControlPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ControlPayload({:?})", self.as_bytes())
    }
}

/// A well-formed frame from the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// Answer with [`pong`] of the same payload.
    Ping(ControlPayload),
    /// Nothing to do.
    Pong,
    /// Answer with [`close_reply`] and close the connection. `code` is
    /// `None` for an empty close payload; a reason, if any, was valid UTF-8
    /// and is dropped.
    Close {
        /// The client's close code (valid to receive).
        code: Option<u16>,
    },
}

/// What [`decode`] found at the start of the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// The frame is not complete yet: keep the bytes and read more.
    NeedMore,
    /// A whole frame: drop `consumed` bytes and call [`decode`] again on the
    /// rest (more frames may follow in the same read).
    Frame {
        /// Bytes of this frame (header and payload).
        consumed: usize,
        /// What the frame asks for.
        event: ClientEvent,
    },
    /// The client broke a rule: send [`close`] with `code` and `reason`, then
    /// close the connection without reading further.
    Fail {
        /// The close code: 1002, 1003, 1007 or 1009.
        code: u16,
        /// A short reason, fit for the close frame.
        reason: &'static str,
    },
}

const fn fail(code: u16, reason: &'static str) -> Decoded {
    Decoded::Fail { code, reason }
}

/// Close codes a client may send (RFC 6455 §7.4): 1004, 1005, 1006 and 1015
/// never go on the wire; 1012-2999 are not accepted either.
fn close_code_valid(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// Decodes the client frame at the start of `buf` (the bytes received and not
/// yet consumed).
///
/// The header is judged as soon as it is complete (at most 14 bytes), before
/// any payload, in this order:
///
/// 1. `1002`: reserved opcode, RSV bit set (no extension is negotiated),
///    frame not masked, control frame without FIN or over 125 bytes;
/// 2. `1009`: payload over `max_frame`;
/// 3. `1003`: any data frame (text, binary, continuation): comet is one-way.
///
/// So only control frames are ever waited for, and a caller never needs to
/// hold more than 14 + 125 bytes. A close payload of 1 byte or with a code not
/// valid to receive fails with `1002`, a close reason that is not UTF-8 with
/// `1007`. The length need not be minimally encoded (as in tungstenite and
/// browsers).
pub fn decode(buf: &[u8], max_frame: usize) -> Decoded {
    let mut cursor = Cursor::new(buf);
    let (header, len) = match FrameHeader::parse(&mut cursor) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Decoded::NeedMore,
        // The only error a Cursor<&[u8]> can give: reads from it never fail,
        // and a short read is `Ok(None)`.
        Err(WsError::Protocol(ProtocolError::InvalidOpcode(_))) => {
            return fail(code::PROTOCOL, "unknown opcode")
        }
        Err(_) => return fail(code::PROTOCOL, "malformed frame header"),
    };
    // At most HEADER_MAX, so the cast is lossless.
    let header_len = cursor.position() as usize;

    if header.rsv1 || header.rsv2 || header.rsv3 {
        return fail(code::PROTOCOL, "reserved bits set");
    }
    let Some(mask) = header.mask else {
        return fail(code::PROTOCOL, "client frame not masked");
    };
    let control = match header.opcode {
        OpCode::Control(control) => Some(control),
        OpCode::Data(_) => None,
    };
    if control.is_some() {
        if !header.is_final {
            return fail(code::PROTOCOL, "fragmented control frame");
        }
        if len > CONTROL_PAYLOAD_MAX as u64 {
            return fail(code::PROTOCOL, "control frame over 125 bytes");
        }
    }
    if len > max_frame as u64 {
        return fail(code::TOO_BIG, "frame too large");
    }
    let Some(control) = control else {
        return fail(
            code::UNSUPPORTED,
            "comet does not accept messages from clients",
        );
    };

    // A control frame of at most 125 bytes: wait for all of it.
    let len = len as usize;
    let Some(masked) = buf.get(header_len..header_len + len) else {
        return Decoded::NeedMore;
    };
    let consumed = header_len + len;
    let mut payload = ControlPayload {
        len: len as u8,
        bytes: [0; CONTROL_PAYLOAD_MAX],
    };
    for (i, (dst, src)) in payload.bytes.iter_mut().zip(masked).enumerate() {
        *dst = src ^ mask[i & 3];
    }

    let event = match control {
        Control::Ping => ClientEvent::Ping(payload),
        Control::Pong => ClientEvent::Pong,
        Control::Close => match payload.as_bytes() {
            [] => ClientEvent::Close { code: None },
            [_] => return fail(code::PROTOCOL, "close payload of 1 byte"),
            [hi, lo, reason @ ..] => {
                let close_code = u16::from_be_bytes([*hi, *lo]);
                if !close_code_valid(close_code) {
                    return fail(code::PROTOCOL, "invalid close code");
                }
                if std::str::from_utf8(reason).is_err() {
                    return fail(code::INVALID_DATA, "close reason not UTF-8");
                }
                ClientEvent::Close {
                    code: Some(close_code),
                }
            }
        },
        // Rejected by FrameHeader::parse already; kept for exhaustiveness.
        Control::Reserved(_) => return fail(code::PROTOCOL, "unknown opcode"),
    };
    Decoded::Frame { consumed, event }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tungstenite::protocol::frame::coding::CloseCode;
    use tungstenite::protocol::frame::{CloseFrame, Frame};

    const MAX: usize = 4096;
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// Formats a tungstenite frame as a client would send it (masked).
    fn client(mut frame: Frame, mask: [u8; 4]) -> Vec<u8> {
        frame.header_mut().mask = Some(mask);
        let mut out = Vec::new();
        frame.format(&mut out).unwrap();
        out
    }

    /// A hand-made client frame: first byte, masked or not, payload (masked
    /// here with MASK when `masked`), with the length in the minimal form.
    fn raw(first: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        let m = if masked { 0x80 } else { 0 };
        match payload.len() {
            n @ 0..=125 => out.push(m | n as u8),
            n @ 126..=65535 => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            out.extend_from_slice(&MASK);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i & 3]));
        } else {
            out.extend_from_slice(payload);
        }
        out
    }

    fn close_frame(code: u16, reason: &str) -> Frame {
        Frame::close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        }))
    }

    fn frame(consumed: usize, event: ClientEvent) -> Decoded {
        Decoded::Frame { consumed, event }
    }

    fn failed(d: Decoded) -> u16 {
        match d {
            Decoded::Fail { code, reason } => {
                assert!(!reason.is_empty() && reason.len() <= CLOSE_REASON_MAX);
                code
            }
            other => panic!("expected Fail, got {other:?}"),
        }
    }

    fn ping_of(d: Decoded) -> Vec<u8> {
        match d {
            Decoded::Frame {
                event: ClientEvent::Ping(p),
                ..
            } => p.as_bytes().to_vec(),
            other => panic!("expected Ping, got {other:?}"),
        }
    }

    // ---- handshake ----

    #[test]
    fn accept_key_rfc_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            accept_key(b" dGhlIHNhbXBsZSBub25jZQ==\t"),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn handshake_response_bytes() {
        let mut out = b"x".to_vec();
        handshake_response(&mut out, b"dGhlIHNhbXBsZSBub25jZQ==", b"*", false);
        assert_eq!(
            out,
            b"xHTTP/1.1 101 Switching Protocols\r\n\
              Upgrade: websocket\r\n\
              Connection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
              Access-Control-Allow-Origin: *\r\n\
              \r\n"
        );
        let mut out = Vec::new();
        handshake_response(
            &mut out,
            b"dGhlIHNhbXBsZSBub25jZQ==",
            b"https://app.example",
            true,
        );
        assert!(out.ends_with(
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
              Access-Control-Allow-Origin: https://app.example\r\n\
              Vary: Origin\r\n\
              \r\n"
        ));
        // httparse reads it back as a 101 with the fields.
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut headers);
        assert_eq!(
            resp.parse(&out).unwrap(),
            httparse::Status::Complete(out.len())
        );
        assert_eq!(resp.code, Some(101));
        assert_eq!(resp.headers.len(), 5);
    }

    #[test]
    #[should_panic(expected = "CR or LF")]
    fn handshake_origin_with_newline_panics() {
        handshake_response(&mut Vec::new(), b"k", b"https://a\r\nSet-Cookie: x", true);
    }

    // ---- server frames ----

    fn parse_server(bytes: &[u8]) -> (FrameHeader, u64, usize) {
        let mut cur = Cursor::new(bytes);
        let (h, len) = FrameHeader::parse(&mut cur).unwrap().unwrap();
        (h, len, cur.position() as usize)
    }

    #[test]
    fn text_frame_headers_round_trip() {
        for n in [
            0usize,
            1,
            125,
            126,
            127,
            65535,
            65536,
            1 << 20,
            (1 << 32) + 7,
        ] {
            let mut out = vec![0xee];
            text_frame(&mut out, n);
            let (h, len, hl) = parse_server(&out[1..]);
            assert_eq!(h, server_header(OpCode::Data(Data::Text)), "n={n}");
            assert_eq!(len, n as u64);
            assert_eq!(hl, out.len() - 1);
            assert_eq!(header_len(n), hl);
        }
        assert_eq!(header_len(125), 2);
        assert_eq!(header_len(126), 4);
        assert_eq!(header_len(65536), 10);
        let mut out = Vec::new();
        text_frame(&mut out, 5);
        out.extend_from_slice(b"hello");
        assert_eq!(out, b"\x81\x05hello");
    }

    #[test]
    fn control_frames_round_trip() {
        let mut out = Vec::new();
        ping(&mut out);
        assert_eq!(out, [0x89, 0x00]);
        let (h, len, _) = parse_server(&out);
        assert_eq!(
            (h.opcode, h.is_final, h.mask, len),
            (OpCode::Control(Control::Ping), true, None, 0)
        );

        out.clear();
        pong(&mut out, b"abc");
        assert_eq!(out, b"\x8a\x03abc");

        out.clear();
        close(&mut out, 1001, "shutdown");
        let (h, len, hl) = parse_server(&out);
        assert_eq!(h.opcode, OpCode::Control(Control::Close));
        assert_eq!(len as usize, out.len() - hl);
        assert_eq!(&out[hl..], b"\x03\xe9shutdown");

        out.clear();
        close_reply(&mut out, None);
        assert_eq!(out, [0x88, 0x00]);
        out.clear();
        close_reply(&mut out, Some(4000));
        assert_eq!(out, [0x88, 0x02, 0x0f, 0xa0]);
    }

    #[test]
    fn close_reason_truncated_at_char_boundary() {
        let mut out = Vec::new();
        close(&mut out, 1000, &"a".repeat(200));
        assert_eq!(out.len(), 2 + 125);
        assert_eq!(out[1], 125);

        // 'é' is 2 bytes: 122 'a' + 'é' would end at 124 > 123, so it is cut.
        let reason = format!("{}é", "a".repeat(122));
        out.clear();
        close(&mut out, 1000, &reason);
        assert_eq!(out[1] as usize, 2 + 122);
        assert_eq!(&out[4..], "a".repeat(122).as_bytes());

        let reason = "€".repeat(50); // 3 bytes each: 41 fit in 123
        out.clear();
        close(&mut out, 1000, &reason);
        assert_eq!(out[1] as usize, 2 + 123);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }

    #[test]
    #[should_panic(expected = "over 125")]
    fn pong_over_125_panics() {
        pong(&mut Vec::new(), &[0; 126]);
    }

    // ---- client frames: good ----

    #[test]
    fn decodes_control_frames_from_tungstenite() {
        let bytes = client(Frame::ping(b"hello".to_vec()), MASK);
        assert_eq!(bytes.len(), 2 + 4 + 5);
        let d = decode(&bytes, MAX);
        assert_eq!(ping_of(d), b"hello");
        assert!(matches!(d, Decoded::Frame { consumed: 11, .. }));

        let bytes = client(Frame::ping(Vec::new()), MASK);
        assert_eq!(ping_of(decode(&bytes, MAX)), b"");

        let big: Vec<u8> = (0..125).collect();
        let bytes = client(Frame::ping(big.clone()), [1, 2, 3, 4]);
        assert_eq!(ping_of(decode(&bytes, MAX)), big);

        let bytes = client(Frame::pong(b"x".to_vec()), MASK);
        assert_eq!(decode(&bytes, MAX), frame(7, ClientEvent::Pong));

        let bytes = client(Frame::close(None), MASK);
        assert_eq!(
            decode(&bytes, MAX),
            frame(6, ClientEvent::Close { code: None })
        );

        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            let bytes = client(close_frame(code, "bye ✓"), MASK);
            assert_eq!(
                decode(&bytes, MAX),
                frame(bytes.len(), ClientEvent::Close { code: Some(code) }),
                "code {code}"
            );
        }
        let reason = "r".repeat(123);
        let bytes = client(close_frame(1000, &reason), MASK);
        assert_eq!(
            decode(&bytes, MAX),
            frame(bytes.len(), ClientEvent::Close { code: Some(1000) })
        );
    }

    #[test]
    fn pong_echoes_ping() {
        let bytes = client(Frame::ping(b"\x00\xffecho".to_vec()), MASK);
        let Decoded::Frame {
            event: ClientEvent::Ping(p),
            ..
        } = decode(&bytes, MAX)
        else {
            panic!()
        };
        let mut out = Vec::new();
        pong(&mut out, p.as_bytes());
        assert_eq!(out, b"\x8a\x06\x00\xffecho");
    }

    #[test]
    fn split_at_every_byte() {
        let frames = [
            client(Frame::ping(b"abcdefg".to_vec()), MASK),
            client(Frame::ping(vec![9; 125]), MASK),
            client(Frame::pong(Vec::new()), MASK),
            client(close_frame(1000, "done"), MASK),
            client(Frame::close(None), MASK),
        ];
        for bytes in &frames {
            for k in 0..bytes.len() {
                assert_eq!(
                    decode(&bytes[..k], MAX),
                    Decoded::NeedMore,
                    "{bytes:?} k={k}"
                );
            }
            assert!(matches!(
                decode(bytes, MAX),
                Decoded::Frame { consumed, .. } if consumed == bytes.len()
            ));
        }
    }

    #[test]
    fn failures_decided_at_header_end() {
        // A text frame with a 16-bit length: 8 header bytes, no payload needed.
        let bytes = client(
            Frame::message(vec![b'a'; 300], OpCode::Data(Data::Text), true),
            MASK,
        );
        for k in 0..8 {
            assert_eq!(decode(&bytes[..k], MAX), Decoded::NeedMore, "k={k}");
        }
        assert_eq!(failed(decode(&bytes[..8], MAX)), 1003);
        // Oversized: 64-bit length, 14 header bytes, no payload at all.
        let mut hdr = vec![0x82, 0x80 | 127];
        hdr.extend_from_slice(&(1u64 << 40).to_be_bytes());
        hdr.extend_from_slice(&MASK);
        for k in 0..14 {
            assert_eq!(decode(&hdr[..k], MAX), Decoded::NeedMore, "k={k}");
        }
        assert_eq!(failed(decode(&hdr, MAX)), 1009);
    }

    #[test]
    fn several_frames_in_one_buffer() {
        let mut buf = Vec::new();
        buf.extend(client(Frame::ping(b"1".to_vec()), [0, 0, 0, 0]));
        buf.extend(client(Frame::pong(b"p".to_vec()), MASK));
        buf.extend(client(Frame::ping(b"22".to_vec()), [5, 6, 7, 8]));
        buf.extend(client(close_frame(1001, "away"), MASK));
        let partial = client(Frame::ping(b"333".to_vec()), MASK);
        buf.extend_from_slice(&partial[..5]);

        let mut events = Vec::new();
        let mut rest = &buf[..];
        loop {
            match decode(rest, MAX) {
                Decoded::Frame { consumed, event } => {
                    events.push(event);
                    rest = &rest[consumed..];
                }
                Decoded::NeedMore => break,
                Decoded::Fail { .. } => panic!(),
            }
        }
        assert_eq!(rest, &partial[..5]);
        assert_eq!(events.len(), 4);
        assert!(matches!(events[0], ClientEvent::Ping(p) if p.as_bytes() == b"1"));
        assert_eq!(events[1], ClientEvent::Pong);
        assert!(matches!(events[2], ClientEvent::Ping(p) if p.as_bytes() == b"22"));
        assert_eq!(events[3], ClientEvent::Close { code: Some(1001) });
    }

    // ---- client frames: bad ----

    #[test]
    fn unmasked_frame_is_1002() {
        assert_eq!(failed(decode(&raw(0x89, false, b"hi"), MAX)), 1002);
        assert_eq!(failed(decode(&raw(0x88, false, b""), MAX)), 1002);
        // Even a data frame: the mask rule comes first.
        assert_eq!(failed(decode(&raw(0x81, false, b"hi"), MAX)), 1002);
        // tungstenite's own unmasked frame.
        let mut out = Vec::new();
        Frame::ping(b"x".to_vec()).format(&mut out).unwrap();
        assert_eq!(failed(decode(&out, MAX)), 1002);
    }

    #[test]
    fn reserved_bits_are_1002() {
        for rsv in [0x40, 0x20, 0x10, 0x70] {
            assert_eq!(failed(decode(&raw(0x89 | rsv, true, b""), MAX)), 1002);
            assert_eq!(failed(decode(&raw(0x81 | rsv, true, b"a"), MAX)), 1002);
        }
    }

    #[test]
    fn unknown_opcodes_are_1002() {
        for op in (3..=7).chain(11..=15) {
            for fin in [0, 0x80] {
                let bytes = raw(fin | op, true, b"xyz");
                assert_eq!(failed(decode(&bytes, MAX)), 1002, "op={op}");
                // Decided once the header (6 bytes) is in.
                assert_eq!(decode(&bytes[..5], MAX), Decoded::NeedMore);
                assert_eq!(failed(decode(&bytes[..6], MAX)), 1002);
            }
        }
    }

    #[test]
    fn bad_control_frames_are_1002() {
        // Not final.
        for op in [0x08, 0x09, 0x0a] {
            assert_eq!(failed(decode(&raw(op, true, b""), MAX)), 1002);
        }
        // Over 125 bytes (16-bit length), decided from the header alone.
        for op in [0x88, 0x89, 0x8a] {
            let bytes = raw(op, true, &[0; 126]);
            assert_eq!(failed(decode(&bytes, MAX)), 1002);
            assert_eq!(failed(decode(&bytes[..8], MAX)), 1002);
        }
        // Over 125 bytes and over max_frame: the protocol error wins.
        assert_eq!(failed(decode(&raw(0x89, true, &[0; 200]), 100)), 1002);
    }

    #[test]
    fn data_frames_are_1003() {
        for first in [0x81, 0x82, 0x80, 0x01, 0x02, 0x00] {
            assert_eq!(failed(decode(&raw(first, true, b"hi"), MAX)), 1003);
        }
        let bytes = client(
            Frame::message(b"hello".to_vec(), OpCode::Data(Data::Binary), true),
            MASK,
        );
        // Decided at the end of the header, payload not needed.
        assert_eq!(decode(&bytes[..5], MAX), Decoded::NeedMore);
        assert_eq!(
            decode(&bytes[..6], MAX),
            fail(
                code::UNSUPPORTED,
                "comet does not accept messages from clients"
            )
        );
    }

    #[test]
    fn oversized_frames_are_1009() {
        let bytes = raw(0x81, true, &vec![b'a'; MAX + 1]);
        assert_eq!(failed(decode(&bytes[..8], MAX)), 1009);
        // Exactly max_frame is a data frame like any other.
        let bytes = raw(0x81, true, &vec![b'a'; MAX]);
        assert_eq!(failed(decode(&bytes[..8], MAX)), 1003);
        // A small max_frame applies to control frames too.
        assert_eq!(failed(decode(&raw(0x89, true, &[1; 11]), 10)), 1009);
        assert_eq!(ping_of(decode(&raw(0x89, true, &[1; 10]), 10)), [1; 10]);
        // A 64-bit length with the top bit set.
        let mut hdr = vec![0x81, 0xff];
        hdr.extend_from_slice(&u64::MAX.to_be_bytes());
        hdr.extend_from_slice(&MASK);
        assert_eq!(failed(decode(&hdr, MAX)), 1009);
    }

    #[test]
    fn bad_close_payloads() {
        assert_eq!(failed(decode(&raw(0x88, true, &[0x03]), MAX)), 1002);
        for code in [
            0u16,
            999,
            1004,
            1005,
            1006,
            1012,
            1013,
            1014,
            1015,
            1016,
            2000,
            2999,
            5000,
            u16::MAX,
        ] {
            let bytes = raw(0x88, true, &code.to_be_bytes());
            assert_eq!(failed(decode(&bytes, MAX)), 1002, "code {code}");
        }
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"ok \xff\xfe");
        assert_eq!(failed(decode(&raw(0x88, true, &payload), MAX)), 1007);
        // A truncated multi-byte sequence.
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(&"é".as_bytes()[..1]);
        assert_eq!(failed(decode(&raw(0x88, true, &payload), MAX)), 1007);
        // Invalid code wins over invalid reason.
        let mut payload = 1005u16.to_be_bytes().to_vec();
        payload.push(0xff);
        assert_eq!(failed(decode(&raw(0x88, true, &payload), MAX)), 1002);
    }

    #[test]
    fn close_reason_is_unmasked_before_checking() {
        // The masked reason bytes are not UTF-8, the unmasked ones are.
        let mask = [0x80, 0x80, 0x80, 0x80];
        let bytes = client(close_frame(1000, "abcd"), mask);
        assert!(std::str::from_utf8(&bytes[8..]).is_err());
        assert_eq!(
            decode(&bytes, MAX),
            frame(bytes.len(), ClientEvent::Close { code: Some(1000) })
        );
    }

    proptest! {
        #[test]
        fn ping_payloads_round_trip(
            payload in proptest::collection::vec(any::<u8>(), 0..=125),
            mask in any::<[u8; 4]>(),
            junk in proptest::collection::vec(any::<u8>(), 0..32),
        ) {
            let mut bytes = client(Frame::ping(payload.clone()), mask);
            let n = bytes.len();
            bytes.extend_from_slice(&junk);
            let d = decode(&bytes, MAX);
            let whole = matches!(d, Decoded::Frame { consumed, .. } if consumed == n);
            prop_assert!(whole);
            prop_assert_eq!(ping_of(d), payload);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            max in 0usize..300,
        ) {
            match decode(&bytes, max) {
                Decoded::NeedMore => {}
                Decoded::Frame { consumed, .. } => {
                    prop_assert!(consumed >= 6 && consumed <= bytes.len());
                    prop_assert!(consumed <= HEADER_MAX + CONTROL_PAYLOAD_MAX);
                }
                Decoded::Fail { code, .. } => {
                    prop_assert!([1002, 1003, 1007, 1009].contains(&code));
                }
            }
        }
    }
}
