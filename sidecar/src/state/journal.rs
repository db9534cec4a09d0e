//! `journal.bin`: what was applied since `state.bin` was written, appended at each
//! write instead of rewriting the whole state (a million events is ~120 MB; one more
//! revocation is a record of a few hundred bytes).
//!
//! All integers little-endian:
//!
//! ```text
//! magic "DLJRNL\0\0" | version u32 = 1 | seal of the state.bin it follows [32]
//! records, each:
//!   body length u32 | body | link [32] = SHA-256(previous link | body),
//!   the first record's previous link being the state's seal
//! body: stream created (Unix ns) i64 | sequence u64 | last heard (Unix ms) i64 |
//!   written (Unix ms) i64 | event count u32 |
//!   events: each a protobuf length delimiter + a `denylist.v1.RevocationEvent`
//! ```
//!
//! The links chain every record to the state it follows and to the records before it,
//! in order. A journal is read up to its first record that does not check (a write cut
//! short by a crash, a damaged byte): what comes before is a state the sidecar really
//! was in, only older, and the sidecar catches up the rest from the stream as after
//! any restart. A journal that follows another state (a crash between writing a new
//! state and its new journal) is ignored whole. Nothing in a journal is applied unless
//! every record before it, and the state, checked.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;

use aws_lc_rs::digest::{Context, SHA256};
use denylist_proto::events::EventRef;

use super::Position;
use super::file::{DIGEST_LEN, Seal, write_atomically};

/// The journal's name in `state.dir`.
pub const JOURNAL_FILE: &str = "journal.bin";

const MAGIC: &[u8; 8] = b"DLJRNL\0\0";
const VERSION: u32 = 1;
const HEADER_LEN: u64 = 8 + 4 + DIGEST_LEN as u64;
/// Fixed part of a record's body: created, sequence, heard, written, count.
const BODY_HEAD: usize = 8 + 8 + 8 + 8 + 4;

fn link(previous: &Seal, body: &[u8]) -> Seal {
    let mut context = Context::new(&SHA256);
    context.update(previous);
    context.update(body);
    context
        .finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// An open journal, appended to by the state writer.
#[derive(Debug)]
pub struct Appender {
    file: File,
    /// The last record's link (the state's seal before the first record).
    link: Seal,
    /// The file's length.
    len: u64,
}

impl Appender {
    /// Starts the journal that follows the state sealed with `seal`, replacing any
    /// journal in `dir` (atomically: a crash leaves the old one, which follows another
    /// state and is then ignored, or the new empty one).
    pub fn create(dir: &Path, seal: Seal) -> std::io::Result<Self> {
        write_atomically(dir, JOURNAL_FILE, |mut out| {
            out.write_all(MAGIC)?;
            out.write_all(&VERSION.to_le_bytes())?;
            out.write_all(&seal)?;
            Ok((out, HEADER_LEN))
        })?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join(JOURNAL_FILE))?;
        Ok(Self {
            file,
            link: seal,
            len: HEADER_LEN,
        })
    }

    /// The journal's size, bytes.
    pub fn bytes(&self) -> u64 {
        self.len
    }

    /// Appends one record and makes it durable. After an error the file may end in a
    /// partial record: the writer then writes a whole state and a new journal.
    pub fn append(
        &mut self,
        position: &Position,
        written_unix_ms: i64,
        events: &[Box<[u8]>],
    ) -> std::io::Result<u64> {
        let count = u32::try_from(events.len())
            .map_err(|_| std::io::Error::other("more than 2^32 events in one record"))?;
        let mut body =
            Vec::with_capacity(BODY_HEAD + events.iter().map(|e| e.len() + 5).sum::<usize>());
        body.extend_from_slice(&position.stream_created_unix_nanos.to_le_bytes());
        body.extend_from_slice(&position.sequence.to_le_bytes());
        body.extend_from_slice(&position.last_heard_unix_ms.to_le_bytes());
        body.extend_from_slice(&written_unix_ms.to_le_bytes());
        body.extend_from_slice(&count.to_le_bytes());
        for event in events {
            prost::encode_length_delimiter(event.len(), &mut body)
                .map_err(std::io::Error::other)?;
            body.extend_from_slice(event);
        }
        let length = u32::try_from(body.len())
            .map_err(|_| std::io::Error::other("a journal record over 4 GiB"))?;
        let next = link(&self.link, &body);
        let mut record = Vec::with_capacity(4 + body.len() + DIGEST_LEN);
        record.extend_from_slice(&length.to_le_bytes());
        record.extend_from_slice(&body);
        record.extend_from_slice(&next);
        self.file.write_all(&record)?;
        self.file.sync_data()?;
        self.link = next;
        self.len += record.len() as u64;
        Ok(record.len() as u64)
    }
}

