//! The deploy/ tree: every overlay renders and validates against the Kubernetes schema
//! (scripts/validate-manifests.sh), the certificate script's output is usable by the
//! injector, and the example sidecar config is well-formed.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(command: &mut Command) -> (bool, String) {
    let output = command.output().expect("run script");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn every_overlay_renders_and_validates() {
    let (ok, report) = run(Command::new("bash").arg(repo().join("scripts/validate-manifests.sh")));
    assert!(ok, "scripts/validate-manifests.sh failed:\n{report}");
    for overlay in ["dev", "production"] {
        assert!(
            report.contains(&format!("ok   {overlay}: ")),
            "overlay {overlay} was not validated:\n{report}"
        );
    }
}

#[test]
fn an_invalid_manifest_fails_validation() {
    let copy = tempfile::tempdir().unwrap();
    let deploy = copy.path().join("deploy");
    let (ok, out) = run(Command::new("cp")
        .arg("-r")
        .arg(repo().join("deploy"))
        .arg(&deploy));
    assert!(ok, "{out}");
    let service = deploy.join("base/injector/service.yaml");
    let text = std::fs::read_to_string(&service).unwrap();
    std::fs::write(&service, text.replace("  selector:", "  selectr:")).unwrap();
    let (ok, report) = run(Command::new("bash")
        .arg(repo().join("scripts/validate-manifests.sh"))
        .env("DENYLIST_DEPLOY_DIR", &deploy)
        .env("K8S_VERSIONS", "1.33.0"));
    assert!(!ok, "a misspelt field must fail validation:\n{report}");
    assert!(report.contains("'selectr' was unexpected"), "{report}");
}

#[test]
fn generated_webhook_certificates_load_in_the_injector() {
    let out = tempfile::tempdir().unwrap();
    let (ok, log) = run(Command::new("bash")
        .arg(repo().join("deploy/scripts/gen-webhook-certs.sh"))
        .arg("--out")
        .arg(out.path()));
    assert!(ok, "gen-webhook-certs.sh failed:\n{log}");
    let resolver = denylist_injector::ReloadingCertResolver::load(
        &out.path().join("tls.crt"),
        &out.path().join("tls.key"),
    )
    .expect("the injector loads the generated pair");
    assert_eq!(resolver.current_chain().len(), 1);
    let patch = std::fs::read_to_string(out.path().join("webhook-ca-bundle.yaml")).unwrap();
    assert_eq!(
        patch.matches("/clientConfig/caBundle").count(),
        2,
        "{patch}"
    );

    // Running again rotates the serving certificate under the same CA.
    let ca = std::fs::read(out.path().join("ca.crt")).unwrap();
    let (ok, log) = run(Command::new("bash")
        .arg(repo().join("deploy/scripts/gen-webhook-certs.sh"))
        .arg("--out")
        .arg(out.path()));
    assert!(ok, "{log}");
    assert_eq!(
        std::fs::read(out.path().join("ca.crt")).unwrap(),
        ca,
        "the CA is kept"
    );
    assert!(
        resolver
            .reload_if_changed()
            .expect("the rotated pair loads"),
        "a new serving certificate"
    );
}

#[test]
fn example_sidecar_config_is_a_valid_sidecar_config() {
    let path = repo().join("deploy/examples/app/config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // The sidecar's own parser and validation: what the injected pod will run.
    let config = denylist_sidecar::config::Config::from_toml(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    config
        .validate()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        config.denylist.source,
        denylist_sidecar::config::DenylistSource::Nats
    );
    assert_eq!(
        config.listen.socket.as_deref(),
        Some(std::path::Path::new(denylist_injector::names::SOCKET_PATH))
    );
    assert_eq!(config.nats.stream, "DENYLIST");
    let seed = config.nats.nkey_seed_file.expect("an nkey seed file");
    assert!(
        seed.starts_with(denylist_injector::names::NATS_CREDENTIALS_DIR),
        "{} is in the mounted Secret",
        seed.display()
    );
    assert!(
        config.issuers[0]
            .keys
            .jwks_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"))
    );
}

/// The `denylistctl` arguments of the stream-init Job and the snapshot CronJob are ones
/// denylistctl accepts: run with them (NATS unreachable, secrets absent), it fails on
/// what is missing here (exit 1), never on its usage (exit 2).
#[test]
fn the_jobs_call_denylistctl_with_arguments_it_accepts() {
    let bin = denylistctl();
    for manifest in [
        "deploy/base/stream-init/job.yaml",
        "deploy/base/snapshot/cronjob.yaml",
    ] {
        let mut args = container_args(&repo().join(manifest));
        assert!(args.len() >= 2, "{manifest}: no args found");
        // The manifest's own timeout would make the unreachable NATS a long wait.
        args.retain(|a| !a.starts_with("--timeout="));
        let output = Command::new(&bin)
            .arg("--timeout=1s")
            .args(&args)
            .env(
                "DENYLIST_TRUSTED_PUBLISHERS",
                "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
            )
            .output()
            .expect("run denylistctl");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{manifest}: denylistctl {args:?} should fail only for want of NATS or secrets:\n{stderr}"
        );
        assert!(!stderr.contains("Usage:"), "{manifest}: {stderr}");
    }
}

