use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use base64::Engine as _;
use serde_json::{Value, json};

use super::key_set::KeySet;
use super::*;
use crate::algorithm::{Algorithm, KeyFamily};
use crate::clock::{ManualClock, SharedClock};
use crate::config::{IssuerConfig, KeyFile, KeySourceConfig};

const INPUT: &[u8] = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9";
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-hmac";

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(name)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).expect("fixture exists")
}

/// The DER of a fixture's only PEM block (private keys, for signing in tests).
fn fixture_der(name: &str) -> Vec<u8> {
    let mut blocks = pem::parse_pem(&fixture(name)).expect("fixture is PEM");
    assert_eq!(blocks.len(), 1);
    blocks.remove(0).der
}

fn fixture_jwk(kid: &str) -> Value {
    let doc: Value = serde_json::from_slice(&fixture("jwks.json")).expect("jwks.json is JSON");
    doc["keys"]
        .as_array()
        .expect("keys array")
        .iter()
        .find(|k| k["kid"] == kid)
        .cloned()
        .expect("kid in jwks.json")
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn rsa_sign(alg: Algorithm, msg: &[u8]) -> Vec<u8> {
    let pair = RsaKeyPair::from_pkcs8(&fixture_der("rsa2048.key.pem")).expect("RSA key");
    let encoding: &'static dyn signature::RsaEncoding = match alg {
        Algorithm::RS256 => &signature::RSA_PKCS1_SHA256,
        Algorithm::RS384 => &signature::RSA_PKCS1_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_SHA384,
        Algorithm::PS512 => &signature::RSA_PSS_SHA512,
        other => panic!("{other} is not RSA"),
    };
    let mut sig = vec![0; pair.public_modulus_len()];
    pair.sign(encoding, &SystemRandom::new(), msg, &mut sig)
        .expect("sign");
    sig
}

fn ec_pair(alg: &'static signature::EcdsaSigningAlgorithm, name: &str) -> EcdsaKeyPair {
    EcdsaKeyPair::from_pkcs8(alg, &fixture_der(name)).expect("EC key")
}

fn es256_sign(msg: &[u8]) -> Vec<u8> {
    let pair = ec_pair(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        "ec-p256.key.pem",
    );
    pair.sign(&SystemRandom::new(), msg)
        .expect("sign")
        .as_ref()
        .to_vec()
}

fn es384_sign(msg: &[u8]) -> Vec<u8> {
    let pair = ec_pair(
        &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        "ec-p384.key.pem",
    );
    pair.sign(&SystemRandom::new(), msg)
        .expect("sign")
        .as_ref()
        .to_vec()
}

fn ed_sign(msg: &[u8]) -> Vec<u8> {
    let pair = Ed25519KeyPair::from_pkcs8(&fixture_der("ed25519.key.pem")).expect("Ed25519 key");
    pair.sign(msg).as_ref().to_vec()
}

fn hmac_sign(alg: hmac::Algorithm, secret: &[u8], msg: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(alg, secret), msg)
        .as_ref()
        .to_vec()
}

fn pem_key(name: &str) -> VerifyingKey {
    VerifyingKey::from_pem(&fixture(name), None).expect("fixture key loads")
}

/// A signature check that must pass, and must fail on an altered input.
fn assert_verifies(key: &VerifyingKey, alg: Algorithm, sig: &[u8]) {
    assert_eq!(key.verify(alg, INPUT, sig), Ok(()), "{alg} with {key:?}");
    let mut altered = INPUT.to_vec();
    altered[3] ^= 1;
    assert_eq!(
        key.verify(alg, &altered, sig),
        Err(SignatureError::Invalid),
        "{alg} on an altered input"
    );
    let mut bad_sig = sig.to_vec();
    bad_sig[0] ^= 0x80;
    assert_eq!(
        key.verify(alg, INPUT, &bad_sig),
        Err(SignatureError::Invalid)
    );
}

fn invalid_message(result: Result<VerifyingKey, KeyError>) -> String {
    match result {
        Err(e @ (KeyError::Invalid(_) | KeyError::Weak(_) | KeyError::NotForSignatures(_))) => {
            e.to_string()
        }
        other => panic!("expected a key error, got {other:?}"),
    }
}

// ---- keys from PEM ---------------------------------------------------------------------

#[test]
fn rsa_spki_pem_verifies_every_rsa_algorithm() {
    let key = pem_key("rsa2048.pub.pem");
    assert_eq!(key.family(), KeyFamily::Rsa);
    assert_eq!(key.kid(), None);
    for alg in [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
    ] {
        assert_verifies(&key, alg, &rsa_sign(alg, INPUT));
    }
    // A PKCS#1 v1.5 signature is not a PSS one.
    assert_eq!(
        key.verify(Algorithm::PS256, INPUT, &rsa_sign(Algorithm::RS256, INPUT)),
        Err(SignatureError::Invalid)
    );
}

#[test]
fn rsa_pkcs1_pem_and_certificate_give_the_same_key() {
    let spki = pem_key("rsa2048.pub.pem");
    let sig = rsa_sign(Algorithm::RS256, INPUT);
    for name in ["rsa2048.pkcs1.pub.pem", "rsa2048.cert.pem"] {
        let key = VerifyingKey::from_pem(&fixture(name), Some("k1".into())).expect(name);
        assert_eq!(key.kid(), Some("k1"));
        assert_eq!(key.fingerprint(), spki.fingerprint(), "{name}");
        assert_verifies(&key, Algorithm::RS256, &sig);
    }
}

