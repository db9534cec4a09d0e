//! Hearing the stream without asking it: the fleet heartbeat, and the fallback poll.
//!
//! [`StreamWatch`] runs beside the follower, in its own task, so that nothing the follower
//! does (a long catch-up, a slow JetStream) delays it. It subscribes to the fleet heartbeat
//! (`nats.heartbeat_subject`): `denylistctl heartbeat` reads the stream's state with one
//! stream-info request per interval for the whole fleet and publishes it signed with a
//! trusted publisher key. A heartbeat is believed only after its signature verifies
//! (domain-separated from event signatures), it names this stream, and its time is within
//! `max_staleness` of the sidecar's clock (an old one replayed is refused); anything else
//! is counted in `denylist_heartbeats_rejected_total{reason}` and ignored.
//!
//! A trusted heartbeat:
//! - counts as hearing the stream when the follower has applied everything it shows
//!   (same stream instance, last sequence reached), so a quiet stream stays fresh;
//! - reveals a gap when its last sequence is above the applied one, and a recreated stream
//!   when its creation time changed: the follower is told and catches up (jittered).
//!
//! Several heartbeat replicas may publish at once: any trusted heartbeat counts, and the
//! highest sequence of the current stream instance is kept.
//!
//! When no trusted heartbeat has come for `heartbeat_fallback_after` (the component is not
//! deployed, or down), the task asks the stream itself every `heartbeat_interval`
//! (jittered), logs that it does, and sets `denylist_heartbeat_fallback` to 1 until
//! heartbeats return. When neither works, nothing marks the stream heard and the sidecar
//! turns stale within `max_staleness`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use denylist_proto::envelope::{EnvelopeError, TrustedKeys};
use futures::StreamExt as _;
use tokio::sync::watch;
use tokio::time::Instant;

use super::backoff::jittered_interval;
use super::{Followed, Observed};
use crate::clock::SharedClock;
use crate::freshness::Freshness;

/// Reasons of `denylist_heartbeats_rejected_total`.
const REJECT_REASONS: &[&str] = &[
    "malformed",
    "untrusted",
    "signature",
    "other_stream",
    "clock",
];

/// Describes and registers, with zero values, the heartbeat metrics; idempotent.
pub(super) fn register_metrics() {
    metrics::describe_counter!(
        "denylist_heartbeats_total",
        "Trusted fleet heartbeats received (fleet mode)"
    );
    metrics::describe_counter!(
        "denylist_heartbeats_rejected_total",
        "Fleet heartbeats ignored, by reason (malformed, untrusted, signature, other_stream, clock)"
    );
    metrics::describe_gauge!(
        "denylist_heartbeat_fallback",
        "1 while no trusted heartbeat is heard and the sidecar asks the stream itself"
    );
    metrics::describe_counter!(
        "denylist_stream_info_requests_total",
        "Stream-info requests this sidecar sent, by reason (start, recreated, unproven, fallback, …)"
    );
    metrics::describe_counter!(
        "denylist_catch_ups_total",
        "Catch-ups with the stream (batched direct gets, no consumer), by trigger"
    );
    metrics::describe_counter!(
        "denylist_direct_get_requests_total",
        "Direct-get batch requests sent while catching up"
    );
    metrics::counter!("denylist_heartbeats_total").increment(0);
    for reason in REJECT_REASONS {
        metrics::counter!("denylist_heartbeats_rejected_total", "reason" => *reason).increment(0);
    }
    metrics::gauge!("denylist_heartbeat_fallback").set(0.0);
}

/// The heartbeat listener and fallback poll; see the module docs.
#[derive(Debug)]
pub(super) struct StreamWatch {
    pub(super) client: async_nats::Client,
    pub(super) js: async_nats::jetstream::Context,
    pub(super) stream: String,
    pub(super) subject: String,
    pub(super) trusted: TrustedKeys,
    pub(super) freshness: Arc<Freshness>,
    pub(super) followed: Arc<Followed>,
    pub(super) clock: SharedClock,
    pub(super) interval: Duration,
    pub(super) fallback_after: Duration,
    pub(super) timeout: Duration,
    /// How far a heartbeat's time may be from the sidecar's clock (`max_staleness`).
    pub(super) max_skew: Duration,
    pub(super) observed: watch::Sender<Option<Observed>>,
}

