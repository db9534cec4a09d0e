//! [`Publisher`]: signs revocation events and stores them in the JetStream stream.
//!
//! Each event travels as a `denylist.v1.SignedEvent` on `denylist.v1.events.<kind>` (or
//! `.lift`), with the event id as `Nats-Msg-Id`. A publish is done only when JetStream has
//! acknowledged it: the acknowledgement carries the stream sequence every sidecar will apply
//! it at. A NATS outage is never swallowed: [`Publisher::publish`] returns the error, and
//! [`Publisher::publish_with_retry`] retries with jittered backoff until its deadline and then
//! returns the last error. Retrying is safe because the message id is the event id: JetStream
//! stores one copy of a message id within the stream's duplicate window (and answers
//! `duplicate`), and sidecars ignore an event id they have already applied. That holds across a
//! stream-leader failover too: every replica records the message ids it stores, so a new
//! leader recognises a retry of an event the old leader stored but could not acknowledge.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishErrorKind};
use bytes::Bytes;
use denylist_proto::envelope::SigningKey;
use denylist_proto::events::{Action, Event, EventError, Revoke, RuleKind};
use denylist_proto::subjects;
use futures::StreamExt as _;
use prost::Message as _;
use tokio::time::Instant;

use crate::ids;
use crate::nats::{Backoff, NatsError, NatsOptions};
use crate::timespec;

/// A stored event, as JetStream acknowledged it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Published {
    /// The event id (also its `Nats-Msg-Id`).
    pub event_id: String,
    /// The stream that stored it.
    pub stream: String,
    /// Its stream sequence.
    pub sequence: u64,
    /// JetStream had already stored this event id within its duplicate window; `sequence` is
    /// then the earlier copy's.
    pub duplicate: bool,
}

/// Why an event was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The event does not validate; nothing was sent.
    #[error("event {event_id} is invalid: {source}")]
    Invalid {
        /// The event id.
        event_id: String,
        /// What is wrong.
        #[source]
        source: EventError,
    },
    /// No stream stores the event's subject.
    #[error(
        "no JetStream stream stores {subject} (run `denylistctl stream init` first); event {event_id} was not stored"
    )]
    NoStream {
        /// The event id.
        event_id: String,
        /// The subject published on.
        subject: String,
    },
    /// Sending failed or the acknowledgement did not come (in time).
    #[error("event {event_id} was not acknowledged by JetStream: {source}")]
    Nats {
        /// The event id.
        event_id: String,
        /// What async-nats said.
        #[source]
        source: jetstream::context::PublishError,
    },
}

impl PublishError {
    /// Whether trying again may succeed (a NATS outage, a lost ack), as opposed to an event or
    /// setup that will fail the same way every time.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Invalid { .. } => false,
            // During a cluster leader election the stream can briefly have no responders.
            Self::NoStream { .. } => true,
            Self::Nats { source, .. } => !matches!(
                source.kind(),
                PublishErrorKind::MaxPayloadExceeded
                    | PublishErrorKind::WrongLastMessageId
                    | PublishErrorKind::WrongLastSequence
            ),
        }
    }

    /// The id of the event that was not stored.
    pub fn event_id(&self) -> &str {
        match self {
            Self::Invalid { event_id, .. }
            | Self::NoStream { event_id, .. }
            | Self::Nats { event_id, .. } => event_id,
        }
    }
}

/// Signs events and publishes them to JetStream. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Publisher {
    js: jetstream::Context,
    key: Arc<SigningKey>,
}

/// Waits between two publish attempts of one event.
const BACKOFF: Backoff = Backoff::DEFAULT;

/// Less time than this left before the deadline is not worth another attempt.
const LAST_ATTEMPT_FLOOR: Duration = Duration::from_millis(20);

impl Publisher {
    /// A publisher on a JetStream context (see [`crate::NatsOptions::jetstream`]; its timeout
    /// bounds each acknowledgement wait).
    pub fn new(js: jetstream::Context, key: SigningKey) -> Self {
        Self {
            js,
            key: Arc::new(key),
        }
    }

    /// Connects to NATS with `options` (one attempt) and builds a publisher on it.
    pub async fn connect(options: &NatsOptions, key: SigningKey) -> Result<Self, NatsError> {
        let client = options.connect().await?;
        Ok(Self::new(options.jetstream(client), key))
    }

