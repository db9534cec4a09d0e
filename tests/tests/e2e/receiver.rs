//! The identity-provider signal receiver (issue 12), end to end: a transmitter simulator
//! written from the specifications signs logout tokens and SETs with its own key and serves
//! its JWKS; the real `denylist-receiver` verifies them and publishes; three real sidecars
//! that trust the receiver's key then reject the session's (or user's) tokens and nobody
//! else's. Plus push and poll delivery, one revocation for a signal delivered twice (or to
//! two replicas), hostile input that publishes nothing, and a NATS outage during a push
//! (503 until the retry can be stored) and during polling (no acknowledgement until then).

use denylist_proto::pb::Reason;
use denylist_tests::tokens::{ISSUER, OTHER_ISSUER};
use denylist_tests::transmitter::{
    ACCOUNT_DISABLED, KID, ReceiverKey, ReceiverOptions, ReceiverProcess, SESSION_REVOKED,
    Transmitter, forge, http_post,
};
use denylist_tests::{
    Denylistctl, Fleet, PROPAGATION_TIMEOUT, expect_reason, now_secs, unique, wait_for,
};
use serde_json::json;

/// A fleet of three sidecars trusting the receiver's key, the transmitter, and one receiver.
struct Setup {
    fleet: Fleet,
    transmitter: Transmitter,
    key: ReceiverKey,
    receiver: ReceiverProcess,
}

async fn setup(configure: impl Fn(&mut ReceiverOptions)) -> anyhow::Result<Setup> {
    let key = ReceiverKey::generate()?;
    // The receiver's key is scoped as deploy/ would: sessions and users of its issuer only.
    let fleet = Fleet::start_with(3, |o| {
        o.scoped_publishers.push(key.scoped_publisher(ISSUER));
    })
    .await?;
    let transmitter = Transmitter::start().await?;
    let mut options = ReceiverOptions::new(fleet.nats.url(), &transmitter, ISSUER);
    configure(&mut options);
    let receiver = ReceiverProcess::start(&key, &options).await?;
    Ok(Setup {
        fleet,
        transmitter,
        key,
        receiver,
    })
}

