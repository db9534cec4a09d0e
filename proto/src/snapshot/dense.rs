//! The dense snapshot body (`SNAPSHOT_ENCODING_DENSE_ZSTD`): events cut into blocks,
//! each block's fields stored column by column and compressed with zstd.
//!
//! Why columns: in stream order, the same field of consecutive events is alike (the
//! same few issuers, reasons and actors; creation times a few milliseconds apart),
//! while the ids are random. Kept apart, the alike columns shrink to almost nothing and
//! the ids are stored as the 16 bytes they are rather than 26–36 characters of text:
//! a random UUID `jti` and a ULID event id (what `denylistctl` makes) cost 26 bytes of
//! entropy per event, against ~130 bytes per event in the length-delimited body.
//!
//! A block, in the body: four varints — its event count, the size its frame
//! decompresses to (`raw_len`), the size of its events once expanded (`events_len`),
//! the frame's size — then the zstd frame. Both sizes are capped per block and summed
//! into the signed manifest, so a reader knows, before it decompresses anything, the
//! most it will ever allocate; zstd writes into a buffer of exactly `raw_len` and fails
//! rather than grow it (a decompression bomb is refused, not allocated).
//!
//! Decompressed, a block is ten columns, each a varint length then its bytes:
//!
//! | column | per event |
//! |---|---|
//! | `dict` | (once) a varint count, then each distinct issuer, reason and actor as varint length + UTF-8 |
//! | `head` | one byte: action << 4, has-expiry << 3, rule kind (0 for a lift) |
//! | `created` | `created_at_ms` minus the previous event's, zigzag varint |
//! | `refs` | `dict` indexes of reason, actor and (revocations) issuer, varints |
//! | `times` | revocations: cut-off (minus the creation second for subject and issuer rules), then expiry minus the creation second if there is one, zigzag varints |
//! | `counts` | number of targets, varint |
//! | `shapes` | one byte per id (the event id, then each target): 0 text, 1 lower-case UUID, 2 upper-case UUID, 3 ULID |
//! | `bin` | 16 bytes per UUID, the 10 random bytes of a ULID |
//! | `text` | varint length + UTF-8 per text id |
//! | `ulid_time` | a ULID's 48-bit time minus the event's `created_at_ms`, zigzag varint (usually 0) |
//!
//! Reading expands a block back into length-delimited `RevocationEvent`s, the
//! `SNAPSHOT_ENCODING_LENGTH_DELIMITED` body, which the borrowed decoder then validates
//! exactly as it validates that body: both encodings end in the same checks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use prost::encoding::{decode_varint, encode_varint, encoded_len_varint};

use super::SnapshotError;
use crate::events::{Action, Event};

/// Events per block: about 0.5 MiB decompressed, and enough blocks at 100 000 events
/// for every core to decode some.
const BLOCK_EVENTS: usize = 16_384;
/// A block is also cut once its expanded events reach this size (events with many
/// targets), so no block nears [`MAX_BLOCK_LEN`].
const BLOCK_EVENTS_LEN: usize = 8 << 20;
/// Most bytes a block may decompress to, and most its events may expand to. The largest
/// valid event (10 000 targets of 1 KiB) is about 10 MiB.
const MAX_BLOCK_LEN: u64 = 64 << 20;
/// The most a snapshot may declare it decompresses or expands to: about 28 million
/// single-`jti` events, far beyond the million the design is measured at.
pub const MAX_DECODED_LEN: u64 = 4 << 30;
/// zstd level: the ids (most of the bytes) do not compress at any level; 9 takes the
/// alike columns as low as 19 does, several times faster.
const LEVEL: i32 = 9;

const SHAPE_TEXT: u8 = 0;
const SHAPE_UUID_LOWER: u8 = 1;
const SHAPE_UUID_UPPER: u8 = 2;
const SHAPE_ULID: u8 = 3;

const ACTION_REVOKE: u8 = 1;
const ACTION_LIFT: u8 = 2;

/// A dense body, and the sizes its manifest declares.
pub(super) struct Encoded {
    pub(super) body: Vec<u8>,
    /// Σ of the blocks' `raw_len`.
    pub(super) decoded_len: u64,
    /// Σ of the blocks' `events_len`.
    pub(super) events_len: u64,
}

