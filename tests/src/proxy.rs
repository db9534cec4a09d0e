//! A TCP proxy that can cut a client off from a server while the server stays up:
//! how a test breaks one sidecar's NATS connection while revocations keep being
//! published (a network partition without network namespaces).
//!
//! The proxy owns its listener for its whole life (bound to port 0 in-process, so no
//! port race). [`TcpProxy::cut`] closes every proxied connection and makes new ones
//! close at once (the client sees a connection reset and keeps retrying);
//! [`TcpProxy::restore`] lets connections through again. [`TcpProxy::hold_after`] stalls
//! what the server sends after a number of bytes, with the connection kept up (a client
//! too busy to read), until [`TcpProxy::release`].

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A cuttable TCP proxy in front of one upstream address.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    /// `(open, generation)`: connections of an older generation are closed.
    state: watch::Sender<(bool, u64)>,
    /// Bytes the server may still send to clients before they are held; `None`: no limit.
    budget: watch::Sender<Option<u64>>,
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
        let (budget, _) = watch::channel(None);
        let task = tokio::spawn(accept_loop(
            listener,
            upstream,
            state.clone(),
            budget.clone(),
        ));
        Ok(Self {
            addr,
            state,
            budget,
            task,
        })
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

    /// Lets the server send `bytes` more bytes to clients (all connections together), then
    /// holds the rest, connections kept up, until [`TcpProxy::release`].
    pub fn hold_after(&self, bytes: u64) {
        self.budget.send_replace(Some(bytes));
    }

    /// Whether a [`TcpProxy::hold_after`] budget is used up, so the server's bytes are held.
    pub fn holding(&self) -> bool {
        *self.budget.borrow() == Some(0)
    }

    /// Lets what the server sends through again, with no limit.
    pub fn release(&self) {
        self.budget.send_replace(None);
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
    budget: watch::Sender<Option<u64>>,
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
                connections.spawn(forward(
                    client,
                    upstream,
                    generation,
                    state.subscribe(),
                    budget.clone(),
                ));
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
    budget: watch::Sender<Option<u64>>,
) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    tokio::select! {
        _ = tokio::io::copy(&mut client_read, &mut server_write) => {}
        _ = downstream(&mut server_read, &mut client_write, budget) => {}
        _ = state.wait_for(|(_, g)| *g != generation) => {}
    }
    // Dropping both streams closes them.
}

/// Copies what the server sends to the client within the [`TcpProxy::hold_after`] budget.
async fn downstream(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    budget: watch::Sender<Option<u64>>,
) {
    let mut allowed = budget.subscribe();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let Ok(limit) = allowed.wait_for(|b| *b != Some(0)).await.map(|b| *b) else {
            return;
        };
        let room = limit.map_or(buf.len(), |n| buf.len().min(n as usize));
        let n = match from.read(&mut buf[..room]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        budget.send_modify(|b| {
            if let Some(left) = b {
                *left = left.saturating_sub(n as u64);
            }
        });
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
