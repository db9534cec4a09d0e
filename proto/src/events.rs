//! Revocation events: the validated, in-memory form of `denylist.v1.RevocationEvent`,
//! decoded from protobuf (NATS) or from a JSON line (the standalone revocations file).
//!
//! Everything here treats its input as hostile: sizes are bounded, ids are restricted
//! to characters that are safe in a NATS header, and a bad event is an [`EventError`]
//! naming the field, never a panic.

use crate::pb;
use serde::Deserialize;

mod borrowed;

pub use borrowed::{ActionRef, EventRef, RevokeRef, Targets, TargetsIter};

/// Longest accepted event id (it doubles as the `Nats-Msg-Id` header).
pub const MAX_EVENT_ID_LEN: usize = 128;
/// Longest accepted issuer, target, reason or actor string.
pub const MAX_FIELD_LEN: usize = 1024;
/// Most targets one event may carry.
pub const MAX_TARGETS: usize = 10_000;

/// Seconds a rule is kept (and matched) beyond the moment the design lets it go.
///
/// Covers the largest verification leeway a sidecar accepts (10 minutes) plus clock
/// skew between publishers and sidecars: dropping a `jti` rule exactly at the token's
/// `exp` would let the revoked token through for the whole leeway. Snapshot writers
/// keep events at least this long past their expiry too.
pub const EXPIRY_GRACE_SECS: i64 = 15 * 60;

/// What a revocation rule matches (all kinds are scoped by issuer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    /// `iss` and `jti` equal.
    Jti,
    /// `iss` and `sub` equal and `iat` <= cut-off.
    Subject,
    /// `iss` and `sid` equal.
    Session,
    /// `iss` and header `kid` equal.
    Key,
    /// `iss` equal and `iat` <= cut-off.
    Issuer,
}

impl RuleKind {
    /// Every kind, in a fixed order.
    pub const ALL: [Self; 5] = [
        Self::Jti,
        Self::Subject,
        Self::Session,
        Self::Key,
        Self::Issuer,
    ];

    /// Lower-case name, as used in NATS subjects, files and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jti => "jti",
            Self::Subject => "subject",
            Self::Session => "session",
            Self::Key => "key",
            Self::Issuer => "issuer",
        }
    }

    /// Whether rules of this kind compare the token's `iat` with a cut-off.
    pub fn has_cutoff(self) -> bool {
        matches!(self, Self::Subject | Self::Issuer)
    }

    /// Converts from the protobuf enum.
    pub fn from_proto(kind: pb::RuleKind) -> Option<Self> {
        match kind {
            pb::RuleKind::Unspecified => None,
            pb::RuleKind::Jti => Some(Self::Jti),
            pb::RuleKind::Subject => Some(Self::Subject),
            pb::RuleKind::Session => Some(Self::Session),
            pb::RuleKind::Key => Some(Self::Key),
            pb::RuleKind::Issuer => Some(Self::Issuer),
        }
    }

    /// Converts to the protobuf enum.
    pub fn to_proto(self) -> pb::RuleKind {
        match self {
            Self::Jti => pb::RuleKind::Jti,
            Self::Subject => pb::RuleKind::Subject,
            Self::Session => pb::RuleKind::Session,
            Self::Key => pb::RuleKind::Key,
            Self::Issuer => pb::RuleKind::Issuer,
        }
    }
}

impl std::fmt::Display for RuleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RuleKind {
    type Err = EventError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| EventError::invalid("kind", format!("unknown rule kind {s:?}")))
    }
}

/// What an event does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// Adds one rule per target.
    Revoke(Revoke),
    /// Withdraws earlier revocations by event id.
    Lift {
        /// Ids of the events to withdraw.
        event_ids: Vec<String>,
    },
}

