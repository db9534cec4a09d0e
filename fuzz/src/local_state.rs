//! `local_state`: the local state reader (`state::file::check`, the state file with its
//! journal) on arbitrary bytes.
//!
//! Input: a mode byte (modulo 2), the state file's length (u16, little-endian, cut to
//! what is left), the state file, then the journal (none when nothing is left). Mode 0
//! takes both as they are. Mode 1 seals them as the sidecar would, so that their
//! contents are read behind valid digests, where the fuzzer could never get alone: the
//! state's SHA-256 is appended, and the rest is a list of record bodies (each a u16
//! length and the body) that become a journal following that state, each record with
//! its length and its SHA-256 link.
//!
//! Invariants: nothing panics; a state that is accepted holds as many events as it
//! says, each of which the live path (prost, [`Event::from_proto`]) decodes, so a local
//! state never applies what the stream refuses; it applies to a denylist; and the
//! journal only ever adds: the state read without it is accepted too, at a sequence and
//! an event count no higher.

use aws_lc_rs::digest::{Context, SHA256, digest};
use denylist_proto::events::{Action, Event, Revoke, RuleKind};
use denylist_proto::pb;
use denylist_sidecar::clock::{ManualClock, SharedClock};
use denylist_sidecar::config::NatsConfig;
use denylist_sidecar::denylist::{Denylist, DenylistSettings};
use denylist_sidecar::state::file::{self, Checked};
use denylist_sidecar::state::{Identity, Position, journal};
use prost::Message as _;

use crate::fixture::{NOW_MS, keys};
use crate::{Outcome, Seed};

/// The journal's magic and version, as `sidecar/src/state/journal.rs` writes them.
const JOURNAL_HEAD: &[u8; 12] = b"DLJRNL\0\0\x01\0\0\0";

fn identity() -> Identity {
    Identity::of(&NatsConfig {
        trusted_publishers: vec![keys().publisher_public_key()],
        ..NatsConfig::default()
    })
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    digest(&SHA256, bytes)
        .as_ref()
        .try_into()
        .expect("32 bytes")
}

/// The state file's bytes and the journal's, from one input (see the module docs).
fn files(data: &[u8]) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let (&mode, rest) = data.split_first()?;
    let (length, rest) = rest.split_first_chunk::<2>()?;
    let length = usize::from(u16::from_le_bytes(*length)).min(rest.len());
    let (state, rest) = rest.split_at(length);
    if mode % 2 == 0 {
        return Some((state.to_vec(), (!rest.is_empty()).then(|| rest.to_vec())));
    }
    let seal = sha256(state);
    let mut sealed = state.to_vec();
    sealed.extend_from_slice(&seal);
    if rest.is_empty() {
        return Some((sealed, None));
    }
    let mut journal = JOURNAL_HEAD.to_vec();
    journal.extend_from_slice(&seal);
    let (mut previous, mut rest) = (seal, rest);
    while let Some((length, tail)) = rest.split_first_chunk::<2>() {
        let length = usize::from(u16::from_le_bytes(*length)).min(tail.len());
        let (body, tail) = tail.split_at(length);
        let mut link = Context::new(&SHA256);
        link.update(&previous);
        link.update(body);
        previous = link.finish().as_ref().try_into().expect("32 bytes");
        journal.extend_from_slice(&u32::try_from(length).expect("u16").to_le_bytes());
        journal.extend_from_slice(body);
        journal.extend_from_slice(&previous);
        rest = tail;
    }
    Some((sealed, Some(journal)))
}

/// Runs one input; panics if an invariant breaks.
pub fn run(data: &[u8]) -> Outcome {
    let Some((state, journal)) = files(data) else {
        return Outcome::Refused;
    };
    let identity = identity();
    let checked = match file::check(state.clone(), journal.as_deref(), &identity) {
        Ok(checked) => checked,
        Err(e) => {
            let _ = e.to_string();
            return Outcome::Refused;
        }
    };
    check_events(&checked);
    let alone = file::check(state, None, &identity).expect("the state without its journal");
    assert_eq!(alone.journal_records, 0);
    assert!(alone.position.sequence <= checked.position.sequence);
    assert!(alone.event_count <= checked.event_count);
    assert_eq!(
        alone.position.stream_created_unix_nanos, checked.position.stream_created_unix_nanos,
        "a journal never moves to another stream"
    );
    let clock: SharedClock = ManualClock::new(NOW_MS);
    let denylist = Denylist::new(DenylistSettings::default(), clock);
    checked
        .apply_to(&denylist)
        .expect("a checked state applies");
    Outcome::Accepted
}

