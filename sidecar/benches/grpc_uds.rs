//! gRPC Verify over the Unix socket against the real sidecar binary (release build),
//! beside, in the same run: a raw Unix-socket echo (the transport's floor), a trivial
//! tonic handler on the same kind of socket in its own process (gRPC's own floor: a
//! fixed answer, no verification), and a Redis GET session lookup.
//!
//! `cargo bench -p denylist-sidecar --bench grpc_uds`
//!
//! `DENYLIST_BENCH_BASELINE_SIDECAR=/path/to/denylist-sidecar` also measures that
//! binary (an older build, say) with the same tokens and calls, interleaved with this
//! build's rows, so a change is compared with its baseline in one run.
//!
//! `--calls SOCKET N` only makes N Verify calls to a server on SOCKET (for callgrind).
//!
//! Prints a Markdown table: sequential p50/p99 (µs) and throughput with 64 calls in
//! flight. The Redis baseline runs when a `redis-server` binary is on PATH (started on
//! a free loopback port for the run) and is reported as skipped otherwise.

use std::io::{Read as _, Write as _};
use std::net::TcpListener as StdTcpListener;
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use denylist_proto::pb::verifier_client::VerifierClient;
use denylist_proto::pb::{self, Reason};
use tonic::transport::{Channel, Endpoint};

const SEQUENTIAL_CALLS: usize = 20_000;
const IN_FLIGHT: usize = 64;
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(3);

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/keys")
}

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
    .unwrap_or(0)
}

fn claims(iss: &str) -> String {
    let now = now();
    format!(
        r#"{{"iss":"{iss}","sub":"user-8f14e45f","aud":"orders-api","iat":{now},"exp":{},"jti":"3f2a6c1e-9b7d-4a51-8e0f-2c4d6b8a9e10","scope":"orders:read"}}"#,
        now + 3600
    )
}

fn mint_es256() -> BenchResult<String> {
    let pem = std::fs::read_to_string(keys_dir().join("p256-private.pem"))?;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &STANDARD.decode(body)?)
        .map_err(|e| e.to_string())?;
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","typ":"JWT","kid":"es"}"#),
        URL_SAFE_NO_PAD.encode(claims("https://es.bench"))
    );
    let sig = pair
        .sign(&SystemRandom::new(), input.as_bytes())
        .map_err(|e| e.to_string())?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
}

fn mint_hs256() -> BenchResult<String> {
    let secret = std::fs::read(keys_dir().join("hmac.secret"))?;
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT","kid":"hs"}"#),
        URL_SAFE_NO_PAD.encode(claims("https://hs.bench"))
    );
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref())))
}

/// The sidecar process; killed on drop.
struct Sidecar {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sidecar(binary: &Path, cache_entries: usize) -> BenchResult<Sidecar> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("sidecar.sock");
    let revocations = dir.path().join("revocations.jsonl");
    std::fs::write(&revocations, "")?;
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[listen]
socket = "{sock}"
[verify]
cache_entries = {cache_entries}
[denylist]
file = "{rev}"
[log]
filter = "warn"
[[issuers]]
issuer = "https://es.bench"
algorithms = ["ES256"]
audiences = ["orders-api"]
[issuers.keys]
pem_files = [{{ path = "{es}", kid = "es" }}]
[[issuers]]
issuer = "https://hs.bench"
algorithms = ["HS256"]
audiences = ["orders-api"]
[issuers.keys]
hmac_secret_files = [{{ path = "{hs}", kid = "hs" }}]
"#,
            sock = socket.display(),
            rev = revocations.display(),
            es = keys_dir().join("p256-public.pem").display(),
            hs = keys_dir().join("hmac.secret").display(),
        ),
    )?;
    let child = Command::new(binary)
        .arg("--config")
        .arg(&config)
        .args(["--tcp", "", "--admin", ""])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    Ok(Sidecar {
        child,
        socket,
        _dir: dir,
    })
}

async fn connect(socket: PathBuf) -> BenchResult<Channel> {
    Ok(Endpoint::try_from("http://[::1]:50151")?
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await?)
}

