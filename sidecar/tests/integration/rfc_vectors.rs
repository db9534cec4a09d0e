//! The JWS examples of RFC 7515 Appendix A, RFC 7520 §4 and RFC 8037 Appendix A.4,
//! each verified by a sidecar configured with the RFC's public key (or secret).
//!
//! The intact token's signature must hold: its `exp` lies in 2011 (RFC 7515) or its
//! payload is not JSON at all (RFC 7520, RFC 8037), so the answer is a claims reason,
//! never `REASON_BAD_SIGNATURE`, `REASON_UNKNOWN_KEY` or an algorithm reason. Changing
//! one byte of the decoded payload, or of the decoded signature, and re-encoding it must
//! give `REASON_BAD_SIGNATURE`: the signature is checked before the payload is read.
//!
//! Each vector runs on its own single-issuer sidecar, whose keys are used without
//! reading the payload (RFC 7520's and 8037's payloads have no `iss`).
//!
//! Not covered: RFC 7515 A.4 and RFC 7520 §4.3 are ES512 (P-521), which the sidecar
//! does not support; they are only used to check that an ES512 token is refused with
//! `REASON_ALGORITHM_NOT_ALLOWED`. RFC 7515 A.5 is the unsecured JWS (`alg: none`),
//! covered by the hostile suite.

use std::path::PathBuf;

use aws_lc_rs::hmac;
use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use denylist_proto::pb::Reason;
use serde_json::Value;

use crate::harness::{
    Issuer, SidecarBuilder, TestKey, TestSidecar, b64, reason_name, toml_str, unb64,
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rfc")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixture(name))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
        .trim()
        .to_owned()
}

