//! `--state-dir`: a single node keeps its positions across a graceful restart.
//!
//! On SIGINT/SIGTERM, once every stream has ended and the workers have left their loops, the
//! process's epoch and every worker's history ([`comet_router::Saved`]: each id's retained
//! messages with their seqs, and the floors and horizon of the gap rule) are written to
//! `DIR/comet.state` ([`save`]: a temporary file, fsync, rename, fsync of the folder). At start
//! the file is read and checked ([`load`]) before anything listens; once the listeners are
//! bound it is renamed to `comet.state.loaded` ([`consume`]), before any worker serves, so that
//! a later crash cannot bring back stale positions: after a crash the process draws a new epoch
//! and resuming clients are told of a gap, honestly. Each worker then takes the ids it owns
//! now (`History::import`; the worker count may have changed).
//!
//! # The file
//!
//! A small explicit little-endian layout, not serde with bincode or postcard: the content is
//! flat (integers and byte strings), the router crate stays free of serialization derives,
//! and the bytes on disk are written down here and change only when this code does (a
//! serde encoding follows the shape of the types, so a field added to a struct would change
//! the file silently, without a version bump).
//!
//! ```text
//! header, 24 bytes
//!   magic     8  "comet\0st"
//!   version   u32   1
//!   crc32     u32   CRC-32 (IEEE, crc32fast) of the body
//!   length    u64   bytes of the body
//! body
//!   epoch     u32
//!   shards    u32
//!   per shard: start u64, last_seq u64, horizon u64, entries u64
//!     per entry: id u64, floor u64, messages u32
//!       per message: seq u64, length u32, the bytes
//! ```
//!
//! A file that is not whole, not ours, of another version or with a checksum or content that
//! does not hold is refused: comet exits 1 naming the file and what is wrong, and says how to
//! start without it (move it away; resuming clients then get a gap). Nothing is guessed.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use comet_router::{Saved, SavedEntry};

/// The state file in `--state-dir`.
pub const FILE_NAME: &str = "comet.state";
/// What the state file becomes once loaded (overwritten by the next load).
pub const LOADED_NAME: &str = "comet.state.loaded";
/// Written first, renamed to [`FILE_NAME`] once whole and on disk.
const TEMP_NAME: &str = "comet.state.tmp";

const MAGIC: [u8; 8] = *b"comet\0st";
pub const VERSION: u32 = 1;
/// magic 8 + version 4 + crc32 4 + length 8.
const HEADER_BYTES: usize = 8 + 4 + 4 + 8;

/// What a graceful restart keeps.
#[derive(Debug, PartialEq, Eq)]
pub struct State {
    /// The epoch written in every position.
    pub epoch: u32,
    /// Every worker's history.
    pub shards: Vec<Saved>,
}

/// The file's bytes for `state`.
pub fn encode(state: &State) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&state.epoch.to_le_bytes());
    body.extend_from_slice(&(state.shards.len() as u32).to_le_bytes());
    for shard in &state.shards {
        for n in [
            shard.start,
            shard.last_seq,
            shard.horizon,
            shard.entries.len() as u64,
        ] {
            body.extend_from_slice(&n.to_le_bytes());
        }
        for entry in &shard.entries {
            body.extend_from_slice(&entry.id.to_le_bytes());
            body.extend_from_slice(&entry.floor.to_le_bytes());
            body.extend_from_slice(&(entry.messages.len() as u32).to_le_bytes());
            for (seq, msg) in &entry.messages {
                body.extend_from_slice(&seq.to_le_bytes());
                body.extend_from_slice(&(msg.len() as u32).to_le_bytes());
                body.extend_from_slice(msg);
            }
        }
    }
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The state in `bytes`, checked; the error says what is wrong.
pub fn decode(bytes: &[u8]) -> Result<State, String> {
    if bytes.len() < HEADER_BYTES {
        return Err(format!(
            "truncated: {} bytes, shorter than the {HEADER_BYTES}-byte header",
            bytes.len()
        ));
    }
    let mut header = Reader { bytes, at: 0 };
    if header.take(8)? != MAGIC {
        return Err("not a comet state file (wrong magic bytes)".into());
    }
    let version = header.u32()?;
    if version != VERSION {
        return Err(format!(
            "format version {version}, and this comet reads version {VERSION} only"
        ));
    }
    let crc = header.u32()?;
    let length = header.u64()?;
    let body = &bytes[HEADER_BYTES..];
    if body.len() as u64 != length {
        return Err(format!(
            "truncated or extended: the header says {length} bytes of content, the file has {}",
            body.len()
        ));
    }
    let actual = crc32fast::hash(body);
    if actual != crc {
        return Err(format!(
            "checksum mismatch (crc32 {actual:08x}, the header says {crc:08x}): the file is corrupt"
        ));
    }
    let mut r = Reader { bytes: body, at: 0 };
    let epoch = r.u32()?;
    let shard_count = r.u32()? as usize;
    let mut shards = Vec::with_capacity(shard_count.min(r.left() / 32));
    for _ in 0..shard_count {
        let (start, last_seq, horizon) = (r.u64()?, r.u64()?, r.u64()?);
        let entry_count = r.u64()?;
        let mut entries = Vec::with_capacity((entry_count as usize).min(r.left() / 20));
        for _ in 0..entry_count {
            let (id, floor) = (r.u64()?, r.u64()?);
            let message_count = r.u32()? as usize;
            let mut messages = Vec::with_capacity(message_count.min(r.left() / 12));
            for _ in 0..message_count {
                let seq = r.u64()?;
                let len = r.u32()? as usize;
                messages.push((seq, Arc::from(r.take(len)?)));
            }
            entries.push(SavedEntry {
                id,
                floor,
                messages,
            });
        }
        shards.push(Saved {
            start,
            last_seq,
            horizon,
            entries,
        });
    }
    if r.left() != 0 {
        return Err(format!("{} bytes after the content", r.left()));
    }
    if shards.is_empty() {
        return Err("no history in it".into());
    }
    Saved::check_all(&shards).map_err(|e| format!("inconsistent content: {e}"))?;
    Ok(State { epoch, shards })
}