/// A block of a dense body, not decompressed yet.
#[derive(Debug, Clone, Copy)]
pub(super) struct BlockRef<'a> {
    pub(super) events: u64,
    raw_len: usize,
    events_len: usize,
    frame: &'a [u8],
}

/// Encodes `events` (in stream order) as a dense body.
pub(super) fn encode(events: &[Event]) -> Encoded {
    let mut encoded = Encoded {
        body: Vec::new(),
        decoded_len: 0,
        events_len: 0,
    };
    let mut compressor = zstd::bulk::Compressor::new(LEVEL).expect("a valid zstd level");
    let mut block = Columns::default();
    for event in events {
        let len = framed_len(&target_ids(event), event);
        if block.events > 0
            && (block.events as usize >= BLOCK_EVENTS || block.events_len + len > BLOCK_EVENTS_LEN)
        {
            block.finish(&mut compressor, &mut encoded);
            block = Columns::default();
        }
        block.push(event, len);
    }
    if block.events > 0 {
        block.finish(&mut compressor, &mut encoded);
    }
    encoded
}

/// Reads the block headers of a dense body and checks them against the manifest:
/// event count, decompressed and expanded sizes, every block within its caps.
pub(super) fn blocks(
    body: &[u8],
    event_count: u64,
    decoded_len: u64,
    events_len: u64,
) -> Result<Vec<BlockRef<'_>>, SnapshotError> {
    if decoded_len > MAX_DECODED_LEN || events_len > MAX_DECODED_LEN {
        return Err(body_error(format!(
            "declares {decoded_len} bytes decompressed and {events_len} expanded; at most {MAX_DECODED_LEN} are accepted"
        )));
    }
    let mut rest = body;
    let mut blocks = Vec::new();
    let (mut events, mut raw, mut expanded) = (0u64, 0u64, 0u64);
    while !rest.is_empty() {
        let mut header = || {
            decode_varint(&mut rest)
                .map_err(|_| body_error(format!("block {} header is cut short", blocks.len())))
        };
        let (count, raw_len, block_events_len, frame_len) =
            (header()?, header()?, header()?, header()?);
        if count == 0 || raw_len > MAX_BLOCK_LEN || block_events_len > MAX_BLOCK_LEN {
            return Err(body_error(format!(
                "block {} declares {count} events, {raw_len} bytes decompressed, {block_events_len} expanded (at most {MAX_BLOCK_LEN})",
                blocks.len()
            )));
        }
        let frame_len = usize::try_from(frame_len)
            .ok()
            .filter(|&len| len <= rest.len())
            .ok_or_else(|| body_error(format!("block {} frame is cut short", blocks.len())))?;
        let (frame, tail) = rest.split_at(frame_len);
        rest = tail;
        events = events.saturating_add(count);
        raw += raw_len;
        expanded += block_events_len;
        blocks.push(BlockRef {
            events: count,
            // Both below MAX_BLOCK_LEN, checked above.
            raw_len: raw_len as usize,
            events_len: block_events_len as usize,
            frame,
        });
    }
    if events != event_count {
        return Err(super::count_mismatch(events, event_count));
    }
    if raw != decoded_len || expanded != events_len {
        return Err(body_error(format!(
            "blocks hold {raw} bytes decompressed and {expanded} expanded; the manifest says {decoded_len} and {events_len}"
        )));
    }
    Ok(blocks)
}

