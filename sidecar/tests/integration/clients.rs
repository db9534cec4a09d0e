//! Real gRPC clients against the `denylist-sidecar` binary over its Unix socket:
//! Python `grpcio` with its default channel (`grpc.insecure_channel("unix:PATH")`, which
//! sends the percent-encoded socket path as `:authority`), Python with the raw socket path
//! as `:authority` (what Java and Swift send), Node `@grpc/grpc-js` with its default
//! channel (`localhost`), and the Rust client of `denylist-proto`.
//!
//! The Python and Node clients are the runnable examples (`examples/python`,
//! `examples/node`), each run as its own process; they print one JSON line per answer
//! (the protobuf JSON mapping with `.proto` field names). The Rust client runs in the
//! test process — itself a process apart from the sidecar — and its answers are put into
//! the same lines, so one scenario checks all four:
//!
//! - `Verify`: a valid token is `REASON_OK` with its claims (the payload `Struct`
//!   included); a token of a revoked subject is `REASON_REVOKED` naming the rule; garbage
//!   is `REASON_MALFORMED`.
//! - `Check`: the revoked subject is revoked, another is not.
//! - `Watch`: the stream opens on a valid token, then its subject is revoked by appending
//!   to the standalone revocations file; the client prints the `RevocationNotice` and the
//!   stream ends.
//!
//! The interpreters and packages come from `scripts/python-grpc.sh` and
//! `scripts/node-grpc.sh`. When they cannot be installed the test fails with the script's
//! message: it never skips.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use denylist_proto::pb::{self, Reason, RuleKind, verifier_client::VerifierClient};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tonic::Streaming;

use crate::harness::{EVENTUALLY, Issuer, STEP, TestKey, connect, toml_str, within};

const BIN: &str = env!("CARGO_BIN_EXE_denylist-sidecar");
const ISS: &str = "https://clients.example";

/// Bound on installing a client's tooling (a first `pip install` or `npm ci` downloads
/// packages); under nextest's 300 s limit for the whole test.
const INSTALL: Duration = Duration::from_secs(240);

/// Bound on one client process from start to exit: it starts an interpreter and loads
/// the protos (Python compiles them) before its call, on a machine busy with builds.
const CLIENT_RUN: Duration = Duration::from_secs(60);

/// The repository root: fixtures are found from the manifest dir, never the working dir.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the sidecar crate sits in the workspace root")
        .to_owned()
}

fn unix_now() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since.as_secs()).expect("seconds fit in i64")
}

/// A `subject` revocation as a line of the standalone revocations file; its cut-off is
/// its creation time (`now`), so tokens issued before it match.
fn revoke_subject(event_id: &str, subject: &str, now: i64) -> Value {
    json!({
        "event_id": event_id,
        "action": "revoke",
        "kind": "subject",
        "issuer": ISS,
        "targets": [subject],
        "reason": "account takeover",
        "actor": "itest",
        "created_at_ms": now * 1000,
    })
}

// ---------------------------------------------------------------------------------------
// The sidecar binary
// ---------------------------------------------------------------------------------------

/// The `denylist-sidecar` executable in standalone mode, serving one issuer on a Unix
/// socket in its own temp dir (TCP and admin off, so parallel tests never collide).
/// Killed when dropped.
struct BinarySidecar {
    socket: PathBuf,
    revocations: PathBuf,
    log: PathBuf,
    child: Child,
    // Dropped after the child is killed (fields drop in order).
    _dir: TempDir,
}

