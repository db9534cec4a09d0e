//! The local state: a fleet-mode sidecar's last applied state, kept on the pod's volume
//! (`state.dir`), so that a restarted container resumes from it instead of downloading
//! the snapshot again, and comes up with its true age while NATS is unreachable.
//!
//! What it holds (see [`file`] for the layout): the stream it follows (name, creation
//! time), the last applied sequence, when the stream was last heard from, and the live
//! events — every applied revocation until the denylist would drop it, and every lift
//! while one of the revocations it withdraws is kept — in the order they were applied,
//! so that applying them again gives an equal denylist. The denylist keeps only keyed
//! fingerprints of its rules and cannot give its events back, so [`StateWriter`] keeps
//! its own copy, encoded: ~120 bytes an event on disk, an estimated ~250 in memory
//! with the index (not measured).
//!
//! A state is refused, logged with the reason, counted in
//! `denylist_local_state_loads_total{outcome}` and never applied when it is
//! - `corrupt`: its SHA-256 (over the whole file) differs, it is truncated or larger
//!   than `state.max_bytes`, or an event in it does not decode;
//! - `foreign`: not a state file, another format version, another stream name, or
//!   written under another set of trusted publishers (an event trusted then may not be
//!   now; a key added is refused too, which costs one snapshot download);
//! - `recreated`: once NATS answers, the stream's creation time differs from the
//!   state's, or its last sequence is below the state's.
//!
//! The sidecar then starts as it would without one (snapshot, else stream start).
//!
//! Writing never holds up applying: the follower sends what it applies down an
//! unbounded channel; the writer task keeps the copy and writes, at most every
//! `state.interval` when something changed, and at shutdown, what changed as one record
//! appended to the state's [`journal`]; the whole state is rewritten atomically
//! (temporary file, fsync, rename, fsync of the directory) with a new journal only once
//! the journal has grown to half the state (or after a snapshot, a restart or a failed
//! write). When only the time the stream was last heard moved, a 100-byte `heard.bin` is
//! written instead.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use denylist_proto::events::{Event, EventRef};
use tokio::sync::mpsc;

use crate::clock::SharedClock;
use crate::config::{NatsConfig, StateConfig};
use crate::denylist::{Applied, Denylist};
use crate::freshness::Freshness;

pub mod file;
pub mod journal;
mod keeper;

pub use file::Checked;
pub use keeper::StateWriter;

/// Outcomes of `denylist_local_state_loads_total{outcome}`.
pub const LOAD_OUTCOMES: &[&str] = &[
    "loaded",
    "missing",
    "corrupt",
    "foreign",
    "recreated",
    "error",
];

/// Why a local state was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Damaged: truncated, flipped bytes, too large.
    #[error("corrupt local state: {0}")]
    Corrupt(String),
    /// Not ours: another format, stream or set of trusted publishers.
    #[error("foreign local state: {0}")]
    Foreign(String),
    /// Of an earlier stream of the same name (deleted and created again).
    #[error("local state of a recreated stream: {0}")]
    Recreated(String),
    /// The file could not be read.
    #[error("cannot read the local state: {0}")]
    Io(String),
}

impl StateError {
    /// The `outcome` label it is counted under.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Corrupt(_) => "corrupt",
            Self::Foreign(_) => "foreign",
            Self::Recreated(_) => "recreated",
            Self::Io(_) => "error",
        }
    }
}

/// What a state must match to be this sidecar's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The stream name (`nats.stream`).
    pub stream: String,
    /// SHA-256 of the trusted publisher keys and their scopes (see [`Identity::of`]).
    pub trusted_digest: [u8; 32],
}

