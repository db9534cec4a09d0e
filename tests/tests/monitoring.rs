//! The operator's view, checked: `deploy/monitoring`'s alert rules pass `promtool check
//! rules` and their unit tests (`promtool test rules`); `prometheusrule.yaml` carries
//! exactly the groups of `alerts.yaml`; every alert is documented and unit-tested both
//! ways; and every metric a dashboard query or an alert reads is exported by a real
//! sidecar (fleet mode, against a real nats-server, after a Verify and a revocation).
//!
//! promtool comes from `scripts/promtool.sh` (on PATH, or Debian's `prometheus`
//! package installed as root); a missing promtool fails the test with its message.

#[path = "monitoring/promql.rs"]
mod promql;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::Context as _;
use denylist_proto::events::RuleKind;
use denylist_proto::pb::Reason;
use denylist_tests::tokens::ISSUER;
use denylist_tests::{Fleet, STEP, binaries, events, unique, wait_for, within};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `deploy/monitoring` in this checkout.
fn monitoring_dir() -> PathBuf {
    binaries::repo_root().join("deploy/monitoring")
}

/// Reads a YAML file of `deploy/monitoring` as JSON values (for comparison and walking).
fn read_yaml(name: &str) -> Value {
    let path = monitoring_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn read_json(name: &str) -> Value {
    let path = monitoring_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The path of promtool, from `scripts/promtool.sh` (once per test process).
fn promtool() -> anyhow::Result<PathBuf> {
    static PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PATH.get_or_init(|| {
        let script = binaries::repo_root().join("scripts/promtool.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed ({}): {}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// Runs promtool with `args` in `dir`; fails with its whole output unless it succeeds.
fn run_promtool(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let promtool = promtool()?;
    let out = Command::new(&promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("running {}", promtool.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(
        out.status.success(),
        "`promtool {}` in {} failed ({}):\n{text}",
        args.join(" "),
        dir.display(),
        out.status
    );
    Ok(text)
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() -> anyhow::Result<()> {
    let dir = monitoring_dir();
    let checked = run_promtool(&dir, &["check", "rules", "alerts.yaml"])?;
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run_promtool(&dir, &["test", "rules", "alerts.test.yaml"])?;
    assert!(tested.contains("SUCCESS"), "{tested}");

    // The PrometheusRule's groups, as a rule file of their own, pass the same check.
    let rule = read_yaml("prometheusrule.yaml");
    let scratch = tempfile::tempdir()?;
    let file = scratch.path().join("prometheusrule-groups.yaml");
    std::fs::write(
        &file,
        serde_json::to_string(&serde_json::json!({ "groups": rule["spec"]["groups"] }))?,
    )?;
    run_promtool(
        scratch.path(),
        &["check", "rules", "prometheusrule-groups.yaml"],
    )?;
    Ok(())
}

#[test]
fn the_prometheus_rule_carries_exactly_the_groups_of_alerts_yaml() {
    let alerts = read_yaml("alerts.yaml");
    let rule = read_yaml("prometheusrule.yaml");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["kind"], "PrometheusRule");
    assert!(rule["metadata"]["name"].is_string(), "{rule}");
    assert_eq!(
        alerts.as_object().map(|o| o.keys().collect::<Vec<_>>()),
        Some(vec![&"groups".to_owned()]),
        "alerts.yaml is a plain rule file: `groups` only"
    );
    assert_eq!(
        rule["spec"].as_object().map(|o| o.len()),
        Some(1),
        "the PrometheusRule's spec is `groups` only"
    );
    assert!(
        rule["spec"]["groups"] == alerts["groups"],
        "deploy/monitoring/prometheusrule.yaml differs from alerts.yaml: \
         run deploy/monitoring/generate-prometheusrule.sh"
    );
}

/// Every alerting rule of alerts.yaml.
fn alert_rules() -> Vec<Value> {
    let alerts = read_yaml("alerts.yaml");
    let rules: Vec<Value> = alerts["groups"]
        .as_array()
        .expect("groups is a list")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules is a list").clone())
        .collect();
    assert!(!rules.is_empty(), "alerts.yaml has no rules");
    rules
}

/// GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to `-`.
fn heading_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_alert_is_labelled_documented_and_unit_tested_both_ways() {
    let readme_path = monitoring_dir().join("README.md");
    let readme = std::fs::read_to_string(&readme_path).expect("deploy/monitoring/README.md");
    let anchors: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| heading_anchor(l.trim_start_matches('#')))
        .collect();

    // alertname -> (cases where it fires, cases where it must not).
    let tests = read_yaml("alerts.test.yaml");
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for test in tests["tests"].as_array().expect("tests is a list") {
        for case in test["alert_rule_test"].as_array().into_iter().flatten() {
            let name = case["alertname"].as_str().expect("alertname").to_owned();
            let fires = case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
            let entry = cases.entry(name).or_default();
            if fires {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
    }

    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for rule in alert_rules() {
        let Some(name) = rule["alert"].as_str() else {
            continue;
        };
        names.insert(name.to_owned());
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        if !["critical", "warning"].contains(&severity) {
            problems.push(format!(
                "{name}: severity {severity:?} is not critical or warning"
            ));
        }
        for annotation in ["summary", "description"] {
            if rule["annotations"][annotation]
                .as_str()
                .is_none_or(|s| s.trim().is_empty())
            {
                problems.push(format!("{name}: no {annotation} annotation"));
            }
        }
        let runbook = rule["annotations"]["runbook"].as_str().unwrap_or_default();
        match runbook.strip_prefix("deploy/monitoring/README.md#") {
            Some(anchor) if anchors.contains(anchor) => {}
            Some(anchor) => problems.push(format!(
                "{name}: runbook anchor #{anchor} is not a heading of deploy/monitoring/README.md"
            )),
            None => problems.push(format!(
                "{name}: runbook {runbook:?} does not point into deploy/monitoring/README.md"
            )),
        }
        match cases.get(name) {
            Some((fires, quiet)) if *fires > 0 && *quiet > 0 => {}
            other => problems.push(format!(
                "{name}: alerts.test.yaml needs a case where it fires and one where it must not \
                 (has {other:?})"
            )),
        }
    }
    for tested in cases.keys() {
        if !names.contains(tested) {
            problems.push(format!(
                "alerts.test.yaml tests {tested}, which alerts.yaml lacks"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every query of the dashboard: `(where, expr)`, panel targets and variable queries.
/// Also checks the model's shape: a Prometheus datasource variable that every panel uses.
fn dashboard_queries() -> Vec<(String, Result<BTreeSet<String>, String>)> {
    let dashboard = read_json("dashboard.json");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let datasource = variables
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(datasource["query"], "prometheus", "{datasource}");
    let uses = format!("${{{}}}", datasource["name"].as_str().expect("its name"));

    let mut queries = Vec::new();
    for variable in variables.iter().filter(|v| v["type"] == "query") {
        let query = variable["query"]["query"]
            .as_str()
            .or_else(|| variable["query"].as_str())
            .expect("a query variable has a query");
        let at = format!("variable ${}", variable["name"].as_str().unwrap_or("?"));
        assert_eq!(variable["datasource"]["uid"], uses.as_str(), "{at}");
        queries.push((at, promql::variable_query_metric_names(query)));
    }

    let mut panels: Vec<&Value> = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        panels.push(panel);
        // Collapsed rows hold their panels.
        panels.extend(panel["panels"].as_array().into_iter().flatten());
    }
    for panel in panels.into_iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap_or("?");
        assert_eq!(
            panel["datasource"]["uid"],
            uses.as_str(),
            "panel {title:?} does not use the datasource variable"
        );
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
            queries.push((format!("panel {title:?}"), promql::metric_names(expr)));
        }
    }
    queries
}

/// Every alert and recording rule expression: `(where, names)`.
fn rule_queries() -> Vec<(String, Result<BTreeSet<String>, String>)> {
    alert_rules()
        .iter()
        .map(|rule| {
            let at = rule["alert"]
                .as_str()
                .or_else(|| rule["record"].as_str())
                .map_or_else(|| "a rule".to_owned(), |n| format!("rule {n}"));
            let expr = rule["expr"].as_str().expect("every rule has an expr");
            (at, promql::metric_names(expr))
        })
        .collect()
}

/// The queries whose metrics are not in `exported`, one line each (empty: all resolve).
/// A query naming no metric at all is a problem too: it checks nothing.
fn unresolved(
    queries: &[(String, Result<BTreeSet<String>, String>)],
    exported: &BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (at, names) in queries {
        match names {
            Err(e) => problems.push(format!("{at}: {e}")),
            Ok(names) if names.is_empty() => problems.push(format!("{at}: names no metric")),
            Ok(names) => {
                for name in names.iter().filter(|n| !exported.contains(*n)) {
                    problems.push(format!("{at}: {name} is not exported"));
                }
            }
        }
    }
    problems
}

#[test]
fn a_misspelt_metric_in_a_query_is_reported() {
    let exported: BTreeSet<String> = ["a_total", "b_seconds_bucket"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let queries = vec![
        (
            "good".to_owned(),
            promql::metric_names(
                "sum(rate(a_total[5m])) / histogram_quantile(0.5, sum by (le) (rate(b_seconds_bucket[5m])))",
            ),
        ),
        ("typo".to_owned(), promql::metric_names("rate(a_totl[5m])")),
        // A classic histogram has no series under its base name.
        (
            "base name".to_owned(),
            promql::metric_names("rate(b_seconds[5m])"),
        ),
        ("constant".to_owned(), promql::metric_names("vector(1)")),
    ];
    assert_eq!(
        unresolved(&queries, &exported),
        [
            "typo: a_totl is not exported",
            "base name: b_seconds is not exported",
            "constant: names no metric",
        ]
    );
}

#[test]
fn the_dashboard_is_a_grafana_model_on_a_prometheus_datasource_variable() {
    let dashboard = read_json("dashboard.json");
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 30));
    let queries = dashboard_queries();
    assert!(queries.len() >= 7, "{} queries", queries.len());
    // The panels the operator's view promises, by the metric each one reads.
    let read: BTreeSet<String> = queries
        .iter()
        .filter_map(|(_, names)| names.as_ref().ok())
        .flatten()
        .cloned()
        .collect();
    for metric in [
        "denylist_age_seconds",
        "denylist_stale",
        "denylist_stream_last_sequence",
        "denylist_sequence",
        "denylist_verifications_total",
        "denylist_verify_duration_seconds_bucket",
        "denylist_events_applied_total",
        "denylist_publish_to_apply_seconds_bucket",
        "denylist_key_fetches_total",
        "denylist_events_rejected_total",
    ] {
        assert!(read.contains(metric), "no dashboard panel reads {metric}");
    }
}

/// `GET /metrics` on the admin listener (HTTP/1.0: the body is everything after the
/// headers, no chunking).
async fn scrape(admin: SocketAddr) -> anyhow::Result<String> {
    let mut stream = within(
        "connect to the admin listener",
        tokio::net::TcpStream::connect(admin),
    )
    .await??;
    within(
        "send the /metrics request",
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n"),
    )
    .await??;
    let mut response = Vec::new();
    within("read /metrics", stream.read_to_end(&mut response)).await??;
    let response = String::from_utf8(response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("an HTTP response without a header end")?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "/metrics answered {head}"
    );
    Ok(body.to_owned())
}

/// Sample lines of an exposition: `(name, labels text, value)`.
fn samples(exposition: &str) -> Vec<(String, String, f64)> {
    exposition
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            Some((name.to_owned(), labels.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The value of the sample `name` whose labels contain `labels` (e.g. `reason="REASON_OK"`).
fn value(samples: &[(String, String, f64)], name: &str, labels: &str) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| n == name && l.contains(labels))
        .map(|(_, _, v)| *v)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_and_alert_query_names_a_metric_a_live_sidecar_exports()
-> anyhow::Result<()> {
    // Parse first: a broken file fails at once, not after starting processes.
    let mut queries = dashboard_queries();
    queries.extend(rule_queries());

    let fleet = Fleet::start_with(1, |o| o.admin = true).await?;
    let sidecar = &fleet.sidecars[0];
    let admin = sidecar
        .admin_addr()
        .context("the sidecar has an admin listener")?;

    // Exercise it: a valid token, a revocation, the revoked token.
    let jti = unique("monitored");
    let token = fleet.issuer.token().jti(&jti).mint();
    fleet.expect_everywhere(&token, Reason::Ok).await?;
    fleet
        .publish(&events::revoke(RuleKind::Jti, ISSUER, &[&jti]))
        .await?;
    fleet.expect_everywhere(&token, Reason::Revoked).await?;

    // The counters show what was exercised (a scrape is a snapshot: wait for it).
    let exported = wait_for(STEP, "/metrics to show the Verify calls and the revocation", || async {
        let body = scrape(admin).await.map_err(|e| e.to_string())?;
        let samples = samples(&body);
        let seen = [
            value(&samples, "denylist_verifications_total", "reason=\"REASON_OK\""),
            value(&samples, "denylist_verifications_total", "reason=\"REASON_REVOKED\""),
            value(&samples, "denylist_events_applied_total", ""),
            value(&samples, "denylist_stream_last_sequence", ""),
            // Published after the sidecar started, so it is propagation and counted.
            value(&samples, "denylist_publish_to_apply_seconds_count", ""),
        ];
        if seen.iter().all(|v| v.is_some_and(|v| v >= 1.0)) {
            Ok(samples.into_iter().map(|(name, _, _)| name).collect::<BTreeSet<_>>())
        } else {
            Err(format!(
                "[verify ok, verify revoked, applied, stream last sequence, publish→apply count] = {seen:?}"
            ))
        }
    })
    .await?;

    let problems = unresolved(&queries, &exported);
    assert!(
        problems.is_empty(),
        "queries naming metrics the sidecar does not export:\n{}\n\nexported: {exported:?}",
        problems.join("\n")
    );
    Ok(())
}