impl BinarySidecar {
    /// Starts the binary with `issuer` and `revocations` as the first lines of its
    /// revocations file; returns once it answers `Status` ready.
    async fn start(issuer: &Issuer, revocations: &[Value]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("denylist-clients-")
            .tempdir()
            .expect("temp dir");
        let socket = dir.path().join("sidecar.sock");
        let file = dir.path().join("revocations.jsonl");
        let lines: String = revocations.iter().map(|e| format!("{e}\n")).collect();
        std::fs::write(&file, lines).expect("write the revocations file");
        let config = dir.path().join("sidecar.toml");
        let text = format!(
            "name = \"clients-itest\"\nshutdown_grace = \"3s\"\n\n\
             [denylist]\nfile = {file}\nfile_poll_interval = \"20ms\"\n\n{issuer}",
            file = toml_str(&file.to_string_lossy()),
            issuer = issuer.toml(dir.path(), ""),
        );
        std::fs::write(&config, text).expect("write the config");
        // The log goes to a file, not a pipe nobody reads while the test runs (a full
        // pipe would block the sidecar); failures show its tail.
        let log = dir.path().join("sidecar.log");
        let log_file = File::create(&log).expect("create the log file");
        let mut cmd = Command::new(BIN);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("DENYLIST_") || key == "POD_NAME" {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(&socket)
            .args(["--tcp", "", "--admin", ""])
            .env("NO_COLOR", "1")
            .env("DENYLIST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone the log file"))
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn denylist-sidecar");
        let mut sidecar = Self {
            socket,
            revocations: file,
            log,
            child,
            _dir: dir,
        };
        sidecar.wait_until_serving().await;
        sidecar
    }

    /// Polls `Status` until ready, for at most [`EVENTUALLY`].
    async fn wait_until_serving(&mut self) {
        let poll = async {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!(
                        "denylist-sidecar exited early with {status}; its log:\n{}",
                        self.log_text()
                    );
                }
                let Ok(Ok(channel)) = tokio::time::timeout(STEP, connect(&self.socket)).await
                else {
                    continue;
                };
                let mut client = VerifierClient::new(channel);
                if let Ok(Ok(r)) =
                    tokio::time::timeout(STEP, client.status(pb::StatusRequest {})).await
                    && r.into_inner().ready
                {
                    return;
                }
            }
        };
        if tokio::time::timeout(EVENTUALLY, poll).await.is_err() {
            panic!(
                "denylist-sidecar did not serve on {} within {EVENTUALLY:?}; its log:\n{}",
                self.socket.display(),
                self.log_text()
            );
        }
    }

    /// Appends `event` to the revocations file as one line, in one write, as an operator's
    /// `echo >>` would. (A poll that reads a half-written line rejects the file and
    /// reads it again at the next change.)
    fn append_revocation(&self, event: &Value) {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.revocations)
            .expect("open the revocations file");
        file.write_all(format!("{event}\n").as_bytes())
            .expect("append to the revocations file");
    }

    /// What the sidecar has logged so far.
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("<cannot read log: {e}>"))
    }
}

// ---------------------------------------------------------------------------------------
// The clients
// ---------------------------------------------------------------------------------------

/// A client of the sidecar: an example program of another language, or the Rust client.
enum Client {
    /// A program run once per command: `program args.. COMMAND ..`.
    Process {
        /// For messages.
        name: &'static str,
        program: PathBuf,
        /// Before the command: the script and its connection options.
        args: Vec<OsString>,
        env: Vec<(&'static str, OsString)>,
    },
    /// `denylist_proto`'s generated client, in this process.
    Rust,
}

/// Runs a tooling script (`scripts/python-grpc.sh`, `scripts/node-grpc.sh`) and returns
/// the path it prints. Its failure fails the test with its message: a missing Python or
/// Node must be seen, never skipped.
async fn tool_path(script: &str) -> PathBuf {
    let path = repo_root().join("scripts").join(script);
    let run = Command::new("bash")
        .arg(&path)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(INSTALL, run)
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {INSTALL:?}"))
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} could not provide the client's tooling ({}):\n{stderr}",
        out.status
    );
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        !printed.is_empty() && Path::new(&printed).exists(),
        "{script} printed {printed:?}, which is not a path; stderr:\n{stderr}"
    );
    PathBuf::from(printed)
}

