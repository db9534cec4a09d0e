use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tokio::sync::watch;

use super::keeper::Live;
use super::*;
use crate::clock::ManualClock;
use crate::config::{NatsConfig, StalenessPolicy};
use crate::denylist::{DenylistSettings, TokenFacts};
use crate::events::{Action, Revoke, RuleKind};

/// 2023-11-14T22:13:20Z, in milliseconds.
const T0_MS: i64 = 1_700_000_000_000;
const ISS: &str = "https://issuer.example";
const CREATED: i64 = 1_690_000_000_000_000_000;

fn revoke(id: &str, jti: &str) -> Event {
    Event {
        event_id: id.to_owned(),
        action: Action::Revoke(Revoke {
            kind: RuleKind::Jti,
            issuer: ISS.to_owned(),
            targets: vec![jti.to_owned()],
            cutoff: 0,
            expires_at: None,
        }),
        reason: "test".to_owned(),
        actor: "tests".to_owned(),
        created_at_ms: T0_MS,
    }
}

fn expiring(id: &str, jti: &str, expires_at: i64) -> Event {
    let mut event = revoke(id, jti);
    if let Action::Revoke(r) = &mut event.action {
        r.expires_at = Some(expires_at);
    }
    event
}

fn lift(id: &str, of: &[&str]) -> Event {
    Event {
        event_id: id.to_owned(),
        action: Action::Lift {
            event_ids: of.iter().map(|s| (*s).to_owned()).collect(),
        },
        reason: "mistake".to_owned(),
        actor: "tests".to_owned(),
        created_at_ms: T0_MS,
    }
}

fn denylist(clock: &Arc<ManualClock>) -> Denylist {
    Denylist::new(DenylistSettings::default(), clock.clone())
}

fn revoked(denylist: &Denylist, jti: &str) -> bool {
    denylist
        .is_revoked(&TokenFacts {
            issuer: ISS,
            jti: Some(jti),
            issued_at: Some(T0_MS / 1000),
            ..TokenFacts::default()
        })
        .is_some()
}

fn nats(stream: &str, keys: &[&str]) -> NatsConfig {
    NatsConfig {
        stream: stream.to_owned(),
        trusted_publishers: keys.iter().map(|k| (*k).to_owned()).collect(),
        ..NatsConfig::default()
    }
}

fn identity() -> Identity {
    Identity::of(&nats("DENYLIST", &["key-a", "key-b"]))
}

fn position(sequence: u64) -> Position {
    Position {
        stream_created_unix_nanos: CREATED,
        sequence,
        last_heard_unix_ms: T0_MS - 1000,
    }
}

fn encoded(events: &[Event]) -> Vec<Vec<u8>> {
    events
        .iter()
        .map(|e| e.to_proto().encode_to_vec())
        .collect()
}

fn write(dir: &Path, identity: &Identity, position: &Position, events: &[Event]) -> u64 {
    let records = encoded(events);
    file::write_state(
        dir,
        identity,
        position,
        T0_MS,
        records.iter().map(Vec::as_slice),
    )
    .expect("write")
    .bytes
}

fn read(dir: &Path, identity: &Identity) -> Result<Option<Checked>, StateError> {
    file::read_state(dir, identity, 1 << 20)
}

#[test]
fn a_written_state_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let events = [revoke("e1", "j1"), revoke("e2", "j2"), lift("e3", &["e2"])];
    let len = write(dir.path(), &identity(), &position(42), &events);
    let state = read(dir.path(), &identity()).unwrap().expect("a state");
    assert_eq!(state.position, position(42));
    assert_eq!(state.written_unix_ms, T0_MS);
    assert_eq!(state.event_count, 3);
    assert_eq!(state.file_bytes() as u64, len);
    let records: Vec<Vec<u8>> = state.records().map(<[u8]>::to_vec).collect();
    assert_eq!(records, encoded(&events));
    // Nothing is left behind but the state itself.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(file::STATE_FILE)]);
}

