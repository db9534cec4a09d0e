//! Fleet mode: following the revocation stream on NATS JetStream, with no per-sidecar
//! JetStream state and no per-sidecar polling in steady state.
//!
//! A [`StreamFollower`] keeps the denylist equal to the stream, in order, without
//! gaps:
//!
//! 1. It subscribes to the live subject first (core NATS: the stream republishes
//!    every stored event there with its stream sequence in a header), so nothing
//!    published during catch-up is missed.
//! 2. It catches up from the last applied sequence + 1 with batched direct gets
//!    ([`direct`]): no consumer, nothing kept on the server per sidecar, one request in
//!    flight at a time. At start the bound is the stream's last sequence from one
//!    stream-info request; the readiness latch is released the first time it is reached.
//! 3. It then applies live messages in sequence order. A sequence that skips ahead
//!    (a message lost while disconnected, a slow-consumer drop), a live copy that does
//!    not open, or a fleet heartbeat showing the stream ahead schedules a catch-up up to
//!    that sequence, after a random delay up to `catch_up_jitter` — ten thousand
//!    sidecars that see the same gap (a NATS restart) spread their reads out. Live
//!    messages that arrive in order meanwhile are still applied; a catch-up whose bound
//!    is reached by them is dropped. No revocation is ever skipped.
//!
//! Freshness comes from a separate task, [`heartbeat`]: the fleet heartbeat
//! (`denylistctl heartbeat`, signed like events) says the stream's last sequence and
//! creation time once a second for the whole fleet; while none is heard the task asks the
//! stream itself every `heartbeat_interval` (the fallback). It never waits for a
//! catch-up, so a long catch-up cannot turn a sidecar stale; a catch-up that makes
//! progress counts as hearing the stream, one that is stuck does not.
//!
//! A bound that is only a hint (an unsigned live header, a heartbeat) is never believed
//! past the stored messages: when the stream holds nothing up to it, one stream-info
//! request settles where the stream really ends before the follower moves past
//! sequences it never saw.
//!
//! Three changes of the stream itself are handled, not waited out: a live copy that
//! does not open (the sequence header is unsigned) is read again from the stream
//! instead of using up its sequence; a stream whose events have all aged out counts
//! as caught up at its last sequence; and a stream deleted and created again (a new
//! creation time, or a last sequence below ours) is followed from its start, with the
//! rules already applied left in force.
//!
//! At the first stream info, a follower given a local state (see [`crate::state`])
//! applies it if it is of this stream instance, and catches up from its sequence; when
//! NATS does not answer, it applies it as it is and, if the staleness policy allows the
//! state's age, turns ready from it. Else, a follower that has applied nothing loads
//! the stream's signed snapshot when there is a valid one (see
//! [`denylist_proto::snapshot`]), so it replays only the events after the snapshot's
//! sequence.
//!
//! Events are applied only if signed by a trusted publisher; anything else is
//! logged with its sequence, counted, and skipped — never applied, never fatal.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::Duration;

use denylist_proto::envelope::TrustedKeys;
use denylist_proto::subjects;
use futures::StreamExt as _;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::clock::SharedClock;
use crate::config::NatsConfig;
use crate::denylist::Denylist;
use crate::freshness::Freshness;

pub mod backoff;
mod catch_up;
pub mod direct;
mod heartbeat;
pub mod object;

pub use catch_up::{LoadedSnapshot, StreamIdentity, load_snapshot};

/// A catch-up that applied at least this many events rebuilds the denylist at once.
const REBUILD_AFTER_CATCH_UP: u64 = 10_000;

/// For how many heartbeat intervals a sequence the stream refuted is not acted on again.
const REFUTED_INTERVALS: u32 = 10;

/// The longest wait between two attempts of a failing catch-up.
const MAX_RETRY: Duration = Duration::from_secs(5);

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
    /// Reading the stream with direct gets failed (after its own retries).
    #[error(transparent)]
    Direct(#[from] direct::DirectGetError),
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
        .reconnect_delay_callback(reconnect_delay(config.reconnect_delay))
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

/// The wait before reconnect attempt `attempts` (1 for the first after the connection
/// was lost): jittered and doubling from 50 ms up to `max`. async-nats' own default waits
/// up to 4 s with no jitter, so a fleet that lost its server together would come back
/// together, seconds late.
fn reconnect_delay(max: Duration) -> impl Fn(usize) -> Duration + Send + Sync + 'static {
    let backoff = backoff::Backoff {
        initial: Duration::from_millis(50),
        max,
    };
    move |attempts| {
        let retry = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
        backoff.delay(retry)
    }
}

