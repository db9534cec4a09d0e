//! Catching up: reading the stream from the last applied sequence with batched direct
//! gets (no consumer), the stream-info request that starts a follower or settles a bound
//! it cannot prove, the snapshot a follower starts from, and applying what is read.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use denylist_proto::envelope::TrustedKeys;
use denylist_proto::snapshot;

use super::direct::UpTo;
use super::{Bound, REBUILD_AFTER_CATCH_UP, StreamFollower, SyncError};
use crate::denylist::Denylist;

impl StreamFollower {
    /// Applies every stored event after the last applied one, up to `bound`.
    pub(super) async fn catch_up(
        &mut self,
        bound: Bound,
        trigger: &'static str,
    ) -> Result<(), SyncError> {
        metrics::counter!("denylist_catch_ups_total", "trigger" => trigger).increment(1);
        let started = std::time::Instant::now();
        let from = self.applied;
        let proven = match bound {
            Bound::AskStream => match self.ask_stream(trigger).await? {
                Some(last) => self.read_up_to(last, true).await?,
                None => true,
            },
            Bound::Seen { last, confirmed } => self.read_up_to(last, confirmed).await?,
        };
        if !proven {
            // The stream holds nothing up to a bound we were only told about: ask the
            // stream where it really ends before moving past sequences never seen.
            tracing::info!(
                applied = self.applied,
                ?bound,
                "nothing stored up to the hinted sequence; asking the stream"
            );
            if let Some(last) = self.ask_stream("unproven").await? {
                self.read_up_to(last, true).await?;
            }
            if let Bound::Seen { last, .. } = bound
                && last > self.applied
            {
                tracing::warn!(
                    applied = self.applied,
                    hinted = last,
                    "the stream ends below a sequence it was said to hold; that hint is ignored from now on"
                );
                self.refuted = Some((last, tokio::time::Instant::now()));
            }
        }
        self.freshness.mark_heard();
        if self.applied > from {
            tracing::info!(from, to = self.applied, trigger, elapsed = ?started.elapsed(), "caught up with the revocation stream");
        }
        if self.applied.saturating_sub(from) >= REBUILD_AFTER_CATCH_UP {
            // Fold the many small runs a long replay leaves into the compact base now,
            // rather than at the next prune tick: lookups and memory both benefit.
            let denylist = Arc::clone(&self.denylist);
            if let Err(e) = tokio::task::spawn_blocking(move || denylist.prune_and_rebuild()).await
            {
                tracing::error!(error = %e, "denylist rebuild after catch-up failed");
            }
        }
        Ok(())
    }

    /// Reads and applies the stored events from the last applied sequence + 1 up to
    /// `last`. Returns `false`, having moved no further than the last stored event read,
    /// when the stream leader said nothing more is stored up to a bound that is not
    /// `confirmed` (a hint is not proof that those sequences were ever assigned).
    async fn read_up_to(&mut self, last: u64, confirmed: bool) -> Result<bool, SyncError> {
        if last <= self.applied {
            return Ok(true);
        }
        let reader = self.reader.clone();
        let mut range = reader.range(self.applied + 1, UpTo::Sequence(last));
        while let Some(batch) = range.next_batch().await? {
            for message in &batch.messages {
                if message.sequence > self.applied {
                    let opened = self.trusted.open(&message.payload);
                    self.record(message.sequence, opened);
                }
            }
            if batch.settled && !confirmed {
                return Ok(false);
            }
            // Sequences stepped over are not stored (removed, aged out): nothing to apply.
            if batch.covered_through > self.applied {
                self.advance(batch.covered_through);
            }
            // Progress reading the stream is hearing from it: a long catch-up that moves
            // does not turn the sidecar stale; one that is stuck does.
            self.freshness.mark_heard();
        }
        let stats = range.stats();
        metrics::counter!("denylist_direct_get_requests_total").increment(stats.requests);
        Ok(true)
    }

