//! `verify_token`: the sidecar's real [`Verifier`] on arbitrary token strings.
//!
//! The first byte picks how the input becomes a token:
//!
//! - `0` ([`MODE_RAW`]): the rest of the input is the token;
//! - `1` ([`MODE_APPEND`]): a valid token (of the algorithm the next byte's low three
//!   bits pick) followed by the rest of the input, repeated as often as the byte's
//!   high five bits say plus one (so that tokens pass the 8 KiB bound: libFuzzer
//!   grows its inputs only slowly);
//! - `2` ([`MODE_SPLICE`]): a valid token with a range (offset: next two bytes, length:
//!   the byte after) replaced by the rest of the input, so header, payload or
//!   signature of a signed token is mutated;
//! - `3` ([`MODE_SIGN`]): the rest is `header JSON 0xff payload JSON` (without `0xff`,
//!   all payload under the usual header), base64url-encoded and signed with a trusted
//!   key, so that claim checks run on inputs that pass the signature check.
//!
//! Invariants: nothing panics; a token is valid only if its signature verifies under
//! a fuzz key by an independent check (a token the fuzzer could forge is never
//! valid), its claims are what the issuer's policy demands (issuer, audience, `exp`,
//! `nbf`, `iat`, `jti`) and no revocation in the denylist matches it; a second call
//! (a cache hit) gives the same answer; a single-issuer verifier (no cache) accepts
//! exactly the tokens of its issuer the multi-issuer one accepts.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use denylist_proto::events::{Action, Event, Revoke, RuleKind};
use denylist_sidecar::clock::{ManualClock, SharedClock};
use denylist_sidecar::config::Config;
use denylist_sidecar::denylist::{Denylist, DenylistSettings};
use denylist_sidecar::freshness::Freshness;
use denylist_sidecar::keys::KeyStore;
use denylist_sidecar::verify::Verifier;
use serde_json::Value;

use crate::fixture::{Alg, Bytes, NOW, NOW_MS, key_path, keys};
use crate::{Outcome, Seed};

/// The whole input is the token.
pub const MODE_RAW: u8 = 0;
/// A valid token, then the input.
pub const MODE_APPEND: u8 = 1;
/// A valid token with a range replaced by the input.
pub const MODE_SPLICE: u8 = 2;
/// Header and payload from the input, signed by a trusted key.
pub const MODE_SIGN: u8 = 3;

/// Issuer of the HS256 tokens (the single-issuer verifier's only issuer).
pub const HS_ISSUER: &str = "https://hs.fuzz";
const RSA_ISSUER: &str = "https://rsa.fuzz";
const EC_ISSUER: &str = "https://ec.fuzz";
const ED_ISSUER: &str = "https://ed.fuzz";
/// The audience every issuer requires.
pub const AUDIENCE: &str = "api";
/// Revoked by a `jti` rule of [`HS_ISSUER`].
pub const REVOKED_JTI: &str = "j-revoked";
/// Revoked (tokens issued up to [`NOW`]) by a `subject` rule of the EdDSA issuer.
pub const REVOKED_SUBJECT: &str = "mallory";
/// Revoked by a `session` rule of the RSA issuer.
pub const REVOKED_SESSION: &str = "s-revoked";
/// The issuers' (default) leeway, seconds.
const LEEWAY: i64 = 30;
/// The issuers' (default) maximum token lifetime, seconds.
const MAX_LIFETIME: i64 = 24 * 3600;

/// The issuer and `kid` of the tokens signed with `alg`.
pub fn issuer_of(alg: Alg) -> (&'static str, &'static str) {
    match alg {
        Alg::Hs256 => (HS_ISSUER, "hs1"),
        Alg::Rs256 | Alg::Ps256 => (RSA_ISSUER, "rsa1"),
        Alg::Es256 => (EC_ISSUER, "ec1"),
        Alg::EdDsa => (ED_ISSUER, "ed1"),
    }
}

