//! HTTP endpoints on the metrics listener.

use std::net::SocketAddr;

use axum::extract::{Path, State};
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
        // Alias names hold slashes: the rest of the path is the alias.
        .route("/status/alias/{*alias}", get(alias_status))
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

async fn alias_status(State(s): State<AppState>, Path(alias): Path<String>) -> impl IntoResponse {
    match s.engine.alias_status(&alias) {
        Some(st) => (StatusCode::OK, Json(serde_json::json!(st))),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("the desired state does not know {alias:?}") })),
        ),
    }
}
