//! An identity-provider simulator written from the specifications, for the signal receiver
//! (`denylist-receiver`) tests, and the receiver itself as a child process.
//!
//! - [`Transmitter`]: signs logout tokens (OpenID Connect Back-Channel Logout 1.0) and SETs
//!   (RFC 8417, CAEP/RISC events) with its own RSA 2048 key, serves its discovery document
//!   and JWKS over HTTP, and an RFC 8936 poll endpoint that hands out queued SETs until
//!   they are acknowledged and records every `ack` and `setErrs` it receives.
//! - [`ssf`]: its SSF 1.0 stream management API (metadata, configuration, status and
//!   verification endpoints) and the delivery of SETs over the streams receivers create.
//! - [`process`]: the real `denylist-receiver` binary with a generated config (killed on
//!   drop, its log printed), a minimal HTTP/1.0 client, and a [`Forwarder`].

mod process;
pub mod ssf;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

pub use process::{
    Forwarder, HttpResponse, PROVIDER, ReceiverKey, ReceiverOptions, ReceiverProcess,
    StreamOptions, http_get, http_post,
};
pub use ssf::{Delivery, MANAGEMENT_AUTHORIZATION};

use crate::tokens::now_secs;

/// The back-channel logout event type.
pub const BACKCHANNEL_LOGOUT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// CAEP `session-revoked`.
pub const SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
/// RISC `account-disabled`.
pub const ACCOUNT_DISABLED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
/// The audience the receiver is configured with (its client id).
pub const AUDIENCE: &str = "denylist-receiver";
/// The key id of the transmitter's signing key.
pub const KID: &str = "tx-1";

/// The simulator's state, shared with its HTTP server: the JWKS it serves and what the
/// poll endpoints have seen.
#[derive(Debug, Default)]
struct PollState {
    /// Queue (`""` for `/poll`, else a stream id) → jti → SET, handed out until
    /// acknowledged or reported.
    queued: BTreeMap<String, BTreeMap<String, String>>,
    /// Every `ack` received.
    acked: Vec<String>,
    /// Every `setErrs` entry received: jti → `err`.
    errors: BTreeMap<String, String>,
    /// Poll requests served.
    polls: u64,
    /// Bytes of padding added to every poll answer (an oversized answer).
    padding: usize,
    /// The JWKS served on `/jwks`.
    jwks: Value,
}

/// The signing key in use and its `kid`.
#[derive(Debug)]
struct Signer {
    key: Arc<RsaKeyPair>,
    kid: String,
}

/// Everything the HTTP server shares with the [`Transmitter`].
#[derive(Debug)]
struct Shared {
    issuer: String,
    signer: Mutex<Signer>,
    state: Mutex<PollState>,
    ssf: Mutex<ssf::Streams>,
    /// See [`Transmitter::hold_lists`].
    list_barrier: Mutex<Option<usize>>,
    /// Stream list requests waiting at the barrier.
    listing: tokio::sync::watch::Sender<usize>,
}

impl Shared {
    /// A SET (`typ` `secevent+jwt`) of `claims`, signed with the current key.
    fn sign_set(&self, claims: &Value) -> String {
        let signer = self.signer.lock().expect("signer");
        sign(
            &signer.key,
            &json!({"alg": "RS256", "kid": signer.kid, "typ": "secevent+jwt"}),
            claims,
        )
    }
}

