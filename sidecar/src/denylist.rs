//! The revocation denylist: the rules that revoke tokens, and [`Denylist::is_revoked`],
//! the check every Verify and Check call runs.
//!
//! # How a rule is stored
//!
//! A rule is never stored as strings. Each rule is reduced to a 128-bit *fingerprint*:
//! SipHash-1-3/128 of `(kind, issuer, target)` under a key drawn at random when the
//! [`Denylist`] is created (it never leaves the process). A lookup fingerprints the
//! token's `(kind, iss, jti|sub|sid|kid)` the same way and looks for an equal one.
//!
//! Why a fingerprint is exact enough: two different rules or a token and a rule
//! collide only if their 128-bit keyed hashes are equal. With a secret key an
//! attacker cannot search for a collision offline, so the chance that a given token
//! is wrongly found revoked is about `n / 2^128` per lookup (n = number of rules):
//! below 10^-32 at a million rules, far less likely than forging a signature. The
//! other direction cannot fail at all: a revoked token always has the fingerprint of
//! its rule, so a revoked token is never missed.
//!
//! The Bloom filter in front of the exact set is only a shortcut: it answers
//! "certainly absent" for most tokens without touching the exact set. A Bloom
//! positive is *always* confirmed against the exact set, so a Bloom false positive
//! costs a few hundred nanoseconds and never rejects a token.
//!
//! # Layout (why ~22 bytes per rule)
//!
//! The bulk of the rules sit in a `Base`: a sorted array of fingerprints (16 B per
//! rule) beside a parallel array of `u32` indices (4 B per rule) into a table of
//! per-event metadata (`EventMeta`: event id, reason and actor, cut-off, creation
//! time, expiry, lifted flag), plus a bucket directory over the top bits of the
//! fingerprints (0.5 B per rule) that turns the exact lookup into one or two cache
//! lines instead of a 20-step binary search, and the Bloom filter (1.8 B per rule at
//! a 0.1 % false-positive rate). Rule expiry is a property of the event (it depends on
//! kind, issuer, cut-off, creation time and `expires_at`, never on the target), so it
//! lives in the metadata too.
//!
//! All targets of one event share one metadata record: a bulk revocation (one event,
//! a thousand targets) measures 22.4 B per rule at a million rules, Bloom included.
//! The worst case, one event per rule (e.g. one event per logout), also pays for one
//! metadata record, its event id and its entry in the writer's id index per rule:
//! ~133 B per rule with 12-byte event ids. `benches/denylist.rs` measures and prints
//! both, beside a `DashMap<String, ()>` baseline (~116 B, and it holds no metadata).
//!
//! Rules applied since the last rebuild live in small sorted *runs* of
//! `(fingerprint, Arc<EventMeta>)`, merged like a binary counter (a run is merged with
//! the previous one while that one is not larger), so there are at most log2(n) of
//! them and an apply costs amortised O(log n) copies. [`Denylist::prune_and_rebuild`]
//! folds the runs into a new base, drops expired and lifted rules and builds a fresh
//! Bloom filter.
//!
//! # Concurrency
//!
//! Readers only ever do one [`ArcSwap::load`] (lock-free) and then read immutable
//! arrays and atomic flags: they never take a lock, never wait for a writer and never
//! allocate unless they found a revocation. Writers (apply, lift, replace, rebuild)
//! publish a whole new `Snapshot` with one atomic store, serialised by a writer
//! mutex that readers never touch. A rebuild does its expensive part (merge, sort,
//! Bloom) without that mutex, so applies keep flowing during a rebuild; rebuilds and
//! [`Denylist::replace_all`] are serialised among themselves by a second mutex. A
//! lift flips the `lifted` flag of the shared metadata record, so every snapshot that
//! holds the event's rules stops matching at once, before any rebuild.
//!
//! A replaced base is dropped by the rebuilding thread (which waits a few
//! milliseconds for readers to let go), not by a reader that happened to hold the
//! last reference, so requests do not pay for freeing megabytes.
//!
//! # Expiry
//!
//! A rule may be dropped once no live token can match it (see `DESIGN.md`): `jti` at
//! the event's `expires_at` (the token's `exp`) or creation + the issuer's maximum
//! token lifetime; `subject` and `issuer` at `expires_at` or cut-off + maximum
//! lifetime; `session` at `expires_at` or creation + maximum lifetime; `key` only at
//! `expires_at` or by a lift. Verification accepts a token up to `leeway` past its
//! `exp`, and publishers' clocks may run ahead of ours, so every rule is kept
//! [`EXPIRY_GRACE_SECS`] beyond that moment; past it the rule neither matches nor
//! survives a rebuild, and an event that arrives already past it adds nothing.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bloomfilter::Bloom;
use parking_lot::Mutex;
use siphasher::sip128::{Hasher128, SipHasher13};

use crate::clock::SharedClock;
use crate::events::{ActionRef, Event, EventRef, RevokeRef, RuleKind, Targets};
use crate::watch::{WatchKey, WatchRegistry, Watcher};

pub use crate::events::EXPIRY_GRACE_SECS;

/// How long a rebuild waits for readers to let go of the replaced base, so that the
/// rebuilding thread (not a request) frees it. Readers hold it for nanoseconds.
const RETIRE_WAIT: Duration = Duration::from_millis(20);

/// Sizing and lifetimes.
#[derive(Debug, Clone)]
pub struct DenylistSettings {
    /// Expected number of live rules: the Bloom filter is sized for at least this many.
    pub expected_entries: usize,
    /// Bloom filter false-positive rate, e.g. 0.001 (clamped to `[1e-9, 0.5]`).
    pub bloom_fp_rate: f64,
    /// Issuer (`iss`) → maximum token lifetime, seconds.
    pub max_lifetimes: HashMap<String, i64>,
    /// Maximum token lifetime, seconds, for issuers not in `max_lifetimes`.
    pub default_max_lifetime: i64,
}

impl Default for DenylistSettings {
    fn default() -> Self {
        Self {
            expected_entries: 100_000,
            bloom_fp_rate: 0.001,
            max_lifetimes: HashMap::new(),
            default_max_lifetime: 24 * 3600,
        }
    }
}

/// What [`Denylist::apply`] or [`Denylist::replace_all`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Rules added: distinct targets of the applied revocations that had not expired
    /// (for `replace_all`, including rules that a later lift in the batch withdrew).
    pub added: usize,
    /// Rules withdrawn by lifts (the rules of every lifted event, counted once).
    pub lifted: usize,
    /// The event id had been applied before (for `replace_all`: some id occurred twice),
    /// so that event changed nothing.
    pub duplicate: bool,
}

/// What [`Denylist::prune_and_rebuild`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RebuildStats {
    /// Rules in the new base.
    pub kept: usize,
    /// Rules dropped because they expired or were lifted.
    pub dropped: usize,
}

/// Size of the denylist, for status answers and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DenylistStats {
    /// Rules held, including lifted or expired ones not yet pruned.
    pub entries: u64,
    /// Bytes of the Bloom filter.
    pub bloom_bytes: u64,
    /// Estimate of all heap bytes held (requested sizes; allocator overhead excluded).
    pub heap_bytes: u64,
}

/// The facts of a token that rules match on. Borrowed: building one allocates nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenFacts<'a> {
    /// `iss` claim.
    pub issuer: &'a str,
    /// `jti` claim.
    pub jti: Option<&'a str>,
    /// `sub` claim.
    pub subject: Option<&'a str>,
    /// `sid` claim (OIDC session id).
    pub session: Option<&'a str>,
    /// `kid` header parameter.
    pub kid: Option<&'a str>,
    /// `iat` claim, Unix seconds. `None` matches every cut-off rule (fails safe).
    pub issued_at: Option<i64>,
}

