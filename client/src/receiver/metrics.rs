//! The receiver's metrics, rendered in the Prometheus text format on `/metrics`:
//!
//! - `denylist_receiver_signals_total{provider, type, outcome}`: every signal received,
//!   by type (`backchannel-logout`, `session-revoked`, …, `verification`, `unknown`) and
//!   outcome (`published`, `duplicate`, `ignored`, `acknowledged`, or the reason it was
//!   refused: `bad_signature`, `replayed`, `publish_failed`, …).
//! - `denylist_receiver_publish_seconds`: time from a signal's arrival to the JetStream
//!   acknowledgement of its revocations (histogram).
//! - `denylist_receiver_polls_total{provider, outcome}`: RFC 8936 poll requests.
//! - `denylist_receiver_stream_requests_total{provider, operation, outcome}`: requests to the
//!   transmitter's stream management API (`metadata`, `list`, `create`, `update`, `delete`,
//!   `status`, `verify`; `ok`, `unauthorized`, `forbidden`, `http_error`, `unreachable`,
//!   `bad_response`, `credential_unreadable`).
//! - `denylist_receiver_stream_configured{provider}`, `…_stream_info{provider, stream_id}`,
//!   `…_stream_status{provider, status}` (1 for the current of `enabled`, `paused`,
//!   `disabled`, `unknown`), `…_stream_verified{provider}`,
//!   `…_stream_last_verified_timestamp_seconds{provider}`: the managed SSF stream.
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

/// What the managed stream of one provider looks like now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamGauges {
    /// Configured since start.
    pub configured: bool,
    /// The stream in use.
    pub stream_id: Option<String>,
    /// Its status, if known.
    pub status: Option<String>,
    /// A verification event of this deployment arrived here for it.
    pub verified: bool,
    /// When the last one arrived (Unix seconds).
    pub last_verified: Option<i64>,
}

#[derive(Debug, Default)]
struct Inner {
    signals: BTreeMap<(String, String, String), u64>,
    polls: BTreeMap<(String, String), u64>,
    stream_requests: BTreeMap<(String, String, String), u64>,
    streams: BTreeMap<String, StreamGauges>,
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

    /// Counts one request to a transmitter's stream management API.
    pub fn stream_request(&self, provider: &str, operation: &str, outcome: &str) {
        *self
            .inner
            .lock()
            .stream_requests
            .entry((
                provider.to_owned(),
                operation.to_owned(),
                outcome.to_owned(),
            ))
            .or_default() += 1;
    }

    /// Sets the managed stream gauges of `provider`.
    pub fn stream_gauges(&self, provider: &str, gauges: StreamGauges) {
        self.inner
            .lock()
            .streams
            .insert(provider.to_owned(), gauges);
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
        render_streams(&mut out, &inner);
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

fn render_streams(out: &mut String, inner: &Inner) {
    out.push_str("# HELP denylist_receiver_stream_requests_total Requests to SSF stream management APIs, by operation and outcome.\n");
    out.push_str("# TYPE denylist_receiver_stream_requests_total counter\n");
    for ((provider, operation, outcome), n) in &inner.stream_requests {
        let _ = writeln!(
            out,
            "denylist_receiver_stream_requests_total{{provider=\"{provider}\",operation=\"{operation}\",outcome=\"{outcome}\"}} {n}"
        );
    }
    if inner.streams.is_empty() {
        return;
    }
    let gauge = |out: &mut String, name: &str, help: &str| {
        let _ = writeln!(out, "# HELP denylist_receiver_{name} {help}");
        let _ = writeln!(out, "# TYPE denylist_receiver_{name} gauge");
    };
    gauge(
        out,
        "stream_configured",
        "1 once the managed SSF stream is configured at the transmitter.",
    );
    for (provider, g) in &inner.streams {
        let _ = writeln!(
            out,
            "denylist_receiver_stream_configured{{provider=\"{provider}\"}} {}",
            u8::from(g.configured)
        );
    }
    gauge(out, "stream_info", "The managed SSF stream in use.");
    for (provider, g) in &inner.streams {
        if let Some(id) = &g.stream_id {
            let _ = writeln!(
                out,
                "denylist_receiver_stream_info{{provider=\"{provider}\",stream_id=\"{}\"}} 1",
                escape(id)
            );
        }
    }
    gauge(
        out,
        "stream_status",
        "1 for the managed SSF stream's current status.",
    );
    for (provider, g) in &inner.streams {
        let current = g.status.as_deref().unwrap_or("unknown");
        let mut statuses = vec!["enabled", "paused", "disabled", "unknown"];
        if !statuses.contains(&current) {
            statuses.push(current);
        }
        for status in statuses {
            let _ = writeln!(
                out,
                "denylist_receiver_stream_status{{provider=\"{provider}\",status=\"{}\"}} {}",
                escape(status),
                u8::from(status == current)
            );
        }
    }
    gauge(
        out,
        "stream_verified",
        "1 once a verification event requested by this deployment arrived here for the stream in use.",
    );
    for (provider, g) in &inner.streams {
        let _ = writeln!(
            out,
            "denylist_receiver_stream_verified{{provider=\"{provider}\"}} {}",
            u8::from(g.verified)
        );
    }
    gauge(
        out,
        "stream_last_verified_timestamp_seconds",
        "When the last verification event arrived here (Unix seconds).",
    );
    for (provider, g) in &inner.streams {
        if let Some(t) = g.last_verified {
            let _ = writeln!(
                out,
                "denylist_receiver_stream_last_verified_timestamp_seconds{{provider=\"{provider}\"}} {t}"
            );
        }
    }
}

/// A label value as the exposition format wants it (values from a transmitter may hold
/// anything).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