#[test]
fn ec_pems_verify_fixed_length_signatures() {
    let p256 = pem_key("ec-p256.pub.pem");
    assert_eq!(p256.family(), KeyFamily::EcP256);
    assert_verifies(&p256, Algorithm::ES256, &es256_sign(INPUT));

    let p384 = pem_key("ec-p384.pub.pem");
    assert_eq!(p384.family(), KeyFamily::EcP384);
    assert_verifies(&p384, Algorithm::ES384, &es384_sign(INPUT));
}

#[test]
fn ed25519_pem_verifies() {
    let key = pem_key("ed25519.pub.pem");
    assert_eq!(key.family(), KeyFamily::Ed25519);
    assert_verifies(&key, Algorithm::EdDSA, &ed_sign(INPUT));
    assert_eq!(
        key.verify(Algorithm::EdDSA, INPUT, &ed_sign(INPUT)[..63]),
        Err(SignatureError::Invalid)
    );
}

#[test]
fn der_encoded_ecdsa_signature_is_invalid() {
    let key = pem_key("ec-p256.pub.pem");
    let pair = ec_pair(
        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        "ec-p256.key.pem",
    );
    let der = pair.sign(&SystemRandom::new(), INPUT).expect("sign");
    assert_eq!(der.as_ref()[0], 0x30, "an ASN.1 SEQUENCE");
    assert_eq!(
        key.verify(Algorithm::ES256, INPUT, der.as_ref()),
        Err(SignatureError::Invalid)
    );
    // A DER signature padded or cut to 64 bytes is still no r‖s signature.
    let mut sized = der.as_ref().to_vec();
    sized.resize(64, 0);
    assert_eq!(
        key.verify(Algorithm::ES256, INPUT, &sized),
        Err(SignatureError::Invalid)
    );
}

#[test]
fn zero_and_wrong_length_ecdsa_signatures_are_invalid() {
    let p256 = pem_key("ec-p256.pub.pem");
    assert_eq!(
        p256.verify(Algorithm::ES256, INPUT, &[0u8; 64]),
        Err(SignatureError::Invalid)
    );
    let good = es256_sign(INPUT);
    assert_eq!(
        p256.verify(Algorithm::ES256, INPUT, &good[..63]),
        Err(SignatureError::Invalid)
    );
    let mut longer = good.clone();
    longer.push(0);
    assert_eq!(
        p256.verify(Algorithm::ES256, INPUT, &longer),
        Err(SignatureError::Invalid)
    );
    let p384 = pem_key("ec-p384.pub.pem");
    assert_eq!(
        p384.verify(Algorithm::ES384, INPUT, &[0u8; 96]),
        Err(SignatureError::Invalid)
    );
    assert_eq!(
        p384.verify(Algorithm::ES384, INPUT, &good),
        Err(SignatureError::Invalid)
    );
}

#[test]
fn wrong_family_is_wrong_key_type() {
    let rsa = pem_key("rsa2048.pub.pem");
    let p256 = pem_key("ec-p256.pub.pem");
    let p384 = pem_key("ec-p384.pub.pem");
    let ed = pem_key("ed25519.pub.pem");
    let hmac = VerifyingKey::from_hmac_secret(SECRET, None).expect("secret");
    let es256 = es256_sign(INPUT);
    let cases: [(&VerifyingKey, Algorithm); 8] = [
        (&rsa, Algorithm::ES256),
        (&rsa, Algorithm::HS256),
        (&p256, Algorithm::ES384),
        (&p256, Algorithm::RS256),
        (&p384, Algorithm::ES256),
        (&ed, Algorithm::ES256),
        (&hmac, Algorithm::RS256),
        (&hmac, Algorithm::EdDSA),
    ];
    for (key, alg) in cases {
        assert_eq!(
            key.verify(alg, INPUT, &es256),
            Err(SignatureError::WrongKeyType),
            "{alg} on {key:?}"
        );
    }
    // Algorithm confusion: an HMAC over the input keyed with the public key's PEM bytes.
    let forged = hmac_sign(hmac::HMAC_SHA256, &fixture("rsa2048.pub.pem"), INPUT);
    assert_eq!(
        rsa.verify(Algorithm::HS256, INPUT, &forged),
        Err(SignatureError::WrongKeyType)
    );
}

#[test]
fn rsa_1024_is_rejected_at_load() {
    let message = invalid_message(VerifyingKey::from_pem(&fixture("rsa1024.pub.pem"), None));
    assert!(message.contains("1024 bits"), "{message}");
    assert!(message.contains("2048"), "{message}");
}

#[test]
fn garbage_pem_gives_clear_errors() {
    let cases: [(&[u8], &str); 6] = [
        (b"hello world", "no PEM block"),
        (&[0x30, 0x82, 0xff, 0x00, 0xc3], "not PEM text"),
        (
            b"-----BEGIN PUBLIC KEY-----\nnot*base64!\n-----END PUBLIC KEY-----\n",
            "bad base64",
        ),
        (
            b"-----BEGIN PUBLIC KEY-----\nMIIBIjAN\n",
            "no `-----END PUBLIC KEY-----` line",
        ),
        (
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            "malformed SubjectPublicKeyInfo",
        ),
        (
            b"-----BEGIN SOMETHING-----\nAAAA\n-----END SOMETHING-----\n",
            "no public key in PEM blocks",
        ),
    ];
    for (input, expected) in cases {
        let message = invalid_message(VerifyingKey::from_pem(input, None));
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
    }
}

