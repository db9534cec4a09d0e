use prost::Message as _;

use super::*;
use crate::events::{Action, Revoke, RuleKind};

fn event(id: &str) -> Event {
    Event {
        event_id: id.into(),
        action: Action::Revoke(Revoke {
            kind: RuleKind::Jti,
            issuer: "https://idp".into(),
            targets: vec!["t1".into()],
            cutoff: 0,
            expires_at: None,
        }),
        reason: "test".into(),
        actor: "tester".into(),
        created_at_ms: 1_700_000_000_000,
    }
}

fn setup() -> (SigningKey, TrustedKeys) {
    let (key, pem) = SigningKey::generate().unwrap();
    let again = SigningKey::from_pkcs8_pem(&pem).unwrap();
    assert_eq!(again.key_id(), key.key_id());
    let trusted = TrustedKeys::from_public_keys(&[key.public_key()]).unwrap();
    (key, trusted)
}

#[test]
fn a_signed_event_opens_with_the_trusted_key() {
    let (key, trusted) = setup();
    let signed = key.sign(&event("e1"));
    assert_eq!(trusted.open(&signed.encode_to_vec()).unwrap(), event("e1"));
}

#[test]
fn forged_unsigned_and_wrongly_keyed_events_are_rejected() {
    let (key, trusted) = setup();
    let mut signed = key.sign(&event("e1"));

    // Tampered event bytes (the signature covers the exact bytes).
    let mut forged = signed.clone();
    let last = forged.event.len() - 1;
    forged.event[last] ^= 1;
    assert!(matches!(
        trusted.open(&forged.encode_to_vec()),
        Err(EnvelopeError::BadSignature(_))
    ));

    // Unsigned.
    signed.signature.clear();
    assert!(matches!(
        trusted.open(&signed.encode_to_vec()),
        Err(EnvelopeError::BadSignature(_))
    ));

    // Signed by a key nobody trusts, even if it claims a trusted key id.
    let (other, _) = SigningKey::generate().unwrap();
    let mut impostor = other.sign(&event("e1"));
    assert!(matches!(
        trusted.open(&impostor.encode_to_vec()),
        Err(EnvelopeError::UntrustedKey(_))
    ));
    impostor.key_id = key.key_id().to_owned();
    assert!(matches!(
        trusted.open(&impostor.encode_to_vec()),
        Err(EnvelopeError::BadSignature(_))
    ));

    // Not an envelope at all.
    assert!(matches!(
        trusted.open(b"\xff\xff\xff"),
        Err(EnvelopeError::Decode(_))
    ));
}

#[test]
fn a_validly_signed_but_invalid_event_is_rejected() {
    let (key, trusted) = setup();
    let mut bad = event("e1");
    bad.event_id = "has space".into();
    // Sign the raw proto directly: SigningKey::sign does not validate.
    let signed = key.sign(&bad);
    assert!(matches!(
        trusted.open(&signed.encode_to_vec()),
        Err(EnvelopeError::Event(_))
    ));
}

#[test]
fn bad_trusted_keys_are_named() {
    let err = TrustedKeys::from_public_keys(&["not base64!", "AAAA"]).unwrap_err();
    assert!(err.to_string().contains("#0"), "{err}");
    let err = TrustedKeys::from_public_keys(&["AAAA"]).unwrap_err();
    assert!(err.to_string().contains("32"), "{err}");
}

fn heartbeat() -> Heartbeat {
    Heartbeat {
        stream: "DENYLIST".into(),
        stream_created_unix_nanos: 1_700_000_000_000_000_000,
        last_sequence: 42,
        first_sequence: 1,
        published_at_ms: 1_700_000_000_000,
        publisher: "hb-0".into(),
    }
}

#[test]
fn a_signed_heartbeat_opens_with_the_trusted_key() {
    let (key, trusted) = setup();
    let signed = key.sign_heartbeat(&heartbeat()).encode_to_vec();
    let (opened, key_id) = trusted.open_heartbeat(&signed).unwrap();
    assert_eq!(opened, heartbeat());
    assert_eq!(key_id, key.key_id());
}

#[test]
fn forged_untrusted_and_garbled_heartbeats_are_rejected() {
    let (key, trusted) = setup();
    let (other, _) = SigningKey::generate().unwrap();
    let untrusted = other.sign_heartbeat(&heartbeat()).encode_to_vec();
    assert!(matches!(
        trusted.open_heartbeat(&untrusted),
        Err(EnvelopeError::UntrustedKey(_))
    ));
    let mut forged = key.sign_heartbeat(&heartbeat());
    let mut changed = heartbeat();
    changed.last_sequence = 1_000_000;
    forged.heartbeat = changed.to_proto().encode_to_vec();
    assert!(matches!(
        trusted.open_heartbeat(&forged.encode_to_vec()),
        Err(EnvelopeError::BadSignature(_))
    ));
    assert!(trusted.open_heartbeat(b"\xff\xff garbage").is_err());
    // Signed, but nonsense inside.
    let mut empty = heartbeat();
    empty.stream.clear();
    assert!(matches!(
        trusted.open_heartbeat(&key.sign_heartbeat(&empty).encode_to_vec()),
        Err(EnvelopeError::Decode(_))
    ));
}