/// The trivial handler's process: this bench binary again, serving a fixed answer:
/// an empty valid one, or (`full`) one of the size and shape of the sidecar's answer
/// for the bench's tokens, so message size and codec cost are on both sides.
fn start_trivial(full: bool) -> BenchResult<Sidecar> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("trivial.sock");
    let child = Command::new(std::env::current_exe()?)
        .arg(TRIVIAL_SERVER_ARG)
        .arg(&socket)
        .args(full.then_some("--full"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    Ok(Sidecar {
        child,
        socket,
        _dir: dir,
    })
}

/// Runs the bench binary as the trivial server (`--trivial-server SOCKET`).
const TRIVIAL_SERVER_ARG: &str = "--trivial-server";

/// Runs the bench binary as a client only (`--calls SOCKET N`): N sequential HS256
/// Verify calls to a server already listening on SOCKET, then exits. For counting a
/// server's instructions per call under callgrind (docs/BENCHMARKS.md).
const CALLS_ARG: &str = "--calls";

/// The `--calls` mode, on a single-threaded runtime.
fn calls_only(socket: PathBuf, calls: usize) -> BenchResult<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut client = VerifierClient::new(wait_ready(&socket).await?);
        let token = mint_hs256()?;
        for _ in 0..calls {
            client
                .verify(pb::VerifyRequest {
                    token: token.clone(),
                })
                .await?;
        }
        Ok(())
    })
}

/// gRPC's own floor: `Verifier` answering every Verify with a fixed valid answer
/// and `Status` with ready, served by tonic on a Unix socket as the sidecar serves
/// (multi-threaded runtime, `serve_with_incoming`).
mod trivial {
    use std::path::PathBuf;
    use std::pin::Pin;

    use denylist_proto::pb;
    use denylist_proto::pb::verifier_server::{Verifier, VerifierServer};
    use tonic::{Request, Response, Status};

    struct Trivial {
        answer: pb::VerifyResponse,
    }

    /// An answer shaped like the sidecar's for the bench's HS256 token: every claim,
    /// and the payload as a `Struct`.
    fn full_answer() -> pb::VerifyResponse {
        use prost_types::value::Kind;
        let text = |s: &str| prost_types::Value {
            kind: Some(Kind::StringValue(s.to_owned())),
        };
        let number = |n: f64| prost_types::Value {
            kind: Some(Kind::NumberValue(n)),
        };
        let now = super::now();
        let fields = [
            ("iss", text("https://hs.bench")),
            ("sub", text("user-8f14e45f")),
            ("aud", text("orders-api")),
            ("iat", number(now as f64)),
            ("exp", number((now + 3600) as f64)),
            ("jti", text("3f2a6c1e-9b7d-4a51-8e0f-2c4d6b8a9e10")),
            ("scope", text("orders:read")),
        ];
        pb::VerifyResponse {
            valid: true,
            reason: pb::Reason::Ok as i32,
            claims: Some(pb::Claims {
                iss: "https://hs.bench".into(),
                sub: "user-8f14e45f".into(),
                aud: vec!["orders-api".into()],
                exp: now + 3600,
                iat: Some(now),
                jti: "3f2a6c1e-9b7d-4a51-8e0f-2c4d6b8a9e10".into(),
                kid: "hs".into(),
                alg: "HS256".into(),
                payload: Some(prost_types::Struct {
                    fields: fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                }),
                ..Default::default()
            }),
            denylist_age_ms: 120,
            ..Default::default()
        }
    }

    type Notices =
        Pin<Box<dyn futures::Stream<Item = Result<pb::RevocationNotice, Status>> + Send>>;

    #[tonic::async_trait]
    impl Verifier for Trivial {
        async fn verify(
            &self,
            _request: Request<pb::VerifyRequest>,
        ) -> Result<Response<pb::VerifyResponse>, Status> {
            Ok(Response::new(self.answer.clone()))
        }
        async fn check(
            &self,
            _request: Request<pb::CheckRequest>,
        ) -> Result<Response<pb::CheckResponse>, Status> {
            Err(Status::unimplemented("trivial"))
        }
        async fn status(
            &self,
            _request: Request<pb::StatusRequest>,
        ) -> Result<Response<pb::StatusResponse>, Status> {
            Ok(Response::new(pb::StatusResponse {
                ready: true,
                ..Default::default()
            }))
        }
        type WatchStream = Notices;
        async fn watch(
            &self,
            _request: Request<pb::WatchRequest>,
        ) -> Result<Response<Self::WatchStream>, Status> {
            Err(Status::unimplemented("trivial"))
        }
    }