#[test]
fn private_keys_and_unsupported_curves_are_rejected_with_reasons() {
    for name in ["rsa2048.key.pem", "ec-p256.key.pem", "ed25519.key.pem"] {
        let message = invalid_message(VerifyingKey::from_pem(&fixture(name), None));
        assert!(message.contains("private key"), "{name}: {message}");
    }
    let message = invalid_message(VerifyingKey::from_pem(&fixture("ec-p521.pub.pem"), None));
    assert!(message.contains("P-521"), "{message}");
    let two = [fixture("ec-p256.pub.pem"), fixture("ec-p384.pub.pem")].concat();
    let message = invalid_message(VerifyingKey::from_pem(&two, None));
    assert!(message.contains("more than one"), "{message}");
}

// ---- HMAC ------------------------------------------------------------------------------

#[test]
fn hmac_secret_verifies_in_every_size() {
    let secret = fixture("hmac-64.secret");
    let key = VerifyingKey::from_hmac_secret(&secret, Some("h".into())).expect("secret");
    assert_eq!(key.family(), KeyFamily::Hmac);
    for (alg, h) in [
        (Algorithm::HS256, hmac::HMAC_SHA256),
        (Algorithm::HS384, hmac::HMAC_SHA384),
        (Algorithm::HS512, hmac::HMAC_SHA512),
    ] {
        let tag = hmac_sign(h, &secret, INPUT);
        assert_verifies(&key, alg, &tag);
        assert_eq!(
            key.verify(alg, INPUT, &tag[..tag.len() - 1]),
            Err(SignatureError::Invalid)
        );
    }
    let other = hmac_sign(
        hmac::HMAC_SHA256,
        b"another secret, also 32 bytes long",
        INPUT,
    );
    assert_eq!(
        key.verify(Algorithm::HS256, INPUT, &other),
        Err(SignatureError::Invalid)
    );
}

/// RFC 7518 §3.2: a secret shorter than the hash output MUST NOT be used with it.
#[test]
fn hmac_secret_verifies_only_the_hashes_it_is_long_enough_for() {
    let secret = fixture("hmac-64.secret");
    let all = [
        (Algorithm::HS256, hmac::HMAC_SHA256),
        (Algorithm::HS384, hmac::HMAC_SHA384),
        (Algorithm::HS512, hmac::HMAC_SHA512),
    ];
    for (len, usable) in [(32, 1), (47, 1), (48, 2), (63, 2), (64, 3)] {
        let secret = &secret[..len];
        let key = VerifyingKey::from_hmac_secret(secret, None).expect("secret");
        for (i, (alg, h)) in all.into_iter().enumerate() {
            let tag = hmac_sign(h, secret, INPUT);
            if i < usable {
                assert!(key.accepts(alg), "{len} bytes, {alg}");
                assert_verifies(&key, alg, &tag);
            } else {
                assert!(!key.accepts(alg), "{len} bytes, {alg}");
                assert_eq!(
                    key.verify(alg, INPUT, &tag),
                    Err(SignatureError::WrongKeyType),
                    "{len} bytes, {alg}"
                );
            }
        }
    }
}

#[test]
fn short_hmac_secret_is_rejected() {
    let message = invalid_message(VerifyingKey::from_hmac_secret(&[7u8; 31], None));
    assert!(message.contains("31 bytes"), "{message}");
    assert!(VerifyingKey::from_hmac_secret(&[7u8; 32], None).is_ok());
    assert!(VerifyingKey::from_hmac_secret(b"", None).is_err());
}

#[test]
fn debug_never_shows_the_secret() {
    let secret = b"super-secret-value-that-must-not-leak";
    let key = VerifyingKey::from_hmac_secret(secret, Some("h1".into())).expect("secret");
    let shown = format!("{key:?}");
    assert!(
        shown.contains("h1") && shown.contains("redacted"),
        "{shown}"
    );
    assert!(!shown.contains("super-secret"), "{shown}");
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    assert!(!shown.contains(&hex[..16]), "{shown}");
    assert!(!shown.contains("fingerprint"), "{shown}");
}

// ---- keys from JWK ---------------------------------------------------------------------

#[test]
fn fixture_jwks_keys_verify_and_match_their_pems() {
    let cases: [(&str, &str, Algorithm, Vec<u8>); 4] = [
        (
            "rsa-1",
            "rsa2048.pub.pem",
            Algorithm::RS256,
            rsa_sign(Algorithm::RS256, INPUT),
        ),
        (
            "ec256-1",
            "ec-p256.pub.pem",
            Algorithm::ES256,
            es256_sign(INPUT),
        ),
        (
            "ec384-1",
            "ec-p384.pub.pem",
            Algorithm::ES384,
            es384_sign(INPUT),
        ),
        ("ed-1", "ed25519.pub.pem", Algorithm::EdDSA, ed_sign(INPUT)),
    ];
    for (kid, pem_name, alg, sig) in cases {
        let key = VerifyingKey::from_jwk(&fixture_jwk(kid)).expect(kid);
        assert_eq!(key.kid(), Some(kid));
        assert_eq!(key.algorithm(), Some(alg));
        assert_eq!(key.fingerprint(), pem_key(pem_name).fingerprint(), "{kid}");
        assert_verifies(&key, alg, &sig);
    }
}

