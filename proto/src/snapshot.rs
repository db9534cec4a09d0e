//! Snapshots: the events a sidecar would hold after replaying the stream up to a
//! sequence, signed once, so that a starting sidecar loads one object instead of
//! replaying — and checking the Ed25519 signature of — every event.
//!
//! An object is a length-delimited [`pb::SignedSnapshot`] (the signed
//! [`pb::SnapshotManifest`]) followed by the body, in one of two [`Encoding`]s the
//! manifest names: [`Encoding::DenseZstd`] (written since issue 10: blocks of
//! column-wise events compressed with zstd, about a fifth of the size; see [`dense`])
//! or [`Encoding::LengthDelimited`] (the `RevocationEvent`s, each length-delimited, in
//! stream order; still read). The manifest binds the body by its length and SHA-256,
//! and the stream by its name and creation time, so a snapshot can neither be altered
//! nor loaded against a recreated stream whose sequences restarted.
//!
//! A snapshot is trusted exactly as an event is: signed by one of the sidecar's
//! trusted publisher keys. The signature covers [`SIGNING_PREFIX`] followed by the
//! manifest bytes; the prefix is not a valid protobuf start, so no snapshot
//! signature can pass as an event's and no event signature as a snapshot's.

use std::sync::OnceLock;

use aws_lc_rs::digest::{SHA256, digest};
use prost::Message as _;

use crate::envelope::{EnvelopeError, SigningKey, TrustedKeys};
use crate::events::{Event, EventError, EventRef};
use crate::pb;

/// The bytes a snapshot signature covers come after this prefix.
pub const SIGNING_PREFIX: &[u8] = b"denylist.v1.snapshot\n";

/// The object holding a stream's latest snapshot.
pub const OBJECT_NAME: &str = "latest";

/// Largest signed head accepted: a manifest is about a hundred bytes.
const MAX_HEAD_LEN: usize = 64 * 1024;

mod dense;

pub use dense::MAX_DECODED_LEN;

/// How a snapshot body is encoded; named by its signed manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The `RevocationEvent`s, each length-delimited, in stream order: what every
    /// snapshot before issue 10 holds.
    LengthDelimited,
    /// Blocks of events stored column by column and compressed with zstd; see
    /// docs/EVENTS.md. What [`seal`] writes.
    DenseZstd,
}

/// The object store bucket that holds a stream's snapshots unless configured otherwise.
pub fn default_bucket(stream: &str) -> String {
    format!("{stream}_SNAPSHOTS")
}

/// What a snapshot covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The stream it was taken from.
    pub stream: String,
    /// That stream's creation time, Unix nanoseconds.
    pub stream_created_unix_nanos: i64,
    /// Every event up to this stream sequence is reflected.
    pub covered_sequence: u64,
    /// When the snapshot was taken, Unix milliseconds.
    pub created_at_ms: i64,
    /// Number of events in the body.
    pub event_count: u64,
}

impl Manifest {
    /// Checks that the snapshot belongs to this stream instance (`name` and creation
    /// time) and does not claim events the stream does not have.
    pub fn check_stream(
        &self,
        name: &str,
        created_unix_nanos: i64,
        last_sequence: u64,
    ) -> Result<(), SnapshotError> {
        if self.stream != name {
            return Err(SnapshotError::Stream(format!(
                "taken from stream {:?}, not {name:?}",
                self.stream
            )));
        }
        if self.stream_created_unix_nanos != created_unix_nanos {
            return Err(SnapshotError::Stream(
                "taken from an earlier stream of the same name (the stream was recreated)"
                    .to_owned(),
            ));
        }
        if self.covered_sequence > last_sequence {
            return Err(SnapshotError::Stream(format!(
                "covers sequence {} but the stream ends at {last_sequence}",
                self.covered_sequence
            )));
        }
        Ok(())
    }
}

/// Why a snapshot was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes are not a snapshot object.
    #[error("not a snapshot: {0}")]
    Decode(String),
    /// The signature is missing, from an untrusted key, or wrong.
    #[error("snapshot signature: {0}")]
    Signature(#[from] EnvelopeError),
    /// The body does not match what the signed manifest says.
    #[error("snapshot body does not match its signed manifest: {0}")]
    Body(String),
    /// The snapshot is not of this stream, as it is now.
    #[error("snapshot does not match the stream: {0}")]
    Stream(String),
    /// An event in the body is invalid.
    #[error("snapshot event #{index}: {source}")]
    Event {
        /// Position in the body, from 0.
        index: u64,
        /// What is wrong with it.
        source: EventError,
    },
}

