//! Real `nats-server` processes with JetStream: a single server ([`NatsServer`]) and a
//! cluster ([`NatsCluster`]), each node with its own temp dir (config, store, log).
//!
//! Ports are chosen by nats-server itself (`listen: 127.0.0.1:-1`) and read back from
//! the ports file it writes once it is listening (`ports_file_dir`), so there is no
//! "find a free port, release it, hope nobody takes it" race and no log scraping.
//! After the first start the ports are known, and [`NatsServer::restart`] /
//! [`NatsServer::start_again`] reuse them (and the store), so reconnects and catch-up
//! after an outage can be tested. Every wait is bounded; a process that dies during
//! start is reported with its log. Dropping a server kills it and removes its dir.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use tempfile::TempDir;

use crate::binaries;
use crate::wait::{STEP, wait_for, within};

/// How long a cluster may take to elect a JetStream meta leader.
pub const CLUSTER_FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// Bound on one JetStream request while polling for a cluster to settle.
pub(crate) const ATTEMPT: Duration = Duration::from_secs(1);

/// Connects a client to any of `urls`, reconnecting quickly (every 100 ms) after an
/// outage so tests do not wait out the default back-off.
pub async fn connect(urls: &[String]) -> anyhow::Result<async_nats::Client> {
    let options = async_nats::ConnectOptions::new()
        .name("denylist-tests")
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|_| Duration::from_millis(100));
    within(
        format_args!("connecting to NATS at {urls:?}"),
        options.connect(urls.to_vec()),
    )
    .await?
    .with_context(|| format!("connecting to NATS at {urls:?}"))
}

/// Polls `$JS.API.INFO` (account info) through `client` until JetStream answers, which
/// in a cluster means a meta leader has been elected.
pub async fn wait_jetstream(client: &async_nats::Client, timeout: Duration) -> anyhow::Result<()> {
    let js = jetstream::new(client.clone());
    wait_for(timeout, "JetStream to answer account info", || {
        let js = js.clone();
        async move {
            // Without a meta leader a request may go unanswered: give up on it quickly
            // (not after the 5 s default) and ask again.
            match tokio::time::timeout(ATTEMPT, js.query_account()).await {
                Ok(answer) => answer.map(drop).map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {ATTEMPT:?}")),
            }
        }
    })
    .await
}

/// The cluster a node belongs to, and the routes it solicits.
#[derive(Debug, Clone)]
struct ClusterRole {
    name: String,
    routes: Vec<String>,
}

