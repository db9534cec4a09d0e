//! Forward-auth through a real nginx: `deploy/nginx/forward-auth.conf`, with its three
//! addresses replaced by test ports, in front of a test upstream that echoes the headers
//! it received. nginx is Debian's package (`scripts/nginx.sh` finds or installs it),
//! run as a single foreground process with every path in a temp dir, killed on drop.
//!
//! The sidecar runs in-process on a manual clock with a standalone revocations file, so
//! a test can revoke a token while requests flow and make the denylist stale.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use denylist_sidecar::app::{App, AppError, ForwardAuthListeners, Listeners};
use denylist_sidecar::clock::ManualClock;
use denylist_sidecar::config::Config;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::harness::{EVENTUALLY, Issuer, START_SECS, STEP, TestKey, toml_str, within};

#[path = "forward_auth/nginx.rs"]
mod nginx;

use nginx::{Nginx, SidecarAddr, Upstream};

/// How long a revocation may take to turn requests away: the file is polled every
/// 20 ms, so this is two orders of magnitude of slack for a loaded machine, and still a
/// bound a broken reload (or a cached answer) fails.
const PROPAGATION_BOUND: Duration = Duration::from_secs(5);

fn issuer() -> Issuer {
    Issuer::new("https://nginx.example", "HS256", TestKey::hmac(Some("k1")))
}

// ---------------------------------------------------------------------------------------
// The sidecar, with forward-auth on
// ---------------------------------------------------------------------------------------

/// An in-process sidecar serving forward-auth on loopback TCP and a Unix socket.
struct Sidecar {
    /// Forward-auth over TCP.
    addr: SocketAddr,
    /// Forward-auth over the Unix socket.
    socket: PathBuf,
    revocations: PathBuf,
    clock: Arc<ManualClock>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), AppError>>>,
    // Dropped last: the files outlive the server.
    dir: TempDir,
}

impl Sidecar {
    async fn start(iss: &Issuer) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("denylist-fa-")
            .tempdir()
            .expect("temp dir");
        let grpc_socket = dir.path().join("sidecar.sock");
        let socket = dir.path().join("forward-auth.sock");
        let revocations = dir.path().join("revocations.jsonl");
        std::fs::write(&revocations, b"").expect("write revocations file");
        let text = format!(
            "name = \"fa-itest\"\nshutdown_grace = \"5s\"\n\n\
             [listen]\nsocket = {grpc}\ntcp = \"\"\nadmin = \"\"\n\n\
             [denylist]\nfile = {file}\nfile_poll_interval = \"20ms\"\n\
             # The manual clock moves only when a test moves it.\n\
             max_staleness = \"1h\"\nstaleness_policy = \"fail_closed\"\n\n\
             [forward_auth]\nenabled = true\nlisten = \"127.0.0.1:0\"\nsocket = {socket}\n\
             forward_claims = {{ sub = \"x-denylist-subject\", roles = \"x-denylist-roles\", \
             name = \"x-denylist-name\", jti = \"x-denylist-jti\" }}\n\n{issuer}",
            grpc = toml_str(&grpc_socket.to_string_lossy()),
            file = toml_str(&revocations.to_string_lossy()),
            socket = toml_str(&socket.to_string_lossy()),
            issuer = iss.toml(dir.path(), ""),
        );
        let config = Config::from_toml(&text)
            .unwrap_or_else(|e| panic!("test config does not parse: {e}\n{text}"));
        config
            .validate()
            .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{text}"));