#[test]
fn heartbeat_and_event_signatures_never_pass_for_each_other() {
    let (key, trusted) = setup();
    // An event signature over bytes presented as a heartbeat.
    let event = key.sign(&event("e1"));
    let as_heartbeat = pb::SignedHeartbeat {
        heartbeat: event.event.clone(),
        key_id: event.key_id.clone(),
        signature: event.signature.clone(),
    };
    assert!(
        trusted
            .open_heartbeat(&as_heartbeat.encode_to_vec())
            .is_err()
    );
    // A heartbeat signature presented as an event.
    let hb = key.sign_heartbeat(&heartbeat());
    let as_event = pb::SignedEvent {
        event: hb.heartbeat,
        key_id: hb.key_id,
        signature: hb.signature,
    };
    assert!(trusted.open(&as_event.encode_to_vec()).is_err());
}

const IDP: &str = "https://idp.example";

fn revoke(kind: RuleKind, issuer: &str) -> Event {
    let mut e = event(&format!("{kind}-{}", issuer.len()));
    e.action = Action::Revoke(Revoke {
        kind,
        issuer: issuer.into(),
        targets: if kind == RuleKind::Issuer {
            Vec::new()
        } else {
            vec!["t1".into()]
        },
        // Explicit, so the event opens as it was signed (0 would become the creation time).
        cutoff: if kind.has_cutoff() { 1_700_000_000 } else { 0 },
        expires_at: None,
    });
    e
}

/// An unscoped key and a key scoped to `session` and `subject` rules of [`IDP`].
fn scoped_setup() -> (SigningKey, SigningKey, TrustedKeys) {
    let (admin, _) = SigningKey::generate().unwrap();
    let (receiver, _) = SigningKey::generate().unwrap();
    let mut trusted = TrustedKeys::default();
    assert_eq!(
        trusted.add(&admin.public_key(), None).unwrap(),
        admin.key_id()
    );
    let scope = Scope {
        kinds: Some(vec![RuleKind::Session, RuleKind::Subject]),
        issuers: Some(vec![IDP.into()]),
        ..Scope::default()
    };
    assert_eq!(
        trusted.add(&receiver.public_key(), Some(scope)).unwrap(),
        receiver.key_id()
    );
    (admin, receiver, trusted)
}

fn out_of_scope(result: Result<Event, EnvelopeError>) -> String {
    match result {
        Err(EnvelopeError::OutOfScope { reason, .. }) => reason,
        other => panic!("expected an out-of-scope refusal, got {other:?}"),
    }
}

#[test]
fn a_scoped_key_opens_only_revocations_of_its_kinds_and_issuers() {
    let (admin, receiver, trusted) = scoped_setup();
    let open = |key: &SigningKey, e: &Event| trusted.open(&key.sign(e).encode_to_vec());
    for kind in [RuleKind::Session, RuleKind::Subject] {
        let e = revoke(kind, IDP);
        assert_eq!(open(&receiver, &e).unwrap(), e);
    }
    for kind in [RuleKind::Jti, RuleKind::Key, RuleKind::Issuer] {
        let reason = out_of_scope(open(&receiver, &revoke(kind, IDP)));
        assert!(reason.contains(&format!("`{kind}`")), "{reason}");
        assert!(reason.contains("session, subject"), "{reason}");
    }
    let reason = out_of_scope(open(&receiver, &revoke(RuleKind::Session, "https://other")));
    assert!(reason.contains("https://other"), "{reason}");
    let mut lift = event("lift-1");
    lift.action = Action::Lift {
        event_ids: vec!["session-19".into()],
    };
    assert!(out_of_scope(open(&receiver, &lift)).contains("lift"));

    // The unscoped key beside it keeps full authority.
    for e in [
        revoke(RuleKind::Key, IDP),
        revoke(RuleKind::Issuer, "https://other"),
        lift,
    ] {
        assert_eq!(open(&admin, &e).unwrap(), e);
    }
}

