//! What one visit found, the input of `compute_status`: either a problem that stops it
//! before anything is applied (missing Secret, impossible spec) or the readiness of the
//! children it applied, why pods cannot start, the pipeline's facts and its measured flow.
//! Pure data passed from the I/O steps to the pure status computation.

use super::pods::PodProblems;
use crate::{
    controller::{
        apply::readiness::ChildrenState,
        autoscale::evaluation::FlowHealth,
        build::names::{selector_labels, selector_string, Role},
        problem::Problem,
        validate::{KafkaMode, ObjectStoreMode, SearchMode, ValidatedPipeline},
    },
    crd::{AutoscalerStatus, SearchEngine, ThroughputStatus},
};

/// Facts about the pipeline that the status reports but that are not children's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineFacts {
    pub paused: bool,
    /// Where an external service lives, for messages (`None` when managed).
    pub kafka_external: Option<String>,
    pub object_store_external: Option<String>,
    pub search_external: Option<String>,
    /// The search engine, managed or external, for messages.
    pub search_engine: SearchEngine,
    /// Label selector of the runtime processing pods.
    pub runtime_selector: String,
    pub name: String,
    pub namespace: String,
}

impl PipelineFacts {
    /// The facts of a validated pipeline.
    pub fn of(plan: &ValidatedPipeline) -> Self {
        Self {
            paused: plan.paused,
            kafka_external: match &plan.kafka.mode {
                KafkaMode::External(k) => Some(k.bootstrap_servers.clone()),
                KafkaMode::Managed(_) => None,
            },
            object_store_external: match &plan.object_store.mode {
                ObjectStoreMode::External(s) => Some(
                    s.endpoint
                        .clone()
                        .unwrap_or_else(|| format!("AWS S3 ({})", s.region)),
                ),
                ObjectStoreMode::Managed(_) => None,
            },
            search_external: match &plan.search.mode {
                SearchMode::External(s) => Some(s.url.clone()),
                SearchMode::Managed(_) => None,
            },
            search_engine: match &plan.search.mode {
                SearchMode::External(s) => s.engine,
                SearchMode::Managed(m) => m.engine,
            },
            runtime_selector: selector_string(&selector_labels(&plan.name, Role::Runtime)),
            name: plan.name.clone(),
            namespace: plan.namespace.clone(),
        }
    }
}

/// The outcome of one reconcile, input of `compute_status`.
// One value per reconcile, passed by reference and never stored: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    /// Nothing was applied.
    Blocked(Problem),
    /// Every child was applied; their readiness and the pipeline's measured throughput.
    Applied {
        children: Box<ChildrenState>,
        /// Why pods cannot start, read this visit (none when every workload was ready).
        pods: PodProblems,
        facts: PipelineFacts,
        /// `None` = not measured this time; the previous measurement stays.
        throughput: Option<ThroughputStatus>,
        /// The autoscaler's decision; `None` when autoscaling is off.
        autoscaler: Option<AutoscalerStatus>,
        /// Lag growth and Kafka reachability.
        flow: FlowHealth,
    },
}
