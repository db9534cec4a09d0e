//! Fleet status: one request on `denylist.v1.status`, answered by every sidecar with a
//! `FleetMember` (name, readiness, applied sequence, age, staleness). The request goes out
//! once with a private reply inbox, and every answer arriving within the wait is collected:
//! a core-NATS scatter-gather, so the number of sidecars does not matter to the server.

use std::time::Duration;

use denylist_proto::pb;
use denylist_proto::subjects;
use futures::StreamExt as _;
use prost::Message as _;
use tokio::time::Instant;

/// Why the fleet could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// Subscribing to the reply inbox failed.
    #[error("cannot subscribe to the reply inbox: {0}")]
    Subscribe(#[source] async_nats::SubscribeError),
    /// Sending the request failed.
    #[error("cannot send the status request: {0}")]
    Publish(#[source] async_nats::PublishError),
    /// The request did not reach the server.
    #[error("cannot flush the status request: {0}")]
    Flush(#[source] async_nats::client::FlushError),
}

/// Every answer to one fleet status request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetReplies {
    /// Decoded answers, sorted by applied sequence (laggards first), then name.
    pub members: Vec<pb::FleetMember>,
    /// Answers that were not `FleetMember`s.
    pub undecodable: usize,
}

/// Asks every sidecar for its state and collects the answers that arrive within `wait`.
pub async fn collect(
    client: &async_nats::Client,
    wait: Duration,
) -> Result<FleetReplies, FleetError> {
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(FleetError::Subscribe)?;
    let request = pb::FleetStatusRequest {}.encode_to_vec();
    client
        .publish_with_reply(subjects::STATUS_SUBJECT, inbox, request.into())
        .await
        .map_err(FleetError::Publish)?;
    client.flush().await.map_err(FleetError::Flush)?;

    let give_up_at = Instant::now() + wait;
    let mut out = FleetReplies::default();
    while let Ok(Some(message)) = tokio::time::timeout_at(give_up_at, replies.next()).await {
        // With no sidecar listening, the server answers "no responders" on the inbox.
        if message.status.is_some() {
            continue;
        }
        match pb::FleetMember::decode(message.payload.as_ref()) {
            Ok(member) => out.members.push(member),
            Err(_) => out.undecodable += 1,
        }
    }
    // Unsubscribing tells the server to stop routing late answers to us.
    replies.unsubscribe().await.ok();
    sort(&mut out.members);
    Ok(out)
}

/// Sorts members by applied sequence (laggards first), then name.
pub fn sort(members: &mut [pb::FleetMember]) {
    members.sort_by(|a, b| {
        a.denylist_sequence
            .cmp(&b.denylist_sequence)
            .then_with(|| a.name.cmp(&b.name))
    });
}

/// Whether a member lags: not ready, stale, or behind the stream's last sequence (when known).
pub fn is_laggard(member: &pb::FleetMember, stream_last_sequence: Option<u64>) -> bool {
    !member.ready
        || member.stale
        || stream_last_sequence.is_some_and(|last| member.denylist_sequence < last)
}
