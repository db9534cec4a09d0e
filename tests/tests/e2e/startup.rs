//! A sidecar started while NATS is unreachable serves its socket but stays not ready
//! (Verify answers gRPC `UNAVAILABLE`), and becomes ready — with everything applied —
//! once NATS starts.

use std::time::Duration;

use denylist_proto::events::RuleKind;
use denylist_proto::pb::Reason;
use denylist_tests::events::{self, EventPublisher, StreamOptions, init_stream};
use denylist_tests::tokens::{ISSUER, OTHER_ISSUER};
use denylist_tests::{
    Issuer, NatsServer, READY_TIMEOUT, Sidecar, SidecarOptions, holds_for, unique,
};

#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_without_nats_stays_unready_until_nats_starts() -> anyhow::Result<()> {
    let mut nats = NatsServer::start().await?;
    let client = nats.connect().await?;
    init_stream(&client, &StreamOptions::default()).await?;
    let publisher = EventPublisher::new(client.clone());
    let issuer = Issuer::new(ISSUER);
    let jti = unique("revoked-before-start");
    let revoked = issuer.token().jti(&jti).mint();
    publisher
        .publish(&events::revoke(RuleKind::Jti, ISSUER, &[&jti]))
        .await?;
    let valid = issuer.token().mint();
    nats.stop();

    let sidecar = Sidecar::start(SidecarOptions::new(
        "early",
        vec![nats.url()],
        publisher.public_key(),
        vec![issuer.clone(), Issuer::new(OTHER_ISSUER)],
    ))
    .await?;
    // The socket comes up (a pod's probes need answers), reporting not ready.
    let status = sidecar
        .wait_status(READY_TIMEOUT, "to answer Status", |_| true)
        .await?;
    assert!(!status.ready, "ready without ever reaching NATS");
    holds_for(
        Duration::from_millis(1500),
        "not ready while NATS is down",
        || async {
            let status = sidecar
                .status()
                .await
                .map_err(|e| format!("Status failed: {e}"))?;
            if status.ready {
                return Err("Status says ready".to_owned());
            }
            for token in [&valid, &revoked] {
                match sidecar.verify(token).await {
                    Err(e) if e.code() == tonic::Code::Unavailable => {}
                    Err(e) => {
                        return Err(format!(
                            "Verify failed with {} instead of UNAVAILABLE",
                            e.code()
                        ));
                    }
                    Ok(a) => {
                        return Err(format!(
                            "Verify answered {} instead of UNAVAILABLE",
                            a.reason
                        ));
                    }
                }
            }
            if let Some(exit) = sidecar.exited() {
                return Err(format!("the sidecar exited ({exit}) instead of retrying"));
            }
            Ok(())
        },
    )
    .await?;

    nats.start_again().await?;
    sidecar.wait_ready(READY_TIMEOUT).await?;
    assert_eq!(sidecar.reason(&revoked).await?, Reason::Revoked);
    assert_eq!(sidecar.reason(&valid).await?, Reason::Ok);
    Ok(())
}
