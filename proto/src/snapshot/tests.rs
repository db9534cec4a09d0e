use prost::Message as _;

use super::*;
use crate::events::{Action, Revoke, RuleKind};

fn event(id: &str, target: &str) -> Event {
    Event {
        event_id: id.into(),
        action: Action::Revoke(Revoke {
            kind: RuleKind::Jti,
            issuer: "https://idp".into(),
            targets: vec![target.into()],
            cutoff: 0,
            expires_at: None,
        }),
        reason: "test".into(),
        actor: "tester".into(),
        created_at_ms: 1_700_000_000_000,
    }
}

fn lift(id: &str, of: &str) -> Event {
    Event {
        event_id: id.into(),
        action: Action::Lift {
            event_ids: vec![of.into()],
        },
        reason: String::new(),
        actor: "tester".into(),
        created_at_ms: 1_700_000_000_001,
    }
}

fn manifest() -> Manifest {
    Manifest {
        stream: "DENYLIST".into(),
        stream_created_unix_nanos: 1_700_000_000_123_456_789,
        covered_sequence: 42,
        created_at_ms: 1_700_000_100_000,
        event_count: 0,
    }
}

fn setup() -> (SigningKey, TrustedKeys) {
    let (key, _) = SigningKey::generate().unwrap();
    let trusted = TrustedKeys::from_public_keys(&[key.public_key()]).unwrap();
    (key, trusted)
}

fn events() -> Vec<Event> {
    vec![event("e1", "a"), event("e2", "b"), lift("l1", "e1")]
}

/// Both encodings: the dense one [`seal`] writes, and the length-delimited one every
/// earlier snapshot holds, which sidecars still read.
const ENCODINGS: [Encoding; 2] = [Encoding::DenseZstd, Encoding::LengthDelimited];

#[test]
fn a_sealed_snapshot_opens_with_its_manifest_and_events_in_order() {
    let (key, trusted) = setup();
    for encoding in ENCODINGS {
        let object = seal_with(&manifest(), &events(), &key, encoding);
        let opened = open(&object, &trusted).unwrap();
        assert_eq!(opened.encoding(), encoding);
        assert_eq!(
            opened.manifest,
            Manifest {
                event_count: 3,
                ..manifest()
            }
        );
        assert_eq!(opened.key_id, key.key_id());
        let read: Vec<Event> = opened.events().collect::<Result<_, _>>().unwrap();
        assert_eq!(read, events());
    }
    assert_eq!(
        open(&seal(&manifest(), &events(), &key), &trusted)
            .unwrap()
            .encoding(),
        Encoding::DenseZstd
    );
}

#[test]
fn an_empty_snapshot_opens() {
    let (key, trusted) = setup();
    for encoding in ENCODINGS {
        let object = seal_with(&manifest(), &[], &key, encoding);
        let opened = open(&object, &trusted).unwrap();
        assert_eq!(opened.events().count(), 0);
        assert!(opened.split(2).unwrap().is_empty());
    }
}

#[test]
fn any_changed_body_byte_is_refused() {
    let (key, trusted) = setup();
    for encoding in ENCODINGS {
        let object = seal_with(&manifest(), &events(), &key, encoding);
        let body_start = object.len() - opened_body_len(&object);
        for i in body_start..object.len() {
            let mut tampered = object.clone();
            tampered[i] ^= 0x01;
            assert!(
                matches!(open(&tampered, &trusted), Err(SnapshotError::Body(_))),
                "{encoding:?} byte {i}"
            );
        }
    }
}

fn opened_body_len(object: &[u8]) -> usize {
    let mut rest = object;
    let head_len = prost::decode_length_delimiter(&mut rest).unwrap();
    rest.len() - head_len
}

