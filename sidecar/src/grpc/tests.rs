//! Watch in-process, over the real denylist: which streams a revocation reaches, the
//! sequence a notice carries, and that closed streams leave the registry empty. And
//! Verify's answer as written on the wire: the bytes prost would write, the claims kept
//! with a cached token, the reason, rule and freshness current on every call.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::{FutureExt as _, StreamExt as _};
use prost::Message as _;

use super::*;
use crate::clock::{ManualClock, SharedClock};
use crate::config::Config;
use crate::denylist::{Denylist, DenylistSettings};
use crate::events::{Action, Event, Revoke, RuleKind};
use crate::freshness::Freshness;

const NOW: i64 = 1_893_456_000;
const ISS: &str = "https://watch.example";
const STEP: Duration = Duration::from_secs(10);
const SECRET: [u8; 32] = [7; 32];

struct Setup {
    service: VerifierService,
    denylist: Arc<Denylist>,
    freshness: Arc<Freshness>,
    stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("h.secret");
    std::fs::write(&secret, SECRET).expect("write secret");
    let quoted = |p: &std::path::Path| toml::Value::String(p.display().to_string()).to_string();
    let text = format!(
        "[denylist]\nfile = {}\n[[issuers]]\nissuer = \"{ISS}\"\nalgorithms = [\"HS256\"]\n\
         audiences = [\"api\"]\n[issuers.keys]\nhmac_secret_files = [{{ path = {}, kid = \"h\" }}]\n",
        quoted(&dir.path().join("revocations.jsonl")),
        quoted(&secret),
    );
    let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    config.validate().unwrap_or_else(|e| panic!("{e}\n{text}"));
    let clock: SharedClock = ManualClock::new(NOW * 1000);
    let keys = Arc::new(
        KeyStore::load(&config.issuers, Arc::clone(&clock))
            .await
            .expect("keys"),
    );
    let denylist = Arc::new(Denylist::new(
        DenylistSettings::default(),
        Arc::clone(&clock),
    ));
    let freshness = Arc::new(Freshness::new(
        Arc::clone(&clock),
        Duration::from_secs(3600),
        config.denylist.staleness_policy,
    ));
    freshness.mark_heard();
    freshness.set_ready();
    let verifier = Arc::new(Verifier::new(
        &config,
        &keys,
        Arc::clone(&denylist),
        Arc::clone(&freshness),
        clock,
    ));
    let (stop, stopping) = watch::channel(false);
    let info = ServiceInfo {
        name: "test".into(),
        mode: "standalone",
    };
    Setup {
        service: VerifierService::new(verifier, keys, info, stopping),
        denylist,
        freshness,
        stop,
        _dir: dir,
    }
}

impl Setup {
    async fn watch_subject(&self, subject: &str) -> WatchStream {
        let request = Request::new(pb::WatchRequest {
            issuer: ISS.into(),
            subject: subject.into(),
            issued_at: Some(NOW - 10),
            ..Default::default()
        });
        tokio::time::timeout(STEP, self.service.watch(request))
            .await
            .expect("Watch answers in time")
            .expect("Watch accepts an issuer and subject")
            .into_inner()
    }

    /// Applies a subject revocation the way the stream follower does: apply, then
    /// record the sequence.
    fn revoke_subject(&self, sequence: u64, subject: &str) {
        self.denylist.apply(&Event {
            event_id: format!("e-{sequence}"),
            action: Action::Revoke(Revoke {
                kind: RuleKind::Subject,
                issuer: ISS.into(),
                targets: vec![subject.into()],
                cutoff: NOW,
                expires_at: None,
            }),
            reason: "test".into(),
            actor: "secops".into(),
            created_at_ms: NOW * 1000,
        });
        self.freshness.set_sequence(sequence);
    }