/// See the module docs. The HTTP server runs until the transmitter is dropped.
#[derive(Debug)]
pub struct Transmitter {
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Transmitter {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Transmitter {
    /// Starts one on a loopback port; its issuer is `http://127.0.0.1:<port>`.
    pub async fn start() -> anyhow::Result<Self> {
        let key = RsaKeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| anyhow::anyhow!("RSA key generation failed"))?;
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let issuer = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            state: Mutex::new(PollState {
                jwks: json!({"keys": [jwk(&key, KID)]}),
                ..PollState::default()
            }),
            signer: Mutex::new(Signer {
                key: Arc::new(key),
                kid: KID.to_owned(),
            }),
            ssf: Mutex::new(ssf::Streams::default()),
            list_barrier: Mutex::new(None),
            listing: tokio::sync::watch::channel(0).0,
            issuer,
        });
        let server = tokio::spawn(serve(listener, shared.clone()));
        Ok(Self { shared, server })
    }

    /// Its issuer (`iss` of everything it signs).
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// Its RFC 8936 poll endpoint.
    pub fn poll_endpoint(&self) -> String {
        format!("{}/poll", self.shared.issuer)
    }

    fn kid(&self) -> String {
        self.shared.signer.lock().expect("signer").kid.clone()
    }

    /// Signs `claims` under `header` with its key (RS256; any other `alg` is written as
    /// given with an empty signature, as an attacker would).
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let key = self.shared.signer.lock().expect("signer").key.clone();
        sign(&key, header, claims)
    }

    /// Signs an arbitrary payload (e.g. one that is not JSON) under `header`.
    pub fn sign_payload(&self, header: &Value, payload: &[u8]) -> String {
        let key = self.shared.signer.lock().expect("signer").key.clone();
        sign_payload(&key, header, payload)
    }

    /// A logout token (`typ` `logout+jwt`) of `claims`.
    pub fn logout_token(&self, claims: &Value) -> String {
        self.sign_with_header(
            &json!({"alg": "RS256", "kid": self.kid(), "typ": "logout+jwt"}),
            claims,
        )
    }

    /// A SET (`typ` `secevent+jwt`) of `claims`.
    pub fn set(&self, claims: &Value) -> String {
        self.sign_with_header(
            &json!({"alg": "RS256", "kid": self.kid(), "typ": "secevent+jwt"}),
            claims,
        )
    }

    /// Logout token claims (Back-Channel Logout 1.0 §2.4) naming `sid` and/or `sub`.
    pub fn logout_claims(&self, jti: &str, sid: Option<&str>, sub: Option<&str>) -> Value {
        let mut claims = json!({
            "iss": self.shared.issuer,
            "aud": AUDIENCE,
            "iat": now_secs(),
            "exp": now_secs() + 120,
            "jti": jti,
            "events": {BACKCHANNEL_LOGOUT: {}},
        });
        if let Some(sid) = sid {
            claims["sid"] = json!(sid);
        }
        if let Some(sub) = sub {
            claims["sub"] = json!(sub);
        }
        claims
    }

    /// SET claims (RFC 8417, SSF 1.0) with one event of `event_type` and `sub_id`.
    pub fn set_claims(&self, jti: &str, event_type: &str, sub_id: Value, event: Value) -> Value {
        json!({
            "iss": self.shared.issuer,
            "aud": AUDIENCE,
            "iat": now_secs(),
            "jti": jti,
            "sub_id": sub_id,
            "events": {event_type: event},
        })
    }

    /// Rotates its signing key: a new RSA key under `kid`, published in the JWKS beside
    /// the old one, signs everything from now on.
    pub fn rotate_key(&mut self, kid: &str) -> anyhow::Result<()> {
        let key = RsaKeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| anyhow::anyhow!("RSA key generation failed"))?;
        let jwk = jwk(&key, kid);
        *self.shared.signer.lock().expect("signer") = Signer {
            key: Arc::new(key),
            kid: kid.to_owned(),
        };
        let mut state = self.shared.state.lock().expect("state");
        if let Some(keys) = state.jwks["keys"].as_array_mut() {
            keys.push(jwk);
        }
        Ok(())
    }

    /// Queues a SET for the `/poll` endpoint under `jti`.
    pub fn queue(&self, jti: &str, set: String) {
        self.shared.queue("", jti, set);
    }

    /// Every jti acknowledged so far.
    pub fn acked(&self) -> Vec<String> {
        self.shared.state.lock().expect("poll state").acked.clone()
    }

    /// Waits (at most `timeout`) until a poll acknowledged the SET `jti`.
    pub async fn wait_acked(&self, jti: &str, timeout: std::time::Duration) -> anyhow::Result<()> {
        crate::wait::wait_for(
            timeout,
            format_args!("the acknowledgement of SET {jti}"),
            || async {
                let acked = self.acked();
                if acked.iter().any(|a| a == jti) {
                    Ok(())
                } else {
                    Err(format!("acked {acked:?}"))
                }
            },
        )
        .await
    }

    /// The `err` reported for `jti`, if any.
    pub fn error_for(&self, jti: &str) -> Option<String> {
        self.shared
            .state
            .lock()
            .expect("poll state")
            .errors
            .get(jti)
            .cloned()
    }

    /// Poll requests served.
    pub fn polls(&self) -> u64 {
        self.shared.state.lock().expect("poll state").polls
    }

    /// Adds `bytes` of padding to every poll answer from now on (0: none), as a broken or
    /// hostile transmitter would.
    pub fn pad_poll_answers(&self, bytes: usize) {
        self.shared.state.lock().expect("poll state").padding = bytes;
    }
}

fn jwk(key: &RsaKeyPair, kid: &str) -> Value {
    let public = key.public_key();
    json!({
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "kid": kid,
        "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
        "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
    })
}

