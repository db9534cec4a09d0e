use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::*;
use crate::clock::ManualClock;
use crate::events::{Action, Event, Revoke, RuleKind};
use crate::testing::Rng;

/// 2023-11-14T22:13:20Z, in milliseconds.
const T0_MS: i64 = 1_700_000_000_000;
const T0: i64 = T0_MS / 1000;
const ISS: &str = "https://issuer.example";
const OTHER_ISS: &str = "https://other.example";
/// An issuer with a short configured maximum token lifetime.
const SHORT_ISS: &str = "https://short.example";
const SHORT_LIFETIME: i64 = 3600;
const DEFAULT_LIFETIME: i64 = 86_400;

fn settings() -> DenylistSettings {
    DenylistSettings {
        expected_entries: 1000,
        bloom_fp_rate: 0.001,
        max_lifetimes: HashMap::from([(SHORT_ISS.to_owned(), SHORT_LIFETIME)]),
        default_max_lifetime: DEFAULT_LIFETIME,
    }
}

fn denylist() -> (Denylist, Arc<ManualClock>) {
    let clock = ManualClock::new(T0_MS);
    (Denylist::new(settings(), clock.clone()), clock)
}

fn revoke_event(id: &str, kind: RuleKind, issuer: &str, targets: &[&str]) -> Event {
    Event {
        event_id: id.to_owned(),
        action: Action::Revoke(Revoke {
            kind,
            issuer: issuer.to_owned(),
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            cutoff: if kind.has_cutoff() { T0 } else { 0 },
            expires_at: None,
        }),
        reason: format!("reason of {id}"),
        actor: "secops".to_owned(),
        created_at_ms: T0_MS,
    }
}

fn with_cutoff(mut event: Event, cutoff: i64) -> Event {
    if let Action::Revoke(r) = &mut event.action {
        r.cutoff = cutoff;
    }
    event
}

fn with_expiry(mut event: Event, expires_at: i64) -> Event {
    if let Action::Revoke(r) = &mut event.action {
        r.expires_at = Some(expires_at);
    }
    event
}

fn lift_event(id: &str, lifted: &[&str]) -> Event {
    Event {
        event_id: id.to_owned(),
        action: Action::Lift {
            event_ids: lifted.iter().map(|t| (*t).to_owned()).collect(),
        },
        reason: "mistake".to_owned(),
        actor: "secops".to_owned(),
        created_at_ms: T0_MS,
    }
}

fn jti_token<'a>(issuer: &'a str, jti: &'a str) -> TokenFacts<'a> {
    TokenFacts {
        issuer,
        jti: Some(jti),
        issued_at: Some(T0 - 10),
        ..TokenFacts::default()
    }
}

fn sub_token<'a>(issuer: &'a str, subject: &'a str, issued_at: Option<i64>) -> TokenFacts<'a> {
    TokenFacts {
        issuer,
        jti: Some("some-unrevoked-jti"),
        subject: Some(subject),
        issued_at,
        ..TokenFacts::default()
    }
}

fn revoked_by(d: &Denylist, token: &TokenFacts<'_>) -> Option<String> {
    let exact = d
        .is_revoked_exact_only(token)
        .map(|r| r.event_id.to_string());
    let gated = d.is_revoked(token).map(|r| r.event_id.to_string());
    assert_eq!(exact, gated, "Bloom-gated and exact lookups disagree");
    gated
}

#[test]
fn empty_denylist_revokes_nothing() {
    let (d, _) = denylist();
    assert_eq!(d.is_revoked(&jti_token(ISS, "a")), None);
    assert_eq!(d.stats().entries, 0);
    assert_eq!(d.prune_and_rebuild(), RebuildStats::default());
    assert_eq!(d.is_revoked(&jti_token(ISS, "a")), None);
}

#[test]
fn jti_rule_matches_only_its_issuer_and_jti() {
    let (d, _) = denylist();
    let applied = d.apply(&revoke_event(
        "ev-1",
        RuleKind::Jti,
        ISS,
        &["jti-a", "jti-b"],
    ));
    assert_eq!(
        applied,
        Applied {
            added: 2,
            lifted: 0,
            duplicate: false
        }
    );
    for rebuilt in [false, true] {
        if rebuilt {
            assert_eq!(d.prune_and_rebuild().kept, 2);
        }
        let hit = d
            .is_revoked(&jti_token(ISS, "jti-a"))
            .expect("jti-a is revoked");
        assert_eq!(
            hit,
            Revocation {
                kind: RuleKind::Jti,
                event_id: "ev-1".into(),
                reason: "reason of ev-1".into(),
                actor: "secops".into(),
                issuer: ISS.to_owned(),
                target: "jti-a".to_owned(),
                cutoff: 0,
                created_at_ms: T0_MS,
            }
        );
        assert_eq!(
            revoked_by(&d, &jti_token(ISS, "jti-b")).as_deref(),
            Some("ev-1")
        );
        assert_eq!(revoked_by(&d, &jti_token(ISS, "jti-c")), None, "other jti");
        assert_eq!(
            revoked_by(&d, &jti_token(OTHER_ISS, "jti-a")),
            None,
            "other issuer"
        );
        assert_eq!(revoked_by(&d, &jti_token(ISS, "jti-")), None, "prefix");
        assert_eq!(revoked_by(&d, &jti_token(ISS, "jti-aa")), None, "extension");
        let no_jti = TokenFacts {
            issuer: ISS,
            subject: Some("jti-a"),
            session: Some("jti-a"),
            kid: Some("jti-a"),
            ..TokenFacts::default()
        };
        assert_eq!(revoked_by(&d, &no_jti), None, "same value in other claims");
    }
}

