use super::*;

#[test]
fn json_revoke_round_trips_through_proto() {
    let line = r#"{"event_id":"ev-1","action":"revoke","kind":"subject","issuer":"https://idp","targets":["alice"],"reason":"takeover","actor":"sec","created_at_ms":1700000000123}"#;
    let ev = Event::from_json(line).unwrap();
    let Action::Revoke(r) = &ev.action else {
        panic!("expected a revocation")
    };
    assert_eq!(r.kind, RuleKind::Subject);
    // No cut-off given: a subject rule cuts off at the creation time.
    assert_eq!(r.cutoff, 1_700_000_000);
    assert_eq!(Event::from_proto(ev.to_proto()).unwrap(), ev);
}

#[test]
fn json_rejects_unknown_fields_and_names_bad_ones() {
    let err = Event::from_json(r#"{"event_id":"e","action":"revoke","kind":"jti","issuer":"i","targets":["t"],"tagrets":[]}"#).unwrap_err();
    assert!(matches!(err, EventError::Decode(m) if m.contains("tagrets")));
    let err = Event::from_json(
        r#"{"event_id":"e","action":"revoke","kind":"jti","issuer":"","targets":["t"],"created_at_ms":1}"#,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        EventError::Invalid {
            field: "issuer",
            ..
        }
    ));
    let err =
        Event::from_json(r#"{"event_id":"bad id","action":"lift","targets":["x"]}"#).unwrap_err();
    assert!(matches!(
        err,
        EventError::Invalid {
            field: "event_id",
            ..
        }
    ));
    let err = Event::from_json(
        r#"{"event_id":"e","action":"revoke","kind":"issuer","issuer":"i","targets":["t"],"created_at_ms":1}"#,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        EventError::Invalid {
            field: "targets",
            ..
        }
    ));
    // Without a creation time, the default cut-off and expiry would lie in 1970 and the
    // rules would be dropped on arrival: refused instead, naming the field.
    for line in [
        r#"{"event_id":"e","action":"revoke","kind":"subject","issuer":"i","targets":["alice"]}"#,
        r#"{"event_id":"e","action":"revoke","kind":"jti","issuer":"i","targets":["t"],"created_at_ms":0}"#,
    ] {
        let err = Event::from_json(line).unwrap_err();
        assert!(
            matches!(
                err,
                EventError::Invalid {
                    field: "created_at_ms",
                    ..
                }
            ),
            "{line}: {err:?}"
        );
    }
}

#[test]
fn proto_rejects_unspecified_action_and_kind() {
    let ev = pb::RevocationEvent {
        event_id: "e".into(),
        ..Default::default()
    };
    assert!(matches!(
        Event::from_proto(ev.clone()),
        Err(EventError::Invalid {
            field: "action",
            ..
        })
    ));
    let ev = pb::RevocationEvent {
        action: pb::EventAction::Revoke as i32,
        issuer: "i".into(),
        targets: vec!["t".into()],
        ..ev
    };
    assert!(matches!(
        Event::from_proto(ev),
        Err(EventError::Invalid { field: "kind", .. })
    ));
}

/// A file's explicit `"cutoff": 0` would mean the epoch here but "unset" (the creation
/// time) once published as protobuf; it is refused, naming the field (found by the
/// `revocations_file` fuzz target).
#[test]
fn json_refuses_an_explicit_zero_cutoff_on_a_cutoff_rule() {
    for kind in ["subject", "issuer"] {
        let targets = if kind == "issuer" {
            "[]"
        } else {
            r#"["alice"]"#
        };
        let line = format!(
            r#"{{"event_id":"e","action":"revoke","kind":"{kind}","issuer":"https://idp","targets":{targets},"cutoff":0,"created_at_ms":1700000000000}}"#
        );
        let err = Event::from_json(&line).unwrap_err();
        assert!(
            matches!(
                err,
                EventError::Invalid {
                    field: "cutoff",
                    ..
                }
            ),
            "{kind}: {err:?}"
        );
        // Leaving it out still means the creation time.
        let line = line.replace(r#""cutoff":0,"#, "");
        let ev = Event::from_json(&line).unwrap();
        let Action::Revoke(r) = &ev.action else {
            panic!("a revocation")
        };
        assert_eq!(r.cutoff, 1_700_000_000, "{kind}");
    }
}
