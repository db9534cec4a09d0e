//! The fleet heartbeat and catch-ups without consumers (issue 10): a sidecar hears the
//! stream through `denylistctl heartbeat` and sends no stream-info request of its own
//! while heartbeats flow; without them it falls back to asking the stream (and turns stale
//! when it cannot); forged heartbeats are counted and never trusted; a heartbeat that
//! shows events never seen live starts a catch-up; no catch-up ever creates a consumer;
//! a long catch-up never makes a healthy sidecar stale; and a sequence that is only
//! claimed (a lying heartbeat, an unsigned live header) never makes a sidecar skip events.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use denylist_proto::envelope::{HEARTBEAT_SUBJECT, SigningKey};
use denylist_proto::events::{Event, RuleKind};
use denylist_proto::pb::Reason;
use denylist_tests::events;
use denylist_tests::heartbeat::{
    HEARD, HeartbeatKey, HeartbeatProcess, consumer_count, metrics, now_ms, publish_unseen, sample,
    signed_heartbeat, stream_created,
};
use denylist_tests::tokens::ISSUER;
use denylist_tests::{
    Fleet, Sidecar, SidecarOptions, StalenessPolicy, expect_all_tokens, expect_sequence, holds_for,
    unique, wait_for, wait_until,
};

/// Heartbeats every 200 ms in these tests (1 s in production).
const INTERVAL: Duration = Duration::from_millis(200);
/// Bound on a sidecar applying a backlog of a few thousand events in a debug build.
const CATCH_UP: Duration = Duration::from_secs(60);

/// `n` jti revocations, and a token each one revokes.
fn revocations(fleet: &Fleet, n: usize) -> (Vec<String>, Vec<Event>) {
    (0..n)
        .map(|_| {
            let jti = unique("hb");
            let token = fleet.issuer.token().jti(&jti).mint();
            (token, events::revoke(RuleKind::Jti, ISSUER, &[&jti]))
        })
        .unzip()
}

/// A fleet of `n` sidecars with admin endpoints, trusting `heartbeat_key` too.
async fn fleet_hearing(
    n: usize,
    heartbeat_key: String,
    configure: impl Fn(&mut SidecarOptions),
) -> anyhow::Result<Fleet> {
    Fleet::start_with(n, |o| {
        o.admin = true;
        o.trusted_publishers.push(heartbeat_key.clone());
        configure(o);
    })
    .await
}

/// The sidecar's metrics.
async fn metrics_of(sidecar: &Sidecar) -> anyhow::Result<String> {
    metrics(sidecar.admin_addr().expect("admin endpoint enabled")).await
}

/// Waits until the sidecar has heard trusted heartbeats and is not in fallback.
async fn wait_hearing(sidecar: &Sidecar) -> anyhow::Result<()> {
    wait_for(HEARD, "trusted heartbeats heard, no fallback", || async {
        let m = metrics_of(sidecar).await.map_err(|e| e.to_string())?;
        let heard = sample(&m, "denylist_heartbeats_total");
        let fallback = sample(&m, "denylist_heartbeat_fallback");
        if heard >= 3.0 && fallback == 0.0 {
            Ok(())
        } else {
            Err(format!("heard {heard}, fallback {fallback}"))
        }
    })
    .await
}

