//! Test harness: an in-process sidecar on a Unix socket, a gRPC client for it, and
//! signing keys and token minting for building any token, valid or hostile.
//!
//! [`SidecarBuilder`] writes the config, key files and an (empty) revocations file into
//! a fresh temp dir, builds the app with [`App::build`] on a [`ManualClock`], binds a
//! Unix socket in the temp dir and runs [`App::run`] on a spawned task.
//! [`TestSidecar`] holds the connected client; dropping it signals shutdown and removes
//! the temp dir. Every await here is bounded by [`STEP`].

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair,
    Ed25519KeyPair, KeyPair as _, RsaKeyPair,
};
use aws_lc_rs::{hmac, rsa::KeySize};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use denylist_proto::pb::{self, Reason, verifier_client::VerifierClient};
use denylist_sidecar::app::{App, AppError, Listeners};
use denylist_sidecar::clock::ManualClock;
use denylist_sidecar::config::Config;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint, Uri};

/// Bound on any single await in a test (a call, a connect, a shutdown).
pub(crate) const STEP: Duration = Duration::from_secs(10);

/// Bound on waiting for something the sidecar does in the background (a file reload).
pub(crate) const EVENTUALLY: Duration = Duration::from_secs(15);

/// The clock every harness sidecar starts at: a whole second, so boundary tests are exact.
/// 2030-01-01T00:00:00Z — far from any real token and any RFC example.
pub(crate) const START_SECS: i64 = 1_893_456_000;

/// Awaits `fut` for at most [`STEP`], panicking with `what` on timeout.
pub(crate) async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(STEP, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {STEP:?}: {what}"),
    }
}

/// The name of a wire reason code, for messages.
pub(crate) fn reason_name(code: i32) -> String {
    Reason::try_from(code).map_or_else(
        |_| format!("<unknown reason {code}>"),
        |r| r.as_str_name().to_owned(),
    )
}

/// Base64url without padding, as JWS uses.
pub(crate) fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding.
pub(crate) fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(text)
        .unwrap_or_else(|e| panic!("test bug: {text:?} is not base64url: {e}"))
}

