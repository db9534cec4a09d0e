//! The local state (`state.dir`): writing it, and resuming from it — reading the file
//! with every check (size, SHA-256 over the whole file, each event decoded and
//! validated) and replacing the denylist's content with its events, which is what a
//! restarted sidecar does instead of downloading and loading the snapshot.
//!
//! And what one more revocation costs to write: the whole state rewritten, against one
//! record appended to the state's journal (fsync included in both).
//!
//! `cargo bench -p denylist-sidecar --bench local_state` (sizes: `LOCAL_STATE_SIZES`,
//! default `100000,1000000`). One `jti` revocation event per rule (the worst case for
//! size), with a 26-character event id and a UUID `jti`. Prints the median of 5 runs.

// Bench binaries print their results.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use denylist_proto::events::{Action, Event, Revoke, RuleKind};
use denylist_sidecar::clock::{Clock as _, SystemClock};
use denylist_sidecar::config::NatsConfig;
use denylist_sidecar::denylist::{Denylist, DenylistSettings};
use denylist_sidecar::state::{Identity, Position, file, journal};
use prost::Message as _;

const RUNS: usize = 5;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    bytes
}

/// `n` encoded revocation events, as a sidecar's state keeps them.
fn events(n: usize, now_ms: i64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let r = random::<16>();
            let jti = format!(
                "{}-{}-{}-{}-{}",
                hex(&r[..4]),
                hex(&r[4..6]),
                hex(&r[6..8]),
                hex(&r[8..10]),
                hex(&r[10..])
            );
            Event {
                event_id: format!("01J{}{:08}", hex(&random::<8>())[..15].to_uppercase(), i),
                action: Action::Revoke(Revoke {
                    kind: RuleKind::Jti,
                    issuer: "https://login.example.com/".to_owned(),
                    targets: vec![jti],
                    cutoff: 0,
                    expires_at: None,
                }),
                reason: "logout".to_owned(),
                actor: "idp".to_owned(),
                created_at_ms: now_ms - 1000,
            }
            .to_proto()
            .encode_to_vec()
        })
        .collect()
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort_unstable();
    runs[runs.len() / 2]
}

fn main() {
    let sizes: Vec<usize> = std::env::var("LOCAL_STATE_SIZES")
        .unwrap_or_else(|_| "100000,1000000".to_owned())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("LOCAL_STATE_SIZES: a list of numbers")
        })
        .collect();
    let clock = Arc::new(SystemClock);
    let identity = Identity::of(&NatsConfig {
        trusted_publishers: vec!["m53AbgRdXFN0hRN6eFeVepCpV9BMJtmlLcpcDZbsNOU".to_owned()],
        ..NatsConfig::default()
    });
    let position = Position {
        stream_created_unix_nanos: 1,
        sequence: 1,
        last_heard_unix_ms: clock.now_ms(),
    };
    println!(
        "events     file bytes  B/event  write      read+check  apply      resume (read+apply)"
    );
    for n in sizes {
        let records = events(n, clock.now_ms());
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut write, mut read, mut apply, mut resume) = (vec![], vec![], vec![], vec![]);
        let mut bytes = 0;
        for _ in 0..RUNS {
            let started = Instant::now();
            bytes = file::write_state(
                dir.path(),
                &identity,
                &position,
                clock.now_ms(),
                records.iter().map(Vec::as_slice),
            )
            .expect("write")
            .bytes;
            write.push(started.elapsed());

            let denylist = Denylist::new(
                DenylistSettings {
                    expected_entries: n,
                    ..DenylistSettings::default()
                },
                clock.clone(),
            );
            let started = Instant::now();
            let state = file::read_state(dir.path(), &identity, u64::MAX)
                .expect("read")
                .expect("a state");
            let checked = started.elapsed();
            state.apply_to(&denylist).expect("apply");
            let total = started.elapsed();
            read.push(checked);
            apply.push(total - checked);
            resume.push(total);
            assert_eq!(denylist.stats().entries, n as u64);
        }
        let whole = median(write.clone());
        println!(
            "{n:<10} {bytes:<11} {:<8} {:<10.3?} {:<11.3?} {:<10.3?} {:.3?}",
            bytes / n as u64,
            whole,
            median(read),
            median(apply),
            median(resume)
        );
        // One more revocation applied: what the next write costs, the whole state
        // rewritten (the column above) against one record appended to its journal.
        let written = file::write_state(
            dir.path(),
            &identity,
            &position,
            clock.now_ms(),
            records.iter().map(Vec::as_slice),
        )
        .expect("write");
        let mut log = journal::Appender::create(dir.path(), written.seal).expect("journal");
        let mut appends = Vec::new();
        let mut record = 0;
        for i in 0..RUNS as u64 {
            let one: Vec<Box<[u8]>> = events(1, clock.now_ms())
                .into_iter()
                .map(Vec::into_boxed_slice)
                .collect();
            let at = Position {
                sequence: position.sequence + 1 + i,
                ..position
            };
            let started = Instant::now();
            record = log.append(&at, clock.now_ms(), &one).expect("append");
            appends.push(started.elapsed());
        }
        let append = median(appends);
        println!(
            "{n:<10} one more revocation: whole state {bytes} B in {whole:.3?}, journal record {record} B in {append:.3?} ({:.0}x fewer bytes, {:.0}x faster)",
            bytes as f64 / record as f64,
            whole.as_secs_f64() / append.as_secs_f64()
        );
    }
}
