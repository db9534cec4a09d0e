//! `snapshot_open`: the snapshot opener on arbitrary bytes.
//!
//! The first byte picks the mode: even, the rest is a whole snapshot object; odd, the
//! rest is a snapshot *body* that the fixture signs with a trusted key (the next byte
//! is the event count the manifest claims), so the body's decoding runs behind a
//! valid signature — where the fuzzer could never get on its own.
//!
//! Invariants: nothing panics; an object opens only if its head carries a signature
//! by the trusted key over [`SIGNING_PREFIX`] and the manifest (checked here without
//! the snapshot module); reading the events and reading the parts of a split agree;
//! every event a snapshot yields is one the live path (prost, [`Event::from_proto`])
//! decodes to the same event, so a snapshot never applies what the stream refuses.

use std::sync::OnceLock;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use denylist_proto::envelope::TrustedKeys;
use denylist_proto::events::{Action, Event, Revoke, RuleKind};
use denylist_proto::pb;
use denylist_proto::snapshot::{Manifest, SIGNING_PREFIX, SnapshotError, open, seal};
use prost::Message as _;

use crate::fixture::{Bytes, NOW_MS, keys};
use crate::{Outcome, Seed};

fn trusted() -> &'static TrustedKeys {
    static TRUSTED: OnceLock<TrustedKeys> = OnceLock::new();
    TRUSTED.get_or_init(|| {
        TrustedKeys::from_public_keys(&[keys().publisher_public_key()]).expect("publisher key")
    })
}

fn manifest() -> Manifest {
    Manifest {
        stream: "DENYLIST".into(),
        stream_created_unix_nanos: 1_700_000_000_123_456_789,
        covered_sequence: 42,
        created_at_ms: NOW_MS,
        event_count: 0,
    }
}

/// Signs `body` as a snapshot claiming `event_count` events, as `seal` would.
pub fn seal_body(body: &[u8], event_count: u64) -> Vec<u8> {
    let m = manifest();
    let manifest = pb::SnapshotManifest {
        stream: m.stream,
        stream_created_unix_nanos: m.stream_created_unix_nanos,
        covered_sequence: m.covered_sequence,
        created_at_ms: m.created_at_ms,
        event_count,
        body_len: body.len() as u64,
        body_sha256: digest(&SHA256, body).as_ref().to_vec(),
    }
    .encode_to_vec();
    let mut signed = SIGNING_PREFIX.to_vec();
    signed.extend_from_slice(&manifest);
    let mut object = pb::SignedSnapshot {
        signature: keys().sign_as_publisher(&signed),
        key_id: keys().publisher.key_id().to_owned(),
        manifest,
    }
    .encode_length_delimited_to_vec();
    object.extend_from_slice(body);
    object
}

/// The object an input stands for; see the module docs.
pub fn object(data: &[u8]) -> Vec<u8> {
    let mut input = Bytes::new(data);
    if input.byte().is_multiple_of(2) {
        input.rest().to_vec()
    } else {
        let count = u64::from(input.byte());
        seal_body(input.rest(), count)
    }
}

/// Runs one input; panics if an invariant breaks.
pub fn run(data: &[u8]) -> Outcome {
    let object = object(data);
    let Ok(opened) = open(&object, trusted()) else {
        return Outcome::Refused;
    };
    check_signed(&object);

    let events: Vec<Result<Event, SnapshotError>> = opened.events().collect();
    // Every event yielded is the live path's reading of the same bytes.
    let messages = framed_messages(&object);
    for (event, message) in events.iter().zip(&messages) {
        if let Ok(event) = event {
            let live = pb::RevocationEvent::decode(*message)
                .map_err(|e| e.to_string())
                .and_then(|ev| Event::from_proto(ev).map_err(|e| e.to_string()));
            assert_eq!(live.as_ref(), Ok(event), "snapshot and live path differ");
        }
    }
    let all_ok = events.iter().all(Result::is_ok);
    for parts in [1, 2, 3, 7] {
        match opened.split(parts) {
            Ok(split) => {
                assert!(split.len() <= parts.max(1));
                let from_parts: Vec<Result<Event, ()>> = split
                    .iter()
                    .flat_map(|p| p.events().map(|e| e.map(|e| e.to_event()).map_err(|_| ())))
                    .collect();
                if all_ok {
                    let want: Vec<Result<Event, ()>> =
                        events.iter().map(|e| e.clone().map_err(|_| ())).collect();
                    assert_eq!(from_parts, want, "a split reads other events");
                } else {
                    assert!(
                        from_parts.iter().any(Result::is_err),
                        "a split hides an error"
                    );
                }
            }
            // The split checks framing and count only; events() must then fail too.
            Err(_) => assert!(!all_ok, "split refused what events() accepted"),
        }
    }
    Outcome::from_bool(all_ok)
}