#[test]
fn jwk_alg_restricts_the_key() {
    let key = VerifyingKey::from_jwk(&fixture_jwk("rsa-1")).expect("rsa-1");
    // The same key without "alg" verifies PS256; with "alg": "RS256" it must refuse it.
    let ps256 = rsa_sign(Algorithm::PS256, INPUT);
    assert_eq!(
        key.verify(Algorithm::PS256, INPUT, &ps256),
        Err(SignatureError::WrongKeyType)
    );
    let mut no_alg = fixture_jwk("rsa-1");
    no_alg.as_object_mut().expect("object").remove("alg");
    let key = VerifyingKey::from_jwk(&no_alg).expect("no alg");
    assert_eq!(key.algorithm(), None);
    assert_eq!(key.verify(Algorithm::PS256, INPUT, &ps256), Ok(()));
}

#[test]
fn jwk_from_generated_keys_verifies() {
    // Keys made here rather than by openssl: the JWK built from aws-lc's own encoding.
    let rng = SystemRandom::new();
    let pair = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).expect("gen");
    let point = pair.public_key().as_ref();
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "g",
        "x": b64url(&point[1..33]), "y": b64url(&point[33..])});
    let key = VerifyingKey::from_jwk(&jwk).expect("EC JWK");
    let sig = pair.sign(&rng, INPUT).expect("sign");
    assert_verifies(&key, Algorithm::ES256, sig.as_ref());

    let ed = Ed25519KeyPair::generate().expect("gen");
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64url(ed.public_key().as_ref())});
    let key = VerifyingKey::from_jwk(&jwk).expect("OKP JWK");
    assert_verifies(&key, Algorithm::EdDSA, ed.sign(INPUT).as_ref());

    let secret = &fixture("hmac-64.secret")[..48];
    let jwk = json!({"kty": "oct", "kid": "s", "k": b64url(secret), "alg": "HS384"});
    let key = VerifyingKey::from_jwk(&jwk).expect("oct JWK");
    assert_verifies(
        &key,
        Algorithm::HS384,
        &hmac_sign(hmac::HMAC_SHA384, secret, INPUT),
    );
    let tag = hmac_sign(hmac::HMAC_SHA256, secret, INPUT);
    assert_eq!(
        key.verify(Algorithm::HS256, INPUT, &tag),
        Err(SignatureError::WrongKeyType)
    );
    // An `alg` whose hash is longer than the secret: refused, not kept as a dead key.
    let jwk = json!({"kty": "oct", "k": b64url(&secret[..47]), "alg": "HS384"});
    let message = invalid_message(VerifyingKey::from_jwk(&jwk));
    assert!(message.contains("at least 48 bytes"), "{message}");
}

#[test]
fn jwk_use_enc_and_key_ops_without_verify_are_rejected() {
    let mut enc = fixture_jwk("rsa-1");
    enc["use"] = json!("enc");
    assert!(matches!(
        VerifyingKey::from_jwk(&enc),
        Err(KeyError::NotForSignatures(_))
    ));
    let mut ops = fixture_jwk("ec256-1");
    ops["key_ops"] = json!(["encrypt", "wrapKey"]);
    assert!(matches!(
        VerifyingKey::from_jwk(&ops),
        Err(KeyError::NotForSignatures(_))
    ));
    ops["key_ops"] = json!(["verify"]);
    assert!(VerifyingKey::from_jwk(&ops).is_ok());
}

#[test]
fn jwk_unknown_members_are_ignored() {
    let mut jwk = fixture_jwk("ec256-1");
    jwk["x5t#S256"] = json!("whatever");
    jwk["ext"] = json!(true);
    jwk["nested"] = json!({"a": [1, 2, 3]});
    assert!(VerifyingKey::from_jwk(&jwk).is_ok());
}

#[test]
fn bad_jwks_are_rejected_with_reasons() {
    let rsa = fixture_jwk("rsa-1");
    let ec = fixture_jwk("ec256-1");
    let with = |base: &Value, name: &str, value: Value| {
        let mut jwk = base.clone();
        jwk[name] = value;
        jwk
    };
    let cases = [
        (json!("a string"), "JSON object"),
        (with(&rsa, "kty", json!("RSA-X")), "\"kty\" \"RSA-X\""),
        (with(&rsa, "alg", json!("ES256")), "does not fit"),
        (
            with(&rsa, "alg", json!("RSA-OAEP")),
            "not a supported signature algorithm",
        ),
        (
            with(&rsa, "alg", json!("none")),
            "not a supported signature algorithm",
        ),
        (with(&rsa, "d", json!("AQAB")), "private key material"),
        (with(&rsa, "n", json!("not base64 !")), "base64url"),
        (with(&rsa, "kid", json!(7)), "\"kid\" must be a string"),
        (with(&ec, "crv", json!("P-521")), "P-521"),
        (with(&ec, "alg", json!("ES384")), "does not fit"),
        (with(&ec, "x", json!(b64url(&[1u8; 31]))), "32 bytes each"),
        (
            with(&ec, "y", json!(b64url(&[1u8; 32]))),
            "not a valid EC P-256",
        ),
        (
            json!({"kty": "OKP", "crv": "X25519", "x": b64url(&[9u8; 32])}),
            "X25519",
        ),
        (json!({"kty": "oct", "k": b64url(&[1u8; 16])}), "16 bytes"),
        (json!({"n": "AQAB"}), "missing \"kty\""),
    ];
    for (jwk, expected) in cases {
        let message = invalid_message(VerifyingKey::from_jwk(&jwk));
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
    }
}

