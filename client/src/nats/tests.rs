use super::*;

#[test]
fn servers_split_on_commas() {
    let o = NatsOptions::new(" nats://a:4222, tls://b:4222 ,,");
    assert_eq!(o.servers(), ["nats://a:4222", "tls://b:4222"]);
    o.validate().unwrap();
    assert_eq!(NatsOptions::default().servers(), ["nats://127.0.0.1:4222"]);
}

#[test]
fn contradictory_auth_is_refused_naming_the_option() {
    let option = |o: NatsOptions| match o.validate() {
        Err(NatsError::Invalid { option, .. }) => option,
        other => panic!("{other:?}"),
    };
    assert_eq!(option(NatsOptions::new("")), "url");
    assert_eq!(
        option(NatsOptions {
            token: Some("t".into()),
            creds_file: Some("c.creds".into()),
            ..NatsOptions::default()
        }),
        "auth"
    );
    assert_eq!(
        option(NatsOptions {
            user: Some("u".into()),
            ..NatsOptions::default()
        }),
        "user"
    );
    assert_eq!(
        option(NatsOptions {
            tls_cert_file: Some("c.pem".into()),
            ..NatsOptions::default()
        }),
        "tls_cert_file"
    );
}

#[tokio::test]
async fn unreadable_files_are_named() {
    let options = NatsOptions {
        nkey_seed_file: Some("/nonexistent/seed.nk".into()),
        ..NatsOptions::new("nats://127.0.0.1:1")
    };
    let err = tokio::time::timeout(Duration::from_secs(10), options.connect())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&err, NatsError::ReadFile { path, .. } if path.ends_with("seed.nk")),
        "{err:?}"
    );
}

#[tokio::test]
async fn nothing_listening_fails_within_the_deadline() {
    // Port 1 on loopback: connection refused at once, retried until the deadline.
    let options = NatsOptions::new("nats://127.0.0.1:1");
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        options.connect_until(Duration::from_millis(300)),
    )
    .await
    .unwrap()
    .unwrap_err();
    let NatsError::GaveUp(gave_up) = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(gave_up.last(), Some(NatsError::Connect { .. })),
        "{err:?}"
    );
    let shown = err.to_string();
    assert!(
        shown.starts_with("connecting to NATS: still failing when the deadline passed"),
        "{shown}"
    );
    assert!(shown.contains("127.0.0.1:1"), "{shown}");
}

#[tokio::test]
async fn bad_options_are_not_retried() {
    let options = NatsOptions {
        token: Some("t".into()),
        user: Some("u".into()),
        password: Some("p".into()),
        ..NatsOptions::new("nats://127.0.0.1:1")
    };
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        options.connect_until(Duration::from_secs(60)),
    )
    .await
    .expect("an invalid option fails at once, not at the deadline")
    .unwrap_err();
    assert!(matches!(err, NatsError::Invalid { .. }), "{err:?}");
}

#[test]
fn reconnects_are_quick_jittered_and_capped() {
    let first: Vec<_> = (0..100).map(|_| reconnect_delay(1)).collect();
    assert!(
        first
            .iter()
            .all(|d| *d >= Duration::from_millis(25) && *d <= Duration::from_millis(50)),
        "{first:?}"
    );
    assert!(first.iter().any(|d| *d != first[0]), "not jittered");
    for attempts in [5, 50, usize::MAX] {
        let d = reconnect_delay(attempts);
        assert!(
            d >= Duration::from_millis(250) && d <= Duration::from_millis(500),
            "attempt {attempts}: {d:?}"
        );
    }
}