    /// The stream, with its info as of now: `get_stream` is itself the STREAM.INFO
    /// request. Counted: in steady state a sidecar sends none.
    async fn stream_info(
        &self,
        reason: &'static str,
    ) -> Result<async_nats::jetstream::stream::Stream, SyncError> {
        metrics::counter!("denylist_stream_info_requests_total", "reason" => reason).increment(1);
        let stream = self.with_timeout(self.js.get_stream(&self.stream)).await?;
        // Beside `denylist_sequence`, the lag an operator alerts on.
        metrics::gauge!("denylist_stream_last_sequence")
            .set(stream.cached_info().state.last_sequence as f64);
        Ok(stream)
    }

    /// Whether `info` is of a stream other than the one followed so far: a new
    /// creation time, or a last sequence below the one applied. It was deleted and
    /// created again, and its sequences start over.
    fn recreated(&self, info: &async_nats::jetstream::stream::Info) -> bool {
        info.state.last_sequence < self.applied
            || self
                .stream_created
                .is_some_and(|c| c != info.created.unix_timestamp_nanos())
    }

    /// Asks the stream for its state (one stream-info request): notices a recreated
    /// stream, starts from the snapshot when nothing is applied yet, steps over events
    /// that aged out. Returns the sequence to read up to, or `None` when there is nothing
    /// to read.
    async fn ask_stream(&mut self, reason: &'static str) -> Result<Option<u64>, SyncError> {
        let stream = self.stream_info(reason).await?;
        let info = stream.cached_info();
        if self.pending_state.is_some() {
            let created = i64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(i64::MAX);
            self.resume_from_state(Some((created, info.state.last_sequence)))
                .await;
        }
        if self.recreated(info) {
            // Lost storage, or a second `stream init` after a delete: waiting for our
            // sequence would ignore every new event.
            // Follow it from its start; the rules already applied stay in force.
            tracing::error!(
                stream = %self.stream,
                applied = self.applied,
                last = info.state.last_sequence,
                "the revocation stream was recreated; following the new one from its start"
            );
            metrics::counter!("denylist_sync_stream_resets_total").increment(1);
            self.applied = 0;
            self.refuted = None;
            self.followed.applied.store(0, Ordering::Release);
        }
        let created = info.created.unix_timestamp_nanos();
        self.stream_created = Some(created);
        self.followed.created.store(
            i64::try_from(created).unwrap_or(i64::MAX),
            Ordering::Release,
        );
        self.report_position();
        if !self.warned_max_age
            && !info.config.max_age.is_zero()
            && info.config.max_age < self.longest_lifetime
        {
            tracing::warn!(
                max_age = ?info.config.max_age,
                longest_token_lifetime = ?self.longest_lifetime,
                "the stream's max_age is shorter than the longest token lifetime: revocations may expire from the stream while their tokens are still valid"
            );
            self.warned_max_age = true;
        }
        if !self.warned_direct && !info.config.allow_direct {
            tracing::error!(
                stream = %self.stream,
                "the stream does not allow direct gets, which catching up needs: run `denylistctl stream init` to turn them on"
            );
            self.warned_direct = true;
        }
        if self.applied == 0 && info.state.last_sequence > 0 {
            self.start_from_snapshot(info).await;
        }
        let last = info.state.last_sequence;
        if last <= self.applied {
            return Ok(None);
        }
        // Events older than the stream's first sequence have aged out (max_age); their
        // rules can no longer match a live token.
        let start = (self.applied + 1).max(info.state.first_sequence.max(1));
        if start > last {
            // Everything up to `last` has aged out: there is nothing left to read.
            self.advance(last);
            return Ok(None);
        }
        Ok(Some(last))
    }

