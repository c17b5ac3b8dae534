//! Operator library: the DataPipeline CRD, its reconciler and the pure builders of its children.

pub mod controller;
pub mod crd;
pub mod error;
pub mod metrics;
