//! Loading a snapshot in process, by phase: the checks of `snapshot::open` (signature
//! and body SHA-256), decoding and validating the events (one thread, borrowed), and
//! the whole load into the denylist (`sync::load_snapshot`, what a starting sidecar
//! runs once it has fetched the object; it decodes a part of the body per core).
//!
//! `cargo bench -p denylist-sidecar --bench snapshot_load` (sizes: `SNAPSHOT_SIZES`,
//! default `100000,1000000`; one single-`jti` event per revocation, the worst case).

// Bench binaries print their results.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use denylist_proto::envelope::{SigningKey, TrustedKeys};
use denylist_proto::events::{Action, Event, Revoke, RuleKind};
use denylist_proto::snapshot::{self, Manifest};
use denylist_sidecar::clock::{Clock as _, SystemClock};
use denylist_sidecar::denylist::{Denylist, DenylistSettings};
use denylist_sidecar::sync::{StreamIdentity, load_snapshot};

const RUNS: usize = 5;

fn events(n: usize, now_ms: i64) -> Vec<Event> {
    (0..n)
        .map(|i| Event {
            event_id: format!("0b7e6c2a-{i:08}-4d1f-9a3e-5c8b2f71d0e4"),
            action: Action::Revoke(Revoke {
                kind: RuleKind::Jti,
                issuer: "https://login.example.com/".into(),
                targets: vec![format!("jti-{i:08}-5f0c3a1e-8d2b-4f6a-9c71")],
                cutoff: 0,
                expires_at: None,
            }),
            reason: "logout".into(),
            actor: "idp".into(),
            created_at_ms: now_ms,
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let sizes: Vec<usize> = std::env::var("SNAPSHOT_SIZES").map_or_else(
        |_| vec![100_000, 1_000_000],
        |v| {
            v.split(',')
                .map(|s| s.trim().parse().expect("a number"))
                .collect()
        },
    );
    let (key, _) = SigningKey::generate().expect("key");
    let trusted = TrustedKeys::from_public_keys(&[key.public_key()]).expect("trusted");
    println!(
        "| events | object | open (signature + SHA-256) | decode + validate | load into the denylist (all) | per event |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        let now_ms = SystemClock.now_ms();
        let manifest = Manifest {
            stream: "DENYLIST".into(),
            stream_created_unix_nanos: 1,
            covered_sequence: n as u64,
            created_at_ms: now_ms,
            event_count: 0,
        };
        let object = snapshot::seal(&manifest, &events(n, now_ms), &key);
        let (mut open, mut decode, mut load) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..RUNS {
            let t = Instant::now();
            let opened = snapshot::open(&object, &trusted).expect("opens");
            open.push(t.elapsed());

            // On one thread, without copying, as each thread of a load does its part.
            let t = Instant::now();
            let mut count = 0;
            for part in opened.split(1).expect("frames") {
                for event in part.events() {
                    std::hint::black_box(event.expect("valid"));
                    count += 1;
                }
            }
            decode.push(t.elapsed());
            assert_eq!(count, n);

            let denylist = Denylist::new(
                DenylistSettings {
                    expected_entries: n,
                    ..DenylistSettings::default()
                },
                Arc::new(SystemClock),
            );
            let stream = StreamIdentity {
                name: "DENYLIST",
                created_unix_nanos: 1,
                last_sequence: n as u64,
            };
            let t = Instant::now();
            let (_, _, applied) =
                load_snapshot(&object, &trusted, stream, &denylist).expect("loads");
            load.push(t.elapsed());
            assert_eq!(applied.added, n);
        }
        // The first load runs in a process that has not allocated that much yet, as a
        // starting sidecar does: page faults and all.
        let first_load = load[0];
        let load_median = median(load);
        println!(
            "| {n} | {:.1} MiB | {:.1?} | {:.1?} | **{:.1?}** | {first_load:.1?} | {:.2} µs |",
            object.len() as f64 / 1_048_576.0,
            median(open),
            median(decode),
            load_median,
            load_median.as_secs_f64() * 1e6 / n as f64
        );
    }
}
