//! What the fleet simulator (`tests/benches/fleet.rs`) needs that does not depend on the
//! sidecar crate: the servers' own counters, read on their HTTP monitoring endpoint
//! ([`crate::NatsServer::monitor_url`]), sampled in the background so that peaks (consumers
//! during a reconnect storm) and counters across a server restart are caught; and the
//! percentiles the results are quoted in.
//!
//! The counters come from the server, not from the followers, so the figures hold
//! whatever the follower code does: `/jsz` `api.total` / `api.errors` (every JetStream API
//! request the server handled, and those it answered with an error), `/jsz` `consumers`,
//! `/varz` `cpu` (percent of one core), `mem` (RSS bytes) and `out_bytes`.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Bound on one monitoring request: a server busy with ten thousand reconnects answers
/// late, and a late sample is simply skipped.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET <base><path>` (plain HTTP/1.0 on loopback) parsed as JSON.
pub async fn get_json(base: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let host = base
        .strip_prefix("http://")
        .with_context(|| format!("{base}: not an http:// URL"))?
        .trim_end_matches('/');
    let body = tokio::time::timeout(HTTP_TIMEOUT, async {
        let mut stream = tokio::net::TcpStream::connect(host).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    })
    .await
    .with_context(|| format!("GET {base}{path}: no answer within {HTTP_TIMEOUT:?}"))??;
    let text = String::from_utf8_lossy(&body);
    let (head, json) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {base}{path}: no body"))?;
    anyhow::ensure!(head.contains(" 200"), "GET {base}{path}: {head}");
    serde_json::from_str(json).with_context(|| format!("GET {base}{path}: not JSON"))
}

/// One reading of a server's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ServerSample {
    /// JetStream API requests handled since the server started (`/jsz` `api.total`).
    pub api_total: u64,
    /// Of those, answered with an error (`/jsz` `api.errors`).
    pub api_errors: u64,
    /// Consumers on this server (`/jsz` `consumers`).
    pub consumers: u64,
    /// CPU, percent of one core, as the server computes it (`/varz` `cpu`).
    pub cpu_percent: f64,
    /// Resident memory, bytes (`/varz` `mem`).
    pub rss_bytes: u64,
    /// Bytes sent to clients and routes since start (`/varz` `out_bytes`).
    pub out_bytes: u64,
    /// Client connections (`/varz` `connections`).
    pub connections: u64,
}

/// Reads `/varz` and `/jsz` of the server whose monitoring endpoint is `base`.
pub async fn sample(base: &str) -> anyhow::Result<ServerSample> {
    let (varz, jsz) = tokio::try_join!(get_json(base, "/varz"), get_json(base, "/jsz"))?;
    let u = |v: &serde_json::Value, path: &[&str]| {
        path.iter()
            .try_fold(v, |v, k| v.get(k))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    Ok(ServerSample {
        api_total: u(&jsz, &["api", "total"]),
        api_errors: u(&jsz, &["api", "errors"]),
        consumers: u(&jsz, &["consumers"]),
        cpu_percent: varz
            .get("cpu")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0),
        rss_bytes: u(&varz, &["mem"]),
        out_bytes: u(&varz, &["out_bytes"]),
        connections: u(&varz, &["connections"]),
    })
}

/// A counter that survives server restarts: the server's counters start again from
/// zero, so a reading below the previous one adds the previous one to a base. (What
/// the server counted between the last sample and its death, at most one sampling
/// interval, is lost.)
#[derive(Debug, Clone, Copy, Default)]
struct Monotonic {
    base: u64,
    last: u64,
}

impl Monotonic {
    fn update(&mut self, reading: u64) {
        if reading < self.last {
            self.base += self.last;
        }
        self.last = reading;
    }

    fn total(self) -> u64 {
        self.base + self.last
    }
}

