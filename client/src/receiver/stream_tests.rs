//! Unit tests of the managed SSF stream: its config checks, the choice of stream
//! (deterministic across replicas), the reconciliation against an in-process fake of the
//! SSF 1.0 stream management API (two replicas at once, one stream per receiver, a refused
//! credential), and the verification states.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::super::config::{ConfigError, Delivery, ReceiverConfig};
use super::super::metrics::Metrics;
use super::{ManagedStream, Plan, Wanted, plan};

const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
const ACCOUNT_DISABLED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
pub(super) const PUSH_URL: &str = "https://receiver.example.com/ssf/push/kc";

/// A config with one provider `kc` and `extra` appended (its `[providers.*]` tables);
/// the management secret file lives in `dir`.
fn config(
    dir: &tempfile::TempDir,
    issuer: &str,
    extra: &str,
) -> Result<ReceiverConfig, ConfigError> {
    let secret = dir.path().join("mgmt");
    std::fs::write(&secret, "Bearer mgmt\n").unwrap();
    let push = dir.path().join("push");
    std::fs::write(&push, "Bearer push\n").unwrap();
    let text = format!(
        "signing_key_file = \"k.pem\"\n[[providers]]\nname = \"kc\"\nissuer = {issuer:?}\n\
         audiences = [\"denylist\"]\n{extra}"
    )
    .replace("MGMT", &secret.display().to_string())
    .replace("PUSH", &push.display().to_string());
    let config = ReceiverConfig::parse(&text)?;
    config.validate()?;
    Ok(config)
}

fn field(result: Result<ReceiverConfig, ConfigError>) -> String {
    match result {
        Err(ConfigError::Invalid { field, .. }) => field,
        other => panic!("expected an invalid field, got {other:?}"),
    }
}

