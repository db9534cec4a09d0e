//! The `denylist-sidecar` executable: configuration errors stop it at start with a
//! message naming the field and the file; SIGTERM drains it, exits 0 and removes the
//! socket file.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use denylist_proto::pb;
use tokio::process::{Child, Command};

use crate::harness::{EVENTUALLY, Issuer, STEP, TestKey, connect, toml_str, within};

const BIN: &str = env!("CARGO_BIN_EXE_denylist-sidecar");

/// The sidecar command with a config file, the gRPC socket in `dir`, TCP and admin off,
/// and no `DENYLIST_*` variables leaking in from the environment.
fn sidecar_command(config: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DENYLIST_") || key == "POD_NAME" {
            cmd.env_remove(key);
        }
    }
    cmd.arg("--config")
        .arg(config)
        .arg("--socket")
        .arg(dir.join("sidecar.sock"))
        .args(["--tcp", "", "--admin", ""])
        .env("NO_COLOR", "1")
        .env("DENYLIST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Removes ANSI colour sequences, in case the log writer adds them anyway.
fn plain(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A config with one PEM issuer whose `[[issuers]]` lines are `issuer_lines`, and a
/// revocations file, written into `dir`. Returns the config path.
fn write_config(dir: &Path, issuer_lines: &str, pem_path: &Path) -> std::path::PathBuf {
    let revocations = dir.join("revocations.jsonl");
    std::fs::write(&revocations, b"").expect("write revocations");
    let config = dir.join("sidecar.toml");
    let text = format!(
        "shutdown_grace = \"3s\"\n\n[denylist]\nfile = {}\n\n[[issuers]]\nissuer = \"https://issuer.example\"\n{issuer_lines}\n[issuers.keys]\npem_files = [{{ path = {}, kid = \"k1\" }}]\n",
        toml_str(&revocations.to_string_lossy()),
        toml_str(&pem_path.to_string_lossy()),
    );
    std::fs::write(&config, text).expect("write config");
    config
}

/// Runs the binary to completion (bounded) and returns its output.
async fn run_to_exit(config: &Path, dir: &Path) -> Output {
    let child = sidecar_command(config, dir)
        .spawn()
        .expect("spawn denylist-sidecar");
    within("denylist-sidecar to exit", child.wait_with_output())
        .await
        .expect("wait for denylist-sidecar")
}

/// Asserts the sidecar exited non-zero; returns what it wrote to stderr.
fn exited_nonzero(out: &Output) -> String {
    let stderr = plain(&out.stderr);
    assert!(
        !out.status.success(),
        "must exit non-zero; stderr:\n{stderr}"
    );
    stderr
}

/// Asserts no socket was bound in `dir`: the start failed before listening.
fn assert_nothing_bound(dir: &Path) {
    assert!(!dir.join("sidecar.sock").exists(), "nothing was bound");
}

fn ec_pem(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("k1.pub.pem");
    std::fs::write(&path, TestKey::ec_p256(Some("k1")).public_pem()).expect("write PEM");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_hmac_and_public_key_algorithms_exit_nonzero_naming_field_and_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pem = ec_pem(dir.path());
    let config = write_config(dir.path(), "algorithms = [\"ES256\", \"HS256\"]", &pem);
    let out = run_to_exit(&config, dir.path()).await;
    let stderr = exited_nonzero(&out);
    assert!(
        stderr.contains("issuers[0].algorithms"),
        "stderr names the field:\n{stderr}"
    );
    assert!(
        stderr.contains(&config.to_string_lossy().into_owned()),
        "stderr names the file:\n{stderr}"
    );
    assert_nothing_bound(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misspelt_field_exits_nonzero_naming_field_and_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pem = ec_pem(dir.path());
    let config = write_config(
        dir.path(),
        "algorithms = [\"ES256\"]\nmax_lifetme = \"1h\"",
        &pem,
    );
    let out = run_to_exit(&config, dir.path()).await;
    let stderr = exited_nonzero(&out);
    assert!(
        stderr.contains("max_lifetme"),
        "stderr names the field:\n{stderr}"
    );
    assert!(
        stderr.contains(&config.to_string_lossy().into_owned()),
        "stderr names the file:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_key_file_exits_nonzero_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-key.pem");
    let config = write_config(dir.path(), "algorithms = [\"ES256\"]", &missing);
    let out = run_to_exit(&config, dir.path()).await;
    let stderr = exited_nonzero(&out);
    assert!(
        stderr.contains(&missing.to_string_lossy().into_owned()),
        "stderr names the key file:\n{stderr}"
    );
    assert_nothing_bound(dir.path());
}

/// RFC 7518 §3.2: an HMAC secret must be at least as long as the hash output, so a
/// 40-byte secret cannot serve an issuer that allows HS512.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_secret_too_short_for_an_allowed_algorithm_exits_nonzero_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("forty.secret");
    std::fs::write(&secret, [0x5a; 40]).expect("write secret");
    let revocations = dir.path().join("revocations.jsonl");
    std::fs::write(&revocations, b"").expect("write revocations");
    let config = dir.path().join("sidecar.toml");
    let text = format!(
        "[denylist]\nfile = {}\n\n[[issuers]]\nissuer = \"https://issuer.example\"\nalgorithms = [\"HS256\", \"HS512\"]\n[issuers.keys]\nhmac_secret_files = [{{ path = {}, kid = \"h1\" }}]\n",
        toml_str(&revocations.to_string_lossy()),
        toml_str(&secret.to_string_lossy()),
    );
    std::fs::write(&config, text).expect("write config");
    let out = run_to_exit(&config, dir.path()).await;
    let stderr = exited_nonzero(&out);
    for part in [
        secret.to_string_lossy().as_ref(),
        "40 bytes",
        "HS512",
        "at least 64",
    ] {
        assert!(stderr.contains(part), "stderr lacks {part:?}:\n{stderr}");
    }
    assert_nothing_bound(dir.path());
}

/// A mistyped `--socket` naming an ordinary file must not delete it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_path_holding_an_ordinary_file_is_refused_and_the_file_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pem = ec_pem(dir.path());
    let config = write_config(dir.path(), "algorithms = [\"ES256\"]", &pem);
    let precious = dir.path().join("sidecar.sock");
    std::fs::write(&precious, b"not a socket").expect("write file");
    let out = run_to_exit(&config, dir.path()).await;
    let stderr = exited_nonzero(&out);
    assert!(
        stderr.contains("not a socket"),
        "stderr says why:\n{stderr}"
    );
    assert_eq!(
        std::fs::read(&precious).expect("the file is still there"),
        b"not a socket"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_accepts_a_valid_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pem = ec_pem(dir.path());
    let config = write_config(dir.path(), "algorithms = [\"ES256\"]", &pem);
    let mut cmd = sidecar_command(&config, dir.path());
    cmd.arg("--check-config");
    let out = within("--check-config", cmd.output())
        .await
        .expect("run --check-config");
    assert!(out.status.success(), "stderr:\n{}", plain(&out.stderr));
    assert!(
        !dir.path().join("sidecar.sock").exists(),
        "--check-config binds nothing"
    );
}

/// The example configurations the docs point newcomers at are valid as shipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_configs_pass_check_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for example in [
        "examples/standalone/config.toml",
        "examples/fleet/config.toml",
    ] {
        let text = std::fs::read_to_string(root.join(example)).expect("read the example");
        // The fleet example's JWKS lives on the issuer's host; --check-config tries a
        // fetch (a failure is only a warning), so point it at a closed loopback port
        // rather than the network.
        let text = text.replace(
            "https://auth.example.com/.well-known/jwks.json",
            "http://127.0.0.1:9/jwks.json",
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, text).expect("write config");
        let mut cmd = sidecar_command(&config, dir.path());
        // Relative key paths in the examples are relative to the repository root.
        cmd.current_dir(&root).arg("--check-config");
        if example.contains("standalone") {
            // The example's revocations file lives where the demo creates it.
            let file = dir.path().join("revocations.jsonl");
            std::fs::write(&file, b"").expect("write revocations");
            cmd.arg("--revocations-file").arg(file);
        }
        let out = within("--check-config", cmd.output())
            .await
            .expect("run --check-config");
        assert!(
            out.status.success(),
            "{example} is valid; stderr:\n{}",
            plain(&out.stderr)
        );
    }
}

