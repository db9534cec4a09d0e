//! Logs and metrics set-up. Called once by the binary; library code only uses the
//! `tracing` and `metrics` facades, so tests can run many sidecars in one process.

use denylist_proto::pb::Reason;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Set-up failed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error("log filter {filter:?}: {message}")]
    Filter {
        /// The filter text.
        filter: String,
        /// The parser's message.
        message: String,
    },
    /// A global subscriber or recorder was already installed.
    #[error("{0}")]
    Install(String),
}

/// Installs the global `tracing` subscriber: text or JSON lines on stderr.
pub fn init_tracing(config: &LogConfig) -> Result<(), TelemetryError> {
    let filter = EnvFilter::try_new(&config.filter).map_err(|e| TelemetryError::Filter {
        filter: config.filter.clone(),
        message: e.to_string(),
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| TelemetryError::Install(e.to_string()))
}

/// Latency buckets for Verify, in seconds: 10 µs to 100 ms.
const VERIFY_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.1,
];

/// Publish → apply buckets, in seconds: 1 ms to 60 s. Wider than Verify's: the figure
/// crosses the network and two clocks (the publisher's `created_at` and the sidecar's),
/// and a sidecar catching up after an outage records delays of seconds or more. 0.25 s
/// is the alerting objective (`deploy/monitoring/alerts.yaml`), so it is a bucket edge.
const PUBLISH_TO_APPLY_BUCKETS: &[f64] = &[
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Installs the global Prometheus recorder and returns the handle that renders `/metrics`.
///
/// Also describes every metric (`# HELP`) and registers the ones every sidecar has, so
/// they are exported from the start with zero values: a counter that appears only at
/// its first increment hides that increment from `rate()` and `increase()`, and a
/// dashboard query of a metric not yet seen shows "no data" instead of 0.
pub fn install_metrics() -> Result<PrometheusHandle, TelemetryError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("denylist_verify_duration_seconds".to_owned()),
            VERIFY_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("denylist_publish_to_apply_seconds".to_owned()),
                PUBLISH_TO_APPLY_BUCKETS,
            )
        })
        .map_err(|e| TelemetryError::Install(e.to_string()))?
        .install_recorder()
        .map_err(|e| TelemetryError::Install(e.to_string()))?;
    describe_metrics();
    register_common_metrics();
    Ok(handle)
}

/// Outcomes of `denylist_snapshot_loads_total{outcome}` (see `sync.rs`).
const SNAPSHOT_OUTCOMES: &[&str] = &["loaded", "missing", "refused", "error"];