/// The rules a revocation event adds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Revoke {
    /// Rule kind.
    pub kind: RuleKind,
    /// Exact `iss`.
    pub issuer: String,
    /// jti / sub / sid / kid values; empty for [`RuleKind::Issuer`] (which has exactly one rule).
    pub targets: Vec<String>,
    /// Unix seconds; tokens with `iat` <= cut-off match subject and issuer rules.
    pub cutoff: i64,
    /// Unix seconds after which the rules may be dropped; `None` derives it from the
    /// issuer's maximum token lifetime (key rules: kept until lifted).
    pub expires_at: Option<i64>,
}

/// A validated revocation event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Event {
    /// Unique, stable id.
    pub event_id: String,
    /// What the event does.
    pub action: Action,
    /// Free text for callers.
    pub reason: String,
    /// Who published it.
    pub actor: String,
    /// Unix milliseconds of creation.
    pub created_at_ms: i64,
}

/// Why an event was rejected. Names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The bytes are not an event at all.
    #[error("cannot decode event: {0}")]
    Decode(String),
    /// A field is missing or out of bounds.
    #[error("field `{field}`: {message}")]
    Invalid {
        /// The field at fault.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

impl EventError {
    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }
}

/// Checks that an event id is non-empty, bounded and header-safe.
pub fn validate_event_id(field: &'static str, id: &str) -> Result<(), EventError> {
    if id.is_empty() {
        return Err(EventError::invalid(field, "must not be empty"));
    }
    if id.len() > MAX_EVENT_ID_LEN {
        return Err(EventError::invalid(
            field,
            format!("longer than {MAX_EVENT_ID_LEN} bytes"),
        ));
    }
    // No early exit: a fold over the bytes compiles to vector code, and a snapshot
    // checks a million ids.
    let allowed = id.bytes().fold(true, |ok, b| {
        ok & (b.is_ascii_alphanumeric() | (b == b'-') | (b == b'_') | (b == b'.') | (b == b':'))
    });
    if !allowed {
        return Err(EventError::invalid(
            field,
            "may hold only ASCII letters, digits and - _ . :",
        ));
    }
    Ok(())
}

fn validate_text(field: &'static str, s: &str, required: bool) -> Result<(), EventError> {
    if required && s.is_empty() {
        return Err(EventError::invalid(field, "must not be empty"));
    }
    if s.len() > MAX_FIELD_LEN {
        return Err(EventError::invalid(
            field,
            format!("longer than {MAX_FIELD_LEN} bytes"),
        ));
    }
    // Printable ASCII (nearly every reason and target) needs no decoding; the rest is
    // checked char by char (C0, DEL and C1 controls).
    // (A fold without early exit: vector code, as in `validate_event_id`.)
    let printable_ascii = s.bytes().fold(true, |ok, b| ok & (0x20..0x7f).contains(&b));
    if !printable_ascii && s.chars().any(char::is_control) {
        return Err(EventError::invalid(field, "contains control characters"));
    }
    Ok(())
}

/// A revocation's kind, cut-off and expiry from their protobuf values: a zero cut-off
/// on a subject or issuer rule means the creation time, a zero expiry none.
fn revoke_terms(
    kind: i32,
    cutoff: i64,
    expires_at: i64,
    created_at_ms: i64,
) -> Result<(RuleKind, i64, Option<i64>), EventError> {
    let kind = pb::RuleKind::try_from(kind)
        .ok()
        .and_then(RuleKind::from_proto)
        .ok_or_else(|| EventError::invalid("kind", "unknown or unspecified"))?;
    let cutoff = if cutoff == 0 && kind.has_cutoff() {
        created_at_ms.div_euclid(1000)
    } else {
        cutoff
    };
    Ok((kind, cutoff, (expires_at != 0).then_some(expires_at)))
}

impl Event {
    /// Validates an event assembled in memory (all constructors end here). The rules
    /// are [`EventRef::validate`]'s: one check for owned and borrowed events.
    pub fn validate(&self) -> Result<(), EventError> {
        self.view().validate()
    }