#[test]
fn rsa_1024_jwk_is_rejected() {
    let n = {
        let mut n = vec![0xc5u8; 128];
        n[127] |= 1;
        n
    };
    let jwk = json!({"kty": "RSA", "n": b64url(&n), "e": "AQAB"});
    assert!(matches!(
        VerifyingKey::from_jwk(&jwk),
        Err(KeyError::Weak(_))
    ));
    // A leading zero byte does not make a key longer.
    let mut padded = vec![0u8];
    padded.extend_from_slice(&n);
    let jwk = json!({"kty": "RSA", "n": b64url(&padded), "e": "AQAB"});
    assert!(matches!(
        VerifyingKey::from_jwk(&jwk),
        Err(KeyError::Weak(_))
    ));
}

// ---- JWKS documents ----------------------------------------------------------------------

#[test]
fn jwks_skips_unusable_keys_but_not_all() {
    let doc = json!({"keys": [
        {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
        with_member(fixture_jwk("rsa-1"), "use", json!("enc")),
        {"kty": "oct", "k": b64url(SECRET)},
        fixture_jwk("ed-1"),
        {"kty": "WHAT"},
    ]});
    let keys = jwks::parse_jwks(doc.to_string().as_bytes(), "iss", "test").expect("one usable");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kid(), Some("ed-1"));

    let doc = json!({"keys": [with_member(fixture_jwk("rsa-1"), "use", json!("enc"))]});
    let err = jwks::parse_jwks(doc.to_string().as_bytes(), "iss", "test").expect_err("none usable");
    assert!(err.to_string().contains("none of its 1 keys"), "{err}");
}

#[test]
fn jwks_document_limits() {
    let parse = |body: &[u8]| jwks::parse_jwks(body, "iss", "test").map(|k| k.len());
    assert_eq!(parse(&fixture("jwks.json")).expect("fixture"), 4);
    assert!(parse(b"not json").is_err());
    assert!(parse(b"{\"keys\": []}").is_err());
    assert!(parse(b"{\"keys\": {}}").is_err());
    assert!(parse(b"[]").is_err());
    let many = json!({"keys": vec![fixture_jwk("ed-1"); MAX_JWKS_KEYS + 1]});
    let err = parse(many.to_string().as_bytes()).expect_err("too many keys");
    assert!(err.to_string().contains("at most 100"), "{err}");
    let exactly = json!({"keys": vec![fixture_jwk("ed-1"); MAX_JWKS_KEYS]});
    assert_eq!(
        parse(exactly.to_string().as_bytes()).expect("100 keys"),
        MAX_JWKS_KEYS
    );
    let mut big = fixture("jwks.json");
    big.resize(MAX_JWKS_BYTES + 1, b' ');
    let err = parse(&big).expect_err("too big");
    assert!(err.to_string().contains("bytes"), "{err}");
}

fn with_member(mut jwk: Value, name: &str, value: Value) -> Value {
    jwk[name] = value;
    jwk
}

// ---- key lookup --------------------------------------------------------------------------

fn ec_key(kid: Option<&str>) -> VerifyingKey {
    let pair = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).expect("gen");
    VerifyingKey::from_ec(KeyFamily::EcP256, pair.public_key().as_ref())
        .expect("point")
        .with_kid(kid.map(str::to_owned))
}

fn rsa_key(kid: Option<&str>, alg: Option<Algorithm>) -> VerifyingKey {
    pem_key("rsa2048.pub.pem")
        .with_kid(kid.map(str::to_owned))
        .with_algorithm(alg)
}

