//! `receiver_signal`: the signal receiver's token checks and the mapping of a signal to
//! revocations (`denylist_client::receiver::{token, signal}`) on arbitrary input.
//!
//! The first byte picks what the rest is:
//! - `0`: a whole token as received (header, payload and signature as given). It cannot
//!   carry a fuzz key's signature, so it must never verify.
//! - `1`: the claims of a logout token, `2`: the claims of a SET. These are signed here
//!   with the provider's key (EdDSA), so the claim checks and the mapping run on hostile
//!   but validly signed content — what a compromised or buggy identity provider sends.
//!
//! Invariants: nothing panics, and every refusal formats; a signal maps only to `session`
//! or `subject` revocations (never a key, a whole issuer or a lift: the receiver's key is
//! scoped to those two) of the provider's token issuers, with the provider as actor; the
//! ids are derived from the signal (the same signal maps to the same ids); and each
//! revocation the receiver would publish (those that validate: it refuses the signal
//! otherwise) means the same after the wire's protobuf round trip.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use denylist_client::receiver::config::{ProviderConfig, ReceiverConfig};
use denylist_client::receiver::keys::KeySet;
use denylist_client::receiver::signal::{self, SetContent, Signal};
use denylist_client::receiver::token::{self, TokenPolicy, VerifiedToken};
use denylist_proto::events::{Action, Event, RuleKind};
use denylist_proto::pb;
use prost::Message as _;
use serde_json::json;

use crate::fixture::{self, Alg};
use crate::{Outcome, Seed};

/// The provider's issuer.
const ISSUER: &str = "https://idp.example.com/realms/acme";
/// The audience the receiver expects.
const AUDIENCE: &str = "denylist-receiver";
/// The key id of the provider's key in its JWKS.
const KID: &str = "ed-1";

/// The provider, its keys (loaded once) and a runtime to run the async checks on.
struct Fixture {
    provider: ProviderConfig,
    keys: KeySet,
    runtime: tokio::runtime::Runtime,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // The provider's JWKS: the fuzz Ed25519 key (the publisher key's raw bytes).
        let jwks = json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "kid": KID,
            "x": fixture::keys().publisher_public_key(),
        }]});
        let path = std::env::temp_dir().join(format!(
            "denylist-fuzz-receiver-jwks-{}.json",
            std::process::id()
        ));
        std::fs::write(&path, jwks.to_string()).expect("write the fuzz JWKS");
        let text = format!(
            "signing_key_file = \"unused.pem\"\n[[providers]]\nname = \"idp\"\n\
             issuer = {ISSUER:?}\naudiences = [{AUDIENCE:?}]\njwks_file = {:?}\n\
             email_subjects = {{ \"jane@example.com\" = \"jane\" }}\n",
            path.display().to_string()
        );
        let config = ReceiverConfig::parse(&text).expect("fuzz receiver config");
        config.validate().expect("fuzz receiver config is valid");
        let provider = config.providers[0].clone();
        let keys = KeySet::new(&provider, reqwest::Client::new());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("tokio runtime");
        runtime.block_on(keys.load()).expect("the fuzz JWKS loads");
        Fixture {
            provider,
            keys,
            runtime,
        }
    })
}

fn policy(provider: &ProviderConfig, max_age_secs: i64) -> TokenPolicy {
    TokenPolicy {
        issuer: provider.issuer.clone(),
        audiences: provider.audiences.clone(),
        algorithms: provider.algorithms.clone(),
        max_age_secs,
        leeway_secs: 30,
    }
}