/// What a journal adds to the state it follows.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Where the last record that checked left the content, and when it was written
    /// (Unix ms); `None` when no record did.
    pub last: Option<(Position, i64)>,
    /// The records' events, in order, each with its protobuf length delimiter.
    pub events: Vec<u8>,
    /// How many events.
    pub event_count: u64,
    /// How many records checked.
    pub records: usize,
    /// Why reading stopped before the end of the file, or why the journal was ignored.
    pub cut: Option<String>,
}

/// Replays `bytes`, a journal file, over the state sealed with `seal`, whose position is
/// `base`: every record up to the first one that does not check. Never an error: a
/// foreign or damaged journal adds nothing (or less), and `cut` says why.
pub fn replay(bytes: &[u8], seal: &Seal, base: &Position) -> Replayed {
    let mut replayed = Replayed::default();
    let header_len = usize::try_from(HEADER_LEN).expect("a small constant");
    if bytes.len() < header_len
        || &bytes[..8] != MAGIC
        || bytes[8..12] != VERSION.to_le_bytes()
        || &bytes[12..header_len] != seal
    {
        replayed.cut = Some("the journal does not follow this state; ignored".into());
        return replayed;
    }
    let mut previous = *seal;
    let mut at = *base;
    let mut rest = &bytes[header_len..];
    while !rest.is_empty() {
        match next_record(rest, &previous, &at) {
            Ok((body, next, position, written, consumed)) => {
                let events = &body[BODY_HEAD..];
                replayed.events.extend_from_slice(events);
                replayed.event_count += u64::from(u32::from_le_bytes(
                    body[32..BODY_HEAD].try_into().expect("4 bytes"),
                ));
                replayed.records += 1;
                replayed.last = Some((position, written));
                previous = next;
                at = position;
                rest = &rest[consumed..];
            }
            Err(why) => {
                replayed.cut = Some(format!(
                    "journal record {} {why}; read up to the one before",
                    replayed.records
                ));
                break;
            }
        }
    }
    replayed
}

/// Checks the record at the start of `rest`: returns its body, its link, its position,
/// when it was written and how many bytes it took.
fn next_record<'a>(
    rest: &'a [u8],
    previous: &Seal,
    at: &Position,
) -> Result<(&'a [u8], Seal, Position, i64, usize), String> {
    let (length, rest) = rest
        .split_first_chunk::<4>()
        .ok_or("is cut short in its length")?;
    let length = usize::try_from(u32::from_le_bytes(*length)).map_err(|e| e.to_string())?;
    let body = rest.get(..length).ok_or("is cut short in its body")?;
    let stored = rest
        .get(length..length + DIGEST_LEN)
        .ok_or("is cut short in its link")?;
    let next = link(previous, body);
    if stored != next {
        return Err("does not check (SHA-256 link differs)".into());
    }
    if body.len() < BODY_HEAD {
        return Err("is shorter than its header".into());
    }
    let field = |i: usize| -> [u8; 8] { body[i..i + 8].try_into().expect("8 bytes") };
    let position = Position {
        stream_created_unix_nanos: i64::from_le_bytes(field(0)),
        sequence: u64::from_le_bytes(field(8)),
        last_heard_unix_ms: i64::from_le_bytes(field(16)),
    };
    let written = i64::from_le_bytes(field(24));
    let count = u32::from_le_bytes(body[32..BODY_HEAD].try_into().expect("4 bytes"));
    if position.stream_created_unix_nanos != at.stream_created_unix_nanos
        || position.sequence < at.sequence
    {
        return Err(format!(
            "goes back (sequence {} after {}, or another stream)",
            position.sequence, at.sequence
        ));
    }
    let mut events = &body[BODY_HEAD..];
    let mut found = 0u32;
    while !events.is_empty() {
        let event = prost::decode_length_delimiter(&mut events)
            .ok()
            .and_then(|len| {
                let (event, tail) = events.split_at_checked(len)?;
                events = tail;
                Some(event)
            })
            .ok_or_else(|| format!("event {found}: framing broken"))?;
        EventRef::decode(event).map_err(|e| format!("event {found}: {e}"))?;
        found += 1;
    }
    if found != count {
        return Err(format!("holds {found} events, its header says {count}"));
    }
    Ok((body, next, position, written, 4 + length + DIGEST_LEN))
}