impl Client {
    /// The Python example with grpcio's default channel, or with `authority` as
    /// `grpc.default_authority`.
    async fn python(sidecar: &BinarySidecar, authority: Option<&Path>) -> Self {
        let python = tool_path("python-grpc.sh").await;
        let mut args: Vec<OsString> = vec![
            repo_root()
                .join("examples/python/denylist_client.py")
                .into(),
            "--socket".into(),
            sidecar.socket.clone().into(),
        ];
        if let Some(authority) = authority {
            args.extend(["--authority".into(), authority.into()]);
        }
        Self::Process {
            name: if authority.is_some() {
                "python (raw-path authority)"
            } else {
                "python (default channel)"
            },
            program: python,
            args,
            env: Vec::new(),
        }
    }

    /// The Node example with grpc-js's default channel.
    async fn node(sidecar: &BinarySidecar) -> Self {
        let node_modules = tool_path("node-grpc.sh").await;
        Self::Process {
            name: "node (grpc-js)",
            program: "node".into(),
            args: vec![
                repo_root().join("examples/node/denylist_client.js").into(),
                "--socket".into(),
                sidecar.socket.clone().into(),
            ],
            // node-grpc.sh may name a node_modules other than the example's own.
            env: vec![("NODE_PATH", node_modules.into())],
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Process { name, .. } => name,
            Self::Rust => "rust",
        }
    }

