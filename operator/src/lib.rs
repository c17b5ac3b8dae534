//! Operator library: the DataPipeline CRD, its reconciler and the pure builders of its children,
//! its metrics and leader election among replicas.

pub mod controller;
pub mod crd;
pub mod error;
pub mod leader;
pub mod metrics;
