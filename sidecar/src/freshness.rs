//! How current the denylist is: the last applied sequence, when the source was last
//! heard from, the readiness latch, and the staleness policy.
//!
//! Readiness is a latch (as in linkerd2-proxy): it is released once the denylist has
//! caught up with its source and never taken back by a transient blip; staleness is
//! the separate, continuous signal that the policy acts on.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::SharedClock;
use crate::config::StalenessPolicy;

/// A point-in-time view of the denylist's freshness, carried in every answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreshnessView {
    /// Last applied sequence (stream sequence, or file generation).
    pub sequence: u64,
    /// Milliseconds since the source was last heard from (since start if never).
    pub age_ms: u64,
    /// `age_ms` exceeds `max_staleness`.
    pub stale: bool,
    /// The denylist has caught up with its source at least once.
    pub ready: bool,
}

/// Tracks freshness for one sidecar. Cheap to read on every call.
#[derive(Debug)]
pub struct Freshness {
    clock: SharedClock,
    started_ms: i64,
    sequence: AtomicU64,
    last_heard_ms: AtomicI64,
    ready: AtomicBool,
    ready_tx: watch::Sender<bool>,
    stale_reported: AtomicBool,
    max_staleness_ms: i64,
    policy: StalenessPolicy,
}

impl Freshness {
    /// A tracker that is not ready and has heard nothing yet.
    pub fn new(clock: SharedClock, max_staleness: Duration, policy: StalenessPolicy) -> Self {
        let started_ms = clock.now_ms();
        Self {
            clock,
            started_ms,
            sequence: AtomicU64::new(0),
            last_heard_ms: AtomicI64::new(0),
            ready: AtomicBool::new(false),
            ready_tx: watch::Sender::new(false),
            stale_reported: AtomicBool::new(false),
            max_staleness_ms: i64::try_from(max_staleness.as_millis()).unwrap_or(i64::MAX),
            policy,
        }
    }

    /// The configured policy.
    pub fn policy(&self) -> StalenessPolicy {
        self.policy
    }

    /// How long the source may go unheard before the denylist is stale.
    pub fn max_staleness(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.max_staleness_ms).unwrap_or(u64::MAX))
    }

    /// Records that the source was heard from just now (an event, a heartbeat, a poll).
    pub fn mark_heard(&self) {
        self.last_heard_ms
            .store(self.clock.now_ms(), Ordering::Release);
        if self.stale_reported.swap(false, Ordering::AcqRel) {
            tracing::info!("denylist is fresh again");
        }
    }

    /// When the source was last heard from (Unix ms), if it has been.
    pub fn last_heard_ms(&self) -> Option<i64> {
        Some(self.last_heard_ms.load(Ordering::Acquire)).filter(|&ms| ms != 0)
    }

    /// Carries over when the source was last heard from before a restart (the local
    /// state's record), so the age is the true one, not the time since this start.
    /// Never moves the time back (something heard since wins), nor past now (a clock
    /// that ran ahead before the restart must not make the state look fresher).
    pub fn restore_heard(&self, at_ms: i64) {
        let at_ms = at_ms.min(self.clock.now_ms());
        self.last_heard_ms.fetch_max(at_ms, Ordering::AcqRel);
    }

    /// Records the last applied sequence.
    pub fn set_sequence(&self, sequence: u64) {
        self.sequence.store(sequence, Ordering::Release);
        metrics::gauge!("denylist_sequence").set(sequence as f64);
    }

    /// Releases the readiness latch (idempotent).
    pub fn set_ready(&self) {
        if !self.ready.swap(true, Ordering::AcqRel) {
            self.ready_tx.send_replace(true);
            tracing::info!(
                sequence = self.sequence.load(Ordering::Acquire),
                "denylist caught up: ready"
            );
        }
    }

    /// Whether the readiness latch has been released.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// A receiver that sees `true` once ready.
    pub fn ready_watch(&self) -> watch::Receiver<bool> {
        self.ready_tx.subscribe()
    }

    /// The current view. Logs once when the denylist turns stale.
    pub fn view(&self) -> FreshnessView {
        self.view_at(self.clock.now_ms())
    }

    /// The view at `now_ms`, read from this tracker's clock by a caller that needs the
    /// time too (the Verify path, which reads the clock once per call).
    pub fn view_at(&self, now_ms: i64) -> FreshnessView {
        let heard = self.last_heard_ms.load(Ordering::Acquire);
        let since = if heard == 0 { self.started_ms } else { heard };
        let age_ms = now_ms.saturating_sub(since).max(0);
        let stale = age_ms > self.max_staleness_ms;
        if stale && !self.stale_reported.swap(true, Ordering::AcqRel) {
            tracing::warn!(age_ms, policy = ?self.policy, "denylist is stale: its source has not been heard from");
        }
        FreshnessView {
            sequence: self.sequence.load(Ordering::Acquire),
            age_ms: u64::try_from(age_ms).unwrap_or(0),
            stale,
            ready: self.is_ready(),
        }
    }

    /// Whether answers should be served as healthy: ready, and not stale under `fail_closed`.
    pub fn serving(&self) -> bool {
        let v = self.view();
        v.ready && !(v.stale && self.policy == StalenessPolicy::FailClosed)
    }
}
