//! The real `denylist-sidecar` binary as a child process, in fleet mode (`denylist.source
//! = "nats"`), with a generated config in its own temp dir and a gRPC client on its
//! Unix socket.
//!
//! The sidecar is a black box here: it is configured only through the TOML file whose
//! fields are the contract (`sidecar/src/config.rs`, `docs/CONFIG.md`), and observed
//! only through its gRPC API. Its stdout and stderr go to `sidecar.log` in the temp dir;
//! the tail is printed when the [`Sidecar`] is dropped (test output is captured and
//! shown only for failing tests, so this is what a failure report shows).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use denylist_proto::pb::{self, Reason, verifier_client::VerifierClient};
use hyper_util::rt::TokioIo;
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint};

use crate::binaries;
use crate::nats::tail;
use crate::tokens::Issuer;
use crate::wait::{STEP, wait_for};

/// How long a sidecar may take from spawn to ready in these tests.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What Verify answers once the denylist is older than `max_staleness`
/// (`denylist.staleness_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StalenessPolicy {
    /// `fail_closed`: answer `REASON_DENYLIST_STALE`.
    #[default]
    FailClosed,
    /// `fail_open`: answer as usual, flagged `stale = true`.
    FailOpen,
}

impl StalenessPolicy {
    fn as_str(self) -> &'static str {
        match self {
            Self::FailClosed => "fail_closed",
            Self::FailOpen => "fail_open",
        }
    }
}

/// A publisher key the sidecar trusts only for some rule kinds of some issuers
/// (`[[nats.trusted_publisher]]`).
#[derive(Debug, Clone)]
pub struct ScopedPublisher {
    /// The public key (base64url).
    pub key: String,
    /// `kinds`: the rule kinds it may revoke.
    pub kinds: Vec<String>,
    /// `issuers`: the issuers whose rules it may revoke.
    pub issuers: Vec<String>,
    /// `heartbeats_only`: a heartbeat key (`kinds` and `issuers` are then left out).
    pub heartbeats_only: bool,
}

/// How to configure one sidecar. [`SidecarOptions::new`] gives test-friendly defaults:
/// fast heartbeats (200 ms), a 1 s prune interval, `max_staleness` 30 s.
#[derive(Debug, Clone)]
pub struct SidecarOptions {
    /// `name`, reported in `Status` and fleet status answers.
    pub name: String,
    /// `nats.servers`.
    pub nats_servers: Vec<String>,
    /// `nats.stream`.
    pub stream: String,
    /// `nats.trusted_publishers` (base64url Ed25519 public keys).
    pub trusted_publishers: Vec<String>,
    /// `[[nats.trusted_publisher]]`: keys limited to some rule kinds and issuers.
    pub scoped_publishers: Vec<ScopedPublisher>,
    /// The token issuers (`[[issuers]]`, HS256, their secrets written to key files).
    pub issuers: Vec<Issuer>,
    /// `nats.heartbeat_interval`.
    pub heartbeat_interval: Duration,
    /// `nats.heartbeat_subject` (`None`: the sidecar's default).
    pub heartbeat_subject: Option<String>,
    /// `nats.heartbeat_fallback_after` (`None`: the sidecar's default, twice the interval).
    pub heartbeat_fallback_after: Option<Duration>,
    /// `nats.catch_up_jitter`. Default 100 ms: short, so tests stay quick, but not zero.
    pub catch_up_jitter: Duration,
    /// `nats.request_timeout`.
    pub request_timeout: Duration,
    /// `denylist.max_staleness`.
    pub max_staleness: Duration,
    /// `denylist.staleness_policy`.
    pub staleness_policy: StalenessPolicy,
    /// `denylist.prune_interval`.
    pub prune_interval: Duration,
    /// `issuers[].max_lifetime` of every issuer.
    pub max_token_lifetime: Duration,
    /// Serve the HTTP admin endpoint on a free loopback port (see
    /// [`Sidecar::admin_addr`]). Off by default.
    pub admin: bool,
    /// `state.dir`: the local state (`None`: off).
    pub state_dir: Option<PathBuf>,
    /// `state.interval`. Default 200 ms.
    pub state_interval: Duration,
    /// `log.filter`.
    pub log_filter: String,
    /// Extra environment variables for the process.
    pub env: Vec<(String, String)>,
}

