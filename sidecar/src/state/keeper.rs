//! The writer task: keeps a copy of the live events as the follower applies them, and
//! writes the state file from it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use denylist_proto::events::{ActionRef, EventRef};
use prost::Message as _;
use tokio::sync::{mpsc, watch};

use super::journal::{self, Appender};
use super::{Change, LocalStore, Position, file};
use crate::clock::SharedClock;
use crate::denylist::Denylist;
use crate::freshness::Freshness;

/// How long the writer waits at shutdown for the follower to stop and send its last
/// changes before it writes the final state anyway.
const FINAL_DRAIN: Duration = Duration::from_secs(2);

/// The journal is folded into a new state file once it is this large, or half the
/// state file's size if that is more: a restart then reads at most half as much again,
/// and a steady flow of revocations rewrites the whole state only every so often.
const JOURNAL_MIN_LIMIT: u64 = 256 * 1024;

/// One kept event.
#[derive(Debug)]
struct Entry {
    /// The encoded `RevocationEvent`.
    bytes: Box<[u8]>,
    /// When a revocation may be dropped (Unix s); `None` for a lift.
    drop_at: Option<i64>,
    /// The event ids a lift withdraws (empty for a revocation).
    lifts: Box<[Box<str>]>,
}

/// The live events, in the order they were applied.
#[derive(Debug, Default)]
pub(super) struct Live {
    entries: BTreeMap<u64, Entry>,
    /// Event id → its key in `entries`.
    ids: HashMap<Box<str>, u64>,
    next: u64,
    /// Sum of the encoded events' lengths.
    bytes: u64,
}

impl Live {
    /// Number of events kept.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The encoded events, in order.
    pub(super) fn records(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        self.entries.values().map(|e| &*e.bytes)
    }

    /// Keeps an encoded event as the denylist applied it: a repeated id changes
    /// nothing, and a lift is kept only while a revocation it withdraws is (the
    /// denylist forgets the others too). An event that does not decode is not kept.
    pub(super) fn insert(&mut self, bytes: Box<[u8]>, denylist: &Denylist) -> bool {
        let Ok(event) = EventRef::decode(&bytes) else {
            return false;
        };
        if self.ids.contains_key(event.event_id) {
            return false;
        }
        let (drop_at, lifts) = match event.action {
            ActionRef::Revoke(_) => (denylist.event_drop_at(&event), Box::default()),
            ActionRef::Lift { event_ids } => {
                let lifts: Box<[Box<str>]> = event_ids
                    .iter()
                    .filter(|id| self.is_revocation(id))
                    .map(Box::from)
                    .collect();
                if lifts.is_empty() {
                    return false;
                }
                (None, lifts)
            }
        };
        let id = Box::from(event.event_id);
        let key = self.next;
        self.next += 1;
        self.ids.insert(id, key);
        self.bytes += bytes.len() as u64;
        self.entries.insert(
            key,
            Entry {
                bytes,
                drop_at,
                lifts,
            },
        );
        true
    }

    fn is_revocation(&self, id: &str) -> bool {
        self.ids
            .get(id)
            .and_then(|key| self.entries.get(key))
            .is_some_and(|e| e.drop_at.is_some())
    }

    /// Forgets the revocations the denylist no longer holds at `now` (Unix s), then the
    /// lifts left without any of their revocations.
    pub(super) fn prune(&mut self, now: i64) {
        let mut dropped = Vec::new();
        self.entries.retain(|_, e| {
            let keep = e.drop_at.is_none_or(|at| now < at);
            if !keep {
                dropped.push(e.bytes.len() as u64);
            }
            keep
        });
        self.ids.retain(|_, key| self.entries.contains_key(key));
        let orphans: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.drop_at.is_none() && !e.lifts.iter().any(|id| self.is_revocation(id))
            })
            .map(|(key, _)| *key)
            .collect();
        for key in orphans {
            if let Some(e) = self.entries.remove(&key) {
                dropped.push(e.bytes.len() as u64);
            }
        }
        self.ids.retain(|_, key| self.entries.contains_key(key));
        self.bytes -= dropped.iter().sum::<u64>();
    }
}

/// Keeps the live events and writes the state; see the module docs of `crate::state`.
#[derive(Debug)]
pub struct StateWriter {
    store: LocalStore,
    rx: mpsc::UnboundedReceiver<Change>,
    denylist: Arc<Denylist>,
    freshness: Arc<Freshness>,
    clock: SharedClock,
    live: Live,
    position: Position,
    /// Events or position changed since the last write.
    dirty: bool,
    /// A state file of this content exists (written, or restored): only then may a
    /// heard file vouch for it.
    based: bool,
    /// The last-heard time last written.
    heard_written: i64,
    /// A failed write was logged; the next one to succeed says so.
    write_failing: bool,
    /// The copy of the live events was lost (a panic while writing): writing it now
    /// would record a smaller denylist than the one in force, so writing stopped.
    lost: bool,
    /// The journal of the state file last written by this writer; `None` until one
    /// is, and after a failed append (the next write is then a whole state).
    journal: Option<Appender>,
    /// Size of the state file last written.
    state_bytes: u64,
    /// The events kept since the last write, for the next journal record.
    pending: Vec<Box<[u8]>>,
}

