//! The `status` of a DataPipeline: what the operator observed. Pure data; computed by
//! `controller::status::compute::compute_status` and written once per reconcile.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of a DataPipeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataPipelineStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Summary of the conditions: Pending, Provisioning, Running, Degraded, Paused or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// KafkaReady, ObjectStoreReady, SearchReady, RuntimeReady and Ready, each with a reason
    /// and a message saying what to do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Health of each component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<ComponentsStatus>,
    /// Events flowing through the pipeline, measured from Kafka.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<ThroughputStatus>,
    /// The lag-driven autoscaler's latest decision and its inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<AutoscalerStatus>,
    /// The generator Job's failures and the operator's recreations of it (present once
    /// it failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_job: Option<IngestJobStatus>,
    /// Runtime processing pods that exist (the `/scale` subresource's status replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Runtime processing pods that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Runtime pods ready / desired, e.g. `2/3` (the Replicas column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_summary: Option<String>,
    /// Label selector of the runtime processing pods (for `/scale` and HPA tooling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

/// Summary of a DataPipeline's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Waiting for something the user must provide (for example a referenced Secret).
    Pending,
    /// Children are being created and have not all become ready yet.
    Provisioning,
    /// Every component is ready.
    Running,
    /// Was running; a component is no longer ready.
    Degraded,
    /// `spec.paused` is true.
    Paused,
    /// The spec cannot be realised; the Ready condition says why.
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Provisioning => "Provisioning",
            Self::Running => "Running",
            Self::Degraded => "Degraded",
            Self::Paused => "Paused",
            Self::Failed => "Failed",
        }
    }
}

/// Health of every component of the pipeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentsStatus {
    pub kafka: ComponentHealth,
    pub object_store: ComponentHealth,
    pub search: ComponentHealth,
    /// The processing pods.
    pub runtime: ComponentHealth,
    /// The ingest role (landing-prefix Deployment or generator Job).
    pub ingest: ComponentHealth,
}

/// Health of one component.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentHealth {
    /// `Managed` (deployed by the operator) or `External`.
    pub mode: String,
    /// Whether the component is ready.
    pub ready: bool,
    /// Ready pods of the component's workload (managed components).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Desired pods of the component's workload (managed components).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// What is going on, in words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// A generator Job that failed: the operator deletes it so that it runs again (resuming
/// where it stopped, publishing no event twice), a bounded number of times.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestJobStatus {
    /// The generator Job. Its name carries a hash of its spec: a new generator spec is a
    /// new Job, whose count starts again.
    pub name: String,
    /// Times the operator deleted the failed Job to run it again.
    #[serde(default)]
    pub recreations: i32,
    /// Why it last failed: the reason and message of its `Failed` condition.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_failure: String,
    /// When the operator last deleted it to run it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_recreation_time: Option<Time>,
}

/// Events flowing through the pipeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThroughputStatus {
    /// Events published to the events topic per second, over the measurement window.
    #[serde(default)]
    pub ingested_per_second: f64,
    /// Events processed (offsets committed) per second, over the measurement window.
    #[serde(default)]
    pub processed_per_second: f64,
    /// Events in the events topic not yet processed (sum over partitions).
    #[serde(default)]
    pub consumer_lag: i64,
    /// The events topic's end offsets, summed: the events ever published plus the ingest's
    /// transaction markers (one per partition per commit, about one a second while it
    /// publishes).
    #[serde(default)]
    pub events_ingested: i64,
    /// The committed offsets, summed: the events ever processed plus the markers they
    /// step over.
    #[serde(default)]
    pub events_processed: i64,
    /// The dead-letter topic's end offsets, summed: its records plus the ingest's
    /// transaction markers there.
    #[serde(default)]
    pub dead_letters: i64,
    /// Customer profiles in the search index.
    #[serde(default)]
    pub profiles: i64,
    /// When the runtime last completed a checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint_time: Option<Time>,
}

/// The autoscaler's latest decision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerStatus {
    /// Replicas the autoscaler wants.
    #[serde(default)]
    pub desired_replicas: i32,
    /// Replicas the runtime Deployment has.
    #[serde(default)]
    pub current_replicas: i32,
    /// What the decision was based on.
    #[serde(default)]
    pub inputs: AutoscalerInputs,
    /// Why the autoscaler wants this many replicas.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// When the replica count last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
}

/// Inputs of an autoscaling decision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerInputs {
    /// Consumer lag summed over the events topic's partitions.
    #[serde(default)]
    pub total_lag: i64,
    /// Partitions of the events topic.
    #[serde(default)]
    pub partitions: i32,
    /// Partitions with a lag above zero.
    #[serde(default)]
    pub partitions_with_lag: i32,
    /// Target lag per replica (from the spec).
    #[serde(default)]
    pub lag_per_replica: i64,
}
