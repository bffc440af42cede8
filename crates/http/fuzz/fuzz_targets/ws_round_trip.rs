//! Round trip: client frames built here (ping, pong, close with any code and reason, data
//! frames; any mask; the length in its minimal, 16-bit or 64-bit form), sent back to back,
//! decode one by one to what was built: a ping's payload, a close's code, `consumed` = the
//! frame's size; every shorter prefix of a frame is `NeedMore`. A frame that breaks a rule
//! fails with the code RFC 6455 and comet give it, and ends the decoding.
#![no_main]

use arbitrary::Arbitrary;
use comet_http::ws::{decode, ClientEvent, Decoded};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    frames: Vec<Frame>,
    /// The frame limit: 0 is the server's 4096, else 8 times this.
    max: u8,
    next: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
struct Frame {
    kind: Kind,
    mask: [u8; 4],
    /// 0: minimal, 1: 16-bit, else 64-bit (each when the length fits).
    length_form: u8,
}

#[derive(Arbitrary, Debug)]
enum Kind {
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    EmptyClose,
    Close {
        code: u16,
        reason: Vec<u8>,
    },
    /// Continuation (0), text (1) or binary (2), announcing a payload of `len` bytes.
    Data {
        opcode: u8,
        len: u64,
    },
    /// A ping without the mask bit.
    Unmasked,
}

/// What `decode` owes a frame.
#[derive(Debug, PartialEq)]
enum Want {
    Ping(Vec<u8>),
    Pong,
    Close(Option<u16>),
    Fail(u16),
}

fuzz_target!(|input: Input| {
    let max_frame = match input.max {
        0 => 4096,
        n => usize::from(n) * 8,
    };
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    for frame in &input.frames {
        let start = stream.len();
        let want = encode(&mut stream, frame, max_frame);
        let failed = matches!(want, Want::Fail(_));
        expected.push((start, stream.len() - start, want));
        if failed {
            break;
        }
    }
    stream.extend_from_slice(&input.next);

    for (start, size, want) in expected {
        let rest = &stream[start..];
        let (got, consumed) = match decode(rest, max_frame) {
            Decoded::Frame { consumed, event } => (
                match event {
                    ClientEvent::Ping(payload) => Want::Ping(payload.as_bytes().to_vec()),
                    ClientEvent::Pong => Want::Pong,
                    ClientEvent::Close { code } => Want::Close(code),
                },
                consumed,
            ),
            Decoded::Fail { code, .. } => (Want::Fail(code), 0),
            Decoded::NeedMore => panic!("NeedMore on a whole frame"),
        };
        assert_eq!(got, want);
        if consumed > 0 {
            assert_eq!(consumed, size);
            for short in [0, 1, consumed / 2, consumed - 1] {
                assert_eq!(decode(&rest[..short], max_frame), Decoded::NeedMore);
            }
        }
    }
});

/// Appends `frame` to `out` as a client sends it; what `decode` owes it.
fn encode(out: &mut Vec<u8>, frame: &Frame, max_frame: usize) -> Want {
    let (opcode, payload, want) = match &frame.kind {
        Kind::Ping(p) => {
            let p = p[..p.len().min(125)].to_vec();
            (0x9, p.clone(), Want::Ping(p))
        }
        Kind::Pong(p) => (0xA, p[..p.len().min(125)].to_vec(), Want::Pong),
        Kind::EmptyClose => (0x8, Vec::new(), Want::Close(None)),
        Kind::Close { code, reason } => {
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend(reason.iter().take(123));
            let want = if !matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999) {
                Want::Fail(1002)
            } else if std::str::from_utf8(&payload[2..]).is_err() {
                Want::Fail(1007)
            } else {
                Want::Close(Some(*code))
            };
            (0x8, payload, want)
        }
        Kind::Data { opcode, len } => {
            // Judged from the header alone: a few bytes of payload follow, whatever it says.
            out.push(0x80 | (opcode % 3));
            push_len(out, *len, frame.length_form);
            out.extend_from_slice(&frame.mask);
            out.extend_from_slice(&[0; 8]);
            let too_big = *len > max_frame as u64;
            return Want::Fail(if too_big { 1009 } else { 1003 });
        }
        Kind::Unmasked => {
            out.extend_from_slice(&[0x89, 0x00]);
            return Want::Fail(1002);
        }
    };
    // The size is judged before the payload (a close's code and reason).
    let want = if payload.len() > max_frame {
        Want::Fail(1009)
    } else {
        want
    };
    out.push(0x80 | opcode);
    push_len(out, payload.len() as u64, frame.length_form);
    out.extend_from_slice(&frame.mask);
    out.extend(
        payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ frame.mask[i % 4]),
    );
    want
}

/// The second byte (mask bit set) and the extended length, in the form asked for if it fits.
fn push_len(out: &mut Vec<u8>, len: u64, form: u8) {
    match form % 3 {
        0 if len <= 125 => out.push(0x80 | len as u8),
        0 | 1 if len <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
}