#[test]
fn issuer_and_target_cannot_be_shifted_into_each_other() {
    let (d, _) = denylist();
    d.apply(&revoke_event("ev-1", RuleKind::Jti, "ab", &["c"]));
    assert!(d.is_revoked(&jti_token("ab", "c")).is_some());
    assert_eq!(d.is_revoked(&jti_token("a", "bc")), None);
    assert_eq!(d.is_revoked(&jti_token("abc", "")), None);
}

#[test]
fn subject_rule_honours_cutoff_at_the_boundary_second() {
    let (d, _) = denylist();
    let cutoff = T0 - 100;
    d.apply(&with_cutoff(
        revoke_event("ev-sub", RuleKind::Subject, ISS, &["alice"]),
        cutoff,
    ));
    for rebuilt in [false, true] {
        if rebuilt {
            d.prune_and_rebuild();
        }
        let at_cutoff = d.is_revoked(&sub_token(ISS, "alice", Some(cutoff)));
        let hit = at_cutoff.expect("iat == cutoff is revoked");
        assert_eq!(hit.kind, RuleKind::Subject);
        assert_eq!(hit.target, "alice");
        assert_eq!(hit.cutoff, cutoff);
        assert!(revoked_by(&d, &sub_token(ISS, "alice", Some(cutoff - 1000))).is_some());
        assert_eq!(
            revoked_by(&d, &sub_token(ISS, "alice", Some(cutoff + 1))),
            None
        );
        assert!(
            revoked_by(&d, &sub_token(ISS, "alice", None)).is_some(),
            "a token without iat fails safe"
        );
        assert_eq!(revoked_by(&d, &sub_token(ISS, "bob", Some(cutoff))), None);
        assert_eq!(
            revoked_by(&d, &sub_token(OTHER_ISS, "alice", Some(cutoff))),
            None
        );
    }
}

#[test]
fn issuer_rule_honours_cutoff_at_the_boundary_second() {
    let (d, _) = denylist();
    let cutoff = T0 - 5;
    let applied = d.apply(&with_cutoff(
        revoke_event("ev-iss", RuleKind::Issuer, ISS, &[]),
        cutoff,
    ));
    assert_eq!(applied.added, 1);
    for rebuilt in [false, true] {
        if rebuilt {
            d.prune_and_rebuild();
        }
        let token = |iat| TokenFacts {
            issuer: ISS,
            jti: Some("x"),
            subject: Some("anyone"),
            issued_at: iat,
            ..TokenFacts::default()
        };
        let hit = d
            .is_revoked(&token(Some(cutoff)))
            .expect("iat == cutoff is revoked");
        assert_eq!(hit.kind, RuleKind::Issuer);
        assert_eq!(hit.target, "");
        assert_eq!(revoked_by(&d, &token(Some(cutoff + 1))), None);
        assert!(revoked_by(&d, &token(None)).is_some(), "no iat fails safe");
        let other = TokenFacts {
            issuer: OTHER_ISS,
            ..token(Some(cutoff))
        };
        assert_eq!(revoked_by(&d, &other), None);
    }
}

#[test]
fn session_rule_matches_its_sid_whatever_the_iat() {
    let (d, _) = denylist();
    d.apply(&revoke_event("ev-sid", RuleKind::Session, ISS, &["sid-1"]));
    for rebuilt in [false, true] {
        if rebuilt {
            d.prune_and_rebuild();
        }
        let token = |issuer, sid, iat| TokenFacts {
            issuer,
            jti: Some("x"),
            session: Some(sid),
            issued_at: iat,
            ..TokenFacts::default()
        };
        let hit = d
            .is_revoked(&token(ISS, "sid-1", Some(T0 + 1000)))
            .expect("revoked");
        assert_eq!(
            (hit.kind, hit.target.as_str()),
            (RuleKind::Session, "sid-1")
        );
        assert!(revoked_by(&d, &token(ISS, "sid-1", None)).is_some());
        assert_eq!(revoked_by(&d, &token(ISS, "sid-2", Some(T0))), None);
        assert_eq!(revoked_by(&d, &token(OTHER_ISS, "sid-1", Some(T0))), None);
        assert_eq!(
            revoked_by(&d, &jti_token(ISS, "sid-1")),
            None,
            "sid value as jti"
        );
    }
}

#[test]
fn key_rule_matches_its_kid() {
    let (d, _) = denylist();
    d.apply(&revoke_event("ev-kid", RuleKind::Key, ISS, &["key-2024"]));
    for rebuilt in [false, true] {
        if rebuilt {
            d.prune_and_rebuild();
        }
        let token = |issuer, kid| TokenFacts {
            issuer,
            jti: Some("x"),
            kid: Some(kid),
            issued_at: Some(T0 + 5),
            ..TokenFacts::default()
        };
        let hit = d.is_revoked(&token(ISS, "key-2024")).expect("revoked");
        assert_eq!((hit.kind, hit.target.as_str()), (RuleKind::Key, "key-2024"));
        assert_eq!(revoked_by(&d, &token(ISS, "key-2025")), None);
        assert_eq!(revoked_by(&d, &token(OTHER_ISS, "key-2024")), None);
    }
}

