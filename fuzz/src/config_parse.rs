//! `config_parse`: the sidecar's TOML config loader and validator on arbitrary text.
//!
//! The input is the file's text, optionally followed by `\0` and environment lines
//! (`NAME=value`, one per line) that [`Config::apply_env`] layers on top, as the
//! sidecar does at start: parse, apply the environment, validate.
//!
//! Invariants: nothing panics (parsing, layering, validating, formatting the error);
//! validation answers the same when asked twice.

use std::collections::HashMap;
use std::path::Path;

use denylist_sidecar::config::{Config, ConfigError};

use crate::{Outcome, Seed};

/// Runs one input; panics if an invariant breaks.
pub fn run(data: &[u8]) -> Outcome {
    let Ok(text) = std::str::from_utf8(data) else {
        // The file is read as a string: not UTF-8 never reaches the parser.
        return Outcome::Refused;
    };
    let (toml, env) = text.split_once('\0').unwrap_or((text, ""));
    let env: HashMap<&str, &str> = env.lines().filter_map(|l| l.split_once('=')).collect();
    let refused = |e: ConfigError| {
        let _ = Config::in_file(e, Some(Path::new("sidecar.toml"))).to_string();
        Outcome::Refused
    };
    let mut config = match Config::from_toml(toml) {
        Ok(config) => config,
        Err(e) => return refused(e),
    };
    if let Err(e) = config.apply_env(|name| env.get(name).map(|v| (*v).to_owned())) {
        return refused(e);
    }
    let first = config.validate().map_err(|e| e.to_string());
    assert_eq!(config.validate().map_err(|e| e.to_string()), first);
    let _ = format!("{config:?}");
    match first {
        Ok(()) => Outcome::Accepted,
        Err(_) => Outcome::Refused,
    }
}

/// The committed seeds: valid configs of each key source and mode, and near misses.
pub fn seeds() -> Vec<Seed> {
    let standalone = r#"
name = "pod-1"
shutdown_grace = "15s"

[listen]
socket = "/var/run/denylist/sidecar.sock"
tcp = "127.0.0.1:50151"
admin = ""

[verify]
max_token_bytes = 8192
cache_entries = 10000

[denylist]
source = "file"
file = "/etc/denylist/revocations.jsonl"
max_staleness = "5m"
staleness_policy = "fail_closed"

[[issuers]]
issuer = "https://auth.example.com"
algorithms = ["RS256", "ES256"]
audiences = ["orders-api"]
leeway = "30s"
max_lifetime = "1h"
[issuers.keys]
pem_files = [{ path = "/keys/rsa.pem", kid = "k1" }, { path = "/keys/ec.pem" }]

[[issuers]]
issuer = "https://hs.example.com"
algorithms = ["HS256"]
[issuers.keys]
hmac_secret_files = [{ path = "/keys/hmac.secret", kid = "h1" }]
"#;
    let nats = r#"
[denylist]
source = "nats"
[nats]
servers = ["nats://127.0.0.1:4222"]
trusted_publishers = ["11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"]
[[nats.trusted_publisher]]
key = "m53AbgRdXFN0hRN6eFeVepCpV9BMJtmlLcpcDZbsNOU"
kinds = ["session", "subject"]
issuers = ["https://auth.example.com"]
[[issuers]]
issuer = "https://auth.example.com"
algorithms = ["EdDSA"]
[issuers.keys]
jwks_url = "https://auth.example.com/.well-known/jwks.json"
refresh_interval = "5m"
"#;
    let with_env = |toml: &str, env: &str| format!("{toml}\0{env}").into_bytes();
    vec![
        ("standalone", standalone.as_bytes().to_vec()),
        ("nats", nats.as_bytes().to_vec()),
        (
            "env",
            with_env(
                standalone,
                "DENYLIST_TCP=\nDENYLIST_ADMIN=127.0.0.1:9999\nDENYLIST_LOG_FORMAT=json\nPOD_NAME=p",
            ),
        ),
        (
            "bad-env",
            with_env(standalone, "DENYLIST_TCP=not-an-address"),
        ),
        (
            "mixed-algorithms",
            standalone
                .replace(r#"["RS256", "ES256"]"#, r#"["RS256", "HS256"]"#)
                .into_bytes(),
        ),
        (
            "unknown-field",
            standalone
                .replace("[verify]", "[verify]\ncache = 1")
                .into_bytes(),
        ),
        ("empty", Vec::new()),
    ]
}
