//! The real `denylist-receiver` as a child process ([`ReceiverProcess`], configured by
//! [`ReceiverOptions`]), a minimal HTTP/1.0 client for its endpoints ([`http_post`],
//! [`http_get`]), and a [`Forwarder`]: a loopback port known before the receiver starts,
//! so its public push URL can go into its own config.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use denylist_proto::envelope::SigningKey;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::{AUDIENCE, Transmitter};
use crate::binaries;
use crate::wait::{wait_for, within};

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

/// One HTTP/1.0 request to `addr`.
pub(super) async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<HttpResponse> {
    within(format!("{method} http://{addr}{path}"), async {
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

    /// The sidecars' `[[nats.trusted_publisher]]` entry for this key, scoped as deploy/
    /// scopes the receiver's: session and subject rules of `issuer` only.
    pub fn scoped_publisher(&self, issuer: &str) -> crate::sidecar::ScopedPublisher {
        crate::sidecar::ScopedPublisher {
            key: self.public_key.clone(),
            kinds: vec!["session".into(), "subject".into()],
            issuers: vec![issuer.into()],
            heartbeats_only: false,
        }
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
    /// `events` (default: all).
    pub events: Option<Vec<String>>,
    /// `[providers.stream]`: the receiver manages its SSF stream.
    pub stream: Option<StreamOptions>,
}

/// `[providers.stream]` of a [`ReceiverOptions`].
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// `push` or `poll`.
    pub delivery: &'static str,
    /// Push: the URL the transmitter POSTs to (see [`Forwarder`]).
    pub endpoint_url: Option<String>,
    /// The management API's `Authorization` value.
    pub authorization: String,
    /// `resync_interval`.
    pub resync_interval: Duration,
    /// `verify_interval`.
    pub verify_interval: Option<Duration>,
}

impl StreamOptions {
    /// A push stream to `endpoint_url`, with the transmitter's management credential.
    pub fn push(endpoint_url: String) -> Self {
        Self {
            delivery: "push",
            endpoint_url: Some(endpoint_url),
            authorization: super::MANAGEMENT_AUTHORIZATION.to_owned(),
            resync_interval: Duration::from_secs(1),
            verify_interval: None,
        }
    }

    /// A poll stream, with the transmitter's management credential.
    pub fn poll() -> Self {
        Self {
            delivery: "poll",
            endpoint_url: None,
            authorization: super::MANAGEMENT_AUTHORIZATION.to_owned(),
            resync_interval: Duration::from_secs(1),
            verify_interval: None,
        }
    }
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
            events: None,
            stream: None,
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
        let process = Self::spawn(key, options).await?;
        process.wait_ready().await?;
        Ok(process)
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        let addr = self.addr;
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
        .await
    }

    /// Writes the config, starts the binary and waits until it listens (not until ready).
    pub async fn spawn(key: &ReceiverKey, options: &ReceiverOptions) -> anyhow::Result<Self> {
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
        if let Some(events) = &options.events {
            toml.push_str(&format!("events = {events:?}\n"));
        }
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
        } else if options
            .stream
            .as_ref()
            .is_some_and(|s| s.delivery == "poll")
        {
            toml.push_str("[providers.poll]\ninterval = \"100ms\"\n");
        }
        if let Some(stream) = &options.stream {
            std::fs::write(path("management-auth"), &stream.authorization)?;
            toml.push_str(&format!(
                "[providers.stream]\nauthorization_file = {:?}\ndelivery = {:?}\nresync_interval = \"{}\"\n",
                path("management-auth").display().to_string(),
                stream.delivery,
                humantime::format_duration(stream.resync_interval),
            ));
            if let Some(url) = &stream.endpoint_url {
                toml.push_str(&format!("endpoint_url = {url:?}\n"));
            }
            if let Some(every) = stream.verify_interval {
                toml.push_str(&format!(
                    "verify_interval = \"{}\"\n",
                    humantime::format_duration(every)
                ));
            }
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

    /// Replaces the management `Authorization` value in its file, as a token refresher
    /// would (written to a temporary file and renamed, like a Secret update).
    pub fn write_management_authorization(&self, value: &str) -> anyhow::Result<()> {
        let tmp = self.dir.path().join("management-auth.new");
        std::fs::write(&tmp, value)?;
        std::fs::rename(&tmp, self.dir.path().join("management-auth"))?;
        Ok(())
    }

    /// Its `/readyz` answer.
    pub async fn readyz(&self) -> anyhow::Result<HttpResponse> {
        http_get(self.addr, "/readyz").await
    }

    /// Stops it (SIGKILL) and waits for it to exit; its log stays readable.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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

/// A loopback port that forwards each connection to an address set later: the receiver's
/// public push URL must be in its config before it starts and picks its port. A connection
/// that arrives before [`Forwarder::forward_to`] waits for it (up to 10 s).
#[derive(Debug)]
pub struct Forwarder {
    addr: SocketAddr,
    upstream: tokio::sync::watch::Sender<Option<SocketAddr>>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    /// Listens on `127.0.0.1:0`.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (upstream, target) = tokio::sync::watch::channel(None);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut target = target.clone();
                tokio::spawn(async move {
                    let to: Option<SocketAddr> = match tokio::time::timeout(
                        Duration::from_secs(10),
                        target.wait_for(Option::is_some),
                    )
                    .await
                    {
                        Ok(Ok(to)) => *to,
                        _ => None,
                    };
                    let Some(to) = to else { return };
                    if let Ok(mut outbound) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok(Self {
            addr,
            upstream,
            task,
        })
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Holds new connections until the next [`Forwarder::forward_to`] (a receiver is
    /// being replaced).
    pub fn hold(&self) {
        self.upstream.send_replace(None);
    }

    /// Forwards connections to `upstream` from now on.
    pub fn forward_to(&self, upstream: SocketAddr) {
        self.upstream.send_replace(Some(upstream));
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
