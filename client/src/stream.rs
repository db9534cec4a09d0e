//! The JetStream stream every sidecar follows: [`init`] creates or updates it, [`info`]
//! describes it.
//!
//! The stream stores `denylist.v1.events.>` in files, with `Nats-Msg-Id` deduplication over a
//! duplicate window, direct gets allowed (reads that keep no state on the server, which is
//! how sidecars catch up: see the sidecar's `sync::direct`), and a `republish`
//! of every stored message to `denylist.v1.live.>`: sidecars follow that with a plain core
//! subscription, which carries each message's stream sequence in its headers so a gap is
//! visible. Sidecars never alter the stream; operators do, through here.
//!
//! `max_age` must cover the longest token lifetime of any issuer: a revocation that ages out
//! of the stream is forgotten by every sidecar that starts afterwards, while the token it
//! revoked may still be valid. So [`init`] refuses to shorten an existing stream's `max_age`
//! unless told to ([`StreamSettings::allow_shorter_max_age`]).
//!
//! Errors tell a JetStream that is briefly unavailable (a leader election, a timeout) from
//! one that refused: [`StreamError::is_transient`]. `init` is safe to retry: it compares
//! the stream with the settings before changing anything.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    context::{CreateStreamErrorKind, GetStreamErrorKind},
    stream::{Config, Republish, StorageType},
};
use denylist_proto::subjects;
use serde::Serialize;

/// What [`init`] makes the stream look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// Stream name. Default `DENYLIST`.
    pub name: String,
    /// Replicas: 1 for local use, 3 in production. Default 1.
    pub replicas: usize,
    /// How long events are kept; at least the longest token lifetime of any issuer. Zero keeps
    /// them forever. Default 30 days.
    pub max_age: Duration,
    /// Window in which a repeated `Nats-Msg-Id` is dropped as a duplicate. Default 2 minutes.
    pub duplicate_window: Duration,
    /// Allow [`init`] to lower an existing stream's `max_age` (which drops older revocations at
    /// once). Default false.
    pub allow_shorter_max_age: bool,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            name: subjects::DEFAULT_STREAM.to_owned(),
            replicas: 1,
            max_age: DEFAULT_MAX_AGE,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            allow_shorter_max_age: false,
        }
    }
}

/// Default `max_age`: 30 days.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default duplicate window: 2 minutes.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Why the stream could not be created, updated or read.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A setting is out of range; names it.
    #[error("stream setting `{setting}`: {message}")]
    Invalid {
        /// The setting at fault.
        setting: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The stream does not exist.
    #[error("JetStream stream {0} does not exist (create it with `denylistctl stream init`)")]
    NotFound(String),
    /// The stream exists but this change is refused.
    #[error("stream {name}: {message}")]
    Refused {
        /// Stream name.
        name: String,
        /// Why.
        message: String,
    },
    /// JetStream refused, or failed in a way not known to pass.
    #[error("stream {name}: {message}")]
    JetStream {
        /// Stream name.
        name: String,
        /// What JetStream or async-nats said.
        message: String,
    },
    /// JetStream did not answer in time, or answered that it is briefly unavailable (no
    /// meta or stream leader during an election, the stream offline): trying again may work.
    #[error("stream {name}: JetStream unavailable: {message}")]
    Unavailable {
        /// Stream name.
        name: String,
        /// What JetStream or async-nats said.
        message: String,
    },
}

