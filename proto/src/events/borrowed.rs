//! Events that borrow their strings: [`EventRef`], decoded straight from protobuf
//! bytes without copying, or viewed from an [`Event`] with [`Event::view`].
//!
//! A snapshot holds a million events; decoding each into owned `String`s cost more
//! than everything else a starting sidecar does with them (six allocations per event,
//! freed again at once). [`EventRef::decode`] reads the same `denylist.v1.RevocationEvent`
//! wire format as prost with the same results (a differential test holds it to that),
//! allocates nothing, and validates exactly as [`Event`] does: the validation itself
//! lives here and [`Event::validate`] calls it through a view.
//!
//! It differs from prost only in the text of a decoding error. Unknown fields are
//! skipped as prost skips them, groups (a proto2 feature no writer of these events
//! uses) included, with prost's nesting limit.

use super::{
    Action, Event, EventError, MAX_TARGETS, RuleKind, revoke_terms, validate_event_id,
    validate_text,
};

/// `RevocationEvent` field numbers (see `proto/denylist/v1/events.proto`).
mod field {
    pub(super) const EVENT_ID: u32 = 1;
    pub(super) const ACTION: u32 = 2;
    pub(super) const KIND: u32 = 3;
    pub(super) const ISSUER: u32 = 4;
    pub(super) const TARGETS: u32 = 5;
    pub(super) const CUTOFF: u32 = 6;
    pub(super) const EXPIRES_AT: u32 = 7;
    pub(super) const REASON: u32 = 8;
    pub(super) const ACTOR: u32 = 9;
    pub(super) const CREATED_AT_MS: u32 = 10;
}

/// `EventAction` values.
const ACTION_REVOKE: i32 = 1;
const ACTION_LIFT: i32 = 2;

/// prost's recursion limit, as it applies to skipped groups: a field may sit inside
/// at most 99 nested groups, so the 100th group may be opened but must be empty
/// (prost skips each field of a group one level deeper, and refuses to skip at
/// level 100 — `skip_field` and `DecodeContext` in prost's `encoding.rs`).
const MAX_GROUP_DEPTH: u32 = 100;

/// A validated revocation event whose strings are borrowed; see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct EventRef<'a> {
    /// Unique, stable id.
    pub event_id: &'a str,
    /// What the event does.
    pub action: ActionRef<'a>,
    /// Free text for callers.
    pub reason: &'a str,
    /// Who published it.
    pub actor: &'a str,
    /// Unix milliseconds of creation.
    pub created_at_ms: i64,
}

/// What a borrowed event does; see [`Action`].
#[derive(Debug, Clone, Copy)]
pub enum ActionRef<'a> {
    /// Adds one rule per target.
    Revoke(RevokeRef<'a>),
    /// Withdraws earlier revocations by event id.
    Lift {
        /// Ids of the events to withdraw.
        event_ids: Targets<'a>,
    },
}

/// The rules a borrowed revocation event adds; see [`super::Revoke`].
#[derive(Debug, Clone, Copy)]
pub struct RevokeRef<'a> {
    /// Rule kind.
    pub kind: RuleKind,
    /// Exact `iss`.
    pub issuer: &'a str,
    /// jti / sub / sid / kid values; empty for [`RuleKind::Issuer`].
    pub targets: Targets<'a>,
    /// Unix seconds; tokens with `iat` <= cut-off match subject and issuer rules.
    pub cutoff: i64,
    /// Unix seconds after which the rules may be dropped.
    pub expires_at: Option<i64>,
}

/// The repeated `targets` of a borrowed event: event ids for a lift, rule targets
/// for a revocation. Iterating allocates nothing.
#[derive(Clone, Copy)]
pub struct Targets<'a> {
    repr: TargetsRepr<'a>,
    len: usize,
}