#[test]
fn no_state_file_is_none() {
    let dir = tempfile::tempdir().unwrap();
    assert!(read(dir.path(), &identity()).unwrap().is_none());
}

#[test]
fn every_flipped_byte_and_every_truncation_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &identity(),
        &position(7),
        &[revoke("e1", "j1"), revoke("e2", "j2")],
    );
    let path = dir.path().join(file::STATE_FILE);
    let good = std::fs::read(&path).unwrap();
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        std::fs::write(&path, &bad).unwrap();
        let e = read(dir.path(), &identity()).expect_err("a flipped byte");
        // The magic and version come before the digest: a flip there reads as another
        // format; anywhere else the digest catches it.
        if i >= 12 {
            assert!(matches!(e, StateError::Corrupt(_)), "byte {i}: {e}");
        }
    }
    for len in 0..good.len() {
        std::fs::write(&path, &good[..len]).unwrap();
        assert!(read(dir.path(), &identity()).is_err(), "truncated to {len}");
    }
}

#[test]
fn a_state_over_max_bytes_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let len = write(dir.path(), &identity(), &position(1), &[revoke("e1", "j1")]);
    let e = file::read_state(dir.path(), &identity(), len - 1).unwrap_err();
    assert_eq!(e.outcome(), "corrupt");
    assert!(e.to_string().contains("state.max_bytes"), "{e}");
}

#[test]
fn another_stream_trust_set_or_format_is_foreign() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &identity(), &position(1), &[revoke("e1", "j1")]);
    let other_stream = Identity::of(&nats("OTHER", &["key-a", "key-b"]));
    let other_keys = Identity::of(&nats("DENYLIST", &["key-a"]));
    for other in [other_stream, other_keys] {
        let e = read(dir.path(), &other).unwrap_err();
        assert_eq!(e.outcome(), "foreign", "{e}");
    }
    let path = dir.path().join(file::STATE_FILE);
    let good = std::fs::read(&path).unwrap();
    let mut version_2 = good.clone();
    version_2[8..12].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&path, &version_2).unwrap();
    let e = read(dir.path(), &identity()).unwrap_err();
    assert!(
        matches!(e, StateError::Foreign(ref m) if m.contains("version 2")),
        "{e}"
    );
    std::fs::write(&path, b"{\"not\": \"a state\"}").unwrap();
    assert_eq!(
        read(dir.path(), &identity()).unwrap_err().outcome(),
        "foreign"
    );
}

#[test]
fn the_identity_is_the_set_of_keys_and_their_scopes() {
    let a = Identity::of(&nats("DENYLIST", &["key-b", "key-a"]));
    assert_eq!(a, identity(), "order does not matter");
    let mut scoped = nats("DENYLIST", &["key-a"]);
    scoped.trusted_publisher = toml::from_str::<NatsConfig>(
        "[[trusted_publisher]]\nkey = \"key-b\"\nkinds = [\"session\"]\n",
    )
    .unwrap()
    .trusted_publisher;
    assert_ne!(Identity::of(&scoped), identity(), "a scope changes it");

    // A heartbeat key signs no event: adding or rotating one leaves every state usable.
    let mut with_heartbeat_key = nats("DENYLIST", &["key-a", "key-b"]);
    with_heartbeat_key.trusted_publisher = toml::from_str::<NatsConfig>(
        "[[trusted_publisher]]\nkey = \"key-hb\"\nheartbeats_only = true\n",
    )
    .unwrap()
    .trusted_publisher;
    assert_eq!(Identity::of(&with_heartbeat_key), identity());
}

#[test]
fn a_recreated_stream_refuses_the_state() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &identity(),
        &position(10),
        &[revoke("e1", "j1")],
    );
    let state = read(dir.path(), &identity()).unwrap().unwrap();
    state
        .check_stream(CREATED, 10)
        .expect("same stream, nothing new");
    state
        .check_stream(CREATED, 99)
        .expect("same stream, more since");
    for (created, last) in [(CREATED + 1, 99), (CREATED, 9)] {
        let e = state.check_stream(created, last).unwrap_err();
        assert_eq!(e.outcome(), "recreated", "{e}");
    }
}