fn found(
    set: &KeySet,
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<Option<String>, KeyLookupError> {
    set.key_for(kid, alg).map(|k| k.kid().map(str::to_owned))
}

#[test]
fn key_for_by_kid() {
    let set = KeySet::new(vec![
        ec_key(Some("a")),
        ec_key(Some("b")),
        rsa_key(Some("r"), None),
    ]);
    assert_eq!(
        found(&set, Some("a"), Algorithm::ES256),
        Ok(Some("a".into()))
    );
    assert_eq!(
        found(&set, Some("b"), Algorithm::ES256),
        Ok(Some("b".into()))
    );
    assert_eq!(
        found(&set, Some("c"), Algorithm::ES256),
        Err(KeyLookupError::UnknownKey)
    );
    // The kid decides; the verifier then reports the mismatch as WrongKeyType.
    let r = set.key_for(Some("r"), Algorithm::ES256).expect("by kid");
    assert_eq!(
        r.verify(Algorithm::ES256, INPUT, &[0; 64]),
        Err(SignatureError::WrongKeyType)
    );
    // Without a kid: two EC keys fit ES256, so no guess; one RSA key fits RS256.
    assert_eq!(
        found(&set, None, Algorithm::ES256),
        Err(KeyLookupError::UnknownKey)
    );
    assert_eq!(found(&set, None, Algorithm::RS256), Ok(Some("r".into())));
    assert_eq!(
        found(&set, None, Algorithm::EdDSA),
        Err(KeyLookupError::UnknownKey)
    );
}

#[test]
fn key_for_falls_back_to_the_single_kidless_key() {
    let set = KeySet::new(vec![ec_key(Some("a")), ec_key(None), rsa_key(None, None)]);
    // Unknown kid: the only kid-less key that fits the algorithm.
    assert_eq!(found(&set, Some("zzz"), Algorithm::ES256), Ok(None));
    assert_eq!(found(&set, Some("zzz"), Algorithm::PS384), Ok(None));
    assert_eq!(
        found(&set, Some("zzz"), Algorithm::ES384),
        Err(KeyLookupError::UnknownKey)
    );
    // No kid: two EC keys fit (one with a kid, one without): ambiguous.
    assert_eq!(
        found(&set, None, Algorithm::ES256),
        Err(KeyLookupError::UnknownKey)
    );
    assert_eq!(found(&set, None, Algorithm::RS512), Ok(None));

    let two_kidless = KeySet::new(vec![ec_key(None), ec_key(None)]);
    assert_eq!(
        found(&two_kidless, Some("x"), Algorithm::ES256),
        Err(KeyLookupError::UnknownKey)
    );
    assert_eq!(
        found(&two_kidless, None, Algorithm::ES256),
        Err(KeyLookupError::UnknownKey)
    );
}

#[test]
fn key_for_honours_jwk_alg_and_repeated_kids() {
    let set = KeySet::new(vec![
        rsa_key(Some("k"), Some(Algorithm::RS256)),
        rsa_key(Some("k"), Some(Algorithm::PS256)),
        rsa_key(None, Some(Algorithm::RS384)),
    ]);
    let by_kid = set
        .key_for(Some("k"), Algorithm::PS256)
        .expect("repeated kid, one fits");
    assert_eq!(by_kid.algorithm(), Some(Algorithm::PS256));
    assert_eq!(
        found(&set, Some("k"), Algorithm::RS512),
        Err(KeyLookupError::UnknownKey)
    );
    let no_kid = set
        .key_for(None, Algorithm::RS256)
        .expect("one key accepts RS256");
    assert_eq!(no_kid.algorithm(), Some(Algorithm::RS256));
    assert_eq!(found(&set, Some("other"), Algorithm::RS384), Ok(None));
    assert_eq!(
        found(&set, Some("other"), Algorithm::RS256),
        Err(KeyLookupError::UnknownKey)
    );
}

#[test]
fn key_for_on_an_empty_set_is_no_keys() {
    let set = KeySet::default();
    assert_eq!(
        found(&set, Some("a"), Algorithm::RS256),
        Err(KeyLookupError::NoKeys)
    );
    assert_eq!(
        found(&set, None, Algorithm::RS256),
        Err(KeyLookupError::NoKeys)
    );
}

#[test]
fn key_sets_compare_by_content() {
    let a = KeySet::new(vec![rsa_key(Some("r"), None), pem_key("ed25519.pub.pem")]);
    let b = KeySet::new(vec![pem_key("ed25519.pub.pem"), rsa_key(Some("r"), None)]);
    assert!(a.same_keys(&b), "order does not matter");
    let c = KeySet::new(vec![rsa_key(Some("r2"), None), pem_key("ed25519.pub.pem")]);
    assert!(!a.same_keys(&c), "a kid matters");
    let d = KeySet::new(vec![
        rsa_key(Some("r"), Some(Algorithm::RS256)),
        pem_key("ed25519.pub.pem"),
    ]);
    assert!(!a.same_keys(&d), "an alg matters");
}

// ---- key store: files --------------------------------------------------------------------

fn clock() -> (Arc<ManualClock>, SharedClock) {
    let clock = ManualClock::new(1_700_000_000_000);
    let shared: SharedClock = clock.clone();
    (clock, shared)
}

fn issuer(name: &str, keys: KeySourceConfig) -> IssuerConfig {
    IssuerConfig {
        issuer: name.to_owned(),
        algorithms: vec![Algorithm::RS256],
        keys,
        ..IssuerConfig::default()
    }
}

fn pem_files(files: &[(PathBuf, Option<&str>)]) -> KeySourceConfig {
    KeySourceConfig {
        pem_files: files
            .iter()
            .map(|(path, kid)| KeyFile {
                path: path.clone(),
                kid: kid.map(str::to_owned),
            })
            .collect(),
        ..KeySourceConfig::default()
    }
}

async fn with_timeout<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("timed out")
}