/// What the follower and its heartbeat task share: where the follower stands.
#[derive(Debug, Default)]
struct Followed {
    /// The last applied sequence.
    applied: AtomicU64,
    /// The followed stream's creation time (Unix ns), 0 until the first stream info.
    created: AtomicI64,
}

/// The stream's state as the heartbeat task last learnt it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Observed {
    /// The stream's last sequence (the highest heard for this stream instance).
    last_sequence: u64,
    /// The stream's creation time, Unix ns.
    created_unix_nanos: i64,
    /// From this sidecar's own stream-info request (the fallback poll), not a heartbeat.
    polled: bool,
}

/// Up to where a catch-up reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    /// Ask the stream for its state first (one stream-info request): at start, after a
    /// lost subscription, and when the stream was recreated.
    AskStream,
    /// Up to `last`. `confirmed` when it came from this sidecar's own stream info; else
    /// it is a hint (a live header, a heartbeat) that is checked before being believed.
    Seen {
        /// The sequence to read up to.
        last: u64,
        /// Whether the stream itself said so.
        confirmed: bool,
    },
}

impl Bound {
    /// The bound that covers both: asking the stream covers everything.
    fn merge(self, other: Self) -> Self {
        match (self, other) {
            (Self::AskStream, _) | (_, Self::AskStream) => Self::AskStream,
            (
                Self::Seen {
                    last: a,
                    confirmed: ca,
                },
                Self::Seen {
                    last: b,
                    confirmed: cb,
                },
            ) => match a.cmp(&b) {
                std::cmp::Ordering::Greater => self,
                std::cmp::Ordering::Less => other,
                std::cmp::Ordering::Equal => Self::Seen {
                    last: a,
                    confirmed: ca || cb,
                },
            },
        }
    }
}

/// A catch-up waiting for its (jittered) start.
#[derive(Debug, Clone, Copy)]
struct Pending {
    bound: Bound,
    at: Instant,
    /// What found it, for logs and `denylist_catch_ups_total{trigger}`.
    trigger: &'static str,
}

/// Keeps the denylist in step with the stream. See the module docs.
#[derive(Debug)]
pub struct StreamFollower {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    reader: direct::DirectReader,
    stream: String,
    trusted: TrustedKeys,
    denylist: Arc<Denylist>,
    freshness: Arc<Freshness>,
    clock: SharedClock,
    config: NatsConfig,
    max_staleness: Duration,
    timeout: Duration,
    longest_lifetime: Duration,
    applied: u64,
    followed: Arc<Followed>,
    /// The followed stream's creation time (Unix ns), once seen: a different one means
    /// the stream was deleted and created again, and its sequences start over.
    stream_created: Option<i128>,
    warned_max_age: bool,
    warned_direct: bool,
    /// The highest hinted sequence the stream itself refuted (it ends below), and when:
    /// for a while, heartbeats up to it are not acted on again, so a lying heartbeat costs
    /// one stream info, not one per heartbeat — and cannot silence later true ones for good.
    refuted: Option<(u64, Instant)>,
    /// The snapshot bucket, until a start from a snapshot has been tried.
    snapshot_bucket: Option<String>,
    /// When this follower was made (Unix ms): events created before it are a backlog
    /// replayed at start, not propagation, and stay out of the publish → apply histogram.
    started_ms: i64,
    /// The local state's writer, told everything applied (when `state.dir` is set).
    state: Option<crate::state::Recorder>,
    /// The local state read at start, until it is applied or refused.
    pending_state: Option<crate::state::Checked>,
}

