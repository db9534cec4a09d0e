//! The simulator's SSF 1.0 stream management API (OpenID Shared Signals Framework 1.0 §7,
//! §8), written from the specification:
//!
//! - `GET /.well-known/ssf-configuration`: the transmitter metadata (§7.1).
//! - `/ssf/stream` (the configuration endpoint, §8.1.1): `POST` creates a stream (201; a
//!   poll stream gets its own endpoint `/ssf/poll/<stream_id>`), `GET` lists the streams or
//!   reads one (`?stream_id=`, 404 if unknown), `PATCH` updates receiver-supplied
//!   properties, `DELETE ?stream_id=` removes one (204).
//! - `/ssf/status` (§8.1.2): `GET ?stream_id=` → `{stream_id, status, reason}`.
//! - `/ssf/verify` (§8.1.4.2): `POST {stream_id, state}` → 204, then a signed verification
//!   SET carrying `state` goes over the stream: pushed (RFC 8935, with the stream's
//!   `authorization_header`) or queued for its poll endpoint (RFC 8936).
//! - `POST /ssf/poll/<stream_id>`: the stream's RFC 8936 poll endpoint.
//!
//! Every management and stream poll request needs `Authorization:
//! `[`MANAGEMENT_AUTHORIZATION`] (401 otherwise). The push `authorization_header` is kept
//! but never echoed back (it is the receiver's secret). Every request is recorded
//! ([`Transmitter::operations`]) and every delivery ([`Transmitter::deliveries`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_lc_rs::rand;
use serde_json::{Value, json};

use super::process::request;
use super::{AUDIENCE, Request, Shared, Transmitter, poll_answer};
use crate::tokens::{now_secs, unique};

/// The `Authorization` value the management API accepts.
pub const MANAGEMENT_AUTHORIZATION: &str = "Bearer ssf-management-secret";
/// The SSF verification event type.
pub const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";
/// The SSF stream-updated event type.
pub const STREAM_UPDATED: &str =
    "https://schemas.openid.net/secevent/ssf/event-type/stream-updated";
const PUSH: &str = "urn:ietf:rfc:8935";
const POLL: &str = "urn:ietf:rfc:8936";
/// The event types this transmitter supports (CAEP 1.0, RISC 1.0).
const SUPPORTED: [&str; 6] = [
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked",
    "https://schemas.openid.net/secevent/caep/event-type/credential-change",
    "https://schemas.openid.net/secevent/risc/event-type/account-disabled",
    "https://schemas.openid.net/secevent/risc/event-type/account-purged",
    "https://schemas.openid.net/secevent/risc/event-type/credential-compromise",
    "https://schemas.openid.net/secevent/risc/event-type/sessions-revoked",
];

/// The streams and what was done with them.
#[derive(Debug, Default)]
pub(super) struct Streams {
    streams: BTreeMap<String, Stream>,
    operations: Vec<String>,
    deliveries: Vec<Delivery>,
    /// The `Authorization` value accepted instead of [`MANAGEMENT_AUTHORIZATION`] (a
    /// rotated token).
    authorization: Option<String>,
}

#[derive(Debug, Clone)]
struct Stream {
    /// The configuration as served (without `authorization_header`).
    config: Value,
    /// Push: what to send as `Authorization`.
    authorization_header: Option<String>,
    status: String,
    reason: Option<String>,
}

/// One SET sent over a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The stream.
    pub stream_id: String,
    /// The SET's `jti`.
    pub jti: String,
    /// Its one event type.
    pub event_type: String,
    /// Push: the receiver's HTTP status (0 if it could not be reached). Poll: `None`
    /// (queued; see [`Transmitter::acked`]).
    pub status: Option<u16>,
}