/// A unique token id.
pub(crate) fn fresh_jti() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("jti-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Quotes a string for TOML.
pub(crate) fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

// ---------------------------------------------------------------------------------------
// Keys and signing
// ---------------------------------------------------------------------------------------

enum Material {
    Hmac(Vec<u8>),
    Rsa(RsaKeyPair),
    EcP256 {
        /// Signs r‖s, as JWS requires.
        fixed: EcdsaKeyPair,
        /// The same key, signing DER (for the hostile "DER signature" case).
        asn1: EcdsaKeyPair,
    },
    Ed25519(Ed25519KeyPair),
}

/// A signing key generated at test time, with the `kid` it is configured under.
pub(crate) struct TestKey {
    /// The `kid` of the key in the sidecar's config and in tokens' headers.
    pub(crate) kid: Option<String>,
    material: Material,
}

impl std::fmt::Debug for TestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TestKey {
    /// A 64-byte random HMAC secret.
    pub(crate) fn hmac(kid: Option<&str>) -> Self {
        let mut secret = vec![0u8; 64];
        aws_lc_rs::rand::fill(&mut secret).expect("rng");
        Self::hmac_from(kid, secret)
    }

    /// An HMAC key with the given secret.
    pub(crate) fn hmac_from(kid: Option<&str>, secret: Vec<u8>) -> Self {
        Self {
            kid: kid.map(str::to_owned),
            material: Material::Hmac(secret),
        }
    }

    /// An RSA-2048 key.
    pub(crate) fn rsa(kid: Option<&str>) -> Self {
        Self {
            kid: kid.map(str::to_owned),
            material: Material::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA keygen")),
        }
    }

    /// An EC P-256 key.
    pub(crate) fn ec_p256(kid: Option<&str>) -> Self {
        let pkcs8 = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .and_then(|k| k.to_pkcs8v1())
            .expect("EC keygen");
        let fixed = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .expect("EC key");
        let asn1 = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
            .expect("EC key");
        Self {
            kid: kid.map(str::to_owned),
            material: Material::EcP256 { fixed, asn1 },
        }
    }

    /// An Ed25519 key.
    pub(crate) fn ed25519(kid: Option<&str>) -> Self {
        Self {
            kid: kid.map(str::to_owned),
            material: Material::Ed25519(Ed25519KeyPair::generate().expect("Ed25519 keygen")),
        }
    }

    /// The HMAC secret.
    pub(crate) fn secret(&self) -> &[u8] {
        match &self.material {
            Material::Hmac(s) => s,
            _ => panic!("test bug: not an HMAC key"),
        }
    }

    /// Whether this is an HMAC key.
    pub(crate) fn is_hmac(&self) -> bool {
        matches!(self.material, Material::Hmac(_))
    }

    /// The public key as DER SubjectPublicKeyInfo.
    pub(crate) fn public_spki_der(&self) -> Vec<u8> {
        match &self.material {
            Material::Hmac(_) => panic!("test bug: an HMAC key has no public key"),
            Material::Rsa(k) => k.public_key().as_der().expect("SPKI").as_ref().to_vec(),
            Material::EcP256 { fixed, .. } => {
                fixed.public_key().as_der().expect("SPKI").as_ref().to_vec()
            }
            Material::Ed25519(k) => k.public_key().as_der().expect("SPKI").as_ref().to_vec(),
        }
    }

    /// The public key as a PEM `PUBLIC KEY` block.
    pub(crate) fn public_pem(&self) -> String {
        let body = STANDARD.encode(self.public_spki_der());
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }

    /// The public key as a JWK (with `kid` if the key has one).
    pub(crate) fn public_jwk(&self) -> Value {
        let mut jwk = match &self.material {
            Material::Hmac(_) => panic!("test bug: an HMAC key has no public JWK"),
            Material::Rsa(k) => {
                let public = k.public_key();
                let n = public.modulus().big_endian_without_leading_zero();
                let e = public.exponent().big_endian_without_leading_zero();
                json!({"kty": "RSA", "n": b64(n), "e": b64(e)})
            }
            Material::EcP256 { fixed, .. } => {
                let point = fixed.public_key().as_ref();
                assert_eq!(point.len(), 65, "uncompressed P-256 point");
                json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])})
            }
            Material::Ed25519(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(k.public_key().as_ref())})
            }
        };
        if let Some(kid) = &self.kid {
            jwk["kid"] = json!(kid);
        }
        jwk
    }

    /// Signs `input` with `alg` (the JWS name).
    pub(crate) fn sign(&self, alg: &str, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match (&self.material, alg) {
            (Material::Hmac(secret), "HS256" | "HS384" | "HS512") => {
                let algorithm = match alg {
                    "HS256" => hmac::HMAC_SHA256,
                    "HS384" => hmac::HMAC_SHA384,
                    _ => hmac::HMAC_SHA512,
                };
                hmac::sign(&hmac::Key::new(algorithm, secret), input)
                    .as_ref()
                    .to_vec()
            }
            (Material::Rsa(k), _) => {
                let padding: &'static dyn signature::RsaEncoding = match alg {
                    "RS256" => &signature::RSA_PKCS1_SHA256,
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    "PS256" => &signature::RSA_PSS_SHA256,
                    "PS384" => &signature::RSA_PSS_SHA384,
                    "PS512" => &signature::RSA_PSS_SHA512,
                    other => panic!("test bug: an RSA key cannot sign {other}"),
                };
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(padding, &rng, input, &mut sig).expect("RSA sign");
                sig
            }
            (Material::EcP256 { fixed, .. }, "ES256") => fixed
                .sign(&rng, input)
                .expect("ECDSA sign")
                .as_ref()
                .to_vec(),
            (Material::Ed25519(k), "EdDSA") => k.sign(input).as_ref().to_vec(),
            (_, other) => panic!("test bug: this key cannot sign {other}"),
        }
    }

    /// An ES256 signature in DER (ASN.1) form instead of JWS's raw r‖s.
    pub(crate) fn sign_es256_der(&self, input: &[u8]) -> Vec<u8> {
        match &self.material {
            Material::EcP256 { asn1, .. } => asn1
                .sign(&SystemRandom::new(), input)
                .expect("ECDSA sign")
                .as_ref()
                .to_vec(),
            _ => panic!("test bug: not an EC key"),
        }
    }
}

/// `header.payload.signature` from raw segment bytes.
pub(crate) fn compact(header: &[u8], payload: &[u8], signature: &[u8]) -> String {
    format!("{}.{}.{}", b64(header), b64(payload), b64(signature))
}

