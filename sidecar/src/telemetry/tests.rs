use metrics_exporter_prometheus::PrometheusBuilder;

use super::*;

/// The sample names (`name` before `{` or the value) of a rendered exposition.
fn sample_names(rendered: &str) -> std::collections::BTreeSet<String> {
    rendered
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn registered_metrics_are_exported_with_zero_values_before_any_use() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        describe_metrics();
        register_common_metrics();
        register_sync_metrics();
    });
    let rendered = handle.render();
    let names = sample_names(&rendered);
    for name in [
        "denylist_verifications_total",
        "denylist_verify_duration_seconds_count",
        "denylist_verify_duration_seconds_sum",
        "denylist_sequence",
        "denylist_stream_last_sequence",
        "denylist_events_applied_total",
        "denylist_events_rejected_total",
        "denylist_sync_errors_total",
        "denylist_sync_gaps_total",
        "denylist_sync_stream_resets_total",
        "denylist_snapshot_loads_total",
        "denylist_publish_to_apply_seconds_count",
    ] {
        assert!(names.contains(name), "{name} missing from:\n{rendered}");
    }
    assert!(
        rendered.contains("denylist_verifications_total{reason=\"REASON_REVOKED\"} 0"),
        "{rendered}"
    );
    assert!(
        !rendered.contains("REASON_UNSPECIFIED"),
        "no verdict carries UNSPECIFIED: {rendered}"
    );
    assert!(
        rendered.contains("denylist_snapshot_loads_total{outcome=\"refused\"} 0"),
        "{rendered}"
    );
    assert!(
        rendered.contains("# HELP denylist_events_rejected_total "),
        "descriptions are rendered: {rendered}"
    );
}

#[test]
fn registering_again_keeps_recorded_values() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        register_sync_metrics();
        metrics::counter!("denylist_events_applied_total").increment(3);
        metrics::gauge!("denylist_stream_last_sequence").set(7.0);
        // A second follower in the same process registers again.
        register_sync_metrics();
    });
    let rendered = handle.render();
    assert!(
        rendered.contains("denylist_events_applied_total 3"),
        "{rendered}"
    );
    assert!(
        rendered.contains("denylist_stream_last_sequence 7"),
        "{rendered}"
    );
}