/// The rule that revokes a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Kind of the matching rule.
    pub kind: RuleKind,
    /// Id of the event that added the rule.
    pub event_id: Arc<str>,
    /// Reason text of that event.
    pub reason: Arc<str>,
    /// Who published that event.
    pub actor: Arc<str>,
    /// The token's (and the rule's) issuer.
    pub issuer: String,
    /// The matched jti / sub / sid / kid, taken from the token; empty for issuer rules.
    pub target: String,
    /// The event's cut-off, Unix seconds (meaningful for subject and issuer rules).
    pub cutoff: i64,
    /// When the event was created, Unix milliseconds.
    pub created_at_ms: i64,
}

/// The set of revocation rules. `Send + Sync`; share it as `Arc<Denylist>`.
pub struct Denylist {
    /// What readers load: replaced as a whole by every change.
    current: ArcSwap<Snapshot>,
    /// Writer-side bookkeeping; readers never take this lock.
    writer: Mutex<Writer>,
    /// Serialises rebuilds and replacements (the slow writers) among themselves.
    maintenance: Mutex<()>,
    fingerprints: Fingerprinter,
    bloom_seed: [u8; 32],
    expected_entries: usize,
    bloom_fp_rate: f64,
    max_lifetimes: HashMap<String, i64>,
    default_max_lifetime: i64,
    clock: SharedClock,
    /// Heap bytes of the writer-side bookkeeping, refreshed after every change so
    /// that [`Denylist::stats`] takes no lock.
    writer_bytes: AtomicU64,
    /// Open Watch streams, woken here by every change that can add a rule they match,
    /// whatever path applied it.
    watchers: Arc<WatchRegistry>,
}

impl std::fmt::Debug for Denylist {
    // Not derived: it would print every fingerprint.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Denylist")
            .field("stats", &self.stats())
            .field("expected_entries", &self.expected_entries)
            .field("bloom_fp_rate", &self.bloom_fp_rate)
            .finish_non_exhaustive()
    }
}

impl Denylist {
    /// An empty denylist. Draws the fingerprint key and Bloom seed from the system RNG.
    pub fn new(settings: DenylistSettings, clock: SharedClock) -> Self {
        let mut random = [0u8; 48];
        // The system RNG failing means the host is unusable for any cryptography.
        aws_lc_rs::rand::fill(&mut random).expect("system random number generator failed");
        let mut sip_key = [0u8; 16];
        sip_key.copy_from_slice(&random[..16]);
        let mut bloom_seed = [0u8; 32];
        bloom_seed.copy_from_slice(&random[16..]);
        let this = Self {
            current: ArcSwap::from_pointee(Snapshot::empty()),
            writer: Mutex::new(Writer::default()),
            maintenance: Mutex::new(()),
            fingerprints: Fingerprinter {
                key: SipHasher13::new_with_key(&sip_key),
            },
            bloom_seed,
            expected_entries: settings.expected_entries.max(1),
            bloom_fp_rate: if settings.bloom_fp_rate.is_finite() {
                settings.bloom_fp_rate.clamp(1e-9, 0.5)
            } else {
                0.001
            },
            max_lifetimes: settings.max_lifetimes,
            default_max_lifetime: settings.default_max_lifetime,
            clock,
            writer_bytes: AtomicU64::new(0),
            watchers: Arc::new(WatchRegistry::new()),
        };
        this.writer_bytes
            .store(this.writer.lock().heap_bytes(), Ordering::Relaxed);
        this
    }

    /// Applies one event (revoke: adds one rule per target; lift: withdraws the rules
    /// of the named earlier events). Idempotent: applying the same event id twice
    /// changes nothing. A revocation already past its expiry adds nothing; lifting an
    /// unknown event id is a no-op. Visible to readers when this returns; the Watch
    /// streams a new rule concerns are woken as soon as it is visible (see
    /// [`Denylist::watch`]).
    pub fn apply(&self, event: &Event) -> Applied {
        let event = event.view();
        let applied = match event.action {
            ActionRef::Revoke(revoke) => self.apply_revoke(&event, &revoke),
            ActionRef::Lift { event_ids } => self.apply_lift(&event, event_ids),
        };
        tracing::debug!(event_id = %event.event_id, ?applied, "denylist event applied");
        applied
    }

    fn apply_revoke(&self, event: &EventRef<'_>, revoke: &RevokeRef<'_>) -> Applied {
        let now = self.clock.now_secs();
        let drop_at = self.drop_at(event, revoke, now);
        if now >= drop_at {
            return Applied::default();
        }
        // Hash outside the lock: a 10 000-target event takes a few hundred µs.
        let mut fps = Vec::new();
        self.push_rules(revoke, 0, &mut fps);
        let mut writer = self.writer.lock();
        if writer.knows(event.event_id) {
            return Applied {
                duplicate: true,
                ..Applied::default()
            };
        }
        let provenance = writer.provenance(event.reason, event.actor);
        let meta = event_meta(event, revoke, drop_at, fps.len(), provenance);
        writer.try_insert(&meta);
        let run = Run {
            rules: fps.iter().map(|&(fp, _)| (fp, Arc::clone(&meta))).collect(),
            kinds: kind_bit(revoke.kind),
        };
        let current = self.current.load_full();
        self.current.store(Arc::new(current.with_run(run)));
        self.writer_bytes
            .store(writer.heap_bytes(), Ordering::Relaxed);
        drop(writer);
        // Only now, with the rule visible to readers: a woken watcher re-checks at once.
        self.watchers
            .wake(fps.iter().map(|&(fp, _)| fp.watch_key()));
        Applied {
            added: fps.len(),
            ..Applied::default()
        }
    }

    fn apply_lift(&self, event: &EventRef<'_>, event_ids: Targets<'_>) -> Applied {
        let mut writer = self.writer.lock();
        if writer.knows(event.event_id) {
            return Applied {
                duplicate: true,
                ..Applied::default()
            };
        }
        let lifted = writer.lift(event.event_id, event_ids);
        self.writer_bytes
            .store(writer.heap_bytes(), Ordering::Relaxed);
        Applied {
            lifted,
            ..Applied::default()
        }
    }

    /// Replaces the whole content atomically (standalone file reload): readers see
    /// either the old set or the new one, never a mix or an empty set. Events are
    /// applied in order with the same rules as [`Denylist::apply`]; events applied
    /// concurrently with a replacement are part of the old content and are lost.
    /// Wakes every Watch stream to re-check (see [`Denylist::watch`]).
    pub fn replace_all(&self, events: &[Event]) -> Applied {
        let expected = events.len();
        let events = events.iter().map(|e| Ok::<_, Infallible>(e.view()));
        let Ok(applied) = self.try_replace_all(vec![events], expected);
        applied
    }

