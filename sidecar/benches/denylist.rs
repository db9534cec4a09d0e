//! Denylist lookups and memory at 1 000 000 `jti` rules.
//!
//! Prints bytes per entry, measured by a counting global allocator (bytes allocated
//! after building minus before, divided by the number of rules), for:
//! - bulk: 1 000 events of 1 000 targets each (one metadata record per event);
//! - worst case: 1 000 000 events of one target each;
//! - the `DashMap<String, ()>` baseline.
//!
//! Then times lookups (miss and hit) with and without the Bloom gate, beside the
//! `DashMap<String, ()>` baseline, in the same run.
//!
//! Run: `cargo bench -p denylist-sidecar --bench denylist`.

use std::alloc::System;
use std::hint::black_box;
use std::time::{Duration, Instant};

use cap::Cap;
use criterion::Criterion;
use dashmap::DashMap;
use denylist_sidecar::clock::{ManualClock, SharedClock};
use denylist_sidecar::denylist::{Denylist, DenylistSettings, TokenFacts};
use denylist_sidecar::events::{Action, Event, Revoke, RuleKind};

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

const ENTRIES: usize = 1_000_000;
const BULK_TARGETS: usize = 1_000;
const ISSUER: &str = "https://issuer.example.com/";
const NOW_MS: i64 = 1_700_000_000_000;
/// Distinct probe tokens cycled through, so lookups do not always hit the same lines.
const PROBES: usize = 4096;

/// A jti shaped like a UUID (36 bytes), from a counter: 0..ENTRIES are revoked,
/// larger counters never are.
fn jti(i: u64) -> String {
    let a = splitmix(i);
    let b = splitmix(a);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn event(id: usize, first: usize, count: usize) -> Event {
    Event {
        event_id: format!("evt-{id:08}"),
        action: Action::Revoke(Revoke {
            kind: RuleKind::Jti,
            issuer: ISSUER.to_owned(),
            targets: (first..first + count).map(|i| jti(i as u64)).collect(),
            cutoff: 0,
            expires_at: None,
        }),
        reason: "credential leak INC-1234".to_owned(),
        actor: "secops@example.com".to_owned(),
        created_at_ms: NOW_MS,
    }
}

fn denylist() -> Denylist {
    let clock: SharedClock = ManualClock::new(NOW_MS);
    Denylist::new(
        DenylistSettings {
            expected_entries: ENTRIES,
            bloom_fp_rate: 0.001,
            max_lifetimes: Default::default(),
            default_max_lifetime: 24 * 3600,
        },
        clock,
    )
}

/// Builds a denylist of `ENTRIES` rules in events of `per_event` targets; returns it
/// with the bytes it holds (as counted by the allocator) and the build time.
fn build(per_event: usize) -> (Denylist, usize, Duration) {
    let before = ALLOCATOR.allocated();
    let started = Instant::now();
    let d = denylist();
    for (id, first) in (0..ENTRIES).step_by(per_event).enumerate() {
        // Generated, applied and dropped one at a time: only the denylist remains.
        let applied = d.apply(&event(id, first, per_event));
        assert_eq!(applied.added, per_event);
    }
    let rebuilt = d.prune_and_rebuild();
    assert_eq!(rebuilt.kept, ENTRIES);
    let elapsed = started.elapsed();
    let bytes = ALLOCATOR.allocated() - before;
    (d, bytes, elapsed)
}

fn report(label: &str, bytes: usize, d: Option<&Denylist>, elapsed: Duration) {
    let per_entry = bytes as f64 / ENTRIES as f64;
    let estimate = d.map_or(String::new(), |d| {
        let s = d.stats();
        format!(
            " (stats: heap_bytes {:.1} B/entry, bloom {:.2} B/entry)",
            s.heap_bytes as f64 / ENTRIES as f64,
            s.bloom_bytes as f64 / ENTRIES as f64
        )
    });
    println!(
        "denylist bytes/entry [{label}]: {per_entry:.1} B/entry measured ({bytes} B for {ENTRIES} entries, built in {:.2} s){estimate}",
        elapsed.as_secs_f64()
    );
}

/// The facts of a typical token: a jti and a subject (no session, no kid).
fn token(jti: &str) -> TokenFacts<'_> {
    TokenFacts {
        issuer: ISSUER,
        jti: Some(jti),
        subject: Some("user-42"),
        issued_at: Some(NOW_MS / 1000 - 60),
        ..TokenFacts::default()
    }
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();

    // Memory first, each structure alone in the heap.
    let (worst, worst_bytes, worst_time) = build(1);
    report(
        "worst case, one event per entry",
        worst_bytes,
        Some(&worst),
        worst_time,
    );
    drop(worst);

    let before = ALLOCATOR.allocated();
    let started = Instant::now();
    let map: DashMap<String, ()> = DashMap::new();
    for i in 0..ENTRIES as u64 {
        map.insert(jti(i), ());
    }
    let map_bytes = ALLOCATOR.allocated() - before;
    report(
        "baseline DashMap<String, ()>",
        map_bytes,
        None,
        started.elapsed(),
    );

    let (bulk, bulk_bytes, bulk_time) = build(BULK_TARGETS);
    report(
        "bulk, events of 1000 targets",
        bulk_bytes,
        Some(&bulk),
        bulk_time,
    );

    let hits: Vec<String> = (0..PROBES as u64)
        .map(|i| jti(i * (ENTRIES / PROBES) as u64))
        .collect();
    let misses: Vec<String> = (0..PROBES as u64)
        .map(|i| jti(ENTRIES as u64 + i))
        .collect();
    for probe in &hits {
        assert!(bulk.is_revoked(&token(probe)).is_some());
        assert!(map.contains_key(probe.as_str()));
    }
    for probe in &misses {
        assert!(bulk.is_revoked(&token(probe)).is_none());
        assert!(!map.contains_key(probe.as_str()));
    }

    let mut group = criterion.benchmark_group("denylist_1m_jti");
    let mut i = 0usize;
    let mut next = |probes: &[String]| -> usize {
        i = (i + 1) % probes.len();
        i
    };
    group.bench_function("bloom+exact/miss", |b| {
        b.iter(|| black_box(bulk.is_revoked(&token(&misses[next(&misses)]))))
    });
    group.bench_function("bloom+exact/hit", |b| {
        b.iter(|| black_box(bulk.is_revoked(&token(&hits[next(&hits)]))))
    });
    group.bench_function("exact_only/miss", |b| {
        b.iter(|| black_box(bulk.is_revoked_exact_only(&token(&misses[next(&misses)]))))
    });
    group.bench_function("exact_only/hit", |b| {
        b.iter(|| black_box(bulk.is_revoked_exact_only(&token(&hits[next(&hits)]))))
    });
    group.bench_function("dashmap_string/miss", |b| {
        b.iter(|| black_box(map.contains_key(misses[next(&misses)].as_str())))
    });
    group.bench_function("dashmap_string/hit", |b| {
        b.iter(|| black_box(map.contains_key(hits[next(&hits)].as_str())))
    });
    let empty = denylist();
    group.bench_function("no_rules/miss", |b| {
        b.iter(|| black_box(empty.is_revoked(&token(&misses[next(&misses)]))))
    });
    group.finish();
    criterion.final_summary();
}