/// Decompresses and expands every block, on up to `threads` threads. Each result is a
/// block's events as length-delimited `RevocationEvent`s; the first error in body
/// order is returned.
pub(super) fn decode_all(
    blocks: &[BlockRef<'_>],
    threads: usize,
) -> Result<Vec<Vec<u8>>, SnapshotError> {
    let threads = threads.clamp(1, blocks.len().max(1));
    let decode_run = |next: &AtomicUsize| {
        let mut decoded = Vec::new();
        // One decompression buffer per thread, reused block after block: fewer large
        // allocations, which glibc pays for by consolidating its free lists.
        let mut raw = Vec::new();
        let mut decompressor =
            zstd::bulk::Decompressor::new().map_err(|e| body_error(format!("zstd context: {e}")));
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            if index >= blocks.len() {
                break;
            }
            let result = match &mut decompressor {
                Ok(decompressor) => decode_block(index, &blocks[index], decompressor, &mut raw),
                Err(e) => Err(e.clone()),
            };
            let failed = result.is_err();
            decoded.push((index, result));
            if failed {
                // Later blocks cannot matter: the load fails at the first error.
                next.store(blocks.len(), Ordering::Relaxed);
            }
        }
        decoded
    };
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, Result<Vec<u8>, SnapshotError>)> = if threads == 1 {
        decode_run(&next)
    } else {
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| scope.spawn(|| decode_run(&next)))
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("decoding a block does not panic"))
                .collect()
        })
    };
    results.sort_unstable_by_key(|(index, _)| *index);
    let mut decoded = Vec::with_capacity(blocks.len());
    for (index, result) in results {
        if index != decoded.len() {
            // A block before this one was never decoded: another one failed first.
            break;
        }
        decoded.push(result?);
    }
    if decoded.len() != blocks.len() {
        return Err(body_error("a block was not decoded".to_owned()));
    }
    Ok(decoded)
}

fn body_error(message: String) -> SnapshotError {
    SnapshotError::Body(message)
}

/// One block: decompressed into `raw`, exactly `raw_len` bytes (zstd is handed a slice
/// of that size, never more), then expanded into exactly `events_len` bytes of
/// length-delimited events.
fn decode_block(
    index: usize,
    block: &BlockRef<'_>,
    decompressor: &mut zstd::bulk::Decompressor<'_>,
    raw: &mut Vec<u8>,
) -> Result<Vec<u8>, SnapshotError> {
    let bad = |what: &str| body_error(format!("block {index}: {what}"));
    raw.clear();
    raw.resize(block.raw_len, 0);
    let written = decompressor
        .decompress_to_buffer(block.frame, raw.as_mut_slice())
        .map_err(|e| bad(&format!("zstd: {e} (declared {} bytes)", block.raw_len)))?;
    if written != block.raw_len {
        return Err(bad(&format!(
            "decompresses to {written} bytes, not the declared {}",
            block.raw_len
        )));
    }
    expand(raw, block.events, block.events_len).map_err(|e| bad(&e))
}

/// The columns of one block being written.
#[derive(Default)]
struct Columns {
    dict: Vec<u8>,
    dict_index: HashMap<String, u64>,
    head: Vec<u8>,
    created: Vec<u8>,
    refs: Vec<u8>,
    times: Vec<u8>,
    counts: Vec<u8>,
    shapes: Vec<u8>,
    bin: Vec<u8>,
    text: Vec<u8>,
    ulid_time: Vec<u8>,
    previous_created: i64,
    events: u64,
    events_len: usize,
}

impl Columns {
    fn push(&mut self, event: &Event, framed_len: usize) {
        self.events += 1;
        self.events_len += framed_len;
        let created = event.created_at_ms;
        encode_varint(
            zigzag(created.wrapping_sub(self.previous_created)),
            &mut self.created,
        );
        self.previous_created = created;
        let reason = self.dict_ref(&event.reason);
        let actor = self.dict_ref(&event.actor);
        encode_varint(reason, &mut self.refs);
        encode_varint(actor, &mut self.refs);
        let created_secs = created.div_euclid(1000);
        let targets = match &event.action {
            Action::Revoke(r) => {
                let kind = r.kind.to_proto() as u8;
                let expires = u8::from(r.expires_at.is_some());
                self.head.push((ACTION_REVOKE << 4) | (expires << 3) | kind);
                let issuer = self.dict_ref(&r.issuer);
                encode_varint(issuer, &mut self.refs);
                let cutoff = if r.kind.has_cutoff() {
                    r.cutoff.wrapping_sub(created_secs)
                } else {
                    r.cutoff
                };
                encode_varint(zigzag(cutoff), &mut self.times);
                if let Some(at) = r.expires_at {
                    encode_varint(zigzag(at.wrapping_sub(created_secs)), &mut self.times);
                }
                &r.targets
            }
            Action::Lift { event_ids } => {
                self.head.push(ACTION_LIFT << 4);
                event_ids
            }
        };
        encode_varint(targets.len() as u64, &mut self.counts);
        self.push_id(&event.event_id, created);
        for target in targets {
            self.push_id(target, created);
        }
    }