    /// [`Denylist::replace_all`] from events decoded as they are read (a snapshot being
    /// loaded), given as consecutive `parts` of the event sequence, in order. Each
    /// part is decoded, fingerprinted and sorted on a thread of its own (the calling
    /// thread when there is one part); only the bookkeeping of event ids runs on one
    /// thread, in event order, so the result is the same as applying the events one
    /// by one. The first error (in event order) stops the replacement and the content
    /// stays as it was, so a bad snapshot never leaves a partial set in force.
    /// `expected_events` sizes the tables up front (a hint; 0 when unknown).
    pub fn try_replace_all<'a, E, P>(
        &self,
        parts: Vec<P>,
        expected_events: usize,
    ) -> Result<Applied, E>
    where
        E: Send,
        P: IntoIterator<Item = Result<EventRef<'a>, E>> + Send,
    {
        let _maintenance = self.maintenance.lock();
        let started = Instant::now();
        let now = self.clock.now_secs();
        let mut fresh = Writer::default();
        let prepared = self.prepare_parts(parts, &fresh.provenance_hasher, now)?;
        fresh.events.reserve(events_len_hint(expected_events));
        let total_rules = prepared.iter().map(|p| p.rules.len()).sum();
        let (applied, base) = std::thread::scope(|scope| {
            // The Bloom filter (random writes, the slow part of a base at a million
            // rules) is built beside the bookkeeping, from every prepared rule: those
            // of duplicate or lifted events dropped below only make it say "maybe" a
            // little more often, which the exact lookup settles.
            let bloom = scope.spawn(|| {
                let fps = prepared
                    .iter()
                    .flat_map(|p| p.rules.iter().map(|rule| &rule.0));
                self.build_bloom(fps, total_rules)
            });
            let (applied, metas, remaps) = fresh.record_prepared(&prepared);
            let (fps, meta_of, metas, kinds) = merge_prepared(&prepared, &remaps, metas, now);
            let bloom = bloom
                .join()
                .expect("building a Bloom filter does not panic");
            (applied, Base::new(fps, meta_of, metas, kinds, bloom))
        });
        let base = Arc::new(base);
        let count: usize = prepared.iter().map(|p| p.events.len()).sum();
        drop(prepared);
        let old_base = {
            let mut writer = self.writer.lock();
            let old_base = Arc::clone(&self.current.load().base);
            self.current.store(Arc::new(Snapshot::of_base(base)));
            let old_writer = std::mem::replace(&mut *writer, fresh);
            self.writer_bytes
                .store(writer.heap_bytes(), Ordering::Relaxed);
            drop(writer);
            // Freed here, by the maintenance caller, outside the writer lock.
            drop(old_writer);
            old_base
        };
        // A replacement can add any rule (a reloaded file, a snapshot), and finding out
        // which would mean diffing the sets: wake every watcher to re-check instead. It is
        // rare (a file reload, a cold start or stream reset in fleet mode), so the cost
        // in proportion to the watchers is paid seldom. Lifts and rebuilds wake no one:
        // they only take rules away.
        self.watchers.wake_all();
        retire(old_base);
        tracing::debug!(
            events = count,
            ?applied,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "denylist replaced"
        );
        Ok(applied)
    }

    /// The first, parallel step of [`Denylist::try_replace_all`]: each part decoded,
    /// its revocations fingerprinted and their metadata built, its rules sorted.
    fn prepare_parts<'a, E, P>(
        &self,
        parts: Vec<P>,
        hasher: &FastState,
        now: i64,
    ) -> Result<Vec<PreparedPart<'a>>, E>
    where
        E: Send,
        P: IntoIterator<Item = Result<EventRef<'a>, E>> + Send,
    {
        // The lowest index of a part that failed: later parts may stop early, earlier
        // ones must go on, as one of them may hold an earlier error.
        let failed = AtomicUsize::new(usize::MAX);
        let prepare = |(index, part): (usize, P)| {
            let prepared =
                self.prepare_part(part, hasher, now, || failed.load(Ordering::Relaxed) < index);
            if prepared.is_err() {
                failed.fetch_min(index, Ordering::Relaxed);
            }
            prepared
        };
        let results: Vec<Result<PreparedPart<'a>, Option<E>>> = if parts.len() == 1 {
            parts.into_iter().enumerate().map(prepare).collect()
        } else {
            std::thread::scope(|scope| {
                let threads: Vec<_> = parts
                    .into_iter()
                    .enumerate()
                    .map(|part| scope.spawn(|| prepare(part)))
                    .collect();
                threads
                    .into_iter()
                    .map(|t| t.join().expect("preparing events does not panic"))
                    .collect()
            })
        };
        let mut prepared = Vec::with_capacity(results.len());
        for result in results {
            match result {
                Ok(part) => prepared.push(part),
                // The earliest part with an error of its own holds the first error in
                // event order; a part that stopped because an earlier one failed has
                // none (`None`).
                Err(Some(e)) => return Err(e),
                Err(None) => {}
            }
        }
        Ok(prepared)
    }

    fn prepare_part<'a, E>(
        &self,
        events: impl IntoIterator<Item = Result<EventRef<'a>, E>>,
        hasher: &FastState,
        now: i64,
        stop: impl Fn() -> bool,
    ) -> Result<PreparedPart<'a>, Option<E>> {
        let mut part = PreparedPart::default();
        let mut provenances: FastMap<u64, Arc<Provenance>> = FastMap::default();
        for event in events {
            if stop() {
                return Err(None);
            }
            let event = event.map_err(Some)?;
            let local = index_u32(part.events.len());
            let what = match event.action {
                ActionRef::Revoke(revoke) => {
                    let drop_at = self.drop_at(&event, &revoke, now);
                    if now >= drop_at {
                        Prepared::Expired
                    } else {
                        let start = part.rules.len();
                        self.push_rules(&revoke, local, &mut part.rules);
                        let rules = part.rules.len() - start;
                        let key = hasher.hash_one((event.reason, event.actor));
                        let provenance = provenances
                            .entry(key)
                            .or_insert_with(|| Provenance::new(event.reason, event.actor));
                        // A hash collision (2^-64) only costs sharing.
                        let provenance = if *provenance.reason == *event.reason
                            && *provenance.actor == *event.actor
                        {
                            Arc::clone(provenance)
                        } else {
                            Provenance::new(event.reason, event.actor)
                        };
                        Prepared::Revoke(event_meta(&event, &revoke, drop_at, rules, provenance))
                    }
                }
                ActionRef::Lift { event_ids } => {
                    part.lifts.push(event_ids);
                    Prepared::Lift(index_u32(part.lifts.len() - 1))
                }
            };
            part.events.push(PreparedEvent {
                id: event.event_id,
                what,
            });
        }
        sort_rules(&mut part.rules);
        Ok(part)
    }

    /// When the rules of `event` may be dropped (Unix seconds, expiry grace included),
    /// as [`Denylist::apply`] computes it; `None` for a lift. For whoever keeps a copy of
    /// the live events (the local state), so that it forgets an event when this does.
    pub fn event_drop_at(&self, event: &EventRef<'_>) -> Option<i64> {
        match event.action {
            ActionRef::Revoke(revoke) => Some(self.drop_at(event, &revoke, self.clock.now_secs())),
            ActionRef::Lift { .. } => None,
        }
    }

    /// Registers a watcher for a token's facts, under every key a rule could match
    /// them by (the same ones [`Denylist::is_revoked`] looks up). Register before the
    /// first check; then, after each [`Watcher::woken`], check again: the watcher is
    /// woken by every applied rule of those keys and by every replacement, including
    /// rules that turn out not to match (a cut-off older than `issued_at`).
    pub fn watch(&self, token: &TokenFacts<'_>) -> Watcher {
        let keys = LOOKUP_ORDER.into_iter().filter_map(|kind| {
            let target = match kind {
                RuleKind::Jti => token.jti,
                RuleKind::Session => token.session,
                RuleKind::Subject => token.subject,
                RuleKind::Key => token.kid,
                RuleKind::Issuer => Some(""),
            }?;
            Some(self.fingerprints.of(kind, token.issuer, target).watch_key())
        });
        self.watchers.register(keys)
    }

    /// The open watchers (see [`Denylist::watch`]).
    pub fn watchers(&self) -> &WatchRegistry {
        &self.watchers
    }

    /// THE HOT PATH: the rule that revokes this token, if any. Never blocks, never
    /// allocates unless it found a revocation. When several rules match, prefers
    /// jti, then session, subject, key, issuer rules.
    pub fn is_revoked(&self, token: &TokenFacts<'_>) -> Option<Revocation> {
        self.lookup(token, true)
    }

    /// [`Denylist::is_revoked`] without the Bloom filter in front of the exact set.
    /// For benchmarks and tests only.
    #[doc(hidden)]
    pub fn is_revoked_exact_only(&self, token: &TokenFacts<'_>) -> Option<Revocation> {
        self.lookup(token, false)
    }

    fn lookup(&self, token: &TokenFacts<'_>, bloom_gate: bool) -> Option<Revocation> {
        let snapshot = self.current.load();
        if snapshot.kinds == 0 {
            return None;
        }
        // Read the clock only once a fingerprint matched: most lookups never need it.
        let mut now: Option<i64> = None;
        for kind in LOOKUP_ORDER {
            if snapshot.kinds & kind_bit(kind) == 0 {
                continue;
            }
            let target = match kind {
                RuleKind::Jti => token.jti,
                RuleKind::Session => token.session,
                RuleKind::Subject => token.subject,
                RuleKind::Key => token.kid,
                RuleKind::Issuer => Some(""),
            };
            let Some(target) = target else { continue };
            let fp = self.fingerprints.of(kind, token.issuer, target);
            let found = snapshot.find(fp, kind, bloom_gate, |meta| {
                let now = *now.get_or_insert_with(|| self.clock.now_secs());
                meta.matches(now, token.issued_at)
            });
            if let Some(meta) = found {
                return Some(Revocation {
                    kind: meta.kind,
                    event_id: Arc::from(&*meta.event_id),
                    reason: Arc::clone(&meta.provenance.reason),
                    actor: Arc::clone(&meta.provenance.actor),
                    issuer: token.issuer.to_owned(),
                    target: target.to_owned(),
                    cutoff: meta.cutoff,
                    created_at_ms: meta.created_at_ms,
                });
            }
        }
        None
    }

    /// Drops rules that can no longer match a live token and lifted rules, folds the
    /// recent runs into a new base with a fresh Bloom filter, and swaps it in
    /// atomically. Call it periodically from a blocking task; applies proceed while it
    /// works. Also forgets events (for idempotency) once they have expired.
    pub fn prune_and_rebuild(&self) -> RebuildStats {
        let _maintenance = self.maintenance.lock();
        let started = Instant::now();
        // Freeze the current runs: from here on, applies start new runs, and the frozen
        // ones stay visible to readers until the new base (which contains them) is in.
        let frozen = {
            let _writer = self.writer.lock();
            let current = self.current.load_full();
            let frozen = Arc::new(current.frozen());
            self.current.store(Arc::clone(&frozen));
            frozen
        };
        let now = self.clock.now_secs();
        let (base, outcome) = self.build_base(&frozen.base, &frozen.merging, now);
        let stats = RebuildStats {
            kept: base.len(),
            dropped: outcome.dropped,
        };
        let old_base = Arc::clone(&frozen.base);
        drop(frozen);
        {
            let mut writer = self.writer.lock();
            let current = self.current.load_full();
            self.current
                .store(Arc::new(current.with_base(Arc::new(base))));
            writer.forget_expired(&outcome.expired, now);
            self.writer_bytes
                .store(writer.heap_bytes(), Ordering::Relaxed);
        }
        drop(outcome);
        retire(old_base);
        // Only now are the dropped events' reasons and actors unreferenced.
        {
            let mut writer = self.writer.lock();
            writer.forget_unused_provenances();
            self.writer_bytes
                .store(writer.heap_bytes(), Ordering::Relaxed);
        }
        tracing::debug!(
            kept = stats.kept,
            dropped = stats.dropped,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "denylist rebuilt"
        );
        stats
    }

    /// Current size.
    pub fn stats(&self) -> DenylistStats {
        let snapshot = self.current.load();
        DenylistStats {
            entries: snapshot.entries() as u64,
            bloom_bytes: snapshot.base.bloom_bytes() as u64,
            heap_bytes: snapshot.heap_bytes() as u64 + self.writer_bytes.load(Ordering::Relaxed),
        }
    }

    /// Merges `base` with `runs`, dropping rules that are lifted or past their drop
    /// time, and builds the Bloom filter. Expensive; holds no lock.
    fn build_base(&self, base: &Base, runs: &[Arc<Run>], now: i64) -> (Base, BuildOutcome) {
        let mut outcome = BuildOutcome::default();
        // Old base metadata index -> new index (u32::MAX: dropped).
        let mut base_remap = vec![u32::MAX; base.metas.len()];
        let mut metas: Vec<Arc<EventMeta>> = Vec::new();
        let mut kinds = 0u8;
        for (old, meta) in base.metas.iter().enumerate() {
            if meta.is_live(now) {
                base_remap[old] = index_u32(metas.len());
                kinds |= kind_bit(meta.kind);
                metas.push(Arc::clone(meta));
            } else if meta.is_expired(now) {
                outcome.expired.push(Arc::clone(meta));
            }
        }
        // Recent rules: one sorted sequence, metadata numbered on first sight.
        let mut recent: Vec<(Fp, u32)> =
            Vec::with_capacity(runs.iter().map(|r| r.rules.len()).sum());
        // At most one entry per rule (one event per rule is the common worst case):
        // sized up front, a million-rule load does not rehash its way there.
        let mut run_remap: FastMap<*const EventMeta, u32> =
            FastMap::with_capacity_and_hasher(recent.capacity(), FastState::default());
        for run in runs {
            for (fp, meta) in run.rules.iter() {
                let index = *run_remap.entry(Arc::as_ptr(meta)).or_insert_with(|| {
                    if meta.is_live(now) {
                        kinds |= kind_bit(meta.kind);
                        metas.push(Arc::clone(meta));
                        index_u32(metas.len() - 1)
                    } else {
                        if meta.is_expired(now) {
                            outcome.expired.push(Arc::clone(meta));
                        }
                        u32::MAX
                    }
                });
                if index == u32::MAX {
                    outcome.dropped += 1;
                } else {
                    recent.push((*fp, index));
                }
            }
        }
        if runs.len() > 1 {
            sort_rules(&mut recent);
        }
        // Two-way merge of the (sorted) old base with the (sorted) recent rules.
        let capacity = base.fps.len() + recent.len();
        let mut fps: Vec<Fp> = Vec::with_capacity(capacity);
        let mut meta_of: Vec<u32> = Vec::with_capacity(capacity);
        let mut recent = recent.into_iter().peekable();
        for (fp, &old) in base.fps.iter().zip(base.meta_of.iter()) {
            while let Some(&(rfp, rmeta)) = recent.peek() {
                if rfp > *fp {
                    break;
                }
                fps.push(rfp);
                meta_of.push(rmeta);
                recent.next();
            }
            let new = base_remap[old as usize];
            if new == u32::MAX {
                outcome.dropped += 1;
            } else {
                fps.push(*fp);
                meta_of.push(new);
            }
        }
        for (rfp, rmeta) in recent {
            fps.push(rfp);
            meta_of.push(rmeta);
        }
        let bloom = self.build_bloom(fps.iter(), fps.len());
        (Base::new(fps, meta_of, metas, kinds, bloom), outcome)
    }

    /// A Bloom filter of `count` fingerprints; `None` when there are none.
    fn build_bloom<'f>(
        &self,
        fps: impl Iterator<Item = &'f Fp>,
        count: usize,
    ) -> Option<Bloom<Fp>> {
        if count == 0 {
            return None;
        }
        let items = count.max(self.expected_entries);
        let mut bloom =
            Bloom::new_for_fp_rate_with_seed(items, self.bloom_fp_rate, &self.bloom_seed)
                .expect("Bloom parameters are clamped to valid values");
        for fp in fps {
            bloom.set(fp);
        }
        Some(bloom)
    }

    /// Unix seconds from which the event's rules stop matching (grace included).
    fn drop_at(&self, event: &EventRef<'_>, revoke: &RevokeRef<'_>, now: i64) -> i64 {
        // An event without a creation time is treated as created now: later than the
        // truth, so the rule is kept longer, never shorter.
        let created = if event.created_at_ms > 0 {
            event.created_at_ms.div_euclid(1000)
        } else {
            now
        };
        let lifetime = self
            .max_lifetimes
            .get(revoke.issuer)
            .copied()
            .unwrap_or(self.default_max_lifetime);
        let expiry = match (revoke.expires_at, revoke.kind) {
            (Some(at), _) => at,
            (None, RuleKind::Jti | RuleKind::Session) => created.saturating_add(lifetime),
            (None, RuleKind::Subject | RuleKind::Issuer) => revoke.cutoff.saturating_add(lifetime),
            (None, RuleKind::Key) => return i64::MAX,
        };
        expiry.saturating_add(EXPIRY_GRACE_SECS)
    }

    /// Appends the rules of a revocation (its de-duplicated fingerprints, each with
    /// `event`) to `rules`, allocating nothing for the common single target.
    fn push_rules(&self, revoke: &RevokeRef<'_>, event: u32, rules: &mut Vec<(Fp, u32)>) {
        if revoke.kind == RuleKind::Issuer {
            rules.push((
                self.fingerprints.of(RuleKind::Issuer, revoke.issuer, ""),
                event,
            ));
            return;
        }
        let start = rules.len();
        rules.extend(
            revoke
                .targets
                .iter()
                .map(|t| (self.fingerprints.of(revoke.kind, revoke.issuer, t), event)),
        );
        if rules.len() - start > 1 {
            rules[start..].sort_unstable_by_key(|rule| rule.0);
            // De-duplicate the tail in place: `Vec::dedup` works on the whole vector.
            let mut kept = start + 1;
            for i in start + 1..rules.len() {
                if rules[i].0 != rules[kept - 1].0 {
                    rules[kept] = rules[i];
                    kept += 1;
                }
            }
            rules.truncate(kept);
        }
    }

    /// Test hook: sets every bit of the current Bloom filter, so every lookup passes
    /// the gate and must be settled by the exact set.
    #[cfg(test)]
    fn saturate_bloom(&self) {
        let _writer = self.writer.lock();
        let current = self.current.load_full();
        let mut base = (*current.base).clone();
        if let Some(bloom) = base.bloom.as_mut() {
            bloom.fill();
        }
        self.current
            .store(Arc::new(current.with_base(Arc::new(base))));
    }

    /// Test hook: whether the current Bloom filter lets this fingerprint through.
    #[cfg(test)]
    fn bloom_passes(&self, kind: RuleKind, issuer: &str, target: &str) -> bool {
        let fp = self.fingerprints.of(kind, issuer, target);
        self.current
            .load()
            .base
            .bloom
            .as_ref()
            .is_some_and(|b| b.check(&fp))
    }
}

