//! The DataPipeline controller, one module per step of a visit, after the Stackable
//! operators' dereference -> validate -> build -> apply: `dereference` reads the Secrets
//! a pipeline names (I/O), `validate` turns it into a plan (pure), `credentials`
//! completes what the managed services need, `build` makes the children (pure), `apply`
//! applies them (I/O), `status` computes (pure) and writes the status, `events` tells the
//! user. `measure` reads a running pipeline's offsets and index count (I/O) and
//! `autoscale` turns them into the runtime's replicas (pure). `reconcile` sequences one
//! visit (an observation or an apply, as `visit` decides), `context` holds what visits
//! share, `watches` runs the controller on its watches; `problem` is what stops a visit.
//! This module only declares them and re-exports the entry points.

pub mod apply;
pub mod autoscale;
pub mod build;
pub mod context;
pub mod credentials;
pub mod dereference;
pub mod events;
pub mod measure;
pub mod pipeline_ca;
pub mod problem;
pub mod reconcile;
pub mod status;
pub mod validate;
pub mod visit;
pub mod watches;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;

pub use self::{
    context::{system_clock, Context, DEFAULT_OBSERVE_INTERVAL},
    reconcile::{backoff, error_policy, reconcile},
    watches::{run, RunConfig},
};
