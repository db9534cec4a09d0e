//! Unit tests of the receiver: the examples of OpenID Connect Back-Channel Logout 1.0
//! (§2.4), RFC 8417, CAEP 1.0 and RISC 1.0 as vectors — those are unsigned claim sets, so
//! they are signed here with a test key — and the refusals each specification asks for.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use denylist_proto::events::{Action, RuleKind};
use serde_json::{Value, json};

use super::config::{ProviderConfig, ReceiverConfig, SignalType};
use super::keys::KeySet;
use super::replay::ReplayCache;
use super::signal::{self, SetContent, Signal, Target};
use super::token::{self, SignalError, TokenPolicy};

/// A test provider's keys: an RSA 2048 key (`rsa-1`) and an Ed25519 key (`ed-1`), as a
/// JWKS file.
struct TestKeys {
    rsa: RsaKeyPair,
    ed: Ed25519KeyPair,
    dir: tempfile::TempDir,
}

impl TestKeys {
    fn new() -> Self {
        let rsa = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let ed = Ed25519KeyPair::generate().unwrap();
        let n =
            URL_SAFE_NO_PAD.encode(rsa.public_key().modulus().big_endian_without_leading_zero());
        let e = URL_SAFE_NO_PAD.encode(
            rsa.public_key()
                .exponent()
                .big_endian_without_leading_zero(),
        );
        let x = URL_SAFE_NO_PAD.encode(ed.public_key().as_ref());
        let jwks = json!({"keys": [
            {"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256", "n": n, "e": e},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "x": x},
            // Skipped: an encryption key, and an HMAC key.
            {"kty": "RSA", "kid": "enc-1", "use": "enc", "n": n, "e": e},
            {"kty": "oct", "kid": "hs-1", "k": "c2VjcmV0"}
        ]});
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).unwrap();
        Self { rsa, ed, dir }
    }

    /// A compact JWS of `claims` with `header`, signed per the header's `alg`.
    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = match header["alg"].as_str().unwrap() {
            "RS256" => {
                let mut sig = vec![0u8; self.rsa.public_modulus_len()];
                self.rsa
                    .sign(
                        &signature::RSA_PKCS1_SHA256,
                        &SystemRandom::new(),
                        input.as_bytes(),
                        &mut sig,
                    )
                    .unwrap();
                sig
            }
            "EdDSA" => self.ed.sign(input.as_bytes()).as_ref().to_vec(),
            "none" => Vec::new(),
            other => panic!("test bug: alg {other}"),
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn rs256(&self, typ: &str, claims: &Value) -> String {
        self.sign(&json!({"alg": "RS256", "kid": "rsa-1", "typ": typ}), claims)
    }

    fn provider(&self, issuer: &str, audiences: &[&str]) -> ProviderConfig {
        let jwks = self.dir.path().join("jwks.json");
        let text = format!(
            "signing_key_file = \"k.pem\"\n[[providers]]\nname = \"idp\"\nissuer = {issuer:?}\n\
             audiences = {audiences:?}\njwks_file = {:?}\n\
             email_subjects = {{ \"jane.smith@example.com\" = \"jane\" }}\n",
            jwks.display().to_string()
        );
        let config = ReceiverConfig::parse(&text).unwrap();
        config.validate().unwrap();
        config.providers[0].clone()
    }
}

fn policy(p: &ProviderConfig) -> TokenPolicy {
    TokenPolicy {
        issuer: p.issuer.clone(),
        audiences: p.audiences.clone(),
        algorithms: p.algorithms.clone(),
        max_age_secs: 600,
        leeway_secs: 30,
    }
}

fn keyset(p: &ProviderConfig) -> KeySet {
    KeySet::new(p, reqwest::Client::new())
}

/// Back-Channel Logout 1.0 §2.4, the example logout token's claims.
fn bcl_example() -> Value {
    json!({
        "iss": "https://server.example.com",
        "sub": "248289761001",
        "aud": "s6BhdRkqt3",
        "iat": 1471566154,
        "jti": "bWJq",
        "sid": "08a5019c-17e1-4977-8f42-65a12843ea02",
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}}
    })
}