#[derive(Clone, Copy)]
enum TargetsRepr<'a> {
    /// Viewed from an [`Event`].
    Strings(&'a [String]),
    /// The only target of a decoded message (the common case).
    One(&'a str),
    /// Still encoded: the fields of a message from its first target to its last
    /// (other fields may sit in between); the field 5 occurrences are the targets.
    /// Only ever bytes [`EventRef::decode`] has read through once, so reading them
    /// again cannot fail.
    Encoded(&'a [u8]),
}

impl std::fmt::Debug for Targets<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> Targets<'a> {
    /// Number of targets.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The targets, in message order.
    pub fn iter(&self) -> TargetsIter<'a> {
        TargetsIter {
            repr: match self.repr {
                TargetsRepr::Strings(s) => IterRepr::Strings(s.iter()),
                TargetsRepr::One(target) => IterRepr::One(Some(target)),
                TargetsRepr::Encoded(fields) => IterRepr::Encoded(Fields {
                    rest: fields,
                    depth: 0,
                }),
            },
        }
    }

    /// Owned copies, for [`EventRef::to_event`].
    fn to_vec(self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }
}

impl<'a> IntoIterator for Targets<'a> {
    type Item = &'a str;
    type IntoIter = TargetsIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over [`Targets`].
#[derive(Debug)]
pub struct TargetsIter<'a> {
    repr: IterRepr<'a>,
}

#[derive(Debug)]
enum IterRepr<'a> {
    Strings(std::slice::Iter<'a, String>),
    One(Option<&'a str>),
    Encoded(Fields<'a>),
}

impl<'a> Iterator for TargetsIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        match &mut self.repr {
            IterRepr::Strings(s) => s.next().map(String::as_str),
            IterRepr::One(target) => target.take(),
            IterRepr::Encoded(fields) => loop {
                // The message decoded once already: an error here cannot happen, and
                // would end the iteration rather than yield a wrong target.
                let (number, value) = fields.next()?.ok()?;
                if let (field::TARGETS, Value::Bytes(bytes)) = (number, value) {
                    return std::str::from_utf8(bytes).ok();
                }
            },
        }
    }
}