    /// Waits (bounded) until every Watch task has ended and unregistered.
    async fn registry_empties(&self) {
        let registry = self.denylist.watchers();
        tokio::time::timeout(STEP, async {
            while registry.watchers() > 0 || registry.keys() > 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the registry still holds {} watchers under {} keys",
                registry.watchers(),
                registry.keys()
            )
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_notifies_only_its_stream_and_closed_streams_unregister() {
    let s = setup().await;
    let mut streams = Vec::new();
    for i in 0..50 {
        streams.push(s.watch_subject(&format!("user-{i}")).await);
    }
    // Each registered under (issuer, subject) and the shared (issuer).
    assert_eq!(s.denylist.watchers().watchers(), 50);
    assert_eq!(s.denylist.watchers().keys(), 51);

    s.revoke_subject(7, "nobody");
    s.revoke_subject(8, "user-13");
    let notice = tokio::time::timeout(STEP, streams[13].next())
        .await
        .expect("a notice in time")
        .expect("the stream yields")
        .expect("a notice, not an error");
    let rule = notice.revocation.expect("the rule");
    assert_eq!(
        (rule.event_id.as_str(), rule.target.as_str()),
        ("e-8", "user-13")
    );
    // Applied from the test's thread, not a runtime task: the woken stream may run
    // before the sequence is recorded (see `watch_until_revoked`).
    assert!(
        (7..=8).contains(&notice.denylist_sequence),
        "{}",
        notice.denylist_sequence
    );
    assert!(
        tokio::time::timeout(STEP, streams[13].next())
            .await
            .expect("the stream ends in time")
            .is_none()
    );
    // No other stream has anything to say.
    for (i, stream) in streams.iter_mut().enumerate() {
        if i != 13 {
            assert!(stream.next().now_or_never().is_none(), "stream {i} yielded");
        }
    }
    drop(streams);
    s.registry_empties().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_ends_every_stream_and_empties_the_registry() {
    let s = setup().await;
    let mut a = s.watch_subject("a").await;
    let mut b = s.watch_subject("b").await;
    s.stop.send_replace(true);
    for stream in [&mut a, &mut b] {
        let status = tokio::time::timeout(STEP, stream.next())
            .await
            .expect("an answer in time")
            .expect("the stream yields")
            .expect_err("shutting down");
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }
    s.registry_empties().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_in_force_when_the_stream_opens_is_notified_at_once() {
    let s = setup().await;
    s.revoke_subject(3, "early");
    let mut stream = s.watch_subject("early").await;
    let notice = tokio::time::timeout(STEP, stream.next())
        .await
        .expect("a notice in time")
        .expect("the stream yields")
        .expect("a notice");
    assert_eq!(notice.denylist_sequence, 3);
    drop(stream);
    s.registry_empties().await;
}

/// An HS256 token over `payload`, signed with the issuer's secret.
fn hs256(payload: &serde_json::Value) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","kid":"h"}"#),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &SECRET);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

impl Setup {
    /// One Verify answer: as written on the wire, and as the `Verifier` trait gives it.
    async fn verify(&self, token: &str) -> (Vec<u8>, pb::VerifyResponse) {
        let answer = self
            .service
            .answer_verify(pb::VerifyRequest {
                token: token.to_owned(),
            })
            .await
            .expect("Verify answers");
        let mut wire = Vec::new();
        answer.encode(&mut wire).expect("the answer encodes");
        let response = answer.into_response();
        // Byte for byte what prost writes, so what every client decodes.
        assert_eq!(wire, response.encode_to_vec());
        assert_eq!(
            pb::VerifyResponse::decode(wire.as_slice()).expect("decodes"),
            response
        );
        (wire, response)
    }
}

#[tokio::test]
async fn a_cached_token_is_answered_with_its_claims_and_the_current_denylist() {
    let s = setup().await;
    let token = hs256(&serde_json::json!({
        "iss": ISS, "sub": "alice", "aud": "api", "iat": NOW - 10, "exp": NOW + 600,
        "jti": "j-1", "scope": "read", "roles": ["a", "b"], "nested": {"n": null, "x": 1.5}
    }));
    s.freshness.set_sequence(4);
    let (_, first) = s.verify(&token).await;
    assert_eq!(first.reason, Reason::Ok as i32, "{}", first.detail);
    assert_eq!(first.denylist_sequence, 4);
    let claims = first.claims.clone().expect("claims");
    assert_eq!((claims.sub.as_str(), claims.kid.as_str()), ("alice", "h"));
    let payload = claims.payload.as_ref().expect("payload");
    assert_eq!(payload.fields.len(), 9);
    assert!(matches!(
        payload.fields["roles"].kind,
        Some(prost_types::value::Kind::ListValue(ref l)) if l.values.len() == 2
    ));

    // From the cache: the same claims, the sequence as it is now.
    s.freshness.set_sequence(5);
    let (_, again) = s.verify(&token).await;
    assert_eq!(again.claims.as_ref(), Some(&claims));
    assert_eq!(
        (again.reason, again.denylist_sequence),
        (Reason::Ok as i32, 5)
    );

    // The revocation check still runs on every call.
    s.revoke_subject(6, "alice");
    let (_, revoked) = s.verify(&token).await;
    assert_eq!(revoked.reason, Reason::Revoked as i32);
    assert!(!revoked.valid);
    assert_eq!(revoked.denylist_sequence, 6);
    assert_eq!(
        revoked.revocation.map(|r| r.target),
        Some("alice".to_owned())
    );
    assert_eq!(revoked.claims.as_ref(), Some(&claims));
}

#[tokio::test]
async fn a_refused_token_is_answered_without_claims() {
    let s = setup().await;
    let (_, malformed) = s.verify("not-a-token").await;
    assert_eq!(malformed.reason, Reason::Malformed as i32);
    assert!(malformed.claims.is_none() && !malformed.detail.is_empty());

    // The signature holds, so the claims come with the reason.
    let expired = hs256(&serde_json::json!({
        "iss": ISS, "sub": "bob", "aud": "api", "iat": NOW - 700, "exp": NOW - 100, "jti": "j-2"
    }));
    let (_, answer) = s.verify(&expired).await;
    assert_eq!(answer.reason, Reason::Expired as i32);
    assert_eq!(answer.claims.map(|c| c.sub), Some("bob".to_owned()));
}
