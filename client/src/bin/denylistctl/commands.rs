//! What each `denylistctl` command does: flags in, library calls, text or JSON out.
//!
//! Exit codes: 0 success; 1 an error (one line on stderr); 2 bad usage (clap); 3 a negative
//! answer that is not an error — `verify` on a rejected token, `status` of a sidecar that is
//! not ready or stale, `fleet` with laggards or fewer answers than `--expect`.
//!
//! Every NATS step — connecting, checking or changing the stream, publishing and awaiting the
//! acknowledgement, reading the stream, the snapshot object store, the fleet request — is
//! retried with jittered backoff while its failure may pass (a timeout, no responders, no
//! leader), until one deadline: `--timeout` from the start of the command. Then the command
//! fails with one line naming the step. A failure that will not pass (no such stream, a
//! refused setting, bad credentials) fails at once.

mod heartbeat;

use std::fs::OpenOptions;
use std::io::{IsTerminal as _, Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use denylist_client::bulk::{self, BulkDefaults, FileFormat};
use denylist_client::envelope::{SigningKey, TrustedKeys};
use denylist_client::events::{self, Action, Event, Revoke, RuleKind};
use denylist_client::fleet::FleetError;
use denylist_client::nats::{self, Backoff};
use denylist_client::replay::ReplayError;
use denylist_client::replay::{self, Filter, Start};
use denylist_client::snapshot;
use denylist_client::snapshot::SnapshotStoreError;
use denylist_client::stream::StreamError;
use denylist_client::stream::{self, InitOutcome, StreamSettings};
use denylist_client::{
    Client, NatsOptions, Published, Publisher, RetryPolicy, env, fleet, ids, render, timespec,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::cli::{
    Cli, Command, FileFormatArg, FilterArgs, FleetArgs, Global, HistoryArgs, LiftArgs, ListArgs,
    Output, RevokeArgs, SnapshotBucketArgs, SnapshotCommand, SnapshotCreateArgs, StreamCommand,
    StreamInitArgs,
};

/// Bulk publishing: events awaiting their acknowledgement at once.
const DEFAULT_IN_FLIGHT: usize = 1024;

/// A negative answer that is not an error.
const EXIT_NEGATIVE: u8 = 3;

/// How long a call to one sidecar may take, retries included.
const SIDECAR_DEADLINE: Duration = Duration::from_secs(5);

/// Cut-offs a little in the future are clock skew; more would also revoke tokens not yet issued.
const MAX_CUTOFF_SKEW_SECS: i64 = 300;

pub(crate) async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    // One deadline for every NATS step of the command, retries included.
    let deadline = Instant::now() + g.timeout;
    match cli.command {
        Command::Keygen { out } => keygen(g, &out),
        Command::Stream {
            command: StreamCommand::Init(args),
        } => stream_init(g, &args, deadline).await,
        Command::Stream {
            command: StreamCommand::Info,
        } => stream_info(g, deadline).await,
        Command::Revoke(args) if args.from_file.is_some() => revoke_file(g, &args, deadline).await,
        Command::Revoke(args) => revoke(g, &args, deadline).await,
        Command::Lift(args) => lift(g, &args, deadline).await,
        Command::List(args) => list(g, &args, deadline).await,
        Command::History(args) => history(g, &args, deadline).await,
        Command::Snapshot {
            command: SnapshotCommand::Create(args),
        } => snapshot_create(g, &args, deadline).await,
        Command::Snapshot {
            command: SnapshotCommand::Info(args),
        } => snapshot_info(g, &args, deadline).await,
        Command::Heartbeat(args) => heartbeat::run(g, &args, deadline).await,
        Command::Status => status(g).await,
        Command::Fleet(args) => fleet_status(g, &args, deadline).await,
        Command::Verify { token } => verify(g, &token).await,
        Command::Completions { shell } => {
            // Into a buffer first: clap_complete panics when its writer fails (a closed pipe).
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "denylistctl", &mut script);
            print_text(&String::from_utf8_lossy(&script))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    print_text(&text)
}

/// Writes to stdout. A closed pipe (`denylistctl list | head`) is not an error: the reader
/// has what it wanted.
fn print_text(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Colour only for a terminal, and never when `NO_COLOR` is set.
fn color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn nats_options(g: &Global) -> NatsOptions {
    NatsOptions {
        url: g.nats.clone(),
        creds_file: g.creds.clone(),
        nkey_seed_file: g.nkey.clone(),
        user: g.user.clone(),
        password: g.password.clone(),
        token: g.token.clone(),
        tls_ca_file: g.tls_ca.clone(),
        tls_cert_file: g.tls_cert.clone(),
        tls_key_file: g.tls_key.clone(),
        tls_required: g.tls_required,
        ..NatsOptions::default()
    }
}

async fn connect(
    g: &Global,
    deadline: Instant,
) -> anyhow::Result<(async_nats::Client, async_nats::jetstream::Context)> {
    let options = nats_options(g);
    let client = options.connect_before(deadline).await?;
    let js = options.jetstream(client.clone());
    Ok((client, js))
}

/// Runs one NATS step, retried until `deadline` while `transient` says its failure may pass;
/// an attempt still running at the deadline is abandoned.
async fn step<T, E, F, Fut>(
    deadline: Instant,
    what: impl Into<String>,
    transient: impl Fn(&E) -> bool,
    attempt: F,
) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    nats::retry_until(what, deadline, Backoff::DEFAULT, transient, attempt)
        .await
        .map_err(anyhow::Error::new)
}

/// [`step`] for long work (reading the whole stream, storing a snapshot): no attempt starts
/// after `deadline`, but one under way finishes, bounded by its own stall timeout.
async fn long_step<T, E, F, Fut>(
    deadline: Instant,
    what: impl Into<String>,
    transient: impl Fn(&E) -> bool,
    attempt: F,
) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    nats::retry_starting_before(what, deadline, Backoff::DEFAULT, transient, attempt)
        .await
        .map_err(anyhow::Error::new)
}

/// How long reading the stream may wait for the next message before the read is retried:
/// a stall is most likely a failover, which a new read gets past.
fn read_idle(g: &Global) -> Duration {
    g.timeout.min(nats_options(g).request_timeout)
}

/// Reading: anything but a missing stream or a bad name may pass. (A read is safe to repeat;
/// reading errors other than those come from a JetStream that is failing over or away.)
fn read_may_pass(e: &StreamError) -> bool {
    matches!(
        e,
        StreamError::Unavailable { .. } | StreamError::JetStream { .. }
    )
}

fn replay_may_pass(e: &ReplayError) -> bool {
    match e {
        ReplayError::Stream(e) => read_may_pass(e),
        ReplayError::Stalled { .. } => true,
    }
}

fn snapshot_may_pass(e: &SnapshotStoreError) -> bool {
    match e {
        SnapshotStoreError::Stream(e) => read_may_pass(e),
        SnapshotStoreError::Replay(e) => replay_may_pass(e),
        // The object store's errors arrive as text. A missing bucket (its stream not found,
        // JetStream error 10059) will not appear by waiting; the rest are transport failures.
        SnapshotStoreError::Store { message, .. } => !message.contains("error code 10059"),
        SnapshotStoreError::Missing(_) | SnapshotStoreError::Invalid(_) => false,
    }
}

/// Asking the fleet fails only when the connection does.
fn fleet_may_pass(_: &FleetError) -> bool {
    true
}

async fn sidecar(g: &Global) -> anyhow::Result<Client> {
    let client = match g.tcp {
        Some(addr) => Client::connect_tcp(addr).await?,
        None => Client::connect_unix(&g.socket).await?,
    };
    Ok(client
        .with_deadline(SIDECAR_DEADLINE)
        .with_retry(RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
        }))
}