/// Frees a replaced base on the calling (maintenance) thread: waits briefly for
/// readers that still hold it, and leaves it to them only if they take too long.
fn retire(base: Arc<Base>) {
    let deadline = Instant::now() + RETIRE_WAIT;
    while Arc::strong_count(&base) > 1 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    drop(base);
}

/// The order in which kinds are tried: the most specific rule is the best answer.
const LOOKUP_ORDER: [RuleKind; 5] = [
    RuleKind::Jti,
    RuleKind::Session,
    RuleKind::Subject,
    RuleKind::Key,
    RuleKind::Issuer,
];

fn kind_bit(kind: RuleKind) -> u8 {
    match kind {
        RuleKind::Jti => 1,
        RuleKind::Subject => 2,
        RuleKind::Session => 4,
        RuleKind::Key => 8,
        RuleKind::Issuer => 16,
    }
}

fn index_u32(index: usize) -> u32 {
    // 2^32 metadata records would take hundreds of GiB: not a reachable state.
    u32::try_from(index).expect("fewer than 2^32 revocation events")
}

/// A 128-bit keyed fingerprint of `(kind, issuer, target)`. Two `u64`s rather than a
/// `u128`, whose 16-byte alignment would not matter here but costs nothing to avoid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Fp {
    hi: u64,
    lo: u64,
}