#[test]
fn most_specific_rule_is_reported_first() {
    let (d, _) = denylist();
    d.apply(&revoke_event("ev-iss", RuleKind::Issuer, ISS, &[]));
    d.apply(&revoke_event("ev-key", RuleKind::Key, ISS, &["k"]));
    d.apply(&revoke_event("ev-sub", RuleKind::Subject, ISS, &["alice"]));
    d.apply(&revoke_event("ev-sid", RuleKind::Session, ISS, &["s"]));
    d.apply(&revoke_event("ev-jti", RuleKind::Jti, ISS, &["j"]));
    let token = TokenFacts {
        issuer: ISS,
        jti: Some("j"),
        subject: Some("alice"),
        session: Some("s"),
        kid: Some("k"),
        issued_at: Some(T0 - 1),
    };
    let order = ["ev-jti", "ev-sid", "ev-sub", "ev-key", "ev-iss"];
    for (i, expected) in order.iter().enumerate() {
        assert_eq!(revoked_by(&d, &token).as_deref(), Some(*expected));
        d.apply(&lift_event(&format!("lift-{i}"), &[expected]));
        if i == 2 {
            d.prune_and_rebuild();
        }
    }
    assert_eq!(revoked_by(&d, &token), None);
}

#[test]
fn expired_rule_stops_matching_before_pruning_and_is_pruned() {
    let (d, clock) = denylist();
    let exp = T0 + 60;
    d.apply(&with_expiry(
        revoke_event("ev-1", RuleKind::Jti, ISS, &["a"]),
        exp,
    ));
    d.apply(&revoke_event("ev-2", RuleKind::Jti, ISS, &["b"]));
    assert_eq!(
        d.prune_and_rebuild(),
        RebuildStats {
            kept: 2,
            dropped: 0
        }
    );
    let token = jti_token(ISS, "a");
    // The rule outlives the token's exp by the grace, which covers verification leeway.
    clock.set_ms((exp + EXPIRY_GRACE_SECS - 1) * 1000);
    assert!(revoked_by(&d, &token).is_some());
    clock.set_ms((exp + EXPIRY_GRACE_SECS) * 1000);
    assert_eq!(
        revoked_by(&d, &token),
        None,
        "expired rule matched before pruning"
    );
    assert!(
        revoked_by(&d, &jti_token(ISS, "b")).is_some(),
        "b lives a day"
    );
    assert_eq!(d.stats().entries, 2);
    assert_eq!(
        d.prune_and_rebuild(),
        RebuildStats {
            kept: 1,
            dropped: 1
        }
    );
    assert_eq!(d.stats().entries, 1);
    assert_eq!(revoked_by(&d, &token), None);
    assert!(revoked_by(&d, &jti_token(ISS, "b")).is_some());
}

#[test]
fn expiry_derives_from_issuer_max_lifetime() {
    let (d, clock) = denylist();
    // jti and session: creation + the issuer's max lifetime.
    d.apply(&revoke_event("jti-short", RuleKind::Jti, SHORT_ISS, &["a"]));
    d.apply(&revoke_event("sid-default", RuleKind::Session, ISS, &["s"]));
    // subject: cut-off + max lifetime (cut-off an hour before creation).
    d.apply(&with_cutoff(
        revoke_event("sub-short", RuleKind::Subject, SHORT_ISS, &["alice"]),
        T0 - 3600,
    ));
    // key: never, unless lifted.
    d.apply(&revoke_event("key", RuleKind::Key, ISS, &["k"]));
    let sid = TokenFacts {
        issuer: ISS,
        session: Some("s"),
        ..TokenFacts::default()
    };
    let kid = TokenFacts {
        issuer: ISS,
        kid: Some("k"),
        ..TokenFacts::default()
    };
    let alice = sub_token(SHORT_ISS, "alice", Some(T0 - 4000));

    // The subject rule went first: cut-off + 1 h + grace = T0 + grace.
    clock.set_ms((T0 + EXPIRY_GRACE_SECS - 1) * 1000);
    assert!(revoked_by(&d, &alice).is_some());
    clock.set_ms((T0 + EXPIRY_GRACE_SECS) * 1000);
    assert_eq!(revoked_by(&d, &alice), None);
    assert!(revoked_by(&d, &jti_token(SHORT_ISS, "a")).is_some());

    clock.set_ms((T0 + SHORT_LIFETIME + EXPIRY_GRACE_SECS - 1) * 1000);
    assert!(revoked_by(&d, &jti_token(SHORT_ISS, "a")).is_some());
    clock.set_ms((T0 + SHORT_LIFETIME + EXPIRY_GRACE_SECS) * 1000);
    assert_eq!(revoked_by(&d, &jti_token(SHORT_ISS, "a")), None);
    assert_eq!(
        d.prune_and_rebuild(),
        RebuildStats {
            kept: 2,
            dropped: 2
        }
    );

    clock.set_ms((T0 + DEFAULT_LIFETIME + EXPIRY_GRACE_SECS - 1) * 1000);
    assert!(revoked_by(&d, &sid).is_some());
    clock.set_ms((T0 + DEFAULT_LIFETIME + EXPIRY_GRACE_SECS) * 1000);
    assert_eq!(revoked_by(&d, &sid), None);

    clock.set_ms((T0 + 10 * 365 * 86_400) * 1000);
    assert_eq!(
        d.prune_and_rebuild(),
        RebuildStats {
            kept: 1,
            dropped: 1
        }
    );
    assert!(
        revoked_by(&d, &kid).is_some(),
        "a key rule lasts until lifted"
    );
}

