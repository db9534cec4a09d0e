//! Unit tests of the managed SSF stream when the transmitter or its surroundings misbehave:
//! a credential a refresher rewrites, optional steps refused, oversized answers, endpoints
//! that would carry the credential in clear, stale verification states, resync requests
//! while retries back off, and the key the states are bound to. Against an in-process
//! fake whose every answer the test sets.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::super::config::ReceiverConfig;
use super::super::metrics::Metrics;
use super::super::ssf::{self, ApiError, Credential};
use super::tests::PUSH_URL;
use super::{ManagedStream, state_key_material};

/// What the fake answers; the test changes it between requests.
struct Fake {
    base: String,
    /// The `Authorization` value accepted.
    token: String,
    /// Written to the credential file when a request carries another value, before the
    /// 401: a refresher that finished just as the request left.
    refresh_to: Option<(std::path::PathBuf, String)>,
    /// The metadata's status (200: the normal document).
    metadata_status: u16,
    /// Replaces the normal metadata document.
    metadata: Option<Value>,
    /// The streams listed.
    streams: Vec<Value>,
    /// Bytes of padding streamed (no Content-Length) in the list answer.
    list_padding: usize,
    /// The status endpoint's status (200: `enabled`).
    status_status: u16,
    /// The DELETE status.
    delete_status: u16,
    metadata_requests: AtomicU64,
}

type Shared = Arc<Mutex<Fake>>;

fn wrong_token(f: &Shared, headers: &HeaderMap) -> Option<Response> {
    let f = f.lock();
    let sent = headers.get("authorization").and_then(|v| v.to_str().ok());
    if sent == Some(f.token.as_str()) {
        return None;
    }
    if let Some((path, value)) = &f.refresh_to {
        std::fs::write(path, value).unwrap();
    }
    Some(StatusCode::UNAUTHORIZED.into_response())
}

async fn start(fake: Fake) -> (Shared, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shared = Arc::new(Mutex::new(Fake {
        base: base.clone(),
        ..fake
    }));
    let app = axum::Router::new()
        .route(
            "/.well-known/ssf-configuration",
            get(|State(f): State<Shared>| async move {
                let f = f.lock();
                f.metadata_requests.fetch_add(1, Ordering::SeqCst);
                if f.metadata_status != 200 {
                    return StatusCode::from_u16(f.metadata_status)
                        .unwrap()
                        .into_response();
                }
                let base = &f.base;
                let document = f.metadata.clone().unwrap_or_else(|| {
                    json!({
                        "issuer": base,
                        "configuration_endpoint": format!("{base}/stream"),
                        "status_endpoint": format!("{base}/status"),
                        "verification_endpoint": format!("{base}/verify"),
                    })
                });
                axum::Json(document).into_response()
            }),
        )
        .route(
            "/stream",
            get(|State(f): State<Shared>, headers: HeaderMap| async move {
                if let Some(refused) = wrong_token(&f, &headers) {
                    return refused;
                }
                let (streams, padding) = {
                    let f = f.lock();
                    (f.streams.clone(), f.list_padding)
                };
                if padding == 0 {
                    return axum::Json(streams).into_response();
                }
                // Streamed in chunks without a length: the bound must hold while reading.
                let chunks = std::iter::once(Ok::<_, std::io::Error>("[\"".to_owned()))
                    .chain((0..padding / 65_536).map(|_| Ok("x".repeat(65_536))))
                    .chain(std::iter::once(Ok("\"]".to_owned())));
                Body::from_stream(futures::stream::iter(chunks)).into_response()
            })
            .delete(|State(f): State<Shared>, headers: HeaderMap| async move {
                if let Some(refused) = wrong_token(&f, &headers) {
                    return refused;
                }
                StatusCode::from_u16(f.lock().delete_status)
                    .unwrap()
                    .into_response()
            }),
        )
        .route(
            "/status",
            get(|State(f): State<Shared>, headers: HeaderMap| async move {
                if let Some(refused) = wrong_token(&f, &headers) {
                    return refused;
                }
                match f.lock().status_status {
                    200 => axum::Json(json!({"status": "enabled"})).into_response(),
                    code => StatusCode::from_u16(code).unwrap().into_response(),
                }
            }),
        )
        .route("/verify", post(|| async { StatusCode::NO_CONTENT }))
        .with_state(shared.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (shared, base)
}

fn fake(token: &str) -> Fake {
    Fake {
        base: String::new(),
        token: token.to_owned(),
        refresh_to: None,
        metadata_status: 200,
        metadata: None,
        streams: Vec::new(),
        list_padding: 0,
        status_status: 200,
        delete_status: 204,
        metadata_requests: AtomicU64::new(0),
    }
}

/// A push stream as this receiver wants it, as the transmitter at `base` lists it.
fn listed(base: &str, id: &str, events: &[String]) -> Value {
    json!({
        "stream_id": id,
        "iss": base,
        "aud": "denylist",
        "delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": PUSH_URL},
        "events_requested": events,
    })
}

