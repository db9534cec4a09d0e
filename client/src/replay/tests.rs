use super::*;
use denylist_proto::envelope::SigningKey;
use denylist_proto::events::Revoke;

/// 2026-01-01T00:00:00Z
const NOW: i64 = 1_767_225_600;

fn revoke_event(id: &str, kind: RuleKind, targets: &[&str], expires_at: Option<i64>) -> Event {
    Event {
        event_id: id.to_owned(),
        action: Action::Revoke(Revoke {
            kind,
            issuer: "https://auth.example.com".to_owned(),
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            cutoff: if kind.has_cutoff() { NOW - 60 } else { 0 },
            expires_at,
        }),
        reason: format!("reason {id}"),
        actor: "alice".to_owned(),
        created_at_ms: (NOW - 60) * 1000,
    }
}

fn lift_event(id: &str, targets: &[&str]) -> Event {
    Event {
        event_id: id.to_owned(),
        action: Action::Lift {
            event_ids: targets.iter().map(|t| (*t).to_owned()).collect(),
        },
        reason: String::new(),
        actor: "bob".to_owned(),
        created_at_ms: NOW * 1000,
    }
}

fn stored(events: Vec<Event>) -> Vec<StoredEvent> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| StoredEvent {
            sequence: i as u64 + 1,
            stored_at_ms: event.created_at_ms,
            subject: denylist_proto::subjects::subject_for(&event),
            key_id: "k".to_owned(),
            trust: Trust::Unchecked,
            event,
        })
        .collect()
}

fn ids(rules: &[LiveRule]) -> Vec<(&str, &str)> {
    rules
        .iter()
        .map(|r| (r.event_id.as_str(), r.target.as_str()))
        .collect()
}

#[test]
fn revocations_expand_to_one_rule_per_target_and_lifts_withdraw_them() {
    let events = stored(vec![
        revoke_event("a", RuleKind::Jti, &["t1", "t2"], None),
        revoke_event("b", RuleKind::Subject, &["u1"], None),
        revoke_event("c", RuleKind::Issuer, &[], None),
        lift_event("l1", &["b", "never-published"]),
    ]);
    let rules = live_rules(&events, NOW, None);
    assert_eq!(ids(&rules), [("a", "t1"), ("a", "t2"), ("c", "")]);
    assert_eq!(rules[2].cutoff, Some(NOW - 60));
    assert_eq!(rules[0].cutoff, None);
    assert_eq!(rules[0].sequence, 1);
    assert_eq!(rules[2].sequence, 3);
}

#[test]
fn the_first_event_with_an_id_wins() {
    let mut second = revoke_event("a", RuleKind::Jti, &["other"], None);
    second.reason = "replayed".to_owned();
    let events = stored(vec![
        revoke_event("a", RuleKind::Jti, &["t1"], None),
        second,
    ]);
    let rules = live_rules(&events, NOW, None);
    assert_eq!(ids(&rules), [("a", "t1")]);
    assert_eq!(rules[0].sequence, 1);
}

#[test]
fn a_revocation_after_its_lift_is_in_force() {
    // Lifting an unknown id does nothing, as in the sidecar.
    let events = stored(vec![
        lift_event("l1", &["a"]),
        revoke_event("a", RuleKind::Jti, &["t1"], None),
    ]);
    assert_eq!(ids(&live_rules(&events, NOW, None)), [("a", "t1")]);
}

#[test]
fn a_lifted_id_published_again_stays_lifted() {
    // Sidecars keep a lifted id known and ignore its re-publication (a re-run bulk file,
    // a re-sent `--event-id`): `list` must not show it as in force again.
    let events = stored(vec![
        revoke_event("a", RuleKind::Jti, &["t1"], None),
        lift_event("l1", &["a"]),
        revoke_event("a", RuleKind::Jti, &["t1"], None),
    ]);
    assert_eq!(ids(&live_rules(&events, NOW, None)), []);
}