async fn logout(keys: &TestKeys, claims: &Value, now: i64) -> Result<Signal, SignalError> {
    let p = keys.provider("https://server.example.com", &["s6BhdRkqt3"]);
    let token = keys.rs256("logout+jwt", claims);
    let verified = token::verify(&token, &keyset(&p), &policy(&p), &["logout+jwt"], now).await?;
    signal::logout_signal(&verified, &p.issuer)
}

#[tokio::test]
async fn the_back_channel_logout_example_revokes_its_session() {
    let keys = TestKeys::new();
    let signal = logout(&keys, &bcl_example(), 1471566154 + 5).await.unwrap();
    assert_eq!(signal.jti, "bWJq");
    assert_eq!(
        signal.target,
        Target::Session("08a5019c-17e1-4977-8f42-65a12843ea02".into())
    );
    let p = keys.provider("https://server.example.com", &["s6BhdRkqt3"]);
    let events = signal::events_for(&signal, &p, 1);
    assert_eq!(events.len(), 1);
    let Action::Revoke(r) = &events[0].action else {
        panic!("{events:?}")
    };
    assert_eq!(r.kind, RuleKind::Session);
    assert_eq!(r.issuer, "https://server.example.com");
    assert_eq!(r.targets, ["08a5019c-17e1-4977-8f42-65a12843ea02"]);
    assert_eq!(events[0].actor, "receiver/idp");
    assert_eq!(events[0].reason, "backchannel-logout jti=bWJq");
    events[0].validate().unwrap();
    // The id is the signal's, whoever publishes it and whenever.
    assert_eq!(
        events[0].event_id,
        signal::events_for(&signal, &p, 2)[0].event_id
    );
    assert_eq!(
        events[0].event_id,
        signal::event_id(
            "https://server.example.com",
            "bWJq",
            "https://server.example.com"
        )
    );
    assert_ne!(
        events[0].event_id,
        signal::event_id(
            "https://server.example.com",
            "bWJr",
            "https://server.example.com"
        )
    );
}

#[tokio::test]
async fn a_logout_token_naming_only_the_user_revokes_the_user_up_to_its_iat() {
    let keys = TestKeys::new();
    let mut claims = bcl_example();
    claims.as_object_mut().unwrap().remove("sid");
    let signal = logout(&keys, &claims, 1471566154).await.unwrap();
    assert_eq!(
        signal.target,
        Target::Subject {
            sub: "248289761001".into(),
            issuer: None,
            cutoff: 1471566154
        }
    );
}

#[tokio::test]
async fn logout_tokens_the_specification_forbids_are_refused() {
    let keys = TestKeys::new();
    let now = 1471566154 + 5;
    let with = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut c = bcl_example();
        f(c.as_object_mut().unwrap());
        c
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "nonce",
            with(&|c| {
                c.insert("nonce".into(), json!("n-0S6_WzA2Mj"));
            }),
            "nonce",
        ),
        (
            "no event",
            with(&|c| {
                c.insert("events".into(), json!({"urn:other": {}}));
            }),
            "backchannel-logout",
        ),
        (
            "event not an object",
            with(&|c| {
                c.insert(
                    "events".into(),
                    json!({"http://schemas.openid.net/event/backchannel-logout": "x"}),
                );
            }),
            "not a JSON object",
        ),
        (
            "no events",
            with(&|c| {
                c.remove("events");
            }),
            "`events`",
        ),
        (
            "neither sid nor sub",
            with(&|c| {
                c.remove("sid");
                c.remove("sub");
            }),
            "`sid` or `sub`",
        ),
        (
            "no jti",
            with(&|c| {
                c.remove("jti");
            }),
            "`jti`",
        ),
        (
            "no iat",
            with(&|c| {
                c.remove("iat");
            }),
            "`iat`",
        ),
    ];
    for (case, claims, expected) in cases {
        let e = logout(&keys, &claims, now).await.unwrap_err();
        assert!(matches!(e, SignalError::Malformed(_)), "{case}: {e:?}");
        assert!(e.to_string().contains(expected), "{case}: {e}");
    }
}