/// What the sampler has seen of one server.
#[derive(Debug, Clone, Default)]
struct NodeState {
    api_total: Monotonic,
    api_errors: Monotonic,
    out_bytes: Monotonic,
    last: Option<ServerSample>,
}

#[derive(Debug, Default)]
struct SamplerState {
    nodes: Vec<NodeState>,
    peak_consumers: u64,
    peak_cpu_percent: f64,
    peak_rss_bytes: u64,
    cpu_sum: f64,
    cpu_samples: u64,
    samples: u64,
    failed: u64,
}

/// The fleet-wide view of the servers over a window: counters summed over the nodes
/// (restarts included), peaks of the per-sample maximum.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Totals {
    /// JetStream API requests handled by all nodes.
    pub api_total: u64,
    /// JetStream API errors on all nodes.
    pub api_errors: u64,
    /// Bytes sent by all nodes.
    pub out_bytes: u64,
    /// Highest consumer count any node reported in any sample.
    pub peak_consumers: u64,
    /// Highest CPU percent (of one core) any node reported.
    pub peak_cpu_percent: f64,
    /// Highest RSS any node reported, bytes.
    pub peak_rss_bytes: u64,
    /// Mean CPU percent (of one core) over the samples since the last reset, summed
    /// over the nodes.
    pub mean_cpu_percent: f64,
    /// Consumers, CPU and RSS of the last sample (summed over nodes).
    pub last: ServerSample,
    /// Samples taken, and those that failed (a node down or too busy to answer).
    pub samples: u64,
    /// See `samples`.
    pub failed: u64,
}

impl Totals {
    /// What happened between `earlier` and `self` (counters subtracted; peaks, `last`
    /// and sample counts are `self`'s).
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            api_total: self.api_total.saturating_sub(earlier.api_total),
            api_errors: self.api_errors.saturating_sub(earlier.api_errors),
            out_bytes: self.out_bytes.saturating_sub(earlier.out_bytes),
            ..*self
        }
    }
}

/// Samples every node's monitoring endpoint every `every` until dropped.
#[derive(Debug)]
pub struct Sampler {
    state: Arc<Mutex<SamplerState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Starts sampling `monitor_urls` (one per node) every `every`; the first sample is
    /// taken before this returns, so counters have a baseline.
    pub async fn start(monitor_urls: Vec<String>, every: Duration) -> Self {
        let state = Arc::new(Mutex::new(SamplerState {
            nodes: vec![NodeState::default(); monitor_urls.len()],
            ..SamplerState::default()
        }));
        sample_once(&monitor_urls, &state).await;
        let task = tokio::spawn({
            let state = Arc::clone(&state);
            async move {
                let mut ticker = tokio::time::interval(every);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    ticker.tick().await;
                    sample_once(&monitor_urls, &state).await;
                }
            }
        });
        Self { state, task }
    }

    /// Resets the peaks (counters keep running: take [`Sampler::totals`] before and
    /// after and use [`Totals::since`]).
    pub fn reset_peaks(&self) {
        let mut s = lock(&self.state);
        s.peak_consumers = 0;
        s.peak_cpu_percent = 0.0;
        s.peak_rss_bytes = 0;
        s.cpu_sum = 0.0;
        s.cpu_samples = 0;
    }

    /// The totals so far.
    pub fn totals(&self) -> Totals {
        let s = lock(&self.state);
        let mut last = ServerSample::default();
        for n in s.nodes.iter().filter_map(|n| n.last) {
            last.api_total += n.api_total;
            last.api_errors += n.api_errors;
            last.consumers += n.consumers;
            last.cpu_percent += n.cpu_percent;
            last.rss_bytes += n.rss_bytes;
            last.out_bytes += n.out_bytes;
            last.connections += n.connections;
        }
        Totals {
            api_total: s.nodes.iter().map(|n| n.api_total.total()).sum(),
            api_errors: s.nodes.iter().map(|n| n.api_errors.total()).sum(),
            out_bytes: s.nodes.iter().map(|n| n.out_bytes.total()).sum(),
            peak_consumers: s.peak_consumers,
            peak_cpu_percent: s.peak_cpu_percent,
            peak_rss_bytes: s.peak_rss_bytes,
            mean_cpu_percent: if s.cpu_samples == 0 {
                0.0
            } else {
                s.cpu_sum * s.nodes.len() as f64 / s.cpu_samples as f64
            },
            last,
            samples: s.samples,
            failed: s.failed,
        }
    }

    /// Takes one more sample of every node now (for a final reading).
    pub async fn sample_now(&self, monitor_urls: &[String]) {
        sample_once(monitor_urls, &self.state).await;
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<SamplerState>) -> MutexGuard<'_, SamplerState> {
    // A panic while holding it left plain numbers behind: still worth reading.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn sample_once(urls: &[String], state: &Mutex<SamplerState>) {
    let readings = futures::future::join_all(urls.iter().map(|u| sample(u))).await;
    let mut s = lock(state);
    for (i, reading) in readings.into_iter().enumerate() {
        s.samples += 1;
        let Ok(r) = reading else {
            s.failed += 1;
            continue;
        };
        let node = &mut s.nodes[i];
        node.api_total.update(r.api_total);
        node.api_errors.update(r.api_errors);
        node.out_bytes.update(r.out_bytes);
        node.last = Some(r);
        s.peak_consumers = s.peak_consumers.max(r.consumers);
        s.peak_cpu_percent = s.peak_cpu_percent.max(r.cpu_percent);
        s.peak_rss_bytes = s.peak_rss_bytes.max(r.rss_bytes);
        s.cpu_sum += r.cpu_percent;
        s.cpu_samples += 1;
    }
}

