//! Reading the stream with batched direct gets (`denylist_sidecar::sync::direct`), the way sidecars
//! are to catch up: no consumer exists on the stream at any time; messages come back in
//! order, byte for byte; purged, deleted and aged-out sequences are stepped over and still
//! count as covered; a 3-node cluster answers from every node, with its stream leader killed
//! too; a stream without direct gets is an error that names the fix, which
//! `denylistctl stream init` applies; a batch late on a live connection is waited for, one
//! whose connection was lost is asked for again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use denylist_proto::events::{Event, RuleKind};
use denylist_proto::subjects;
use denylist_sidecar::sync::backoff::Backoff;
use denylist_sidecar::sync::direct::{
    DirectGetError, DirectRead, DirectReadOptions, DirectReader, UpTo,
};
use denylist_tests::events::{self, EventPublisher, StreamOptions, init_stream, stream_config};
use denylist_tests::tokens::ISSUER;
use denylist_tests::{
    Denylistctl, NatsCluster, NatsServer, STEP, TcpProxy, nats::connect, wait_for, within,
    within_for,
};
use futures::TryStreamExt as _;

/// Bound on publishing or reading back 10 000 events (a debug build on a busy 2-core runner).
const BULK: Duration = Duration::from_secs(120);

/// Events of distinct jtis, in publishing order.
fn revocations(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| events::revoke(RuleKind::Jti, ISSUER, &[&format!("direct-{i}")]))
        .collect()
}

/// The consumers on `stream`: the count in its info and the names `CONSUMER.LIST` returns.
async fn consumers(
    client: &async_nats::Client,
    stream: &str,
) -> anyhow::Result<(usize, Vec<String>)> {
    let js = jetstream::new(client.clone());
    let mut handle = within("stream info", js.get_stream(stream)).await??;
    let count = within("stream info", handle.info())
        .await??
        .state
        .consumer_count;
    let names = within(
        "the consumer list",
        handle.consumer_names().try_collect::<Vec<_>>(),
    )
    .await??;
    Ok((count, names))
}