/// A token over raw header and payload bytes, signed by `key` with `alg`.
pub(crate) fn sign_raw(key: &TestKey, alg: &str, header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig = key.sign(alg, input.as_bytes());
    format!("{input}.{}", b64(sig))
}

/// A token whose signing input is given as text (for segments that are not base64url).
pub(crate) fn sign_input(key: &TestKey, alg: &str, signing_input: &str) -> String {
    let sig = key.sign(alg, signing_input.as_bytes());
    format!("{signing_input}.{}", b64(sig))
}

/// One issuer as tests see it: its `iss`, the algorithm its tokens use, its signing key.
#[derive(Debug, Clone)]
pub(crate) struct Issuer {
    /// Exact `iss`.
    pub(crate) iss: String,
    /// The JWS `alg` its tokens carry.
    pub(crate) alg: &'static str,
    /// The key that signs them.
    pub(crate) key: Arc<TestKey>,
}

impl Issuer {
    /// An issuer signing with `key` under `alg`.
    pub(crate) fn new(iss: &str, alg: &'static str, key: TestKey) -> Self {
        Self {
            iss: iss.to_owned(),
            alg,
            key: Arc::new(key),
        }
    }

    /// The protected header its tokens carry: `alg` and, if the key has one, `kid`.
    pub(crate) fn header(&self) -> Value {
        let mut h = json!({"alg": self.alg});
        if let Some(kid) = &self.key.kid {
            h["kid"] = json!(kid);
        }
        h
    }

    /// Valid claims at `now`: lifetime 10 minutes, audience `api`, a fresh `jti`.
    pub(crate) fn claims(&self, now: i64) -> Value {
        json!({
            "iss": self.iss,
            "sub": "alice",
            "aud": "api",
            "iat": now,
            "exp": now + 600,
            "jti": fresh_jti(),
        })
    }

    /// A token with the issuer's header over `claims`.
    pub(crate) fn token(&self, claims: &Value) -> String {
        self.token_with_header(&self.header(), claims)
    }

    /// A token with `header` over `claims`, signed with the issuer's key and algorithm.
    pub(crate) fn token_with_header(&self, header: &Value, claims: &Value) -> String {
        self.token_raw(header.to_string().as_bytes(), claims.to_string().as_bytes())
    }

    /// A token over raw header and payload bytes, signed with the issuer's key and algorithm.
    pub(crate) fn token_raw(&self, header: &[u8], payload: &[u8]) -> String {
        sign_raw(&self.key, self.alg, header, payload)
    }

    /// A token over the issuer's header and raw payload bytes.
    pub(crate) fn token_payload(&self, payload: &[u8]) -> String {
        self.token_raw(self.header().to_string().as_bytes(), payload)
    }

    /// The `[[issuers]]` block for this issuer; writes its key file into `dir`.
    /// `extra` holds more `key = value` lines for the issuer table.
    pub(crate) fn toml(&self, dir: &Path, extra: &str) -> String {
        let stem = format!("key-{}", fresh_jti());
        let kid = self
            .key
            .kid
            .as_deref()
            .map(|k| format!(", kid = {}", toml_str(k)))
            .unwrap_or_default();
        let keys = if self.key.is_hmac() {
            let path = dir.join(format!("{stem}.secret"));
            std::fs::write(&path, self.key.secret()).expect("write secret");
            format!(
                "hmac_secret_files = [{{ path = {}{kid} }}]",
                toml_str(&path.to_string_lossy())
            )
        } else {
            let path = dir.join(format!("{stem}.pub.pem"));
            std::fs::write(&path, self.key.public_pem()).expect("write PEM");
            format!(
                "pem_files = [{{ path = {}{kid} }}]",
                toml_str(&path.to_string_lossy())
            )
        };
        format!(
            "[[issuers]]\nissuer = {}\nalgorithms = [{}]\nmax_lifetime = \"1h\"\n{extra}\n[issuers.keys]\n{keys}\n",
            toml_str(&self.iss),
            toml_str(self.alg),
        )
    }
}

// ---------------------------------------------------------------------------------------
// The sidecar
// ---------------------------------------------------------------------------------------

/// Builds a [`TestSidecar`].
pub(crate) struct SidecarBuilder {
    dir: TempDir,
    issuers: Vec<String>,
}