#[test]
fn event_arriving_after_its_expiry_adds_nothing() {
    let (d, _) = denylist();
    let late = with_expiry(
        revoke_event("late", RuleKind::Jti, ISS, &["a"]),
        T0 - EXPIRY_GRACE_SECS,
    );
    assert_eq!(d.apply(&late), Applied::default());
    assert_eq!(d.is_revoked(&jti_token(ISS, "a")), None);
    assert_eq!(d.stats().entries, 0);
}

#[test]
fn event_without_creation_time_counts_as_created_now() {
    let (d, _) = denylist();
    let mut event = revoke_event("no-time", RuleKind::Jti, ISS, &["a"]);
    event.created_at_ms = 0;
    assert_eq!(d.apply(&event).added, 1);
    d.prune_and_rebuild();
    assert!(d.is_revoked(&jti_token(ISS, "a")).is_some());
}

#[test]
fn lift_is_immediate_before_and_after_rebuild() {
    let (d, _) = denylist();
    d.apply(&revoke_event("recent", RuleKind::Jti, ISS, &["a", "b"]));
    d.apply(&revoke_event("other", RuleKind::Jti, ISS, &["c"]));
    // Lift while the rules are in the recent runs.
    let applied = d.apply(&lift_event("lift-1", &["recent"]));
    assert_eq!(
        applied,
        Applied {
            added: 0,
            lifted: 2,
            duplicate: false
        }
    );
    assert_eq!(revoked_by(&d, &jti_token(ISS, "a")), None);
    assert_eq!(revoked_by(&d, &jti_token(ISS, "b")), None);
    assert!(revoked_by(&d, &jti_token(ISS, "c")).is_some());

    // Lift while the rules are in the base.
    d.apply(&revoke_event("based", RuleKind::Subject, ISS, &["alice"]));
    assert_eq!(
        d.prune_and_rebuild(),
        RebuildStats {
            kept: 2,
            dropped: 2
        }
    );
    assert!(revoked_by(&d, &sub_token(ISS, "alice", None)).is_some());
    assert_eq!(d.apply(&lift_event("lift-2", &["based"])).lifted, 1);
    assert_eq!(revoked_by(&d, &sub_token(ISS, "alice", None)), None);
    assert_eq!(
        d.prune_and_rebuild(),
        RebuildStats {
            kept: 1,
            dropped: 1
        }
    );
    assert_eq!(revoked_by(&d, &sub_token(ISS, "alice", None)), None);
    assert!(revoked_by(&d, &jti_token(ISS, "c")).is_some());

    // A redelivered revocation does not come back after its lift.
    let again = d.apply(&revoke_event("recent", RuleKind::Jti, ISS, &["a", "b"]));
    assert!(again.duplicate);
    assert_eq!(revoked_by(&d, &jti_token(ISS, "a")), None);
    // Nor does a redelivered lift count twice.
    assert!(d.apply(&lift_event("lift-1", &["recent"])).duplicate);
}

#[test]
fn lift_of_unknown_id_is_a_no_op() {
    let (d, _) = denylist();
    d.apply(&revoke_event("ev-1", RuleKind::Jti, ISS, &["a"]));
    assert_eq!(
        d.apply(&lift_event("lift-x", &["nope"])),
        Applied::default()
    );
    assert!(revoked_by(&d, &jti_token(ISS, "a")).is_some());
    assert_eq!(d.stats().entries, 1);
    // The same target revoked by two events: lifting one leaves the other in force.
    d.apply(&revoke_event("ev-2", RuleKind::Jti, ISS, &["a"]));
    d.apply(&lift_event("lift-1", &["ev-1"]));
    assert_eq!(
        revoked_by(&d, &jti_token(ISS, "a")).as_deref(),
        Some("ev-2")
    );
    d.prune_and_rebuild();
    assert_eq!(
        revoked_by(&d, &jti_token(ISS, "a")).as_deref(),
        Some("ev-2")
    );
}

#[test]
fn reapplying_an_event_changes_nothing() {
    let (d, _) = denylist();
    let event = revoke_event("ev-1", RuleKind::Jti, ISS, &["a", "b", "a"]);
    assert_eq!(d.apply(&event).added, 2, "duplicate targets count once");
    let before = d.stats();
    let again = d.apply(&event);
    assert_eq!(
        again,
        Applied {
            added: 0,
            lifted: 0,
            duplicate: true
        }
    );
    assert_eq!(d.stats().entries, before.entries);
    d.prune_and_rebuild();
    assert!(d.apply(&event).duplicate);
    assert_eq!(d.stats().entries, 2);
    // Lifting it and lifting it again: the second lift withdraws nothing.
    assert_eq!(d.apply(&lift_event("l1", &["ev-1"])).lifted, 2);
    assert_eq!(d.apply(&lift_event("l2", &["ev-1"])).lifted, 0);
}

