//! The runtime's HTTP server on `DP_HTTP_PORT`: `/metrics` (Prometheus text), `/healthz`
//! (the process serves requests) and `/readyz` (the role is connected: the consumer joined
//! its group or the producer reached the brokers; and no checkpoint is failing against a
//! sink, so a pipeline whose lake or index refuses writes shows unready pods and the
//! operator reports it Degraded; the 503 body then says which partition, which sink and
//! what it answered). Does network I/O.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// The routes, separate from binding so tests can drive them directly.
pub fn router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready_handler))
        .with_state(metrics)
}

async fn metrics_handler(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

async fn ready_handler(State(metrics): State<Metrics>) -> impl IntoResponse {
    readiness(metrics.is_ready(), metrics.sinks_failing().as_deref())
}

/// The `/readyz` answer (`sink_failure`: why checkpoints are failing, if they are).
pub fn readiness(connected: bool, sink_failure: Option<&str>) -> (StatusCode, String) {
    match (connected, sink_failure) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "not ready".to_string()),
        (true, Some(reason)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "checkpoints failing, retried until they succeed: {reason} (see the logs and datapipeline_process_sink_errors_total)"
            ),
        ),
        (true, None) => (StatusCode::OK, "ready".to_string()),
    }
}

/// Binds `0.0.0.0:port` and serves in a background task; returns the bound address
/// (port 0 picks a free one). Binding errors are returned, serving errors logged.
pub async fn serve(port: u16, metrics: Metrics) -> Result<SocketAddr> {
    let listener = TcpListener::bind(("0.0.0.0", port))
        .await
        .map_err(|e| Error::Http(format!("cannot listen on port {port}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Http(format!("listener address: {e}")))?;
    let app = router(metrics);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "http server stopped");
        }
    });
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string();
        (status, body)
    }

    #[tokio::test]
    async fn probes_and_metrics() {
        let metrics = Metrics::new("process");
        let addr = serve(0, metrics.clone()).await.unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], addr.port()));
        assert_eq!(get(addr, "/healthz").await, (200, "ok".to_string()));
        assert_eq!(get(addr, "/readyz").await.0, 503);
        metrics.set_ready(true);
        assert_eq!(get(addr, "/readyz").await.0, 200);
        metrics.set_sinks_failing(Some("partition 3: search: bulk: HTTP 401".into()));
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert_eq!(
            body,
            "checkpoints failing, retried until they succeed: partition 3: search: bulk: HTTP 401 \
             (see the logs and datapipeline_process_sink_errors_total)"
        );
        metrics.set_sinks_failing(None);
        assert_eq!(get(addr, "/readyz").await.0, 200);
        metrics.events_in.inc_by(5);
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            body.contains("datapipeline_process_events_in_total 5"),
            "{body}"
        );
    }
}