#[test]
fn applying_a_state_gives_the_same_denylist() {
    let clock = ManualClock::new(T0_MS);
    let live = denylist(&clock);
    let events = [
        revoke("e1", "j1"),
        revoke("e2", "j2"),
        lift("e3", &["e2"]),
        revoke("e4", "j4"),
    ];
    let mut kept = Live::default();
    for event in &events {
        live.apply(event);
        kept.insert(event.to_proto().encode_to_vec().into(), &live);
    }
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<&[u8]> = kept.records().collect();
    file::write_state(
        dir.path(),
        &identity(),
        &position(4),
        T0_MS,
        records.into_iter(),
    )
    .unwrap();
    let reloaded = denylist(&clock);
    read(dir.path(), &identity())
        .unwrap()
        .unwrap()
        .apply_to(&reloaded)
        .unwrap();
    for jti in ["j1", "j2", "j4", "other"] {
        assert_eq!(revoked(&reloaded, jti), revoked(&live, jti), "{jti}");
    }
    assert!(revoked(&reloaded, "j1") && !revoked(&reloaded, "j2"));
    // A re-publish of the lifted event is still known, so it stays lifted.
    assert!(reloaded.apply(&revoke("e2", "j2")).duplicate);
    assert!(!revoked(&reloaded, "j2"));
}

#[test]
fn the_copy_forgets_what_the_denylist_forgets() {
    let clock = ManualClock::new(T0_MS);
    let denylist = denylist(&clock);
    let now = T0_MS / 1000;
    let mut kept = Live::default();
    for event in [
        expiring("soon", "j1", now + 60),
        revoke("long", "j2"),
        lift("undo-soon", &["soon"]),
        lift("undo-nothing", &["unknown"]),
        revoke("long", "j2"),
    ] {
        kept.insert(event.to_proto().encode_to_vec().into(), &denylist);
    }
    // The lift of an unknown event and the repeated id are not kept.
    assert_eq!(kept.len(), 3);
    kept.prune(now);
    assert_eq!(kept.len(), 3);
    // Past the expiry and its grace: the revocation goes, and the lift of it with it.
    kept.prune(now + 60 + crate::denylist::EXPIRY_GRACE_SECS);
    assert_eq!(kept.len(), 1);
    let left: Vec<Vec<u8>> = kept.records().map(<[u8]>::to_vec).collect();
    assert_eq!(left, encoded(&[revoke("long", "j2")]));
}

#[tokio::test]
async fn the_heard_file_vouches_only_for_the_same_content() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &identity(), &position(5), &[revoke("e1", "j1")]);
    let later = Position {
        last_heard_unix_ms: T0_MS + 60_000,
        ..position(5)
    };
    file::write_heard(dir.path(), &identity(), &later).unwrap();
    let clock = ManualClock::new(T0_MS);
    let open = || async {
        let store = LocalStore::new(
            &StateConfig {
                dir: Some(dir.path().to_owned()),
                ..StateConfig::default()
            },
            identity(),
        )
        .unwrap();
        let freshness = Arc::new(Freshness::new(
            clock.clone(),
            Duration::from_secs(30),
            StalenessPolicy::FailClosed,
        ));
        let (checked, _, _) = store
            .open(Arc::new(denylist(&clock)), freshness, clock.clone())
            .await
            .unwrap();
        checked.expect("a state").position.last_heard_unix_ms
    };
    assert_eq!(open().await, T0_MS + 60_000);
    // A heard file of another sequence says nothing about this content.
    file::write_heard(
        dir.path(),
        &identity(),
        &Position {
            sequence: 6,
            ..later
        },
    )
    .unwrap();
    assert_eq!(open().await, T0_MS - 1000);
}