impl Fp {
    /// The Watch registry's key for the rule (or lookup) with this fingerprint.
    fn watch_key(self) -> WatchKey {
        WatchKey::new(self.hi, self.lo)
    }
}

impl Hash for Fp {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hi);
        state.write_u64(self.lo);
    }
}

#[derive(Debug)]
struct Fingerprinter {
    /// A hasher holding the secret key, cloned for each fingerprint.
    key: SipHasher13,
}

impl Fingerprinter {
    fn of(&self, kind: RuleKind, issuer: &str, target: &str) -> Fp {
        let mut hasher = self.key;
        hasher.write_u8(kind_bit(kind));
        // Length prefix: ("ab", "c") and ("a", "bc") must differ.
        hasher.write_u64(issuer.len() as u64);
        hasher.write(issuer.as_bytes());
        hasher.write(target.as_bytes());
        let hash = hasher.finish128();
        Fp {
            hi: hash.h2,
            lo: hash.h1,
        }
    }
}

/// Who revoked and why: shared by every event with the same reason and actor.
#[derive(Debug)]
struct Provenance {
    reason: Arc<str>,
    actor: Arc<str>,
}

impl Provenance {
    fn new(reason: &str, actor: &str) -> Arc<Self> {
        Arc::new(Self {
            reason: Arc::from(reason),
            actor: Arc::from(actor),
        })
    }
}

/// The shared metadata of a revocation event's rules.
fn event_meta(
    event: &EventRef<'_>,
    revoke: &RevokeRef<'_>,
    drop_at: i64,
    rules: usize,
    provenance: Arc<Provenance>,
) -> Arc<EventMeta> {
    Arc::new(EventMeta {
        event_id: Box::from(event.event_id),
        provenance,
        cutoff: revoke.cutoff,
        created_at_ms: event.created_at_ms,
        drop_at,
        rules: u32::try_from(rules).unwrap_or(u32::MAX),
        kind: revoke.kind,
        lifted: AtomicBool::new(false),
    })
}

/// A part of a replacement's events, prepared off the writer; see
/// [`Denylist::try_replace_all`].
#[derive(Default)]
struct PreparedPart<'a> {
    events: Vec<PreparedEvent<'a>>,
    /// The part's rules, sorted by fingerprint, each with its index in `events`.
    rules: Vec<(Fp, u32)>,
    /// Targets of the part's lifts (kept aside: `PreparedEvent` stays small).
    lifts: Vec<Targets<'a>>,
}

struct PreparedEvent<'a> {
    id: &'a str,
    what: Prepared,
}

enum Prepared {
    Revoke(Arc<EventMeta>),
    /// A revocation already past its drop time: adds nothing.
    Expired,
    /// Index in the part's `lifts`.
    Lift(u32),
}