#[test]
fn expired_rules_are_dropped() {
    let events = stored(vec![
        revoke_event("past", RuleKind::Jti, &["t1"], Some(NOW - 1)),
        revoke_event("future", RuleKind::Jti, &["t2"], Some(NOW + 1)),
        revoke_event("derived-jti", RuleKind::Jti, &["t3"], None),
        revoke_event("derived-sub", RuleKind::Subject, &["u1"], None),
        revoke_event("key", RuleKind::Key, &["kid"], None),
    ]);
    // Without a lifetime, derived expiries are unknown: kept.
    assert_eq!(live_rules(&events, NOW, None).len(), 4);
    // Created/cut off 60 s ago: a 30 s lifetime has passed, a 2 min one has not.
    let short = live_rules(&events, NOW, Some(Duration::from_secs(30)));
    assert_eq!(ids(&short), [("future", "t2"), ("key", "kid")]);
    let long = live_rules(&events, NOW, Some(Duration::from_secs(120)));
    assert_eq!(long.len(), 4);
    assert_eq!(long[1].expires_at, Some(NOW + 60));
    assert_eq!(
        long[3].expires_at, None,
        "key rules never expire by themselves"
    );
}

#[test]
fn filters() {
    let events = stored(vec![
        revoke_event("a", RuleKind::Jti, &["t1", "t2"], None),
        revoke_event("b", RuleKind::Subject, &["u1"], None),
        lift_event("l1", &["zzz"]),
    ]);
    let rules = live_rules(&events, NOW, None);
    let subject_filter = Filter {
        kind: Some(KindFilter::Rule(RuleKind::Subject)),
        ..Filter::default()
    };
    assert_eq!(
        rules
            .iter()
            .filter(|r| subject_filter.matches_rule(r))
            .count(),
        1
    );
    let target_filter = Filter {
        target: Some("t2".to_owned()),
        ..Filter::default()
    };
    assert_eq!(
        ids(&rules
            .iter()
            .filter(|r| target_filter.matches_rule(r))
            .cloned()
            .collect::<Vec<_>>()),
        [("a", "t2")]
    );
    let wrong_issuer = Filter {
        issuer: Some("https://other".to_owned()),
        ..Filter::default()
    };
    assert!(!rules.iter().any(|r| wrong_issuer.matches_rule(r)));

    // History filters apply to whole events, lifts included.
    let lifts = Filter {
        kind: Some(KindFilter::Lift),
        ..Filter::default()
    };
    let matched: Vec<&str> = events
        .iter()
        .filter(|s| lifts.matches_event(&s.event))
        .map(|s| s.event.event_id.as_str())
        .collect();
    assert_eq!(matched, ["l1"]);
    assert!(target_filter.matches_event(&events[0].event));
    assert!(
        !wrong_issuer.matches_event(&events[2].event),
        "lifts carry no issuer"
    );
    assert!(Filter::default().matches_event(&events[2].event));
}

#[test]
fn kind_filter_parses() {
    assert_eq!("lift".parse::<KindFilter>(), Ok(KindFilter::Lift));
    assert_eq!(
        "Subject".parse::<KindFilter>(),
        Ok(KindFilter::Rule(RuleKind::Subject))
    );
    assert!(
        "sub"
            .parse::<KindFilter>()
            .unwrap_err()
            .contains("unknown kind")
    );
}

#[test]
fn open_checks_signatures_only_when_keys_are_given() {
    let (key, _) = SigningKey::generate().unwrap();
    let (other, _) = SigningKey::generate().unwrap();
    let event = revoke_event("a", RuleKind::Jti, &["t1"], None);
    let payload = key.sign(&event).encode_to_vec();
    let forged = other.sign(&event).encode_to_vec();

    let (key_id, opened, trust) = open(&payload, None).unwrap();
    assert_eq!(
        (key_id.as_str(), &opened, trust),
        (key.key_id(), &event, Trust::Unchecked)
    );

    let trusted = TrustedKeys::from_public_keys(&[key.public_key()]).unwrap();
    let (_, opened, trust) = open(&payload, Some(&trusted)).unwrap();
    assert_eq!((&opened, trust), (&event, Trust::Verified));
    let reason = open(&forged, Some(&trusted)).unwrap_err();
    assert!(reason.contains("untrusted"), "{reason}");
    // Unchecked mode still shows the forged event: that is why `list` says so.
    assert!(open(&forged, None).is_ok());

    assert!(
        open(b"\xff\xff garbage", None)
            .unwrap_err()
            .starts_with("not a signed event")
    );
}
