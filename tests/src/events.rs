//! Revocation events for tests, the JetStream stream they live in, and a publisher
//! that signs and publishes them the way the contract says (`docs/EVENTS.md`,
//! DESIGN "Synchronisation over NATS"): a `SignedEvent` on
//! `denylist.v1.events.<kind>`, `Nats-Msg-Id` = event id, JetStream ack awaited.
//!
//! This is a minimal local publisher, independent of the `denylist-client` crate, so
//! the sidecar is tested against the wire contract rather than against another
//! implementation of it; `denylistctl` is tested separately, end to end.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture, stream};
use bytes::Bytes;
use denylist_proto::envelope::SigningKey;
use denylist_proto::events::{Action, Event, Revoke, RuleKind};
use denylist_proto::subjects;
use prost::Message as _;

use crate::nats::ATTEMPT;
use crate::tokens::{now_ms, now_secs, unique};
use crate::wait::{STEP, wait_for, within, within_for};

/// A revocation of `targets` (jti / sub / sid / kid values; none for
/// [`RuleKind::Issuer`]) for `issuer`, with a fresh event id, created now; cut-off
/// rules cut off at now. Adjust the public fields for anything else.
pub fn revoke(kind: RuleKind, issuer: &str, targets: &[&str]) -> Event {
    Event {
        event_id: unique("ev"),
        action: Action::Revoke(Revoke {
            kind,
            issuer: issuer.to_owned(),
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            cutoff: if kind.has_cutoff() { now_secs() } else { 0 },
            expires_at: None,
        }),
        reason: format!("e2e test: revoke {kind}"),
        actor: "denylist-tests".to_owned(),
        created_at_ms: now_ms(),
    }
}

/// A lift of the events `event_ids`, with a fresh event id, created now.
pub fn lift(event_ids: &[&str]) -> Event {
    Event {
        event_id: unique("lift"),
        action: Action::Lift {
            event_ids: event_ids.iter().map(|t| (*t).to_owned()).collect(),
        },
        reason: "e2e test: lift".to_owned(),
        actor: "denylist-tests".to_owned(),
        created_at_ms: now_ms(),
    }
}

/// Sets the cut-off of a subject or issuer revocation (Unix seconds).
pub fn with_cutoff(mut event: Event, cutoff: i64) -> Event {
    if let Action::Revoke(r) = &mut event.action {
        r.cutoff = cutoff;
    }
    event
}

/// Sets when a revocation's rules may be dropped (Unix seconds).
pub fn with_expiry(mut event: Event, expires_at: i64) -> Event {
    if let Action::Revoke(r) = &mut event.action {
        r.expires_at = Some(expires_at);
    }
    event
}

/// How the test stream is created: the contract's settings, replicas chosen per test.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Stream name. Default [`subjects::DEFAULT_STREAM`].
    pub name: String,
    /// Replicas: 1 on a single server, 3 on a cluster.
    pub replicas: usize,
    /// `max_age`. Default 48 h (longer than every test issuer's `max_lifetime`).
    pub max_age: Duration,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            name: subjects::DEFAULT_STREAM.to_owned(),
            replicas: 1,
            max_age: Duration::from_secs(48 * 3600),
        }
    }
}

/// The stream configuration the contract prescribes: subjects `denylist.v1.events.>`,
/// file storage, a 2 min duplicate window, direct get, and republish of every stored
/// message to `denylist.v1.live.>` (with its sequence in headers).
pub fn stream_config(options: &StreamOptions) -> stream::Config {
    stream::Config {
        name: options.name.clone(),
        subjects: vec![subjects::EVENTS_WILDCARD.to_owned()],
        storage: stream::StorageType::File,
        num_replicas: options.replicas,
        max_age: options.max_age,
        duplicate_window: Duration::from_secs(120),
        allow_direct: true,
        republish: Some(stream::Republish {
            source: subjects::EVENTS_WILDCARD.to_owned(),
            destination: subjects::LIVE_DESTINATION.to_owned(),
            headers_only: false,
        }),
        ..Default::default()
    }
}

/// Creates the stream (or returns the existing one), retrying for a while: a freshly
/// formed cluster may not place an R3 stream until every peer has reported in.
pub async fn init_stream(
    client: &async_nats::Client,
    options: &StreamOptions,
) -> anyhow::Result<stream::Info> {
    let js = jetstream::new(client.clone());
    let config = stream_config(options);
    wait_for(
        Duration::from_secs(30),
        format_args!("creating stream {}", options.name),
        || {
            let js = js.clone();
            let config = config.clone();
            async move {
                let attempt = async {
                    let mut stream = js.get_or_create_stream(config).await?;
                    stream.info().await.cloned().map_err(anyhow::Error::from)
                };
                // A cluster still electing leaders may leave a request unanswered: ask again.
                tokio::time::timeout(2 * ATTEMPT, attempt)
                    .await
                    .map_err(|_| anyhow::anyhow!("no answer within {:?}", 2 * ATTEMPT))?
            }
        },
    )
    .await
}

/// A stream's info, bounded by a timeout.
pub async fn stream_info(
    client: &async_nats::Client,
    stream: &str,
) -> anyhow::Result<jetstream::stream::Info> {
    let js = jetstream::new(client.clone());
    within_for(
        2 * ATTEMPT,
        format_args!("stream info of {stream}"),
        async {
            js.get_stream(stream)
                .await?
                .get_info()
                .await
                .map_err(anyhow::Error::from)
        },
    )
    .await?
}

