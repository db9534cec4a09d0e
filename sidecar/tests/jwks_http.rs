//! The key store against a real HTTP JWKS endpoint on 127.0.0.1: rotation, the
//! unknown-kid refetch rate limit, failures that keep the last good keys, redirects.
//!
//! Time that matters to the code under test is a `ManualClock` (the refetch rate limit)
//! or an event (the server's request count); every await is bounded by a timeout.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine as _;
use denylist_sidecar::algorithm::Algorithm;
use denylist_sidecar::clock::{ManualClock, SharedClock};
use denylist_sidecar::config::{IssuerConfig, KeySourceConfig};
use denylist_sidecar::keys::{IssuerKeys, KeyLookupError, KeyStore};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::watch;

const ISSUER: &str = "https://idp.example";
const T0: i64 = 1_700_000_000_000;
const SIGNING_INPUT: &[u8] = b"eyJhbGciOiJFUzI1NiIsImtpZCI6ImIifQ.eyJzdWIiOiJhbGljZSJ9";

/// Bounds every await: a hung fetch or loop fails the test instead of hanging it.
async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("timed out")
}

// ---- a JWKS server whose document and status the test controls ---------------------------

struct Shared {
    /// Status and body of the next answers.
    answer: Mutex<(StatusCode, String)>,
    /// Requests served so far.
    hits: watch::Sender<usize>,
}

/// A JWKS endpoint on `127.0.0.1:0`: `/jwks` answers the current document, `/redirect`
/// redirects to `/jwks` over plain http. Stopped when dropped.
struct JwksServer {
    shared: Arc<Shared>,
    base: String,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(body: String) -> Self {
        let (hits, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            answer: Mutex::new((StatusCode::OK, body)),
            hits,
        });
        let listener = within(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let location = format!("{base}/jwks");
        let app = Router::new()
            .route("/jwks", get(serve_jwks))
            .route(
                "/redirect",
                get(move || async move { (StatusCode::FOUND, [(header::LOCATION, location)]) }),
            )
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("server runs");
        });
        Self { shared, base, task }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn answer(&self, status: StatusCode, body: String) {
        *self.shared.answer.lock() = (status, body);
    }

    fn hits(&self) -> usize {
        *self.shared.hits.borrow()
    }

    async fn wait_for_hits(&self, n: usize) {
        let mut hits = self.shared.hits.subscribe();
        within(hits.wait_for(|&h| h >= n))
            .await
            .expect("server alive");
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_jwks(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let (status, body) = shared.answer.lock().clone();
    shared.hits.send_modify(|h| *h += 1);
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}

// ---- keys ---------------------------------------------------------------------------------

struct TestKey {
    kid: &'static str,
    pair: EcdsaKeyPair,
}

impl TestKey {
    fn new(kid: &'static str) -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("generate");
        Self { kid, pair }
    }

    fn jwk(&self) -> serde_json::Value {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let point = self.pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
               "x": b64(&point[1..33]), "y": b64(&point[33..65])})
    }

    fn sign(&self) -> Vec<u8> {
        let sig = self
            .pair
            .sign(&SystemRandom::new(), SIGNING_INPUT)
            .expect("sign");
        sig.as_ref().to_vec()
    }
}

fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}

/// The key the store finds for `key`'s kid verifies a signature `key` made.
fn assert_known(keys: &IssuerKeys, key: &TestKey) {
    let found = keys
        .key_for(Some(key.kid), Algorithm::ES256)
        .unwrap_or_else(|e| panic!("kid {}: {e}", key.kid));
    assert_eq!(
        found.verify(Algorithm::ES256, SIGNING_INPUT, &key.sign()),
        Ok(())
    );
}

struct Setup {
    clock: Arc<ManualClock>,
    store: Arc<KeyStore>,
}

impl Setup {
    async fn load(url: String, refresh_interval: Duration) -> Self {
        let clock = ManualClock::new(T0);
        let shared: SharedClock = clock.clone();
        let issuers = [IssuerConfig {
            issuer: ISSUER.to_owned(),
            algorithms: vec![Algorithm::ES256],
            keys: KeySourceConfig {
                jwks_url: Some(url),
                refresh_interval,
                refetch_min_interval: Duration::from_secs(30),
                fetch_timeout: Duration::from_secs(5),
                ..KeySourceConfig::default()
            },
            ..IssuerConfig::default()
        }];
        let store = within(KeyStore::load(&issuers, shared))
            .await
            .expect("loads");
        Self {
            clock,
            store: Arc::new(store),
        }
    }

