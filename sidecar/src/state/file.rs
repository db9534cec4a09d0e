//! The two state files: their layout, sealing (SHA-256 over the whole file), reading
//! with every check, and writing atomically.
//!
//! `state.bin`, all integers little-endian:
//!
//! ```text
//! magic "DLSTATE\0" | version u32 = 1
//! stream name: u16 length + UTF-8 | trusted publishers digest [32]
//! stream created (Unix ns) i64 | sequence u64 | last heard (Unix ms) i64
//! written (Unix ms) i64 | event count u64
//! events: each a protobuf length delimiter + a `denylist.v1.RevocationEvent`
//! SHA-256 of every byte above [32]
//! ```
//!
//! `journal.bin` (see [`super::journal`]) adds what was applied after `state.bin` was
//! written; [`read_state`] reads both.
//!
//! `heard.bin` says the same content was still current later (the stream was heard
//! with nothing new), so that steady-state heartbeats rewrite 100 bytes, not the whole
//! state: magic "DLHEARD\0" | version | stream name | trusted digest | stream created |
//! sequence | last heard | SHA-256.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use aws_lc_rs::digest::{Context, SHA256, SHA256_OUTPUT_LEN};
use denylist_proto::events::EventRef;

use super::{Identity, Position, StateError};

/// The state file's name in `state.dir`.
pub const STATE_FILE: &str = "state.bin";
/// The heard file's name in `state.dir`.
pub const HEARD_FILE: &str = "heard.bin";

const STATE_MAGIC: &[u8; 8] = b"DLSTATE\0";
const HEARD_MAGIC: &[u8; 8] = b"DLHEARD\0";
/// The format version both files are written in; any other is foreign.
pub const VERSION: u32 = 1;
/// Length of a SHA-256 digest, the seal of every file here.
pub(super) const DIGEST_LEN: usize = SHA256_OUTPUT_LEN;

/// A file's seal: the SHA-256 of everything before it.
pub type Seal = [u8; DIGEST_LEN];

/// A state file written: its size and its seal (which its journal follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Size of the file, bytes.
    pub bytes: u64,
    /// Its SHA-256 seal.
    pub seal: Seal,
}

/// A state file that passed every check but the stream's own (which needs NATS).
#[derive(Debug)]
pub struct Checked {
    /// Where the content stood.
    pub position: Position,
    /// When it was written, Unix ms.
    pub written_unix_ms: i64,
    /// The whole file.
    bytes: Vec<u8>,
    /// Where the events are in `bytes`.
    body: std::ops::Range<usize>,
    /// How many, the journal's included.
    pub event_count: u64,
    /// The journal's events that follow the file's (framed the same way).
    journal: Vec<u8>,
    /// How many journal records were read.
    pub journal_records: usize,
}

impl Checked {
    /// The encoded events, in the order they were applied: the file's, then the
    /// journal's.
    pub fn records(&self) -> impl Iterator<Item = &[u8]> {
        Records {
            rest: &self.bytes[self.body.clone()],
        }
        .chain(Records {
            rest: &self.journal,
        })
    }

    /// Size of the state file and its journal, bytes.
    pub fn file_bytes(&self) -> usize {
        self.bytes.len() + self.journal.len()
    }
}

/// The encoded `RevocationEvent`s of a checked state; framing was checked on load.
#[derive(Debug, Clone)]
struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Records<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let len = prost::decode_length_delimiter(&mut self.rest).ok()?;
        let (record, rest) = self.rest.split_at_checked(len)?;
        self.rest = rest;
        Some(record)
    }
}

/// A little-endian reader over a header that reports running off its end as corrupt.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        let (head, rest) = self
            .rest
            .split_at_checked(n)
            .ok_or_else(|| StateError::Corrupt("the file ends inside its header".into()))?;
        self.rest = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StateError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn u16(&mut self) -> Result<u16, StateError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, StateError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, StateError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, StateError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
}