impl Identity {
    /// The identity of a sidecar with this `[nats]` section: its stream, and every
    /// trusted publisher key that may sign events, with its scope (`trusted_publishers`
    /// and each `[[nats.trusted_publisher]]` but heartbeat keys), in a canonical order.
    pub fn of(nats: &NatsConfig) -> Self {
        let list = |items: Option<&Vec<String>>| {
            items.map_or_else(
                || "*".to_owned(),
                |items| {
                    let mut items: Vec<&str> = items.iter().map(String::as_str).collect();
                    items.sort_unstable();
                    items.join(",")
                },
            )
        };
        let mut keys: Vec<String> = nats
            .trusted_publishers
            .iter()
            .map(|k| format!("{} kinds=* issuers=*", k.trim()))
            // A heartbeat key signs no event, so no state's content depends on it: rotating
            // it must not make every pod of the fleet download the snapshot again.
            .chain(
                nats.trusted_publisher
                    .iter()
                    .filter(|p| !p.heartbeats_only)
                    .map(|p| {
                        format!(
                            "{} kinds={} issuers={}",
                            p.key.trim(),
                            list(p.kinds.as_ref()),
                            list(p.issuers.as_ref())
                        )
                    }),
            )
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, keys.join("\n").as_bytes());
        Self {
            stream: nats.stream.clone(),
            trusted_digest: digest.as_ref().try_into().expect("SHA-256 is 32 bytes"),
        }
    }
}

/// Where the content of a state stood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// The followed stream's creation time, Unix ns (0 before the stream was seen).
    pub stream_created_unix_nanos: i64,
    /// The last applied sequence.
    pub sequence: u64,
    /// When the stream was last heard from with this content, Unix ms (0: never).
    pub last_heard_unix_ms: i64,
}

impl Checked {
    /// Checks the state against the live stream: refused when the stream was recreated
    /// since (another creation time, or a last sequence below the state's).
    pub fn check_stream(
        &self,
        created_unix_nanos: i64,
        last_sequence: u64,
    ) -> Result<(), StateError> {
        let p = &self.position;
        if p.stream_created_unix_nanos != created_unix_nanos {
            return Err(StateError::Recreated(format!(
                "the stream was created at {created_unix_nanos} ns, the state's at {} ns",
                p.stream_created_unix_nanos
            )));
        }
        if p.sequence > last_sequence {
            return Err(StateError::Recreated(format!(
                "the state is at sequence {}, the stream ends at {last_sequence}",
                p.sequence
            )));
        }
        Ok(())
    }

    /// Replaces the denylist's content with the state's events (all or, on an error,
    /// none). The events were validated when the file was read.
    /// Decoded on one thread: splitting it as a snapshot load does measured slower on a
    /// busy two-core machine (`benches/local_state.rs`), and it is simpler.
    pub fn apply_to(&self, denylist: &Denylist) -> Result<Applied, StateError> {
        let count = usize::try_from(self.event_count).unwrap_or(0);
        let events = self.records().enumerate().map(|(i, record)| {
            EventRef::decode(record).map_err(|e| StateError::Corrupt(format!("event {i}: {e}")))
        });
        denylist.try_replace_all(vec![events], count)
    }
}

/// The local state of one sidecar: its directory and settings.
#[derive(Debug, Clone)]
pub struct LocalStore {
    dir: PathBuf,
    interval: Duration,
    max_bytes: u64,
    identity: Identity,
}

impl LocalStore {
    /// The store in `config.dir` for a sidecar of this identity; `None` when off.
    pub fn new(config: &StateConfig, identity: Identity) -> Option<Self> {
        Some(Self {
            dir: config.dir.clone()?,
            interval: config.interval,
            max_bytes: config.max_bytes,
            identity,
        })
    }

