//! `denylist.v1.Publisher`: revoke and lift through a sidecar that holds a signing
//! key (off unless `nats.publisher_key_file` is set). Each call builds an event,
//! signs it, publishes it with `Nats-Msg-Id` = event id (so a retried call is
//! deduplicated by JetStream) and answers only after the JetStream ack.

use std::time::Duration;

use denylist_proto::envelope::SigningKey;
use denylist_proto::events::{Action, Event, Revoke, RuleKind};
use denylist_proto::pb;
use denylist_proto::pb::publisher_server::{Publisher, PublisherServer};
use denylist_proto::subjects;
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::clock::SharedClock;

/// The Publisher service.
#[derive(Debug, Clone)]
pub struct PublisherService {
    js: async_nats::jetstream::Context,
    key: std::sync::Arc<SigningKey>,
    clock: SharedClock,
    timeout: Duration,
}

impl PublisherService {
    /// A publisher signing with `key`.
    pub fn new(
        js: async_nats::jetstream::Context,
        key: SigningKey,
        clock: SharedClock,
        timeout: Duration,
    ) -> Self {
        Self {
            js,
            key: std::sync::Arc::new(key),
            clock,
            timeout,
        }
    }

    /// The tonic server wrapper.
    pub fn into_server(self) -> PublisherServer<Self> {
        PublisherServer::new(self)
    }

    async fn publish(&self, event: Event) -> Result<pb::PublishResponse, Status> {
        event
            .validate()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let signed = self.key.sign(&event);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(subjects::HEADER_MSG_ID, event.event_id.as_str());
        let ack = tokio::time::timeout(self.timeout, async {
            self.js
                .publish_with_headers(
                    subjects::subject_for(&event),
                    headers,
                    signed.encode_to_vec().into(),
                )
                .await?
                .await
        })
        .await
        .map_err(|_| {
            Status::unavailable(
                "JetStream did not acknowledge in time; retry (the event id makes it safe)",
            )
        })?
        .map_err(|e| {
            Status::unavailable(format!(
                "publish failed: {e}; retry (the event id makes it safe)"
            ))
        })?;
        Ok(pb::PublishResponse {
            event_id: event.event_id,
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}

/// A fresh random event id.
pub fn new_event_id() -> String {
    let mut b = [0u8; 16];
    // The system RNG does not fail on Linux; a fixed id would only collide and be deduplicated.
    let _ = aws_lc_rs::rand::fill(&mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("ev-{hex}")
}

#[tonic::async_trait]
impl Publisher for PublisherService {
    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let r = request.into_inner();
        let kind = pb::RuleKind::try_from(r.kind)
            .ok()
            .and_then(RuleKind::from_proto)
            .ok_or_else(|| Status::invalid_argument("`kind` is unknown or unspecified"))?;
        let now_ms = self.clock.now_ms();
        let cutoff = if r.cutoff == 0 && kind.has_cutoff() {
            now_ms / 1000
        } else {
            r.cutoff
        };
        let event = Event {
            event_id: if r.event_id.is_empty() {
                new_event_id()
            } else {
                r.event_id
            },
            action: Action::Revoke(Revoke {
                kind,
                issuer: r.issuer,
                targets: r.targets,
                cutoff,
                expires_at: (r.expires_at != 0).then_some(r.expires_at),
            }),
            reason: r.reason,
            actor: r.actor,
            created_at_ms: now_ms,
        };
        Ok(Response::new(self.publish(event).await?))
    }

    async fn lift(
        &self,
        request: Request<pb::LiftRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let r = request.into_inner();
        let event = Event {
            event_id: if r.event_id.is_empty() {
                new_event_id()
            } else {
                r.event_id
            },
            action: Action::Lift {
                event_ids: r.event_ids,
            },
            reason: r.reason,
            actor: r.actor,
            created_at_ms: self.clock.now_ms(),
        };
        Ok(Response::new(self.publish(event).await?))
    }
}