    /// The command for one run of a process client.
    fn command(&self, command: &[&str]) -> Command {
        let Self::Process {
            program, args, env, ..
        } = self
        else {
            unreachable!("only process clients have a command")
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .args(command)
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .env_remove("DENYLIST_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `command` (`verify ..`, `check ..`) to completion.
    async fn run(&self, sidecar: &BinarySidecar, command: &[&str]) -> Outcome {
        let what = format!("{} {}", self.name(), command.join(" "));
        if let Self::Rust = self {
            return rust_run(sidecar, command, what).await;
        }
        let child = self
            .command(command)
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
        let out = tokio::time::timeout(CLIENT_RUN, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{what}: did not exit within {CLIENT_RUN:?}"))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        Outcome {
            lines: stdout.lines().map(|l| parse_line(&what, l)).collect(),
            exit: Some(out.status.code().unwrap_or(-1)),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            what,
        }
    }

    /// Starts `watch TOKEN`; the returned stream yields the client's lines.
    async fn watch(&self, sidecar: &BinarySidecar, token: &str) -> Watching {
        let what = format!("{} watch", self.name());
        if let Self::Rust = self {
            let mut client = rust_client(sidecar).await;
            let request = pb::WatchRequest {
                token: token.to_owned(),
                ..Default::default()
            };
            let opened = within("Watch starts", client.watch(request)).await;
            let mut pending = VecDeque::new();
            let stream = match opened {
                // Like the examples: "open" once the sidecar has accepted the stream.
                Ok(response) => {
                    pending.push_back(json!({"rpc": "Watch", "open": true}));
                    Some(response.into_inner())
                }
                Err(status) => {
                    pending.push_back(error_line("Watch", &status));
                    None
                }
            };
            return Watching::Rust {
                pending,
                stream,
                what,
            };
        }
        let mut child = self
            .command(&["watch", token])
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        Watching::Process {
            child,
            lines: BufReader::new(stdout).lines(),
            what,
        }
    }
}

/// What a client printed for one command.
#[derive(Debug)]
struct Outcome {
    /// Its JSON lines.
    lines: Vec<Value>,
    /// Its exit status (`None` for the in-process Rust client).
    exit: Option<i32>,
    stderr: String,
    what: String,
}

impl Outcome {
    /// Asserts the exit status (0 yes, 2 "invalid or revoked", 1 failed) and the count of
    /// lines; a process client that failed shows what it wrote to stderr.
    fn expect(&self, exit: i32, lines: usize) -> &[Value] {
        if let Some(code) = self.exit {
            assert_eq!(
                code, exit,
                "{}: exit status; stdout lines: {:#?}\nstderr:\n{}",
                self.what, self.lines, self.stderr
            );
        }
        assert_eq!(
            self.lines.len(),
            lines,
            "{}: lines printed: {:#?}\nstderr:\n{}",
            self.what,
            self.lines,
            self.stderr
        );
        &self.lines
    }
}

fn parse_line(what: &str, line: &str) -> Value {
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{what}: printed a line that is not JSON ({e}): {line:?}"))
}

/// A `Watch` stream being read.
enum Watching {
    Process {
        child: Child,
        lines: Lines<BufReader<ChildStdout>>,
        what: String,
    },
    Rust {
        /// Lines ready to hand out before the stream is read again.
        pending: VecDeque<Value>,
        /// `None` once it has ended.
        stream: Option<Streaming<pb::RevocationNotice>>,
        what: String,
    },
}

impl Watching {
    /// The next line the client prints, waiting at most [`EVENTUALLY`] (a revocation
    /// reaches the sidecar by its file poll).
    async fn next_line(&mut self, waiting_for: &str) -> Value {
        match self {
            Self::Process { child, lines, what } => {
                let next = tokio::time::timeout(EVENTUALLY, lines.next_line()).await;
                match next {
                    Ok(Ok(Some(line))) => parse_line(what, &line),
                    Ok(Ok(None)) => {
                        let status = within("the client to exit", child.wait()).await.ok();
                        let stderr = read_stderr(child).await;
                        panic!(
                            "{what}: ended (status {status:?}) while waiting for {waiting_for}; stderr:\n{stderr}"
                        )
                    }
                    Ok(Err(e)) => panic!("{what}: reading stdout: {e}"),
                    Err(_) => {
                        let _ = child.start_kill();
                        let stderr = read_stderr(child).await;
                        panic!(
                            "{what}: no line within {EVENTUALLY:?} while waiting for {waiting_for}; stderr:\n{stderr}"
                        )
                    }
                }
            }
            Self::Rust {
                pending,
                stream,
                what,
            } => {
                if let Some(line) = pending.pop_front() {
                    return line;
                }
                let Some(notices) = stream.as_mut() else {
                    panic!("{what}: the stream has ended; waiting for {waiting_for}")
                };
                let next = tokio::time::timeout(EVENTUALLY, notices.next())
                    .await
                    .unwrap_or_else(|_| {
                        panic!(
                            "{what}: nothing within {EVENTUALLY:?} while waiting for {waiting_for}"
                        )
                    });
                match next {
                    Some(Ok(notice)) => json!({"rpc": "Watch", "response": notice_json(&notice)}),
                    Some(Err(status)) => {
                        *stream = None;
                        error_line("Watch", &status)
                    }
                    None => {
                        *stream = None;
                        json!({"rpc": "Watch", "end": "OK"})
                    }
                }
            }
        }
    }

    /// Waits (bounded) for a process client to exit; asserts its status and that it
    /// printed nothing more.
    async fn expect_exit(self, exit: i32) {
        if let Self::Process {
            mut child,
            mut lines,
            what,
        } = self
        {
            let rest = within("the client's stdout to close", async {
                let mut rest = Vec::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    rest.push(line);
                }
                rest
            })
            .await;
            let status = within("the client to exit", child.wait())
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let stderr = read_stderr(&mut child).await;
            assert_eq!(
                status.code(),
                Some(exit),
                "{what}: exit status; stderr:\n{stderr}"
            );
            assert!(rest.is_empty(), "{what}: printed more: {rest:?}");
        }
    }
}

async fn read_stderr(child: &mut Child) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut bytes = Vec::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = tokio::time::timeout(STEP, err.read_to_end(&mut bytes)).await;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

// ---------------------------------------------------------------------------------------
// The Rust client, printing what the examples print
// ---------------------------------------------------------------------------------------

async fn rust_client(sidecar: &BinarySidecar) -> VerifierClient<tonic::transport::Channel> {
    let channel = within("connect", connect(&sidecar.socket))
        .await
        .expect("connect to the sidecar's socket");
    VerifierClient::new(channel)
}

/// `verify TOKEN..` or `check --issuer ISS --subject SUB` with the Rust client.
async fn rust_run(sidecar: &BinarySidecar, command: &[&str], what: String) -> Outcome {
    let mut client = rust_client(sidecar).await;
    let mut lines = Vec::new();
    match command {
        ["verify", tokens @ ..] => {
            for token in tokens {
                let request = pb::VerifyRequest {
                    token: (*token).to_owned(),
                };
                lines.push(match within("Verify", client.verify(request)).await {
                    Ok(r) => json!({"rpc": "Verify", "response": verify_json(r.get_ref())}),
                    Err(status) => error_line("Verify", &status),
                });
            }
        }
        ["check", "--issuer", issuer, "--subject", subject] => {
            let request = pb::CheckRequest {
                issuer: (*issuer).to_owned(),
                subject: (*subject).to_owned(),
                ..Default::default()
            };
            lines.push(match within("Check", client.check(request)).await {
                Ok(r) => json!({"rpc": "Check", "response": check_json(r.get_ref())}),
                Err(status) => error_line("Check", &status),
            });
        }
        other => panic!("test bug: the Rust client has no command {other:?}"),
    }
    Outcome {
        lines,
        exit: None,
        stderr: String::new(),
        what,
    }
}

fn error_line(rpc: &str, status: &tonic::Status) -> Value {
    json!({"rpc": rpc, "error": {"code": format!("{:?}", status.code()), "message": status.message()}})
}

// The protobuf JSON mapping, as the examples print it: .proto field names, 64-bit
// integers as strings, enums by name, fields without presence always shown.

fn reason_name(code: i32) -> &'static str {
    Reason::try_from(code).map_or("<unknown reason>", |r| r.as_str_name())
}

fn kind_name(code: i32) -> &'static str {
    RuleKind::try_from(code).map_or("<unknown kind>", |k| k.as_str_name())
}