    /// Loads the stream's snapshot, if there is a valid one, so that catching up
    /// replays only the events after it. Anything wrong with it is logged and
    /// counted, and the stream is replayed from the start instead; a transport error
    /// leaves the attempt to the next catch-up.
    async fn start_from_snapshot(&mut self, info: &async_nats::jetstream::stream::Info) {
        let Some(bucket) = self.snapshot_bucket.clone() else {
            return;
        };
        let started = std::time::Instant::now();
        let outcome = match self.fetch_snapshot(&bucket).await {
            Ok(None) => {
                tracing::info!(
                    bucket,
                    "no snapshot of the revocation stream; replaying it from the start"
                );
                "missing"
            }
            Ok(Some(object)) => {
                let fetched = started.elapsed();
                let created =
                    i64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(i64::MAX);
                let (stream, last) = (self.stream.clone(), info.state.last_sequence);
                let trusted = self.trusted.clone();
                let denylist = Arc::clone(&self.denylist);
                let object_len = object.len();
                // The local state keeps its own copy of the live events, encoded: the
                // denylist holds only fingerprints and cannot give them back.
                let keep_encoded = self.state.is_some();
                // Checking and decoding a million events is CPU work: off the runtime.
                let loaded = tokio::task::spawn_blocking(move || {
                    let stream = StreamIdentity {
                        name: &stream,
                        created_unix_nanos: created,
                        last_sequence: last,
                    };
                    load_snapshot(&object, &trusted, stream, &denylist, keep_encoded)
                })
                .await;
                match loaded {
                    Ok(Ok(LoadedSnapshot {
                        manifest,
                        key_id,
                        applied,
                        encoded,
                    })) => {
                        if let Some(state) = &self.state {
                            match encoded {
                                Some(events) => state.replaced(events),
                                None => state.lost(),
                            }
                        }
                        self.advance(manifest.covered_sequence);
                        tracing::info!(
                            bucket,
                            covered_sequence = manifest.covered_sequence,
                            events = manifest.event_count,
                            rules = applied.added,
                            key_id,
                            bytes = object_len,
                            fetch = ?fetched,
                            elapsed = ?started.elapsed(),
                            "started from the revocation stream's snapshot"
                        );
                        "loaded"
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(bucket, error = %e, "snapshot refused; replaying the stream from the start");
                        "refused"
                    }
                    Err(e) => {
                        tracing::error!(bucket, error = %e, "loading the snapshot failed; replaying the stream from the start");
                        "refused"
                    }
                }
            }
            Err(e) => {
                tracing::warn!(bucket, error = %e, "cannot read the snapshot; will try again");
                metrics::counter!("denylist_snapshot_loads_total", "outcome" => "error")
                    .increment(1);
                return;
            }
        };
        metrics::counter!("denylist_snapshot_loads_total", "outcome" => outcome).increment(1);
        self.snapshot_bucket = None;
    }

    /// The snapshot object's bytes; `None` when there is no bucket or no snapshot. Read
    /// with direct gets (`sync/object.rs`): no consumer, nothing kept on the server per
    /// sidecar, the object's size bound, chunk count and SHA-256 checked before use.
    async fn fetch_snapshot(&self, bucket: &str) -> Result<Option<Vec<u8>>, SyncError> {
        use super::direct::DirectGetError;
        use super::object::{ObjectReadError, ObjectReader};

        /// The largest snapshot object read: ~35 million dense events.
        const MAX_OBJECT_BYTES: u64 = 1 << 30;
        let reader = ObjectReader::new(&self.reader, bucket, MAX_OBJECT_BYTES);
        // A big snapshot takes longer than one request: allow a minute at least.
        let budget = (self.timeout * 12).max(Duration::from_secs(60));
        match tokio::time::timeout(budget, reader.read(snapshot::OBJECT_NAME)).await {
            Err(_) => Err(SyncError::Timeout(budget)),
            Ok(Ok(object)) => Ok(object),
            // Nobody answers direct gets on the bucket's stream: there is no bucket, the
            // normal case where nobody writes snapshots (the stream itself answered just
            // now, so this is not a transport failure).
            Ok(Err(ObjectReadError::Direct(DirectGetError::NoResponders { .. }))) => Ok(None),
            Ok(Err(e)) => Err(SyncError::JetStream(format!("reading the snapshot: {e}"))),
        }
    }

