//! `denylistctl` as a child process: flags for the test's NATS server, publisher key
//! and sidecar socket, a bounded run (killed if it overruns), and its output.
//!
//! The `DENYLIST_*` variables the CLI reads are cleared, so the runner's environment
//! cannot change what a test does; everything is passed as flags.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::Command;

use crate::binaries;
use crate::wait::within_for;

/// The `DENYLIST_*` variables `denylistctl` reads (see `client/src/env.rs`).
const CLI_ENV: &[&str] = &[
    "DENYLIST_SOCKET",
    "DENYLIST_NATS_URL",
    "DENYLIST_NATS_CREDS",
    "DENYLIST_NATS_NKEY",
    "DENYLIST_NATS_USER",
    "DENYLIST_NATS_PASSWORD",
    "DENYLIST_NATS_TOKEN",
    "DENYLIST_NATS_TLS_CA",
    "DENYLIST_NATS_TLS_CERT",
    "DENYLIST_NATS_TLS_KEY",
    "DENYLIST_STREAM",
    "DENYLIST_PUBLISHER_KEY",
    "DENYLIST_TRUSTED_PUBLISHERS",
];

/// How to run `denylistctl` against a test's NATS server.
#[derive(Debug, Clone)]
pub struct Denylistctl {
    bin: PathBuf,
    nats: String,
    key: Option<PathBuf>,
    socket: Option<PathBuf>,
}

impl Denylistctl {
    /// `denylistctl --nats <url>`; fails with a clear message if the binary is not built.
    pub fn new(nats_url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            bin: binaries::denylistctl_bin()?,
            nats: nats_url.to_owned(),
            key: None,
            socket: None,
        })
    }

    /// Adds `--key <path>` (the publisher signing key).
    pub fn with_key(mut self, key: &Path) -> Self {
        self.key = Some(key.to_owned());
        self
    }

    /// Adds `--socket <path>` (the sidecar asked by `verify` and `status`).
    pub fn with_socket(mut self, socket: &Path) -> Self {
        self.socket = Some(socket.to_owned());
        self
    }

    /// Runs `denylistctl <global flags> <args>`, killing it after `timeout`.
    pub async fn run(&self, args: &[&str], timeout: Duration) -> anyhow::Result<CliOutput> {
        let mut command = Command::new(&self.bin);
        for var in CLI_ENV {
            command.env_remove(var);
        }
        command.env("NO_COLOR", "1").arg("--nats").arg(&self.nats);
        if let Some(key) = &self.key {
            command.arg("--key").arg(key);
        }
        if let Some(socket) = &self.socket {
            command.arg("--socket").arg(socket);
        }
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let line = format!("denylistctl {}", args.join(" "));
        let child = command
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        let output = within_for(timeout, &line, child.wait_with_output())
            .await?
            .with_context(|| format!("running {line}"))?;
        Ok(CliOutput {
            command: line,
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// What a `denylistctl` run printed, and how it exited.
#[derive(Debug)]
pub struct CliOutput {
    /// The command line (for messages).
    pub command: String,
    /// The exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliOutput {
    /// The output, or an error quoting it if the exit status is not success.
    pub fn ok(self) -> anyhow::Result<Self> {
        anyhow::ensure!(self.status.success(), "{self}");
        Ok(self)
    }

    /// Standard output parsed as JSON (for `-o json` runs).
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.stdout).with_context(|| format!("{self}\nstdout is not JSON"))
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.status,
            crate::nats::tail(&self.stdout, 4000),
            crate::nats::tail(&self.stderr, 4000)
        )
    }
}
