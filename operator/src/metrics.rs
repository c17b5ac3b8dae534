//! The operator's Prometheus metrics (reconciles by result, their duration, failures by a
//! fixed category) and the HTTP server exposing `/metrics` and `/healthz`. Metric labels
//! come from fixed category strings, never from error messages.

use std::{net::SocketAddr, sync::Arc};

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

/// How a reconcile ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every child applied, status written if it changed.
    Applied,
    /// Measured only (nothing changed since the last apply), status written if it changed.
    Observed,
    /// Stopped before applying by a problem the user must fix (category of the problem).
    Blocked(&'static str),
    /// Failed with an error and will be retried (category of the error).
    Failed(&'static str),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabels {
    category: &'static str,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    failures: Family<CategoryLabels, Counter>,
    duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("datapipeline_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let failures = Family::<CategoryLabels, Counter>::default();
        // 5 ms .. ~20 s
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 13));
        registry.register(
            "reconciles",
            "Reconciles of DataPipelines by result (applied, blocked, failed)",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciles that were blocked or failed, by category",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of DataPipeline reconciles",
            duration.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            duration,
        }
    }

    pub fn record(&self, outcome: Outcome, seconds: f64) {
        self.duration.observe(seconds);
        let result = match outcome {
            Outcome::Applied => "applied",
            Outcome::Observed => "observed",
            Outcome::Blocked(category) => {
                self.failures
                    .get_or_create(&CategoryLabels { category })
                    .inc();
                "blocked"
            }
            Outcome::Failed(category) => {
                self.failures
                    .get_or_create(&CategoryLabels { category })
                    .inc();
                "failed"
            }
        };
        self.reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

async fn metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(self::metrics))
        .route("/healthz", get(healthz))
        .with_state(metrics)
}

/// Serves `/metrics` and `/healthz` until the process ends.
pub async fn serve(address: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    axum::serve(listener, router(metrics)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_counted_by_fixed_labels() {
        let metrics = Metrics::new();
        metrics.record(Outcome::Applied, 0.01);
        metrics.record(Outcome::Applied, 0.02);
        metrics.record(Outcome::Blocked("secret_not_found"), 0.001);
        metrics.record(Outcome::Failed("apply"), 0.5);
        let text = metrics.render();
        for line in [
            "datapipeline_operator_reconciles_total{result=\"applied\"} 2",
            "datapipeline_operator_reconciles_total{result=\"blocked\"} 1",
            "datapipeline_operator_reconciles_total{result=\"failed\"} 1",
            "datapipeline_operator_reconcile_failures_total{category=\"secret_not_found\"} 1",
            "datapipeline_operator_reconcile_failures_total{category=\"apply\"} 1",
            "datapipeline_operator_reconcile_duration_seconds_count 4",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[tokio::test]
    async fn http_endpoints() {
        let metrics = Arc::new(Metrics::new());
        metrics.record(Outcome::Applied, 0.01);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let server = tokio::spawn(async move { axum::serve(listener, router(metrics)).await });
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(address)
                .await
                .expect("connect");
            stream
                .write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .expect("write");
            let mut response = String::new();
            stream.read_to_string(&mut response).await.expect("read");
            response
        };
        let health = get("/healthz").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        assert!(health.ends_with("ok"), "{health}");
        let text = get("/metrics").await;
        assert!(
            text.contains("datapipeline_operator_reconciles_total{result=\"applied\"} 1"),
            "{text}"
        );
        server.abort();
    }
}
