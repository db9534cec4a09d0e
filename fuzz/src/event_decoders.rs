//! `event_decoders`: the two decoders of a `RevocationEvent` held to each other on
//! arbitrary bytes — prost with [`Event::from_proto`] (the live NATS path) and the
//! borrowed [`EventRef::decode`] (snapshots).
//!
//! Invariants: nothing panics; both accept or both refuse; when both accept, the
//! events are equal; when prost decodes but validation refuses, both name the same
//! field and message; the borrowed targets count what they yield; an accepted event
//! survives an encode/decode round trip unchanged.

use denylist_proto::events::{ActionRef, Event, EventError, EventRef};
use denylist_proto::pb;
use prost::Message as _;

use crate::{Outcome, Seed};

/// What prost and `Event::from_proto` make of `bytes`: the reference.
fn reference(bytes: &[u8]) -> Result<Event, EventError> {
    pb::RevocationEvent::decode(bytes)
        .map_err(|e| EventError::Decode(e.to_string()))
        .and_then(Event::from_proto)
}

/// Runs one input; panics if the decoders disagree.
pub fn run(data: &[u8]) -> Outcome {
    let ours = EventRef::decode(data);
    if let Ok(event) = &ours {
        let targets = match event.action {
            ActionRef::Revoke(r) => r.targets,
            ActionRef::Lift { event_ids } => event_ids,
        };
        assert_eq!(targets.len(), targets.iter().count(), "{data:02x?}");
        let _ = format!("{event:?}");
    }
    match (reference(data), ours.map(|e| e.to_event())) {
        (Ok(want), Ok(got)) => {
            assert_eq!(got, want, "decoded differently: {data:02x?}");
            let again = reference(&want.to_proto().encode_to_vec());
            assert_eq!(again.as_ref(), Ok(&want), "round trip: {data:02x?}");
            Outcome::Accepted
        }
        // The texts of decoding errors differ (ours are static).
        (Err(EventError::Decode(_)), Err(EventError::Decode(_))) => Outcome::Refused,
        (Err(want @ EventError::Invalid { .. }), Err(got)) => {
            assert_eq!(got, want, "refused differently: {data:02x?}");
            Outcome::Refused
        }
        (want, got) => panic!("prost: {want:?}, borrowed: {got:?}, bytes {data:02x?}"),
    }
}

fn event() -> pb::RevocationEvent {
    pb::RevocationEvent {
        event_id: "ev-1".into(),
        action: pb::EventAction::Revoke as i32,
        kind: pb::RuleKind::Subject as i32,
        issuer: "https://idp.example/".into(),
        targets: vec!["alice".into(), "bob".into()],
        cutoff: 0,
        expires_at: 1_900_000_000,
        reason: "compromised laptop".into(),
        actor: "secops".into(),
        created_at_ms: 1_800_000_000_123,
    }
}

/// `event()` followed by `depth` nested groups around `inner`.
fn nested(depth: usize, inner: &[u8]) -> Vec<u8> {
    let mut bytes = event().encode_to_vec();
    bytes.extend(std::iter::repeat_n([0xa3, 0x06], depth).flatten());
    bytes.extend_from_slice(inner);
    bytes.extend(std::iter::repeat_n([0xa4, 0x06], depth).flatten());
    bytes
}

fn with(extra: &[u8]) -> Vec<u8> {
    let mut bytes = event().encode_to_vec();
    bytes.extend_from_slice(extra);
    bytes
}

/// The committed seeds: events of every action and kind, and near misses.
pub fn seeds() -> Vec<Seed> {
    let jti = pb::RevocationEvent {
        kind: pb::RuleKind::Jti as i32,
        targets: vec!["t1".into()],
        ..event()
    };
    let issuer = pb::RevocationEvent {
        kind: pb::RuleKind::Issuer as i32,
        targets: vec![],
        cutoff: 1_799_999_000,
        ..event()
    };
    let lift = pb::RevocationEvent {
        action: pb::EventAction::Lift as i32,
        kind: 0,
        issuer: String::new(),
        targets: vec!["ev-0".into(), "ev-00".into()],
        ..event()
    };
    let invalid = pb::RevocationEvent {
        event_id: "bad id".into(),
        ..event()
    };
    let mut truncated = event().encode_to_vec();
    truncated.truncate(truncated.len() - 3);
    vec![
        ("revoke-subject", event().encode_to_vec()),
        ("revoke-jti", jti.encode_to_vec()),
        ("revoke-issuer", issuer.encode_to_vec()),
        ("lift", lift.encode_to_vec()),
        ("invalid-event-id", invalid.encode_to_vec()),
        ("truncated", truncated),
        (
            "unknown-fields",
            with(&[0xa1, 0x06, 1, 2, 3, 4, 5, 6, 7, 8, 0xa5, 0x06, 1, 2, 3, 4]),
        ),
        ("group", with(&[0xa3, 0x06, 0x08, 0x01, 0xa4, 0x06])),
        ("invalid-utf8-target", with(&[0x2a, 0x02, 0xc3, 0x28])),
        // The nested-group divergence (issue 13): refused by prost from the 100th group.
        ("groups-99", nested(99, &[0x78, 0x01])),
        ("groups-100", nested(100, &[0x78, 0x01])),
    ]
}