    /// The signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Validates, signs and publishes one event, and waits for its acknowledgement. One
    /// attempt; see [`Publisher::publish_with_retry`].
    pub async fn publish(&self, event: &Event) -> Result<Published, PublishError> {
        let (subject, headers, payload) = self.prepare(event)?;
        let ack = self
            .js
            .publish_with_headers(subject.clone(), headers, payload)
            .await
            .map_err(|e| nats_error(event, &subject, e))?
            .await
            .map_err(|e| nats_error(event, &subject, e))?;
        Ok(Published {
            event_id: event.event_id.clone(),
            stream: ack.stream,
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    /// [`Publisher::publish`], retried with jittered backoff while the error is retryable and
    /// `deadline` (from now) has not passed; an attempt still waiting for its acknowledgement
    /// at the deadline is abandoned. The last error is returned when it has passed (a timeout
    /// when the last attempt was abandoned). Each retry is logged as a warning.
    pub async fn publish_with_retry(
        &self,
        event: &Event,
        deadline: Duration,
    ) -> Result<Published, PublishError> {
        self.retrying(event, deadline, &|e, backoff| {
            tracing::warn!(event_id = %event.event_id, error = %e, ?backoff, "publish failed; retrying");
        })
        .await
    }

    /// Publishes many events with up to `in_flight` awaiting their acknowledgement at once,
    /// each retried until `deadline` (from when its own first attempt starts). `on_stored`
    /// runs for each acknowledged event, in acknowledgement order.
    ///
    /// Every event is validated before the first is sent. Stops at the first event that cannot
    /// be stored and returns its error; the events acknowledged before stay stored, and
    /// publishing the same events again is safe (same ids). During an outage every in-flight
    /// event retries; that is logged once, not per event.
    pub async fn publish_all<F>(
        &self,
        events: &[Event],
        in_flight: usize,
        deadline: Duration,
        mut on_stored: F,
    ) -> Result<Vec<Published>, PublishError>
    where
        F: FnMut(&Published),
    {
        // Validate everything before sending anything: a bad event in the middle must not
        // leave half a batch published.
        for event in events {
            event.validate().map_err(|source| PublishError::Invalid {
                event_id: event.event_id.clone(),
                source,
            })?;
        }
        let warned = AtomicBool::new(false);
        let on_retry = |e: &PublishError, _backoff: Duration| {
            if !warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "publishing is being retried (further retries are not logged)");
            }
        };
        let mut acks = futures::stream::iter(events)
            .map(|event| self.retrying(event, deadline, &on_retry))
            .buffer_unordered(in_flight.max(1));
        let mut stored = Vec::with_capacity(events.len());
        while let Some(result) = acks.next().await {
            let published = result?;
            on_stored(&published);
            stored.push(published);
        }
        Ok(stored)
    }

    async fn retrying(
        &self,
        event: &Event,
        deadline: Duration,
        on_retry: &(dyn Fn(&PublishError, Duration) + Sync),
    ) -> Result<Published, PublishError> {
        let give_up_at = Instant::now() + deadline;
        let mut retry = 0;
        loop {
            let outcome = tokio::time::timeout_at(give_up_at, self.publish(event))
                .await
                .unwrap_or_else(|_| {
                    // Abandoned, not failed: the event may yet be stored. A later publish of
                    // the same event id is recognised as a duplicate.
                    Err(nats_error(
                        event,
                        &subjects::subject_for(event),
                        jetstream::context::PublishError::new(PublishErrorKind::TimedOut),
                    ))
                });
            let e = match outcome {
                Ok(published) => return Ok(published),
                Err(e) if e.is_retryable() => e,
                Err(e) => return Err(e),
            };
            let remaining = give_up_at.saturating_duration_since(Instant::now());
            if remaining < LAST_ATTEMPT_FLOOR {
                return Err(e);
            }
            // Near the deadline, wait less so that one more attempt still fits.
            let backoff = BACKOFF.delay(retry).min(remaining / 2);
            on_retry(&e, backoff);
            tokio::time::sleep(backoff).await;
            retry += 1;
        }
    }

    fn prepare(&self, event: &Event) -> Result<(String, HeaderMap, Bytes), PublishError> {
        event.validate().map_err(|source| PublishError::Invalid {
            event_id: event.event_id.clone(),
            source,
        })?;
        let signed = self.key.sign(event);
        let mut headers = HeaderMap::new();
        headers.insert(subjects::HEADER_MSG_ID, event.event_id.as_str());
        Ok((
            subjects::subject_for(event),
            headers,
            Bytes::from(signed.encode_to_vec()),
        ))
    }
}

/// A revocation with a fresh id, created now: the cut-off is now for subject and issuer
/// rules, there is no explicit expiry, and reason and actor are empty (set the public fields
/// to change any of it). `targets` must be empty for [`RuleKind::Issuer`].
pub fn revocation(kind: RuleKind, issuer: impl Into<String>, targets: Vec<String>) -> Event {
    let now_ms = timespec::now_ms();
    Event {
        event_id: ids::new_event_id(now_ms),
        action: Action::Revoke(Revoke {
            kind,
            issuer: issuer.into(),
            targets,
            cutoff: if kind.has_cutoff() {
                now_ms.div_euclid(1000)
            } else {
                0
            },
            expires_at: None,
        }),
        reason: String::new(),
        actor: String::new(),
        created_at_ms: now_ms,
    }
}

/// A lift of the given revocation event ids, with a fresh id, created now.
pub fn lift(event_ids: Vec<String>) -> Event {
    let now_ms = timespec::now_ms();
    Event {
        event_id: ids::new_event_id(now_ms),
        action: Action::Lift { event_ids },
        reason: String::new(),
        actor: String::new(),
        created_at_ms: now_ms,
    }
}

fn nats_error(
    event: &Event,
    subject: &str,
    source: jetstream::context::PublishError,
) -> PublishError {
    if source.kind() == PublishErrorKind::StreamNotFound {
        PublishError::NoStream {
            event_id: event.event_id.clone(),
            subject: subject.to_owned(),
        }
    } else {
        PublishError::Nats {
            event_id: event.event_id.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests;
