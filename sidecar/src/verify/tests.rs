//! The Verify path on jsonwebtoken: what it decides, what denylist decides on top, and
//! that each fault keeps one reason whichever of the two meets it first. The hostile
//! suite (`tests/integration/hostile`) covers the same ground through gRPC.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use super::*;
use crate::clock::ManualClock;
use crate::denylist::DenylistSettings;

/// The test clock: 2030-01-01, far from the real time jsonwebtoken would read.
const NOW: i64 = 1_893_456_000;
const ISS: &str = "https://a.example";
const OTHER: &str = "https://b.example";
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(name)
}

fn pkcs8(name: &str) -> Vec<u8> {
    let pem = std::fs::read_to_string(fixture(name)).expect("fixture");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).expect("PEM body")
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token over raw header and payload JSON, signed with `alg`.
fn sign(alg: &str, header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig = match alg {
        "HS256" => {
            let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET);
            aws_lc_rs::hmac::sign(&key, input.as_bytes())
                .as_ref()
                .to_vec()
        }
        "RS256" => {
            let pair = RsaKeyPair::from_pkcs8(&pkcs8("rsa2048.key.pem")).expect("RSA key");
            let mut sig = vec![0; pair.public_modulus_len()];
            pair.sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .expect("sign");
            sig
        }
        "ES256" => {
            let pair = EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &pkcs8("ec-p256.key.pem"),
            )
            .expect("EC key");
            pair.sign(&SystemRandom::new(), input.as_bytes())
                .expect("sign")
                .as_ref()
                .to_vec()
        }
        other => panic!("test bug: {other}"),
    };
    format!("{input}.{}", b64(sig))
}

