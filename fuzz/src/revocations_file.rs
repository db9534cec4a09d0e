//! `revocations_file`: the standalone revocations file parser
//! ([`parse_file`]) on arbitrary text.
//!
//! Invariants: nothing panics; an accepted file's events are valid, their ids unique,
//! one per non-blank, non-comment line; and each event means the same when it travels
//! as protobuf (what a publisher would sign for NATS): encoded and decoded by the live
//! path it is the same event.

use std::collections::HashSet;
use std::path::Path;

use denylist_proto::events::Event;
use denylist_proto::pb;
use denylist_sidecar::standalone::parse_file;
use prost::Message as _;

use crate::{Outcome, Seed};

/// Runs one input; panics if an invariant breaks.
pub fn run(data: &[u8]) -> Outcome {
    let Ok(text) = std::str::from_utf8(data) else {
        // The file is read with `read_to_string`: not UTF-8 never reaches the parser.
        return Outcome::Refused;
    };
    let path = Path::new("revocations.jsonl");
    let events = match parse_file(path, text) {
        Ok(events) => events,
        Err(e) => {
            // The message names the file and line; formatting it must not panic.
            let _ = e.to_string();
            return Outcome::Refused;
        }
    };
    let lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    assert_eq!(events.len(), lines, "one event per line");
    let mut ids = HashSet::new();
    for event in &events {
        assert_eq!(event.validate(), Ok(()), "{event:?}");
        assert!(
            ids.insert(&event.event_id),
            "duplicate id {:?}",
            event.event_id
        );
        let wire = event.to_proto().encode_to_vec();
        let live = pb::RevocationEvent::decode(wire.as_slice())
            .map_err(|e| e.to_string())
            .and_then(|ev| Event::from_proto(ev).map_err(|e| e.to_string()));
        // The file and the wire mean the same event (an explicit zero cut-off, which
        // meant the epoch in a file and "unset" on the wire, is refused by
        // `Event::from_json` since this target found it; `seed-zero-cutoff` replays it).
        assert_eq!(live.as_ref(), Ok(event), "the file and the wire differ");
    }
    Outcome::Accepted
}

/// The committed seeds: a valid file of every kind, and near misses.
pub fn seeds() -> Vec<Seed> {
    let valid = r#"# revocations
{"event_id":"sec-1","action":"revoke","kind":"jti","issuer":"https://auth.example.com","targets":["3f2a6c1e"],"reason":"leaked","created_at_ms":1795000060000}
{"event_id":"sec-2","action":"revoke","kind":"subject","issuer":"https://auth.example.com","targets":["user-8f14"],"cutoff":1795000000,"created_at_ms":1795000060000}

{"event_id":"sec-3","action":"revoke","kind":"session","issuer":"https://auth.example.com","targets":["s-1","s-2"],"expires_at":1796000000,"created_at_ms":1795000060000}
{"event_id":"sec-4","action":"revoke","kind":"key","issuer":"https://auth.example.com","targets":["kid-2024"],"actor":"secops","created_at_ms":1795000060000}
{"event_id":"sec-5","action":"revoke","kind":"issuer","issuer":"https://auth.example.com","created_at_ms":1795000060000}
  {"event_id":"sec-6","action":"lift","targets":["sec-1"],"created_at_ms":1795000070000}
"#;
    vec![
        ("valid", valid.as_bytes().to_vec()),
        (
            "duplicate-id",
            [valid, valid.lines().nth(1).unwrap_or_default()]
                .join("\n")
                .into_bytes(),
        ),
        (
            "unknown-field",
            br#"{"event_id":"a","action":"lift","targets":["b"],"created_at_ms":1,"extra":1}"#
                .to_vec(),
        ),
        (
            "bad-kind",
            br#"{"event_id":"a","action":"revoke","kind":"user","issuer":"i","targets":["b"],"created_at_ms":1}"#
                .to_vec(),
        ),
        (
            "control-character",
            "{\"event_id\":\"a\",\"action\":\"revoke\",\"kind\":\"jti\",\"issuer\":\"i\",\"targets\":[\"b\\u0007\"],\"created_at_ms\":1}\r\n"
                .as_bytes()
                .to_vec(),
        ),
        (
            "zero-cutoff",
            br#"{"event_id":"a","action":"revoke","kind":"subject","issuer":"i","targets":["b"],"cutoff":0,"created_at_ms":1795000060000}"#
                .to_vec(),
        ),
    ]
}
