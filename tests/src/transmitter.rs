//! An identity-provider simulator written from the specifications, for the signal receiver
//! (`denylist-receiver`) tests, and the receiver itself as a child process.
//!
//! - [`Transmitter`]: signs logout tokens (OpenID Connect Back-Channel Logout 1.0) and SETs
//!   (RFC 8417, CAEP/RISC events) with its own RSA 2048 key, serves its discovery document
//!   and JWKS over HTTP, and an RFC 8936 poll endpoint that hands out queued SETs until
//!   they are acknowledged and records every `ack` and `setErrs` it receives.
//! - [`ReceiverProcess`]: the real `denylist-receiver` binary with a generated config
//!   (killed on drop, its log printed).
//! - [`http_post`] / [`http_get`]: a minimal HTTP/1.0 client for the receiver's endpoints.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use denylist_proto::envelope::SigningKey;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::binaries;
use crate::tokens::now_secs;
use crate::wait::{wait_for, within};

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
/// poll endpoint has seen.
#[derive(Debug, Default)]
struct PollState {
    /// jti → SET, handed out until acknowledged or reported.
    queued: BTreeMap<String, String>,
    /// Every `ack` received.
    acked: Vec<String>,
    /// Every `setErrs` entry received: jti → `err`.
    errors: BTreeMap<String, String>,
    /// Poll requests served.
    polls: u64,
    /// The JWKS served on `/jwks`.
    jwks: Value,
}

/// See the module docs. The HTTP server runs until the transmitter is dropped.
#[derive(Debug)]
pub struct Transmitter {
    issuer: String,
    key: RsaKeyPair,
    kid: String,
    state: Arc<Mutex<PollState>>,
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
        let state = Arc::new(Mutex::new(PollState {
            jwks: json!({"keys": [jwk(&key, KID)]}),
            ..PollState::default()
        }));
        let server = tokio::spawn(serve(listener, issuer.clone(), state.clone()));
        Ok(Self {
            issuer,
            key,
            kid: KID.to_owned(),
            state,
            server,
        })
    }

    /// Its issuer (`iss` of everything it signs).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Its RFC 8936 poll endpoint.
    pub fn poll_endpoint(&self) -> String {
        format!("{}/poll", self.issuer)
    }

    /// Signs `claims` under `header` with its key (RS256; any other `alg` is written as
    /// given with an empty signature, as an attacker would).
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        sign(&self.key, header, claims)
    }

    /// Signs an arbitrary payload (e.g. one that is not JSON) under `header`.
    pub fn sign_payload(&self, header: &Value, payload: &[u8]) -> String {
        sign_payload(&self.key, header, payload)
    }

    /// A logout token (`typ` `logout+jwt`) of `claims`.
    pub fn logout_token(&self, claims: &Value) -> String {
        self.sign_with_header(
            &json!({"alg": "RS256", "kid": self.kid, "typ": "logout+jwt"}),
            claims,
        )
    }

    /// A SET (`typ` `secevent+jwt`) of `claims`.
    pub fn set(&self, claims: &Value) -> String {
        self.sign_with_header(
            &json!({"alg": "RS256", "kid": self.kid, "typ": "secevent+jwt"}),
            claims,
        )
    }

    /// Logout token claims (Back-Channel Logout 1.0 §2.4) naming `sid` and/or `sub`.
    pub fn logout_claims(&self, jti: &str, sid: Option<&str>, sub: Option<&str>) -> Value {
        let mut claims = json!({
            "iss": self.issuer,
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
            "iss": self.issuer,
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
        self.key = RsaKeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| anyhow::anyhow!("RSA key generation failed"))?;
        kid.clone_into(&mut self.kid);
        let jwk = jwk(&self.key, kid);
        let mut state = self.state.lock().expect("state");
        if let Some(keys) = state.jwks["keys"].as_array_mut() {
            keys.push(jwk);
        }
        Ok(())
    }

    /// Queues a SET for the poll endpoint under `jti`.
    pub fn queue(&self, jti: &str, set: String) {
        self.state
            .lock()
            .expect("poll state")
            .queued
            .insert(jti.to_owned(), set);
    }

    /// Every jti acknowledged so far.
    pub fn acked(&self) -> Vec<String> {
        self.state.lock().expect("poll state").acked.clone()
    }

    /// The `err` reported for `jti`, if any.
    pub fn error_for(&self, jti: &str) -> Option<String> {
        self.state
            .lock()
            .expect("poll state")
            .errors
            .get(jti)
            .cloned()
    }

    /// Poll requests served.
    pub fn polls(&self) -> u64 {
        self.state.lock().expect("poll state").polls
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

async fn serve(listener: TcpListener, issuer: String, state: Arc<Mutex<PollState>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let (issuer, state) = (issuer.clone(), state.clone());
        tokio::spawn(async move {
            let _ = answer(stream, &issuer, &state).await;
        });
    }
}

/// Reads one HTTP/1.x request: `(method, path, body)`.
async fn read_request(stream: &mut TcpStream) -> anyhow::Result<(String, String, Vec<u8>)> {
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
    let path = request_line.next().unwrap_or_default().to_owned();
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "connection closed mid-body");
        body.extend_from_slice(&chunk[..n]);
    }
    Ok((method, path, body))
}

