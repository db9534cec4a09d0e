//! Snapshots of the revocation stream, for fast sidecar starts: [`create`] (what
//! `denylistctl snapshot create` runs) and [`describe`] (`snapshot info`).
//!
//! A snapshot holds, in stream order, the events a sidecar would still hold after
//! replaying the stream up to the covered sequence, signed once by a publisher key
//! (format and checks: [`denylist_proto::snapshot`]). A starting sidecar loads it and
//! then replays only the events after the covered sequence, so its time to ready
//! depends on the events since the last snapshot, not on the size of the denylist.
//!
//! The object is dense (zstd-compressed columns, about a fifth of the length-delimited
//! encoding); its bucket's stream allows direct gets, which is how sidecars read it.
//!
//! Building one reads the events after the previous snapshot (or the whole stream)
//! and checks every event's signature against the trusted publisher keys before it
//! goes in: the snapshot's single signature vouches for all of them, so nothing
//! unchecked may ever be folded in.

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream::{self, object_store};
use denylist_proto::envelope::{SigningKey, TrustedKeys};
use denylist_proto::events::{Action, EXPIRY_GRACE_SECS, Event};
use denylist_proto::snapshot;
pub use denylist_proto::snapshot::{Manifest, OBJECT_NAME, SnapshotError, default_bucket};
use tokio::io::AsyncReadExt as _;

use crate::replay::{self, ReplayError, Start};
use crate::stream::{self, StreamError};

/// Why a snapshot could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotStoreError {
    /// The stream is missing or JetStream failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// Reading the stream failed.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The object store failed.
    #[error("snapshot bucket {bucket}: {message}")]
    Store {
        /// Bucket name.
        bucket: String,
        /// What failed.
        message: String,
    },
    /// There is no snapshot yet.
    #[error("no snapshot in bucket {0}: run `denylistctl snapshot create`")]
    Missing(String),
    /// The stored snapshot does not pass the checks a sidecar makes.
    #[error(transparent)]
    Invalid(#[from] SnapshotError),
}

fn store_error(bucket: &str, e: impl std::fmt::Display) -> SnapshotStoreError {
    SnapshotStoreError::Store {
        bucket: bucket.to_owned(),
        message: e.to_string(),
    }
}

/// What [`create`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The new snapshot's manifest.
    pub manifest: Manifest,
    /// Size of the stored object, bytes.
    pub bytes: usize,
    /// The covered sequence of the snapshot it started from, if it used one.
    pub previous: Option<u64>,
    /// Why the previous snapshot was not used, when there was one.
    pub previous_refused: Option<String>,
    /// Events read from the stream (after the previous snapshot).
    pub read: usize,
    /// Stream messages refused (bad or untrusted signature): never included.
    pub rejected: usize,
    /// Events dropped as expired, aged out of the stream, or without effect.
    pub dropped: usize,
}

/// The creation time that, with its name, identifies a stream instance.
pub fn stream_created_nanos(info: &jetstream::stream::Info) -> i64 {
    i64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

/// Object store chunk size: half of NATS's default 1 MiB `max_payload`. Starting
/// sidecars read the object chunk by chunk, and fewer, larger chunks read faster than
/// the 128 KiB default.
const CHUNK_SIZE: usize = 512 * 1024;

/// What [`create`] snapshots, and how.
#[derive(Debug, Clone, Copy)]
pub struct CreateOptions<'a> {
    /// The stream.
    pub stream: &'a str,
    /// The object store bucket to store the snapshot in (created if missing).
    pub bucket: &'a str,
    /// Read the whole stream even when a stored snapshot could be the start.
    pub full: bool,
    /// How long to wait for each stream message.
    pub idle: Duration,
    /// Now, Unix milliseconds (what expiry is judged against).
    pub now_ms: i64,
}