#[test]
fn replace_all_swaps_the_whole_content() {
    let (d, _) = denylist();
    d.apply(&revoke_event("old", RuleKind::Jti, ISS, &["old-jti"]));
    d.prune_and_rebuild();
    d.apply(&revoke_event(
        "old-recent",
        RuleKind::Jti,
        ISS,
        &["old-recent-jti"],
    ));

    let file = [
        revoke_event("new-1", RuleKind::Jti, ISS, &["n1", "n2"]),
        revoke_event("new-2", RuleKind::Subject, ISS, &["alice"]),
        revoke_event("new-3", RuleKind::Jti, ISS, &["n3"]),
        lift_event("lift-3", &["new-3"]),
        revoke_event("new-1", RuleKind::Jti, ISS, &["n1", "n2"]),
        with_expiry(
            revoke_event("expired", RuleKind::Jti, ISS, &["gone"]),
            T0 - EXPIRY_GRACE_SECS - 1,
        ),
    ];
    let applied = d.replace_all(&file);
    assert_eq!(
        applied,
        Applied {
            added: 4,
            lifted: 1,
            duplicate: true
        }
    );
    assert_eq!(revoked_by(&d, &jti_token(ISS, "old-jti")), None);
    assert_eq!(revoked_by(&d, &jti_token(ISS, "old-recent-jti")), None);
    assert_eq!(
        revoked_by(&d, &jti_token(ISS, "n1")).as_deref(),
        Some("new-1")
    );
    assert_eq!(
        revoked_by(&d, &jti_token(ISS, "n2")).as_deref(),
        Some("new-1")
    );
    assert_eq!(
        revoked_by(&d, &jti_token(ISS, "n3")),
        None,
        "lifted in the file"
    );
    assert_eq!(revoked_by(&d, &jti_token(ISS, "gone")), None);
    assert!(revoked_by(&d, &sub_token(ISS, "alice", Some(T0))).is_some());
    assert_eq!(d.stats().entries, 3);
    assert!(
        d.stats().bloom_bytes > 0,
        "a replaced set is gated by a Bloom filter"
    );
    // The replacement's events are the ones remembered now.
    assert!(
        d.apply(&revoke_event("new-2", RuleKind::Subject, ISS, &["alice"]))
            .duplicate
    );
    assert!(
        !d.apply(&revoke_event("old", RuleKind::Jti, ISS, &["old-jti"]))
            .duplicate
    );
    assert_eq!(
        d.prune_and_rebuild(),
        RebuildStats {
            kept: 4,
            dropped: 0
        }
    );

    assert_eq!(d.replace_all(&[]), Applied::default());
    assert_eq!(d.stats().entries, 0);
    assert_eq!(d.is_revoked(&jti_token(ISS, "n1")), None);
}

#[test]
fn a_failed_replacement_leaves_the_content_as_it_was() {
    let (d, _) = denylist();
    d.apply(&revoke_event("kept", RuleKind::Jti, ISS, &["kept-jti"]));
    let (n1, n2) = (
        revoke_event("new-1", RuleKind::Jti, ISS, &["n1"]),
        revoke_event("new-2", RuleKind::Jti, ISS, &["n2"]),
    );
    let events = vec![Ok(n1.view()), Err("event #1 is bad"), Ok(n2.view())];
    assert_eq!(d.try_replace_all(vec![events], 3), Err("event #1 is bad"));
    assert_eq!(
        revoked_by(&d, &jti_token(ISS, "kept-jti")).as_deref(),
        Some("kept")
    );
    assert_eq!(revoked_by(&d, &jti_token(ISS, "n1")), None);
    assert_eq!(d.stats().entries, 1);
    // The old events are still the ones remembered.
    assert!(
        d.apply(&revoke_event("kept", RuleKind::Jti, ISS, &["kept-jti"]))
            .duplicate
    );

    let events = vec![Ok::<_, &str>(n1.view())];
    assert_eq!(d.try_replace_all(vec![events], 1).map(|a| a.added), Ok(1));
    assert_eq!(revoked_by(&d, &jti_token(ISS, "kept-jti")), None);
    assert_eq!(
        revoked_by(&d, &jti_token(ISS, "n1")).as_deref(),
        Some("new-1")
    );
}

#[test]
fn bloom_positive_refuted_by_the_exact_set_keeps_token_valid() {
    let (d, _) = denylist();
    d.apply(&revoke_event("ev-1", RuleKind::Jti, ISS, &["revoked"]));
    d.prune_and_rebuild();
    d.saturate_bloom();
    assert!(
        d.bloom_passes(RuleKind::Jti, ISS, "innocent"),
        "the test needs a Bloom positive"
    );
    assert_eq!(d.is_revoked(&jti_token(ISS, "innocent")), None);
    assert!(d.is_revoked(&jti_token(ISS, "revoked")).is_some());
}

#[test]
fn natural_bloom_false_positives_never_reject() {
    let clock = ManualClock::new(T0_MS);
    let d = Denylist::new(
        DenylistSettings {
            expected_entries: 1,
            bloom_fp_rate: 0.5,
            ..settings()
        },
        clock,
    );
    let revoked: Vec<String> = (0..64).map(|i| format!("revoked-{i}")).collect();
    let targets: Vec<&str> = revoked.iter().map(String::as_str).collect();
    d.apply(&revoke_event("bulk", RuleKind::Jti, ISS, &targets));
    d.prune_and_rebuild();
    let mut positives = 0;
    for i in 0..2000 {
        let jti = format!("innocent-{i}");
        if d.bloom_passes(RuleKind::Jti, ISS, &jti) {
            positives += 1;
            assert_eq!(d.is_revoked(&jti_token(ISS, &jti)), None);
        }
    }
    assert!(
        positives > 100,
        "only {positives} Bloom positives at a 50 % rate"
    );
    for jti in &targets {
        assert!(d.is_revoked(&jti_token(ISS, jti)).is_some());
    }
}

