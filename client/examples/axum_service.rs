//! An HTTP service whose routes are guarded by the denylist sidecar.
//!
//! ```text
//! DENYLIST_SOCKET=/tmp/denylist-demo/sidecar.sock \
//!   cargo run -p denylist-client --example axum_service -- 127.0.0.1:8080
//! curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/me
//! ```
//!
//! `/me` answers with the verified claims; a missing, invalid or revoked token gets 401 with
//! the reason, and an unreachable, not-ready or stale sidecar gets 503 — all answered by
//! [`VerifyLayer`] before the handler runs. `/healthz` is outside the layer.

use std::net::SocketAddr;

use axum::routing::get;
use axum::{Extension, Json, Router};
use denylist_client::{Client, Freshness, VerifyLayer, pb};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listen: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:8080")
        .parse()?;
    // Lazy: in a pod the service may start before its sidecar; requests in between get 503.
    let sidecar = Client::lazy_from_env();
    let app = Router::new()
        .route("/me", get(me))
        // `route_layer` guards the routes above it; `/healthz` below stays open.
        .route_layer(VerifyLayer::new(sidecar))
        .route("/healthz", get(|| async { "ok" }));

    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on http://{listen}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            tokio::signal::ctrl_c().await.ok();
        })
        .await?;
    Ok(())
}

/// The layer put the verified claims (and the denylist's freshness) into the request.
async fn me(
    Extension(claims): Extension<pb::Claims>,
    Extension(freshness): Extension<Freshness>,
) -> Json<Value> {
    Json(json!({
        "issuer": claims.iss,
        "subject": claims.sub,
        "token_id": claims.jti,
        "expires": claims.exp,
        "denylist_sequence": freshness.denylist_sequence,
        "denylist_stale": freshness.stale,
    }))
}
