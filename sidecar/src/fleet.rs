//! Fleet status: every sidecar answers requests on `denylist.v1.status` with its
//! name, applied sequence, age and staleness, so an operator sees who lags.

use std::sync::Arc;

use denylist_proto::pb;
use denylist_proto::subjects;
use futures::StreamExt as _;
use prost::Message as _;
use tokio::sync::watch;

use crate::denylist::Denylist;
use crate::freshness::Freshness;

/// Answers fleet status requests until `shutdown` turns true.
pub async fn answer_status_requests(
    client: async_nats::Client,
    name: String,
    freshness: Arc<Freshness>,
    denylist: Arc<Denylist>,
    shutdown: watch::Receiver<bool>,
) {
    let mut requests = match client.subscribe(subjects::STATUS_SUBJECT).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot subscribe to fleet status requests");
            return;
        }
    };
    loop {
        tokio::select! {
            () = crate::app::stopped(shutdown.clone()) => return,
            request = requests.next() => {
                let Some(request) = request else { return };
                let Some(reply) = request.reply else { continue };
                let view = freshness.view();
                let member = pb::FleetMember {
                    name: name.clone(),
                    ready: view.ready,
                    stale: view.stale,
                    denylist_sequence: view.sequence,
                    denylist_age_ms: view.age_ms,
                    entries: denylist.stats().entries,
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                };
                if let Err(e) = client.publish(reply, member.encode_to_vec().into()).await {
                    tracing::debug!(error = %e, "cannot answer a fleet status request");
                }
            }
        }
    }
}