/// The protected header the fixture signs with `alg`.
pub fn header(alg: Alg) -> String {
    let (_, kid) = issuer_of(alg);
    format!(r#"{{"alg":"{}","typ":"JWT","kid":"{kid}"}}"#, alg.name())
}

/// A payload valid at [`NOW`] for the issuer of `alg`.
pub fn payload(alg: Alg) -> String {
    let (iss, _) = issuer_of(alg);
    format!(
        r#"{{"iss":"{iss}","sub":"alice","aud":"{AUDIENCE}","iat":{},"nbf":{},"exp":{},"jti":"j-1","sid":"s-1"}}"#,
        NOW - 60,
        NOW - 60,
        NOW + 3600
    )
}

/// A compact JWS of `header` and `payload`, signed with `alg`.
pub fn sign(alg: Alg, header: &[u8], payload: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = keys().sign(alg, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// Two verifiers over the fuzz keys and one denylist, and a valid token per algorithm.
struct Fixture {
    /// Every issuer; verified-token cache on.
    multi: Verifier,
    /// Only [`HS_ISSUER`]; cache off.
    single: Verifier,
    /// A valid token per [`Alg::ALL`] entry (RSA signing is slow: once per process).
    valid: Vec<String>,
    max_token_bytes: usize,
}

fn issuer_toml(alg: &str, iss: &str, keys: &str) -> String {
    format!(
        "[[issuers]]\nissuer = \"{iss}\"\nalgorithms = [{alg}]\naudiences = [\"{AUDIENCE}\"]\n[issuers.keys]\n{keys}\n"
    )
}

fn verifier(rt: &tokio::runtime::Runtime, issuers: &str, cache_entries: usize) -> Verifier {
    let toml = format!(
        "[denylist]\nfile = \"/nonexistent/fuzz.jsonl\"\n[verify]\ncache_entries = {cache_entries}\n{issuers}"
    );
    let config = Config::from_toml(&toml).expect("fuzz config parses");
    config.validate().expect("fuzz config is valid");
    let clock: SharedClock = ManualClock::new(NOW_MS);
    let keys = rt
        .block_on(KeyStore::load(&config.issuers, Arc::clone(&clock)))
        .expect("fuzz keys load");
    let denylist = Arc::new(Denylist::new(
        DenylistSettings {
            expected_entries: 1000,
            bloom_fp_rate: 0.001,
            max_lifetimes: HashMap::new(),
            default_max_lifetime: MAX_LIFETIME,
        },
        Arc::clone(&clock),
    ));
    for (id, kind, issuer, target) in [
        ("rev-jti", RuleKind::Jti, HS_ISSUER, REVOKED_JTI),
        ("rev-sub", RuleKind::Subject, ED_ISSUER, REVOKED_SUBJECT),
        ("rev-sid", RuleKind::Session, RSA_ISSUER, REVOKED_SESSION),
    ] {
        let event = Event {
            event_id: id.into(),
            action: Action::Revoke(Revoke {
                kind,
                issuer: issuer.into(),
                targets: vec![target.into()],
                cutoff: NOW,
                expires_at: Some(NOW + 7 * 86_400),
            }),
            reason: "fuzz".into(),
            actor: "fuzz".into(),
            created_at_ms: NOW_MS,
        };
        denylist.apply(&event);
    }
    let freshness = Arc::new(Freshness::new(
        Arc::clone(&clock),
        Duration::from_secs(3600),
        config.denylist.staleness_policy,
    ));
    freshness.mark_heard();
    freshness.set_ready();
    Verifier::new(&config, &keys, denylist, freshness, clock)
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("tokio runtime");
        let hs = issuer_toml(
            "\"HS256\"",
            HS_ISSUER,
            &format!(
                "hmac_secret_files = [{{ path = \"{}\", kid = \"hs1\" }}]",
                key_path("hmac.secret")
            ),
        );
        let pem = |file: &str, kid: &str| {
            format!(
                "pem_files = [{{ path = \"{}\", kid = \"{kid}\" }}]",
                key_path(file)
            )
        };
        let all = [
            hs.clone(),
            issuer_toml(
                "\"RS256\", \"PS256\"",
                RSA_ISSUER,
                &pem("rsa-public.pem", "rsa1"),
            ),
            issuer_toml("\"ES256\"", EC_ISSUER, &pem("p256-public.pem", "ec1")),
            issuer_toml("\"EdDSA\"", ED_ISSUER, &pem("ed25519-public.pem", "ed1")),
        ]
        .concat();
        let fixture = Fixture {
            multi: verifier(&rt, &all, 1000),
            single: verifier(&rt, &hs, 0),
            valid: Alg::ALL
                .iter()
                .map(|&alg| sign(alg, header(alg).as_bytes(), payload(alg).as_bytes()))
                .collect(),
            max_token_bytes: Config::default().verify.max_token_bytes,
        };
        // A fixture that accepts nothing would fuzz only the refusals: fail at once.
        for token in &fixture.valid {
            let verdict = fixture.multi.verify(token);
            assert!(verdict.is_valid(), "fixture token refused: {verdict:?}");
        }
        fixture
    })
}

/// The algorithm a selector byte picks.
fn pick(alg: u8, among: &[Alg]) -> Alg {
    among[usize::from(alg) % among.len()]
}

/// Builds the token an input stands for; see the module docs.
pub fn token(data: &[u8]) -> String {
    let f = fixture();
    let mut input = Bytes::new(data);
    let mode = input.byte() % 4;
    match mode {
        MODE_RAW => String::from_utf8_lossy(input.rest()).into_owned(),
        MODE_APPEND => {
            let selector = input.byte();
            let alg = usize::from(selector & 7) % Alg::ALL.len();
            let mut token = f.valid[alg].clone();
            let tail = String::from_utf8_lossy(input.rest());
            for _ in 0..=selector >> 3 {
                token.push_str(&tail);
            }
            token
        }
        MODE_SPLICE => {
            let valid = f.valid[usize::from(input.byte()) % Alg::ALL.len()].as_bytes();
            let at = usize::from(input.u16()) % (valid.len() + 1);
            let end = (at + usize::from(input.byte())).min(valid.len());
            let mut token = valid[..at].to_vec();
            token.extend_from_slice(input.rest());
            token.extend_from_slice(&valid[end..]);
            String::from_utf8_lossy(&token).into_owned()
        }
        _ => {
            // RSA signing takes a millisecond: not on every input.
            let alg = pick(input.byte(), &[Alg::Hs256, Alg::Es256, Alg::EdDsa]);
            let rest = input.rest();
            let default_header = header(alg);
            let (header, payload) = match rest.iter().position(|&b| b == 0xff) {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (default_header.as_bytes(), rest),
            };
            sign(alg, header, payload)
        }
    }
}

/// Runs one input; panics if an invariant breaks.
pub fn run(data: &[u8]) -> Outcome {
    let f = fixture();
    let token = token(data);
    let verdict = f.multi.verify(&token);
    assert_eq!(
        verdict.is_valid(),
        verdict.reason == denylist_proto::pb::Reason::Ok
    );
    let again = f.multi.verify(&token);
    assert_eq!(
        (again.reason, &again.detail),
        (verdict.reason, &verdict.detail),
        "a repeated Verify (cache hit) answers differently for {token:?}"
    );
    let single = f.single.verify(&token);
    let claims = verdict.is_valid().then(|| check_valid(f, &token));
    let hs_valid = claims
        .as_ref()
        .is_some_and(|c| c.get("iss").and_then(Value::as_str) == Some(HS_ISSUER));
    assert_eq!(
        single.is_valid(),
        hs_valid,
        "single-issuer verifier: {single:?}, multi-issuer: {verdict:?}, token {token:?}"
    );
    Outcome::from_bool(verdict.is_valid())
}

/// The checks on a token the verifier accepted; returns its claims.
fn check_valid(f: &Fixture, token: &str) -> serde_json::Map<String, Value> {
    assert!(token.len() <= f.max_token_bytes, "over the size bound");
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        panic!("accepted a token of {} segments: {token:?}", parts.len());
    };
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .unwrap_or_else(|e| panic!("accepted a signature that is not base64url ({e}): {token:?}"));
    let signing_input = format!("{header}.{payload}");
    assert!(
        keys().any_key_signed(signing_input.as_bytes(), &signature),
        "accepted a token no fuzz key signed: {token:?}"
    );
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap_or_else(|e| panic!("accepted a payload that is not base64url ({e}): {token:?}"));
    let claims: serde_json::Map<String, Value> =
        serde_json::from_slice(&payload).unwrap_or_else(|e| {
            panic!("accepted a payload that is not a JSON object ({e}): {token:?}")
        });
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    let number = |name: &str| claims.get(name).and_then(Value::as_f64);
    #[allow(clippy::cast_precision_loss)] // seconds near 2027: exact in an f64
    let (now, leeway) = (NOW as f64, LEEWAY as f64);

    let iss = text("iss").unwrap_or_else(|| panic!("accepted without `iss`: {token:?}"));
    assert!(
        [HS_ISSUER, RSA_ISSUER, EC_ISSUER, ED_ISSUER].contains(&iss),
        "accepted an unknown issuer {iss:?}"
    );
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == AUDIENCE,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(AUDIENCE)),
        _ => false,
    };
    assert!(
        audience_ok,
        "accepted without audience {AUDIENCE:?}: {token:?}"
    );
    let exp = number("exp").unwrap_or_else(|| panic!("accepted without `exp`: {token:?}"));
    // One second of slack either way: the checks compare whole seconds.
    assert!(
        exp + leeway + 1.0 >= now,
        "accepted an expired token: {token:?}"
    );
    if let Some(nbf) = number("nbf") {
        assert!(
            nbf <= now + leeway + 1.0,
            "accepted before `nbf`: {token:?}"
        );
    }
    if let Some(iat) = number("iat") {
        assert!(
            iat <= now + leeway + 1.0,
            "accepted an `iat` in the future: {token:?}"
        );
        #[allow(clippy::cast_precision_loss)]
        let longest = (MAX_LIFETIME + LEEWAY + 1) as f64;
        assert!(
            exp - iat <= longest,
            "accepted a lifetime over the maximum: {token:?}"
        );
    }
    let jti = text("jti").unwrap_or_else(|| panic!("accepted without `jti`: {token:?}"));

    // The denylist: each rule's token must be refused.
    let iat_before_cutoff = number("iat").is_none_or(|iat| iat <= now);
    let revoked = (iss == HS_ISSUER && jti == REVOKED_JTI)
        || (iss == ED_ISSUER && text("sub") == Some(REVOKED_SUBJECT) && iat_before_cutoff)
        || (iss == RSA_ISSUER && text("sid") == Some(REVOKED_SESSION));
    assert!(!revoked, "accepted a revoked token: {token:?}");
    claims
}

