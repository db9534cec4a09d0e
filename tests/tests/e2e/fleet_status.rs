//! Fleet status over NATS: a request on `denylist.v1.status` is answered by every
//! sidecar with its name, readiness and applied sequence.

use std::time::Duration;

use denylist_proto::events::RuleKind;
use denylist_tests::events;
use denylist_tests::tokens::ISSUER;
use denylist_tests::{Fleet, PROPAGATION_TIMEOUT, expect_sequence, fleet_status, unique};

#[tokio::test(flavor = "multi_thread")]
async fn every_sidecar_answers_the_fleet_status_request() -> anyhow::Result<()> {
    let fleet = Fleet::start(3).await?;
    let sequence = fleet
        .publish(&events::revoke(RuleKind::Jti, ISSUER, &[&unique("j")]))
        .await?;
    expect_sequence(&fleet.sidecars, sequence, PROPAGATION_TIMEOUT).await?;

    // Collect every answer for a second: exactly one per sidecar.
    let members = fleet_status(&fleet.client, usize::MAX, Duration::from_secs(1)).await?;
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        ["s0", "s1", "s2"],
        "one answer per sidecar: {members:?}"
    );
    for member in &members {
        assert!(member.ready, "{member:?}");
        assert!(!member.stale, "{member:?}");
        assert_eq!(member.denylist_sequence, sequence, "{member:?}");
        assert_eq!(member.entries, 1, "{member:?}");
    }
    Ok(())
}