    fn dict_ref(&mut self, s: &str) -> u64 {
        if let Some(&index) = self.dict_index.get(s) {
            return index;
        }
        let index = self.dict_index.len() as u64;
        encode_varint(s.len() as u64, &mut self.dict);
        self.dict.extend_from_slice(s.as_bytes());
        self.dict_index.insert(s.to_owned(), index);
        index
    }

    fn push_id(&mut self, id: &str, created_ms: i64) {
        match Id::parse(id) {
            Id::Uuid { bytes, upper } => {
                self.shapes.push(if upper {
                    SHAPE_UUID_UPPER
                } else {
                    SHAPE_UUID_LOWER
                });
                self.bin.extend_from_slice(&bytes);
            }
            Id::Ulid(value) => {
                self.shapes.push(SHAPE_ULID);
                self.bin.extend_from_slice(&value.to_be_bytes()[6..]);
                let time = (value >> 80) as i64;
                encode_varint(zigzag(time.wrapping_sub(created_ms)), &mut self.ulid_time);
            }
            Id::Text(text) => {
                self.shapes.push(SHAPE_TEXT);
                encode_varint(text.len() as u64, &mut self.text);
                self.text.extend_from_slice(text);
            }
        }
    }

    /// Compresses the block and appends it, with its header, to the body.
    fn finish(self, compressor: &mut zstd::bulk::Compressor<'_>, out: &mut Encoded) {
        let mut raw = Vec::new();
        let mut dict = Vec::with_capacity(self.dict.len() + 5);
        encode_varint(self.dict_index.len() as u64, &mut dict);
        dict.extend_from_slice(&self.dict);
        for column in [
            &dict,
            &self.head,
            &self.created,
            &self.refs,
            &self.times,
            &self.counts,
            &self.shapes,
            &self.bin,
            &self.text,
            &self.ulid_time,
        ] {
            encode_varint(column.len() as u64, &mut raw);
            raw.extend_from_slice(column);
        }
        let frame = compressor
            .compress(&raw)
            .expect("zstd compresses any input into a growing Vec");
        encode_varint(self.events, &mut out.body);
        encode_varint(raw.len() as u64, &mut out.body);
        encode_varint(self.events_len as u64, &mut out.body);
        encode_varint(frame.len() as u64, &mut out.body);
        out.body.extend_from_slice(&frame);
        out.decoded_len += raw.len() as u64;
        out.events_len += self.events_len as u64;
    }
}

/// An event id or target, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Id<'a> {
    /// Anything that is not one of the shapes below.
    Text(&'a [u8]),
    /// `8-4-4-4-12` hex digits, all letters of one case.
    Uuid { bytes: [u8; 16], upper: bool },
    /// 26 Crockford base32 characters, upper case.
    Ulid(u128),
}

const HYPHENS: [usize; 4] = [8, 13, 18, 23];
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

impl<'a> Id<'a> {
    fn parse(s: &'a str) -> Self {
        let b = s.as_bytes();
        Self::uuid(b)
            .or_else(|| Self::ulid(b))
            .unwrap_or(Self::Text(b))
    }

    fn uuid(b: &[u8]) -> Option<Self> {
        if b.len() != 36 || HYPHENS.iter().any(|&i| b[i] != b'-') {
            return None;
        }
        let (mut lower, mut upper) = (false, false);
        let mut nibbles = b.iter().enumerate().filter(|(i, _)| !HYPHENS.contains(i));
        let mut bytes = [0u8; 16];
        for byte in &mut bytes {
            let mut next = || {
                let (_, &c) = nibbles.next()?;
                lower |= c.is_ascii_lowercase();
                upper |= c.is_ascii_uppercase();
                (c as char)
                    .to_digit(16)
                    .filter(|_| c.is_ascii_hexdigit())
                    .map(|d| d as u8)
            };
            *byte = (next()? << 4) | next()?;
        }
        // Mixed case would not be rendered back as it was.
        (!(lower && upper)).then_some(Self::Uuid { bytes, upper })
    }