impl<'a> EventRef<'a> {
    /// Decodes and validates one `RevocationEvent` message (not length-delimited).
    /// The result borrows from `message`.
    pub fn decode(message: &'a [u8]) -> Result<Self, EventError> {
        let mut raw = Raw::default();
        let mut fields = Fields {
            rest: message,
            depth: 0,
        };
        // Where the targets are: from the start of the first to the end of the last.
        let (mut first_target, mut targets_end) = (0, 0);
        loop {
            let start = message.len() - fields.rest.len();
            let Some(next) = fields.next() else { break };
            let (number, value) = next?;
            if number == field::TARGETS {
                if raw.targets == 0 {
                    first_target = start;
                }
                targets_end = message.len() - fields.rest.len();
            }
            raw.merge(number, value)?;
        }
        let targets = Targets {
            repr: match raw.targets {
                1 => TargetsRepr::One(raw.one_target),
                _ => TargetsRepr::Encoded(&message[first_target..targets_end]),
            },
            len: raw.targets,
        };
        let action = match raw.action {
            ACTION_REVOKE => {
                let (kind, cutoff, expires_at) =
                    revoke_terms(raw.kind, raw.cutoff, raw.expires_at, raw.created_at_ms)?;
                ActionRef::Revoke(RevokeRef {
                    kind,
                    issuer: raw.issuer,
                    targets,
                    cutoff,
                    expires_at,
                })
            }
            ACTION_LIFT => ActionRef::Lift { event_ids: targets },
            _ => return Err(EventError::invalid("action", "unknown or unspecified")),
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

    /// Checks every field; [`Event::validate`] is this check.
    pub fn validate(&self) -> Result<(), EventError> {
        validate_event_id("event_id", self.event_id)?;
        validate_text("reason", self.reason, false)?;
        validate_text("actor", self.actor, false)?;
        // Required: the default cut-off and expiry count from it, so an event without
        // it would make rules that lapsed in 1970 and are dropped on arrival.
        if self.created_at_ms <= 0 {
            return Err(EventError::invalid(
                "created_at_ms",
                "required: the creation time in Unix milliseconds",
            ));
        }
        match &self.action {
            ActionRef::Lift { event_ids } => {
                if event_ids.is_empty() {
                    return Err(EventError::invalid(
                        "targets",
                        "a lift names at least one event id",
                    ));
                }
                if event_ids.len() > MAX_TARGETS {
                    return Err(EventError::invalid(
                        "targets",
                        format!("more than {MAX_TARGETS}"),
                    ));
                }
                for id in event_ids.iter() {
                    validate_event_id("targets", id)?;
                }
            }
            ActionRef::Revoke(r) => {
                validate_text("issuer", r.issuer, true)?;
                if r.cutoff < 0 {
                    return Err(EventError::invalid("cutoff", "must not be negative"));
                }
                if matches!(r.expires_at, Some(e) if e <= 0) {
                    return Err(EventError::invalid("expires_at", "must be positive"));
                }
                if r.kind == RuleKind::Issuer {
                    if !r.targets.is_empty() {
                        return Err(EventError::invalid(
                            "targets",
                            "an issuer revocation takes no targets",
                        ));
                    }
                } else {
                    if r.targets.is_empty() {
                        return Err(EventError::invalid(
                            "targets",
                            format!("a {} revocation names at least one target", r.kind),
                        ));
                    }
                    if r.targets.len() > MAX_TARGETS {
                        return Err(EventError::invalid(
                            "targets",
                            format!("more than {MAX_TARGETS}"),
                        ));
                    }
                    for t in r.targets.iter() {
                        validate_text("targets", t, true)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// An owned copy.
    pub fn to_event(&self) -> Event {
        Event {
            event_id: self.event_id.to_owned(),
            action: match self.action {
                ActionRef::Revoke(r) => Action::Revoke(super::Revoke {
                    kind: r.kind,
                    issuer: r.issuer.to_owned(),
                    targets: r.targets.to_vec(),
                    cutoff: r.cutoff,
                    expires_at: r.expires_at,
                }),
                ActionRef::Lift { event_ids } => Action::Lift {
                    event_ids: event_ids.to_vec(),
                },
            },
            reason: self.reason.to_owned(),
            actor: self.actor.to_owned(),
            created_at_ms: self.created_at_ms,
        }
    }
}

impl<'a> Targets<'a> {
    fn strings(s: &'a [String]) -> Self {
        Self {
            repr: TargetsRepr::Strings(s),
            len: s.len(),
        }
    }
}

impl Event {
    /// A borrowed view of this event (no copies).
    pub fn view(&self) -> EventRef<'_> {
        EventRef {
            event_id: &self.event_id,
            action: match &self.action {
                Action::Revoke(r) => ActionRef::Revoke(RevokeRef {
                    kind: r.kind,
                    issuer: &r.issuer,
                    targets: Targets::strings(&r.targets),
                    cutoff: r.cutoff,
                    expires_at: r.expires_at,
                }),
                Action::Lift { event_ids } => ActionRef::Lift {
                    event_ids: Targets::strings(event_ids),
                },
            },
            reason: &self.reason,
            actor: &self.actor,
            created_at_ms: self.created_at_ms,
        }
    }
}

/// The fields of a message as decoded so far: proto3 semantics, the last occurrence
/// of a singular field wins and absent fields are zero.
#[derive(Default)]
struct Raw<'a> {
    event_id: &'a str,
    action: i32,
    kind: i32,
    issuer: &'a str,
    targets: usize,
    /// The last target read: the only one when `targets` is 1.
    one_target: &'a str,
    cutoff: i64,
    expires_at: i64,
    reason: &'a str,
    actor: &'a str,
    created_at_ms: i64,
}

impl<'a> Raw<'a> {
    fn merge(&mut self, number: u32, value: Value<'a>) -> Result<(), Malformed> {
        // `as` casts: protobuf's int32 and int64 are varints truncated to the type,
        // which is what prost does too.
        #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
        match (number, value) {
            (field::EVENT_ID, Value::Bytes(b)) => self.event_id = utf8(b)?,
            (field::ACTION, Value::Varint(v)) => self.action = v as i32,
            (field::KIND, Value::Varint(v)) => self.kind = v as i32,
            (field::ISSUER, Value::Bytes(b)) => self.issuer = utf8(b)?,
            (field::TARGETS, Value::Bytes(b)) => {
                self.one_target = utf8(b)?;
                self.targets += 1;
            }
            (field::CUTOFF, Value::Varint(v)) => self.cutoff = v as i64,
            (field::EXPIRES_AT, Value::Varint(v)) => self.expires_at = v as i64,
            (field::REASON, Value::Bytes(b)) => self.reason = utf8(b)?,
            (field::ACTOR, Value::Bytes(b)) => self.actor = utf8(b)?,
            (field::CREATED_AT_MS, Value::Varint(v)) => self.created_at_ms = v as i64,
            (1..=field::CREATED_AT_MS, _) => {
                return Err(Malformed("a known field has the wrong wire type"));
            }
            // Unknown fields are skipped, as prost does: a newer writer may add some.
            _ => {}
        }
        Ok(())
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, Malformed> {
    std::str::from_utf8(bytes).map_err(|_| Malformed("a string field is not UTF-8"))
}

/// Why bytes are not a message. A static text, not an [`EventError`]: the decoding
/// functions return it on every field, and a small error keeps them fast.
#[derive(Debug, Clone, Copy)]
struct Malformed(&'static str);

impl From<Malformed> for EventError {
    fn from(m: Malformed) -> Self {
        EventError::Decode(m.0.to_owned())
    }
}

/// One field's value as found on the wire.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// Fixed-width values and groups: no field of this message has them.
    Skipped,
}

/// The fields of a message, in order.
#[derive(Debug)]
struct Fields<'a> {
    rest: &'a [u8],
    /// Groups currently open (only while skipping one).
    depth: u32,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), Malformed>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = self.field();
        if field.is_err() {
            // Nothing after a framing error can be trusted.
            self.rest = &[];
        }
        Some(field)
    }
}

impl<'a> Fields<'a> {
    #[inline]
    fn field(&mut self) -> Result<(u32, Value<'a>), Malformed> {
        let (number, wire_type) = self.key()?;
        let value = match wire_type {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Skipped
            }
            2 => {
                let len = self.varint()?;
                Value::Bytes(self.take(len)?)
            }
            3 => {
                self.skip_group(number)?;
                Value::Skipped
            }
            5 => {
                self.take(4)?;
                Value::Skipped
            }
            // 4 (end of a group nobody opened), 6 and 7.
            _ => return Err(Malformed("invalid wire type")),
        };
        Ok((number, value))
    }

    /// A field key: field number (at least 1) and wire type.
    #[inline]
    fn key(&mut self) -> Result<(u32, u8), Malformed> {
        let key = self.varint()?;
        let key = u32::try_from(key).map_err(|_| Malformed("invalid field key"))?;
        let number = key >> 3;
        if number == 0 {
            return Err(Malformed("field number 0"));
        }
        #[allow(clippy::cast_possible_truncation)] // three bits
        Ok((number, (key & 7) as u8))
    }

    /// Skips everything up to the end of the group `number`.
    fn skip_group(&mut self, number: u32) -> Result<(), Malformed> {
        self.depth += 1;
        loop {
            let (inner, wire_type) = self.key()?;
            match wire_type {
                4 if inner == number => break,
                4 => return Err(Malformed("a group ends with the wrong field number")),
                // Any field inside the deepest group prost allows, a group included:
                // prost has no recursion left to skip it with. (Checked here and not
                // on entry, so that a varint there is refused as prost refuses it.)
                _ if self.depth >= MAX_GROUP_DEPTH => {
                    return Err(Malformed("groups nested too deeply"));
                }
                0 => {
                    self.varint()?;
                }
                1 => {
                    self.take(8)?;
                }
                2 => {
                    let len = self.varint()?;
                    self.take(len)?;
                }
                3 => self.skip_group(inner)?,
                5 => {
                    self.take(4)?;
                }
                _ => return Err(Malformed("invalid wire type")),
            }
        }
        self.depth -= 1;
        Ok(())
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], Malformed> {
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > self.rest.len() {
            return Err(Malformed("truncated field"));
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    /// A base-128 varint of at most ten bytes; the tenth may only carry the top bit
    /// of a `u64` (as prost and the protobuf reference decoders require).
    #[inline]
    fn varint(&mut self) -> Result<u64, Malformed> {
        // Most varints here (keys, lengths, enums) are one byte.
        if let Some((&byte, rest)) = self.rest.split_first()
            && byte < 0x80
        {
            self.rest = rest;
            return Ok(u64::from(byte));
        }
        let mut value = 0u64;
        for (i, &byte) in self.rest.iter().take(10).enumerate() {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                if i == 9 && byte > 1 {
                    break;
                }
                self.rest = &self.rest[i + 1..];
                return Ok(value);
            }
        }
        Err(Malformed("invalid varint"))
    }
}

#[cfg(test)]
mod tests;
