//! NATS names shared by publishers and sidecars.
//!
//! Events are stored in a JetStream stream on `denylist.v1.events.<kind>`; the
//! stream republishes each stored message to `denylist.v1.live.<kind>` with its
//! stream sequence in headers, so sidecars follow live traffic on a plain core
//! subscription (cheap at 10 000 subscribers) and catch up after start or a detected
//! gap with batched direct gets, which create no consumer. A fleet heartbeat on a core
//! subject tells every sidecar the stream's last sequence.

/// Default stream name.
pub const DEFAULT_STREAM: &str = "DENYLIST";
/// Subjects the stream stores.
pub const EVENTS_WILDCARD: &str = "denylist.v1.events.>";
/// Prefix of stored event subjects.
pub const EVENTS_PREFIX: &str = "denylist.v1.events";
/// Subjects the stream republishes stored events to.
pub const LIVE_WILDCARD: &str = "denylist.v1.live.>";
/// The republish destination pattern (`{{wildcard(1)}}` is the kind).
pub const LIVE_DESTINATION: &str = "denylist.v1.live.>";
/// Fleet status requests; every sidecar answers with a `FleetMember`.
pub const STATUS_SUBJECT: &str = "denylist.v1.status";

/// The header a republished message carries its stream sequence in.
pub const HEADER_SEQUENCE: &str = "Nats-Sequence";
/// The header JetStream deduplicates publishes by.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";

/// The subject an event of this action/kind is published on: `denylist.v1.events.jti`,
/// …, or `denylist.v1.events.lift`.
pub fn event_subject(kind_or_lift: &str) -> String {
    format!("{EVENTS_PREFIX}.{kind_or_lift}")
}

/// The subject for an event.
pub fn subject_for(event: &crate::events::Event) -> String {
    match &event.action {
        crate::events::Action::Revoke(r) => event_subject(r.kind.as_str()),
        crate::events::Action::Lift { .. } => event_subject("lift"),
    }
}