async fn answer(
    mut stream: TcpStream,
    issuer: &str,
    state: &Mutex<PollState>,
) -> anyhow::Result<()> {
    let (method, path, body) = read_request(&mut stream).await?;
    let (status, reply) = match (method.as_str(), path.as_str()) {
        ("GET", "/.well-known/openid-configuration") => (
            "200 OK",
            json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")}),
        ),
        ("GET", "/jwks") => ("200 OK", state.lock().expect("state").jwks.clone()),
        ("POST", "/poll") => match serde_json::from_slice::<Value>(&body) {
            Ok(request) => ("200 OK", poll(state, &request)),
            Err(e) => (
                "400 Bad Request",
                json!({"err": "invalid_request", "description": e.to_string()}),
            ),
        },
        _ => ("404 Not Found", json!({})),
    };
    let reply = reply.to_string();
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

/// RFC 8936 §2.4: takes `ack` and `setErrs`, answers `sets` and `moreAvailable`.
fn poll(state: &Mutex<PollState>, request: &Value) -> Value {
    let mut s = state.lock().expect("poll state");
    s.polls += 1;
    for jti in request["ack"].as_array().into_iter().flatten() {
        if let Some(jti) = jti.as_str() {
            s.queued.remove(jti);
            s.acked.push(jti.to_owned());
        }
    }
    for (jti, err) in request["setErrs"].as_object().into_iter().flatten() {
        s.queued.remove(jti);
        let code = err["err"].as_str().unwrap_or_default().to_owned();
        s.errors.insert(jti.clone(), code);
    }
    let max = request["maxEvents"]
        .as_u64()
        .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
    let sets: serde_json::Map<String, Value> = s
        .queued
        .iter()
        .take(max)
        .map(|(jti, set)| (jti.clone(), json!(set)))
        .collect();
    let more = s.queued.len() > sets.len();
    json!({"sets": sets, "moreAvailable": more})
}

/// An HTTP response: status code and body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: String,
}

impl HttpResponse {
    /// The body as JSON (`Null` if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// POSTs `body` to `http://{addr}{path}` with `headers` (HTTP/1.0, one connection).
pub async fn http_post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<HttpResponse> {
    request(addr, "POST", path, headers, body).await
}

/// GETs `http://{addr}{path}`.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<HttpResponse> {
    request(addr, "GET", path, &[], b"").await
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<HttpResponse> {
    within(format_args!("{method} http://{addr}{path}"), async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut head = format!(
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        // A server may answer (413) before reading a large body, and close.
        let _ = stream.write_all(body).await;
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        let response = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = response
            .split_once("\r\n\r\n")
            .with_context(|| format!("not an HTTP response: {response:?}"))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no status in {head:?}"))?;
        Ok(HttpResponse {
            status,
            body: body.to_owned(),
        })
    })
    .await?
}

/// The receiver's signing key, in a PEM file.
#[derive(Debug)]
pub struct ReceiverKey {
    public_key: String,
    pem: String,
}

impl ReceiverKey {
    /// A fresh key.
    pub fn generate() -> anyhow::Result<Self> {
        let (key, pem) = SigningKey::generate()?;
        Ok(Self {
            public_key: key.public_key(),
            pem,
        })
    }

    /// The public key sidecars trust (base64url).
    pub fn public_key(&self) -> String {
        self.public_key.clone()
    }
}

/// How to configure one receiver process for one provider (the transmitter).
#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    /// NATS server URLs.
    pub nats_servers: Vec<String>,
    /// The provider's issuer (the transmitter's).
    pub issuer: String,
    /// The token issuers its subjects map to.
    pub token_issuers: Vec<String>,
    /// The push `Authorization` value (push is off without one).
    pub push_authorization: Option<String>,
    /// The poll endpoint (poll is off without one).
    pub poll_endpoint: Option<String>,
    /// `publish_timeout`.
    pub publish_timeout: Duration,
    /// `max_body_bytes`.
    pub max_body_bytes: usize,
}