impl StreamWatch {
    /// Listens for heartbeats, and polls while none come, until `shutdown`.
    pub(super) async fn run(self, shutdown: watch::Receiver<bool>) {
        let mut heartbeats: Option<async_nats::Subscriber> = None;
        let mut last_trusted = Instant::now();
        let mut fallback = false;
        let mut next_poll = Instant::now();
        let mut rejected = 0u64;
        // Seen disconnected when a poll was due: the next due poll after the connection
        // is back waits for the heartbeat instead (see `after_reconnect`).
        let mut was_disconnected = false;
        // The connection count at the last due poll: an outage shorter than the wait for a
        // poll is never seen disconnected, only as a reconnect since.
        let mut connects = super::connects(&self.client);
        // The last due poll was put off for a reconnect: the next one is not, whatever
        // happened since, so a connection that keeps coming back cannot put polls off for
        // good (while no heartbeat comes, polls are how the stream is heard).
        let mut put_off = false;
        loop {
            if heartbeats.is_none() {
                match self.client.subscribe(self.subject.clone()).await {
                    Ok(s) => heartbeats = Some(s),
                    Err(e) => {
                        tracing::warn!(subject = %self.subject, error = %e, "cannot subscribe to the fleet heartbeat");
                    }
                }
            }
            let poll_at = if fallback {
                next_poll
            } else {
                last_trusted + self.fallback_after
            };
            let next_heartbeat = async {
                match heartbeats.as_mut() {
                    Some(s) => s.next().await,
                    // Not subscribed: try again at the next poll.
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = crate::app::stopped(shutdown.clone()) => return,
                message = next_heartbeat => {
                    let Some(message) = message else {
                        heartbeats = None;
                        continue;
                    };
                    match self.on_heartbeat(&message.payload) {
                        Ok(()) => {
                            last_trusted = Instant::now();
                            if fallback {
                                fallback = false;
                                metrics::gauge!("denylist_heartbeat_fallback").set(0.0);
                                tracing::info!(subject = %self.subject, "fleet heartbeat heard again; no longer asking the stream");
                            }
                        }
                        Err(reason) => {
                            rejected += 1;
                            metrics::counter!("denylist_heartbeats_rejected_total", "reason" => reason.0).increment(1);
                            // A flood of forged heartbeats must not flood the log too.
                            if rejected == 1 || rejected.is_multiple_of(100) {
                                tracing::warn!(subject = %self.subject, reason = reason.0, detail = %reason.1, rejected, "fleet heartbeat ignored");
                            } else {
                                tracing::debug!(reason = reason.0, detail = %reason.1, "fleet heartbeat ignored");
                            }
                        }
                    }
                }
                () = tokio::time::sleep_until(poll_at) => {
                    let connected = self.client.connection_state()
                        == async_nats::connection::State::Connected;
                    let now_connects = super::connects(&self.client);
                    let reconnected = now_connects != connects && !put_off;
                    connects = now_connects;
                    if !connected || (was_disconnected && !put_off) || reconnected {
                        was_disconnected = !connected;
                        put_off = connected;
                        let wait = if connected {
                            self.after_reconnect()
                        } else {
                            // A request now could only time out.
                            jittered_interval(self.interval)
                        };
                        if fallback {
                            next_poll = Instant::now() + wait;
                        } else {
                            // Due `wait` from now, as if a heartbeat had come just so.
                            let due = Instant::now() + wait;
                            last_trusted = due.checked_sub(self.fallback_after).unwrap_or(due);
                        }
                        continue;
                    }
                    put_off = false;
                    if !fallback {
                        fallback = true;
                        metrics::gauge!("denylist_heartbeat_fallback").set(1.0);
                        tracing::warn!(
                            subject = %self.subject,
                            after = ?self.fallback_after,
                            every = ?self.interval,
                            "no trusted fleet heartbeat (is `denylistctl heartbeat` running?); asking the stream itself"
                        );
                    }
                    self.poll().await;
                    next_poll = Instant::now() + jittered_interval(self.interval);
                }
            }
        }
    }

    /// How long to wait for a heartbeat once the connection is back before asking the
    /// stream: a random duration up to `fallback_after`. Every sidecar of a fleet
    /// reconnects within the same second after a NATS restart, and the heartbeat publisher
    /// with them; asking the stream at once would put one request per sidecar into the
    /// JetStream API queue (ahead of the heartbeat's own), just when one heartbeat a
    /// second later answers them all. Staleness is unaffected: it counts from when the
    /// stream was last heard.
    fn after_reconnect(&self) -> Duration {
        super::backoff::jitter(self.fallback_after)
    }

    /// Checks a heartbeat and passes on what it says; the error is the reason it was
    /// ignored (a metric label) and the detail to log.
    fn on_heartbeat(&self, payload: &[u8]) -> Result<(), (&'static str, String)> {
        let (heartbeat, key_id) = self.trusted.open_heartbeat(payload).map_err(|e| {
            let reason = match &e {
                EnvelopeError::UntrustedKey(_) | EnvelopeError::OutOfScope { .. } => "untrusted",
                EnvelopeError::BadSignature(_) => "signature",
                _ => "malformed",
            };
            (reason, e.to_string())
        })?;
        if heartbeat.stream != self.stream {
            return Err((
                "other_stream",
                format!("heartbeat of stream {:?}", heartbeat.stream),
            ));
        }
        let skew_ms = self
            .clock
            .now_ms()
            .saturating_sub(heartbeat.published_at_ms);
        if skew_ms.unsigned_abs() > u64::try_from(self.max_skew.as_millis()).unwrap_or(u64::MAX) {
            return Err((
                "clock",
                format!(
                    "heartbeat from {} is {skew_ms} ms from this sidecar's clock",
                    heartbeat.publisher
                ),
            ));
        }
        metrics::counter!("denylist_heartbeats_total").increment(1);
        tracing::trace!(publisher = %heartbeat.publisher, key_id, last = heartbeat.last_sequence, "fleet heartbeat");
        self.observe(
            heartbeat.last_sequence,
            heartbeat.stream_created_unix_nanos,
            false,
        );
        Ok(())
    }

    /// The fallback: one stream-info request.
    async fn poll(&self) {
        metrics::counter!("denylist_stream_info_requests_total", "reason" => "fallback")
            .increment(1);
        match tokio::time::timeout(self.timeout, self.js.get_stream(&self.stream)).await {
            Ok(Ok(stream)) => {
                let info = stream.cached_info();
                let created =
                    i64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(i64::MAX);
                self.observe(info.state.last_sequence, created, true);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "asking the revocation stream for its state failed")
            }
            Err(_) => {
                tracing::warn!(timeout = ?self.timeout, "the revocation stream did not say its state in time")
            }
        }
    }

    /// Records the stream's state: heard, if the follower has everything it shows; and
    /// passed to the follower, keeping the highest sequence of this stream instance.
    fn observe(&self, last_sequence: u64, created_unix_nanos: i64, polled: bool) {
        metrics::gauge!("denylist_stream_last_sequence").set(last_sequence as f64);
        let created = self.followed.created.load(Ordering::Acquire);
        if created != 0
            && created == created_unix_nanos
            && self.followed.applied.load(Ordering::Acquire) >= last_sequence
        {
            self.freshness.mark_heard();
        }
        let seen = Observed {
            last_sequence,
            created_unix_nanos,
            polled,
        };
        self.observed.send_modify(|current| {
            *current = Some(match *current {
                // An older heartbeat (another replica, a slower path) never lowers it.
                Some(known)
                    if known.created_unix_nanos == created_unix_nanos
                        && known.last_sequence > last_sequence =>
                {
                    known
                }
                _ => seen,
            });
        });
    }
}