/// Encodes and signs a snapshot of `events` (in stream order), dense
/// ([`Encoding::DenseZstd`]). `manifest.event_count` is set from `events`.
pub fn seal(manifest: &Manifest, events: &[Event], key: &SigningKey) -> Vec<u8> {
    seal_with(manifest, events, key, Encoding::DenseZstd)
}

/// [`seal`] in the given encoding (the length-delimited one for tests, benchmarks and
/// a fleet whose sidecars predate the dense one).
pub fn seal_with(
    manifest: &Manifest,
    events: &[Event],
    key: &SigningKey,
    encoding: Encoding,
) -> Vec<u8> {
    let (body, encoding, decoded_len, events_len) = match encoding {
        Encoding::LengthDelimited => {
            let mut body = Vec::new();
            for event in events {
                event
                    .to_proto()
                    .encode_length_delimited(&mut body)
                    .expect("a Vec grows as needed");
            }
            (body, pb::SnapshotEncoding::LengthDelimited, 0, 0)
        }
        Encoding::DenseZstd => {
            let dense = dense::encode(events);
            (
                dense.body,
                pb::SnapshotEncoding::DenseZstd,
                dense.decoded_len,
                dense.events_len,
            )
        }
    };
    let manifest = pb::SnapshotManifest {
        stream: manifest.stream.clone(),
        stream_created_unix_nanos: manifest.stream_created_unix_nanos,
        covered_sequence: manifest.covered_sequence,
        created_at_ms: manifest.created_at_ms,
        event_count: events.len() as u64,
        body_len: body.len() as u64,
        body_sha256: digest(&SHA256, &body).as_ref().to_vec(),
        encoding: encoding as i32,
        decoded_len,
        events_len,
    }
    .encode_to_vec();
    let mut signed_bytes = SIGNING_PREFIX.to_vec();
    signed_bytes.extend_from_slice(&manifest);
    let head = pb::SignedSnapshot {
        signature: key.sign_bytes(&signed_bytes),
        key_id: key.key_id().to_owned(),
        manifest,
    };
    let mut object = head.encode_length_delimited_to_vec();
    object.extend_from_slice(&body);
    object
}

/// A snapshot whose signature, manifest and body digest have been checked.
#[derive(Debug)]
pub struct Opened<'a> {
    /// What it covers.
    pub manifest: Manifest,
    /// The publisher key that signed it.
    pub key_id: String,
    body: Body<'a>,
}

/// A checked body, by encoding.
#[derive(Debug)]
enum Body<'a> {
    LengthDelimited(&'a [u8]),
    Dense {
        blocks: Vec<dense::BlockRef<'a>>,
        /// Each block expanded to length-delimited events, once decoded.
        expanded: OnceLock<Result<Vec<Vec<u8>>, SnapshotError>>,
    },
}

/// Checks a snapshot object: the head's signature by a trusted key first, then the
/// manifest, then the body's length and SHA-256, and for a dense body its block
/// headers against the sizes the manifest declares. Nothing is decompressed or
/// decoded here; [`Opened::split`] and [`Opened::events`] do that.
pub fn open<'a>(object: &'a [u8], trusted: &TrustedKeys) -> Result<Opened<'a>, SnapshotError> {
    let mut rest = object;
    let head_len = prost::decode_length_delimiter(&mut rest)
        .map_err(|e| SnapshotError::Decode(format!("head length: {e}")))?;
    if head_len > MAX_HEAD_LEN || head_len > rest.len() {
        return Err(SnapshotError::Decode(format!(
            "head of {head_len} bytes does not fit (object is {} bytes)",
            object.len()
        )));
    }
    let (head, body) = rest.split_at(head_len);
    let head =
        pb::SignedSnapshot::decode(head).map_err(|e| SnapshotError::Decode(e.to_string()))?;
    let mut signed_bytes = SIGNING_PREFIX.to_vec();
    signed_bytes.extend_from_slice(&head.manifest);
    trusted.verify(&head.key_id, &signed_bytes, &head.signature)?;

    let manifest = pb::SnapshotManifest::decode(head.manifest.as_slice())
        .map_err(|e| SnapshotError::Decode(format!("manifest: {e}")))?;
    if manifest.body_len != body.len() as u64 {
        return Err(SnapshotError::Body(format!(
            "{} bytes, the manifest says {}",
            body.len(),
            manifest.body_len
        )));
    }
    if digest(&SHA256, body).as_ref() != manifest.body_sha256.as_slice() {
        return Err(SnapshotError::Body("SHA-256 differs".to_owned()));
    }
    let body = match pb::SnapshotEncoding::try_from(manifest.encoding) {
        Ok(pb::SnapshotEncoding::LengthDelimited) => Body::LengthDelimited(body),
        Ok(pb::SnapshotEncoding::DenseZstd) => Body::Dense {
            blocks: dense::blocks(
                body,
                manifest.event_count,
                manifest.decoded_len,
                manifest.events_len,
            )?,
            expanded: OnceLock::new(),
        },
        Err(_) => {
            return Err(SnapshotError::Decode(format!(
                "manifest: unknown body encoding {} (written by a newer denylistctl?)",
                manifest.encoding
            )));
        }
    };
    Ok(Opened {
        manifest: Manifest {
            stream: manifest.stream,
            stream_created_unix_nanos: manifest.stream_created_unix_nanos,
            covered_sequence: manifest.covered_sequence,
            created_at_ms: manifest.created_at_ms,
            event_count: manifest.event_count,
        },
        key_id: head.key_id,
        body,
    })
}