/// A manifest naming an encoding this reader does not know is refused as such.
#[test]
fn an_unknown_encoding_is_refused() {
    let (key, trusted) = setup();
    let mut manifest = pb::SnapshotManifest {
        stream: "DENYLIST".into(),
        body_sha256: digest(&SHA256, b"").as_ref().to_vec(),
        encoding: 7,
        ..Default::default()
    }
    .encode_to_vec();
    let mut signed = SIGNING_PREFIX.to_vec();
    signed.append(&mut manifest.clone());
    let object = pb::SignedSnapshot {
        signature: key.sign_bytes(&signed),
        key_id: key.key_id().to_owned(),
        manifest: std::mem::take(&mut manifest),
    }
    .encode_length_delimited_to_vec();
    let err = open(&object, &trusted).unwrap_err();
    assert!(err.to_string().contains("unknown body encoding 7"), "{err}");
}

#[test]
fn a_truncated_or_extended_object_is_refused() {
    let (key, trusted) = setup();
    let object = seal(&manifest(), &events(), &key);
    assert!(matches!(
        open(&object[..object.len() - 1], &trusted),
        Err(SnapshotError::Body(_))
    ));
    let mut longer = object.clone();
    longer.push(0);
    assert!(matches!(
        open(&longer, &trusted),
        Err(SnapshotError::Body(_))
    ));
    assert!(matches!(
        open(&object[..3], &trusted),
        Err(SnapshotError::Decode(_))
    ));
    assert!(matches!(open(&[], &trusted), Err(SnapshotError::Decode(_))));
}

#[test]
fn a_changed_manifest_or_an_untrusted_key_is_refused() {
    let (key, trusted) = setup();
    let object = seal(&manifest(), &events(), &key);
    let mut rest = object.as_slice();
    let head_len = prost::decode_length_delimiter(&mut rest).unwrap();
    let body = &rest[head_len..];
    let head = pb::SignedSnapshot::decode(&rest[..head_len]).unwrap();

    // Claim to cover more of the stream than was signed.
    let mut m = pb::SnapshotManifest::decode(head.manifest.as_slice()).unwrap();
    m.covered_sequence += 1000;
    let forged = pb::SignedSnapshot {
        manifest: m.encode_to_vec(),
        ..head.clone()
    };
    let mut object2 = forged.encode_length_delimited_to_vec();
    object2.extend_from_slice(body);
    assert!(matches!(
        open(&object2, &trusted),
        Err(SnapshotError::Signature(EnvelopeError::BadSignature(_)))
    ));

    // Signed by a key the sidecar does not trust.
    let (other, _) = SigningKey::generate().unwrap();
    let untrusted = seal(&manifest(), &events(), &other);
    assert!(matches!(
        open(&untrusted, &trusted),
        Err(SnapshotError::Signature(EnvelopeError::UntrustedKey(_)))
    ));

    // No signature at all.
    let unsigned = pb::SignedSnapshot {
        signature: Vec::new(),
        ..head
    };
    let mut object3 = unsigned.encode_length_delimited_to_vec();
    object3.extend_from_slice(body);
    assert!(matches!(
        open(&object3, &trusted),
        Err(SnapshotError::Signature(EnvelopeError::BadSignature(_)))
    ));
}

#[test]
fn snapshot_and_event_signatures_never_pass_for_each_other() {
    let (key, trusted) = setup();
    // An event's signature presented as a snapshot's: the manifest would be the event
    // bytes, but the snapshot signature covers the prefix as well.
    let signed_event = key.sign(&event("e1", "a"));
    let head = pb::SignedSnapshot {
        manifest: signed_event.event.clone(),
        key_id: signed_event.key_id.clone(),
        signature: signed_event.signature.clone(),
    };
    let object = head.encode_length_delimited_to_vec();
    assert!(matches!(
        open(&object, &trusted),
        Err(SnapshotError::Signature(EnvelopeError::BadSignature(_)))
    ));

    // A snapshot's signed bytes presented as an event: never an event.
    let sealed = seal(&manifest(), &[], &key);
    let mut rest = sealed.as_slice();
    let head_len = prost::decode_length_delimiter(&mut rest).unwrap();
    let head = pb::SignedSnapshot::decode(&rest[..head_len]).unwrap();
    let mut signed_bytes = SIGNING_PREFIX.to_vec();
    signed_bytes.extend_from_slice(&head.manifest);
    let as_event = pb::SignedEvent {
        event: signed_bytes,
        key_id: head.key_id,
        signature: head.signature,
    };
    assert!(trusted.open(&as_event.encode_to_vec()).is_err());
}