#[tokio::test]
async fn store_loads_every_file_source() {
    let (_, clock) = clock();
    let issuers = vec![
        issuer(
            "https://pem.example",
            pem_files(&[
                (fixture_path("rsa2048.pub.pem"), Some("r")),
                (fixture_path("ec-p256.pub.pem"), None),
            ]),
        ),
        issuer(
            "https://hmac.example",
            KeySourceConfig {
                hmac_secret_files: vec![KeyFile {
                    path: fixture_path("hmac-64.secret"),
                    kid: Some("h".into()),
                }],
                ..KeySourceConfig::default()
            },
        ),
        issuer(
            "https://jwks-file.example",
            KeySourceConfig {
                jwks_file: Some(fixture_path("jwks.json")),
                ..KeySourceConfig::default()
            },
        ),
    ];
    let store = with_timeout(KeyStore::load(&issuers, clock))
        .await
        .expect("loads");
    assert_eq!(store.key_count(), 2 + 1 + 4);
    assert!(store.issuer("https://nobody.example").is_none());

    let pem = store.issuer("https://pem.example").expect("pem issuer");
    assert!(!pem.is_symmetric());
    let r = pem.key_for(Some("r"), Algorithm::RS256).expect("r");
    assert_eq!(
        r.verify(Algorithm::RS256, INPUT, &rsa_sign(Algorithm::RS256, INPUT)),
        Ok(())
    );
    let ec = pem
        .key_for(None, Algorithm::ES256)
        .expect("the kid-less EC key");
    assert_eq!(
        ec.verify(Algorithm::ES256, INPUT, &es256_sign(INPUT)),
        Ok(())
    );

    let hmac_issuer = store.issuer("https://hmac.example").expect("hmac issuer");
    assert!(hmac_issuer.is_symmetric());
    let h = hmac_issuer.key_for(Some("h"), Algorithm::HS512).expect("h");
    let tag = hmac_sign(hmac::HMAC_SHA512, &fixture("hmac-64.secret"), INPUT);
    assert_eq!(h.verify(Algorithm::HS512, INPUT, &tag), Ok(()));

    let jwks = store
        .issuer("https://jwks-file.example")
        .expect("jwks issuer");
    assert!(jwks.key_for(Some("ed-1"), Algorithm::EdDSA).is_ok());
    // File sources never refetch.
    assert!(!with_timeout(jwks.refetch_for_unknown_kid()).await);

    let status = store.status();
    let names: Vec<_> = status.iter().map(|s| s.issuer.as_str()).collect();
    assert_eq!(
        names,
        [
            "https://hmac.example",
            "https://jwks-file.example",
            "https://pem.example"
        ]
    );
    assert_eq!(status[1].source, "jwks_file");
    assert_eq!(status[1].keys, 4);
    assert_eq!(status[1].last_refresh_ms, 1_700_000_000_000);
    assert_eq!(status[1].last_error, None);
    assert_eq!(status[1].fetch_failures, 0);
    assert_eq!(status[2].source, "pem");
}

#[tokio::test]
async fn bad_key_files_fail_the_load_naming_issuer_and_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a key").expect("write");
    let missing = dir.path().join("missing.pem");
    let short = dir.path().join("short.secret");
    std::fs::write(&short, [1u8; 20]).expect("write");
    let bad_jwks = dir.path().join("bad-jwks.json");
    std::fs::write(&bad_jwks, "{\"keys\": [{\"kty\": \"RSA\"}]}").expect("write");
    let cases = [
        (
            pem_files(&[
                (fixture_path("ec-p256.pub.pem"), None),
                (garbage.clone(), None),
            ]),
            garbage.clone(),
            "no PEM block",
        ),
        (
            pem_files(&[(missing.clone(), None)]),
            missing,
            "cannot read",
        ),
        (
            pem_files(&[(fixture_path("rsa1024.pub.pem"), None)]),
            fixture_path("rsa1024.pub.pem"),
            "1024 bits",
        ),
        (
            KeySourceConfig {
                hmac_secret_files: vec![KeyFile {
                    path: short.clone(),
                    kid: None,
                }],
                ..KeySourceConfig::default()
            },
            short,
            "20 bytes",
        ),
        (
            KeySourceConfig {
                jwks_file: Some(bad_jwks.clone()),
                ..KeySourceConfig::default()
            },
            bad_jwks,
            "none of its 1 keys",
        ),
    ];
    for (keys, path, expected) in cases {
        let (_, clock) = clock();
        let issuers = [issuer("https://bad.example", keys)];
        let err = with_timeout(KeyStore::load(&issuers, clock))
            .await
            .expect_err("bad file");
        let message = err.to_string();
        assert!(message.contains("\"https://bad.example\""), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
    }
}

#[tokio::test]
async fn hmac_secret_too_short_for_an_allowed_algorithm_fails_the_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("40.secret");
    std::fs::write(&secret, &fixture("hmac-64.secret")[..40]).expect("write");
    let keys = KeySourceConfig {
        hmac_secret_files: vec![KeyFile {
            path: secret.clone(),
            kid: Some("h".into()),
        }],
        ..KeySourceConfig::default()
    };
    let with = |algorithms: Vec<Algorithm>| IssuerConfig {
        algorithms,
        ..issuer("https://hmac.example", keys.clone())
    };

    let (_, shared) = clock();
    let issuers = [with(vec![Algorithm::HS256, Algorithm::HS512])];
    let err = with_timeout(KeyStore::load(&issuers, shared))
        .await
        .expect_err("40 bytes is too short for HS512");
    let message = err.to_string();
    for part in [
        "\"https://hmac.example\"",
        &secret.display().to_string(),
        "40 bytes",
        "HS512",
        "at least 64",
    ] {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }

    // The same file serves an issuer that allows only what it is long enough for.
    let (_, shared) = clock();
    let store = with_timeout(KeyStore::load(&[with(vec![Algorithm::HS256])], shared))
        .await
        .expect("40 bytes is enough for HS256");
    let keys = store.issuer("https://hmac.example").expect("issuer");
    let key = keys.key_for(Some("h"), Algorithm::HS256).expect("h");
    let tag = hmac_sign(hmac::HMAC_SHA256, &fixture("hmac-64.secret")[..40], INPUT);
    assert_eq!(key.verify(Algorithm::HS256, INPUT, &tag), Ok(()));
}

