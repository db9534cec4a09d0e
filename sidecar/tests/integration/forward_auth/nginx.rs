//! The stack around the sidecar: a real nginx running `deploy/nginx/forward-auth.conf`
//! with test addresses, and a test upstream that echoes the headers it received.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::HeaderMap;
use serde_json::Value;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::harness::STEP;

/// The example config the tests run, and the addresses in it that they replace.
const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/nginx/forward-auth.conf"
);
const EXAMPLE_LISTEN: &str = "listen 8080;";
const EXAMPLE_SIDECAR: &str = "server 127.0.0.1:9152;";
const EXAMPLE_APP: &str = "server 127.0.0.1:3000;";

// ---------------------------------------------------------------------------------------
// The test upstream: echoes the headers it received
// ---------------------------------------------------------------------------------------

/// An HTTP server answering every request 200 with `{"header name": ["value", …], …}`.
pub(super) struct Upstream {
    pub(super) addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
}

impl Upstream {
    pub(super) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream address");
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let app = axum::Router::new().fallback(move |headers: HeaderMap| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut seen = serde_json::Map::new();
                for (name, value) in &headers {
                    let list = seen
                        .entry(name.as_str())
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Value::Array(list) = list {
                        list.push(String::from_utf8_lossy(value.as_bytes()).into());
                    }
                }
                Value::Object(seen).to_string()
            }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            addr,
            hits,
            stop: Some(stop),
        }
    }

    /// How many requests reached it.
    pub(super) fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

// ---------------------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------------------

/// The nginx binary, found or installed once per test process.
fn nginx_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/nginx.sh");
        let out = Command::new("bash")
            .arg(script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
        assert!(
            out.status.success(),
            "{script} found no usable nginx (exit {}); its message is above",
            out.status
        );
        PathBuf::from(String::from_utf8(out.stdout).expect("a path").trim())
    })
}

/// Where nginx sends auth subrequests.
pub(super) enum SidecarAddr<'a> {
    Tcp(SocketAddr),
    Unix(&'a Path),
}

/// A real nginx in the foreground, everything in its temp dir; killed on drop.
pub(super) struct Nginx {
    addr: SocketAddr,
    child: Child,
    dir: TempDir,
}

impl Nginx {
    /// Renders the example config with test addresses and starts nginx. The port is
    /// found free and then handed to nginx, which can lose it to another process in
    /// between: a start that fails on "Address already in use" is retried on another.
    pub(super) async fn start(sidecar: SidecarAddr<'_>, upstream: SocketAddr) -> Self {
        let example = std::fs::read_to_string(EXAMPLE).expect("read the example config");
        let sidecar_line = match sidecar {
            SidecarAddr::Tcp(addr) => format!("server {addr};"),
            SidecarAddr::Unix(path) => format!("server unix:{};", path.display()),
        };
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = {
                let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe a port");
                probe.local_addr().expect("probe address").port()
            };
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let site = replace_once(&example, EXAMPLE_LISTEN, &format!("listen {addr};"));
            let site = replace_once(&site, EXAMPLE_SIDECAR, &sidecar_line);
            let site = replace_once(&site, EXAMPLE_APP, &format!("server {upstream};"));
            match Self::try_start(addr, &site).await {
                Ok(nginx) => return nginx,
                Err(log) if log.contains("Address already in use") => last_log = log,
                Err(log) => panic!("nginx did not start; its error log:\n{log}"),
            }
        }
        panic!("nginx found no free port in 5 tries; last error log:\n{last_log}");
    }

    async fn try_start(addr: SocketAddr, site: &str) -> Result<Self, String> {
        let binary = nginx_binary();
        let dir = tempfile::Builder::new()
            .prefix("denylist-nginx-")
            .tempdir()
            .expect("temp dir");
        std::fs::write(dir.path().join("forward-auth.conf"), site).expect("write site");
        // Every path nginx writes is relative to the prefix (-p), i.e. in the temp dir.
        // A temp path of a module this nginx lacks would be an unknown directive.
        let version = Command::new(binary)
            .arg("-V")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_default();
        let mut temp_paths =
            String::from("client_body_temp_path tmp/body;\nproxy_temp_path tmp/proxy;\n");
        for module in ["fastcgi", "uwsgi", "scgi"] {
            if version.contains(&format!("--http-{module}-temp-path")) {
                temp_paths.push_str(&format!("{module}_temp_path tmp/{module};\n"));
            }
        }
        std::fs::create_dir(dir.path().join("tmp")).expect("tmp dir");
        let main = format!(
            "pid nginx.pid;\nerror_log error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n access_log access.log;\n{temp_paths}\n include forward-auth.conf;\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), main).expect("write nginx.conf");
        let prefix = format!("{}/", dir.path().display());
        let child = Command::new(binary)
            .args(["-p", &prefix, "-e", "error.log", "-c", "nginx.conf"])
            // One process in the foreground: killing it leaves no workers behind.
            .args(["-g", "daemon off; master_process off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut nginx = Self { addr, child, dir };
        let up = async {
            loop {
                if let Ok(Some(_)) = nginx.child.try_wait() {
                    return false;
                }
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        match tokio::time::timeout(STEP, up).await {
            // Connected, and the process is still ours (not another one on the port).
            Ok(true) if matches!(nginx.child.try_wait(), Ok(None)) => Ok(nginx),
            _ => Err(nginx.error_log()),
        }
    }

    /// nginx's error log so far, for failure messages.
    pub(super) fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// A URL on nginx.
    pub(super) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `text` with `from` (which must occur exactly once) replaced by `to`: if the example
/// changes shape, the test says so instead of testing something else.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "{EXAMPLE} must contain `{from}` exactly once"
    );
    text.replacen(from, to, 1)
}
