//! The writer task: keeps a copy of the live events as the follower applies them, and
//! writes the state file from it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use denylist_proto::events::{ActionRef, EventRef};
use prost::Message as _;
use tokio::sync::{mpsc, watch};

use super::{Change, LocalStore, Position, file};
use crate::clock::SharedClock;
use crate::denylist::Denylist;
use crate::freshness::Freshness;

/// How long the writer waits at shutdown for the follower to stop and send its last
/// changes before it writes the final state anyway.
const FINAL_DRAIN: Duration = Duration::from_secs(2);

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
    pub(super) fn insert(&mut self, bytes: Box<[u8]>, denylist: &Denylist) {
        let Ok(event) = EventRef::decode(&bytes) else {
            return;
        };
        if self.ids.contains_key(event.event_id) {
            return;
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
                    return;
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
                self.live.insert(bytes, &self.denylist);
            }
            Change::Replaced(events) => {
                self.live = Live::default();
                for bytes in events {
                    self.live.insert(bytes, &self.denylist);
                }
            }
            Change::Restored(state) => {
                self.live = Live::default();
                for record in state.records() {
                    self.live.insert(Box::from(record), &self.denylist);
                }
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
                for name in [file::STATE_FILE, file::HEARD_FILE] {
                    let _ = std::fs::remove_file(self.store.dir.join(name));
                }
            }
        }
        self.dirty = true;
    }

    /// Writes the state if the content changed, else the heard file if only the time
    /// the stream was last heard did. Errors are logged and counted, never fatal: the
    /// next interval tries again.
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
        let dirty = self.dirty;
        let store = self.store.clone();
        let now_ms = self.clock.now_ms();
        let mut live = std::mem::take(&mut self.live);
        let max_bytes = self.store.max_bytes;
        // Pruning and writing a large state is blocking work, off the runtime; changes
        // wait in the channel meanwhile.
        let written_or_panic = tokio::task::spawn_blocking(move || {
            let written = if dirty {
                live.prune(now_ms.div_euclid(1000));
                // Header and framing: a few bytes an event beside the events themselves.
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
                    .map(|bytes| (bytes, true))
                }
            } else {
                file::write_heard(&store.dir, &store.identity, &position).map(|b| (b, false))
            };
            (live, written)
        })
        .await;
        let (live, written) = match written_or_panic {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "writing the local state failed");
                self.take(Change::Lost);
                return;
            }
        };
        self.live = live;
        match written {
            Ok((bytes, full)) => {
                metrics::counter!("denylist_local_state_writes_total", "result" => "ok")
                    .increment(1);
                metrics::gauge!("denylist_local_state_last_write_timestamp_seconds")
                    .set(now_ms as f64 / 1000.0);
                metrics::gauge!("denylist_local_state_sequence").set(position.sequence as f64);
                if full {
                    metrics::gauge!("denylist_local_state_bytes").set(bytes as f64);
                    self.dirty = false;
                    self.based = true;
                    tracing::debug!(
                        sequence = position.sequence,
                        events = self.live.len(),
                        bytes,
                        "local state written"
                    );
                }
                self.heard_written = heard;
                if std::mem::take(&mut self.write_failing) {
                    tracing::info!("the local state is written again");
                }
            }
            Err(e) => {
                metrics::counter!("denylist_local_state_writes_total", "result" => "error")
                    .increment(1);
                if !std::mem::replace(&mut self.write_failing, true) {
                    tracing::warn!(dir = %self.store.dir.display(), error = %e, "cannot write the local state; will try again");
                }
            }
        }
    }
}
