//! The `jti`s already acted on, so a replayed logout token is refused (Back-Channel Logout
//! 1.0 §2.6 step 7) and a redelivered SET is acknowledged without publishing again.
//!
//! Bounded: an entry is kept until the signal's `iat` falls out of the provider's window
//! (after that, the token is refused as too old anyway), and beyond `capacity` entries the
//! oldest go first. A `jti` is recorded only once its revocations are stored, so a provider
//! retrying after a 503 is not refused as a replay. Per replica: another replica does not
//! know this one's entries, which is why event ids are derived from the signal and
//! JetStream's duplicate window stores one copy.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;

/// See the module docs.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// `(issuer, jti)` → forget after (Unix seconds).
    seen: HashMap<(String, String), i64>,
    /// Insertion order, for eviction.
    order: VecDeque<((String, String), i64)>,
}

impl ReplayCache {
    /// A cache of at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Whether `jti` of `issuer` was recorded and is still remembered at `now`.
    pub fn contains(&self, issuer: &str, jti: &str, now: i64) -> bool {
        let inner = self.inner.lock();
        inner
            .seen
            .get(&(issuer.to_owned(), jti.to_owned()))
            .is_some_and(|until| *until >= now)
    }

    /// Records `jti` of `issuer` until `until` (Unix seconds); drops expired entries and,
    /// beyond capacity, the oldest.
    pub fn record(&self, issuer: &str, jti: &str, until: i64, now: i64) {
        let mut inner = self.inner.lock();
        let key = (issuer.to_owned(), jti.to_owned());
        inner.seen.insert(key.clone(), until);
        inner.order.push_back((key, until));
        while let Some((key, until)) = inner.order.front().cloned() {
            if until >= now && inner.seen.len() <= self.capacity {
                break;
            }
            inner.order.pop_front();
            // Only if this was the entry's latest recording.
            if inner.seen.get(&key) == Some(&until) {
                inner.seen.remove(&key);
            }
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.inner.lock().seen.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