fn fallback_polls(m: &str) -> f64 {
    sample(
        m,
        r#"denylist_stream_info_requests_total{reason="fallback"}"#,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_replace_polling_and_their_loss_falls_back_then_turns_stale()
-> anyhow::Result<()> {
    let key = HeartbeatKey::generate()?;
    let mut fleet = fleet_hearing(1, key.public_key(), |o| {
        o.max_staleness = Duration::from_secs(2);
        o.heartbeat_interval = Duration::from_millis(300);
    })
    .await?;
    let mut heartbeat = HeartbeatProcess::start(&key, &fleet.nats.url(), INTERVAL)?;
    let sidecar = fleet.sidecars.remove(0);

    wait_hearing(&sidecar).await?;
    // Steady state: heartbeats flow, the sidecar sends no stream-info request of its own.
    let before = metrics_of(&sidecar).await?;
    holds_for(
        Duration::from_secs(2),
        "no fallback poll while heartbeats flow",
        || async {
            let m = metrics_of(&sidecar).await.map_err(|e| e.to_string())?;
            let polls = fallback_polls(&m);
            if polls == fallback_polls(&before) && sample(&m, "denylist_heartbeat_fallback") == 0.0
            {
                Ok(())
            } else {
                Err(format!("fallback polls {polls}"))
            }
        },
    )
    .await?;
    let after = metrics_of(&sidecar).await?;
    assert!(
        sample(&after, "denylist_heartbeats_total") > sample(&before, "denylist_heartbeats_total"),
        "heartbeats stopped arriving"
    );
    // And it still follows revocations.
    let (tokens, events) = revocations(&fleet, 3);
    fleet.publisher.publish_all(&events).await?;
    expect_all_tokens(&sidecar, &tokens, Reason::Revoked, CATCH_UP).await?;

    // The heartbeat component dies: the sidecar falls back to asking the stream, and
    // stays fresh.
    heartbeat.kill();
    wait_for(HEARD, "the fallback", || async {
        let m = metrics_of(&sidecar).await.map_err(|e| e.to_string())?;
        if sample(&m, "denylist_heartbeat_fallback") == 1.0 && fallback_polls(&m) >= 2.0 {
            Ok(())
        } else {
            Err(format!(
                "fallback {} polls {}",
                sample(&m, "denylist_heartbeat_fallback"),
                fallback_polls(&m)
            ))
        }
    })
    .await?;
    let token = fleet.issuer.token().mint();
    holds_for(
        Duration::from_secs(3),
        "fresh answers in fallback",
        || async {
            match sidecar.verify(&token).await {
                Ok(a) if a.reason == Reason::Ok as i32 && !a.stale => Ok(()),
                Ok(a) => Err(format!(
                    "reason {} stale {} age {}",
                    a.reason, a.stale, a.denylist_age_ms
                )),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;

    // Heartbeats come back: the fallback ends.
    let mut heartbeat = HeartbeatProcess::start(&key, &fleet.nats.url(), INTERVAL)?;
    wait_hearing(&sidecar).await?;
    heartbeat.kill();

    // No heartbeat and no stream: stale within max_staleness (2 s), with margin.
    fleet.nats.stop();
    wait_for(Duration::from_secs(15), "a stale answer", || async {
        match sidecar.verify(&token).await {
            Ok(a) if a.reason == Reason::DenylistStale as i32 => Ok(()),
            Ok(a) => Err(format!("reason {} age {}", a.reason, a.denylist_age_ms)),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_heartbeats_are_ignored_counted_and_never_keep_a_sidecar_fresh() -> anyhow::Result<()>
{
    let trusted = SigningKey::generate()?.0;
    let fleet = fleet_hearing(1, trusted.public_key(), |o| {
        o.max_staleness = Duration::from_secs(2);
        o.heartbeat_interval = Duration::from_millis(300);
        o.staleness_policy = StalenessPolicy::FailClosed;
    })
    .await?;
    let sidecar = &fleet.sidecars[0];
    let created = stream_created(&fleet.client).await?;
    let (_, last) = fleet.stream_state().await?;
    let (untrusted, _) = SigningKey::generate()?;
    // Every kind of heartbeat that must not be believed: an unknown key claiming the
    // stream is far ahead, a trusted key's signature over other bytes, garbage, another
    // stream's heartbeat, and a replay of a genuine heartbeat from an hour ago.
    let forged = move |now: i64| {
        let mut tampered = signed_heartbeat(&trusted, "DENYLIST", created, last, now).to_vec();
        let at = tampered.len() / 2;
        tampered[at] ^= 0x01;
        vec![
            signed_heartbeat(&untrusted, "DENYLIST", created, last + 1_000_000, now),
            bytes::Bytes::from(tampered),
            bytes::Bytes::from_static(b"\x0a\xff\xff not a heartbeat"),
            signed_heartbeat(&trusted, "OTHER", created, last, now),
            signed_heartbeat(&trusted, "DENYLIST", created, last, now - 3_600_000),
        ]
    };
    // The stream goes away (so the fallback poll fails too), while the forged heartbeats
    // keep coming: the sidecar must turn stale anyway.
    let js = async_nats::jetstream::new(fleet.client.clone());
    js.delete_stream(denylist_proto::subjects::DEFAULT_STREAM)
        .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let client = fleet.client.clone();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for payload in forged(now_ms()) {
                    client.publish(HEARTBEAT_SUBJECT, payload).await?;
                }
                client.flush().await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(())
        })
    };
    let token = fleet.issuer.token().mint();
    let stale = wait_for(Duration::from_secs(15), "a stale answer", || async {
        match sidecar.verify(&token).await {
            Ok(a) if a.reason == Reason::DenylistStale as i32 => Ok(()),
            Ok(a) => Err(format!("reason {} age {}", a.reason, a.denylist_age_ms)),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    sender.await??;
    stale?;
    let m = metrics_of(sidecar).await?;
    for reason in [
        "untrusted",
        "signature",
        "malformed",
        "other_stream",
        "clock",
    ] {
        let n = sample(
            &m,
            &format!(r#"denylist_heartbeats_rejected_total{{reason="{reason}"}}"#),
        );
        assert!(n >= 1.0, "no heartbeat rejected as {reason}:\n{m}");
    }
    assert_eq!(
        sample(&m, "denylist_heartbeats_total"),
        0.0,
        "a forged heartbeat was trusted"
    );
    assert_eq!(
        sample(&m, r#"denylist_catch_ups_total{trigger="heartbeat"}"#),
        0.0,
        "a forged heartbeat started a catch-up"
    );
    assert_eq!(sidecar.status().await?.denylist_sequence, last);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_heartbeat_revealing_a_gap_starts_a_catch_up() -> anyhow::Result<()> {
    let key = HeartbeatKey::generate()?;
    let fleet = fleet_hearing(2, key.public_key(), |_| {}).await?;
    let _heartbeat = HeartbeatProcess::start(&key, &fleet.nats.url(), INTERVAL)?;
    for sidecar in &fleet.sidecars {
        wait_hearing(sidecar).await?;
    }
    // Stored, never seen live: only the heartbeat can tell the sidecars.
    let (tokens, events) = revocations(&fleet, 20);
    publish_unseen(&fleet.client, &fleet.publisher, &events).await?;
    let (_, last) = fleet.stream_state().await?;
    expect_sequence(&fleet.sidecars, last, CATCH_UP).await?;
    for sidecar in &fleet.sidecars {
        expect_all_tokens(sidecar, &tokens, Reason::Revoked, CATCH_UP).await?;
        let m = metrics_of(sidecar).await?;
        assert!(
            sample(&m, r#"denylist_catch_ups_total{trigger="heartbeat"}"#) >= 1.0,
            "{}: no catch-up from a heartbeat:\n{m}",
            sidecar.name()
        );
        assert_eq!(
            fallback_polls(&m),
            0.0,
            "{}: polled the stream",
            sidecar.name()
        );
    }
    assert_eq!(consumer_count(&fleet.client).await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn catch_ups_at_start_after_a_gap_and_after_a_nats_restart_create_no_consumer()
-> anyhow::Result<()> {
    let key = HeartbeatKey::generate()?;
    let mut fleet = fleet_hearing(2, key.public_key(), |_| {}).await?;
    let mut heartbeat = HeartbeatProcess::start(&key, &fleet.nats.url(), INTERVAL)?;
    // Watch the consumer count all along, from a connection of its own.
    let watcher_client = fleet.nats.connect().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let (mut peak, mut polls) = (0usize, 0usize);
            while !stop.load(Ordering::Relaxed) {
                // The server restarts during the test: a failed poll is skipped.
                if let Ok(n) = consumer_count(&watcher_client).await {
                    peak = peak.max(n);
                    polls += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (peak, polls)
        })
    };
    let mut all_tokens = Vec::new();

    // Start: a sidecar killed, a backlog published, the sidecar started again.
    let (tokens, events) = revocations(&fleet, 2_000);
    fleet.sidecars[1].kill();
    fleet.publisher.publish_all(&events).await?;
    all_tokens.extend(tokens);
    fleet.sidecars[1].start_again()?;
    fleet.sidecars[1].wait_ready(CATCH_UP).await?;

    // A gap only the heartbeat reveals.
    let (tokens, events) = revocations(&fleet, 200);
    publish_unseen(&fleet.client, &fleet.publisher, &events).await?;
    all_tokens.extend(tokens);
    let (_, last) = fleet.stream_state().await?;
    expect_sequence(&fleet.sidecars, last, CATCH_UP).await?;

    // A NATS restart, with revocations published as soon as it is back; the heartbeat
    // process reconnects by itself too.
    fleet.nats.restart().await?;
    denylist_tests::events::wait_stream_reachable(
        &fleet.client,
        denylist_proto::subjects::DEFAULT_STREAM,
    )
    .await?;
    let (tokens, events) = revocations(&fleet, 300);
    fleet.publisher.publish_all(&events).await?;
    all_tokens.extend(tokens);
    let (_, last) = fleet.stream_state().await?;
    expect_sequence(&fleet.sidecars, last, CATCH_UP).await?;
    for sidecar in &fleet.sidecars {
        expect_all_tokens(sidecar, &all_tokens, Reason::Revoked, CATCH_UP).await?;
    }
    assert!(
        heartbeat.is_running(),
        "the heartbeat process died:\n{}",
        heartbeat.log()
    );

    stop.store(true, Ordering::Relaxed);
    let (peak, polls) = watcher.await?;
    assert!(
        polls >= 10,
        "the consumer count was polled only {polls} times"
    );
    assert_eq!(peak, 0, "a consumer existed on the stream during catch-ups");
    assert_eq!(consumer_count(&fleet.client).await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_catch_up_never_makes_a_healthy_sidecar_stale() -> anyhow::Result<()> {
    let key = HeartbeatKey::generate()?;
    let fleet = fleet_hearing(1, key.public_key(), |o| {
        o.max_staleness = Duration::from_secs(1);
        o.heartbeat_interval = Duration::from_millis(300);
        o.staleness_policy = StalenessPolicy::FailClosed;
    })
    .await?;
    let _heartbeat = HeartbeatProcess::start(&key, &fleet.nats.url(), INTERVAL)?;
    let sidecar = &fleet.sidecars[0];
    wait_hearing(sidecar).await?;
    // Ten thousand events the sidecar never sees live: one long catch-up (in a debug
    // build on a busy runner, seconds of direct gets), while heartbeats keep coming.
    let (tokens, events) = revocations(&fleet, 10_000);
    let publishing = publish_unseen(&fleet.client, &fleet.publisher, &events);
    let token = fleet.issuer.token().mint();
    let done = Arc::new(AtomicBool::new(false));
    let checker = async {
        // Never stale, before, during and after the catch-up.
        let mut answers = 0u64;
        loop {
            let answer = sidecar.verify(&token).await?;
            answers += 1;
            anyhow::ensure!(
                answer.reason == Reason::Ok as i32 && !answer.stale,
                "answer {answers}: reason {} stale {} age {} ms",
                answer.reason,
                answer.stale,
                answer.denylist_age_ms
            );
            if done.load(Ordering::Relaxed) {
                return anyhow::Ok(answers);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let caught_up = async {
        // The checker runs until the sidecar holds every event.
        let r = async {
            wait_until(
                Duration::from_secs(180),
                "the publishing to finish",
                || async { fleet.stream_state().await.is_ok_and(|(m, _)| m >= 10_000) },
            )
            .await?;
            let (_, last) = fleet.stream_state().await?;
            expect_sequence([sidecar], last, Duration::from_secs(120)).await
        }
        .await;
        done.store(true, Ordering::Relaxed);
        r
    };
    let (published, answers, caught_up) = tokio::join!(publishing, checker, caught_up);
    published?;
    caught_up?;
    let answers = answers?;
    assert!(answers >= 10, "only {answers} answers checked");
    let sample_tokens: Vec<String> = tokens.iter().step_by(500).cloned().collect();
    expect_all_tokens(sidecar, &sample_tokens, Reason::Revoked, CATCH_UP).await?;
    let m = metrics_of(sidecar).await?;
    assert!(sample(&m, r#"denylist_catch_ups_total{trigger="heartbeat"}"#) >= 1.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sequence_only_claimed_never_makes_a_sidecar_skip_events() -> anyhow::Result<()> {
    // A heartbeat key the sidecars trust, used here to lie: it claims the stream is 5 events
    // further than it is. And a stray live message whose (unsigned) sequence header claims
    // the same. Neither is proof that those sequences exist: when the real events are
    // published at those sequences later, every one of them must still be applied.
    let trusted = SigningKey::generate()?.0;
    let fleet = fleet_hearing(2, trusted.public_key(), |_| {}).await?;
    let created = stream_created(&fleet.client).await?;
    let (_, last) = fleet.stream_state().await?;
    fleet
        .client
        .publish(
            HEARTBEAT_SUBJECT,
            signed_heartbeat(&trusted, "DENYLIST", created, last + 5, now_ms()),
        )
        .await?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        denylist_proto::subjects::HEADER_SEQUENCE,
        (last + 5).to_string().as_str(),
    );
    fleet
        .client
        .publish_with_headers(
            "denylist.v1.live.jti",
            headers,
            bytes::Bytes::from_static(b"not an event"),
        )
        .await?;
    fleet.client.flush().await?;
    // Both claims are acted on (a catch-up each) and refuted by the stream.
    for sidecar in &fleet.sidecars {
        wait_for(CATCH_UP, "the claims refuted by the stream", || async {
            let m = metrics_of(sidecar).await.map_err(|e| e.to_string())?;
            let asked = sample(
                &m,
                r#"denylist_stream_info_requests_total{reason="unproven"}"#,
            );
            if asked >= 1.0 {
                Ok(())
            } else {
                Err(format!("unproven checks {asked}"))
            }
        })
        .await?;
        assert_eq!(sidecar.status().await?.denylist_sequence, last);
    }
    let (tokens, events) = revocations(&fleet, 5);
    let sequences = fleet.publisher.publish_all(&events).await?;
    assert_eq!(sequences.last(), Some(&(last + 5)));
    expect_sequence(&fleet.sidecars, last + 5, CATCH_UP).await?;
    for sidecar in &fleet.sidecars {
        expect_all_tokens(sidecar, &tokens, Reason::Revoked, CATCH_UP).await?;
    }
    Ok(())
}