fn verify_json(r: &pb::VerifyResponse) -> Value {
    let mut out = json!({
        "valid": r.valid,
        "reason": reason_name(r.reason),
        "detail": r.detail,
        "denylist_sequence": r.denylist_sequence.to_string(),
        "denylist_age_ms": r.denylist_age_ms.to_string(),
        "stale": r.stale,
    });
    if let Some(c) = &r.claims {
        let mut claims = json!({
            "iss": c.iss, "sub": c.sub, "aud": c.aud, "exp": c.exp.to_string(), "jti": c.jti,
            "kid": c.kid, "sid": c.sid, "alg": c.alg,
        });
        if let Some(iat) = c.iat {
            claims["iat"] = json!(iat.to_string());
        }
        if let Some(nbf) = c.nbf {
            claims["nbf"] = json!(nbf.to_string());
        }
        if let Some(payload) = &c.payload {
            claims["payload"] = struct_json(payload);
        }
        out["claims"] = claims;
    }
    if let Some(rule) = &r.revocation {
        out["revocation"] = revocation_json(rule);
    }
    out
}

fn check_json(r: &pb::CheckResponse) -> Value {
    let mut out = json!({
        "revoked": r.revoked,
        "denylist_sequence": r.denylist_sequence.to_string(),
        "denylist_age_ms": r.denylist_age_ms.to_string(),
        "stale": r.stale,
    });
    if let Some(rule) = &r.revocation {
        out["revocation"] = revocation_json(rule);
    }
    out
}