impl SidecarOptions {
    /// Options for a sidecar named `name` following the stream on `nats_servers`,
    /// trusting `trusted_publisher`, verifying tokens of `issuers`.
    pub fn new(
        name: &str,
        nats_servers: Vec<String>,
        trusted_publisher: String,
        issuers: Vec<Issuer>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            nats_servers,
            stream: denylist_proto::subjects::DEFAULT_STREAM.to_owned(),
            trusted_publishers: vec![trusted_publisher],
            scoped_publishers: Vec::new(),
            issuers,
            heartbeat_interval: Duration::from_millis(200),
            heartbeat_subject: None,
            heartbeat_fallback_after: None,
            catch_up_jitter: Duration::from_millis(100),
            request_timeout: Duration::from_secs(2),
            max_staleness: Duration::from_secs(30),
            staleness_policy: StalenessPolicy::FailClosed,
            prune_interval: Duration::from_secs(1),
            max_token_lifetime: Duration::from_secs(2 * 3600),
            admin: false,
            state_dir: None,
            state_interval: Duration::from_millis(200),
            log_filter: "info,denylist_sidecar=debug".to_owned(),
            env: Vec::new(),
        }
    }

    /// The TOML config for a sidecar whose files live in `dir`; writes the issuers'
    /// secret files there too.
    fn write_config(
        &self,
        dir: &Path,
        socket: &Path,
        admin: Option<SocketAddr>,
    ) -> anyhow::Result<PathBuf> {
        use toml::{Table, Value};
        let s = |v: &str| Value::String(v.to_owned());
        let d = |v: Duration| Value::String(humantime::format_duration(v).to_string());
        let table = |pairs: Vec<(&str, Value)>| {
            Value::Table(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        };

        let mut issuers = Vec::new();
        for (i, issuer) in self.issuers.iter().enumerate() {
            let mut files = Vec::new();
            for (kid, secret) in issuer.keys() {
                let path = dir.join(format!("issuer{i}-{kid}.secret"));
                std::fs::write(&path, secret)?;
                files.push(table(vec![
                    ("path", s(&path.display().to_string())),
                    ("kid", s(kid)),
                ]));
            }
            issuers.push(table(vec![
                ("issuer", s(issuer.iss())),
                ("algorithms", Value::Array(vec![s("HS256")])),
                ("max_lifetime", d(self.max_token_lifetime)),
                // Off, so the suite can show that a token without `iat` still fails
                // safe against cut-off rules (the sidecar's default refuses it outright).
                ("require_iat", Value::Boolean(false)),
                (
                    "keys",
                    table(vec![("hmac_secret_files", Value::Array(files))]),
                ),
            ]));
        }

        // The sidecar refuses a request timeout that would let a fallback poll answer
        // after it turned stale; tests with a short `max_staleness` get a shorter one.
        let fallback = self
            .heartbeat_fallback_after
            .unwrap_or(self.heartbeat_interval * 2);
        let request_timeout = self
            .request_timeout
            .min(self.max_staleness.saturating_sub(fallback));
        let mut nats = vec![
            (
                "servers",
                Value::Array(self.nats_servers.iter().map(|u| s(u)).collect()),
            ),
            ("stream", s(&self.stream)),
            (
                "trusted_publishers",
                Value::Array(self.trusted_publishers.iter().map(|k| s(k)).collect()),
            ),
            ("heartbeat_interval", d(self.heartbeat_interval)),
            ("catch_up_jitter", d(self.catch_up_jitter)),
            ("request_timeout", d(request_timeout)),
        ];
        if !self.scoped_publishers.is_empty() {
            let list = |items: &[String]| Value::Array(items.iter().map(|i| s(i)).collect());
            let entries = self.scoped_publishers.iter().map(|p| {
                if p.heartbeats_only {
                    table(vec![
                        ("key", s(&p.key)),
                        ("heartbeats_only", Value::Boolean(true)),
                    ])
                } else {
                    table(vec![
                        ("key", s(&p.key)),
                        ("kinds", list(&p.kinds)),
                        ("issuers", list(&p.issuers)),
                    ])
                }
            });
            nats.push(("trusted_publisher", Value::Array(entries.collect())));
        }
        if let Some(subject) = &self.heartbeat_subject {
            nats.push(("heartbeat_subject", s(subject)));
        }
        if let Some(after) = self.heartbeat_fallback_after {
            nats.push(("heartbeat_fallback_after", d(after)));
        }

        let mut root = Table::new();
        root.insert("name".into(), s(&self.name));
        root.insert("shutdown_grace".into(), d(Duration::from_secs(2)));
        root.insert(
            "listen".into(),
            table(vec![
                ("socket", s(&socket.display().to_string())),
                ("tcp", s("")),
                (
                    "admin",
                    s(&admin.map(|a| a.to_string()).unwrap_or_default()),
                ),
            ]),
        );
        root.insert(
            "denylist".into(),
            table(vec![
                ("source", s("nats")),
                ("max_staleness", d(self.max_staleness)),
                ("staleness_policy", s(self.staleness_policy.as_str())),
                ("prune_interval", d(self.prune_interval)),
            ]),
        );
        root.insert(
            "log".into(),
            table(vec![("format", s("text")), ("filter", s(&self.log_filter))]),
        );
        root.insert("nats".into(), table(nats));
        if let Some(dir) = &self.state_dir {
            root.insert(
                "state".into(),
                table(vec![
                    ("dir", s(&dir.display().to_string())),
                    ("interval", d(self.state_interval)),
                ]),
            );
        }
        root.insert("issuers".into(), Value::Array(issuers));

        let path = dir.join("sidecar.toml");
        std::fs::write(&path, toml::to_string_pretty(&root)?)?;
        Ok(path)
    }
}