fn check_events(checked: &Checked) {
    let mut count = 0u64;
    for record in checked.records() {
        let live = pb::RevocationEvent::decode(record)
            .map_err(|e| e.to_string())
            .and_then(|ev| Event::from_proto(ev).map_err(|e| e.to_string()));
        assert!(
            live.is_ok(),
            "a local state event the live path refuses: {live:?}"
        );
        count += 1;
    }
    assert_eq!(count, checked.event_count, "the events it says it holds");
}

fn revoke(id: &str, jti: &str) -> Event {
    Event {
        event_id: id.into(),
        action: Action::Revoke(Revoke {
            kind: RuleKind::Jti,
            issuer: "https://idp".into(),
            targets: vec![jti.into()],
            cutoff: 0,
            expires_at: None,
        }),
        reason: "seed".into(),
        actor: "fuzz".into(),
        created_at_ms: NOW_MS,
    }
}

fn position(sequence: u64) -> Position {
    Position {
        stream_created_unix_nanos: 1_700_000_000_123_456_789,
        sequence,
        last_heard_unix_ms: NOW_MS,
    }
}

fn encoded(events: &[Event]) -> Vec<Box<[u8]>> {
    events
        .iter()
        .map(|e| e.to_proto().encode_to_vec().into_boxed_slice())
        .collect()
}

/// A mode-0 input: the two files as they are.
fn raw(state: &[u8], journal: &[u8]) -> Vec<u8> {
    let mut input = vec![0];
    input.extend_from_slice(&u16::try_from(state.len()).expect("small").to_le_bytes());
    input.extend_from_slice(state);
    input.extend_from_slice(journal);
    input
}

/// The committed seeds: a state with a journal of two records as the sidecar writes
/// them, the same for the harness to seal, and near misses.
pub fn seeds() -> Vec<Seed> {
    // Written by the sidecar's own writer, in a directory of this process's.
    let dir = std::env::temp_dir().join(format!("denylist-fuzz-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let identity = identity();
    let events = encoded(&[revoke("e1", "j1"), revoke("e2", "j2")]);
    let written = file::write_state(
        dir.as_path(),
        &identity,
        &position(2),
        NOW_MS,
        events.iter().map(|e| &**e),
    )
    .expect("write a state");
    let mut appender = journal::Appender::create(dir.as_path(), written.seal).expect("a journal");
    appender
        .append(&position(3), NOW_MS + 1, &encoded(&[revoke("e3", "j3")]))
        .expect("append");
    let lift = Event {
        event_id: "l1".into(),
        action: Action::Lift {
            event_ids: vec!["e1".into()],
        },
        reason: String::new(),
        actor: "fuzz".into(),
        created_at_ms: NOW_MS + 2,
    };
    appender
        .append(&position(5), NOW_MS + 2, &encoded(&[lift]))
        .expect("append");
    let state = std::fs::read(dir.as_path().join(file::STATE_FILE)).expect("the state");
    let journal = std::fs::read(dir.as_path().join(journal::JOURNAL_FILE)).expect("the journal");
    let _ = std::fs::remove_dir_all(&dir);

    // Mode 1: the state without its seal, and the journal's record bodies.
    let unsealed = &state[..state.len() - 32];
    let mut sealed = vec![1];
    sealed.extend_from_slice(&u16::try_from(unsealed.len()).expect("small").to_le_bytes());
    sealed.extend_from_slice(unsealed);
    let mut at = JOURNAL_HEAD.len() + 32;
    while at < journal.len() {
        let length = u32::from_le_bytes(journal[at..at + 4].try_into().expect("4 bytes")) as usize;
        let body = &journal[at + 4..at + 4 + length];
        sealed.extend_from_slice(&u16::try_from(length).expect("small").to_le_bytes());
        sealed.extend_from_slice(body);
        at += 4 + length + 32;
    }

    let mut flipped = state.clone();
    flipped[40] ^= 1;
    let mut other_stream = journal.clone();
    other_stream[JOURNAL_HEAD.len()] ^= 1;
    vec![
        ("state-journal", raw(&state, &journal)),
        ("state-alone", raw(&state, &[])),
        ("journal-cut", raw(&state, &journal[..journal.len() - 7])),
        ("journal-other-state", raw(&state, &other_stream)),
        ("state-flipped", raw(&flipped, &journal)),
        ("sealed-by-harness", sealed),
    ]
}
