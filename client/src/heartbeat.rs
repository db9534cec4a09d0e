//! The fleet heartbeat: what `denylistctl heartbeat` runs.
//!
//! Every sidecar must know, continuously, that it still hears the stream (staleness) and
//! whether it has missed an event (a gap). Asking the stream is a JetStream API request;
//! ten thousand sidecars asking every two seconds is five thousand requests a second, and
//! the API queue drops everything beyond 10 000 pending. So one small component asks
//! instead: [`HeartbeatPublisher`] reads the stream's state with one stream-info request per
//! interval and publishes it, signed with a publisher key (Ed25519, domain-separated from
//! event signatures), on a core subject (`denylist.v1.heartbeat`) that every sidecar
//! subscribes to. The fleet costs one request per interval per replica, whatever its size.
//!
//! Several replicas may run at once (two in `deploy/base`): sidecars accept any trusted
//! heartbeat and keep the highest sequence, so replicas need no coordination. A heartbeat
//! is published only after the stream answered: silence means "the stream cannot be
//! read", and sidecars that hear nothing fall back to asking the stream themselves.

use std::time::Duration;

use denylist_proto::envelope::{HEARTBEAT_SUBJECT, Heartbeat, SigningKey};
use denylist_proto::subjects;
use prost::Message as _;

/// What a heartbeat publisher publishes, where and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatSettings {
    /// The stream described. Default `DENYLIST`.
    pub stream: String,
    /// The core subject published on. Default `denylist.v1.heartbeat`.
    pub subject: String,
    /// Time between two heartbeats. Default 1 s.
    pub interval: Duration,
    /// Bound on the stream-info request. Default 5 s.
    pub request_timeout: Duration,
    /// This replica's name, carried in each heartbeat for logs (e.g. the pod name).
    pub publisher: String,
}

impl Default for HeartbeatSettings {
    fn default() -> Self {
        Self {
            stream: subjects::DEFAULT_STREAM.to_owned(),
            subject: HEARTBEAT_SUBJECT.to_owned(),
            interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            publisher: "denylistctl".to_owned(),
        }
    }
}

impl HeartbeatSettings {
    /// Checks the settings without touching the network; the error names the setting.
    pub fn validate(&self) -> Result<(), HeartbeatError> {
        let invalid = |setting, message: &str| HeartbeatError::Invalid {
            setting,
            message: message.to_owned(),
        };
        if self.interval < Duration::from_millis(100) {
            return Err(invalid("interval", "must be at least 100ms"));
        }
        if self.request_timeout < Duration::from_millis(100) {
            return Err(invalid("request_timeout", "must be at least 100ms"));
        }
        let subject = &self.subject;
        if subject.is_empty()
            || subject.contains(['*', '>', ' ', '\t', '\r', '\n'])
            || subject.split('.').any(str::is_empty)
        {
            return Err(invalid("subject", "must be a subject without wildcards"));
        }
        if subject.starts_with(&format!("{}.", subjects::EVENTS_PREFIX)) {
            return Err(invalid(
                "subject",
                "must not be an event subject: the stream would store heartbeats",
            ));
        }
        if subject.starts_with("denylist.v1.live.") {
            return Err(invalid(
                "subject",
                "must not be under the live feed denylist.v1.live.>",
            ));
        }
        if self.stream.is_empty() || self.stream.contains(['.', '*', '>', ' ']) {
            return Err(invalid("stream", "must be a stream name"));
        }
        Ok(())
    }
}

/// Why one heartbeat was not published (the next one is tried on time anyway).
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    /// The settings are unusable; names the setting.
    #[error("heartbeat setting `{setting}`: {message}")]
    Invalid {
        /// The setting at fault.
        setting: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The stream did not say its state.
    #[error("stream {stream}: cannot read its state: {message}")]
    StreamInfo {
        /// Stream name.
        stream: String,
        /// What failed.
        message: String,
    },
    /// The heartbeat could not be published.
    #[error("cannot publish the heartbeat on {subject}: {message}")]
    Publish {
        /// The subject.
        subject: String,
        /// What failed.
        message: String,
    },
}

/// Counts of a run, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeartbeatStats {
    /// Heartbeats published.
    pub published: u64,
    /// Intervals in which none was (the stream or NATS failed).
    pub failed: u64,
}

/// Publishes signed heartbeats; see the module docs.
#[derive(Debug)]
pub struct HeartbeatPublisher {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    key: SigningKey,
    settings: HeartbeatSettings,
}