/// Gives every metric the sidecar exports its `# HELP` text, on the current recorder.
/// Describing registers nothing: see [`register_common_metrics`] and
/// [`register_sync_metrics`] for that.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};

    describe_counter!(
        "denylist_verifications_total",
        "Verifier/Verify answers, by reason (REASON_OK, REASON_REVOKED, ...)"
    );
    describe_histogram!(
        "denylist_verify_duration_seconds",
        "Time to answer Verifier/Verify in the sidecar, seconds"
    );
    describe_counter!(
        "denylist_ext_authz_total",
        "Envoy ext_authz checks, by result (a reason name, missing_token or unavailable)"
    );
    describe_counter!(
        "denylist_forward_auth_total",
        "Forward-auth (nginx auth_request, Traefik ForwardAuth, Caddy forward_auth) checks, by result"
    );
    describe_gauge!(
        "denylist_sequence",
        "Last applied sequence: the stream sequence (fleet mode) or file generation (standalone)"
    );
    describe_gauge!(
        "denylist_stream_last_sequence",
        "The revocation stream's last sequence, as last seen by this sidecar (fleet mode); \
         minus denylist_sequence, the events not applied yet"
    );
    describe_gauge!(
        "denylist_age_seconds",
        "Seconds since the denylist's source was last heard from"
    );
    describe_gauge!(
        "denylist_stale",
        "1 when denylist_age_seconds exceeds max_staleness and the staleness policy applies"
    );
    describe_gauge!("denylist_entries", "Live revocation rules in the denylist");
    describe_gauge!(
        "denylist_bloom_bytes",
        "Bytes of the denylist's Bloom filter"
    );
    describe_gauge!(
        "denylist_heap_bytes",
        "Heap bytes of the denylist (rules, index and filter)"
    );
    describe_counter!(
        "denylist_events_applied_total",
        "Revocation events applied from the stream (fleet mode)"
    );
    describe_counter!(
        "denylist_events_rejected_total",
        "Stream events not applied: unsigned, untrusted, tampered, invalid or out of scope (fleet mode)"
    );
    describe_counter!(
        "denylist_events_out_of_scope_total",
        "Of denylist_events_rejected_total: validly signed by a trusted key, but outside \
         that key's scope (nats.trusted_publisher kinds and issuers)"
    );
    describe_histogram!(
        "denylist_publish_to_apply_seconds",
        "From an event's created_at (publisher's clock) to its application here, seconds; \
         only events created after this sidecar started (fleet mode)"
    );
    describe_counter!(
        "denylist_sync_errors_total",
        "Failed attempts to catch up with the revocation stream (retried)"
    );
    describe_counter!(
        "denylist_sync_gaps_total",
        "Gaps seen in the live feed, each repaired by a catch-up"
    );
    describe_counter!(
        "denylist_sync_stream_resets_total",
        "Times the revocation stream was found deleted and created again"
    );
    describe_counter!(
        "denylist_snapshot_loads_total",
        "Attempts to start from the stream's snapshot, by outcome (loaded, missing, refused, error)"
    );
    describe_counter!(
        "denylist_local_state_loads_total",
        "Attempts to resume from the local state (state.dir), by outcome (loaded, missing, \
         corrupt, foreign, recreated, error)"
    );
    describe_counter!(
        "denylist_local_state_writes_total",
        "Writes of the local state or its last-heard record, by result (ok, error)"
    );
    describe_gauge!(
        "denylist_local_state_bytes",
        "Size of the local state file last written, bytes"
    );
    describe_gauge!(
        "denylist_local_state_sequence",
        "Stream sequence the local state last written is at"
    );
    describe_gauge!(
        "denylist_local_state_last_write_timestamp_seconds",
        "When the local state was last written, Unix seconds"
    );
    describe_counter!(
        "denylist_key_fetches_total",
        "Key source loads (JWKS fetches, key file reads), by issuer and result (ok, error)"
    );
    describe_gauge!("denylist_keys", "Verification keys loaded, by issuer");
    describe_counter!(
        "denylist_file_reloads_total",
        "Standalone revocations file reloads, by result (ok, error)"
    );
}

/// Registers, with zero values, the metrics every sidecar exports whatever its mode:
/// Verify answers for every reason, the Verify latency histogram, the applied sequence.
/// Registering is idempotent and never changes a value already recorded.
pub fn register_common_metrics() {
    // Every reason a verdict can carry; UNSPECIFIED never is one.
    for reason in (1..)
        .map_while(|n| Reason::try_from(n).ok())
        .filter(|r| *r != Reason::Unspecified)
    {
        metrics::counter!("denylist_verifications_total", "reason" => reason.as_str_name())
            .increment(0);
    }
    let _ = metrics::histogram!("denylist_verify_duration_seconds");
    let _ = metrics::gauge!("denylist_sequence");
}

/// Registers, with zero values, the metrics of fleet mode (following the stream).
/// Called by [`crate::sync::StreamFollower::new`]; idempotent.
pub fn register_sync_metrics() {
    for counter in [
        "denylist_events_applied_total",
        "denylist_events_rejected_total",
        "denylist_events_out_of_scope_total",
        "denylist_sync_errors_total",
        "denylist_sync_gaps_total",
        "denylist_sync_stream_resets_total",
    ] {
        metrics::counter!(counter).increment(0);
    }
    for outcome in SNAPSHOT_OUTCOMES {
        metrics::counter!("denylist_snapshot_loads_total", "outcome" => *outcome).increment(0);
    }
    crate::state::register_metrics();
    let _ = metrics::histogram!("denylist_publish_to_apply_seconds");
    let _ = metrics::gauge!("denylist_stream_last_sequence");
}

#[cfg(test)]
mod tests;
