use std::time::Duration;

use denylist_proto::events::{Action, EXPIRY_GRACE_SECS, Event, Revoke, RuleKind};

use super::compose;

const NOW_MS: i64 = 1_800_000_000_000;
const NOW: i64 = NOW_MS / 1000;

fn revoke(id: &str, expires_at: Option<i64>, created_at_ms: i64) -> Event {
    Event {
        event_id: id.into(),
        action: Action::Revoke(Revoke {
            kind: RuleKind::Jti,
            issuer: "https://idp".into(),
            targets: vec![format!("jti-{id}")],
            cutoff: 0,
            expires_at,
        }),
        reason: String::new(),
        actor: "t".into(),
        created_at_ms,
    }
}

fn lift(id: &str, of: &[&str]) -> Event {
    Event {
        event_id: id.into(),
        action: Action::Lift {
            event_ids: of.iter().map(|s| (*s).to_owned()).collect(),
        },
        reason: String::new(),
        actor: "t".into(),
        created_at_ms: NOW_MS,
    }
}

fn ids(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.event_id.as_str()).collect()
}

#[test]
fn keeps_live_events_in_order_and_drops_repeats() {
    let out = compose(
        vec![revoke("a", None, NOW_MS), revoke("b", None, NOW_MS)],
        vec![
            revoke("a", Some(NOW + 60), NOW_MS),
            revoke("c", None, NOW_MS),
        ],
        NOW_MS,
        Duration::ZERO,
    );
    assert_eq!(ids(&out), ["a", "b", "c"]);
    // The first occurrence wins, as in a sidecar.
    assert_eq!(out[0], revoke("a", None, NOW_MS));
}

#[test]
fn drops_revocations_past_expiry_and_grace_only() {
    let out = compose(
        Vec::new(),
        vec![
            revoke("gone", Some(NOW - EXPIRY_GRACE_SECS), NOW_MS),
            revoke("in-grace", Some(NOW - EXPIRY_GRACE_SECS + 1), NOW_MS),
            revoke("derived", None, 0),
        ],
        NOW_MS,
        Duration::ZERO,
    );
    assert_eq!(ids(&out), ["in-grace", "derived"]);
}

#[test]
fn a_lift_stays_while_what_it_lifted_stays() {
    let out = compose(
        vec![
            revoke("a", None, NOW_MS),
            revoke("old", Some(NOW - 2 * EXPIRY_GRACE_SECS), NOW_MS),
        ],
        vec![
            lift("lift-a", &["a"]),
            lift("lift-old", &["old"]),
            lift("lift-unknown", &["nope"]),
            // A lift before its revocation is a no-op in a sidecar, so it goes.
            lift("lift-early", &["late"]),
            revoke("late", None, NOW_MS),
        ],
        NOW_MS,
        Duration::ZERO,
    );
    assert_eq!(ids(&out), ["a", "lift-a", "late"]);
}

#[test]
fn carried_events_older_than_the_streams_max_age_are_dropped() {
    let hour_ms = 3_600_000;
    let out = compose(
        vec![
            revoke("ancient", None, NOW_MS - 2 * hour_ms),
            revoke("recent", None, NOW_MS - hour_ms / 2),
        ],
        // New events come from the stream itself: whatever it still holds stays.
        vec![revoke("from-stream", None, NOW_MS - 3 * hour_ms)],
        NOW_MS,
        Duration::from_secs(3600),
    );
    assert_eq!(ids(&out), ["recent", "from-stream"]);
    let forever = compose(
        vec![revoke("ancient", None, 0)],
        Vec::new(),
        NOW_MS,
        Duration::ZERO,
    );
    assert_eq!(ids(&forever), ["ancient"]);
}
