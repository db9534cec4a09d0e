use super::*;
use crate::events::{Revoke, RuleKind};

#[test]
fn ids_of_every_shape_render_back_as_they_were() {
    for (id, shape) in [
        ("01KA3V8XQ2C5T7M9P0R4W6Y8ZB", "ulid"),
        ("7ZZZZZZZZZZZZZZZZZZZZZZZZZ", "ulid"),
        ("0b7e6c2a-1f3d-4d1f-9a3e-5c8b2f71d0e4", "uuid"),
        ("0B7E6C2A-1F3D-4D1F-9A3E-5C8B2F71D0E4", "uuid"),
        ("01234567-0123-0123-0123-012345678901", "uuid"),
        // Mixed case, a non-hex digit, a misplaced hyphen, a ULID too large, lower case.
        ("0b7e6c2a-1f3d-4D1f-9a3e-5c8b2f71d0e4", "text"),
        ("0b7e6c2a-1f3d-4d1f-9a3e-5c8b2f71d0eg", "text"),
        ("0b7e6c2a1-f3d-4d1f-9a3e-5c8b2f71d0e4", "text"),
        ("8ZZZZZZZZZZZZZZZZZZZZZZZZZ", "text"),
        ("01ka3v8xq2c5t7m9p0r4w6y8zb", "text"),
        ("", "text"),
        ("bulk-0011223344556677-12", "text"),
    ] {
        let parsed = Id::parse(id);
        let got = match parsed {
            Id::Text(_) => "text",
            Id::Uuid { .. } => "uuid",
            Id::Ulid(_) => "ulid",
        };
        assert_eq!(got, shape, "{id}");
        let mut text = Vec::new();
        parsed.write(&mut text);
        assert_eq!(text, id.as_bytes());
        assert_eq!(parsed.len(), id.len());
    }
}

fn revoke(id: &str, kind: RuleKind, targets: &[&str], expires_at: Option<i64>) -> Event {
    Event {
        event_id: id.into(),
        action: Action::Revoke(Revoke {
            kind,
            issuer: "https://idp.example.com/".into(),
            targets: targets.iter().map(|&t| t.to_owned()).collect(),
            cutoff: if kind.has_cutoff() { 1_700_000_000 } else { 0 },
            expires_at,
        }),
        reason: "account takeover".into(),
        actor: "alice@example.com".into(),
        created_at_ms: 1_700_000_000_123,
    }
}

/// Expanded blocks hold exactly what the length-delimited body holds, byte for byte:
/// the manual protobuf writer agrees with prost.
#[test]
fn expanded_blocks_are_the_length_delimited_body() {
    let mut events = vec![
        revoke(
            "01KA3V8XQ2C5T7M9P0R4W6Y8ZB",
            RuleKind::Jti,
            &["0b7e6c2a-1f3d-4d1f-9a3e-5c8b2f71d0e4"],
            None,
        ),
        revoke(
            "e2",
            RuleKind::Subject,
            &["alice", "", "BOB"],
            Some(1_800_000_000),
        ),
        revoke("e3", RuleKind::Issuer, &[], Some(-5)),
        revoke("e4", RuleKind::Key, &["kid-1"], Some(i64::MAX)),
        Event {
            event_id: "l1".into(),
            action: Action::Lift {
                event_ids: vec!["e2".into(), "01KA3V8XQ2C5T7M9P0R4W6Y8ZB".into()],
            },
            reason: String::new(),
            actor: String::new(),
            created_at_ms: 0,
        },
    ];
    // Enough to need several blocks, with times going back and forth.
    for i in 0..40_000i64 {
        let mut e = revoke(&format!("id-{i}"), RuleKind::Session, &["s"], None);
        e.created_at_ms = 1_700_000_000_000 + (i % 7) * 1000 - i;
        events.push(e);
    }
    let encoded = encode(&events);
    let decoded = blocks(
        &encoded.body,
        events.len() as u64,
        encoded.decoded_len,
        encoded.events_len,
    )
    .unwrap();
    assert!(decoded.len() >= 3, "{} blocks", decoded.len());
    let expanded: Vec<u8> = decode_all(&decoded, 3).unwrap().concat();
    let mut want = Vec::new();
    for event in &events {
        prost::Message::encode_length_delimited(&event.to_proto(), &mut want).unwrap();
    }
    assert_eq!(expanded, want);
    assert_eq!(decode_all(&decoded, 1).unwrap().concat(), want);
}

#[test]
fn block_headers_must_add_up_to_the_manifest() {
    let events = vec![revoke("e1", RuleKind::Jti, &["a"], None)];
    let e = encode(&events);
    assert!(blocks(&e.body, 1, e.decoded_len, e.events_len).is_ok());
    for (count, decoded, expanded) in [
        (2, e.decoded_len, e.events_len),
        (1, e.decoded_len + 1, e.events_len),
        (1, e.decoded_len, e.events_len - 1),
        (1, MAX_DECODED_LEN + 1, e.events_len),
    ] {
        assert!(
            blocks(&e.body, count, decoded, expanded).is_err(),
            "{count} {decoded} {expanded}"
        );
    }
    assert!(blocks(&e.body[..e.body.len() - 1], 1, e.decoded_len, e.events_len).is_err());
}

/// A block whose frame decompresses to more than it declares is refused without
/// growing the buffer past the declared size.
#[test]
fn a_decompression_bomb_is_refused() {
    let frame = zstd::bulk::compress(&vec![0u8; 32 << 20], 19).unwrap();
    assert!(frame.len() < 4096);
    let mut body = Vec::new();
    for n in [1, 1000, 1000, frame.len() as u64] {
        encode_varint(n, &mut body);
    }
    body.extend_from_slice(&frame);
    let bomb = blocks(&body, 1, 1000, 1000).unwrap();
    let err = decode_all(&bomb, 1).unwrap_err();
    assert!(matches!(err, SnapshotError::Body(_)), "{err}");

    // Declaring the true size is refused by the per-block cap instead.
    let mut body = Vec::new();
    for n in [1, 128 << 20, 1000, frame.len() as u64] {
        encode_varint(n, &mut body);
    }
    body.extend_from_slice(&frame);
    assert!(blocks(&body, 1, 128 << 20, 1000).is_err());
}

#[test]
fn columns_with_bytes_to_spare_or_missing_are_refused() {
    let events = [revoke("e1", RuleKind::Jti, &["a"], None)];
    let mut columns = Columns::default();
    let len = framed_len(&target_ids(&events[0]), &events[0]);
    columns.push(&events[0], len);
    let mut good = Encoded {
        body: Vec::new(),
        decoded_len: 0,
        events_len: 0,
    };
    let mut compressor = zstd::bulk::Compressor::new(LEVEL).unwrap();
    columns.finish(&mut compressor, &mut good);
    let block = blocks(&good.body, 1, good.decoded_len, good.events_len).unwrap()[0];
    let raw = zstd::bulk::decompress(block.frame, block.raw_len).unwrap();
    assert!(expand(&raw, 1, block.events_len).is_ok());
    assert!(expand(&raw, 2, block.events_len).is_err());
    assert!(expand(&raw, 1, block.events_len + 1).is_err());
    assert!(expand(&raw, 1, block.events_len - 1).is_err());
    assert!(expand(&raw[..raw.len() - 1], 1, block.events_len).is_err());
    let mut longer = raw.clone();
    longer.push(0);
    assert!(expand(&longer, 1, block.events_len).is_err());
}