impl StreamError {
    /// Whether trying again may succeed: see [`StreamError::Unavailable`].
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

impl StreamSettings {
    /// Checks the settings without touching the network.
    pub fn validate(&self) -> Result<(), StreamError> {
        if self.name.is_empty()
            || self
                .name
                .contains(|c: char| matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace())
        {
            return Err(invalid(
                "name",
                "must be a stream name (no spaces, `.`, `*`, `>`, `/` or `\\`)",
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(invalid("replicas", "must be between 1 and 5"));
        }
        if self.duplicate_window.is_zero() {
            return Err(invalid(
                "duplicate_window",
                "must be positive: it is what makes re-publishing safe",
            ));
        }
        if !self.max_age.is_zero() && self.max_age < self.duplicate_window {
            return Err(invalid(
                "max_age",
                "must not be shorter than the duplicate window",
            ));
        }
        if !self.max_age.is_zero() && self.max_age < Duration::from_secs(3600) {
            return Err(invalid(
                "max_age",
                "must be at least 1h (and at least the longest token lifetime of any issuer)",
            ));
        }
        Ok(())
    }

    /// The full stream configuration for a new stream.
    pub fn to_config(&self) -> Config {
        let mut config = Config {
            name: self.name.clone(),
            ..Config::default()
        };
        self.apply_to(&mut config);
        config
    }

    /// Sets the fields this crate owns on an existing configuration, keeping the rest (limits
    /// or placement an operator set by other means).
    fn apply_to(&self, config: &mut Config) {
        config.subjects = vec![subjects::EVENTS_WILDCARD.to_owned()];
        config.storage = StorageType::File;
        config.num_replicas = self.replicas;
        config.max_age = self.max_age;
        config.duplicate_window = self.duplicate_window;
        config.allow_direct = true;
        config.republish = Some(Republish {
            source: subjects::EVENTS_WILDCARD.to_owned(),
            destination: subjects::LIVE_DESTINATION.to_owned(),
            headers_only: false,
        });
        if config.description.is_none() {
            config.description = Some("denylist revocation events".to_owned());
        }
    }
}

/// What [`init`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InitOutcome {
    /// The stream did not exist and was created.
    Created,
    /// The stream existed with other settings and was updated.
    Updated,
    /// The stream already had these settings.
    Unchanged,
}

/// A stream's configuration and state, as `denylistctl stream info` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamSummary {
    /// Stream name.
    pub name: String,
    /// Stored subjects.
    pub subjects: Vec<String>,
    /// `file` or `memory`.
    pub storage: String,
    /// Replicas.
    pub replicas: usize,
    /// Maximum event age in seconds; 0 = forever.
    pub max_age_secs: u64,
    /// Duplicate window in seconds.
    pub duplicate_window_secs: u64,
    /// Whether direct gets are allowed.
    pub allow_direct: bool,
    /// Republish source → destination, if set.
    pub republish: Option<RepublishSummary>,
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// First stored sequence.
    pub first_sequence: u64,
    /// Last assigned sequence.
    pub last_sequence: u64,
    /// Time of the first stored message (RFC 3339), if any.
    pub first_time: Option<String>,
    /// Time of the last message (RFC 3339), if any.
    pub last_time: Option<String>,
    /// Consumers on the stream.
    pub consumers: usize,
    /// Cluster leader, when clustered.
    pub leader: Option<String>,
    /// What a sidecar fleet would trip over in this configuration (empty when sound).
    pub problems: Vec<String>,
}

/// The stream's `republish` setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepublishSummary {
    /// Source subject filter.
    pub source: String,
    /// Destination subject.
    pub destination: String,
    /// Whether only headers are republished.
    pub headers_only: bool,
}

impl StreamSummary {
    /// Summarises a stream's info.
    pub fn from_info(info: &jetstream::stream::Info) -> Self {
        let c = &info.config;
        let s = &info.state;
        let republish = c.republish.as_ref().map(|r| RepublishSummary {
            source: r.source.clone(),
            destination: r.destination.clone(),
            headers_only: r.headers_only,
        });
        let mut problems = Vec::new();
        if !c.subjects.iter().any(|x| x == subjects::EVENTS_WILDCARD) {
            problems.push(format!(
                "does not store {}: publishes will find no stream",
                subjects::EVENTS_WILDCARD
            ));
        }
        match &republish {
            None => problems.push(format!(
                "no republish to {}: sidecars will not see events live",
                subjects::LIVE_WILDCARD
            )),
            Some(r) if r.destination != subjects::LIVE_DESTINATION || r.headers_only => problems
                .push(format!(
                    "republish goes to {}{}; sidecars follow {} with bodies",
                    r.destination,
                    if r.headers_only {
                        " (headers only)"
                    } else {
                        ""
                    },
                    subjects::LIVE_DESTINATION
                )),
            Some(_) => {}
        }
        if !c.allow_direct {
            problems.push(
                "direct gets are off: sidecars cannot catch up without creating consumers"
                    .to_owned(),
            );
        }
        if c.storage != StorageType::File {
            problems.push("memory storage: events are lost when the servers restart".to_owned());
        }
        if c.duplicate_window.is_zero() {
            problems.push("no duplicate window: a retried publish is stored twice".to_owned());
        }
        Self {
            name: c.name.clone(),
            subjects: c.subjects.clone(),
            storage: match c.storage {
                StorageType::File => "file",
                StorageType::Memory => "memory",
            }
            .to_owned(),
            replicas: c.num_replicas,
            max_age_secs: c.max_age.as_secs(),
            duplicate_window_secs: c.duplicate_window.as_secs(),
            allow_direct: c.allow_direct,
            republish,
            messages: s.messages,
            bytes: s.bytes,
            first_sequence: s.first_sequence,
            last_sequence: s.last_sequence,
            first_time: (s.messages > 0)
                .then(|| crate::timespec::format_datetime(s.first_timestamp)),
            last_time: (s.last_sequence > 0)
                .then(|| crate::timespec::format_datetime(s.last_timestamp)),
            consumers: s.consumer_count,
            leader: info.cluster.as_ref().and_then(|c| c.leader.clone()),
            problems,
        }
    }
}