impl SidecarBuilder {
    /// A builder with a fresh temp dir and no issuers.
    pub(crate) fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("denylist-itest-")
                .tempdir()
                .expect("temp dir"),
            issuers: Vec::new(),
        }
    }

    /// The temp dir the sidecar's files live in.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Adds an issuer (writing its key file). `extra`: more lines for its table.
    pub(crate) fn issuer(mut self, issuer: &Issuer, extra: &str) -> Self {
        let block = issuer.toml(self.dir.path(), extra);
        self.issuers.push(block);
        self
    }

    /// Adds a hand-written `[[issuers]]` block.
    pub(crate) fn issuer_toml(mut self, block: String) -> Self {
        self.issuers.push(block);
        self
    }

    /// Writes the config, builds the app, binds the socket, runs the app and connects a
    /// client. Waits (bounded) until `Status` says ready.
    pub(crate) async fn start(self) -> TestSidecar {
        let dir = self.dir;
        let socket = dir.path().join("sidecar.sock");
        let revocations = dir.path().join("revocations.jsonl");
        std::fs::write(&revocations, b"").expect("write revocations file");
        let text = format!(
            "name = \"itest\"\nshutdown_grace = \"5s\"\n\n\
             [listen]\nsocket = {socket}\n\n\
             [denylist]\nfile = {file}\nfile_poll_interval = \"20ms\"\n\
             # The manual clock only moves when a test moves it; keep staleness out of the way.\n\
             max_staleness = \"1h\"\n\n{issuers}",
            socket = toml_str(&socket.to_string_lossy()),
            file = toml_str(&revocations.to_string_lossy()),
            issuers = self.issuers.join("\n"),
        );
        std::fs::write(dir.path().join("config.toml"), &text).expect("write config");
        let config = Config::from_toml(&text)
            .unwrap_or_else(|e| panic!("test config does not parse: {e}\n{text}"));
        config
            .validate()
            .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{text}"));

        let clock = ManualClock::new(START_SECS * 1000);
        let app = within(
            "App::build",
            App::build(config, Arc::clone(&clock) as _, None),
        )
        .await
        .unwrap_or_else(|e| panic!("App::build failed: {e}\n{text}"));
        let listener = UnixListener::bind(&socket).expect("bind the test socket");
        let listeners = Listeners {
            unix: Some((listener, socket.clone())),
            tcp: None,
            admin: None,
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run(listeners, async move {
            // A dropped sender also means stop.
            let _ = stop_rx.await;
        }));
        let channel = within("connect to the Unix socket", connect(&socket))
            .await
            .expect("connect to the sidecar's socket");
        let sidecar = TestSidecar {
            socket,
            revocations,
            clock,
            client: VerifierClient::new(channel.clone()),
            channel,
            stop: Some(stop_tx),
            task: Some(task),
            dir,
        };
        sidecar.wait_ready().await;
        sidecar
    }
}

/// A gRPC channel over the Unix socket at `path`.
pub(crate) async fn connect(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_owned();
    // The URI is required by the API but unused: the connector ignores it.
    Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}

/// A sidecar running in-process, with a connected client.
pub(crate) struct TestSidecar {
    /// The gRPC socket.
    pub(crate) socket: PathBuf,
    /// The standalone revocations file.
    pub(crate) revocations: PathBuf,
    /// The sidecar's clock.
    pub(crate) clock: Arc<ManualClock>,
    client: VerifierClient<Channel>,
    channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), AppError>>>,
    // Dropped last: the files outlive the server.
    dir: TempDir,
}

impl TestSidecar {
    /// The sidecar's current time, in Unix seconds.
    pub(crate) fn now(&self) -> i64 {
        use denylist_sidecar::clock::Clock as _;
        self.clock.now_secs()
    }

    /// The raw channel (for hand-built requests).
    pub(crate) fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// A client for the Verifier service.
    pub(crate) fn client(&self) -> VerifierClient<Channel> {
        self.client.clone()
    }

    /// `Verify`, returning the gRPC status on failure.
    pub(crate) async fn try_verify(
        &self,
        token: &str,
    ) -> Result<pb::VerifyResponse, tonic::Status> {
        let mut client = self.client();
        let request = pb::VerifyRequest {
            token: token.to_owned(),
        };
        within("Verify", client.verify(request))
            .await
            .map(tonic::Response::into_inner)
    }

    /// `Verify`; a gRPC error fails the test (an invalid token is a normal answer).
    pub(crate) async fn verify(&self, token: &str) -> pb::VerifyResponse {
        self.try_verify(token)
            .await
            .unwrap_or_else(|s| panic!("Verify returned a gRPC error instead of an answer: {s:?}"))
    }

