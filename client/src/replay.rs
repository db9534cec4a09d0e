//! Reading the stream back: every stored event with its sequence and time ([`read`]), and
//! the rules they add up to ([`live_rules`]) — what `denylistctl history` and `list` show.
//!
//! The stream is read with an ordered consumer (ephemeral, flow-controlled, recreated by the
//! client on a gap), up to the last sequence it had when reading began. Events can be checked
//! against the trusted publisher keys the sidecars use; then anything else is reported as
//! rejected, exactly as a sidecar would refuse to apply it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use denylist_proto::envelope::TrustedKeys;
use denylist_proto::events::{Action, Event, RuleKind};
use denylist_proto::pb;
use futures::StreamExt as _;
use prost::Message as _;
use serde::Serialize;

use crate::stream::{self, StreamError, js_error};

/// Where reading starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The first stored event.
    All,
    /// The first event stored at or after this Unix time (seconds).
    Since(i64),
    /// The first event after this stream sequence.
    After(u64),
}

/// Whether an event's signature was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trust {
    /// Signed by one of the given trusted keys.
    Verified,
    /// No trusted keys were given; the signature was not checked.
    Unchecked,
}

/// One event as the stream stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Stream sequence.
    pub sequence: u64,
    /// When JetStream stored it, Unix milliseconds.
    pub stored_at_ms: i64,
    /// The subject it was published on.
    pub subject: String,
    /// The publisher key id in its envelope.
    pub key_id: String,
    /// Whether its signature was checked.
    pub trust: Trust,
    /// The event.
    pub event: Event,
}

/// A stored message that is not an applicable event (undecodable, unsigned, or signed by an
/// untrusted key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// Stream sequence.
    pub sequence: u64,
    /// Why it would not be applied.
    pub reason: String,
}

/// The result of reading the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    /// Events in sequence order.
    pub events: Vec<StoredEvent>,
    /// Messages a sidecar would refuse, in sequence order.
    pub rejected: Vec<Rejected>,
    /// The stream's last sequence when reading began.
    pub last_sequence: u64,
}

/// Why the stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The stream is missing or JetStream failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// Messages were pending but none came within the idle timeout.
    #[error("reading stream {stream} stalled after sequence {after}: no message within {}", humantime::format_duration(*.idle))]
    Stalled {
        /// Stream name.
        stream: String,
        /// Last sequence read.
        after: u64,
        /// How long it waited.
        idle: Duration,
    },
}

/// Reads the stream from `start` up to its last sequence as of now. With `trusted`, only
/// events signed by those keys are returned (the rest land in [`Replay::rejected`]); without,
/// signatures are not checked. `idle` bounds the wait for each message.
pub async fn read(
    js: &jetstream::Context,
    stream_name: &str,
    start: Start,
    trusted: Option<&TrustedKeys>,
    idle: Duration,
) -> Result<Replay, ReplayError> {
    let stream = stream::get(js, stream_name).await?;
    let state = &stream.cached_info().state;
    let mut replay = Replay {
        last_sequence: state.last_sequence,
        ..Replay::default()
    };
    if state.messages == 0 {
        return Ok(replay);
    }
    let deliver_policy = match start {
        Start::All => DeliverPolicy::All,
        Start::Since(secs) => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp(secs)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        },
        Start::After(seq) if seq >= state.last_sequence => return Ok(replay),
        Start::After(seq) => DeliverPolicy::ByStartSequence {
            start_sequence: seq + 1,
        },
    };
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy,
            description: Some("denylistctl read-back".to_owned()),
            ..OrderedConfig::default()
        })
        .await
        .map_err(|e| js_error(stream_name, e))?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(replay);
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| js_error(stream_name, e))?;
    let mut after = 0;
    // Signatures are checked in batches on every core: one Ed25519 check costs tens of
    // microseconds, which is most of the time of reading a million events.
    let mut batch: Vec<Raw> = Vec::with_capacity(BATCH);
    loop {
        let next = tokio::time::timeout(idle, messages.next())
            .await
            .map_err(|_| ReplayError::Stalled {
                stream: stream_name.to_owned(),
                after,
                idle,
            })?;
        let Some(message) = next else { break };
        let message = message.map_err(|e| js_error(stream_name, e))?;
        let info = message.info().map_err(|e| js_error(stream_name, e))?;
        let (sequence, pending) = (info.stream_sequence, info.pending);
        let stored_at_ms =
            i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        after = sequence;
        batch.push(Raw {
            sequence,
            stored_at_ms,
            subject: message.message.subject.to_string(),
            payload: message.message.payload.clone(),
        });
        if batch.len() == BATCH {
            open_batch(std::mem::take(&mut batch), trusted, &mut replay).await;
        }
        if pending == 0 || sequence >= replay.last_sequence {
            break;
        }
    }
    open_batch(batch, trusted, &mut replay).await;
    Ok(replay)
}

