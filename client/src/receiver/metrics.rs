//! The receiver's metrics, rendered in the Prometheus text format on `/metrics`:
//!
//! - `denylist_receiver_signals_total{provider, type, outcome}`: every signal received,
//!   by type (`backchannel-logout`, `session-revoked`, …, `verification`, `unknown`) and
//!   outcome (`published`, `duplicate`, `ignored`, `acknowledged`, or the reason it was
//!   refused: `bad_signature`, `replayed`, `publish_failed`, …).
//! - `denylist_receiver_publish_seconds`: time from a signal's arrival to the JetStream
//!   acknowledgement of its revocations (histogram).
//! - `denylist_receiver_polls_total{provider, outcome}`: RFC 8936 poll requests.
//!
//! Owned by the receiver and passed in; no global registry.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use parking_lot::Mutex;

/// Upper bounds of the publish latency buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// See the module docs.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    signals: BTreeMap<(String, String, String), u64>,
    polls: BTreeMap<(String, String), u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    /// Counts one signal.
    pub fn signal(&self, provider: &str, signal_type: &str, outcome: &str) {
        *self
            .inner
            .lock()
            .signals
            .entry((
                provider.to_owned(),
                signal_type.to_owned(),
                outcome.to_owned(),
            ))
            .or_default() += 1;
    }

    /// Counts one poll request.
    pub fn poll(&self, provider: &str, outcome: &str) {
        *self
            .inner
            .lock()
            .polls
            .entry((provider.to_owned(), outcome.to_owned()))
            .or_default() += 1;
    }

    /// Records one signal's publish latency.
    pub fn publish_latency(&self, latency: Duration) {
        let secs = latency.as_secs_f64();
        let mut inner = self.inner.lock();
        for (bucket, bound) in inner.buckets.iter_mut().zip(BUCKETS) {
            if secs <= bound {
                *bucket += 1;
            }
        }
        inner.count += 1;
        inner.sum += secs;
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let inner = self.inner.lock();
        let mut out = String::new();
        out.push_str(
            "# HELP denylist_receiver_signals_total Signals received, by type and outcome.\n",
        );
        out.push_str("# TYPE denylist_receiver_signals_total counter\n");
        for ((provider, t, outcome), n) in &inner.signals {
            let _ = writeln!(
                out,
                "denylist_receiver_signals_total{{provider=\"{provider}\",type=\"{t}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        out.push_str("# HELP denylist_receiver_polls_total SSF poll requests, by outcome.\n");
        out.push_str("# TYPE denylist_receiver_polls_total counter\n");
        for ((provider, outcome), n) in &inner.polls {
            let _ = writeln!(
                out,
                "denylist_receiver_polls_total{{provider=\"{provider}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        out.push_str("# HELP denylist_receiver_publish_seconds Signal received to revocations acknowledged by JetStream.\n");
        out.push_str("# TYPE denylist_receiver_publish_seconds histogram\n");
        for (bound, n) in BUCKETS.iter().zip(inner.buckets) {
            let _ = writeln!(
                out,
                "denylist_receiver_publish_seconds_bucket{{le=\"{bound}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "denylist_receiver_publish_seconds_bucket{{le=\"+Inf\"}} {}",
            inner.count
        );
        let _ = writeln!(out, "denylist_receiver_publish_seconds_sum {}", inner.sum);
        let _ = writeln!(
            out,
            "denylist_receiver_publish_seconds_count {}",
            inner.count
        );
        out
    }
}