/// Creates the stream, or updates it to `settings`, and returns what it did with the result.
///
/// An existing stream keeps the settings this crate does not own. Refused: switching storage
/// (JetStream cannot), and lowering `max_age` unless `settings.allow_shorter_max_age`.
pub async fn init(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<(InitOutcome, StreamSummary), StreamError> {
    settings.validate()?;
    let name = settings.name.clone();
    let existing = match js.get_stream(&name).await {
        Ok(stream) => Some(stream.cached_info().clone()),
        Err(e) if is_not_found(&e.kind()) => None,
        Err(e) => return Err(get_error(&name, e)),
    };
    let Some(existing) = existing else {
        let stream = js
            .create_stream(settings.to_config())
            .await
            .map_err(|e| create_error(&name, e))?;
        return Ok((
            InitOutcome::Created,
            StreamSummary::from_info(stream.cached_info()),
        ));
    };

    let current = &existing.config;
    if current.storage != StorageType::File {
        return Err(StreamError::Refused {
            name,
            message: "uses memory storage, which JetStream cannot change in place; \
                      move the events to a new file-backed stream"
                .to_owned(),
        });
    }
    let shorter = match (current.max_age.is_zero(), settings.max_age.is_zero()) {
        (true, false) => true,
        (false, false) => settings.max_age < current.max_age,
        (_, true) => false,
    };
    if shorter && !settings.allow_shorter_max_age {
        return Err(StreamError::Refused {
            name,
            message: format!(
                "max_age would drop from {} to {}, forgetting older revocations at once; \
                 pass --allow-shorter-max-age if that is intended",
                format_age(current.max_age),
                format_age(settings.max_age)
            ),
        });
    }
    let mut wanted = current.clone();
    settings.apply_to(&mut wanted);
    if wanted == *current {
        return Ok((InitOutcome::Unchanged, StreamSummary::from_info(&existing)));
    }
    let info = js
        .update_stream(&wanted)
        .await
        .map_err(|e| create_error(&name, e))?;
    Ok((InitOutcome::Updated, StreamSummary::from_info(&info)))
}

/// Describes the stream.
pub async fn info(js: &jetstream::Context, name: &str) -> Result<StreamSummary, StreamError> {
    let stream = get(js, name).await?;
    Ok(StreamSummary::from_info(stream.cached_info()))
}

/// The stream's last assigned sequence (what a caught-up sidecar has applied).
pub async fn last_sequence(js: &jetstream::Context, name: &str) -> Result<u64, StreamError> {
    let stream = get(js, name).await?;
    Ok(stream.cached_info().state.last_sequence)
}

/// The stream handle, with its info as of now.
pub(crate) async fn get(
    js: &jetstream::Context,
    name: &str,
) -> Result<jetstream::stream::Stream, StreamError> {
    match js.get_stream(name).await {
        Ok(stream) => Ok(stream),
        Err(e) if is_not_found(&e.kind()) => Err(StreamError::NotFound(name.to_owned())),
        Err(e) => Err(get_error(name, e)),
    }
}

/// JetStream API errors that say "not now" rather than "no": no meta leader (10008), the
/// stream offline (10118, 10194), or any 503 (temporarily unavailable, insufficient
/// resources while a peer is down).
fn api_error_is_transient(e: &jetstream::Error) -> bool {
    e.code() == 503
        || matches!(
            e.error_code(),
            jetstream::ErrorCode::CLUSTER_NOT_AVAILABLE
                | jetstream::ErrorCode::STREAM_OFFLINE
                | jetstream::ErrorCode::STREAM_OFFLINE_REASON
        )
}

fn unavailable(name: &str, e: impl std::fmt::Display) -> StreamError {
    StreamError::Unavailable {
        name: name.to_owned(),
        message: e.to_string(),
    }
}

/// A failed STREAM.INFO, classified.
fn get_error(name: &str, e: jetstream::context::GetStreamError) -> StreamError {
    let transient = match e.kind() {
        GetStreamErrorKind::JetStream(api) => api_error_is_transient(&api),
        // A request that timed out, found no responders (JetStream restarting) or was cut by
        // a disconnect. The source says which; all of them may pass.
        GetStreamErrorKind::Request => true,
        GetStreamErrorKind::EmptyName | GetStreamErrorKind::InvalidStreamName => false,
    };
    if transient {
        unavailable(name, e)
    } else {
        js_error(name, e)
    }
}

/// A failed STREAM.CREATE or STREAM.UPDATE, classified.
fn create_error(name: &str, e: jetstream::context::CreateStreamError) -> StreamError {
    let transient = match e.kind() {
        CreateStreamErrorKind::JetStream(api) => api_error_is_transient(&api),
        CreateStreamErrorKind::TimedOut
        | CreateStreamErrorKind::JetStreamUnavailable
        | CreateStreamErrorKind::Response => true,
        _ => false,
    };
    if transient {
        unavailable(name, e)
    } else {
        js_error(name, e)
    }
}

fn is_not_found(kind: &GetStreamErrorKind) -> bool {
    matches!(kind, GetStreamErrorKind::JetStream(e)
        if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

fn format_age(d: Duration) -> String {
    if d.is_zero() {
        "forever".to_owned()
    } else {
        humantime::format_duration(d).to_string()
    }
}

fn invalid(setting: &'static str, message: impl Into<String>) -> StreamError {
    StreamError::Invalid {
        setting,
        message: message.into(),
    }
}

pub(crate) fn js_error(name: &str, e: impl std::fmt::Display) -> StreamError {
    StreamError::JetStream {
        name: name.to_owned(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests;