#[tokio::test]
async fn signatures_issuers_audiences_and_times_are_checked() {
    let keys = TestKeys::new();
    let p = keys.provider("https://server.example.com", &["s6BhdRkqt3"]);
    let ks = keyset(&p);
    let now = 1471566154 + 5;
    let verify = |token: String, now: i64| {
        let (ks, pol) = (&ks, policy(&p));
        async move { token::verify(&token, ks, &pol, &["logout+jwt"], now).await }
    };
    let good = keys.rs256("logout+jwt", &bcl_example());
    verify(good.clone(), now).await.unwrap();

    // A signature over other claims.
    let (head, _) = good.rsplit_once('.').unwrap();
    let other = keys.rs256("logout+jwt", &json!({"iss": "x"}));
    let forged = format!("{head}.{}", other.rsplit_once('.').unwrap().1);
    assert!(matches!(
        verify(forged, now).await,
        Err(SignalError::Signature(_))
    ));

    let with = |k: &str, v: Value| {
        let mut c = bcl_example();
        c[k] = v;
        keys.rs256("logout+jwt", &c)
    };
    assert!(matches!(
        verify(with("iss", json!("https://evil.example.com")), now).await,
        Err(SignalError::Issuer(_))
    ));
    assert!(matches!(
        verify(with("aud", json!("someone-else")), now).await,
        Err(SignalError::Audience(_))
    ));
    // `aud` as an array holding the client id is fine.
    verify(with("aud", json!(["x", "s6BhdRkqt3"])), now)
        .await
        .unwrap();
    assert!(matches!(
        verify(good.clone(), 1471566154 - 60).await,
        Err(SignalError::Time(m)) if m.contains("future")
    ));
    assert!(matches!(
        verify(good.clone(), 1471566154 + 601).await,
        Err(SignalError::Time(m)) if m.contains("old")
    ));
    assert!(matches!(
        verify(with("exp", json!(1471566154 - 100)), now).await,
        Err(SignalError::Time(m)) if m.contains("expired")
    ));

    // `alg: none`, HMAC, other `typ`s, JWE, unknown keys.
    let none = keys.sign(&json!({"alg": "none", "typ": "logout+jwt"}), &bcl_example());
    let e = verify(none, now).await.unwrap_err();
    assert!(
        matches!(e, SignalError::Malformed(ref m) if m.contains("none")),
        "{e:?}"
    );
    let hs = format!(
        "{}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "kid": "hs-1"}).to_string()),
        URL_SAFE_NO_PAD.encode(bcl_example().to_string())
    );
    assert!(matches!(verify(hs, now).await, Err(SignalError::Signature(m)) if m.contains("HS256")));
    let id_token = keys.rs256("JWT", &bcl_example());
    assert!(
        matches!(verify(id_token, now).await, Err(SignalError::Malformed(m)) if m.contains("typ"))
    );
    let untyped = keys.sign(&json!({"alg": "RS256", "kid": "rsa-1"}), &bcl_example());
    verify(untyped, now).await.unwrap();
    let typed_long = keys.rs256("application/logout+jwt", &bcl_example());
    verify(typed_long, now).await.unwrap();
    assert!(matches!(
        verify("a.b.c.d.e".into(), now).await,
        Err(SignalError::Malformed(m)) if m.contains("JWE")
    ));
    assert!(matches!(
        verify("garbage".into(), now).await,
        Err(SignalError::Malformed(_))
    ));
    let unknown = keys.sign(&json!({"alg": "RS256", "kid": "rsa-9"}), &bcl_example());
    assert!(matches!(
        verify(unknown, now).await,
        Err(SignalError::UnknownKey(_))
    ));
    // The encryption key with the same material is not a signature key.
    let enc = keys.sign(&json!({"alg": "RS256", "kid": "enc-1"}), &bcl_example());
    assert!(matches!(
        verify(enc, now).await,
        Err(SignalError::UnknownKey(_))
    ));
    // EdDSA verifies too.
    let ed = keys.sign(&json!({"alg": "EdDSA", "kid": "ed-1"}), &bcl_example());
    verify(ed, now).await.unwrap();
    let crit = keys.sign(
        &json!({"alg": "RS256", "kid": "rsa-1", "crit": ["exp"], "exp": 1}),
        &bcl_example(),
    );
    assert!(
        matches!(verify(crit, now).await, Err(SignalError::Signature(m)) if m.contains("crit"))
    );
}

