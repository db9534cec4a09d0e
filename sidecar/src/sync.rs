//! Fleet mode: following the revocation stream on NATS JetStream.
//!
//! A [`StreamFollower`] keeps the denylist equal to the stream, in order, without
//! gaps:
//!
//! 1. It subscribes to the live subject first (core NATS: the stream republishes
//!    every stored event there with its stream sequence in a header), so nothing
//!    published during catch-up is missed.
//! 2. It catches up from the last applied sequence + 1 with an ephemeral ordered
//!    JetStream consumer, up to the stream's last sequence; the readiness latch is
//!    released the first time that completes.
//! 3. It then applies live messages in sequence order. A sequence that skips ahead
//!    (a message lost while disconnected, a slow-consumer drop) triggers another
//!    catch-up from the last applied sequence; so does a heartbeat that finds the
//!    stream ahead of us. No revocation is ever skipped.
//!
//! Three changes of the stream itself are handled, not waited out: a live copy that
//! does not open (the sequence header is unsigned) is read again from the stream
//! instead of using up its sequence; a stream whose events have all aged out counts
//! as caught up at its last sequence; and a stream deleted and created again (a new
//! creation time, or a last sequence below ours) is followed from its start, with the
//! rules already applied left in force.
//!
//! Before the first catch-up, a follower that has applied nothing loads the stream's
//! signed snapshot when there is a valid one (see [`denylist_proto::snapshot`]), so
//! it replays only the events after the snapshot's sequence.
//!
//! The heartbeat (stream info every `heartbeat_interval`) is also what "heard from"
//! means for staleness: a sidecar that cannot reach the stream turns stale.
//! Events are applied only if signed by a trusted publisher; anything else is
//! logged with its sequence, counted, and skipped — never applied, never fatal.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use denylist_proto::envelope::TrustedKeys;
use denylist_proto::{snapshot, subjects};
use futures::StreamExt as _;
use tokio::sync::{broadcast, watch};

use crate::clock::SharedClock;
use crate::config::NatsConfig;
use crate::denylist::Denylist;
use crate::freshness::Freshness;

/// A catch-up that applied at least this many events rebuilds the denylist at once.
const REBUILD_AFTER_CATCH_UP: u64 = 10_000;

/// Why the follower could not make progress (all are retried).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Connecting or configuring the connection failed.
    #[error("NATS connection: {0}")]
    Connect(String),
    /// A JetStream request failed.
    #[error("JetStream: {0}")]
    JetStream(String),
    /// A JetStream request did not answer in time.
    #[error("JetStream did not answer within {0:?}")]
    Timeout(Duration),
}

