//! `denylistctl` end to end, as a security responder uses it: generate a publisher key,
//! create the stream, revoke a user, check with a sidecar; a bulk file of 100 000
//! revocations; a bad bulk file rejected before anything is published.

use std::fmt::Write as _;
use std::time::Duration;

use async_nats::jetstream;
use denylist_proto::pb::Reason;
use denylist_proto::subjects;
use denylist_tests::tokens::{ISSUER, OTHER_ISSUER};
use denylist_tests::{
    Denylistctl, Issuer, NatsServer, READY_TIMEOUT, Sidecar, SidecarOptions, expect_reason,
    now_secs, stream_state, unique,
};

/// Bound on one quick CLI run.
const RUN: Duration = Duration::from_secs(30);
/// Bound on publishing the 100 000-line file (a debug build on a busy 2-core runner).
const BULK_RUN: Duration = Duration::from_secs(120);
const BULK_LINES: usize = 100_000;

/// A NATS server, a publisher key made by `denylistctl keygen`, and the stream made by
/// `denylistctl stream init`.
struct Setup {
    nats: NatsServer,
    ctl: Denylistctl,
    public_key: String,
    dir: tempfile::TempDir,
}

async fn setup() -> anyhow::Result<Setup> {
    let nats = NatsServer::start().await?;
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("publisher.pem");
    let ctl = Denylistctl::new(&nats.url())?;
    let keygen = ctl
        .run(
            &["-o", "json", "keygen", "--out", &key.display().to_string()],
            RUN,
        )
        .await?
        .ok()?
        .json()?;
    let public_key = keygen["public_key"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("keygen printed no public_key: {keygen}"))?
        .to_owned();
    // Never overwrites a key.
    let again = ctl
        .run(&["keygen", "--out", &key.display().to_string()], RUN)
        .await?;
    assert!(!again.status.success(), "keygen overwrote a key: {again}");

    let ctl = ctl.with_key(&key);
    ctl.run(
        &["stream", "init", "--replicas", "1", "--max-age", "48h"],
        RUN,
    )
    .await?
    .ok()?;
    Ok(Setup {
        nats,
        ctl,
        public_key,
        dir,
    })
}

