//! The seam through which measured throughput reaches the status: the reconciler asks an
//! observer, the status keeps the previous measurement when it answers `None`. The Kafka
//! offset reader of the throughput/autoscaling work implements it; until then
//! `NoThroughput` measures nothing.

use futures::future::BoxFuture;

use super::validate::ValidatedPipeline;
use crate::crd::ThroughputStatus;

/// Measures a pipeline's throughput (events/s, lag, totals) from outside the runtime.
pub trait ThroughputObserver: Send + Sync {
    /// The latest measurement, or `None` when there is nothing new to report.
    fn observe<'a>(
        &'a self,
        pipeline: &'a ValidatedPipeline,
    ) -> BoxFuture<'a, Option<ThroughputStatus>>;
}

/// Measures nothing: the status's throughput block stays as it is.
pub struct NoThroughput;

impl ThroughputObserver for NoThroughput {
    fn observe<'a>(
        &'a self,
        _pipeline: &'a ValidatedPipeline,
    ) -> BoxFuture<'a, Option<ThroughputStatus>> {
        Box::pin(async { None })
    }
}
