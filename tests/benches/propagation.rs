//! Publish → every sidecar rejecting: 20 real sidecars on one machine, one NATS
//! server, `ROUNDS` revocations published one at a time.
//!
//! ```text
//! cargo build --release -p denylist-sidecar
//! DENYLIST_SIDECAR_BIN=$PWD/target/release/denylist-sidecar \
//!   cargo bench -p denylist-tests --bench propagation
//! ```
//!
//! Each round opens a `Watch` on every sidecar for a fresh token, publishes a `jti`
//! revocation of it, and records the time from the start of the publish until the
//! last of the 20 sidecars has delivered its revocation notice — that is, until every
//! sidecar has applied the rule and would reject the token. Notices are pushed by the
//! sidecars, so no polling interval inflates the figure. The JetStream ack time is
//! recorded too.

// Bench binaries print their results.
#![allow(clippy::print_stdout)]

use denylist_proto::events::RuleKind;
use denylist_tests::bench::{percentile_ms, until_every_sidecar};
use denylist_tests::events::revoke;
use denylist_tests::{Fleet, unique};

const SIDECARS: usize = 20;
const ROUNDS: usize = 200;

async fn run() -> anyhow::Result<()> {
    // Production log level: the harness default (debug) would time the logger too.
    let fleet = Fleet::start_with(SIDECARS, |o| o.log_filter = "info".to_owned()).await?;
    let mut enforced = Vec::with_capacity(ROUNDS);
    let mut acked = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let jti = unique("prop");
        let token = fleet.issuer.token().jti(&jti).mint();
        let publish = async {
            let event = revoke(RuleKind::Jti, fleet.issuer.iss(), &[&jti]);
            fleet.publish(&event).await.map(drop)
        };
        let (ack, last) = until_every_sidecar(&fleet, &token, publish).await?;
        acked.push(ack);
        enforced.push(last);
    }
    enforced.sort_unstable();
    acked.sort_unstable();
    println!(
        "\n| {SIDECARS} sidecars, {ROUNDS} revocations | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|"
    );
    println!(
        "| publish → JetStream ack | {:.2} | {:.2} | {:.2} |",
        percentile_ms(&acked, 0.5),
        percentile_ms(&acked, 0.99),
        percentile_ms(&acked, 1.0)
    );
    println!(
        "| publish → all {SIDECARS} sidecars rejecting | {:.2} | {:.2} | {:.2} |",
        percentile_ms(&enforced, 0.5),
        percentile_ms(&enforced, 0.99),
        percentile_ms(&enforced, 1.0)
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    denylist_tests::bench::main(run)
}