impl<'a> Opened<'a> {
    /// How the body is encoded.
    pub fn encoding(&self) -> Encoding {
        match self.body {
            Body::LengthDelimited(_) => Encoding::LengthDelimited,
            Body::Dense { .. } => Encoding::DenseZstd,
        }
    }

    /// The events, decoded and validated one at a time, in stream order. Ends with an
    /// error if the body holds a different number of events than the manifest says.
    /// A dense body is decompressed first, on this thread.
    pub fn events(&self) -> Events<'_> {
        let (chunks, failed) = match &self.body {
            Body::LengthDelimited(body) => (vec![*body], None),
            Body::Dense { .. } => match self.expanded(1) {
                Ok(blocks) => (blocks.iter().map(Vec::as_slice).collect(), None),
                Err(e) => (Vec::new(), Some(e)),
            },
        };
        Events {
            framed: Framed::new(chunks, 0),
            expected: self.manifest.event_count,
            failed,
            done: false,
        }
    }

    /// The body cut into at most `parts` runs of consecutive events of about equal
    /// size, in stream order, so that several threads can decode it. A dense body is
    /// decompressed and expanded here, on up to `parts` threads (once: the result is
    /// kept); a length-delimited one is only walked for its framing. No event is
    /// decoded, and the framing and event count are checked first.
    pub fn split(&self, parts: usize) -> Result<Vec<Part<'_>>, SnapshotError> {
        match &self.body {
            Body::LengthDelimited(body) => self.split_framed(body, parts),
            Body::Dense { blocks, .. } => {
                let count = blocks.iter().map(|b| b.events).sum();
                if count != self.manifest.event_count {
                    return Err(count_mismatch(count, self.manifest.event_count));
                }
                let expanded = self.expanded(parts)?;
                let total: usize = expanded.iter().map(Vec::len).sum();
                let target = total.div_ceil(parts.max(1)).max(1);
                let mut split: Vec<Part<'_>> = Vec::with_capacity(parts);
                let (mut first, mut size) = (0u64, 0usize);
                let mut current = Part {
                    first: 0,
                    chunks: Vec::new(),
                };
                for (block, bytes) in blocks.iter().zip(expanded) {
                    current.chunks.push(bytes);
                    first += block.events;
                    size += bytes.len();
                    if size >= target {
                        let next = Part {
                            first,
                            chunks: Vec::new(),
                        };
                        split.push(std::mem::replace(&mut current, next));
                        size = 0;
                    }
                }
                if !current.chunks.is_empty() {
                    split.push(current);
                }
                Ok(split)
            }
        }
    }

    /// A dense body's blocks, expanded (on up to `threads` threads the first time).
    fn expanded(&self, threads: usize) -> Result<&[Vec<u8>], SnapshotError> {
        let Body::Dense { blocks, expanded } = &self.body else {
            unreachable!("only a dense body is expanded");
        };
        expanded
            .get_or_init(|| dense::decode_all(blocks, threads))
            .as_ref()
            .map(Vec::as_slice)
            .map_err(Clone::clone)
    }

    fn split_framed(&self, body: &'a [u8], parts: usize) -> Result<Vec<Part<'a>>, SnapshotError> {
        let target = body.len().div_ceil(parts.max(1)).max(1);
        let mut split = Vec::with_capacity(parts);
        let (mut rest, mut start, mut first, mut index) = (body, 0usize, 0u64, 0u64);
        while !rest.is_empty() {
            let len = prost::decode_length_delimiter(&mut rest)
                .ok()
                .filter(|&len| len <= rest.len())
                .ok_or_else(|| SnapshotError::Event {
                    index,
                    source: EventError::Decode("event length out of bounds".to_owned()),
                })?;
            rest = &rest[len..];
            index += 1;
            let end = body.len() - rest.len();
            if end - start >= target || rest.is_empty() {
                split.push(Part {
                    first,
                    chunks: vec![&body[start..end]],
                });
                (start, first) = (end, index);
            }
        }
        if index != self.manifest.event_count {
            return Err(count_mismatch(index, self.manifest.event_count));
        }
        Ok(split)
    }
}