/// The last step of [`Denylist::try_replace_all`]: the prepared parts' sorted rules
/// merged into the sorted fingerprints of a base, their metadata indices, the metadata
/// and the kinds present, without the rules of duplicate, lifted or expired events.
fn merge_prepared(
    prepared: &[PreparedPart<'_>],
    remaps: &[Vec<u32>],
    metas: Vec<Arc<EventMeta>>,
    now: i64,
) -> (Vec<Fp>, Vec<u32>, Vec<Arc<EventMeta>>, u8) {
    // Index in `metas` -> index in the base's metadata (u32::MAX: not live).
    let mut live = Vec::with_capacity(metas.len());
    let mut kept = Vec::with_capacity(metas.len());
    let mut kinds = 0u8;
    for meta in metas {
        if meta.is_live(now) {
            live.push(index_u32(kept.len()));
            kinds |= kind_bit(meta.kind);
            kept.push(meta);
        } else {
            live.push(u32::MAX);
        }
    }
    let resolve = |part: usize, local: u32| -> u32 {
        match remaps[part][local as usize] {
            u32::MAX => u32::MAX,
            index => live[index as usize],
        }
    };
    let total: usize = prepared.iter().map(|p| p.rules.len()).sum();
    let mut fps = Vec::with_capacity(total);
    let mut meta_of = Vec::with_capacity(total);
    // A k-way merge of the parts' sorted rules; k is the number of threads.
    let mut heads: Vec<std::iter::Peekable<std::slice::Iter<'_, (Fp, u32)>>> =
        prepared.iter().map(|p| p.rules.iter().peekable()).collect();
    loop {
        let mut best: Option<(usize, Fp)> = None;
        for (part, head) in heads.iter_mut().enumerate() {
            if let Some(&&(fp, _)) = head.peek()
                && best.is_none_or(|(_, b)| fp < b)
            {
                best = Some((part, fp));
            }
        }
        let Some((part, fp)) = best else { break };
        let (_, local) = heads[part].next().copied().expect("peeked");
        let index = resolve(part, local);
        if index != u32::MAX {
            fps.push(fp);
            meta_of.push(index);
        }
    }
    (fps, meta_of, kept, kinds)
}

/// Sorts rules by fingerprint in linear time: keyed fingerprints are uniform (and no
/// caller can steer them without the key), so one counting pass over their top bits
/// spreads them into buckets of about four, and each bucket is then sorted on its
/// own. Several times faster than a comparison sort at a million rules. Should the
/// buckets be uneven after all, each one is still sorted correctly, only slower.
fn sort_rules(rules: &mut Vec<(Fp, u32)>) {
    const PER_BUCKET: usize = 4;
    if rules.len() < 4096 {
        rules.sort_unstable_by_key(|rule| rule.0);
        return;
    }
    let bits = (rules.len() / PER_BUCKET)
        .next_power_of_two()
        .trailing_zeros();
    // `starts[b]` is where bucket `b` begins once the counts are summed up.
    let mut starts = vec![0u32; (1 << bits) + 1];
    for rule in rules.iter() {
        starts[Base::bucket(bits, rule.0) + 1] += 1;
    }
    for b in 1..starts.len() {
        starts[b] += starts[b - 1];
    }
    let mut sorted = vec![(Fp { hi: 0, lo: 0 }, 0u32); rules.len()];
    let mut next = starts.clone();
    for &rule in rules.iter() {
        let slot = &mut next[Base::bucket(bits, rule.0)];
        sorted[*slot as usize] = rule;
        *slot += 1;
    }
    for bucket in starts.windows(2) {
        sorted[bucket[0] as usize..bucket[1] as usize].sort_unstable_by_key(|rule| rule.0);
    }
    *rules = sorted;
}

/// A bounded table size from a count that a signed manifest gave: a wrong one must
/// not reserve gigabytes.
fn events_len_hint(expected: usize) -> usize {
    expected.min(16 << 20)
}

/// What all rules of one revocation event share. Kept small: with one event per rule
/// (individual logouts), this record is most of the memory.
#[derive(Debug)]
struct EventMeta {
    /// A `Box`, not an `Arc`: saves 16 bytes per event; a hit copies it.
    event_id: Box<str>,
    provenance: Arc<Provenance>,
    cutoff: i64,
    created_at_ms: i64,
    /// Unix seconds from which the rules no longer match (grace included).
    drop_at: i64,
    /// Number of rules (distinct targets).
    rules: u32,
    kind: RuleKind,
    /// Set by a lift; readers check it on every match, so a lift is immediate.
    lifted: AtomicBool,
}

impl EventMeta {
    fn is_expired(&self, now: i64) -> bool {
        now >= self.drop_at
    }

    fn is_live(&self, now: i64) -> bool {
        !self.lifted.load(Ordering::Acquire) && !self.is_expired(now)
    }

    fn matches(&self, now: i64, issued_at: Option<i64>) -> bool {
        self.is_live(now)
            && (!self.kind.has_cutoff() || issued_at.is_none_or(|iat| iat <= self.cutoff))
    }
}

/// Set element keyed by event id (saves storing the id twice).
#[derive(Debug)]
struct ById(Arc<EventMeta>);

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.event_id == other.0.event_id
    }
}

impl Eq for ById {}

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must hash like `str` for `Borrow<str>` lookups.
        (*self.0.event_id).hash(state);
    }
}

impl Borrow<str> for ById {
    fn borrow(&self) -> &str {
        &self.0.event_id
    }
}

/// The writer's hash tables: keyed per process like std's, but several times faster
/// on the million-event loads of a snapshot. Their keys come only from events signed
/// by trusted publishers, never from callers' tokens.
type FastState = foldhash::fast::RandomState;
type FastMap<K, V> = HashMap<K, V, FastState>;

/// Writer-side bookkeeping: which events are known (idempotency, lifts).
#[derive(Debug, Default)]
struct Writer {
    /// Every revocation event whose rules may still exist, lifted or not.
    events: HashSet<ById, FastState>,
    /// Applied lift events → the latest drop time of the events they lifted.
    lifts: FastMap<Arc<str>, i64>,
    /// Lifted events, kept in `events` until they expire so a redelivered revoke
    /// cannot bring them back.
    tombstones: Vec<Arc<EventMeta>>,
    /// Interned (reason, actor) pairs by a hash of both: most events repeat one of a
    /// few. On the (2^-64) chance of a hash collision the newer pair replaces the
    /// older in this map, which only costs sharing.
    provenances: FastMap<u64, Arc<Provenance>>,
    provenance_hasher: FastState,
    /// Bytes of the records and strings above (not their tables).
    owned_bytes: usize,
}

impl Writer {
    fn knows(&self, event_id: &str) -> bool {
        self.events.contains(event_id) || self.lifts.contains_key(event_id)
    }

    fn provenance(&mut self, reason: &str, actor: &str) -> Arc<Provenance> {
        let key = self.provenance_hasher.hash_one((reason, actor));
        if let Some(known) = self.provenances.get(&key)
            && *known.reason == *reason
            && *known.actor == *actor
        {
            return Arc::clone(known);
        }
        let fresh = Provenance::new(reason, actor);
        self.owned_bytes += provenance_bytes(&fresh);
        if let Some(old) = self.provenances.insert(key, Arc::clone(&fresh)) {
            self.owned_bytes -= provenance_bytes(&old);
        }
        fresh
    }

    /// Records a revocation event's metadata unless its id is among the known
    /// revocations (then nothing changes); whether it was recorded.
    fn try_insert(&mut self, meta: &Arc<EventMeta>) -> bool {
        let inserted = self.events.insert(ById(Arc::clone(meta)));
        if inserted {
            self.owned_bytes += meta_bytes(meta);
        }
        inserted
    }