/// Polls the stream's consumer count until stopped; returns the largest count seen and how
/// many polls there were.
fn watch_consumers(
    client: async_nats::Client,
    stream: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<anyhow::Result<(usize, usize)>> {
    tokio::spawn(async move {
        let (mut most, mut polls) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            let (count, names) = consumers(&client, stream).await?;
            most = most.max(count).max(names.len());
            polls += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok((most, polls))
    })
}

/// Checks that `read` is exactly `events` published from sequence 1, byte for byte.
fn expect_events(
    publisher: &EventPublisher,
    events: &[Event],
    messages: &[jetstream::message::StreamMessage],
) {
    assert_eq!(messages.len(), events.len(), "messages read");
    for (i, (message, event)) in messages.iter().zip(events).enumerate() {
        assert_eq!(message.sequence, i as u64 + 1, "sequence of message {i}");
        assert_eq!(message.subject.as_str(), subjects::subject_for(event));
        assert_eq!(message.payload, publisher.envelope(event), "payload at {i}");
        assert_eq!(
            message
                .headers
                .get(subjects::HEADER_MSG_ID)
                .map(|v| v.as_str()),
            Some(event.event_id.as_str()),
            "message id at {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_events_read_back_in_order_with_no_consumer() -> anyhow::Result<()> {
    const EVENTS: usize = 10_000;
    let nats = NatsServer::start().await?;
    let client = nats.connect().await?;
    init_stream(&client, &StreamOptions::default()).await?;
    let publisher = EventPublisher::new(client.clone());
    let events = revocations(EVENTS);
    let sequences = within_for(
        BULK,
        "publishing 10 000 events",
        publisher.publish_all(&events),
    )
    .await??;
    assert_eq!(sequences.last(), Some(&(EVENTS as u64)));

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_consumers(client.clone(), subjects::DEFAULT_STREAM, Arc::clone(&stop));
    let reader = DirectReader::new(client.clone(), subjects::DEFAULT_STREAM);
    let started = Instant::now();
    let read = within_for(
        BULK,
        "reading 10 000 events back",
        reader.read(1, UpTo::Sequence(EVENTS as u64)),
    )
    .await??;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (most, polls) = within("the consumer watcher", watcher).await???;

    eprintln!(
        "direct get: read {} events ({} KiB) in {elapsed:.2?} = {:.0} msg/s over {} requests ({} retries, {} leader checks); debug build",
        read.stats.messages,
        read.stats.bytes / 1024,
        read.stats.messages as f64 / elapsed.as_secs_f64(),
        read.stats.requests,
        read.stats.retries,
        read.stats.leader_checks,
    );
    expect_events(&publisher, &events, &read.messages);
    assert_eq!(read.covered_through, EVENTS as u64);
    // 512 a batch (20 requests), unless max_bytes cut some short.
    assert!(read.stats.requests >= 20, "{:?}", read.stats);
    assert_eq!(read.stats.leader_checks, 0, "{:?}", read.stats);
    assert!(
        polls > 0,
        "the consumer count was never polled during the read"
    );
    assert_eq!(most, 0, "a consumer existed during the read");

    // Open-ended, from the middle: up to the last message the server holds.
    let tail = within(
        "reading the last 1 000",
        reader.read(EVENTS as u64 - 999, UpTo::End),
    )
    .await??;
    assert_eq!(tail.messages.len(), 1_000);
    assert_eq!(tail.messages[0].sequence, EVENTS as u64 - 999);
    assert_eq!(tail.covered_through, EVENTS as u64);

    assert_eq!(
        consumers(&client, subjects::DEFAULT_STREAM).await?,
        (0, Vec::new()),
        "consumers after the reads"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn purged_deleted_and_aged_out_sequences_are_stepped_over() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let client = nats.connect().await?;
    init_stream(&client, &StreamOptions::default()).await?;
    let publisher = EventPublisher::new(client.clone());
    publisher.publish_all(&revocations(100)).await?;
    let js = jetstream::new(client.clone());
    let stream = within("stream", js.get_stream(subjects::DEFAULT_STREAM)).await??;
    // 1..=30 purged, 50..=55 deleted from the middle, 96..=100 from the end.
    within("purge", stream.purge().sequence(31)).await??;
    for seq in (50..=55).chain(96..=100) {
        assert!(within("delete", stream.delete_message(seq)).await??);
    }
    let stored: Vec<u64> = (31..=49).chain(56..=95).collect();
    let reader = DirectReader::new(client.clone(), subjects::DEFAULT_STREAM);
    let sequences = |read: &denylist_sidecar::sync::direct::DirectRead| {
        read.messages.iter().map(|m| m.sequence).collect::<Vec<_>>()
    };

    let bounded = within("bounded read", reader.read(1, UpTo::Sequence(100))).await??;
    assert_eq!(sequences(&bounded), stored);
    // The deleted end is covered too, settled by the stream leader: the server that answered
    // might only have lagged.
    assert_eq!(bounded.covered_through, 100);
    assert_eq!(bounded.stats.leader_checks, 1, "{:?}", bounded.stats);

    let open = within("open read", reader.read(1, UpTo::End)).await??;
    assert_eq!(sequences(&open), stored);
    assert_eq!(open.covered_through, 95, "the last message stored");

    let gone = within("a deleted range", reader.read(96, UpTo::Sequence(100))).await??;
    assert!(gone.messages.is_empty());
    assert_eq!(gone.covered_through, 100);
    let past = within("past the end", reader.read(101, UpTo::End)).await??;
    assert!(past.messages.is_empty());
    assert_eq!(past.covered_through, 100);
    let empty = within("an empty range", reader.read(101, UpTo::Sequence(100))).await??;
    assert_eq!((empty.covered_through, empty.stats.requests), (100, 0));

    // Aged out (max_age): the same as purged for a reader.
    let aged = stream::Config {
        name: "AGED".to_owned(),
        subjects: vec!["aged.>".to_owned()],
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(1),
        duplicate_window: Duration::from_millis(500),
        allow_direct: true,
        ..Default::default()
    };
    within("creating AGED", js.create_stream(aged)).await??;
    let publish = |i: u64| {
        let js = js.clone();
        async move {
            let ack = within("publish", js.publish("aged.x", i.to_string().into())).await??;
            anyhow::Ok(within("ack", ack).await??.sequence)
        }
    };
    for i in 1..=10 {
        publish(i).await?;
    }
    wait_for(STEP * 2, "AGED's first ten messages to age out", || async {
        let mut handle = js.get_stream("AGED").await?;
        let state = handle.info().await?.state.clone();
        if state.messages == 0 {
            Ok(())
        } else {
            Err(anyhow::anyhow!("{} messages left", state.messages))
        }
    })
    .await?;
    for i in 11..=15 {
        assert_eq!(publish(i).await?, i);
    }
    let reader = DirectReader::new(client.clone(), "AGED");
    let read = within("reading AGED", reader.read(1, UpTo::Sequence(15))).await??;
    assert_eq!(sequences(&read), (11..=15).collect::<Vec<_>>());
    assert_eq!(read.covered_through, 15);
    let read = within(
        "reading AGED's aged part",
        reader.read(1, UpTo::Sequence(10)),
    )
    .await??;
    assert!(read.messages.is_empty());
    // The server held later messages, so nothing needed settling with the leader.
    assert_eq!((read.covered_through, read.stats.leader_checks), (10, 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_is_read_from_every_node_and_with_its_stream_leader_killed() -> anyhow::Result<()>
{
    const EVENTS: usize = 2_000;
    let mut cluster = NatsCluster::start(3).await?;
    let client = cluster.connect().await?;
    init_stream(
        &client,
        &StreamOptions {
            replicas: 3,
            ..StreamOptions::default()
        },
    )
    .await?;
    let publisher = EventPublisher::new(client.clone());
    let events = revocations(EVENTS);
    within_for(BULK, "publishing", publisher.publish_all(&events)).await??;

    // Through each node: the queue group prefers the local replica, so each answers in turn.
    let mut clients = Vec::new();
    for node in 0..cluster.len() {
        let client = connect(&[cluster.url(node)]).await?;
        let reader = DirectReader::new(client.clone(), subjects::DEFAULT_STREAM);
        let started = Instant::now();
        let read = within_for(
            BULK,
            format_args!("reading through node {node}"),
            reader.read(1, UpTo::Sequence(EVENTS as u64)),
        )
        .await??;
        eprintln!(
            "direct get through n{node}: {} events in {:.2?} ({:?})",
            read.messages.len(),
            started.elapsed(),
            read.stats
        );
        expect_events(&publisher, &events, &read.messages);
        clients.push(client);
    }
    assert_eq!(
        consumers(&client, subjects::DEFAULT_STREAM).await?,
        (0, Vec::new())
    );

    // Every follower holds everything before the leader goes, so that what is read next
    // depends on direct gets alone, not on the leader check.
    let leader = wait_for(STEP * 3, "every replica to be current", || async {
        let info = events::stream_info(&client, subjects::DEFAULT_STREAM).await?;
        let cluster_info = info.cluster.unwrap_or_default();
        let current = cluster_info.replicas.len() == 2
            && cluster_info
                .replicas
                .iter()
                .all(|r| r.current && r.lag.unwrap_or(0) == 0);
        match cluster_info.leader.and_then(|l| cluster.node_named(&l)) {
            Some(leader) if current => Ok(leader),
            _ => Err(anyhow::anyhow!("replicas: {:?}", cluster_info.replicas)),
        }
    })
    .await?;
    cluster.kill(leader);
    // A follower joins the direct-get queue group only once it is current, checked every 2 s
    // after a leader change (nats-server's monitorStream), and without a leader it is not
    // current. On a stream this young a follower may not have joined yet: then nobody answers
    // (503) until a new leader is elected, and the reader must be patient enough to wait.
    let patient = DirectReadOptions {
        attempts: 40,
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(1),
        },
        ..DirectReadOptions::default()
    };
    for (node, client) in clients.iter().enumerate().filter(|(n, _)| *n != leader) {
        let reader =
            DirectReader::with_options(client.clone(), subjects::DEFAULT_STREAM, patient.clone());
        let started = Instant::now();
        let read = within_for(
            BULK,
            format_args!("reading through node {node} with the leader (n{leader}) dead"),
            reader.read(1, UpTo::Sequence(EVENTS as u64)),
        )
        .await??;
        eprintln!(
            "direct get through n{node}, leader n{leader} killed: {} events in {:.2?} ({:?})",
            read.messages.len(),
            started.elapsed(),
            read.stats
        );
        expect_events(&publisher, &events, &read.messages);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_without_direct_gets_is_an_error_until_stream_init_turns_them_on()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let client = nats.connect().await?;
    let js = jetstream::new(client.clone());
    let mut config = stream_config(&StreamOptions::default());
    config.allow_direct = false;
    within("creating the stream", js.create_stream(config)).await??;
    let publisher = EventPublisher::new(client.clone());
    let event = events::revoke(RuleKind::Jti, ISSUER, &["no-direct"]);
    publisher.publish(&event).await?;

    let options = DirectReadOptions {
        attempts: 2,
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(10),
        },
        ..DirectReadOptions::default()
    };
    let reader = DirectReader::with_options(client.clone(), subjects::DEFAULT_STREAM, options);
    let err = within("a read with no responder", reader.read(1, UpTo::End))
        .await?
        .expect_err("no server answers direct gets for this stream");
    assert!(
        matches!(err, DirectGetError::NoResponders { attempts: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("stream init"), "{err}");

    // `stream init` on the existing stream turns direct gets on, keeping its events.
    let ctl = Denylistctl::new(&nats.url())?;
    let init = ctl
        .run(
            &["-o", "json", "stream", "init", "--max-age", "48h"],
            STEP * 3,
        )
        .await?
        .ok()?
        .json()?;
    assert_eq!(init["outcome"], "updated", "{init}");
    assert_eq!(init["stream"]["allow_direct"], true, "{init}");
    let read = within("a read after stream init", reader.read(1, UpTo::End)).await??;
    expect_events(&publisher, std::slice::from_ref(&event), &read.messages);
    Ok(())
}

/// A stream of eight 64 KiB messages, read in one batch through a proxy that can stall the
/// server's bytes: the reader and the proxy.
async fn stalled_batch_setup(
    nats: &NatsServer,
) -> anyhow::Result<(TcpProxy, async_nats::Client, DirectReader)> {
    let client = nats.connect().await?;
    let js = jetstream::new(client.clone());
    within(
        "creating the stream",
        js.create_stream(stream::Config {
            name: "BIG".into(),
            subjects: vec!["big.>".into()],
            allow_direct: true,
            ..Default::default()
        }),
    )
    .await??;
    for i in 0..8u8 {
        within(
            "storing a message",
            js.publish(format!("big.{i}"), vec![i; 64 * 1024].into())
                .await?
                .into_future(),
        )
        .await??;
    }
    let proxy = TcpProxy::for_url(&nats.url()).await?;
    let proxied = connect(&[proxy.nats_url()]).await?;
    let options = DirectReadOptions {
        batch: 64,
        max_bytes: 4 << 20,
        reply_timeout: Duration::from_secs(1),
        attempts: 8,
        ..DirectReadOptions::default()
    };
    let reader = DirectReader::with_options(proxied.clone(), "BIG", options);
    Ok((proxy, proxied, reader))
}

/// Starts reading the whole stream and returns once the proxy holds the rest of the batch
/// (its first reply through).
async fn read_until_held(
    proxy: &TcpProxy,
    reader: DirectReader,
) -> anyhow::Result<tokio::task::JoinHandle<Result<DirectRead, DirectGetError>>> {
    proxy.hold_after(100 * 1024);
    let read = tokio::spawn(async move { reader.read(1, UpTo::End).await });
    wait_for(STEP, "the proxy to hold the batch", || async {
        if proxy.holding() {
            Ok(())
        } else {
            Err("not yet holding")
        }
    })
    .await?;
    Ok(read)
}

/// The bytes of the stored messages, in order.
fn check_big(messages: &[async_nats::jetstream::message::StreamMessage]) {
    assert_eq!(messages.len(), 8);
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(m.sequence, i as u64 + 1);
        assert_eq!(m.payload.len(), 64 * 1024);
        assert!(
            m.payload.iter().all(|b| *b == i as u8),
            "message {i}'s bytes"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_late_on_a_live_connection_is_waited_for_not_asked_again() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let (proxy, _client, reader) = stalled_batch_setup(&nats).await?;
    // The rest stalls for two reply timeouts (within the reader's patience of three), the
    // connection up all along: a busy reader's connection.
    let read = read_until_held(&proxy, reader).await?;
    // The stall is the stimulus: held longer than the reply timeout, on purpose.
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.release();
    let read = within("the read after the stall", read).await???;
    check_big(&read.messages);
    assert_eq!(
        read.stats.requests, 1,
        "the rest of the batch was asked for again: {:?}",
        read.stats
    );
    assert!(read.stats.extended_waits >= 1, "{:?}", read.stats);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_cut_off_with_its_connection_is_asked_for_again_on_the_next() -> anyhow::Result<()>
{
    let nats = NatsServer::start().await?;
    let (proxy, client, reader) = stalled_batch_setup(&nats).await?;
    let read = read_until_held(&proxy, reader).await?;
    // The connection the batch came on is lost: what it still held is gone, so the reader
    // must not wait for it but ask again once reconnected.
    proxy.cut();
    proxy.release();
    wait_for(STEP, "the client to notice the cut", || async {
        match client.connection_state() {
            async_nats::connection::State::Connected => Err("still connected"),
            _ => Ok(()),
        }
    })
    .await?;
    proxy.restore();
    let read = within("the read after the reconnect", read).await???;
    check_big(&read.messages);
    assert!(read.stats.requests >= 2, "{:?}", read.stats);
    // Waiting on after the reconnect would time out every second until the batch's
    // deadline (3 s): two waits; one may fall between the hold and the cut on a slow
    // machine.
    assert!(
        read.stats.extended_waits <= 1,
        "waited for a batch whose connection was gone: {:?}",
        read.stats
    );
    Ok(())
}