#[tokio::test]
async fn changed_key_files_are_swapped_in_and_bad_ones_keep_the_last_good_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("key.pem");
    std::fs::copy(fixture_path("ec-p256.pub.pem"), &path).expect("copy");
    let (clock, shared) = clock();
    let issuers = [issuer(
        "https://rotating.example",
        pem_files(&[(path.clone(), Some("k"))]),
    )];
    let store = with_timeout(KeyStore::load(&issuers, shared))
        .await
        .expect("loads");
    let keys = store.issuer("https://rotating.example").expect("issuer");
    let first = keys.key_for(Some("k"), Algorithm::ES256).expect("k");
    assert_eq!(first.family(), KeyFamily::EcP256);

    // Unchanged content: nothing to swap.
    assert_eq!(with_timeout(keys.refresh()).await, Ok(false));

    // A new key in the same file.
    std::fs::copy(fixture_path("ed25519.pub.pem"), &path).expect("copy");
    clock.advance_ms(1000);
    assert_eq!(with_timeout(keys.refresh()).await, Ok(true));
    let second = keys.key_for(Some("k"), Algorithm::EdDSA).expect("k");
    assert_eq!(second.family(), KeyFamily::Ed25519);
    assert_eq!(keys.status().last_refresh_ms, 1_700_000_001_000);
    // The Arc handed out before the swap still works.
    assert_eq!(
        first.verify(Algorithm::ES256, INPUT, &es256_sign(INPUT)),
        Ok(())
    );

    // A broken file: the Ed25519 key stays, the failure shows.
    std::fs::write(&path, "-----BEGIN PUBLIC KEY-----\n").expect("write");
    clock.advance_ms(1000);
    let err = with_timeout(keys.refresh()).await.expect_err("broken file");
    assert!(err.contains("key.pem"), "{err}");
    assert!(keys.key_for(Some("k"), Algorithm::EdDSA).is_ok());
    let status = keys.status();
    assert_eq!(status.keys, 1);
    assert_eq!(status.fetch_failures, 1);
    assert_eq!(status.last_refresh_ms, 1_700_000_001_000);
    let last_error = status.last_error.expect("an error");
    assert!(
        last_error.contains("key.pem") && last_error.contains("END PUBLIC KEY"),
        "{last_error}"
    );

    // Fixed again: the error clears, the count stays.
    std::fs::copy(fixture_path("ec-p384.pub.pem"), &path).expect("copy");
    assert_eq!(with_timeout(keys.refresh()).await, Ok(true));
    let status = keys.status();
    assert_eq!(status.last_error, None);
    assert_eq!(status.fetch_failures, 1);
    assert!(keys.key_for(Some("k"), Algorithm::ES384).is_ok());
}

/// Polls `done` between scheduler turns (no timer involved, so paused time stays put),
/// for at most a few real seconds.
async fn until(mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "condition not reached"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn refresh_loop_rereads_files_every_interval_and_stops_on_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("key.pem");
    std::fs::copy(fixture_path("ec-p256.pub.pem"), &path).expect("copy");
    let (_, shared) = clock();
    let mut keys = pem_files(&[(path.clone(), Some("k"))]);
    keys.refresh_interval = Duration::from_secs(60);
    let issuers = [issuer("https://loop.example", keys)];
    let store = Arc::new(
        with_timeout(KeyStore::load(&issuers, shared))
            .await
            .expect("loads"),
    );
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(store.clone().run_refresh(shutdown));
    let issuer_keys = store
        .issuer("https://loop.example")
        .expect("issuer")
        .clone();
    let family = || {
        issuer_keys
            .key_for(Some("k"), Algorithm::EdDSA)
            .map(|k| k.family())
            .ok()
    };

    std::fs::copy(fixture_path("ed25519.pub.pem"), &path).expect("copy");
    // Let the loop start its wait; nothing is re-read before the interval.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    tokio::time::advance(Duration::from_secs(59)).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        family(),
        Some(KeyFamily::EcP256),
        "re-read before the interval"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    until(|| family() == Some(KeyFamily::Ed25519)).await;

    stop.send(true).expect("loop listening");
    with_timeout(task).await.expect("loop ended cleanly");
}

#[tokio::test(start_paused = true)]
async fn failed_refreshes_retry_sooner_with_backoff() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("key.pem");
    std::fs::copy(fixture_path("ec-p256.pub.pem"), &path).expect("copy");
    let (_, shared) = clock();
    let mut source = pem_files(&[(path.clone(), None)]);
    source.refresh_interval = Duration::from_secs(10);
    let issuers = [issuer("https://backoff.example", source)];
    let store = with_timeout(KeyStore::load(&issuers, shared))
        .await
        .expect("loads");
    let keys = store.issuer("https://backoff.example").expect("issuer");
    assert_eq!(keys.next_refresh_delay(), Duration::from_secs(10));
    std::fs::write(&path, "garbage").expect("write");
    let mut delays = Vec::new();
    for _ in 0..6 {
        assert!(with_timeout(keys.refresh()).await.is_err());
        delays.push(keys.next_refresh_delay().as_secs());
    }
    assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
    std::fs::copy(fixture_path("ec-p256.pub.pem"), &path).expect("copy");
    // Same content as the last good load: no swap, but a success.
    assert_eq!(with_timeout(keys.refresh()).await, Ok(false));
    assert_eq!(keys.next_refresh_delay(), Duration::from_secs(10));
    assert_eq!(keys.status().fetch_failures, 6);
}

#[tokio::test]
async fn run_refresh_without_issuers_waits_for_shutdown() {
    let (_, clock) = clock();
    let store = Arc::new(
        with_timeout(KeyStore::load(&[], clock))
            .await
            .expect("empty"),
    );
    assert_eq!(store.key_count(), 0);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(store.run_refresh(shutdown));
    tokio::task::yield_now().await;
    assert!(!task.is_finished());
    stop.send(true).expect("listening");
    with_timeout(task).await.expect("ended");
}
