//! A ready-made fleet for tests: one JetStream server, the `DENYLIST` stream, a
//! publisher whose key the sidecars trust, two token issuers, and N sidecars, all ready.
//! Plus the assertions tests make about a whole fleet: "every sidecar answers X for
//! this token", "every sidecar has applied up to sequence N", and the fleet status
//! request on `denylist.v1.status`.

use std::time::Duration;

use anyhow::Context as _;
use denylist_proto::events::Event;
use denylist_proto::pb::{self, Reason};
use denylist_proto::subjects;
use futures::StreamExt as _;
use prost::Message as _;

use crate::events::{EventPublisher, StreamOptions, init_stream, stream_state};
use crate::nats::NatsServer;
use crate::sidecar::{READY_TIMEOUT, Sidecar, SidecarOptions};
use crate::tokens::{ISSUER, Issuer, OTHER_ISSUER};
use crate::wait::{wait_for, within};

/// How long a published revocation may take to reach every sidecar in these tests
/// (the contract says milliseconds; the bound is generous for a loaded 2-core runner).
pub const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(10);

/// A NATS server, the stream, a trusted publisher, two issuers and N ready sidecars.
#[derive(Debug)]
pub struct Fleet {
    /// The sidecars, named `s0`, `s1`, …
    pub sidecars: Vec<Sidecar>,
    /// Signs with the key every sidecar trusts.
    pub publisher: EventPublisher,
    /// The test's own client (the publisher's connection).
    pub client: async_nats::Client,
    /// Issues the tokens under test ([`ISSUER`]).
    pub issuer: Issuer,
    /// A second issuer ([`OTHER_ISSUER`]), for rules that must not touch the first.
    pub other_issuer: Issuer,
    /// The server (dropped last: the sidecars go first).
    pub nats: NatsServer,
}

impl Fleet {
    /// Starts a fleet of `sidecars` sidecars with the default [`SidecarOptions`].
    pub async fn start(sidecars: usize) -> anyhow::Result<Self> {
        Self::start_with(sidecars, |_| {}).await
    }

    /// Starts a fleet, letting `configure` adjust each sidecar's options first.
    pub async fn start_with(
        sidecars: usize,
        configure: impl Fn(&mut SidecarOptions),
    ) -> anyhow::Result<Self> {
        let nats = NatsServer::start().await?;
        let client = nats.connect().await?;
        init_stream(&client, &StreamOptions::default()).await?;
        let mut fleet = Self {
            sidecars: Vec::new(),
            publisher: EventPublisher::new(client.clone()),
            client,
            issuer: Issuer::new(ISSUER),
            other_issuer: Issuer::new(OTHER_ISSUER),
            nats,
        };
        let mut started = Vec::new();
        for i in 0..sidecars {
            let mut options = fleet.sidecar_options(&format!("s{i}"));
            configure(&mut options);
            started.push(Sidecar::start(options).await?);
        }
        for sidecar in &started {
            sidecar.wait_ready(READY_TIMEOUT).await?;
        }
        fleet.sidecars = started;
        Ok(fleet)
    }

    /// Options for one more sidecar of this fleet, named `name`.
    pub fn sidecar_options(&self, name: &str) -> SidecarOptions {
        SidecarOptions::new(
            name,
            vec![self.nats.url()],
            self.publisher.public_key(),
            vec![self.issuer.clone(), self.other_issuer.clone()],
        )
    }

    /// Signs and publishes an event; returns its stream sequence.
    pub async fn publish(&self, event: &Event) -> anyhow::Result<u64> {
        self.publisher.publish(event).await
    }

    /// Waits until every sidecar answers `reason` for `token`.
    pub async fn expect_everywhere(&self, token: &str, reason: Reason) -> anyhow::Result<()> {
        expect_reason(&self.sidecars, token, reason, PROPAGATION_TIMEOUT).await
    }

    /// `(messages, last sequence)` of the stream.
    pub async fn stream_state(&self) -> anyhow::Result<(u64, u64)> {
        stream_state(&self.client, subjects::DEFAULT_STREAM).await
    }
}