impl HeartbeatPublisher {
    /// A publisher over a connected client. Fails if a setting is unusable.
    pub fn new(
        client: async_nats::Client,
        key: SigningKey,
        settings: HeartbeatSettings,
    ) -> Result<Self, HeartbeatError> {
        settings.validate()?;
        Ok(Self {
            js: async_nats::jetstream::new(client.clone()),
            client,
            key,
            settings,
        })
    }

    /// The settings in use.
    pub fn settings(&self) -> &HeartbeatSettings {
        &self.settings
    }

    /// One heartbeat: the stream's state (one stream-info request), signed and published.
    pub async fn beat(&self) -> Result<Heartbeat, HeartbeatError> {
        let s = &self.settings;
        let stream_error = |message: String| HeartbeatError::StreamInfo {
            stream: s.stream.clone(),
            message,
        };
        let stream = tokio::time::timeout(s.request_timeout, self.js.get_stream(&s.stream))
            .await
            .map_err(|_| stream_error(format!("no answer within {:?}", s.request_timeout)))?
            .map_err(|e| stream_error(e.to_string()))?;
        let info = stream.cached_info();
        let heartbeat = Heartbeat {
            stream: s.stream.clone(),
            stream_created_unix_nanos: i64::try_from(info.created.unix_timestamp_nanos())
                .unwrap_or(i64::MAX),
            last_sequence: info.state.last_sequence,
            first_sequence: info.state.first_sequence,
            published_at_ms: now_ms(),
            publisher: s.publisher.clone(),
        };
        let signed = self.key.sign_heartbeat(&heartbeat);
        self.client
            .publish(s.subject.clone(), signed.encode_to_vec().into())
            .await
            .map_err(|e| HeartbeatError::Publish {
                subject: s.subject.clone(),
                message: e.to_string(),
            })?;
        Ok(heartbeat)
    }

    /// Publishes a heartbeat every interval until `shutdown` completes. A failed interval is
    /// logged and the next one is tried on time: sidecars tolerate missed heartbeats.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> HeartbeatStats {
        let mut stats = HeartbeatStats::default();
        let mut failing = false;
        let mut ticker = tokio::time::interval(self.settings.interval);
        // A slow stream-info must not be followed by a burst of catch-up heartbeats.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return stats,
                _ = ticker.tick() => {}
            }
            let beat = tokio::select! {
                () = &mut shutdown => return stats,
                beat = self.beat() => beat,
            };
            match beat {
                Ok(h) => {
                    stats.published += 1;
                    if stats.published == 1 || failing {
                        failing = false;
                        tracing::info!(stream = %h.stream, last_sequence = h.last_sequence, subject = %self.settings.subject, "publishing fleet heartbeats");
                    }
                    tracing::debug!(last_sequence = h.last_sequence, "heartbeat published");
                }
                Err(e) => {
                    stats.failed += 1;
                    failing = true;
                    tracing::warn!(error = %e, "heartbeat not published");
                }
            }
        }
    }
}

/// Unix milliseconds now.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_settings_are_named() {
        let ok = HeartbeatSettings::default();
        ok.validate().unwrap();
        assert_eq!(ok.subject, "denylist.v1.heartbeat");
        assert_eq!(ok.interval, Duration::from_secs(1));
        let named = |s: HeartbeatSettings| match s.validate() {
            Err(HeartbeatError::Invalid { setting, .. }) => setting,
            other => panic!("{other:?}"),
        };
        let with = |f: fn(&mut HeartbeatSettings)| {
            let mut s = HeartbeatSettings::default();
            f(&mut s);
            s
        };
        assert_eq!(
            named(with(|s| s.interval = Duration::from_millis(10))),
            "interval"
        );
        assert_eq!(
            named(with(|s| s.request_timeout = Duration::ZERO)),
            "request_timeout"
        );
        assert_eq!(
            named(with(|s| s.subject = "denylist.v1.>".into())),
            "subject"
        );
        assert_eq!(named(with(|s| s.subject = "a..b".into())), "subject");
        assert_eq!(
            named(with(|s| s.subject = "denylist.v1.events.hb".into())),
            "subject"
        );
        assert_eq!(
            named(with(|s| s.subject = "denylist.v1.live.hb".into())),
            "subject"
        );
        assert_eq!(named(with(|s| s.stream = "A.B".into())), "stream");
    }
}