    /// Asserts that `token` gets `reason` (and `valid` matches it).
    pub(crate) async fn assert_reason(
        &self,
        token: &str,
        reason: Reason,
        what: &str,
    ) -> pb::VerifyResponse {
        let r = self.verify(token).await;
        assert_eq!(
            reason_name(r.reason),
            reason.as_str_name(),
            "{what}: wrong reason (detail: {:?})",
            r.detail
        );
        assert_eq!(
            r.valid,
            reason == Reason::Ok,
            "{what}: `valid` disagrees with the reason"
        );
        r
    }

    /// `Check`.
    pub(crate) async fn check(
        &self,
        request: pb::CheckRequest,
    ) -> Result<pb::CheckResponse, tonic::Status> {
        let mut client = self.client();
        within("Check", client.check(request))
            .await
            .map(tonic::Response::into_inner)
    }

    /// `Status`.
    pub(crate) async fn status(&self) -> pb::StatusResponse {
        let mut client = self.client();
        within("Status", client.status(pb::StatusRequest {}))
            .await
            .unwrap_or_else(|s| panic!("Status failed: {s:?}"))
            .into_inner()
    }

    /// Polls `Status` until ready, for at most [`EVENTUALLY`].
    async fn wait_ready(&self) {
        let poll = async {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            loop {
                tick.tick().await;
                if self.status().await.ready {
                    return;
                }
            }
        };
        if tokio::time::timeout(EVENTUALLY, poll).await.is_err() {
            panic!("the sidecar did not report ready within {EVENTUALLY:?}");
        }
    }

    /// Polls `Status` until the denylist has applied generation `sequence` of the
    /// revocations file (the first load is 1), for at most [`EVENTUALLY`].
    pub(crate) async fn wait_for_sequence(&self, sequence: u64) {
        let poll = async {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            loop {
                tick.tick().await;
                if self.status().await.denylist_sequence >= sequence {
                    return;
                }
            }
        };
        if tokio::time::timeout(EVENTUALLY, poll).await.is_err() {
            let now = self.status().await.denylist_sequence;
            panic!(
                "the revocations file was not applied within {EVENTUALLY:?}: sequence {now}, waiting for {sequence}"
            );
        }
    }

    /// Polls `Verify` until `token` gets `reason`, for at most [`EVENTUALLY`] (the
    /// revocations file is reloaded in the background).
    pub(crate) async fn wait_for_reason(&self, token: &str, reason: Reason) -> pb::VerifyResponse {
        let poll = async {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            loop {
                tick.tick().await;
                let r = self.verify(token).await;
                if r.reason == reason as i32 {
                    return r;
                }
            }
        };
        match tokio::time::timeout(EVENTUALLY, poll).await {
            Ok(r) => r,
            Err(_) => {
                let last = self.verify(token).await;
                panic!(
                    "Verify did not answer {} within {EVENTUALLY:?}; last answer: {} ({:?})",
                    reason.as_str_name(),
                    reason_name(last.reason),
                    last.detail
                )
            }
        }
    }

    /// Replaces the revocations file with `events` (JSON lines), atomically, so the
    /// background poll never reads half a file.
    pub(crate) fn write_revocations(&self, events: &[Value]) {
        let mut text = String::new();
        for e in events {
            text.push_str(&e.to_string());
            text.push('\n');
        }
        let tmp = self.dir.path().join("revocations.jsonl.tmp");
        std::fs::write(&tmp, text).expect("write revocations");
        std::fs::rename(&tmp, &self.revocations).expect("replace revocations file");
    }

    /// A `revoke` event as the standalone file holds it.
    pub(crate) fn revoke_event(
        &self,
        event_id: &str,
        kind: &str,
        issuer: &str,
        targets: &[&str],
    ) -> Value {
        json!({
            "event_id": event_id,
            "action": "revoke",
            "kind": kind,
            "issuer": issuer,
            "targets": targets,
            "reason": "integration test",
            "actor": "itest",
            "created_at_ms": self.now() * 1000,
        })
    }

    /// Signals shutdown and waits (bounded) for `App::run` to return.
    pub(crate) async fn stop(mut self) -> Result<(), AppError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("running");
        within("App::run to return after shutdown", task)
            .await
            .expect("the App::run task panicked")
    }
}

impl Drop for TestSidecar {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