#[test]
fn many_applies_and_rebuilds_keep_every_rule() {
    let (d, _) = denylist();
    let mut expected = Vec::new();
    for e in 0..300 {
        let targets: Vec<String> = (0..(e % 7 + 1)).map(|t| format!("e{e}-t{t}")).collect();
        let refs: Vec<&str> = targets.iter().map(String::as_str).collect();
        d.apply(&revoke_event(&format!("ev-{e}"), RuleKind::Jti, ISS, &refs));
        expected.extend(targets.into_iter().map(|t| (t, format!("ev-{e}"))));
        if e % 97 == 96 {
            d.prune_and_rebuild();
        }
    }
    let check = |d: &Denylist| {
        for (jti, event_id) in &expected {
            assert_eq!(revoked_by(d, &jti_token(ISS, jti)).as_ref(), Some(event_id));
            assert_eq!(revoked_by(d, &jti_token(ISS, &format!("{jti}x"))), None);
        }
    };
    check(&d);
    assert_eq!(d.stats().entries, expected.len() as u64);
    // The recent runs stay few: binary-counter merging.
    assert!(d.current.load().runs.len() <= 12);
    d.prune_and_rebuild();
    check(&d);
    let stats = d.stats();
    assert_eq!(stats.entries, expected.len() as u64);
    assert!(stats.bloom_bytes > 0);
    assert!(stats.heap_bytes > stats.bloom_bytes + 20 * stats.entries);
}

#[test]
fn forgets_events_after_they_expire() {
    let (d, clock) = denylist();
    d.apply(&with_expiry(
        revoke_event("ev-1", RuleKind::Jti, ISS, &["a"]),
        T0 + 10,
    ));
    d.apply(&with_expiry(
        revoke_event("ev-2", RuleKind::Jti, ISS, &["b"]),
        T0 + 10,
    ));
    d.apply(&lift_event("lift-2", &["ev-2"]));
    let busy = d.stats().heap_bytes;
    clock.set_ms((T0 + 10 + EXPIRY_GRACE_SECS) * 1000);
    d.prune_and_rebuild();
    let writer = d.writer.lock();
    assert!(writer.events.is_empty(), "{:?}", writer.events);
    assert!(writer.lifts.is_empty());
    assert!(writer.tombstones.is_empty());
    assert!(writer.provenances.is_empty());
    assert_eq!(writer.owned_bytes, 0);
    drop(writer);
    assert!(d.stats().heap_bytes < busy);
}

/// Reader threads that check a fixed revoked and a fixed valid token on every turn.
fn hammer(d: &Denylist, done: &AtomicBool, lookups: &AtomicU64) {
    let revoked = jti_token(ISS, "revoked-jti");
    let revoked_sub = sub_token(ISS, "mallory", Some(T0 - 1));
    let valid = jti_token(ISS, "valid-jti");
    let valid_sub = sub_token(ISS, "mallory", Some(T0 + 1));
    let mut n = 0u64;
    while !done.load(Ordering::Relaxed) || n < 1000 {
        let hit = d.is_revoked(&revoked).expect("revoked token accepted");
        assert_eq!(&*hit.event_id, "target");
        assert!(
            d.is_revoked(&revoked_sub).is_some(),
            "revoked subject accepted"
        );
        assert_eq!(d.is_revoked(&valid), None, "valid token rejected");
        assert_eq!(d.is_revoked(&valid_sub), None, "valid subject rejected");
        n += 1;
    }
    lookups.fetch_add(n, Ordering::Relaxed);
}

/// Tells the readers to stop when dropped, also when the writer panics (otherwise
/// the scope would wait forever for readers that never stop).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn fixed_rules() -> [Event; 2] {
    [
        revoke_event("target", RuleKind::Jti, ISS, &["revoked-jti"]),
        revoke_event("sub", RuleKind::Subject, ISS, &["mallory"]),
    ]
}

#[test]
fn applies_and_lifts_stay_exact_while_rebuilds_run_concurrently() {
    let (d, clock) = denylist();
    for event in fixed_rules() {
        d.apply(&event);
    }
    let done = AtomicBool::new(false);
    let lookups = AtomicU64::new(0);
    let rebuilds = AtomicU64::new(0);
    let mut kept: Vec<String> = Vec::new();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| hammer(&d, &done, &lookups));
        }
        let _stop = StopOnDrop(&done);
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                d.prune_and_rebuild();
                rebuilds.fetch_add(1, Ordering::Relaxed);
                std::thread::yield_now();
            }
        });
        for round in 0..300i64 {
            let targets: Vec<String> = (0..20).map(|t| format!("r{round}-t{t}")).collect();
            let refs: Vec<&str> = targets.iter().map(String::as_str).collect();
            let id = format!("churn-{round}");
            assert_eq!(
                d.apply(&revoke_event(&id, RuleKind::Jti, ISS, &refs)).added,
                20
            );
            // Visible the moment apply returns, whatever the rebuild is doing.
            for t in &refs {
                let hit = d.is_revoked(&jti_token(ISS, t));
                assert_eq!(hit.map(|r| r.event_id.to_string()), Some(id.clone()));
            }
            // Short-lived rules, so that rebuilds really drop things.
            d.apply(&with_expiry(
                revoke_event(&format!("short-{round}"), RuleKind::Jti, ISS, &["x"]),
                T0 + round / 10 + 2 - EXPIRY_GRACE_SECS,
            ));
            if round % 3 == 0 {
                d.apply(&lift_event(&format!("lift-{round}"), &[&id]));
                for t in &refs {
                    assert_eq!(d.is_revoked(&jti_token(ISS, t)), None, "lift not immediate");
                }
            } else {
                kept.extend(targets);
            }
            if round % 10 == 0 {
                clock.advance_ms(1000);
            }
        }
    });
    assert!(rebuilds.load(Ordering::Relaxed) > 0);
    assert!(lookups.load(Ordering::Relaxed) >= 2000);
    // Past every short-lived rule.
    clock.advance_ms(10_000);
    d.prune_and_rebuild();
    for t in &kept {
        assert!(d.is_revoked(&jti_token(ISS, t)).is_some(), "{t} lost");
    }
    assert_eq!(d.is_revoked(&jti_token(ISS, "r0-t0")), None, "lifted");
    assert_eq!(d.is_revoked(&jti_token(ISS, "x")), None, "expired");
    assert_eq!(d.stats().entries, kept.len() as u64 + 2);
}

