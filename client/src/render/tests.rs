use super::*;
use crate::replay::Trust;
use denylist_proto::events::{Event, Revoke};

#[test]
fn tables_align_columns_and_trim_trailing_space() {
    let mut t = Table::new(["A", "LONGER", "C"]);
    t.row(vec!["x".into(), "y".into(), String::new()]);
    t.row(vec!["wide cell".into(), "z".into(), "end".into()]);
    assert_eq!(
        t.render(false),
        "A          LONGER  C\n\
         x          y\n\
         wide cell  z       end\n"
    );
}

#[test]
fn highlighted_rows_are_coloured_only_on_request() {
    let mut t = Table::new(["NAME"]);
    t.highlighted_row(vec!["late".into()]);
    assert_eq!(t.render(false), "NAME\nlate\n");
    assert_eq!(t.render(true), "NAME\n\x1b[1;31mlate\x1b[0m\n");
}

#[test]
fn long_cells_are_cut() {
    let mut t = Table::new(["X"]);
    t.row(vec!["a".repeat(100)]);
    let out = t.render(false);
    let row = out.lines().nth(1).unwrap();
    assert_eq!(row.chars().count(), MAX_CELL_CHARS);
    assert!(row.ends_with('…'));
}

fn member(name: &str, seq: u64, ready: bool, stale: bool) -> pb::FleetMember {
    pb::FleetMember {
        name: name.to_owned(),
        ready,
        stale,
        denylist_sequence: seq,
        denylist_age_ms: 120,
        entries: 7,
        version: "0.1.0".to_owned(),
    }
}

#[test]
fn the_fleet_table_sorts_by_sequence_and_names_laggards() {
    let members = vec![
        member("pod-c", 10, true, false),
        member("pod-a", 8, true, false),
        member("pod-b", 10, true, true),
        member("pod-d", 10, false, false),
    ];
    let out = fleet_table(&members, Some(10)).render(false);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{out}");
    assert!(
        lines[1].starts_with("pod-a") && lines[1].ends_with("behind 2"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("pod-b") && lines[2].ends_with("stale"),
        "{out}"
    );
    assert!(
        lines[3].starts_with("pod-c") && lines[3].ends_with("ok"),
        "{out}"
    );
    assert!(
        lines[4].starts_with("pod-d") && lines[4].ends_with("not ready"),
        "{out}"
    );

    let coloured = fleet_table(&members, Some(10)).render(true);
    assert_eq!(coloured.matches("\x1b[1;31m").count(), 3, "{coloured}");

    // Unknown stream position: only readiness and staleness count.
    assert_eq!(member_state(&members[1], None), "ok");

    let json = fleet_json(&members, 1, Some(10));
    assert_eq!(json["laggards"], 3);
    assert_eq!(json["undecodable_replies"], 1);
    assert_eq!(json["stream_last_sequence"], 10);
    assert_eq!(json["members"][0]["name"], "pod-a");
    assert_eq!(json["members"][0]["laggard"], true);
    assert_eq!(json["members"][2]["laggard"], false);
}

fn rule(kind: RuleKind, target: &str, expires_at: Option<i64>) -> LiveRule {
    LiveRule {
        event_id: "ev-1".to_owned(),
        sequence: 4,
        kind,
        issuer: "https://auth.example.com".to_owned(),
        target: target.to_owned(),
        cutoff: kind.has_cutoff().then_some(1_767_225_600),
        expires_at,
        reason: "account takeover".to_owned(),
        actor: "alice".to_owned(),
        created_at_ms: 1_767_225_600_000,
    }
}

#[test]
fn rules_render_as_table_and_json() {
    let rules = vec![
        rule(RuleKind::Subject, "user-1", None),
        rule(RuleKind::Key, "kid-1", None),
        rule(RuleKind::Issuer, "", Some(1_769_904_000)),
    ];
    let out = rules_table(&rules).render(false);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[1].contains("2026-01-01T00:00:00Z") && lines[1].contains("issuer max"),
        "{out}"
    );
    assert!(lines[2].contains("until lifted"), "{out}");
    assert!(lines[3].contains("2026-02-01T00:00:00Z"), "{out}");

    let json = rules_json(&rules);
    assert_eq!(json[0]["kind"], "subject");
    assert_eq!(json[0]["target"], "user-1");
    assert_eq!(json[0]["cutoff"], 1_767_225_600);
    assert_eq!(json[0]["expires_at"], Value::Null);
    assert_eq!(json[0]["created_at"], "2026-01-01T00:00:00Z");
    assert_eq!(json[2]["expires_at"], 1_769_904_000);
}