impl StreamFollower {
    /// A follower over a connected client. `longest_lifetime` is the longest
    /// `max_lifetime` of any issuer: the stream must keep events at least that long.
    pub fn new(
        client: async_nats::Client,
        config: &NatsConfig,
        trusted: TrustedKeys,
        denylist: Arc<Denylist>,
        freshness: Arc<Freshness>,
        clock: SharedClock,
        longest_lifetime: Duration,
    ) -> Self {
        crate::telemetry::register_sync_metrics();
        heartbeat::register_metrics();
        let options = direct::DirectReadOptions {
            reply_timeout: config.request_timeout,
            ..direct::DirectReadOptions::default()
        };
        Self {
            started_ms: clock.now_ms(),
            js: async_nats::jetstream::new(client.clone()),
            reader: direct::DirectReader::with_options(
                client.clone(),
                config.stream.clone(),
                options,
            ),
            client,
            stream: config.stream.clone(),
            trusted,
            denylist,
            max_staleness: freshness.max_staleness(),
            freshness,
            clock,
            config: config.clone(),
            timeout: config.request_timeout,
            longest_lifetime,
            applied: 0,
            followed: Arc::new(Followed::default()),
            stream_created: None,
            warned_max_age: false,
            warned_direct: false,
            refuted: None,
            snapshot_bucket: config.snapshots.then(|| config.snapshot_bucket()),
            state: None,
            pending_state: None,
        }
    }

    /// Records what is applied in a local state, and starts from `pending`, the state
    /// read at start, if the stream confirms it (see the module docs).
    #[must_use]
    pub fn with_local_state(
        mut self,
        pending: Option<crate::state::Checked>,
        recorder: crate::state::Recorder,
    ) -> Self {
        self.pending_state = pending;
        self.state = Some(recorder);
        self
    }

    /// Follows the stream until `shutdown` turns true. The heartbeat task runs beside it
    /// and is awaited before this returns.
    pub async fn run(mut self, shutdown: watch::Receiver<bool>) {
        let (observed_tx, observed) = watch::channel(None);
        let watch = heartbeat::StreamWatch {
            client: self.client.clone(),
            js: self.js.clone(),
            stream: self.stream.clone(),
            subject: self.config.heartbeat_subject.clone(),
            trusted: self.trusted.clone(),
            freshness: Arc::clone(&self.freshness),
            followed: Arc::clone(&self.followed),
            clock: Arc::clone(&self.clock),
            interval: self.config.heartbeat_interval,
            fallback_after: self.config.heartbeat_fallback_after(),
            timeout: self.timeout,
            max_skew: self.max_staleness,
            observed: observed_tx,
        };
        let watcher = tokio::spawn(watch.run(shutdown.clone()));
        self.follow(observed, shutdown).await;
        if let Err(e) = watcher.await {
            tracing::error!(error = %e, "the heartbeat task failed");
        }
    }