    fn ulid(b: &[u8]) -> Option<Self> {
        // A first character above 7 would need more than 128 bits.
        if b.len() != 26 || b[0] > b'7' {
            return None;
        }
        let mut value = 0u128;
        for &c in b {
            let digit = CROCKFORD.iter().position(|&a| a == c)?;
            value = (value << 5) | digit as u128;
        }
        Some(Self::Ulid(value))
    }

    /// Length of the text form.
    fn len(&self) -> usize {
        match self {
            Self::Text(t) => t.len(),
            Self::Uuid { .. } => 36,
            Self::Ulid(_) => 26,
        }
    }

    /// Appends the text form.
    fn write(&self, out: &mut Vec<u8>) {
        match *self {
            Self::Text(t) => out.extend_from_slice(t),
            Self::Uuid { bytes, upper } => {
                let digits: &[u8; 16] = if upper {
                    b"0123456789ABCDEF"
                } else {
                    b"0123456789abcdef"
                };
                for (i, byte) in bytes.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        out.push(b'-');
                    }
                    out.push(digits[usize::from(byte >> 4)]);
                    out.push(digits[usize::from(byte & 0xf)]);
                }
            }
            Self::Ulid(value) => {
                out.extend(
                    (0..26)
                        .rev()
                        .map(|i| CROCKFORD[((value >> (5 * i)) & 0x1f) as usize]),
                );
            }
        }
    }
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

/// One event's fields as the expansion writes them (`RevocationEvent` field order).
struct Fields<'a, 'i> {
    event_id: Id<'a>,
    action: u8,
    kind: u8,
    issuer: &'a [u8],
    targets: &'i [Id<'a>],
    cutoff: i64,
    expires_at: i64,
    reason: &'a [u8],
    actor: &'a [u8],
    created_at_ms: i64,
}

/// Every field number here is below 16: a key is one byte.
const KEY_LEN: usize = 1;

fn bytes_field_len(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        KEY_LEN + encoded_len_varint(len as u64) + len
    }
}

fn int_field_len(value: i64) -> usize {
    if value == 0 {
        0
    } else {
        KEY_LEN + encoded_len_varint(value as u64)
    }
}

impl Fields<'_, '_> {
    /// The encoded message's length, as prost would encode it.
    fn message_len(&self) -> usize {
        // The event id is always written (a repeated target too, even when empty).
        let id = KEY_LEN + encoded_len_varint(self.event_id.len() as u64) + self.event_id.len();
        let targets: usize = self
            .targets
            .iter()
            .map(|t| KEY_LEN + encoded_len_varint(t.len() as u64) + t.len())
            .sum();
        id + int_field_len(i64::from(self.action))
            + int_field_len(i64::from(self.kind))
            + bytes_field_len(self.issuer.len())
            + targets
            + int_field_len(self.cutoff)
            + int_field_len(self.expires_at)
            + bytes_field_len(self.reason.len())
            + bytes_field_len(self.actor.len())
            + int_field_len(self.created_at_ms)
    }

    /// Appends the message, length-delimited.
    fn write(&self, out: &mut Vec<u8>, message_len: usize) {
        encode_varint(message_len as u64, out);
        out.push(0x0a);
        encode_varint(self.event_id.len() as u64, out);
        self.event_id.write(out);
        put_int(out, 0x10, i64::from(self.action));
        put_int(out, 0x18, i64::from(self.kind));
        put_bytes(out, 0x22, self.issuer);
        for target in self.targets {
            out.push(0x2a);
            encode_varint(target.len() as u64, out);
            target.write(out);
        }
        put_int(out, 0x30, self.cutoff);
        put_int(out, 0x38, self.expires_at);
        put_bytes(out, 0x42, self.reason);
        put_bytes(out, 0x4a, self.actor);
        put_int(out, 0x50, self.created_at_ms);
    }
}