type Answer = (&'static str, Option<Value>);

fn error(status: &'static str, description: &str) -> Answer {
    (
        status,
        Some(json!({"error": "invalid_request", "error_description": description})),
    )
}

/// Serves the metadata and every `/ssf/…` request.
pub(super) fn answer(shared: &Arc<Shared>, request: &Request) -> Answer {
    let issuer = &shared.issuer;
    let path = request.path();
    if path == "/.well-known/ssf-configuration" {
        return (
            "200 OK",
            Some(json!({
                "spec_version": "1_0",
                "issuer": issuer,
                "jwks_uri": format!("{issuer}/jwks"),
                "delivery_methods_supported": [PUSH, POLL],
                "configuration_endpoint": format!("{issuer}/ssf/stream"),
                "status_endpoint": format!("{issuer}/ssf/status"),
                "verification_endpoint": format!("{issuer}/ssf/verify"),
                "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6750"}],
            })),
        );
    }
    let operation = format!("{} {path}", request.method);
    let accepted = shared.ssf().authorization.clone();
    if request.header("authorization")
        != Some(accepted.as_deref().unwrap_or(MANAGEMENT_AUTHORIZATION))
    {
        shared.log(format!("unauthorized {operation}"));
        return (
            "401 Unauthorized",
            Some(
                json!({"error": "invalid_token", "error_description": "bad or missing Authorization"}),
            ),
        );
    }
    let body = if request.body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice::<Value>(&request.body) {
            Ok(v) => v,
            Err(e) => return error("400 Bad Request", &e.to_string()),
        }
    };
    let stream_id = request
        .query("stream_id")
        .or_else(|| body["stream_id"].as_str().map(str::to_owned));
    if let Some(id) = path.strip_prefix("/ssf/poll/") {
        if !shared.ssf().streams.contains_key(id) {
            return error("404 Not Found", "no such stream");
        }
        return poll_answer(shared, id, &request.body);
    }
    let mut ssf = shared.ssf();
    let known = |ssf: &Streams| {
        stream_id
            .as_ref()
            .filter(|id| ssf.streams.contains_key(*id))
            .cloned()
    };
    match (request.method.as_str(), path) {
        ("GET", "/ssf/stream") => match &stream_id {
            None => {
                ssf.operations.push("list".into());
                let all: Vec<Value> = ssf.streams.values().map(|s| s.config.clone()).collect();
                ("200 OK", Some(json!(all)))
            }
            Some(id) => match ssf.streams.get(id) {
                Some(s) => ("200 OK", Some(s.config.clone())),
                None => error("404 Not Found", "no such stream"),
            },
        },
        ("POST", "/ssf/stream") => {
            let id = random_id();
            let mut stream = Stream {
                config: json!({
                    "stream_id": id,
                    "iss": issuer,
                    "aud": AUDIENCE,
                    "events_supported": SUPPORTED,
                    "min_verification_interval": 1,
                }),
                authorization_header: None,
                status: "enabled".into(),
                reason: None,
            };
            // §8.1.1.1: no delivery means poll.
            let mut body = body;
            if body.get("delivery").is_none() {
                body["delivery"] = json!({"method": POLL});
            }
            if let Err(e) = apply(&mut stream, &body, issuer) {
                return error("400 Bad Request", &e);
            }
            ssf.operations.push(format!("create {id}"));
            let config = stream.config.clone();
            ssf.streams.insert(id, stream);
            ("201 Created", Some(config))
        }
        ("PATCH", "/ssf/stream") => {
            let Some(id) = known(&ssf) else {
                return error("404 Not Found", "no such stream");
            };
            let stream = ssf.streams.get_mut(&id).expect("known");
            if let Err(e) = apply(stream, &body, issuer) {
                return error("400 Bad Request", &e);
            }
            let config = stream.config.clone();
            ssf.operations.push(format!("update {id}"));
            ("200 OK", Some(config))
        }
        ("DELETE", "/ssf/stream") => {
            let Some(id) = known(&ssf) else {
                return error("404 Not Found", "no such stream");
            };
            ssf.streams.remove(&id);
            ssf.operations.push(format!("delete {id}"));
            ("204 No Content", None)
        }
        ("GET", "/ssf/status") => match known(&ssf) {
            Some(id) => {
                let s = &ssf.streams[&id];
                (
                    "200 OK",
                    Some(json!({"stream_id": id, "status": s.status, "reason": s.reason})),
                )
            }
            None => error("404 Not Found", "no such stream"),
        },
        ("POST", "/ssf/verify") => {
            let Some(id) = known(&ssf) else {
                return error("404 Not Found", "no such stream");
            };
            ssf.operations.push(format!("verify {id}"));
            let mut event = json!({});
            if let Some(state) = body["state"].as_str() {
                event["state"] = json!(state);
            }
            drop(ssf);
            // §8.1.4.2: answered first, delivered afterwards.
            let shared = shared.clone();
            tokio::spawn(async move {
                let claims = shared.stream_claims(&id, VERIFICATION, event);
                let _ = deliver(&shared, &id, &claims).await;
            });
            ("204 No Content", None)
        }
        _ => {
            ssf.operations.push(format!("unsupported {operation}"));
            error("404 Not Found", "no such endpoint")
        }
    }
}

