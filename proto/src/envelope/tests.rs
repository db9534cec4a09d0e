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
