//! HTTP endpoints on the metrics listener.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio::sync::watch;

use super::metrics::metrics;
use crate::reconcile::Engine;

#[derive(Clone)]
struct AppState {
    engine: Engine,
    ready: watch::Receiver<bool>,
}

/// Binds now (so a busy port fails at start), serves until `shutdown` turns true.
pub async fn serve(
    addr: SocketAddr,
    engine: Engine,
    ready: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(AppState { engine, ready });
    Ok(tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
            tracing::error!(error = %e, "metrics server failed");
        }
    }))
}

async fn metrics_handler() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics().render())
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if *s.ready.borrow() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "rebuilding desired state\n")
    }
}

async fn status(State(s): State<AppState>) -> impl IntoResponse {
    Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "ready": *s.ready.borrow(),
        "targets": s.engine.status(),
    }))
}