async fn set(
    keys: &TestKeys,
    p: &ProviderConfig,
    claims: &Value,
) -> Result<SetContent, SignalError> {
    let now = claims["iat"].as_i64().unwrap() + 1;
    let token = keys.rs256("secevent+jwt", claims);
    let verified = token::verify(&token, &keyset(p), &policy(p), &["secevent+jwt"], now).await?;
    signal::set_content(&verified, p)
}

#[tokio::test]
async fn the_rfc_8417_scim_example_is_an_unknown_event() {
    let keys = TestKeys::new();
    let p = keys.provider(
        "https://scim.example.com",
        &["https://scim.example.com/Feeds/98d52461fa5bbc879593b7754"],
    );
    // RFC 8417 §2.1, Figure 1.
    let claims = json!({
        "iss": "https://scim.example.com",
        "iat": 1458496404,
        "jti": "4d3559ec67504aaba65d40b0363faad8",
        "aud": [
            "https://scim.example.com/Feeds/98d52461fa5bbc879593b7754",
            "https://scim.example.com/Feeds/5d7604516b1d08641d7676ee7"
        ],
        "events": {
            "urn:ietf:params:scim:event:create": {
                "ref": "https://scim.example.com/Users/44f6142df96bd6ab61e7521d9",
                "attributes": ["id", "name", "userName", "password", "emails"]
            }
        }
    });
    assert_eq!(
        set(&keys, &p, &claims).await.unwrap(),
        SetContent::Unknown("urn:ietf:params:scim:event:create".into())
    );
}

#[tokio::test]
async fn the_risc_account_disabled_example_revokes_the_user() {
    let keys = TestKeys::new();
    let p = keys.provider("https://idp.example.com/", &["636C69656E745F6964"]);
    // RISC 1.0, account-disabled example.
    let claims = json!({
        "iss": "https://idp.example.com/",
        "jti": "756E69717565206964656E746966696572",
        "iat": 1508184845,
        "aud": "636C69656E745F6964",
        "events": {
            "https://schemas.openid.net/secevent/risc/event-type/account-disabled": {
                "subject": {
                    "format": "iss_sub",
                    "iss": "https://idp.example.com/",
                    "sub": "7375626A656374"
                },
                "reason": "hijacking"
            }
        }
    });
    let SetContent::Revoke(signal) = set(&keys, &p, &claims).await.unwrap() else {
        panic!()
    };
    assert_eq!(signal.signal_type, SignalType::AccountDisabled);
    assert_eq!(
        signal.target,
        Target::Subject {
            sub: "7375626A656374".into(),
            issuer: Some("https://idp.example.com/".into()),
            cutoff: 1508184845
        }
    );
    let events = signal::events_for(&signal, &p, 0);
    assert_eq!(events.len(), 1);
    let Action::Revoke(r) = &events[0].action else {
        panic!()
    };
    assert_eq!((r.kind, r.cutoff), (RuleKind::Subject, 1508184845));
    assert_eq!(
        events[0].reason,
        "account-disabled jti=756E69717565206964656E746966696572"
    );

    // A subject of an issuer the provider does not map to is not revoked.
    let mut other = claims.clone();
    other["events"]["https://schemas.openid.net/secevent/risc/event-type/account-disabled"]["subject"]
        ["iss"] = json!("https://elsewhere.example.com/");
    assert!(matches!(
        set(&keys, &p, &other).await,
        Err(SignalError::NotAllowed(_))
    ));
}

/// CAEP 1.0 §3.1, the session-revoked example with a simple (opaque) subject.
fn caep_session_revoked() -> Value {
    json!({
        "iss": "https://idp.example.com/123456789/",
        "jti": "24c63fb56e5a2d77a6b512616ca9fa24",
        "iat": 1615305159,
        "aud": "https://sp.example.com/caep",
        "txn": 8675309,
        "sub_id": {
            "format": "opaque",
            "id": "dMTlD|1600802906337.16|16008.16"
        },
        "events": {
            "https://schemas.openid.net/secevent/caep/event-type/session-revoked": {
                "event_timestamp": 1615304991643_i64
            }
        }
    })
}