/// Polls until the sidecar answers `Status` ready on `socket`.
async fn wait_until_serving(socket: &Path, child: &mut Child) {
    let poll = async {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            if let Ok(Some(status)) = child.try_wait() {
                panic!("denylist-sidecar exited early with {status}");
            }
            let Ok(Ok(channel)) = tokio::time::timeout(STEP, connect(socket)).await else {
                continue;
            };
            let mut client = pb::verifier_client::VerifierClient::new(channel);
            if let Ok(Ok(r)) = tokio::time::timeout(STEP, client.status(pb::StatusRequest {})).await
                && r.into_inner().ready
            {
                return;
            }
        }
    };
    tokio::time::timeout(EVENTUALLY, poll)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "denylist-sidecar did not serve on {} within {EVENTUALLY:?}",
                socket.display()
            )
        });
}

/// A sidecar binary serving one ES256 issuer from a PEM file in a new temp dir, with
/// `shutdown_grace` as given; returns once it answers `Status` ready.
pub(crate) struct Running {
    /// Holds the config, key and socket until the test ends.
    _dir: tempfile::TempDir,
    issuer: Issuer,
    pub(crate) socket: std::path::PathBuf,
    child: Child,
}

pub(crate) async fn start_es256(grace: &str) -> Running {
    let dir = tempfile::tempdir().expect("temp dir");
    let issuer = Issuer::new(
        "https://issuer.example",
        "ES256",
        TestKey::ec_p256(Some("k1")),
    );
    let pem = dir.path().join("k1.pub.pem");
    std::fs::write(&pem, issuer.key.public_pem()).expect("write PEM");
    let config = write_config(
        dir.path(),
        "algorithms = [\"ES256\"]\nrequire_jti = false",
        &pem,
    );
    let text = std::fs::read_to_string(&config).expect("read config");
    let text = text.replace(
        "shutdown_grace = \"3s\"",
        &format!("shutdown_grace = \"{grace}\""),
    );
    std::fs::write(&config, text).expect("write config");
    let socket = dir.path().join("sidecar.sock");
    let mut child = sidecar_command(&config, dir.path())
        .spawn()
        .expect("spawn denylist-sidecar");
    wait_until_serving(&socket, &mut child).await;
    Running {
        _dir: dir,
        issuer,
        socket,
        child,
    }
}