/// `claims` signed by the provider's key as a `typ` token.
fn signed(typ: &str, claims: &[u8]) -> String {
    let header = json!({"alg": "EdDSA", "kid": KID, "typ": typ}).to_string();
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = fixture::keys().sign(Alg::EdDsa, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// Runs one input; panics if an invariant breaks.
pub fn run(data: &[u8]) -> Outcome {
    let Some((&mode, rest)) = data.split_first() else {
        return Outcome::Refused;
    };
    let f = fixture();
    let (token, typ, max_age) = match mode % 3 {
        0 => {
            let Ok(token) = std::str::from_utf8(rest) else {
                return Outcome::Refused;
            };
            let verified = f.runtime.block_on(token::verify(
                token,
                &f.keys,
                &policy(&f.provider, 86_400),
                &["logout+jwt", "secevent+jwt"],
                fixture::NOW,
            ));
            match verified {
                Ok(v) => panic!("a token not signed here verified: {v:?}"),
                Err(e) => {
                    let _ = e.to_string();
                    return Outcome::Refused;
                }
            }
        }
        1 => (signed("logout+jwt", rest), "logout+jwt", 600),
        _ => (signed("secevent+jwt", rest), "secevent+jwt", 86_400),
    };
    let verified = match f.runtime.block_on(token::verify(
        &token,
        &f.keys,
        &policy(&f.provider, max_age),
        &[typ],
        fixture::NOW,
    )) {
        Ok(verified) => verified,
        Err(e) => {
            let _ = e.to_string();
            return Outcome::Refused;
        }
    };
    let signal = if mode % 3 == 1 {
        signal::logout_signal(&verified, &f.provider.issuer)
    } else {
        match signal::set_content(&verified, &f.provider) {
            Ok(SetContent::Revoke(signal)) => Ok(signal),
            // Verification and stream-updated events: acknowledged, nothing published.
            Ok(_) => return Outcome::Accepted,
            Err(e) => Err(e),
        }
    };
    match signal {
        Ok(signal) => check_mapping(&signal, &verified, &f.provider),
        Err(e) => {
            let _ = e.to_string();
            Outcome::Refused
        }
    }
}

/// The invariants of a signal's revocations; `Accepted` when the receiver would publish
/// them (every one validates).
fn check_mapping(signal: &Signal, verified: &VerifiedToken, provider: &ProviderConfig) -> Outcome {
    assert_eq!(signal.jti, verified.jti);
    let events = signal::events_for(signal, provider, fixture::NOW_MS);
    assert!(
        !events.is_empty(),
        "a signal with no revocation: {signal:?}"
    );
    assert_eq!(
        events,
        signal::events_for(signal, provider, fixture::NOW_MS),
        "the same signal mapped to other events"
    );
    let issuers = provider.token_issuers();
    let mut publishable = true;
    for event in &events {
        let Action::Revoke(revoke) = &event.action else {
            panic!("a signal became a lift: {event:?}");
        };
        assert!(
            matches!(revoke.kind, RuleKind::Session | RuleKind::Subject),
            "a signal revokes {:?}: {event:?}",
            revoke.kind
        );
        assert!(
            issuers.contains(&revoke.issuer),
            "a revocation for issuer {:?}, not one of the provider's {issuers:?}",
            revoke.issuer
        );
        assert_eq!(event.actor, format!("receiver/{}", provider.name));
        assert_eq!(
            event.event_id,
            signal::event_id(&signal.issuer, &signal.jti, &revoke.issuer)
        );
        if event.validate().is_err() {
            // The receiver refuses such a signal (400) before publishing anything.
            publishable = false;
            continue;
        }
        let wire = event.to_proto().encode_to_vec();
        let live = pb::RevocationEvent::decode(wire.as_slice())
            .map_err(|e| e.to_string())
            .and_then(|ev| Event::from_proto(ev).map_err(|e| e.to_string()));
        assert_eq!(live.as_ref(), Ok(event), "the wire changed the revocation");
    }
    Outcome::from_bool(publishable)
}

/// The committed seeds: the signals the receiver acts on, and near misses.
pub fn seeds() -> Vec<Seed> {
    let iat = fixture::NOW - 5;
    let logout = |claims: serde_json::Value| [vec![1u8], claims.to_string().into_bytes()].concat();
    let set = |claims: serde_json::Value| [vec![2u8], claims.to_string().into_bytes()].concat();
    let base = |jti: &str| json!({"iss": ISSUER, "aud": AUDIENCE, "iat": iat, "jti": jti});
    let with = |mut claims: serde_json::Value, extra: serde_json::Value| {
        for (k, v) in extra.as_object().expect("an object") {
            claims[k] = v.clone();
        }
        claims
    };
    let bcl = json!({"http://schemas.openid.net/event/backchannel-logout": {}});
    let caep = |event: &str| format!("https://schemas.openid.net/secevent/caep/event-type/{event}");
    let risc = |event: &str| format!("https://schemas.openid.net/secevent/risc/event-type/{event}");
    vec![
        (
            "logout-sid",
            logout(with(
                base("l-1"),
                json!({"sid": "s-1", "sub": "u-1", "events": bcl}),
            )),
        ),
        (
            "logout-sub",
            logout(with(base("l-2"), json!({"sub": "u-1", "events": bcl}))),
        ),
        (
            "logout-nonce",
            logout(with(
                base("l-3"),
                json!({"sid": "s-1", "nonce": "n", "events": bcl}),
            )),
        ),
        (
            "set-session-revoked",
            set(with(
                base("s-1"),
                json!({
                    "sub_id": {"format": "opaque", "id": "sess-1"},
                    "events": {caep("session-revoked"): {"event_timestamp": iat}},
                }),
            )),
        ),
        (
            "set-account-disabled-email",
            set(with(
                base("s-2"),
                json!({
                    "sub_id": {"format": "email", "email": "jane@example.com"},
                    "events": {risc("account-disabled"): {}},
                }),
            )),
        ),
        (
            "set-complex-subject",
            set(with(
                base("s-3"),
                json!({
                    "sub_id": {
                        "format": "complex",
                        "user": {"format": "iss_sub", "iss": ISSUER, "sub": "u-2"},
                        "session": {"format": "opaque", "id": "sess-2"},
                    },
                    "events": {caep("session-revoked"): {"event_timestamp": iat * 1000}},
                }),
            )),
        ),
        (
            "set-two-events",
            set(with(
                base("s-4"),
                json!({
                    "sub_id": {"format": "opaque", "id": "sess-3"},
                    "events": {caep("session-revoked"): {}, risc("sessions-revoked"): {}},
                }),
            )),
        ),
        (
            "set-verification",
            set(with(
                base("s-5"),
                json!({
                    "sub_id": {"format": "opaque", "id": "stream-1"},
                    "events": {"https://schemas.openid.net/secevent/ssf/event-type/verification": {"state": "abc"}},
                }),
            )),
        ),
        (
            "set-huge-subject",
            set(with(
                base("s-6"),
                json!({
                    "sub_id": {"format": "iss_sub", "iss": ISSUER, "sub": "x".repeat(denylist_proto::events::MAX_FIELD_LEN + 1)},
                    "events": {risc("account-purged"): {}},
                }),
            )),
        ),
        (
            "token-alg-none",
            [
                vec![0u8],
                format!(
                    "{}.{}.",
                    URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
                    URL_SAFE_NO_PAD.encode(base("t-1").to_string())
                )
                .into_bytes(),
            ]
            .concat(),
        ),
        (
            "token-forged",
            [
                vec![0u8],
                format!(
                    "{}.{}.{}",
                    URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","kid":"ed-1"}"#),
                    URL_SAFE_NO_PAD.encode(base("t-2").to_string()),
                    URL_SAFE_NO_PAD.encode([7u8; 64])
                )
                .into_bytes(),
            ]
            .concat(),
        ),
    ]
}
