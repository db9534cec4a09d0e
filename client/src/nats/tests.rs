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
    assert!(matches!(err, NatsError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
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