#[test]
fn readers_see_old_or_new_content_across_replacements() {
    let (d, _) = denylist();
    for event in fixed_rules() {
        d.apply(&event);
    }
    let done = AtomicBool::new(false);
    let lookups = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| hammer(&d, &done, &lookups));
        }
        let _stop = StopOnDrop(&done);
        for round in 0..40 {
            let targets: Vec<String> = (0..500).map(|t| format!("r{round}-t{t}")).collect();
            let refs: Vec<&str> = targets.iter().map(String::as_str).collect();
            let mut file = fixed_rules().to_vec();
            file.push(revoke_event(
                &format!("bulk-{round}"),
                RuleKind::Jti,
                ISS,
                &refs,
            ));
            assert_eq!(d.replace_all(&file).added, 502);
            if round % 4 == 0 {
                d.apply(&revoke_event(
                    &format!("extra-{round}"),
                    RuleKind::Jti,
                    ISS,
                    &["e"],
                ));
                d.prune_and_rebuild();
            }
        }
    });
    assert!(lookups.load(Ordering::Relaxed) >= 2000);
}

#[test]
fn stats_account_for_memory() {
    let (d, _) = denylist();
    let targets: Vec<String> = (0..1000).map(|t| format!("jti-{t:06}")).collect();
    let refs: Vec<&str> = targets.iter().map(String::as_str).collect();
    d.apply(&revoke_event("bulk", RuleKind::Jti, ISS, &refs));
    let recent = d.stats();
    assert_eq!(recent.entries, 1000);
    assert_eq!(
        recent.bloom_bytes, 0,
        "recent rules are not in the Bloom filter yet"
    );
    d.prune_and_rebuild();
    let built = d.stats();
    assert_eq!(built.entries, 1000);
    // Sized for expected_entries (1000) at 0.1 %: ~1.8 bytes per entry.
    assert!((1700..2000).contains(&built.bloom_bytes), "{built:?}");
    // 20 bytes per rule plus the filter plus a little for the event.
    assert!(
        built.heap_bytes >= 20 * 1000 + built.bloom_bytes,
        "{built:?}"
    );
    assert!(built.heap_bytes < 32 * 1000, "{built:?}");
}

#[test]
fn bucket_directory_brackets_every_fingerprint() {
    let (d, _) = denylist();
    for n in [0usize, 1, 7, 8, 9, 100, 5000] {
        let mut fps: Vec<Fp> = (0..n)
            .map(|i| d.fingerprints.of(RuleKind::Jti, ISS, &i.to_string()))
            .collect();
        fps.sort_unstable();
        let (directory, bits) = Base::directory(&fps);
        assert_eq!(directory.len(), (1 << bits) + 1);
        assert_eq!(directory[0], 0);
        assert_eq!(*directory.last().unwrap() as usize, n);
        assert!(directory.windows(2).all(|w| w[0] <= w[1]));
        if n >= 16 {
            assert!(n / (1 << bits) <= 8, "n={n} bits={bits}");
        }
        for (i, fp) in fps.iter().enumerate() {
            let b = Base::bucket(bits, *fp);
            assert!((directory[b] as usize..directory[b + 1] as usize).contains(&i));
        }
    }
}

#[test]
fn denylist_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Denylist>();
    assert_send_sync::<Revocation>();
}

// --- A replacement in parts against applying the same events one by one. ---