/// Builds a snapshot of the stream and stores it as the bucket's latest. Starts from
/// the stored snapshot when it is valid for this stream (unless `full`), so a
/// periodic run only reads the events since the last one.
pub async fn create(
    js: &jetstream::Context,
    options: CreateOptions<'_>,
    key: &SigningKey,
    trusted: &TrustedKeys,
) -> Result<Created, SnapshotStoreError> {
    let CreateOptions {
        stream: stream_name,
        bucket,
        full,
        idle,
        now_ms,
    } = options;
    let stream = stream::get(js, stream_name).await?;
    let info = stream.cached_info();
    let created_nanos = stream_created_nanos(info);
    let max_age = info.config.max_age;
    let store = open_or_create_bucket(js, bucket, info.config.num_replicas).await?;

    // The stored snapshot to start from, unless `--full` or it cannot be used.
    let previous = if full {
        Ok(None)
    } else {
        match fetch(&store, bucket).await {
            Ok(Some(object)) => usable(&object, trusted, stream_name, info)
                .map(|(manifest, events)| Some((manifest.covered_sequence, events)))
                .map_err(|e| e.to_string()),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    };
    let (previous_refused, (previous, carried_events)) = match previous {
        Ok(Some((covered, events))) => (None, (Some(covered), events)),
        Ok(None) => (None, (None, Vec::new())),
        Err(why) => (Some(why), (None, Vec::new())),
    };
    let start = previous.map_or(Start::All, Start::After);
    let replay = replay::read(js, stream_name, start, Some(trusted), idle).await?;
    let read = replay.events.len();
    let covered = replay.last_sequence.max(previous.unwrap_or(0));
    let total = carried_events.len() + read;
    let events = compose(
        carried_events,
        replay.events.into_iter().map(|s| s.event),
        now_ms,
        max_age,
    );
    let manifest = Manifest {
        stream: stream_name.to_owned(),
        stream_created_unix_nanos: created_nanos,
        covered_sequence: covered,
        created_at_ms: now_ms,
        event_count: events.len() as u64,
    };
    let object = snapshot::seal(&manifest, &events, key);
    let meta = object_store::ObjectMetadata {
        name: OBJECT_NAME.to_owned(),
        description: Some(format!(
            "denylist snapshot of stream {stream_name} up to sequence {covered}"
        )),
        chunk_size: Some(CHUNK_SIZE),
        ..Default::default()
    };
    store
        .put(meta, &mut object.as_slice())
        .await
        .map_err(|e| store_error(bucket, e))?;
    Ok(Created {
        manifest,
        bytes: object.len(),
        previous,
        previous_refused,
        read,
        rejected: replay.rejected.len(),
        dropped: total - events.len(),
    })
}

/// A stored snapshot as a sidecar would judge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// Its manifest.
    pub manifest: Manifest,
    /// The key that signed it.
    pub key_id: String,
    /// Object size, bytes.
    pub bytes: usize,
    /// The stream's last sequence now: the events a starting sidecar replays after
    /// loading the snapshot are those after `manifest.covered_sequence`.
    pub stream_last_sequence: u64,
}

/// Reads and checks the stored snapshot exactly as a sidecar does.
pub async fn describe(
    js: &jetstream::Context,
    stream_name: &str,
    bucket: &str,
    trusted: &TrustedKeys,
) -> Result<Description, SnapshotStoreError> {
    let stream = stream::get(js, stream_name).await?;
    let info = stream.cached_info();
    let store = js.get_object_store(bucket).await.map_err(|e| {
        store_error(
            bucket,
            format!("{e} (has `denylistctl snapshot create` run?)"),
        )
    })?;
    let object = fetch(&store, bucket)
        .await?
        .ok_or_else(|| SnapshotStoreError::Missing(bucket.to_owned()))?;
    let opened = snapshot::open(&object, trusted)?;
    check_stream(&opened.manifest, stream_name, info).map_err(SnapshotStoreError::Invalid)?;
    Ok(Description {
        manifest: opened.manifest.clone(),
        key_id: opened.key_id.clone(),
        bytes: object.len(),
        stream_last_sequence: info.state.last_sequence,
    })
}

/// Checks that a snapshot belongs to this stream instance and does not claim events
/// the stream does not have: the checks a sidecar makes before loading one.
pub fn check_stream(
    manifest: &Manifest,
    stream_name: &str,
    info: &jetstream::stream::Info,
) -> Result<(), SnapshotError> {
    manifest.check_stream(
        stream_name,
        stream_created_nanos(info),
        info.state.last_sequence,
    )
}

