use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;

use super::*;
use crate::clock::ManualClock;
use crate::denylist::{Denylist, DenylistSettings, TokenFacts};
use crate::events::{Action, Event, Revoke, RuleKind};

const T0_MS: i64 = 1_700_000_000_000;
const T0: i64 = T0_MS / 1000;
const ISS: &str = "https://issuer.example";
const OTHER_ISS: &str = "https://other.example";

fn key(n: u64) -> WatchKey {
    WatchKey::new(n, !n)
}

/// Whether a wake-up is pending: `notify_one` leaves a permit that the next `woken()`
/// consumes on its first poll, so this needs no waiting and cannot race.
fn was_woken(watcher: &Watcher) -> bool {
    watcher.woken().now_or_never().is_some()
}

#[test]
fn a_wake_reaches_only_the_watchers_of_its_keys() {
    let registry = Arc::new(WatchRegistry::new());
    let a = registry.register([key(1), key(2)]);
    let b = registry.register([key(3)]);
    let c = registry.register([key(2), key(4)]);
    assert_eq!(registry.watchers(), 3);
    assert_eq!(registry.keys(), 4);

    assert_eq!(registry.wake([key(2)]), 2);
    assert!(was_woken(&a));
    assert!(!was_woken(&b), "key 3 was not woken");
    assert!(was_woken(&c));
    // One wake-up is consumed once.
    assert!(!was_woken(&a));

    assert_eq!(registry.wake([key(99)]), 0);
    assert!(!was_woken(&a) && !was_woken(&b) && !was_woken(&c));

    assert_eq!(
        registry.wake_all(),
        5,
        "a and c under two keys each, b under one"
    );
    assert!(was_woken(&a) && was_woken(&b) && was_woken(&c));
}

#[test]
fn a_wake_before_waiting_is_kept_and_several_count_as_one() {
    let registry = Arc::new(WatchRegistry::new());
    let w = registry.register([key(7)]);
    registry.wake([key(7)]);
    registry.wake([key(7), key(7)]);
    assert!(was_woken(&w), "the wake-up sent before waiting is not lost");
    assert!(
        !was_woken(&w),
        "several wake-ups coalesce into one re-check"
    );
}

#[test]
fn dropping_watchers_empties_the_registry() {
    let registry = Arc::new(WatchRegistry::new());
    let a = registry.register([key(1), key(2), key(2)]);
    assert_eq!(
        a.keys(),
        &[key(1), key(2)],
        "a duplicate key is registered once"
    );
    let b = registry.register([key(2)]);
    drop(a);
    assert_eq!((registry.watchers(), registry.keys()), (1, 1));
    // The survivor under the shared key is still woken.
    registry.wake([key(2)]);
    assert!(was_woken(&b));
    drop(b);
    assert_eq!((registry.watchers(), registry.keys()), (0, 0));
    assert_eq!(registry.wake([key(1), key(2)]), 0);
    assert_eq!(registry.wake_all(), 0);
}

#[tokio::test]
async fn a_waiting_watcher_is_woken() {
    let registry = Arc::new(WatchRegistry::new());
    let w = registry.register([key(5)]);
    let waiting = tokio::spawn(async move { w.woken().await });
    tokio::task::yield_now().await;
    registry.wake([key(5)]);
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("woken within the timeout")
        .expect("the task does not panic");
}

// ---- Through the denylist: which applied rules wake whom. ----

fn denylist() -> Denylist {
    Denylist::new(
        DenylistSettings {
            expected_entries: 1000,
            bloom_fp_rate: 0.001,
            max_lifetimes: HashMap::new(),
            default_max_lifetime: 86_400,
        },
        ManualClock::new(T0_MS),
    )
}

fn revoke(id: &str, kind: RuleKind, issuer: &str, targets: &[&str], cutoff: i64) -> Event {
    Event {
        event_id: id.to_owned(),
        action: Action::Revoke(Revoke {
            kind,
            issuer: issuer.to_owned(),
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            cutoff,
            expires_at: None,
        }),
        reason: "test".to_owned(),
        actor: "secops".to_owned(),
        created_at_ms: T0_MS,
    }
}

fn token<'a>(
    issuer: &'a str,
    jti: &'a str,
    sub: &'a str,
    sid: &'a str,
    kid: &'a str,
) -> TokenFacts<'a> {
    TokenFacts {
        issuer,
        jti: Some(jti),
        subject: Some(sub),
        session: Some(sid),
        kid: Some(kid),
        issued_at: Some(T0 - 10),
    }
}

