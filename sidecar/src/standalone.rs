//! Standalone mode: revocations come from a local JSON-lines file of
//! `RevocationEvent`s (the schema the NATS publisher signs), loaded at start and
//! reloaded when the file changes.
//!
//! A file with any bad line is rejected whole, naming the line, and the last good
//! set stays in force: a half-applied file would silently un-revoke tokens.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::denylist::Denylist;
use crate::events::{Event, EventError};
use crate::freshness::Freshness;

/// Largest revocations file read (guards memory against a runaway file).
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// Why a revocations file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum RevocationsFileError {
    /// The file could not be read.
    #[error("cannot read revocations file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("revocations file {path} is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A line is not a valid event.
    #[error("revocations file {path} line {line}: {error}")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        error: EventError,
    },
    /// Two lines carry the same event id.
    #[error(
        "revocations file {path} line {line}: event id {event_id:?} already used on line {first}"
    )]
    DuplicateId {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the repeat.
        line: usize,
        /// 1-based line number of the first use.
        first: usize,
        /// The repeated id.
        event_id: String,
    },
}

/// Parses a whole revocations file. Blank lines and lines starting with `#` are skipped.
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<Event>, RevocationsFileError> {
    let mut events = Vec::new();
    let mut ids = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let event = Event::from_json(trimmed).map_err(|error| RevocationsFileError::BadLine {
            path: path.to_owned(),
            line: i + 1,
            error,
        })?;
        if let Some(first) = ids.insert(event.event_id.clone(), i + 1) {
            return Err(RevocationsFileError::DuplicateId {
                path: path.to_owned(),
                line: i + 1,
                first,
                event_id: event.event_id,
            });
        }
        events.push(event);
    }
    Ok(events)
}

/// What identifies a version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

/// Loads the revocations file into the denylist and keeps it current.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    denylist: Arc<Denylist>,
    freshness: Arc<Freshness>,
    stamp: Option<Stamp>,
    content_hash: Option<u64>,
    /// Hashes of the events in force, sorted: a new file that lacks any of them would
    /// withdraw revocations.
    in_force: Vec<u64>,
    /// A file that withdraws revocations, seen at this stamp and held back until a
    /// later poll finds the same stamp (see [`FileSource::load`]).
    held: Option<Stamp>,
    generation: u64,
}

impl FileSource {
    /// A source for `path`; nothing is read until [`FileSource::load`].
    pub fn new(path: PathBuf, denylist: Arc<Denylist>, freshness: Arc<Freshness>) -> Self {
        Self {
            path,
            denylist,
            freshness,
            stamp: None,
            content_hash: None,
            in_force: Vec::new(),
            held: None,
            generation: 0,
        }
    }

    /// Reads the file and, if its content changed and is valid, replaces the
    /// denylist's rules with it. Returns whether the rules were replaced. On error
    /// the previous rules stay in force.
    ///
    /// A file that only adds events is applied at once. One that removes or changes an
    /// event in force (which withdraws a revocation) is applied only when a later poll
    /// finds it unchanged: a file written in place (truncated, then written) can be read
    /// half-written, and a half that ends on a line boundary parses. So un-revoking waits
    /// one poll, and so do additions made in the same change; pure additions do not.
    pub fn load(&mut self) -> Result<bool, RevocationsFileError> {
        let read_err = |source| RevocationsFileError::Read {
            path: self.path.clone(),
            source,
        };
        let meta = std::fs::metadata(&self.path).map_err(read_err)?;
        let stamp = Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
        };
        if self.stamp == Some(stamp) {
            self.freshness.mark_heard();
            return Ok(false);
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(RevocationsFileError::TooLarge {
                path: self.path.clone(),
            });
        }
        let text = std::fs::read_to_string(&self.path).map_err(read_err)?;
        let hash = hash_text(&text);
        if self.content_hash == Some(hash) {
            // Touched but unchanged (e.g. a ConfigMap re-sync).
            self.stamp = Some(stamp);
            self.freshness.mark_heard();
            return Ok(false);
        }
        let events = parse_file(&self.path, &text)?;
        let hashes = event_hashes(&events);
        let withdrawn = self
            .in_force
            .iter()
            .filter(|h| hashes.binary_search(h).is_err())
            .count();
        if withdrawn > 0 && self.held != Some(stamp) {
            self.held = Some(stamp);
            self.freshness.mark_heard();
            tracing::info!(
                path = %self.path.display(),
                withdrawn,
                "the revocations file withdraws revocations; applying it once it has held still for one poll"
            );
            return Ok(false);
        }
        self.held = None;
        let applied = self.denylist.replace_all(&events);
        self.in_force = hashes;
        self.stamp = Some(stamp);
        self.content_hash = Some(hash);
        self.generation += 1;
        self.freshness.set_sequence(self.generation);
        self.freshness.mark_heard();
        self.freshness.set_ready();
        tracing::info!(
            path = %self.path.display(),
            events = events.len(),
            rules = applied.added,
            generation = self.generation,
            "revocations file loaded"
        );
        Ok(true)
    }

    /// Polls the file every `interval` until `shutdown` turns true. A bad file is
    /// logged and counted; the last good rules stay.
    pub async fn run(mut self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            match self.load() {
                Ok(true) => {
                    metrics::counter!("denylist_file_reloads_total", "result" => "ok").increment(1)
                }
                Ok(false) => {}
                Err(e) => {
                    metrics::counter!("denylist_file_reloads_total", "result" => "error")
                        .increment(1);
                    tracing::error!(error = %e, "revocations file rejected; the last good set stays in force");
                    // A file that exists but is invalid was still heard from: the last
                    // good rules are in force and the error is loud. A missing or
                    // unreadable file is silence, and lets the denylist turn stale.
                    if !matches!(e, RevocationsFileError::Read { .. }) {
                        self.freshness.mark_heard();
                    }
                }
            }
        }
    }
}

/// Each event's hash (every field), sorted.
fn event_hashes(events: &[Event]) -> Vec<u64> {
    use std::hash::{BuildHasher as _, BuildHasherDefault};
    let build = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
    let mut hashes: Vec<u64> = events.iter().map(|e| build.hash_one(e)).collect();
    hashes.sort_unstable();
    hashes
}

fn hash_text(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests;
