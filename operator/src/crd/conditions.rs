//! Condition types, reasons and phases of a DataPipeline's status, as constants so the
//! controller, the tests and users' tooling agree on the exact strings. Pure data.

/// Condition types, in the order they appear in `.status.conditions`.
pub mod types {
    pub const KAFKA_READY: &str = "KafkaReady";
    pub const OBJECT_STORE_READY: &str = "ObjectStoreReady";
    pub const SEARCH_READY: &str = "SearchReady";
    pub const RUNTIME_READY: &str = "RuntimeReady";
    /// True only when every other condition is True.
    pub const READY: &str = "Ready";
    /// Whether the operator could read the pipeline's offsets from Kafka (throughput and
    /// autoscaling depend on it). Reported once the operator has tried.
    pub const THROUGHPUT_MEASURED: &str = "ThroughputMeasured";

    /// All condition types, in display order.
    pub const ALL: [&str; 5] = [
        KAFKA_READY,
        OBJECT_STORE_READY,
        SEARCH_READY,
        RUNTIME_READY,
        READY,
    ];
}

/// Reasons (CamelCase, as Kubernetes expects) explaining a condition's status.
pub mod reasons {
    // --- component conditions ---
    /// The operator-managed workload has all its replicas ready.
    pub const WORKLOAD_READY: &str = "WorkloadReady";
    /// An external service is used; the operator does not probe it.
    pub const EXTERNAL: &str = "ExternalService";
    /// The workload exists but not all of its replicas are ready yet.
    pub const REPLICAS_NOT_READY: &str = "ReplicasNotReady";
    /// A setup Job (topics, bucket) has not completed yet.
    pub const SETUP_JOB_RUNNING: &str = "SetupJobRunning";
    /// A setup Job (topics, bucket) failed; its logs say why.
    pub const SETUP_JOB_FAILED: &str = "SetupJobFailed";
    /// The generator Job failed and the operator no longer recreates it; its logs say why.
    pub const INGEST_FAILED: &str = "IngestFailed";
    /// The generator Job failed; the operator deleted it so that it runs again.
    pub const INGEST_JOB_RECREATED: &str = "IngestJobRecreated";
    /// The API server refused a child of the component (the message names it and says
    /// why); the other children were applied.
    pub const APPLY_FAILED: &str = "ApplyFailed";
    /// `spec.paused` is true: the runtime runs no pods.
    pub const PAUSED: &str = "Paused";
    /// `spec.runtime.replicas` is 0 without `spec.paused`: nothing processes events.
    pub const SCALED_TO_ZERO: &str = "ScaledToZero";

    // --- a component's pods cannot start (the message names the pod and container) ---
    /// No node can take a pod (resources, node selectors, unbound volume claims).
    pub const UNSCHEDULABLE: &str = "Unschedulable";
    /// The image could not be pulled (wrong name or tag, private registry).
    pub const ERR_IMAGE_PULL: &str = "ErrImagePull";
    /// The image could not be pulled, and the kubelet waits before trying again.
    pub const IMAGE_PULL_BACK_OFF: &str = "ImagePullBackOff";
    /// The image reference is malformed.
    pub const INVALID_IMAGE_NAME: &str = "InvalidImageName";
    /// A Secret or ConfigMap the container needs is missing (or lacks a key).
    pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";
    /// The container runtime could not create the container.
    pub const CREATE_CONTAINER_ERROR: &str = "CreateContainerError";
    /// The container could not be started (e.g. its command does not exist in the image).
    pub const RUN_CONTAINER_ERROR: &str = "RunContainerError";
    /// The container was killed for using more memory than its limit.
    pub const OOM_KILLED: &str = "OOMKilled";
    /// The container keeps exiting, and the kubelet waits before restarting it.
    pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
    /// The container exited with an error.
    pub const CONTAINER_FAILED: &str = "ContainerFailed";

    /// Every reason a component's pods can give, most actionable first.
    pub const POD_PROBLEMS: [&str; 10] = [
        UNSCHEDULABLE,
        ERR_IMAGE_PULL,
        IMAGE_PULL_BACK_OFF,
        INVALID_IMAGE_NAME,
        CREATE_CONTAINER_CONFIG_ERROR,
        CREATE_CONTAINER_ERROR,
        RUN_CONTAINER_ERROR,
        OOM_KILLED,
        CRASH_LOOP_BACK_OFF,
        CONTAINER_FAILED,
    ];

    // --- Ready ---
    /// Every component is ready.
    pub const ALL_COMPONENTS_READY: &str = "AllComponentsReady";
    /// At least one component is not ready; the message lists them.
    pub const COMPONENTS_NOT_READY: &str = "ComponentsNotReady";

    // --- problems found before anything is applied (set on every condition) ---
    /// A Secret named by the spec does not exist.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// A Secret named by the spec lacks the key the spec names.
    pub const SECRET_KEY_NOT_FOUND: &str = "SecretKeyNotFound";
    /// A Secret named by the spec exists but has not opted in to DataPipeline use (it
    /// lacks the label `datapipeline.io/use: "true"`): the operator does not read it.
    pub const SECRET_NOT_OPTED_IN: &str = "SecretNotOptedIn";
    /// The spec is impossible (the CRD's rules were bypassed or are older than the operator).
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Nothing has been observed yet.
    pub const RECONCILING: &str = "Reconciling";

    // --- data flow ---
    /// Every component is ready but the consumer lag kept growing over the measurement
    /// window: processing is slower than ingest.
    pub const LAG_GROWING: &str = "LagGrowing";
    /// The operator read the offsets of the pipeline's topics.
    pub const OFFSETS_READ: &str = "OffsetsRead";
    /// The operator could not read the offsets of the pipeline's topics.
    pub const KAFKA_UNREACHABLE: &str = "KafkaUnreachable";
}

/// Kubernetes Event reasons the operator emits on the DataPipeline. A component whose
/// pods cannot start, or whose child the API server refused, is announced with the
/// condition's reason (`reasons::POD_PROBLEMS`, `reasons::APPLY_FAILED`).
pub mod events {
    pub const PHASE_CHANGED: &str = "PhaseChanged";
    pub const SECRET_NOT_FOUND: &str = super::reasons::SECRET_NOT_FOUND;
    pub const SECRET_KEY_NOT_FOUND: &str = super::reasons::SECRET_KEY_NOT_FOUND;
    pub const SECRET_NOT_OPTED_IN: &str = super::reasons::SECRET_NOT_OPTED_IN;
    pub const INVALID_SPEC: &str = super::reasons::INVALID_SPEC;
    pub const ORPHAN_DELETED: &str = "OrphanDeleted";
    /// The autoscaler raised the runtime's replicas.
    pub const SCALED_UP: &str = "ScaledUp";
    /// The autoscaler lowered the runtime's replicas.
    pub const SCALED_DOWN: &str = "ScaledDown";
    /// The generator Job failed and was deleted to run again.
    pub const INGEST_JOB_RECREATED: &str = super::reasons::INGEST_JOB_RECREATED;
}