#[test]
fn each_rule_kind_wakes_the_watchers_it_can_match_and_no_other() {
    let d = denylist();
    let alice = d.watch(&token(ISS, "j-alice", "alice", "s-alice", "k1"));
    let bob = d.watch(&token(ISS, "j-bob", "bob", "s-bob", "k2"));
    let elsewhere = d.watch(&token(OTHER_ISS, "j-alice", "alice", "s-alice", "k1"));
    assert_eq!(d.watchers().watchers(), 3);
    let woken = || [was_woken(&alice), was_woken(&bob), was_woken(&elsewhere)];

    let cases = [
        (
            revoke("e1", RuleKind::Jti, ISS, &["j-alice"], 0),
            [true, false, false],
        ),
        (
            revoke("e2", RuleKind::Session, ISS, &["s-bob"], 0),
            [false, true, false],
        ),
        (
            revoke("e3", RuleKind::Subject, ISS, &["alice"], T0),
            [true, false, false],
        ),
        (
            revoke("e4", RuleKind::Key, ISS, &["k2"], 0),
            [false, true, false],
        ),
        (
            revoke("e5", RuleKind::Jti, ISS, &["j-nobody"], 0),
            [false, false, false],
        ),
        (
            revoke("e6", RuleKind::Issuer, OTHER_ISS, &[], T0),
            [false, false, true],
        ),
        (
            revoke("e7", RuleKind::Jti, ISS, &["j-x", "j-alice", "j-bob"], 0),
            [true, true, false],
        ),
    ];
    for (event, expected) in cases {
        d.apply(&event);
        assert_eq!(woken(), expected, "after {}", event.event_id);
    }
    // A duplicate adds nothing and wakes no one; a lift only takes rules away.
    d.apply(&revoke("e1", RuleKind::Jti, ISS, &["j-bob"], 0));
    d.apply(&Event {
        event_id: "lift".into(),
        action: Action::Lift {
            event_ids: vec!["e1".into()],
        },
        reason: "mistake".into(),
        actor: "secops".into(),
        created_at_ms: T0_MS,
    });
    assert_eq!(woken(), [false, false, false]);
    // A replacement can add anything: everyone re-checks.
    d.replace_all(&[]);
    assert_eq!(woken(), [true, true, true]);

    drop((alice, bob, elsewhere));
    assert_eq!((d.watchers().watchers(), d.watchers().keys()), (0, 0));
}

#[test]
fn a_cut_off_rule_wakes_its_subject_and_the_re_check_decides() {
    let d = denylist();
    let facts = TokenFacts {
        issuer: ISS,
        subject: Some("carol"),
        issued_at: Some(T0),
        ..TokenFacts::default()
    };
    let w = d.watch(&facts);
    // Older than the token: woken, but not revoked.
    d.apply(&revoke("old", RuleKind::Subject, ISS, &["carol"], T0 - 60));
    assert!(was_woken(&w));
    assert!(d.is_revoked(&facts).is_none());
    d.apply(&revoke("new", RuleKind::Subject, ISS, &["carol"], T0 + 60));
    assert!(was_woken(&w));
    assert_eq!(
        d.is_revoked(&facts).expect("revoked").event_id.as_ref(),
        "new"
    );
}

/// The race the registry must not lose: a rule applied on another thread while a
/// watcher registers and makes its first check. Either that check finds the rule or
/// the watcher is woken afterwards; a watcher that neither finds nor is woken would
/// never be told.
#[test]
fn a_rule_applied_during_registration_is_found_or_wakes() {
    const ROUNDS: usize = 2000;
    let d = Arc::new(denylist());
    let jtis: Vec<String> = (0..ROUNDS).map(|i| format!("j-{i}")).collect();
    // Each round starts both sides together, so the apply lands anywhere in the
    // registration and check.
    let start = Arc::new(std::sync::Barrier::new(2));
    let applier = {
        let (d, start) = (Arc::clone(&d), Arc::clone(&start));
        let events: Vec<Event> = (0..ROUNDS)
            .map(|i| revoke(&format!("e-{i}"), RuleKind::Jti, ISS, &[&jtis[i]], 0))
            .collect();
        std::thread::spawn(move || {
            for event in &events {
                start.wait();
                d.apply(event);
            }
        })
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    for jti in &jtis {
        let facts = TokenFacts {
            issuer: ISS,
            jti: Some(jti),
            ..TokenFacts::default()
        };
        start.wait();
        let w = d.watch(&facts);
        if d.is_revoked(&facts).is_some() {
            continue;
        }
        runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), w.woken()).await })
            .unwrap_or_else(|_| panic!("{jti}: not revoked at the check and never woken"));
        assert!(d.is_revoked(&facts).is_some(), "{jti}: woken, so revoked");
    }
    applier.join().expect("the applier does not panic");
    assert_eq!(d.watchers().keys(), 0);
}