    pub(crate) fn serve(socket: PathBuf, full: bool) -> super::BenchResult<()> {
        let answer = if full {
            full_answer()
        } else {
            pb::VerifyResponse {
                valid: true,
                reason: pb::Reason::Ok as i32,
                ..Default::default()
            }
        };
        let rt = tokio::runtime::Runtime::new()?;
        rt.block_on(async {
            let listener = tokio::net::UnixListener::bind(&socket)?;
            tonic::transport::Server::builder()
                .add_service(VerifierServer::new(Trivial { answer }))
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
                .await?;
            Ok(())
        })
    }
}

async fn wait_ready(socket: &Path) -> BenchResult<Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(ch) = connect(socket.to_owned()).await
            && let Ok(s) = VerifierClient::new(ch.clone())
                .status(pb::StatusRequest {})
                .await
            && s.get_ref().ready
        {
            return Ok(ch);
        }
        if Instant::now() > deadline {
            return Err("sidecar not ready within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// p50 and p99 in microseconds.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1e6
    };
    (at(0.50), at(0.99))
}

struct Row {
    name: String,
    p50: f64,
    p99: f64,
    throughput: Option<f64>,
}

async fn bench_grpc(name: &str, channel: Channel, token: String) -> BenchResult<Row> {
    let mut client = VerifierClient::new(channel.clone());
    let answer = client
        .verify(pb::VerifyRequest {
            token: token.clone(),
        })
        .await?
        .into_inner();
    if answer.reason != Reason::Ok as i32 {
        return Err(format!(
            "{name}: token not valid: {} {}",
            answer.reason, answer.detail
        )
        .into());
    }
    for _ in 0..1000 {
        client
            .verify(pb::VerifyRequest {
                token: token.clone(),
            })
            .await?;
    }
    let mut samples = Vec::with_capacity(SEQUENTIAL_CALLS);
    for _ in 0..SEQUENTIAL_CALLS {
        let t = Instant::now();
        client
            .verify(pb::VerifyRequest {
                token: token.clone(),
            })
            .await?;
        samples.push(t.elapsed());
    }
    let (p50, p99) = percentiles(samples);

    let done = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + THROUGHPUT_WINDOW;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..IN_FLIGHT {
        let mut c = VerifierClient::new(channel.clone());
        let token = token.clone();
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop_at {
                if c.verify(pb::VerifyRequest {
                    token: token.clone(),
                })
                .await
                .is_ok()
                {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let throughput = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    Ok(Row {
        name: name.to_owned(),
        p50,
        p99,
        throughput: Some(throughput),
    })
}

/// The floor: a 600-byte request / 300-byte reply over a raw Unix socket.
fn bench_echo() -> BenchResult<Row> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("echo.sock");
    let listener = StdUnixListener::bind(&path)?;
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 600];
            while s.read_exact(&mut buf).is_ok() {
                if s.write_all(&buf[..300]).is_err() {
                    break;
                }
            }
        }
    });
    let mut s = StdUnixStream::connect(&path)?;
    let req = [7u8; 600];
    let mut reply = [0u8; 300];
    let mut samples = Vec::with_capacity(SEQUENTIAL_CALLS);
    for i in 0..SEQUENTIAL_CALLS + 1000 {
        let t = Instant::now();
        s.write_all(&req)?;
        s.read_exact(&mut reply)?;
        if i >= 1000 {
            samples.push(t.elapsed());
        }
    }
    let (p50, p99) = percentiles(samples);
    Ok(Row {
        name: "raw Unix-socket echo (floor)".into(),
        p50,
        p99,
        throughput: None,
    })
}

/// The session-store baseline: one Redis GET per request on loopback. Uses a Redis
/// already listening on 127.0.0.1:6379 if there is one, else starts `redis-server`
/// from PATH on a free port.
fn bench_redis() -> BenchResult<Option<Row>> {
    if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", 6379)) {
        return redis_get_loop(
            s,
            "Redis GET session lookup (loopback TCP, existing server)",
        )
        .map(Some);
    }
    let Ok(path) = which("redis-server") else {
        return Ok(None);
    };
    let port = StdTcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(path)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let result = (|| -> BenchResult<Row> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let s = loop {
            match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => return Err(e.into()),
            }
        };
        redis_get_loop(s, "Redis GET session lookup (loopback TCP)")
    })();
    let _ = child.kill();
    let _ = child.wait();
    result.map(Some)
}

