//! The HTTP admin listener: `/livez`, `/readyz`, `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::freshness::Freshness;

#[derive(Clone)]
struct AdminState {
    freshness: Arc<Freshness>,
    metrics: Option<PrometheusHandle>,
}

/// The admin router.
pub fn router(freshness: Arc<Freshness>, metrics: Option<PrometheusHandle>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(AdminState { freshness, metrics })
}

/// 200 once the denylist has caught up and is not stale under `fail_closed`.
async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    let v = s.freshness.view();
    if s.freshness.serving() {
        (StatusCode::OK, format!("ready sequence={}\n", v.sequence))
    } else if !v.ready {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the denylist is still loading\n".to_owned(),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: the denylist is stale (age {} ms) and the policy is fail_closed\n",
                v.age_ms
            ),
        )
    }
}

async fn render_metrics(State(s): State<AdminState>) -> impl IntoResponse {
    match &s.metrics {
        Some(handle) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        ),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain")],
            "metrics recorder not installed\n".to_owned(),
        ),
    }
}