/// The built `denylistctl` (`cargo build --workspace --bins` comes first in scripts/test.sh).
fn denylistctl() -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from);
    let bin = target.join("debug/denylistctl");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first",
        bin.display()
    );
    bin
}

/// The items of the first `args:` list in a manifest (one `- value` per line).
fn container_args(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines().skip_while(|l| l.trim() != "args:").skip(1);
    let mut args = Vec::new();
    while let Some(item) = lines.next().and_then(|l| l.trim().strip_prefix("- ")) {
        args.push(item.trim_matches('"').to_owned());
    }
    args
}

/// The accounts in deploy/base/nats/nats.conf, on a real nats-server with keys from
/// deploy/scripts/gen-nats-nkeys.sh: sidecars read but cannot publish revocations or touch
/// the stream, the security team publishes revocations, the admin manages the stream.
#[test]
fn nats_accounts_enforce_the_documented_permissions() {
    let keys = tempfile::tempdir().unwrap();
    let (ok, log) = run(Command::new("bash")
        .arg(repo().join("deploy/scripts/gen-nats-nkeys.sh"))
        .arg("--out")
        .arg(keys.path()));
    assert!(ok, "gen-nats-nkeys.sh failed:\n{log}");
    let key = |name: &str| nats::UserKey::load(keys.path(), name);
    let (sidecar, security, admin) = (key("sidecar"), key("security"), key("admin"));
    let heartbeat = key("heartbeat");
    let receiver = key("receiver");

    // The shipped file, unchanged, is a valid configuration.
    let server_bin = nats::server_binary();
    let conf = repo().join("deploy/base/nats/nats.conf");
    let env = [
        ("POD_NAME", "nats-0".to_owned()),
        ("DENYLIST_SIDECAR_NKEY", sidecar.public.clone()),
        ("DENYLIST_SECURITY_NKEY", security.public.clone()),
        ("DENYLIST_ADMIN_NKEY", admin.public.clone()),
        ("DENYLIST_HEARTBEAT_NKEY", heartbeat.public.clone()),
        ("DENYLIST_RECEIVER_NKEY", receiver.public.clone()),
    ];
    let (ok, out) = run(Command::new(&server_bin)
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .envs(env.clone()));
    assert!(
        ok && out.contains("is valid"),
        "nats-server -t {}: {out}",
        conf.display()
    );

    // The same accounts on a single local server (no cluster, loopback, a free port).
    let server = nats::Server::start(&server_bin, &conf, &env);

    let mut c = server
        .connect(&sidecar)
        .expect("the sidecar user authenticates");
    c.assert_ok("SUB denylist.v1.events.> 1");
    c.assert_ok("SUB denylist.v1.status 2");
    c.assert_ok("PUB $JS.API.STREAM.INFO.DENYLIST 0\r\n");
    c.assert_ok("PUB $JS.API.DIRECT.GET.DENYLIST 0\r\n");
    // Issue 10: no consumer of any kind, on any stream. Sidecars read with direct gets.
    for subject in [
        "$JS.API.CONSUMER.CREATE.DENYLIST",
        "$JS.API.CONSUMER.CREATE.DENYLIST.c1.denylist.v1.events.>",
        "$JS.API.CONSUMER.DURABLE.CREATE.DENYLIST.c1",
        "$JS.API.CONSUMER.MSG.NEXT.DENYLIST.c1",
        "$JS.API.CONSUMER.INFO.DENYLIST.c1",
        "$JS.API.CONSUMER.DELETE.DENYLIST.c1",
        "$JS.API.CONSUMER.LIST.DENYLIST",
        "$JS.API.CONSUMER.CREATE.OBJ_DENYLIST_SNAPSHOTS",
        "$JS.API.CONSUMER.CREATE.OBJ_DENYLIST_SNAPSHOTS.c1.$O.DENYLIST_SNAPSHOTS.C.abc",
        "$JS.API.CONSUMER.DELETE.OBJ_DENYLIST_SNAPSHOTS.c1",
    ] {
        c.assert_denied(
            &format!("PUB {subject} 0\r\n"),
            &format!("Publish to \"{subject}\""),
        );
    }
    c.assert_denied(
        "PUB denylist.v1.events.jti 2\r\nhi",
        "Publish to \"denylist.v1.events.jti\"",
    );
    c.assert_denied(
        "PUB $JS.API.STREAM.DELETE.DENYLIST 0\r\n",
        "Publish to \"$JS.API.STREAM.DELETE.DENYLIST\"",
    );
    c.assert_denied(
        "PUB $JS.API.STREAM.PURGE.DENYLIST 0\r\n",
        "Publish to \"$JS.API.STREAM.PURGE.DENYLIST\"",
    );
    c.assert_denied("SUB other.> 3", "Subscription to \"other.>\"");
    // Snapshots: read with direct gets (info message, then chunks), never written.
    c.assert_ok("PUB $JS.API.DIRECT.GET.OBJ_DENYLIST_SNAPSHOTS 0\r\n");
    c.assert_ok(
        "PUB $JS.API.DIRECT.GET.OBJ_DENYLIST_SNAPSHOTS.$O.DENYLIST_SNAPSHOTS.M.bGF0ZXN0 0\r\n",
    );
    c.assert_denied(
        "PUB $O.DENYLIST_SNAPSHOTS.M.bGF0ZXN0 2\r\nhi",
        "Publish to \"$O.DENYLIST_SNAPSHOTS.M.bGF0ZXN0\"",
    );
    c.assert_denied(
        "PUB $JS.API.STREAM.PURGE.OBJ_DENYLIST_SNAPSHOTS 0\r\n",
        "Publish to \"$JS.API.STREAM.PURGE.OBJ_DENYLIST_SNAPSHOTS\"",
    );

    let mut c = server
        .connect(&security)
        .expect("the security user authenticates");
    c.assert_ok("PUB denylist.v1.events.subject 2\r\nhi");
    c.assert_ok("PUB denylist.v1.status 0\r\n");
    c.assert_ok("SUB _INBOX.abc 1");
    c.assert_denied(
        "PUB $JS.API.STREAM.DELETE.DENYLIST 0\r\n",
        "Publish to \"$JS.API.STREAM.DELETE.DENYLIST\"",
    );
    c.assert_denied(
        "SUB denylist.v1.events.> 2",
        "Subscription to \"denylist.v1.events.>\"",
    );

    let mut c = server
        .connect(&admin)
        .expect("the admin user authenticates");
    c.assert_ok("PUB $JS.API.STREAM.CREATE.DENYLIST 0\r\n");
    c.assert_ok("PUB $O.DENYLIST_SNAPSHOTS.C.abc 2\r\nhi");
    c.assert_denied(
        "PUB denylist.v1.events.jti 2\r\nhi",
        "Publish to \"denylist.v1.events.jti\"",
    );

    // The fleet heartbeat: its subject and the stream's info, nothing else.
    let mut c = server
        .connect(&heartbeat)
        .expect("the heartbeat user authenticates");
    c.assert_ok("PUB denylist.v1.heartbeat 2\r\nhi");
    c.assert_ok("PUB $JS.API.STREAM.INFO.DENYLIST 0\r\n");
    c.assert_ok("SUB _INBOX.abc 1");
    c.assert_denied(
        "PUB denylist.v1.events.jti 2\r\nhi",
        "Publish to \"denylist.v1.events.jti\"",
    );
    c.assert_denied(
        "PUB $JS.API.CONSUMER.CREATE.DENYLIST 0\r\n",
        "Publish to \"$JS.API.CONSUMER.CREATE.DENYLIST\"",
    );
    c.assert_denied(
        "SUB denylist.v1.events.> 2",
        "Subscription to \"denylist.v1.events.>\"",
    );
    // Sidecars hear heartbeats but never send one.
    let mut c = server
        .connect(&sidecar)
        .expect("the sidecar user authenticates");
    c.assert_ok("SUB denylist.v1.heartbeat 1");
    c.assert_denied(
        "PUB denylist.v1.heartbeat 2\r\nhi",
        "Publish to \"denylist.v1.heartbeat\"",
    );

    // The signal receiver: session and subject revocations, nothing else.
    let mut c = server
        .connect(&receiver)
        .expect("the receiver user authenticates");
    c.assert_ok("PUB denylist.v1.events.session 2\r\nhi");
    c.assert_ok("PUB denylist.v1.events.subject 2\r\nhi");
    c.assert_ok("SUB _INBOX.abc 1");
    for kind in ["jti", "key", "issuer", "lift"] {
        c.assert_denied(
            &format!("PUB denylist.v1.events.{kind} 2\r\nhi"),
            &format!("Publish to \"denylist.v1.events.{kind}\""),
        );
    }
    c.assert_denied(
        "PUB $JS.API.STREAM.DELETE.DENYLIST 0\r\n",
        "Publish to \"$JS.API.STREAM.DELETE.DENYLIST\"",
    );

    // A key the server does not know is refused.
    let stranger = tempfile::tempdir().unwrap();
    run(Command::new("bash")
        .arg(repo().join("deploy/scripts/gen-nats-nkeys.sh"))
        .arg("--out")
        .arg(stranger.path()));
    let Err(error) = server.connect(&nats::UserKey::load(stranger.path(), "sidecar")) else {
        panic!("an unknown key must be refused");
    };
    assert!(error.contains("Authorization Violation"), "{error}");
}