/// Messages checked together; big enough to keep every core busy for a while.
const BATCH: usize = 8192;

/// A stored message not yet opened.
struct Raw {
    sequence: u64,
    stored_at_ms: i64,
    subject: String,
    payload: bytes::Bytes,
}

/// Opens a batch of messages (in parallel, off the async runtime) and appends the
/// results to `replay` in sequence order.
async fn open_batch(batch: Vec<Raw>, trusted: Option<&TrustedKeys>, replay: &mut Replay) {
    if batch.is_empty() {
        return;
    }
    let trusted = trusted.cloned();
    let opened = tokio::task::spawn_blocking(move || {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let chunk = batch.len().div_ceil(threads);
        let results: Vec<_> = std::thread::scope(|scope| {
            let workers: Vec<_> = batch
                .chunks(chunk)
                .map(|part| {
                    let trusted = trusted.as_ref();
                    scope.spawn(move || {
                        part.iter()
                            .map(|raw| open(&raw.payload, trusted))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("opening events does not panic"))
                .collect()
        });
        (batch, results)
    })
    .await
    .expect("opening events does not panic");
    let (batch, results) = opened;
    for (raw, result) in batch.into_iter().zip(results) {
        match result {
            Ok((key_id, event, trust)) => replay.events.push(StoredEvent {
                sequence: raw.sequence,
                stored_at_ms: raw.stored_at_ms,
                subject: raw.subject,
                key_id,
                trust,
                event,
            }),
            Err(reason) => replay.rejected.push(Rejected {
                sequence: raw.sequence,
                reason,
            }),
        }
    }
}

/// Decodes a stored message: the envelope's key id and the event, checked against `trusted`
/// when given. The error says why a sidecar would not apply it.
pub fn open(
    payload: &[u8],
    trusted: Option<&TrustedKeys>,
) -> Result<(String, Event, Trust), String> {
    let signed =
        pb::SignedEvent::decode(payload).map_err(|e| format!("not a signed event: {e}"))?;
    match trusted {
        Some(keys) => {
            let event = keys.open(payload).map_err(|e| e.to_string())?;
            Ok((signed.key_id, event, Trust::Verified))
        }
        None => {
            let raw = pb::RevocationEvent::decode(signed.event.as_slice())
                .map_err(|e| format!("not an event: {e}"))?;
            let event = Event::from_proto(raw).map_err(|e| format!("invalid event: {e}"))?;
            Ok((signed.key_id, event, Trust::Unchecked))
        }
    }
}

/// One live rule: a target of a revocation that has not been lifted or expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRule {
    /// The revoking event.
    pub event_id: String,
    /// Its stream sequence.
    pub sequence: u64,
    /// Rule kind.
    pub kind: RuleKind,
    /// Issuer.
    pub issuer: String,
    /// jti / sub / sid / kid; empty for issuer rules.
    pub target: String,
    /// Unix seconds; subject and issuer rules.
    pub cutoff: Option<i64>,
    /// Unix seconds when the rule may be dropped; `None` when unknown here (derived from the
    /// issuer's maximum token lifetime, which only the sidecars know) or never (key rules).
    pub expires_at: Option<i64>,
    /// Reason.
    pub reason: String,
    /// Who revoked.
    pub actor: String,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: i64,
}

/// Applies events in order as a sidecar does — the first event with an id wins (a lifted
/// id stays known, so publishing it again does not bring it back), a lift withdraws the
/// named events, rules past their expiry are dropped — and returns the rules
/// left, in sequence order. `max_token_lifetime`, when given, derives the expiry of rules
/// without an explicit one (jti and session: creation + lifetime; subject and issuer:
/// cut-off + lifetime; key: never).
pub fn live_rules(
    events: &[StoredEvent],
    now_secs: i64,
    max_token_lifetime: Option<Duration>,
) -> Vec<LiveRule> {
    let mut revokes: HashMap<&str, &StoredEvent> = HashMap::new();
    // Every revocation id seen, lifted or not.
    let mut known: HashSet<&str> = HashSet::new();
    for stored in events {
        match &stored.event.action {
            Action::Revoke(_) => {
                let id = stored.event.event_id.as_str();
                if known.insert(id) {
                    revokes.insert(id, stored);
                }
            }
            Action::Lift { event_ids } => {
                for id in event_ids {
                    revokes.remove(id.as_str());
                }
            }
        }
    }
    let mut live: Vec<&StoredEvent> = revokes.into_values().collect();
    live.sort_by_key(|s| s.sequence);
    let lifetime = max_token_lifetime.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let mut rules = Vec::new();
    for stored in live {
        let Action::Revoke(r) = &stored.event.action else {
            continue;
        };
        let created_secs = stored.event.created_at_ms.div_euclid(1000);
        let expires_at = r.expires_at.or_else(|| {
            let base = match r.kind {
                RuleKind::Jti | RuleKind::Session => created_secs,
                RuleKind::Subject | RuleKind::Issuer => r.cutoff,
                RuleKind::Key => return None,
            };
            lifetime.map(|l| base.saturating_add(l))
        });
        if expires_at.is_some_and(|e| e <= now_secs) {
            continue;
        }
        let targets: Vec<String> = if r.kind == RuleKind::Issuer {
            vec![String::new()]
        } else {
            r.targets.clone()
        };
        for target in targets {
            rules.push(LiveRule {
                event_id: stored.event.event_id.clone(),
                sequence: stored.sequence,
                kind: r.kind,
                issuer: r.issuer.clone(),
                target,
                cutoff: r.kind.has_cutoff().then_some(r.cutoff),
                expires_at,
                reason: stored.event.reason.clone(),
                actor: stored.event.actor.clone(),
                created_at_ms: stored.event.created_at_ms,
            });
        }
    }
    rules
}

/// Which kind of event a filter keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindFilter {
    /// Revocations of this kind.
    Rule(RuleKind),
    /// Lifts.
    Lift,
}

impl std::str::FromStr for KindFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("lift") {
            return Ok(Self::Lift);
        }
        s.to_ascii_lowercase()
            .parse::<RuleKind>()
            .map(Self::Rule)
            .map_err(|_| {
                format!("unknown kind {s:?}; use jti, subject, session, key, issuer or lift")
            })
    }
}