fn put_int(out: &mut Vec<u8>, key: u8, value: i64) {
    if value != 0 {
        out.push(key);
        encode_varint(value as u64, out);
    }
}

fn put_bytes(out: &mut Vec<u8>, key: u8, value: &[u8]) {
    if !value.is_empty() {
        out.push(key);
        encode_varint(value.len() as u64, out);
        out.extend_from_slice(value);
    }
}

/// The targets of an event as stored, for the writer's size computation.
fn target_ids(event: &Event) -> Vec<Id<'_>> {
    let targets = match &event.action {
        Action::Revoke(r) => &r.targets,
        Action::Lift { event_ids } => event_ids,
    };
    targets.iter().map(|t| Id::parse(t)).collect()
}

/// The length-delimited size of `event` as the expansion writes it.
fn framed_len(targets: &[Id<'_>], event: &Event) -> usize {
    let (action, kind, issuer, cutoff, expires_at) = match &event.action {
        Action::Revoke(r) => (
            ACTION_REVOKE,
            r.kind.to_proto() as u8,
            r.issuer.as_bytes(),
            r.cutoff,
            r.expires_at.unwrap_or(0),
        ),
        Action::Lift { .. } => (ACTION_LIFT, 0, &[][..], 0, 0),
    };
    let fields = Fields {
        event_id: Id::parse(&event.event_id),
        action,
        kind,
        issuer,
        targets,
        cutoff,
        expires_at,
        reason: event.reason.as_bytes(),
        actor: event.actor.as_bytes(),
        created_at_ms: event.created_at_ms,
    };
    let len = fields.message_len();
    encoded_len_varint(len as u64) + len
}

/// A column being read.
struct Column<'a> {
    name: &'static str,
    rest: &'a [u8],
}

impl<'a> Column<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        decode_varint(&mut self.rest).map_err(|_| format!("column {} ends early", self.name))
    }

    fn byte(&mut self) -> Result<u8, String> {
        let (&b, rest) = self
            .rest
            .split_first()
            .ok_or_else(|| format!("column {} ends early", self.name))?;
        self.rest = rest;
        Ok(b)
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], String> {
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= self.rest.len())
            .ok_or_else(|| format!("column {} ends early", self.name))?;
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    /// The next column, from a block's sequence of length-prefixed columns.
    fn column(&mut self, name: &'static str) -> Result<Column<'a>, String> {
        let len = self.varint()?;
        Ok(Column {
            name,
            rest: self.take(len)?,
        })
    }

    fn index(&mut self, dict: &[&'a [u8]]) -> Result<&'a [u8], String> {
        let index = self.varint()?;
        usize::try_from(index)
            .ok()
            .and_then(|i| dict.get(i).copied())
            .ok_or_else(|| format!("column {}: index {index} past the dictionary", self.name))
    }
}

/// The ids of a block being read: `shapes`, `bin`, `text` and `ulid_time` together.
struct Ids<'a> {
    shapes: Column<'a>,
    bin: Column<'a>,
    text: Column<'a>,
    ulid_time: Column<'a>,
}

impl<'a> Ids<'a> {
    fn next(&mut self, created_ms: i64) -> Result<Id<'a>, String> {
        Ok(match self.shapes.byte()? {
            SHAPE_TEXT => {
                let len = self.text.varint()?;
                Id::Text(self.text.take(len)?)
            }
            shape @ (SHAPE_UUID_LOWER | SHAPE_UUID_UPPER) => {
                let mut bytes = [0u8; 16];
                bytes.copy_from_slice(self.bin.take(16)?);
                Id::Uuid {
                    bytes,
                    upper: shape == SHAPE_UUID_UPPER,
                }
            }
            SHAPE_ULID => {
                let time = created_ms.wrapping_add(unzigzag(self.ulid_time.varint()?));
                if !(0..1 << 48).contains(&time) {
                    return Err(format!("a ULID time of {time} ms"));
                }
                let mut bytes = [0u8; 16];
                bytes[6..].copy_from_slice(self.bin.take(10)?);
                Id::Ulid(((time as u128) << 80) | u128::from_be_bytes(bytes))
            }
            shape => return Err(format!("unknown id shape {shape}")),
        })
    }
}