#[tokio::test]
async fn the_caep_session_revoked_examples_revoke_the_session_or_the_user() {
    let keys = TestKeys::new();
    let p = keys.provider(
        "https://idp.example.com/123456789/",
        &["https://sp.example.com/caep"],
    );
    let SetContent::Revoke(s) = set(&keys, &p, &caep_session_revoked()).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        s.target,
        Target::Session("dMTlD|1600802906337.16|16008.16".into())
    );

    // The complex-subject example: session and user; the session is revoked.
    let mut complex = caep_session_revoked();
    complex["sub_id"] = json!({
        "format": "complex",
        "session": {"format": "opaque", "id": "dMTlD|1600802906337.16|16008.16"},
        "user": {"format": "iss_sub", "iss": "https://idp.example.com/123456789/", "sub": "dMTlD|1600802906337.16|16008.16"},
        "tenant": {"format": "opaque", "id": "123456789"}
    });
    let SetContent::Revoke(s) = set(&keys, &p, &complex).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        s.target,
        Target::Session("dMTlD|1600802906337.16|16008.16".into())
    );

    // Only the user named: the user, up to the event time (milliseconds in the example).
    let mut user = caep_session_revoked();
    user["sub_id"] = json!({"format": "email", "email": "jane.smith@example.com"});
    let SetContent::Revoke(s) = set(&keys, &p, &user).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        s.target,
        Target::Subject {
            sub: "jane".into(),
            issuer: None,
            cutoff: 1615304991
        }
    );
    // An email with no mapping is refused, not guessed.
    user["sub_id"] = json!({"format": "email", "email": "who@example.com"});
    assert!(matches!(
        set(&keys, &p, &user).await,
        Err(SignalError::NotAllowed(_))
    ));
}

#[tokio::test]
async fn the_caep_credential_change_example_revokes_the_user_before_the_change() {
    let keys = TestKeys::new();
    let p = keys.provider(
        "https://idp.example.com/3456789/",
        &["https://sp.example.com/caep"],
    );
    // CAEP 1.0, credential-change example.
    let claims = json!({
        "iss": "https://idp.example.com/3456789/",
        "jti": "07efd930f0977e4fcc1149a733ce7f78",
        "iat": 1615305159,
        "aud": "https://sp.example.com/caep",
        "txn": 8675309,
        "sub_id": {
            "format": "iss_sub",
            "iss": "https://idp.example.com/3456789/",
            "sub": "jane.smith@example.com"
        },
        "events": {
            "https://schemas.openid.net/secevent/caep/event-type/credential-change": {
                "credential_type": "fido2-roaming",
                "change_type": "create",
                "fido2_aaguid": "accced6a-63f5-490a-9eea-e59bc1896cfc",
                "friendly_name": "Jane's USB authenticator",
                "initiating_entity": "user",
                "reason_admin": {"en": "User self-enrollment"},
                "event_timestamp": 1615304991643_i64
            }
        }
    });
    let SetContent::Revoke(s) = set(&keys, &p, &claims).await.unwrap() else {
        panic!()
    };
    assert_eq!(s.signal_type, SignalType::CredentialChange);
    assert_eq!(
        s.target,
        Target::Subject {
            sub: "jane.smith@example.com".into(),
            issuer: Some("https://idp.example.com/3456789/".into()),
            cutoff: 1615304991
        }
    );
}

