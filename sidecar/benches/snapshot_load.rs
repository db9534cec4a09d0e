//! Snapshot size on the wire, and loading a snapshot in process, by phase, for both
//! body encodings over the same events: the dense one `denylistctl snapshot create`
//! writes (`DenseZstd`) and the length-delimited one of earlier releases. Phases: the
//! checks of `snapshot::open` (signature and body SHA-256), decoding and validating
//! the events on one thread (for the dense body: decompressing and expanding it
//! first), and the whole load into the denylist (`sync::load_snapshot`, what a starting
//! sidecar runs once it has fetched the object; it decodes on every core).
//!
//! `cargo bench -p denylist-sidecar --bench snapshot_load` (sizes: `SNAPSHOT_SIZES`,
//! default `100000,1000000`). Content as `denylistctl revoke` makes it: one `jti`
//! event per revocation (the worst case), a ULID event id, a random UUID `jti`, one of
//! three issuers, a few reasons and actors, half with an explicit expiry, creation
//! times a few milliseconds apart.

// Bench binaries print their results.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use denylist_proto::envelope::{SigningKey, TrustedKeys};
use denylist_proto::events::{Action, Event, Revoke, RuleKind};
use denylist_proto::snapshot::{self, Encoding, Manifest};
use denylist_sidecar::clock::{Clock as _, SystemClock};
use denylist_sidecar::denylist::{Denylist, DenylistSettings};
use denylist_sidecar::sync::{StreamIdentity, load_snapshot};

const RUNS: usize = 5;

const ISSUERS: [&str; 3] = [
    "https://login.example.com/",
    "https://accounts.example.com/realms/staff",
    "https://partner-idp.example.net/oauth2/default",
];
const REASONS: [&str; 4] = [
    "logout",
    "password changed",
    "account takeover, ticket SEC-1234",
    "device reported lost",
];
const ACTORS: [&str; 3] = ["idp", "alice@example.com", "security-automation"];
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Random bytes (the system RNG: as random as real ids).
fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    bytes
}

/// A ULID as `denylistctl` makes event ids: 48 bits of milliseconds, 80 random.
fn ulid(ms: i64) -> String {
    let mut value = (ms as u128) << 80;
    for (i, b) in random::<10>().iter().enumerate() {
        value |= u128::from(*b) << (72 - 8 * i);
    }
    (0..26)
        .rev()
        .map(|i| CROCKFORD[((value >> (5 * i)) & 0x1f) as usize] as char)
        .collect()
}

/// A random (version 4) UUID, lower case.
fn uuid() -> String {
    let mut b = random::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn events(n: usize, now_ms: i64) -> Vec<Event> {
    // Over the last ~2 hours at a million (1–15 ms apart): all still live.
    let mut created = now_ms - 3 * 3_600_000;
    (0..n)
        .map(|i| {
            let r = random::<4>();
            created += i64::from(r[0] % 16);
            let expires_at = r[1]
                .is_multiple_of(2)
                .then(|| created / 1000 + 6 * 3600 + i64::from(r[2]) * 60);
            Event {
                event_id: ulid(created),
                action: Action::Revoke(Revoke {
                    kind: RuleKind::Jti,
                    issuer: ISSUERS[i % 7 % ISSUERS.len()].into(),
                    targets: vec![uuid()],
                    cutoff: 0,
                    expires_at,
                }),
                reason: REASONS[usize::from(r[3]) % REASONS.len()].into(),
                actor: ACTORS[usize::from(r[3] / 4) % ACTORS.len()].into(),
                created_at_ms: created,
            }
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
        "| events | encoding | object | of length-delimited | seal | open (signature + SHA-256) | decode + validate (1 thread) | load into the denylist (all) | first load | per event |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        let now_ms = SystemClock.now_ms();
        let manifest = Manifest {
            stream: "DENYLIST".into(),
            stream_created_unix_nanos: 1,
            covered_sequence: n as u64,
            created_at_ms: now_ms,
            event_count: 0,
        };
        let events = events(n, now_ms);
        let mut baseline = 0usize;
        for encoding in [Encoding::LengthDelimited, Encoding::DenseZstd] {
            let t = Instant::now();
            let object = snapshot::seal_with(&manifest, &events, &key, encoding);
            let seal = t.elapsed();
            if encoding == Encoding::LengthDelimited {
                baseline = object.len();
            }
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
                let applied = load_snapshot(&object, &trusted, stream, &denylist, false)
                    .expect("loads")
                    .applied;
                load.push(t.elapsed());
                assert_eq!(applied.added, n);
            }
            // The first load runs in a process that has not allocated that much yet, as
            // a starting sidecar does: page faults and all (the dense rows run second).
            let first_load = load[0];
            let load_median = median(load);
            println!(
                "| {n} | {encoding:?} | {:.2} MiB ({:.1} B/event) | {:.1} % | {seal:.1?} | {:.1?} | {:.1?} | **{:.1?}** | {first_load:.1?} | {:.2} µs |",
                object.len() as f64 / 1_048_576.0,
                object.len() as f64 / n as f64,
                object.len() as f64 * 100.0 / baseline as f64,
                median(open),
                median(decode),
                load_median,
                load_median.as_secs_f64() * 1e6 / n as f64
            );
        }
    }
}