fn usable(
    object: &[u8],
    trusted: &TrustedKeys,
    stream_name: &str,
    info: &jetstream::stream::Info,
) -> Result<(Manifest, Vec<Event>), SnapshotError> {
    let opened = snapshot::open(object, trusted)?;
    check_stream(&opened.manifest, stream_name, info)?;
    let events = opened.events().collect::<Result<Vec<_>, _>>()?;
    Ok((opened.manifest, events))
}

async fn open_or_create_bucket(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<object_store::ObjectStore, SnapshotStoreError> {
    if let Ok(store) = js.get_object_store(bucket).await {
        allow_direct_gets(js, bucket).await?;
        return Ok(store);
    }
    js.create_object_store(object_store::Config {
        bucket: bucket.to_owned(),
        description: Some("denylist snapshots: the live revocations at a stream sequence".into()),
        num_replicas: replicas.max(1),
        ..Default::default()
    })
    .await
    .map_err(|e| store_error(bucket, e))
}

/// Turns on direct gets on the bucket's stream if it was created without them (not by
/// async-nats, which sets them): sidecars read snapshots with direct gets only, and no
/// consumer.
async fn allow_direct_gets(
    js: &jetstream::Context,
    bucket: &str,
) -> Result<(), SnapshotStoreError> {
    let stream = js
        .get_stream(format!("OBJ_{bucket}"))
        .await
        .map_err(|e| store_error(bucket, e))?;
    let config = &stream.cached_info().config;
    if config.allow_direct {
        return Ok(());
    }
    let config = jetstream::stream::Config {
        allow_direct: true,
        ..config.clone()
    };
    js.update_stream(config)
        .await
        .map_err(|e| store_error(bucket, format!("turning on direct gets: {e}")))?;
    Ok(())
}

/// The latest snapshot object's bytes, or `None` when there is none.
async fn fetch(
    store: &object_store::ObjectStore,
    bucket: &str,
) -> Result<Option<Vec<u8>>, SnapshotStoreError> {
    let mut object = match store.get(OBJECT_NAME).await {
        Ok(object) => object,
        Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(store_error(bucket, e)),
    };
    let mut bytes = Vec::with_capacity(object.info().size.min(1 << 30));
    object
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| store_error(bucket, e))?;
    Ok(Some(bytes))
}

/// The events a sidecar would still hold after applying `carried` (a previous
/// snapshot) and then `new` (read from the stream), in that order:
///
/// - a repeated event id is dropped (sidecars ignore a re-publish);
/// - a revocation whose explicit expiry lies more than [`EXPIRY_GRACE_SECS`] in the
///   past is dropped (no sidecar keeps it); one without an explicit expiry is kept,
///   since only sidecars know the issuers' maximum token lifetimes that bound it;
/// - a lift is kept while one of the revocations it withdraws is kept (a sidecar
///   remembers it, and the lifted event's id, until then); a lifted revocation is
///   kept too, so that a re-publish of it is still recognised as withdrawn;
/// - a carried event created longer ago than the stream's `max_age` is dropped, as
///   the stream has dropped it for a sidecar that replays without a snapshot.
pub fn compose(
    carried: Vec<Event>,
    new: impl IntoIterator<Item = Event>,
    now_ms: i64,
    max_age: Duration,
) -> Vec<Event> {
    let now_secs = now_ms.div_euclid(1000);
    let aged_out_before_ms = if max_age.is_zero() {
        i64::MIN
    } else {
        now_ms.saturating_sub(i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX))
    };
    let carried = carried
        .into_iter()
        .filter(|e| e.created_at_ms >= aged_out_before_ms);
    let mut kept_ids: HashSet<String> = HashSet::new();
    let mut kept_revocations: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for event in carried.chain(new) {
        if kept_ids.contains(&event.event_id) {
            continue;
        }
        let keep = match &event.action {
            Action::Revoke(r) => r
                .expires_at
                .is_none_or(|at| now_secs < at.saturating_add(EXPIRY_GRACE_SECS)),
            Action::Lift { event_ids } => event_ids.iter().any(|id| kept_revocations.contains(id)),
        };
        if !keep {
            continue;
        }
        if matches!(event.action, Action::Revoke(_)) {
            kept_revocations.insert(event.event_id.clone());
        }
        kept_ids.insert(event.event_id.clone());
        out.push(event);
    }
    out
}

#[cfg(test)]
mod tests;
