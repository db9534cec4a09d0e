//! The Watch registry: which open `Verifier/Watch` streams an applied revocation can
//! concern, so that applying it wakes only those streams instead of every one.
//!
//! A watcher registers under every key a rule could match its token by — (issuer,
//! jti), (issuer, subject), (issuer, session), (issuer, kid) and (issuer) for
//! issuer-wide rules — and holds a [`Watcher`] guard that unregisters it when dropped.
//! The [`Denylist`](crate::denylist::Denylist) owns the registry and wakes the
//! watchers of a revocation's keys right after the rule became visible to readers, on
//! every path that applies rules (live events, catch-up, snapshot load, standalone
//! file), so no caller has to remember to.
//!
//! The registry only narrows *who re-checks*: a woken watcher asks
//! [`Denylist::is_revoked`](crate::denylist::Denylist::is_revoked) again and the
//! denylist decides. So a spurious wake costs one lookup and is never wrong, which is
//! what lets cut-off rules (subject, issuer) wake every watcher of their key and leave
//! the comparison with `iat` to the re-check.
//!
//! Keys are the 128-bit keyed fingerprints the denylist already computes for every
//! rule and every lookup (see the `denylist` module docs): applying a rule costs one
//! hash-map probe per target and no string hashing or allocation, and the registry
//! matches exactly what `is_revoked` matches.
//!
//! Why a [`DashMap`]: registrations and unregistrations come from many Watch tasks at
//! once, on every runtime thread, while the writer thread probes it on every applied
//! revocation. A sharded map lets those proceed in parallel (a probe holds one shard's
//! read lock for one hash lookup), where one `Mutex<HashMap>` would serialise all Watch
//! openings and closings with every apply; the denylist's own copy-on-write snapshots
//! suit a rule set read far more often than it changes, not a map that changes with
//! every stream opened or closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::sync::Notify;

/// What a rule can match a token by: the keyed fingerprint of `(kind, issuer, target)`
/// (target empty for issuer-wide rules), the same value the denylist stores for the
/// rule. Two different keys collide with probability 2^-128; a collision would only
/// cost a spurious re-check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WatchKey {
    hi: u64,
    lo: u64,
}

impl WatchKey {
    /// A key from the two halves of a fingerprint.
    pub(crate) fn new(hi: u64, lo: u64) -> Self {
        Self { hi, lo }
    }
}

/// The watchers registered under one key, by watcher id. A map rather than a list:
/// every watcher of an issuer shares its (issuer) key, and a stream that closes must
/// not scan thousands of others to leave.
type Waiters = std::collections::HashMap<u64, Arc<Notify>, foldhash::fast::RandomState>;

/// The open watchers by key. `Send + Sync`; the denylist shares it as
/// `Arc<WatchRegistry>` with the [`Watcher`] guards it hands out.
#[derive(Debug, Default)]
pub struct WatchRegistry {
    /// Keys are keyed (secret) fingerprints, uniform and not chosen by callers, so a
    /// fast hasher is safe.
    by_key: DashMap<WatchKey, Waiters, foldhash::fast::RandomState>,
    /// Registered watchers: lets an apply skip the probes when nobody watches (a bulk
    /// revocation of 10 000 targets would otherwise probe 10 000 times for nothing).
    watchers: AtomicUsize,
    next_id: AtomicU64,
}

impl WatchRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a watcher under `keys` (each once; duplicates are ignored). The guard
    /// unregisters it when dropped.
    ///
    /// Register *before* the first check of the denylist: a rule applied after that
    /// check wakes this watcher (see [`WatchRegistry::wake`]), and a wake that comes
    /// before the watcher waits is kept until it does, so none is lost.
    pub fn register(self: &Arc<Self>, keys: impl IntoIterator<Item = WatchKey>) -> Watcher {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        let mut registered: Vec<WatchKey> = Vec::with_capacity(5);
        self.watchers.fetch_add(1, Ordering::Relaxed);
        for key in keys {
            if registered.contains(&key) {
                continue;
            }
            self.by_key
                .entry(key)
                .or_default()
                .insert(id, Arc::clone(&notify));
            registered.push(key);
        }
        // Pairs with the fence in `wake`: either the applier sees this registration, or
        // the caller's check that follows sees the applier's rule (a store-load pair on
        // each side, which only sequentially consistent fences order).
        fence(Ordering::SeqCst);
        Watcher {
            registry: Arc::clone(self),
            id,
            keys: registered,
            notify,
        }
    }

    /// Wakes the watchers registered under any of `keys`; returns how many wake-ups
    /// were sent (a watcher under two of the keys counts twice, and is woken once).
    /// Call it after the rules of these keys are visible to readers.
    pub fn wake(&self, keys: impl IntoIterator<Item = WatchKey>) -> usize {
        fence(Ordering::SeqCst);
        if self.watchers.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let mut woken = 0;
        for key in keys {
            if let Some(waiters) = self.by_key.get(&key) {
                for notify in waiters.values() {
                    // `notify_one` keeps a permit when the watcher is not waiting yet.
                    notify.notify_one();
                }
                woken += waiters.len();
            }
        }
        woken
    }

    /// Wakes every watcher; returns how many wake-ups were sent. For a replacement of
    /// the whole rule set, which can add any rule.
    pub fn wake_all(&self) -> usize {
        fence(Ordering::SeqCst);
        if self.watchers.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let mut woken = 0;
        for waiters in &self.by_key {
            for notify in waiters.values() {
                notify.notify_one();
            }
            woken += waiters.len();
        }
        woken
    }

    /// Watchers registered now.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }

    /// Distinct keys registered now (0 once every watcher is gone).
    pub fn keys(&self) -> usize {
        self.by_key.len()
    }

    fn unregister(&self, id: u64, keys: &[WatchKey]) {
        for key in keys {
            if let Entry::Occupied(mut entry) = self.by_key.entry(*key) {
                entry.get_mut().remove(&id);
                if entry.get().is_empty() {
                    entry.remove();
                }
            }
        }
        self.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One registered watcher: wait on [`Watcher::woken`], then re-check the denylist.
/// Unregisters when dropped.
#[derive(Debug)]
pub struct Watcher {
    registry: Arc<WatchRegistry>,
    id: u64,
    keys: Vec<WatchKey>,
    notify: Arc<Notify>,
}

impl Watcher {
    /// Completes when a rule under one of this watcher's keys was applied (or the rule
    /// set was replaced) since the last call returned, or since registration. Several
    /// wake-ups before a call count as one. Cancel-safe.
    pub async fn woken(&self) {
        self.notify.notified().await;
    }

    /// The keys this watcher is registered under.
    pub fn keys(&self) -> &[WatchKey] {
        &self.keys
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.registry.unregister(self.id, &self.keys);
    }
}

#[cfg(test)]
mod tests;