fn sign(key: &RsaKeyPair, header: &Value, claims: &Value) -> String {
    sign_payload(key, header, claims.to_string().as_bytes())
}

fn sign_payload(key: &RsaKeyPair, header: &Value, payload: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = if header["alg"] == "RS256" {
        let mut sig = vec![0u8; key.public_modulus_len()];
        key.sign(
            &signature::RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            input.as_bytes(),
            &mut sig,
        )
        .expect("RSA signing works");
        sig
    } else {
        Vec::new()
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// A second RSA key, unknown to the receiver, that signs under the transmitter's `kid`: a
/// forgery.
pub fn forge(header: &Value, claims: &Value) -> String {
    let key = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key generation works");
    sign(&key, header, claims)
}

impl Shared {
    /// Queues `set` under `jti` in `queue` (`""`: `/poll`; else a stream's).
    fn queue(&self, queue: &str, jti: &str, set: String) {
        self.state
            .lock()
            .expect("poll state")
            .queued
            .entry(queue.to_owned())
            .or_default()
            .insert(jti.to_owned(), set);
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = answer(stream, &shared).await;
        });
    }
}

/// One HTTP/1.x request.
#[derive(Debug)]
struct Request {
    method: String,
    /// Path and query.
    target: String,
    /// Lower-case names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The path, without the query.
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// The query parameter `name` (the values used here need no decoding).
    fn query(&self, name: &str) -> Option<String> {
        let (_, query) = self.target.split_once('?')?;
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    }
}

async fn read_request(stream: &mut TcpStream) -> anyhow::Result<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "connection closed mid-request");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let target = request_line.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "connection closed mid-body");
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Request {
        method,
        target,
        headers,
        body,
    })
}

async fn answer(mut stream: TcpStream, shared: &Arc<Shared>) -> anyhow::Result<()> {
    let request = read_request(&mut stream).await?;
    let issuer = &shared.issuer;
    let (status, reply) = match (request.method.as_str(), request.path()) {
        ("GET", "/.well-known/openid-configuration") => (
            "200 OK",
            Some(json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")})),
        ),
        ("GET", "/jwks") => (
            "200 OK",
            Some(shared.state.lock().expect("state").jwks.clone()),
        ),
        ("POST", "/poll") => poll_answer(shared, "", &request.body),
        (_, p) if p == "/.well-known/ssf-configuration" || p.starts_with("/ssf/") => {
            if request.method == "GET" && p == "/ssf/stream" && request.query("stream_id").is_none()
            {
                ssf::list_barrier(shared).await;
            }
            ssf::answer(shared, &request)
        }
        _ => ("404 Not Found", Some(json!({}))),
    };
    let reply = reply.map(|r| r.to_string()).unwrap_or_default();
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

/// An RFC 8936 poll request on `queue`.
fn poll_answer(shared: &Shared, queue: &str, body: &[u8]) -> (&'static str, Option<Value>) {
    match serde_json::from_slice::<Value>(body) {
        Ok(request) => ("200 OK", Some(poll(&shared.state, queue, &request))),
        Err(e) => (
            "400 Bad Request",
            Some(json!({"err": "invalid_request", "description": e.to_string()})),
        ),
    }
}

/// RFC 8936 §2.4: takes `ack` and `setErrs`, answers `sets` and `moreAvailable`.
fn poll(state: &Mutex<PollState>, queue: &str, request: &Value) -> Value {
    let mut guard = state.lock().expect("poll state");
    let s = &mut *guard;
    s.polls += 1;
    let queued = s.queued.entry(queue.to_owned()).or_default();
    for jti in request["ack"].as_array().into_iter().flatten() {
        if let Some(jti) = jti.as_str() {
            queued.remove(jti);
            s.acked.push(jti.to_owned());
        }
    }
    for (jti, err) in request["setErrs"].as_object().into_iter().flatten() {
        queued.remove(jti);
        let code = err["err"].as_str().unwrap_or_default().to_owned();
        s.errors.insert(jti.clone(), code);
    }
    let max = request["maxEvents"]
        .as_u64()
        .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
    let sets: serde_json::Map<String, Value> = queued
        .iter()
        .take(max)
        .map(|(jti, set)| (jti.clone(), json!(set)))
        .collect();
    let more = queued.len() > sets.len();
    let mut answer = json!({"sets": sets, "moreAvailable": more});
    if s.padding > 0 {
        answer["padding"] = json!("x".repeat(s.padding));
    }
    answer
}