#[test]
fn stream_config_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = "https://kc.example.com/realms/acme";
    let push = "[providers.push]\nauthorization_file = \"PUSH\"\n";
    let ok = config(
        &dir,
        issuer,
        &format!(
            "{push}[providers.stream]\nauthorization_file = \"MGMT\"\ndelivery = \"push\"\n\
             endpoint_url = \"{PUSH_URL}\"\nverify_interval = \"1h\"\n"
        ),
    )
    .unwrap();
    let p = &ok.providers[0];
    let stream = p.stream.as_ref().unwrap();
    // SSF 1.0 §7.2: the well-known segment goes between host and path.
    assert_eq!(
        stream.metadata_url(issuer),
        "https://kc.example.com/.well-known/ssf-configuration/realms/acme"
    );
    assert_eq!(
        stream.metadata_url("https://tr.example.com/"),
        "https://tr.example.com/.well-known/ssf-configuration"
    );
    assert_eq!(stream.delivery, Delivery::Push);
    assert_eq!(
        stream.verify_interval,
        Some(std::time::Duration::from_secs(3600))
    );
    assert!(p.poll_config().is_none());
    // Back-channel logout is not an SSF event type.
    assert!(!p.ssf_events().iter().any(|e| e.contains("backchannel")));
    assert_eq!(p.ssf_events().len(), 6);

    let with = |extra: &str| config(&dir, issuer, extra);
    let stream = "[providers.stream]\nauthorization_file = \"MGMT\"\n";
    assert_eq!(
        field(with(&format!("{push}{stream}delivery = \"push\"\n"))),
        "providers[0].stream.endpoint_url"
    );
    assert_eq!(
        field(with(&format!(
            "{stream}delivery = \"push\"\nendpoint_url = \"{PUSH_URL}\"\n"
        ))),
        "providers[0].push"
    );
    assert_eq!(
        field(with(&format!(
            "{stream}delivery = \"poll\"\nendpoint_url = \"{PUSH_URL}\"\n"
        ))),
        "providers[0].stream.endpoint_url"
    );
    assert_eq!(
        field(with(&format!(
            "[providers.poll]\nendpoint = \"https://tx/poll\"\n{stream}delivery = \"poll\"\n"
        ))),
        "providers[0].poll.endpoint"
    );
    assert_eq!(
        field(with("[providers.poll]\ninterval = \"1s\"\n")),
        "providers[0].poll.endpoint"
    );
    assert_eq!(
        field(with(&format!(
            "events = [\"backchannel-logout\"]\n{stream}delivery = \"poll\"\n"
        ))),
        "providers[0].events"
    );
    assert_eq!(
        field(with(&format!(
            "{stream}delivery = \"poll\"\nresync_interval = \"10ms\"\n"
        ))),
        "providers[0].stream.resync_interval"
    );
    assert_eq!(
        field(with(&format!(
            "{stream}delivery = \"poll\"\nmetadata_url = \"ftp://x\"\n"
        ))),
        "providers[0].stream.metadata_url"
    );
    assert_eq!(
        field(config(
            &dir,
            "urn:not-a-url",
            &format!("jwks_file = \"j\"\n{stream}delivery = \"poll\"\n")
        )),
        "providers[0].stream.metadata_url"
    );
    // Poll delivery from the stream: [providers.poll] is optional and has no endpoint.
    let poll = with(&format!("{stream}delivery = \"poll\"\n")).unwrap();
    assert!(poll.providers[0].poll_config().unwrap().endpoint.is_none());
    with(&format!(
        "[providers.poll]\ninterval = \"1s\"\n{stream}delivery = \"poll\"\n"
    ))
    .unwrap();
    // The management credential is read when the receiver is built.
    let missing = with(
        "[providers.stream]\nauthorization_file = \"/nonexistent/mgmt\"\ndelivery = \"poll\"\n",
    )
    .unwrap();
    let p = &missing.providers[0];
    let built = ManagedStream::new(
        p,
        0,
        p.stream.as_ref().unwrap(),
        None,
        reqwest::Client::new(),
        b"key",
    );
    assert!(
        matches!(&built, Err(ConfigError::Invalid { field, .. }) if field == "providers[0].stream.authorization_file"),
        "{built:?}"
    );
    // Unknown fields and deliveries are parse errors naming them.
    let e = with(&format!(
        "{stream}delivery = \"poll\"\nverify_intervall = \"1h\"\n"
    ))
    .unwrap_err();
    assert!(e.to_string().contains("verify_intervall"), "{e}");
    let e = with(&format!("{stream}delivery = \"webhook\"\n")).unwrap_err();
    assert!(e.to_string().contains("webhook"), "{e}");
}

fn wanted(delivery: Delivery) -> Wanted {
    Wanted {
        delivery,
        endpoint_url: (delivery == Delivery::Push).then(|| PUSH_URL.to_owned()),
        authorization_header: (delivery == Delivery::Push).then(|| "Bearer push".to_owned()),
        events: vec![SESSION_REVOKED.to_owned(), ACCOUNT_DISABLED.to_owned()]
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
        description: "denylist-receiver kc".into(),
    }
}

fn push_stream(id: &str, url: &str, events: &[&str]) -> Value {
    json!({
        "stream_id": id,
        "iss": "https://tx",
        "aud": "denylist",
        "delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": url},
        "events_requested": events,
    })
}