/// Connects to NATS with the configured authentication and TLS. Connection is
/// retried in the background, so this returns even while NATS is down; the
/// follower then reports the failures and the sidecar stays not ready.
pub async fn connect(config: &NatsConfig, name: &str) -> Result<async_nats::Client, SyncError> {
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| SyncError::Connect(format!("{}: {e}", path.display())))
    };
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("denylist-sidecar/{name}"))
        .retry_on_initial_connect()
        .connection_timeout(config.request_timeout)
        .request_timeout(Some(config.request_timeout))
        .require_tls(config.tls_required)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("connected to NATS"),
                async_nats::Event::Disconnected => {
                    tracing::warn!("disconnected from NATS; reconnecting")
                }
                other => tracing::debug!(event = %other, "NATS event"),
            }
        });
    if let Some(path) = &config.creds_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| SyncError::Connect(format!("{}: {e}", path.display())))?;
    }
    if let Some(path) = &config.nkey_seed_file {
        options = options.nkey(read(path)?);
    }
    if let (Some(user), Some(path)) = (&config.user, &config.password_file) {
        options = options.user_and_password(user.clone(), read(path)?);
    }
    if let Some(path) = &config.token_file {
        options = options.token(read(path)?);
    }
    if let Some(path) = &config.tls_ca_file {
        options = options.add_root_certificates(path.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    options
        // Each entry is its own server: a joined string would be read as one URL.
        .connect(config.servers.as_slice())
        .await
        .map_err(|e| SyncError::Connect(e.to_string()))
}

/// Keeps the denylist in step with the stream. See the module docs.
#[derive(Debug)]
pub struct StreamFollower {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    stream: String,
    trusted: TrustedKeys,
    denylist: Arc<Denylist>,
    freshness: Arc<Freshness>,
    changes: broadcast::Sender<u64>,
    clock: SharedClock,
    heartbeat: Duration,
    timeout: Duration,
    longest_lifetime: Duration,
    applied: u64,
    /// The followed stream's creation time (Unix ns), once seen: a different one means
    /// the stream was deleted and created again, and its sequences start over.
    stream_created: Option<i128>,
    warned_max_age: bool,
    /// The snapshot bucket, until a start from a snapshot has been tried.
    snapshot_bucket: Option<String>,
    /// When this follower was made (Unix ms): events created before it are a backlog
    /// replayed at start, not propagation, and stay out of the publish → apply histogram.
    started_ms: i64,
}

impl StreamFollower {
    /// A follower over a connected client. `changes` receives the sequence of every
    /// applied event (Watch listens to it). `longest_lifetime` is the longest
    /// `max_lifetime` of any issuer: the stream must keep events at least that long.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: async_nats::Client,
        config: &NatsConfig,
        trusted: TrustedKeys,
        denylist: Arc<Denylist>,
        freshness: Arc<Freshness>,
        changes: broadcast::Sender<u64>,
        clock: SharedClock,
        longest_lifetime: Duration,
    ) -> Self {
        crate::telemetry::register_sync_metrics();
        Self {
            started_ms: clock.now_ms(),
            js: async_nats::jetstream::new(client.clone()),
            client,
            stream: config.stream.clone(),
            trusted,
            denylist,
            freshness,
            changes,
            clock,
            heartbeat: config.heartbeat_interval,
            timeout: config.request_timeout,
            longest_lifetime,
            applied: 0,
            stream_created: None,
            warned_max_age: false,
            snapshot_bucket: config.snapshots.then(|| config.snapshot_bucket()),
        }
    }

    /// Follows the stream until `shutdown` turns true.
    pub async fn run(mut self, shutdown: watch::Receiver<bool>) {
        let mut live: Option<async_nats::Subscriber> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            if *shutdown.borrow() {
                return;
            }
            if live.is_none() {
                match self.client.subscribe(subjects::LIVE_WILDCARD).await {
                    Ok(s) => live = Some(s),
                    Err(e) => tracing::warn!(error = %e, "cannot subscribe to live revocations"),
                }
            }
            match self.catch_up().await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    self.freshness.set_ready();
                }
                Err(e) => {
                    metrics::counter!("denylist_sync_errors_total").increment(1);
                    tracing::warn!(error = %e, applied = self.applied, retry_in = ?backoff, "cannot catch up with the revocation stream");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = crate::app::stopped(shutdown.clone()) => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            let Some(sub) = live.as_mut() else { continue };
            let mut ticker = tokio::time::interval(self.heartbeat);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            // Follow live traffic until a gap, a lost subscription or shutdown.
            loop {
                tokio::select! {
                    () = crate::app::stopped(shutdown.clone()) => return,
                    message = sub.next() => {
                        let Some(message) = message else {
                            live = None;
                            break;
                        };
                        match live_sequence(&message) {
                            Some(seq) if seq <= self.applied => {}
                            Some(seq) if seq == self.applied + 1 => {
                                match self.trusted.open(&message.payload) {
                                    Ok(event) => {
                                        self.record(seq, Ok(event));
                                        self.freshness.mark_heard();
                                    }
                                    // The sequence header is not signed: a live copy that
                                    // does not open (a headers-only republish, a stray
                                    // publish) must not use up the sequence. The stored
                                    // event is the authority: read it from the stream.
                                    Err(e) => {
                                        tracing::info!(seq, error = %e, "live revocation did not open; reading it from the stream");
                                        break;
                                    }
                                }
                            }
                            Some(seq) => {
                                tracing::info!(applied = self.applied, seen = seq, "gap in live revocations; catching up");
                                metrics::counter!("denylist_sync_gaps_total").increment(1);
                                break;
                            }
                            None => tracing::warn!(subject = %message.subject, "live message without a stream sequence; ignored"),
                        }
                    }
                    _ = ticker.tick() => {
                        match self.stream().await.map(|s| self.replaced_or_ahead(s.cached_info())) {
                            Ok(true) => {
                                tracing::info!(applied = self.applied, "stream is ahead or was recreated; catching up");
                                break;
                            }
                            Ok(false) => self.freshness.mark_heard(),
                            Err(e) => tracing::warn!(error = %e, "revocation stream heartbeat failed"),
                        }
                    }
                }
            }
        }
    }

    async fn with_timeout<T, E: std::fmt::Display>(
        &self,
        f: impl Future<Output = Result<T, E>>,
    ) -> Result<T, SyncError> {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| SyncError::Timeout(self.timeout))?
            .map_err(|e| SyncError::JetStream(e.to_string()))
    }

    /// The stream, with its info as of now: `get_stream` is itself the STREAM.INFO
    /// request, so one round trip serves both the heartbeat and a catch-up.
    async fn stream(&self) -> Result<async_nats::jetstream::stream::Stream, SyncError> {
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

    /// Whether `info` shows events not applied yet, or a recreated stream.
    fn replaced_or_ahead(&self, info: &async_nats::jetstream::stream::Info) -> bool {
        info.state.last_sequence > self.applied || self.recreated(info)
    }

    /// Applies every stored event after the last applied one, up to the stream's
    /// last sequence as of the start of the call.
    async fn catch_up(&mut self) -> Result<(), SyncError> {
        let stream = self.stream().await?;
        let info = stream.cached_info();
        self.freshness.mark_heard();
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
        }
        self.stream_created = Some(info.created.unix_timestamp_nanos());
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
        if self.applied == 0 && info.state.last_sequence > 0 {
            self.start_from_snapshot(info).await;
        }
        let last = info.state.last_sequence;
        if last <= self.applied {
            return Ok(());
        }
        // Events older than the stream's first sequence have aged out (max_age); their
        // rules can no longer match a live token.
        let start = (self.applied + 1).max(info.state.first_sequence.max(1));
        if start > last {
            // Everything up to `last` has aged out: there is nothing left to read.
            self.advance(last);
            return Ok(());
        }
        let consumer = self
            .with_timeout(stream.create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                ..OrderedConfig::default()
            }))
            .await?;
        let mut messages = self.with_timeout(consumer.messages()).await?;
        let started = std::time::Instant::now();
        let from = self.applied;
        while self.applied < last {
            let message = tokio::time::timeout(self.timeout, messages.next())
                .await
                .map_err(|_| SyncError::Timeout(self.timeout))?
                .ok_or_else(|| SyncError::JetStream("catch-up consumer ended".into()))?
                .map_err(|e| SyncError::JetStream(e.to_string()))?;
            let seq = message
                .info()
                .map_err(|e| SyncError::JetStream(e.to_string()))?
                .stream_sequence;
            if seq <= self.applied {
                continue;
            }
            self.record(seq, self.trusted.open(&message.payload));
            if seq % 10_000 == 0 {
                self.freshness.mark_heard();
            }
        }
        self.freshness.mark_heard();
        tracing::info!(from, to = self.applied, elapsed = ?started.elapsed(), "caught up with the revocation stream");
        if self.applied - from >= REBUILD_AFTER_CATCH_UP {
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
                // Checking and decoding a million events is CPU work: off the runtime.
                let loaded = tokio::task::spawn_blocking(move || {
                    let stream = StreamIdentity {
                        name: &stream,
                        created_unix_nanos: created,
                        last_sequence: last,
                    };
                    load_snapshot(&object, &trusted, stream, &denylist)
                })
                .await;
                match loaded {
                    Ok(Ok((manifest, key_id, applied))) => {
                        self.applied = manifest.covered_sequence;
                        self.freshness.set_sequence(self.applied);
                        let _ = self.changes.send(self.applied);
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

    /// The snapshot object's bytes; `None` when there is no bucket or no snapshot.
    async fn fetch_snapshot(&self, bucket: &str) -> Result<Option<Vec<u8>>, SyncError> {
        use async_nats::jetstream::object_store::GetErrorKind;
        use tokio::io::AsyncReadExt as _;

        // A missing bucket is the normal case where nobody writes snapshots; the
        // stream itself answered just now, so this is not a transport failure.
        let Ok(store) = self.with_timeout(self.js.get_object_store(bucket)).await else {
            return Ok(None);
        };
        let mut object =
            match tokio::time::timeout(self.timeout, store.get(snapshot::OBJECT_NAME)).await {
                Err(_) => return Err(SyncError::Timeout(self.timeout)),
                Ok(Err(e)) if e.kind() == GetErrorKind::NotFound => return Ok(None),
                Ok(Err(e)) => return Err(SyncError::JetStream(e.to_string())),
                Ok(Ok(object)) => object,
            };
        // Sized up front (bounded: the size is the store's word, not yet checked), so a
        // 130 MiB snapshot is not copied over and over as the buffer grows.
        let mut bytes = Vec::with_capacity(object.info().size.min(1 << 30));
        // A big snapshot takes longer than one request: allow a minute at least.
        let budget = (self.timeout * 12).max(Duration::from_secs(60));
        tokio::time::timeout(budget, object.read_to_end(&mut bytes))
            .await
            .map_err(|_| SyncError::Timeout(budget))?
            .map_err(|e| SyncError::JetStream(format!("reading the snapshot: {e}")))?;
        Ok(Some(bytes))
    }

    /// Applies one stored message. A rejected event is skipped (its sequence still
    /// counts as processed): it was never valid, so nothing is lost.
    /// Applies the event stored at `seq`, or counts it as rejected if it did not open,
    /// and moves past it either way: a stored event that does not open never will.
    fn record(
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
            }
            Err(e) => {
                metrics::counter!("denylist_events_rejected_total").increment(1);
                tracing::warn!(seq, error = %e, "revocation event rejected: not applied");
            }
        }
        self.advance(seq);
    }

    /// Marks everything up to `seq` as applied.
    fn advance(&mut self, seq: u64) {
        self.applied = seq;
        self.freshness.set_sequence(seq);
        // No receivers is fine: nobody is watching.
        let _ = self.changes.send(seq);
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

/// Checks a snapshot object (signature by a trusted key, this stream instance, body
/// digest) and replaces the denylist's content with its events — all of them or, on
/// any error, none. Returns the manifest and the signing key id.
///
/// The body is decoded without copying, on every core: one part of it per thread
/// (see [`Denylist::try_replace_all`] and `benches/snapshot_load.rs`).
pub fn load_snapshot(
    object: &[u8],
    trusted: &TrustedKeys,
    stream: StreamIdentity<'_>,
    denylist: &Denylist,
) -> Result<(snapshot::Manifest, String, crate::denylist::Applied), snapshot::SnapshotError> {
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
    let parts: Vec<_> = parts.iter().map(snapshot::Part::events).collect();
    let applied = denylist.try_replace_all(parts, expected)?;
    Ok((opened.manifest, opened.key_id, applied))
}

/// The stream sequence a republished message carries.
fn live_sequence(message: &async_nats::Message) -> Option<u64> {
    message
        .headers
        .as_ref()?
        .get(subjects::HEADER_SEQUENCE)?
        .as_str()
        .parse()
        .ok()
}