/// The `q`-quantile (0..=1) of `values`, nearest rank; 0 when empty.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// CPU time this process has used so far (user + system), seconds, from
/// `/proc/self/stat` (clock ticks of 10 ms, Linux's `USER_HZ`).
pub fn own_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
            let ticks =
                fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
            Some(ticks as f64 / 100.0)
        })
        .unwrap_or(0.0)
}

/// Every sample of `name` in Prometheus text, by the value of its one label (e.g.
/// `reason` of `denylist_stream_info_requests_total{reason="start"}`); an unlabelled
/// sample is keyed `""`.
pub fn samples_by_label(text: &str, name: &str) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (base, labels) = key.split_once('{').unwrap_or((key, ""));
        if base != name {
            continue;
        }
        let label = labels
            .split_once('"')
            .and_then(|(_, rest)| rest.split_once('"'))
            .map_or("", |(v, _)| v);
        if let Ok(v) = value.parse::<f64>() {
            *out.entry(label.to_owned()).or_insert(0.0) += v;
        }
    }
    out
}

/// The resident memory of this process, bytes (`VmRSS` in `/proc/self/status`).
pub fn own_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_survives_a_restart() {
        let mut c = Monotonic::default();
        c.update(10);
        c.update(25);
        c.update(3); // the server restarted and counted 3 since
        c.update(7);
        assert_eq!(c.total(), 32);
    }

    #[test]
    fn samples_are_split_by_their_label() {
        let text = "# TYPE x counter\nx{reason=\"start\"} 3\nx{reason=\"gap\"} 2\nxy 9\nx 1\n";
        let by = samples_by_label(text, "x");
        assert_eq!(by.get("start"), Some(&3.0));
        assert_eq!(by.get("gap"), Some(&2.0));
        assert_eq!(by.get(""), Some(&1.0));
        assert_eq!(by.len(), 3);
    }

    #[test]
    fn this_process_uses_cpu_and_memory() {
        let spin = std::time::Instant::now();
        while own_cpu_seconds() == 0.0 && spin.elapsed() < Duration::from_secs(5) {}
        assert!(own_cpu_seconds() > 0.0);
        assert!(own_rss_bytes() > 0);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
