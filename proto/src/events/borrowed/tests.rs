use prost::Message as _;

use super::*;
use crate::pb;

/// What prost and `Event::from_proto` make of `bytes`: the reference.
fn reference(bytes: &[u8]) -> Result<Event, EventError> {
    pb::RevocationEvent::decode(bytes)
        .map_err(|e| EventError::Decode(e.to_string()))
        .and_then(Event::from_proto)
}

/// Holds `EventRef::decode` to the reference: both refuse, or both give the same event,
/// or (prost having decoded the message) both refuse with the same validation error.
fn same_as_reference(bytes: &[u8]) {
    let ours = EventRef::decode(bytes).map(|e| e.to_event());
    match (reference(bytes), ours) {
        (Ok(want), Ok(got)) => assert_eq!(got, want, "{bytes:02x?}"),
        (Err(EventError::Decode(_)), Err(EventError::Decode(_))) => {}
        (Err(want @ EventError::Invalid { .. }), Err(got)) => {
            assert_eq!(got, want, "{bytes:02x?}");
        }
        (want, got) => panic!("prost: {want:?}, ours: {got:?}, bytes {bytes:02x?}"),
    }
}

fn sample() -> pb::RevocationEvent {
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

#[test]
fn decodes_what_prost_encodes_borrowing_every_string() {
    let bytes = sample().encode_to_vec();
    let event = EventRef::decode(&bytes).unwrap();
    assert_eq!(event.to_event(), reference(&bytes).unwrap());
    let within = |s: &str| bytes.as_ptr_range().contains(&s.as_ptr());
    assert!(within(event.event_id) && within(event.reason) && within(event.actor));
    let ActionRef::Revoke(revoke) = event.action else {
        panic!("a revocation")
    };
    assert!(within(revoke.issuer));
    assert_eq!(revoke.targets.iter().collect::<Vec<_>>(), ["alice", "bob"]);
    assert!(revoke.targets.iter().all(within));
    // The zero cut-off of a subject rule means the creation time.
    assert_eq!(revoke.cutoff, 1_800_000_000);
    assert_eq!(format!("{:?}", revoke.targets), r#"["alice", "bob"]"#);
}

#[test]
fn targets_interleaved_with_other_fields_keep_their_order() {
    let mut bytes = Vec::new();
    let string = |number: u32, s: &str, out: &mut Vec<u8>| {
        prost::encoding::string::encode(number, &s.to_owned(), out);
    };
    string(5, "t1", &mut bytes);
    string(1, "ev-2", &mut bytes);
    string(5, "t2", &mut bytes);
    prost::encoding::int32::encode(2, &(pb::EventAction::Revoke as i32), &mut bytes);
    string(4, "iss", &mut bytes);
    // An unknown field between targets: skipped.
    string(99, "future", &mut bytes);
    string(5, "t3", &mut bytes);
    prost::encoding::int32::encode(3, &(pb::RuleKind::Jti as i32), &mut bytes);
    // A singular field given twice: the last one wins.
    string(4, "iss2", &mut bytes);
    prost::encoding::int64::encode(10, &1_800_000_000_000, &mut bytes);
    let event = EventRef::decode(&bytes).unwrap();
    let ActionRef::Revoke(revoke) = event.action else {
        panic!("a revocation")
    };
    assert_eq!(revoke.targets.len(), 3);
    assert_eq!(
        revoke.targets.iter().collect::<Vec<_>>(),
        ["t1", "t2", "t3"]
    );
    assert_eq!(revoke.issuer, "iss2");
    same_as_reference(&bytes);
}

#[test]
fn varints_end_within_ten_bytes_and_fit_in_64_bits() {
    let mut ok = vec![0x50]; // field 10 (created_at_ms), varint
    ok.extend_from_slice(&[0xff; 9]);
    ok.push(0x01);
    let mut overflow = ok.clone();
    *overflow.last_mut().unwrap() = 0x02;
    let mut eleven = vec![0x50];
    eleven.extend_from_slice(&[0x80; 10]);
    eleven.push(0x00);
    for bytes in [&ok, &overflow, &eleven, &vec![0x50, 0x80]] {
        let mut event = sample().encode_to_vec();
        event.extend_from_slice(bytes);
        same_as_reference(&event);
    }
    // u64::MAX as created_at_ms is -1: refused by validation, not by decoding.
    let mut event = sample().encode_to_vec();
    event.extend_from_slice(&ok);
    assert!(matches!(
        EventRef::decode(&event),
        Err(EventError::Invalid {
            field: "created_at_ms",
            ..
        })
    ));
}

#[test]
fn unknown_fields_of_every_wire_type_are_skipped_and_broken_ones_refused() {
    let base = sample().encode_to_vec();
    let cases: [&[u8]; 12] = [
        &[0xa1, 0x06, 1, 2, 3, 4, 5, 6, 7, 8], // field 100, fixed64
        &[0xa5, 0x06, 1, 2, 3, 4],             // field 100, fixed32
        &[0xa0, 0x06, 0x96, 0x01],             // field 100, varint
        &[0xa3, 0x06, 0x08, 0x01, 0xa4, 0x06], // field 100, a group holding a varint
        &[0xa3, 0x06, 0xab, 0x06, 0xac, 0x06, 0xa4, 0x06], // nested groups
        &[0xa3, 0x06, 0xac, 0x06],             // group ended by the wrong number
        &[0xa3, 0x06, 0x08, 0x01],             // group never ended
        &[0xa4, 0x06],                         // end of a group never opened
        &[0xa6, 0x06],                         // wire type 6
        &[0xa1, 0x06, 1, 2, 3],                // truncated fixed64
        &[0x08, 0x01, 0x00],                   // field number 0
        &[0x0a, 0x05, b'a'],                   // string longer than the message
    ];
    for case in cases {
        let mut bytes = base.clone();
        bytes.extend_from_slice(case);
        same_as_reference(&bytes);
    }
    // A known field with the wrong wire type.
    let mut bytes = base.clone();
    bytes.extend_from_slice(&[0x0d, 1, 2, 3, 4]); // event_id as fixed32
    assert!(matches!(
        EventRef::decode(&bytes),
        Err(EventError::Decode(_))
    ));
    same_as_reference(&bytes);
    // Invalid UTF-8 in a target.
    let mut bytes = base;
    bytes.extend_from_slice(&[0x2a, 0x02, 0xc3, 0x28]);
    assert!(matches!(
        EventRef::decode(&bytes),
        Err(EventError::Decode(_))
    ));
    same_as_reference(&bytes);
}

/// `sample()` followed by `depth` nested groups (field 100), the innermost holding
/// `inner` (raw field bytes, possibly none).
fn with_nested_groups(depth: usize, inner: &[u8]) -> Vec<u8> {
    let mut bytes = sample().encode_to_vec();
    for _ in 0..depth {
        bytes.extend_from_slice(&[0xa3, 0x06]); // field 100, start group
    }
    bytes.extend_from_slice(inner);
    for _ in 0..depth {
        bytes.extend_from_slice(&[0xa4, 0x06]); // field 100, end group
    }
    bytes
}

/// Regression: a field inside the 100th nested group was skipped by `skip_group`
/// (it limited only how many groups open) while prost refuses it ("recursion limit
/// reached"), so a snapshot could apply an event the live path refuses.
#[test]
fn nested_groups_are_refused_exactly_where_prost_refuses_them() {
    let varint = [0x78, 0x01]; // field 15, varint
    let group = [0xab, 0x06, 0xac, 0x06]; // field 101, an empty group
    let cases: [(usize, &[u8], bool); 7] = [
        // (groups, contents of the innermost, accepted)
        (99, &varint, true),
        (99, &group, true), // the 100th group, empty
        (100, &[], true),
        (100, &varint, false), // the divergence
        (100, &group, false),
        (101, &[], false),
        (150, &varint, false),
    ];
    for (depth, inner, accepted) in cases {
        let bytes = with_nested_groups(depth, inner);
        // The expectation is prost's own answer, not only ours.
        assert_eq!(
            pb::RevocationEvent::decode(bytes.as_slice()).is_ok(),
            accepted,
            "prost, {depth} groups around {inner:02x?}"
        );
        assert_eq!(
            EventRef::decode(&bytes).is_ok(),
            accepted,
            "ours, {depth} groups around {inner:02x?}"
        );
        same_as_reference(&bytes);
    }
}

#[test]
fn a_view_validates_like_the_owned_event() {
    let event = reference(&sample().encode_to_vec()).unwrap();
    assert_eq!(event.view().to_event(), event);
    let mut lift = event.clone();
    lift.action = Action::Lift {
        event_ids: vec!["ev-0".into(), "bad id".into()],
    };
    assert!(matches!(
        lift.validate(),
        Err(EventError::Invalid {
            field: "targets",
            ..
        })
    ));
}

// --- Differential test against prost. ---

/// xorshift64*: deterministic, good enough to explore inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("small")
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

fn gen_string(r: &mut Rng) -> String {
    let pieces = [
        "a", "Z", "9", "-", "_", ".", ":", " ", "é", "\u{7f}", "\n", "/",
    ];
    let len = if r.chance(2) { 1100 } else { r.below(8) };
    (0..len).map(|_| r.pick(&pieces)).collect()
}

fn gen_int(r: &mut Rng) -> i64 {
    r.pick(&[
        0,
        1,
        -1,
        1_700_000_000,
        1_700_000_000_123,
        i64::MAX,
        i64::MIN,
    ])
}

fn gen_event(r: &mut Rng) -> pb::RevocationEvent {
    // Most events valid, so that the comparison covers accepted events too.
    if r.chance(50) {
        let mut event = sample();
        event.event_id = format!("ev-{}", r.below(100));
        event.action = r.pick(&[1, 2]);
        event.kind = r.pick(&[1, 2, 3, 4, 5]);
        event.targets = (0..r.pick(&[0, 1, 2, 3]))
            .map(|i| format!("t{i}"))
            .collect();
        if event.action == 2 || r.chance(30) {
            event.cutoff = r.pick(&[0, 1_700_000_000]);
            event.expires_at = r.pick(&[0, 1_700_000_000]);
        }
        return event;
    }
    pb::RevocationEvent {
        event_id: if r.chance(80) {
            format!("ev-{}", r.below(100))
        } else {
            gen_string(r)
        },
        action: r.pick(&[0, 1, 1, 1, 2, 2, 3, -1]),
        kind: r.pick(&[0, 1, 2, 3, 4, 5, 5, 6, 1 << 20]),
        issuer: if r.chance(80) {
            "https://idp.example/".into()
        } else {
            gen_string(r)
        },
        targets: (0..r.pick(&[0, 1, 1, 2, 3]))
            .map(|_| gen_string(r))
            .collect(),
        cutoff: gen_int(r),
        expires_at: gen_int(r),
        reason: gen_string(r),
        actor: gen_string(r),
        created_at_ms: gen_int(r),
    }
}

#[test]
fn decodes_like_prost_on_random_and_mutated_messages() {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut accepted, mut invalid, mut undecodable) = (0, 0, 0);
    for _ in 0..20_000 {
        let mut bytes = gen_event(&mut r).encode_to_vec();
        // Mutations: flip, insert or drop bytes, truncate.
        for _ in 0..r.pick(&[0, 0, 1, 2]) {
            if bytes.is_empty() {
                break;
            }
            let at = r.below(bytes.len());
            match r.below(4) {
                0 => bytes[at] ^= 1 << r.below(8),
                1 => bytes.insert(at, r.pick(&[0x00, 0x01, 0x7f, 0x80, 0xff, 0x0a, 0x2a])),
                2 => {
                    bytes.remove(at);
                }
                _ => bytes.truncate(at),
            }
        }
        same_as_reference(&bytes);
        match reference(&bytes) {
            Ok(_) => accepted += 1,
            Err(EventError::Invalid { .. }) => invalid += 1,
            Err(EventError::Decode(_)) => undecodable += 1,
        }
    }
    // The generator reaches every outcome, or the comparison proves little.
    assert!(
        accepted > 1000 && invalid > 1000 && undecodable > 100,
        "{accepted} {invalid} {undecodable}"
    );
}