fn notice_json(n: &pb::RevocationNotice) -> Value {
    let mut out = json!({"denylist_sequence": n.denylist_sequence.to_string()});
    if let Some(rule) = &n.revocation {
        out["revocation"] = revocation_json(rule);
    }
    out
}

fn revocation_json(r: &pb::Revocation) -> Value {
    json!({
        "kind": kind_name(r.kind), "event_id": r.event_id, "reason": r.reason,
        "issuer": r.issuer, "target": r.target, "cutoff": r.cutoff.to_string(),
        "actor": r.actor, "created_at_ms": r.created_at_ms.to_string(),
    })
}

fn struct_json(s: &prost_types::Struct) -> Value {
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_json(v)))
            .collect(),
    )
}

fn value_json(v: &prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(n)) => json!(n),
        Some(Kind::StringValue(s)) => json!(s),
        Some(Kind::BoolValue(b)) => json!(b),
        Some(Kind::StructValue(s)) => struct_json(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(value_json).collect()),
    }
}

// ---------------------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------------------

/// `line[pointer]`, failing with the whole line when absent.
fn at<'a>(line: &'a Value, pointer: &str) -> &'a Value {
    line.pointer(pointer)
        .unwrap_or_else(|| panic!("no {pointer} in {line:#}"))
}

/// A 64-bit integer of the JSON mapping: a string (or a number, leniently).
fn int_at(line: &Value, pointer: &str) -> i64 {
    let v = at(line, pointer);
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_i64())
        .unwrap_or_else(|| panic!("{pointer} is not an integer in {line:#}"))
}

/// Which client the scenario runs.
enum Which {
    PythonDefault,
    PythonRawAuthority,
    Node,
    Rust,
}

