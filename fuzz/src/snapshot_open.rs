//! `snapshot_open`: the snapshot opener on arbitrary bytes.
//!
//! The first byte picks the mode (modulo 3): 0, the rest is a whole snapshot object;
//! 1, the rest is a length-delimited snapshot *body* that the fixture signs with a
//! trusted key (the next byte is the event count the manifest claims); 2, the rest is a
//! dense body (zstd blocks of columns) that the fixture signs with the event count and
//! sizes its block headers add up to. So the bodies' decoding — zstd, the columns, the
//! expansion — runs behind a valid signature, where the fuzzer could never get alone.
//!
//! Invariants: nothing panics; an object opens only if its head carries a signature
//! by the trusted key over [`SIGNING_PREFIX`] and the manifest (checked here without
//! the snapshot module); reading the events and reading the parts of a split agree;
//! every event a snapshot yields is one the live path (prost, [`Event::from_proto`])
//! decodes to the same event, so a snapshot never applies what the stream refuses;
//! events read from a snapshot, sealed again in either encoding, read back the same.

use std::sync::OnceLock;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use denylist_proto::envelope::TrustedKeys;
use denylist_proto::events::{Action, Event, Revoke, RuleKind};
use denylist_proto::pb;
use denylist_proto::snapshot::{
    Encoding, Manifest, SIGNING_PREFIX, SnapshotError, open, seal, seal_with,
};
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

/// The head that signs `body` as a length-delimited snapshot claiming `event_count`
/// events, as `seal_with` would.
fn seal_body(body: &[u8], event_count: u64) -> Vec<u8> {
    sign(pb::SnapshotManifest {
        event_count,
        ..body_manifest(body)
    })
}

/// The head that signs `body` as a dense snapshot, with the event count and sizes its
/// block headers add up to (as far as they can be read).
fn seal_dense_body(body: &[u8]) -> Vec<u8> {
    let (mut rest, mut sums) = (body, [0u64; 3]);
    'blocks: while !rest.is_empty() {
        let mut header = [0u64; 4];
        for value in &mut header {
            match prost::encoding::decode_varint(&mut rest) {
                Ok(v) => *value = v,
                // A header cut short: the reader refuses the body anyway.
                Err(_) => break 'blocks,
            }
        }
        for (sum, value) in sums.iter_mut().zip(header) {
            *sum = sum.saturating_add(value);
        }
        let frame = usize::try_from(header[3]).unwrap_or(usize::MAX);
        rest = rest.get(frame..).unwrap_or_default();
    }
    sign(pb::SnapshotManifest {
        event_count: sums[0],
        encoding: pb::SnapshotEncoding::DenseZstd as i32,
        decoded_len: sums[1],
        events_len: sums[2],
        ..body_manifest(body)
    })
}

/// The fixture's manifest, binding `body`.
fn body_manifest(body: &[u8]) -> pb::SnapshotManifest {
    let m = manifest();
    pb::SnapshotManifest {
        stream: m.stream,
        stream_created_unix_nanos: m.stream_created_unix_nanos,
        covered_sequence: m.covered_sequence,
        created_at_ms: m.created_at_ms,
        body_len: body.len() as u64,
        body_sha256: digest(&SHA256, body).as_ref().to_vec(),
        ..Default::default()
    }
}

/// The head of an object: `manifest` signed by the trusted key, length-delimited (the
/// body it binds goes after it).
fn sign(manifest: pb::SnapshotManifest) -> Vec<u8> {
    let manifest = manifest.encode_to_vec();
    let mut signed = SIGNING_PREFIX.to_vec();
    signed.extend_from_slice(&manifest);
    pb::SignedSnapshot {
        signature: keys().sign_as_publisher(&signed),
        key_id: keys().publisher.key_id().to_owned(),
        manifest,
    }
    .encode_length_delimited_to_vec()
}

/// The object an input stands for; see the module docs.
pub fn object(data: &[u8]) -> Vec<u8> {
    let mut input = Bytes::new(data);
    let (mut object, body) = match input.byte() % 3 {
        0 => return input.rest().to_vec(),
        1 => {
            let count = u64::from(input.byte());
            let body = input.rest();
            (seal_body(body, count), body)
        }
        _ => {
            let body = input.rest();
            (seal_dense_body(body), body)
        }
    };
    object.extend_from_slice(body);
    object
}

/// Runs one input; panics if an invariant breaks.
pub fn run(data: &[u8]) -> Outcome {
    let object = object(data);
    let Ok(opened) = open(&object, trusted()) else {
        return Outcome::Refused;
    };
    check_signed(&object);

    let events: Vec<Result<Event, SnapshotError>> = opened.events().collect();
    if opened.encoding() == Encoding::LengthDelimited {
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
    } else {
        // A dense body expands to messages first; every event it yields is one the live
        // path reads the same from its protobuf form.
        for event in events.iter().flatten() {
            assert_eq!(
                Event::from_proto(event.to_proto()).as_ref(),
                Ok(event),
                "a dense snapshot yields an event the live path reads otherwise"
            );
        }
    }
    let all_ok = events.iter().all(Result::is_ok);
    if all_ok {
        let read: Vec<Event> = events.iter().flatten().cloned().collect();
        for encoding in [Encoding::DenseZstd, Encoding::LengthDelimited] {
            let again = seal_with(&manifest(), &read, &keys().publisher, encoding);
            let reread: Result<Vec<Event>, _> = open(&again, trusted())
                .expect("a sealed snapshot opens")
                .events()
                .collect();
            assert_eq!(
                reread.as_ref(),
                Ok(&read),
                "{encoding:?} round trip differs"
            );
        }
    }
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
    let legacy = seal_with(
        &manifest(),
        &events,
        &keys().publisher,
        Encoding::LengthDelimited,
    );
    let dense_body = {
        let mut rest = sealed.as_slice();
        let head_len = prost::decode_length_delimiter(&mut rest).expect("a sealed head");
        rest[head_len..].to_vec()
    };
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
    let mut dense_cut = dense_body.clone();
    dense_cut.truncate(dense_body.len() - 3);
    vec![
        ("object-sealed", [&[0], sealed.as_slice()].concat()),
        (
            "object-length-delimited",
            [&[0], legacy.as_slice()].concat(),
        ),
        ("dense-body", [&[2], dense_body.as_slice()].concat()),
        (
            "dense-body-truncated",
            [&[2], dense_cut.as_slice()].concat(),
        ),
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