/// Applies the receiver-supplied properties of `body` (§8.1.1) to `stream`.
fn apply(stream: &mut Stream, body: &Value, issuer: &str) -> Result<(), String> {
    let id = stream.config["stream_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if let Some(delivery) = body.get("delivery") {
        match delivery["method"].as_str() {
            Some(PUSH) => {
                let url = delivery["endpoint_url"]
                    .as_str()
                    .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
                    .ok_or("push delivery needs an http(s) endpoint_url")?;
                stream.config["delivery"] = json!({"method": PUSH, "endpoint_url": url});
                stream.authorization_header =
                    delivery["authorization_header"].as_str().map(str::to_owned);
            }
            Some(POLL) => {
                stream.config["delivery"] =
                    json!({"method": POLL, "endpoint_url": format!("{issuer}/ssf/poll/{id}")});
                stream.authorization_header = None;
            }
            other => return Err(format!("unsupported delivery method {other:?}")),
        }
    }
    if let Some(requested) = body.get("events_requested") {
        let requested = requested
            .as_array()
            .ok_or("events_requested must be an array")?;
        let delivered: Vec<&Value> = requested
            .iter()
            .filter(|e| e.as_str().is_some_and(|e| SUPPORTED.contains(&e)))
            .collect();
        stream.config["events_requested"] = json!(requested);
        stream.config["events_delivered"] = json!(delivered);
    }
    if let Some(description) = body.get("description") {
        stream.config["description"] = description.clone();
    }
    Ok(())
}

fn random_id() -> String {
    let mut bytes = [0u8; 8];
    rand::fill(&mut bytes).expect("system RNG");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Shared {
    fn ssf(&self) -> std::sync::MutexGuard<'_, Streams> {
        self.ssf.lock().expect("ssf state")
    }

    fn log(&self, operation: String) {
        self.ssf().operations.push(operation);
    }

    /// SET claims about stream `id` itself (`sub_id` opaque stream id, §8.1.4.1, §8.1.5).
    fn stream_claims(&self, id: &str, event_type: &str, event: Value) -> Value {
        json!({
            "iss": self.issuer,
            "aud": AUDIENCE,
            "iat": now_secs(),
            "jti": unique("ssf"),
            "sub_id": {"format": "opaque", "id": id},
            "events": {event_type: event},
        })
    }
}