    /// Applies the event stored at `seq`, or counts it as rejected if it did not open,
    /// and moves past it either way: a stored event that does not open never will.
    pub(super) fn record(
        &mut self,
        seq: u64,
        opened: Result<denylist_proto::events::Event, denylist_proto::envelope::EnvelopeError>,
    ) {
        match opened {
            Ok(event) => {
                let applied = self.denylist.apply(&event);
                let lag_ms = self.clock.now_ms() - event.created_at_ms;
                // A negative lag is clock skew between publisher and sidecar.
                if lag_ms >= 0 && event.created_at_ms >= self.started_ms {
                    metrics::histogram!("denylist_publish_to_apply_seconds")
                        .record(lag_ms as f64 / 1000.0);
                }
                metrics::counter!("denylist_events_applied_total").increment(1);
                tracing::debug!(seq, event_id = %event.event_id, ?applied, "revocation event applied");
                if let Some(state) = &self.state {
                    // Moved, not copied: encoding it is the writer task's work.
                    state.applied(event);
                }
            }
            Err(e) => {
                metrics::counter!("denylist_events_rejected_total").increment(1);
                if matches!(
                    e,
                    denylist_proto::envelope::EnvelopeError::OutOfScope { .. }
                ) {
                    metrics::counter!("denylist_events_out_of_scope_total").increment(1);
                }
                tracing::warn!(seq, error = %e, "revocation event rejected: not applied");
            }
        }
        self.advance(seq);
    }

    /// Marks everything up to `seq` as applied.
    fn advance(&mut self, seq: u64) {
        self.applied = seq;
        self.followed.applied.store(seq, Ordering::Release);
        self.freshness.set_sequence(seq);
        self.report_position();
    }

    /// Tells the local state's writer where the follower stands.
    fn report_position(&self) {
        if let Some(state) = &self.state {
            let created = self
                .stream_created
                .map_or(0, |c| i64::try_from(c).unwrap_or(i64::MAX));
            state.position(self.applied, created);
        }
    }

    /// Applies the local state read at start, if it is of this stream: `stream` is its
    /// creation time and last sequence, or `None` when NATS did not answer — then the
    /// state is applied as it is (a stream recreated meanwhile is noticed once NATS
    /// answers, as by a running follower), and the sidecar turns ready from it if the
    /// staleness policy allows its age. A refused state is logged, counted, and not
    /// applied; the follower then starts as without one.
    pub(super) async fn resume_from_state(&mut self, stream: Option<(i64, u64)>) {
        let Some(state) = self.pending_state.take() else {
            return;
        };
        let Some(recorder) = self.state.clone() else {
            return;
        };
        if let Some((created, last)) = stream
            && let Err(e) = state.check_stream(created, last)
        {
            crate::state::refused(&e);
            return;
        }
        let started = std::time::Instant::now();
        let denylist = Arc::clone(&self.denylist);
        // Decoding and indexing a large state is CPU work: off the runtime.
        let applied = tokio::task::spawn_blocking(move || {
            let applied = state.apply_to(&denylist);
            (state, applied)
        })
        .await;
        let (state, applied) = match applied {
            Ok((state, Ok(applied))) => (state, applied),
            Ok((_, Err(e))) => {
                crate::state::refused(&e);
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "applying the local state failed");
                crate::state::count_load("error");
                return;
            }
        };
        crate::state::count_load("loaded");
        let position = state.position;
        let age_ms = self
            .clock
            .now_ms()
            .saturating_sub(position.last_heard_unix_ms)
            .max(0);
        tracing::info!(
            sequence = position.sequence,
            events = state.event_count,
            rules = applied.added,
            age_ms,
            confirmed_by_stream = stream.is_some(),
            elapsed = ?started.elapsed(),
            "resumed from the local state; no snapshot needed"
        );
        self.stream_created = Some(i128::from(position.stream_created_unix_nanos));
        self.followed
            .created
            .store(position.stream_created_unix_nanos, Ordering::Release);
        self.freshness.restore_heard(position.last_heard_unix_ms);
        recorder.restored(state);
        self.advance(position.sequence);
        if stream.is_none() {
            let within = u64::try_from(age_ms).unwrap_or(0)
                <= u64::try_from(self.max_staleness.as_millis()).unwrap_or(u64::MAX);
            if within || self.freshness.policy() == crate::config::StalenessPolicy::FailOpen {
                tracing::warn!(
                    age_ms,
                    policy = ?self.freshness.policy(),
                    "NATS does not answer: serving from the local state"
                );
                self.freshness.set_ready();
            } else {
                tracing::warn!(
                    age_ms,
                    max_staleness = ?self.max_staleness,
                    "NATS does not answer and the local state is older than max_staleness: not ready under fail_closed until the stream answers"
                );
            }
        }
    }
}