fn redis_get_loop(mut s: std::net::TcpStream, name: &str) -> BenchResult<Row> {
    s.set_nodelay(true)?;
    let key = "denylist-bench:session:abc";
    let session = "x".repeat(300);
    let set = format!(
        "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{session}\r\n",
        key.len(),
        session.len()
    );
    s.write_all(set.as_bytes())?;
    let mut ok = [0u8; 5];
    s.read_exact(&mut ok)?;
    let get = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
    let mut reply = vec![0u8; format!("${}\r\n{session}\r\n", session.len()).len()];
    let mut samples = Vec::with_capacity(SEQUENTIAL_CALLS);
    for i in 0..SEQUENTIAL_CALLS + 1000 {
        let t = Instant::now();
        s.write_all(get.as_bytes())?;
        s.read_exact(&mut reply)?;
        if i >= 1000 {
            samples.push(t.elapsed());
        }
    }
    let del = format!("*2\r\n$3\r\nDEL\r\n${}\r\n{key}\r\n", key.len());
    s.write_all(del.as_bytes())?;
    let (p50, p99) = percentiles(samples);
    Ok(Row {
        name: name.to_owned(),
        p50,
        p99,
        throughput: None,
    })
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        })
        .ok_or(())
}

fn main() -> BenchResult<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == TRIVIAL_SERVER_ARG) {
        let socket = args
            .get(i + 1)
            .ok_or("--trivial-server needs a socket path")?;
        return trivial::serve(PathBuf::from(socket), args.iter().any(|a| a == "--full"));
    }
    if let Some(i) = args.iter().position(|a| a == CALLS_ARG) {
        let (Some(socket), Some(calls)) = (args.get(i + 1), args.get(i + 2)) else {
            return Err(format!("{CALLS_ARG} needs a socket path and a number of calls").into());
        };
        return calls_only(PathBuf::from(socket), calls.parse()?);
    }
    // `cargo bench` passes --bench; `cargo test --benches` runs benches once in test
    // mode: keep that quick by doing nothing.
    if !args.iter().any(|a| a == "--bench") {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut rows = vec![bench_echo()?];
    for (full, name) in [
        (
            false,
            "trivial tonic handler over UDS, empty answer (gRPC floor)",
        ),
        (true, "trivial tonic handler over UDS, canned full answer"),
    ] {
        let trivial = start_trivial(full)?;
        rt.block_on(async {
            let channel = wait_ready(&trivial.socket).await?;
            rows.push(bench_grpc(name, channel, mint_hs256()?).await?);
            Ok::<_, Box<dyn std::error::Error>>(())
        })?;
    }
    let mut binaries = vec![(PathBuf::from(env!("CARGO_BIN_EXE_denylist-sidecar")), "")];
    if let Some(baseline) = std::env::var_os("DENYLIST_BENCH_BASELINE_SIDECAR") {
        binaries.push((PathBuf::from(baseline), ", baseline binary"));
    }
    for cache in [100_000usize, 0] {
        let label = if cache > 0 { "cache on" } else { "cache off" };
        for (binary, which) in &binaries {
            let sidecar = start_sidecar(binary, cache)?;
            rt.block_on(async {
                let channel = wait_ready(&sidecar.socket).await?;
                rows.push(
                    bench_grpc(
                        &format!("gRPC Verify HS256 over UDS ({label}{which})"),
                        channel.clone(),
                        mint_hs256()?,
                    )
                    .await?,
                );
                rows.push(
                    bench_grpc(
                        &format!("gRPC Verify ES256 over UDS ({label}{which})"),
                        channel,
                        mint_es256()?,
                    )
                    .await?,
                );
                Ok::<_, Box<dyn std::error::Error>>(())
            })?;
        }
    }
    match bench_redis()? {
        Some(row) => rows.push(row),
        None => eprintln!("redis-server not on PATH: Redis baseline skipped"),
    }
    println!("\n| what | p50 µs | p99 µs | throughput ({IN_FLIGHT} in flight), calls/s |");
    println!("|---|---:|---:|---:|");
    for r in rows {
        let tput = r
            .throughput
            .map_or_else(|| "—".to_owned(), |t| format!("{t:.0}"));
        println!("| {} | {:.1} | {:.1} | {} |", r.name, r.p50, r.p99, tput);
    }
    Ok(())
}