/// `(messages, last sequence)` of a stream.
pub async fn stream_state(client: &async_nats::Client, stream: &str) -> anyhow::Result<(u64, u64)> {
    let info = stream_info(client, stream).await?;
    Ok((info.state.messages, info.state.last_sequence))
}

/// Signs events with an Ed25519 publisher key and publishes them to the stream.
#[derive(Debug)]
pub struct EventPublisher {
    js: jetstream::Context,
    key: SigningKey,
}

impl EventPublisher {
    /// A publisher with a freshly generated key, publishing through `client`.
    pub fn new(client: async_nats::Client) -> Self {
        let (key, _pem) = SigningKey::generate().expect("Ed25519 key generation works");
        Self::with_key(client, key)
    }

    /// A publisher with the given key.
    pub fn with_key(client: async_nats::Client, key: SigningKey) -> Self {
        Self {
            js: jetstream::new(client),
            key,
        }
    }

    /// The public key sidecars must trust (base64url), for
    /// [`crate::SidecarOptions::trusted_publishers`].
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// The signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The JetStream context (for raw publishes and stream queries).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The exact bytes published for `event`: an encoded, signed `SignedEvent`.
    pub fn envelope(&self, event: &Event) -> Bytes {
        Bytes::from(self.key.sign(event).encode_to_vec())
    }

    /// Signs and publishes one event; returns its stream sequence once JetStream has
    /// acknowledged it.
    pub async fn publish(&self, event: &Event) -> anyhow::Result<u64> {
        event.validate().context("test bug: invalid event")?;
        let ack = self.send(event).await?;
        let ack = within(format_args!("ack of event {}", event.event_id), ack)
            .await?
            .with_context(|| format!("publishing event {}", event.event_id))?;
        Ok(ack.sequence)
    }

    /// Publishes many events, pipelined (at most `IN_FLIGHT` acks outstanding), in
    /// order; returns the sequence of each.
    pub async fn publish_all(&self, events: &[Event]) -> anyhow::Result<Vec<u64>> {
        const IN_FLIGHT: usize = 512;
        let mut sequences = Vec::with_capacity(events.len());
        for chunk in events.chunks(IN_FLIGHT) {
            let mut acks = Vec::with_capacity(chunk.len());
            for event in chunk {
                event.validate().context("test bug: invalid event")?;
                acks.push(self.send(event).await?);
            }
            for (ack, event) in acks.into_iter().zip(chunk) {
                let ack = within(format_args!("ack of event {}", event.event_id), ack)
                    .await?
                    .with_context(|| format!("publishing event {}", event.event_id))?;
                sequences.push(ack.sequence);
            }
        }
        Ok(sequences)
    }

    /// Publishes `event`, retrying with the same `Nats-Msg-Id` (so JetStream stores it
    /// once) until acknowledged or `timeout` passes: for publishing through a cluster
    /// that is losing a node.
    pub async fn publish_with_retry(
        &self,
        event: &Event,
        timeout: Duration,
    ) -> anyhow::Result<u64> {
        wait_for(
            timeout,
            format_args!("a JetStream ack of {}", event.event_id),
            || async {
                let ack = self.send(event).await?;
                let ack = tokio::time::timeout(ATTEMPT, ack)
                    .await
                    .map_err(|_| anyhow::anyhow!("no ack within {ATTEMPT:?}"))??;
                Ok::<_, anyhow::Error>(ack.sequence)
            },
        )
        .await
    }

    /// Publishes arbitrary bytes on `subject` (with `Nats-Msg-Id` if given) and waits
    /// for the ack: for forged, unsigned and garbage messages.
    pub async fn publish_raw(
        &self,
        subject: &str,
        msg_id: Option<&str>,
        payload: Bytes,
    ) -> anyhow::Result<u64> {
        let mut headers = HeaderMap::new();
        if let Some(id) = msg_id {
            headers.insert(subjects::HEADER_MSG_ID, id);
        }
        let ack = within(
            format_args!("publishing raw bytes on {subject}"),
            self.js
                .publish_with_headers(subject.to_owned(), headers, payload),
        )
        .await??;
        let ack = within(format_args!("ack of a raw publish on {subject}"), ack).await??;
        Ok(ack.sequence)
    }

    async fn send(&self, event: &Event) -> anyhow::Result<PublishAckFuture> {
        let mut headers = HeaderMap::new();
        headers.insert(subjects::HEADER_MSG_ID, event.event_id.as_str());
        within(
            format_args!("publishing event {}", event.event_id),
            self.js.publish_with_headers(
                subjects::subject_for(event),
                headers,
                self.envelope(event),
            ),
        )
        .await?
        .with_context(|| format!("publishing event {}", event.event_id))
    }
}

/// Waits until JetStream answers through `client` (after a server restart, the first
/// requests may fail while the client reconnects).
pub async fn wait_stream_reachable(
    client: &async_nats::Client,
    stream: &str,
) -> anyhow::Result<()> {
    wait_for(
        STEP * 3,
        format_args!("stream {stream} to be reachable"),
        || async { stream_state(client, stream).await.map(drop) },
    )
    .await
}