/// A running `denylist-sidecar` process and a gRPC client on its Unix socket.
/// Killed (SIGKILL) on drop; its temp dir is removed.
#[derive(Debug)]
pub struct Sidecar {
    name: String,
    dir: TempDir,
    bin: PathBuf,
    config: PathBuf,
    socket: PathBuf,
    admin: Option<SocketAddr>,
    env: Vec<(String, String)>,
    child: Mutex<Option<Child>>,
    client: VerifierClient<Channel>,
}

/// The `DENYLIST_*` variables the sidecar reads; cleared so the runner's environment
/// cannot override the generated config.
const SIDECAR_ENV: &[&str] = &[
    "DENYLIST_CONFIG",
    "DENYLIST_SOCKET",
    "DENYLIST_TCP",
    "DENYLIST_ADMIN",
    "DENYLIST_NAME",
    "DENYLIST_LOG_FORMAT",
    "DENYLIST_LOG",
    "DENYLIST_REVOCATIONS_FILE",
];

impl Sidecar {
    /// Writes the config and spawns the sidecar. Does not wait for anything: see
    /// [`Sidecar::wait_ready`] and [`Sidecar::start_ready`].
    pub async fn start(options: SidecarOptions) -> anyhow::Result<Self> {
        let bin = binaries::sidecar_bin()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("denylist-sidecar-{}-", options.name))
            .tempdir()
            .context("creating the sidecar temp dir")?;
        let socket = dir.path().join("sidecar.sock");
        let admin = if options.admin {
            // A free port, released before the sidecar binds it: racy in principle, so
            // only tests that need the admin endpoint ask for one.
            let probe = std::net::TcpListener::bind(("127.0.0.1", 0))?;
            Some(probe.local_addr()?)
        } else {
            None
        };
        let config = options.write_config(dir.path(), &socket, admin)?;
        let client = VerifierClient::new(uds_channel(socket.clone())?);
        let sidecar = Self {
            name: options.name,
            dir,
            bin,
            config,
            socket,
            admin,
            env: options.env,
            child: Mutex::new(None),
            client,
        };
        sidecar.spawn()?;
        Ok(sidecar)
    }

    /// [`Sidecar::start`], then [`Sidecar::wait_ready`] with [`READY_TIMEOUT`].
    pub async fn start_ready(options: SidecarOptions) -> anyhow::Result<Self> {
        let sidecar = Self::start(options).await?;
        sidecar.wait_ready(READY_TIMEOUT).await?;
        Ok(sidecar)
    }

    fn spawn(&self) -> anyhow::Result<()> {
        use std::io::Write as _;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        writeln!(
            log,
            "=== e2e harness: starting {} ({}) ===",
            self.name,
            self.bin.display()
        )?;
        let mut command = Command::new(&self.bin);
        command
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env("RUST_BACKTRACE", "1");
        for var in SIDECAR_ENV {
            command.env_remove(var);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let child = command
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        *self.child.lock().expect("not poisoned") = Some(child);
        Ok(())
    }

    /// The name it reports.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its gRPC Unix socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// Its generated config file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The HTTP admin address, when [`SidecarOptions::admin`] was set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// A gRPC client for it (cheap to clone; connects lazily).
    pub fn client(&self) -> VerifierClient<Channel> {
        self.client.clone()
    }

    /// A gRPC client on a connection of its own (connects lazily): for load spread
    /// over several HTTP/2 connections, where [`Sidecar::client`] shares one.
    pub fn connect_client(&self) -> anyhow::Result<VerifierClient<Channel>> {
        Ok(VerifierClient::new(uds_channel(self.socket.clone())?))
    }

    /// The process id, while the process is running (for reading `/proc/<pid>`).
    pub fn pid(&self) -> Option<u32> {
        let mut child = self.child.lock().expect("not poisoned");
        let child = child.as_mut()?;
        match child.try_wait() {
            Ok(None) => Some(child.id()),
            _ => None,
        }
    }

    /// A `/proc/<pid>/status` memory figure of the running process, KiB: `"VmRSS"`
    /// (resident now) or `"VmHWM"` (peak resident).
    pub fn memory_kib(&self, field: &str) -> anyhow::Result<u64> {
        let pid = self
            .pid()
            .with_context(|| format!("sidecar {} is not running", self.name))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let value = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
        Ok(value.trim().trim_end_matches("kB").trim().parse()?)
    }

    /// The exit status, if the process has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.child
            .lock()
            .expect("not poisoned")
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Everything it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("sidecar.log")
    }

    /// `Verifier/Verify`, bounded by [`STEP`] (a timeout is `DEADLINE_EXCEEDED`).
    pub async fn verify(&self, token: &str) -> Result<pb::VerifyResponse, tonic::Status> {
        let mut client = self.client();
        let request = pb::VerifyRequest {
            token: token.to_owned(),
        };
        bounded("Verify", client.verify(request)).await
    }

    /// The `reason` of a Verify answer (errors become `Err` with the status).
    pub async fn reason(&self, token: &str) -> Result<Reason, tonic::Status> {
        let answer = self.verify(token).await?;
        Ok(Reason::try_from(answer.reason).unwrap_or(Reason::Unspecified))
    }

    /// `Verifier/Check`, bounded by [`STEP`].
    pub async fn check(
        &self,
        request: pb::CheckRequest,
    ) -> Result<pb::CheckResponse, tonic::Status> {
        let mut client = self.client();
        bounded("Check", client.check(request)).await
    }

    /// `Verifier/Status`, bounded by [`STEP`].
    pub async fn status(&self) -> Result<pb::StatusResponse, tonic::Status> {
        let mut client = self.client();
        bounded("Status", client.status(pb::StatusRequest {})).await
    }

    /// `Verifier/Watch`: the notice stream (opening it is bounded by [`STEP`]; read it
    /// with a timeout).
    pub async fn watch(
        &self,
        request: pb::WatchRequest,
    ) -> Result<tonic::Streaming<pb::RevocationNotice>, tonic::Status> {
        let mut client = self.client();
        bounded("Watch", client.watch(request)).await
    }

    /// Waits until `Status` reports ready; fails at once (with the log) if the process
    /// exits, and after `timeout` with the last status seen.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<pb::StatusResponse> {
        self.wait_status(timeout, "to be ready", |s| s.ready).await
    }

    /// Waits until the applied sequence is at least `sequence`.
    pub async fn wait_sequence(
        &self,
        sequence: u64,
        timeout: Duration,
    ) -> anyhow::Result<pb::StatusResponse> {
        self.wait_status(
            timeout,
            format_args!("to apply up to sequence {sequence}"),
            |s| s.denylist_sequence >= sequence,
        )
        .await
    }

    /// Waits until `Status` satisfies `done`; fails at once (with the log) if the
    /// process exits.
    pub async fn wait_status(
        &self,
        timeout: Duration,
        what: impl std::fmt::Display,
        done: impl Fn(&pb::StatusResponse) -> bool,
    ) -> anyhow::Result<pb::StatusResponse> {
        // An exit ends the wait at once (as a "done" value), so a sidecar that refuses
        // its config fails the test in milliseconds, not after the timeout.
        let outcome = wait_for(
            timeout,
            format_args!("sidecar {} {what}", self.name),
            || async {
                if let Some(exit) = self.exited() {
                    return Ok(Err(exit));
                }
                match self.status().await {
                    Ok(s) if done(&s) => Ok(Ok(s)),
                    Ok(s) => Err(format!(
                        "ready={} stale={} sequence={} age={}ms entries={}",
                        s.ready, s.stale, s.denylist_sequence, s.denylist_age_ms, s.entries
                    )),
                    Err(e) => Err(format!("Status failed: {} {}", e.code(), e.message())),
                }
            },
        )
        .await?;
        outcome.map_err(|exit| {
            anyhow::anyhow!(
                "sidecar {} exited ({exit}); log tail:\n{}",
                self.name,
                tail(&self.log(), 8000)
            )
        })
    }

    /// Kills the process (SIGKILL) and waits for it to exit. The config, socket path and
    /// temp dir are kept for [`Sidecar::start_again`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.lock().expect("not poisoned").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process gracefully (SIGTERM, as Kubernetes does) and waits, at most
    /// `timeout`, for it to exit; returns its exit status. The temp dir is kept for
    /// [`Sidecar::start_again`].
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.lock().expect("not poisoned").take() else {
            anyhow::bail!("sidecar {} is not running", self.name);
        };
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        anyhow::ensure!(sent.success(), "kill -TERM failed: {sent}");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!(
                    "sidecar {} did not exit within {timeout:?} of SIGTERM",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Spawns the process again with the same config (and a fresh gRPC channel).
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.client = VerifierClient::new(uds_channel(self.socket.clone())?);
        self.spawn()
    }

    /// [`Sidecar::kill`] then [`Sidecar::start_again`]; does not wait for ready.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.start_again()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.kill();
        // Test output is shown only for failing tests; this is their diagnosis.
        eprintln!(
            "--- sidecar {} log (tail) ---\n{}--- end of sidecar {} log ---",
            self.name,
            tail(&self.log(), 16_000),
            self.name
        );
    }
}

async fn bounded<T>(
    what: &str,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(STEP, call).await {
        Ok(answer) => answer.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "{what} did not answer within {STEP:?}"
        ))),
    }
}

/// A lazily connecting gRPC channel to a Unix socket.
fn uds_channel(socket: PathBuf) -> anyhow::Result<Channel> {
    // The URI is a placeholder: the connector always dials the socket.
    Ok(Endpoint::try_from("http://[::1]:50151")?
        .connect_timeout(Duration::from_secs(2))
        .connect_with_connector_lazy(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        })))
}