impl Running {
    async fn client(&self) -> pb::verifier_client::VerifierClient<tonic::transport::Channel> {
        let channel = within("connect", connect(&self.socket))
            .await
            .expect("connect");
        pb::verifier_client::VerifierClient::new(channel)
    }

    /// Sends SIGTERM and waits (bounded by `within`) for the exit; the status and
    /// what the sidecar wrote to stderr.
    pub(crate) async fn terminate(&mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().expect("running child has a pid");
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(kill.success(), "kill -TERM {pid}");
        let status = within("denylist-sidecar to exit after SIGTERM", self.child.wait())
            .await
            .expect("wait for denylist-sidecar");
        let mut stderr = Vec::new();
        if let Some(mut err) = self.child.stderr.take() {
            use tokio::io::AsyncReadExt as _;
            let _ = within("read stderr", err.read_to_end(&mut stderr)).await;
        }
        (status, plain(&stderr))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_and_removes_the_socket() {
    let mut sidecar = start_es256("3s").await;

    // It verifies with the configured key (real clock: a token valid now).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let mut client = sidecar.client().await;
    let token = sidecar.issuer.token(&sidecar.issuer.claims(now));
    let r = within("Verify", client.verify(pb::VerifyRequest { token }))
        .await
        .expect("Verify")
        .into_inner();
    assert!(r.valid, "a good token through the binary: {:?}", r.detail);
    drop(client);

    // shutdown_grace is 3 s; `terminate` allows the drain plus start-up noise, no more.
    let (status, stderr) = sidecar.terminate().await;
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}; stderr:\n{stderr}"
    );
    assert!(
        !sidecar.socket.exists(),
        "the socket file is removed on shutdown"
    );
}

/// An open Watch stream must not hold the drain open: it is told that the sidecar is
/// stopping and closed, so a terminating pod goes away at once, not after its grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_watch_streams_without_waiting_out_the_grace() {
    // A grace far beyond what `terminate` waits: waiting it out fails the test.
    let mut sidecar = start_es256("120s").await;
    let mut client = sidecar.client().await;
    let mut notices = within(
        "Watch starts",
        client.watch(pb::WatchRequest {
            issuer: sidecar.issuer.iss.clone(),
            subject: "alice".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("Watch accepts an issuer and subject")
    .into_inner();

    let (status, stderr) = sidecar.terminate().await;
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}; stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("did not finish within the grace period"),
        "the drain waited for the Watch stream:\n{stderr}"
    );
    match within("the stream ends", futures::StreamExt::next(&mut notices)).await {
        Some(Err(status)) => {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            assert!(
                status.message().contains("shutting down"),
                "the watcher is told why: {status:?}"
            );
        }
        other => panic!("the Watch stream should end with UNAVAILABLE, got {other:?}"),
    }
}