#[tokio::test]
async fn verification_disabled_and_malformed_sets() {
    let keys = TestKeys::new();
    let mut p = keys.provider(
        "https://idp.example.com/123456789/",
        &["https://sp.example.com/caep"],
    );
    let mut claims = caep_session_revoked();
    claims["events"] = json!({
        "https://schemas.openid.net/secevent/ssf/event-type/verification": {"state": "VGhpcyBpcyBh"}
    });
    assert_eq!(
        set(&keys, &p, &claims).await.unwrap(),
        SetContent::Verification {
            stream_id: Some("dMTlD|1600802906337.16|16008.16".into()),
            state: Some("VGhpcyBpcyBh".into())
        }
    );
    // SSF 1.0 §8.1.5: a stream-updated event names the stream in an opaque `sub_id`.
    let mut updated = caep_session_revoked();
    updated["sub_id"] = json!({"format": "opaque", "id": "f67e39a0a4d34d56b3aa1bc4cff0069f"});
    updated["events"] = json!({
        "https://schemas.openid.net/secevent/ssf/event-type/stream-updated": {"status": "paused", "reason": "Internal error"}
    });
    assert_eq!(
        set(&keys, &p, &updated).await.unwrap(),
        SetContent::StreamUpdated {
            stream_id: Some("f67e39a0a4d34d56b3aa1bc4cff0069f".into()),
            status: "paused".into(),
            reason: Some("Internal error".into())
        }
    );
    updated["events"] = json!({
        "https://schemas.openid.net/secevent/ssf/event-type/stream-updated": {"reason": "no status"}
    });
    assert!(matches!(
        set(&keys, &p, &updated).await,
        Err(SignalError::Malformed(m)) if m.contains("status")
    ));
    // Two events in one SET.
    let mut two = caep_session_revoked();
    two["events"]["https://schemas.openid.net/secevent/risc/event-type/account-purged"] = json!({});
    assert!(
        matches!(set(&keys, &p, &two).await, Err(SignalError::Malformed(m)) if m.contains("more than one"))
    );
    // No subject.
    let mut none = caep_session_revoked();
    none.as_object_mut().unwrap().remove("sub_id");
    assert!(matches!(
        set(&keys, &p, &none).await,
        Err(SignalError::Malformed(_))
    ));
    // An opaque subject names a session: not a user for account-purged.
    let mut purged = caep_session_revoked();
    purged["events"] =
        json!({"https://schemas.openid.net/secevent/risc/event-type/account-purged": {}});
    assert!(matches!(
        set(&keys, &p, &purged).await,
        Err(SignalError::Malformed(_))
    ));
    // A type the provider does not act on is acknowledged only.
    p.events = vec![SignalType::AccountDisabled];
    assert_eq!(
        set(&keys, &p, &caep_session_revoked()).await.unwrap(),
        SetContent::Ignored(SignalType::SessionRevoked)
    );
}

#[test]
fn config_errors_name_the_field() {
    let base = "signing_key_file = \"k.pem\"\n[[providers]]\nname = \"kc\"\nissuer = \"https://kc.example.com/realms/a\"\naudiences = [\"denylist\"]\n";
    let config = ReceiverConfig::parse(base).unwrap();
    config.validate().unwrap();
    assert_eq!(
        config.providers[0].token_issuers(),
        ["https://kc.example.com/realms/a"]
    );
    assert_eq!(config.providers[0].events, SignalType::ALL);
    let field = |extra: &str| match ReceiverConfig::parse(&format!("{base}{extra}"))
        .map(|c| c.validate())
    {
        Ok(Err(super::config::ConfigError::Invalid { field, .. })) => field,
        other => panic!("{extra}: {other:?}"),
    };
    assert_eq!(
        field("algorithms = [\"HS256\"]\n"),
        "providers[0].algorithms"
    );
    assert_eq!(field("jwks_url = \"ftp://x\"\n"), "providers[0].jwks_url");
    assert_eq!(
        field("jwks_url = \"https://a/j\"\njwks_file = \"j.json\"\n"),
        "providers[0].jwks_url"
    );
    assert_eq!(
        field("token_issuers = [\"\"]\n").as_str(),
        "providers[0].token_issuers"
    );
    assert_eq!(
        field("[providers.poll]\nendpoint = \"https://tx/poll\"\nmax_events = 0\n"),
        "providers[0].poll.max_events"
    );
    assert_eq!(
        field("[[providers]]\nname = \"kc\"\nissuer = \"https://b\"\naudiences = [\"x\"]\n"),
        "providers[1].name"
    );
    // Unknown fields and bad event names are parse errors that name them.
    let e = ReceiverConfig::parse(&format!("{base}audiance = [\"x\"]\n")).unwrap_err();
    assert!(e.to_string().contains("audiance"), "{e}");
    let e = ReceiverConfig::parse(&format!("{base}events = [\"logout\"]\n")).unwrap_err();
    assert!(e.to_string().contains("logout"), "{e}");
}