/// Just enough of the NATS client protocol to authenticate with an nkey and observe
/// permission errors, and a nats-server process that is killed on drop.
mod nats {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc;
    use std::time::Duration;

    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use base64::Engine as _;

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// The project's nats-server (installed on first use). Only the script's stdout is
    /// read: it prints the path there, and install progress on stderr.
    pub(crate) fn server_binary() -> PathBuf {
        let script = super::repo().join("scripts/nats-server.sh");
        let output = Command::new("bash")
            .arg(script)
            .output()
            .expect("run scripts/nats-server.sh");
        assert!(
            output.status.success(),
            "nats-server is needed and cannot be installed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        assert!(
            path.is_file(),
            "scripts/nats-server.sh printed {}",
            path.display()
        );
        path
    }

    fn base32_decode(text: &str) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let (mut bits, mut acc, mut out) = (0u32, 0u64, Vec::new());
        for c in text.bytes() {
            let v = ALPHABET
                .iter()
                .position(|a| *a == c)
                .expect("base32 character") as u64;
            acc = (acc << 5) | v;
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        out
    }

    fn crc16(data: &[u8]) -> [u8; 2] {
        let mut crc: u16 = 0;
        for byte in data {
            crc ^= u16::from(*byte) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc.to_le_bytes()
    }

    /// A user's key pair as written by gen-nats-nkeys.sh, checked against aws-lc's Ed25519.
    pub(crate) struct UserKey {
        pub(crate) public: String,
        pair: Ed25519KeyPair,
    }

    impl UserKey {
        pub(crate) fn load(dir: &Path, name: &str) -> Self {
            let seed_text = std::fs::read_to_string(dir.join(format!("{name}.nk"))).unwrap();
            let public = std::fs::read_to_string(dir.join(format!("{name}.pub"))).unwrap();
            assert!(
                seed_text.starts_with("SU") && public.starts_with('U'),
                "{seed_text:.2} / {public}"
            );
            let seed = base32_decode(&seed_text);
            assert_eq!(seed.len(), 36);
            assert_eq!(crc16(&seed[..34]), seed[34..], "seed checksum");
            let raw_public = base32_decode(&public);
            assert_eq!(raw_public.len(), 35);
            assert_eq!(
                crc16(&raw_public[..33]),
                raw_public[33..],
                "public key checksum"
            );
            let pair = Ed25519KeyPair::from_seed_unchecked(&seed[2..34]).unwrap();
            assert_eq!(
                pair.public_key().as_ref(),
                &raw_public[1..33],
                "public key derived from the seed"
            );
            Self { public, pair }
        }
    }

    pub(crate) struct Server {
        child: Child,
        port: u16,
        _dir: tempfile::TempDir,
    }

    impl Server {
        /// Runs `conf` as a single loopback server: no cluster, no monitoring port.
        pub(crate) fn start(bin: &Path, conf: &Path, env: &[(&str, String)]) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let text = std::fs::read_to_string(conf).unwrap();
            let cluster = text.find("\ncluster {").expect("a cluster block");
            let end = cluster
                + text[cluster..]
                    .find("\n}\n")
                    .expect("end of the cluster block")
                + 3;
            let local = format!("{}{}", &text[..cluster + 1], &text[end..])
                .replace("listen: \"0.0.0.0:4222\"", "listen: \"127.0.0.1:-1\"")
                .replace("http: \"0.0.0.0:8222\"", "")
                .replace(
                    "\"/data\"",
                    &format!("{:?}", dir.path().join("js").display().to_string()),
                )
                .replace(
                    "\"/var/run/nats/nats.pid\"",
                    &format!("{:?}", dir.path().join("nats.pid").display().to_string()),
                );
            let path = dir.path().join("nats.conf");
            std::fs::write(&path, local).unwrap();
            let mut child = Command::new(bin)
                .arg("-c")
                .arg(&path)
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start nats-server");
            // The port is read from the server's own log line, not guessed in advance.
            let stderr = child.stderr.take().unwrap();
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                        let _ = tx.send(
                            addr.rsplit(':')
                                .next()
                                .unwrap()
                                .trim()
                                .parse::<u16>()
                                .unwrap(),
                        );
                    }
                }
            });
            let port = match rx.recv_timeout(TIMEOUT) {
                Ok(port) => port,
                Err(_) => {
                    let _ = child.kill();
                    panic!("nats-server did not start within {TIMEOUT:?}");
                }
            };
            Self {
                child,
                port,
                _dir: dir,
            }
        }

        /// Connects and authenticates as `user`; `Err` carries the server's error line.
        pub(crate) fn connect(&self, user: &UserKey) -> Result<Client, String> {
            let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
            stream.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut client = Client {
                reader: BufReader::new(stream.try_clone().unwrap()),
                writer: stream,
            };
            let info = client.line();
            let info: serde_json::Value =
                serde_json::from_str(info.strip_prefix("INFO ").unwrap()).unwrap();
            let nonce = info["nonce"]
                .as_str()
                .expect("the server asks for a signed nonce");
            let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(user.pair.sign(nonce.as_bytes()));
            let connect = serde_json::json!({
                "verbose": false, "pedantic": false, "protocol": 1, "nkey": user.public, "sig": sig,
            });
            client.send(&format!("CONNECT {connect}\r\nPING"));
            match client.reply().as_str() {
                "PONG" => Ok(client),
                other => Err(other.to_owned()),
            }
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    pub(crate) struct Client {
        reader: BufReader<TcpStream>,
        writer: TcpStream,
    }

    impl Client {
        fn send(&mut self, command: &str) {
            self.writer
                .write_all(format!("{command}\r\n").as_bytes())
                .unwrap();
        }

        fn line(&mut self) -> String {
            let mut line = String::new();
            self.reader
                .read_line(&mut line)
                .expect("a line from nats-server within the timeout");
            line.trim_end().to_owned()
        }

        /// The next line that is not a message delivery, an INFO update or a ping.
        fn reply(&mut self) -> String {
            loop {
                let line = self.line();
                if line == "PING" {
                    self.send("PONG");
                } else if !["MSG ", "HMSG ", "INFO "]
                    .iter()
                    .any(|p| line.starts_with(p))
                    && !line.is_empty()
                {
                    return line;
                }
            }
        }

        /// `command` is accepted: the server answers our PING with nothing before the PONG.
        pub(crate) fn assert_ok(&mut self, command: &str) {
            self.send(&format!("{command}\r\nPING"));
            let reply = self.reply();
            assert_eq!(reply, "PONG", "`{command}` should be allowed");
        }

        /// `command` is refused with a permissions violation naming `what`.
        pub(crate) fn assert_denied(&mut self, command: &str, what: &str) {
            self.send(&format!("{command}\r\nPING"));
            let reply = self.reply();
            assert!(
                reply.starts_with("-ERR 'Permissions Violation for ") && reply.contains(what),
                "`{command}` should be refused ({what}), got {reply:?}"
            );
            assert_eq!(self.reply(), "PONG");
        }
    }
}