        let clock = ManualClock::new(START_SECS * 1000);
        let tcp = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind forward-auth");
        let addr = tcp.local_addr().expect("forward-auth address");
        let unix = UnixListener::bind(&socket).expect("bind the forward-auth socket");
        let app = within(
            "App::build",
            App::build(config, Arc::clone(&clock) as _, None),
        )
        .await
        .unwrap_or_else(|e| panic!("App::build failed: {e}\n{text}"))
        .with_forward_auth_listeners(ForwardAuthListeners {
            tcp: Some(tcp),
            unix: Some((unix, socket.clone())),
        });
        let listeners = Listeners {
            unix: Some((
                UnixListener::bind(&grpc_socket).expect("bind the gRPC socket"),
                grpc_socket,
            )),
            tcp: None,
            admin: None,
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run(listeners, async move {
            let _ = stop_rx.await;
        }));
        Self {
            addr,
            socket,
            revocations,
            clock,
            stop: Some(stop_tx),
            task: Some(task),
            dir,
        }
    }

    /// The current time on the sidecar's clock, Unix seconds.
    fn now(&self) -> i64 {
        use denylist_sidecar::clock::Clock as _;
        self.clock.now_secs()
    }

    /// Replaces the revocations file atomically with one `jti` revocation.
    fn revoke_jti(&self, iss: &Issuer, jti: &str) {
        let event = json!({
            "event_id": format!("ev-{jti}"),
            "action": "revoke",
            "kind": "jti",
            "issuer": iss.iss,
            "targets": [jti],
            "reason": "forward-auth test",
            "actor": "itest",
            "created_at_ms": self.now() * 1000,
        });
        let tmp = self.dir.path().join("revocations.jsonl.tmp");
        std::fs::write(&tmp, format!("{event}\n")).expect("write revocations");
        std::fs::rename(&tmp, &self.revocations).expect("replace revocations file");
    }

    /// Signals shutdown and waits (bounded) for `App::run` to return.
    async fn stop(mut self) -> Result<(), AppError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("running");
        within("App::run to return after shutdown", task)
            .await
            .expect("the App::run task panicked")
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(STEP)
        .build()
        .expect("HTTP client")
}

