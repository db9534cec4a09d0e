use super::*;
use crate::fake_verifier::FakeServer;

/// Every await in these tests is bounded, so a hang fails instead of stalling the suite.
async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("test step timed out")
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let p = RetryPolicy {
        max_attempts: 10,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(35),
    };
    let waits: Vec<u64> = (1..=4).map(|a| p.backoff(a).as_millis() as u64).collect();
    assert_eq!(waits, [10, 20, 35, 35]);
    assert_eq!(RetryPolicy::default().max_attempts, 3);
    assert_eq!(RetryPolicy::NONE.max_attempts, 1);
}

#[tokio::test]
async fn verify_check_and_status_over_the_unix_socket() {
    let fake = FakeServer::start().await;
    let client = bounded(Client::connect_unix(&fake.socket)).await.unwrap();
    assert_eq!(client.deadline(), Client::DEFAULT_DEADLINE);
    assert_eq!(client.target(), fake.socket.display().to_string());

    let answer = bounded(client.verify("good")).await.unwrap();
    assert!(answer.valid);
    assert_eq!(answer.claims.unwrap().sub, "alice");

    // An invalid token is an answer, not an error.
    let answer = bounded(client.verify("expired")).await.unwrap();
    assert!(!answer.valid);
    assert_eq!(answer.reason, pb::Reason::Expired as i32);

    let check = bounded(client.check(pb::CheckRequest {
        issuer: "https://auth.example.com".to_owned(),
        jti: "revoked-jti".to_owned(),
        ..pb::CheckRequest::default()
    }))
    .await
    .unwrap();
    assert!(check.revoked);

    let status = bounded(client.status()).await.unwrap();
    assert!(status.ready);
    assert_eq!(status.name, "fake");
}

#[tokio::test]
async fn unavailable_is_retried_within_the_attempt_budget() {
    let fake = FakeServer::start().await;
    let client = bounded(Client::connect_unix(&fake.socket)).await.unwrap();
    fake.unavailable_first(2);
    let answer = bounded(client.verify("good")).await.unwrap();
    assert!(answer.valid);
    assert_eq!(fake.calls(), 3);
}

#[tokio::test]
async fn unavailable_on_every_attempt_is_an_error() {
    let fake = FakeServer::start().await;
    let client = bounded(Client::connect_unix(&fake.socket)).await.unwrap();
    fake.unavailable_first(100);
    let err = bounded(client.verify("good")).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Unavailable { attempts: 3, message, .. } if message.contains("catching up")),
        "{err:?}"
    );
    assert!(err.is_unavailable());
    assert_eq!(fake.calls(), 3);

    let no_retry = client.clone().with_retry(RetryPolicy::NONE);
    fake.unavailable_first(100);
    let before = fake.calls();
    bounded(no_retry.status()).await.unwrap_err();
    assert_eq!(fake.calls() - before, 1);
}

#[tokio::test]
async fn other_codes_are_never_retried() {
    let fake = FakeServer::start().await;
    let client = bounded(Client::connect_unix(&fake.socket)).await.unwrap();
    let err = bounded(client.verify("internal")).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Rpc {
                code: Code::Internal,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_unavailable());
    assert_eq!(fake.calls(), 1);
}

#[tokio::test]
async fn the_deadline_bounds_a_slow_answer() {
    let fake = FakeServer::start().await;
    let client = bounded(Client::connect_unix(&fake.socket))
        .await
        .unwrap()
        .with_deadline(Duration::from_millis(100));
    let err = bounded(client.verify("slow")).await.unwrap_err();
    assert!(
        matches!(err, ClientError::DeadlineExceeded { .. }),
        "{err:?}"
    );
    assert!(err.is_unavailable());
    assert!(err.to_string().contains("100ms"), "{err}");
}

#[tokio::test]
async fn a_missing_socket_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing.sock");
    let err = bounded(Client::connect_unix(&missing)).await.unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    assert!(err.is_unavailable());

    // A lazy client is built fine and fails per call, as unavailable, after retrying.
    let lazy = Client::lazy_unix(&missing);
    let err = bounded(lazy.verify("good")).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

#[tokio::test]
async fn a_lazy_client_reaches_a_sidecar_that_starts_later() {
    let fake = FakeServer::start().await;
    let lazy = Client::lazy_unix(&fake.socket);
    assert!(bounded(lazy.verify("good")).await.unwrap().valid);
}