/// The stream a snapshot must have been taken from.
#[derive(Debug, Clone, Copy)]
pub struct StreamIdentity<'a> {
    /// Stream name.
    pub name: &'a str,
    /// Its creation time, Unix nanoseconds.
    pub created_unix_nanos: i64,
    /// Its last sequence now.
    pub last_sequence: u64,
}

/// What [`load_snapshot`] put in force.
#[derive(Debug)]
pub struct LoadedSnapshot {
    /// What the snapshot covers.
    pub manifest: snapshot::Manifest,
    /// The id of the key that signed it.
    pub key_id: String,
    /// The rules it added.
    pub applied: crate::denylist::Applied,
    /// With `keep_encoded`: each event's encoded `RevocationEvent`, in order (for the
    /// local state, since the denylist keeps only fingerprints).
    pub encoded: Option<Vec<Box<[u8]>>>,
}

/// Checks a snapshot object (signature by a trusted key, this stream instance, body
/// digest) and replaces the denylist's content with its events — all of them or, on
/// any error, none. With `keep_encoded`, also returns a copy of each event's bytes,
/// taken from the body already opened (not decoded or checked a second time).
///
/// The body is decoded without copying, on every core: one part of it per thread
/// (see [`Denylist::try_replace_all`] and `benches/snapshot_load.rs`).
pub fn load_snapshot(
    object: &[u8],
    trusted: &TrustedKeys,
    stream: StreamIdentity<'_>,
    denylist: &Denylist,
    keep_encoded: bool,
) -> Result<LoadedSnapshot, snapshot::SnapshotError> {
    /// Below this, one thread decodes faster than several start.
    const EVENTS_PER_THREAD: u64 = 50_000;
    let opened = snapshot::open(object, trusted)?;
    opened
        .manifest
        .check_stream(stream.name, stream.created_unix_nanos, stream.last_sequence)?;
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let wanted = opened.manifest.event_count.div_ceil(EVENTS_PER_THREAD);
    let parts = opened.split(
        threads
            .min(usize::try_from(wanted).unwrap_or(usize::MAX))
            .max(1),
    )?;
    let expected = usize::try_from(opened.manifest.event_count).unwrap_or(usize::MAX);
    let applied =
        denylist.try_replace_all(parts.iter().map(snapshot::Part::events).collect(), expected)?;
    let encoded = keep_encoded
        .then(|| {
            parts
                .iter()
                .flat_map(snapshot::Part::encoded)
                .map(Box::<[u8]>::from)
                .collect::<Vec<_>>()
        })
        // Every event was just decoded from this framing: a short walk cannot happen,
        // but a short copy must never stand for the denylist in force.
        .filter(|encoded| encoded.len() == expected);
    Ok(LoadedSnapshot {
        manifest: opened.manifest,
        key_id: opened.key_id,
        applied,
        encoded,
    })
}