    /// Decodes and validates an event from its protobuf form. A zero `cutoff` on a
    /// subject or issuer rule means the creation time.
    pub fn from_proto(ev: pb::RevocationEvent) -> Result<Self, EventError> {
        let action = match pb::EventAction::try_from(ev.action) {
            Ok(pb::EventAction::Revoke) => {
                let (kind, cutoff, expires_at) =
                    revoke_terms(ev.kind, ev.cutoff, ev.expires_at, ev.created_at_ms)?;
                Action::Revoke(Revoke {
                    kind,
                    issuer: ev.issuer,
                    targets: ev.targets,
                    cutoff,
                    expires_at,
                })
            }
            Ok(pb::EventAction::Lift) => Action::Lift {
                event_ids: ev.targets,
            },
            _ => return Err(EventError::invalid("action", "unknown or unspecified")),
        };
        let event = Self {
            event_id: ev.event_id,
            action,
            reason: ev.reason,
            actor: ev.actor,
            created_at_ms: ev.created_at_ms,
        };
        event.validate()?;
        Ok(event)
    }

    /// The protobuf form of this event.
    pub fn to_proto(&self) -> pb::RevocationEvent {
        let mut ev = pb::RevocationEvent {
            event_id: self.event_id.clone(),
            reason: self.reason.clone(),
            actor: self.actor.clone(),
            created_at_ms: self.created_at_ms,
            ..Default::default()
        };
        match &self.action {
            Action::Revoke(r) => {
                ev.action = pb::EventAction::Revoke as i32;
                ev.kind = r.kind.to_proto() as i32;
                ev.issuer.clone_from(&r.issuer);
                ev.targets.clone_from(&r.targets);
                ev.cutoff = r.cutoff;
                ev.expires_at = r.expires_at.unwrap_or(0);
            }
            Action::Lift { event_ids } => {
                ev.action = pb::EventAction::Lift as i32;
                ev.targets.clone_from(event_ids);
            }
        }
        ev
    }

    /// Decodes and validates one JSON line of a revocations file (see
    /// `docs/EVENTS.md`): the JSON form of `RevocationEvent`, with `action` and
    /// `kind` as lower-case names. Unknown fields are an error, so a typo is caught.
    pub fn from_json(line: &str) -> Result<Self, EventError> {
        let raw: JsonEvent =
            serde_json::from_str(line).map_err(|e| EventError::Decode(e.to_string()))?;
        let action = match raw.action {
            JsonAction::Revoke => {
                let kind = raw
                    .kind
                    .ok_or_else(|| EventError::invalid("kind", "required for a revocation"))?;
                let cutoff = match raw.cutoff {
                    // On the wire a zero cut-off means "unset: the creation time", so a
                    // file's explicit 0 would mean the epoch here and the creation time
                    // once published: one line, two meanings. Refuse it instead.
                    Some(0) if kind.has_cutoff() => {
                        return Err(EventError::invalid(
                            "cutoff",
                            "0 is not a cut-off; leave `cutoff` out to cut off at `created_at_ms`",
                        ));
                    }
                    Some(c) => c,
                    None if kind.has_cutoff() => raw.created_at_ms.div_euclid(1000),
                    None => 0,
                };
                Action::Revoke(Revoke {
                    kind,
                    issuer: raw.issuer,
                    targets: raw.targets,
                    cutoff,
                    expires_at: raw.expires_at,
                })
            }
            JsonAction::Lift => Action::Lift {
                event_ids: raw.targets,
            },
        };
        let event = Self {
            event_id: raw.event_id,
            action,
            reason: raw.reason,
            actor: raw.actor,
            created_at_ms: raw.created_at_ms,
        };
        event.validate()?;
        Ok(event)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum JsonAction {
    Revoke,
    Lift,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEvent {
    event_id: String,
    action: JsonAction,
    #[serde(default)]
    kind: Option<RuleKind>,
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    cutoff: Option<i64>,
    #[serde(default)]
    expires_at: Option<i64>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    created_at_ms: i64,
}

#[cfg(test)]
mod tests;