#[test]
fn a_scope_without_kinds_or_issuers_allows_every_one_of_them() {
    let (key, _) = SigningKey::generate().unwrap();
    let mut trusted = TrustedKeys::default();
    let scope = Scope {
        kinds: None,
        issuers: Some(vec![IDP.into()]),
        ..Scope::default()
    };
    trusted.add(&key.public_key(), Some(scope)).unwrap();
    for kind in RuleKind::ALL {
        let e = revoke(kind, IDP);
        assert_eq!(trusted.open(&key.sign(&e).encode_to_vec()).unwrap(), e);
    }
    out_of_scope(
        trusted.open(
            &key.sign(&revoke(RuleKind::Jti, "https://x"))
                .encode_to_vec(),
        ),
    );

    let mut trusted = TrustedKeys::default();
    let scope = Scope {
        kinds: Some(vec![RuleKind::Jti]),
        issuers: None,
        ..Scope::default()
    };
    trusted.add(&key.public_key(), Some(scope)).unwrap();
    let e = revoke(RuleKind::Jti, "https://anyone");
    assert_eq!(trusted.open(&key.sign(&e).encode_to_vec()).unwrap(), e);
}

#[test]
fn a_scoped_key_may_not_sign_heartbeats_or_snapshots() {
    let (admin, receiver, trusted) = scoped_setup();
    let hb = receiver.sign_heartbeat(&heartbeat()).encode_to_vec();
    assert!(matches!(
        trusted.open_heartbeat(&hb),
        Err(EnvelopeError::OutOfScope { ref key_id, .. }) if key_id == receiver.key_id()
    ));
    let hb = admin.sign_heartbeat(&heartbeat()).encode_to_vec();
    assert_eq!(trusted.open_heartbeat(&hb).unwrap().1, admin.key_id());

    // A snapshot head is checked with `verify` (see `snapshot::open`): one signature
    // over a whole body, never checked event by event, so a scoped key's is refused.
    let head = b"denylist.v1.snapshot\nmanifest";
    let err = trusted
        .verify(receiver.key_id(), head, &receiver.sign_bytes(head))
        .unwrap_err();
    assert!(err.to_string().contains("snapshots"), "{err}");
    trusted
        .verify(admin.key_id(), head, &admin.sign_bytes(head))
        .unwrap();
}

#[test]
fn a_heartbeat_key_signs_heartbeats_and_nothing_else() {
    let (admin, _, mut trusted) = scoped_setup();
    let (beat, _) = SigningKey::generate().unwrap();
    trusted
        .add(&beat.public_key(), Some(Scope::heartbeats_only()))
        .unwrap();
    let hb = beat.sign_heartbeat(&heartbeat()).encode_to_vec();
    let (opened, key_id) = trusted.open_heartbeat(&hb).unwrap();
    assert_eq!(key_id, beat.key_id());
    assert_eq!(opened, heartbeat());

    // No revocation of any kind or issuer, no lift, no snapshot.
    for kind in RuleKind::ALL {
        let reason = out_of_scope(trusted.open(&beat.sign(&revoke(kind, IDP)).encode_to_vec()));
        assert!(reason.contains("heartbeat key"), "{reason}");
    }
    let mut lift = event("lift-2");
    lift.action = Action::Lift {
        event_ids: vec!["session-19".into()],
    };
    assert!(out_of_scope(trusted.open(&beat.sign(&lift).encode_to_vec())).contains("heartbeat"));
    let head = b"denylist.v1.snapshot\nmanifest";
    let err = trusted
        .verify(beat.key_id(), head, &beat.sign_bytes(head))
        .unwrap_err();
    assert!(err.to_string().contains("snapshots"), "{err}");

    // A key with full authority beside it still signs both.
    let hb = admin.sign_heartbeat(&heartbeat()).encode_to_vec();
    assert_eq!(trusted.open_heartbeat(&hb).unwrap().1, admin.key_id());
    let e = revoke(RuleKind::Key, IDP);
    assert_eq!(trusted.open(&admin.sign(&e).encode_to_vec()).unwrap(), e);
}

#[test]
fn adding_a_key_twice_or_a_bad_key_is_refused() {
    let (key, _) = SigningKey::generate().unwrap();
    let mut trusted = TrustedKeys::default();
    trusted.add(&key.public_key(), None).unwrap();
    // The same key in standard base64 is still the same key.
    let standard = STANDARD.encode(URL_SAFE_NO_PAD.decode(key.public_key()).unwrap());
    let err = trusted.add(&standard, Some(Scope::default())).unwrap_err();
    assert!(err.to_string().contains("already trusted"), "{err}");
    assert!(trusted.add("not base64!", None).is_err());
    assert!(
        trusted
            .add("AAAA", None)
            .unwrap_err()
            .to_string()
            .contains("32")
    );
    assert_eq!(trusted.len(), 1);
}