impl StateWriter {
    pub(super) fn new(
        store: LocalStore,
        rx: mpsc::UnboundedReceiver<Change>,
        denylist: Arc<Denylist>,
        freshness: Arc<Freshness>,
        clock: SharedClock,
    ) -> Self {
        Self {
            store,
            rx,
            denylist,
            freshness,
            clock,
            live: Live::default(),
            position: Position::default(),
            dirty: false,
            based: false,
            heard_written: 0,
            write_failing: false,
            lost: false,
            journal: None,
            state_bytes: 0,
            pending: Vec::new(),
        }
    }

    /// Keeps changes as they come and writes at most every `state.interval`, until
    /// `shutdown`; then takes the follower's last changes and writes once more.
    pub async fn run(mut self, shutdown: watch::Receiver<bool>) {
        // The first write comes one interval after start, not at once: at most one write
        // an interval.
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + self.store.interval,
            self.store.interval,
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                change = self.rx.recv() => match change {
                    Some(change) => self.take(change),
                    None => break,
                },
                _ = tick.tick() => self.write().await,
                () = crate::app::stopped(shutdown.clone()) => {
                    let drained = tokio::time::timeout(FINAL_DRAIN, async {
                        while let Some(change) = self.rx.recv().await {
                            self.take(change);
                        }
                    });
                    if drained.await.is_err() {
                        tracing::warn!("the follower did not stop in time; writing the local state as it stands");
                    }
                    break;
                }
            }
        }
        self.write().await;
    }

    fn take(&mut self, change: Change) {
        match change {
            Change::Applied(event) => {
                let bytes = event.to_proto().encode_to_vec().into_boxed_slice();
                if self.live.insert(bytes.clone(), &self.denylist) {
                    self.pending.push(bytes);
                }
            }
            Change::Replaced(events) => {
                self.live = Live::default();
                for bytes in events {
                    self.live.insert(bytes, &self.denylist);
                }
                // A new content: only a whole state says it.
                self.journal = None;
                self.pending.clear();
            }
            Change::Restored(state) => {
                self.live = Live::default();
                for record in state.records() {
                    self.live.insert(Box::from(record), &self.denylist);
                }
                // The journal on disk may end in a record cut short; the next write
                // is a whole state with a new journal rather than an append after it.
                self.journal = None;
                self.pending.clear();
                self.position = state.position;
                self.heard_written = state.position.last_heard_unix_ms;
                // The file on disk already says all this.
                self.based = true;
                self.dirty = false;
                return;
            }
            Change::Position {
                sequence,
                stream_created_unix_nanos,
            } => {
                let moved = (sequence, stream_created_unix_nanos)
                    != (
                        self.position.sequence,
                        self.position.stream_created_unix_nanos,
                    );
                if !moved {
                    // The follower reports its position freely.
                    return;
                }
                self.position.sequence = sequence;
                self.position.stream_created_unix_nanos = stream_created_unix_nanos;
            }
            Change::Lost => {
                tracing::error!(
                    "the local state cannot follow the denylist any more; removing it and writing no more"
                );
                self.lost = true;
                self.journal = None;
                for name in [file::STATE_FILE, file::HEARD_FILE, journal::JOURNAL_FILE] {
                    let _ = std::fs::remove_file(self.store.dir.join(name));
                }
            }
        }
        self.dirty = true;
    }

    /// Writes what changed: a journal record when the content changed and the journal
    /// has room, else the whole state (and a new journal); the heard file when only the
    /// time the stream was last heard did. Errors are logged and counted, never fatal:
    /// the next interval tries again, with a whole state.
    async fn write(&mut self) {
        // When the stream was last heard is read before the changes waiting in the
        // channel are taken: the content written is then at least as new as that time.
        let heard = self.freshness.last_heard_ms().unwrap_or(0);
        while let Ok(change) = self.rx.try_recv() {
            self.take(change);
        }
        let heard = heard.max(self.position.last_heard_unix_ms);
        let heard_moved = self.based && heard > self.heard_written;
        if self.lost || !(self.dirty || heard_moved) {
            return;
        }
        let mut position = self.position;
        position.last_heard_unix_ms = heard;
        let store = self.store.clone();
        let now_ms = self.clock.now_ms();
        let max_bytes = self.store.max_bytes;
        // Length delimiters and the record's own header and link.
        let record_bytes = self.pending.iter().map(|e| e.len() as u64 + 5).sum::<u64>() + 100;
        let limit = (self.state_bytes / 2).max(JOURNAL_MIN_LIMIT).min(max_bytes);
        let kind = if !self.dirty {
            Kind::Heard
        } else if self
            .journal
            .as_ref()
            .is_some_and(|j| j.bytes() + record_bytes <= limit)
        {
            Kind::Append
        } else {
            Kind::Whole
        };
        let mut live = if kind == Kind::Heard {
            Live::default()
        } else {
            std::mem::take(&mut self.live)
        };
        let mut journal = self.journal.take();
        let pending = std::mem::take(&mut self.pending);
        let appended = pending.len();
        // Pruning and writing a large state is blocking work, off the runtime; changes
        // wait in the channel meanwhile.
        let done = tokio::task::spawn_blocking(move || {
            // The copy forgets what expired at every write, as the denylist does; the
            // state file keeps it until it is rewritten, and applying it then drops it.
            if kind != Kind::Heard {
                live.prune(now_ms.div_euclid(1000));
            }
            let written = match kind {
                Kind::Whole => {
                    // Header and framing: a few bytes an event beside the events.
                    let estimate = live.bytes + 10 * live.len() as u64 + 1024;
                    if estimate > max_bytes {
                        Err(std::io::Error::other(format!(
                            "{} events take about {estimate} bytes, more than state.max_bytes ({max_bytes})",
                            live.len()
                        )))
                    } else {
                        file::write_state(
                            &store.dir,
                            &store.identity,
                            &position,
                            now_ms,
                            live.records(),
                        )
                        .map(|w| {
                            // The new state's journal replaces the old one (which
                            // follows the old state and would be ignored anyway).
                            journal = Appender::create(&store.dir, w.seal)
                                .inspect_err(|e| {
                                    tracing::warn!(error = %e, "cannot start the local state's journal; the next write rewrites the whole state");
                                })
                                .ok();
                            w.bytes
                        })
                    }
                }
                Kind::Append => journal
                    .as_mut()
                    .expect("an append has a journal")
                    .append(&position, now_ms, &pending),
                Kind::Heard => file::write_heard(&store.dir, &store.identity, &position),
            };
            (live, journal, written)
        })
        .await;
        let (live, journal, written) = match done {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "writing the local state failed");
                if kind != Kind::Heard {
                    // The copy of the live events went down with the task.
                    self.take(Change::Lost);
                }
                return;
            }
        };
        if kind != Kind::Heard {
            self.live = live;
        }
        match written {
            Ok(bytes) => {
                metrics::counter!("denylist_local_state_writes_total", "result" => "ok")
                    .increment(1);
                metrics::gauge!("denylist_local_state_last_write_timestamp_seconds")
                    .set(now_ms as f64 / 1000.0);
                metrics::gauge!("denylist_local_state_sequence").set(position.sequence as f64);
                match kind {
                    Kind::Whole => {
                        self.state_bytes = bytes;
                        metrics::gauge!("denylist_local_state_bytes").set(bytes as f64);
                        tracing::debug!(
                            sequence = position.sequence,
                            events = self.live.len(),
                            bytes,
                            "local state written"
                        );
                    }
                    Kind::Append => tracing::trace!(
                        sequence = position.sequence,
                        events = appended,
                        bytes,
                        "local state journal appended"
                    ),
                    Kind::Heard => {}
                }
                if kind != Kind::Heard {
                    self.dirty = false;
                    self.based = true;
                }
                self.journal = journal;
                metrics::gauge!("denylist_local_state_journal_bytes")
                    .set(self.journal.as_ref().map_or(0, Appender::bytes) as f64);
                self.heard_written = heard;
                if std::mem::take(&mut self.write_failing) {
                    tracing::info!("the local state is written again");
                }
            }
            Err(e) => {
                metrics::counter!("denylist_local_state_writes_total", "result" => "error")
                    .increment(1);
                // An append may have left part of a record: start again from a whole
                // state. The events not appended are in the copy of the live events.
                if kind == Kind::Heard {
                    self.journal = journal;
                }
                if !std::mem::replace(&mut self.write_failing, true) {
                    tracing::warn!(dir = %self.store.dir.display(), error = %e, "cannot write the local state; will try again");
                }
            }
        }
    }
}

/// What one write writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The whole state file, and a new journal.
    Whole,
    /// A record on the journal.
    Append,
    /// The heard file only.
    Heard,
}
