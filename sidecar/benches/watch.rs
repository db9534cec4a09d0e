//! Watch at scale: process CPU per applied revocation, and wake latency, with 0, 1 000
//! and 10 000 open Watch streams while revocations are applied at 1 000/s.
//!
//! `cargo bench -p denylist-sidecar --bench watch`
//! (`WATCH_COUNTS`, default `0,1000,10000`; `WATCH_RATE` revocations/s, default 1000;
//! `WATCH_WINDOWS` one-second windows measured per case, default 5).
//!
//! In process, over the real denylist: streams are opened with `VerifierService::watch`
//! (the code path a gRPC call runs, minus the transport), each drained by a task of its
//! own as tonic would. A thread applies revocations the way the stream follower does
//! (`Denylist::apply`, record the sequence, announce it on the `changes` channel,
//! which only the broadcast baseline below listens to).
//! Two kinds of revocation: `none` (a `jti` rule no stream watches) and `one` (a
//! `subject` rule that revokes exactly one watched subject; its stream gets a notice
//! and ends, and a stream for a fresh subject is opened in its place, so the count
//! stays put).
//!
//! `broadcast` is the design this replaced, kept here as a baseline: every stream's
//! task subscribed to the `changes` channel and re-checked the denylist on every
//! change.
//!
//! CPU is the whole process's (every thread's `/proc/self/task/*/schedstat`, in ns),
//! per revocation applied in each one-second window; the median window is reported.
//! Latency is from just before `apply` to the notice arriving at the stream's reader.

// Bench binaries print their results.
#![allow(clippy::print_stdout)]

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use denylist_proto::pb;
use denylist_proto::pb::verifier_server::Verifier as _;
use denylist_sidecar::clock::{Clock as _, SharedClock, SystemClock};
use denylist_sidecar::config::Config;
use denylist_sidecar::denylist::{Denylist, DenylistSettings, TokenFacts};
use denylist_sidecar::events::{Action, Event, Revoke, RuleKind};
use denylist_sidecar::freshness::Freshness;
use denylist_sidecar::grpc::{ServiceInfo, VerifierService};
use denylist_sidecar::keys::KeyStore;
use denylist_sidecar::verify::Verifier;
use futures::{Stream, StreamExt as _};
use tokio::sync::{broadcast, mpsc, watch};

const ISS: &str = "https://login.example.com/";