/// Filters for `list` and `history`; every given criterion must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Exact issuer.
    pub issuer: Option<String>,
    /// Kind of rule, or lifts.
    pub kind: Option<KindFilter>,
    /// Exact target (jti / sub / sid / kid, or a lifted event id).
    pub target: Option<String>,
}

impl Filter {
    /// Whether a live rule passes.
    pub fn matches_rule(&self, rule: &LiveRule) -> bool {
        self.issuer.as_ref().is_none_or(|i| *i == rule.issuer)
            && self.kind.is_none_or(|k| k == KindFilter::Rule(rule.kind))
            && self.target.as_ref().is_none_or(|t| *t == rule.target)
    }

    /// Whether an event passes (a lift passes an issuer filter only if it has no issuer
    /// filter to fail: lifts carry no issuer).
    pub fn matches_event(&self, event: &Event) -> bool {
        let (kind, issuer, targets): (KindFilter, Option<&str>, &[String]) = match &event.action {
            Action::Revoke(r) => (KindFilter::Rule(r.kind), Some(&r.issuer), &r.targets),
            Action::Lift { event_ids } => (KindFilter::Lift, None, event_ids),
        };
        self.issuer
            .as_ref()
            .is_none_or(|i| issuer == Some(i.as_str()))
            && self.kind.is_none_or(|k| k == kind)
            && self.target.as_ref().is_none_or(|t| targets.contains(t))
    }
}

#[cfg(test)]
mod tests;
