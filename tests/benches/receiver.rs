//! Identity-provider signal → every sidecar rejecting, through the real `denylist-receiver`:
//! 20 real sidecars, one NATS server, the transmitter simulator.
//!
//! ```text
//! cargo build --release -p denylist-sidecar -p denylist-client
//! DENYLIST_SIDECAR_BIN=$PWD/target/release/denylist-sidecar \
//! DENYLIST_RECEIVER_BIN=$PWD/target/release/denylist-receiver \
//!   cargo bench -p denylist-tests --bench receiver
//! ```
//!
//! Latency: each of `ROUNDS` rounds opens a `Watch` on every sidecar for a fresh token with
//! a fresh `sid`, POSTs a logout token for that session to the receiver, and records the
//! time from the start of the POST until the last of the 20 sidecars has delivered its
//! revocation notice (the receiver's 200, after the JetStream ack, is recorded too).
//!
//! Ingest: `SIGNALS` distinct `session-revoked` SETs pushed with `IN_FLIGHT` requests in
//! flight; every one must be answered 202 and stored (stream message count), and the rate
//! is signals acknowledged per second.

// Bench binaries print their results.
#![allow(clippy::print_stdout)]

use std::time::Instant;

use denylist_tests::bench::{percentile_ms, until_every_sidecar};
use denylist_tests::tokens::ISSUER;
use denylist_tests::transmitter::{
    ReceiverKey, ReceiverOptions, ReceiverProcess, SESSION_REVOKED, Transmitter,
};
use denylist_tests::{Fleet, unique};
use futures::StreamExt as _;
use serde_json::json;

const SIDECARS: usize = 20;
const ROUNDS: usize = 200;
const SIGNALS: usize = 5_000;
const IN_FLIGHT: usize = 32;

async fn run() -> anyhow::Result<()> {
    let key = ReceiverKey::generate()?;
    let public = key.public_key();
    // Production log level: the harness default (debug) would time the logger too.
    let mut fleet = Fleet::start_with(SIDECARS, |o| {
        o.log_filter = "info".to_owned();
        o.trusted_publishers.push(public.clone());
    })
    .await?;
    let transmitter = Transmitter::start().await?;
    let receiver = ReceiverProcess::start(
        &key,
        &ReceiverOptions::new(fleet.nats.url(), &transmitter, ISSUER),
    )
    .await?;

    let mut enforced = Vec::with_capacity(ROUNDS);
    let mut answered = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let sid = unique("sid");
        let token = fleet.issuer.token().sid(&sid).mint();
        let logout =
            transmitter.logout_token(&transmitter.logout_claims(&unique("lt"), Some(&sid), None));
        let post = async {
            let answer = receiver.logout(&logout).await?;
            anyhow::ensure!(answer.status == 200, "{answer:?}");
            Ok(())
        };
        let (post, last) = until_every_sidecar(&fleet, &token, post).await?;
        answered.push(post);
        enforced.push(last);
    }
    enforced.sort_unstable();
    answered.sort_unstable();
    println!(
        "\n| {SIDECARS} sidecars, {ROUNDS} logout tokens | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|"
    );
    for (name, d) in [
        ("POST → receiver answered 200 (JetStream ack)", &answered),
        ("POST → every sidecar rejecting", &enforced),
    ] {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} |",
            percentile_ms(d, 0.5),
            percentile_ms(d, 0.99),
            percentile_ms(d, 1.0)
        );
    }

    // Ingest: distinct SETs, pushed concurrently; with the 20 sidecars following the stream
    // on the same two cores, then with them stopped (the receiver and NATS alone).
    println!(
        "\n| ingest: {SIGNALS} SETs, {IN_FLIGHT} in flight | accepted | stored | seconds | signals/s |\n|---|---:|---:|---:|---:|"
    );
    ingest(
        &fleet,
        &transmitter,
        &receiver,
        "with 20 sidecars following",
    )
    .await?;
    fleet.sidecars.clear();
    ingest(&fleet, &transmitter, &receiver, "receiver and NATS alone").await?;
    Ok(())
}

/// Pushes `SIGNALS` distinct SETs, `IN_FLIGHT` at a time, and prints one table row; fails
/// if one was not answered 202 or not stored.
async fn ingest(
    fleet: &Fleet,
    transmitter: &Transmitter,
    receiver: &ReceiverProcess,
    label: &str,
) -> anyhow::Result<()> {
    let sets: Vec<String> = (0..SIGNALS)
        .map(|_| {
            transmitter.set(&transmitter.set_claims(
                &unique("set"),
                SESSION_REVOKED,
                json!({"format": "opaque", "id": unique("sid")}),
                json!({}),
            ))
        })
        .collect();
    let (before, _) = fleet.stream_state().await?;
    let start = Instant::now();
    let statuses: Vec<u16> = futures::stream::iter(&sets)
        .map(|set| async {
            receiver
                .push(set)
                .await
                .map(|a| a.status)
                .unwrap_or_default()
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let elapsed = start.elapsed();
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    let (after, _) = fleet.stream_state().await?;
    println!(
        "| {label} | {accepted} | {} | {:.2} | {:.0} |",
        after - before,
        elapsed.as_secs_f64(),
        accepted as f64 / elapsed.as_secs_f64()
    );
    anyhow::ensure!(
        accepted == SIGNALS && (after - before) as usize == SIGNALS,
        "signals lost: {accepted} accepted, {} stored of {SIGNALS}",
        after - before
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    denylist_tests::bench::main(run)
}