fn sidecar_options(setup: &Setup, name: &str, issuer: &Issuer) -> SidecarOptions {
    SidecarOptions::new(
        name,
        vec![setup.nats.url()],
        setup.public_key.clone(),
        vec![issuer.clone(), Issuer::new(OTHER_ISSUER)],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_2am_story_revoke_a_user_with_denylistctl() -> anyhow::Result<()> {
    let setup = setup().await?;
    // The stream is what the contract says it is.
    let client = setup.nats.connect().await?;
    let info = jetstream::new(client.clone())
        .get_stream(subjects::DEFAULT_STREAM)
        .await?
        .get_info()
        .await?;
    assert_eq!(info.config.subjects, [subjects::EVENTS_WILDCARD]);
    assert_eq!(info.config.storage, jetstream::stream::StorageType::File);
    assert_eq!(info.config.duplicate_window, Duration::from_secs(120));
    let republish = info
        .config
        .republish
        .expect("the stream republishes to the live subjects");
    assert_eq!(republish.destination, subjects::LIVE_DESTINATION);

    let issuer = Issuer::new(ISSUER);
    let mut sidecars = Vec::new();
    for name in ["s0", "s1"] {
        sidecars.push(Sidecar::start(sidecar_options(&setup, name, &issuer)).await?);
    }
    for sidecar in &sidecars {
        sidecar.wait_ready(READY_TIMEOUT).await?;
    }
    let alice = unique("alice");
    let alice_token = issuer.token().sub(&alice).iat(now_secs() - 60).mint();
    let bob_token = issuer
        .token()
        .sub(&unique("bob"))
        .iat(now_secs() - 60)
        .mint();
    let ask = setup.ctl.clone().with_socket(sidecars[0].socket_path());
    let before = ask
        .run(&["-o", "json", "verify", &alice_token], RUN)
        .await?
        .ok()?
        .json()?;
    assert_eq!(before["valid"], true, "{before}");
    assert_eq!(before["reason"], "REASON_OK", "{before}");

    let revoked = setup
        .ctl
        .run(
            &[
                "-o",
                "json",
                "revoke",
                "subject",
                &alice,
                "--issuer",
                ISSUER,
                "--reason",
                "account takeover (e2e)",
            ],
            RUN,
        )
        .await?
        .ok()?
        .json()?;
    let event_id = revoked["event_id"]
        .as_str()
        .expect("revoke prints the event id")
        .to_owned();
    assert!(
        revoked["sequence"].as_u64().is_some_and(|s| s >= 1),
        "{revoked}"
    );

    expect_reason(
        &sidecars,
        &alice_token,
        Reason::Revoked,
        Duration::from_secs(10),
    )
    .await?;
    expect_reason(&sidecars, &bob_token, Reason::Ok, Duration::from_secs(10)).await?;
    let after = ask
        .run(&["-o", "json", "verify", &alice_token], RUN)
        .await?;
    assert!(
        !after.status.success(),
        "verify of a revoked token must exit non-zero: {after}"
    );
    let after = after.json()?;
    assert_eq!(after["reason"], "REASON_REVOKED", "{after}");
    assert_eq!(
        after["revocation"]["event_id"],
        event_id.as_str(),
        "{after}"
    );
    assert_eq!(
        after["revocation"]["reason"], "account takeover (e2e)",
        "{after}"
    );

    // A mistake: lift it.
    setup
        .ctl
        .run(&["lift", &event_id, "--reason", "false alarm"], RUN)
        .await?
        .ok()?;
    expect_reason(&sidecars, &alice_token, Reason::Ok, Duration::from_secs(10)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_file_of_100k_revocations_is_applied() -> anyhow::Result<()> {
    let setup = setup().await?;
    let issuer = Issuer::new(ISSUER);
    let mut options = sidecar_options(&setup, "bulk", &issuer);
    options.log_filter = "info".to_owned();
    let sidecar = Sidecar::start_ready(options).await?;

    let prefix = unique("bulk");
    let mut csv = String::from("kind,issuer,target,reason\n");
    for i in 0..BULK_LINES {
        writeln!(csv, "jti,{ISSUER},{prefix}-{i},bulk e2e")?;
    }
    let file = setup.dir.path().join("revocations.csv");
    std::fs::write(&file, &csv)?;

    let file_arg = file.display().to_string();
    let first = setup
        .ctl
        .run(
            &["-o", "json", "revoke", "--from-file", &file_arg],
            BULK_RUN,
        )
        .await?
        .ok()?
        .json()?;
    assert_eq!(first["events"], BULK_LINES, "{first}");
    let client = setup.nats.connect().await?;
    let (messages, last) = stream_state(&client, subjects::DEFAULT_STREAM).await?;
    assert_eq!(messages, BULK_LINES as u64);

    let status = sidecar
        .wait_sequence(last, Duration::from_secs(120))
        .await?;
    assert_eq!(status.entries, BULK_LINES as u64, "one live rule per line");
    for i in [0, 1, BULK_LINES / 2, BULK_LINES - 1] {
        let token = issuer.token().jti(&format!("{prefix}-{i}")).mint();
        assert_eq!(sidecar.reason(&token).await?, Reason::Revoked, "line {i}");
    }
    let not_in_file = issuer.token().jti(&format!("{prefix}-{BULK_LINES}")).mint();
    assert_eq!(sidecar.reason(&not_in_file).await?, Reason::Ok);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn rerunning_a_bulk_file_stores_nothing_new() -> anyhow::Result<()> {
    // Interrupted, or run twice by mistake: the same file again stores nothing new
    // (stable event ids, deduplicated by JetStream within its window). A small file:
    // the 100 000-line run is the test above. The cut-off is absolute: a relative one
    // (`now`) makes a re-run at another second a new revocation, on purpose.
    let setup = setup().await?;
    let cutoff = denylist_tests::now_secs() - 60;
    let mut csv = String::from("kind,issuer,target,reason,cutoff\n");
    for i in 0..2000 {
        writeln!(csv, "subject,{ISSUER},rerun-{i},bulk e2e,{cutoff}")?;
    }
    let file = setup.dir.path().join("rerun.csv");
    std::fs::write(&file, &csv)?;
    let file_arg = file.display().to_string();
    let first = setup
        .ctl
        .run(&["-o", "json", "revoke", "--from-file", &file_arg], RUN)
        .await?
        .ok()?
        .json()?;
    assert_eq!(first["events"], 2000, "{first}");
    assert_eq!(first["duplicates"], 0, "{first}");
    let client = setup.nats.connect().await?;
    let stored = stream_state(&client, subjects::DEFAULT_STREAM).await?;
    assert_eq!(stored, (2000, 2000));

    let again = setup
        .ctl
        .run(&["-o", "json", "revoke", "--from-file", &file_arg], RUN)
        .await?
        .ok()?
        .json()?;
    assert_eq!(again["duplicates"], 2000, "{again}");
    assert_eq!(
        stream_state(&client, subjects::DEFAULT_STREAM).await?,
        stored
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_bulk_file_is_rejected_before_anything_is_published() -> anyhow::Result<()> {
    let setup = setup().await?;
    let client = setup.nats.connect().await?;
    setup
        .ctl
        .run(&["revoke", "jti", &unique("j"), "--issuer", ISSUER], RUN)
        .await?
        .ok()?;
    let before = stream_state(&client, subjects::DEFAULT_STREAM).await?;
    assert_eq!(before.0, 1);

    // 1000 good lines with one bad one in the middle (an unknown rule kind).
    let mut csv = String::from("kind,issuer,target,reason\n");
    for i in 0..1000 {
        let kind = if i == 500 { "jtii" } else { "jti" };
        writeln!(csv, "{kind},{ISSUER},bad-file-{i},bulk e2e")?;
    }
    let file = setup.dir.path().join("bad.csv");
    std::fs::write(&file, &csv)?;
    let run = setup
        .ctl
        .run(&["revoke", "--from-file", &file.display().to_string()], RUN)
        .await?;
    assert!(!run.status.success(), "a bad file must fail: {run}");
    // The header is line 1, so the 501st revocation is line 502.
    assert!(
        run.stderr.contains("line 502"),
        "the error must name the line: {run}"
    );
    assert_eq!(
        stream_state(&client, subjects::DEFAULT_STREAM).await?,
        before,
        "nothing may be published from a bad file"
    );

    // Same for JSON lines, with a missing target.
    let mut jsonl = String::new();
    for i in 0..100 {
        let target = if i == 50 {
            String::new()
        } else {
            format!("bad-jsonl-{i}")
        };
        writeln!(
            jsonl,
            "{}",
            serde_json::json!({"kind": "jti", "issuer": ISSUER, "target": target})
        )?;
    }
    let file = setup.dir.path().join("bad.jsonl");
    std::fs::write(&file, &jsonl)?;
    let run = setup
        .ctl
        .run(&["revoke", "--from-file", &file.display().to_string()], RUN)
        .await?;
    assert!(!run.status.success(), "a bad file must fail: {run}");
    assert!(
        run.stderr.contains("line 51"),
        "the error must name the line: {run}"
    );
    assert_eq!(
        stream_state(&client, subjects::DEFAULT_STREAM).await?,
        before
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_with_no_sidecar_answering_is_a_negative_answer() -> anyhow::Result<()> {
    // Nothing confirmed the revocations: `denylistctl fleet && echo applied` must not pass.
    let setup = setup().await?;
    let out = setup.ctl.run(&["fleet", "--wait", "200ms"], RUN).await?;
    assert_eq!(out.status.code(), Some(3), "{out}");
    assert!(out.stderr.contains("no sidecar answered"), "{out}");
    Ok(())
}