fn hs256(claims: &Value) -> String {
    sign("HS256", r#"{"alg":"HS256","kid":"h"}"#, &claims.to_string())
}

/// Valid claims for `iss` at [`NOW`].
fn claims(iss: &str) -> Value {
    json!({"iss": iss, "sub": "alice", "aud": "api", "iat": NOW, "exp": NOW + 600,
        "jti": "j-1", "scope": "read", "roles": ["a", "b"]})
}

fn without(mut c: Value, name: &str) -> Value {
    c.as_object_mut().expect("object").remove(name);
    c
}

struct Setup {
    verifier: Verifier,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

/// A verifier over issuer blocks; `{secret}`, `{rsa}` and `{ec}` in them name key files.
async fn setup(issuers: &[&str]) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("h.secret");
    std::fs::write(&secret, SECRET).expect("write secret");
    let quoted = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    let blocks: Vec<String> = issuers
        .iter()
        .map(|b| {
            b.replace("{secret}", &quoted(&secret))
                .replace("{rsa}", &quoted(&fixture("rsa2048.pub.pem")))
                .replace("{ec}", &quoted(&fixture("ec-p256.pub.pem")))
        })
        .collect();
    let text = format!(
        "[denylist]\nfile = {}\n[verify]\ncache_entries = 0\n{}",
        quoted(&dir.path().join("revocations.jsonl")),
        blocks.join("\n")
    );
    let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    config.validate().unwrap_or_else(|e| panic!("{e}\n{text}"));
    let clock = ManualClock::new(NOW * 1000);
    let shared: SharedClock = clock.clone();
    let keys = KeyStore::load(&config.issuers, Arc::clone(&shared))
        .await
        .expect("keys");
    let denylist = Arc::new(Denylist::new(
        DenylistSettings::default(),
        Arc::clone(&shared),
    ));
    let freshness = Arc::new(Freshness::new(
        Arc::clone(&shared),
        Duration::from_secs(3600),
        config.denylist.staleness_policy,
    ));
    freshness.mark_heard();
    freshness.set_ready();
    Setup {
        verifier: Verifier::new(&config, &keys, denylist, freshness, shared),
        clock,
        _dir: dir,
    }
}

fn hmac_issuer(iss: &str, extra: &str) -> String {
    format!(
        "[[issuers]]\nissuer = \"{iss}\"\nalgorithms = [\"HS256\"]\naudiences = [\"api\"]\n\
         max_lifetime = \"1h\"\n{extra}\n[issuers.keys]\n\
         hmac_secret_files = [{{ path = {{secret}}, kid = \"h\" }}]\n"
    )
}

fn reason(s: &Setup, token: &str) -> Reason {
    s.verifier.verify(token).reason
}

#[tokio::test]
async fn a_valid_token_carries_its_whole_payload() {
    let s = setup(&[&hmac_issuer(ISS, "")]).await;
    let v = s.verifier.verify(&hs256(&claims(ISS)));
    assert_eq!(v.reason, Reason::Ok, "{}", v.detail);
    let token = v.token.expect("token");
    let object = token.claims.object();
    assert_eq!(object["scope"], json!("read"));
    assert_eq!(object["roles"], json!(["a", "b"]));
    assert_eq!(token.claims.jti(), Some("j-1"));
    assert_eq!(token.kid(), Some("h"));
    assert_eq!(token.alg, Algorithm::HS256);
}

#[tokio::test]
async fn times_are_read_from_the_sidecars_clock() {
    // 2030 on the sidecar's clock: jsonwebtoken's own check would read the real time.
    let s = setup(&[&hmac_issuer(ISS, "")]).await;
    let token = hs256(&claims(ISS));
    assert_eq!(reason(&s, &token), Reason::Ok);
    s.clock.advance_ms((600 + 31) * 1000);
    assert_eq!(reason(&s, &token), Reason::Expired);
    s.clock.set_ms((NOW - 31) * 1000);
    assert_eq!(
        reason(&s, &token),
        Reason::NotYetValid,
        "`iat` in the future"
    );
}

#[tokio::test]
async fn require_iat_refuses_tokens_without_iat() {
    let s = setup(&[&hmac_issuer(ISS, "")]).await;
    let v = s.verifier.verify(&hs256(&without(claims(ISS), "iat")));
    assert_eq!(v.reason, Reason::MissingClaim, "{}", v.detail);
    assert!(v.detail.contains("iat"), "{}", v.detail);
    assert!(v.token.is_some(), "the signature held");

    let s = setup(&[&hmac_issuer(ISS, "require_iat = false")]).await;
    assert_eq!(reason(&s, &hs256(&without(claims(ISS), "iat"))), Reason::Ok);
}

#[tokio::test]
async fn a_token_without_iss_is_a_missing_claim_with_one_or_several_issuers() {
    let no_iss = hs256(&without(claims(ISS), "iss"));
    let one = setup(&[&hmac_issuer(ISS, "")]).await;
    assert_eq!(reason(&one, &no_iss), Reason::MissingClaim);
    let several = setup(&[&hmac_issuer(ISS, ""), &hmac_issuer(OTHER, "")]).await;
    let v = several.verifier.verify(&no_iss);
    assert_eq!(v.reason, Reason::MissingClaim, "{}", v.detail);
    assert!(v.token.is_none(), "nothing verified it");
    // Of the wrong type: the same reason either way.
    let mut c = claims(ISS);
    c["iss"] = json!([ISS]);
    assert_eq!(reason(&one, &hs256(&c)), Reason::InvalidClaim);
    assert_eq!(reason(&several, &hs256(&c)), Reason::InvalidClaim);
}

#[tokio::test]
async fn several_issuers_choose_keys_by_iss() {
    let s = setup(&[&hmac_issuer(ISS, ""), &hmac_issuer(OTHER, "")]).await;
    assert_eq!(reason(&s, &hs256(&claims(ISS))), Reason::Ok);
    assert_eq!(reason(&s, &hs256(&claims(OTHER))), Reason::Ok);
    assert_eq!(
        reason(&s, &hs256(&claims("https://evil.example"))),
        Reason::IssuerUnknown
    );
    // Read strictly before the signature: a repeated `iss` is refused, not chosen.
    let twice = format!(
        r#"{{"iss":"{ISS}","iss":"{OTHER}","iat":{NOW},"exp":{},"jti":"j","aud":"api"}}"#,
        NOW + 60
    );
    let t = sign("HS256", r#"{"alg":"HS256","kid":"h"}"#, &twice);
    assert_eq!(reason(&s, &t), Reason::Malformed);
}

#[tokio::test]
async fn a_payload_serde_json_refuses_is_malformed_not_ok_without_payload() {
    for s in [
        setup(&[&hmac_issuer(ISS, "")]).await,
        setup(&[&hmac_issuer(ISS, ""), &hmac_issuer(OTHER, "")]).await,
    ] {
        let payload = format!(
            r#"{{"iss":"{ISS}","aud":"api","iat":{NOW},"exp":{},"jti":"j","x":1.7976931348623158e308}}"#,
            NOW + 60
        );
        let v = s
            .verifier
            .verify(&sign("HS256", r#"{"alg":"HS256","kid":"h"}"#, &payload));
        assert_eq!(v.reason, Reason::Malformed, "{}", v.detail);
    }
}

#[tokio::test]
async fn claims_jsonwebtoken_refuses_keep_the_token_and_denylists_reason() {
    let s = setup(&[&hmac_issuer(ISS, "")]).await;
    let with = |name: &str, value: Value| {
        let mut c = claims(ISS);
        c[name] = value;
        hs256(&c)
    };
    // jsonwebtoken refuses these (the claim is required, or is checked by value)...
    let cases = [
        (with("aud", json!("web")), Reason::AudienceMismatch, true),
        (with("aud", json!([])), Reason::MissingClaim, true),
        (with("iss", json!(OTHER)), Reason::IssuerUnknown, true),
        (
            hs256(&without(claims(ISS), "exp")),
            Reason::MissingClaim,
            true,
        ),
        (
            hs256(&without(claims(ISS), "aud")),
            Reason::MissingClaim,
            true,
        ),
        // ...reading these as missing, where the type is what is wrong...
        (with("exp", json!("soon")), Reason::InvalidClaim, false),
        (with("exp", json!(null)), Reason::InvalidClaim, false),
        (with("aud", json!(42)), Reason::InvalidClaim, false),
        // ...and this as not a number, where it only lies in the past.
        (with("exp", json!(-5)), Reason::Expired, true),
    ];
    for (token, want, has_token) in cases {
        let v = s.verifier.verify(&token);
        assert_eq!(v.reason, want, "{}", v.detail);
        assert_eq!(v.token.is_some(), has_token, "{want:?}: {}", v.detail);
    }
    // An expired token with a wrong audience: expiry is told first, as before.
    let mut c = claims(ISS);
    c["aud"] = json!("web");
    c["exp"] = json!(NOW - 100);
    c["iat"] = json!(NOW - 200);
    assert_eq!(reason(&s, &hs256(&c)), Reason::Expired);
}

#[tokio::test]
async fn an_issuer_with_rsa_and_ec_keys_verifies_both() {
    let block = "[[issuers]]\nissuer = \"https://a.example\"\nalgorithms = [\"RS256\", \"ES256\"]\n\
                 max_lifetime = \"1h\"\n[issuers.keys]\n\
                 pem_files = [{ path = {rsa}, kid = \"r\" }, { path = {ec}, kid = \"e\" }]\n";
    let s = setup(&[block]).await;
    let payload = claims(ISS).to_string();
    let rs = sign("RS256", r#"{"alg":"RS256","kid":"r"}"#, &payload);
    let es = sign("ES256", r#"{"alg":"ES256","kid":"e"}"#, &payload);
    assert_eq!(reason(&s, &rs), Reason::Ok);
    assert_eq!(reason(&s, &es), Reason::Ok);
    // Each key verifies only its own algorithm.
    let es_under_r = sign("ES256", r#"{"alg":"ES256","kid":"r"}"#, &payload);
    assert_eq!(reason(&s, &es_under_r), Reason::AlgorithmNotAllowed);
    // No `aud` configured: a token's `aud` is not checked.
    assert_eq!(
        reason(
            &s,
            &sign(
                "RS256",
                r#"{"alg":"RS256","kid":"r"}"#,
                &without(claims(ISS), "aud").to_string()
            )
        ),
        Reason::Ok
    );
    // HMAC on a public-key issuer.
    assert_eq!(reason(&s, &hs256(&claims(ISS))), Reason::AlgorithmConfusion);
}

#[tokio::test]
async fn signature_faults() {
    let s = setup(&[&hmac_issuer(ISS, "")]).await;
    let good = hs256(&claims(ISS));
    let (input, sig) = good.rsplit_once('.').expect("token");
    assert_eq!(reason(&s, &format!("{input}.")), Reason::BadSignature);
    assert_eq!(reason(&s, &format!("{input}.{sig}=")), Reason::Malformed);
    assert_eq!(reason(&s, &format!("{input}.***")), Reason::Malformed);
    let mut c = claims(ISS);
    c["jti"] = json!("j-2");
    let other = hs256(&c);
    let (_, other_sig) = other.rsplit_once('.').expect("token");
    let v = s.verifier.verify(&format!("{input}.{other_sig}"));
    assert_eq!(v.reason, Reason::BadSignature);
    assert!(v.token.is_none());
}