/// A running writer over `dir` (`interval` between writes) and its pieces.
struct RunningWriter {
    denylist: Arc<Denylist>,
    freshness: Arc<Freshness>,
    checked: Option<Checked>,
    recorder: Recorder,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningWriter {
    /// Ends the follower's side and stops the writer, which writes once more.
    async fn stop(self) {
        drop(self.recorder);
        self.stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the writer stops")
            .unwrap();
    }
}

async fn run_writer(dir: &Path, interval: Duration) -> RunningWriter {
    let clock = ManualClock::new(T0_MS);
    let denylist = Arc::new(denylist(&clock));
    let freshness = Arc::new(Freshness::new(
        clock.clone(),
        Duration::from_secs(30),
        StalenessPolicy::FailClosed,
    ));
    let store = LocalStore::new(
        &StateConfig {
            dir: Some(dir.to_owned()),
            interval,
            ..StateConfig::default()
        },
        identity(),
    )
    .unwrap();
    let (checked, recorder, writer) = store
        .open(Arc::clone(&denylist), Arc::clone(&freshness), clock.clone())
        .await
        .unwrap();
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(writer.run(shutdown));
    RunningWriter {
        denylist,
        freshness,
        checked,
        recorder,
        stop,
        task,
    }
}

#[tokio::test]
async fn the_writer_writes_what_was_applied_and_only_when_it_changed() {
    let dir = tempfile::tempdir().unwrap();
    let w = run_writer(dir.path(), Duration::from_millis(100)).await;
    assert!(w.checked.is_none());
    // Nothing applied yet: nothing is written (an old state must not be overwritten
    // before it is decided on).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(read(dir.path(), &identity()).unwrap().is_none());

    w.freshness.mark_heard();
    for (seq, event) in [(1, revoke("e1", "j1")), (2, revoke("e2", "j2"))] {
        w.denylist.apply(&event);
        w.recorder.applied(event);
        w.recorder.position(seq, CREATED);
    }
    w.stop().await;
    let state = read(dir.path(), &identity()).unwrap().expect("written");
    assert_eq!(
        state.position,
        Position {
            stream_created_unix_nanos: CREATED,
            sequence: 2,
            last_heard_unix_ms: T0_MS,
        }
    );
    let records: Vec<Vec<u8>> = state.records().map(<[u8]>::to_vec).collect();
    assert_eq!(records, encoded(&[revoke("e1", "j1"), revoke("e2", "j2")]));
}

#[test]
fn a_restored_heard_time_gives_the_true_age() {
    let clock = ManualClock::new(T0_MS);
    let freshness = Freshness::new(
        clock.clone(),
        Duration::from_secs(30),
        StalenessPolicy::FailClosed,
    );
    freshness.restore_heard(T0_MS - 20_000);
    assert_eq!(freshness.view().age_ms, 20_000);
    assert!(!freshness.view().stale);
    clock.advance_ms(11_000);
    assert!(freshness.view().stale, "31 s after it was last heard");
    // Never into the future, never back.
    freshness.restore_heard(T0_MS + 3_600_000);
    assert_eq!(freshness.view().age_ms, 0);
    freshness.restore_heard(T0_MS);
    assert_eq!(freshness.view().age_ms, 0);
}

/// A valid fleet-mode config with this `[state]` section.
fn fleet_config(state: &str) -> crate::config::Config {
    let toml = format!(
        r#"
[denylist]
source = "nats"

[nats]
servers = ["nats://127.0.0.1:4222"]
trusted_publishers = ["m53AbgRdXFN0hRN6eFeVepCpV9BMJtmlLcpcDZbsNOU"]

[state]
{state}

[[issuers]]
issuer = "https://idp.example"
algorithms = ["ES256"]
[issuers.keys]
pem_files = [{{ path = "es256.pem", kid = "k1" }}]
"#
    );
    crate::config::Config::from_toml(&toml).expect("parses")
}

fn invalid_field(state: &str) -> String {
    match fleet_config(state).validate() {
        Err(crate::config::ConfigError::Invalid { field, .. }) => field,
        other => panic!("expected an invalid field for {state:?}, got {other:?}"),
    }
}

#[test]
fn the_state_section_is_off_by_default_and_checked_when_on() {
    let off = fleet_config("");
    off.validate().unwrap();
    assert!(off.state.dir.is_none());
    let on = fleet_config("dir = \"/var/lib/denylist\"");
    on.validate().unwrap();
    assert_eq!(on.state.interval, Duration::from_secs(5));
    assert_eq!(on.state.max_bytes, 1 << 30);
    assert_eq!(invalid_field("dir = \"relative/dir\""), "state.dir");
    assert_eq!(
        invalid_field("dir = \"/s\"\ninterval = \"10ms\""),
        "state.interval"
    );
    assert_eq!(
        invalid_field("dir = \"/s\"\nmax_bytes = 100"),
        "state.max_bytes"
    );
    // Standalone mode ignores it: the injector sets it in every pod.
    let mut standalone = fleet_config("dir = \"relative\"");
    standalone.denylist.source = crate::config::DenylistSource::File;
    standalone.denylist.file = Some("revocations.jsonl".into());
    standalone.validate().unwrap();
}

#[test]
fn the_environment_sets_or_clears_the_state_dir() {
    let mut config = fleet_config("dir = \"/from/file\"");
    config
        .apply_env(|k| (k == crate::config::env::STATE_DIR).then(|| "/from/env".to_owned()))
        .unwrap();
    assert_eq!(config.state.dir.as_deref(), Some(Path::new("/from/env")));
    config
        .apply_env(|k| (k == crate::config::env::STATE_DIR).then(String::new))
        .unwrap();
    assert!(config.state.dir.is_none());
}

/// A state with `e1`, `e2` at sequence 2 and a journal of three records after it:
/// `e3` (3), `e4` and `e5` (5), nothing new (6). Returns the journal's bytes.
fn state_with_journal(dir: &Path) -> Vec<u8> {
    let records = encoded(&[revoke("e1", "j1"), revoke("e2", "j2")]);
    let written = file::write_state(
        dir,
        &identity(),
        &position(2),
        T0_MS,
        records.iter().map(Vec::as_slice),
    )
    .unwrap();
    let mut journal = journal::Appender::create(dir, written.seal).unwrap();
    let boxed = |events: &[Event]| -> Vec<Box<[u8]>> {
        encoded(events)
            .into_iter()
            .map(Vec::into_boxed_slice)
            .collect()
    };
    journal
        .append(&position(3), T0_MS + 1, &boxed(&[revoke("e3", "j3")]))
        .unwrap();
    journal
        .append(
            &position(5),
            T0_MS + 2,
            &boxed(&[revoke("e4", "j4"), lift("e5", &["e1"])]),
        )
        .unwrap();
    journal.append(&position(6), T0_MS + 3, &[]).unwrap();
    let bytes = std::fs::read(dir.join(journal::JOURNAL_FILE)).unwrap();
    assert_eq!(bytes.len() as u64, journal.bytes());
    bytes
}

#[test]
fn a_journal_adds_its_records_to_the_state_in_order() {
    let dir = tempfile::tempdir().unwrap();
    state_with_journal(dir.path());
    let state = read(dir.path(), &identity()).unwrap().unwrap();
    assert_eq!(state.position, position(6));
    assert_eq!(state.written_unix_ms, T0_MS + 3);
    assert_eq!(state.event_count, 5);
    assert_eq!(state.journal_records, 3);
    let records: Vec<Vec<u8>> = state.records().map(<[u8]>::to_vec).collect();
    assert_eq!(
        records,
        encoded(&[
            revoke("e1", "j1"),
            revoke("e2", "j2"),
            revoke("e3", "j3"),
            revoke("e4", "j4"),
            lift("e5", &["e1"]),
        ])
    );
    // Applied, the lift in the journal withdraws a revocation of the state file.
    let clock = ManualClock::new(T0_MS);
    let applied = denylist(&clock);
    state.apply_to(&applied).unwrap();
    for (jti, expected) in [("j1", false), ("j2", true), ("j3", true), ("j4", true)] {
        assert_eq!(revoked(&applied, jti), expected, "{jti}");
    }
}

#[test]
fn a_journal_is_read_up_to_its_first_record_that_does_not_check() {
    let dir = tempfile::tempdir().unwrap();
    let good = state_with_journal(dir.path());
    let path = dir.path().join(journal::JOURNAL_FILE);
    // Records end at these offsets (header 44 bytes; length, body, 32-byte link each).
    let mut ends = Vec::new();
    let mut at = 44;
    while at < good.len() {
        let length = u32::from_le_bytes(good[at..at + 4].try_into().unwrap()) as usize;
        at += 4 + length + 32;
        ends.push(at);
    }
    assert_eq!(ends.len(), 3);
    let sequences = [2, 3, 5, 6];
    // Cut anywhere: the records whole before the cut are read, the rest is not.
    for len in 0..good.len() {
        std::fs::write(&path, &good[..len]).unwrap();
        let whole = ends.iter().filter(|&&end| end <= len).count();
        let state = read(dir.path(), &identity()).unwrap().unwrap();
        assert_eq!(state.position.sequence, sequences[whole], "cut at {len}");
        assert_eq!(state.journal_records, whole, "cut at {len}");
    }
    // A flipped byte: the records before it are read; one in the header (which names
    // the state it follows) leaves the journal out whole.
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        std::fs::write(&path, &bad).unwrap();
        let whole = ends.iter().filter(|&&end| end <= i).count();
        let state = read(dir.path(), &identity()).unwrap().unwrap();
        assert_eq!(state.position.sequence, sequences[whole], "byte {i}");
        assert_eq!(state.event_count, [2, 3, 5, 5][whole], "byte {i}");
    }
}

