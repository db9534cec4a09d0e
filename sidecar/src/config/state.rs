//! The `[state]` section: where a fleet-mode sidecar keeps its last applied state on
//! local disk, and how often it writes it (see `crate::state`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, DenylistSource, invalid};

/// Largest `state.max_bytes`: 16 GiB.
const MAX_STATE_BYTES: u64 = 16 << 30;

/// The local state (fleet mode only). Off unless `dir` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// Directory of the state files, created if missing; only the sidecar may write to
    /// it (in Kubernetes a volume mounted into the sidecar container alone). Unset
    /// (default): no local state, every start downloads the snapshot or replays.
    /// Ignored in standalone mode.
    #[serde(deserialize_with = "super::empty_as_none")]
    pub dir: Option<PathBuf>,
    /// The state is written at most this often, when something changed, and at
    /// shutdown. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A state file larger than this is neither written nor read. Default 1 GiB.
    pub max_bytes: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            dir: None,
            interval: Duration::from_secs(5),
            max_bytes: 1 << 30,
        }
    }
}

impl StateConfig {
    /// Checks the section against the denylist source it serves.
    pub(super) fn validate(&self, source: DenylistSource) -> Result<(), ConfigError> {
        // Standalone mode ignores the section (its revocations file is its local state):
        // the injector sets `DENYLIST_STATE_DIR` in every pod, whatever its mode.
        let (Some(dir), DenylistSource::Nats) = (&self.dir, source) else {
            return Ok(());
        };
        if !dir.is_absolute() {
            // A relative path would depend on the working directory of the process.
            return Err(invalid(
                "state.dir",
                format!("{} is not an absolute path", dir.display()),
            ));
        }
        if self.interval < Duration::from_millis(100) || self.interval > Duration::from_secs(3600) {
            return Err(invalid("state.interval", "must be between 100ms and 1h"));
        }
        if !(4096..=MAX_STATE_BYTES).contains(&self.max_bytes) {
            return Err(invalid(
                "state.max_bytes",
                format!("must be between 4096 and {MAX_STATE_BYTES}"),
            ));
        }
        Ok(())
    }
}