/// One `nats-server` process with JetStream, on ports it picked itself.
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// let mut nats = denylist_tests::NatsServer::start().await?;
/// let url = nats.url(); // nats://127.0.0.1:<port>
/// nats.restart().await?; // same port, same store
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct NatsServer {
    dir: TempDir,
    name: String,
    cluster: Option<ClusterRole>,
    client_port: Option<u16>,
    cluster_port: Option<u16>,
    /// The HTTP monitoring port (`/varz`, `/jsz`): picked by the first start, reused by
    /// restarts.
    monitor_port: Option<u16>,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a single JetStream server and waits (bounded) until it accepts
    /// connections and JetStream answers.
    pub async fn start() -> anyhow::Result<Self> {
        let mut server = Self::new("nats", None)?;
        server.launch().await?;
        server.wait_jetstream(STEP).await?;
        Ok(server)
    }

    fn new(name: &str, cluster: Option<ClusterRole>) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("denylist-{name}-"))
            .tempdir()
            .context("creating the nats-server temp dir")?;
        std::fs::create_dir_all(dir.path().join("ports"))?;
        Ok(Self {
            dir,
            name: name.to_owned(),
            cluster,
            client_port: None,
            cluster_port: None,
            monitor_port: None,
            child: None,
        })
    }

    /// The client URL, `nats://127.0.0.1:<port>`. Stable across restarts.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port())
    }

    /// The client port. Stable across restarts.
    pub fn port(&self) -> u16 {
        self.client_port
            .expect("a NatsServer knows its port once started")
    }

    /// The HTTP monitoring endpoint, `http://127.0.0.1:<port>` (`/varz`, `/jsz`: the
    /// fleet simulator reads the server's own counters there). Stable across restarts.
    pub fn monitor_url(&self) -> Option<String> {
        self.monitor_port.map(|p| format!("http://127.0.0.1:{p}"))
    }

    /// The server name (`server_name` in its config; a cluster's stream leader is
    /// reported by this name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The JetStream store directory (kept across restarts).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// A client connected to this server (reconnecting quickly after restarts).
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        connect(&[self.url()]).await
    }

    /// Kills the server (SIGKILL: an outage, not a goodbye) and waits for it to exit.
    /// The port and the store are kept for [`NatsServer::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports with the same store, and waits
    /// (bounded) until it accepts connections — and, for a single server, until
    /// JetStream answers (a cluster node alone may lack a quorum).
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.client_port.is_some(),
            "start_again: {} was never started",
            self.name
        );
        self.stop();
        self.launch().await?;
        if self.cluster.is_none() {
            self.wait_jetstream(STEP).await?;
        }
        Ok(())
    }

    /// [`NatsServer::stop`] then [`NatsServer::start_again`]: same port, same data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.start_again().await
    }

    /// The server's log so far (for diagnosis).
    pub fn log(&self) -> String {
        let mut out = read_lossy(&self.dir.path().join("nats.stderr"));
        out.push_str(&read_lossy(&self.dir.path().join("nats.log")));
        out
    }

    async fn wait_jetstream(&self, timeout: Duration) -> anyhow::Result<()> {
        let client = self.connect().await?;
        wait_jetstream(&client, timeout)
            .await
            .with_context(|| format!("{} did not get JetStream ready", self.name))
    }

    fn cluster_url(&self) -> Option<String> {
        self.cluster_port
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
    }

    fn write_config(&self) -> anyhow::Result<PathBuf> {
        let dir = self.dir.path();
        let q = |p: &Path| serde_json::to_string(&p.display().to_string()).expect("a string");
        let port = |p: Option<u16>| p.map_or_else(|| "-1".to_owned(), |p| p.to_string());
        let mut conf = String::new();
        writeln!(conf, "server_name: {}", serde_json::to_string(&self.name)?)?;
        writeln!(conf, "listen: \"127.0.0.1:{}\"", port(self.client_port))?;
        writeln!(conf, "ports_file_dir: {}", q(&dir.join("ports")))?;
        writeln!(conf, "http: \"127.0.0.1:{}\"", port(self.monitor_port))?;
        writeln!(conf, "log_file: {}", q(&dir.join("nats.log")))?;
        writeln!(conf, "logtime: true")?;
        writeln!(conf, "jetstream {{")?;
        writeln!(conf, "  store_dir: {}", q(&dir.join("store")))?;
        writeln!(conf, "  max_memory_store: 268435456")?;
        writeln!(conf, "  max_file_store: 4294967296")?;
        writeln!(conf, "}}")?;
        if let Some(cluster) = &self.cluster {
            writeln!(conf, "cluster {{")?;
            writeln!(conf, "  name: {}", serde_json::to_string(&cluster.name)?)?;
            writeln!(conf, "  listen: \"127.0.0.1:{}\"", port(self.cluster_port))?;
            writeln!(
                conf,
                "  routes: {}",
                serde_json::to_string(&cluster.routes)?
            )?;
            writeln!(conf, "}}")?;
        }
        let path = dir.join("nats.conf");
        std::fs::write(&path, conf)?;
        Ok(path)
    }

    /// Spawns the process and waits until its ports file appears and its client port
    /// accepts a TCP connection.
    async fn launch(&mut self) -> anyhow::Result<()> {
        let bin = binaries::nats_server()?;
        let config = self.write_config()?;
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats.stderr"))?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(stderr.try_clone()?)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let pid = child.id();
        self.child = Some(child);

        // nats-server writes `<executable>_<pid>.ports` once its listeners are up.
        let ports_dir = self.dir.path().join("ports");
        let suffix = format!("_{pid}.ports");
        // An exit ends the wait at once (as a "done" value): a bad config or a taken
        // port fails in milliseconds, with the log.
        let ports = wait_for(
            STEP,
            format_args!("{} to write its ports file", self.name),
            || {
                let exited = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                let found = find_ports_file(&ports_dir, &suffix);
                async move {
                    match (exited, found) {
                        (Some(status), _) => Ok(Err(status)),
                        (None, Some(ports)) => Ok(Ok(ports)),
                        (None, None) => Err("no ports file yet"),
                    }
                }
            },
        )
        .await
        .and_then(|outcome| {
            outcome.map_err(|status| anyhow::anyhow!("nats-server exited during start ({status})"))
        })
        .map_err(|e| {
            anyhow::anyhow!(
                "{}: {e}\n--- {} log ---\n{}",
                self.name,
                self.name,
                tail(&self.log(), 4000)
            )
        })?;

        let client_port = ports
            .nats
            .first()
            .and_then(|u| port_of(u))
            .with_context(|| format!("no client port in {}'s ports file", self.name))?;
        if let Some(known) = self.client_port {
            anyhow::ensure!(
                known == client_port,
                "{} came back on port {client_port}, not {known}",
                self.name
            );
        }
        self.client_port = Some(client_port);
        self.monitor_port = ports.monitoring.first().and_then(|u| port_of(u));
        if self.cluster.is_some() {
            self.cluster_port = ports.cluster.first().and_then(|u| port_of(u));
            anyhow::ensure!(
                self.cluster_port.is_some(),
                "no cluster port in {}'s ports file",
                self.name
            );
        }
        wait_for(
            STEP,
            format_args!("{} to accept connections", self.name),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", client_port))
                    .await
                    .map(drop)
            },
        )
        .await?;
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- {} (nats-server) log, tail ---\n{}",
                self.name,
                tail(&self.log(), 8000)
            );
        }
    }
}

