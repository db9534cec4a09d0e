//! Self-tests of the harness: the NATS fixtures, the proxy and token minting do what
//! the other tests rely on. These pass without the sidecar.

use std::time::Duration;

use async_nats::connection::State;
use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use denylist_proto::events::RuleKind;
use denylist_proto::subjects;
use denylist_tests::events::{self, EventPublisher, StreamOptions, init_stream, stream_state};
use denylist_tests::nats::connect;
use denylist_tests::tokens::{ISSUER, SECOND_KID};
use denylist_tests::{
    Issuer, NatsCluster, NatsServer, STEP, TcpProxy, binaries, wait_for, wait_until, within,
};
use futures::StreamExt as _;

#[tokio::test]
async fn the_script_finds_a_recent_nats_server() -> anyhow::Result<()> {
    let path = binaries::nats_server()?;
    assert!(path.is_absolute(), "{} is not absolute", path.display());
    let out = std::process::Command::new(&path)
        .arg("--version")
        .output()?;
    let version = String::from_utf8_lossy(&out.stdout);
    let digits: Vec<u32> = version
        .trim()
        .trim_start_matches("nats-server: v")
        .split('.')
        .filter_map(|p| p.parse().ok())
        .collect();
    assert!(
        digits.len() >= 2 && (digits[0], digits[1]) >= (2, 10),
        "{} is too old for async-nats 0.51: {version}",
        path.display()
    );
    // Resolved once per process: asking again is free and gives the same answer.
    assert_eq!(binaries::nats_server()?, path);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_server_restart_keeps_port_and_jetstream_data() -> anyhow::Result<()> {
    let mut nats = NatsServer::start().await?;
    let port = nats.port();
    let client = nats.connect().await?;
    init_stream(&client, &StreamOptions::default()).await?;
    let publisher = EventPublisher::new(client.clone());
    let event = events::revoke(RuleKind::Jti, ISSUER, &["before-restart"]);
    let sequence = publisher.publish(&event).await?;
    assert_eq!(sequence, 1);

    nats.restart().await?;
    assert_eq!(nats.port(), port, "restart must keep the port");
    // The same client reconnects by itself, and the message is still stored.
    let state = wait_for(STEP, "the stream after a restart", || async {
        stream_state(&client, subjects::DEFAULT_STREAM).await
    })
    .await?;
    assert_eq!(state, (1, 1));
    let js = async_nats::jetstream::new(client.clone());
    let stored = within("direct get", async {
        js.get_stream(subjects::DEFAULT_STREAM)
            .await?
            .direct_get(1)
            .await
            .map_err(anyhow::Error::from)
    })
    .await??;
    assert_eq!(stored.payload, publisher.envelope(&event));
    assert_eq!(stored.subject.as_str(), "denylist.v1.events.jti");

    // An outage: stopped, then started again on the same port with the same data.
    nats.stop();
    assert!(!nats.is_running());
    wait_until(STEP, "the client to notice the outage", || async {
        client.connection_state() != State::Connected
    })
    .await?;
    nats.start_again().await?;
    assert_eq!(nats.port(), port);
    let second = events::revoke(RuleKind::Jti, ISSUER, &["after-outage"]);
    let sequence = wait_for(STEP, "publishing after the outage", || {
        publisher.publish(&second)
    })
    .await?;
    assert_eq!(sequence, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_three_node_cluster_forms_and_survives_a_killed_node() -> anyhow::Result<()> {
    let mut cluster = NatsCluster::start(3).await?;
    assert_eq!(cluster.len(), 3);
    let client = cluster.connect().await?;
    let info = init_stream(
        &client,
        &StreamOptions {
            replicas: 3,
            ..StreamOptions::default()
        },
    )
    .await?;
    assert_eq!(info.config.num_replicas, 3);
    let publisher = EventPublisher::new(client.clone());
    let batch: Vec<_> = (0..10)
        .map(|i| events::revoke(RuleKind::Jti, ISSUER, &[&format!("j{i}")]))
        .collect();
    let sequences = publisher.publish_all(&batch).await?;
    assert_eq!(sequences, (1..=10).collect::<Vec<u64>>());

    // Kill the stream's leader: the hardest node to lose.
    let leader = wait_for(STEP, "a stream leader", || async {
        cluster
            .stream_leader(&client, subjects::DEFAULT_STREAM)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no leader yet"))
    })
    .await?;
    cluster.kill(leader);
    let event = events::revoke(RuleKind::Jti, ISSUER, &["during-failover"]);
    let sequence = publisher
        .publish_with_retry(&event, Duration::from_secs(30))
        .await?;
    assert_eq!(
        sequence, 11,
        "an R3 stream keeps accepting with one node down"
    );

    // The node comes back on its ports and catches up; a client of that node alone sees
    // the whole stream.
    cluster.restart(leader).await?;
    let only_that_node = connect(&[cluster.url(leader)]).await?;
    let state = wait_for(
        Duration::from_secs(30),
        "the restarted node to serve the stream",
        || async {
            let state = stream_state(&only_that_node, subjects::DEFAULT_STREAM).await?;
            if state == (11, 11) {
                Ok(state)
            } else {
                Err(anyhow::anyhow!("state {state:?}"))
            }
        },
    )
    .await?;
    assert_eq!(state, (11, 11));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_cuts_and_restores_a_connection() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let proxy = TcpProxy::for_url(&nats.url()).await?;
    let direct = nats.connect().await?;
    let proxied = connect(&[proxy.nats_url()]).await?;
    let mut messages = within("subscribe", proxied.subscribe("probe")).await??;
    within("flush", proxied.flush()).await??;

    let first = publish_until_seen(
        &direct,
        &mut messages,
        "one",
        "first message through the proxy",
    )
    .await?;
    assert_eq!(first, "one");

    proxy.cut();
    wait_until(
        STEP,
        "the proxied client to lose its connection",
        || async { proxied.connection_state() != State::Connected },
    )
    .await?;

    proxy.restore();
    wait_until(STEP, "the proxied client to reconnect", || async {
        proxied.connection_state() == State::Connected
    })
    .await?;
    // The subscription is restored on reconnect; the server learns of it a moment later.
    let payload = publish_until_seen(
        &direct,
        &mut messages,
        "two",
        "a message after the reconnect",
    )
    .await?;
    assert_eq!(payload, "two");
    Ok(())
}

/// Publishes `payload` on `probe` until `messages` yields a message (bounded by
/// `within`): a subscription through the proxy can reach the server a moment after the
/// client reports it, so a single publish may be lost on a loaded machine.
async fn publish_until_seen(
    direct: &async_nats::Client,
    messages: &mut async_nats::Subscriber,
    payload: &'static str,
    what: &str,
) -> anyhow::Result<bytes::Bytes> {
    within(what, async {
        loop {
            direct.publish("probe", payload.into()).await?;
            if let Ok(m) = tokio::time::timeout(Duration::from_millis(200), messages.next()).await {
                return m
                    .map(|m| m.payload)
                    .ok_or_else(|| anyhow::anyhow!("subscription ended"));
            }
        }
    })
    .await?
}

#[test]
fn minted_tokens_carry_the_requested_claims_and_verify_with_the_secret() {
    let issuer = Issuer::new(ISSUER);
    let token = issuer
        .token()
        .jti("j-1")
        .sub("alice")
        .sid("s-1")
        .iat(1_000)
        .exp(2_000)
        .kid(SECOND_KID)
        .mint();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("base64url"))
            .expect("JSON");
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url"))
            .expect("JSON");
    assert_eq!(header["alg"], "HS256");
    assert_eq!(header["kid"], SECOND_KID);
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["jti"], "j-1");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["sid"], "s-1");
    assert_eq!(claims["iat"], 1_000);
    assert_eq!(claims["exp"], 2_000);
    let secret = &issuer
        .keys()
        .iter()
        .find(|(k, _)| k == SECOND_KID)
        .expect("k2")
        .1;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("base64url");
    hmac::verify(
        &key,
        format!("{}.{}", parts[0], parts[1]).as_bytes(),
        &signature,
    )
    .expect("the signature verifies with the issuer's secret");
    let no_iat = issuer.token().without("iat").mint();
    let claims: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(no_iat.split('.').nth(1).expect("payload"))
            .expect("base64url"),
    )
    .expect("JSON");
    assert!(claims.get("iat").is_none());
}