    /// Metadata prepared off the writer (by [`Denylist::try_replace_all`]), with its
    /// provenance replaced by this writer's interned one: `interned` maps the prepared
    /// provenances already seen to it.
    fn adopt(
        &mut self,
        meta: &Arc<EventMeta>,
        interned: &mut FastMap<*const Provenance, Arc<Provenance>>,
    ) -> Arc<EventMeta> {
        let prepared = &meta.provenance;
        let provenance = interned
            .entry(Arc::as_ptr(prepared))
            .or_insert_with(|| self.provenance(&prepared.reason, &prepared.actor));
        if Arc::ptr_eq(provenance, prepared) {
            return Arc::clone(meta);
        }
        let mut meta = Arc::clone(meta);
        // The prepared record is not shared yet: give it the interned provenance.
        if let Some(unshared) = Arc::get_mut(&mut meta) {
            unshared.provenance = Arc::clone(provenance);
        }
        meta
    }

    /// The single-threaded step of [`Denylist::try_replace_all`], in event order:
    /// duplicates, lifts and the event id index. Returns what changed, the metadata
    /// of the recorded revocations, and per part its local event index -> index in
    /// that metadata (`u32::MAX`: no rules).
    fn record_prepared(
        &mut self,
        prepared: &[PreparedPart<'_>],
    ) -> (Applied, Vec<Arc<EventMeta>>, Vec<Vec<u32>>) {
        let mut applied = Applied::default();
        let mut metas: Vec<Arc<EventMeta>> = Vec::with_capacity(self.events.capacity());
        let mut interned: FastMap<*const Provenance, Arc<Provenance>> = FastMap::default();
        let mut remaps: Vec<Vec<u32>> = Vec::with_capacity(prepared.len());
        for part in prepared {
            let mut remap = Vec::with_capacity(part.events.len());
            for event in &part.events {
                let mut index = u32::MAX;
                match &event.what {
                    // One hash of the id where `knows` then `insert` would take two:
                    // this is most of the time of this step.
                    Prepared::Revoke(meta) if !self.lifts.contains_key(event.id) => {
                        let meta = self.adopt(meta, &mut interned);
                        if self.try_insert(&meta) {
                            applied.added += meta.rules as usize;
                            index = index_u32(metas.len());
                            metas.push(meta);
                        } else {
                            applied.duplicate = true;
                        }
                    }
                    _ if self.knows(event.id) => applied.duplicate = true,
                    Prepared::Revoke(_) | Prepared::Expired => {}
                    Prepared::Lift(lift) => {
                        applied.lifted += self.lift(event.id, part.lifts[*lift as usize]);
                    }
                }
                remap.push(index);
            }
            remaps.push(remap);
        }
        (applied, metas, remaps)
    }

    /// Lifts the named events; returns the number of rules withdrawn.
    fn lift(&mut self, lift_id: &str, event_ids: Targets<'_>) -> usize {
        let mut withdrawn = 0;
        let mut latest: Option<i64> = None;
        for id in event_ids {
            let Some(known) = self.events.get(id) else {
                continue;
            };
            let meta = Arc::clone(&known.0);
            latest = latest.max(Some(meta.drop_at));
            if !meta.lifted.swap(true, Ordering::AcqRel) {
                withdrawn += meta.rules as usize;
                self.tombstones.push(meta);
            }
        }
        // Remember the lift only if it did something; an unknown id stays a no-op.
        if let Some(latest) = latest {
            let id: Arc<str> = Arc::from(lift_id);
            self.owned_bytes += arc_str_bytes(&id);
            self.lifts.insert(id, latest);
        }
        withdrawn
    }

    /// Forgets expired events, tombstones and lifts.
    fn forget_expired(&mut self, expired: &[Arc<EventMeta>], now: i64) {
        for meta in expired {
            self.forget(meta);
        }
        let mut tombstones = std::mem::take(&mut self.tombstones);
        tombstones.retain(|meta| {
            let keep = !meta.is_expired(now);
            if !keep {
                self.forget(meta);
            }
            keep
        });
        self.tombstones = tombstones;
        let mut freed = 0;
        self.lifts.retain(|id, drop_at| {
            let keep = now < *drop_at;
            if !keep {
                freed += arc_str_bytes(id);
            }
            keep
        });
        self.owned_bytes -= freed;
    }

    /// Drops interned provenances that no event uses any more.
    fn forget_unused_provenances(&mut self) {
        let mut freed = 0;
        self.provenances.retain(|_, p| {
            let keep = Arc::strong_count(p) > 1;
            if !keep {
                freed += provenance_bytes(p);
            }
            keep
        });
        self.owned_bytes -= freed;
    }

    fn forget(&mut self, meta: &Arc<EventMeta>) {
        // Only this very record: a replacement may have installed another with the id.
        let same = self
            .events
            .get(&*meta.event_id)
            .is_some_and(|known| Arc::ptr_eq(&known.0, meta));
        if same {
            self.events.remove(&*meta.event_id);
            self.owned_bytes -= meta_bytes(meta);
        }
    }

    fn heap_bytes(&self) -> u64 {
        let tables = table_bytes::<ById>(self.events.capacity())
            + table_bytes::<(Arc<str>, i64)>(self.lifts.capacity())
            + table_bytes::<(u64, Arc<Provenance>)>(self.provenances.capacity())
            + self.tombstones.capacity() * size_of::<Arc<EventMeta>>();
        (tables + self.owned_bytes) as u64
    }
}

/// Bytes of a hashbrown table with room for `capacity` elements: buckets (a power of
/// two, at most 7/8 full) of `T` plus one control byte each.
fn table_bytes<T>(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity.saturating_mul(8) / 7).next_power_of_two();
    buckets * (size_of::<T>() + 1)
}

/// Heap bytes of an `Arc<str>`: two counters and the text.
fn arc_str_bytes(s: &str) -> usize {
    2 * size_of::<usize>() + s.len()
}

/// Heap bytes of one metadata record and its event id.
fn meta_bytes(meta: &EventMeta) -> usize {
    2 * size_of::<usize>() + size_of::<EventMeta>() + meta.event_id.len()
}

/// Heap bytes of one provenance and its strings.
fn provenance_bytes(p: &Provenance) -> usize {
    2 * size_of::<usize>()
        + size_of::<Provenance>()
        + arc_str_bytes(&p.reason)
        + arc_str_bytes(&p.actor)
}

/// The rules as of the last rebuild: sorted fingerprints, their event metadata, and
/// the Bloom filter over them. Immutable once built.
#[derive(Debug, Clone)]
struct Base {
    /// Sorted (duplicates allowed: two events may revoke the same target).
    fps: Box<[Fp]>,
    /// `meta_of[i]` indexes `metas` for `fps[i]`.
    meta_of: Box<[u32]>,
    metas: Box<[Arc<EventMeta>]>,
    /// Where each bucket of fingerprints starts: the fingerprints of bucket `b` (its
    /// top `directory_bits` bits) are `fps[directory[b]..directory[b + 1]]`. Keyed
    /// fingerprints are uniform, so a bucket holds ~4-8 of them: a lookup touches the
    /// directory and one or two cache lines of `fps`, where a binary search over a
    /// million would touch ~20. Costs 0.5-1 byte per rule.
    directory: Box<[u32]>,
    directory_bits: u32,
    /// `None` when empty.
    bloom: Option<Bloom<Fp>>,
    /// Kinds present (bits of [`kind_bit`]).
    kinds: u8,
}

impl Base {
    fn empty() -> Self {
        Self {
            fps: Box::default(),
            meta_of: Box::default(),
            metas: Box::default(),
            directory: Box::new([0, 0]),
            directory_bits: 0,
            bloom: None,
            kinds: 0,
        }
    }