/// Verify, Check and Watch through `kind`'s client against the real sidecar binary.
async fn verify_check_and_watch(which: Which) {
    let issuer = Issuer::new(ISS, "ES256", TestKey::ec_p256(Some("k1")));
    // Issued before anything is revoked: every cut-off below is at or after `now`.
    let now = unix_now();
    let alice_claims = {
        let mut c = issuer.claims(now - 10);
        c["sub"] = json!("alice");
        c
    };
    let alice = issuer.token(&alice_claims);
    let mallory = {
        let mut c = issuer.claims(now - 10);
        c["sub"] = json!("mallory");
        issuer.token(&c)
    };
    let sidecar =
        BinarySidecar::start(&issuer, &[revoke_subject("mallory-out", "mallory", now)]).await;
    let client = match which {
        Which::PythonDefault => Client::python(&sidecar, None).await,
        Which::PythonRawAuthority => Client::python(&sidecar, Some(&sidecar.socket)).await,
        Which::Node => Client::node(&sidecar).await,
        Which::Rust => Client::Rust,
    };

    // Verify: valid, revoked, malformed — each a normal answer, never a gRPC error.
    let out = client
        .run(&sidecar, &["verify", &alice, &mallory, "not.a.token"])
        .await;
    let lines = out.expect(2, 3);
    let [valid, revoked, malformed] = lines else {
        unreachable!("three lines")
    };
    for line in lines {
        assert_eq!(at(line, "/rpc"), "Verify", "{line:#}");
    }
    assert_eq!(at(valid, "/response/valid"), true, "{valid:#}");
    assert_eq!(at(valid, "/response/reason"), "REASON_OK", "{valid:#}");
    assert_eq!(at(valid, "/response/claims/iss"), ISS);
    assert_eq!(at(valid, "/response/claims/sub"), "alice");
    assert_eq!(at(valid, "/response/claims/jti"), &alice_claims["jti"]);
    assert_eq!(at(valid, "/response/claims/kid"), "k1");
    assert_eq!(int_at(valid, "/response/claims/iat"), now - 10);
    // The whole payload comes back as a google.protobuf.Struct.
    assert_eq!(at(valid, "/response/claims/payload/sub"), "alice");
    assert_eq!(at(valid, "/response/claims/payload/aud"), "api");
    assert!(
        int_at(valid, "/response/denylist_sequence") >= 1,
        "{valid:#}"
    );

    assert_eq!(at(revoked, "/response/valid"), false, "{revoked:#}");
    assert_eq!(
        at(revoked, "/response/reason"),
        "REASON_REVOKED",
        "{revoked:#}"
    );
    assert_eq!(at(revoked, "/response/revocation/event_id"), "mallory-out");
    assert_eq!(
        at(revoked, "/response/revocation/kind"),
        "RULE_KIND_SUBJECT"
    );
    assert_eq!(at(revoked, "/response/revocation/target"), "mallory");

    assert_eq!(at(malformed, "/response/valid"), false, "{malformed:#}");
    assert_eq!(
        at(malformed, "/response/reason"),
        "REASON_MALFORMED",
        "{malformed:#}"
    );
    assert!(
        malformed.pointer("/response/claims").is_none(),
        "{malformed:#}"
    );

    // Check: the revoked subject, then one nobody revoked.
    let out = client
        .run(
            &sidecar,
            &["check", "--issuer", ISS, "--subject", "mallory"],
        )
        .await;
    let [line] = out.expect(2, 1) else {
        unreachable!("one line")
    };
    assert_eq!(at(line, "/rpc"), "Check", "{line:#}");
    assert_eq!(at(line, "/response/revoked"), true, "{line:#}");
    assert_eq!(at(line, "/response/revocation/event_id"), "mallory-out");
    let out = client
        .run(&sidecar, &["check", "--issuer", ISS, "--subject", "alice"])
        .await;
    let [line] = out.expect(0, 1) else {
        unreachable!("one line")
    };
    assert_eq!(at(line, "/response/revoked"), false, "{line:#}");
    assert!(line.pointer("/response/revocation").is_none(), "{line:#}");

    // Watch: open on alice's token, revoke alice, receive the notice, the stream ends.
    let mut watching = client.watch(&sidecar, &alice).await;
    let open = watching.next_line("the stream to open").await;
    assert_eq!(open, json!({"rpc": "Watch", "open": true}));
    sidecar.append_revocation(&revoke_subject("alice-out", "alice", unix_now()));
    let notice = watching.next_line("the RevocationNotice").await;
    assert_eq!(at(&notice, "/rpc"), "Watch", "{notice:#}");
    assert_eq!(
        at(&notice, "/response/revocation/event_id"),
        "alice-out",
        "{notice:#}"
    );
    assert_eq!(
        at(&notice, "/response/revocation/kind"),
        "RULE_KIND_SUBJECT"
    );
    assert_eq!(at(&notice, "/response/revocation/target"), "alice");
    assert_eq!(at(&notice, "/response/revocation/issuer"), ISS);
    // The first load of the file is generation 1; the appended line made another.
    assert!(
        int_at(&notice, "/response/denylist_sequence") >= 2,
        "{notice:#}"
    );
    let end = watching.next_line("the stream to end").await;
    assert_eq!(end, json!({"rpc": "Watch", "end": "OK"}));
    watching.expect_exit(0).await;
}

/// grpc C-core sends the percent-encoded socket path as `:authority`
/// (`tmp%2F...%2Fsidecar.sock`): the sidecar must serve it as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_default_channel_verifies_checks_and_watches() {
    verify_check_and_watch(Which::PythonDefault).await;
}

/// Java and Swift send the raw socket path (`/tmp/.../sidecar.sock`) as `:authority`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_with_the_raw_socket_path_as_authority_verifies_checks_and_watches() {
    verify_check_and_watch(Which::PythonRawAuthority).await;
}

/// grpc-js sends `localhost` as `:authority` for a Unix socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_grpc_js_verifies_checks_and_watches() {
    verify_check_and_watch(Which::Node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_verifies_checks_and_watches() {
    verify_check_and_watch(Which::Rust).await;
}