/// Checks magic and version (else foreign), then the digest (else corrupt), then the
/// stream name and trusted digest (else foreign). Returns a cursor after them.
fn open_sealed<'a>(
    bytes: &'a [u8],
    magic: &[u8; 8],
    identity: &Identity,
) -> Result<Cursor<'a>, StateError> {
    let mut cursor = Cursor { rest: bytes };
    if cursor.take(magic.len()).ok() != Some(magic.as_slice()) {
        return Err(StateError::Foreign("not a denylist state file".into()));
    }
    let version = cursor.u32()?;
    if version != VERSION {
        return Err(StateError::Foreign(format!(
            "format version {version}, this sidecar reads {VERSION}"
        )));
    }
    let Some(sealed) = bytes.len().checked_sub(DIGEST_LEN) else {
        return Err(StateError::Corrupt("shorter than its digest".into()));
    };
    let digest = aws_lc_rs::digest::digest(&SHA256, &bytes[..sealed]);
    if digest.as_ref() != &bytes[sealed..] {
        return Err(StateError::Corrupt("SHA-256 differs".into()));
    }
    cursor.rest = &cursor.rest[..cursor.rest.len() - DIGEST_LEN];
    let name_len = usize::from(cursor.u16()?);
    let name = cursor.take(name_len)?;
    if name != identity.stream.as_bytes() {
        return Err(StateError::Foreign(format!(
            "of stream {:?}, this sidecar follows {:?}",
            String::from_utf8_lossy(name),
            identity.stream
        )));
    }
    if cursor.array::<DIGEST_LEN>()? != identity.trusted_digest {
        return Err(StateError::Foreign(
            "written under another set of trusted publishers".into(),
        ));
    }
    Ok(cursor)
}

fn read_position(cursor: &mut Cursor<'_>) -> Result<Position, StateError> {
    Ok(Position {
        stream_created_unix_nanos: cursor.i64()?,
        sequence: cursor.u64()?,
        last_heard_unix_ms: cursor.i64()?,
    })
}

/// Reads and checks `state.bin` (see the module docs), then adds the records of its
/// journal that check. `Ok(None)` when there is no state file. Every event is decoded and
/// validated here, so a state that is refused is refused before anything of it is
/// applied.
pub fn read_state(
    dir: &Path,
    identity: &Identity,
    max_bytes: u64,
) -> Result<Option<Checked>, StateError> {
    let Some(bytes) = read_bounded(&dir.join(STATE_FILE), max_bytes)? else {
        return Ok(None);
    };
    let journal =
        read_bounded(&dir.join(super::journal::JOURNAL_FILE), max_bytes).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the local state's journal is not read");
            None
        });
    check(bytes, journal.as_deref(), identity).map(Some)
}

/// Checks the bytes of a state file, then adds the records of `journal` (the bytes of
/// its journal file, if there is one) that check: what [`read_state`] does once the files
/// are read.
pub fn check(
    bytes: Vec<u8>,
    journal: Option<&[u8]>,
    identity: &Identity,
) -> Result<Checked, StateError> {
    let mut cursor = open_sealed(&bytes, STATE_MAGIC, identity)?;
    let position = read_position(&mut cursor)?;
    let written_unix_ms = cursor.i64()?;
    let event_count = cursor.u64()?;
    let start = bytes.len() - DIGEST_LEN - cursor.rest.len();
    let body = start..bytes.len() - DIGEST_LEN;
    let mut rest = &bytes[body.clone()];
    let mut found = 0u64;
    while !rest.is_empty() {
        let record = prost::decode_length_delimiter(&mut rest)
            .ok()
            .and_then(|len| {
                let (record, tail) = rest.split_at_checked(len)?;
                rest = tail;
                Some(record)
            })
            .ok_or_else(|| StateError::Corrupt(format!("event {found}: framing broken")))?;
        EventRef::decode(record).map_err(|e| StateError::Corrupt(format!("event {found}: {e}")))?;
        found += 1;
    }
    if found != event_count {
        return Err(StateError::Corrupt(format!(
            "{found} events, the header says {event_count}"
        )));
    }
    let seal: Seal = bytes[bytes.len() - DIGEST_LEN..]
        .try_into()
        .expect("DIGEST_LEN bytes");
    let mut checked = Checked {
        position,
        written_unix_ms,
        bytes,
        body,
        event_count,
        journal: Vec::new(),
        journal_records: 0,
    };
    let Some(journal) = journal else {
        return Ok(checked);
    };
    let replayed = super::journal::replay(journal, &seal, &position);
    if let Some(why) = &replayed.cut {
        tracing::warn!(records = replayed.records, "{why}");
    }
    if let Some((position, written_unix_ms)) = replayed.last {
        checked.position = position;
        checked.written_unix_ms = written_unix_ms;
        checked.event_count += replayed.event_count;
        checked.journal = replayed.events;
        checked.journal_records = replayed.records;
    }
    Ok(checked)
}

/// Reads `heard.bin`: the position it vouches for, or `None` when it is missing or
/// unusable (it only ever makes an age shorter, so a bad one is simply ignored).
pub fn read_heard(dir: &Path, identity: &Identity) -> Option<Position> {
    let bytes = read_bounded(&dir.join(HEARD_FILE), 4096).ok()??;
    let mut cursor = open_sealed(&bytes, HEARD_MAGIC, identity).ok()?;
    read_position(&mut cursor).ok()
}

