//! Autoscaling the runtime: `decision` is the lag-driven replica decision (pure), and
//! `evaluation` its wiring, from one measurement and the per-pipeline memory to the
//! status's `throughput` and `autoscaler` blocks and the replica count (pure; the memory
//! lives in the controller's `Context`).

pub mod decision;
pub mod evaluation;