fn json(name: &str) -> Value {
    serde_json::from_str(&read(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// The decoded `k` of an `oct` JWK fixture.
fn oct_secret(name: &str) -> Vec<u8> {
    unb64(json(name)["k"].as_str().expect("k"))
}

/// The first key of a JWKS fixture.
fn first_key(name: &str) -> Value {
    json(name)["keys"][0].clone()
}

/// How the vector's sidecar gets its key.
enum KeySource {
    /// A JWKS file (public keys).
    Jwks(&'static str),
    /// An `oct` JWK whose `k` becomes an HMAC secret file, with an optional `kid`.
    Hmac(&'static str, Option<&'static str>),
}

struct Vector {
    /// Fixture holding the compact serialisation.
    jws: &'static str,
    alg: &'static str,
    key: KeySource,
    /// `iss` configured for the issuer (the payload's, where it has one).
    issuer: &'static str,
    /// What the intact token may get.
    intact: &'static [Reason],
}

/// Anything but a signature, key or algorithm reason.
const CLAIMS_REASONS: &[Reason] = &[
    Reason::MissingClaim,
    Reason::Malformed,
    Reason::InvalidClaim,
    Reason::Expired,
];

const RFC7515_A1: Vector = Vector {
    jws: "rfc7515-a1.jws",
    alg: "HS256",
    key: KeySource::Hmac("rfc7515-a1.jwk.json", None),
    issuer: "joe",
    // `iss` matches the issuer and `exp` is 2011-03-22: exactly EXPIRED.
    intact: &[Reason::Expired],
};

const RFC7515_A2: Vector = Vector {
    jws: "rfc7515-a2.jws",
    alg: "RS256",
    key: KeySource::Jwks("rfc7515-a2.jwks.json"),
    issuer: "joe",
    intact: &[Reason::Expired],
};

const RFC7515_A3: Vector = Vector {
    jws: "rfc7515-a3.jws",
    alg: "ES256",
    key: KeySource::Jwks("rfc7515-a3.jwks.json"),
    issuer: "joe",
    intact: &[Reason::Expired],
};

const RFC7520_4_1: Vector = Vector {
    jws: "rfc7520-4.1.jws",
    alg: "RS256",
    key: KeySource::Jwks("rfc7520-rsa.jwks.json"),
    issuer: "https://hobbiton.example",
    intact: CLAIMS_REASONS,
};

const RFC7520_4_2: Vector = Vector {
    jws: "rfc7520-4.2.jws",
    alg: "PS384",
    key: KeySource::Jwks("rfc7520-rsa.jwks.json"),
    issuer: "https://hobbiton.example",
    intact: CLAIMS_REASONS,
};

const RFC7520_4_4: Vector = Vector {
    jws: "rfc7520-4.4.jws",
    alg: "HS256",
    key: KeySource::Hmac(
        "rfc7520-hmac.jwk.json",
        Some("018c0ae5-4d9b-471b-bfd6-eef314bc7037"),
    ),
    issuer: "https://hobbiton.example",
    intact: CLAIMS_REASONS,
};

const RFC8037_A4: Vector = Vector {
    jws: "rfc8037-a4.jws",
    alg: "EdDSA",
    key: KeySource::Jwks("rfc8037-a.jwks.json"),
    issuer: "https://rfc8037.example",
    intact: CLAIMS_REASONS,
};

async fn sidecar_for(v: &Vector) -> TestSidecar {
    let builder = SidecarBuilder::new();
    let keys = match &v.key {
        KeySource::Jwks(name) => {
            format!("jwks_file = {}", toml_str(&fixture(name).to_string_lossy()))
        }
        KeySource::Hmac(name, kid) => {
            let path = builder.dir().join("rfc.secret");
            std::fs::write(&path, oct_secret(name)).expect("write secret");
            let kid = kid
                .map(|k| format!(", kid = {}", toml_str(k)))
                .unwrap_or_default();
            format!(
                "hmac_secret_files = [{{ path = {}{kid} }}]",
                toml_str(&path.to_string_lossy())
            )
        }
    };
    builder
        .issuer_toml(format!(
            "[[issuers]]\nissuer = {}\nalgorithms = [{}]\nrequire_jti = false\nmax_lifetime = \"366d\"\n[issuers.keys]\n{keys}\n",
            toml_str(v.issuer),
            toml_str(v.alg),
        ))
        .start()
        .await
}

/// The token with one byte of a decoded segment (`index` 1: payload, 2: signature)
/// XORed with 0x01 at `at`, re-encoded.
fn flip(token: &str, index: usize, at: usize) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut bytes = unb64(&parts[index]);
    bytes[at] ^= 0x01;
    parts[index] = b64(bytes);
    parts.join(".")
}

async fn check_vector(v: &Vector) {
    let token = read(v.jws);
    let sidecar = sidecar_for(v).await;

    let r = sidecar.verify(&token).await;
    let got = Reason::try_from(r.reason).ok();
    assert!(
        got.is_some_and(|g| v.intact.contains(&g)),
        "{}: the intact token must verify (then fail on its claims): got {} ({:?})",
        v.jws,
        reason_name(r.reason),
        r.detail
    );
    assert!(!r.valid, "{}: its claims cannot be valid today", v.jws);

    let mut failures = Vec::new();
    for (index, what) in [(1, "payload"), (2, "signature")] {
        let len = unb64(token.split('.').nth(index).expect("segment")).len();
        for at in [0, len / 2, len - 1] {
            let tampered = flip(&token, index, at);
            let r = sidecar.verify(&tampered).await;
            if r.reason != Reason::BadSignature as i32 || r.valid {
                failures.push(format!(
                    "{what} byte {at} of {len} flipped: expected REASON_BAD_SIGNATURE, got {} ({:?})",
                    reason_name(r.reason),
                    r.detail
                ));
            }
            if r.claims.is_some() {
                failures.push(format!("{what} byte {at} flipped: claims came back"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}:\n  {}",
        v.jws,
        failures.join("\n  ")
    );
}

/// Guards the transcription: every fixture signature verifies with aws-lc directly, so a
/// failure in the tests below is the sidecar's, not a typo's.
#[test]
fn fixtures_verify_with_aws_lc() {
    fn parts(name: &str) -> (String, Vec<u8>) {
        let token = read(name);
        let (input, sig) = token.rsplit_once('.').expect("compact JWS");
        (input.to_owned(), unb64(sig))
    }
    fn rsa(jwk: &Value) -> RsaPublicKeyComponents<Vec<u8>> {
        RsaPublicKeyComponents {
            n: unb64(jwk["n"].as_str().expect("n")),
            e: unb64(jwk["e"].as_str().expect("e")),
        }
    }
    for (name, secret) in [
        ("rfc7515-a1.jws", oct_secret("rfc7515-a1.jwk.json")),
        ("rfc7520-4.4.jws", oct_secret("rfc7520-hmac.jwk.json")),
    ] {
        let (input, sig) = parts(name);
        hmac::verify(
            &hmac::Key::new(hmac::HMAC_SHA256, &secret),
            input.as_bytes(),
            &sig,
        )
        .unwrap_or_else(|_| panic!("{name}: HMAC does not verify"));
    }
    let (input, sig) = parts("rfc7515-a2.jws");
    rsa(&first_key("rfc7515-a2.jwks.json"))
        .verify(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            input.as_bytes(),
            &sig,
        )
        .expect("rfc7515-a2.jws: RS256 does not verify");
    let (input, sig) = parts("rfc7520-4.1.jws");
    rsa(&first_key("rfc7520-rsa.jwks.json"))
        .verify(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            input.as_bytes(),
            &sig,
        )
        .expect("rfc7520-4.1.jws: RS256 does not verify");
    let (input, sig) = parts("rfc7520-4.2.jws");
    rsa(&first_key("rfc7520-rsa.jwks.json"))
        .verify(&signature::RSA_PSS_2048_8192_SHA384, input.as_bytes(), &sig)
        .expect("rfc7520-4.2.jws: PS384 does not verify");
    let ec = first_key("rfc7515-a3.jwks.json");
    let point = [
        vec![0x04],
        unb64(ec["x"].as_str().expect("x")),
        unb64(ec["y"].as_str().expect("y")),
    ]
    .concat();
    let (input, sig) = parts("rfc7515-a3.jws");
    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
        .verify(input.as_bytes(), &sig)
        .expect("rfc7515-a3.jws: ES256 does not verify");
    let (input, sig) = parts("rfc8037-a4.jws");
    let x = unb64(first_key("rfc8037-a.jwks.json")["x"].as_str().expect("x"));
    UnparsedPublicKey::new(&signature::ED25519, &x)
        .verify(input.as_bytes(), &sig)
        .expect("rfc8037-a4.jws: EdDSA does not verify");
    // The payloads are what the RFCs say they are.
    let payload = |name: &str| unb64(read(name).split('.').nth(1).expect("payload"));
    assert!(
        String::from_utf8(payload("rfc7515-a1.jws"))
            .expect("UTF-8")
            .contains("\"iss\":\"joe\"")
    );
    assert_eq!(payload("rfc8037-a4.jws"), b"Example of Ed25519 signing");
    assert!(
        String::from_utf8(payload("rfc7520-4.1.jws"))
            .expect("UTF-8")
            .starts_with("It\u{2019}s a dangerous business, Frodo")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7515_a1_hs256() {
    check_vector(&RFC7515_A1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7515_a2_rs256() {
    check_vector(&RFC7515_A2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7515_a3_es256() {
    check_vector(&RFC7515_A3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7520_4_1_rs256() {
    check_vector(&RFC7520_4_1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7520_4_2_ps384() {
    check_vector(&RFC7520_4_2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7520_4_4_hs256() {
    check_vector(&RFC7520_4_4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc8037_a4_ed25519() {
    check_vector(&RFC8037_A4).await;
}

/// RFC 7515 A.4 and RFC 7520 §4.3 are ES512, which is not supported: a clean
/// `REASON_ALGORITHM_NOT_ALLOWED`, before any key is looked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es512_vectors_are_refused_as_unsupported() {
    let sidecar = sidecar_for(&RFC7520_4_1).await;
    for name in ["rfc7515-a4.jws", "rfc7520-4.3.jws"] {
        let r = sidecar
            .assert_reason(&read(name), Reason::AlgorithmNotAllowed, name)
            .await;
        assert!(
            r.claims.is_none(),
            "{name}: no claims for an unverified token"
        );
    }
}

/// One RSA key verifies the same from a PEM file and from a JWKS file, and a changed
/// signature byte fails both (the key sources the RFC vectors use agree with the PEM
/// files the hostile suite uses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_key_verifies_the_same_from_pem_and_jwks() {
    let issuer = Issuer::new(
        "https://pem-vs-jwks.example",
        "RS256",
        TestKey::rsa(Some("k1")),
    );
    let builder = SidecarBuilder::new();
    let jwks = builder.dir().join("k.jwks.json");
    std::fs::write(
        &jwks,
        serde_json::json!({"keys": [issuer.key.public_jwk()]}).to_string(),
    )
    .expect("write JWKS");
    let via_jwks = builder
        .issuer_toml(format!(
            "[[issuers]]\nissuer = {}\nalgorithms = [\"RS256\"]\n[issuers.keys]\njwks_file = {}\n",
            toml_str(&issuer.iss),
            toml_str(&jwks.to_string_lossy())
        ))
        .start()
        .await;
    let via_pem = SidecarBuilder::new().issuer(&issuer, "").start().await;
    let token = issuer.token(&issuer.claims(crate::harness::START_SECS));
    via_jwks
        .assert_reason(&token, Reason::Ok, "RS256 via JWKS")
        .await;
    via_pem
        .assert_reason(&token, Reason::Ok, "RS256 via PEM")
        .await;
    let tampered = flip(&token, 2, 0);
    via_jwks
        .assert_reason(&tampered, Reason::BadSignature, "tampered, JWKS")
        .await;
    via_pem
        .assert_reason(&tampered, Reason::BadSignature, "tampered, PEM")
        .await;
}
