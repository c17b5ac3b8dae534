//! The seam through which Kafka offsets (and the search index's document count) reach the
//! reconciler: the reconciler asks an observer for a snapshot of the pipeline's topics.
//! `offset_reader::KafkaOffsets` reads them from the brokers and the count from the search
//! engine (I/O); `NoThroughput` measures nothing (unit tests, and the mocked-API tests that
//! must not touch a network). No I/O here.

use futures::future::BoxFuture;

use super::throughput::OffsetsSnapshot;
use crate::controller::validate::ValidatedPipeline;

/// The outcome of one attempt to measure a pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Measurement {
    /// Not attempted: the status keeps its previous throughput.
    Skipped,
    Measured(OffsetsSnapshot),
    /// Kafka could not be read; the message says why (and is shown in the status).
    Failed(String),
}

/// Measures a pipeline's topics from outside the runtime.
pub trait ThroughputObserver: Send + Sync {
    fn observe<'a>(&'a self, pipeline: &'a ValidatedPipeline) -> BoxFuture<'a, Measurement>;
}

/// Measures nothing.
pub struct NoThroughput;

impl ThroughputObserver for NoThroughput {
    fn observe<'a>(&'a self, _pipeline: &'a ValidatedPipeline) -> BoxFuture<'a, Measurement> {
        Box::pin(async { Measurement::Skipped })
    }
}

/// Returns a fixed measurement (tests).
pub struct FixedMeasurement(pub std::sync::Mutex<Measurement>);

impl ThroughputObserver for FixedMeasurement {
    fn observe<'a>(&'a self, _pipeline: &'a ValidatedPipeline) -> BoxFuture<'a, Measurement> {
        let measurement = self
            .0
            .lock()
            .map(|m| m.clone())
            .unwrap_or(Measurement::Skipped);
        Box::pin(async move { measurement })
    }
}