    /// Creates the directory, reads and checks the state in it (what can be checked
    /// without NATS: see the module docs), and builds the writer and the follower's
    /// handle to it. A refused state is logged and counted here; `Err` only when the
    /// directory cannot be created.
    pub async fn open(
        self,
        denylist: Arc<Denylist>,
        freshness: Arc<Freshness>,
        clock: SharedClock,
    ) -> Result<(Option<Checked>, Recorder, StateWriter), std::io::Error> {
        std::fs::create_dir_all(&self.dir)?;
        let (dir, identity, max_bytes) = (self.dir.clone(), self.identity.clone(), self.max_bytes);
        // Reading and decoding a large state is blocking work.
        let read = tokio::task::spawn_blocking(move || {
            let state = file::read_state(&dir, &identity, max_bytes)?;
            Ok::<_, StateError>(state.map(|mut state| {
                if let Some(heard) = file::read_heard(&dir, &identity)
                    && heard.stream_created_unix_nanos == state.position.stream_created_unix_nanos
                    && heard.sequence == state.position.sequence
                {
                    state.position.last_heard_unix_ms = state
                        .position
                        .last_heard_unix_ms
                        .max(heard.last_heard_unix_ms);
                }
                state
            }))
        })
        .await
        .unwrap_or_else(|e| Err(StateError::Io(e.to_string())));
        let checked = match read {
            Ok(Some(state)) => {
                tracing::info!(
                    dir = %self.dir.display(),
                    sequence = state.position.sequence,
                    events = state.event_count,
                    bytes = state.file_bytes(),
                    "local state found; it is used once the stream confirms it, or if NATS does not answer"
                );
                Some(state)
            }
            Ok(None) => {
                tracing::info!(dir = %self.dir.display(), "no local state");
                count_load("missing");
                None
            }
            Err(e) => {
                refused(&e);
                None
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = StateWriter::new(self, rx, denylist, freshness, clock);
        Ok((checked, Recorder { tx }, writer))
    }
}

/// Logs and counts a refused state.
pub fn refused(error: &StateError) {
    tracing::warn!(error = %error, outcome = error.outcome(), "local state refused; not applied");
    count_load(error.outcome());
}

/// Counts one load by outcome.
pub fn count_load(outcome: &'static str) {
    metrics::counter!("denylist_local_state_loads_total", "outcome" => outcome).increment(1);
}

/// Registers the local state's metrics with zero values (every fleet-mode sidecar
/// exports them, so a dashboard shows 0 rather than "no data" where it is off).
pub fn register_metrics() {
    for outcome in LOAD_OUTCOMES {
        metrics::counter!("denylist_local_state_loads_total", "outcome" => *outcome).increment(0);
    }
    for result in ["ok", "error"] {
        metrics::counter!("denylist_local_state_writes_total", "result" => result).increment(0);
    }
    let _ = metrics::gauge!("denylist_local_state_bytes");
    let _ = metrics::gauge!("denylist_local_state_journal_bytes");
    let _ = metrics::gauge!("denylist_local_state_sequence");
    let _ = metrics::gauge!("denylist_local_state_last_write_timestamp_seconds");
}

/// What the follower tells the writer; see [`Recorder`].
#[derive(Debug)]
enum Change {
    /// An event applied to the denylist.
    Applied(Event),
    /// The denylist's content replaced by these encoded events (a snapshot).
    Replaced(Vec<Box<[u8]>>),
    /// The denylist's content replaced by a local state's.
    Restored(Box<Checked>),
    /// The follower could not tell what it applied: the state must not be written.
    Lost,
    /// Where the follower stands.
    Position {
        sequence: u64,
        stream_created_unix_nanos: i64,
    },
}

/// The follower's side of the writer: every call is a send on an unbounded channel,
/// so it never waits. Calls are in the order the denylist changed.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Change>,
}

impl Recorder {
    // A send fails only once the writer has stopped (shutdown): nothing to record then.

    /// An event was applied.
    pub fn applied(&self, event: Event) {
        let _ = self.tx.send(Change::Applied(event));
    }

    /// The content was replaced by these events (encoded `RevocationEvent`s, in order).
    pub fn replaced(&self, events: Vec<Box<[u8]>>) {
        let _ = self.tx.send(Change::Replaced(events));
    }

    /// The content was replaced by this local state's.
    pub fn restored(&self, state: Checked) {
        let _ = self.tx.send(Change::Restored(Box::new(state)));
    }

    /// What was applied cannot be told (a snapshot loaded but not read back): the
    /// state is removed and no longer written, rather than left smaller than the
    /// denylist in force.
    pub fn lost(&self) {
        let _ = self.tx.send(Change::Lost);
    }

    /// The follower now stands at `sequence` of the stream created at this time.
    pub fn position(&self, sequence: u64, stream_created_unix_nanos: i64) {
        let _ = self.tx.send(Change::Position {
            sequence,
            stream_created_unix_nanos,
        });
    }
}

#[cfg(test)]
mod tests;