/// The file's bytes, `None` if it does not exist; refused unread when over `max_bytes`.
fn read_bounded(path: &Path, max_bytes: u64) -> Result<Option<Vec<u8>>, StateError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StateError::Io(format!("{}: {e}", path.display()))),
    };
    let too_large = |len: u64| {
        StateError::Corrupt(format!(
            "{len} bytes, more than state.max_bytes ({max_bytes})"
        ))
    };
    let len = file
        .metadata()
        .map_err(|e| StateError::Io(format!("{}: {e}", path.display())))?
        .len();
    if len > max_bytes {
        return Err(too_large(len));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // Bounded again while reading: the file may have grown since.
    let mut bounded = std::io::Read::take(file, max_bytes.saturating_add(1));
    std::io::Read::read_to_end(&mut bounded, &mut bytes)
        .map_err(|e| StateError::Io(format!("{}: {e}", path.display())))?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(Some(bytes))
}

/// A writer that hashes what it writes, for the trailing digest.
struct Sealing<W: std::io::Write> {
    inner: W,
    digest: Context,
    written: u64,
}

impl<W: std::io::Write> Sealing<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            digest: Context::new(&SHA256),
            written: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.digest.update(bytes);
        self.written += bytes.len() as u64;
        self.inner.write_all(bytes)
    }

    fn head(&mut self, magic: &[u8; 8], identity: &Identity) -> std::io::Result<()> {
        self.put(magic)?;
        self.put(&VERSION.to_le_bytes())?;
        let name = identity.stream.as_bytes();
        let len = u16::try_from(name.len())
            .map_err(|_| std::io::Error::other("stream name longer than 65535 bytes"))?;
        self.put(&len.to_le_bytes())?;
        self.put(name)?;
        self.put(&identity.trusted_digest)
    }

    fn position(&mut self, p: &Position) -> std::io::Result<()> {
        self.put(&p.stream_created_unix_nanos.to_le_bytes())?;
        self.put(&p.sequence.to_le_bytes())?;
        self.put(&p.last_heard_unix_ms.to_le_bytes())
    }

    /// Writes the digest; returns the inner writer, the file's length and the digest.
    fn seal(mut self) -> std::io::Result<(W, u64, Seal)> {
        let digest = self.digest.finish();
        self.inner.write_all(digest.as_ref())?;
        let seal = digest.as_ref().try_into().expect("SHA-256 is 32 bytes");
        Ok((self.inner, self.written + DIGEST_LEN as u64, seal))
    }
}

/// Writes `state.bin` atomically: a temporary file in `dir`, fsync, rename over the old
/// one, fsync of the directory. Returns the file's size and seal.
pub fn write_state<'a>(
    dir: &Path,
    identity: &Identity,
    position: &Position,
    written_unix_ms: i64,
    events: impl ExactSizeIterator<Item = &'a [u8]>,
) -> std::io::Result<Written> {
    let mut sealed = None;
    let bytes = write_atomically(dir, STATE_FILE, |out| {
        let mut sealing = Sealing::new(out);
        sealing.head(STATE_MAGIC, identity)?;
        sealing.position(position)?;
        sealing.put(&written_unix_ms.to_le_bytes())?;
        sealing.put(&(events.len() as u64).to_le_bytes())?;
        let mut delimiter = Vec::with_capacity(10);
        for event in events {
            delimiter.clear();
            prost::encode_length_delimiter(event.len(), &mut delimiter)
                .map_err(std::io::Error::other)?;
            sealing.put(&delimiter)?;
            sealing.put(event)?;
        }
        let (out, len, seal) = sealing.seal()?;
        sealed = Some(seal);
        Ok((out, len))
    })?;
    Ok(Written {
        bytes,
        seal: sealed.expect("sealed before the file was renamed"),
    })
}

/// Writes `heard.bin` atomically.
pub fn write_heard(dir: &Path, identity: &Identity, position: &Position) -> std::io::Result<u64> {
    write_atomically(dir, HEARD_FILE, |out| {
        let mut sealing = Sealing::new(out);
        sealing.head(HEARD_MAGIC, identity)?;
        sealing.position(position)?;
        let (out, len, _) = sealing.seal()?;
        Ok((out, len))
    })
}

pub(super) fn write_atomically(
    dir: &Path,
    name: &str,
    fill: impl FnOnce(BufWriter<File>) -> std::io::Result<(BufWriter<File>, u64)>,
) -> std::io::Result<u64> {
    // The pid keeps two processes pointed at one directory by mistake from writing
    // into the same temporary file.
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| -> std::io::Result<u64> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let (out, len) = fill(BufWriter::with_capacity(1 << 16, file))?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        // A crash before the rename leaves the old file whole; after it, the new one.
        std::fs::rename(&tmp, dir.join(name))?;
        Ok(len)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let len = written?;
    // The rename itself is durable only once the directory is.
    File::open(dir)?.sync_all()?;
    Ok(len)
}