    fn keys(&self) -> &IssuerKeys {
        self.store.issuer(ISSUER).expect("issuer configured")
    }
}

const HOUR: Duration = Duration::from_secs(3600);

// ---- tests --------------------------------------------------------------------------------

#[tokio::test]
async fn rotation_is_picked_up_by_an_unknown_kid_refetch() {
    let (a, b) = (TestKey::new("a"), TestKey::new("b"));
    let server = JwksServer::start(jwks(&[&a])).await;
    let setup = Setup::load(server.url("/jwks"), HOUR).await;
    let keys = setup.keys();
    assert_eq!(server.hits(), 1);
    assert_known(keys, &a);
    assert_eq!(
        keys.key_for(Some("b"), Algorithm::ES256).err(),
        Some(KeyLookupError::UnknownKey)
    );

    // The issuer rotates: b is published alongside a.
    server.answer(StatusCode::OK, jwks(&[&a, &b]));
    // Too soon after the load: no request.
    assert!(!within(keys.refetch_for_unknown_kid()).await);
    assert_eq!(server.hits(), 1);

    setup.clock.advance_ms(30_000);
    assert!(
        within(keys.refetch_for_unknown_kid()).await,
        "the set changed"
    );
    assert_eq!(server.hits(), 2);
    assert_known(keys, &a);
    assert_known(keys, &b);
    assert_eq!(keys.status().keys, 2);
    assert_eq!(keys.status().last_refresh_ms, T0 + 30_000);
    assert_eq!(setup.store.key_count(), 2);

    // a is retired.
    server.answer(StatusCode::OK, jwks(&[&b]));
    setup.clock.advance_ms(30_000);
    assert!(within(keys.refetch_for_unknown_kid()).await);
    assert_eq!(
        keys.key_for(Some("a"), Algorithm::ES256).err(),
        Some(KeyLookupError::UnknownKey)
    );
    assert_known(keys, &b);

    // The same document again: fetched, but nothing changed.
    setup.clock.advance_ms(30_000);
    assert!(!within(keys.refetch_for_unknown_kid()).await);
    assert_eq!(server.hits(), 4);
}