#[test]
fn the_replay_cache_forgets_expired_and_oldest_entries() {
    let cache = ReplayCache::new(2);
    cache.record("i", "a", 100, 0);
    assert!(cache.contains("i", "a", 50));
    assert!(!cache.contains("other", "a", 50));
    assert!(!cache.contains("i", "a", 101));
    cache.record("i", "b", 100, 0);
    cache.record("i", "c", 100, 0);
    assert_eq!(cache.len(), 2);
    assert!(!cache.contains("i", "a", 50), "the oldest went first");
    assert!(cache.contains("i", "c", 50));
    cache.record("i", "d", 300, 200);
    assert!(cache.contains("i", "d", 250));
    assert_eq!(cache.len(), 1, "expired entries are dropped");
}

#[test]
fn the_shipped_deploy_config_is_valid() {
    // deploy/receiver/configmap.yaml embeds the config as a block scalar under
    // `receiver.toml: |`, indented four spaces.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/receiver/configmap.yaml"
    );
    let yaml = std::fs::read_to_string(path).unwrap();
    let (_, block) = yaml.split_once("receiver.toml: |\n").unwrap();
    let toml: String = block
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let config = ReceiverConfig::parse(&toml).unwrap();
    config.validate().unwrap();
    assert_eq!(config.providers[0].name, "keycloak");
    assert!(config.providers[0].push.is_some());
    assert!(config.providers[0].stream.is_some());
}

#[tokio::test]
async fn keys_of_an_unreachable_provider_keep_verifying_until_it_answers_again() {
    let keys = TestKeys::new();
    let p = keys.provider("https://server.example.com", &["s6BhdRkqt3"]);
    let ks = keyset(&p);
    let alg = jsonwebtoken::Algorithm::RS256;
    ks.key_for(Some("rsa-1"), alg).await.unwrap();
    // The provider's keys cannot be read any more, and the set is due for a refresh.
    std::fs::remove_file(keys.dir.path().join("jwks.json")).unwrap();
    tokio::time::pause();
    tokio::time::advance(super::keys::MAX_SET_AGE + std::time::Duration::from_secs(1)).await;
    ks.key_for(Some("rsa-1"), alg).await.unwrap();
    // A key never seen cannot be fetched: unavailable (retry later), not "unknown".
    tokio::time::advance(super::keys::REFETCH_INTERVAL).await;
    assert!(matches!(
        ks.key_for(Some("rsa-2"), alg).await,
        Err(SignalError::KeysUnavailable(_))
    ));
    // A fresh key set with no keys loaded fails as unavailable.
    assert!(matches!(
        keyset(&p).key_for(Some("rsa-1"), alg).await,
        Err(SignalError::KeysUnavailable(_))
    ));
}

#[tokio::test]
async fn a_jwks_over_a_mebibyte_is_refused_while_it_is_read() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let keys = TestKeys::new();
    let jwks: Value =
        serde_json::from_str(&std::fs::read_to_string(keys.dir.path().join("jwks.json")).unwrap())
            .unwrap();
    let padding = Arc::new(AtomicUsize::new(2 << 20));
    let served = Arc::clone(&padding);
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let mut document = jwks.clone();
            document["padding"] = json!("x".repeat(served.load(Ordering::SeqCst)));
            async move { document.to_string() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut p = keys.provider("https://idp.example", &["aud"]);
    p.jwks_file = None;
    p.jwks_url = Some(format!("http://{addr}/jwks"));
    let set = keyset(&p);
    let e = set.load().await.unwrap_err();
    assert!(e.to_string().contains("longer than 1048576 bytes"), "{e}");
    assert!(!set.is_loaded());
    // The same document without the padding loads (its two usable keys).
    padding.store(0, Ordering::SeqCst);
    assert_eq!(set.load().await.unwrap(), 2);
}
