//! `parse_position`: a client's `since=` / `Last-Event-ID`. Properties:
//!
//! 1. Round trip: the position comet writes (`frame_position`, SSE) parses back to the same
//!    numbers under its epoch, and to all `SEQ_UNKNOWN` under any other epoch; one number
//!    without an epoch stands for every id.
//! 2. Over arbitrary text: an answer has one number per id, all at least 1 or all
//!    `SEQ_UNKNOWN`; whether the text is well formed does not depend on the server's epoch.
#![no_main]

use arbitrary::Arbitrary;
use comet_http::{frame_position, parse_position, Format, Pos, SEQ_UNKNOWN};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    Built {
        epoch: u32,
        other: u32,
        seqs: Vec<u64>,
        /// Zeros in front of each number (cycled).
        zeros: Vec<u8>,
    },
    Text {
        text: Vec<u8>,
        ids: u8,
        epoch: u32,
        other: u32,
    },
}

fuzz_target!(|input: Input| match input {
    Input::Built {
        epoch,
        other,
        seqs,
        zeros,
    } => {
        let seqs: Vec<u64> = seqs.iter().map(|&s| s.max(1)).take(64).collect();
        if seqs.is_empty() {
            return;
        }
        let mut framed = Vec::new();
        frame_position(&mut framed, Format::SseRaw, Pos { epoch, seqs: &seqs });
        let text = framed
            .strip_prefix(b"id: ")
            .and_then(|t| t.strip_suffix(b"\n\n"))
            .expect("id: <pos>");
        assert_eq!(parse_position(text, seqs.len(), epoch), Some(seqs.clone()));
        if other != epoch {
            let unknown = vec![SEQ_UNKNOWN; seqs.len()];
            assert_eq!(parse_position(text, seqs.len(), other), Some(unknown));
        }

        // Without the epoch, with leading zeros (up to the 20 digits a number may have).
        let mut plain = Vec::new();
        for (i, seq) in seqs.iter().enumerate() {
            if i > 0 {
                plain.push(b',');
            }
            let digits = seq.to_string();
            let zeros = zeros.get(i % zeros.len().max(1)).copied().unwrap_or(0);
            let zeros = usize::from(zeros) % (21 - digits.len());
            plain.extend(std::iter::repeat_n(b'0', zeros));
            plain.extend_from_slice(digits.as_bytes());
        }
        assert_eq!(
            parse_position(&plain, seqs.len(), epoch),
            Some(seqs.clone())
        );
        let first = plain.split(|&b| b == b',').next().unwrap();
        let ids = usize::from(zeros.first().copied().unwrap_or(1) % 8) + 1;
        assert_eq!(parse_position(first, ids, epoch), Some(vec![seqs[0]; ids]));
    }
    Input::Text {
        text,
        ids,
        epoch,
        other,
    } => {
        let ids = usize::from(ids % 65);
        let ours = parse_position(&text, ids, epoch);
        if let Some(pos) = &ours {
            assert_eq!(pos.len(), ids);
            assert!(
                pos.iter().all(|&s| s >= 1) || pos.iter().all(|&s| s == SEQ_UNKNOWN),
                "{pos:?}"
            );
        }
        let theirs = parse_position(&text, ids, other);
        assert_eq!(
            ours.is_some(),
            theirs.is_some(),
            "{:?} under epochs {epoch:x} and {other:x}",
            String::from_utf8_lossy(&text)
        );
    }
});