fn load_key(g: &Global) -> anyhow::Result<SigningKey> {
    let Some(path) = &g.key else {
        bail!(
            "no publisher key: pass --key FILE or set {} (create one with `denylistctl keygen --out FILE`)",
            env::PUBLISHER_KEY
        );
    };
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read publisher key {}", path.display()))?;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "denylistctl: warning: publisher key {} is readable by others (chmod 600 it)",
            path.display()
        );
    }
    SigningKey::from_pkcs8_pem(&pem).with_context(|| format!("publisher key {}", path.display()))
}

fn actor(given: Option<&String>) -> String {
    given
        .cloned()
        .or_else(|| std::env::var(env::USER).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "denylistctl".to_owned())
}

fn keygen(g: &Global, out: &Path) -> anyhow::Result<ExitCode> {
    let (key, pem) = SigningKey::generate().context("cannot generate a key")?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::anyhow!(
                    "{} already exists; refusing to overwrite a key (move it away first)",
                    out.display()
                )
            } else {
                anyhow::Error::new(e).context(format!("cannot create {}", out.display()))
            }
        })?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", out.display()))?;
    match g.output {
        Output::Json => print_json(&json!({
            "file": out.display().to_string(),
            "key_id": key.key_id(),
            "public_key": key.public_key(),
        }))?,
        Output::Table => print_text(&format!(
            "wrote {} (mode 0600)\nkey id:     {}\npublic key: {}\n\nTrust it in every sidecar: in nats.trusted_publishers (full authority), or as a\n[[nats.trusted_publisher]] with kinds/issuers (a scoped publisher) or heartbeats_only = true\n(the heartbeat component's key); see docs/CONFIG.md.\n",
            out.display(),
            key.key_id(),
            key.public_key()
        ))?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn stream_init(
    g: &Global,
    args: &StreamInitArgs,
    deadline: Instant,
) -> anyhow::Result<ExitCode> {
    let settings = StreamSettings {
        name: g.stream.clone(),
        replicas: args.replicas,
        max_age: args.max_age,
        duplicate_window: args.duplicate_window,
        allow_shorter_max_age: args.allow_shorter_max_age,
    };
    settings.validate()?;
    let (_client, js) = connect(g, deadline).await?;
    // Safe to repeat: init compares the stream with the settings before changing anything,
    // so a create or update that took effect but was not acknowledged is found done.
    let (outcome, summary) = step(
        deadline,
        format!("creating or updating stream {}", settings.name),
        StreamError::is_transient,
        || stream::init(&js, &settings),
    )
    .await?;
    match g.output {
        Output::Json => print_json(&json!({ "outcome": outcome, "stream": summary }))?,
        Output::Table => {
            let verb = match outcome {
                InitOutcome::Created => "created",
                InitOutcome::Updated => "updated",
                InitOutcome::Unchanged => "already up to date:",
            };
            print_text(&format!("stream {verb} {}\n\n", summary.name))?;
            print_text(&render::stream_text(&summary))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn stream_info(g: &Global, deadline: Instant) -> anyhow::Result<ExitCode> {
    let (_client, js) = connect(g, deadline).await?;
    let summary = step(
        deadline,
        format!("reading stream {}", g.stream),
        read_may_pass,
        || stream::info(&js, &g.stream),
    )
    .await?;
    match g.output {
        Output::Json => print_json(&serde_json::to_value(&summary)?)?,
        Output::Table => print_text(&render::stream_text(&summary))?,
    }
    Ok(ExitCode::SUCCESS)
}

fn snapshot_bucket(g: &Global, args: &SnapshotBucketArgs) -> String {
    args.bucket
        .clone()
        .unwrap_or_else(|| snapshot::default_bucket(&g.stream))
}

/// The trusted keys, required: a snapshot is only built from, or judged by, checked events.
fn required_trust(g: &Global, what: &str) -> anyhow::Result<TrustedKeys> {
    trusted(g)?.ok_or_else(|| {
        anyhow::anyhow!(
            "{what} needs the trusted publisher keys the sidecars use: pass --trust-config \
             SIDECAR_CONFIG (or set {}), or --trust KEY[,KEY] (or set {}) when no sidecar \
             trusts a scoped key",
            env::TRUST_CONFIG,
            env::TRUSTED_PUBLISHERS
        )
    })
}

async fn snapshot_create(
    g: &Global,
    args: &SnapshotCreateArgs,
    deadline: Instant,
) -> anyhow::Result<ExitCode> {
    let key = load_key(g)?;
    let trusted = required_trust(g, "snapshot create")?;
    // Sidecars apply a snapshot only if its signer is one of their trusted publishers
    // with full authority: one signed by another key, or by a scoped one, would replace
    // the stored snapshot with one every sidecar refuses.
    anyhow::ensure!(
        trusted.contains(key.key_id()),
        "the signing key {} is not among the trusted keys: every sidecar would refuse a \
         snapshot signed with it; nothing was stored (add its public key to the trusted \
         publishers first, or sign with a trusted key)",
        key.key_id()
    );
    anyhow::ensure!(
        trusted.has_full_authority(key.key_id()),
        "the signing key {} is a scoped publisher key: sidecars accept snapshots signed \
         only by a key with full authority; nothing was stored (sign with one of \
         nats.trusted_publishers)",
        key.key_id()
    );
    let bucket = snapshot_bucket(g, &args.bucket);
    let (_client, js) = connect(g, deadline).await?;
    let started = std::time::Instant::now();
    let now_ms = timespec::now_ms();
    // Safe to repeat: a snapshot replaces the stored one whole.
    let created = long_step(
        deadline,
        format!("snapshotting stream {} into bucket {bucket}", g.stream),
        snapshot_may_pass,
        || {
            let options = snapshot::CreateOptions {
                stream: &g.stream,
                bucket: &bucket,
                full: args.full,
                idle: read_idle(g),
                now_ms,
            };
            snapshot::create(&js, options, &key, &trusted)
        },
    )
    .await?;
    if let Some(why) = &created.previous_refused {
        eprintln!(
            "denylistctl: warning: the stored snapshot was not used ({why}); read the whole stream"
        );
    }
    if created.rejected > 0 {
        eprintln!(
            "denylistctl: warning: {} stored message(s) are not signed by a trusted key, or are \
             outside their key's scope, and were left out",
            created.rejected
        );
    }
    let m = &created.manifest;
    match g.output {
        Output::Json => print_json(&json!({
            "bucket": bucket,
            "stream": m.stream,
            "covered_sequence": m.covered_sequence,
            "events": m.event_count,
            "bytes": created.bytes,
            "previous_covered_sequence": created.previous,
            "read": created.read,
            "rejected": created.rejected,
            "dropped": created.dropped,
            "key_id": key.key_id(),
            "elapsed_ms": started.elapsed().as_millis() as u64,
        }))?,
        Output::Table => print_text(&format!(
            "snapshot of {} up to sequence {} stored in bucket {bucket}: {} event(s), {} bytes, signed by key {}\n\
             read {} event(s) {}; dropped {} (expired or without effect) in {:.1?}\n",
            m.stream,
            m.covered_sequence,
            m.event_count,
            created.bytes,
            key.key_id(),
            created.read,
            created.previous.map_or_else(
                || "from the start of the stream".to_owned(),
                |p| format!("after the previous snapshot (sequence {p})")
            ),
            created.dropped,
            started.elapsed(),
        ))?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn snapshot_info(
    g: &Global,
    args: &SnapshotBucketArgs,
    deadline: Instant,
) -> anyhow::Result<ExitCode> {
    let trusted = required_trust(g, "snapshot info")?;
    let bucket = snapshot_bucket(g, args);
    let (_client, js) = connect(g, deadline).await?;
    let d = long_step(
        deadline,
        format!("reading the snapshot in bucket {bucket}"),
        snapshot_may_pass,
        || snapshot::describe(&js, &g.stream, &bucket, &trusted),
    )
    .await?;
    let m = &d.manifest;
    let age_ms = timespec::now_ms().saturating_sub(m.created_at_ms).max(0);
    let behind = d.stream_last_sequence.saturating_sub(m.covered_sequence);
    match g.output {
        Output::Json => print_json(&json!({
            "bucket": bucket,
            "stream": m.stream,
            "covered_sequence": m.covered_sequence,
            "stream_last_sequence": d.stream_last_sequence,
            "events_behind": behind,
            "events": m.event_count,
            "bytes": d.bytes,
            "key_id": d.key_id,
            "created_at_ms": m.created_at_ms,
            "age_ms": age_ms,
        }))?,
        Output::Table => print_text(&format!(
            "snapshot in bucket {bucket}: valid, signed by key {}\n\
             covers {} up to sequence {} ({} event(s), {} bytes), taken {} ago\n\
             a starting sidecar replays the {behind} event(s) after it (the stream ends at {})\n",
            d.key_id,
            m.stream,
            m.covered_sequence,
            m.event_count,
            d.bytes,
            humantime::format_duration(Duration::from_secs(age_ms.unsigned_abs() / 1000)),
            d.stream_last_sequence,
        ))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The event of a one-off `revoke`, validated.
fn revoke_event(args: &RevokeArgs, now_ms: i64) -> anyhow::Result<Event> {
    // clap waives `requires` when the required flag conflicts with one given, so this is
    // checked here.
    if args.in_flight.is_some() || args.format.is_some() {
        bail!("--in-flight and --format apply only to --from-file");
    }
    let Some(kind) = args.kind.map(RuleKind::from) else {
        bail!("name what to revoke: jti, subject, session, key or issuer");
    };
    let issuer = args.issuer.clone().unwrap_or_default();
    if issuer.is_empty() {
        bail!("--issuer is required: rules are scoped by issuer");
    }
    if kind == RuleKind::Issuer && !args.targets.is_empty() {
        bail!("an issuer revocation takes no targets (it revokes every token of --issuer)");
    }
    if kind != RuleKind::Issuer && args.targets.is_empty() {
        bail!("name at least one {} to revoke", bulk::target_noun(kind));
    }
    let now_secs = now_ms.div_euclid(1000);
    let cutoff = match (&args.cutoff, kind.has_cutoff()) {
        (Some(_), false) => bail!("--cutoff applies only to subject and issuer revocations"),
        (Some(c), true) => timespec::parse_time(c, now_secs).context("--cutoff")?,
        (None, true) => now_secs,
        (None, false) => 0,
    };
    if cutoff > now_secs + MAX_CUTOFF_SKEW_SECS {
        bail!("--cutoff is in the future: tokens issued until then would be revoked too");
    }
    let expires_at = args
        .expires_at
        .as_deref()
        .map(|e| timespec::parse_time(e, now_secs).context("--expires-at"))
        .transpose()?;
    if expires_at.is_some_and(|e| e <= now_secs) {
        bail!("--expires-at is not in the future: the rule would be dropped at once");
    }
    let event = Event {
        event_id: event_id(args.event_id.as_deref(), now_ms)?,
        action: Action::Revoke(Revoke {
            kind,
            issuer,
            targets: args.targets.clone(),
            cutoff,
            expires_at,
        }),
        reason: args.reason.clone().unwrap_or_default(),
        actor: actor(args.actor.as_ref()),
        created_at_ms: now_ms,
    };
    event.validate().context("invalid revocation")?;
    Ok(event)
}

fn event_id(given: Option<&str>, now_ms: i64) -> anyhow::Result<String> {
    match given {
        Some(id) => {
            events::validate_event_id("event_id", id).context("--event-id")?;
            Ok(id.to_owned())
        }
        None => Ok(ids::new_event_id(now_ms)),
    }
}

/// Connects, checks the stream exists (so a missing stream fails at once with a hint instead
/// of after the retry deadline), and builds the publisher. Both steps are retried until
/// `deadline`: during a leader election the stream may briefly not answer.
async fn publisher(g: &Global, deadline: Instant) -> anyhow::Result<Publisher> {
    let key = load_key(g)?;
    let (_client, js) = connect(g, deadline).await?;
    step(
        deadline,
        format!("checking stream {}", g.stream),
        StreamError::is_transient,
        || stream::info(&js, &g.stream),
    )
    .await?;
    Ok(Publisher::new(js, key))
}

async fn publish_one(
    g: &Global,
    event: &Event,
    what: &str,
    deadline: Instant,
) -> anyhow::Result<ExitCode> {
    let publisher = publisher(g, deadline).await?;
    // Safe to repeat after an ambiguous failure: the event id is the `Nats-Msg-Id`, which
    // JetStream stores once within the stream's duplicate window.
    let published = publisher
        .publish_with_retry(event, deadline.saturating_duration_since(Instant::now()))
        .await
        .map_err(|e| {
            let why = if e.is_retryable() {
                format!(
                    " (still failing when --timeout {} ran out)",
                    humantime::format_duration(g.timeout)
                )
            } else {
                String::new()
            };
            anyhow::Error::new(e).context(format!("{what} NOT published{why}"))
        })?;
    print_published(g, event, &published)?;
    Ok(ExitCode::SUCCESS)
}

fn print_published(g: &Global, event: &Event, p: &Published) -> anyhow::Result<()> {
    match g.output {
        Output::Json => print_json(&json!({
            "event_id": p.event_id,
            "stream": p.stream,
            "sequence": p.sequence,
            "duplicate": p.duplicate,
            "event": render::event_json(event),
        })),
        Output::Table => {
            let verb = match event.action {
                Action::Revoke(_) => "revoked",
                Action::Lift { .. } => "lifted",
            };
            let dup = if p.duplicate {
                " (already stored by an earlier publish of this event id)"
            } else {
                ""
            };
            print_text(&format!(
                "{verb}: event {} at sequence {} of stream {}{dup}\n",
                p.event_id, p.sequence, p.stream
            ))?;
            if let Action::Revoke(_) = event.action
                && std::io::stderr().is_terminal()
            {
                eprintln!("undo with: denylistctl lift {}", p.event_id);
            }
            Ok(())
        }
    }
}

fn print_dry_run(g: &Global, events: &[Event]) -> anyhow::Result<()> {
    match g.output {
        Output::Json => print_json(&json!({
            "dry_run": true,
            "events": events.iter().map(render::event_json).collect::<Vec<_>>(),
        })),
        Output::Table => {
            print_text(&render::events_table(events).render(false))?;
            print_text(&format!(
                "dry run: {} event(s) valid; nothing was published\n",
                events.len()
            ))
        }
    }
}

async fn revoke(g: &Global, args: &RevokeArgs, deadline: Instant) -> anyhow::Result<ExitCode> {
    let event = revoke_event(args, timespec::now_ms())?;
    if args.dry_run {
        print_dry_run(g, std::slice::from_ref(&event))?;
        return Ok(ExitCode::SUCCESS);
    }
    publish_one(g, &event, "revocation", deadline).await
}

async fn lift(g: &Global, args: &LiftArgs, deadline: Instant) -> anyhow::Result<ExitCode> {
    let now_ms = timespec::now_ms();
    for id in &args.event_ids {
        events::validate_event_id("event_id", id).with_context(|| format!("cannot lift {id:?}"))?;
    }
    let event = Event {
        event_id: event_id(args.event_id.as_deref(), now_ms)?,
        action: Action::Lift {
            event_ids: args.event_ids.clone(),
        },
        reason: args.reason.clone().unwrap_or_default(),
        actor: actor(args.actor.as_ref()),
        created_at_ms: now_ms,
    };
    event.validate().context("invalid lift")?;
    if args.dry_run {
        print_dry_run(g, std::slice::from_ref(&event))?;
        return Ok(ExitCode::SUCCESS);
    }
    publish_one(g, &event, "lift", deadline).await
}

async fn revoke_file(g: &Global, args: &RevokeArgs, deadline: Instant) -> anyhow::Result<ExitCode> {
    let Some(path) = &args.from_file else {
        bail!("--from-file is required");
    };
    let content = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let format = match args.format {
        Some(FileFormatArg::Csv) => FileFormat::Csv,
        Some(FileFormatArg::Jsonl) => FileFormat::JsonLines,
        None => FileFormat::detect(path, &content),
    };
    let defaults = BulkDefaults {
        actor: actor(args.actor.as_ref()),
        reason: args.reason.clone().unwrap_or_default(),
        now_ms: timespec::now_ms(),
    };
    let file = match bulk::parse(&content, format, &defaults) {
        Ok(file) => file,
        Err(e) => {
            for line_error in &e.errors {
                eprintln!("{}: {line_error}", path.display());
            }
            if e.total > e.errors.len() {
                eprintln!(
                    "{}: … and {} more",
                    path.display(),
                    e.total - e.errors.len()
                );
            }
            bail!(
                "{}: {} problem(s) found; nothing was published",
                path.display(),
                e.total
            );
        }
    };
    let total = file.events.len();
    if args.dry_run {
        match g.output {
            Output::Json => print_json(&json!({
                "dry_run": true,
                "file": path.display().to_string(),
                "events": total,
                "event_id_prefix": format!("bulk-{}-", file.digest),
            }))?,
            Output::Table => print_text(&format!(
                "dry run: {total} revocation(s) in {} are valid (event ids bulk-{}-<line>[-c<cutoff>][-e<expiry>]); nothing was published\n",
                path.display(),
                file.digest
            ))?,
        }
        return Ok(ExitCode::SUCCESS);
    }

    let publisher = publisher(g, deadline).await?;
    let progress = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} revocations  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut duplicates = 0usize;
    let mut first = u64::MAX;
    let mut last = 0u64;
    let started = std::time::Instant::now();
    let result = publisher
        .publish_all(
            &file.events,
            args.in_flight.unwrap_or(DEFAULT_IN_FLIGHT),
            g.timeout,
            |p| {
                progress.inc(1);
                if p.duplicate {
                    duplicates += 1;
                }
                first = first.min(p.sequence);
                last = last.max(p.sequence);
            },
        )
        .await;
    let stored = match result {
        Ok(stored) => stored,
        Err(e) => {
            let done = progress.position();
            progress.abandon();
            return Err(anyhow::Error::new(e).context(format!(
                "bulk revocation from {} stopped after {done} of {total} were stored; \
                 run the same command again to finish (stored events are recognised by their ids)",
                path.display()
            )));
        }
    };
    progress.finish_and_clear();
    let elapsed = started.elapsed();
    match g.output {
        Output::Json => print_json(&json!({
            "file": path.display().to_string(),
            "events": stored.len(),
            "duplicates": duplicates,
            "first_sequence": (first != u64::MAX).then_some(first),
            "last_sequence": (last > 0).then_some(last),
            "event_id_prefix": format!("bulk-{}-", file.digest),
            "elapsed_ms": elapsed.as_millis() as u64,
        }))?,
        Output::Table => print_text(&format!(
            "revoked: {} event(s) from {} in {:.1}s (sequences {}..{}, {} already stored); event ids bulk-{}-<line>[-c<cutoff>][-e<expiry>]\n",
            stored.len(),
            path.display(),
            elapsed.as_secs_f64(),
            first,
            last,
            duplicates,
            file.digest
        ))?,
    }
    Ok(ExitCode::SUCCESS)
}

fn trusted(g: &Global) -> anyhow::Result<Option<TrustedKeys>> {
    crate::trust::trusted(&g.trust, g.trust_config.as_deref())
}

fn filter(args: &FilterArgs) -> Filter {
    Filter {
        issuer: args.issuer.clone(),
        kind: args.kind,
        target: args.target.clone(),
    }
}

async fn read_stream(
    g: &Global,
    start: Start,
    deadline: Instant,
) -> anyhow::Result<replay::Replay> {
    let trusted = trusted(g)?;
    let (_client, js) = connect(g, deadline).await?;
    let replay = long_step(
        deadline,
        format!("reading stream {}", g.stream),
        replay_may_pass,
        || replay::read(&js, &g.stream, start, trusted.as_ref(), read_idle(g)),
    )
    .await?;
    if !replay.rejected.is_empty() {
        let sequences: Vec<String> = replay
            .rejected
            .iter()
            .take(10)
            .map(|r| r.sequence.to_string())
            .collect();
        eprintln!(
            "denylistctl: warning: {} stored message(s) would not be applied by sidecars and are left out (sequence {}{}): {}",
            replay.rejected.len(),
            sequences.join(", "),
            if replay.rejected.len() > 10 {
                ", …"
            } else {
                ""
            },
            replay.rejected[0].reason
        );
    }
    if trusted.is_none() && g.output == Output::Table {
        eprintln!(
            "note: signatures not checked; pass --trust-config SIDECAR_CONFIG (or set {}) or \
             --trust PUBLIC_KEY (or set {}) to see only what sidecars apply",
            env::TRUST_CONFIG,
            env::TRUSTED_PUBLISHERS
        );
    }
    Ok(replay)
}

async fn list(g: &Global, args: &ListArgs, deadline: Instant) -> anyhow::Result<ExitCode> {
    let replay = read_stream(g, Start::All, deadline).await?;
    let now_secs = timespec::now_ms().div_euclid(1000);
    let filter = filter(&args.filter);
    let rules: Vec<_> = replay::live_rules(&replay.events, now_secs, args.max_token_lifetime)
        .into_iter()
        .filter(|r| filter.matches_rule(r))
        .collect();
    match g.output {
        Output::Json => print_json(&json!({
            "stream": g.stream,
            "last_sequence": replay.last_sequence,
            "rules": render::rules_json(&rules),
            "rejected": replay.rejected,
        }))?,
        Output::Table => {
            print_text(&render::rules_table(&rules).render(color()))?;
            print_text(&format!(
                "{} live rule(s); stream {} read up to sequence {}\n",
                rules.len(),
                g.stream,
                replay.last_sequence
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn history(g: &Global, args: &HistoryArgs, deadline: Instant) -> anyhow::Result<ExitCode> {
    let now_secs = timespec::now_ms().div_euclid(1000);
    let start = match &args.since {
        Some(s) => Start::Since(timespec::parse_since(s, now_secs).context("--since")?),
        None => Start::All,
    };
    let replay = read_stream(g, start, deadline).await?;
    let filter = filter(&args.filter);
    let events: Vec<_> = replay
        .events
        .into_iter()
        .filter(|s| filter.matches_event(&s.event))
        .collect();
    match g.output {
        Output::Json => print_json(&json!({
            "stream": g.stream,
            "last_sequence": replay.last_sequence,
            "events": render::history_json(&events),
            "rejected": replay.rejected,
        }))?,
        Output::Table => {
            print_text(&render::history_table(&events).render(color()))?;
            print_text(&format!("{} event(s)\n", events.len()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(g: &Global) -> anyhow::Result<ExitCode> {
    let client = sidecar(g).await?;
    let status = client.status().await?;
    match g.output {
        Output::Json => print_json(&render::status_json(&status))?,
        Output::Table => print_text(&render::status_text(&status))?,
    }
    Ok(if status.ready && !status.stale {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NEGATIVE)
    })
}

async fn fleet_status(g: &Global, args: &FleetArgs, deadline: Instant) -> anyhow::Result<ExitCode> {
    let (client, js) = connect(g, deadline).await?;
    let last = step(
        deadline,
        format!("reading stream {}", g.stream),
        read_may_pass,
        || stream::last_sequence(&js, &g.stream),
    )
    .await;
    let last = match last {
        Ok(last) => Some(last),
        Err(e) => {
            eprintln!(
                "denylistctl: warning: {e}; laggards are judged by readiness and staleness only"
            );
            None
        }
    };
    let replies = step(
        deadline,
        format!(
            "asking the fleet on {}",
            denylist_client::subjects::STATUS_SUBJECT
        ),
        fleet_may_pass,
        || fleet::collect(&client, args.wait),
    )
    .await?;
    let laggards = replies
        .members
        .iter()
        .filter(|m| fleet::is_laggard(m, last))
        .count();
    match g.output {
        Output::Json => print_json(&render::fleet_json(
            &replies.members,
            replies.undecodable,
            last,
        ))?,
        Output::Table => {
            print_text(&render::fleet_table(&replies.members, last).render(color()))?;
            print_text(&format!(
                "{} sidecar(s) answered within {}; {laggards} lagging; stream last sequence {}\n",
                replies.members.len(),
                humantime::format_duration(args.wait),
                last.map_or_else(|| "unknown".to_owned(), |l| l.to_string()),
            ))?;
        }
    }
    if replies.members.is_empty() {
        eprintln!(
            "denylistctl: no sidecar answered on {} within {}",
            denylist_client::subjects::STATUS_SUBJECT,
            humantime::format_duration(args.wait)
        );
        // Nothing was confirmed: `fleet && echo applied` must not pass.
        return Ok(ExitCode::from(EXIT_NEGATIVE));
    }
    if replies.undecodable > 0 {
        eprintln!(
            "denylistctl: warning: {} answer(s) were not FleetMember messages",
            replies.undecodable
        );
    }
    if let Some(expect) = args.expect
        && replies.members.len() < expect
    {
        eprintln!(
            "denylistctl: only {} of {expect} expected sidecars answered",
            replies.members.len()
        );
        return Ok(ExitCode::from(EXIT_NEGATIVE));
    }
    Ok(if laggards > 0 {
        ExitCode::from(EXIT_NEGATIVE)
    } else {
        ExitCode::SUCCESS
    })
}

async fn verify(g: &Global, token: &str) -> anyhow::Result<ExitCode> {
    let token = if token == "-" {
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .context("cannot read the token from standard input")?;
        buf.trim().to_owned()
    } else {
        token.trim().to_owned()
    };
    if token.is_empty() {
        bail!("no token given");
    }
    let client = sidecar(g).await?;
    let answer = client.verify(&token).await?;
    match g.output {
        Output::Json => print_json(&render::verify_json(&answer))?,
        Output::Table => print_text(&render::verify_text(&answer))?,
    }
    Ok(if answer.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NEGATIVE)
    })
}

#[cfg(test)]
mod tests;