#[test]
fn an_invalid_event_in_a_signed_body_stops_the_load_with_its_index() {
    let (key, trusted) = setup();
    let mut bad = event("e2", "b");
    bad.event_id = String::new();
    // `seal` does not validate (the writer validated when it read the events); a body
    // with an invalid event is still refused when read.
    for encoding in ENCODINGS {
        let object = seal_with(
            &manifest(),
            &[event("e1", "a"), bad.clone(), event("e3", "c")],
            &key,
            encoding,
        );
        let opened = open(&object, &trusted).unwrap();
        let read: Vec<_> = opened.events().collect();
        assert_eq!(read.len(), 2, "reading stops at the bad event");
        assert!(read[0].is_ok());
        assert!(matches!(
            read[1],
            Err(SnapshotError::Event { index: 1, .. })
        ));
    }
}

#[test]
fn a_snapshot_matches_only_its_own_stream_instance() {
    let m = manifest();
    let created = m.stream_created_unix_nanos;
    assert!(m.check_stream("DENYLIST", created, 42).is_ok());
    assert!(m.check_stream("DENYLIST", created, 1000).is_ok());
    for (name, created, last) in [
        ("OTHER", created, 42),
        ("DENYLIST", created + 1, 42),
        ("DENYLIST", created, 41),
    ] {
        assert!(
            matches!(
                m.check_stream(name, created, last),
                Err(SnapshotError::Stream(_))
            ),
            "{name} {created} {last}"
        );
    }
}

#[test]
fn a_split_body_yields_every_event_once_in_order() {
    let (key, trusted) = setup();
    // Dense: more than one block.
    let many: Vec<Event> = (0..40_000).map(|i| event(&format!("e{i}"), "t")).collect();
    for encoding in ENCODINGS {
        let object = seal_with(&manifest(), &many, &key, encoding);
        let opened = open(&object, &trusted).unwrap();
        for parts in [1, 2, 3, 7, 64] {
            let split = opened.split(parts).unwrap();
            assert!(split.len() <= parts && !split.is_empty(), "{parts}");
            let read: Vec<Event> = split
                .iter()
                .flat_map(|part| part.events())
                .map(|e| e.map(|e| e.to_event()))
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(read, many, "{encoding:?}, {parts} parts");
            // The bytes kept for a copy are each event's own encoding, nothing left out.
            let encoded: Vec<&[u8]> = split.iter().flat_map(Part::encoded).collect();
            assert_eq!(encoded.len(), many.len(), "{encoding:?}, {parts} parts");
            for (bytes, event) in encoded.iter().zip(&many) {
                assert_eq!(*bytes, event.to_proto().encode_to_vec().as_slice());
            }
        }
    }
}

#[test]
fn a_split_checks_the_count_and_reports_a_bad_event_by_its_index_in_the_body() {
    let (key, trusted) = setup();
    let mut many: Vec<Event> = (0..40_000).map(|i| event(&format!("e{i}"), "t")).collect();
    many[20_013].event_id = String::new();
    for encoding in ENCODINGS {
        let object = seal_with(&manifest(), &many, &key, encoding);
        let opened = open(&object, &trusted).unwrap();
        let errors: Vec<_> = opened
            .split(4)
            .unwrap()
            .iter()
            .flat_map(|part| part.events())
            .filter_map(Result::err)
            .collect();
        assert!(
            matches!(
                errors.as_slice(),
                [SnapshotError::Event { index: 20_013, .. }]
            ),
            "{encoding:?}: {errors:?}"
        );

        // A manifest that claims one event more than the body holds.
        let three = seal_with(&manifest(), &many[..3], &key, encoding);
        let mut lying = open(&three, &trusted).unwrap();
        lying.manifest.event_count = 4;
        assert!(matches!(lying.split(2), Err(SnapshotError::Body(_))));
        assert!(matches!(
            lying.events().last(),
            Some(Err(SnapshotError::Body(_)))
        ));
    }
    // A dense manifest whose count differs from its blocks' does not even open.
    let three = seal(&manifest(), &many[..3], &key);
    let mut rest = three.as_slice();
    let head_len = prost::decode_length_delimiter(&mut rest).unwrap();
    let head = pb::SignedSnapshot::decode(&rest[..head_len]).unwrap();
    let mut m = pb::SnapshotManifest::decode(head.manifest.as_slice()).unwrap();
    m.event_count = 4;
    let manifest = m.encode_to_vec();
    let mut signed = SIGNING_PREFIX.to_vec();
    signed.extend_from_slice(&manifest);
    let mut forged = pb::SignedSnapshot {
        signature: key.sign_bytes(&signed),
        key_id: head.key_id,
        manifest,
    }
    .encode_length_delimited_to_vec();
    forged.extend_from_slice(&rest[head_len..]);
    assert!(matches!(
        open(&forged, &trusted),
        Err(SnapshotError::Body(_))
    ));
}