async fn messages(s: &Setup) -> anyhow::Result<u64> {
    Ok(s.fleet.stream_state().await?.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_token_revokes_that_session_on_every_sidecar_and_nothing_else()
-> anyhow::Result<()> {
    let s = setup(|_| {}).await?;
    let (sid, other_sid) = (unique("sid"), unique("sid"));
    let revoked = s.fleet.issuer.token().sub("alice").sid(&sid).mint();
    let same_user_other_session = s.fleet.issuer.token().sub("alice").sid(&other_sid).mint();
    let other_user = s.fleet.issuer.token().sub("bob").sid(&unique("sid")).mint();
    let other_issuer = s.fleet.other_issuer.token().sub("alice").sid(&sid).mint();

    let jti = unique("logout");
    let token =
        s.transmitter
            .logout_token(&s.transmitter.logout_claims(&jti, Some(&sid), Some("alice")));
    let answer = s.receiver.logout(&token).await?;
    anyhow::ensure!(answer.status == 200, "{answer:?}");

    expect_reason(
        &s.fleet.sidecars,
        &revoked,
        Reason::Revoked,
        PROPAGATION_TIMEOUT,
    )
    .await?;
    for token in [&same_user_other_session, &other_user, &other_issuer] {
        expect_reason(&s.fleet.sidecars, token, Reason::Ok, PROPAGATION_TIMEOUT).await?;
    }
    // The revocation names its source in `denylistctl history`.
    let history = Denylistctl::new(&s.fleet.nats.url())?
        .run(&["--output", "json", "history"], PROPAGATION_TIMEOUT)
        .await?
        .ok()?
        .json()?;
    let events = history["events"].as_array().cloned().unwrap_or_default();
    anyhow::ensure!(events.len() == 1, "{history}");
    let e = &events[0];
    assert_eq!(e["kind"], "session", "{e}");
    assert_eq!(e["issuer"], ISSUER, "{e}");
    assert_eq!(e["targets"], json!([sid]), "{e}");
    assert_eq!(e["actor"], "receiver/idp", "{e}");
    assert_eq!(e["reason"], format!("backchannel-logout jti={jti}"), "{e}");
    assert!(
        e["event_id"]
            .as_str()
            .unwrap_or_default()
            .starts_with("rcv-"),
        "{e}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_token_naming_only_the_user_revokes_the_users_earlier_tokens() -> anyhow::Result<()>
{
    let s = setup(|_| {}).await?;
    let earlier = s
        .fleet
        .issuer
        .token()
        .sub("carol")
        .iat(now_secs() - 30)
        .mint();
    let bob = s
        .fleet
        .issuer
        .token()
        .sub("bob")
        .iat(now_secs() - 30)
        .mint();
    let token = s.transmitter.logout_token(&s.transmitter.logout_claims(
        &unique("logout"),
        None,
        Some("carol"),
    ));
    let answer = s.receiver.logout(&token).await?;
    anyhow::ensure!(answer.status == 200, "{answer:?}");
    expect_reason(
        &s.fleet.sidecars,
        &earlier,
        Reason::Revoked,
        PROPAGATION_TIMEOUT,
    )
    .await?;
    expect_reason(&s.fleet.sidecars, &bob, Reason::Ok, PROPAGATION_TIMEOUT).await?;
    // A token issued after the logout is valid again.
    let later = s
        .fleet
        .issuer
        .token()
        .sub("carol")
        .iat(now_secs() + 2)
        .mint();
    expect_reason(&s.fleet.sidecars, &later, Reason::Ok, PROPAGATION_TIMEOUT).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_session_revoked_set_revokes_the_session_once_whoever_receives_it_twice()
-> anyhow::Result<()> {
    let s = setup(|_| {}).await?;
    let second = ReceiverProcess::start(
        &s.key,
        &ReceiverOptions::new(s.fleet.nats.url(), &s.transmitter, ISSUER),
    )
    .await?;
    let sid = unique("sid");
    let revoked = s.fleet.issuer.token().sub("dave").sid(&sid).mint();
    let other = s
        .fleet
        .issuer
        .token()
        .sub("dave")
        .sid(&unique("sid"))
        .mint();
    let set = s.transmitter.set(&s.transmitter.set_claims(
        &unique("set"),
        SESSION_REVOKED,
        json!({
            "format": "complex",
            "user": {"format": "iss_sub", "iss": ISSUER, "sub": "dave"},
            "session": {"format": "opaque", "id": sid},
        }),
        json!({"event_timestamp": now_secs()}),
    ));
    let before = messages(&s).await?;
    for receiver in [&s.receiver, &s.receiver, &second] {
        let answer = receiver.push(&set).await?;
        anyhow::ensure!(answer.status == 202, "{answer:?}");
    }
    expect_reason(
        &s.fleet.sidecars,
        &revoked,
        Reason::Revoked,
        PROPAGATION_TIMEOUT,
    )
    .await?;
    expect_reason(&s.fleet.sidecars, &other, Reason::Ok, PROPAGATION_TIMEOUT).await?;
    // Three deliveries, two replicas: one stored revocation.
    assert_eq!(messages(&s).await?, before + 1);
    let m = s.receiver.metrics().await?;
    assert!(
        m.contains(r#"denylist_receiver_signals_total{provider="idp",type="session-revoked",outcome="duplicate"} 1"#),
        "{m}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_sets_are_acknowledged_once_published_and_bad_ones_reported() -> anyhow::Result<()> {
    let s = setup(|o| {
        o.push_authorization = None;
        o.poll_endpoint = Some(format!("{}/poll", o.issuer));
    })
    .await?;
    let tx = &s.transmitter;
    let earlier = s
        .fleet
        .issuer
        .token()
        .sub("erin")
        .iat(now_secs() - 30)
        .mint();
    let frank = s
        .fleet
        .issuer
        .token()
        .sub("frank")
        .iat(now_secs() - 30)
        .mint();
    let (good, bad, unknown) = (unique("set"), unique("set"), unique("set"));
    tx.queue(
        &good,
        tx.set(&tx.set_claims(
            &good,
            ACCOUNT_DISABLED,
            json!({"format": "iss_sub", "iss": ISSUER, "sub": "erin"}),
            json!({"reason": "hijacking"}),
        )),
    );
    let mut wrong_aud = tx.set_claims(
        &bad,
        ACCOUNT_DISABLED,
        json!({"format": "iss_sub", "iss": ISSUER, "sub": "frank"}),
        json!({}),
    );
    wrong_aud["aud"] = json!("someone-else");
    tx.queue(&bad, tx.set(&wrong_aud));
    tx.queue(
        &unknown,
        tx.set(&tx.set_claims(
            &unknown,
            "urn:example:event:unknown",
            json!({"format": "opaque", "id": "x"}),
            json!({}),
        )),
    );
    wait_for(PROPAGATION_TIMEOUT, "the poll acknowledgements", || async {
        let acked = tx.acked();
        if acked.contains(&good) && acked.contains(&unknown) && tx.error_for(&bad).is_some() {
            Ok(())
        } else {
            Err(format!("acked {acked:?}, polls {}", tx.polls()))
        }
    })
    .await?;
    assert_eq!(tx.error_for(&bad).as_deref(), Some("invalid_audience"));
    assert!(!tx.acked().contains(&bad));
    expect_reason(
        &s.fleet.sidecars,
        &earlier,
        Reason::Revoked,
        PROPAGATION_TIMEOUT,
    )
    .await?;
    expect_reason(&s.fleet.sidecars, &frank, Reason::Ok, PROPAGATION_TIMEOUT).await?;
    assert_eq!(messages(&s).await?, 1, "only the good SET was published");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_signals_are_refused_with_a_clear_error_and_publish_nothing() -> anyhow::Result<()>
{
    let s = setup(|_| {}).await?;
    let tx = &s.transmitter;
    let r = &s.receiver;
    let sid = unique("sid");
    let victim = s.fleet.issuer.token().sub("gina").sid(&sid).mint();
    let claims = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = tx.logout_claims(&unique("logout"), Some(&sid), Some("gina"));
        f(&mut c);
        c
    };
    let logout_cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "bad signature",
            forge(
                &json!({"alg": "RS256", "kid": KID, "typ": "logout+jwt"}),
                &claims(&|_| {}),
            ),
            400,
            "signature",
        ),
        (
            "wrong aud",
            tx.logout_token(&claims(&|c| c["aud"] = json!("other-client"))),
            400,
            "aud",
        ),
        (
            "wrong iss",
            tx.logout_token(&claims(&|c| c["iss"] = json!("https://evil.example"))),
            400,
            "iss",
        ),
        (
            "old iat",
            tx.logout_token(&claims(&|c| c["iat"] = json!(now_secs() - 3600))),
            400,
            "old",
        ),
        (
            "future iat",
            tx.logout_token(&claims(&|c| c["iat"] = json!(now_secs() + 3600))),
            400,
            "future",
        ),
        (
            "expired",
            tx.logout_token(&claims(&|c| c["exp"] = json!(now_secs() - 3600))),
            400,
            "expired",
        ),
        (
            "nonce",
            tx.logout_token(&claims(&|c| c["nonce"] = json!("abc"))),
            400,
            "nonce",
        ),
        (
            "alg none",
            tx.sign_with_header(
                &json!({"alg": "none", "typ": "logout+jwt"}),
                &claims(&|_| {}),
            ),
            400,
            "none",
        ),
        (
            "no event",
            tx.logout_token(&claims(&|c| c["events"] = json!({}))),
            400,
            "backchannel-logout",
        ),
        (
            "ID token",
            tx.sign_with_header(
                &json!({"alg": "RS256", "kid": KID, "typ": "JWT"}),
                &claims(&|_| {}),
            ),
            400,
            "typ",
        ),
        ("not a JWT", "not-a-token".to_owned(), 400, "JWS"),
    ];
    for (case, token, status, needle) in &logout_cases {
        let answer = r.logout(token).await?;
        let description = answer.json()["error_description"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        anyhow::ensure!(
            answer.status == *status
                && answer.json()["error"] == "invalid_request"
                && description.contains(needle),
            "{case}: {answer:?}"
        );
    }
    // Malformed forms, and a body over the limit.
    let path = "/backchannel-logout/idp";
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    for (case, headers, body, status) in [
        ("no logout_token", &form[..], b"token=abc".to_vec(), 400),
        (
            "JSON instead of a form",
            &[("Content-Type", "application/json")][..],
            br#"{"logout_token":"x"}"#.to_vec(),
            400,
        ),
        (
            "two tokens",
            &form[..],
            b"logout_token=a&logout_token=b".to_vec(),
            400,
        ),
        ("oversized", &form[..], vec![b'a'; 64 * 1024], 413),
    ] {
        let answer = http_post(r.addr(), path, headers, &body).await?;
        anyhow::ensure!(answer.status == status, "{case}: {answer:?}");
    }
    // SETs: bad signature, wrong audience, no or wrong authorization, malformed JSON,
    // two events, unknown events (acknowledged, never published).
    let set_claims = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = tx.set_claims(
            &unique("set"),
            SESSION_REVOKED,
            json!({"format": "opaque", "id": sid}),
            json!({}),
        );
        f(&mut c);
        c
    };
    let set_cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "bad signature",
            forge(
                &json!({"alg": "RS256", "kid": KID, "typ": "secevent+jwt"}),
                &set_claims(&|_| {}),
            ),
            400,
            "invalid_key",
        ),
        (
            "wrong aud",
            tx.set(&set_claims(&|c| c["aud"] = json!("x"))),
            400,
            "invalid_audience",
        ),
        (
            "wrong iss",
            tx.set(&set_claims(&|c| c["iss"] = json!("https://evil.example"))),
            400,
            "invalid_issuer",
        ),
        (
            "two events",
            tx.set(&set_claims(&|c| c["events"][ACCOUNT_DISABLED] = json!({}))),
            400,
            "invalid_request",
        ),
        (
            "malformed JSON",
            tx.sign_payload(
                &json!({"alg": "RS256", "kid": KID, "typ": "secevent+jwt"}),
                b"{not json",
            ),
            400,
            "invalid_request",
        ),
        (
            "SET older than set_max_age",
            tx.set(&set_claims(&|c| c["iat"] = json!(now_secs() - 2 * 86_400))),
            400,
            "invalid_request",
        ),
        (
            "SET from the future",
            tx.set(&set_claims(&|c| c["iat"] = json!(now_secs() + 3600))),
            400,
            "invalid_request",
        ),
        (
            "a user of an issuer the provider does not map to",
            tx.set(&set_claims(&|c| {
                c["events"] = json!({ACCOUNT_DISABLED: {}});
                c["sub_id"] = json!({"format": "iss_sub", "iss": OTHER_ISSUER, "sub": "gina"});
            })),
            400,
            "access_denied",
        ),
        (
            "an email with no mapping",
            tx.set(&set_claims(&|c| {
                c["events"] = json!({ACCOUNT_DISABLED: {}});
                c["sub_id"] = json!({"format": "email", "email": "gina@example.com"});
            })),
            400,
            "access_denied",
        ),
        (
            "unknown event",
            tx.set(&set_claims(&|c| {
                c["events"] = json!({"urn:example:unknown": {}})
            })),
            202,
            "",
        ),
    ];
    for (case, set, status, code) in &set_cases {
        let answer = r.push(set).await?;
        anyhow::ensure!(answer.status == *status, "{case}: {answer:?}");
        if !code.is_empty() {
            anyhow::ensure!(answer.json()["err"] == *code, "{case}: {answer:?}");
        }
    }
    let good_set = tx.set(&set_claims(&|_| {}));
    for (case, auth) in [
        ("no authorization", None),
        ("wrong authorization", Some("Bearer guess")),
    ] {
        let mut headers = vec![("Content-Type", "application/secevent+jwt")];
        if let Some(auth) = auth {
            headers.push(("Authorization", auth));
        }
        let answer = http_post(r.addr(), "/ssf/push/idp", &headers, good_set.as_bytes()).await?;
        anyhow::ensure!(
            answer.status == 401 && answer.json()["err"] == "authentication_failed",
            "{case}: {answer:?}"
        );
    }
    anyhow::ensure!(messages(&s).await? == 0, "a hostile signal was published");
    expect_reason(&s.fleet.sidecars, &victim, Reason::Ok, PROPAGATION_TIMEOUT).await?;

    // A valid logout token, then the same one replayed: refused the second time.
    let token = tx.logout_token(&claims(&|_| {}));
    anyhow::ensure!(r.logout(&token).await?.status == 200);
    let replay = r.logout(&token).await?;
    anyhow::ensure!(
        replay.status == 400
            && replay.json()["error_description"]
                .as_str()
                .unwrap_or_default()
                .contains("already"),
        "{replay:?}"
    );
    anyhow::ensure!(messages(&s).await? == 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_refuses_pushes_until_the_signal_can_be_stored() -> anyhow::Result<()> {
    let mut s = setup(|o| o.publish_timeout = std::time::Duration::from_millis(500)).await?;
    let sid = unique("sid");
    let revoked = s.fleet.issuer.token().sub("hank").sid(&sid).mint();
    let set = s.transmitter.set(&s.transmitter.set_claims(
        &unique("set"),
        SESSION_REVOKED,
        json!({"format": "opaque", "id": sid}),
        json!({}),
    ));
    s.fleet.nats.stop();
    let answer = s.receiver.push(&set).await?;
    anyhow::ensure!(
        answer.status == 503,
        "no acknowledgement during the outage: {answer:?}"
    );
    s.fleet.nats.start_again().await?;
    // The provider retries (here: until the receiver has reconnected and stored it).
    wait_for(
        PROPAGATION_TIMEOUT,
        "the retried push to be accepted",
        || async {
            match s.receiver.push(&set).await {
                Ok(a) if a.status == 202 => Ok(()),
                Ok(a) => Err(format!("{} {}", a.status, a.body)),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    expect_reason(
        &s.fleet.sidecars,
        &revoked,
        Reason::Revoked,
        PROPAGATION_TIMEOUT,
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_stops_poll_acknowledgements_until_the_signal_is_stored() -> anyhow::Result<()>
{
    let mut s = setup(|o| {
        o.push_authorization = None;
        o.poll_endpoint = Some(format!("{}/poll", o.issuer));
        o.publish_timeout = std::time::Duration::from_millis(300);
    })
    .await?;
    let earlier = s
        .fleet
        .issuer
        .token()
        .sub("ivan")
        .iat(now_secs() - 30)
        .mint();
    let jti = unique("set");
    s.fleet.nats.stop();
    let tx = &s.transmitter;
    tx.queue(
        &jti,
        tx.set(&tx.set_claims(
            &jti,
            ACCOUNT_DISABLED,
            json!({"format": "iss_sub", "iss": ISSUER, "sub": "ivan"}),
            json!({}),
        )),
    );
    // Delivered again and again while NATS is down, never acknowledged nor reported.
    let polls = tx.polls();
    wait_for(
        PROPAGATION_TIMEOUT,
        "three more polls during the outage",
        || async {
            if tx.polls() >= polls + 3 {
                Ok(())
            } else {
                Err(format!("{} polls", tx.polls()))
            }
        },
    )
    .await?;
    anyhow::ensure!(!tx.acked().contains(&jti), "acknowledged during the outage");
    anyhow::ensure!(
        tx.error_for(&jti).is_none(),
        "reported as bad during the outage"
    );
    s.fleet.nats.start_again().await?;
    // Acknowledged once NATS is back.
    tx.wait_acked(&jti, PROPAGATION_TIMEOUT).await?;
    expect_reason(
        &s.fleet.sidecars,
        &earlier,
        Reason::Revoked,
        PROPAGATION_TIMEOUT,
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_at_the_provider_is_fetched_when_a_signal_names_it() -> anyhow::Result<()> {
    let mut s = setup(|_| {}).await?;
    let sid = unique("sid");
    let revoked = s.fleet.issuer.token().sub("judy").sid(&sid).mint();
    s.transmitter.rotate_key("tx-2")?;
    let token = s.transmitter.logout_token(&s.transmitter.logout_claims(
        &unique("logout"),
        Some(&sid),
        None,
    ));
    let answer = s.receiver.logout(&token).await?;
    anyhow::ensure!(answer.status == 200, "{answer:?}");
    expect_reason(
        &s.fleet.sidecars,
        &revoked,
        Reason::Revoked,
        PROPAGATION_TIMEOUT,
    )
    .await?;
    // A `kid` the provider never published stays unknown.
    let forged = forge(
        &json!({"alg": "RS256", "kid": "tx-9", "typ": "logout+jwt"}),
        &s.transmitter
            .logout_claims(&unique("logout"), Some(&sid), None),
    );
    let answer = s.receiver.logout(&forged).await?;
    anyhow::ensure!(
        answer.status == 400
            && answer.json()["error_description"]
                .as_str()
                .unwrap_or_default()
                .contains("tx-9"),
        "{answer:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_poll_answer_is_refused_and_polling_recovers() -> anyhow::Result<()> {
    // maxEvents 100 × max_body_bytes 1 KiB + 64 KiB: answers are read up to 164 KiB.
    let s = setup(|o| {
        o.push_authorization = None;
        o.poll_endpoint = Some(format!("{}/poll", o.issuer));
        o.max_body_bytes = 1024;
    })
    .await?;
    let tx = &s.transmitter;
    tx.pad_poll_answers(400 * 1024);
    let jti = unique("set");
    tx.queue(
        &jti,
        tx.set(&tx.set_claims(
            &jti,
            ACCOUNT_DISABLED,
            json!({"format": "iss_sub", "iss": ISSUER, "sub": "gus"}),
            json!({}),
        )),
    );
    wait_for(PROPAGATION_TIMEOUT, "a refused poll answer", || async {
        let m = s.receiver.metrics().await.map_err(|e| e.to_string())?;
        if m.contains(r#"denylist_receiver_polls_total{provider="idp",outcome="bad_response"}"#) {
            Ok(())
        } else {
            Err(m)
        }
    })
    .await?;
    let log = s.receiver.log();
    anyhow::ensure!(log.contains("longer than 167936 bytes"), "{log}");
    assert!(tx.acked().is_empty(), "nothing in it was acted on");
    assert_eq!(messages(&s).await?, 0);
    // The transmitter behaves again: the SET is acted on and acknowledged.
    tx.pad_poll_answers(0);
    wait_for(PROPAGATION_TIMEOUT, "the SET's acknowledgement", || async {
        let acked = tx.acked();
        if acked.contains(&jti) {
            Ok(())
        } else {
            Err(format!("{acked:?}"))
        }
    })
    .await?;
    Ok(())
}