/// Signs `claims` and sends the SET over stream `id`: pushed, or queued for its poll
/// endpoint. Recorded in [`Transmitter::deliveries`].
async fn deliver(shared: &Shared, id: &str, claims: &Value) -> anyhow::Result<Delivery> {
    let (method, url, authorization) = {
        let ssf = shared.ssf();
        let stream = ssf
            .streams
            .get(id)
            .ok_or_else(|| anyhow::anyhow!("no stream {id}"))?;
        (
            stream.config["delivery"]["method"]
                .as_str()
                .unwrap_or(POLL)
                .to_owned(),
            stream.config["delivery"]["endpoint_url"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            stream.authorization_header.clone(),
        )
    };
    let set = shared.sign_set(claims);
    let jti = claims["jti"].as_str().unwrap_or_default().to_owned();
    let event_type = claims["events"]
        .as_object()
        .and_then(|e| e.keys().next().cloned())
        .unwrap_or_default();
    let status = if method == PUSH {
        Some(
            push(&url, authorization.as_deref(), &set)
                .await
                .unwrap_or(0),
        )
    } else {
        shared.queue(id, &jti, set);
        None
    };
    let delivery = Delivery {
        stream_id: id.to_owned(),
        jti,
        event_type,
        status,
    };
    shared.ssf().deliveries.push(delivery.clone());
    Ok(delivery)
}

/// RFC 8935: POSTs `set` to `url`; the receiver's status.
async fn push(url: &str, authorization: Option<&str>, set: &str) -> anyhow::Result<u16> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("the simulator pushes over http only: {url}"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr = tokio::net::lookup_host(host)
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{host} does not resolve"))?;
    let mut headers = vec![("Content-Type", "application/secevent+jwt")];
    if let Some(auth) = authorization {
        headers.push(("Authorization", auth));
    }
    Ok(
        request(addr, "POST", &format!("/{path}"), &headers, set.as_bytes())
            .await?
            .status,
    )
}

/// Holds a stream list request until as many as [`Transmitter::hold_lists`] asked for
/// are waiting (at most 10 s), then lets them all through; once.
pub(super) async fn list_barrier(shared: &Shared) {
    let Some(n) = *shared.list_barrier.lock().expect("barrier") else {
        return;
    };
    let mut waiting = shared.listing.subscribe();
    shared.listing.send_modify(|c| *c += 1);
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        waiting.wait_for(|c| *c >= n),
    )
    .await;
    *shared.list_barrier.lock().expect("barrier") = None;
}

impl Transmitter {
    /// Makes the next `n` stream list requests wait for each other, so that `n` receivers
    /// starting together all see the same (empty) list: each then creates a stream.
    pub fn hold_lists(&self, n: usize) {
        *self.shared.list_barrier.lock().expect("barrier") = Some(n);
        self.shared.listing.send_replace(0);
    }

    /// The streams' configurations (as `GET /ssf/stream` lists them).
    pub fn streams(&self) -> Vec<Value> {
        self.shared
            .ssf()
            .streams
            .values()
            .map(|s| s.config.clone())
            .collect()
    }

    /// Every management request so far: `list`, `create <id>`, `update <id>`,
    /// `delete <id>`, `verify <id>`, `unauthorized <METHOD> <path>`.
    pub fn operations(&self) -> Vec<String> {
        self.shared.ssf().operations.clone()
    }

    /// Accepts only `value` as the management (and stream poll) `Authorization` from now
    /// on: the old token expired and a new one was issued.
    pub fn rotate_management_authorization(&self, value: &str) {
        self.shared.ssf().authorization = Some(value.to_owned());
    }

    /// Deletes stream `id` as an administrator (or another replica) would.
    pub fn delete_stream(&self, id: &str) -> bool {
        self.shared.ssf().streams.remove(id).is_some()
    }

    /// Every SET sent over a stream so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.ssf().deliveries.clone()
    }

    /// Signs a SET of `claims` and sends it over stream `id` (push: awaits the receiver's
    /// answer; poll: queues it).
    pub async fn transmit(&self, id: &str, claims: &Value) -> anyhow::Result<Delivery> {
        deliver(&self.shared, id, claims).await
    }

    /// Changes stream `id`'s status as the transmitter decides to (§8.1.5): sends the
    /// `stream-updated` event over it first.
    pub async fn set_stream_status(
        &self,
        id: &str,
        status: &str,
        reason: &str,
    ) -> anyhow::Result<Delivery> {
        let claims = self.shared.stream_claims(
            id,
            STREAM_UPDATED,
            json!({"status": status, "reason": reason}),
        );
        let delivery = deliver(&self.shared, id, &claims).await?;
        if let Some(s) = self.shared.ssf().streams.get_mut(id) {
            s.status = status.to_owned();
            s.reason = Some(reason.to_owned());
        }
        Ok(delivery)
    }
}