#[tokio::test]
async fn unknown_kid_refetches_are_rate_limited_and_shared() {
    let (a, b) = (TestKey::new("a"), TestKey::new("b"));
    let server = JwksServer::start(jwks(&[&a])).await;
    let setup = Setup::load(server.url("/jwks"), HOUR).await;
    let keys = setup.keys();
    server.answer(StatusCode::OK, jwks(&[&a, &b]));
    setup.clock.advance_ms(30_000);

    // Two tokens with the new kid at once: one request, both see the new key.
    let (first, second) = within(async {
        tokio::join!(
            keys.refetch_for_unknown_kid(),
            keys.refetch_for_unknown_kid()
        )
    })
    .await;
    assert!(first && second, "both callers learn the set changed");
    assert_eq!(server.hits(), 2);
    assert_known(keys, &b);

    // More unknown kids inside the interval: no request at all.
    for _ in 0..5 {
        setup.clock.advance_ms(5_000);
        assert!(!within(keys.refetch_for_unknown_kid()).await);
    }
    assert_eq!(server.hits(), 2);
    // The interval has passed: one more.
    setup.clock.advance_ms(5_000);
    assert!(!within(keys.refetch_for_unknown_kid()).await);
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn failed_fetches_keep_the_last_good_keys_and_show_in_status() {
    let (a, b) = (TestKey::new("a"), TestKey::new("b"));
    let server = JwksServer::start(jwks(&[&a])).await;
    let setup = Setup::load(server.url("/jwks"), HOUR).await;
    let keys = setup.keys();

    let failures = [
        (StatusCode::INTERNAL_SERVER_ERROR, "oops".to_owned(), "500"),
        (
            StatusCode::OK,
            "<html>not json</html>".to_owned(),
            "not JSON",
        ),
        (StatusCode::OK, json!({"keys": []}).to_string(), "empty"),
        (StatusCode::OK, " ".repeat(2 * 1024 * 1024), "exceeds"),
    ];
    for (i, (status, body, expected)) in failures.into_iter().enumerate() {
        server.answer(status, body);
        setup.clock.advance_ms(30_000);
        assert!(!within(keys.refetch_for_unknown_kid()).await);
        assert_eq!(server.hits(), i + 2, "one request per refetch");
        assert_known(keys, &a);
        let status = keys.status();
        assert_eq!(status.keys, 1);
        assert_eq!(status.fetch_failures, i as u64 + 1);
        assert_eq!(status.last_refresh_ms, T0, "the last success was the load");
        let error = status.last_error.expect("failure recorded");
        assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        assert!(
            error.contains(&server.url("/jwks")),
            "{error:?} names the URL"
        );
    }

    // The endpoint recovers.
    server.answer(StatusCode::OK, jwks(&[&a, &b]));
    setup.clock.advance_ms(30_000);
    assert!(within(keys.refetch_for_unknown_kid()).await);
    assert_known(keys, &b);
    let status = keys.status();
    assert_eq!(status.last_error, None);
    assert_eq!(status.fetch_failures, 4);
    assert_eq!(status.source, "jwks_url");
}

#[tokio::test]
async fn an_unreachable_jwks_at_start_is_not_fatal() {
    // A port nothing listens on: bound, then closed.
    let closed = {
        let listener = within(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .await
            .expect("bind");
        listener.local_addr().expect("addr")
    };
    let setup = Setup::load(format!("http://{closed}/jwks"), HOUR).await;
    let keys = setup.keys();
    assert_eq!(
        keys.key_for(Some("a"), Algorithm::ES256).err(),
        Some(KeyLookupError::NoKeys)
    );
    assert_eq!(
        keys.key_for(None, Algorithm::ES256).err(),
        Some(KeyLookupError::NoKeys)
    );
    let status = setup.store.status();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].keys, 0);
    assert_eq!(status[0].fetch_failures, 1);
    assert_eq!(status[0].last_refresh_ms, 0);
    let error = status[0].last_error.clone().expect("failure recorded");
    assert!(error.contains(&closed.to_string()), "{error}");
    // Still unreachable on an unknown-kid refetch: nothing changes, nothing breaks.
    setup.clock.advance_ms(30_000);
    assert!(!within(keys.refetch_for_unknown_kid()).await);
    assert_eq!(keys.status().fetch_failures, 2);
}

#[tokio::test]
async fn redirects_to_plain_http_are_refused() {
    let a = TestKey::new("a");
    let server = JwksServer::start(jwks(&[&a])).await;
    let setup = Setup::load(server.url("/redirect"), HOUR).await;
    let keys = setup.keys();
    assert_eq!(server.hits(), 0, "the redirect was not followed");
    assert_eq!(keys.status().keys, 0);
    let error = keys.status().last_error.expect("refused");
    assert!(error.contains("non-https"), "{error}");
}

#[tokio::test]
async fn the_refresh_loop_refetches_every_interval_until_shutdown() {
    let (a, b) = (TestKey::new("a"), TestKey::new("b"));
    let server = JwksServer::start(jwks(&[&a])).await;
    // A short interval: the loop's own timer; the test waits on requests, not on time.
    let setup = Setup::load(server.url("/jwks"), Duration::from_millis(20)).await;
    server.answer(StatusCode::OK, jwks(&[&a, &b]));
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(setup.store.clone().run_refresh(shutdown));

    // Request 2 serves the new document; request 3 starts only after the loop has
    // finished with request 2, so its keys are in place by then.
    server.wait_for_hits(3).await;
    assert_known(setup.keys(), &b);
    assert_eq!(setup.keys().status().fetch_failures, 0);

    stop.send(true).expect("loop listening");
    within(task).await.expect("loop ended cleanly");
    let after = server.hits();
    // Stopped for good: a refetch now is an explicit call, not the loop.
    setup.clock.advance_ms(30_000);
    assert!(!within(setup.keys().refetch_for_unknown_kid()).await);
    assert_eq!(server.hits(), after + 1);
}