/// Checks, without the snapshot module, that the head of `object` is signed by the
/// trusted key.
fn check_signed(object: &[u8]) {
    let mut rest = object;
    let head = pb::SignedSnapshot::decode_length_delimited(&mut rest).expect("an opened head");
    let public = URL_SAFE_NO_PAD
        .decode(keys().publisher_public_key())
        .expect("base64url key");
    let mut signed = SIGNING_PREFIX.to_vec();
    signed.extend_from_slice(&head.manifest);
    assert!(
        UnparsedPublicKey::new(&ED25519, public)
            .verify(&signed, &head.signature)
            .is_ok(),
        "opened a snapshot the trusted key did not sign"
    );
}

/// The body's length-delimited messages, as far as the framing holds.
fn framed_messages(object: &[u8]) -> Vec<&[u8]> {
    let mut rest = object;
    let head_len = prost::decode_length_delimiter(&mut rest).expect("an opened head");
    let mut body = &rest[head_len..];
    let mut messages = Vec::new();
    while !body.is_empty() {
        let Ok(len) = prost::decode_length_delimiter(&mut body) else {
            break;
        };
        if len > body.len() {
            break;
        }
        let (message, tail) = body.split_at(len);
        messages.push(message);
        body = tail;
    }
    messages
}

fn event(id: &str, kind: RuleKind, targets: &[&str]) -> Event {
    Event {
        event_id: id.into(),
        action: Action::Revoke(Revoke {
            kind,
            issuer: "https://idp".into(),
            targets: targets.iter().map(|&t| t.to_owned()).collect(),
            cutoff: 0,
            expires_at: None,
        }),
        reason: "seed".into(),
        actor: "fuzz".into(),
        created_at_ms: NOW_MS,
    }
}

/// The committed seeds: sealed snapshots (whole objects and bodies to sign), and
/// near misses.
pub fn seeds() -> Vec<Seed> {
    let events = vec![
        event("e1", RuleKind::Jti, &["j1"]),
        event("e2", RuleKind::Subject, &["alice", "bob"]),
        event("e3", RuleKind::Issuer, &[]),
        Event {
            event_id: "l1".into(),
            action: Action::Lift {
                event_ids: vec!["e1".into()],
            },
            reason: String::new(),
            actor: "fuzz".into(),
            created_at_ms: NOW_MS + 1,
        },
    ];
    let sealed = seal(&manifest(), &events, &keys().publisher);
    let mut body = Vec::new();
    for e in &events {
        e.to_proto()
            .encode_length_delimited(&mut body)
            .expect("a Vec grows");
    }
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let mut deep = event("e9", RuleKind::Jti, &["j9"])
        .to_proto()
        .encode_to_vec();
    deep.extend(std::iter::repeat_n([0xa3, 0x06], 100).flatten());
    deep.extend_from_slice(&[0x78, 0x01]);
    deep.extend(std::iter::repeat_n([0xa4, 0x06], 100).flatten());
    let mut deep_body = Vec::new();
    prost::encoding::encode_varint(deep.len() as u64, &mut deep_body);
    deep_body.extend_from_slice(&deep);
    let count = |n: u8, body: &[u8]| [&[1, n], body].concat();
    vec![
        ("object-sealed", [&[0], sealed.as_slice()].concat()),
        (
            "object-empty",
            [&[0], seal(&manifest(), &[], &keys().publisher).as_slice()].concat(),
        ),
        ("object-tampered", [&[0], tampered.as_slice()].concat()),
        ("body-events", count(4, &body)),
        ("body-count-mismatch", count(3, &body)),
        ("body-truncated", count(4, &body[..body.len() - 2])),
        // The nested-group divergence (issue 13) behind a trusted signature.
        ("body-nested-groups", count(1, &deep_body)),
    ]
}