/// Waits (at most `timeout` in all) until each of `sidecars` answers `reason` for
/// `token`; the error names the sidecar and its last answer.
pub async fn expect_reason<'a>(
    sidecars: impl IntoIterator<Item = &'a Sidecar>,
    token: &str,
    reason: Reason,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    for sidecar in sidecars {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        wait_for(
            left,
            format_args!(
                "sidecar {} to answer {}",
                sidecar.name(),
                reason.as_str_name()
            ),
            || async {
                match sidecar.verify(token).await {
                    Ok(a) if a.reason == reason as i32 => Ok(()),
                    Ok(a) => Err(format!(
                        "{} (valid={}, detail {:?}, sequence {})",
                        Reason::try_from(a.reason).map_or("<unknown>", |r| r.as_str_name()),
                        a.valid,
                        a.detail,
                        a.denylist_sequence
                    )),
                    Err(status) => Err(format!("gRPC {}: {}", status.code(), status.message())),
                }
            },
        )
        .await?;
    }
    Ok(())
}

/// Waits until each of `sidecars` reports an applied sequence of at least `sequence`.
pub async fn expect_sequence<'a>(
    sidecars: impl IntoIterator<Item = &'a Sidecar>,
    sequence: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    for sidecar in sidecars {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        sidecar.wait_sequence(sequence, left).await?;
    }
    Ok(())
}

/// Asks the fleet for its status: a core NATS request on `denylist.v1.status` with a
/// reply inbox, collecting every answer (`pb::FleetMember`) that arrives within
/// `window`, or until `expected` have arrived.
pub async fn fleet_status(
    client: &async_nats::Client,
    expected: usize,
    window: Duration,
) -> anyhow::Result<Vec<pb::FleetMember>> {
    let inbox = client.new_inbox();
    let mut replies = within(
        "subscribing to the reply inbox",
        client.subscribe(inbox.clone()),
    )
    .await??;
    within(
        "publishing the fleet status request",
        client.publish_with_reply(
            subjects::STATUS_SUBJECT,
            inbox,
            pb::FleetStatusRequest {}.encode_to_vec().into(),
        ),
    )
    .await??;
    within("flushing", client.flush()).await??;
    let mut members = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while members.len() < expected {
        let Ok(Some(message)) = tokio::time::timeout_at(deadline, replies.next()).await else {
            break;
        };
        let member = pb::FleetMember::decode(message.payload.as_ref())
            .context("a fleet status answer is not a FleetMember")?;
        members.push(member);
    }
    members.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(members)
}

/// Verifies every token on `sidecar` and returns those whose reason is not `reason`
/// (with what was answered), checking up to 16 concurrently.
pub async fn tokens_not_answering(
    sidecar: &Sidecar,
    tokens: &[String],
    reason: Reason,
) -> anyhow::Result<Vec<String>> {
    let answers: Vec<_> = futures::stream::iter(tokens.iter().enumerate())
        .map(|(i, token)| async move { (i, sidecar.verify(token).await) })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut wrong = Vec::new();
    for (i, answer) in answers {
        match answer {
            Ok(a) if a.reason == reason as i32 => {}
            Ok(a) => wrong.push(format!(
                "token #{i}: {}",
                Reason::try_from(a.reason).map_or("<unknown>", |r| r.as_str_name())
            )),
            Err(status) => wrong.push(format!("token #{i}: gRPC {}", status.code())),
        }
    }
    wrong.sort();
    Ok(wrong)
}

/// Waits until `sidecar` answers `reason` for every one of `tokens`.
pub async fn expect_all_tokens(
    sidecar: &Sidecar,
    tokens: &[String],
    reason: Reason,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait_for(
        timeout,
        format_args!(
            "sidecar {} to answer {} for all {} tokens",
            sidecar.name(),
            reason.as_str_name(),
            tokens.len()
        ),
        || async {
            let wrong = tokens_not_answering(sidecar, tokens, reason)
                .await
                .map_err(|e| e.to_string())?;
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} wrong, e.g. {}",
                    wrong.len(),
                    wrong.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
                ))
            }
        },
    )
    .await
}