#[test]
fn history_renders_revocations_and_lifts() {
    let revoke = Event {
        event_id: "ev-1".to_owned(),
        action: Action::Revoke(Revoke {
            kind: RuleKind::Jti,
            issuer: "iss".to_owned(),
            targets: vec!["a".into(), "b".into(), "c".into()],
            cutoff: 0,
            expires_at: None,
        }),
        reason: String::new(),
        actor: "alice".to_owned(),
        created_at_ms: 1_767_225_600_000,
    };
    let lift = Event {
        event_id: "ev-2".to_owned(),
        action: Action::Lift {
            event_ids: vec!["ev-1".to_owned()],
        },
        reason: "false alarm".to_owned(),
        actor: "bob".to_owned(),
        created_at_ms: 1_767_225_601_000,
    };
    let stored: Vec<StoredEvent> = [revoke, lift]
        .into_iter()
        .enumerate()
        .map(|(i, event)| StoredEvent {
            sequence: i as u64 + 1,
            stored_at_ms: event.created_at_ms + 5,
            subject: denylist_proto::subjects::subject_for(&event),
            key_id: "0123456789abcdef".to_owned(),
            trust: Trust::Verified,
            event,
        })
        .collect();
    let out = history_table(&stored).render(false);
    assert!(out.contains("a (+2 more)"), "{out}");
    assert!(out.contains("2026-01-01T00:00:00.005Z"), "{out}");
    let lift_line = out.lines().nth(2).unwrap();
    assert!(
        lift_line.contains("lift")
            && lift_line.contains("ev-1")
            && lift_line.contains("false alarm"),
        "{out}"
    );

    let json = history_json(&stored);
    assert_eq!(json[0]["action"], "revoke");
    assert_eq!(json[0]["targets"], serde_json::json!(["a", "b", "c"]));
    assert_eq!(json[0]["cutoff"], Value::Null);
    assert_eq!(json[0]["signature"], "verified");
    assert_eq!(json[0]["subject"], "denylist.v1.events.jti");
    assert_eq!(json[1]["action"], "lift");
    assert_eq!(json[1]["targets"], serde_json::json!(["ev-1"]));
    assert_eq!(json[1].get("kind"), None);
}

#[test]
fn a_revoked_verify_answer_names_the_rule() {
    let answer = pb::VerifyResponse {
        valid: false,
        reason: pb::Reason::Revoked as i32,
        detail: "revoked by subject rule".to_owned(),
        claims: Some(pb::Claims {
            iss: "https://auth.example.com".to_owned(),
            sub: "user-1".to_owned(),
            aud: vec!["orders".to_owned()],
            exp: 1_767_229_200,
            iat: Some(1_767_225_600),
            jti: "j-1".to_owned(),
            kid: "k1".to_owned(),
            alg: "ES256".to_owned(),
            payload: Some(prost_types::Struct {
                fields: [
                    (
                        "sub".to_owned(),
                        prost_types::Value {
                            kind: Some(prost_types::value::Kind::StringValue("user-1".into())),
                        },
                    ),
                    (
                        "exp".to_owned(),
                        prost_types::Value {
                            kind: Some(prost_types::value::Kind::NumberValue(1_767_229_200.0)),
                        },
                    ),
                ]
                .into_iter()
                .collect(),
            }),
            ..pb::Claims::default()
        }),
        revocation: Some(pb::Revocation {
            kind: pb::RuleKind::Subject as i32,
            event_id: "ev-9".to_owned(),
            reason: "account takeover".to_owned(),
            issuer: "https://auth.example.com".to_owned(),
            target: "user-1".to_owned(),
            cutoff: 1_767_225_700,
            actor: "alice".to_owned(),
            created_at_ms: 1_767_225_700_000,
        }),
        denylist_sequence: 12,
        denylist_age_ms: 40,
        stale: false,
    };
    let text = verify_text(&answer);
    assert!(text.starts_with("verdict:"), "{text}");
    for needle in [
        "REJECTED",
        "REASON_REVOKED",
        "subject rule, event ev-9",
        "account takeover",
        "user-1",
        "2026-01-01T01:00:00Z",
        "40ms",
    ] {
        assert!(text.contains(needle), "{needle:?} missing in\n{text}");
    }
    let json = verify_json(&answer);
    assert_eq!(json["reason"], "REASON_REVOKED");
    assert_eq!(json["revocation"]["kind"], "subject");
    assert_eq!(json["claims"]["payload"]["exp"], 1_767_229_200_i64);
    assert_eq!(json["claims"]["payload"]["sub"], "user-1");
    assert_eq!(json["claims"]["iat"], 1_767_225_600);
}

#[test]
fn ages_are_short() {
    assert_eq!(format_age_ms(850), "850ms");
    assert_eq!(format_age_ms(12_345), "12.3s");
    assert_eq!(format_age_ms(250_000), "4m 10s");
}