#[test]
fn a_journal_that_follows_another_state_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    state_with_journal(dir.path());
    // A new state written, the crash coming before its own journal replaced the old.
    write(dir.path(), &identity(), &position(9), &[revoke("e9", "j9")]);
    let state = read(dir.path(), &identity()).unwrap().unwrap();
    assert_eq!(state.position, position(9));
    assert_eq!(state.event_count, 1);
    assert_eq!(state.journal_records, 0);
}

#[tokio::test]
async fn the_writer_appends_to_the_journal_instead_of_rewriting_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let w = run_writer(dir.path(), Duration::from_millis(50)).await;
    let at_sequence = |sequence: u64| {
        let dir = dir.path().to_owned();
        async move {
            tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    if let Ok(Some(state)) = read(&dir, &identity())
                        && state.position.sequence == sequence
                    {
                        return state;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("the state never reached sequence {sequence}"))
        }
    };
    let apply = |seq: u64, event: Event| {
        w.denylist.apply(&event);
        w.recorder.applied(event);
        w.recorder.position(seq, CREATED);
    };
    apply(1, revoke("e1", "j1"));
    apply(2, revoke("e2", "j2"));
    let first = at_sequence(2).await;
    assert_eq!(first.journal_records, 0, "the first write is a whole state");
    let state_file = std::fs::read(dir.path().join(file::STATE_FILE)).unwrap();

    apply(3, revoke("e3", "j3"));
    let second = at_sequence(3).await;
    assert_eq!(second.journal_records, 1);
    apply(4, lift("e4", &["e2"]));
    let third = at_sequence(4).await;
    assert_eq!(third.journal_records, 2);
    assert_eq!(
        std::fs::read(dir.path().join(file::STATE_FILE)).unwrap(),
        state_file,
        "the state file was not rewritten"
    );
    let records: Vec<Vec<u8>> = third.records().map(<[u8]>::to_vec).collect();
    assert_eq!(
        records,
        encoded(&[
            revoke("e1", "j1"),
            revoke("e2", "j2"),
            revoke("e3", "j3"),
            lift("e4", &["e2"]),
        ])
    );
    w.stop().await;
}