#[test]
fn every_replica_keeps_the_matching_stream_with_the_lowest_id() {
    let w = wanted(Delivery::Push);
    let both = [SESSION_REVOKED, ACCOUNT_DISABLED];
    assert_eq!(plan(&w, &[]), Plan::Create);
    // Another receiver's push stream, and a poll stream, are not this one's.
    let other = push_stream("a", "https://elsewhere/push", &both);
    let polled = json!({"stream_id": "b", "delivery": {"method": "urn:ietf:rfc:8936", "endpoint_url": "https://tx/poll/b"}});
    assert_eq!(plan(&w, &[other.clone(), polled.clone()]), Plan::Create);
    // Two replicas each created one: whatever the listing order, "m1" is kept, "z9" goes.
    let m1 = push_stream("m1", PUSH_URL, &[ACCOUNT_DISABLED, SESSION_REVOKED]);
    let z9 = push_stream("z9", PUSH_URL, &both);
    for streams in [
        vec![z9.clone(), other.clone(), m1.clone()],
        vec![m1.clone(), z9.clone()],
    ] {
        assert_eq!(
            plan(&w, &streams),
            Plan::Use {
                keep: m1.clone(),
                delete: vec!["z9".into()],
                update: None
            }
        );
    }
    // Different events requested: PATCHed (with the push delivery, so its authorization
    // header is current too).
    let old = push_stream("m1", PUSH_URL, &[SESSION_REVOKED]);
    let Plan::Use {
        update: Some(body), ..
    } = plan(&w, &[old])
    else {
        panic!("expected an update");
    };
    assert_eq!(body["stream_id"], "m1");
    assert_eq!(body["events_requested"], json!(w.events));
    assert_eq!(body["delivery"]["authorization_header"], "Bearer push");
    // An echoed authorization header other than ours is updated too; an absent one is not.
    let mut stale = m1.clone();
    stale["delivery"]["authorization_header"] = json!("Bearer old");
    assert!(matches!(
        plan(&w, &[stale]),
        Plan::Use {
            update: Some(_),
            ..
        }
    ));
    // Poll: any poll stream of this receiver; one without `delivery` is a poll stream.
    let p = wanted(Delivery::Poll);
    let bare = json!({"stream_id": "c", "events_requested": both});
    let Plan::Use {
        keep,
        delete,
        update,
    } = plan(&p, &[other, polled, bare.clone()])
    else {
        panic!("expected a poll stream");
    };
    assert_eq!(
        (keep["stream_id"].as_str(), delete),
        (Some("b"), vec!["c".to_owned()])
    );
    let update = update.unwrap();
    assert!(
        update.get("delivery").is_none(),
        "poll delivery is the transmitter's: {update}"
    );
}

/// An in-process transmitter with the SSF 1.0 management API: streams by id, a required
/// `Authorization`, and (optionally) one stream per receiver (409).
#[derive(Default)]
struct Fake {
    issuer: String,
    streams: BTreeMap<String, Value>,
    next: u64,
    creates: u64,
    one_per_receiver: bool,
}

type Shared = Arc<Mutex<Fake>>;

async fn fake_transmitter(fake: Shared) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    fake.lock().issuer = base.clone();
    let issuer = base.clone();
    let app = axum::Router::new()
        .route(
            "/.well-known/ssf-configuration",
            get(move || {
                let issuer = issuer.clone();
                async move {
                    Json(json!({
                        "issuer": issuer,
                        "configuration_endpoint": format!("{issuer}/stream"),
                        "delivery_methods_supported": ["urn:ietf:rfc:8935", "urn:ietf:rfc:8936"],
                    }))
                }
            }),
        )
        .route(
            "/stream",
            get(list).post(create).patch(update).delete(delete),
        )
        .with_state(fake);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .is_some_and(|v| v == "Bearer mgmt")
}

async fn list(State(f): State<Shared>, headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    // Yield so that concurrent replicas interleave.
    tokio::task::yield_now().await;
    Json(f.lock().streams.values().cloned().collect::<Vec<_>>()).into_response()
}

async fn create(State(f): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    tokio::task::yield_now().await;
    let mut f = f.lock();
    if f.one_per_receiver && !f.streams.is_empty() {
        return StatusCode::CONFLICT.into_response();
    }
    f.next += 1;
    f.creates += 1;
    // Later streams get lower ids: the lowest id is not simply the first created.
    let id = format!("s{}", 100 - f.next);
    let mut stream = body;
    stream["stream_id"] = json!(id);
    stream["iss"] = json!(f.issuer);
    stream["aud"] = json!("denylist");
    f.streams.insert(id, stream.clone());
    (StatusCode::CREATED, Json(stream)).into_response()
}