/// An answer, with the headers a test looks at.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The upstream's echo: the values of request header `name` it received.
    fn upstream_saw(&self, name: &str) -> Vec<String> {
        let echo: Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not the upstream's echo ({e}): {self:?}"));
        echo.get(name)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

async fn get(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Answer {
    send(client, reqwest::Method::GET, url, headers).await
}

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = client.request(method, url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = within(url, request.send())
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = within("the body", response.text())
        .await
        .unwrap_or_else(|e| panic!("{url}: body: {e}"));
    Answer {
        status,
        headers,
        body,
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Polls until `url` answers `status` for `token`, for at most `bound`.
async fn wait_for_status(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    status: u16,
    bound: Duration,
) -> Answer {
    let auth = bearer(token);
    let poll = async {
        loop {
            let a = get(client, url, &[("authorization", &auth)]).await;
            if a.status == status {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    match tokio::time::timeout(bound, poll).await {
        Ok(a) => a,
        Err(_) => {
            let last = get(client, url, &[("authorization", &auth)]).await;
            panic!("{url} did not answer {status} within {bound:?}; last answer: {last:?}")
        }
    }
}

/// A sidecar, an upstream and nginx in front of both (over TCP), the sidecar ready.
async fn stack(iss: &Issuer) -> (Sidecar, Upstream, Nginx) {
    let sidecar = Sidecar::start(iss).await;
    let upstream = Upstream::start().await;
    let nginx = Nginx::start(SidecarAddr::Tcp(sidecar.addr), upstream.addr).await;
    let token = iss.token(&iss.claims(START_SECS));
    let direct = format!("http://{}/", sidecar.addr);
    wait_for_status(&client(), &direct, &token, 200, EVENTUALLY).await;
    (sidecar, upstream, nginx)
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_reaches_the_upstream_with_its_claims_and_forged_ones_never_do() {
    let iss = issuer();
    let (sidecar, upstream, nginx) = stack(&iss).await;
    let client = client();
    let token = iss.token(&iss.claims(START_SECS));

    let a = get(
        &client,
        &nginx.url("/orders?id=7"),
        &[
            ("authorization", &bearer(&token)),
            ("x-denylist-subject", "mallory"),
        ],
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}\n{}", nginx.error_log());
    assert_eq!(a.upstream_saw("x-denylist-subject"), ["alice"], "{a:?}");
    assert_eq!(a.header("x-denylist-reason"), None, "{a:?}");

    // A token without `sub`: the client's header is not passed on, and none is added.
    let mut claims = iss.claims(START_SECS);
    claims.as_object_mut().expect("claims").remove("sub");
    let a = get(
        &client,
        &nginx.url("/orders"),
        &[
            ("authorization", &bearer(&iss.token(&claims))),
            ("X-Denylist-Subject", "mallory"),
        ],
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.upstream_saw("x-denylist-subject").is_empty(), "{a:?}");
    assert_eq!(upstream.hits(), 2);
    drop(nginx);
    sidecar.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_invalid_token_is_401_with_the_reason_and_never_reaches_the_upstream() {
    let iss = issuer();
    let (_sidecar, upstream, nginx) = stack(&iss).await;
    let client = client();
    let url = nginx.url("/orders");

    // No token: a bare challenge (RFC 6750 §3.1), copied by nginx from the sidecar.
    let a = get(&client, &url, &[]).await;
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(
        a.header("www-authenticate"),
        Some("Bearer realm=\"denylist\"")
    );
    assert_eq!(a.header("x-denylist-reason"), Some("missing_token"));

    let a = get(&client, &url, &[("authorization", "Basic dXNlcjpwYXNz")]).await;
    assert_eq!(a.status, 401, "a non-Bearer credential is no token: {a:?}");

    let mut claims = iss.claims(START_SECS);
    claims["exp"] = (START_SECS - 3600).into();
    let expired = iss.token(&claims);
    for (token, reason) in [
        (expired.as_str(), "REASON_EXPIRED"),
        ("not.a.jwt", "REASON_MALFORMED"),
    ] {
        let a = get(&client, &url, &[("authorization", &bearer(token))]).await;
        assert_eq!(a.status, 401, "{reason}: {a:?}");
        assert_eq!(
            a.header("www-authenticate"),
            Some(
                format!(
                    "Bearer realm=\"denylist\", error=\"invalid_token\", \
                     error_description=\"{reason}\""
                )
                .as_str()
            ),
            "{a:?}"
        );
        assert_eq!(a.header("x-denylist-reason"), Some(reason), "{a:?}");
    }
    let other = Issuer::new("https://nginx.example", "HS256", TestKey::hmac(Some("k1")));
    let forged = other.token(&other.claims(START_SECS));
    let a = get(&client, &url, &[("authorization", &bearer(&forged))]).await;
    assert_eq!(a.status, 401, "a token signed by another key: {a:?}");
    assert_eq!(a.header("x-denylist-reason"), Some("REASON_BAD_SIGNATURE"));

    assert_eq!(upstream.hits(), 0, "no denied request reached the upstream");
}

/// One request's outcome in the flow.
#[derive(Debug)]
struct Outcome {
    victim: bool,
    status: u16,
    reason: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_arriving_while_requests_flow_turns_the_token_away_within_the_bound() {
    let iss = issuer();
    let (sidecar, _upstream, nginx) = stack(&iss).await;
    let victim_claims = iss.claims(START_SECS);
    let victim_jti = victim_claims["jti"].as_str().expect("jti").to_owned();
    let victim = bearer(&iss.token(&victim_claims));
    let mut bystander_claims = iss.claims(START_SECS);
    bystander_claims["sub"] = "bob".into();
    let bystander = bearer(&iss.token(&bystander_claims));

    // Requests flow, one after another, alternating the two users, until the receiver
    // is dropped.
    let (tx, mut rx) = mpsc::unbounded_channel::<Outcome>();
    let url = nginx.url("/feed");
    let flow = tokio::spawn(async move {
        let client = client();
        for victim_turn in [true, false].into_iter().cycle() {
            let auth = if victim_turn { &victim } else { &bystander };
            let a = get(&client, &url, &[("authorization", auth)]).await;
            let outcome = Outcome {
                victim: victim_turn,
                status: a.status,
                reason: a.header("x-denylist-reason").map(str::to_owned),
            };
            if tx.send(outcome).is_err() {
                return;
            }
        }
    });
    let mut next = async || {
        within("the next request of the flow", rx.recv())
            .await
            .expect("the request flow stopped")
    };

    // Both users get through before the revocation.
    let mut victim_ok = 0;
    while victim_ok < 10 {
        let o = next().await;
        assert_eq!(o.status, 200, "before the revocation: {o:?}");
        victim_ok += usize::from(o.victim);
    }

    sidecar.revoke_jti(&iss, &victim_jti);
    let revoked_at = Instant::now();
    let turned_away = tokio::time::timeout(PROPAGATION_BOUND, async {
        loop {
            let o = next().await;
            match (o.victim, o.status) {
                (true, 401) => return o,
                (_, 200) => {}
                _ => panic!("only 200 or the victim's 401 may answer: {o:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!("the revoked token still got through {PROPAGATION_BOUND:?} after the revocation")
    });
    eprintln!(
        "revocation → first 401 through nginx: {:?}",
        revoked_at.elapsed()
    );
    assert_eq!(turned_away.reason.as_deref(), Some("REASON_REVOKED"));

    // From then on the victim is refused every time, and the bystander never is.
    for _ in 0..40 {
        let o = next().await;
        if o.victim {
            assert_eq!(
                (o.status, o.reason.as_deref()),
                (401, Some("REASON_REVOKED")),
                "{o:?}"
            );
        } else {
            assert_eq!(o.status, 200, "the other user is not affected: {o:?}");
        }
    }
    drop(rx);
    within("the request flow to end", flow)
        .await
        .expect("the flow task panicked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_denylist_under_fail_closed_is_503_with_retry_after() {
    let iss = issuer();
    let (sidecar, upstream, nginx) = stack(&iss).await;
    let client = client();
    let url = nginx.url("/orders");
    let token = iss.token(&iss.claims(START_SECS));
    assert_eq!(
        get(&client, &url, &[("authorization", &bearer(&token))])
            .await
            .status,
        200
    );
    let hits = upstream.hits();

    // A missing revocations file is silence from the source; then time passes beyond
    // max_staleness (1 h) on the sidecar's clock.
    std::fs::remove_file(&sidecar.revocations).expect("remove the revocations file");
    sidecar.clock.advance_ms(2 * 3600 * 1000);
    // The first token expired while the clock moved: mint one valid at the new time.
    let fresh = iss.token(&iss.claims(START_SECS + 2 * 3600));
    let a = wait_for_status(&client, &url, &fresh, 503, EVENTUALLY).await;
    assert_eq!(a.header("retry-after"), Some("1"), "{a:?}");
    assert_eq!(
        a.header("x-denylist-reason"),
        Some("REASON_DENYLIST_STALE"),
        "{a:?}"
    );
    assert_eq!(upstream.hits(), hits, "nothing passed while stale");

    // A bad token is still a 401, stale or not: never a 5xx for a merely invalid token.
    let a = get(&client, &url, &[("authorization", "Bearer not.a.jwt")]).await;
    assert_eq!(a.status, 401, "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_reaches_the_sidecar_over_its_unix_socket() {
    let iss = issuer();
    let sidecar = Sidecar::start(&iss).await;
    let upstream = Upstream::start().await;
    let nginx = Nginx::start(SidecarAddr::Unix(&sidecar.socket), upstream.addr).await;
    let client = client();
    let token = iss.token(&iss.claims(START_SECS));
    let a = wait_for_status(&client, &nginx.url("/"), &token, 200, EVENTUALLY).await;
    assert_eq!(a.upstream_saw("x-denylist-subject"), ["alice"], "{a:?}");
    let a = get(&client, &nginx.url("/"), &[]).await;
    assert_eq!(a.status, 401, "{a:?}");

    let socket = sidecar.socket.clone();
    drop(nginx);
    sidecar.stop().await.expect("clean shutdown");
    assert!(
        !socket.exists(),
        "the forward-auth socket is removed on shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_method_and_path_is_the_check_and_only_safe_claim_values_are_answered() {
    let iss = issuer();
    let sidecar = Sidecar::start(&iss).await;
    let client = client();
    let base = format!("http://{}", sidecar.addr);
    let mut claims = iss.claims(START_SECS);
    claims["roles"] = json!(["admin", "ops"]);
    claims["name"] = "Alice Liddell".into();
    let token = iss.token(&claims);
    wait_for_status(&client, &format!("{base}/"), &token, 200, EVENTUALLY).await;

    // Traefik forwards the original method; nginx sends a GET to a path of its own.
    for method in [
        reqwest::Method::GET,
        reqwest::Method::POST,
        reqwest::Method::DELETE,
        reqwest::Method::HEAD,
    ] {
        let a = send(
            &client,
            method.clone(),
            &format!("{base}/any/path?x=1"),
            &[("authorization", &bearer(&token))],
        )
        .await;
        assert_eq!(a.status, 200, "{method}: {a:?}");
        assert_eq!(a.header("x-denylist-subject"), Some("alice"));
        // Non-string claims are answered as their JSON.
        assert_eq!(a.header("x-denylist-roles"), Some("[\"admin\",\"ops\"]"));
        assert_eq!(a.header("x-denylist-name"), Some("Alice Liddell"));
        assert_eq!(a.header("x-denylist-jti"), claims["jti"].as_str());
        assert_eq!(a.header("cache-control"), Some("no-store"));
    }

    // A claim value that could smuggle a header, or would be trimmed into another
    // value, is left out (the proxy then removes the client's copy).
    for name in ["Alice\r\nX-Admin: true", " admin", "tab\there", ""] {
        let mut claims = iss.claims(START_SECS);
        claims["name"] = name.into();
        let a = get(
            &client,
            &format!("{base}/"),
            &[("authorization", &bearer(&iss.token(&claims)))],
        )
        .await;
        assert_eq!(a.status, 200, "{name:?}: {a:?}");
        assert_eq!(a.header("x-denylist-name"), None, "{name:?}: {a:?}");
        assert_eq!(a.header("x-admin"), None, "{name:?}: {a:?}");
        assert_eq!(a.header("x-denylist-subject"), Some("alice"));
    }

    // Two Authorization headers: which one a proxy and an app would each use is
    // anyone's guess, so neither is accepted.
    let a = get(
        &client,
        &format!("{base}/"),
        &[
            ("authorization", &bearer(&token)),
            ("authorization", &bearer(&token)),
        ],
    )
    .await;
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(a.header("x-denylist-reason"), Some("REASON_MALFORMED"));
    let body: Value = serde_json::from_str(&a.body).expect("a JSON body");
    assert_eq!(body["error"], "REASON_MALFORMED");
}

/// The ingress-nginx and Traefik examples point at the address the example sidecar
/// config listens on, and copy the headers it answers with.
#[test]
fn the_ingress_examples_agree_with_the_sidecar_config_they_ship_with() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let read =
        |p: &str| std::fs::read_to_string(deploy.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let text = read("ingress-nginx/sidecar-config.toml");
    let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("sidecar-config.toml: {e}"));
    config
        .validate()
        .unwrap_or_else(|e| panic!("sidecar-config.toml: {e}"));
    let fa = &config.forward_auth;
    assert!(fa.enabled);
    let url = format!("http://{}/", fa.listen.expect("a TCP listener"));
    let ingress = read("ingress-nginx/ingress.yaml");
    let traefik = read("traefik/middleware.yaml");
    assert!(ingress.contains(&format!("auth-url: \"{url}\"")), "{url}");
    assert!(traefik.contains(&format!("address: \"{url}\"")), "{url}");
    for header in fa.forward_claims.values() {
        let header = header.to_ascii_lowercase();
        assert!(
            ingress.to_ascii_lowercase().contains(&header),
            "ingress.yaml copies {header}"
        );
        assert!(
            traefik
                .to_ascii_lowercase()
                .contains(&format!("- \"{header}\"")),
            "middleware.yaml copies {header}"
        );
    }
}