fn count_mismatch(found: u64, expected: u64) -> SnapshotError {
    SnapshotError::Body(format!("{found} events, the manifest says {expected}"))
}

/// Consecutive events of a snapshot body; see [`Opened::split`].
#[derive(Debug, Clone)]
pub struct Part<'a> {
    /// Index of the first event in the body.
    first: u64,
    /// Length-delimited events, one run after the other (a dense body's blocks).
    chunks: Vec<&'a [u8]>,
}

impl<'a> Part<'a> {
    /// The events, decoded and validated without copying, in stream order; reading
    /// stops at the first invalid one.
    pub fn events(&self) -> Framed<'a> {
        Framed::new(self.chunks.clone(), self.first)
    }

    /// The events' encoded `RevocationEvent` bytes (without their length prefixes), in
    /// stream order, for a caller that keeps a copy of what [`Part::events`] decoded;
    /// nothing is decoded. An event whose length does not fit ends the walk.
    pub fn encoded(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.chunks.iter().flat_map(|&chunk| {
            let mut rest = chunk;
            std::iter::from_fn(move || {
                let len = prost::decode_length_delimiter(&mut rest)
                    .ok()
                    .filter(|&len| len <= rest.len())?;
                let (message, tail) = rest.split_at(len);
                rest = tail;
                Some(message)
            })
        })
    }
}

/// Length-delimited events decoded as [`EventRef`]s; see [`Part::events`].
#[derive(Debug)]
pub struct Framed<'a> {
    chunks: std::vec::IntoIter<&'a [u8]>,
    rest: &'a [u8],
    index: u64,
}

impl<'a> Framed<'a> {
    fn new(chunks: Vec<&'a [u8]>, first: u64) -> Self {
        Self {
            chunks: chunks.into_iter(),
            rest: &[],
            index: first,
        }
    }

    fn decode(&mut self) -> Result<EventRef<'a>, EventError> {
        let len = prost::decode_length_delimiter(&mut self.rest)
            .map_err(|e| EventError::Decode(e.to_string()))?;
        if len > self.rest.len() {
            return Err(EventError::Decode(format!(
                "event of {len} bytes, {} left",
                self.rest.len()
            )));
        }
        let (message, rest) = self.rest.split_at(len);
        self.rest = rest;
        EventRef::decode(message)
    }
}

impl<'a> Iterator for Framed<'a> {
    type Item = Result<EventRef<'a>, SnapshotError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.rest.is_empty() {
            self.rest = self.chunks.next()?;
        }
        let index = self.index;
        self.index += 1;
        let decoded = self.decode();
        if decoded.is_err() {
            // The framing may be lost: stop rather than read garbage as events.
            self.rest = &[];
            self.chunks = Vec::new().into_iter();
        }
        Some(decoded.map_err(|source| SnapshotError::Event { index, source }))
    }
}

/// Iterator over a snapshot's events; see [`Opened::events`].
#[derive(Debug)]
pub struct Events<'a> {
    framed: Framed<'a>,
    expected: u64,
    /// Why a dense body could not be expanded: the only item.
    failed: Option<SnapshotError>,
    done: bool,
}

impl Iterator for Events<'_> {
    type Item = Result<Event, SnapshotError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Some(e) = self.failed.take() {
            self.done = true;
            return Some(Err(e));
        }
        match self.framed.next() {
            Some(Ok(event)) => Some(Ok(event.to_event())),
            Some(Err(e)) => {
                self.done = true;
                Some(Err(e))
            }
            None => {
                self.done = true;
                (self.framed.index != self.expected)
                    .then(|| Err(count_mismatch(self.framed.index, self.expected)))
            }
        }
    }
}

#[cfg(test)]
mod tests;