#[test]
fn backoff_grows_with_jitter_within_bounds() {
    let backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(2),
    };
    for (retry, ceiling_ms) in [
        (0, 100),
        (1, 200),
        (2, 400),
        (4, 1600),
        (5, 2000),
        (40, 2000),
    ] {
        let ceiling = Duration::from_millis(ceiling_ms);
        let delays: Vec<_> = (0..200).map(|_| backoff.delay(retry)).collect();
        assert!(
            delays.iter().all(|d| *d >= ceiling / 2 && *d <= ceiling),
            "retry {retry}: {delays:?}"
        );
        // Jittered: 200 draws are not all the same.
        assert!(delays.iter().any(|d| *d != delays[0]), "retry {retry}");
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(&'static str);

#[tokio::test(start_paused = true)]
async fn retry_until_stops_at_the_deadline_and_names_the_step() {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(10);
    let mut calls = 0;
    let err = retry_until(
        "checking stream X",
        deadline,
        Backoff::DEFAULT,
        |_| true,
        || {
            calls += 1;
            async { Err::<(), _>(Failure("no leader")) }
        },
    )
    .await
    .unwrap_err();
    assert!(Instant::now() <= deadline, "retried past the deadline");
    assert!(
        Instant::now() + Duration::from_millis(500) >= deadline,
        "gave up early: {:?} left",
        deadline - Instant::now()
    );
    assert!(calls > 5, "{calls} calls");
    let shown = err.to_string();
    assert!(
        shown.starts_with("checking stream X: still failing when the deadline passed (")
            && shown.ends_with(": no leader"),
        "{shown}"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_until_returns_a_permanent_error_at_once() {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut calls = 0;
    let err = retry_until(
        "checking stream X",
        deadline,
        Backoff::DEFAULT,
        |_| false,
        || {
            calls += 1;
            async { Err::<(), _>(Failure("not found")) }
        },
    )
    .await
    .unwrap_err();
    assert_eq!(calls, 1);
    assert_eq!(err.to_string(), "checking stream X: not found");
}

#[tokio::test(start_paused = true)]
async fn retry_until_cuts_a_hung_attempt_at_the_deadline() {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut calls = 0;
    let err = retry_until(
        "publishing",
        deadline,
        Backoff::DEFAULT,
        |_| true,
        || {
            calls += 1;
            let first = calls == 1;
            async move {
                if first {
                    Err(Failure("no responders"))
                } else {
                    std::future::pending::<Result<(), Failure>>().await
                }
            }
        },
    )
    .await
    .unwrap_err();
    assert_eq!(Instant::now(), deadline);
    assert_eq!(calls, 2);
    // The hung attempt has no error of its own: the last complete one is reported.
    assert!(err.to_string().ends_with(": no responders"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn retry_until_succeeds_once_the_step_does() {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut calls = 0;
    let value = retry_until(
        "publishing",
        deadline,
        Backoff::DEFAULT,
        |_| true,
        || {
            calls += 1;
            let done = calls == 4;
            async move {
                if done {
                    Ok(42)
                } else {
                    Err(Failure("no leader"))
                }
            }
        },
    )
    .await
    .unwrap();
    assert_eq!((value, calls), (42, 4));
}

#[test]
fn credentials_in_urls_are_never_shown() {
    assert_eq!(
        shown_urls("nats://alice:s3cret@nats:4222, tls://t0ken@h:1/x@y,nats://plain:4222"),
        "nats://***@nats:4222,tls://***@h:1/x@y,nats://plain:4222"
    );
    assert_eq!(shown_urls("u:p@host:4222"), "***@host:4222");
}

#[tokio::test]
async fn a_failed_connect_does_not_print_the_password() {
    let options = NatsOptions::new("nats://alice:s3cret@127.0.0.1:1");
    let err = tokio::time::timeout(Duration::from_secs(10), options.connect())
        .await
        .unwrap()
        .unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("127.0.0.1:1"), "{shown}");
    assert!(
        !shown.contains("s3cret") && !shown.contains("alice"),
        "{shown}"
    );
}

#[test]
fn debug_never_prints_a_secret() {
    let mut options = NatsOptions::new("nats://alice:s3cret@nats:4222");
    options.password = Some("pa55word".into());
    options.token = Some("t0ken".into());
    let shown = format!("{options:?}");
    for secret in ["s3cret", "pa55word", "t0ken"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("<redacted>"), "{shown}");
    assert!(shown.contains("nats:4222"), "{shown}");
}
