//! A tiny client for trying the sidecar by hand: mints demo tokens with a local
//! ES256 private key and asks a sidecar to verify them over its Unix socket.
//!
//! ```text
//! cargo run -p denylist-sidecar --example demo_client -- mint --key examples/standalone/keys/demo-es256-private.pem --kid demo-2026 --iss https://auth.demo.example --sub alice --aud orders-api
//! cargo run -p denylist-sidecar --example demo_client -- verify --socket /tmp/denylist-demo/sidecar.sock TOKEN
//! ```
//!
//! Services call the sidecar the same way: a `VerifierClient` over the socket.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use clap::{Parser, Subcommand};
use denylist_proto::pb::verifier_client::VerifierClient;
use denylist_proto::pb::{self, Reason};
use tonic::transport::{Channel, Endpoint};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Prints a signed ES256 token.
    Mint {
        /// PKCS#8 PEM private key.
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        kid: String,
        #[arg(long)]
        iss: String,
        #[arg(long)]
        sub: String,
        #[arg(long)]
        aud: String,
        /// Token lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
    /// Asks the sidecar to verify a token and prints the answer.
    Verify {
        #[arg(long)]
        socket: PathBuf,
        token: String,
    },
    /// Waits until the sidecar reports ready.
    WaitReady {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Mint {
            key,
            kid,
            iss,
            sub,
            aud,
            ttl,
        } => {
            let token = mint(&key, &kid, &iss, &sub, &aud, ttl)?;
            println!("{token}");
        }
        Command::Verify { socket, token } => {
            let mut client = VerifierClient::new(connect(socket).await?);
            let answer = client
                .verify(pb::VerifyRequest { token })
                .await
                .context("Verify failed")?
                .into_inner();
            print_answer(&answer);
        }
        Command::WaitReady {
            socket,
            timeout_secs,
        } => {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_secs);
            loop {
                if let Ok(ch) = connect(socket.clone()).await
                    && let Ok(s) = VerifierClient::new(ch).status(pb::StatusRequest {}).await
                    && s.get_ref().ready
                {
                    return Ok(());
                }
                if tokio::time::Instant::now() > deadline {
                    bail!(
                        "the sidecar at {} was not ready within {timeout_secs} s",
                        socket.display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Ok(())
}

fn mint(
    key: &PathBuf,
    kid: &str,
    iss: &str,
    sub: &str,
    aud: &str,
    ttl: i64,
) -> anyhow::Result<String> {
    let pem = std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(body).context("the key file is not PEM")?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
        .map_err(|e| anyhow::anyhow!("not a PKCS#8 P-256 key: {e}"))?;
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;
    let mut jti = [0u8; 16];
    aws_lc_rs::rand::fill(&mut jti).map_err(|_| anyhow::anyhow!("RNG failed"))?;
    let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": kid});
    let claims = serde_json::json!({
        "iss": iss, "sub": sub, "aud": aud, "iat": now, "exp": now + ttl,
        "jti": URL_SAFE_NO_PAD.encode(jti),
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = pair
        .sign(&SystemRandom::new(), input.as_bytes())
        .map_err(|_| anyhow::anyhow!("signing failed"))?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
}

async fn connect(socket: PathBuf) -> anyhow::Result<Channel> {
    // The URI is a placeholder: the connector below always dials the Unix socket.
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

fn print_answer(a: &pb::VerifyResponse) {
    let reason = Reason::try_from(a.reason).unwrap_or(Reason::Unspecified);
    let verdict = if a.valid { "VALID" } else { "REJECTED" };
    println!("{verdict:<9} reason={}", reason.as_str_name());
    if !a.detail.is_empty() {
        println!("          detail: {}", a.detail);
    }
    if let Some(c) = &a.claims {
        println!("          sub={} jti={} exp={}", c.sub, c.jti, c.exp);
    }
    if let Some(r) = &a.revocation {
        println!("          revoked by event {} ({})", r.event_id, r.reason);
    }
    println!(
        "          denylist sequence={} age={} ms",
        a.denylist_sequence, a.denylist_age_ms
    );
}