/// Most targets an event may have: more could not pass validation, and bounds the
/// work a hostile count can cause before that.
const MAX_TARGETS: u64 = crate::events::MAX_TARGETS as u64;

/// Expands a decompressed block of `events` events into exactly `events_len` bytes of
/// length-delimited `RevocationEvent`s.
fn expand(raw: &[u8], events: u64, events_len: usize) -> Result<Vec<u8>, String> {
    let mut rest = Column {
        name: "lengths",
        rest: raw,
    };
    let mut column = |name| rest.column(name);
    let mut dict_column = column("dict")?;
    let (mut head, mut created, mut refs, mut times, mut counts) = (
        column("head")?,
        column("created")?,
        column("refs")?,
        column("times")?,
        column("counts")?,
    );
    let mut ids = Ids {
        shapes: column("shapes")?,
        bin: column("bin")?,
        text: column("text")?,
        ulid_time: column("ulid_time")?,
    };
    if !rest.rest.is_empty() {
        return Err("bytes after the last column".to_owned());
    }
    let dict_len = dict_column.varint()?;
    let mut dict = Vec::new();
    for _ in 0..dict_len {
        let len = dict_column.varint()?;
        dict.push(dict_column.take(len)?);
    }
    if !dict_column.rest.is_empty() {
        return Err("bytes after the dictionary".to_owned());
    }

    let mut out = Vec::with_capacity(events_len);
    let mut targets: Vec<Id<'_>> = Vec::new();
    let mut previous_created = 0i64;
    for _ in 0..events {
        let head_byte = head.byte()?;
        let (action, has_expiry, kind) = (head_byte >> 4, head_byte & 0x08 != 0, head_byte & 7);
        let created_at_ms = previous_created.wrapping_add(unzigzag(created.varint()?));
        previous_created = created_at_ms;
        let created_secs = created_at_ms.div_euclid(1000);
        let reason = refs.index(&dict)?;
        let actor = refs.index(&dict)?;
        let (issuer, cutoff, expires_at) = match (action, kind) {
            (ACTION_REVOKE, 1..=5) => {
                let issuer = refs.index(&dict)?;
                let cutoff = unzigzag(times.varint()?);
                // Subject (2) and issuer (5) rules: relative to the creation second.
                let cutoff = if matches!(kind, 2 | 5) {
                    cutoff.wrapping_add(created_secs)
                } else {
                    cutoff
                };
                let expires_at = if has_expiry {
                    created_secs.wrapping_add(unzigzag(times.varint()?))
                } else {
                    0
                };
                (issuer, cutoff, expires_at)
            }
            (ACTION_LIFT, 0) if !has_expiry => (&[][..], 0, 0),
            _ => return Err(format!("unknown event head {head_byte:#04x}")),
        };
        let count = counts.varint()?;
        if count > MAX_TARGETS {
            return Err(format!("an event with {count} targets"));
        }
        let event_id = ids.next(created_at_ms)?;
        targets.clear();
        for _ in 0..count {
            targets.push(ids.next(created_at_ms)?);
        }
        let fields = Fields {
            event_id,
            action,
            kind,
            issuer,
            targets: &targets,
            cutoff,
            expires_at,
            reason,
            actor,
            created_at_ms,
        };
        let message_len = fields.message_len();
        if out.len() + encoded_len_varint(message_len as u64) + message_len > events_len {
            return Err(format!(
                "events expand past the declared {events_len} bytes"
            ));
        }
        fields.write(&mut out, message_len);
    }
    if out.len() != events_len {
        return Err(format!(
            "events expand to {} bytes, not the declared {events_len}",
            out.len()
        ));
    }
    for column in [
        &head,
        &created,
        &refs,
        &times,
        &counts,
        &ids.shapes,
        &ids.bin,
    ]
    .into_iter()
    .chain([&ids.text, &ids.ulid_time])
    {
        if !column.rest.is_empty() {
            return Err(format!(
                "column {} has bytes past the last event",
                column.name
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