type Notices = Pin<Box<dyn Stream<Item = Result<pb::RevocationNotice, tonic::Status>> + Send>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Design {
    /// The denylist's Watch registry (the product).
    Registry,
    /// Every stream re-checks on every change (the design before).
    Broadcast,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Matching {
    /// Revocations that match no open stream.
    None,
    /// Each revocation revokes one open stream's subject.
    One,
}

/// One sidecar's worth of state, fresh for every case.
struct Sidecar {
    service: VerifierService,
    verifier: Arc<Verifier>,
    denylist: Arc<Denylist>,
    freshness: Arc<Freshness>,
    changes: broadcast::Sender<u64>,
    stop: watch::Sender<bool>,
    design: Design,
}

fn sidecar(rt: &tokio::runtime::Runtime, dir: &std::path::Path, design: Design) -> Sidecar {
    let secret = dir.join("h.secret");
    std::fs::write(&secret, [7u8; 32]).expect("write secret");
    let quoted = |p: &std::path::Path| toml::Value::String(p.display().to_string()).to_string();
    let text = format!(
        "[denylist]\nfile = {}\n[[issuers]]\nissuer = \"{ISS}\"\nalgorithms = [\"HS256\"]\n\
         audiences = [\"api\"]\n[issuers.keys]\nhmac_secret_files = [{{ path = {}, kid = \"h\" }}]\n",
        quoted(&dir.join("unused.jsonl")),
        quoted(&secret),
    );
    let config = Config::from_toml(&text).expect("bench config");
    config.validate().expect("valid bench config");
    let clock: SharedClock = Arc::new(SystemClock);
    let keys = Arc::new(
        rt.block_on(KeyStore::load(&config.issuers, Arc::clone(&clock)))
            .expect("keys"),
    );
    let denylist = Arc::new(Denylist::new(
        DenylistSettings::default(),
        Arc::clone(&clock),
    ));
    let freshness = Arc::new(Freshness::new(
        Arc::clone(&clock),
        Duration::from_secs(3600),
        config.denylist.staleness_policy,
    ));
    freshness.mark_heard();
    freshness.set_ready();
    let verifier = Arc::new(Verifier::new(
        &config,
        &keys,
        Arc::clone(&denylist),
        Arc::clone(&freshness),
        clock,
    ));
    // The channel the broadcast design listened on, with the capacity it had.
    let changes = broadcast::channel(64).0;
    let (stop, stopping) = watch::channel(false);
    let info = ServiceInfo {
        name: "bench".into(),
        mode: "nats",
    };
    Sidecar {
        service: VerifierService::new(Arc::clone(&verifier), keys, info, stopping),
        verifier,
        denylist,
        freshness,
        changes,
        stop,
        design,
    }
}

impl Sidecar {
    /// Opens a Watch of `subject` (issued a minute ago, so older cut-offs pass).
    async fn open(&self, subject: String, issued_at: i64) -> Notices {
        match self.design {
            Design::Registry => {
                let request = tonic::Request::new(pb::WatchRequest {
                    issuer: ISS.into(),
                    subject,
                    issued_at: Some(issued_at),
                    ..Default::default()
                });
                self.service
                    .watch(request)
                    .await
                    .expect("Watch accepts an issuer and subject")
                    .into_inner()
            }
            Design::Broadcast => self.open_broadcast(subject, issued_at),
        }
    }

    /// The Watch task as it was before the registry (grpc.rs before issue 10 item 5).
    fn open_broadcast(&self, subject: String, issued_at: i64) -> Notices {
        let mut changes = self.changes.subscribe();
        let stopping = self.stop.subscribe();
        let verifier = Arc::clone(&self.verifier);
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let facts = TokenFacts {
                issuer: ISS,
                subject: Some(&subject),
                issued_at: Some(issued_at),
                ..TokenFacts::default()
            };
            loop {
                let (revocation, freshness) = verifier.check(&facts);
                if let Some(r) = revocation {
                    let notice = pb::RevocationNotice {
                        revocation: Some(denylist_sidecar::grpc::revocation_to_proto(&r)),
                        denylist_sequence: freshness.sequence,
                    };
                    let _ = tx.send(Ok(notice)).await;
                    return;
                }
                tokio::select! {
                    () = tx.closed() => return,
                    () = stopped(stopping.clone()) => return,
                    changed = changes.recv() => match changed {
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

async fn stopped(mut stopping: watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

/// The readers of one case's streams. Each stream is read by a task of its own, as
/// tonic does per stream.
struct Readers {
    sidecar: Arc<Sidecar>,
    issued_at: i64,
    base: Instant,
    /// When revocation k (of subject k) was applied, ns since `base` (0: not yet).
    applied_at: Arc<Vec<AtomicU64>>,
    latencies: parking_lot::Mutex<Vec<f64>>,
    received: AtomicUsize,
    next_subject: AtomicUsize,
}

impl Readers {
    /// Reads the stream of subject `index`. On a notice: records its latency and opens
    /// a stream for a fresh subject in its place.
    fn read(
        self: Arc<Self>,
        index: usize,
        mut notices: Notices,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move {
            let Some(Ok(_notice)) = notices.next().await else {
                return;
            };
            let at = self.base.elapsed().as_nanos() as u64;
            if let Some(applied) = self.applied_at.get(index) {
                let applied = applied.load(Ordering::Acquire);
                if applied > 0 {
                    self.latencies.lock().push((at - applied) as f64 / 1000.0);
                }
            }
            self.received.fetch_add(1, Ordering::Relaxed);
            let fresh = self.next_subject.fetch_add(1, Ordering::Relaxed);
            let stream = self.sidecar.open(subject(fresh), self.issued_at).await;
            tokio::spawn(Arc::clone(&self).read(fresh, stream));
        })
    }
}

/// Whole-process CPU time so far, ns: every thread's time on a CPU.
fn process_cpu_ns() -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let path = task.expect("task entry").path().join("schedstat");
        // A thread that ended between the listing and the read has no file any more.
        if let Ok(text) = std::fs::read_to_string(path) {
            total += text
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

fn subject(i: usize) -> String {
    format!("user-{i:06}")
}

fn event(id: String, kind: RuleKind, target: String, cutoff: i64, now_ms: i64) -> Event {
    Event {
        event_id: id,
        action: Action::Revoke(Revoke {
            kind,
            issuer: ISS.into(),
            targets: vec![target],
            cutoff,
            expires_at: None,
        }),
        reason: "bench".into(),
        actor: "bench".into(),
        created_at_ms: now_ms,
    }
}

/// What one case measured.
struct Outcome {
    /// Median CPU per revocation over the windows, µs.
    cpu_us: f64,
    /// Revocations applied per second, achieved.
    rate: f64,
    /// Median and p99 wake latency, µs (matching case only).
    latency_us: Option<(f64, f64)>,
    /// Notices received / revocations that should have produced one.
    notices: (usize, usize),
}

struct Params {
    rate: u64,
    windows: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn run_case(
    rt: &tokio::runtime::Runtime,
    design: Design,
    watchers: usize,
    matching: Matching,
    params: &Params,
) -> Outcome {
    let dir = tempfile::tempdir().expect("temp dir");
    let sidecar = Arc::new(sidecar(rt, dir.path(), design));
    let now = SystemClock.now_secs();
    let issued_at = now - 60;
    let total = params.rate as usize * (params.windows + 1);
    // When revocation k was applied, ns since `base` (0: not yet).
    let base = Instant::now();
    let applied_at: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());

    let readers = Arc::new(Readers {
        sidecar: Arc::clone(&sidecar),
        issued_at,
        base,
        applied_at: Arc::clone(&applied_at),
        latencies: parking_lot::Mutex::new(Vec::with_capacity(total)),
        received: AtomicUsize::new(0),
        next_subject: AtomicUsize::new(watchers),
    });
    rt.block_on(async {
        for i in 0..watchers {
            let stream = sidecar.open(subject(i), issued_at).await;
            tokio::spawn(Arc::clone(&readers).read(i, stream));
        }
    });
    if design == Design::Registry {
        assert_eq!(sidecar.denylist.watchers().watchers(), watchers);
    }

    // Built up front: the applier's CPU is then only what a follower's apply costs.
    let now_ms = SystemClock.now_ms();
    let events: Vec<Event> = (0..total)
        .map(|k| match matching {
            Matching::None => event(
                format!("e-{k}"),
                RuleKind::Jti,
                format!("nobody-{k}"),
                0,
                now_ms,
            ),
            Matching::One => event(format!("e-{k}"), RuleKind::Subject, subject(k), now, now_ms),
        })
        .collect();
    let windows: Vec<(u64, u64, Duration)> = {
        let sidecar = Arc::clone(&sidecar);
        let applied_at = Arc::clone(&applied_at);
        let rate = params.rate;
        let per_window = rate as usize;
        let applier = std::thread::spawn(move || {
            let interval = Duration::from_nanos(1_000_000_000 / rate);
            let start = Instant::now();
            let mut windows = Vec::new();
            let mut window_start = (process_cpu_ns(), Instant::now());
            for (k, event) in events.iter().enumerate() {
                let due = start + interval * k as u32;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                applied_at[k].store(base.elapsed().as_nanos().max(1) as u64, Ordering::Release);
                sidecar.denylist.apply(event);
                let seq = k as u64 + 1;
                sidecar.freshness.set_sequence(seq);
                let _ = sidecar.changes.send(seq);
                if (k + 1) % per_window == 0 {
                    let cpu = process_cpu_ns();
                    let at = Instant::now();
                    // The first window warms up (allocations, runs merging).
                    if k + 1 > per_window {
                        windows.push((
                            cpu - window_start.0,
                            per_window as u64,
                            at - window_start.1,
                        ));
                    }
                    window_start = (cpu, at);
                }
            }
            windows
        });
        applier.join().expect("the applier does not panic")
    };
    // Let the last notices arrive (bounded), then stop every stream.
    let expected = if matching == Matching::One { total } else { 0 };
    let deadline = Instant::now() + Duration::from_secs(30);
    while readers.received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    sidecar.stop.send_replace(true);
    if design == Design::Registry {
        let registry = sidecar.denylist.watchers();
        let deadline = Instant::now() + Duration::from_secs(30);
        while registry.watchers() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            (registry.watchers(), registry.keys()),
            (0, 0),
            "every stream ended and unregistered"
        );
    }

    let mut per_revocation: Vec<f64> = windows
        .iter()
        .map(|(cpu, n, _)| *cpu as f64 / 1000.0 / *n as f64)
        .collect();
    per_revocation.sort_by(f64::total_cmp);
    let elapsed: Duration = windows.iter().map(|w| w.2).sum();
    let applied: u64 = windows.iter().map(|w| w.1).sum();
    let mut latencies = std::mem::take(&mut *readers.latencies.lock());
    latencies.sort_by(f64::total_cmp);
    Outcome {
        cpu_us: percentile(&per_revocation, 0.5),
        rate: applied as f64 / elapsed.as_secs_f64(),
        latency_us: (!latencies.is_empty())
            .then(|| (percentile(&latencies, 0.5), percentile(&latencies, 0.99))),
        notices: (readers.received.load(Ordering::Relaxed), expected),
    }
}

fn main() {
    let env_list = |name: &str, default: &str| -> Vec<usize> {
        std::env::var(name)
            .unwrap_or_else(|_| default.to_owned())
            .split(',')
            .map(|s| s.trim().parse().expect("a number"))
            .collect()
    };
    let counts = env_list("WATCH_COUNTS", "0,1000,10000");
    let params = Params {
        rate: env_list("WATCH_RATE", "1000")[0] as u64,
        windows: env_list("WATCH_WINDOWS", "5")[0],
    };
    // The sidecar's runtime on these 2-core machines: one worker per core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let designs: Vec<Design> = std::env::var("WATCH_DESIGNS")
        .unwrap_or_else(|_| "registry,broadcast".to_owned())
        .split(',')
        .map(|d| match d.trim() {
            "registry" => Design::Registry,
            "broadcast" => Design::Broadcast,
            other => panic!("WATCH_DESIGNS: unknown design {other:?}"),
        })
        .collect();
    let repeats = env_list("WATCH_REPEATS", "3")[0].max(1);
    println!(
        "{} revocations/s; per case {} one-second windows (median window), repeated {repeats} times \
         interleaved (median of the repeats, range in brackets)\n",
        params.rate, params.windows
    );
    let mut cases = Vec::new();
    for &design in &designs {
        for matching in [Matching::None, Matching::One] {
            for &n in &counts {
                if !(matching == Matching::One && n == 0) {
                    cases.push((design, matching, n));
                }
            }
        }
    }
    let mut outcomes: Vec<Vec<Outcome>> = cases.iter().map(|_| Vec::new()).collect();
    for _ in 0..repeats {
        for (i, &(design, matching, n)) in cases.iter().enumerate() {
            outcomes[i].push(run_case(&rt, design, n, matching, &params));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (percentile(&v, 0.5), v[0], v[v.len() - 1])
    };
    println!(
        "| design | streams | revocations match | CPU / revocation | applied/s | wake latency p50 / p99 | notices |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|");
    let mut cpu = std::collections::HashMap::new();
    for (&(design, matching, n), runs) in cases.iter().zip(&outcomes) {
        let (cpu_us, cpu_min, cpu_max) = median(runs.iter().map(|o| o.cpu_us).collect());
        cpu.insert((design as u8, matching as u8, n), cpu_us);
        let (rate, _, _) = median(runs.iter().map(|o| o.rate).collect());
        let latency = if runs.iter().all(|o| o.latency_us.is_some()) {
            let p50 = median(
                runs.iter()
                    .filter_map(|o| o.latency_us)
                    .map(|l| l.0)
                    .collect(),
            )
            .0;
            let p99 = median(
                runs.iter()
                    .filter_map(|o| o.latency_us)
                    .map(|l| l.1)
                    .collect(),
            )
            .0;
            format!("{p50:.0} / {p99:.0} µs")
        } else {
            "—".to_owned()
        };
        let notices: usize = runs.iter().map(|o| o.notices.0).sum();
        let expected: usize = runs.iter().map(|o| o.notices.1).sum();
        println!(
            "| {} | {n} | {} | {cpu_us:.1} µs [{cpu_min:.1}–{cpu_max:.1}] | {rate:.0} | {latency} | {notices}/{expected} |",
            match design {
                Design::Registry => "registry",
                Design::Broadcast => "broadcast (before)",
            },
            match matching {
                Matching::None => "none",
                Matching::One => "one stream each",
            },
        );
    }
    println!();
    let (lo, hi) = (
        counts.iter().copied().min().unwrap_or(0),
        counts.iter().copied().max().unwrap_or(0),
    );
    let lo_one = counts
        .iter()
        .copied()
        .filter(|&n| n > 0)
        .min()
        .unwrap_or(hi);
    for (design, name) in [
        (Design::Registry, "registry"),
        (Design::Broadcast, "broadcast"),
    ] {
        let ratio = |m: u8, a: usize, b: usize| match (
            cpu.get(&(design as u8, m, b)),
            cpu.get(&(design as u8, m, a)),
        ) {
            (Some(x), Some(y)) if *y > 0.0 => format!("{:.2}", x / y),
            _ => "—".into(),
        };
        println!(
            "{name}: CPU per revocation, {hi} streams vs {lo}: {} (match none); {hi} vs {lo_one}: {} (match one)",
            ratio(Matching::None as u8, lo, hi),
            ratio(Matching::One as u8, lo_one, hi),
        );
    }
}