/// Events with everything a snapshot or a file may hold: several kinds and issuers,
/// repeated targets within an event and across events, repeated event ids, expired
/// revocations, lifts of earlier (and unknown) events, shared and distinct reasons.
fn random_events(r: &mut Rng, n: usize) -> Vec<Event> {
    let kinds = [
        RuleKind::Jti,
        RuleKind::Subject,
        RuleKind::Session,
        RuleKind::Key,
        RuleKind::Issuer,
    ];
    let issuers = [ISS, OTHER_ISS, SHORT_ISS];
    (0..n)
        .map(|i| {
            let id = format!("ev-{}", r.below(n * 9 / 10 + 1));
            if i > 0 && r.below(10) == 0 {
                let lifted: Vec<String> = (0..=r.below(3))
                    .map(|_| format!("ev-{}", r.below(n)))
                    .collect();
                let lifted: Vec<&str> = lifted.iter().map(String::as_str).collect();
                return lift_event(&format!("lift-{i}"), &lifted);
            }
            let kind = kinds[r.below(kinds.len())];
            let targets: Vec<String> = (0..=r.below(3))
                .map(|_| format!("t{}", r.below(40)))
                .collect();
            let targets: Vec<&str> = if kind == RuleKind::Issuer {
                Vec::new()
            } else {
                targets.iter().map(String::as_str).collect()
            };
            let mut event = revoke_event(&id, kind, issuers[r.below(3)], &targets);
            event.reason = format!("reason {}", r.below(4));
            match r.below(8) {
                // Long expired: adds nothing.
                0 => with_expiry(event, T0 - 10 * DEFAULT_LIFETIME),
                1 => with_expiry(event, T0 + 60),
                _ => event,
            }
        })
        .collect()
}

#[test]
fn a_replacement_in_parts_equals_applying_the_events_one_by_one() {
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    for round in 0..40 {
        let n = 1 + r.below(120);
        let events = random_events(&mut r, n);
        let (one_by_one, _) = denylist();
        let mut want = Applied::default();
        for event in &events {
            let a = one_by_one.apply(event);
            want.added += a.added;
            want.lifted += a.lifted;
            want.duplicate |= a.duplicate;
        }
        let parts = 1 + r.below(5);
        let (replaced, _) = denylist();
        let chunk = events.len().div_ceil(parts);
        let split: Vec<Vec<Result<EventRef<'_>, Infallible>>> = events
            .chunks(chunk)
            .map(|c| c.iter().map(|e| Ok(e.view())).collect())
            .collect();
        let Ok(got) = replaced.try_replace_all(split, events.len());
        assert_eq!(got, want, "round {round}, {parts} parts");

        for d in [&one_by_one, &replaced] {
            d.prune_and_rebuild();
        }
        assert_eq!(
            one_by_one.stats().entries,
            replaced.stats().entries,
            "round {round}"
        );
        for issuer in [ISS, OTHER_ISS, SHORT_ISS] {
            for t in 0..40 {
                let target = format!("t{t}");
                let token = TokenFacts {
                    issuer,
                    jti: Some(&target),
                    subject: Some(&target),
                    session: Some(&target),
                    kid: Some(&target),
                    issued_at: Some(T0 - 10),
                };
                // Which of two events revoking the same target answers is not
                // specified; whether and by which kind of rule is.
                let kind = |d: &Denylist| {
                    revoked_by(d, &token);
                    d.is_revoked(&token).map(|r| r.kind)
                };
                assert_eq!(
                    kind(&replaced),
                    kind(&one_by_one),
                    "round {round}, {issuer} {target}"
                );
            }
        }
        // Both remember the same event ids.
        for event in &events {
            assert_eq!(
                replaced.apply(event).duplicate,
                one_by_one.apply(event).duplicate,
                "round {round}, {}",
                event.event_id
            );
        }
    }
}

#[test]
fn the_first_error_in_event_order_stops_a_replacement_in_parts() {
    let (d, _) = denylist();
    let events: Vec<Event> = (0..6)
        .map(|i| revoke_event(&format!("ev-{i}"), RuleKind::Jti, ISS, &[&format!("j{i}")]))
        .collect();
    let part =
        |range: std::ops::Range<usize>, bad: Option<usize>| -> Vec<Result<EventRef<'_>, usize>> {
            range
                .map(|i| {
                    if Some(i) == bad {
                        Err(i)
                    } else {
                        Ok(events[i].view())
                    }
                })
                .collect()
        };
    // Errors in the second and third parts: the second's is the first.
    let parts = vec![part(0..2, None), part(2..4, Some(3)), part(4..6, Some(4))];
    assert_eq!(d.try_replace_all(parts, 6), Err(3));
    assert_eq!(d.stats().entries, 0);
    let parts = vec![part(0..3, None), part(3..6, None)];
    assert_eq!(d.try_replace_all(parts, 6).map(|a| a.added), Ok(6));
    assert_eq!(
        revoked_by(&d, &jti_token(ISS, "j5")).as_deref(),
        Some("ev-5")
    );
}

#[test]
fn the_bucket_sort_of_rules_equals_a_comparison_sort() {
    let mut r = Rng(7);
    for (n, skewed) in [(10, false), (5000, false), (100_000, false), (20_000, true)] {
        let rules: Vec<(Fp, u32)> = (0..n)
            .map(|i| {
                // Skewed: every fingerprint in one bucket, the slow but correct case.
                let hi = if skewed { r.next() % 3 } else { r.next() };
                (
                    Fp {
                        hi,
                        lo: r.next() % 5,
                    },
                    i,
                )
            })
            .collect();
        let mut want = rules.clone();
        want.sort_by_key(|rule| rule.0);
        let mut got = rules;
        sort_rules(&mut got);
        let keys = |v: &[(Fp, u32)]| v.iter().map(|rule| rule.0).collect::<Vec<_>>();
        assert_eq!(keys(&got), keys(&want), "{n} rules");
        // Every rule is still there once (equal fingerprints may swap).
        let mut ids: Vec<u32> = got.iter().map(|rule| rule.1).collect();
        ids.sort_unstable();
        assert!(ids.iter().copied().eq(0..n), "{n} rules");
    }
}
