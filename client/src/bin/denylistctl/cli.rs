//! Command-line flags of `denylistctl` (clap derive). Every flag with an environment variable
//! names it in `--help`; secrets' values are never shown there.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use denylist_client::env;
use denylist_client::events::RuleKind;
use denylist_client::replay::KindFilter;
use denylist_client::subjects;

/// Revoke JWTs across a fleet of denylist sidecars, and see what every sidecar enforces.
#[derive(Debug, Parser)]
#[command(
    name = "denylistctl",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// NATS server URL(s), comma-separated.
    #[arg(long, global = true, value_name = "URL", env = env::NATS_URL, default_value = env::DEFAULT_NATS_URL, hide_env_values = true)]
    pub(crate) nats: String,
    /// NATS credentials file (JWT and nkey seed).
    #[arg(long, global = true, value_name = "FILE", env = env::NATS_CREDS)]
    pub(crate) creds: Option<PathBuf>,
    /// File holding an nkey seed.
    #[arg(long, global = true, value_name = "FILE", env = env::NATS_NKEY)]
    pub(crate) nkey: Option<PathBuf>,
    /// NATS user (with --password).
    #[arg(long, global = true, env = env::NATS_USER)]
    pub(crate) user: Option<String>,
    /// NATS password (prefer the environment variable: flags show in `ps`).
    #[arg(long, global = true, env = env::NATS_PASSWORD, hide_env_values = true)]
    pub(crate) password: Option<String>,
    /// NATS token (prefer the environment variable: flags show in `ps`).
    #[arg(long, global = true, env = env::NATS_TOKEN, hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// CA bundle that verifies the NATS servers' certificates.
    #[arg(long, global = true, value_name = "FILE", env = env::NATS_TLS_CA)]
    pub(crate) tls_ca: Option<PathBuf>,
    /// Client certificate for mutual TLS (with --tls-key).
    #[arg(long, global = true, value_name = "FILE", env = env::NATS_TLS_CERT)]
    pub(crate) tls_cert: Option<PathBuf>,
    /// Client key for mutual TLS.
    #[arg(long, global = true, value_name = "FILE", env = env::NATS_TLS_KEY)]
    pub(crate) tls_key: Option<PathBuf>,
    /// Require TLS even for nats:// URLs.
    #[arg(long, global = true)]
    pub(crate) tls_required: bool,
    /// JetStream stream name.
    #[arg(long, global = true, value_name = "NAME", env = env::STREAM, default_value = subjects::DEFAULT_STREAM)]
    pub(crate) stream: String,
    /// Publisher signing key (Ed25519 PKCS#8 PEM, from `denylistctl keygen`).
    #[arg(long, global = true, value_name = "FILE", env = env::PUBLISHER_KEY)]
    pub(crate) key: Option<PathBuf>,
    /// Trusted publisher public key(s) to check events read back (`list`, `history`);
    /// comma-separated or repeated. Without, signatures are not checked.
    #[arg(long, global = true, value_name = "PUBLIC_KEY", value_delimiter = ',', env = env::TRUSTED_PUBLISHERS)]
    pub(crate) trust: Vec<String>,
    /// A sidecar configuration file (TOML): its `[nats]` `trusted_publishers` and
    /// `[[nats.trusted_publisher]]` entries, scopes included, check events read back, as
    /// the sidecars judge them. Other keys in the file are ignored.
    #[arg(long, global = true, value_name = "FILE", env = env::TRUST_CONFIG)]
    pub(crate) trust_config: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub(crate) output: Output,
    /// The sidecar's Unix socket (`status`, `verify`).
    #[arg(long, global = true, value_name = "PATH", env = env::SOCKET, default_value = env::DEFAULT_SOCKET)]
    pub(crate) socket: PathBuf,
    /// Talk to the sidecar over TCP instead of its socket (e.g. 127.0.0.1:50151).
    #[arg(long, global = true, value_name = "ADDR")]
    pub(crate) tcp: Option<SocketAddr>,
    /// How long NATS operations may take, retries included, before failing.
    #[arg(long, global = true, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Aligned text for people.
    Table,
    /// JSON for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Generate a publisher signing key (and print its public key for sidecars).
    Keygen {
        /// Where to write the private key (PKCS#8 PEM, mode 0600). Never overwritten.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Create, update or describe the JetStream stream.
    Stream {
        #[command(subcommand)]
        command: StreamCommand,
    },
    /// Revoke tokens: by jti, subject, session, key id, or every token of an issuer.
    Revoke(RevokeArgs),
    /// Withdraw earlier revocations by their event ids.
    Lift(LiftArgs),
    /// Show the rules in force: the stream replayed, lifts and expiry applied.
    List(ListArgs),
    /// Show every event in the stream with its sequence and time.
    History(HistoryArgs),
    /// Build or describe the signed snapshot that lets starting sidecars skip replaying the
    /// whole stream.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Publish the fleet heartbeat until stopped: the stream's state, read once per interval
    /// and signed with --key, on a core subject every sidecar follows (so no sidecar polls
    /// the stream). Run two or more replicas; see docs/CLI.md.
    Heartbeat(HeartbeatArgs),
    /// Show one sidecar's state (over its socket).
    Status,
    /// Ask every sidecar for its state over NATS; laggards are highlighted.
    Fleet(FleetArgs),
    /// Ask a sidecar to verify a token and explain the answer.
    Verify {
        /// The token (without `Bearer `), or `-` to read it from standard input.
        token: String,
    },
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub(crate) struct HeartbeatArgs {
    /// Time between two heartbeats.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) interval: Duration,
    /// The core subject to publish on (the sidecars' `nats.heartbeat_subject`).
    #[arg(long, value_name = "SUBJECT", default_value = denylist_client::envelope::HEARTBEAT_SUBJECT)]
    pub(crate) subject: String,
    /// This replica's name, carried in each heartbeat for logs. Default: `POD_NAME`, else the
    /// host name.
    #[arg(long, value_name = "NAME", env = "POD_NAME")]
    pub(crate) name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum StreamCommand {
    /// Create the stream, or update it to these settings.
    Init(StreamInitArgs),
    /// Show the stream's configuration and state.
    Info,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SnapshotCommand {
    /// Read the events since the last snapshot (every signature checked against --trust),
    /// sign the live set with --key, and store it as the latest snapshot. Run it
    /// periodically (e.g. a CronJob every 10 minutes).
    Create(SnapshotCreateArgs),
    /// Check the stored snapshot as a sidecar would and describe it.
    Info(SnapshotBucketArgs),
}

#[derive(Debug, Args)]
pub(crate) struct SnapshotBucketArgs {
    /// Object store bucket of the snapshots. Default: `<stream>_SNAPSHOTS`.
    #[arg(long, value_name = "NAME", env = env::SNAPSHOT_BUCKET)]
    pub(crate) bucket: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct SnapshotCreateArgs {
    #[command(flatten)]
    pub(crate) bucket: SnapshotBucketArgs,
    /// Replay the whole stream instead of starting from the stored snapshot.
    #[arg(long)]
    pub(crate) full: bool,
}

#[derive(Debug, Args)]
pub(crate) struct StreamInitArgs {
    /// Replicas: 1 for local use, 3 in production.
    #[arg(long, default_value_t = 1)]
    pub(crate) replicas: usize,
    /// How long events are kept; at least the longest token lifetime of any issuer.
    /// `forever` keeps them until deleted.
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = parse_max_age)]
    pub(crate) max_age: Duration,
    /// Window in which a re-published event id is recognised as a duplicate.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = humantime::parse_duration)]
    pub(crate) duplicate_window: Duration,
    /// Allow lowering an existing stream's max age (older revocations are dropped at once).
    #[arg(long)]
    pub(crate) allow_shorter_max_age: bool,
}

fn parse_max_age(s: &str) -> Result<Duration, String> {
    if matches!(s, "forever" | "unlimited" | "0") {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// Rule kinds on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum KindArg {
    /// One token, by its `jti`.
    Jti,
    /// Every token of a subject (`sub`) issued up to the cut-off.
    Subject,
    /// Every token of an OIDC session (`sid`).
    Session,
    /// Every token signed with a key id (`kid`).
    Key,
    /// Every token of the issuer issued up to the cut-off.
    Issuer,
}

impl From<KindArg> for RuleKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Jti => Self::Jti,
            KindArg::Subject => Self::Subject,
            KindArg::Session => Self::Session,
            KindArg::Key => Self::Key,
            KindArg::Issuer => Self::Issuer,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    /// What to revoke.
    #[arg(value_enum, required_unless_present = "from_file")]
    pub(crate) kind: Option<KindArg>,
    /// The jti / sub / sid / kid values to revoke (none for `issuer`).
    #[arg(value_name = "TARGET")]
    pub(crate) targets: Vec<String>,
    /// The token issuer (exact `iss`).
    #[arg(long, value_name = "ISS", required_unless_present = "from_file")]
    pub(crate) issuer: Option<String>,
    /// Why (shown to callers of Verify; for a bulk file, the default for lines without one).
    #[arg(long)]
    pub(crate) reason: Option<String>,
    /// Who revokes. Default: $USER.
    #[arg(long)]
    pub(crate) actor: Option<String>,
    /// Subject and issuer rules: revoke tokens issued up to this time. `now` (default),
    /// Unix seconds, RFC 3339, or -DURATION.
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub(crate) cutoff: Option<String>,
    /// When the rule may be dropped: Unix seconds, RFC 3339, or +DURATION. Default: derived
    /// from the issuer's maximum token lifetime (key rules: kept until lifted).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub(crate) expires_at: Option<String>,
    /// Event id to publish under (for safe retries from scripts). Default: generated.
    #[arg(long, value_name = "ID")]
    pub(crate) event_id: Option<String>,
    /// Revoke every line of a CSV or JSON-lines file (header/fields: kind, issuer, target,
    /// reason, cutoff, expires_at). The whole file is validated before anything is published.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["kind", "targets", "issuer", "cutoff", "expires_at", "event_id"])]
    pub(crate) from_file: Option<PathBuf>,
    /// Syntax of --from-file. Default: from the extension, else from the first line.
    #[arg(long, value_enum, requires = "from_file")]
    pub(crate) format: Option<FileFormatArg>,
    /// Bulk publishing: events awaiting their acknowledgement at once. Default 1024.
    #[arg(long, value_name = "N", requires = "from_file")]
    pub(crate) in_flight: Option<usize>,
    /// Validate and show what would be published, without publishing.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

/// Bulk file syntaxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum FileFormatArg {
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

#[derive(Debug, Args)]
pub(crate) struct LiftArgs {
    /// Ids of the revocation events to withdraw.
    #[arg(required = true, value_name = "EVENT_ID")]
    pub(crate) event_ids: Vec<String>,
    /// Why.
    #[arg(long)]
    pub(crate) reason: Option<String>,
    /// Who lifts. Default: $USER.
    #[arg(long)]
    pub(crate) actor: Option<String>,
    /// Event id of the lift itself. Default: generated.
    #[arg(long, value_name = "ID")]
    pub(crate) event_id: Option<String>,
    /// Validate and show what would be published, without publishing.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

#[derive(Debug, Args)]
pub(crate) struct FilterArgs {
    /// Only this issuer (exact `iss`).
    #[arg(long, value_name = "ISS")]
    pub(crate) issuer: Option<String>,
    /// Only this kind: jti, subject, session, key, issuer (or lift, in history).
    #[arg(long, value_parser = parse_kind_filter)]
    pub(crate) kind: Option<KindFilter>,
    /// Only rules for this target (jti / sub / sid / kid, or a lifted event id).
    #[arg(long, visible_alias = "subject", value_name = "TARGET")]
    pub(crate) target: Option<String>,
}

fn parse_kind_filter(s: &str) -> Result<KindFilter, String> {
    s.parse()
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    pub(crate) filter: FilterArgs,
    /// The longest token lifetime of the issuers, to drop rules whose expiry the sidecars
    /// derive from it. Default: such rules are shown until the stream ages them out.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) max_token_lifetime: Option<Duration>,
}

#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    #[command(flatten)]
    pub(crate) filter: FilterArgs,
    /// Only events stored since this time: a duration ago (`2h`), Unix seconds, or RFC 3339.
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub(crate) since: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct FleetArgs {
    /// How long to collect answers.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) wait: Duration,
    /// Fail (exit 3) unless at least this many sidecars answer.
    #[arg(long, value_name = "N")]
    pub(crate) expect: Option<usize>,
}