/// Reads little-endian numbers off a byte slice, failing at its end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.left() < n {
            return Err(format!(
                "content ends early (at byte {} of {}, {n} more needed)",
                self.at,
                self.bytes.len()
            ));
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
}

/// Makes sure `dir` exists and takes files, so that a shutdown does not find out too late.
pub fn prepare(dir: &Path) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("--state-dir {}: {e}", dir.display());
    fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(TEMP_NAME);
    File::create(&probe).map_err(fail)?;
    fs::remove_file(&probe).map_err(fail)
}

/// The state saved in `dir`, if there is one; a file that cannot be used is an error naming
/// it, what is wrong and how to start without it.
pub fn load(dir: &Path) -> Result<Option<State>, String> {
    let path = dir.join(FILE_NAME);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(refused(&path, &e.to_string())),
    };
    decode(&bytes).map(Some).map_err(|e| refused(&path, &e))
}

fn refused(path: &Path, why: &str) -> String {
    let path = path.display();
    format!(
        "state file {path}: {why}. Refusing to start with it. To start without the saved \
         positions (clients resuming get a gap notice), move it away: mv {path} {path}.bad"
    )
}

/// Renames the loaded file out of the way, so that only the next graceful shutdown can leave
/// one again; returns its new path.
pub fn consume(dir: &Path) -> Result<PathBuf, String> {
    let (from, to) = (dir.join(FILE_NAME), dir.join(LOADED_NAME));
    fs::rename(&from, &to)
        .and_then(|()| File::open(dir)?.sync_all())
        .map_err(|e| {
            format!(
                "state file {}: renaming it after loading: {e}",
                from.display()
            )
        })?;
    Ok(to)
}

/// Writes `state` to `dir` whole or not at all: a temporary file, fsync, rename, fsync of the
/// folder. Returns the file's path and size.
pub fn save(dir: &Path, state: &State) -> Result<(PathBuf, usize), String> {
    let (temp, path) = (dir.join(TEMP_NAME), dir.join(FILE_NAME));
    let bytes = encode(state);
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&temp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&temp, &path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| format!("saving the state to {}: {e}", path.display()))?;
    Ok((path, bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use comet_router::{History, HistoryConfig};

    fn state() -> State {
        let cfg = HistoryConfig {
            messages_max: 2,
            age_us: 1_000_000,
            bytes_max: usize::MAX,
        };
        let mut a = History::new(cfg, 100);
        a.push(1, &Arc::from(&b"one"[..]), 200);
        a.push(1, &Arc::from(&b""[..]), 300);
        a.push(1, &Arc::from(&b"three\n\xff"[..]), 400);
        let mut b = History::new(cfg, 105);
        b.push(2, &Arc::from(&b"two"[..]), 250);
        State {
            epoch: 0xdead_beef,
            shards: vec![a.export(), b.export(), History::new(cfg, 110).export()],
        }
    }

    #[test]
    fn decode_of_encode_is_the_state() {
        let state = state();
        let bytes = encode(&state);
        assert_eq!(&bytes[..8], b"comet\0st");
        assert_eq!(decode(&bytes), Ok(state));
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_refused() {
        let bytes = encode(&state());
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x20;
            assert!(decode(&bad).is_err(), "flipped byte {at} accepted");
            assert!(decode(&bytes[..at]).is_err(), "truncated to {at} accepted");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer)
            .unwrap_err()
            .contains("truncated or extended"));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let bytes = encode(&state());
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(decode(&flipped).unwrap_err().contains("checksum mismatch"));
        let mut version = bytes.clone();
        version[8..12].copy_from_slice(&7u32.to_le_bytes());
        let e = decode(&version).unwrap_err();
        assert!(e.contains("version 7") && e.contains("version 1"), "{e}");
        assert!(decode(b"hello").unwrap_err().contains("truncated"));
        assert!(decode(&[b'x'; 64])
            .unwrap_err()
            .contains("not a comet state file"));
        // A well-formed file whose content breaks the history's rules.
        let mut state = state();
        state.shards[1].entries[0].id = 1;
        let e = decode(&encode(&state)).unwrap_err();
        assert!(e.contains("id 1 saved twice"), "{e}");
    }

    #[test]
    fn save_load_consume() {
        let dir = std::env::temp_dir().join(format!("comet-state-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        prepare(&dir).unwrap();
        assert_eq!(load(&dir), Ok(None));
        let (path, size) = save(&dir, &state()).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len() as usize, size);
        assert_eq!(load(&dir), Ok(Some(state())));
        consume(&dir).unwrap();
        assert_eq!(load(&dir), Ok(None));
        assert!(dir.join(LOADED_NAME).exists());
        fs::write(dir.join(FILE_NAME), b"garbage").unwrap();
        let e = load(&dir).unwrap_err();
        assert!(e.contains(FILE_NAME) && e.contains("mv "), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
