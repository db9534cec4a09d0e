//! Logs and metrics set-up. Called once by the binary; library code only uses the
//! `tracing` and `metrics` facades, so tests can run many sidecars in one process.

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

/// Installs the global Prometheus recorder and returns the handle that renders `/metrics`.
pub fn install_metrics() -> Result<PrometheusHandle, TelemetryError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("denylist_verify_duration_seconds".to_owned()),
            VERIFY_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("denylist_publish_to_apply_seconds".to_owned()),
                VERIFY_BUCKETS,
            )
        })
        .map_err(|e| TelemetryError::Install(e.to_string()))?
        .install_recorder()
        .map_err(|e| TelemetryError::Install(e.to_string()))
}