impl ReceiverOptions {
    /// A receiver for `transmitter`'s signals about tokens of `token_issuer`, publishing to
    /// `nats_url`, push on with `Authorization: Bearer push-secret`.
    pub fn new(nats_url: String, transmitter: &Transmitter, token_issuer: &str) -> Self {
        Self {
            nats_servers: vec![nats_url],
            issuer: transmitter.issuer().to_owned(),
            token_issuers: vec![token_issuer.to_owned()],
            push_authorization: Some("Bearer push-secret".to_owned()),
            poll_endpoint: None,
            publish_timeout: Duration::from_secs(2),
            max_body_bytes: 16 * 1024,
        }
    }
}

/// The provider name the harness configures (the paths are `/…/idp`).
pub const PROVIDER: &str = "idp";

/// A running `denylist-receiver` (killed on drop, log printed).
#[derive(Debug)]
pub struct ReceiverProcess {
    child: Option<Child>,
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl ReceiverProcess {
    /// Writes the config, starts the binary and waits until it listens and is ready.
    pub async fn start(key: &ReceiverKey, options: &ReceiverOptions) -> anyhow::Result<Self> {
        let bin = binaries::receiver_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("denylist-receiver-")
            .tempdir()?;
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("key.pem"), &key.pem)?;
        let mut toml = format!(
            "listen = \"127.0.0.1:0\"\nsigning_key_file = {:?}\npublish_timeout = \"{}\"\nmax_body_bytes = {}\n\
             [nats]\nservers = {:?}\nrequest_timeout = \"1s\"\n\
             [[providers]]\nname = \"{PROVIDER}\"\nissuer = {:?}\naudiences = [\"{AUDIENCE}\"]\ntoken_issuers = {:?}\nmax_age = \"2m\"\n",
            path("key.pem").display().to_string(),
            humantime::format_duration(options.publish_timeout),
            options.max_body_bytes,
            options.nats_servers,
            options.issuer,
            options.token_issuers,
        );
        if let Some(auth) = &options.push_authorization {
            std::fs::write(path("push-auth"), auth)?;
            toml.push_str(&format!(
                "[providers.push]\nauthorization_file = {:?}\n",
                path("push-auth").display().to_string()
            ));
        }
        if let Some(endpoint) = &options.poll_endpoint {
            toml.push_str(&format!(
                "[providers.poll]\nendpoint = {endpoint:?}\ninterval = \"100ms\"\n"
            ));
        }
        std::fs::write(path("receiver.toml"), toml)?;
        let log = std::fs::File::create(path("receiver.log"))?;
        let child = Command::new(&bin)
            .arg("--config")
            .arg(path("receiver.toml"))
            .env("RUST_LOG", "info,denylist_client=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut process = Self {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
        };
        let log_path = process.log_path();
        process.addr = wait_for(Duration::from_secs(30), "the receiver to listen", || {
            let log_path = log_path.clone();
            async move {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                log.lines()
                    .find_map(|l| l.split("listening on ").nth(1))
                    .and_then(|a| a.split_whitespace().next()?.parse::<SocketAddr>().ok())
                    .ok_or_else(|| "no `listening on` line yet".to_owned())
            }
        })
        .await?;
        let addr = process.addr;
        wait_for(
            Duration::from_secs(30),
            "the receiver to be ready",
            || async move {
                match http_get(addr, "/readyz").await {
                    Ok(r) if r.status == 200 => Ok(()),
                    Ok(r) => Err(format!("{} {}", r.status, r.body.trim())),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await?;
        Ok(process)
    }

    /// Its HTTP address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("receiver.log")
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// POSTs a logout token as the provider does (a form with `logout_token`).
    pub async fn logout(&self, token: &str) -> anyhow::Result<HttpResponse> {
        let body = format!("logout_token={}", form_escape(token));
        http_post(
            self.addr,
            &format!("/backchannel-logout/{PROVIDER}"),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        )
        .await
    }

    /// Pushes a SET as RFC 8935 does, with `Authorization: Bearer push-secret`.
    pub async fn push(&self, set: &str) -> anyhow::Result<HttpResponse> {
        http_post(
            self.addr,
            &format!("/ssf/push/{PROVIDER}"),
            &[
                ("Content-Type", "application/secevent+jwt"),
                ("Authorization", "Bearer push-secret"),
            ],
            set.as_bytes(),
        )
        .await
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(http_get(self.addr, "/metrics").await?.body)
    }
}

/// `application/x-www-form-urlencoded` escaping of a token (base64url and dots need none,
/// but a hostile test may send anything).
fn form_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Drop for ReceiverProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        eprintln!(
            "--- denylist-receiver log ---\n{}--- end of receiver log ---",
            self.log()
        );
    }
}
