//! A TCP proxy that can cut a client off from a server while the server stays up:
//! how a test breaks one sidecar's NATS connection while revocations keep being
//! published (a network partition without network namespaces).
//!
//! The proxy owns its listener for its whole life (bound to port 0 in-process, so no
//! port race). [`TcpProxy::cut`] closes every proxied connection and makes new ones
//! close at once (the client sees a connection reset and keeps retrying);
//! [`TcpProxy::restore`] lets connections through again.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A cuttable TCP proxy in front of one upstream address.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    /// `(open, generation)`: connections of an older generation are closed.
    state: watch::Sender<(bool, u64)>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding the proxy")?;
        let addr = listener.local_addr()?;
        let (state, _) = watch::channel((true, 0));
        let task = tokio::spawn(accept_loop(listener, upstream, state.clone()));
        Ok(Self { addr, state, task })
    }

    /// [`TcpProxy::start`] in front of a `nats://host:port` URL.
    pub async fn for_url(url: &str) -> anyhow::Result<Self> {
        let hostport = url
            .rsplit("://")
            .next()
            .with_context(|| format!("{url} is not a URL"))?;
        let upstream = tokio::net::lookup_host(hostport)
            .await?
            .next()
            .with_context(|| format!("{hostport} does not resolve"))?;
        Self::start(upstream).await
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy as a NATS URL, `nats://127.0.0.1:<port>`.
    pub fn nats_url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Closes every proxied connection and refuses new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.state.send_modify(|(open, generation)| {
            *open = false;
            *generation += 1;
        });
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.state.send_modify(|(open, _)| *open = true);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    state: watch::Sender<(bool, u64)>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((mut client, _)) = accepted else { continue };
                let (open, generation) = *state.borrow();
                if !open {
                    // Cut off: close at once, so the client sees the failure immediately.
                    let _ = client.shutdown().await;
                    continue;
                }
                connections.spawn(forward(client, upstream, generation, state.subscribe()));
            }
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    generation: u64,
    mut state: watch::Receiver<(bool, u64)>,
) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = state.wait_for(|(_, g)| *g != generation) => {}
    }
    // Dropping both streams closes them.
}