/// The ports file nats-server writes (`--ports_file_dir`).
#[derive(Debug, Default, serde::Deserialize)]
struct PortsFile {
    #[serde(default)]
    nats: Vec<String>,
    #[serde(default)]
    cluster: Vec<String>,
    #[serde(default)]
    monitoring: Vec<String>,
}

fn find_ports_file(dir: &Path, suffix: &str) -> Option<PortsFile> {
    let entry = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().ends_with(suffix))?;
    // The file may be caught half-written: then it is simply "not yet".
    let text = std::fs::read_to_string(entry.path()).ok()?;
    serde_json::from_str(&text).ok()
}

fn port_of(url: &str) -> Option<u16> {
    url.rsplit(':').next()?.trim_end_matches('/').parse().ok()
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last `max` bytes of `text` (on a char boundary).
pub(crate) fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// A JetStream cluster of `nats-server` processes on one machine: routes between all
/// nodes, one cluster name, each node with its own store, ports and log.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts a cluster of `size` (≥ 2; use 3) nodes and waits (bounded by
    /// [`CLUSTER_FORM_TIMEOUT`]) until JetStream has a meta leader.
    ///
    /// Node 0 starts first: its cluster port is not known before it listens, and
    /// JetStream clustering refuses to start without a configured route, so it is given
    /// a placeholder route to a closed port (its log shows the failed attempts; harmless).
    /// The others start with a route to node 0 and learn each other by gossip. From then
    /// on every node's config routes to all the others, so any node can restart alone.
    pub async fn start(size: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(size >= 2, "a cluster has at least 2 nodes");
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let cluster_name = format!(
            "e2e-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let role = |routes| ClusterRole {
            name: cluster_name.clone(),
            routes,
        };
        let mut seed = NatsServer::new("n0", Some(role(vec!["nats-route://127.0.0.1:1".into()])))?;
        seed.launch().await?;
        let seed_route = seed
            .cluster_url()
            .expect("a cluster node has a cluster port");
        let mut nodes = vec![seed];
        for i in 1..size {
            nodes.push(NatsServer::new(
                &format!("n{i}"),
                Some(role(vec![seed_route.clone()])),
            )?);
        }
        futures::future::try_join_all(nodes[1..].iter_mut().map(NatsServer::launch)).await?;
        let routes: Vec<String> = nodes.iter().filter_map(NatsServer::cluster_url).collect();
        for node in &mut nodes {
            let own = node.cluster_url();
            if let Some(cluster) = &mut node.cluster {
                cluster.routes = routes
                    .iter()
                    .filter(|r| Some(*r) != own.as_ref())
                    .cloned()
                    .collect();
            }
        }
        let cluster = Self { nodes };
        let client = cluster.connect().await?;
        wait_jetstream(&client, CLUSTER_FORM_TIMEOUT)
            .await
            .context("the cluster did not elect a JetStream meta leader")?;
        Ok(cluster)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes (never, once started).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Client URLs of all nodes (running or not), node 0 first.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// Client URL of one node.
    pub fn url(&self, node: usize) -> String {
        self.nodes[node].url()
    }

    /// One node.
    pub fn node(&self, node: usize) -> &NatsServer {
        &self.nodes[node]
    }

    /// The index of the node whose server name is `name` (e.g. a stream's leader).
    pub fn node_named(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// A client that may use any node.
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        connect(&self.urls()).await
    }

    /// Kills one node (SIGKILL). Its ports and store are kept for [`NatsCluster::restart`].
    pub fn kill(&mut self, node: usize) {
        self.nodes[node].stop();
    }

    /// Starts one node again (same ports, same store, routes to all the others) and
    /// waits until it accepts connections.
    pub async fn restart(&mut self, node: usize) -> anyhow::Result<()> {
        self.nodes[node].start_again().await
    }

    /// The node currently leading `stream`'s raft group, if there is one.
    pub async fn stream_leader(
        &self,
        client: &async_nats::Client,
        stream: &str,
    ) -> anyhow::Result<Option<usize>> {
        let info = crate::events::stream_info(client, stream).await?;
        Ok(info
            .cluster
            .and_then(|c| c.leader)
            .and_then(|leader| self.node_named(&leader)))
    }
}