async fn update(State(f): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mut f = f.lock();
    let Some(stream) = body["stream_id"]
        .as_str()
        .and_then(|id| f.streams.get_mut(id))
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    for (k, v) in body.as_object().unwrap() {
        stream[k] = v.clone();
    }
    Json(stream.clone()).into_response()
}

async fn delete(State(f): State<Shared>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let q = q.unwrap_or_default();
    let id = url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == "stream_id")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    match f.lock().streams.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn managed(dir: &tempfile::TempDir, base: &str, secret: &str, delivery: &str) -> ManagedStream {
    let endpoint = if delivery == "push" {
        format!("endpoint_url = \"{PUSH_URL}\"\n")
    } else {
        String::new()
    };
    managed_stream(
        dir,
        &format!("mgmt-{secret}"),
        base,
        secret,
        &format!("delivery = {delivery:?}\n{endpoint}"),
    )
}

/// A managed stream of provider `kc` (issuer `base`, push secret `Bearer push`) with its
/// management credential `secret` in `dir/<credential_file>`; `stream` is the rest of
/// `[providers.stream]`.
pub(super) fn managed_stream(
    dir: &tempfile::TempDir,
    credential_file: &str,
    base: &str,
    secret: &str,
    stream: &str,
) -> ManagedStream {
    let file = dir.path().join(credential_file);
    std::fs::write(&file, secret).unwrap();
    let push = dir.path().join("push");
    std::fs::write(&push, "Bearer push").unwrap();
    let text = format!(
        "signing_key_file = \"k.pem\"\n[[providers]]\nname = \"kc\"\nissuer = {base:?}\n\
         audiences = [\"denylist\"]\njwks_file = \"j\"\n\
         [providers.push]\nauthorization_file = {:?}\n\
         [providers.stream]\nauthorization_file = {:?}\n{stream}",
        push.display().to_string(),
        file.display().to_string(),
    );
    let config = ReceiverConfig::parse(&text).unwrap();
    config.validate().unwrap();
    let p = &config.providers[0];
    ManagedStream::new(
        p,
        0,
        p.stream.as_ref().unwrap(),
        Some("Bearer push"),
        reqwest::Client::new(),
        b"the signing key",
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_starting_together_end_with_one_stream() {
    let fake = Shared::default();
    let base = fake_transmitter(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::default();
    for round in 0..20 {
        fake.lock().streams.clear();
        let (a, b) = (
            managed(&dir, &base, "Bearer mgmt", "push"),
            managed(&dir, &base, "Bearer mgmt", "push"),
        );
        let (ra, rb) = tokio::join!(a.reconcile(&metrics), b.reconcile(&metrics));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        // A replica whose view was stale converges at its next resync.
        let (ra, rb) = if ra.stream_id == rb.stream_id {
            (ra, rb)
        } else {
            (
                a.reconcile(&metrics).await.unwrap(),
                b.reconcile(&metrics).await.unwrap(),
            )
        };
        let streams: Vec<String> = fake.lock().streams.keys().cloned().collect();
        assert_eq!(streams.len(), 1, "round {round}: {streams:?}");
        assert_eq!(ra.stream_id, streams[0], "round {round}");
        assert_eq!(rb.stream_id, streams[0], "round {round}");
        assert!(a.state().configured && b.state().configured);
    }
    // A restart finds the stream and creates nothing.
    let creates = fake.lock().creates;
    managed(&dir, &base, "Bearer mgmt", "push")
        .reconcile(&metrics)
        .await
        .unwrap();
    assert_eq!(fake.lock().creates, creates);
}

#[tokio::test]
async fn one_stream_per_receiver_is_adopted_and_a_refused_credential_is_counted() {
    let fake = Shared::default();
    fake.lock().one_per_receiver = true;
    let base = fake_transmitter(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::default();
    // The receiver's one stream polls; it now wants push: 409 on create, so it is updated.
    fake.lock().streams.insert(
        "only".into(),
        json!({"stream_id": "only", "iss": base, "aud": ["denylist"], "delivery": {"method": "urn:ietf:rfc:8936", "endpoint_url": "https://tx/poll"}}),
    );
    let push = managed(&dir, &base, "Bearer mgmt", "push");
    let r = push.reconcile(&metrics).await.unwrap();
    assert_eq!(r.stream_id, "only");
    let stream = fake.lock().streams["only"].clone();
    assert_eq!(stream["delivery"]["endpoint_url"], PUSH_URL, "{stream}");
    assert_eq!(
        stream["delivery"]["authorization_header"], "Bearer push",
        "{stream}"
    );

    let wrong = managed(&dir, &base, "Bearer wrong", "push");
    let e = wrong.reconcile(&metrics).await.unwrap_err();
    assert_eq!(e.outcome(), "unauthorized");
    assert!(
        e.to_string().contains("401") && e.to_string().contains("stream.authorization_file"),
        "{e}"
    );
    wrong.failed(&metrics, &e, std::time::Duration::from_secs(1));
    assert!(!wrong.state().configured);
    let text = metrics.render();
    assert!(
        text.contains(r#"denylist_receiver_stream_requests_total{provider="kc",operation="list",outcome="unauthorized"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"denylist_receiver_stream_configured{provider="kc"} 0"#),
        "{text}"
    );
}

#[test]
fn verification_states_check_at_every_replica_and_nowhere_else() {
    let dir = tempfile::tempdir().unwrap();
    let a = managed(&dir, "https://tx", "Bearer mgmt", "poll");
    let b = managed(&dir, "https://tx", "Bearer mgmt", "poll");
    let state = a.new_state("stream-1", 1_000);
    assert_eq!(b.check_state("stream-1", &state), Some(1_000));
    assert_eq!(
        b.check_state("stream-2", &state),
        None,
        "bound to the stream"
    );
    let mut tampered = state.clone();
    tampered.replace_range(0..1, "2");
    assert_eq!(b.check_state("stream-1", &tampered), None);
    assert_eq!(b.check_state("stream-1", "VGhpcyBpcyBh"), None);
    // Another deployment (another signing key) cannot make one.
    let p = ReceiverConfig::parse(&format!(
        "signing_key_file = \"k.pem\"\n[[providers]]\nname = \"kc\"\nissuer = \"https://tx\"\n\
         audiences = [\"denylist\"]\n[providers.stream]\nauthorization_file = {:?}\ndelivery = \"poll\"\n",
        dir.path().join("mgmt-Bearer mgmt").display().to_string()
    ))
    .unwrap();
    let other = ManagedStream::new(
        &p.providers[0],
        0,
        p.providers[0].stream.as_ref().unwrap(),
        None,
        reqwest::Client::new(),
        b"another signing key",
    )
    .unwrap();
    assert_eq!(other.check_state("stream-1", &state), None);
    // Received: the stream is verified here, and the metric says so.
    let metrics = Metrics::default();
    assert_eq!(
        b.verification(&metrics, Some("stream-1"), Some(&state), 1_002),
        "verified"
    );
    assert!(b.state().verified);
    assert_eq!(
        b.verification(&metrics, Some("stream-1"), Some("forged"), 1_003),
        "unknown_state"
    );
    assert_eq!(
        b.verification(&metrics, Some("stream-1"), None, 1_003),
        "acknowledged"
    );
    let text = metrics.render();
    assert!(
        text.contains(r#"denylist_receiver_stream_verified{provider="kc"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"denylist_receiver_stream_last_verified_timestamp_seconds{provider="kc"} 1002"#
        ),
        "{text}"
    );
    b.stream_updated(&metrics, Some("stream-1"), "paused", Some("maintenance"));
    assert_eq!(b.state().status.as_deref(), Some("paused"));
    let text = metrics.render();
    assert!(
        text.contains(r#"denylist_receiver_stream_status{provider="kc",status="paused"} 1"#),
        "{text}"
    );
}