    /// A base of sorted fingerprints, their metadata indices, the metadata, the kinds
    /// present and the Bloom filter over the fingerprints: builds the directory.
    fn new(
        fps: Vec<Fp>,
        meta_of: Vec<u32>,
        metas: Vec<Arc<EventMeta>>,
        kinds: u8,
        bloom: Option<Bloom<Fp>>,
    ) -> Self {
        let (directory, directory_bits) = Self::directory(&fps);
        Self {
            fps: fps.into_boxed_slice(),
            meta_of: meta_of.into_boxed_slice(),
            metas: metas.into_boxed_slice(),
            directory,
            directory_bits,
            bloom,
            kinds,
        }
    }

    /// ~8 rules per bucket (between 4 and 8), a power of two of buckets.
    const RULES_PER_BUCKET: usize = 8;

    fn bucket(bits: u32, fp: Fp) -> usize {
        // The top `bits` bits, without a shift by 64 when `bits` is 0.
        ((u128::from(fp.hi) << bits) >> 64) as usize
    }

    /// Builds the bucket directory of sorted fingerprints.
    fn directory(fps: &[Fp]) -> (Box<[u32]>, u32) {
        let buckets = (fps.len() / Self::RULES_PER_BUCKET).next_power_of_two();
        let bits = buckets.trailing_zeros();
        let mut directory = Vec::with_capacity(buckets + 1);
        let mut i = 0;
        for b in 0..buckets {
            while i < fps.len() && Self::bucket(bits, fps[i]) < b {
                i += 1;
            }
            directory.push(index_u32(i));
        }
        directory.push(index_u32(fps.len()));
        (directory.into_boxed_slice(), bits)
    }

    fn len(&self) -> usize {
        self.fps.len()
    }

    fn bloom_bytes(&self) -> usize {
        self.bloom.as_ref().map_or(0, |b| b.as_slice().len())
    }

    fn heap_bytes(&self) -> usize {
        size_of::<Self>()
            + self.fps.len() * size_of::<Fp>()
            + self.meta_of.len() * size_of::<u32>()
            + self.metas.len() * size_of::<Arc<EventMeta>>()
            + self.directory.len() * size_of::<u32>()
            + self.bloom_bytes()
    }

    fn find(
        &self,
        fp: Fp,
        kind: RuleKind,
        bloom_gate: bool,
        accept: &mut impl FnMut(&EventMeta) -> bool,
    ) -> Option<&Arc<EventMeta>> {
        if self.kinds & kind_bit(kind) == 0 {
            return None;
        }
        if bloom_gate && !self.bloom.as_ref().is_some_and(|b| b.check(&fp)) {
            return None;
        }
        let b = Self::bucket(self.directory_bits, fp);
        let (lo, hi) = (self.directory[b] as usize, self.directory[b + 1] as usize);
        let start = lo + self.fps[lo..hi].partition_point(|x| *x < fp);
        // Equal fingerprints are in one bucket; the bound check is the slice's.
        for (x, &m) in self.fps[start..].iter().zip(&self.meta_of[start..]) {
            if *x != fp {
                break;
            }
            let meta = &self.metas[m as usize];
            if accept(meta) {
                return Some(meta);
            }
        }
        None
    }
}

/// Rules applied since the last rebuild, sorted by fingerprint.
#[derive(Debug)]
struct Run {
    rules: Box<[(Fp, Arc<EventMeta>)]>,
    kinds: u8,
}

impl Run {
    fn merge(older: &Run, newer: &Run) -> Run {
        let mut rules = Vec::with_capacity(older.rules.len() + newer.rules.len());
        let (mut a, mut b) = (older.rules.iter().peekable(), newer.rules.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => {
                    if x.0 <= y.0 {
                        a.next()
                    } else {
                        b.next()
                    }
                }
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (None, None) => break,
            };
            if let Some((fp, meta)) = next {
                rules.push((*fp, Arc::clone(meta)));
            }
        }
        Run {
            rules: rules.into_boxed_slice(),
            kinds: older.kinds | newer.kinds,
        }
    }

    fn find(
        &self,
        fp: Fp,
        kind: RuleKind,
        accept: &mut impl FnMut(&EventMeta) -> bool,
    ) -> Option<&Arc<EventMeta>> {
        if self.kinds & kind_bit(kind) == 0 {
            return None;
        }
        let start = self.rules.partition_point(|r| r.0 < fp);
        self.rules[start..]
            .iter()
            .take_while(|r| r.0 == fp)
            .map(|r| &r.1)
            .find(|meta| accept(meta))
    }
}

/// What readers see: one consistent state of the denylist.
#[derive(Debug)]
struct Snapshot {
    base: Arc<Base>,
    /// Runs being folded into the next base by a rebuild in progress.
    merging: Arc<[Arc<Run>]>,
    /// Newer runs, each at most half the size of the one before.
    runs: Vec<Arc<Run>>,
    /// Kinds present anywhere (bits of [`kind_bit`]); 0 means no rules at all.
    kinds: u8,
}

impl Snapshot {
    fn empty() -> Self {
        Self::of_base(Arc::new(Base::empty()))
    }

    fn of_base(base: Arc<Base>) -> Self {
        Self {
            kinds: base.kinds,
            base,
            merging: Arc::new([]),
            runs: Vec::new(),
        }
    }

    /// This snapshot plus one run, merged binary-counter style.
    fn with_run(&self, run: Run) -> Self {
        let mut runs = self.runs.clone();
        let mut run = run;
        while let Some(last) = runs.last() {
            if last.rules.len() > run.rules.len() {
                break;
            }
            run = Run::merge(last, &run);
            runs.pop();
        }
        let kinds = self.kinds | run.kinds;
        runs.push(Arc::new(run));
        Self {
            base: Arc::clone(&self.base),
            merging: Arc::clone(&self.merging),
            runs,
            kinds,
        }
    }

    /// This snapshot with its runs moved aside for a rebuild.
    fn frozen(&self) -> Self {
        let merging: Vec<Arc<Run>> = self.merging.iter().chain(&self.runs).cloned().collect();
        Self {
            base: Arc::clone(&self.base),
            merging: merging.into(),
            runs: Vec::new(),
            kinds: self.kinds,
        }
    }

    /// This snapshot with a rebuilt base replacing the old base and the merging runs.
    fn with_base(&self, base: Arc<Base>) -> Self {
        let kinds = self.runs.iter().fold(base.kinds, |k, r| k | r.kinds);
        Self {
            base,
            merging: Arc::new([]),
            runs: self.runs.clone(),
            kinds,
        }
    }

    fn entries(&self) -> usize {
        self.base.len()
            + self
                .merging
                .iter()
                .chain(&self.runs)
                .map(|r| r.rules.len())
                .sum::<usize>()
    }

    fn heap_bytes(&self) -> usize {
        size_of::<Self>()
            + self.base.heap_bytes()
            + self
                .merging
                .iter()
                .chain(&self.runs)
                .map(|r| size_of::<Run>() + r.rules.len() * size_of::<(Fp, Arc<EventMeta>)>())
                .sum::<usize>()
    }

    fn find(
        &self,
        fp: Fp,
        kind: RuleKind,
        bloom_gate: bool,
        mut accept: impl FnMut(&EventMeta) -> bool,
    ) -> Option<&Arc<EventMeta>> {
        for run in self.runs.iter().chain(self.merging.iter()) {
            if let Some(meta) = run.find(fp, kind, &mut accept) {
                return Some(meta);
            }
        }
        self.base.find(fp, kind, bloom_gate, &mut accept)
    }
}

#[derive(Debug, Default)]
struct BuildOutcome {
    /// Rules dropped (lifted or expired).
    dropped: usize,
    /// Expired events met while building: the writer forgets them.
    expired: Vec<Arc<EventMeta>>,
}

#[cfg(test)]
mod tests;