/// Seals a body of already encoded events, as `seal` does with `Event`s: for bodies
/// `seal` cannot write.
fn seal_encoded(manifest: &Manifest, messages: &[Vec<u8>], key: &SigningKey) -> Vec<u8> {
    let mut body = Vec::new();
    for message in messages {
        prost::encoding::encode_varint(message.len() as u64, &mut body);
        body.extend_from_slice(message);
    }
    let manifest = pb::SnapshotManifest {
        stream: manifest.stream.clone(),
        stream_created_unix_nanos: manifest.stream_created_unix_nanos,
        covered_sequence: manifest.covered_sequence,
        created_at_ms: manifest.created_at_ms,
        event_count: messages.len() as u64,
        body_len: body.len() as u64,
        body_sha256: digest(&SHA256, &body).as_ref().to_vec(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut signed_bytes = SIGNING_PREFIX.to_vec();
    signed_bytes.extend_from_slice(&manifest);
    let mut object = pb::SignedSnapshot {
        signature: key.sign_bytes(&signed_bytes),
        key_id: key.key_id().to_owned(),
        manifest,
    }
    .encode_length_delimited_to_vec();
    object.extend_from_slice(&body);
    object
}

/// Regression (issue 13, the nested-group divergence): the snapshot
/// reader decodes with `EventRef`, the live path with prost. An event whose unknown
/// fields nest 100 groups deep with a field in the innermost was applied from a
/// snapshot although the live path refuses it; both must refuse it.
#[test]
fn a_signed_event_the_live_path_refuses_is_refused_in_a_snapshot_too() {
    let (key, trusted) = setup();
    let mut deep = event("e2", "b").to_proto().encode_to_vec();
    deep.extend(std::iter::repeat_n([0xa3, 0x06], 100).flatten()); // field 100, start group
    deep.extend_from_slice(&[0x78, 0x01]); // field 15, varint
    deep.extend(std::iter::repeat_n([0xa4, 0x06], 100).flatten()); // field 100, end group

    // The live path: a signed envelope around the same bytes.
    let envelope = pb::SignedEvent {
        signature: key.sign_bytes(&deep),
        key_id: key.key_id().to_owned(),
        event: deep.clone(),
    };
    assert!(matches!(
        trusted.open(&envelope.encode_to_vec()),
        Err(EnvelopeError::Decode(_))
    ));

    let good = event("e1", "a").to_proto().encode_to_vec();
    let object = seal_encoded(&manifest(), &[good, deep], &key);
    let opened = open(&object, &trusted).unwrap();
    let read: Vec<_> = opened.events().collect();
    assert_eq!(read.len(), 2, "reading stops at the refused event");
    assert!(read[0].is_ok());
    assert!(matches!(
        read[1],
        Err(SnapshotError::Event {
            index: 1,
            source: EventError::Decode(_)
        })
    ));
    let parts = opened.split(1).unwrap();
    assert!(parts[0].events().any(|e| e.is_err()));
}