/// A managed stream of provider `kc` (issuer `base`) with its management credential in
/// `dir/mgmt` holding `secret`; `extra` goes into `[providers.stream]`.
fn managed(dir: &tempfile::TempDir, base: &str, secret: &str, extra: &str) -> ManagedStream {
    super::tests::managed_stream(
        dir,
        "mgmt",
        base,
        secret,
        &format!("delivery = \"push\"\nendpoint_url = \"{PUSH_URL}\"\n{extra}"),
    )
}

fn events() -> Vec<String> {
    let config = ReceiverConfig::parse(
        "signing_key_file = \"k\"\n[[providers]]\nname = \"kc\"\nissuer = \"https://x\"\n\
         audiences = [\"a\"]\n",
    )
    .unwrap();
    config.providers[0].ssf_events()
}

#[tokio::test]
async fn the_management_credential_is_read_again_for_every_request_and_after_a_401() {
    let (fake, base) = start(fake("Bearer one")).await;
    fake.lock().streams = vec![listed(&base, "s1", &events())];
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::default();
    let stream = managed(&dir, &base, "Bearer one", "");
    stream.reconcile(&metrics).await.unwrap();

    // A refresher rewrote the file with a new token, and the old one expired.
    std::fs::write(dir.path().join("mgmt"), "Bearer two\n").unwrap();
    fake.lock().token = "Bearer two".into();
    stream.reconcile(&metrics).await.unwrap();

    // The refresher finishes just as a request leaves with the old value: the 401 makes
    // the receiver read the file again and send the request once more.
    fake.lock().token = "Bearer three".into();
    fake.lock().refresh_to = Some((dir.path().join("mgmt"), "Bearer three".into()));
    stream.reconcile(&metrics).await.unwrap();
    let text = metrics.render();
    assert!(
        !text.contains(r#"outcome="unauthorized""#),
        "no request was refused: {text}"
    );

    // A file that disappears is its own outcome, naming the field.
    std::fs::remove_file(dir.path().join("mgmt")).unwrap();
    let e = stream.reconcile(&metrics).await.unwrap_err();
    assert!(matches!(e, ApiError::Credential(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("providers[0].stream.authorization_file"),
        "{e}"
    );
    assert!(
        metrics.render().contains(
            r#"denylist_receiver_stream_requests_total{provider="kc",operation="list",outcome="credential_unreadable"} 1"#
        ),
        "{}",
        metrics.render()
    );
}

#[tokio::test]
async fn a_refused_status_or_delete_is_counted_and_the_stream_is_still_configured() {
    let (fake, base) = start(fake("Bearer mgmt")).await;
    {
        let mut f = fake.lock();
        // Two replicas created one each: s1 is kept, s2 should go.
        f.streams = vec![
            listed(&base, "s1", &events()),
            listed(&base, "s2", &events()),
        ];
        f.status_status = 404;
        f.delete_status = 403;
    }
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::default();
    let stream = managed(&dir, &base, "Bearer mgmt", "");
    let r = stream.reconcile(&metrics).await.unwrap();
    assert_eq!(r.stream_id, "s1");
    let state = stream.state();
    assert!(state.configured, "{state:?}");
    assert_eq!(state.status, None, "status unknown");
    let text = metrics.render();
    for line in [
        r#"denylist_receiver_stream_requests_total{provider="kc",operation="status",outcome="http_error"} 1"#,
        r#"denylist_receiver_stream_requests_total{provider="kc",operation="delete",outcome="forbidden"} 1"#,
        r#"denylist_receiver_stream_configured{provider="kc"} 1"#,
    ] {
        assert!(text.contains(line), "{line} missing from {text}");
    }
}

#[tokio::test]
async fn an_oversized_answer_is_refused_while_it_is_read() {
    let (fake, base) = start(fake("Bearer mgmt")).await;
    fake.lock().list_padding = 2 * ssf::MAX_MANAGEMENT_BODY;
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::default();
    let stream = managed(&dir, &base, "Bearer mgmt", "");
    let e = stream.reconcile(&metrics).await.unwrap_err();
    assert!(matches!(e, ApiError::BadResponse(_)), "{e:?}");
    assert!(
        e.to_string().contains("longer than 1048576 bytes") && e.to_string().contains("/stream"),
        "{e}"
    );
    // Just under the bound is read.
    fake.lock().list_padding = 0;
    fake.lock().streams = vec![listed(&base, "s1", &events())];
    stream.reconcile(&metrics).await.unwrap();
}

#[tokio::test]
async fn endpoints_that_would_carry_the_credential_in_clear_are_refused() {
    let (fake, base) = start(fake("Bearer mgmt")).await;
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::default();
    let stream = managed(&dir, &base, "Bearer mgmt", "");
    for name in [
        "configuration_endpoint",
        "status_endpoint",
        "verification_endpoint",
    ] {
        let mut document = json!({
            "issuer": base,
            "configuration_endpoint": format!("{base}/stream"),
        });
        document[name] = json!("http://transmitter.example.com/ssf");
        fake.lock().metadata = Some(document);
        let e = stream.reconcile(&metrics).await.unwrap_err();
        assert!(
            e.to_string().contains(name) && e.to_string().contains("https"),
            "{name}: {e}"
        );
    }
    // A poll stream's endpoint_url too.
    fake.lock().metadata = None;
    let poll = {
        let file = dir.path().join("mgmt");
        let text = format!(
            "signing_key_file = \"k.pem\"\n[[providers]]\nname = \"kc\"\nissuer = {base:?}\n\
             audiences = [\"denylist\"]\njwks_file = \"j\"\n\
             [providers.stream]\nauthorization_file = {:?}\ndelivery = \"poll\"\n",
            file.display().to_string(),
        );
        let config = ReceiverConfig::parse(&text).unwrap();
        let p = &config.providers[0];
        ManagedStream::new(
            p,
            0,
            p.stream.as_ref().unwrap(),
            None,
            reqwest::Client::new(),
            b"k",
        )
        .unwrap()
    };
    fake.lock().streams = vec![json!({
        "stream_id": "p1", "iss": base, "aud": "denylist", "events_requested": events(),
        "delivery": {"method": "urn:ietf:rfc:8936", "endpoint_url": "http://transmitter.example.com/poll/p1"},
    })];
    let e = poll.reconcile(&metrics).await.unwrap_err();
    assert!(
        e.to_string().contains("endpoint_url") && e.to_string().contains("https"),
        "{e}"
    );
    // Loopback hosts may use http (tests, a local proxy).
    for ok in [
        "http://127.0.0.1:1/x",
        "http://127.8.0.1/x",
        "http://localhost/x",
        "http://[::1]/x",
        "https://tx.example.com/x",
    ] {
        assert_eq!(ssf::check_secure_url(ok), Ok(()), "{ok}");
    }
    for bad in [
        "http://10.0.0.1/x",
        "http://localhost.example.com/x",
        "ftp://127.0.0.1/x",
    ] {
        assert!(ssf::check_secure_url(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn a_stream_without_iss_or_with_another_is_refused() {
    let (fake, base) = start(fake("Bearer mgmt")).await;
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::default();
    let stream = managed(&dir, &base, "Bearer mgmt", "");
    let mut s1 = listed(&base, "s1", &events());
    s1.as_object_mut().unwrap().remove("iss");
    fake.lock().streams = vec![s1.clone()];
    let e = stream.reconcile(&metrics).await.unwrap_err();
    assert!(e.to_string().contains("no iss"), "{e}");
    // Identical, as SSF 1.0 says: a trailing slash is another issuer.
    s1["iss"] = json!(format!("{base}/"));
    fake.lock().streams = vec![s1];
    let e = stream.reconcile(&metrics).await.unwrap_err();
    assert!(
        e.to_string().contains("is not the provider's issuer"),
        "{e}"
    );
}

#[test]
fn a_verification_state_too_old_or_from_the_future_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    // resync 5 min (default), verify every 20 min: states live 40 min.
    let stream = managed(
        &dir,
        "https://tx.example.com",
        "Bearer mgmt",
        "verify_interval = \"20m\"\n",
    );
    assert_eq!(stream.max_state_age(), Duration::from_secs(2400));
    let metrics = Metrics::default();
    let issued = 1_000_000;
    let state = stream.new_state("s1", issued);
    let outcome = |now: i64| stream.verification(&metrics, Some("s1"), Some(&state), now);
    assert_eq!(outcome(issued + 2401), "unknown_state", "too old");
    assert_eq!(outcome(issued - 61), "unknown_state", "from the future");
    assert!(!stream.state().verified);
    assert_eq!(outcome(issued - 59), "verified", "clock skew");
    assert_eq!(outcome(issued + 2399), "verified");
}

#[test]
fn the_state_key_is_the_signing_key_not_its_pem_text() {
    let (_, pem) = denylist_proto::envelope::SigningKey::generate().unwrap();
    // The same key, wrapped differently and with CRLF and trailing blanks.
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>();
    let rewrapped = format!(
        "-----BEGIN PRIVATE KEY-----\r\n{}\r\n{}\r\n-----END PRIVATE KEY-----\r\n\n  ",
        &body[..20],
        &body[20..]
    );
    assert_ne!(pem, rewrapped);
    assert_eq!(state_key_material(&pem), state_key_material(&rewrapped));
    assert_ne!(state_key_material(&pem), pem.as_bytes());
    let (_, other) = denylist_proto::envelope::SigningKey::generate().unwrap();
    assert_ne!(state_key_material(&pem), state_key_material(&other));
}

#[test]
fn no_secret_is_printed_by_debug() {
    let client = ssf::Client::new(
        reqwest::Client::new(),
        Credential {
            field: "providers[0].stream.authorization_file".into(),
            path: "/run/secrets/ssf/authorization".into(),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let stream = managed(&dir, "https://tx.example.com", "Bearer s3cr3t", "");
    assert_eq!(
        stream.wanted.authorization_header.as_deref(),
        Some("Bearer push")
    );
    for text in [
        format!("{client:?}"),
        format!("{stream:?}"),
        format!("{:?}", stream.wanted),
    ] {
        assert!(
            !text.contains("s3cr3t") && !text.contains("Bearer push"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn resync_requests_wait_for_the_retry_backoff() {
    let mut f = fake("Bearer mgmt");
    f.metadata_status = 503;
    let (fake, base) = start(f).await;
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::default();
    let stream = Arc::new(managed(&dir, &base, "Bearer mgmt", ""));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = {
        let stream = stream.clone();
        tokio::spawn(async move { stream.keep_configured(&metrics, stopped).await })
    };
    // A poller whose endpoint keeps answering 404 asks for a resync every 10 ms.
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1200) {
        stream.request_resync();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(true);
    task.await.unwrap();
    // Backoff 0.5 s, 1 s, 2 s, each jittered by [0.5, 1.5): at most 3 attempts start in
    // 1.2 s (at 0, ≥ 0.25 s, ≥ 0.75 s); without the bound, one per resync request.
    let attempts = fake.lock().metadata_requests.load(Ordering::SeqCst);
    assert!((1..=3).contains(&attempts), "{attempts} attempts");
}

#[test]
fn config_urls_that_would_carry_a_credential_in_clear_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("mgmt");
    std::fs::write(&secret, "Bearer mgmt").unwrap();
    let check = |issuer: &str, extra: &str| {
        let text = format!(
            "signing_key_file = \"k.pem\"\n[[providers]]\nname = \"kc\"\nissuer = {issuer:?}\n\
             audiences = [\"denylist\"]\njwks_file = \"j\"\n{extra}"
        )
        .replace("MGMT", &secret.display().to_string());
        match ReceiverConfig::parse(&text).unwrap().validate() {
            Ok(()) => None,
            Err(super::super::config::ConfigError::Invalid { field, message }) => {
                Some((field, message))
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    let stream = "[providers.stream]\nauthorization_file = \"MGMT\"\ndelivery = \"poll\"\n";
    let (field, message) = check(
        "https://kc.example.com",
        &format!(
            "{stream}metadata_url = \"http://kc.example.com/.well-known/ssf-configuration\"\n"
        ),
    )
    .unwrap();
    assert_eq!(field, "providers[0].stream.metadata_url");
    assert!(message.contains("https"), "{message}");
    // Derived from an http issuer.
    let (field, message) = check("http://kc.example.com/realms/a", stream).unwrap();
    assert_eq!(field, "providers[0].stream.metadata_url");
    assert!(message.contains("derived from the issuer"), "{message}");
    let (field, _) = check(
        "https://kc.example.com",
        "[providers.poll]\nendpoint = \"http://kc.example.com/poll\"\n",
    )
    .unwrap();
    assert_eq!(field, "providers[0].poll.endpoint");
    let (field, _) = check(
        "https://kc.example.com",
        "[providers.push]\nauthorization_file = \"MGMT\"\n[providers.stream]\n\
         authorization_file = \"MGMT\"\ndelivery = \"push\"\n\
         endpoint_url = \"http://receiver.example.com/ssf/push/kc\"\n",
    )
    .unwrap();
    assert_eq!(field, "providers[0].stream.endpoint_url");
    // Loopback is allowed.
    assert_eq!(check("http://127.0.0.1:8080", stream), None);
    assert_eq!(
        check(
            "https://kc.example.com",
            "[providers.poll]\nendpoint = \"http://localhost:9/poll\"\n"
        ),
        None
    );
}