/// An input of `mode` with the algorithm selector `alg` and the `rest`.
fn input(mode: u8, alg: u8, rest: &[u8]) -> Vec<u8> {
    let mut data = vec![mode, alg];
    data.extend_from_slice(rest);
    data
}

/// The committed seeds: valid and near-valid tokens of every mode.
pub fn seeds() -> Vec<Seed> {
    let signed = |payload: &str| {
        let mut rest = header(Alg::Hs256).into_bytes();
        rest.push(0xff);
        rest.extend_from_slice(payload.as_bytes());
        rest
    };
    let hs_payload = payload(Alg::Hs256);
    let claims = |replace: &str, with: &str| signed(&hs_payload.replace(replace, with));
    vec![
        (
            "raw-alg-none",
            [
                &[MODE_RAW],
                format!(
                    "{}.{}.",
                    URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
                    URL_SAFE_NO_PAD.encode(payload(Alg::Hs256))
                )
                .as_bytes(),
            ]
            .concat(),
        ),
        ("raw-garbage", b"\x00eyJ.eyJ.abc".to_vec()),
        ("append-hs256", input(MODE_APPEND, 0, b"")),
        ("append-rs256", input(MODE_APPEND, 1, b"A")),
        ("append-ps256", input(MODE_APPEND, 2, b".x")),
        ("append-es256", input(MODE_APPEND, 3, b"")),
        ("append-eddsa", input(MODE_APPEND, 4, b"==")),
        // 32 times 300 bytes: over the 8 KiB bound.
        ("append-too-large", input(MODE_APPEND, 0xf8, &[b'A'; 300])),
        // Splice: offset 10 (in the header), replace 4 bytes.
        (
            "splice-header",
            input(MODE_SPLICE, 0, &[10, 0, 4, b'e', b'y', b'J', b'h']),
        ),
        ("splice-payload", input(MODE_SPLICE, 4, &[60, 0, 2, b'Q'])),
        ("sign-hs256", input(MODE_SIGN, 0, &signed(&hs_payload))),
        (
            "sign-es256",
            input(MODE_SIGN, 1, payload(Alg::Es256).as_bytes()),
        ),
        (
            "sign-eddsa-revoked-subject",
            input(
                MODE_SIGN,
                2,
                payload(Alg::EdDsa)
                    .replace("alice", REVOKED_SUBJECT)
                    .as_bytes(),
            ),
        ),
        (
            "sign-revoked-jti",
            input(MODE_SIGN, 0, &claims("j-1", REVOKED_JTI)),
        ),
        (
            "sign-expired",
            input(
                MODE_SIGN,
                0,
                &claims(&(NOW + 3600).to_string(), &(NOW - 3600).to_string()),
            ),
        ),
        (
            "sign-no-jti",
            input(MODE_SIGN, 0, &claims(r#","jti":"j-1""#, "")),
        ),
        (
            "sign-aud-list",
            input(
                MODE_SIGN,
                0,
                &claims(r#""aud":"api""#, r#""aud":["x","api"]"#),
            ),
        ),
        (
            "sign-duplicate-iss",
            input(MODE_SIGN, 0, &claims(r#""sub""#, r#""iss":"x","sub""#)),
        ),
        (
            "sign-nested",
            input(
                MODE_SIGN,
                0,
                &claims(r#""sid":"s-1""#, r#""x":[[[[{"y":1e999}]]]]"#),
            ),
        ),
        (
            "sign-header-crit",
            input(
                MODE_SIGN,
                0,
                &[
                    br#"{"alg":"HS256","kid":"hs1","crit":["exp"],"exp":1}"#.as_slice(),
                    &[0xff],
                    hs_payload.as_bytes(),
                ]
                .concat(),
            ),
        ),
    ]
}