    async fn follow(
        &mut self,
        mut observed: watch::Receiver<Option<Observed>>,
        shutdown: watch::Receiver<bool>,
    ) {
        let mut live: Option<async_nats::Subscriber> = None;
        let mut retry = 0u32;
        let retry_backoff = backoff::Backoff {
            initial: Duration::from_millis(100),
            max: MAX_RETRY,
        };
        let mut watching = true;
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
            let result = tokio::select! {
                r = self.catch_up(Bound::AskStream, "start") => r,
                () = crate::app::stopped(shutdown.clone()) => return,
            };
            if let Err(e) = result {
                metrics::counter!("denylist_sync_errors_total").increment(1);
                let wait = retry_backoff.delay(retry);
                retry = retry.saturating_add(1);
                tracing::warn!(error = %e, applied = self.applied, retry_in = ?wait, "cannot catch up with the revocation stream");
                if self.pending_state.is_some() {
                    // NATS does not answer: the local state is the best there is.
                    self.resume_from_state(None).await;
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = crate::app::stopped(shutdown.clone()) => return,
                }
                continue;
            }
            retry = 0;
            self.freshness.set_ready();
            let Some(sub) = live.as_mut() else { continue };
            let mut pending: Option<Pending> = None;
            // Follow live traffic and scheduled catch-ups until the subscription is lost.
            loop {
                let due = async {
                    match pending {
                        Some(p) => tokio::time::sleep_until(p.at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = crate::app::stopped(shutdown.clone()) => return,
                    message = sub.next() => {
                        let Some(message) = message else {
                            live = None;
                            break;
                        };
                        if let Some(found) = self.on_live(&message, pending.is_some()) {
                            pending = Some(self.schedule(pending, found.0, found.1));
                        }
                    }
                    changed = observed.changed(), if watching => {
                        if changed.is_err() {
                            // The heartbeat task ended (shutdown): nothing more to learn.
                            watching = false;
                            continue;
                        }
                        let seen = *observed.borrow_and_update();
                        if let Some(found) = seen.and_then(|o| self.on_observed(o)) {
                            pending = Some(self.schedule(pending, found.0, found.1));
                        }
                    }
                    () = due => {
                        let Some(p) = pending else { continue };
                        let result = tokio::select! {
                            r = self.catch_up(p.bound, p.trigger) => r,
                            () = crate::app::stopped(shutdown.clone()) => return,
                        };
                        match result {
                            Ok(()) => {
                                retry = 0;
                                pending = None;
                            }
                            Err(e) => {
                                metrics::counter!("denylist_sync_errors_total").increment(1);
                                let wait = retry_backoff.delay(retry);
                                retry = retry.saturating_add(1);
                                tracing::warn!(error = %e, applied = self.applied, retry_in = ?wait, "cannot catch up with the revocation stream");
                                pending = Some(Pending { at: Instant::now() + wait, ..p });
                            }
                        }
                    }
                }
                // Live messages may have closed the gap while the catch-up waited.
                if let Some(p) = pending
                    && let Bound::Seen { last, .. } = p.bound
                    && self.applied >= last
                {
                    pending = None;
                    self.freshness.mark_heard();
                }
            }
        }
    }

    /// Adds a catch-up to the one pending (if any): the wider bound, the earlier start.
    /// A new one starts after a random delay up to `catch_up_jitter`.
    fn schedule(&self, pending: Option<Pending>, bound: Bound, trigger: &'static str) -> Pending {
        match pending {
            Some(p) => Pending {
                bound: p.bound.merge(bound),
                ..p
            },
            None => {
                let wait = backoff::jitter(self.config.catch_up_jitter);
                tracing::debug!(applied = self.applied, ?bound, trigger, wait = ?wait, "catch-up scheduled");
                Pending {
                    bound,
                    at: Instant::now() + wait,
                    trigger,
                }
            }
        }
    }

    /// Applies a live message if it is the next one; returns the catch-up it calls for
    /// when it shows a gap or does not open. A gap is logged and counted once, not again
    /// for every later message while its catch-up is `pending`.
    fn on_live(
        &mut self,
        message: &async_nats::Message,
        pending: bool,
    ) -> Option<(Bound, &'static str)> {
        let Some(seq) = live_sequence(message) else {
            tracing::warn!(subject = %message.subject, "live message without a stream sequence; ignored");
            return None;
        };
        if seq <= self.applied {
            return None;
        }
        let hint = Bound::Seen {
            last: seq,
            confirmed: false,
        };
        if seq > self.applied + 1 {
            if !pending {
                tracing::info!(
                    applied = self.applied,
                    seen = seq,
                    "gap in live revocations; catching up"
                );
                metrics::counter!("denylist_sync_gaps_total").increment(1);
            }
            return Some((hint, "gap"));
        }
        match self.trusted.open(&message.payload) {
            Ok(event) => {
                self.record(seq, Ok(event));
                self.freshness.mark_heard();
                None
            }
            // The sequence header is not signed: a live copy that does not open (a
            // headers-only republish, a stray publish) must not use up the sequence. The
            // stored event is the authority: read it from the stream.
            Err(e) => {
                tracing::info!(seq, error = %e, "live revocation did not open; reading it from the stream");
                Some((hint, "unopened"))
            }
        }
    }

    /// What the heartbeat task learnt: a recreated stream, or a stream ahead of us.
    fn on_observed(&self, seen: Observed) -> Option<(Bound, &'static str)> {
        let created = self.stream_created?;
        if i128::from(seen.created_unix_nanos) != created {
            tracing::info!(
                applied = self.applied,
                "the stream's creation time changed; asking the stream"
            );
            return Some((Bound::AskStream, "recreated"));
        }
        let refute_for = self
            .config
            .heartbeat_interval
            .saturating_mul(REFUTED_INTERVALS);
        if !seen.polled
            && self
                .refuted
                .is_some_and(|(r, at)| seen.last_sequence <= r && at.elapsed() < refute_for)
        {
            return None;
        }
        (seen.last_sequence > self.applied).then_some((
            Bound::Seen {
                last: seen.last_sequence,
                confirmed: seen.polled,
            },
            if seen.polled { "poll" } else { "heartbeat" },
        ))
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
}

/// How many times `client` has connected: a change means the connection that was up before
/// is gone (with the replies still coming on it), and any outage since, however short.
fn connects(client: &async_nats::Client) -> u64 {
    client
        .statistics()
        .connects
        .load(std::sync::atomic::Ordering::Relaxed)
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

#[cfg(test)]
mod tests;
