//! The fleet heartbeat in tests: `denylistctl heartbeat` as a child process (killed on
//! drop), heartbeats signed by hand (forged ones included), a sidecar's Prometheus metrics,
//! and events stored without being republished (a gap only the heartbeat reveals).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use denylist_proto::envelope::{Heartbeat, SigningKey};
use denylist_proto::events::Event;
use denylist_proto::subjects;
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::binaries;
use crate::events::EventPublisher;
use crate::wait::within;

/// A heartbeat publisher's signing key, in a PEM file for `denylistctl heartbeat`.
#[derive(Debug)]
pub struct HeartbeatKey {
    dir: tempfile::TempDir,
    public_key: String,
}

impl HeartbeatKey {
    /// A fresh key.
    pub fn generate() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("denylist-heartbeat-")
            .tempdir()?;
        let (key, pem) = SigningKey::generate()?;
        std::fs::write(dir.path().join("heartbeat.pem"), pem)?;
        Ok(Self {
            dir,
            public_key: key.public_key(),
        })
    }

    /// The public key its heartbeats verify with (base64url), for the sidecars' trusted
    /// publishers.
    pub fn public_key(&self) -> String {
        self.public_key.clone()
    }

    /// The signing key itself (read back from its PEM file), to sign what
    /// `denylistctl heartbeat` never would.
    pub fn signing_key(&self) -> anyhow::Result<SigningKey> {
        Ok(SigningKey::from_pkcs8_pem(&std::fs::read_to_string(
            self.path(),
        )?)?)
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("heartbeat.pem")
    }
}

/// A running `denylistctl heartbeat` (killed on drop).
#[derive(Debug)]
pub struct HeartbeatProcess {
    child: Option<Child>,
    log: tempfile::NamedTempFile,
}

impl HeartbeatProcess {
    /// Starts `denylistctl heartbeat --interval <interval>` against `nats_url`, signing
    /// with `key`.
    pub fn start(key: &HeartbeatKey, nats_url: &str, interval: Duration) -> anyhow::Result<Self> {
        let bin = binaries::denylistctl_bin()?;
        let log = tempfile::NamedTempFile::new()?;
        let mut command = Command::new(&bin);
        command
            .args(["--nats", nats_url, "--key"])
            .arg(key.path())
            .args(["heartbeat", "--name", "test-heartbeat", "--interval"])
            .arg(humantime::format_duration(interval).to_string())
            .stdin(Stdio::null())
            .stdout(log.reopen()?)
            .stderr(log.reopen()?)
            .env("RUST_LOG", "info");
        for (var, _) in std::env::vars() {
            if var.starts_with("DENYLIST_") {
                command.env_remove(var);
            }
        }
        let child = command
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        Ok(Self {
            child: Some(child),
            log,
        })
    }

    /// Kills it (SIGKILL: a crash, not a drain) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// What it printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for HeartbeatProcess {
    fn drop(&mut self) {
        self.kill();
        eprintln!(
            "--- denylistctl heartbeat log ---\n{}--- end of heartbeat log ---",
            self.log()
        );
    }
}

/// A heartbeat of `stream` signed with `key`, as `denylistctl heartbeat` would publish it.
pub fn signed_heartbeat(
    key: &SigningKey,
    stream: &str,
    created_unix_nanos: i64,
    last_sequence: u64,
    published_at_ms: i64,
) -> Bytes {
    let heartbeat = Heartbeat {
        stream: stream.to_owned(),
        stream_created_unix_nanos: created_unix_nanos,
        last_sequence,
        first_sequence: 1,
        published_at_ms,
        publisher: "test".to_owned(),
    };
    Bytes::from(key.sign_heartbeat(&heartbeat).encode_to_vec())
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The Prometheus text a sidecar's admin endpoint serves on `/metrics`.
pub async fn metrics(admin: SocketAddr) -> anyhow::Result<String> {
    within(format_args!("GET http://{admin}/metrics"), async {
        let mut stream = tokio::net::TcpStream::connect(admin).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .context("an HTTP response without a body")?;
        anyhow::ensure!(
            head.starts_with("HTTP/1.") && head.contains(" 200"),
            "{head}"
        );
        Ok(body.to_owned())
    })
    .await?
}

/// The value of one sample in Prometheus text, e.g. `denylist_heartbeats_total` or
/// `denylist_heartbeats_rejected_total{reason="untrusted"}`; 0 when absent (a counter not
/// incremented yet).
pub fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            (key == name).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// Sum of every sample of `name` whatever its labels.
pub fn sample_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let base = key.split('{').next()?;
            (base == name).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Publishes `events` to the stream with its republish turned off, then turns it on again:
/// the events are stored but no sidecar sees them live, as if every live copy had been
/// lost. Only a heartbeat (or a poll) reveals them. Returns their sequences.
pub async fn publish_unseen(
    client: &async_nats::Client,
    publisher: &EventPublisher,
    events: &[Event],
) -> anyhow::Result<Vec<u64>> {
    let js = jetstream::new(client.clone());
    let set_republish = |on: bool| {
        let js = js.clone();
        async move {
            let mut handle =
                within("stream info", js.get_stream(subjects::DEFAULT_STREAM)).await??;
            let mut config = within("stream info", handle.info()).await??.config.clone();
            config.republish = on.then(|| stream::Republish {
                source: subjects::EVENTS_WILDCARD.to_owned(),
                destination: subjects::LIVE_DESTINATION.to_owned(),
                headers_only: false,
            });
            within("stream update", js.update_stream(config)).await??;
            anyhow::Ok(())
        }
    };
    set_republish(false).await?;
    let sequences = publisher.publish_all(events).await;
    set_republish(true).await?;
    sequences
}

/// The number of consumers on the default stream.
pub async fn consumer_count(client: &async_nats::Client) -> anyhow::Result<usize> {
    let js = jetstream::new(client.clone());
    let mut handle = within("stream info", js.get_stream(subjects::DEFAULT_STREAM)).await??;
    Ok(within("stream info", handle.info())
        .await??
        .state
        .consumer_count)
}

/// The default stream's creation time, Unix nanoseconds.
pub async fn stream_created(client: &async_nats::Client) -> anyhow::Result<i64> {
    let js = jetstream::new(client.clone());
    let mut handle = within("stream info", js.get_stream(subjects::DEFAULT_STREAM)).await??;
    let created = within("stream info", handle.info()).await??.created;
    Ok(i64::try_from(created.unix_timestamp_nanos())?)
}

/// How long the harness waits for a heartbeat process to be heard.
pub const HEARD: Duration = Duration::from_secs(15);
